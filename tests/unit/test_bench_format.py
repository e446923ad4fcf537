"""The benchmark's results format and plan (nothing heavy runs here), and the production
server options ``starcard-verifier serve`` and the benchmark share."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.common import FIXED_METRICS, METRIC_KEYS, PLAN, check_section, metric
from bench.table import table
from verifier.cli import app, server_options

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_metric_has_the_issue_format_and_the_ratio() -> None:
    m = metric(12.34567, "ms", 4.0, "three bare APDUs", "lower")
    assert tuple(m) == METRIC_KEYS
    assert m == {
        "value": 12.3457,
        "unit": "ms",
        "baseline": 4.0,
        "baseline_what": "three bare APDUs",
        "ratio": 3.0864,
        "better": "lower",
    }
    assert metric(1.0, "x", 0, "none", "higher")["ratio"] is None
    with pytest.raises(ValueError, match="lower"):
        metric(1.0, "x", 1.0, "w", "smaller")


def test_every_fixed_metric_is_planned_once() -> None:
    planned = [name for names in PLAN.values() for name in names]
    assert len(planned) == len(set(planned))
    assert set(FIXED_METRICS) <= set(planned)
    assert "verifier_http_rps" in PLAN["http"]
    assert "batch_1000_cards_s" in PLAN["pcsc"]


def test_run_runs_every_planned_section_in_quick_and_full() -> None:
    """``bench/run.py`` main() calls section(name, ...) for every section of the plan, with
    no QUICK-only branch around any of them."""
    tree = ast.parse((BENCH / "run.py").read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    called = [
        str(call.args[0].value)
        for call in ast.walk(main)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "section"
        and isinstance(call.args[0], ast.Constant)
    ]
    assert sorted(called) == sorted(PLAN)
    branches = [ast.unparse(node.test) for node in ast.walk(main) if isinstance(node, ast.If)]
    assert not [test for test in branches if "quick" in test.lower()]


def test_check_section_refuses_a_missing_or_malformed_metric() -> None:
    good = {name: metric(1.0, "s", 1.0, "w", "lower") for name in PLAN["grading"]}
    check_section("grading", good)
    missing = dict(good)
    missing.pop("regrade_1k_ms")
    with pytest.raises(RuntimeError, match="regrade_1k_ms"):
        check_section("grading", missing)
    with pytest.raises(RuntimeError, match="results format"):
        check_section("grading", {**good, "regrade_1k_ms": {"value": 1}})


def test_server_options_are_production_ones() -> None:
    options = server_options(2)
    assert options["workers"] == 2
    assert options["reload"] is False
    assert options["access_log"] is False
    assert options["http"] in ("httptools", "h11")
    assert options["loop"] in ("uvloop", "asyncio")


def test_serve_with_workers_refuses_without_a_shared_seal_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARCARD_ROOT_KEY", str(tmp_path / "root.pem"))
    monkeypatch.setenv("STARCARD_TRUST_LIST", str(tmp_path / "tl.cbor"))
    monkeypatch.delenv("STARCARD_VERIFIER_SEAL_KEY", raising=False)
    monkeypatch.setenv("STARCARD_ISSUER_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("STARCARD_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["serve", "--workers", "2"])
    assert result.exit_code != 0
    assert "STARCARD_VERIFIER_SEAL_KEY" in result.output
    monkeypatch.delenv("STARCARD_ISSUER_URL")
    result = CliRunner().invoke(app, ["serve", "--workers", "2"])
    assert result.exit_code != 0
    assert "STARCARD_ISSUER_URL" in result.output


def test_each_worker_claims_its_own_cache_slot(tmp_path: Path) -> None:
    from verifier import cli

    held = len(cli._SLOT_LOCKS)
    try:
        first, second = cli._claim_slot(tmp_path), cli._claim_slot(tmp_path)
        assert (first.name, second.name) == ("worker-0", "worker-1")
    finally:
        for fd in cli._SLOT_LOCKS[held:]:
            os.close(fd)
        del cli._SLOT_LOCKS[held:]
    assert cli._claim_slot(tmp_path).name == "worker-0"  # freed slots are taken again
    os.close(cli._SLOT_LOCKS.pop())


def test_readme_table_has_one_row_per_metric_and_the_machine() -> None:
    results = {
        "machine": {
            "processor": "x86_64",
            "cpus": 2,
            "platform": "Linux",
            "python": "3.11",
            "date": "2026-11-28",
            "loadavg_at_start": [1.0, 1.0, 1.0],
        },
        "quick": True,
        "metrics": {
            "tap_pcsc_ms": metric(2.0, "ms", 1.0, "3 bare | APDUs", "lower"),
            "credential_bytes": metric(297, "bytes", 367, "EU DCC median", "lower"),
        },
    }
    lines = table(results).splitlines()
    assert lines[0].startswith("Machine: x86_64, 2 CPUs") and "QUICK" in lines[0]
    rows = [line for line in lines if line.startswith("| `")]
    assert rows == [
        "| `tap_pcsc_ms` | 2 | ms | 1 | 3 bare / APDUs | 2.0 | lower |",
        "| `credential_bytes` | 297 | bytes | 367 | EU DCC median | 0.8093 | lower |",
    ]
