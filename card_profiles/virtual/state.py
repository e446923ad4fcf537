"""Persistent "EEPROM" of a virtual StarCard: an immutable state and its JSON file.

Invariants:

* :class:`CardState` is immutable; a change makes a new state that is saved before the card
  uses it, so memory and file never disagree.
* :func:`save_state` is atomic: temp file in the same directory (mode 0600, it holds a
  private key), write, fsync, ``os.replace``, fsync of the directory. A crash leaves either
  the old or the new file, never a torn one.
* :func:`load_state` raises ValueError for a file that is not a valid state (it never
  silently starts a blank card over a damaged one); OSError for I/O problems.

* :func:`create_state` refuses to overwrite an existing file: a card is manufactured once.

The private key and K_card are stored in clear: this is a test card, not a secure element.
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
STATE_VERSION = 2
SERIAL_LENGTH = 8
PRIVATE_KEY_LENGTH = 32
CARD_KEY_LENGTH = 16
AUTH_TRY_LIMIT = 10
"""Failed EXTERNAL AUTHENTICATEs a card tolerates before blocking its secure channel."""
MAX_CREDENTIAL_VERSION = 0xFFFFFFFF


@dataclass(frozen=True)
class CardState:
    """Everything the card remembers across power cycles.

    Set at manufacture: ``serial``, ``card_key`` (K_card, AES-128, diversified from the
    issuer's master key) and ``key_version``. Raises ValueError on construction for a field
    of the wrong length or range.
    """

    serial: bytes
    lifecycle: Lifecycle
    card_key: bytes
    key_version: int = 1
    auth_tries: int = AUTH_TRY_LIMIT
    """EXTERNAL AUTHENTICATE attempts left; 0 blocks the secure channel for ever."""
    private_key: bytes | None = None
    """P-256 private scalar, 32 bytes big-endian, or None before GENERATE KEY."""
    credential: bytes | None = None
    credential_version: int = 0
    """Version of the last credential written (0: never); never decreases."""

    def __post_init__(self) -> None:
        if len(self.serial) != SERIAL_LENGTH:
            raise ValueError(f"serial must be {SERIAL_LENGTH} bytes")
        if len(self.card_key) != CARD_KEY_LENGTH:
            raise ValueError(f"card key must be {CARD_KEY_LENGTH} bytes")
        if not 1 <= self.key_version <= 0x7F:
            raise ValueError("key version must be 1..127")
        if not 0 <= self.auth_tries <= AUTH_TRY_LIMIT:
            raise ValueError(f"auth tries must be 0..{AUTH_TRY_LIMIT}")
        if self.private_key is not None and len(self.private_key) != PRIVATE_KEY_LENGTH:
            raise ValueError(f"private key must be {PRIVATE_KEY_LENGTH} bytes")
        if not 0 <= self.credential_version <= MAX_CREDENTIAL_VERSION:
            raise ValueError("credential version must fit 4 bytes")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "serial": self.serial.hex(),
            "lifecycle": int(self.lifecycle),
            "card_key": self.card_key.hex(),
            "key_version": self.key_version,
            "auth_tries": self.auth_tries,
            "private_key": None if self.private_key is None else self.private_key.hex(),
            "credential": None if self.credential is None else self.credential.hex(),
            "credential_version": self.credential_version,
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
                card_key=bytes.fromhex(obj["card_key"]),
                key_version=_int(obj["key_version"]),
                auth_tries=_int(obj["auth_tries"]),
                private_key=_optional_hex(obj["private_key"]),
                credential=_optional_hex(obj["credential"]),
                credential_version=_int(obj["credential_version"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"invalid state: {exc!r}") from exc


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("expected an integer")
    return value


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
    _write(path, state, exclusive=False)


def create_state(path: Path, state: CardState) -> None:
    """Write a new card's state; raises FileExistsError if ``path`` exists, OSError."""
    _write(path, state, exclusive=True)


def _write(path: Path, state: CardState, *, exclusive: bool) -> None:
    payload = json.dumps(state.to_json(), sort_keys=True).encode()
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp_name, path)  # fails if path exists: never overwrites a card
            os.unlink(tmp_name)
        else:
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
