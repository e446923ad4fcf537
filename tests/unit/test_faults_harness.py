"""The fault harness (bench/faults) counts and classifies: a few fast scenarios through its
API come out clean, and a control (a status cache without its rollback watermark) is caught."""

from __future__ import annotations

import time

from bench.faults import status
from bench.faults.__main__ import failed
from bench.faults.core import Category, Probe, control
from verifier.core.status_list import StatusListCache


def test_status_attacks_run_clean_through_the_harness() -> None:
    category = status.run(quick=True)
    counts = category.tally.counts
    assert counts["scenarios"] == len(status.scenarios(StatusListCache)) >= 10
    assert counts["faults_injected"] >= counts["scenarios"]
    assert category.tally.bad == 0, category.tally.findings


def test_the_rollback_control_is_caught() -> None:
    result = control(status.control_no_rollback_watermark)
    assert result["caught"] is True
    assert result["false_accepts"] == 1


def test_outcomes_are_classified() -> None:
    category = Category("t", timeout_s=0.5)

    def accepts(probe: Probe) -> None:
        probe.fault()
        probe.verdict("valid", "a forged card")

    def asserts(probe: Probe) -> None:
        raise AssertionError("database not at a before/after state")

    def hangs(probe: Probe) -> None:
        time.sleep(3)

    for name, fn in (("accepts", accepts), ("asserts", asserts), ("hangs", hangs)):
        category.run(name, fn)
    counts = category.tally.counts
    assert (counts["scenarios"], counts["faults_injected"]) == (3, 1)
    assert (counts["false_accepts"], counts["inconsistent_states"], counts["hangs"]) == (1, 1, 1)
    result = {"totals": counts, "controls": {"c": {"caught": False}}}
    assert failed(result) == [
        "false_accepts = 1",
        "inconsistent_states = 1",
        "hangs = 1",
        "control c not caught",
    ]
