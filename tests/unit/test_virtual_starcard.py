"""The virtual StarCard v1 against its specification (docs/card-starcard-v1.md).

Covers personalization over the secure channel, every command in every lifecycle state,
the secure channel itself (try counter, C-MAC, replay, session end), credential versions,
the exact wire bytes (checked against an independent CMAC/KDF implementation), persistence,
atomic writes and the power-loss switch, malformed input, and the vpcd framing adapter.
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
from Crypto.Cipher import AES
from Crypto.Hash import CMAC as RefCMAC
from Crypto.Protocol.KDF import SP800_108_Counter
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from card_profiles import errors, scp
from card_profiles.profiles import STARCARD_V1, Lifecycle
from card_profiles.starcard import (
    AuthenticationBlocked,
    AuthenticationFailed,
    StarCardSession,
)
from card_profiles.transport import InProcessTransport
from card_profiles.virtual import vpcd
from card_profiles.virtual.starcard_v1 import PowerLost, VirtualStarCard, manufacture
from card_profiles.virtual.state import AUTH_TRY_LIMIT, CardState, load_state

AID = STARCARD_V1.aid
SELECT = bytes.fromhex("00A404000A") + AID + b"\x00"
CARD_KEY = bytes.fromhex("404142434445464748494a4b4c4d4e4f")
AUTH = scp.StaticKeyAuthenticator(CARD_KEY)
KNOWN_SWS = {
    0x9000, 0x6700, 0x6982, 0x6983, 0x6985, 0x6A80, 0x6A81, 0x6A82, 0x6A84, 0x6A86, 0x6A88,
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


def new_card(path: Path | None = None, serial: bytes | None = None, **kw: int) -> VirtualStarCard:
    return manufacture(path, serial or os.urandom(8), CARD_KEY, **kw)


def card_in(lifecycle: Lifecycle, *, key: bool = True, credential: bool = True) -> VirtualStarCard:
    """A card in ``lifecycle`` with a key and credential version 1 (as after issuance)."""
    scalar = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    state = CardState(
        os.urandom(8),
        lifecycle,
        CARD_KEY,
        private_key=scalar.to_bytes(32, "big") if key else None,
        credential=b"credential v1" if credential else None,
        credential_version=1 if credential else 0,
    )
    return VirtualStarCard(state=state)


def session_for(card: VirtualStarCard, **profile_changes: object) -> StarCardSession:
    profile = dataclasses.replace(STARCARD_V1, **profile_changes)  # type: ignore[arg-type]
    return StarCardSession(InProcessTransport(card), profile)


def secured(card: VirtualStarCard) -> StarCardSession:
    session = StarCardSession(InProcessTransport(card))
    session.select()
    session.open_secure_channel(AUTH)
    return session


def verify(point: bytes, challenge: bytes, signature: bytes) -> None:
    """Raises InvalidSignature unless ``signature`` (r‖s) is ES256 over ``challenge``."""
    assert len(signature) == 64
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.verify(utils.encode_dss_signature(r, s), challenge, ec.ECDSA(hashes.SHA256()))


def personalize(session: StarCardSession, credential: bytes) -> bytes:
    session.select()
    session.open_secure_channel(AUTH)
    point = session.generate_key()
    session.write_credential(credential, 1)
    session.secure()
    return point


def status(card: VirtualStarCard, apdu: bytes) -> int:
    return int.from_bytes(card.process(apdu)[-2:], "big")


def raw_channel(card: VirtualStarCard, key: bytes = CARD_KEY) -> scp.MacChain:
    """The handshake in raw APDUs (selects first); returns the host's MAC chain."""
    assert card.process(SELECT) == b"\x90\x00"
    host_challenge = os.urandom(8)
    response = card.process(bytes.fromhex("8050000008") + host_challenge + b"\x00")
    assert response[-2:] == b"\x90\x00" and len(response) == 28
    serial, card_challenge, cryptogram = response[:8], response[10:18], response[18:26]
    keys = scp.open_session_with_card_key(
        key, scp.CardChallenge(serial, response[8], host_challenge, card_challenge, cryptogram)
    )
    chain = scp.MacChain(keys.s_mac)
    data = chain.wrap(0x84, 0x82, 0x01, 0x00, keys.host_cryptogram)
    assert status(card, bytes.fromhex("8482010010") + data) == 0x9000
    return chain


def macd(chain: scp.MacChain, header: str, data: bytes = b"", le: bytes = b"") -> bytes:
    """A short APDU with C-MAC: ``header`` is CLA INS P1 P2 in hex (CLA with bit 0x04)."""
    cla, ins, p1, p2 = bytes.fromhex(header)
    body = chain.wrap(cla, ins, p1, p2, data)
    return bytes([cla, ins, p1, p2, len(body)]) + body + le


# -- personalization and the tap --------------------------------------------------------------


