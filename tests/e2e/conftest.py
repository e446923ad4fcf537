"""Fixtures for end-to-end tests through a real pcscd (see tests/pcsc_harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pcsc_harness import CardProcess, PcscStack, require_pcsc

CardFactory = Callable[..., CardProcess]


@pytest.fixture(scope="session")
def pcsc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscStack]:
    """One private pcscd for the whole session (skips or, under CI=true, fails without one)."""
    require_pcsc()
    stack = PcscStack(tmp_path_factory.mktemp("pcscd"))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def virtual_card(pcsc_stack: PcscStack, tmp_path: Path) -> Iterator[CardFactory]:
    """Factory: ``virtual_card(state_path=None, port=35963)`` starts a card and returns it.

    Without ``state_path`` the card is new (state in tmp_path). Every card still running at
    the end of the test is removed, and its reader is empty again before the next test.
    """
    started: list[CardProcess] = []

    def make(state_path: Path | None = None, port: int = 35963) -> CardProcess:
        path = state_path or tmp_path / f"card-{len(started)}.json"
        log = tmp_path / f"card-{len(started)}.log"
        card = CardProcess(path, port, log_path=log)
        started.append(card)
        return card.start()

    yield make
    for card in reversed(started):
        card.stop()
