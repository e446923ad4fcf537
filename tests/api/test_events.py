"""The card status outbox and the grade → card mapping (SQLite and PostgreSQL).

Also home of the builders the other rights tests share (:func:`person_with`).
"""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Table, select

from issuer.db import audit_events, metadata
from issuer.db_rights import RIGHTS_TABLES, card_entitlements, card_status_events
from issuer.events import (
    CardTarget,
    RightsConflict,
    RightsError,
    RightsNotFound,
    announced,
    emit,
    mark_consumed,
    pending,
    regrade_and_announce,
    transition,
)
from issuer.platform import NewRecord, add_record
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import graded_subject, id_number

LATER = NOW + dt.timedelta(hours=1)
OCT_1 = dt.date(2026, 10, 1)


Extra = tuple[str, str, str, dt.date]
"""A record to add: (category, direction, severity, decision date)."""


def add_records(
    ctx: IssuerContext, subject: str, *extra: Extra, now: dt.datetime = NOW
) -> list[int]:
    """Adds the records (not graded, not announced); returns their ids."""
    with ctx.engine.begin() as conn:
        return [
            add_record(
                conn,
                ctx.policy,
                subject,
                NewRecord(
                    category,
                    direction,
                    severity,
                    "《测试依据》第一条",
                    "区测试局",
                    f"{category}〔{decided.year}〕{i}号/{subject}",
                    decided,
                    "test",
                ),
                now,
                "test",
            )
            for i, (category, direction, severity, decided) in enumerate(extra)
        ]


def person_with(
    ctx: IssuerContext, *extra: Extra, now: dt.datetime = NOW, person: int = 0
) -> tuple[str, list[int]]:
    """Shared builder of the rights tests: the demo person (118: A 3★) plus ``extra``
    records, graded and announced at ``now``, with the outbox emptied so that a test sees
    only the events it causes."""
    subject = graded_subject(ctx, now, id_number(person))
    ids = add_records(ctx, subject, *extra, now=now)
    with ctx.engine.begin() as conn:
        regrade_and_announce(conn, ctx.policy, [subject], now, reason="setup")
        for event in pending(conn):
            mark_consumed(conn, event.id, now)
    return subject, ids


@pytest.mark.parametrize(
    ("before", "after", "kind", "stored"),
    [
        (("active", 3), ("active", 3), None, ("active", 3)),
        (("active", 3), ("active", 4), "reissue", ("active", 4)),
        (("active", 3), ("active", 1), "reissue", ("active", 1)),
        (("active", 3), ("none", 0), "revoke", ("none", 0)),
        (("none", 0), ("active", 2), "reissue", ("active", 2)),
        (("none", 0), ("none", 0), None, ("none", 0)),
        (("active", 3), ("suspended", 4), "suspend", ("suspended", 3)),
        (("suspended", 3), ("active", 3), "restore", ("active", 3)),
        (("suspended", 3), ("active", 2), "reissue", ("active", 2)),
        (("suspended", 3), ("none", 0), "revoke", ("none", 0)),
        (("suspended", 3), ("suspended", 5), None, ("suspended", 3)),
        (("none", 0), ("suspended", 3), None, ("none", 0)),
    ],
)
def test_transition_table(
    before: tuple[str, int], after: tuple[str, int], kind: str | None, stored: tuple[str, int]
) -> None:
    result = transition(CardTarget(*before), CardTarget(*after))  # type: ignore[arg-type]
    assert result == (kind, CardTarget(*stored))  # type: ignore[arg-type]


def test_migration_creates_exactly_the_rights_tables(issuer_ctx: IssuerContext) -> None:
    names = {t.name for t in RIGHTS_TABLES}
    with issuer_ctx.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)

    def table_of(diff: object) -> str | None:
        """The table a diff entry is about (``add_table``, ``add_index``, ``add_column``...)."""
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


