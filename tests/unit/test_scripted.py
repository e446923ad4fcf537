"""Scripted and recording transports, transcript files, and the starcard-v1 tap golden vector.

The tap transcript (``starcard_v1_tap.json``: SELECT, READ CREDENTIAL, INTERNAL
AUTHENTICATE) is recorded against the virtual StarCard in a state built directly (serial,
card key, credential, SECURED), so it does not depend on how personalization works (mutual
authentication is being added there). Its credential is a real CWT signed by a fixed issuer
key, bound to the fixed card key, so the vector is also usable by verifier tests. ECDSA
signatures are randomized: on re-recording, the card's signature is checked, not compared.

Re-record after an intended change: ``STARCARD_UPDATE_GOLDEN=1 pytest tests/unit/test_scripted.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from card_profiles.errors import CardIOError, NotFound
from card_profiles.profiles import STARCARD_V1, Lifecycle
from card_profiles.scripted import (
    Exchange,
    RecordingTransport,
    ScriptedTransport,
    TranscriptFormatError,
    TranscriptMismatch,
    dumps_transcript,
    load_transcript,
    loads_transcript,
    save_transcript,
)
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import VirtualStarCard
from card_profiles.virtual.state import CardState, save_state
from verifier.core.cose import verify_sign1
from verifier.core.credential import CredentialClaims, issue_credential, parse_credential
from verifier.core.keys import kid_for, verify_es256

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "vectors" / "transcripts"
TAP_GOLDEN = TRANSCRIPTS / "starcard_v1_tap.json"
UPDATE_GOLDEN = os.environ.get("STARCARD_UPDATE_GOLDEN") == "1"

SELECT = bytes.fromhex("00A404000A") + STARCARD_V1.aid + b"\x00"
SERIAL = bytes.fromhex("5354415243415244")  # "STARCARD"
CHALLENGE = hashlib.sha256(b"starcard-v1 golden tap challenge").digest()
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


def _fixed_key(label: bytes) -> ec.EllipticCurvePrivateKey:
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    scalar = int.from_bytes(hashlib.sha256(label).digest(), "big") % (order - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


CARD_KEY = _fixed_key(b"starcard-v1 golden card key")
ISSUER_KEY = _fixed_key(b"starcard-v1 golden issuer key")


class FixedSigner:
    """The Signer port over a fixed key (64-byte r‖s, ES256)."""

    algorithm = "ES256"

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        r, s = utils.decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def card_point() -> bytes:
    return CARD_KEY.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def new_golden_credential() -> bytes:
    """A fresh credential for the golden card (only used when re-recording)."""
    claims = CredentialClaims(
        iss="sc.example.cn",
        iat=NOW,
        nbf=NOW,
        exp=NOW + 5 * 365 * 86400,
        cti=SERIAL,
        card_key=card_point(),
        status_idx=4242,
        status_uri="https://sc.example.cn/status/1",
        star_level=4,
        policy_version="2016-golden",
        profile="starcard-v1",
        qr_hash=hashlib.sha256(b"golden QR token").digest()[:16],
    )
    signer = FixedSigner(ISSUER_KEY)
    return issue_credential(claims, signer, kid_for(signer.public_key()))


def golden_state(credential: bytes) -> CardState:
    """A SECURED card state holding CARD_KEY and ``credential``, built field by field.

    Only what a tap depends on is set (serial, lifecycle, card key pair, credential); every
    other field keeps its default, except a secure-channel key where the state has one (a
    fixed dummy: a tap never opens the secure channel). So the vector does not depend on
    how personalization works.
    """
    values: dict[str, object] = {
        "serial": SERIAL,
        "lifecycle": Lifecycle.SECURED,
        "private_key": CARD_KEY.private_numbers().private_value.to_bytes(32, "big"),
        "credential": credential,
    }
    if "card_key" in {f.name for f in dataclasses.fields(CardState)}:
        values["card_key"] = bytes(range(16))
    return CardState(**values)  # type: ignore[arg-type]


def golden_card(tmp_path: Path, credential: bytes) -> VirtualStarCard:
    """The virtual StarCard with :func:`golden_state`, loaded from its state file."""
    path = tmp_path / "golden-card.json"
    save_state(path, golden_state(credential))
    return VirtualStarCard(path)


def tap(transport: ScriptedTransport | RecordingTransport) -> tuple[bytes, bytes, int]:
    session = StarCardSession(transport)
    session.select()
    credential = session.read_credential()
    signature = session.internal_authenticate(CHALLENGE)
    return credential, signature, session.apdu_count


def check_card_signature(signature: bytes) -> None:
    verify_es256(CARD_KEY.public_key(), signature, CHALLENGE)


# -- ScriptedTransport --------------------------------------------------------------------------


SCRIPT = [
    Exchange(SELECT, b"\x90\x00"),
    Exchange(bytes.fromhex("80CA010100"), SERIAL + b"\x90\x00"),
    Exchange(bytes.fromhex("80CB0000000000"), b"\x6a\x82"),
]


def test_scripted_transport_plays_the_card_side() -> None:
    with ScriptedTransport(SCRIPT) as transport:
        session = StarCardSession(transport)
        session.select()
        assert session.serial() == SERIAL
        with pytest.raises(NotFound):
            session.read_credential()
        assert transport.position == 3 and transport.remaining == 0


def test_mismatch_names_the_step_and_both_commands() -> None:
    transport = ScriptedTransport(SCRIPT)
    transport.transmit(SELECT)
    with pytest.raises(TranscriptMismatch) as info:
        transport.transmit(bytes.fromhex("80CA010200"))
    err = info.value
    assert isinstance(err, AssertionError)
    assert (err.step, err.total) == (2, 3)
    assert err.expected == bytes.fromhex("80CA010100")
    assert err.actual == bytes.fromhex("80CA010200")
    assert "step 2 of 3" in str(err)
    assert "80CA010100" in str(err) and "80CA010200" in str(err)
    # A transcript that went wrong stays wrong, even for the right command.
    with pytest.raises(TranscriptMismatch):
        transport.transmit(bytes.fromhex("80CA010100"))


def test_command_after_the_end_is_a_mismatch() -> None:
    transport = ScriptedTransport(SCRIPT[:1])
    transport.transmit(SELECT)
    with pytest.raises(TranscriptMismatch, match="after the end") as info:
        transport.transmit(SELECT)
    assert info.value.expected is None and info.value.step == 2


def test_unused_steps_fail_on_completion_check() -> None:
    transport = ScriptedTransport(SCRIPT)
    transport.transmit(SELECT)
    with pytest.raises(TranscriptMismatch, match="2 recorded exchange") as info:
        transport.assert_complete()
    assert info.value.actual is None
    with pytest.raises(TranscriptMismatch), ScriptedTransport(SCRIPT):
        pass


def test_context_manager_does_not_mask_the_original_error() -> None:
    with pytest.raises(KeyError), ScriptedTransport(SCRIPT):
        raise KeyError("boom")


def test_closed_scripted_transport_raises_card_io_error() -> None:
    transport = ScriptedTransport(SCRIPT)
    transport.close()
    transport.close()
    with pytest.raises(CardIOError):
        transport.transmit(SELECT)


def test_scripted_transport_rejects_non_exchanges() -> None:
    with pytest.raises(TypeError):
        ScriptedTransport([(SELECT, b"\x90\x00")])  # type: ignore[list-item]


# -- RecordingTransport and files ---------------------------------------------------------------


def test_recording_transport_records_and_replays(tmp_path: Path) -> None:
    card = golden_card(tmp_path, b"\xa1\x01\x02")
    recorder = RecordingTransport(InProcessTransport(card))
    session = StarCardSession(recorder)
    session.select()
    assert session.read_credential() == b"\xa1\x01\x02"
    assert [e.command for e in recorder.exchanges] == [SELECT, bytes.fromhex("80CB0000000000")]
    assert [e.sw for e in recorder.exchanges] == [0x9000, 0x9000]
    assert recorder.exchanges[1].data == b"\xa1\x01\x02"
    path = tmp_path / "t.json"
    save_transcript(path, recorder.exchanges)
    assert load_transcript(path) == list(recorder.exchanges)
    recorder.close()
    with pytest.raises(CardIOError):
        recorder.transmit(SELECT)  # the inner transport is closed
    assert len(recorder.exchanges) == 2  # failed transmits are not recorded


def test_transcript_json_is_one_exchange_per_line() -> None:
    text = dumps_transcript(SCRIPT[:2])
    assert text.splitlines() == [
        "[",
        '  {"c": "00A404000AF053544152434152440100", "r": "9000"},',
        '  {"c": "80CA010100", "r": "53544152434152449000"}',
        "]",
    ]
    assert loads_transcript(text) == SCRIPT[:2]
    assert dumps_transcript([]) == "[]\n" and loads_transcript("[]") == []
    assert loads_transcript('[{"c": "00a4040000", "r": "9000"}]')[0].command[1] == 0xA4


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"c": "00A40400", "r": "9000"}',
        '[{"c": "00A40400"}]',
        '[{"c": "00A40400", "r": "9000", "x": 1}]',
        '[{"c": 1, "r": "9000"}]',
        '[{"c": "00A4ZZ00", "r": "9000"}]',
        '[{"c": "00A4", "r": "9000"}]',
        '[{"c": "00A40400", "r": "90"}]',
        "[1]",
    ],
)
def test_malformed_transcripts_are_rejected(text: str) -> None:
    with pytest.raises(TranscriptFormatError):
        loads_transcript(text)


def test_exchange_helpers() -> None:
    e = Exchange.of(SELECT, b"\x01\x02", 0x6282)
    assert (e.data, e.sw, e.response) == (b"\x01\x02", 0x6282, b"\x01\x02\x62\x82")
    with pytest.raises(ValueError):
        Exchange.of(SELECT, b"", 0x10000)


# -- the starcard-v1 tap golden vector ----------------------------------------------------------


def test_starcard_v1_tap_golden_matches_the_virtual_card(tmp_path: Path) -> None:
    if UPDATE_GOLDEN:
        recorder = RecordingTransport(
            InProcessTransport(golden_card(tmp_path, new_golden_credential()))
        )
        tap(recorder)
        TAP_GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        save_transcript(TAP_GOLDEN, recorder.exchanges)
    assert TAP_GOLDEN.is_file(), f"{TAP_GOLDEN} missing: run with STARCARD_UPDATE_GOLDEN=1"
    golden = load_transcript(TAP_GOLDEN)
    assert len(golden) == 3

    card = golden_card(tmp_path, golden[1].data)
    recorder = RecordingTransport(InProcessTransport(card))
    _credential, signature, count = tap(recorder)
    live = recorder.exchanges
    assert count == 3
    assert [e.command for e in live] == [e.command for e in golden]
    assert live[:2] == tuple(golden[:2])  # SELECT and READ CREDENTIAL: byte for byte
    assert live[2].sw == golden[2].sw == 0x9000
    check_card_signature(signature)  # ECDSA is randomized: check, do not compare


def test_starcard_v1_tap_golden_replays_through_the_session() -> None:
    golden = load_transcript(TAP_GOLDEN)
    assert [e.command for e in golden] == [
        SELECT,
        bytes.fromhex("80CB0000000000"),
        bytes.fromhex("0088000020") + CHALLENGE + b"\x00",
    ]
    with ScriptedTransport(golden) as transport:
        credential, signature, count = tap(transport)
    assert count == 3
    check_card_signature(signature)
    parsed = parse_credential(credential)
    assert parsed.claims.cti == SERIAL
    assert parsed.claims.card_key == card_point()
    assert parsed.kid == kid_for(ISSUER_KEY.public_key())
    verify_sign1(parsed.message, ISSUER_KEY.public_key())
    assert 250 <= len(credential) <= 300


def test_a_changed_tap_is_caught_by_the_golden() -> None:
    golden = load_transcript(TAP_GOLDEN)
    session = StarCardSession(ScriptedTransport(golden))
    session.select()
    session.read_credential()
    with pytest.raises(TranscriptMismatch, match="step 3 of 3"):
        session.internal_authenticate(bytes(32))


def test_golden_file_is_plain_json() -> None:
    raw = json.loads(TAP_GOLDEN.read_text())
    assert [set(item) for item in raw] == [{"c", "r"}] * 3
