"""The results format of ``make bench`` and the plan of metrics each section produces.

``bench/results.json`` is ``{"machine": {...}, "quick": bool, "metrics": {NAME: {"value",
"unit", "baseline", "baseline_what", "ratio", "better"}}}``; every baseline is measured in the
same run on the same machine (or, where said, a published figure).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

#: The metric names the benchmarks issue fixes; a run that misses one fails.
FIXED_METRICS = (
    "tap_verify_inprocess_us",
    "verifier_http_rps",
    "tap_pcsc_ms",
    "tap_apdu_count",
    "personalize_ms",
    "personalize_apdu_count",
    "batch_1000_cards_s",
    "grade_full_1m_s_sqlite",
    "grade_full_1m_s_postgres",
    "regrade_1k_ms",
    "status_list_1m_bytes",
    "status_list_sync_ms",
    "credential_bytes",
)

#: Section of ``bench/run.py`` -> the metrics it returns (checked after each section runs).
PLAN: dict[str, tuple[str, ...]] = {
    "inprocess": ("tap_verify_inprocess_us",),
    "pcsc": (
        "tap_pcsc_ms",
        "tap_apdu_count",
        "personalize_ms",
        "personalize_apdu_count",
        "batch_1000_cards_s",
        "credential_bytes",
    ),
    "profiles": ("tap_apdu_count_piv", "tap_apdu_count_iso7816_fs"),
    "http": ("status_list_1m_bytes", "status_list_sync_ms", "verifier_http_rps"),
    "grading": ("grade_full_1m_s_sqlite", "grade_full_1m_s_postgres", "regrade_1k_ms"),
}

METRIC_KEYS = ("value", "unit", "baseline", "baseline_what", "ratio", "better")


def metric(value: float, unit: str, baseline: float, what: str, better: str) -> dict[str, Any]:
    """One metric in the issue's format; ``ratio`` is value / baseline."""
    if better not in ("lower", "higher"):
        raise ValueError("better is 'lower' or 'higher'")
    return {
        "value": round(value, 4),
        "unit": unit,
        "baseline": round(baseline, 4),
        "baseline_what": what,
        "ratio": round(value / baseline, 4) if baseline else None,
        "better": better,
    }


def check_section(name: str, produced: Mapping[str, Any]) -> None:
    """Raises RuntimeError unless section ``name`` produced exactly its planned metrics,
    each in the format of :func:`metric`."""
    expected = set(PLAN[name])
    if set(produced) != expected:
        raise RuntimeError(
            f"bench section {name} produced {sorted(produced)}, planned {sorted(expected)}"
        )
    for key, value in produced.items():
        if not isinstance(value, dict) or tuple(value) != METRIC_KEYS:
            raise RuntimeError(f"metric {key} is not in the results format: {value!r}")


def median_of(n: int, fn: Callable[[], object]) -> float:
    """Median wall time of ``n`` calls of ``fn`` (seconds)."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def machine() -> dict[str, Any]:
    """The machine line, with the load average (the machine may be shared)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
