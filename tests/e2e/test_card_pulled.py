"""The card pulled out after every APDU of personalization and of a tap, through real pcscd.

The virtual card's power-loss switch makes it leave the reader (its vpcd socket closes) during
APDU N+1. Every interruption must end in a typed card error, leave no active record for a
card that does not work, and a re-run on the re-inserted card must finish cleanly: one active
card per person, and it taps valid.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from card_profiles.errors import CardError
from card_profiles.pcsc import PcscTransport
from card_profiles.starcard import StarCardSession
from card_profiles.virtual.vpcd import EXIT_POWER_LOST
from issuer.db import cards
from issuer.issuance import IssuedCard
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_card_state, graded_subject
from tests.pcsc_harness import CardProcess, PcscStack
from verifier.service import VerifierService
from verifier.tap import tap_card

pytestmark = pytest.mark.pcsc
PERSONALIZATION_APDUS = 15
TS = int(NOW.timestamp())


def personalize(ctx: IssuerContext, card: CardProcess, subject: str) -> IssuedCard:
    with PcscTransport.connect(card.reader, timeout_s=5.0, exclusive=True) as transport:
        return ctx.issuance.personalize(StarCardSession(transport), subject, NOW, "clerk")


def tap(ctx: IssuerContext, card: CardProcess) -> str:
    verifier = VerifierService(trust=ctx.keys.trust_store())
    with ctx.engine.connect() as conn:
        token = current_token(conn, ctx.settings.status_list_id)
    assert token is not None
    verifier.accept_status_list(token, TS)
    handle, challenge = verifier.begin("t-1", b"pulled", TS)
    with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
        data = tap_card(transport, transport.atr, challenge)
    verdict = verifier.complete(handle, "t-1", data.credential, data.card_signature, TS)
    return verdict.state


def card_states(ctx: IssuerContext, subject: str) -> list[str]:
    with ctx.engine.connect() as conn:
        return list(
            conn.execute(select(cards.c.state).where(cards.c.subject_id == subject)).scalars()
        )


def lose_power(card: CardProcess) -> None:
    card.wait_removed()
    assert card.proc is not None and card.proc.wait(timeout=10) == EXIT_POWER_LOST
    card.stop()


def test_personalization_uses_the_apdus_this_test_tears(
    pcsc_stack: PcscStack, sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:

    path = factory_card_state(sqlite_issuer, tmp_path / "card.json")
    card = CardProcess(path).start()
    try:
        issued = personalize(sqlite_issuer, card, graded_subject(sqlite_issuer, NOW))
        assert issued.apdu_count == PERSONALIZATION_APDUS
    finally:
        card.stop()


@pytest.mark.parametrize("pulled_after", range(PERSONALIZATION_APDUS))
def test_card_pulled_during_personalization_then_rerun(
    pcsc_stack: PcscStack, sqlite_issuer: IssuerContext, tmp_path: Path, pulled_after: int
) -> None:

    path = factory_card_state(sqlite_issuer, tmp_path / "card.json")
    subject = graded_subject(sqlite_issuer, NOW)
    torn = CardProcess(path, power_loss_after=pulled_after).start()
    try:
        with pytest.raises(CardError):
            personalize(sqlite_issuer, torn, subject)
        lose_power(torn)
    finally:
        torn.stop()
    assert "active" not in card_states(sqlite_issuer, subject)
    again = CardProcess(path).start()
    try:
        issued = personalize(sqlite_issuer, again, subject)
        assert card_states(sqlite_issuer, subject) == ["active"]
        assert issued.stars == 3
        assert tap(sqlite_issuer, again) == "valid"
    finally:
        again.stop()


def test_card_pulled_after_each_apdu_of_a_tap(
    pcsc_stack: PcscStack, sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:

    path = factory_card_state(sqlite_issuer, tmp_path / "card.json")
    card = CardProcess(path).start()
    try:
        personalize(sqlite_issuer, card, graded_subject(sqlite_issuer, NOW))
    finally:
        card.stop()
    for pulled_after in range(3):
        torn = CardProcess(path, power_loss_after=pulled_after).start()
        try:
            with pytest.raises(CardError):
                tap(sqlite_issuer, torn)
            lose_power(torn)
        finally:
            torn.stop()
    again = CardProcess(path).start()
    try:
        assert tap(sqlite_issuer, again) == "valid"
    finally:
        again.stop()


def test_issuer_and_terminal_side_by_side(
    pcsc_stack: PcscStack, sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    """The station personalizes in one reader while a terminal taps in the other."""
    tapped_path = factory_card_state(sqlite_issuer, tmp_path / "tapped.json")
    tapped = CardProcess(tapped_path, port=35964).start()
    new_path = factory_card_state(sqlite_issuer, tmp_path / "new.json")
    new = CardProcess(new_path, port=35963).start()
    try:
        personalize_on = graded_subject(sqlite_issuer, NOW, id_number="440524198001010013")
        personalize(sqlite_issuer, tapped, graded_subject(sqlite_issuer, NOW))
        results: list[str] = []
        errors: list[BaseException] = []

        def terminal() -> None:
            try:
                results.extend(tap(sqlite_issuer, tapped) for _ in range(10))
            except BaseException as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=terminal)
        thread.start()
        issued = personalize(sqlite_issuer, new, personalize_on)
        thread.join(timeout=60)
        assert not errors
        assert results == ["valid"] * 10
        assert tap(sqlite_issuer, new) == "valid"
        assert issued.stars == 3
    finally:
        new.stop()
        tapped.stop()