def test_full_personalization(tmp_path: Path) -> None:
    card = new_card(tmp_path / "card.json")
    session = StarCardSession(InProcessTransport(card))
    session.select()
    assert session.lifecycle() is Lifecycle.PERSONALIZATION
    serial = session.serial()
    assert len(serial) == 8
    assert serial == card.serial
    assert session.credential_version() == 0
    assert (session.key_info().key_version, session.key_info().tries_remaining) == (1, 10)
    with pytest.raises(errors.DataNotFound):
        session.public_key()
    info = session.open_secure_channel(AUTH)
    assert (info.serial, info.key_version) == (serial, 1)
    assert session.secure_channel_open and card.secure_channel_open
    point = session.generate_key()
    assert len(point) == 65
    assert point[0] == 0x04
    assert session.public_key() == point
    credential = os.urandom(300)
    session.write_credential(credential, 7)
    assert session.read_credential() == credential
    assert session.credential_version() == 7
    challenge = os.urandom(32)
    verify(point, challenge, session.internal_authenticate(challenge))
    session.secure()
    assert session.lifecycle() is Lifecycle.SECURED


def test_signature_is_over_sha256_of_the_challenge_and_fresh() -> None:
    card = new_card()
    session = StarCardSession(InProcessTransport(card))
    point = personalize(session, b"cred")
    challenge = bytes(range(32))
    signature = session.internal_authenticate(challenge)
    verify(point, challenge, signature)
    with pytest.raises(InvalidSignature):
        verify(point, bytes(32), signature)
    other = new_card()
    other_point = personalize(StarCardSession(InProcessTransport(other)), b"cred")
    with pytest.raises(InvalidSignature):
        verify(other_point, challenge, signature)


def test_tap_is_exactly_three_unauthenticated_apdus() -> None:
    card = new_card()
    personalize(StarCardSession(InProcessTransport(card)), os.urandom(2048))
    transport = RecordingTransport(card)
    session = StarCardSession(transport)
    session.select()
    assert len(session.read_credential()) == 2048
    session.internal_authenticate(os.urandom(32))
    assert session.apdu_count == 3
    assert [apdu[0] & 0x04 for apdu in transport.sent] == [0, 0, 0]  # no secure channel


# -- the exact wire bytes, against an independent implementation (pycryptodome) --------------


def ref_cmac(key: bytes, data: bytes) -> bytes:
    return RefCMAC.new(key, msg=data, ciphermod=AES).digest()


def ref_kdf(key: bytes, label: bytes, context: bytes, length: int) -> bytes:
    out = SP800_108_Counter(key, length, ref_cmac, label=label, context=context)
    assert isinstance(out, bytes)
    return out


def test_wire_bytes_match_the_spec() -> None:
    host_challenge, card_challenge = bytes(range(8)), bytes(range(8, 16))
    serial = bytes.fromhex("0102030405060708")
    state = CardState(serial, Lifecycle.PERSONALIZATION, CARD_KEY)
    card = VirtualStarCard(state=state, random_bytes=lambda n: card_challenge[:n])
    transport = RecordingTransport(card)
    session = StarCardSession(transport)
    challenge = bytes(range(32))
    session.select()
    session.serial()
    session.lifecycle()
    session.credential_version()
    session.key_info()
    session.open_secure_channel(AUTH, host_challenge=host_challenge)
    session.generate_key()
    session.public_key()
    session.write_credential(bytes(300), 1)
    session.read_credential()
    session.internal_authenticate(challenge)
    session.secure()

    context = host_challenge + card_challenge
    s_mac = ref_kdf(CARD_KEY, b"StarCard S-MAC", context, 16)
    host_cryptogram = ref_kdf(s_mac, b"StarCard host cryptogram", context, 8)
    chaining = bytes(16)

    def mac(header: bytes, data: bytes) -> bytes:
        nonlocal chaining
        chaining = ref_cmac(s_mac, chaining + header + (len(data) + 8).to_bytes(2, "big") + data)
        return chaining[:8]

    external = host_cryptogram + mac(bytes.fromhex("84820100"), host_cryptogram)
    generate = mac(bytes.fromhex("84460000"), b"")
    credential = (1).to_bytes(4, "big") + bytes(300)
    put = credential + mac(bytes.fromhex("84DA0000"), credential)
    lock = mac(bytes.fromhex("84F00F00"), b"")
    assert transport.sent == [
        bytes.fromhex("00A404000A") + AID + b"\x00",
        bytes.fromhex("80CA010100"),
        bytes.fromhex("80CA010200"),
        bytes.fromhex("80CA010400"),
        bytes.fromhex("80CA010500"),
        bytes.fromhex("8050000008") + host_challenge + b"\x00",
        bytes.fromhex("8482010010") + external,
        bytes.fromhex("8446000008") + generate + b"\x00",
        bytes.fromhex("80CA010300"),
        bytes.fromhex("84DA0000000138") + put,
        bytes.fromhex("80CB0000000000"),
        bytes.fromhex("0088000020") + challenge + b"\x00",
        bytes.fromhex("84F00F0008") + lock,
    ]
    assert set(transport.sws) == {0x9000}
    # The INITIALIZE UPDATE response: serial, key version, protocol, card challenge, cryptogram.
    card_cryptogram = ref_kdf(s_mac, b"StarCard card cryptogram", context, 8)
    fresh = VirtualStarCard(state=state, random_bytes=lambda n: card_challenge[:n])
    fresh.process(SELECT)
    response = fresh.process(bytes.fromhex("8050000008") + host_challenge + b"\x00")
    assert response == serial + b"\x01\x01" + card_challenge + card_cryptogram + b"\x90\x00"


