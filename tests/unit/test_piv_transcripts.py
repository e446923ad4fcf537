"""Golden APDU transcripts of the ``piv`` profile, replayed through a scripted connection.

The transcripts in ``tests/vectors/transcripts/piv_*.json`` were recorded against the
virtual PIV card with every randomness fixed (card GUID, card key, witness, host challenge;
signatures are RFC 6979), so they are reproducible: one test re-records them and requires
the very same bytes, the others replay them through :class:`ScriptedTransport` and require
the same results. Regenerate after an intended protocol change with
``.venv/bin/python -m tests.unit.test_piv_transcripts`` and review the diff.

Files: ``piv_personalize.json`` / ``piv_tap.json`` (card with extended length) and
``piv_personalize_short.json`` / ``piv_tap_short.json`` (short APDUs only).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from card_profiles.piv import AesManagementKey, PivSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.piv_card import (
    DEFAULT_MANAGEMENT_KEY,
    PIV_ATR,
    PIV_ATR_SHORT_ONLY,
    VirtualPivCard,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "transcripts"
CREDENTIAL = bytes(range(256)) + bytes(range(44))
"""300 bytes: the card layer treats the credential as opaque."""
CHALLENGE = hashlib.sha256(b"StarCard piv golden challenge").digest()
NEW_PIN = "24681357"
ADMIN = AesManagementKey(DEFAULT_MANAGEMENT_KEY)
CONFIGS = {"": PIV_ATR, "_short": PIV_ATR_SHORT_ONLY}
"""File-name suffix → the ATR of that card configuration."""


class Drbg:
    """Deterministic ``random_bytes``: SHA-256 of a seed and a counter (test use only)."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._buffer = b""

    def __call__(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._counter += 1
            self._buffer += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


@dataclass
class Exchange:
    command: bytes
    response: bytes


class TranscriptMismatch(AssertionError):
    """The session sent something else than the transcript recorded."""


@dataclass
class ScriptedTransport:
    """Plays the card's side of a transcript; every command must equal the recorded one."""

    script: list[Exchange]
    position: int = 0

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        step = self.position + 1
        if self.position >= len(self.script):
            raise TranscriptMismatch(f"step {step}: {apdu.hex().upper()} after the end")
        expected = self.script[self.position]
        if apdu != expected.command:
            raise TranscriptMismatch(
                f"step {step}: expected {expected.command.hex().upper()}, got {apdu.hex().upper()}"
            )
        self.position += 1
        return expected.response[:-2], int.from_bytes(expected.response[-2:], "big")

    def close(self) -> None:
        pass

    def assert_complete(self) -> None:
        if self.position != len(self.script):
            raise TranscriptMismatch(f"{len(self.script) - self.position} steps not used")


@dataclass
class RecordingTransport:
    """Wraps a transport and records every exchange."""

    inner: InProcessTransport
    exchanges: list[Exchange] = field(default_factory=list)

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        data, sw = self.inner.transmit(apdu)
        self.exchanges.append(Exchange(apdu, data + sw.to_bytes(2, "big")))
        return data, sw

    def close(self) -> None:
        self.inner.close()


def dumps(exchanges: list[Exchange]) -> str:
    """JSON list of {"c", "r"} in uppercase hex, one exchange per line."""
    lines = [
        json.dumps({"c": e.command.hex().upper(), "r": e.response.hex().upper()}) for e in exchanges
    ]
    return "[\n  " + ",\n  ".join(lines) + "\n]\n"


def load(name: str) -> list[Exchange]:
    raw = json.loads((VECTORS / name).read_text())
    return [Exchange(bytes.fromhex(item["c"]), bytes.fromhex(item["r"])) for item in raw]


def personalize(session: PivSession) -> bytes:
    """The personalization steps of the issuing station; returns the card key's point."""
    session.select()
    session.authenticate_management_key(ADMIN)
    point = session.generate_card_key()
    session.write_credential(CREDENTIAL)
    session.change_pin("123456", NEW_PIN)
    return point


def tap(session: PivSession) -> tuple[bytes, bytes]:
    session.select()
    return session.read_credential(), session.internal_authenticate(CHALLENGE)


def record(suffix: str) -> dict[str, list[Exchange]]:
    """Record personalization and tap against a fresh deterministic virtual card."""
    card = VirtualPivCard(extended_length=suffix == "", random_bytes=Drbg(b"piv card"))
    recorder = RecordingTransport(InProcessTransport(card))
    personalize(PivSession(recorder, atr=card.atr, random_bytes=Drbg(b"piv host")))
    card.reset()  # the card leaves the station and is tapped at a terminal
    tapper = RecordingTransport(InProcessTransport(card))
    tap(PivSession(tapper, atr=card.atr))
    return {
        f"piv_personalize{suffix}.json": recorder.exchanges,
        f"piv_tap{suffix}.json": tapper.exchanges,
    }


def verify(point: bytes, message: bytes, signature: bytes) -> None:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.verify(utils.encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("suffix", sorted(CONFIGS))
def test_golden_transcripts_are_what_the_virtual_card_does_today(suffix: str) -> None:
    for name, exchanges in record(suffix).items():
        assert (VECTORS / name).read_text() == dumps(exchanges), f"{name} drifted"


@pytest.mark.parametrize(("suffix", "tap_apdus"), [("", 3), ("_short", 4)])
def test_replayed_personalization_and_tap_give_the_same_results(
    suffix: str, tap_apdus: int
) -> None:
    atr = CONFIGS[suffix]
    station = ScriptedTransport(load(f"piv_personalize{suffix}.json"))
    session = PivSession(station, atr=atr, random_bytes=Drbg(b"piv host"))
    point = personalize(session)
    station.assert_complete()
    assert session.apdu_count == len(station.script)

    terminal = ScriptedTransport(load(f"piv_tap{suffix}.json"))
    session = PivSession(terminal, atr=atr)
    credential, signature = tap(session)
    terminal.assert_complete()
    assert session.apdu_count == tap_apdus == len(terminal.script)
    assert credential == CREDENTIAL
    verify(point, CHALLENGE, signature)


def test_replay_notices_a_different_command() -> None:
    terminal = ScriptedTransport(load("piv_tap.json"))
    session = PivSession(terminal, atr=PIV_ATR)
    session.select()
    session.read_credential()
    with pytest.raises(TranscriptMismatch, match="step 3"):
        session.internal_authenticate(bytes(32))


def test_replay_notices_another_apdu_form() -> None:
    terminal = ScriptedTransport(load("piv_tap.json"))
    session = PivSession(terminal, atr=PIV_ATR_SHORT_ONLY)  # would read with GET RESPONSE
    session.select()
    with pytest.raises(TranscriptMismatch, match="step 2"):
        session.read_credential()


def main() -> None:
    """Rewrite the golden transcripts from the virtual card (review the diff!)."""
    VECTORS.mkdir(parents=True, exist_ok=True)
    for suffix in sorted(CONFIGS):
        for name, exchanges in record(suffix).items():
            (VECTORS / name).write_text(dumps(exchanges))
            print(f"wrote {VECTORS / name} ({len(exchanges)} exchanges)")


if __name__ == "__main__":
    main()
