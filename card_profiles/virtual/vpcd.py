"""Plug a virtual card into pcscd's vpcd driver (vsmartcard protocol) over TCP.

The card is the TCP client; vpcd listens (one port per reader slot: 35963 → "Virtual PCD 00
00", 35964 → "Virtual PCD 00 01"). Every frame is a 2-byte big-endian length and a payload.
A 1-byte payload is a control code (0 power off, 1 power on, 2 reset, 4 send ATR); anything
else is a C-APDU, answered with R-APDU ‖ SW.

Invariants:

* ``TCP_QUICKACK`` is re-armed before every ``recv`` (Linux); without it vpcd's two-part
  writes meet delayed ACK and every APDU costs about 40 ms.
* No frame longer than 65535 bytes is ever sent: such a response is replaced by 6F00.
* The card sees power off / on / reset as :meth:`reset`; it never sees control frames.
* vpcd closing the connection (card "removed" or pcscd gone) ends :func:`serve` normally.
* A card that loses power (:class:`~card_profiles.virtual.starcard_v1.PowerLost`, the
  power-loss switch) sends no answer: :func:`serve` closes the connection at once, as if the
  card were pulled mid-command, and re-raises; ``starcard-card`` then exits with status 3.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

from card_profiles.profiles import PROFILES
from card_profiles.virtual.starcard_v1 import PowerLost, VirtualStarCard

log = logging.getLogger(__name__)

MAX_FRAME = 0xFFFF
CTRL_POWER_OFF = 0
CTRL_POWER_ON = 1
CTRL_RESET = 2
CTRL_ATR = 4
SW_INTERNAL_ERROR = b"\x6f\x00"
EXIT_POWER_LOST = 3
_TICK_S = 0.25


class VirtualCard(Protocol):
    """What :func:`serve` needs from a card."""

    @property
    def atr(self) -> bytes: ...

    def process(self, apdu: bytes) -> bytes: ...

    def reset(self) -> None: ...


class _Closed(Exception):
    """vpcd closed the connection."""


class _Stopped(Exception):
    """The stop event was set."""


def _quickack(sock: socket.socket) -> None:
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def _recv_exact(sock: socket.socket, n: int, stop: threading.Event) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if stop.is_set():
            raise _Stopped
        _quickack(sock)
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            continue
        if not chunk:
            raise _Closed
        buf += chunk
    return bytes(buf)


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)


def connect(host: str, port: int, wait_s: float, stop: threading.Event) -> socket.socket:
    """Connect to vpcd, retrying until it listens. Raises ConnectionError after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=_TICK_S)
        except OSError as exc:
            if stop.is_set() or time.monotonic() >= deadline:
                raise ConnectionError(f"vpcd at {host}:{port} not reachable: {exc}") from exc
            stop.wait(0.1)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def answer(card: VirtualCard, payload: bytes) -> bytes | None:
    """The reply frame payload for one vpcd frame, or None when no reply is due."""
    if len(payload) == 1:
        code = payload[0]
        if code in (CTRL_POWER_OFF, CTRL_POWER_ON, CTRL_RESET):
            card.reset()
            return None
        if code == CTRL_ATR:
            return card.atr
        log.warning("unknown vpcd control code %d", code)
        return None
    response = card.process(payload)
    if len(response) > MAX_FRAME or len(response) < 2:
        log.error("response of %d bytes cannot be framed; answering 6F00", len(response))
        return SW_INTERNAL_ERROR
    return response


def serve(
    card: VirtualCard,
    host: str = "127.0.0.1",
    port: int = 35963,
    stop_event: threading.Event | None = None,
    *,
    wait_s: float = 20.0,
) -> None:
    """Serve ``card`` to vpcd until vpcd disconnects or ``stop_event`` is set.

    Raises ConnectionError if vpcd does not accept a connection within ``wait_s``, and
    PowerLost (after closing the connection) when the card loses power.
    """
    stop = stop_event if stop_event is not None else threading.Event()
    sock = connect(host, port, wait_s, stop)
    log.info("card connected to vpcd at %s:%d", host, port)
    try:
        sock.settimeout(_TICK_S)
        while True:
            (length,) = struct.unpack(">H", _recv_exact(sock, 2, stop))
            payload = _recv_exact(sock, length, stop) if length else b""
            if not payload:
                continue
            reply = answer(card, payload)
            if reply is not None:
                _send_frame(sock, reply)
    except PowerLost as exc:
        log.warning("card lost power: %s", exc)
        raise
    except _Closed:
        log.info("vpcd closed the connection")
    except _Stopped:
        log.info("stop requested")
    except OSError as exc:
        log.info("connection to vpcd lost: %s", exc)
    finally:
        sock.close()
        card.reset()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="starcard-card", description="Insert a virtual StarCard into a vpcd reader slot."
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="starcard-v1")
    parser.add_argument("--port", type=int, default=35963, help="vpcd slot port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--state", type=Path, required=True, help="state (JSON) file of a manufactured card"
    )
    parser.add_argument("--wait", type=float, default=20.0, help="seconds to wait for vpcd")
    parser.add_argument(
        "--power-loss-after",
        type=int,
        metavar="N",
        help="lose power during APDU N+1 (the card then leaves the reader; exit status 3)",
    )
    parser.add_argument(
        "--power-loss-commits",
        type=int,
        default=0,
        metavar="K",
        help="EEPROM writes of the torn APDU that complete before power is lost (default 0)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``starcard-card``.

    Exit 0 on SIGTERM/SIGINT or vpcd closing, 1 on error, 3 when the card lost power.
    """
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s starcard-card[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        card = VirtualStarCard(
            args.state,
            power_loss_after=args.power_loss_after,
            power_loss_commits=args.power_loss_commits,
        )
    except (OSError, ValueError) as exc:
        log.error("cannot load card state %s (manufacture the card first): %s", args.state, exc)
        return 1
    log.info("card %s (%s) on %s:%d", card.serial.hex(), args.profile, args.host, args.port)
    return serve_until_signalled(card, args.host, args.port, args.wait)


def serve_until_signalled(card: VirtualCard, host: str, port: int, wait_s: float) -> int:
    """Runs :func:`serve` in a card process until SIGTERM/SIGINT or vpcd closing.

    Returns the process exit status: 0 for a clean stop, 1 if vpcd could not be reached,
    :data:`EXIT_POWER_LOST` when the card's power-loss switch fired.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        serve(card, host, port, stop, wait_s=wait_s)
    except PowerLost:
        return EXIT_POWER_LOST
    except ConnectionError as exc:
        if stop.is_set():
            return 0
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
