"""PC/SC adapter: the only module that imports pyscard (``smartcard``).

It uses pyscard's thin ``smartcard.scard`` layer, not its object layer, so that this module
alone decides when a card handle is disconnected and with which disposition: pyscard's
connection objects disconnect with ``SCARD_UNPOWER_CARD`` when garbage-collected, and a stale
handle collected after a card swap powers down the *new* card.

Invariants:

* Every PC/SC return code other than success becomes a :mod:`card_profiles.errors` type:
  card gone/unpowered → :class:`CardRemoved`; reader or service missing → :class:`NoReader`;
  PC/SC timeout → :class:`CardTimeout`; anything else → :class:`CardIOError`.
* Every call on a card handle runs on the transport's own worker thread and is awaited for
  at most ``timeout_s`` (pcscd/vpcd have no timeout: a hung card blocks SCardTransmit for
  ever). On timeout the transport is marked broken and raises CardTimeout; a broken transport
  refuses further APDUs.
* :meth:`PcscTransport.close` disconnects explicitly and releases the context, on the worker
  thread, after any call still in flight: ``SCARD_RESET_CARD`` for a healthy handle (the next
  session starts from a fresh card), ``SCARD_LEAVE_CARD`` for a broken one (so a late
  disconnect can never reset or power down a card inserted meanwhile).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from smartcard import scard

from card_profiles.errors import (
    CardError,
    CardIOError,
    CardRemoved,
    CardReset,
    CardTimeout,
    NoReader,
    ReaderBusy,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_APDU_BYTES = 65535
"""vpcd frames are 16-bit: a longer C-APDU fails and makes vpcd eject the card."""
POLL_SLICE_S = 0.5
CLOSE_WAIT_S = 2.0

_REMOVED = {
    scard.SCARD_W_REMOVED_CARD,
    scard.SCARD_E_NO_SMARTCARD,
    scard.SCARD_W_UNPOWERED_CARD,
}
_NO_READER = {
    scard.SCARD_E_UNKNOWN_READER,
    scard.SCARD_E_NO_READERS_AVAILABLE,
    scard.SCARD_E_READER_UNAVAILABLE,
    scard.SCARD_E_NO_SERVICE,
    scard.SCARD_E_SERVICE_STOPPED,
}


def _error(hresult: int, what: str) -> CardError:
    code = hresult & 0xFFFFFFFF
    try:
        message = str(scard.SCardGetErrorMessage(hresult))
    except Exception:  # pragma: no cover - pyscard always has a message
        message = "PC/SC error"
    text = f"{what}: {message} (0x{code:08X})"
    if hresult in _REMOVED:
        return CardRemoved(text)
    if hresult in _NO_READER:
        return NoReader(text)
    if hresult == scard.SCARD_E_TIMEOUT:
        return CardTimeout(text)
    if hresult == scard.SCARD_W_RESET_CARD:
        return CardReset(text)
    if hresult == scard.SCARD_E_SHARING_VIOLATION:
        return ReaderBusy(text)
    return CardIOError(text)


def _check(hresult: int, what: str) -> None:
    if hresult != scard.SCARD_S_SUCCESS:
        raise _error(hresult, what)


@contextmanager
def _context() -> Iterator[Any]:
    """A PC/SC context, always released. Raises NoReader if pcscd is not running."""
    hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    _check(hresult, "establish PC/SC context")
    try:
        yield ctx
    finally:
        scard.SCardReleaseContext(ctx)


def list_readers() -> list[str]:
    """Names of the readers pcscd knows ([] if none). Raises NoReader if pcscd is down."""
    with _context() as ctx:
        hresult, readers = scard.SCardListReaders(ctx, [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        _check(hresult, "list readers")
        return [str(name) for name in readers]


def wait_for_card(reader: str, timeout_s: float) -> None:
    """Return once ``reader`` holds a powered card. Raises CardTimeout, NoReader."""
    _wait_for_state(reader, timeout_s, want_present=True)


def wait_for_card_absent(reader: str, timeout_s: float) -> None:
    """Return once ``reader`` is empty. Raises CardTimeout, NoReader."""
    _wait_for_state(reader, timeout_s, want_present=False)


def _wait_for_state(reader: str, timeout_s: float, *, want_present: bool) -> None:
    deadline = time.monotonic() + timeout_s
    wanted = "a card" if want_present else "no card"
    with _context() as ctx:
        known = scard.SCARD_STATE_UNAWARE
        while True:
            remaining = deadline - time.monotonic()
            slice_ms = int(max(0.0, min(remaining, POLL_SLICE_S)) * 1000)
            hresult, states = scard.SCardGetStatusChange(ctx, slice_ms, [(reader, known)])
            if hresult != scard.SCARD_E_TIMEOUT:
                _check(hresult, f"status of {reader!r}")
                event = int(states[0][1])
                if event & scard.SCARD_STATE_UNKNOWN:
                    raise NoReader(f"no reader named {reader!r}")
                present = bool(event & scard.SCARD_STATE_PRESENT) and not (
                    event & scard.SCARD_STATE_MUTE
                )
                empty = bool(event & scard.SCARD_STATE_EMPTY)
                if (want_present and present) or (not want_present and empty):
                    return
                known = event & ~scard.SCARD_STATE_CHANGED
            if time.monotonic() >= deadline:
                raise CardTimeout(f"{reader!r} did not show {wanted} within {timeout_s:g} s")


class _Worker:
    """One daemon thread running PC/SC calls in order; callers wait with a timeout.

    Daemon, so a call stuck in pcscd for ever cannot keep the interpreter from exiting.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, future))
        return future

    def call(self, fn: Callable[[], T], timeout_s: float, what: str) -> T:
        """Run ``fn`` on the worker; raise CardTimeout if it takes longer than ``timeout_s``.

        A pyscard exception that is not already a CardError becomes CardIOError.
        """
        future = self.submit(fn)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise CardTimeout(f"{what}: no answer within {timeout_s:g} s") from None
        except CardError:
            raise
        except Exception as exc:
            raise CardIOError(f"{what}: {exc}") from exc

    def stop(self) -> None:
        """Let the thread exit after the calls already queued."""
        self._queue.put(None)