def test_card_without_extended_length_chains_macd_parts_and_uses_get_response() -> None:
    card = new_card()
    transport = RecordingTransport(card)
    profile = dataclasses.replace(STARCARD_V1, extended_length=False)
    session = StarCardSession(transport, profile)
    credential = os.urandom(2048)
    point = personalize(session, credential)
    puts = [apdu for apdu in transport.sent if apdu[1] == 0xDA]
    assert [apdu[0] for apdu in puts] == [0x94] * 8 + [0x84]  # 2052 bytes in 247-byte parts
    assert all(len(apdu) <= 5 + 255 for apdu in puts)
    session = session_for(card, extended_length=False)
    session.select()
    assert session.read_credential() == credential
    challenge = os.urandom(32)
    verify(point, challenge, session.internal_authenticate(challenge))
    # SELECT + READ (256 + 7 GET RESPONSE) + AUTHENTICATE
    assert session.apdu_count == 1 + 8 + 1


def test_card_answers_6cxx_for_a_too_small_short_le() -> None:
    card = new_card(serial=bytes(range(8)))
    card.process(SELECT)
    assert card.process(bytes.fromhex("80CA010104")) == b"\x6c\x08"
    assert card.process(bytes.fromhex("80CA010108")) == bytes(range(8)) + b"\x90\x00"


def test_get_response_without_pending_data_is_refused() -> None:
    card = new_card()
    card.process(SELECT)
    assert status(card, bytes.fromhex("00C0000000")) == 0x6985


# -- every command in every lifecycle state (spec §4 table) -----------------------------------


COMMANDS_BY_STATE = {
    # command: (PERSONALIZATION, SECURED, LOCKED) with a secure channel open
    "get_data": (0x9000, 0x9000, 0x9000),
    "generate_key": (0x9000, 0x6985, 0x6985),
    "put_credential": (0x9000, 0x9000, 0x6985),
    "read_credential": (0x9000, 0x9000, 0x9000),
    "internal_authenticate": (0x9000, 0x9000, 0x6985),
    "initialize_update": (0x9000, 0x9000, 0x9000),
}
STATES = (Lifecycle.PERSONALIZATION, Lifecycle.SECURED, Lifecycle.LOCKED)


def run_command(card: VirtualStarCard, chain: scp.MacChain, name: str) -> int:
    apdus = {
        "get_data": lambda: bytes.fromhex("80CA010200"),
        "generate_key": lambda: macd(chain, "84460000", le=b"\x00"),
        "put_credential": lambda: macd(chain, "84DA0000", (2).to_bytes(4, "big") + b"new"),
        "read_credential": lambda: bytes.fromhex("80CB000000"),
        "internal_authenticate": lambda: bytes.fromhex("0088000020") + bytes(32) + b"\x00",
        "initialize_update": lambda: bytes.fromhex("8050000008") + bytes(8) + b"\x00",
    }
    return status(card, apdus[name]())


@pytest.mark.parametrize("name", sorted(COMMANDS_BY_STATE))
@pytest.mark.parametrize("state", STATES, ids=lambda s: s.name)
def test_command_allowed_per_lifecycle_state(name: str, state: Lifecycle) -> None:
    card = card_in(state)
    chain = raw_channel(card)
    expected = COMMANDS_BY_STATE[name][STATES.index(state)]
    assert run_command(card, chain, name) == expected


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.name)
def test_writes_without_secure_channel_are_refused_in_every_state(state: Lifecycle) -> None:
    card = card_in(state)
    before = card.state
    card.process(SELECT)
    for write in ("8046000000", "80DA000005000000096E", "80F00F00", "80F0FF00"):
        assert status(card, bytes.fromhex(write)) == 0x6982, write
    # a C-MAC without a session is refused the same way
    assert status(card, bytes.fromhex("84F0FF0008") + bytes(8)) == 0x6982
    assert card.state == before


TRANSITIONS = {
    (Lifecycle.PERSONALIZATION, Lifecycle.SECURED): 0x9000,
    (Lifecycle.PERSONALIZATION, Lifecycle.LOCKED): 0x6985,
    (Lifecycle.PERSONALIZATION, Lifecycle.TERMINATED): 0x9000,
    (Lifecycle.PERSONALIZATION, Lifecycle.PERSONALIZATION): 0x6985,
    (Lifecycle.SECURED, Lifecycle.LOCKED): 0x9000,
    (Lifecycle.SECURED, Lifecycle.TERMINATED): 0x9000,
    (Lifecycle.SECURED, Lifecycle.PERSONALIZATION): 0x6985,
    (Lifecycle.SECURED, Lifecycle.SECURED): 0x6985,
    (Lifecycle.LOCKED, Lifecycle.SECURED): 0x9000,
    (Lifecycle.LOCKED, Lifecycle.TERMINATED): 0x9000,
    (Lifecycle.LOCKED, Lifecycle.PERSONALIZATION): 0x6985,
    (Lifecycle.LOCKED, Lifecycle.LOCKED): 0x6985,
}


