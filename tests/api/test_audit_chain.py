"""The audit log as a hash chain with HSM-signed checkpoints: every tampering kind is found
(``docs/audit.md``), on SQLite and PostgreSQL; concurrent appends never fork the chain."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, Table, delete, func, insert, select, text, update
from typer.testing import CliRunner

from issuer import migrate
from issuer.audit import (
    GENESIS,
    AuditEntry,
    audit,
    checkpointer_of,
    enable_checkpoints,
    write_checkpoint,
)
from issuer.audit_verify import AuditChainBroken, BreakKind, audit_keys, verify_chain
from issuer.cli import app
from issuer.db import audit_events, metadata
from issuer.db_staff import STAFF_TABLES, audit_chain_head, audit_checkpoints
from issuer.wiring import IssuerContext, build_issuer, make_engine
from tests.conftest import NOW, make_settings, trust_clock

EVENTS = 8


def _append(ctx: IssuerContext, count: int = EVENTS, start: int = 0) -> None:
    for i in range(start, start + count):
        with ctx.engine.begin() as conn:
            audit(
                conn,
                NOW + dt.timedelta(seconds=i),
                "tester",
                "test.event",
                subject_id=f"S{i:031d}",
                n=i,
                tags=("a", "b"),
                note="审计",
            )


def _verify(ctx: IssuerContext) -> Any:
    with ctx.engine.connect() as conn:
        return verify_chain(conn, audit_keys(ctx.hsm))


def _broken(ctx: IssuerContext) -> AuditChainBroken:
    with pytest.raises(AuditChainBroken) as caught:
        _verify(ctx)
    return caught.value


def _hash_of(conn: Connection, seq: int) -> str:
    return str(conn.execute(select(audit_events.c.hash).where(audit_events.c.seq == seq)).scalar())


def _forged(conn: Connection, seq: int, prev_hash: str) -> dict[str, Any]:
    """A well-formed event (its hash is right for its content and prev_hash)."""
    entry = AuditEntry(NOW, "mallory", "test.forged", None, None, {"n": -1}).stored()
    return {
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "subject_id": None,
        "card_serial": None,
        "detail": dict(entry.detail),
        "seq": seq,
        "prev_hash": prev_hash,
        "hash": entry.chained_hash(prev_hash),
    }


def _shift(conn: Connection, after: int, by: int) -> None:
    """Renumbers events after ``after`` by ``by`` (through a free range: seq is unique)."""
    c = audit_events.c
    conn.execute(update(audit_events).where(c.seq > after).values(seq=c.seq + 1_000_000))
    conn.execute(update(audit_events).where(c.seq > 1_000_000).values(seq=c.seq - 1_000_000 + by))


def test_migration_creates_exactly_the_staff_and_audit_tables(issuer_ctx: IssuerContext) -> None:
    names = {t.name for t in STAFF_TABLES} | {"audit_events"}
    with issuer_ctx.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)

    def table_of(diff: object) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff
        assert isinstance(item, tuple)
        for part in item[1:]:
            if isinstance(part, Table):
                return str(part.name)
            table = getattr(part, "table", None)
            if isinstance(table, Table):
                return str(table.name)
        return str(item[2]) if len(item) > 2 and isinstance(item[2], str) else None

    assert [d for d in diffs if table_of(d) in names] == []


def test_each_event_links_to_the_one_before(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.connect() as conn:
        rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
        head = conn.execute(select(audit_chain_head)).one()
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert (head.seq, head.hash) == (rows[-1].seq, rows[-1].hash)
    assert rows[-1].detail["tags"] == ["a", "b"]  # hashed as it reads back
    report = _verify(issuer_ctx)
    assert (report.events, report.head_hash) == (len(rows), rows[-1].hash)


def test_a_rolled_back_append_leaves_no_gap(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx, 2)
    with pytest.raises(RuntimeError), issuer_ctx.engine.begin() as conn:
        audit(conn, NOW, "tester", "test.rolled_back")
        raise RuntimeError("caller fails after auditing")
    _append(issuer_ctx, 2, start=2)
    assert _verify(issuer_ctx).events == 4


def test_modification_is_found(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 3).values(actor="mallory"))
    broken = _broken(issuer_ctx)
    assert (broken.kind, broken.seq) == (BreakKind.MODIFIED, 3)


def test_modification_with_a_recomputed_hash_is_found(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        forged = _forged(conn, 3, _hash_of(conn, 2))
        conn.execute(update(audit_events).where(audit_events.c.seq == 3).values(**forged))
    broken = _broken(issuer_ctx)
    assert broken.kind is BreakKind.DELETED and broken.seq == 4
    assert "replaced by an edited copy" in str(broken)


def test_deletion_is_found(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq == 4))
    broken = _broken(issuer_ctx)
    assert (broken.kind, broken.seq) == (BreakKind.DELETED, 4)
    assert "events 4 are missing" in str(broken)


def test_deletion_with_renumbering_is_found(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq == 4))
        _shift(conn, 4, -1)
        conn.execute(update(audit_chain_head).values(seq=EVENTS - 1))
    broken = _broken(issuer_ctx)
    assert (broken.kind, broken.seq) == (BreakKind.DELETED, 4)


def test_reordering_is_found(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    c = audit_events.c
    with issuer_ctx.engine.begin() as conn:
        conn.execute(update(audit_events).where(c.seq == 3).values(seq=-3))
        conn.execute(update(audit_events).where(c.seq == 5).values(seq=3))
        conn.execute(update(audit_events).where(c.seq == -3).values(seq=5))
    broken = _broken(issuer_ctx)
    assert (broken.kind, broken.seq) == (BreakKind.REORDERED, 3)
    assert "belongs after event 4" in str(broken)  # the moved event 5 followed event 4


def test_insertion_is_found(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        _shift(conn, 3, 1)
        conn.execute(insert(audit_events).values(**_forged(conn, 4, _hash_of(conn, 3))))
        conn.execute(update(audit_chain_head).values(seq=EVENTS + 1))
    broken = _broken(issuer_ctx)
    assert (broken.kind, broken.seq) == (BreakKind.INSERTED, 4)


def test_insertion_past_the_head_is_found(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        conn.execute(
            insert(audit_events).values(**_forged(conn, EVENTS + 1, _hash_of(conn, EVENTS)))
        )
    broken = _broken(issuer_ctx)
    assert (broken.kind, broken.seq) == (BreakKind.INSERTED, EVENTS + 1)


def test_truncation_is_found(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > EVENTS - 2))
    broken = _broken(issuer_ctx)
    assert (broken.kind, broken.seq) == (BreakKind.TRUNCATED, EVENTS - 1)


def test_truncation_after_a_checkpoint_is_found_even_with_the_head_rewritten(
    issuer_ctx: IssuerContext,
) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        checkpointer = checkpointer_of(conn)
        assert checkpointer is not None
        signed, _ = write_checkpoint(conn, checkpointer, NOW, "tester")
    _append(issuer_ctx, 3, start=EVENTS)
    assert _verify(issuer_ctx).last_checkpoint_seq == signed
    keep = signed - 2
    with issuer_ctx.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > keep))
        conn.execute(update(audit_chain_head).values(seq=keep, hash=_hash_of(conn, keep)))
    broken = _broken(issuer_ctx)
    assert (broken.kind, broken.seq) == (BreakKind.TRUNCATED, keep + 1)
    assert f"checkpoint {signed}" in str(broken)


def test_a_consistently_rewritten_chain_fails_its_checkpoint(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        checkpointer = checkpointer_of(conn)
        assert checkpointer is not None
        signed, _ = write_checkpoint(conn, checkpointer, NOW, "tester")
    with issuer_ctx.engine.begin() as conn:  # rewrite event 2 and re-hash everything after it
        rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
        prev = rows[0].hash
        for row in rows[1:]:
            actor = "mallory" if row.seq == 2 else row.actor
            entry = AuditEntry(
                row.at, actor, row.action, row.subject_id, row.card_serial, row.detail
            ).stored()
            digest = entry.chained_hash(prev)
            conn.execute(
                update(audit_events)
                .where(audit_events.c.seq == row.seq)
                .values(actor=actor, prev_hash=prev, hash=digest)
            )
            prev = digest
        conn.execute(update(audit_chain_head).values(hash=prev))
    broken = _broken(issuer_ctx)
    assert (broken.kind, broken.seq) == (BreakKind.MODIFIED, signed)
    assert "rewritten after checkpoint" in str(broken)


def test_a_forged_checkpoint_signature_is_found(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        checkpointer = checkpointer_of(conn)
        assert checkpointer is not None
        signed, _ = write_checkpoint(conn, checkpointer, NOW, "tester")
        signature = conn.execute(select(audit_checkpoints.c.signature)).scalar_one()
        flipped = bytes([signature[0] ^ 1]) + bytes(signature[1:])
        conn.execute(update(audit_checkpoints).values(signature=flipped))
    broken = _broken(issuer_ctx)
    assert (broken.kind, broken.seq) == (BreakKind.CHECKPOINT, signed)
    with issuer_ctx.engine.connect() as conn, pytest.raises(AuditChainBroken, match="unknown"):
        verify_chain(conn, {})


def test_checkpoints_are_written_every_n_events(issuer_ctx: IssuerContext) -> None:
    enable_checkpoints(issuer_ctx.engine, issuer_ctx.hsm, issuer_ctx.settings.audit_key_label, 5)
    _append(issuer_ctx, 12)
    with issuer_ctx.engine.connect() as conn:
        seqs = conn.execute(select(audit_checkpoints.c.seq).order_by("seq")).scalars().all()
        start = conn.execute(select(func.min(audit_events.c.seq))).scalar_one()
    assert len(seqs) == 2 and seqs[1] - seqs[0] == 5 and seqs[0] >= start
    report = _verify(issuer_ctx)
    assert report.checkpoints == 2 and report.last_checkpoint_seq == seqs[1]


def test_the_checkpoint_key_has_its_own_purpose(issuer_ctx: IssuerContext) -> None:
    from hsm_sim import KeyPurpose, WrongKeyPurpose

    label = issuer_ctx.settings.audit_key_label
    assert issuer_ctx.hsm.purpose_of(label) is KeyPurpose.AUDIT_CHECKPOINT_SIGNING
    with pytest.raises(WrongKeyPurpose):
        issuer_ctx.hsm.signer(label, KeyPurpose.CREDENTIAL_SIGNING)


def _cli(ctx: IssuerContext, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), obj=ctx, env={"COLUMNS": "250"})


def test_cli_verify_exits_1_with_the_broken_link(issuer_ctx: IssuerContext) -> None:
    _append(issuer_ctx)
    done = _cli(issuer_ctx, "audit", "checkpoint")
    assert done.exit_code == 0 and "checkpoint at seq" in done.output
    ok = _cli(issuer_ctx, "audit", "verify")
    assert ok.exit_code == 0, ok.output
    assert "1 signed checkpoint(s)" in ok.output
    with issuer_ctx.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq == 2))
    failed = _cli(issuer_ctx, "audit", "verify")
    assert failed.exit_code == 1
    assert "broken at seq 2: deleted" in failed.output


def test_concurrent_appends_do_not_fork_the_chain(postgres_url: str, tmp_path: Path) -> None:
    ctx = build_issuer(make_settings(postgres_url, tmp_path), clock=trust_clock)
    workers, rounds = 4, 25
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                with ctx.engine.begin() as conn:
                    audit(conn, NOW, f"worker-{worker}", "test.concurrent", i=i)
                    conn.execute(text("SELECT pg_sleep(0.001)"))
                    audit(conn, NOW, f"worker-{worker}", "test.concurrent", i=i, second=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        with ctx.engine.connect() as conn:
            links = conn.execute(select(audit_events.c.prev_hash)).scalars().all()
            total = conn.execute(select(func.count()).select_from(audit_events)).scalar_one()
        assert len(set(links)) == len(links)  # no two events extend the same predecessor
        assert _verify(ctx).events == total >= workers * rounds * 2
    finally:
        ctx.engine.dispose()


def test_events_written_before_the_chain_are_chained_in_order(
    database_url: str, tmp_path: Path
) -> None:
    engine = make_engine(database_url)
    config = Config(str(Path(migrate.__file__).parent / "alembic.ini"))
    config.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0006_rights")
        old = Table("audit_events", MetaData(), autoload_with=conn)
        for n in range(3):
            conn.execute(
                insert(old).values(
                    at=NOW + dt.timedelta(minutes=n),
                    actor="old",
                    action="old.event",
                    detail={"n": n},
                )
            )
    engine.dispose()
    ctx = build_issuer(make_settings(database_url, tmp_path), clock=trust_clock)
    try:
        with ctx.engine.connect() as conn:
            rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
        assert [(r.seq, r.detail["n"]) for r in rows[:3]] == [(1, 0), (2, 1), (3, 2)]
        _append(ctx, 2)
        assert _verify(ctx).events == len(rows) + 2
    finally:
        ctx.engine.dispose()


def test_a_checkpoint_interval_below_one_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    settings = dataclasses.replace(make_settings(sqlite_url, tmp_path), audit_checkpoint_every=0)
    with pytest.raises(ValueError, match="1 or more"):
        build_issuer(settings, clock=trust_clock)