def test_emit_pending_and_consume_in_order(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    with issuer_ctx.engine.begin() as conn:
        first = emit(conn, "suspend", subject, "objection_filed", NOW, stars=3, ref="objection:1")
        second = emit(conn, "restore", subject, "objection_rejected", NOW, stars=3)
    with issuer_ctx.engine.begin() as conn:
        events = pending(conn)
        assert [(e.id, e.kind, e.stars, e.ref) for e in events] == [
            (first, "suspend", 3, "objection:1"),
            (second, "restore", 3, None),
        ]
        mark_consumed(conn, first, LATER)
    with issuer_ctx.engine.begin() as conn:
        assert [e.id for e in pending(conn)] == [second]
        with pytest.raises(RightsConflict, match="consumed already"):
            mark_consumed(conn, first, LATER)
    with issuer_ctx.engine.begin() as conn:
        with pytest.raises(RightsNotFound):
            mark_consumed(conn, 999_999, LATER)
        actions = conn.execute(
            select(audit_events.c.action).where(audit_events.c.subject_id == subject)
        ).scalars()
        assert {"card_status.emitted", "card_status.consumed"} <= set(actions)


def test_emit_refuses_unknown_kinds_empty_reasons_and_missing_levels(
    issuer_ctx: IssuerContext,
) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    with issuer_ctx.engine.begin() as conn:
        with pytest.raises(RightsError, match="kind"):
            emit(conn, "delete", subject, "x", NOW, stars=0)  # type: ignore[arg-type]
        with pytest.raises(RightsError, match="reason"):
            emit(conn, "revoke", subject, " ", NOW)
        with pytest.raises(RightsError, match="star level"):
            emit(conn, "reissue", subject, "x", NOW)
        assert emit(conn, "revoke", subject, "consent_withdrawn", NOW) > 0


def test_an_event_rolls_back_with_its_transaction(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    with pytest.raises(ZeroDivisionError), issuer_ctx.engine.begin() as conn:
        emit(conn, "revoke", subject, "downgraded", NOW, stars=0)
        _ = 1 / 0
    with issuer_ctx.engine.connect() as conn:
        assert pending(conn) == []


def test_level_up_reissues_once_from_the_stored_grade(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)  # 118: A 3★
    add_records(issuer_ctx, subject, ("honour", "+", "一般", OCT_1))  # +10 → 128: A 4★
    with issuer_ctx.engine.begin() as conn:
        assert announced(conn, subject) == CardTarget("active", 3)
        result = regrade_and_announce(conn, issuer_ctx.policy, [subject], LATER, reason="test")
        assert result[subject].kind == "reissue"
        assert result[subject].grade.stars == 4
    with issuer_ctx.engine.begin() as conn:
        again = regrade_and_announce(conn, issuer_ctx.policy, [subject], LATER, reason="test")
        assert again[subject].kind is None
        events = pending(conn)
        assert [(e.kind, e.stars, e.reason) for e in events] == [("reissue", 4, "test")]
        stored = conn.execute(
            select(card_entitlements.c.state, card_entitlements.c.stars).where(
                card_entitlements.c.subject_id == subject
            )
        ).one()
        assert tuple(stored) == ("active", 4)


def test_losing_class_a_revokes(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)  # 118
    add_records(issuer_ctx, subject, ("court_judgment_default", "-", "一般", OCT_1))  # 88: C
    with issuer_ctx.engine.begin() as conn:
        result = regrade_and_announce(conn, issuer_ctx.policy, [subject], LATER, reason="test")
    assert result[subject].grade.grade_class == "C"
    with issuer_ctx.engine.connect() as conn:
        rows = conn.execute(select(card_status_events.c.kind, card_status_events.c.stars)).all()
    assert [tuple(r) for r in rows] == [("revoke", 0)]


def test_unknown_subject_is_refused(issuer_ctx: IssuerContext) -> None:
    with issuer_ctx.engine.begin() as conn, pytest.raises(RightsNotFound, match="Snope"):
        regrade_and_announce(conn, issuer_ctx.policy, ["Snope"], NOW, reason="test")
