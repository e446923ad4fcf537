"""atheris target: strict BER-TLV parsing (card_profiles.tlv).

Invariant checked: any input either raises TlvError or parses into TLVs that re-encode to
exactly the input (the parser accepts only minimal, canonical encodings).
"""

from __future__ import annotations

import contextlib

import atheris

with atheris.instrument_imports():
    from card_profiles.tlv import TlvError, encode_all, parse_all, parse_single

from _common import main


def test_one_input(data: bytes) -> None:
    try:
        items = parse_all(data)
    except TlvError:
        return
    if encode_all(items) != data:
        raise AssertionError(f"re-encoding differs for {data.hex()}")
    for item in items:
        if item.constructed:
            with contextlib.suppress(TlvError):
                item.children()
    if len(items) == 1 and parse_single(data) != items[0]:
        raise AssertionError("parse_single disagrees with parse_all")


def seeds() -> list[bytes]:
    return [
        bytes.fromhex("620E8201018302C00180020802880108"),
        bytes.fromhex("7F4982010100"),
        bytes.fromhex("5F2003414243"),
        bytes.fromhex("9F2701009F3602ABCD"),
    ]


if __name__ == "__main__":
    main(test_one_input, seeds)
