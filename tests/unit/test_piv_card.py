"""The virtual PIV card at the APDU level: what it answers to raw commands.

Covers the behaviours OpenSC relies on (GET DATA with a small Le answered in 61xx pieces,
Discovery, the APT), both management-key protocols, chaining rules, persistence, and that no
APDU (random or malformed) can crash the card.
"""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from card_profiles.piv import PIV_AID, AesManagementKey, PivSession
from card_profiles.tlv import encode_tlv, parse_all, parse_single
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.piv_card import (
    DEFAULT_MANAGEMENT_KEY,
    PivCardState,
    VirtualPivCard,
    load_piv_state,
)

SELECT = bytes.fromhex("00A4040009") + PIV_AID[:9] + b"\x00"
ADMIN = AesManagementKey(DEFAULT_MANAGEMENT_KEY)
GET_CHUID = bytes.fromhex("00CB3FFF055C035FC102")
KNOWN_SWS = {
    0x9000, 0x6700, 0x6982, 0x6983, 0x6985, 0x6884, 0x6A80, 0x6A82, 0x6A84, 0x6A86, 0x6A88,
    0x6D00, 0x6E00,
}  # fmt: skip


def sw(response: bytes) -> int:
    return int.from_bytes(response[-2:], "big")


def selected(card: VirtualPivCard | None = None) -> VirtualPivCard:
    card = card or VirtualPivCard()
    assert sw(card.process(SELECT)) == 0x9000
    return card


def test_select_answers_the_application_property_template() -> None:
    card = VirtualPivCard()
    response = card.process(SELECT)
    assert sw(response) == 0x9000
    apt = parse_single(response[:-2])
    assert apt.tag == 0x61
    fields = {item.tag: item.value for item in apt.children()}
    assert fields[0x4F] == bytes.fromhex("000010000100")
    assert fields[0x79] == encode_tlv(0x4F, bytes.fromhex("A000000308"))
    algorithms = [item.value for item in parse_all(fields[0xAC]) if item.tag == 0x80]
    assert algorithms == [b"\x08", b"\x11"]


def test_commands_before_select_and_unknown_aid() -> None:
    card = VirtualPivCard()
    assert sw(card.process(GET_CHUID + b"\x00")) == 0x6985
    assert sw(card.process(bytes.fromhex("00A4040005A000000308"))) == 0x6A82  # RID only
    selected(card)
    assert sw(card.process(bytes.fromhex("00A4040007F053544152303100"))) == 0x6A82
    assert sw(card.process(GET_CHUID + b"\x00")) == 0x9000  # PIV stays selected


def test_get_data_with_small_le_hands_out_61xx_pieces() -> None:
    """OpenSC first reads 8 bytes to learn an object's length, then the whole object."""
    card = selected()
    first = card.process(GET_CHUID + b"\x08")
    assert len(first) == 10
    assert first[-2] == 0x61
    rest = card.process(bytes([0x00, 0xC0, 0x00, 0x00, first[-1]]))
    assert sw(rest) == 0x9000
    whole = card.process(GET_CHUID + b"\x00")
    assert first[:-2] + rest[:-2] == whole[:-2]
    assert whole[:2] == b"\x53\x3b"


def test_case_3_command_leaves_its_answer_for_get_response() -> None:
    card = VirtualPivCard()
    answer = card.process(SELECT[:-1])  # no Le
    assert answer[0] == 0x61 and len(answer) == 2
    fetched = card.process(bytes([0x00, 0xC0, 0x00, 0x00, answer[1]]))
    assert sw(fetched) == 0x9000 and fetched[0] == 0x61
    assert sw(card.process(bytes.fromhex("00C0000000"))) == 0x6985  # nothing pending now


def test_discovery_object() -> None:
    card = selected()
    response = card.process(bytes.fromhex("00CB3FFF035C017E00"))
    assert response[:-2] == bytes.fromhex("7E124F0BA0000003080000100001005F2F024000")


