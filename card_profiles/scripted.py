"""Recorded APDU conversations (transcripts): replay them, record them, store them as JSON.

A *transcript* is the ordered list of exchanges one session had with one card: each
exchange is the command APDU as sent and the response APDU as received (data ‖ SW1 SW2).
Transcripts are golden vectors (``tests/vectors/transcripts/*.json``): a session replayed
against one must send exactly the recorded commands, byte for byte.

* :class:`ScriptedTransport` is a :class:`~card_profiles.transport.Transport` that plays the
  card's side of a transcript. Each ``transmit`` must carry exactly the next recorded
  command; it then returns the recorded response. Any deviation (another command, a command
  after the end) raises :class:`TranscriptMismatch`, which names the step and shows both
  APDUs in hex. :meth:`ScriptedTransport.assert_complete` checks that every step was used.
* :class:`RecordingTransport` wraps any transport and records what passes through it.
* :func:`load_transcript` / :func:`save_transcript` read and write the JSON form: a list of
  ``{"c": "<command hex>", "r": "<response hex, SW included>"}`` objects, uppercase hex,
  one exchange per line (so a changed APDU shows as a one-line diff).

Invariants: an :class:`Exchange` always has a command of at least 4 bytes (a header) and a
response of at least 2 bytes (a status word); loading rejects anything else with
:class:`TranscriptFormatError` (a ``ValueError``). Neither transport interprets status words.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from card_profiles.errors import CardIOError
from card_profiles.transport import Transport

__all__ = [
    "Exchange",
    "RecordingTransport",
    "ScriptedTransport",
    "TranscriptFormatError",
    "TranscriptMismatch",
    "dumps_transcript",
    "load_transcript",
    "loads_transcript",
    "save_transcript",
]


class TranscriptMismatch(AssertionError):
    """The session did not follow the transcript (a test failure, hence an AssertionError).

    ``step`` is the 1-based number of the exchange; ``expected``/``actual`` are the recorded
    and the sent command (``expected`` is None past the end of the transcript; ``actual`` is
    None when steps were left unused).
    """

    def __init__(
        self, step: int, total: int, expected: bytes | None, actual: bytes | None, why: str
    ) -> None:
        self.step = step
        self.total = total
        self.expected = expected
        self.actual = actual
        exp = "(none)" if expected is None else expected.hex().upper()
        act = "(none)" if actual is None else actual.hex().upper()
        super().__init__(
            f"transcript step {step} of {total}: {why}\n  expected: {exp}\n  actual:   {act}"
        )


class TranscriptFormatError(ValueError):
    """A transcript file or value is not a list of valid ``{"c", "r"}`` exchanges."""


@dataclass(frozen=True)
class Exchange:
    """One command APDU and the full response APDU (data ‖ SW1 SW2) it got.

    Raises TranscriptFormatError if the command is shorter than 4 bytes or the response
    shorter than 2.
    """

    command: bytes
    response: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.command, bytes) or not isinstance(self.response, bytes):
            raise TranscriptFormatError("command and response must be bytes")
        if len(self.command) < 4:
            raise TranscriptFormatError(f"command of {len(self.command)} bytes has no header")
        if len(self.response) < 2:
            raise TranscriptFormatError(f"response of {len(self.response)} bytes has no SW")

    @property
    def data(self) -> bytes:
        """The response data, without the status word."""
        return self.response[:-2]

    @property
    def sw(self) -> int:
        """The status word SW1 SW2 as an integer."""
        return int.from_bytes(self.response[-2:], "big")

    @classmethod
    def of(cls, command: bytes, data: bytes, sw: int) -> Exchange:
        """Build from a transport's ``(data, sw)`` answer. Raises ValueError for a bad SW."""
        if not 0 <= sw <= 0xFFFF:
            raise ValueError(f"status word out of range: {sw:#x}")
        return cls(bytes(command), bytes(data) + sw.to_bytes(2, "big"))


