"""The walking skeleton end to end through a real pcscd + vpcd, on SQLite and PostgreSQL.

1. personalize a virtual card over PC/SC, tap it → valid with the right star level;
2. revoke → the next tap is invalid;
3. clone: everything readable from card A copied onto a fresh card with its own key → invalid;
4. flip bits of the stored credential → invalid;
5. a status list older than the verifier's, or expired → never valid;
6. the card loses power in the middle of personalization (its power-loss switch): the card
   process leaves the reader, the re-inserted card is re-personalized to a valid card.

Cards are factory-made: their state files are written beforehand with the secure-channel
key that the issuer's HSM diversifies for their serial.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from card_profiles.errors import CardError
from card_profiles.pcsc import PcscTransport
from card_profiles.profiles import Lifecycle
from card_profiles.scp import StaticKeyAuthenticator
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import manufacture
from card_profiles.virtual.vpcd import EXIT_POWER_LOST
from issuer.issuance import IssuedCard
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_card, factory_card_state, graded_subject, id_number
from tests.pcsc_harness import CardProcess, PcscStack
from verifier.core.errors import StatusListRollback
from verifier.core.verify import Verdict
from verifier.service import VerifierService
from verifier.tap import read_tap

pytestmark = pytest.mark.pcsc
CardFactory = Callable[..., CardProcess]
TS = int(NOW.timestamp())


def published(ctx: IssuerContext) -> bytes:
    with ctx.engine.connect() as conn:
        token = current_token(conn, ctx.settings.status_list_id)
    assert token is not None
    return token


def verifier_for(ctx: IssuerContext, at: int = TS) -> VerifierService:
    verifier = VerifierService(trust=ctx.keys.trust_store())
    verifier.accept_status_list(published(ctx), at)
    return verifier


def pcsc_tap(verifier: VerifierService, reader: str, at: int = TS) -> Verdict:
    handle, challenge = verifier.begin("shop-7", b"merchant:bookshop", at)
    with PcscTransport.connect(reader, timeout_s=5.0) as transport:
        data = read_tap(StarCardSession(transport), challenge)
    assert data.apdu_count == 3
    return verifier.complete(handle, "shop-7", data.credential, data.card_signature, at)


def card_key_x(private_key_hex: str) -> bytes:
    """The x coordinate of the card's public key (it sits in the credential's ``cnf``)."""
    key = ec.derive_private_key(int(private_key_hex, 16), ec.SECP256R1())
    x = key.public_key().public_numbers().x.to_bytes(32, "big")
    return x


def personalize_over_pcsc(
    ctx: IssuerContext, card: CardProcess, subject: str | None = None
) -> IssuedCard:
    subject = subject or graded_subject(ctx, NOW)
    with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
        return ctx.issuance.personalize(StarCardSession(transport), subject, NOW, "clerk-1")


def factory_made(ctx: IssuerContext, virtual_card: CardFactory, path: Path) -> CardProcess:
    """A factory-new card (keyed by the issuer's HSM) inserted into the first reader."""
    return virtual_card(state_path=factory_card_state(ctx, path))


def test_personalize_over_pcsc_then_tap_is_valid_with_star_level(
    issuer_ctx: IssuerContext, virtual_card: CardFactory, tmp_path: Path
) -> None:
    card = factory_made(issuer_ctx, virtual_card, tmp_path / "card.json")
    issued = personalize_over_pcsc(issuer_ctx, card)
    verdict = pcsc_tap(verifier_for(issuer_ctx), card.reader)
    assert (verdict.state, verdict.star_level) == ("valid", issued.stars)
    assert issued.stars == 3
    with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
        session = StarCardSession(transport)
        session.select()
        assert session.lifecycle() == Lifecycle.SECURED
        assert session.serial().hex() == issued.serial


def test_revoked_card_taps_invalid(
    issuer_ctx: IssuerContext, virtual_card: CardFactory, tmp_path: Path
) -> None:
    card = factory_made(issuer_ctx, virtual_card, tmp_path / "card.json")
    issued = personalize_over_pcsc(issuer_ctx, card)
    verifier = verifier_for(issuer_ctx)
    assert pcsc_tap(verifier, card.reader).state == "valid"
    later = NOW + dt.timedelta(minutes=1)
    issuer_ctx.issuance.revoke(issued.serial, "lost", later, "clerk-1")
    verifier.accept_status_list(published(issuer_ctx), TS + 60)
    verdict = pcsc_tap(verifier, card.reader, TS + 61)
    assert verdict.state == "invalid"
    assert verdict.reason_class == "revoked"
    assert verdict.star_level is None


def test_clone_with_its_own_key_is_invalid(
    issuer_ctx: IssuerContext, virtual_card: CardFactory, tmp_path: Path
) -> None:
    original = factory_made(issuer_ctx, virtual_card, tmp_path / "card.json")
    personalize_over_pcsc(issuer_ctx, original)
    with PcscTransport.connect(original.reader, timeout_s=5.0) as transport:
        session = StarCardSession(transport)
        session.select()
        serial, credential = session.serial(), session.read_credential()
    # The attacker's blank card: same serial and credential, but keys of its own (the
    # attacker cannot have the card's secure-channel key, so makes up another one).
    clone_path = tmp_path / "clone.json"
    attacker_key = os.urandom(16)
    blank = StarCardSession(InProcessTransport(manufacture(clone_path, serial, attacker_key)))
    blank.select()
    blank.open_secure_channel(StaticKeyAuthenticator(attacker_key))
    blank.generate_key()
    blank.write_credential(credential, 1)
    blank.secure()
    clone = virtual_card(state_path=clone_path, port=35964)
    verdict = pcsc_tap(verifier_for(issuer_ctx), clone.reader)
    assert verdict.state == "invalid"
    assert verdict.reason_class == "not_genuine"
    assert pcsc_tap(verifier_for(issuer_ctx), original.reader).state == "valid"


@pytest.mark.parametrize("where", ["header", "claims", "card_key", "signature"])
def test_flipped_credential_bit_is_invalid(
    issuer_ctx: IssuerContext, virtual_card: CardFactory, tmp_path: Path, where: str
) -> None:
    card = factory_made(issuer_ctx, virtual_card, tmp_path / "card.json")
    issued = personalize_over_pcsc(issuer_ctx, card)
    card.stop()
    state = json.loads(card.state_path.read_text())
    credential = bytearray.fromhex(state["credential"])
    assert bytes(credential) == issued.credential
    position = {
        "header": 6,
        "claims": len(credential) // 3,
        "card_key": credential.find(card_key_x(state["private_key"])) + 3,
        "signature": len(credential) - 5,
    }[where]
    assert position >= 3
    credential[position] ^= 0x10
    state["credential"] = credential.hex()
    card.state_path.write_text(json.dumps(state))
    tampered = virtual_card(state_path=card.state_path)
    verdict = pcsc_tap(verifier_for(issuer_ctx), tampered.reader)
    assert verdict.state == "invalid"
    assert verdict.star_level is None


def test_stale_or_rolled_back_status_list_is_never_valid(
    issuer_ctx: IssuerContext, virtual_card: CardFactory, tmp_path: Path
) -> None:
    card = factory_made(issuer_ctx, virtual_card, tmp_path / "card.json")
    issued = personalize_over_pcsc(issuer_ctx, card)
    valid_list = published(issuer_ctx)
    # Freeze: the only list the verifier holds has expired → unknown, never valid.
    expires = TS + issuer_ctx.settings.status_list_valid_s
    frozen = VerifierService(trust=issuer_ctx.keys.trust_store())
    frozen.accept_status_list(valid_list, TS)
    assert pcsc_tap(frozen, card.reader, expires + 1).state == "unknown"
    # No list at all → unknown.
    empty = VerifierService(trust=issuer_ctx.keys.trust_store())
    assert pcsc_tap(empty, card.reader).state == "unknown"
    # Rollback: after the revocation list, the older "valid" list is refused.
    issuer_ctx.issuance.revoke(issued.serial, "stolen", NOW + dt.timedelta(minutes=2), "clerk-1")
    verifier = VerifierService(trust=issuer_ctx.keys.trust_store())
    verifier.accept_status_list(published(issuer_ctx), TS + 120)
    with pytest.raises(StatusListRollback):
        verifier.accept_status_list(valid_list, TS + 121)
    assert pcsc_tap(verifier, card.reader, TS + 122).state == "invalid"


def test_power_lost_mid_personalization_then_reinserted_card_is_personalized(
    sqlite_issuer: IssuerContext, pcsc_stack: PcscStack, tmp_path: Path
) -> None:
    """The card process loses power during PUT CREDENTIAL (after the EEPROM write) and
    leaves the reader; the issuer sees a card error and nothing is active. Re-inserted, the
    same card is personalized again to a valid card with a newer credential version."""
    ctx = sqlite_issuer
    sent: list[bytes] = []

    class Recording(InProcessTransport):
        def transmit(self, apdu: bytes) -> tuple[bytes, int]:
            sent.append(apdu)
            return super().transmit(apdu)

    probe = StarCardSession(Recording(factory_card(ctx)))
    ctx.issuance.personalize(probe, graded_subject(ctx, NOW, id_number(5)), NOW, "c")
    put_credential = next(i for i, apdu in enumerate(sent, 1) if apdu[1] == 0xDA)
    path = factory_card_state(ctx, tmp_path / "card.json")
    subject = graded_subject(ctx, NOW)
    card = CardProcess(path, power_loss_after=put_credential - 1, power_loss_commits=1)
    try:
        card.start()
        with pytest.raises(CardError):
            personalize_over_pcsc(ctx, card, subject)
        card.wait_removed()
        assert card.proc is not None and card.proc.wait(timeout=10) == EXIT_POWER_LOST
        card.stop()
        with ctx.engine.connect() as conn:
            token = current_token(conn, ctx.settings.status_list_id)
        assert token is not None
        assert json.loads(path.read_text())["credential_version"] == 1  # the write landed
        again = CardProcess(path).start()
        try:
            issued = personalize_over_pcsc(ctx, again, subject)
            assert issued.credential_version == 2
            assert pcsc_tap(verifier_for(ctx), again.reader).state == "valid"
        finally:
            again.stop()
    finally:
        card.stop()
