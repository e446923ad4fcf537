"""BoundedWorker: serialized, time-bounded calls; abandoned calls never run late."""

from __future__ import annotations

import threading
import time

import pytest

from hsm_sim import HsmTimeout, HsmUnavailable
from hsm_sim.worker import BoundedWorker


def test_returns_results_and_reraises_errors() -> None:
    worker = BoundedWorker("t", threading.Lock(), 5)
    try:
        assert worker.call("add", lambda: 2 + 3) == 5
        with pytest.raises(ZeroDivisionError):
            worker.call("divide", lambda: 1 // 0)
    finally:
        worker.close()


def test_calls_of_two_workers_sharing_a_lock_never_overlap() -> None:
    lock = threading.Lock()
    workers = [BoundedWorker(f"w{i}", lock, 10) for i in range(3)]
    inside = 0
    overlaps: list[int] = []

    def critical() -> None:
        nonlocal inside
        inside += 1
        if inside > 1:
            overlaps.append(inside)
        time.sleep(0.002)
        inside -= 1

    def hammer(worker: BoundedWorker) -> None:
        for _ in range(20):
            worker.call("critical", critical)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for worker in workers:
        worker.close()
    assert overlaps == []


def test_a_call_that_timed_out_while_waiting_is_never_run() -> None:
    lock = threading.Lock()
    hung, waiting = BoundedWorker("hung", lock, 0.3), BoundedWorker("waiting", lock, 0.3)
    release = threading.Event()
    ran: list[str] = []
    try:
        with pytest.raises(HsmTimeout, match="hung: stuck did not return"):
            hung.call("stuck", lambda: release.wait(10))
        with pytest.raises(HsmTimeout):
            waiting.call("late", lambda: ran.append("late"))
        release.set()
        assert waiting.call("next", lambda: "served") == "served"
        assert ran == []  # the abandoned call did not run once the lock came free
    finally:
        release.set()
        hung.close()
        waiting.close()


def test_closed_worker_refuses_calls() -> None:
    worker = BoundedWorker("t", threading.Lock(), 1)
    worker.close()
    with pytest.raises(HsmUnavailable, match="closed"):
        worker.call("any", lambda: None)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BoundedWorker("t", threading.Lock(), 0)