@pytest.mark.parametrize(
    ("source", "target"), sorted(TRANSITIONS), ids=lambda s: s.name if hasattr(s, "name") else s
)
def test_lifecycle_transitions(source: Lifecycle, target: Lifecycle) -> None:
    card = card_in(source)
    chain = raw_channel(card)
    sw = status(card, macd(chain, f"84F0{target:02X}00"))
    assert sw == TRANSITIONS[(source, target)]
    assert card.lifecycle is (target if sw == 0x9000 else source)


def test_secure_needs_key_and_credential() -> None:
    session = secured(new_card())
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.secure()
    session.generate_key()
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.secure()
    session.write_credential(b"x", 1)
    session.secure()
    assert session.lifecycle() is Lifecycle.SECURED


def test_generate_key_replaces_key_clears_credential_keeps_version() -> None:
    session = secured(new_card())
    first = session.generate_key()
    session.write_credential(b"old credential", 3)
    second = session.generate_key()
    assert second != first
    assert session.public_key() == second
    with pytest.raises(errors.NotFound):
        session.read_credential()
    assert session.credential_version() == 3
    with pytest.raises(errors.WrongData):
        session.write_credential(b"replayed", 3)
    session.write_credential(b"new", 4)


def test_secured_card_replaces_its_credential_only_with_a_newer_version() -> None:
    card = new_card()
    session = StarCardSession(InProcessTransport(card))
    point = personalize(session, b"credential v1")
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.generate_key()
    with pytest.raises(errors.WrongData):  # a replayed older (here: the same) version
        session.write_credential(b"replayed", 1)
    assert session.secure_channel_open  # a refusal after the MAC keeps the session
    session.write_credential(b"credential v2", 2)
    with pytest.raises(errors.WrongData):
        session.write_credential(b"credential v1", 1)
    assert session.read_credential() == b"credential v2"
    assert session.credential_version() == 2
    assert session.public_key() == point
    session.select()  # ends the secure channel
    with pytest.raises(errors.SecurityStatusNotSatisfied):
        session.write_credential(b"credential v3", 3)
    assert card.state.credential == b"credential v2"


def test_locked_card_reads_but_does_not_authenticate_or_take_credentials() -> None:
    session = StarCardSession(InProcessTransport(new_card()))
    personalize(session, b"credential")
    session.set_lifecycle(Lifecycle.LOCKED)
    assert session.lifecycle() is Lifecycle.LOCKED
    assert session.read_credential() == b"credential"
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.internal_authenticate(bytes(32))
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.write_credential(b"new", 2)
    session.set_lifecycle(Lifecycle.SECURED)
    session.internal_authenticate(bytes(32))


def test_terminated_card_cannot_be_selected_or_read() -> None:
    card = new_card()
    session = StarCardSession(InProcessTransport(card))
    personalize(session, b"credential")
    session.set_lifecycle(Lifecycle.TERMINATED)
    assert not card.secure_channel_open
    assert session.lifecycle() is Lifecycle.TERMINATED
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.read_credential()
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.internal_authenticate(bytes(32))
    with pytest.raises(errors.ConditionsNotSatisfied):
        session.open_secure_channel(AUTH)
    with pytest.raises(errors.SecurityStatusNotSatisfied):
        session.set_lifecycle(Lifecycle.SECURED)
    with pytest.raises(errors.FunctionNotSupported):
        session.select()
    with pytest.raises(errors.ConditionsNotSatisfied):  # the failed SELECT deselected
        session.serial()


def test_credential_size_limit() -> None:
    card = new_card()
    session = secured(card)
    session.write_credential(bytes(2048), 1)
    with pytest.raises(ValueError):
        session.write_credential(bytes(2049), 2)
    with pytest.raises(ValueError):
        session.write_credential(b"", 2)
    with pytest.raises(ValueError):
        session.write_credential(b"x", 0)
    with pytest.raises(ValueError):
        session.write_credential(b"x", 1 << 32)
    assert session.apdu_count == 4  # SELECT, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, PUT
    chain = raw_channel(card)
    too_big = (2).to_bytes(4, "big") + bytes(2049)
    body = chain.wrap(0x84, 0xDA, 0, 0, too_big)
    assert status(card, b"\x84\xda\x00\x00\x00" + len(body).to_bytes(2, "big") + body) == 0x6A84
    only_version = chain.wrap(0x84, 0xDA, 0, 0, (2).to_bytes(4, "big"))
    assert status(card, b"\x84\xda\x00\x00\x0c" + only_version) == 0x6700
    assert card.state.credential == bytes(2048)


def test_session_validates_challenge_length() -> None:
    session = StarCardSession(InProcessTransport(new_card()))
    with pytest.raises(ValueError):
        session.internal_authenticate(bytes(31))
    with pytest.raises(ValueError):
        session.open_secure_channel(AUTH, host_challenge=bytes(7))
    assert session.apdu_count == 0


# -- the secure channel -----------------------------------------------------------------------


