"""The merchant terminal CLI (offline mode) tapping a card through real pcscd."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from card_profiles.pcsc import PcscTransport
from card_profiles.starcard import StarCardSession
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.helpers import factory_card_state, graded_subject, write_trust_files
from tests.pcsc_harness import CardProcess
from verifier.terminal import app

pytestmark = pytest.mark.pcsc


def test_offline_terminal_shows_valid_then_not_valid(
    sqlite_issuer: IssuerContext, virtual_card: Callable[..., CardProcess], tmp_path: Path
) -> None:
    # The terminal reads the wall clock, so this test issues at the real time too.
    now = dt.datetime.now(dt.UTC)
    card = virtual_card(state_path=factory_card_state(sqlite_issuer, tmp_path / "card.json"))
    subject = graded_subject(sqlite_issuer, now)
    with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
        issued = sqlite_issuer.issuance.personalize(StarCardSession(transport), subject, now, "c")
    root, trust_list = write_trust_files(sqlite_issuer, tmp_path)
    status = tmp_path / "status.cwt"

    def run() -> str:
        with sqlite_issuer.engine.connect() as conn:
            token = current_token(conn, 1)
        assert token is not None
        status.write_bytes(token)
        args = ["--reader", card.reader, "--offline", "--root", str(root)]
        args += ["--trust-list", str(trust_list)]
        result = CliRunner().invoke(app, [*args, "--status-list", str(status)])
        assert result.exit_code == 0, result.output
        return result.output

    assert "✓ valid ★★★" in run()
    sqlite_issuer.issuance.revoke(issued.serial, "lost", now, "c")
    out = run()
    assert "✗ not valid" in out
    assert "★" not in out