class ScriptedTransport:
    """Plays the card's side of ``exchanges``; checks each command against the script.

    ``transmit`` raises :class:`TranscriptMismatch` on the first deviation (and keeps raising
    afterwards: a transcript that went wrong is not resumed), CardIOError once closed.
    ``close`` is idempotent and does not check completeness; call :meth:`assert_complete`
    (or use the object as a context manager, which does so on a clean exit).
    """

    def __init__(self, exchanges: Iterable[Exchange]) -> None:
        self._script = tuple(exchanges)
        for item in self._script:
            if not isinstance(item, Exchange):
                raise TypeError("exchanges must be Exchange objects")
        self._position = 0
        self._failed: TranscriptMismatch | None = None
        self._closed = False

    @property
    def position(self) -> int:
        """How many exchanges have been played."""
        return self._position

    @property
    def remaining(self) -> int:
        """How many recorded exchanges have not been played yet."""
        return len(self._script) - self._position

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if self._closed:
            raise CardIOError("transport is closed")
        if self._failed is not None:
            raise self._failed
        apdu = bytes(apdu)
        step, total = self._position + 1, len(self._script)
        if self._position >= total:
            self._failed = TranscriptMismatch(
                step, total, None, apdu, "command sent after the end of the transcript"
            )
            raise self._failed
        expected = self._script[self._position]
        if apdu != expected.command:
            self._failed = TranscriptMismatch(
                step, total, expected.command, apdu, "command differs from the recording"
            )
            raise self._failed
        self._position += 1
        return expected.data, expected.sw

    def assert_complete(self) -> None:
        """Raise TranscriptMismatch if the transcript went wrong or steps were left unused."""
        if self._failed is not None:
            raise self._failed
        if self._position != len(self._script):
            total = len(self._script)
            missing = self._script[self._position].command
            raise TranscriptMismatch(
                self._position + 1,
                total,
                missing,
                None,
                f"session stopped with {total - self._position} recorded exchange(s) unused",
            )

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> ScriptedTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.close()
        if exc_type is None:
            self.assert_complete()


class RecordingTransport:
    """Forwards to ``inner`` and records every completed exchange.

    A transmit that raises is not recorded (there is no response to record); the exception
    propagates unchanged. ``close`` closes ``inner``.
    """

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self._exchanges: list[Exchange] = []

    @property
    def exchanges(self) -> tuple[Exchange, ...]:
        """The exchanges recorded so far, in order."""
        return tuple(self._exchanges)

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        data, sw = self._inner.transmit(apdu)
        self._exchanges.append(Exchange.of(bytes(apdu), data, sw))
        return data, sw

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> RecordingTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dumps_transcript(exchanges: Sequence[Exchange]) -> str:
    """The JSON text of ``exchanges``: one ``{"c", "r"}`` object per line, uppercase hex."""
    lines = [
        json.dumps({"c": e.command.hex().upper(), "r": e.response.hex().upper()}) for e in exchanges
    ]
    if not lines:
        return "[]\n"
    return "[\n  " + ",\n  ".join(lines) + "\n]\n"


def loads_transcript(text: str) -> list[Exchange]:
    """Parse the JSON text of a transcript. Raises TranscriptFormatError."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TranscriptFormatError(f"transcript is not JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise TranscriptFormatError("transcript must be a JSON list")
    exchanges: list[Exchange] = []
    for index, item in enumerate(raw, start=1):
        if not isinstance(item, dict) or set(item) != {"c", "r"}:
            raise TranscriptFormatError(f'exchange {index} must be {{"c": hex, "r": hex}}')
        command, response = item["c"], item["r"]
        if not isinstance(command, str) or not isinstance(response, str):
            raise TranscriptFormatError(f"exchange {index}: c and r must be hex strings")
        try:
            exchanges.append(Exchange(bytes.fromhex(command), bytes.fromhex(response)))
        except ValueError as exc:
            raise TranscriptFormatError(f"exchange {index}: {exc}") from exc
    return exchanges


def load_transcript(path: Path) -> list[Exchange]:
    """Read a transcript file. Raises OSError, TranscriptFormatError."""
    return loads_transcript(path.read_text(encoding="utf-8"))


def save_transcript(path: Path, exchanges: Sequence[Exchange]) -> None:
    """Write ``exchanges`` to ``path`` (created or replaced). Raises OSError."""
    path.write_text(dumps_transcript(exchanges), encoding="utf-8")
