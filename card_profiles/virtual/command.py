"""Card-side parsing of command APDUs (ISO/IEC 7816-3 §12.1.3 cases 1, 2S/E, 3S/E, 4S/E).

Invariant: :func:`parse_command` either returns a fully consistent :class:`ParsedCommand`
or raises :class:`MalformedApdu`; it never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass


class MalformedApdu(ValueError):
    """The bytes are not a well-formed command APDU (the card answers 6700)."""


@dataclass(frozen=True)
class ParsedCommand:
    """A decoded command. ``ne`` is None without Le, else 1..65536 (Le 00 / 0000 decoded)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    ne: int | None
    extended: bool


def parse_command(apdu: bytes) -> ParsedCommand:
    """Decode ``apdu``. Raises MalformedApdu if its body fits none of the ISO cases."""
    if len(apdu) < 4:
        raise MalformedApdu(f"APDU of {len(apdu)} bytes is shorter than a header")
    cla, ins, p1, p2 = apdu[:4]
    body = apdu[4:]
    n = len(body)
    if n == 0:
        return ParsedCommand(cla, ins, p1, p2, b"", None, False)
    if n == 1:
        return ParsedCommand(cla, ins, p1, p2, b"", body[0] or 256, False)
    if body[0] != 0:
        lc = body[0]
        if n == 1 + lc:
            return ParsedCommand(cla, ins, p1, p2, bytes(body[1:]), None, False)
        if n == 2 + lc:
            return ParsedCommand(cla, ins, p1, p2, bytes(body[1:-1]), body[-1] or 256, False)
        raise MalformedApdu(f"short Lc {lc} does not match body of {n} bytes")
    if n == 3:
        return ParsedCommand(cla, ins, p1, p2, b"", _ext_ne(body[1:3]), True)
    if n < 3:
        raise MalformedApdu("truncated extended length")
    lc = int.from_bytes(body[1:3], "big")
    if lc == 0:
        raise MalformedApdu("extended Lc of zero")
    if n == 3 + lc:
        return ParsedCommand(cla, ins, p1, p2, bytes(body[3:]), None, True)
    if n == 5 + lc:
        return ParsedCommand(cla, ins, p1, p2, bytes(body[3:-2]), _ext_ne(body[-2:]), True)
    raise MalformedApdu(f"extended Lc {lc} does not match body of {n} bytes")


def _ext_ne(raw: bytes) -> int:
    return int.from_bytes(raw, "big") or 65536
