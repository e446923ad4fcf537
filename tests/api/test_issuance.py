"""Issuance on the embedded stack (in-process virtual card), on SQLite and PostgreSQL.

Besides the happy path: mutual authentication before any write (a counterfeit card gets
nothing), a card swapped between steps is detected before anything is written to it,
credential versions only grow, and a card secured before its activation was recorded
resumes to an active card.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from card_profiles.errors import CardError
from card_profiles.profiles import STARCARD_V1, Lifecycle
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import VirtualStarCard, manufacture
from issuer.db import audit_events, cards, subjects
from issuer.issuance import (
    CardRejected,
    CardSwapped,
    IssuanceError,
    NotEligible,
    check_eligibility,
)
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_card, factory_session, graded_subject, id_number
from verifier.service import VerifierService
from verifier.tap import read_tap

SELECT = bytes.fromhex("00A404000A") + STARCARD_V1.aid + b"\x00"


def new_session(ctx: IssuerContext, tmp_path: Path, name: str = "card") -> StarCardSession:
    return factory_session(ctx, tmp_path / f"{name}.json")


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


def active_cards(ctx: IssuerContext, subject: str) -> int:
    with ctx.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(cards)
                .where(cards.c.subject_id == subject, cards.c.state == "active")
            ).scalar_one()
        )


class SwapTransport:
    """An in-process reader whose card can be exchanged between two APDUs, unseen by the
    host (as after a silent reconnect). The new card is already SELECTed."""

    def __init__(self, card: VirtualStarCard) -> None:
        self.card = card
        self.atr: bytes | None = card.atr
        self.sent = 0
        self.swap_after: int | None = None
        self.next_card: VirtualStarCard | None = None
        self.next_atr: bytes | None = None

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if self.sent == self.swap_after:
            if self.next_card is not None:
                self.card = self.next_card
                self.card.reset()
                assert self.card.process(SELECT) == b"\x90\x00"
            if self.next_atr is not None:
                self.atr = self.next_atr
        self.sent += 1
        response = self.card.process(apdu)
        return response[:-2], int.from_bytes(response[-2:], "big")

    def close(self) -> None:
        pass


def test_personalize_then_tap_valid_then_revoke_invalid(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    session = new_session(issuer_ctx, tmp_path)
    issued = issuer_ctx.issuance.personalize(session, subject, NOW, "clerk-1")
    assert issued.stars == 3
    assert issued.credential_version == 1
    assert len(issued.credential) < 300
    assert len(issued.qr_token) >= 22  # 128 bits, base64url
    assert tap(issuer_ctx, session, NOW) == ("valid", 3)
    session.select()
    assert session.lifecycle() is Lifecycle.SECURED
    assert session.credential_version() == 1
    issuer_ctx.issuance.revoke(issued.serial, "lost", NOW + dt.timedelta(seconds=5), "clerk-1")
    assert tap(issuer_ctx, session, NOW + dt.timedelta(seconds=10)) == ("invalid", None)
    with issuer_ctx.engine.connect() as conn:
        actions = conn.execute(select(audit_events.c.action)).scalars().all()
        row = conn.execute(select(cards).where(cards.c.serial == issued.serial)).one()
    assert "card.activated" in actions and "card.revoked" in actions
    assert row.state == "revoked"
    assert (row.credential_version, row.card_key_version) == (1, 1)
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
        issuer_ctx.issuance.personalize(
            new_session(issuer_ctx, tmp_path), no_consent, NOW, "clerk-1"
        )
    # a minor cannot even consent (the platform refuses it); eligibility says why too
    minor = graded_subject(issuer_ctx, NOW, id_number="110105201001010010", consent=False)
    with issuer_ctx.engine.connect() as conn:
        result = check_eligibility(conn, issuer_ctx.policy, minor, NOW.date())
    assert not result.eligible
    assert any("adults" in r for r in result.reasons)


def test_second_card_needs_replacement_flow(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    issuer_ctx.issuance.personalize(new_session(issuer_ctx, tmp_path, "a"), subject, NOW, "c")
    with pytest.raises(NotEligible, match="already has an active card"):
        issuer_ctx.issuance.personalize(new_session(issuer_ctx, tmp_path, "b"), subject, NOW, "c")


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
    """A card pulled after the credential is written stays SUSPENDED; a re-run finishes it
    with a new key and a higher credential version."""
    subject = graded_subject(issuer_ctx, NOW)
    card = factory_card(issuer_ctx, tmp_path / "card.json")
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
    first_key = card.state.private_key
    issued = issuance.personalize(StarCardSession(InProcessTransport(card)), subject, NOW, "c")
    assert issued.credential_version == 2
    assert card.state.credential_version == 2
    assert card.state.private_key != first_key
    assert tap(issuer_ctx, StarCardSession(InProcessTransport(card)), NOW) == (
        "valid",
        issued.stars,
    )


def test_counterfeit_card_gets_nothing(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    """A card not keyed by this issuer's master key fails mutual authentication in the HSM:
    no job row, no key, no credential, and its try counter is untouched."""
    subject = graded_subject(sqlite_issuer, NOW)
    fake = manufacture(tmp_path / "fake.json", secrets.token_bytes(8), secrets.token_bytes(16))
    before = fake.state
    with pytest.raises(CardRejected, match="mutual authentication"):
        sqlite_issuer.issuance.personalize(
            StarCardSession(InProcessTransport(fake)), subject, NOW, "c"
        )
    assert VirtualStarCard(tmp_path / "fake.json").state == before
    with sqlite_issuer.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(cards)).scalar_one() == 0
    scp_events = [e for e in sqlite_issuer.hsm.audit_log() if e.op.value == "scp_session"]
    assert [(e.ok, e.card_serial) for e in scp_events] == [(False, fake.serial.hex())]


def test_card_of_another_key_version_is_rejected(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    subject = graded_subject(sqlite_issuer, NOW)
    serial = secrets.token_bytes(8)
    key = sqlite_issuer.card_keys.factory_card_key(serial)
    card = manufacture(None, serial, key, key_version=2)
    with pytest.raises(CardRejected, match="key version 2"):
        sqlite_issuer.issuance.personalize(
            StarCardSession(InProcessTransport(card)), subject, NOW, "c"
        )
    assert card.state.private_key is None


def test_locked_or_blocked_card_is_rejected(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    subject = graded_subject(sqlite_issuer, NOW)
    blocked_card = factory_card(sqlite_issuer)
    blocked = VirtualStarCard(state=dataclasses.replace(blocked_card.state, auth_tries=0))
    with pytest.raises(CardRejected, match="blocked"):
        sqlite_issuer.issuance.personalize(
            StarCardSession(InProcessTransport(blocked)), subject, NOW, "c"
        )
    card = factory_card(sqlite_issuer)
    session = StarCardSession(InProcessTransport(card))
    issued = sqlite_issuer.issuance.personalize(session, subject, NOW, "c")
    session.select()
    session.open_secure_channel(sqlite_issuer.card_keys)
    session.set_lifecycle(Lifecycle.LOCKED)
    sqlite_issuer.issuance.revoke(issued.serial, "lost", NOW, "c")
    other = graded_subject(sqlite_issuer, NOW, id_number=id_number(1))
    with pytest.raises(CardRejected, match="LOCKED"):
        sqlite_issuer.issuance.personalize(
            StarCardSession(InProcessTransport(card)), other, NOW, "c"
        )


def test_card_swapped_after_any_apdu_gets_nothing_written(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    """Another (genuine, selected) card put in the reader after any APDU of personalization:
    personalization stops, the intruding card's EEPROM is byte-identical, no record is
    active; with the first card back, a re-run completes."""
    reference = factory_card(sqlite_issuer)
    subject = graded_subject(sqlite_issuer, NOW, id_number=id_number(0))
    total = sqlite_issuer.issuance.personalize(
        StarCardSession(InProcessTransport(reference)), subject, NOW, "c"
    ).apdu_count
    assert total >= 12
    swapped_detected = 0
    for n in range(2, total):  # after SELECT and the serial the card is identified
        subject = graded_subject(sqlite_issuer, NOW, id_number=id_number(n))
        first = factory_card(sqlite_issuer, tmp_path / f"first-{n}.json")
        intruder = factory_card(sqlite_issuer, tmp_path / f"intruder-{n}.json")
        intruder_eeprom = (tmp_path / f"intruder-{n}.json").read_bytes()
        transport = SwapTransport(first)
        transport.swap_after, transport.next_card = n, intruder
        with pytest.raises((IssuanceError, CardError)) as refused:
            sqlite_issuer.issuance.personalize(StarCardSession(transport), subject, NOW, "c")
        swapped_detected += isinstance(refused.value, CardSwapped)
        assert (tmp_path / f"intruder-{n}.json").read_bytes() == intruder_eeprom, n
        assert intruder.state.credential is None and intruder.state.private_key is None
        assert active_cards(sqlite_issuer, subject) == 0
        first.reset()
        issued = sqlite_issuer.issuance.personalize(
            StarCardSession(InProcessTransport(first)), subject, NOW, "c"
        )
        assert issued.serial == first.serial.hex()
        assert tap(sqlite_issuer, StarCardSession(InProcessTransport(first)), NOW)[0] == "valid"
    assert swapped_detected >= 3  # before each of the three write steps, at least


def test_changed_atr_is_a_swapped_card(sqlite_issuer: IssuerContext) -> None:
    subject = graded_subject(sqlite_issuer, NOW)
    card = factory_card(sqlite_issuer)
    transport = SwapTransport(card)
    transport.swap_after, transport.next_atr = 5, bytes.fromhex("3B8F8001804F0CA000000306")
    with pytest.raises(CardSwapped, match="ATR"):
        sqlite_issuer.issuance.personalize(StarCardSession(transport), subject, NOW, "c")
    assert card.state.private_key is None


def test_card_secured_before_activation_resumes_with_a_newer_credential(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    """Power lost right after SET LIFECYCLE reached EEPROM: the card is SECURED but the
    record is not active. The re-run keeps the card key of this job, writes credential
    version 2 over the secure channel and activates; the old credential is gone."""
    subject = graded_subject(sqlite_issuer, NOW)
    path = tmp_path / "card.json"
    probe = StarCardSession(InProcessTransport(factory_card(sqlite_issuer)))
    other = graded_subject(sqlite_issuer, NOW, id_number(9))
    total = sqlite_issuer.issuance.personalize(probe, other, NOW, "c").apdu_count
    card = factory_card(sqlite_issuer, path, power_loss_after=total - 1, power_loss_commits=1)
    with pytest.raises(CardError):
        sqlite_issuer.issuance.personalize(
            StarCardSession(InProcessTransport(card)), subject, NOW, "c"
        )
    card.reset()
    assert card.state.lifecycle is Lifecycle.SECURED
    assert card.state.credential_version == 1
    with sqlite_issuer.engine.connect() as conn:
        row = conn.execute(select(cards).where(cards.c.serial == card.serial.hex())).one()
    assert row.state == "verified"
    issued = sqlite_issuer.issuance.personalize(
        StarCardSession(InProcessTransport(card)), subject, NOW, "c"
    )
    assert issued.credential_version == 2
    assert card.state.credential == issued.credential
    assert tap(sqlite_issuer, StarCardSession(InProcessTransport(card)), NOW) == ("valid", 3)
    assert active_cards(sqlite_issuer, subject) == 1