def test_external_authentication_of_the_management_key() -> None:
    """The single-challenge variant (81 → 82), as OpenSC's ``piv-tool -A A:9B:08`` uses it."""
    card = selected()
    answer = card.process(bytes.fromhex("0087089B047C02810000"))
    challenge = parse_single(parse_single(answer[:-2]).value).value
    wrong = encode_tlv(0x7C, encode_tlv(0x82, bytes(16)))
    assert sw(card.process(bytes.fromhex("0087089B") + bytes([len(wrong)]) + wrong)) == 0x6982
    answer = card.process(bytes.fromhex("0087089B047C02810000"))
    challenge = parse_single(parse_single(answer[:-2]).value).value
    right = encode_tlv(0x7C, encode_tlv(0x82, ADMIN.encrypt_block(challenge)))
    assert sw(card.process(bytes.fromhex("0087089B") + bytes([len(right)]) + right)) == 0x9000
    control = bytes.fromhex("AC03800111")
    generate = bytes.fromhex("0047009E") + bytes([len(control)]) + control + b"\x00"
    assert card.process(generate)[:3] == bytes.fromhex("7F4943")


def test_witness_is_single_use() -> None:
    card = selected()
    answer = card.process(bytes.fromhex("0087089B047C02800000"))
    witness = ADMIN.decrypt_block(parse_single(parse_single(answer[:-2]).value).value)
    reply = encode_tlv(0x7C, encode_tlv(0x80, witness) + encode_tlv(0x81, bytes(16)))
    command = bytes.fromhex("0087089B") + bytes([len(reply)]) + reply + b"\x00"
    assert sw(card.process(command)) == 0x9000
    assert sw(card.process(command)) == 0x6982  # replay
    card.process(bytes.fromhex("0087089B047C02800000"))
    card.process(GET_CHUID + b"\x00")  # any other command forgets the witness
    assert sw(card.process(command)) == 0x6982


def test_chaining_rules_and_torn_put_data_keeps_the_old_object() -> None:
    card = selected()
    session = PivSession(InProcessTransport(card))
    session.authenticate_management_key(ADMIN)
    session.write_credential(b"old")
    assert sw(card.process(bytes.fromhex("1020008008313233343536FFFF"))) == 0x6884
    tag = encode_tlv(0x5C, bytes.fromhex("5FFF53"))
    body = tag + encode_tlv(0x53, encode_tlv(0x80, os.urandom(300)) + b"\xfe\x00")
    first = bytes.fromhex("10DB3FFF") + bytes([200]) + body[:200]
    assert sw(card.process(first)) == 0x9000
    card.process(GET_CHUID + b"\x00")  # another command: the chain is dropped
    last = bytes.fromhex("00DB3FFF") + bytes([len(body) - 200]) + body[200:]
    assert sw(card.process(last)) == 0x6A80  # the tail alone is no valid object
    assert session.read_credential() == b"old"


def test_put_data_checks() -> None:
    card = selected()
    session = PivSession(InProcessTransport(card), extended_length=True)
    session.authenticate_management_key(ADMIN)
    assert sw(card.process(bytes.fromhex("00DB3FFF075C017E5302AABB"))) == 0x6A80  # Discovery
    assert sw(card.process(bytes.fromhex("00DB3FFF045C017E00"))) == 0x6A80
    too_big = encode_tlv(0x5C, bytes.fromhex("5FC105")) + encode_tlv(0x53, bytes(5000))
    command = bytes.fromhex("00DB3FFF00") + len(too_big).to_bytes(2, "big") + too_big
    assert sw(card.process(command)) == 0x6A84
    assert sw(card.process(bytes.fromhex("00DB3FFE075C035FC1055300"))) == 0x6A86


