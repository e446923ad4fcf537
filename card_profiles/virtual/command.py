"""Card-side APDU mechanics shared by the virtual cards.

Parsing of command APDUs (ISO/IEC 7816-3 §12.1.3 cases 1, 2S/E, 3S/E, 4S/E), the refusal of a
command with a status word, and response chaining (data beyond Ne waits for GET RESPONSE
with ``61xx``, ISO/IEC 7816-4 §5.3.4).

Invariant: :func:`parse_command` either returns a fully consistent :class:`ParsedCommand`
or raises :class:`MalformedApdu`; it never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass

SW_OK = 0x9000
_SW_WRONG_LENGTH = 0x6700
_SW_CONDITIONS = 0x6985
_SW_WRONG_P1P2 = 0x6A86


class MalformedApdu(ValueError):
    """The bytes are not a well-formed command APDU (the card answers 6700)."""


class Refused(Exception):
    """A card aborts the command it is processing with status word ``sw``."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


def sw_bytes(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


def chunk_response(data: bytes, ne: int) -> tuple[bytes, bytes]:
    """``(answer, pending)``: the first ``ne`` bytes with 9000, or with ``61xx`` and the rest
    left pending for GET RESPONSE."""
    head, rest = data[:ne], data[ne:]
    if not rest:
        return head + sw_bytes(SW_OK), b""
    return head + sw_bytes(0x6100 | (min(len(rest), 256) & 0xFF)), rest


def continue_response(cmd: ParsedCommand, pending: bytes) -> tuple[bytes, bytes]:
    """Answers GET RESPONSE from ``pending``; raises :class:`Refused` for a malformed one
    (6A86 P1/P2, 6700 data or no Le) or when nothing waits (6985)."""
    if cmd.p1 or cmd.p2:
        raise Refused(_SW_WRONG_P1P2)
    if cmd.data or cmd.ne is None:
        raise Refused(_SW_WRONG_LENGTH)
    if not pending:
        raise Refused(_SW_CONDITIONS)
    return chunk_response(pending, cmd.ne)


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
