"""Persistent "EEPROM" of a virtual StarCard: an immutable state and its JSON file.

Invariants:

* :class:`CardState` is immutable; a change makes a new state that is saved before the card
  uses it, so memory and file never disagree.
* :func:`save_state` is atomic: temp file in the same directory (mode 0600, it holds a
  private key), write, fsync, ``os.replace``, fsync of the directory. A crash leaves either
  the old or the new file, never a torn one.
* :func:`load_state` raises ValueError for a file that is not a valid state (it never
  silently starts a blank card over a damaged one); OSError for I/O problems.

The private key is stored in clear: this is a test card, not a secure element.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from card_profiles.profiles import Lifecycle

STATE_FORMAT = "starcard-v1-virtual-state"
STATE_VERSION = 1
SERIAL_LENGTH = 8
PRIVATE_KEY_LENGTH = 32


@dataclass(frozen=True)
class CardState:
    """Everything the card remembers across power cycles."""

    serial: bytes
    lifecycle: Lifecycle
    private_key: bytes | None = None
    """P-256 private scalar, 32 bytes big-endian, or None before GENERATE KEY."""
    credential: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.serial) != SERIAL_LENGTH:
            raise ValueError(f"serial must be {SERIAL_LENGTH} bytes")
        if self.private_key is not None and len(self.private_key) != PRIVATE_KEY_LENGTH:
            raise ValueError(f"private key must be {PRIVATE_KEY_LENGTH} bytes")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "serial": self.serial.hex(),
            "lifecycle": int(self.lifecycle),
            "private_key": None if self.private_key is None else self.private_key.hex(),
            "credential": None if self.credential is None else self.credential.hex(),
        }

    @classmethod
    def from_json(cls, obj: object) -> CardState:
        """Raises ValueError if ``obj`` is not a state of this format and version."""
        if not isinstance(obj, dict):
            raise ValueError("state is not a JSON object")
        if obj.get("format") != STATE_FORMAT or obj.get("version") != STATE_VERSION:
            raise ValueError("unknown state format or version")
        try:
            return cls(
                serial=bytes.fromhex(obj["serial"]),
                lifecycle=Lifecycle(obj["lifecycle"]),
                private_key=_optional_hex(obj["private_key"]),
                credential=_optional_hex(obj["credential"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"invalid state: {exc!r}") from exc


def _optional_hex(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a hex string")
    return bytes.fromhex(value)


def load_state(path: Path) -> CardState:
    """Read the state at ``path``. Raises FileNotFoundError, OSError or ValueError."""
    with path.open("rb") as f:
        raw = f.read()
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"state file {path} is not JSON") from exc
    return CardState.from_json(obj)


def save_state(path: Path, state: CardState) -> None:
    """Atomically replace the file at ``path`` with ``state``. Raises OSError."""
    payload = json.dumps(state.to_json(), sort_keys=True).encode()
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
