"""atheris target: verifier.core.credential.parse_credential (strict CBOR, COSE_Sign1, CWT).

Checked: any input either parses or raises a VerificationError subclass; nothing else.
Seeds: the credential of the starcard-v1 golden tap transcript.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from verifier.core.credential import parse_credential
    from verifier.core.errors import VerificationError

from _common import main

GOLDEN = Path(__file__).resolve().parents[1] / "tests/vectors/transcripts/starcard_v1_tap.json"


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        parse_credential(data)


def seeds() -> list[bytes]:
    tap = json.loads(GOLDEN.read_text())
    credential = bytes.fromhex(tap[1]["r"])[:-2]
    return [credential, credential[:40], bytes.fromhex("D28443A10126A0F6F6")]


if __name__ == "__main__":
    main(test_one_input, seeds)