class _Handle:
    """Context and card handle, filled in by the worker (so a late connect can be undone)."""

    def __init__(self, *, exclusive: bool = False) -> None:
        self.context: Any = None
        self.card: Any = None
        self.protocol = 0
        self.atr = b""
        self.share = scard.SCARD_SHARE_EXCLUSIVE if exclusive else scard.SCARD_SHARE_SHARED

    def open(self, reader: str) -> None:
        hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        _check(hresult, "establish PC/SC context")
        self.context = ctx
        protocols = scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        hresult, card, protocol = scard.SCardConnect(ctx, reader, self.share, protocols)
        _check(hresult, f"connect to {reader!r}")
        self.card = card
        self.protocol = int(protocol)
        hresult, _name, _state, _proto, atr = scard.SCardStatus(card)
        _check(hresult, f"status of the card in {reader!r}")
        self.atr = bytes(atr)

    def release(self, disposition: int) -> None:
        """Disconnect (if connected) and release the context. Never raises."""
        if self.card is not None:
            hresult = scard.SCardDisconnect(self.card, disposition)
            if hresult != scard.SCARD_S_SUCCESS:
                log.debug("%s", _error(hresult, "disconnect"))
            self.card = None
        if self.context is not None:
            scard.SCardReleaseContext(self.context)
            self.context = None


