"""Runs every category and the controls, writes ``bench/faults.json``, exits 1 if any bad
outcome was counted or any control was not caught."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import machine

from . import app, card, db, inputs, status, taps
from .core import BAD, Category, Tally, control

OUT = Path(__file__).resolve().parents[1] / "faults.json"


def categories(work: Path, quick: bool) -> list[Category]:
    databases = ("sqlite", "postgres")
    steps: list[Callable[[], Category | list[Category]]] = [
        lambda: card.run(work, quick),
        lambda: app.run_hsm(work, databases),
        lambda: app.run_app(work, quick, databases),
        lambda: db.run(work, quick),
        lambda: status.run(quick),
        lambda: taps.run(work, quick),
        lambda: inputs.run(work, quick),
    ]
    done: list[Category] = []
    for step in steps:
        started = time.monotonic()
        result = step()
        for category in result if isinstance(result, list) else [result]:
            print(
                f"{category.name:11} {time.monotonic() - started:6.1f} s  {category.tally.counts}"
            )
            done.append(category)
    return done


def controls(work: Path) -> dict[str, dict[str, Any]]:
    return {
        "status_cache_without_rollback_watermark": control(status.control_no_rollback_watermark),
        "verifier_skipping_card_signature": control(taps.control_card_signature_skipped(work)),
        "verifier_without_replay_ledger": control(taps.control_no_replay_ledger(work)),
    }


def report(work: Path, quick: bool) -> dict[str, Any]:
    totals = Tally()
    found = categories(work, quick)
    for category in found:
        totals.add(category.tally)
    return {
        "machine": machine(),
        "quick": quick,
        "totals": totals.counts,
        "categories": {c.name: c.tally.as_json() for c in found},
        "controls": controls(work),
    }


def failed(result: dict[str, Any]) -> list[str]:
    bad = [f"{name} = {result['totals'][name]}" for name in BAD if result["totals"][name]]
    missed = [f"control {n} not caught" for n, c in result["controls"].items() if not c["caught"]]
    return bad + missed


def main() -> None:
    quick = os.environ.get("QUICK") == "1"
    with tempfile.TemporaryDirectory(prefix="starcard-faults-") as tmp:
        result = report(Path(tmp), quick)
    OUT.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({"totals": result["totals"], "controls": result["controls"]}, indent=2))
    problems = failed(result)
    for category in result["categories"].values():
        for finding in category["findings"]:
            print(finding, file=sys.stderr)
    if problems:
        print("FAULTS: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