def test_wrong_host_cryptogram_decrements_the_persisted_try_counter(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = new_card(path)
    wrong = scp.StaticKeyAuthenticator(bytes(16))
    session = StarCardSession(InProcessTransport(card))
    session.select()
    # the host's own check of the card cryptogram fails first: nothing reaches the card
    with pytest.raises(scp.CardNotAuthentic):
        session.open_secure_channel(wrong)
    assert session.key_info().tries_remaining == AUTH_TRY_LIMIT
    for attempt in range(1, 4):
        card.process(SELECT)
        response = card.process(bytes.fromhex("8050000008") + bytes(8) + b"\x00")
        assert response[-2:] == b"\x90\x00"
        forged = bytes(8) + bytes(8)  # host cryptogram and C-MAC guessed
        sw = status(card, bytes.fromhex("8482010010") + forged)
        assert sw == 0x63C0 | (AUTH_TRY_LIMIT - attempt)
        assert load_state(path).auth_tries == AUTH_TRY_LIMIT - attempt
    assert VirtualStarCard(path).state.auth_tries == AUTH_TRY_LIMIT - 3  # survives power off
    session.select()
    assert session.key_info().tries_remaining == AUTH_TRY_LIMIT - 3
    session.open_secure_channel(AUTH)  # success restores the counter
    assert load_state(path).auth_tries == AUTH_TRY_LIMIT


def test_bad_c_mac_on_external_authenticate_counts_as_a_failure() -> None:
    card = new_card()
    card.process(SELECT)
    host_challenge = os.urandom(8)
    response = card.process(bytes.fromhex("8050000008") + host_challenge + b"\x00")
    keys = scp.open_session_with_card_key(
        CARD_KEY,
        scp.CardChallenge(card.serial, 1, host_challenge, response[10:18], response[18:26]),
    )
    data = scp.MacChain(keys.s_mac).wrap(0x84, 0x82, 0x01, 0x00, keys.host_cryptogram)
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    assert status(card, bytes.fromhex("8482010010") + tampered) == 0x63C9
    assert not card.secure_channel_open


def test_counter_at_zero_refuses_authentication_for_ever(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = new_card(path)
    for _ in range(AUTH_TRY_LIMIT):
        card.process(SELECT)
        card.process(bytes.fromhex("8050000008") + bytes(8) + b"\x00")
        assert status(card, bytes.fromhex("8482010010") + bytes(16)) >> 4 == 0x63C
    assert load_state(path).auth_tries == 0
    again = VirtualStarCard(path)  # power cycle: still blocked
    session = StarCardSession(InProcessTransport(again))
    session.select()
    with pytest.raises(AuthenticationBlocked) as blocked:
        session.open_secure_channel(AUTH)  # even with the right key
    assert blocked.value.sw == 0x6983
    again.process(SELECT)
    assert status(again, bytes.fromhex("8050000008") + bytes(8) + b"\x00") == 0x6983
    with pytest.raises(errors.SecurityStatusNotSatisfied):
        session.generate_key()


def test_session_raises_authentication_failed_with_tries_left() -> None:
    card = new_card()

    class LyingHsm:
        def open_session(self, challenge: scp.CardChallenge) -> scp.SessionKeys:
            genuine = AUTH.open_session(challenge)
            return scp.SessionKeys(bytes(8), genuine.s_mac)

    session = StarCardSession(InProcessTransport(card))
    session.select()
    with pytest.raises(AuthenticationFailed) as failed:
        session.open_secure_channel(LyingHsm())
    assert failed.value.tries_remaining == AUTH_TRY_LIMIT - 1
    assert not session.secure_channel_open


def test_tampered_c_mac_is_refused_and_ends_the_session() -> None:
    card = new_card()
    chain = raw_channel(card)
    good = macd(chain, "84DA0000", (1).to_bytes(4, "big") + b"credential")
    tampered = bytearray(good)
    tampered[12] ^= 0x01  # one bit of the credential
    assert status(card, bytes(tampered)) == 0x6982
    assert not card.secure_channel_open
    assert card.state.credential is None
    assert status(card, good) == 0x6982  # no session any more, even for the genuine APDU
    chain = raw_channel(card)
    header_changed = macd(chain, "84DA0000", (1).to_bytes(4, "big") + b"x")
    header_changed = header_changed[:3] + b"\x01" + header_changed[4:]  # P2 changed
    assert status(card, header_changed) == 0x6982


def test_recorded_write_replayed_in_another_session_is_refused() -> None:
    card = new_card()
    chain = raw_channel(card)
    recorded = macd(chain, "84DA0000", (1).to_bytes(4, "big") + b"credential v1")
    assert status(card, recorded) == 0x9000
    assert status(card, recorded) == 0x6982  # the chain moved on: replay in-session fails
    raw_channel(card)
    assert status(card, recorded) == 0x6982  # new session keys
    assert card.state.credential == b"credential v1"


def test_plain_write_in_an_open_session_is_refused_and_ends_it() -> None:
    card = new_card()
    chain = raw_channel(card)
    assert status(card, bytes.fromhex("8046000000")) == 0x6982
    assert not card.secure_channel_open
    assert status(card, macd(chain, "84460000", le=b"\x00")) == 0x6982


def test_macd_reads_are_accepted_in_a_session_and_chain() -> None:
    card = new_card(serial=bytes(range(8)))
    chain = raw_channel(card)
    response = card.process(macd(chain, "84CA0101", le=b"\x00"))
    assert response == bytes(range(8)) + b"\x90\x00"
    assert status(card, macd(chain, "84460000", le=b"\x00")) == 0x9000


@pytest.mark.parametrize(
    "interruption",
    [SELECT, bytes.fromhex("80CA010100"), "reset"],
    ids=["select", "get-data", "reset"],
)
def test_external_authenticate_must_follow_initialize_update(interruption: object) -> None:
    card = new_card()
    card.process(SELECT)
    host_challenge = os.urandom(8)
    response = card.process(bytes.fromhex("8050000008") + host_challenge + b"\x00")
    keys = scp.open_session_with_card_key(
        CARD_KEY,
        scp.CardChallenge(card.serial, 1, host_challenge, response[10:18], response[18:26]),
    )
    if interruption == "reset":
        card.reset()
        card.process(SELECT)
    else:
        assert isinstance(interruption, bytes)
        assert status(card, interruption) == 0x9000
    data = scp.MacChain(keys.s_mac).wrap(0x84, 0x82, 0x01, 0x00, keys.host_cryptogram)
    assert status(card, bytes.fromhex("8482010010") + data) == 0x6985
    assert card.state.auth_tries == AUTH_TRY_LIMIT  # no attempt was made


@pytest.mark.parametrize("end", ["select", "reset", "initialize_update"])
def test_session_ends_on_select_reset_and_new_handshake(end: str) -> None:
    card = new_card()
    chain = raw_channel(card)
    if end == "select":
        assert card.process(SELECT) == b"\x90\x00"
    elif end == "reset":
        card.reset()
        card.process(SELECT)
    else:
        assert status(card, bytes.fromhex("8050000008") + bytes(8) + b"\x00") == 0x9000
    assert not card.secure_channel_open
    assert status(card, macd(chain, "84460000", le=b"\x00")) == 0x6982


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("8050010008" + "00" * 8 + "00", 0x9000),  # P1 = the card's key version
        ("8050020008" + "00" * 8 + "00", 0x6A88),  # another key version
        ("8050000108" + "00" * 8 + "00", 0x6A86),  # P2
        ("8050000007" + "00" * 7 + "00", 0x6700),  # host challenge of 7 bytes
        ("8450000008" + "00" * 8 + "00", 0x6E00),  # INITIALIZE UPDATE never carries a C-MAC
        ("8082010010" + "00" * 16, 0x6982),  # EXTERNAL AUTHENTICATE without C-MAC bit
        ("8482010010" + "00" * 16, 0x6985),  # EXTERNAL AUTHENTICATE without INITIALIZE UPDATE
        ("04A404000A" + AID.hex() + "00", 0x6E00),  # C-MAC bit on the ISO class
        ("8488000020" + "00" * 32 + "00", 0x6E00),  # INTERNAL AUTHENTICATE in the wrong class
    ],
)
def test_secure_channel_parameter_errors(apdu: str, sw: int) -> None:
    card = new_card()
    card.process(SELECT)
    assert status(card, bytes.fromhex(apdu)) == sw


