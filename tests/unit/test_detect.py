"""Profile detection: the right application is selected with no extra APDU when the ATR
says which card it is, and the tap stays within its APDU budget for every profile."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from card_profiles.detect import UnknownCard, detect
from card_profiles.iso7816_fs import ISO7816_FS_MF
from card_profiles.profiles import STARCARD_V1
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.piv_card import PIV_ATR, PIV_ATR_SHORT_ONLY, VirtualPivCard
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_card, graded_subject
from tests.unit.test_iso7816_fs import personalized
from tests.unit.test_piv import personalize
from verifier.core.keys import raw_to_der
from verifier.tap import tap_card

CHALLENGE = bytes(range(32))
CREDENTIAL = bytes(range(256)) + bytes(44)  # 300 bytes: over one short response


class SilentCard:
    """A card with no StarCard application: every SELECT is refused with 6A82."""

    atr = bytes.fromhex("3B00")

    def process(self, apdu: bytes) -> bytes:
        return b"\x6a\x82"

    def reset(self) -> None:
        pass


def assert_signed(point: bytes, signature: bytes) -> None:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    key.verify(raw_to_der(signature), CHALLENGE, ec.ECDSA(hashes.SHA256()))


def test_starcard_detected_by_atr_in_three_apdus(sqlite_issuer: IssuerContext) -> None:
    card = factory_card(sqlite_issuer)
    subject = graded_subject(sqlite_issuer, NOW)
    session = StarCardSession(InProcessTransport(card))
    issued = sqlite_issuer.issuance.personalize(session, subject, NOW, "clerk")
    data = tap_card(InProcessTransport(card), STARCARD_V1.atr, CHALLENGE)
    assert (data.profile, data.apdu_count) == ("starcard-v1", 3)
    assert data.credential == issued.credential
    assert len(data.card_signature) == 64


@pytest.mark.parametrize(
    ("atr", "extended", "apdus", "tried"),
    [
        (PIV_ATR, True, 3, 0),  # ATR hint, extended length: SELECT, GET DATA, GENERAL AUTH
        (b"", True, 4, 1),  # no hint: the StarCard SELECT is refused first
        (PIV_ATR_SHORT_ONLY, False, 4, 0),  # short APDUs: one GET RESPONSE more
    ],
)
def test_piv_detection_and_apdu_budget(atr: bytes, extended: bool, apdus: int, tried: int) -> None:
    card = VirtualPivCard(extended_length=extended)
    point = personalize(card, CREDENTIAL)
    card.reset()
    transport = InProcessTransport(card)
    detected = detect(transport, atr)
    assert detected.profile == "piv"
    assert len(detected.tried) == tried
    card.reset()
    data = tap_card(InProcessTransport(card), atr, CHALLENGE)
    assert (data.profile, data.credential, data.apdu_count) == ("piv", CREDENTIAL, apdus)
    assert_signed(point, data.card_signature)


def test_iso7816_fs_card_is_keyless_and_found_after_the_keyed_profiles() -> None:
    card = personalized(CREDENTIAL)
    data = tap_card(InProcessTransport(card), b"", CHALLENGE)
    assert data.profile == "iso7816-fs"
    assert data.credential == CREDENTIAL
    assert data.card_signature == b""  # no card key: the verifier reports low assurance


def test_iso7816_fs_under_the_master_file() -> None:
    card = personalized(CREDENTIAL, ISO7816_FS_MF)
    data = tap_card(InProcessTransport(card), b"", CHALLENGE)
    assert data.profile == "iso7816-fs-mf"
    assert data.credential == CREDENTIAL


def test_card_without_any_starcard_application() -> None:
    with pytest.raises(UnknownCard, match="starcard-v1, piv, iso7816-fs, iso7816-fs-mf"):
        detect(InProcessTransport(SilentCard()), SilentCard.atr)
