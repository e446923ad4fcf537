"""The virtual StarCard v1 driven by StarCardSession over InProcessTransport.

Covers personalization, the lifecycle rules of docs/interfaces.md, persistence across
"re-insertion", atomic credential writes, the exact wire bytes of each command, that no
malformed APDU can crash the card, and the vpcd framing adapter against a fake vpcd.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import stat
import struct
import threading
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from card_profiles import errors
from card_profiles.profiles import STARCARD_V1, Lifecycle
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual import vpcd
from card_profiles.virtual.starcard_v1 import VirtualStarCard

AID = STARCARD_V1.aid
SELECT = bytes.fromhex("00A404000A") + AID + b"\x00"
KNOWN_SWS = {
    0x9000, 0x6700, 0x6982, 0x6985, 0x6A80, 0x6A81, 0x6A82, 0x6A84, 0x6A86, 0x6A88,
    0x6D00, 0x6E00, 0x6F00,
}  # fmt: skip


class RecordingTransport(InProcessTransport):
    def __init__(self, card: VirtualStarCard) -> None:
        super().__init__(card)
        self.sent: list[bytes] = []
        self.sws: list[int] = []

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent.append(apdu)
        data, sw = super().transmit(apdu)
        self.sws.append(sw)
        return data, sw


def session_for(card: VirtualStarCard, **profile_changes: object) -> StarCardSession:
    profile = dataclasses.replace(STARCARD_V1, **profile_changes)  # type: ignore[arg-type]
    return StarCardSession(InProcessTransport(card), profile)


def verify(point: bytes, challenge: bytes, signature: bytes) -> None:
    """Raises InvalidSignature unless ``signature`` (r‖s) is ES256 over ``challenge``."""
    assert len(signature) == 64
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.verify(utils.encode_dss_signature(r, s), challenge, ec.ECDSA(hashes.SHA256()))


def personalize(session: StarCardSession, credential: bytes) -> bytes:
    session.select()
    point = session.generate_key()
    session.write_credential(credential)
    session.secure()
    return point


def status(card: VirtualStarCard, apdu: bytes) -> int:
    return int.from_bytes(card.process(apdu)[-2:], "big")


# -- personalization and the tap --------------------------------------------------------------


def test_full_personalization(tmp_path: Path) -> None:
    card = VirtualStarCard(tmp_path / "card.json")
    session = StarCardSession(InProcessTransport(card))
    session.select()
    assert session.lifecycle() is Lifecycle.PERSONALIZATION
    serial = session.serial()
    assert len(serial) == 8
    assert serial == card.serial
    with pytest.raises(errors.DataNotFound):
        session.public_key()
    point = session.generate_key()
    assert len(point) == 65
    assert point[0] == 0x04
    assert session.public_key() == point
    credential = os.urandom(300)
    session.write_credential(credential)
    assert session.read_credential() == credential
    challenge = os.urandom(32)
    verify(point, challenge, session.internal_authenticate(challenge))
    session.secure()
    assert session.lifecycle() is Lifecycle.SECURED


def test_signature_is_over_sha256_of_the_challenge_and_fresh() -> None:
    card = VirtualStarCard()
    session = StarCardSession(InProcessTransport(card))
    point = personalize(session, b"cred")
    challenge = bytes(range(32))
    signature = session.internal_authenticate(challenge)
    verify(point, challenge, signature)
    with pytest.raises(InvalidSignature):
        verify(point, bytes(32), signature)
    other = VirtualStarCard()
    other_point = personalize(StarCardSession(InProcessTransport(other)), b"cred")
    with pytest.raises(InvalidSignature):
        verify(other_point, challenge, signature)


def test_tap_is_exactly_three_apdus() -> None:
    card = VirtualStarCard()
    personalize(StarCardSession(InProcessTransport(card)), os.urandom(2048))
    session = StarCardSession(InProcessTransport(card))
    session.select()
    assert len(session.read_credential()) == 2048
    session.internal_authenticate(os.urandom(32))
    assert session.apdu_count == 3


def test_wire_bytes_match_interfaces_md() -> None:
    card = VirtualStarCard()
    transport = RecordingTransport(card)
    session = StarCardSession(transport)
    challenge = bytes(range(32))
    session.select()
    session.serial()
    session.lifecycle()
    session.generate_key()
    session.public_key()
    session.write_credential(bytes(300))
    session.read_credential()
    session.internal_authenticate(challenge)
    session.secure()
    assert transport.sent == [
        bytes.fromhex("00A404000A") + AID + b"\x00",
        bytes.fromhex("80CA010100"),
        bytes.fromhex("80CA010200"),
        bytes.fromhex("8046000000"),
        bytes.fromhex("80CA010300"),
        bytes.fromhex("80DA000000012C") + bytes(300),
        bytes.fromhex("80CB0000000000"),
        bytes.fromhex("0088000020") + challenge + b"\x00",
        bytes.fromhex("80F00F00"),
    ]
    assert set(transport.sws) == {0x9000}


def test_card_without_extended_length_uses_chaining_and_get_response() -> None:
    card = VirtualStarCard()
    session = session_for(card, extended_length=False)
    credential = os.urandom(2048)
    point = personalize(session, credential)
    session = session_for(card, extended_length=False)
    session.select()
    assert session.read_credential() == credential
    challenge = os.urandom(32)
    verify(point, challenge, session.internal_authenticate(challenge))
    # SELECT + READ (256 + 7 GET RESPONSE) + AUTHENTICATE
    assert session.apdu_count == 1 + 8 + 1


def test_card_answers_6cxx_for_a_too_small_short_le() -> None:
    card = VirtualStarCard(serial=bytes(range(8)))
    card.process(SELECT)
    assert card.process(bytes.fromhex("80CA010104")) == b"\x6c\x08"
    assert card.process(bytes.fromhex("80CA010108")) == bytes(range(8)) + b"\x90\x00"


def test_get_response_without_pending_data_is_refused() -> None:
    card = VirtualStarCard()
    card.process(SELECT)
    assert status(card, bytes.fromhex("00C0000000")) == 0x6985


# -- lifecycle rules --------------------------------------------------------------------------


def test_commands_need_select_first() -> None:
    card = VirtualStarCard()
    session = StarCardSession(InProcessTransport(card))
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.serial()
    session.select()
    session.serial()
    card.reset()
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.lifecycle()


def test_select_other_aid_is_not_found_and_deselects() -> None:
    card = VirtualStarCard()
    card.process(SELECT)
    assert status(card, bytes.fromhex("00A4040005A00000000100")) == 0x6A82
    assert status(card, bytes.fromhex("80CA010100")) == 0x6985


def test_read_credential_before_write_is_not_found() -> None:
    session = StarCardSession(InProcessTransport(VirtualStarCard()))
    session.select()
    with pytest.raises(errors.NotFound):
        session.read_credential()


def test_authenticate_without_key_is_data_not_found() -> None:
    session = StarCardSession(InProcessTransport(VirtualStarCard()))
    session.select()
    with pytest.raises(errors.DataNotFound):
        session.internal_authenticate(bytes(32))


def test_secure_needs_key_and_credential() -> None:
    session = StarCardSession(InProcessTransport(VirtualStarCard()))
    session.select()
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.secure()
    session.generate_key()
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.secure()
    session.write_credential(b"x")
    session.secure()
    assert session.lifecycle() is Lifecycle.SECURED


def test_generate_key_replaces_key_and_clears_credential() -> None:
    session = StarCardSession(InProcessTransport(VirtualStarCard()))
    session.select()
    first = session.generate_key()
    session.write_credential(b"old credential")
    second = session.generate_key()
    assert second != first
    assert session.public_key() == second
    with pytest.raises(errors.NotFound):
        session.read_credential()


def test_secured_card_refuses_personalization_commands() -> None:
    card = VirtualStarCard()
    session = StarCardSession(InProcessTransport(card))
    point = personalize(session, b"credential")
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.generate_key()
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.write_credential(b"replacement")
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.set_lifecycle(Lifecycle.PERSONALIZATION)
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.secure()
    assert session.read_credential() == b"credential"
    assert session.public_key() == point
    challenge = os.urandom(32)
    verify(point, challenge, session.internal_authenticate(challenge))


def test_locked_card_reads_but_does_not_authenticate() -> None:
    session = StarCardSession(InProcessTransport(VirtualStarCard()))
    personalize(session, b"credential")
    session.set_lifecycle(Lifecycle.LOCKED)
    assert session.lifecycle() is Lifecycle.LOCKED
    assert session.read_credential() == b"credential"
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.internal_authenticate(bytes(32))
    session.set_lifecycle(Lifecycle.SECURED)
    session.internal_authenticate(bytes(32))


def test_personalization_cannot_jump_to_locked() -> None:
    session = StarCardSession(InProcessTransport(VirtualStarCard()))
    session.select()
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.set_lifecycle(Lifecycle.LOCKED)


def test_terminated_card_cannot_be_selected_or_read() -> None:
    card = VirtualStarCard()
    session = StarCardSession(InProcessTransport(card))
    personalize(session, b"credential")
    session.set_lifecycle(Lifecycle.TERMINATED)
    assert session.lifecycle() is Lifecycle.TERMINATED
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.read_credential()
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.internal_authenticate(bytes(32))
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.set_lifecycle(Lifecycle.SECURED)
    with pytest.raises(errors.FunctionNotSupported):
        session.select()
    with pytest.raises(errors.ConditionsNotSatisfied):  # the failed SELECT deselected
        session.serial()


def test_credential_size_limit() -> None:
    card = VirtualStarCard()
    session = StarCardSession(InProcessTransport(card))
    session.select()
    session.write_credential(bytes(2048))
    with pytest.raises(ValueError):
        session.write_credential(bytes(2049))
    with pytest.raises(ValueError):
        session.write_credential(b"")
    too_big = bytes.fromhex("80DA0000000801") + bytes(2049)
    assert status(card, too_big) == 0x6A84
    # chained beyond the limit
    for _ in range(8):
        assert status(card, bytes.fromhex("90DA0000FF") + bytes(255)) == 0x9000
    assert status(card, bytes.fromhex("90DA0000FF") + bytes(255)) == 0x6A84
    assert session.read_credential() == bytes(2048)


def test_session_validates_challenge_length() -> None:
    session = StarCardSession(InProcessTransport(VirtualStarCard()))
    with pytest.raises(ValueError):
        session.internal_authenticate(bytes(31))
    assert session.apdu_count == 0


# -- persistence and atomicity ----------------------------------------------------------------


def test_state_persists_across_reinsertion(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = VirtualStarCard(path)
    credential = os.urandom(1000)
    point = personalize(StarCardSession(InProcessTransport(card)), credential)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    again = VirtualStarCard(path)
    session = StarCardSession(InProcessTransport(again))
    session.select()
    assert session.serial() == card.serial
    assert session.lifecycle() is Lifecycle.SECURED
    assert session.public_key() == point
    assert session.read_credential() == credential
    challenge = os.urandom(32)
    verify(point, challenge, session.internal_authenticate(challenge))


def test_new_card_state_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = VirtualStarCard(path, serial=bytes.fromhex("0102030405060708"))
    saved = json.loads(path.read_text())
    assert saved["serial"] == "0102030405060708"
    assert saved["lifecycle"] == 1
    assert VirtualStarCard(path).serial == card.serial
    assert VirtualStarCard(tmp_path / "other.json").serial != card.serial


def test_state_of_another_serial_or_damaged_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    VirtualStarCard(path, serial=bytes(8))
    with pytest.raises(ValueError):
        VirtualStarCard(path, serial=b"\x01" * 8)
    path.write_text("{not json")
    with pytest.raises(ValueError):
        VirtualStarCard(path)
    path.write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError):
        VirtualStarCard(path)


def test_aborted_chained_write_keeps_old_credential(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = VirtualStarCard(path)
    session = StarCardSession(InProcessTransport(card))
    session.select()
    session.generate_key()
    session.write_credential(b"old")
    before = path.read_bytes()
    assert status(card, bytes.fromhex("90DA0000FF") + b"\x11" * 255) == 0x9000
    card.reset()  # card pulled mid-chain
    assert path.read_bytes() == before
    session.select()
    assert session.read_credential() == b"old"
    # a different command in the middle also aborts the chain
    assert status(card, bytes.fromhex("90DA0000FF") + b"\x22" * 255) == 0x9000
    assert status(card, bytes.fromhex("80CA010100")) == 0x9000
    assert status(card, bytes.fromhex("80DA000001") + b"\x33") == 0x9000
    assert session.read_credential() == b"\x33"


def test_failed_save_answers_6f00_and_keeps_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "card.json"
    card = VirtualStarCard(path)
    session = StarCardSession(InProcessTransport(card))
    session.select()
    session.generate_key()
    session.write_credential(b"old")
    before = path.read_bytes()

    def broken_save(path: Path, state: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("card_profiles.virtual.starcard_v1.save_state", broken_save)
    with pytest.raises(errors.CardInternalError):
        session.write_credential(b"new")
    with pytest.raises(errors.CardInternalError):
        session.secure()
    assert session.read_credential() == b"old"
    assert session.lifecycle() is Lifecycle.PERSONALIZATION
    assert path.read_bytes() == before


def test_save_is_atomic_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "card.json"
    card = VirtualStarCard(path)
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("power lost before rename")

    monkeypatch.setattr("card_profiles.virtual.state.os.replace", crash)
    card.process(SELECT)
    assert status(card, bytes.fromhex("8046000000")) == 0x6F00
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]  # temp file cleaned up


# -- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("", 0x6700),
        ("00", 0x6700),
        ("00A404", 0x6700),
        ("00A4040005F053", 0x6700),  # Lc larger than the data
        ("00A40400020102030405", 0x6700),  # Lc smaller than the data
        ("80DA00000000", 0x6700),  # extended, truncated
        ("80DA0000000000", 0x6985),  # well-formed case 2E, but nothing selected
        ("80DA000000000001", 0x6700),  # extended Lc of zero
        ("80DA0000000003AABB", 0x6700),  # extended Lc past the end
        ("8412000000", 0x6E00),  # unknown CLA
        ("8000000000", 0x6D00),  # unknown INS
        ("80A4040000", 0x6E00),  # SELECT in the wrong class
        ("00A4000000", 0x6A86),  # SELECT with P1 other than 04
        ("10A404000A" + AID.hex() + "00", 0x6E00),  # chaining on SELECT
    ],
)
def test_malformed_apdus_get_proper_status_words(apdu: str, sw: int) -> None:
    card = VirtualStarCard()
    assert card.process(bytes.fromhex(apdu)) == sw.to_bytes(2, "big")


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("80CA010400", 0x6A88),  # unknown GET DATA tag
        ("80CA01010100", 0x6700),  # GET DATA with data
        ("8046010000", 0x6A86),  # GENERATE KEY with P1
        ("80DA0000", 0x6700),  # PUT CREDENTIAL without data
        ("80CB000100", 0x6A86),  # READ CREDENTIAL with P2
        ("008800001F" + "00" * 31 + "00", 0x6700),  # short challenge
        ("80F00F0100", 0x6A86),  # SET LIFECYCLE with P2
        ("80F0420000", 0x6A86),  # SET LIFECYCLE to an unknown state
        ("80F0FF0001AA", 0x6700),  # SET LIFECYCLE with data
        ("00C0010000", 0x6A86),  # GET RESPONSE with P1
    ],
)
def test_bad_parameters_after_select(apdu: str, sw: int) -> None:
    card = VirtualStarCard()
    assert card.process(SELECT) == b"\x90\x00"
    assert card.process(bytes.fromhex(apdu)) == sw.to_bytes(2, "big")


def test_random_apdus_never_crash_the_card(tmp_path: Path) -> None:
    rng = random.Random(7816)
    card = VirtualStarCard(tmp_path / "fuzz.json")
    interesting = [0x00, 0x10, 0x80, 0x90, 0x84, 0xFF]
    ins_codes = [0xA4, 0xCA, 0x46, 0xDA, 0xCB, 0x88, 0xF0, 0xC0, 0x00]
    for i in range(3000):
        if i % 50 == 0:
            card.process(SELECT)
        size = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 40, 260, 2100])
        apdu = bytearray(rng.randbytes(size))
        if size >= 2:
            apdu[0] = rng.choice(interesting)
            apdu[1] = rng.choice(ins_codes)
        response = card.process(bytes(apdu))
        assert len(response) >= 2
        sw = int.from_bytes(response[-2:], "big")
        assert sw in KNOWN_SWS or sw >> 8 in (0x61, 0x6C), (bytes(apdu).hex(), hex(sw))
    # the card is still a working card
    session = StarCardSession(InProcessTransport(card))
    session.select()
    assert len(session.serial()) == 8


def test_internal_error_answers_6f00(monkeypatch: pytest.MonkeyPatch) -> None:
    card = VirtualStarCard()
    card.process(SELECT)

    def explode(*args: object) -> object:
        raise RuntimeError("bug")

    monkeypatch.setattr("card_profiles.virtual.starcard_v1.ec.generate_private_key", explode)
    assert card.process(bytes.fromhex("8046000000")) == b"\x6f\x00"
    assert card.process(bytes.fromhex("80CA010100"))[-2:] == b"\x90\x00"


# -- vpcd adapter (framing and control codes, against an in-process fake vpcd) -----------------


def test_vpcd_answer_control_codes_and_oversize() -> None:
    card = VirtualStarCard()
    assert vpcd.answer(card, b"\x04") == STARCARD_V1.atr
    card.process(SELECT)
    for code in (b"\x00", b"\x01", b"\x02"):
        assert vpcd.answer(card, code) is None
        assert status(card, bytes.fromhex("80CA010100")) == 0x6985  # reset deselected

    class Huge:
        atr = b"\x3b\x00"

        def process(self, apdu: bytes) -> bytes:
            return bytes(70000) + b"\x90\x00"

        def reset(self) -> None:
            pass

    assert vpcd.answer(Huge(), SELECT) == b"\x6f\x00"


def test_vpcd_serve_speaks_the_framing_and_ends_when_vpcd_closes() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    card = VirtualStarCard()
    thread = threading.Thread(target=vpcd.serve, args=(card, "127.0.0.1", port), daemon=True)
    thread.start()
    conn, _ = listener.accept()
    conn.settimeout(5)

    def exchange(payload: bytes) -> bytes:
        conn.sendall(struct.pack(">H", len(payload)))  # vpcd writes length and payload apart
        conn.sendall(payload)
        (length,) = struct.unpack(">H", conn.recv(2, socket.MSG_WAITALL))
        return conn.recv(length, socket.MSG_WAITALL)

    conn.sendall(b"\x00\x01\x01")  # power on: no answer
    assert exchange(b"\x04") == STARCARD_V1.atr
    assert exchange(SELECT) == b"\x90\x00"
    assert exchange(bytes.fromhex("80CA010100")) == card.serial + b"\x90\x00"
    conn.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    listener.close()


def test_vpcd_serve_stops_on_event() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    args = (VirtualStarCard(), "127.0.0.1", listener.getsockname()[1], stop)
    thread = threading.Thread(target=vpcd.serve, args=args, daemon=True)
    thread.start()
    conn, _ = listener.accept()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert conn.recv(1) == b""  # the card closed its side
    conn.close()
    listener.close()


def test_vpcd_connect_gives_up_after_wait() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again: nobody listens there
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        vpcd.serve(VirtualStarCard(), "127.0.0.1", port, wait_s=0.5)
    assert time.monotonic() - started < 3