def test_external_authenticate_parameter_errors_keep_the_counter() -> None:
    card = new_card()
    for apdu, sw in (("8482030010" + "00" * 16, 0x6A86), ("848201000F" + "00" * 15, 0x6700)):
        card.process(SELECT)
        card.process(bytes.fromhex("8050000008") + bytes(8) + b"\x00")
        assert status(card, bytes.fromhex(apdu)) == sw
    assert card.state.auth_tries == AUTH_TRY_LIMIT


# -- persistence, atomicity and power loss ----------------------------------------------------


def test_state_persists_across_reinsertion(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = new_card(path)
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
    assert session.credential_version() == 1
    challenge = os.urandom(32)
    verify(point, challenge, session.internal_authenticate(challenge))


def test_manufacture_writes_the_state_once(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = manufacture(path, bytes.fromhex("0102030405060708"), CARD_KEY, key_version=3)
    saved = json.loads(path.read_text())
    assert saved["serial"] == "0102030405060708"
    assert (saved["lifecycle"], saved["key_version"], saved["auth_tries"]) == (1, 3, 10)
    assert saved["credential_version"] == 0
    assert VirtualStarCard(path).serial == card.serial
    with pytest.raises(FileExistsError):
        manufacture(path, bytes(8), CARD_KEY)
    assert json.loads(path.read_text())["serial"] == "0102030405060708"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]


def test_bad_or_missing_state_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    with pytest.raises(FileNotFoundError):
        VirtualStarCard(path)
    with pytest.raises(ValueError):
        VirtualStarCard()
    new_card(path)
    with pytest.raises(ValueError):
        VirtualStarCard(path, state=load_state(path))
    for broken in ("{not json", json.dumps({"format": "other", "version": 2})):
        path.write_text(broken)
        with pytest.raises(ValueError):
            VirtualStarCard(path)
    with pytest.raises(ValueError):
        manufacture(None, bytes(7), CARD_KEY)
    with pytest.raises(ValueError):
        manufacture(None, bytes(8), bytes(15))


def test_aborted_chained_write_keeps_old_credential(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = new_card(path)
    session = secured(card)
    session.generate_key()
    session.write_credential(b"old", 1)
    before = path.read_bytes()
    chain = raw_channel(card)
    first = (2).to_bytes(4, "big") + b"\x11" * 200
    assert status(card, macd(chain, "94DA0000", first)) == 0x9000
    card.reset()  # card pulled mid-chain
    assert path.read_bytes() == before
    chain = raw_channel(card)
    assert status(card, macd(chain, "94DA0000", first)) == 0x9000
    assert status(card, bytes.fromhex("80CA010100")) == 0x9000  # another command aborts
    assert status(card, macd(chain, "84DA0000", b"\x33")) == 0x6700  # no version: too short
    assert card.state.credential == b"old"
    assert status(card, macd(chain, "84DA0000", (2).to_bytes(4, "big") + b"\x33")) == 0x9000
    assert card.state.credential == b"\x33"


@pytest.mark.parametrize("commits", [0, 1])
def test_power_loss_during_a_credential_write_leaves_old_or_new(
    tmp_path: Path, commits: int
) -> None:
    path = tmp_path / "card.json"
    setup = new_card(path)
    personalize(StarCardSession(InProcessTransport(setup)), b"credential v1")
    card = VirtualStarCard(path, power_loss_after=3, power_loss_commits=commits)
    session = secured(card)  # APDUs 1-3: SELECT, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE
    with pytest.raises(PowerLost):
        session.write_credential(b"credential v2", 2)  # APDU 4: power lost
    assert isinstance(PowerLost(), errors.CardRemoved)
    assert not card.powered
    with pytest.raises(PowerLost):
        card.process(SELECT)  # dead until powered on
    eeprom = load_state(path)
    expected = (b"credential v1", 1) if commits == 0 else (b"credential v2", 2)
    assert (eeprom.credential, eeprom.credential_version) == expected
    card.reset()
    assert card.state == eeprom
    session = StarCardSession(InProcessTransport(card))
    session.select()
    assert session.read_credential() == expected[0]  # the switch fired once only
    assert card.apdu_count == 6  # 4, then SELECT and READ (not the one sent without power)


@pytest.mark.parametrize(("commits", "tries"), [(0, 10), (1, 9), (2, 10)])
def test_power_loss_inside_external_authenticate(tmp_path: Path, commits: int, tries: int) -> None:
    """The counter is decremented before the check and restored after: cutting the power
    between the two leaves it decremented (an attacker cannot save an attempt)."""
    path = tmp_path / "card.json"
    new_card(path)
    card = VirtualStarCard(path, power_loss_after=2, power_loss_commits=commits)
    session = StarCardSession(InProcessTransport(card))
    session.select()
    with pytest.raises(PowerLost):
        session.open_secure_channel(AUTH)
    assert load_state(path).auth_tries == tries
    card.reset()
    assert not card.secure_channel_open
    secured(card).generate_key()
    assert load_state(path).auth_tries == AUTH_TRY_LIMIT


def test_power_loss_on_a_read_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    new_card(path)
    before = path.read_bytes()
    card = VirtualStarCard(path, power_loss_after=1)
    card.process(SELECT)
    with pytest.raises(PowerLost):
        card.process(bytes.fromhex("80CA010100"))
    assert path.read_bytes() == before


def test_power_switch_arguments_are_checked() -> None:
    state = CardState(bytes(8), Lifecycle.PERSONALIZATION, CARD_KEY)
    with pytest.raises(ValueError):
        VirtualStarCard(state=state, power_loss_after=-1)
    with pytest.raises(ValueError):
        VirtualStarCard(state=state, power_loss_commits=-1)


def test_failed_save_answers_6f00_and_keeps_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "card.json"
    card = new_card(path)
    session = secured(card)
    session.generate_key()
    session.write_credential(b"old", 1)
    before = path.read_bytes()

    def broken_save(path: Path, state: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("card_profiles.virtual.starcard_v1.save_state", broken_save)
    with pytest.raises(errors.CardInternalError):
        session.write_credential(b"new", 2)
    assert not session.secure_channel_open  # the host cannot know where the card's chain is
    session.select()
    with pytest.raises(errors.CardInternalError):
        session.open_secure_channel(AUTH)  # the try counter cannot be written either
    assert session.read_credential() == b"old"
    assert session.lifecycle() is Lifecycle.PERSONALIZATION
    assert path.read_bytes() == before


def test_save_is_atomic_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "card.json"
    card = new_card(path)
    chain = raw_channel(card)
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("power lost before rename")

    monkeypatch.setattr("card_profiles.virtual.state.os.replace", crash)
    assert status(card, macd(chain, "84460000", le=b"\x00")) == 0x6F00
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]  # temp file cleaned up


def test_temp_file_left_by_a_crash_mid_write_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    new_card(path, serial=bytes(8))
    (tmp_path / ".card.json.abc123.tmp").write_text('{"format": "starcard-v1-vir')
    assert VirtualStarCard(path).serial == bytes(8)


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
        ("C012000000", 0x6E00),  # unknown CLA
        ("8000000000", 0x6D00),  # unknown INS
        ("8412000000", 0x6D00),  # unknown INS, C-MAC bit set
        ("80A4040000", 0x6E00),  # SELECT in the wrong class
        ("00A4000000", 0x6A86),  # SELECT with P1 other than 04
        ("10A404000A" + AID.hex() + "00", 0x6E00),  # chaining on SELECT
    ],
)
def test_malformed_apdus_get_proper_status_words(apdu: str, sw: int) -> None:
    card = new_card()
    assert card.process(bytes.fromhex(apdu)) == sw.to_bytes(2, "big")


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("80CA010600", 0x6A88),  # unknown GET DATA tag
        ("80CA01010100", 0x6700),  # GET DATA with data
        ("80CB000100", 0x6A86),  # READ CREDENTIAL with P2
        ("008800001F" + "00" * 31 + "00", 0x6700),  # short challenge
        ("00C0010000", 0x6A86),  # GET RESPONSE with P1
    ],
)
def test_bad_parameters_after_select(apdu: str, sw: int) -> None:
    card = new_card()
    assert card.process(SELECT) == b"\x90\x00"
    assert card.process(bytes.fromhex(apdu)) == sw.to_bytes(2, "big")


