"""atheris target: the virtual StarCard's ``process()`` (card_profiles.virtual.starcard_v1).

The input is a sequence of APDUs (each prefixed by a length byte; a leading SELECT is added
half of the time). Checked: ``process`` never raises, answers at least a status word, at
most 65535 bytes, and error status words carry no data.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from card_profiles.profiles import STARCARD_V1, Lifecycle
    from card_profiles.virtual.starcard_v1 import VirtualStarCard
    from card_profiles.virtual.state import CardState, save_state

from _common import main

SELECT = bytes.fromhex("00A404000A") + STARCARD_V1.aid + b"\x00"
SW1_ALLOWED = {0x61, 0x62, 0x63, 0x67, 0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F}


@functools.cache
def state_dir() -> Path:
    """Where card state files go (one per input, overwritten): ``make fuzz`` sets it to its
    work dir; libFuzzer exits without atexit handlers, so a temporary one would stay behind."""
    path = Path(os.environ.get("STARCARD_FUZZ_STATE_DIR") or tempfile.mkdtemp(prefix="sc-card-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_card(secured: bool) -> VirtualStarCard:
    values: dict[str, object] = {
        "serial": b"FUZZCARD",
        "lifecycle": Lifecycle.SECURED if secured else Lifecycle.PERSONALIZATION,
    }
    if secured:
        values["private_key"] = bytes(31) + b"\x07"
        values["credential"] = b"\xd2" + bytes(120)
    if "card_key" in {f.name for f in dataclasses.fields(CardState)}:
        values["card_key"] = bytes(range(16))
    path = state_dir() / f"card-{secured}.json"
    save_state(path, CardState(**values))  # type: ignore[arg-type]
    return VirtualStarCard(path)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    card = new_card(fdp.ConsumeBool())
    apdus = [SELECT] if fdp.ConsumeBool() else []
    while fdp.remaining_bytes() and len(apdus) < 16:
        apdus.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)))
    for apdu in apdus:
        response = card.process(apdu)
        if not 2 <= len(response) <= 65535:
            raise AssertionError(f"{apdu.hex()} -> {len(response)} bytes")
        sw1, sw2 = response[-2], response[-1]
        if (sw1 == 0x90 and sw2 != 0) or (sw1 != 0x90 and sw1 not in SW1_ALLOWED):
            raise AssertionError(f"{apdu.hex()} -> SW {sw1:02X}{sw2:02X}")
        if sw1 not in (0x90, 0x61, 0x62, 0x63) and len(response) != 2:
            raise AssertionError(f"{apdu.hex()} -> error {sw1:02X}{sw2:02X} with data")


def seeds() -> list[bytes]:
    return [
        b"\x01\x01" + bytes.fromhex("0780CB0000000000"),
        b"\x01\x01" + bytes.fromhex("05" + "80CA010100") + bytes.fromhex("05" + "8046000000"),
        b"\x00\x01" + bytes.fromhex("2500880000" + "20" + "11" * 32 + "00"),
    ]


if __name__ == "__main__":
    main(test_one_input, seeds)
