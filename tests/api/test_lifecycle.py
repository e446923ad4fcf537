"""The card lifecycle on both databases: each card status event applied to a real issued card
(cards row, the signed status list's entry, audit, consumed once), crash safety, consent
withdrawal end to end, lost/stolen, and the staff API and CLI."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

import issuer.lifecycle as lifecycle
from issuer.api import create_app
from issuer.cli import app as cli
from issuer.db import audit_events, cards, metadata
from issuer.db_lifecycle import LIFECYCLE_TABLES, reissue_due
from issuer.db_rights import card_status_events
from issuer.eligibility import check_eligibility
from issuer.events import RightsError, emit, pending
from issuer.issuance import IssuedCard
from issuer.lifecycle import (
    CardNotFound,
    CardStateConflict,
    apply_pending,
    dues,
    open_due,
    report_lost,
)
from issuer.platform import withdraw_consent
from issuer.publisher import INVALID, SUSPENDED, VALID, current_token
from issuer.wiring import IssuerContext, build_issuer
from tests.conftest import NOW, make_settings, trust_clock
from tests.helpers import factory_session, graded_subject, id_number
from verifier.core.status_list import parse_status_list_token

LATER = NOW + dt.timedelta(minutes=5)
STAFF = {"Authorization": "Bearer t"}


def issue(ctx: IssuerContext, tmp_path: Path, number: int = 0) -> IssuedCard:
    """A subject graded 3★ with an active card personalized in-process."""
    subject = graded_subject(ctx, NOW, id_number(number))
    session = factory_session(ctx, tmp_path / f"card-{number}.json")
    return ctx.issuance.personalize(session, subject, NOW, "clerk-1")


def event(ctx: IssuerContext, kind: str, subject: str, stars: int = 0, reason: str = "x") -> int:
    with ctx.engine.begin() as conn:
        return emit(conn, kind, subject, reason, NOW, stars=stars)  # type: ignore[arg-type]


def card_row(ctx: IssuerContext, serial: str) -> tuple[str, str | None]:
    with ctx.engine.connect() as conn:
        row = conn.execute(
            select(cards.c.state, cards.c.revoked_reason).where(cards.c.serial == serial)
        ).one()
    return row.state, row.revoked_reason


def listed(ctx: IssuerContext, serial: str, at: dt.datetime = LATER) -> int:
    """The card's entry in the published, signed status list, decoded as a verifier does."""
    with ctx.engine.connect() as conn:
        token = current_token(conn, ctx.settings.status_list_id)
        idx = conn.execute(select(cards.c.status_idx).where(cards.c.serial == serial)).scalar_one()
    assert token is not None
    parsed = parse_status_list_token(token, ctx.keys.trust_store(), int(at.timestamp()))
    return parsed.statuses.get(int(idx))


def actions(ctx: IssuerContext, prefix: str) -> list[str]:
    with ctx.engine.connect() as conn:
        return list(
            conn.execute(
                select(audit_events.c.action)
                .where(audit_events.c.action.startswith(prefix))
                .order_by(audit_events.c.id)
            ).scalars()
        )


def consumed(ctx: IssuerContext, event_id: int) -> bool:
    with ctx.engine.connect() as conn:
        at = conn.execute(
            select(card_status_events.c.consumed_at).where(card_status_events.c.id == event_id)
        ).scalar_one()
    return at is not None


def apply(ctx: IssuerContext, at: dt.datetime = LATER) -> list[lifecycle.Applied]:
    return apply_pending(ctx.engine, ctx.keys, ctx.settings, at, "daily")


def test_migration_creates_exactly_the_lifecycle_tables_and_index(
    issuer_ctx: IssuerContext,
) -> None:
    names = {t.name for t in LIFECYCLE_TABLES}
    with issuer_ctx.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)

    def mine(diff: object) -> bool:
        item = diff[0] if isinstance(diff, list) else diff
        assert isinstance(item, tuple)
        for part in item[1:]:
            if getattr(part, "name", None) == "uq_cards_one_live_per_subject":
                return True
            table = part if isinstance(part, Table) else getattr(part, "table", None)
            if isinstance(table, Table) and table.name in names:
                return True
        return len(item) > 2 and item[2] in names

    assert [d for d in diffs if mine(d)] == []


