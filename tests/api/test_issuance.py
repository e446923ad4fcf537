"""Issuance on the embedded stack (in-process virtual card), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import VirtualStarCard
from issuer.db import audit_events, cards, subjects
from issuer.issuance import NotEligible, check_eligibility
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import graded_subject
from verifier.service import VerifierService
from verifier.tap import read_tap


def new_session(tmp_path: Path, name: str = "card") -> StarCardSession:
    return StarCardSession(InProcessTransport(VirtualStarCard(tmp_path / f"{name}.json")))


def tap(ctx: IssuerContext, session: StarCardSession, at: dt.datetime) -> tuple[str, int | None]:
    verifier = VerifierService(trust=ctx.keys.trust_store())
    with ctx.engine.connect() as conn:
        token = current_token(conn, ctx.settings.status_list_id)
    assert token is not None
    verifier.accept_status_list(token, int(at.timestamp()))
    handle, challenge = verifier.begin("t-1", b"test", int(at.timestamp()))
    data = read_tap(session, challenge)
    assert data.apdu_count == 3
    verdict = verifier.complete(
        handle, "t-1", data.credential, data.card_signature, int(at.timestamp())
    )
    return verdict.state, verdict.star_level


def test_personalize_then_tap_valid_then_revoke_invalid(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    session = new_session(tmp_path)
    issued = issuer_ctx.issuance.personalize(session, subject, NOW, "clerk-1")
    assert issued.stars == 3
    assert len(issued.credential) < 300
    assert len(issued.qr_token) >= 22  # 128 bits, base64url
    assert tap(issuer_ctx, session, NOW) == ("valid", 3)
    issuer_ctx.issuance.revoke(issued.serial, "lost", NOW + dt.timedelta(seconds=5), "clerk-1")
    assert tap(issuer_ctx, session, NOW + dt.timedelta(seconds=10)) == ("invalid", None)
    with issuer_ctx.engine.connect() as conn:
        actions = conn.execute(select(audit_events.c.action)).scalars().all()
        row = conn.execute(select(cards).where(cards.c.serial == issued.serial)).one()
    assert "card.activated" in actions and "card.revoked" in actions
    assert row.state == "revoked"
    assert row.access_code_hash.startswith("scrypt$")
    assert issued.access_code not in row.access_code_hash


def test_id_number_is_encrypted_at_rest(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    with issuer_ctx.engine.connect() as conn:
        row = conn.execute(select(subjects).where(subjects.c.id == subject)).one()
    assert b"11010519491231002X" not in bytes(row.id_number_enc)
    assert row.id_number_masked == "1101**********002X"
    assert issuer_ctx.vault.decrypt(bytes(row.id_number_enc), "id_number") == "11010519491231002X"


def test_not_eligible_without_consent_or_when_minor(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    no_consent = graded_subject(issuer_ctx, NOW, consent=False)
    with pytest.raises(NotEligible, match="consent"):
        issuer_ctx.issuance.personalize(new_session(tmp_path), no_consent, NOW, "clerk-1")
    minor = graded_subject(issuer_ctx, NOW, id_number="110105201001010010")
    with issuer_ctx.engine.connect() as conn:
        result = check_eligibility(conn, minor, NOW.date())
    assert not result.eligible
    assert any("adults" in r for r in result.reasons)


def test_second_card_needs_replacement_flow(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    issuer_ctx.issuance.personalize(new_session(tmp_path, "a"), subject, NOW, "clerk-1")
    with pytest.raises(NotEligible, match="already has an active card"):
        issuer_ctx.issuance.personalize(new_session(tmp_path, "b"), subject, NOW, "clerk-1")


def test_one_active_card_per_subject_is_a_database_constraint(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    row = dict(
        subject_id=subject,
        state="active",
        profile="starcard-v1",
        status_list_id=1,
        stars=3,
        created_at=NOW,
        updated_at=NOW,
    )
    with issuer_ctx.engine.begin() as conn:
        conn.execute(insert(cards).values(serial="00000000000000aa", status_idx=1, **row))
    with pytest.raises(IntegrityError), issuer_ctx.engine.begin() as conn:
        conn.execute(insert(cards).values(serial="00000000000000bb", status_idx=2, **row))


def test_interrupted_personalization_never_verifies_and_rerun_completes(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    """A card pulled after the credential is written stays SUSPENDED; a re-run finishes it."""
    subject = graded_subject(issuer_ctx, NOW)
    card = VirtualStarCard(tmp_path / "card.json")
    session = StarCardSession(InProcessTransport(card))
    issuance = issuer_ctx.issuance
    original = issuance._self_check  # the step after the write

    def pulled(*_: object) -> None:
        raise RuntimeError("card pulled")

    issuance._self_check = pulled  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        issuance.personalize(session, subject, NOW, "clerk-1")
    issuance._self_check = original  # type: ignore[method-assign]
    with issuer_ctx.engine.connect() as conn:
        assert conn.execute(select(cards.c.state)).scalar_one() == "written"
    state, _ = tap(issuer_ctx, StarCardSession(InProcessTransport(card)), NOW)
    assert state == "invalid"  # suspended until activation
    issued = issuance.personalize(StarCardSession(InProcessTransport(card)), subject, NOW, "c")
    assert tap(issuer_ctx, StarCardSession(InProcessTransport(card)), NOW) == (
        "valid",
        issued.stars,
    )
