"""The merchant terminal CLI tapping a card through real pcscd: offline from files, and online
against a verifier served by uvicorn, signing with its own key; offline receipts upload later.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from card_profiles.pcsc import PcscTransport
from card_profiles.starcard import StarCardSession
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.api.test_verifier_api import CATALOGUE, OPERATOR, operator_settings
from tests.helpers import factory_card_state, graded_subject, write_trust_files
from tests.pcsc_harness import CardProcess
from verifier.api.app import create_app
from verifier.core.benefits import BENEFITS_TYP, issue_benefits
from verifier.terminal import app

pytestmark = pytest.mark.pcsc


def personalized(
    ctx: IssuerContext, virtual_card: Callable[..., CardProcess], tmp_path: Path
) -> tuple[CardProcess, str, dt.datetime]:
    # The terminal reads the wall clock, so these tests issue at the real time too.
    now = dt.datetime.now(dt.UTC)
    card = virtual_card(state_path=factory_card_state(ctx, tmp_path / "card.json"))
    subject = graded_subject(ctx, now)
    with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
        issued = ctx.issuance.personalize(StarCardSession(transport), subject, now, "c")
    return card, issued.serial, now


def status_token(ctx: IssuerContext) -> bytes:
    with ctx.engine.connect() as conn:
        token = current_token(conn, 1)
    assert token is not None
    return token


@contextmanager
def served_verifier(ctx: IssuerContext, tmp_path: Path) -> Iterator[str]:
    """A verifier on a free local port (wall clock), with the issuer's status list and a
    benefits catalogue pushed by the operator."""
    root, trust_list = write_trust_files(ctx, tmp_path)
    settings = operator_settings(root, trust_list, database_url=f"sqlite:///{tmp_path}/v.db")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    try:
        now = int(time.time())
        benefits = issue_benefits(
            CATALOGUE,
            version=1,
            iat=now,
            exp=now + 3600,
            signer=ctx.keys.credential,
            kid=ctx.keys.credential_kid,
        )
        for path, data, media in (
            ("/v1/status-lists", status_token(ctx), "application/statuslist+cwt"),
            ("/v1/benefits", benefits, BENEFITS_TYP),
        ):
            pushed = httpx.post(
                base + path, content=data, headers={**OPERATOR, "content-type": media}
            )
            assert pushed.status_code == 204, pushed.text
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def register(base: str, terminal_id: str, category: str, key_path: Path) -> None:
    made = CliRunner().invoke(app, ["keygen", "--out", str(key_path)])
    assert made.exit_code == 0, made.output
    assert "BEGIN PUBLIC KEY" in made.output and "PRIVATE" not in made.output
    body = {
        "id": terminal_id,
        "merchant_name": "城东图书馆",
        "category": category,
        "public_key": made.output,
    }
    assert httpx.post(f"{base}/v1/terminals", json=body, headers=OPERATOR).status_code == 201


def test_offline_terminal_shows_valid_then_not_valid(
    sqlite_issuer: IssuerContext, virtual_card: Callable[..., CardProcess], tmp_path: Path
) -> None:
    card, serial, now = personalized(sqlite_issuer, virtual_card, tmp_path)
    root, trust_list = write_trust_files(sqlite_issuer, tmp_path)
    status = tmp_path / "status.cwt"
    receipts = tmp_path / "receipts.jsonl"

    def run() -> str:
        status.write_bytes(status_token(sqlite_issuer))
        args = ["tap", "--reader", card.reader, "--offline", "--root", str(root)]
        args += ["--trust-list", str(trust_list), "--terminal-id", "lib-1"]
        args += ["--receipts", str(receipts)]
        result = CliRunner().invoke(app, [*args, "--status-list", str(status)])
        assert result.exit_code == 0, result.output
        return result.output

    assert "✓ valid ★★★" in run()
    sqlite_issuer.issuance.revoke(serial, "lost", now, "c")
    out = run()
    assert "✗ not valid" in out
    assert "★" not in out
    kept = [json.loads(line) for line in receipts.read_text().splitlines()]
    assert [(r["state"], r["reason_class"]) for r in kept] == [
        ("valid", None),
        ("invalid", "revoked"),
    ]


def test_online_terminal_signs_its_requests_and_sees_its_benefit(
    sqlite_issuer: IssuerContext, virtual_card: Callable[..., CardProcess], tmp_path: Path
) -> None:
    card, _, _ = personalized(sqlite_issuer, virtual_card, tmp_path)
    key = tmp_path / "terminal.pem"
    with served_verifier(sqlite_issuer, tmp_path) as base:
        register(base, "lib-1", "library", key)
        args = ["tap", "--reader", card.reader, "--verifier", base, "--terminal-id", "lib-1"]
        without_key = CliRunner().invoke(app, args)
        assert without_key.exit_code != 0
        result = CliRunner().invoke(app, [*args, "--key", str(key)])
        assert result.exit_code == 0, result.output
        assert "✓ valid" in result.output
        assert "图书馆免押金借阅 — yes" in result.output
        assert "★" not in result.output  # a merchant never learns the star level
        stranger = tmp_path / "stranger.pem"
        CliRunner().invoke(app, ["keygen", "--out", str(stranger)])
        refused = CliRunner().invoke(app, [*args, "--key", str(stranger)])
        assert refused.exit_code == 3
        assert "? cannot check now" in refused.output and "401" in refused.output


def test_offline_receipts_upload_once(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    receipts = tmp_path / "receipts.jsonl"
    line = {
        "id": "6f1c1f7e-0b7a-4a43-9a55-0d6d7c1c2f10",
        "terminal_id": "lib-1",
        "at": int(time.time()) - 60,
        "serial": "00aa",
        "state": "valid",
        "reason_class": None,
    }
    receipts.write_text(json.dumps(line) + "\n")
    key = tmp_path / "terminal.pem"
    sqlite_issuer.issuance.publish_now(dt.datetime.now(dt.UTC))  # no card yet: a first list
    with served_verifier(sqlite_issuer, tmp_path) as base:
        register(base, "lib-1", "library", key)
        args = ["upload", "--receipts", str(receipts), "--key", str(key), "--terminal-id", "lib-1"]
        first = CliRunner().invoke(app, [*args, "--verifier", base])
        assert first.exit_code == 0, first.output
        assert "stored 1, already held 0" in first.output
        assert not receipts.exists()  # moved aside once uploaded
        sent = next(tmp_path.glob("receipts.jsonl.sent-*"))
        sent.rename(receipts)
        again = CliRunner().invoke(app, [*args, "--verifier", base])
        assert "stored 0, already held 1" in again.output
