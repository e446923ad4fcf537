"""Shared driver for the atheris targets in this directory.

Each target defines ``test_one_input(data: bytes) -> None`` (raising only for a real bug)
and ``seeds() -> list[bytes]``, and calls :func:`main`. Usage::

    python fuzz/fuzz_tlv.py --write-seeds DIR      # write the seed inputs and exit
    python fuzz/fuzz_tlv.py [libFuzzer flags] CORPUS_DIR [SEED_DIR...]

``make fuzz`` does both for every target, for ``FUZZ_SECONDS`` each. A crash leaves the
input in the artifact directory; replay it with ``python fuzz/fuzz_x.py ARTIFACT``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import atheris


def main(test_one_input: Callable[[bytes], None], seeds: Callable[[], list[bytes]]) -> None:
    """Write seeds (``--write-seeds DIR``) or run libFuzzer with ``sys.argv``."""
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        out = Path(sys.argv[2])
        out.mkdir(parents=True, exist_ok=True)
        for seed in seeds():
            (out / hashlib.sha256(seed).hexdigest()[:16]).write_bytes(seed)
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
