"""Property-based fuzzing of every parser that reads bytes from a card or the network.

Each property feeds arbitrary and structure-aware input (hypothesis) to one parser and
checks that it either returns a well-formed value or raises one of the typed errors its
module documents — never any other exception — and that it stops in bounded time:

* :mod:`card_profiles.tlv`: only ``TlvError``; whatever parses re-encodes to the same bytes.
* :class:`card_profiles.apdu.ApduConnection`: arbitrary card answers give bytes or a
  ``CardError``; ``apdu_count`` equals the APDUs transmitted.
* :class:`card_profiles.iso7816_fs.Iso7816FsSession`: arbitrary card answers to a tap give
  at most ``max_credential_size`` bytes or a ``CardError``, within the documented APDU bound.
* the virtual StarCard's ``process()``: arbitrary APDU sequences never raise and always
  answer at least a status word; error status words carry no data.
* :func:`verifier.core.credential.parse_credential` and the status list token parser: only
  ``VerificationError`` subclasses, including for correctly signed tokens with garbage claims.

The endless-61xx bug these fuzzers found in the APDU stack (a card answering 61xx with no
data kept the host sending GET RESPONSE for ever) is pinned by a regression test. Examples
per property:
``STARCARD_FUZZ_EXAMPLES`` (default 300); no example database is written.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cbor2
import hypothesis.strategies as st
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from hypothesis import HealthCheck, given, settings

from card_profiles.apdu import MAX_GET_RESPONSE_ROUNDS, ApduConnection, CommandApdu
from card_profiles.errors import CardError, CardIOError, CardRemoved
from card_profiles.iso7816_fs import (
    ISO7816_FS,
    ISO7816_FS_MF,
    Iso7816FsProfile,
    Iso7816FsSession,
)
from card_profiles.profiles import STARCARD_V1, Lifecycle
from card_profiles.tlv import (
    Tlv,
    TlvError,
    encode_all,
    encode_length,
    encode_tag,
    parse_all,
    parse_one,
    parse_single,
)
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import VirtualStarCard
from card_profiles.virtual.state import CardState, save_state
from verifier.core.cose import sign1
from verifier.core.credential import CredentialClaims, issue_credential, parse_credential
from verifier.core.errors import VerificationError
from verifier.core.keys import kid_for
from verifier.core.status_list import (
    STATUS_LIST_TYP,
    StatusList,
    StatusListCache,
    parse_status_list_token,
)
from verifier.core.trust import TrustedKey, TrustStore

EXAMPLES = int(os.environ.get("STARCARD_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NOW = 1_767_225_600


# -- shared fixtures (module level: hypothesis tests must not use function fixtures) ------------


class _Signer:
    algorithm = "ES256"

    def __init__(self, label: bytes) -> None:
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        scalar = int.from_bytes(hashlib.sha256(label).digest(), "big") % (order - 1) + 1
        self.key = ec.derive_private_key(scalar, ec.SECP256R1())

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()

    def sign(self, data: bytes) -> bytes:
        r, s = utils.decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


ISSUER = _Signer(b"fuzz issuer")
STATUS = _Signer(b"fuzz status")
CARD = _Signer(b"fuzz card")
TRUST = TrustStore(
    [
        TrustedKey.for_public_key(ISSUER.public_key(), "credential", 0, 2**40),
        TrustedKey.for_public_key(STATUS.public_key(), "status_list", 0, 2**40),
    ]
)
CARD_POINT = CARD.public_key().public_bytes(
    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
)

VALID_CREDENTIAL = issue_credential(
    CredentialClaims(
        iss="sc.example.cn",
        iat=NOW,
        nbf=NOW,
        exp=NOW + 86400 * 365,
        cti=b"\x01" * 8,
        card_key=CARD_POINT,
        status_idx=7,
        status_uri="https://sc.example.cn/status/1",
        star_level=3,
        policy_version="p1",
        profile="starcard-v1",
        qr_hash=bytes(16),
    ),
    ISSUER,
    kid_for(ISSUER.public_key()),
)
VALID_PROTECTED, _, VALID_PAYLOAD, _ = cbor2.loads(VALID_CREDENTIAL).value
VALID_CLAIMS: dict[Any, Any] = cbor2.loads(VALID_PAYLOAD)
VALID_STATUS_CLAIMS: dict[Any, Any] = {
    2: "https://sc.example.cn/status/1",
    6: NOW - 60,
    4: NOW + 3600,
    65534: 300,
    65533: {"bits": 2, "lst": zlib.compress(bytes(64))},
}


def _deep_plain(value: Any) -> Any:
    """cbor2 6 returns tuples/frozendicts inside tags; make templates plain and mutable."""
    if isinstance(value, Mapping):
        return {k: _deep_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_deep_plain(v) for v in value]
    return value


VALID_CLAIMS = _deep_plain(VALID_CLAIMS)


# -- strategies ---------------------------------------------------------------------------------

SEMANTIC_TAGS = [
    0,
    1,
    2,
    3,
    4,
    5,
    18,
    21,
    24,
    25,
    28,
    29,
    30,
    35,
    36,
    37,
    256,
    258,
    260,
    261,
    55799,
]

cbor_leaves = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.binary(max_size=70),
    st.text(max_size=30),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([cbor2.undefined, cbor2.CBORSimpleValue(99)]),
)
cbor_values = st.recursive(
    cbor_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.one_of(st.integers(-70000, 70000), st.text(max_size=10)), children, max_size=5
        ),
        st.builds(cbor2.CBORTag, st.sampled_from(SEMANTIC_TAGS), children),
    ),
    max_leaves=16,
)


def _dumps(value: Any, canonical: bool) -> bytes | None:
    try:
        return cbor2.dumps(value, canonical=canonical)
    except Exception:  # the generator made something cbor2 will not encode: skip it
        return None


@st.composite
def mutated_map(draw: st.DrawFn, template: dict[Any, Any]) -> dict[Any, Any]:
    """``template`` with a few claims replaced by arbitrary values, removed or added."""
    claims = dict(template)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "delete", "add", "nested"]))
        keys = list(claims)
        if action == "replace" and keys:
            claims[draw(st.sampled_from(keys))] = draw(cbor_values)
        elif action == "delete" and keys:
            del claims[draw(st.sampled_from(keys))]
        elif action == "add":
            claims[draw(st.one_of(st.integers(-70000, 70000), st.text(max_size=8)))] = draw(
                cbor_values
            )
        elif action == "nested":
            nested = [k for k in keys if isinstance(claims[k], dict)]
            if nested:
                key = draw(st.sampled_from(nested))
                claims[key] = draw(mutated_map(claims[key]))
    return claims


def _mutate_bytes(data: bytes, draw: st.DrawFn) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if not out:
            break
        pos = draw(st.integers(0, len(out) - 1))
        if op == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        else:
            del out[pos]
    return bytes(out)


MOSTLY_TRUE = st.sampled_from([True, True, True, False])


@st.composite
def credential_inputs(draw: st.DrawFn) -> bytes:
    """Random bytes, bit-level mutations of a valid credential, and (mostly) well-formed
    COSE_Sign1 messages whose claims map is a mutated valid one, so most examples get past
    the CBOR and COSE layers into the claim checks."""
    kind = draw(st.sampled_from(["random", "mutated", "structured", "structured", "structured"]))
    if kind == "random":
        return draw(st.binary(max_size=400))
    if kind == "mutated":
        return _mutate_bytes(VALID_CREDENTIAL, draw)
    canonical = draw(MOSTLY_TRUE)
    payload = _dumps(draw(mutated_map(VALID_CLAIMS)), canonical) or b""
    protected = draw(
        st.sampled_from([VALID_PROTECTED] * 6 + [b""])
        | cbor_values.map(lambda v: _dumps(v, True) or b"")
        | st.binary(max_size=20)
    )
    unprotected = draw(
        st.sampled_from([{}] * 6) | st.dictionaries(st.integers(-5, 20), cbor_values, max_size=2)
    )
    signature = draw(st.binary(min_size=64, max_size=64) | st.binary(max_size=70))
    tag = draw(st.sampled_from([18, 18, 18, 18, 17, 98]))
    message = cbor2.CBORTag(tag, [protected, unprotected, payload, signature])
    return _dumps(message, canonical) or b""


@st.composite
def status_token_inputs(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            [
                "random",
                "signed-garbage-claims",
                "signed-garbage-claims",
                "signed-bad-list",
                "mutated",
            ]
        )
    )
    if kind == "random":
        return draw(st.binary(max_size=300))
    claims: Any = draw(mutated_map(VALID_STATUS_CLAIMS))
    if kind == "signed-bad-list":
        lst = draw(
            st.one_of(
                st.binary(max_size=100),
                st.binary(max_size=200).map(zlib.compress),
                st.binary(max_size=50).map(lambda b: zlib.compress(b)[:-3]),
                st.binary(max_size=50).map(lambda b: zlib.compress(b) + b"\x00"),
            )
        )
        bits = draw(st.one_of(st.sampled_from([1, 2, 4, 8]), st.integers(-3, 300)))
        claims = dict(VALID_STATUS_CLAIMS)
        claims[65533] = {"bits": bits, "lst": lst}
    elif kind == "mutated":
        claims = VALID_STATUS_CLAIMS
    payload = _dumps(claims, draw(MOSTLY_TRUE)) or b"\xa0"
    token = sign1(payload, STATUS, kid_for(STATUS.public_key()), {16: STATUS_LIST_TYP})
    return _mutate_bytes(token, draw) if kind == "mutated" else token


# -- TLV ----------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_tlv_parse_all_raises_only_tlv_error_and_round_trips(data: bytes) -> None:
    try:
        items = parse_all(data)
    except TlvError:
        return
    assert encode_all(items) == data  # strict DER-style lengths and minimal tags: canonical
    for item in items:
        if item.constructed:
            with contextlib.suppress(TlvError):
                item.children()


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 310))
def test_tlv_parse_one_and_single_raise_only_tlv_error(data: bytes, offset: int) -> None:
    try:
        item, end = parse_one(data, offset)
        assert offset < end <= len(data)
        assert data[offset:end] == item.encode()
    except TlvError:
        pass
    with contextlib.suppress(TlvError):
        assert parse_single(data).encode() == data


tags = st.one_of(
    st.integers(0x01, 0xFE).filter(lambda t: t & 0x1F != 0x1F),
    st.integers(0x1F, 0x7F).map(lambda n: 0x1F00 | n),
    st.integers(0x80, 0x3FFF).map(lambda n: 0x1F0000 | (0x80 | n >> 7) << 8 | (n & 0x7F)),
    st.integers(-5, 2**40),
)


@FUZZ
@given(tags, st.integers(-5, 2**33))
def test_tlv_tag_and_length_encoders_round_trip_or_raise(tag: int, length: int) -> None:
    try:
        raw_tag = encode_tag(tag)
    except TlvError:
        raw_tag = None
    try:
        raw_length = encode_length(length)
    except TlvError:
        raw_length = None
    if raw_tag is not None and raw_length is not None and length <= 300:
        encoded = raw_tag + raw_length + bytes(length)
        assert parse_single(encoded) == Tlv(tag, bytes(length))


# -- APDU response handling ---------------------------------------------------------------------

status_words = st.one_of(
    st.sampled_from([0x9000, 0x6100, 0x6101, 0x61FF, 0x6C00, 0x6C05, 0x6282, 0x6A82, 0x6985]),
    st.integers(0x6100, 0x61FF),
    st.integers(0x6C00, 0x6CFF),
    st.integers(0, 0xFFFF),
)
answers = st.lists(st.tuples(st.binary(max_size=300), status_words), min_size=1, max_size=8)
commands = st.builds(
    CommandApdu,
    cla=st.sampled_from([0x00, 0x80, 0x84, 0x0C, 0x01]),
    ins=st.integers(0, 0xFF),
    p1=st.integers(0, 0xFF),
    p2=st.integers(0, 0xFF),
    data=st.binary(max_size=600),
    le=st.one_of(st.none(), st.integers(0, 65536)),
)


class ScriptedCard:
    """A transport answering from a script, then as a removed card (bounded by design)."""

    def __init__(self, script: list[tuple[bytes, int]]) -> None:
        self.script = list(script)
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent.append(apdu)
        if not self.script:
            raise CardRemoved("script exhausted")
        return self.script.pop(0)

    def close(self) -> None:
        pass


@FUZZ
@given(commands, answers, st.booleans())
def test_apdu_connection_turns_any_answers_into_data_or_card_errors(
    command: CommandApdu, script: list[tuple[bytes, int]], extended: bool
) -> None:
    card = ScriptedCard(script)
    conn = ApduConnection(card, extended_length=extended)
    try:
        data = conn.send(command)
        assert isinstance(data, bytes)
    except CardError:
        pass
    assert conn.apdu_count == len(card.sent)
    assert all(4 <= len(apdu) <= 65535 + 9 for apdu in card.sent)


class RawCard:
    """A card object answering raw bytes (possibly shorter than a status word)."""

    def __init__(self, responses: list[bytes]) -> None:
        self.responses = list(responses)

    def process(self, apdu: bytes) -> bytes:
        return self.responses.pop(0) if self.responses else b""


@FUZZ
@given(commands, st.lists(st.binary(max_size=270), min_size=1, max_size=6))
def test_apdu_connection_over_in_process_transport_with_raw_answers(
    command: CommandApdu, responses: list[bytes]
) -> None:
    conn = ApduConnection(InProcessTransport(RawCard(responses)))
    with contextlib.suppress(CardError):
        conn.send(command)


class Runaway(Exception):
    """The APDU stack kept sending: the card answered the same way for too long."""


class EndlessCard:
    """Answers every command with ``answer``; raises Runaway after ``budget`` APDUs."""

    def __init__(self, answer: tuple[bytes, int], budget: int = 10_000) -> None:
        self.answer = answer
        self.budget = budget
        self.sent = 0

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent += 1
        if self.sent > self.budget:
            raise Runaway(f"{self.sent} APDUs for one command; last {apdu.hex().upper()}")
        return self.answer

    def close(self) -> None:
        pass


@pytest.mark.parametrize("answer", [(b"", 0x6100), (b"\x00", 0x6101)])
def test_get_response_loop_ends_when_61xx_answers_carry_little_data(
    answer: tuple[bytes, int],
) -> None:
    card = EndlessCard(answer)
    with pytest.raises(CardIOError):
        ApduConnection(card).send(CommandApdu(0x00, 0xB0, 0x00, 0x00, le=0))
    assert card.sent <= MAX_GET_RESPONSE_ROUNDS + 1


def test_get_response_loop_with_data_ends_at_the_byte_bound() -> None:
    card = EndlessCard((bytes(256), 0x6100), budget=(1 << 20) // 256 + 2)
    with pytest.raises(CardIOError):
        ApduConnection(card).send(CommandApdu(0x00, 0xB0, 0x00, 0x00, le=0))


# -- Iso7816FsSession against arbitrary cards ---------------------------------------------------


@FUZZ
@given(
    answers,
    st.sampled_from(
        [
            ISO7816_FS,
            ISO7816_FS_MF,
            dataclasses.replace(
                ISO7816_FS, max_read_chunk=16, max_credential_size=100, ef_size=102
            ),
        ]
    ),
)
def test_iso7816_fs_read_gives_a_bounded_credential_or_a_card_error(
    script: list[tuple[bytes, int]], profile: Iso7816FsProfile
) -> None:
    # 61xx answers are left to the APDU stack's own regression test (above).
    card = ScriptedCard([(d, sw) for d, sw in script if sw >> 8 != 0x61])
    session = Iso7816FsSession(card, profile)
    try:
        session.select()
        credential = session.read_credential()
        assert 1 <= len(credential) <= profile.max_credential_size
    except CardError:
        pass
    assert session.apdu_count <= 2 + 2 * (4 + profile.max_credential_size)


class DribblingCard:
    """A well-formed but hostile file card: answers READ BINARY with 1..k bytes each time."""

    def __init__(self, content: bytes, step: int) -> None:
        self.content = content
        self.step = step
        self.sent = 0

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent += 1
        if apdu[1] != 0xB0:
            return b"", 0x9000
        offset = apdu[3] if apdu[2] & 0x80 else (apdu[2] << 8) | apdu[3]
        ne = apdu[4] or 256
        return self.content[offset : offset + min(ne, self.step)], 0x9000

    def close(self) -> None:
        pass


@FUZZ
@given(st.binary(min_size=2, max_size=2100), st.integers(1, 300))
def test_iso7816_fs_read_terminates_on_a_dribbling_card(content: bytes, step: int) -> None:
    card = DribblingCard(content, step)
    session = Iso7816FsSession(card)
    try:
        session.select()
        credential = session.read_credential()
        length = int.from_bytes(content[:2], "big")
        assert credential == content[2 : 2 + length]
    except CardError:
        pass
    assert card.sent <= 1 + 4 + ISO7816_FS.max_credential_size


# -- the virtual StarCard's process() -----------------------------------------------------------

SELECT = bytes.fromhex("00A404000A") + STARCARD_V1.aid + b"\x00"
INS_SET = sorted(
    {
        STARCARD_V1.ins_select,
        STARCARD_V1.ins_get_data,
        STARCARD_V1.ins_generate_key,
        STARCARD_V1.ins_put_credential,
        STARCARD_V1.ins_read_credential,
        STARCARD_V1.ins_internal_authenticate,
        STARCARD_V1.ins_set_lifecycle,
        0xC0,  # GET RESPONSE
        0x50,  # INITIALIZE UPDATE
        0x82,  # EXTERNAL AUTHENTICATE
    }
)


@st.composite
def structured_apdus(draw: st.DrawFn) -> bytes:
    cla = draw(st.sampled_from([0x00, 0x80, 0x84, 0x90, 0x10, 0x04, 0xFF, 0x0C]))
    ins = draw(st.one_of(st.sampled_from(INS_SET), st.integers(0, 0xFF)))
    p1 = draw(st.one_of(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x0F, 0x7F, 0xFF])))
    p2 = draw(st.one_of(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x0C]), st.integers(0, 0xFF)))
    data = draw(st.one_of(st.binary(max_size=40), st.binary(min_size=250, max_size=600)))
    shape = draw(
        st.sampled_from(
            ["case1", "case2s", "case3s", "case4s", "case2e", "case3e", "case4e", "garbled"]
        )
    )
    header = bytes([cla, ins, p1, p2])
    le_short = bytes([draw(st.integers(0, 0xFF))])
    le_ext = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    short = data[:255]
    body = {
        "case1": b"",
        "case2s": le_short,
        "case3s": bytes([len(short)]) + short if short else b"",
        "case4s": (bytes([len(short)]) + short + le_short) if short else le_short,
        "case2e": b"\x00" + le_ext,
        "case3e": b"\x00" + len(data).to_bytes(2, "big") + data,
        "case4e": b"\x00" + len(data).to_bytes(2, "big") + data + le_ext,
        "garbled": draw(st.binary(max_size=12)),
    }[shape]
    return header + body


apdu_sequences = st.lists(
    st.one_of(st.just(SELECT), structured_apdus(), st.binary(max_size=64)), min_size=1, max_size=12
)
SW1_ALLOWED = {0x61, 0x62, 0x63, 0x67, 0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F}


def _card_state(secured: bool) -> CardState:
    values: dict[str, object] = {
        "serial": b"FUZZCARD",
        "lifecycle": Lifecycle.SECURED if secured else Lifecycle.PERSONALIZATION,
    }
    if secured:
        values["private_key"] = CARD.key.private_numbers().private_value.to_bytes(32, "big")
        values["credential"] = VALID_CREDENTIAL
    if "card_key" in {f.name for f in dataclasses.fields(CardState)}:
        values["card_key"] = bytes(range(16))
    return CardState(**values)  # type: ignore[arg-type]


_STATE_DIR = Path(tempfile.mkdtemp(prefix="starcard-fuzz-"))
atexit.register(shutil.rmtree, _STATE_DIR, ignore_errors=True)


def _new_card(secured: bool) -> VirtualStarCard:
    path = _STATE_DIR / f"card-{secured}.json"
    save_state(path, _card_state(secured))
    return VirtualStarCard(path)


@FUZZ
@given(apdu_sequences, st.booleans())
def test_virtual_starcard_process_never_raises_and_always_answers_a_status_word(
    apdus: list[bytes], secured: bool
) -> None:
    card = _new_card(secured)
    for apdu in apdus:
        response = card.process(apdu)
        assert isinstance(response, bytes)
        assert 2 <= len(response) <= 65535, f"{apdu.hex()} -> {len(response)} bytes"
        sw1, sw2 = response[-2], response[-1]
        if sw1 == 0x90:
            assert sw2 == 0x00, f"{apdu.hex()} -> SW 90{sw2:02X}"
        else:
            assert sw1 in SW1_ALLOWED, f"{apdu.hex()} -> SW {sw1:02X}{sw2:02X}"
        if sw1 not in (0x90, 0x61, 0x62, 0x63):
            assert len(response) == 2, f"{apdu.hex()} -> error {sw1:02X}{sw2:02X} with data"


# -- verifier.core parsers ----------------------------------------------------------------------


@FUZZ
@given(credential_inputs())
def test_parse_credential_raises_only_verification_errors(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        parse_credential(data)


@FUZZ
@given(status_token_inputs())
def test_status_list_token_parsing_raises_only_verification_errors(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        parse_status_list_token(data, TRUST, NOW)
    with contextlib.suppress(VerificationError):
        StatusListCache().accept(data, TRUST, NOW)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=300).map(zlib.compress),
        st.binary(max_size=60).map(lambda b: zlib.compress(b)[: len(b) // 2]),
    ),
    st.one_of(st.sampled_from([1, 2, 4, 8]), st.integers(-5, 300)),
)
def test_status_list_decode_raises_only_verification_errors(lst: bytes, bits: int) -> None:
    try:
        statuses = StatusList.decode(lst, bits)
    except VerificationError:
        return
    assert statuses.size >= 1
    statuses.get(statuses.size - 1)


def test_valid_inputs_still_parse() -> None:
    """The fuzz templates are valid, so mutations start from deep inside the parsers."""
    assert parse_credential(VALID_CREDENTIAL).claims.card_key == CARD_POINT
    payload = cbor2.dumps(VALID_STATUS_CLAIMS, canonical=True)
    token = sign1(payload, STATUS, kid_for(STATUS.public_key()), {16: STATUS_LIST_TYP})
    assert parse_status_list_token(token, TRUST, NOW).statuses.size == 256