@pytest.mark.parametrize(
    ("header", "data", "sw"),
    [
        ("84460100", b"", 0x6A86),  # GENERATE KEY with P1
        ("84460000", b"\x01", 0x6700),  # GENERATE KEY with data
        ("84DA0100", (9).to_bytes(4, "big") + b"x", 0x6A86),  # PUT CREDENTIAL with P1
        ("84F00F01", b"", 0x6A86),  # SET LIFECYCLE with P2
        ("84F04200", b"", 0x6A86),  # SET LIFECYCLE to an unknown state
        ("84F0FF00", b"\xaa", 0x6700),  # SET LIFECYCLE with data
    ],
)
def test_bad_parameters_of_authenticated_writes(header: str, data: bytes, sw: int) -> None:
    card = new_card()
    chain = raw_channel(card)
    assert status(card, macd(chain, header, data)) == sw
    assert card.secure_channel_open  # refused after the MAC: the session goes on


def test_random_apdus_never_crash_the_card(tmp_path: Path) -> None:
    rng = random.Random(7816)
    card = new_card(tmp_path / "fuzz.json")
    interesting = [0x00, 0x10, 0x80, 0x90, 0x84, 0x94, 0x04, 0xFF]
    ins_codes = [0xA4, 0xCA, 0x46, 0xDA, 0xCB, 0x88, 0xF0, 0xC0, 0x50, 0x82, 0x00]
    for i in range(3000):
        if i % 50 == 0:
            card.process(SELECT)
        if i % 200 == 0:
            raw_channel(card)
        size = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 13, 21, 40, 260, 2100])
        apdu = bytearray(rng.randbytes(size))
        if size >= 2:
            apdu[0] = rng.choice(interesting)
            apdu[1] = rng.choice(ins_codes)
        response = card.process(bytes(apdu))
        assert len(response) >= 2
        sw = int.from_bytes(response[-2:], "big")
        assert sw in KNOWN_SWS or sw >> 8 in (0x61, 0x6C, 0x63), (bytes(apdu).hex(), hex(sw))
    # the card is still a working card (random guesses never hit the try counter's end)
    assert card.state.auth_tries > 0
    session = secured(card)
    assert len(session.serial()) == 8