def test_suspend_then_restore(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    card = issue(issuer_ctx, tmp_path)
    assert listed(issuer_ctx, card.serial) == VALID
    suspend = event(issuer_ctx, "suspend", card.subject_id, 3, "objection_filed")
    [done] = apply(issuer_ctx)
    assert (done.event_id, done.outcome, done.card_state) == (suspend, "suspended", "suspended")
    assert card_row(issuer_ctx, card.serial) == ("suspended", None)
    assert listed(issuer_ctx, card.serial) == SUSPENDED
    assert consumed(issuer_ctx, suspend)
    assert apply(issuer_ctx) == []  # consumed once
    restore = event(issuer_ctx, "restore", card.subject_id, 3, "objection_rejected")
    [done] = apply(issuer_ctx, LATER + dt.timedelta(seconds=1))
    assert (done.event_id, done.outcome, done.card_state) == (restore, "restored", "active")
    assert listed(issuer_ctx, card.serial) == VALID
    assert actions(issuer_ctx, "card_event.") == ["card_event.suspended", "card_event.restored"]
    assert actions(issuer_ctx, "card_status.consumed") == ["card_status.consumed"] * 2


def test_revoke_downgrades_the_card(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    card = issue(issuer_ctx, tmp_path)
    revoke = event(issuer_ctx, "revoke", card.subject_id, 0, "objection_upheld")
    [done] = apply(issuer_ctx)
    assert (done.outcome, done.card_state, done.due_stars) == ("revoked", "revoked", None)
    assert card_row(issuer_ctx, card.serial) == ("revoked", "downgraded")
    assert listed(issuer_ctx, card.serial) == INVALID
    assert consumed(issuer_ctx, revoke)
    assert actions(issuer_ctx, "card_event.") == ["card_event.revoked"]


def test_reissue_lower_revokes_now_and_makes_a_new_card_due(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    event(issuer_ctx, "reissue", card.subject_id, 2, "objection_upheld")
    [done] = apply(issuer_ctx)
    assert (done.outcome, done.card_state, done.due_stars) == ("downgraded", "revoked", 2)
    assert card_row(issuer_ctx, card.serial) == ("revoked", "downgraded")
    assert listed(issuer_ctx, card.serial) == INVALID
    with issuer_ctx.engine.connect() as conn:
        due = open_due(conn, card.subject_id)
        assert check_eligibility(conn, issuer_ctx.policy, card.subject_id, NOW.date()).eligible
    assert due is not None and (due.stars, due.serial) == (2, card.serial)


def test_reissue_higher_keeps_the_card_valid_and_makes_a_reissue_due(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    event(issuer_ctx, "reissue", card.subject_id, 4, "repair_granted")
    [done] = apply(issuer_ctx)
    assert (done.outcome, done.card_state, done.due_stars) == ("reissue_due", "active", 4)
    assert listed(issuer_ctx, card.serial) == VALID  # it understates; stars are an incentive
    # back to the card's own level before the re-issue: nothing is due any more
    event(issuer_ctx, "reissue", card.subject_id, 3, "objection_upheld")
    [done] = apply(issuer_ctx)
    assert (done.outcome, done.due_stars) == ("unchanged", None)
    with issuer_ctx.engine.connect() as conn:
        resolutions = conn.execute(
            select(reissue_due.c.resolution).order_by(reissue_due.c.id)
        ).scalars()
        assert list(resolutions) == ["card_matches"]


def test_suspended_card_reissued_higher_is_valid_again_and_due(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    event(issuer_ctx, "suspend", card.subject_id, 3, "objection_filed")
    event(issuer_ctx, "reissue", card.subject_id, 5, "objection_corrected")
    assert [a.outcome for a in apply(issuer_ctx)] == ["suspended", "reissue_due"]
    assert card_row(issuer_ctx, card.serial) == ("active", None)
    assert listed(issuer_ctx, card.serial) == VALID


def test_restore_leaves_a_card_not_suspended_by_an_event(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    with issuer_ctx.engine.begin() as conn:  # suspended by something else than an event
        conn.execute(update(cards).where(cards.c.serial == card.serial).values(state="suspended"))
    event(issuer_ctx, "restore", card.subject_id, 3, "objection_rejected")
    [done] = apply(issuer_ctx)
    assert (done.outcome, done.card_state) == ("unchanged", "suspended")
    assert card_row(issuer_ctx, card.serial) == ("suspended", None)


def test_event_for_a_subject_without_a_card_is_consumed_and_audited(
    issuer_ctx: IssuerContext,
) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    ids = [event(issuer_ctx, k, subject, s) for k, s in (("suspend", 3), ("reissue", 4))]
    applied = apply(issuer_ctx)
    assert [(a.event_id, a.outcome, a.serial) for a in applied] == [
        (ids[0], "unchanged", None),
        (ids[1], "unchanged", None),
    ]
    assert all(consumed(issuer_ctx, i) for i in ids)
    assert actions(issuer_ctx, "card_event.") == ["card_event.no_card"] * 2
    with issuer_ctx.engine.connect() as conn:
        assert open_due(conn, subject) is None  # a reissue never creates a card or a due


def test_killed_inside_the_transaction_changes_nothing_and_the_event_stays_pending(
    issuer_ctx: IssuerContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = issue(issuer_ctx, tmp_path)
    with issuer_ctx.engine.connect() as conn:
        token_before = current_token(conn, issuer_ctx.settings.status_list_id)
    revoke = event(issuer_ctx, "reissue", card.subject_id, 1, "objection_upheld")
    seen: list[str] = []

    def killed(conn: object, *_: object, **__: object) -> None:
        seen.append(card_state_in(conn))  # the card update and the republish were done
        raise SystemExit("killed")

    monkeypatch.setattr(lifecycle, "mark_consumed", killed)
    with pytest.raises(SystemExit):
        apply(issuer_ctx)
    monkeypatch.undo()
    assert seen == ["revoked"]
    assert card_row(issuer_ctx, card.serial) == ("active", None)
    with issuer_ctx.engine.connect() as conn:
        assert current_token(conn, issuer_ctx.settings.status_list_id) == token_before
        assert [e.id for e in pending(conn)] == [revoke]
        assert open_due(conn, card.subject_id) is None
    assert actions(issuer_ctx, "card_event.") == []
    [done] = apply(issuer_ctx)  # the restarted consumer applies it, once
    assert (done.event_id, done.outcome) == (revoke, "downgraded")
    assert listed(issuer_ctx, card.serial) == INVALID


def card_state_in(conn: object) -> str:
    from sqlalchemy import Connection

    assert isinstance(conn, Connection)
    return str(conn.execute(select(cards.c.state)).scalar_one())


def test_killed_between_events_applies_each_exactly_once(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    kinds = ["suspend", "restore", "suspend", "restore", "suspend"]
    ids = [event(issuer_ctx, k, card.subject_id, 3) for k in kinds]
    first = apply_pending(
        issuer_ctx.engine, issuer_ctx.keys, issuer_ctx.settings, LATER, "d", limit=2
    )
    assert [a.event_id for a in first] == ids[:2]  # the process "dies" here
    rest = apply(issuer_ctx, LATER + dt.timedelta(seconds=1))
    assert [a.event_id for a in rest] == ids[2:]
    assert len(actions(issuer_ctx, "card_event.")) == len(kinds)
    assert card_row(issuer_ctx, card.serial) == ("suspended", None)
    assert listed(issuer_ctx, card.serial, LATER + dt.timedelta(seconds=2)) == SUSPENDED


def test_two_consumers_apply_each_event_once_in_order(postgres_url: str, tmp_path: Path) -> None:
    """Two consumers at once (PostgreSQL: row locks; SQLite runs one writer at a time)."""
    issuer_ctx = build_issuer(make_settings(postgres_url, tmp_path), clock=trust_clock)
    card = issue(issuer_ctx, tmp_path)
    kinds = ["suspend", "restore"] * 6
    for kind in kinds:
        event(issuer_ctx, kind, card.subject_id, 3)
    results: list[list[lifecycle.Applied]] = [[], []]

    def consume(i: int) -> None:
        results[i] = apply(issuer_ctx)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = sorted(a.event_id for r in results for a in r)
    assert len(ids) == len(set(ids)) == len(kinds)
    assert [a.outcome for a in sorted(results[0] + results[1], key=lambda a: a.event_id)] == [
        "suspended",
        "restored",
    ] * 6
    assert card_row(issuer_ctx, card.serial) == ("active", None)
    issuer_ctx.engine.dispose()


def test_consent_withdrawn_revokes_the_card_end_to_end(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    with issuer_ctx.engine.begin() as conn:
        assert withdraw_consent(conn, card.subject_id, "counter", NOW, "clerk-1")
    [done] = apply(issuer_ctx)
    assert (done.kind, done.outcome) == ("revoke", "revoked")
    assert card_row(issuer_ctx, card.serial) == ("revoked", "consent_withdrawn")
    assert listed(issuer_ctx, card.serial) == INVALID
    with issuer_ctx.engine.connect() as conn:
        assert open_due(conn, card.subject_id) is None
        reasons = check_eligibility(conn, issuer_ctx.policy, card.subject_id, NOW.date()).reasons
    assert "no consent to the star programme is on file" in reasons


def test_lost_card_is_revoked_and_the_holder_eligible_again(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    with issuer_ctx.engine.connect() as conn:
        assert not check_eligibility(conn, issuer_ctx.policy, card.subject_id, NOW.date()).eligible
    due = report_lost(
        issuer_ctx.engine,
        card.serial,
        "stolen",
        LATER,
        "clerk-1",
        issuer_ctx.keys,
        issuer_ctx.settings,
    )
    assert (due.subject_id, due.stars, due.reason, due.serial) == (
        card.subject_id,
        3,
        "stolen",
        card.serial,
    )
    assert card_row(issuer_ctx, card.serial) == ("revoked", "stolen")
    assert listed(issuer_ctx, card.serial) == INVALID
    assert actions(issuer_ctx, "card.reported_lost") == ["card.reported_lost"]
    with issuer_ctx.engine.connect() as conn:
        assert check_eligibility(conn, issuer_ctx.policy, card.subject_id, LATER.date()).eligible
        assert [d.subject_id for d in dues(conn)] == [card.subject_id]
    new = issuer_ctx.issuance.personalize(
        factory_session(issuer_ctx, tmp_path / "new.json"), card.subject_id, LATER, "clerk-1"
    )
    assert card_row(issuer_ctx, new.serial) == ("active", None)
    with pytest.raises(CardStateConflict, match="only an active or suspended card"):
        report_lost(
            issuer_ctx.engine, card.serial, "lost", LATER, "c", issuer_ctx.keys, issuer_ctx.settings
        )
    with pytest.raises(CardNotFound):
        report_lost(
            issuer_ctx.engine, "00", "lost", LATER, "c", issuer_ctx.keys, issuer_ctx.settings
        )
    with pytest.raises(RightsError, match="lost or stolen"):
        report_lost(
            issuer_ctx.engine,
            new.serial,
            "broken",
            LATER,
            "c",
            issuer_ctx.keys,
            issuer_ctx.settings,
        )


def test_a_suspended_card_counts_as_the_subjects_live_card(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    row = dict(
        subject_id=subject,
        profile="starcard-v1",
        status_list_id=1,
        stars=3,
        created_at=NOW,
        updated_at=NOW,
    )
    with issuer_ctx.engine.begin() as conn:
        conn.execute(
            insert(cards).values(serial="00000000000000aa", status_idx=1, state="suspended", **row)
        )
    with pytest.raises(IntegrityError), issuer_ctx.engine.begin() as conn:
        conn.execute(
            insert(cards).values(serial="00000000000000bb", status_idx=2, state="active", **row)
        )


def test_lifecycle_over_http(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    card = issue(issuer_ctx, tmp_path)
    c = TestClient(create_app(issuer_ctx.settings, "t", context=issuer_ctx))
    assert c.post("/v1/card-events/apply").status_code == 401
    event(issuer_ctx, "suspend", card.subject_id, 3)
    applied = c.post("/v1/card-events/apply", headers=STAFF)
    assert applied.status_code == 200, applied.text
    assert [a["outcome"] for a in applied.json()["applied"]] == ["suspended"]
    bad = c.post(f"/v1/cards/{card.serial}/lost", json={"kind": "broken"}, headers=STAFF)
    assert bad.status_code == 422
    lost = c.post(f"/v1/cards/{card.serial}/lost", json={"kind": "lost"}, headers=STAFF)
    assert lost.status_code == 200, lost.text
    assert lost.json()["reissue_due"]["stars"] == 3
    again = c.post(f"/v1/cards/{card.serial}/lost", json={"kind": "lost"}, headers=STAFF)
    assert again.status_code == 409
    assert c.post("/v1/cards/nope/lost", json={"kind": "lost"}, headers=STAFF).status_code == 404
    due = c.get("/v1/cards/reissue-due", headers=STAFF)
    assert due.status_code == 200
    assert [(d["subject_id"], d["reason"]) for d in due.json()["due"]] == [
        (card.subject_id, "lost")
    ]
    assert card_row(issuer_ctx, card.serial) == ("revoked", "lost")


def test_cli_apply_events_and_lost(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    card = issue(sqlite_issuer, tmp_path)
    event(sqlite_issuer, "suspend", card.subject_id, 3)
    runner = CliRunner()
    result = runner.invoke(cli, ["cards", "apply-events"], obj=sqlite_issuer)
    assert result.exit_code == 0, result.output
    assert "card status events applied: 1" in result.output
    result = runner.invoke(
        cli, ["cards", "lost", card.serial, "--kind", "stolen"], obj=sqlite_issuer
    )
    assert result.exit_code == 0, result.output
    assert card_row(sqlite_issuer, card.serial) == ("revoked", "stolen")
    result = runner.invoke(cli, ["cards", "lost", card.serial], obj=sqlite_issuer)
    assert result.exit_code == 1 and "only an active or suspended card" in result.output


def test_daily_applies_the_card_status_events(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    card = issue(sqlite_issuer, tmp_path)
    with sqlite_issuer.engine.begin() as conn:
        withdraw_consent(conn, card.subject_id, "app", NOW, "citizen")
    result = CliRunner().invoke(cli, ["daily"], obj=sqlite_issuer)
    assert result.exit_code == 0, result.output
    assert "card status events applied: 1" in result.output
    assert card_row(sqlite_issuer, card.serial) == ("revoked", "consent_withdrawn")
    with sqlite_issuer.engine.connect() as conn:
        left = conn.execute(
            select(func.count())
            .select_from(card_status_events)
            .where(card_status_events.c.consumed_at.is_(None))
        ).scalar_one()
    assert left == 0
