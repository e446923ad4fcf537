"""PC/SC transport faults through a real pcscd: every one ends in a typed error, none hangs.

Reader held by another process, pcscd restarted mid-session, two readers used at once, the
ATR read at connect. (Card pulled after every APDU of personalization and tap: see the
issuance fault tests.)
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from card_profiles.errors import CardError, CardIOError, NoReader, ReaderBusy
from card_profiles.pcsc import PcscTransport, wait_for_card
from card_profiles.starcard import StarCardSession
from tests.pcsc_harness import REPO_ROOT, CardProcess, PcscStack

pytestmark = pytest.mark.pcsc
CardFactory = Callable[..., CardProcess]
STARCARD_ATR = bytes.fromhex("3B888001") + b"STARCARD" + b"\x09"

HOLDER = """
import sys, time
from card_profiles.pcsc import PcscTransport
t = PcscTransport.connect(sys.argv[1], timeout_s=5.0, exclusive=True)
print("holding", flush=True)
sys.stdin.read()
t.close()
"""


def test_connect_reads_the_atr(virtual_card: CardFactory) -> None:
    card = virtual_card()
    with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
        assert transport.atr == STARCARD_ATR
        assert transport.protocol == "T=1"


def test_reader_held_exclusively_by_another_process(virtual_card: CardFactory) -> None:
    card = virtual_card()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, card.reader],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        with pytest.raises(ReaderBusy):
            PcscTransport.connect(card.reader, timeout_s=5.0)
        assert time.monotonic() - started < 5.0
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
        StarCardSession(transport).select()


def test_exclusive_personalization_keeps_terminals_off(virtual_card: CardFactory) -> None:
    card = virtual_card()
    with PcscTransport.connect(card.reader, timeout_s=5.0, exclusive=True) as station:
        StarCardSession(station).select()
        with pytest.raises(ReaderBusy):
            PcscTransport.connect(card.reader, timeout_s=2.0)
        StarCardSession(station).select()  # the station's session is undisturbed


def test_pcscd_restart_mid_session_is_a_typed_error(
    pcsc_stack: PcscStack, virtual_card: CardFactory, tmp_path: Path
) -> None:
    card = virtual_card()
    transport = PcscTransport.connect(card.reader, timeout_s=5.0)
    try:
        session = StarCardSession(transport)
        session.select()
        pcsc_stack.restart()
        with pytest.raises((CardIOError, NoReader)):
            session.select()
        assert transport.broken
    finally:
        transport.close()
    card.stop()  # the card saw vpcd go away; insert it again into the new pcscd
    again = virtual_card(state_path=card.state_path)
    wait_for_card(again.reader, 10.0)
    with PcscTransport.connect(again.reader, timeout_s=5.0) as fresh:
        fresh_session = StarCardSession(fresh)
        fresh_session.select()
        assert fresh_session.serial()


def test_two_readers_used_at_once(virtual_card: CardFactory) -> None:
    cards = [virtual_card(port=35963), virtual_card(port=35964)]
    errors: list[BaseException] = []
    serials: dict[str, set[bytes]] = {}

    def hammer(card: CardProcess) -> None:
        try:
            with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
                session = StarCardSession(transport)
                seen = set()
                for _ in range(200):
                    session.select()
                    seen.add(session.serial())
                serials[card.reader] = seen
        except (CardError, AssertionError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(c,)) for c in cards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert all(len(s) == 1 for s in serials.values())
    assert len(serials) == 2
    assert serials[cards[0].reader] != serials[cards[1].reader]
