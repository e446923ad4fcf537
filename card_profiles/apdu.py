"""Command APDUs (ISO/IEC 7816-3 §12.1, 7816-4 §5.1) and the APDU-level protocol.

:class:`CommandApdu` is an immutable, validated command that encodes itself in short or
extended form. :class:`ApduConnection` sits on a :class:`~card_profiles.transport.Transport`
and hides the transmission mechanics from the session:

* ``61xx``: more data waiting, fetched with GET RESPONSE until the final status word;
* ``6Cxx``: wrong Le, the last APDU is resent once with Le = xx;
* command chaining (CLA | 0x10) when the data does not fit a short APDU and the card has no
  extended length (and downgrading Ne > 256 to short Le = 00 plus GET RESPONSE);
* the final status word goes through :func:`~card_profiles.errors.raise_for_sw`, so callers
  get data or a typed exception, never a status word.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from card_profiles.errors import SW_OK, CardIOError, raise_for_sw
from card_profiles.transport import Transport

SHORT_MAX_NC = 255
SHORT_MAX_NE = 256
EXTENDED_MAX_NC = 65535
EXTENDED_MAX_NE = 65536
CLA_CHAINING = 0x10
INS_GET_RESPONSE = 0xC0
MAX_RESPONSE_BYTES = 1 << 20
"""Upper bound on a response assembled from GET RESPONSE rounds (guards a looping card)."""
MAX_GET_RESPONSE_ROUNDS = 512
"""Upper bound on GET RESPONSE rounds for one command (a card answering 61xx with little or no
data must not keep the host busy for ever); 512 × 256 bytes covers any 65535-byte object."""


@dataclass(frozen=True)
class CommandApdu:
    """A command APDU.

    ``le`` is the expected response length Ne: ``None`` means no Le field (no data expected);
    ``0`` means "as much as the encoding allows" (256 short, 65536 extended); otherwise
    1..65536. Raises ValueError on construction if a field is out of range.
    """

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise ValueError(f"{name} must be a byte, got {value!r}")
        if self.cla == 0xFF:
            raise ValueError("CLA FF is reserved (PPS)")
        if not isinstance(self.data, bytes):
            raise ValueError("data must be bytes")
        if len(self.data) > EXTENDED_MAX_NC:
            raise ValueError(f"data longer than {EXTENDED_MAX_NC} bytes")
        if self.le is not None and not 0 <= self.le <= EXTENDED_MAX_NE:
            raise ValueError(f"le must be 0..{EXTENDED_MAX_NE} or None, got {self.le}")

    @property
    def fits_short(self) -> bool:
        """True if the command can be encoded without extended length."""
        return len(self.data) <= SHORT_MAX_NC and (self.le is None or self.le <= SHORT_MAX_NE)

    def encode(self, extended: bool = False) -> bytes:
        """Encode as case 1, 2, 3 or 4, in short or extended form.

        Raises ValueError if ``extended`` is False and the command does not fit short form.
        """
        header = bytes([self.cla, self.ins, self.p1, self.p2])
        nc = len(self.data)
        if not extended:
            if not self.fits_short:
                raise ValueError("command needs extended length")
            lc = bytes([nc]) + self.data if nc else b""
            le = b"" if self.le is None else bytes([self.le & 0xFF])
            return header + lc + le
        if nc == 0 and self.le is None:
            return header
        lc = b"\x00" + nc.to_bytes(2, "big") + self.data if nc else b""
        if self.le is None:
            le = b""
        else:
            le = (self.le & 0xFFFF).to_bytes(2, "big")
            if nc == 0:
                le = b"\x00" + le
        return header + lc + le


class ApduProcessor(Protocol):
    """One layer of the APDU stack: sends a command, returns ``(data, sw)`` unchecked."""

    def send(self, command: CommandApdu) -> tuple[bytes, int]: ...


class TransportProcessor:
    """Bottom layer: encodes each command (short, or extended when allowed and needed) and
    hands it to the transport. Counts the APDUs that actually go to the card."""

    def __init__(self, transport: Transport, *, extended_length: bool) -> None:
        self._transport = transport
        self.extended_length = extended_length
        self.count = 0

    def send(self, command: CommandApdu) -> tuple[bytes, int]:
        extended = self.extended_length and not command.fits_short
        self.count += 1
        return self._transport.transmit(command.encode(extended=extended))


class ChainingProcessor:
    """Command chaining (ISO 7816-4 §5.1.1.1): data over 255 bytes for a card without extended
    length goes as parts with CLA | 0x10; every part but the last must be answered 9000.
    Also caps Ne at 256 for such cards (the rest comes with 61xx GET RESPONSE)."""

    def __init__(self, inner: ApduProcessor, *, extended_length: bool) -> None:
        self._inner = inner
        self._extended = extended_length

    def send(self, command: CommandApdu) -> tuple[bytes, int]:
        if self._extended:
            return self._inner.send(command)
        if command.le is not None and command.le > SHORT_MAX_NE:
            command = replace(command, le=0)
        if len(command.data) <= SHORT_MAX_NC:
            return self._inner.send(command)
        if command.cla & CLA_CHAINING:
            raise ValueError("CLA already has the chaining bit")
        data = command.data
        parts = [data[i : i + SHORT_MAX_NC] for i in range(0, len(data), SHORT_MAX_NC)]
        for part in parts[:-1]:
            head = replace(command, cla=command.cla | CLA_CHAINING, data=part, le=None)
            _, sw = self._inner.send(head)
            if sw != SW_OK:
                if sw >> 8 in (0x61, 0x6C):
                    raise CardIOError(f"card answered {sw:04X} to a chained command part")
                raise_for_sw(sw)
        return self._inner.send(replace(command, data=parts[-1]))


class WrongLeProcessor:
    """``6Cxx``: the card wants Le = xx; the same command is resent once with that Le."""

    def __init__(self, inner: ApduProcessor) -> None:
        self._inner = inner

    def send(self, command: CommandApdu) -> tuple[bytes, int]:
        data, sw = self._inner.send(command)
        if sw >> 8 != 0x6C:
            return data, sw
        data, sw = self._inner.send(replace(command, le=(sw & 0xFF) or SHORT_MAX_NE))
        if sw >> 8 == 0x6C:
            raise CardIOError(f"card answered {sw:04X} twice")
        return data, sw


class GetResponseProcessor:
    """``61xx``: more data waits on the card; GET RESPONSE until the final status word."""

    def __init__(self, inner: ApduProcessor) -> None:
        self._inner = inner

    def send(self, command: CommandApdu) -> tuple[bytes, int]:
        data, sw = self._inner.send(command)
        chunks = [data]
        total = len(data)
        rounds = 0
        while sw >> 8 == 0x61:
            rounds += 1
            if rounds > MAX_GET_RESPONSE_ROUNDS:
                raise CardIOError(f"card kept answering 61xx after {rounds - 1} GET RESPONSEs")
            get_response = CommandApdu(command.cla & 0x03, INS_GET_RESPONSE, 0, 0, le=sw & 0xFF)
            data, sw = self._inner.send(get_response)
            chunks.append(data)
            total += len(data)
            if total > MAX_RESPONSE_BYTES:
                raise CardIOError("response exceeds limit while following 61xx")
        return b"".join(chunks), sw


class ApduConnection:
    """Sends :class:`CommandApdu` over a transport; returns response data or raises.

    The stack, top to bottom: status check → :class:`GetResponseProcessor` (61xx) →
    :class:`WrongLeProcessor` (6Cxx) → :class:`ChainingProcessor` → :class:`TransportProcessor`.
    Whichever path a command takes (extended length, or short APDUs with chaining and
    GET RESPONSE), the data returned is the same.

    ``extended_length`` says whether the card accepts extended APDUs. ``apdu_count`` counts
    the APDUs actually handed to the transport (GET RESPONSE, resends and chain parts
    included). Raises the transport's :class:`~card_profiles.errors.CardIOError` family,
    :class:`~card_profiles.errors.StatusWordError` subclasses for refusals, and CardIOError
    when the card breaks the protocol (a chain part not answered 9000, repeated 6Cxx, an
    endless 61xx stream).
    """

    def __init__(self, transport: Transport, *, extended_length: bool = False) -> None:
        self._bottom = TransportProcessor(transport, extended_length=extended_length)
        self._stack: ApduProcessor = GetResponseProcessor(
            WrongLeProcessor(ChainingProcessor(self._bottom, extended_length=extended_length))
        )

    @property
    def apdu_count(self) -> int:
        return self._bottom.count

    @property
    def extended_length(self) -> bool:
        return self._bottom.extended_length

    def send(self, command: CommandApdu) -> bytes:
        """Send ``command`` and return its response data (status 9000)."""
        data, sw = self._stack.send(command)
        raise_for_sw(sw)
        return data
