"""The transport port: how the card layer moves one APDU to a card and back.

Implementations: :class:`InProcessTransport` (a card object in this process) and
:class:`card_profiles.pcsc.PcscTransport` (a real PC/SC reader). A transport never interprets
status words; it returns them.
"""

from __future__ import annotations

from typing import Protocol

from card_profiles.errors import CardIOError


class Transport(Protocol):
    """Moves raw APDUs.

    ``transmit`` returns ``(data, sw)``. It raises :class:`~card_profiles.errors.CardIOError`
    (or a subclass: CardRemoved, CardTimeout) when no valid response arrives. ``close`` is
    idempotent and releases everything the transport holds.
    """

    def transmit(self, apdu: bytes) -> tuple[bytes, int]: ...

    def close(self) -> None: ...


class ApduProcessor(Protocol):
    """Anything that answers a command APDU with ``data ‖ SW1 SW2`` (e.g. a virtual card)."""

    def process(self, apdu: bytes) -> bytes: ...


class InProcessTransport:
    """Transport to a card object living in this process.

    Raises CardIOError if used after :meth:`close`, or if the card answers fewer than two
    bytes. Closing does not touch the card (it may be shared by several transports).
    """

    def __init__(self, card: ApduProcessor) -> None:
        self._card = card
        self._closed = False

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if self._closed:
            raise CardIOError("transport is closed")
        response = self._card.process(bytes(apdu))
        if len(response) < 2:
            raise CardIOError(f"card answered {len(response)} bytes, no status word")
        return response[:-2], int.from_bytes(response[-2:], "big")

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> InProcessTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
