"""Prints ``bench/results.json`` as the Markdown table of the README's "Measured" section:
``.venv/bin/python -m bench.table [results.json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    load = m.get("loadavg_at_start", m.get("loadavg_1_5_15"))
    lines = [
        f"Machine: {m['processor']}, {m['cpus']} CPUs, {m['platform']}, Python {m['python']}; "
        f"load average {load} at start (shared machine); {m['date']}"
        + (" — QUICK run" if results.get("quick") else ""),
        "",
        "| metric | value | unit | baseline | baseline is | ratio | better |",
        "|---|---:|---|---:|---|---:|---|",
    ]
    for name, x in results["metrics"].items():
        what = str(x["baseline_what"]).replace("|", "/")
        lines.append(
            f"| `{name}` | {x['value']:g} | {x['unit']} | {x['baseline']:g} | {what} | "
            f"{x['ratio']} | {x['better']} |"
        )
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("results.json")
    print(table(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