class PcscTransport:
    """A :class:`~card_profiles.transport.Transport` to the card in one PC/SC reader.

    Create with :meth:`connect`. Not for concurrent use from several threads. Use as a
    context manager or call :meth:`close`.
    """

    def __init__(self, reader: str, worker: _Worker, handle: _Handle, timeout_s: float) -> None:
        self._reader = reader
        self._worker = worker
        self._handle = handle
        self._timeout_s = timeout_s
        self._broken: str | None = None
        self._closed = False

    @classmethod
    def connect(
        cls, reader: str, timeout_s: float = 5.0, *, exclusive: bool = False
    ) -> PcscTransport:
        """Connect (T=0 or T=1) to the card in ``reader``.

        ``exclusive`` keeps every other process off the card until :meth:`close` (used for
        personalization). ``timeout_s`` bounds the connect and every later transmit. Raises
        CardRemoved if there is no (powered) card, ReaderBusy if another process holds the
        reader exclusively, NoReader if the reader or pcscd is missing, CardTimeout.
        """
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        worker = _Worker(f"pcsc-{reader}")
        handle = _Handle(exclusive=exclusive)
        try:
            worker.call(lambda: handle.open(reader), timeout_s, f"connect to {reader!r}")
        except BaseException:
            worker.submit(lambda: handle.release(scard.SCARD_LEAVE_CARD))
            worker.stop()
            raise
        return cls(reader, worker, handle, timeout_s)

    @property
    def reader(self) -> str:
        return self._reader

    @property
    def atr(self) -> bytes:
        """The card's answer-to-reset as read when connecting."""
        return self._handle.atr

    @property
    def protocol(self) -> str:
        """The active protocol: "T=0" or "T=1"."""
        return "T=1" if self._handle.protocol == scard.SCARD_PROTOCOL_T1 else "T=0"

    @property
    def broken(self) -> bool:
        """True after a timeout or I/O failure; the transport then refuses to transmit."""
        return self._broken is not None

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one APDU; return ``(data, sw)``.

        Raises CardTimeout after ``timeout_s``, CardRemoved, CardIOError (also when closed or
        broken), NoReader; ValueError for an APDU over 65535 bytes. Any error but ValueError
        leaves the transport broken.
        """
        if self._closed:
            raise CardIOError("transport is closed")
        if self._broken is not None:
            raise CardIOError(f"transport is broken: {self._broken}")
        if not 4 <= len(apdu) <= MAX_APDU_BYTES:
            raise ValueError(f"APDU of {len(apdu)} bytes (must be 4..{MAX_APDU_BYTES})")
        handle = self._handle
        command = list(apdu)

        def run() -> tuple[int, list[int]]:
            hresult, response = scard.SCardTransmit(handle.card, handle.protocol, command)
            return int(hresult), list(response)

        try:
            hresult, response = self._worker.call(run, self._timeout_s, "transmit")
            _check(hresult, f"transmit to {self._reader!r}")
            if len(response) < 2:
                raise CardIOError(f"{self._reader!r}: no valid response (card gone?)")
        except CardError as exc:
            self._broken = str(exc)
            raise
        return bytes(response[:-2]), (response[-2] << 8) | response[-1]

    def close(self) -> None:
        """Disconnect and release; idempotent, never raises.

        Waits at most a short while: if a call is stuck (broken transport), the disconnect
        runs on the worker thread as soon as that call returns.
        """
        if self._closed:
            return
        self._closed = True
        broken = self._broken is not None
        disposition = scard.SCARD_LEAVE_CARD if broken else scard.SCARD_RESET_CARD
        handle = self._handle
        future = self._worker.submit(lambda: handle.release(disposition))
        self._worker.stop()
        wait_s = min(self._timeout_s, 0.2 if broken else CLOSE_WAIT_S)
        try:
            future.result(timeout=wait_s)
        except concurrent.futures.TimeoutError:
            log.warning("disconnect from %r deferred: a PC/SC call is still running", self._reader)
        except Exception as exc:  # close must not raise
            log.warning("disconnect from %r failed: %s", self._reader, exc)

    def __enter__(self) -> PcscTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(
                f"PcscTransport to {self._reader!r} was not closed", ResourceWarning, stacklevel=1
            )