def test_internal_error_answers_6f00(monkeypatch: pytest.MonkeyPatch) -> None:
    card = new_card()
    chain = raw_channel(card)

    def explode(*args: object) -> object:
        raise RuntimeError("bug")

    monkeypatch.setattr("card_profiles.virtual.starcard_v1.ec.generate_private_key", explode)
    assert card.process(macd(chain, "84460000", le=b"\x00")) == b"\x6f\x00"
    assert card.process(bytes.fromhex("80CA010100"))[-2:] == b"\x90\x00"


# -- vpcd adapter (framing and control codes, against an in-process fake vpcd) -----------------


def test_vpcd_answer_control_codes_and_oversize() -> None:
    card = new_card()
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
    card = new_card()
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


def test_vpcd_power_loss_closes_the_connection_without_an_answer() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    card = new_card(power_loss_after=1)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            vpcd.serve(card, "127.0.0.1", port)
        except PowerLost as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    conn, _ = listener.accept()
    conn.settimeout(5)
    conn.sendall(struct.pack(">H", len(SELECT)) + SELECT)
    assert conn.recv(2, socket.MSG_WAITALL) == b"\x00\x02"
    assert conn.recv(2, socket.MSG_WAITALL) == b"\x90\x00"
    get_data = bytes.fromhex("80CA010100")
    conn.sendall(struct.pack(">H", len(get_data)) + get_data)
    assert conn.recv(2) == b""  # closed, no answer
    thread.join(timeout=5)
    assert raised and isinstance(raised[0], PowerLost)
    conn.close()
    listener.close()


def test_vpcd_serve_stops_on_event() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    args = (new_card(), "127.0.0.1", listener.getsockname()[1], stop)
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
        vpcd.serve(new_card(), "127.0.0.1", port, wait_s=0.5)
    assert time.monotonic() - started < 3


def test_vpcd_cli_refuses_a_card_that_was_never_manufactured(tmp_path: Path) -> None:
    assert vpcd.main(["--state", str(tmp_path / "none.json"), "--wait", "0.1"]) == 1
