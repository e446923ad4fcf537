"""Reconciliation on both databases: orphan cards left by an interrupted personalization are
found once stale, abandoned (INVALID on the signed status list, audited), and states that must
be impossible are reported; over the staff API and the CLI too."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text
from typer.testing import CliRunner

from card_profiles.errors import CardError
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from issuer.api import create_app
from issuer.cli import app as cli
from issuer.db import audit_events, cards
from issuer.lifecycle import CardNotFound, CardStateConflict
from issuer.publisher import INVALID, SUSPENDED, current_token, publish_list
from issuer.reconcile import (
    PERSONALIZATION_STATES,
    Anomaly,
    OrphanCard,
    abandon,
    anomalies,
    find_orphans,
)
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_card, factory_session, graded_subject, id_number
from verifier.core.status_list import parse_status_list_token

STALE = dt.timedelta(minutes=30)
LATER = NOW + dt.timedelta(hours=1)
STAFF = {"Authorization": "Bearer t"}
LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
"""Before any wall clock: a job this old is stale for the HTTP and CLI commands (which read
the clock, as composition roots do)."""


def interrupted(ctx: IssuerContext, tmp_path: Path, subject: str) -> str:
    """Personalizes a card that loses power part-way; returns its serial (job left behind)."""
    card = factory_card(ctx, tmp_path / "pulled.json", power_loss_after=12)
    with pytest.raises(CardError):
        ctx.issuance.personalize(StarCardSession(InProcessTransport(card)), subject, NOW, "c")
    with ctx.engine.connect() as conn:
        serial, state = conn.execute(
            select(cards.c.serial, cards.c.state).where(cards.c.subject_id == subject)
        ).one()
    assert state in PERSONALIZATION_STATES
    return str(serial)


def add_card(
    ctx: IssuerContext, serial: str, subject: str, state: str, idx: int, at: dt.datetime = NOW
) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(
            insert(cards).values(
                serial=serial,
                subject_id=subject,
                state=state,
                profile="starcard-v1",
                status_list_id=ctx.settings.status_list_id,
                status_idx=idx,
                stars=3,
                created_at=at,
                updated_at=at,
            )
        )


def entry(ctx: IssuerContext, serial: str) -> int:
    with ctx.engine.connect() as conn:
        token = current_token(conn, ctx.settings.status_list_id)
        idx = conn.execute(select(cards.c.status_idx).where(cards.c.serial == serial)).scalar_one()
    assert token is not None
    parsed = parse_status_list_token(token, ctx.keys.trust_store(), int(LATER.timestamp()))
    return parsed.statuses.get(int(idx))


def test_interrupted_personalization_is_an_orphan_once_stale(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    serial = interrupted(issuer_ctx, tmp_path, subject)
    other = graded_subject(issuer_ctx, NOW, id_number(1))
    finished = issuer_ctx.issuance.personalize(
        factory_session(issuer_ctx, tmp_path / "ok.json"), other, NOW, "c"
    )
    with issuer_ctx.engine.connect() as conn:
        assert find_orphans(conn, NOW + dt.timedelta(minutes=10), STALE) == []
        found = find_orphans(conn, LATER, STALE)
        assert anomalies(conn) == []
    assert [(o.serial, o.subject_id) for o in found] == [(serial, subject)]
    assert found[0].updated_at == NOW and found[0].updated_at.tzinfo is not None
    assert finished.serial not in {o.serial for o in found}


def test_abandon_makes_the_entry_invalid_and_is_audited(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    add_card(issuer_ctx, "00000000000000a1", subject, "credential_signed", 7)
    with issuer_ctx.engine.begin() as conn:
        publish_list(conn, issuer_ctx.keys, issuer_ctx.settings, NOW)
    assert entry(issuer_ctx, "00000000000000a1") == SUSPENDED
    deps = (issuer_ctx.keys, issuer_ctx.settings)
    with pytest.raises(CardStateConflict, match="may still be personalizing"):
        abandon(issuer_ctx.engine, "00000000000000a1", NOW + dt.timedelta(minutes=1), "s", *deps)
    job = abandon(issuer_ctx.engine, "00000000000000a1", LATER, "sup-1", *deps)
    assert job == OrphanCard("00000000000000a1", subject, "credential_signed", NOW)
    assert entry(issuer_ctx, "00000000000000a1") == INVALID
    with issuer_ctx.engine.connect() as conn:
        assert conn.execute(select(cards.c.state)).scalar_one() == "abandoned"
        assert find_orphans(conn, LATER, STALE) == []
        audited = conn.execute(
            select(audit_events.c.actor, audit_events.c.card_serial).where(
                audit_events.c.action == "card.abandoned"
            )
        ).all()
    assert [tuple(a) for a in audited] == [("sup-1", "00000000000000a1")]
    with pytest.raises(CardStateConflict, match="only an unfinished personalization"):
        abandon(issuer_ctx.engine, "00000000000000a1", LATER, "sup-1", *deps)
    with pytest.raises(CardNotFound):
        abandon(issuer_ctx.engine, "0000000000000000", LATER, "sup-1", *deps)


def test_an_active_card_is_never_abandoned(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    issued = issuer_ctx.issuance.personalize(
        factory_session(issuer_ctx, tmp_path / "c.json"), subject, NOW, "c"
    )
    with pytest.raises(CardStateConflict, match="is active"):
        abandon(issuer_ctx.engine, issued.serial, LATER, "s", issuer_ctx.keys, issuer_ctx.settings)


def test_states_that_must_be_impossible_are_reported(issuer_ctx: IssuerContext) -> None:
    first = graded_subject(issuer_ctx, NOW, id_number(1))
    second = graded_subject(issuer_ctx, NOW, id_number(2))
    add_card(issuer_ctx, "00000000000000b1", first, "active", 1)  # no credential, no key
    # Only a broken schema could let a second live card in: drop the guards to show the report.
    with issuer_ctx.engine.begin() as conn:
        for name in ("uq_cards_one_live_per_subject", "uq_cards_one_active_per_subject"):
            conn.execute(text(f"DROP INDEX {name}"))
    add_card(issuer_ctx, "00000000000000c1", second, "active", 2)
    add_card(issuer_ctx, "00000000000000c2", second, "suspended", 3)
    with issuer_ctx.engine.connect() as conn:
        found = anomalies(conn)
    assert found[0] == Anomaly(
        "more_than_one_live_card", second, ("00000000000000c1", "00000000000000c2")
    )
    assert {a.serials for a in found[1:]} == {
        ("00000000000000b1",),
        ("00000000000000c1",),
        ("00000000000000c2",),
    }
    assert {a.kind for a in found[1:]} == {"live_card_without_credential"}


def test_reconciliation_over_http(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    add_card(issuer_ctx, "00000000000000d1", subject, "written", 9, LONG_AGO)
    c = TestClient(create_app(issuer_ctx.settings, "t", context=issuer_ctx))
    assert c.get("/v1/cards/orphans").status_code == 401
    listed = c.get("/v1/cards/orphans", params={"stale_after_minutes": 30}, headers=STAFF)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert [(o["serial"], o["state"]) for o in body["orphans"]] == [("00000000000000d1", "written")]
    assert body["anomalies"] == []
    done = c.post("/v1/cards/00000000000000d1/abandon", headers=STAFF)
    assert done.status_code == 200, done.text
    assert done.json()["previous_state"] == "written"
    assert c.post("/v1/cards/00000000000000d1/abandon", headers=STAFF).status_code == 409
    assert c.post("/v1/cards/nope/abandon", headers=STAFF).status_code == 404
    assert c.get("/v1/cards/orphans", headers=STAFF).json()["orphans"] == []


def test_reconcile_cli_lists_then_abandons(sqlite_issuer: IssuerContext) -> None:
    subject = graded_subject(sqlite_issuer, NOW)
    add_card(sqlite_issuer, "00000000000000e1", subject, "verified", 11, LONG_AGO)
    runner = CliRunner()
    listed = runner.invoke(cli, ["cards", "reconcile"], obj=sqlite_issuer)
    assert listed.exit_code == 0, listed.output
    assert "orphan cards: 1" in listed.output and "00000000000000e1" in listed.output
    applied = runner.invoke(cli, ["cards", "reconcile", "--apply"], obj=sqlite_issuer)
    assert applied.exit_code == 0, applied.output
    assert "00000000000000e1: abandoned" in applied.output
    with sqlite_issuer.engine.connect() as conn:
        assert conn.execute(select(cards.c.state)).scalar_one() == "abandoned"
    add_card(sqlite_issuer, "00000000000000e2", subject, "active", 12)  # no credential
    odd = runner.invoke(cli, ["cards", "reconcile"], obj=sqlite_issuer)
    assert odd.exit_code == 1
    assert "ANOMALY live_card_without_credential" in odd.output