def test_general_authenticate_refusals() -> None:
    card = selected()
    sign = encode_tlv(0x7C, bytes.fromhex("8200") + encode_tlv(0x81, bytes(32)))
    apdu = bytes([len(sign)]) + sign + b"\x00"
    assert sw(card.process(bytes.fromhex("0087119E") + apdu)) == 0x6A88  # no key yet
    assert sw(card.process(bytes.fromhex("0087119A") + apdu)) == 0x6A88  # no such slot
    assert sw(card.process(bytes.fromhex("008711F0") + apdu)) == 0x6A86
    session = PivSession(InProcessTransport(card))
    session.authenticate_management_key(ADMIN)
    session.generate_card_key()
    assert sw(card.process(bytes.fromhex("0087149E") + apdu)) == 0x6A86  # not P-384
    short = encode_tlv(0x7C, bytes.fromhex("8200") + encode_tlv(0x81, bytes(20)))
    assert sw(card.process(bytes.fromhex("0087119E") + bytes([len(short)]) + short)) == 0x6A80
    assert sw(card.process(bytes.fromhex("0087119E") + apdu)) == 0x9000


def test_state_file_is_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "piv.json"
    card = VirtualPivCard(path)
    session = PivSession(InProcessTransport(card))
    session.select()
    session.authenticate_management_key(ADMIN)
    point = session.generate_card_key()
    session.write_credential(b"credential")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    state = load_piv_state(path)
    assert state.guid == card.guid and state.card_key is not None
    again = VirtualPivCard(path)
    assert again.guid == card.guid
    assert again.state == card.state
    session = PivSession(InProcessTransport(again))
    session.select()
    assert session.read_credential() == b"credential"
    assert point  # the same key signs: checked in test_piv and the e2e test


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        json.dumps({"format": "starcard-piv-virtual-state", "version": 99}).encode(),
        json.dumps({"format": "starcard-piv-virtual-state", "version": 1}).encode(),
    ],
)
def test_damaged_state_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "piv.json"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        VirtualPivCard(path)


def test_state_validation() -> None:
    with pytest.raises(ValueError):
        PivCardState(bytes(15), DEFAULT_MANAGEMENT_KEY)
    with pytest.raises(ValueError):
        PivCardState(bytes(16), bytes(8))
    with pytest.raises(ValueError):
        PivCardState(bytes(16), DEFAULT_MANAGEMENT_KEY, pin="12ab56")
    with pytest.raises(ValueError):
        PivCardState(bytes(16), DEFAULT_MANAGEMENT_KEY, pin_retries=4)


def test_failed_save_answers_6f00_and_keeps_state(tmp_path: Path) -> None:
    home = tmp_path / "card"
    home.mkdir()
    card = selected(VirtualPivCard(home / "piv.json"))
    before = card.state
    home.rename(tmp_path / "gone")  # the next save cannot create its temp file
    answer = card.process(bytes.fromhex("0020008008303030303030FFFF"))  # wrong PIN: counted
    assert sw(answer) == 0x6F00
    assert card.state == before
    assert card.state.pin_retries == 3


def test_random_apdus_never_crash_the_card() -> None:
    rng = random.Random(7)
    card = selected()
    for _ in range(3000):
        length = rng.choice([0, 1, 3, 4, 5, 6, 7, 9, 20, 300])
        apdu = bytes(rng.getrandbits(8) for _ in range(length))
        if rng.random() < 0.5 and len(apdu) >= 4:
            apdu = bytes([rng.choice([0x00, 0x10]), rng.choice([0xA4, 0xCB, 0xDB, 0x47, 0x87,
                          0x20, 0x24, 0x2C, 0xC0])]) + apdu[2:]  # fmt: skip
        response = card.process(apdu)
        assert len(response) >= 2
        code = sw(response)
        assert code in KNOWN_SWS or code >> 8 == 0x61 or code & 0xFFF0 == 0x63C0, hex(code)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=64))
def test_any_tlv_garbage_in_general_authenticate_is_refused_cleanly(data: bytes) -> None:
    card = selected()
    for p1p2 in (b"\x08\x9b", b"\x11\x9e"):
        response = card.process(b"\x00\x87" + p1p2 + bytes([len(data)]) + data + b"\x00")
        assert len(response) >= 2
        assert sw(response) in KNOWN_SWS or response[-2] == 0x61
