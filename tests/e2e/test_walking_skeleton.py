"""The walking skeleton end to end through a real pcscd + vpcd, on SQLite and PostgreSQL.

1. personalize a virtual card over PC/SC, tap it → valid with the right star level;
2. revoke → the next tap is invalid;
3. clone: everything readable from card A copied onto a fresh card with its own key → invalid;
4. flip bits of the stored credential → invalid;
5. a status list older than the verifier's, or expired → never valid.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from card_profiles.pcsc import PcscTransport
from card_profiles.profiles import Lifecycle
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import VirtualStarCard
from issuer.issuance import IssuedCard
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import graded_subject
from tests.pcsc_harness import CardProcess
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


def personalize_over_pcsc(ctx: IssuerContext, card: CardProcess) -> IssuedCard:
    subject = graded_subject(ctx, NOW)
    with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
        return ctx.issuance.personalize(StarCardSession(transport), subject, NOW, "clerk-1")


def test_personalize_over_pcsc_then_tap_is_valid_with_star_level(
    issuer_ctx: IssuerContext, virtual_card: CardFactory
) -> None:
    card = virtual_card()
    issued = personalize_over_pcsc(issuer_ctx, card)
    verdict = pcsc_tap(verifier_for(issuer_ctx), card.reader)
    assert (verdict.state, verdict.star_level) == ("valid", issued.stars)
    assert issued.stars == 3
    with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
        session = StarCardSession(transport)
        session.select()
        assert session.lifecycle() == Lifecycle.SECURED
        assert session.serial().hex() == issued.serial


def test_revoked_card_taps_invalid(issuer_ctx: IssuerContext, virtual_card: CardFactory) -> None:
    card = virtual_card()
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
    original = virtual_card()
    personalize_over_pcsc(issuer_ctx, original)
    with PcscTransport.connect(original.reader, timeout_s=5.0) as transport:
        session = StarCardSession(transport)
        session.select()
        serial, credential = session.serial(), session.read_credential()
    # The attacker's blank card: same serial and credential, but a key of its own.
    clone_path = tmp_path / "clone.json"
    blank = StarCardSession(InProcessTransport(VirtualStarCard(clone_path, serial=serial)))
    blank.select()
    blank.generate_key()
    blank.write_credential(credential)
    blank.secure()
    clone = virtual_card(state_path=clone_path, port=35964)
    verdict = pcsc_tap(verifier_for(issuer_ctx), clone.reader)
    assert verdict.state == "invalid"
    assert verdict.reason_class == "not_genuine"
    assert pcsc_tap(verifier_for(issuer_ctx), original.reader).state == "valid"


@pytest.mark.parametrize("where", ["header", "claims", "card_key", "signature"])
def test_flipped_credential_bit_is_invalid(
    issuer_ctx: IssuerContext, virtual_card: CardFactory, where: str
) -> None:
    card = virtual_card()
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
    issuer_ctx: IssuerContext, virtual_card: CardFactory
) -> None:
    card = virtual_card()
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
