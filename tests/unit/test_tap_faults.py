"""A card pulled after every APDU of a tap, through the scripted connection: always a typed
card error, never a partial answer (the pcscd version lives in tests/e2e/test_card_pulled.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from card_profiles.errors import CardRemoved
from card_profiles.profiles import STARCARD_V1
from card_profiles.scripted import Exchange, ScriptedTransport, load_transcript
from verifier.tap import tap_card

TRANSCRIPT = (
    Path(__file__).resolve().parents[1] / "vectors" / "transcripts" / "starcard_v1_tap.json"
)


class PulledAfter:
    """The card leaves the reader after ``n`` answered APDUs (the hardware boundary)."""

    def __init__(self, inner: ScriptedTransport, n: int) -> None:
        self.inner = inner
        self.left = n

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if self.left == 0:
            raise CardRemoved("card removed (test)")
        self.left -= 1
        return self.inner.transmit(apdu)

    def close(self) -> None:
        self.inner.close()


def recorded() -> tuple[list[Exchange], bytes]:
    exchanges = load_transcript(TRANSCRIPT)
    internal_authenticate = exchanges[2].command
    return exchanges, internal_authenticate[5:37]


def test_full_transcript_taps() -> None:
    exchanges, challenge = recorded()
    data = tap_card(ScriptedTransport(exchanges), STARCARD_V1.atr, challenge)
    assert (data.profile, data.apdu_count) == ("starcard-v1", 3)


@pytest.mark.parametrize("pulled_after", [0, 1, 2])
def test_card_pulled_after_each_apdu_of_a_tap(pulled_after: int) -> None:
    exchanges, challenge = recorded()
    transport = PulledAfter(ScriptedTransport(exchanges), pulled_after)
    with pytest.raises(CardRemoved):
        tap_card(transport, STARCARD_V1.atr, challenge)
