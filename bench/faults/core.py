"""Counters, outcome classification and the time-bounded scenario runner of the fault harness.

A scenario is a function ``fn(probe)``. It injects faults (``probe.fault()`` counts each one),
shows the verdicts a verifier gave (``probe.verdict(state)``: ``valid`` where it must not be
is a false accept) and checks invariants (``probe.bad(kind, what)``). An ``AssertionError``
escaping a scenario (the reused test helpers assert the before/after states) is an
inconsistent state; any other exception is a harness error; a scenario that does not end
within its bound is a hang (it runs in a daemon thread, so the run goes on).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BAD = (
    "false_accepts",
    "inconsistent_states",
    "double_active_cards",
    "lost_commits",
    "hangs",
    "errors",
)
COUNTERS = ("scenarios", "faults_injected", *BAD)


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    findings: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for name in COUNTERS:
            self.counts[name] += other.counts[name]
        self.findings.extend(other.findings)

    @property
    def bad(self) -> int:
        return sum(self.counts[name] for name in BAD)

    def as_json(self) -> dict[str, Any]:
        return {**self.counts, "findings": self.findings[:50]}


class Probe:
    """What one scenario reports into its category's tally."""

    def __init__(self, tally: Tally, name: str) -> None:
        self.tally = tally
        self.name = name

    def fault(self, n: int = 1) -> None:
        self.tally.counts["faults_injected"] += n

    def bad(self, kind: str, what: str) -> None:
        assert kind in BAD, kind
        self.tally.counts[kind] += 1
        self.tally.findings.append(f"{self.name}: {kind}: {what}")

    def verdict(self, state: str, what: str, *, may_be_valid: bool = False) -> None:
        """A verifier's answer; ``valid`` where it must not be is a false accept."""
        if state == "valid" and not may_be_valid:
            self.bad("false_accepts", f"{what} was accepted as valid")

    def expect(self, ok: bool, kind: str, what: str) -> None:
        if not ok:
            self.bad(kind, what)


Scenario = Callable[[Probe], None]


class Category:
    """The scenarios of one category, run one after the other with a time bound each."""

    def __init__(self, name: str, timeout_s: float = 60.0) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.tally = Tally()

    def run(self, name: str, fn: Scenario, timeout_s: float | None = None) -> None:
        probe = Probe(self.tally, f"{self.name}/{name}")
        self.tally.counts["scenarios"] += 1
        failure: list[BaseException] = []

        def body() -> None:
            try:
                fn(probe)
            except BaseException as exc:  # classified below
                failure.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=body, name=probe.name, daemon=True)
        thread.start()
        thread.join(timeout_s or self.timeout_s)
        if thread.is_alive():
            probe.bad("hangs", f"still running after {time.monotonic() - started:.0f} s")
            return
        for exc in failure:
            kind = "inconsistent_states" if isinstance(exc, AssertionError) else "errors"
            text = "".join(traceback.format_exception_only(exc)).strip()
            probe.bad(kind, text[-500:])


def control(fn: Callable[[Category], None]) -> dict[str, Any]:
    """Runs a weakened-component scenario; it is caught if the harness counted a bad outcome."""
    category = Category("control")
    fn(category)
    seen = ("false_accepts", "inconsistent_states", "double_active_cards", "lost_commits")
    caught = any(category.tally.counts[name] > 0 for name in seen)
    return {"expected": "caught", "caught": caught, **category.tally.counts}
