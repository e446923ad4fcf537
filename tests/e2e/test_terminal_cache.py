"""The merchant terminal offline from the list cache that ``starcard-verifier sync`` fills,
tapping a card through real pcscd: valid, revoked after the next sync, and a tampered cache
refused with "cannot check now" (exit 3) and what to run to repair it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from issuer.api import create_app as issuer_app
from issuer.wiring import IssuerContext
from tests.api.test_verifier_sync import served
from tests.e2e.test_terminal_cli import personalized
from tests.helpers import write_trust_files
from tests.pcsc_harness import CardProcess
from verifier.cli import app as verifier_cli
from verifier.list_store import status_file
from verifier.terminal import app as terminal_cli

pytestmark = pytest.mark.pcsc


def test_offline_tap_from_the_synced_cache(
    sqlite_issuer: IssuerContext, virtual_card: Callable[..., CardProcess], tmp_path: Path
) -> None:
    card, serial, now = personalized(sqlite_issuer, virtual_card, tmp_path)
    root, _ = write_trust_files(sqlite_issuer, tmp_path)
    cache = tmp_path / "cache"
    runner = CliRunner()
    issuer = issuer_app(sqlite_issuer.settings, "t", context=sqlite_issuer)

    def sync() -> None:
        with served(issuer) as base_url:
            args = ["sync", "--issuer", base_url, "--cache", str(cache), "--root", str(root)]
            synced = runner.invoke(verifier_cli, [*args, "--once"])
        assert synced.exit_code == 0, synced.output

    def tap() -> tuple[int, str]:
        args = ["tap", "--reader", card.reader, "--offline", "--root", str(root)]
        result = runner.invoke(terminal_cli, [*args, "--cache", str(cache)])
        return result.exit_code, result.output

    sync()
    code, out = tap()
    assert code == 0 and "✓ valid ★★★" in out, out
    sqlite_issuer.issuance.revoke(serial, "lost", now, "c")
    sync()
    code, out = tap()
    assert code == 0 and "✗ not valid" in out and "★" not in out

    path = cache / status_file(1)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the signature
    path.write_bytes(bytes(data))
    code, out = tap()
    assert code == 3, out
    assert "cannot check now" in out
    assert "starcard-verifier sync" in " ".join(out.split())  # says how to repair it


def test_cache_and_list_files_are_alternatives(tmp_path: Path) -> None:
    args = ["tap", "--reader", "none", "--offline", "--root", str(tmp_path / "root.pem")]
    both = CliRunner().invoke(
        terminal_cli, [*args, "--cache", str(tmp_path), "--trust-list", str(tmp_path / "t")]
    )
    assert both.exit_code == 2
    assert "either --cache or --trust-list/--status-list" in " ".join(both.output.split())
    neither = CliRunner().invoke(terminal_cli, args)
    assert neither.exit_code == 2
    assert "--cache, or --trust-list and --status-list" in " ".join(neither.output.split())
