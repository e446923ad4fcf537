"""PivSession against the virtual PIV card, in process.

Covers the ATR extended-length detection, the tap (APDU counts and wire bytes, with and
without extended length), personalization behind the card management key, the PIN rules
(retry counter, blocking, unblocking) as typed errors, and a session that rejects malformed
card answers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from card_profiles import errors
from card_profiles.atr import atr_extended_length, card_capabilities, historical_bytes
from card_profiles.piv import (
    PIV,
    AesManagementKey,
    CardAuthenticationFailed,
    ManagementKeyRejected,
    ObjectTag,
    PinBlocked,
    PinStatus,
    PivSession,
    PukBlocked,
    WrongPin,
    WrongPuk,
)
from card_profiles.profiles import STARCARD_V1
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.piv_card import (
    DEFAULT_MANAGEMENT_KEY,
    PIV_ATR,
    PIV_ATR_SHORT_ONLY,
    VirtualPivCard,
    fasc_n,
)

ADMIN = AesManagementKey(DEFAULT_MANAGEMENT_KEY)
YUBIKEY5_ATR = bytes.fromhex("3BFD1300008131FE158073C021C057597562694B657940")


class Recording(InProcessTransport):
    """In-process transport that keeps the APDUs it carried."""

    def __init__(self, card: VirtualPivCard) -> None:
        super().__init__(card)
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent.append(apdu)
        return super().transmit(apdu)


class Tampering(InProcessTransport):
    """Transport double at the card boundary: rewrites the answer to one instruction."""

    def __init__(
        self, card: VirtualPivCard, ins: int, rewrite: Callable[[bytes], bytes], nth: int = 1
    ) -> None:
        super().__init__(card)
        self._ins, self._rewrite, self._left = ins, rewrite, nth

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        data, sw = super().transmit(apdu)
        if apdu[1] == self._ins:
            self._left -= 1
            if self._left == 0:
                data = self._rewrite(data)
        return data, sw


def verify(point: bytes, message: bytes, signature: bytes) -> None:
    """Raises InvalidSignature unless ``signature`` (r‖s) is ES256 over ``message``."""
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.verify(utils.encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))


def personalize(card: VirtualPivCard, credential: bytes) -> bytes:
    session = PivSession(InProcessTransport(card), atr=card.atr)
    session.select()
    session.authenticate_management_key(ADMIN)
    point = session.generate_card_key()
    session.write_credential(credential)
    return point


# -- ATR --------------------------------------------------------------------------------------


def test_virtual_atr_advertises_extended_length_only_when_configured() -> None:
    assert historical_bytes(PIV_ATR)[:2] == b"\x80\xf9"
    assert card_capabilities(historical_bytes(PIV_ATR)) == bytes.fromhex("8001C0")
    assert atr_extended_length(PIV_ATR)
    assert not atr_extended_length(PIV_ATR_SHORT_ONLY)
    assert VirtualPivCard(extended_length=False).atr == PIV_ATR_SHORT_ONLY


def test_atr_of_real_cards() -> None:
    assert atr_extended_length(YUBIKEY5_ATR)  # 73 C0 21 C0: chaining + extended
    assert not atr_extended_length(STARCARD_V1.atr)  # no compact-TLV capabilities at all
    status_category = bytes.fromhex("3B88800100730000C0009000")
    status_category += bytes([_tck(status_category)])
    assert atr_extended_length(status_category)  # category 00, status in the last 3 bytes


def _tck(atr: bytes) -> int:
    check = 0
    for byte in atr[1:]:
        check ^= byte
    return check


@pytest.mark.parametrize(
    "atr",
    [
        b"",
        bytes.fromhex("3A8001"),  # bad TS
        PIV_ATR[:-1],  # TCK missing
        PIV_ATR[:-1] + bytes([PIV_ATR[-1] ^ 1]),  # TCK wrong
        PIV_ATR + b"\x00",  # trailing byte
        bytes.fromhex("3B80"),  # TD1 announced, missing
    ],
)
def test_malformed_atr_is_refused_and_means_short_apdus(atr: bytes) -> None:
    with pytest.raises(ValueError):
        historical_bytes(atr)
    assert not atr_extended_length(atr)


# -- tap --------------------------------------------------------------------------------------


def test_tap_is_three_apdus_with_extended_length_and_verifies_over_the_challenge() -> None:
    card = VirtualPivCard()
    credential = os.urandom(300)
    point = personalize(card, credential)
    card.reset()
    transport = Recording(card)
    session = PivSession(transport, atr=card.atr)
    assert session.extended_length
    challenge = os.urandom(32)
    session.select()
    assert session.read_credential() == credential
    signature = session.internal_authenticate(challenge)
    assert session.apdu_count == len(transport.sent) == 3
    verify(point, challenge, signature)
    with pytest.raises(InvalidSignature):  # the card signed SHA-256(challenge), not twice-hashed
        verify(point, hashlib.sha256(challenge).digest(), signature)
    select, get_data, authenticate = transport.sent
    assert select == bytes.fromhex("00A404000BA00000030800001000010000")
    tag = PIV.credential_tag.to_bytes(3, "big")
    assert get_data == bytes.fromhex("00CB3FFF0000055C03") + tag + b"\x00\x00"
    digest = hashlib.sha256(challenge).digest()
    assert authenticate == bytes.fromhex("008711 9E 26 7C24 8200 8120".replace(" ", "")) + (
        digest + b"\x00"
    )


@pytest.mark.parametrize(("size", "tap_apdus"), [(200, 3), (300, 4), (2048, 11)])
def test_short_only_card_is_read_with_get_response(size: int, tap_apdus: int) -> None:
    card = VirtualPivCard(extended_length=False)
    credential = os.urandom(size)
    point = personalize(card, credential)
    card.reset()
    transport = Recording(card)
    session = PivSession(transport, atr=card.atr)
    assert not session.extended_length
    challenge = os.urandom(32)
    session.select()
    assert session.read_credential() == credential
    verify(point, challenge, session.internal_authenticate(challenge))
    assert session.apdu_count == tap_apdus
    assert all(len(apdu) <= 5 + 255 + 1 for apdu in transport.sent)
    assert sum(apdu[1] == 0xC0 for apdu in transport.sent) == tap_apdus - 3


def test_short_only_card_refuses_extended_apdus() -> None:
    card = VirtualPivCard(extended_length=False)
    session = PivSession(InProcessTransport(card), extended_length=True)
    session.select()  # fits a short APDU
    with pytest.raises(errors.WrongLength):
        session.read_credential()


def test_chained_put_data_when_short_only() -> None:
    card = VirtualPivCard()
    transport = Recording(card)
    session = PivSession(transport, extended_length=False)
    session.select()
    session.authenticate_management_key(ADMIN)
    before = len(transport.sent)
    credential = os.urandom(600)
    session.write_credential(credential)
    chain = transport.sent[before:]
    assert [apdu[0] for apdu in chain] == [0x10, 0x10, 0x00]
    assert session.read_credential() == credential


def test_card_without_credential_or_key() -> None:
    session = PivSession(InProcessTransport(VirtualPivCard()), atr=PIV_ATR)
    session.select()
    with pytest.raises(errors.NotFound):
        session.read_credential()
    with pytest.raises(errors.DataNotFound):
        session.internal_authenticate(os.urandom(32))
    with pytest.raises(ValueError):
        session.internal_authenticate(os.urandom(31))


def test_card_authentication_key_needs_no_pin() -> None:
    card = VirtualPivCard()
    point = personalize(card, b"credential")
    card.reset()  # no VERIFY in this session
    session = PivSession(InProcessTransport(card))
    session.select()
    assert session.pin_status() == PinStatus(verified=False, retries=3)
    challenge = os.urandom(32)
    verify(point, challenge, session.internal_authenticate(challenge))


# -- personalization --------------------------------------------------------------------------


def test_writes_need_the_management_key() -> None:
    session = PivSession(InProcessTransport(VirtualPivCard()))
    session.select()
    with pytest.raises(errors.SecurityStatusNotSatisfied):
        session.generate_card_key()
    with pytest.raises(errors.SecurityStatusNotSatisfied):
        session.write_credential(b"credential")
    with pytest.raises(ManagementKeyRejected) as raised:
        session.authenticate_management_key(AesManagementKey(bytes(16)))
    assert raised.value.sw == 0x6982
    with pytest.raises(errors.SecurityStatusNotSatisfied):
        session.write_credential(b"credential")
    with pytest.raises(errors.IncorrectP1P2):  # AES-256 key for an AES-128 card
        session.authenticate_management_key(AesManagementKey(bytes(32)))


def test_management_authentication_ends_with_reset() -> None:
    card = VirtualPivCard()
    session = PivSession(InProcessTransport(card))
    session.select()
    session.authenticate_management_key(ADMIN)
    session.write_credential(b"one")
    card.reset()
    session.select()
    with pytest.raises(errors.SecurityStatusNotSatisfied):
        session.write_credential(b"two")
    assert session.read_credential() == b"one"


def test_card_that_fails_our_challenge_is_not_trusted() -> None:
    card = VirtualPivCard()

    def flip_last_byte(data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1])

    session = PivSession(Tampering(card, 0x87, flip_last_byte, nth=2))
    session.select()
    with pytest.raises(CardAuthenticationFailed):
        session.authenticate_management_key(ADMIN)


def test_new_key_replaces_old_and_signs() -> None:
    card = VirtualPivCard()
    first = personalize(card, b"credential")
    second = personalize(card, b"credential")
    assert first != second
    session = PivSession(InProcessTransport(card))
    session.select()
    challenge = os.urandom(32)
    verify(second, challenge, session.internal_authenticate(challenge))


@pytest.mark.parametrize("size", [0, PIV.max_credential_size + 1])
def test_credential_size_is_checked_before_sending(size: int) -> None:
    session = PivSession(InProcessTransport(VirtualPivCard()))
    with pytest.raises(ValueError):
        session.write_credential(bytes(size))
    assert session.apdu_count == 0


def test_largest_credential_round_trips() -> None:
    card = VirtualPivCard()
    credential = os.urandom(PIV.max_credential_size)
    personalize(card, credential)
    session = PivSession(InProcessTransport(card), atr=card.atr)
    session.select()
    assert session.read_credential() == credential


def test_certificate_and_chuid() -> None:
    card = VirtualPivCard()
    session = PivSession(InProcessTransport(card))
    session.select()
    chuid = session.read_chuid()
    assert chuid.guid == card.guid
    assert chuid.guid[6] >> 4 == 4  # RFC 4122 version 4
    assert chuid.fasc_n == fasc_n()
    assert chuid.expiration == "20351231"
    with pytest.raises(errors.NotFound):
        session.read_certificate(ObjectTag.CARD_AUTH_CERTIFICATE)
    session.authenticate_management_key(ADMIN)
    certificate = b"\x30\x03\x02\x01\x01"  # the card stores bytes; OpenSC parses them (e2e)
    session.write_certificate(ObjectTag.CARD_AUTH_CERTIFICATE, certificate)
    assert session.read_certificate(ObjectTag.CARD_AUTH_CERTIFICATE) == certificate
    session.put_object(ObjectTag.CARD_AUTH_CERTIFICATE, b"")  # empty container deletes
    with pytest.raises(errors.NotFound):
        session.read_certificate(ObjectTag.CARD_AUTH_CERTIFICATE)


def test_fasc_n_matches_the_well_known_non_federal_value() -> None:
    expected = "D4E739DA739CED39CE739D836858210842108421C84210C3EB"
    assert fasc_n().hex().upper() == expected


# -- PIN --------------------------------------------------------------------------------------


def test_three_wrong_pins_block_it_and_the_puk_unblocks_it() -> None:
    card = VirtualPivCard()
    session = PivSession(InProcessTransport(card))
    session.select()
    with pytest.raises(WrongPin) as first:
        session.verify_pin("000000")
    assert first.value.retries == 2
    with pytest.raises(WrongPin) as second:
        session.verify_pin("000000")
    assert second.value.retries == 1
    with pytest.raises(PinBlocked) as third:
        session.verify_pin("000000")
    assert third.value.retries == 0
    with pytest.raises(PinBlocked) as again:  # even the right PIN
        session.verify_pin("123456")
    assert again.value.sw == 0x6983
    assert session.pin_status() == PinStatus(verified=False, retries=0)
    with pytest.raises(PinBlocked):
        session.change_pin("123456", "654321")
    with pytest.raises(WrongPuk) as wrong_puk:
        session.unblock_pin("00000000", "654321")
    assert wrong_puk.value.retries == 2
    session.unblock_pin("12345678", "654321")
    session.verify_pin("654321")
    assert session.pin_status() == PinStatus(verified=True, retries=None)


def test_right_pin_resets_the_counter_and_change_pin() -> None:
    session = PivSession(InProcessTransport(VirtualPivCard()))
    session.select()
    with pytest.raises(WrongPin):
        session.verify_pin("999999")
    session.verify_pin("123456")
    assert session.pin_status().verified
    with pytest.raises(WrongPin) as wrong:
        session.change_pin("999999", "24681357")
    assert wrong.value.retries == 2
    session.change_pin("123456", "24681357")
    with pytest.raises(WrongPin):
        session.verify_pin("123456")
    session.verify_pin("24681357")


def test_blocked_puk() -> None:
    session = PivSession(InProcessTransport(VirtualPivCard()))
    session.select()
    for _ in range(2):
        with pytest.raises(WrongPuk):
            session.unblock_pin("00000000", "654321")
    with pytest.raises(PukBlocked):
        session.unblock_pin("00000000", "654321")
    with pytest.raises(PukBlocked):
        session.unblock_pin("12345678", "654321")


@pytest.mark.parametrize("pin", ["12345", "123456789", "12345a", "１２３４５６", ""])
def test_pin_format_is_checked_before_sending(pin: str) -> None:
    session = PivSession(InProcessTransport(VirtualPivCard()))
    with pytest.raises(ValueError):
        session.verify_pin(pin)
    assert session.apdu_count == 0


def test_blocked_pin_survives_reinsertion(tmp_path: Path) -> None:
    path = tmp_path / "piv.json"
    card = VirtualPivCard(path)
    session = PivSession(InProcessTransport(card))
    session.select()
    for _ in range(3):
        with pytest.raises((WrongPin, PinBlocked)):
            session.verify_pin("000000")
    again = VirtualPivCard(path)
    session = PivSession(InProcessTransport(again))
    session.select()
    with pytest.raises(PinBlocked):
        session.verify_pin("123456")


def test_pin_protected_objects_need_the_pin() -> None:
    card = VirtualPivCard()
    session = PivSession(InProcessTransport(card))
    session.select()
    session.authenticate_management_key(ADMIN)
    session.put_object(ObjectTag.PRINTED_INFORMATION, bytes.fromhex("0100FE00"))
    with pytest.raises(errors.SecurityStatusNotSatisfied):
        session.get_object(ObjectTag.PRINTED_INFORMATION)
    session.verify_pin("123456")
    assert session.get_object(ObjectTag.PRINTED_INFORMATION) == bytes.fromhex("0100FE00")


# -- malformed answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ins", "rewrite"),
    [
        (0xA4, lambda data: b""),  # no APT
        (0xA4, lambda data: data.replace(b"\x4f\x06\x00\x00\x10\x00", b"\x4f\x06\x00\x00\x20\x00")),
        (0xCB, lambda data: b"\x54" + data[1:]),  # not a 53 container
        (0xCB, lambda data: data[:-3]),  # truncated
        (0x87, lambda data: data[:-1]),  # 7C template truncated
        (0x87, lambda data: data[:4] + b"\x31" + data[5:]),  # not a DER SEQUENCE
    ],
)
def test_malformed_answers_raise(ins: int, rewrite: Callable[[bytes], bytes]) -> None:
    card = VirtualPivCard()
    personalize(card, b"credential")
    card.reset()
    session = PivSession(Tampering(card, ins, rewrite), atr=card.atr)
    with pytest.raises(errors.MalformedResponse):
        session.select()
        session.read_credential()
        session.internal_authenticate(os.urandom(32))


def test_generated_point_must_be_on_the_curve() -> None:
    card = VirtualPivCard()

    def off_curve(data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1])

    session = PivSession(Tampering(card, 0x47, off_curve))
    session.select()
    session.authenticate_management_key(ADMIN)
    with pytest.raises(errors.MalformedResponse):
        session.generate_card_key()


def test_profile_with_another_key_algorithm_is_refused() -> None:
    with pytest.raises(ValueError):
        PivSession(InProcessTransport(VirtualPivCard()), replace(PIV, key_algorithm="EdDSA"))
