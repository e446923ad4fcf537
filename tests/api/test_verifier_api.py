"""Verifier HTTP API with a real issuer behind it and an in-process virtual card."""

from __future__ import annotations

import base64
from pathlib import Path

from fastapi.testclient import TestClient

from card_profiles.starcard import StarCardSession
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_session, graded_subject, write_trust_files
from verifier.api.app import b64encode, create_app
from verifier.service import VerifierService
from verifier.settings import VerifierSettings
from verifier.tap import read_tap

TS = int(NOW.timestamp())


def setup(
    ctx: IssuerContext, tmp_path: Path
) -> tuple[TestClient, StarCardSession, VerifierService]:
    subject = graded_subject(ctx, NOW)
    session = factory_session(ctx, tmp_path / "card.json")
    ctx.issuance.personalize(session, subject, NOW, "clerk")
    root, trust_list = write_trust_files(ctx, tmp_path)
    app = create_app(VerifierSettings(root, trust_list), clock=lambda: float(TS))
    service = app.state.service
    client = TestClient(app)
    with ctx.engine.connect() as conn:
        token = current_token(conn, 1)
    assert token is not None
    pushed = client.post(
        "/v1/status-lists", content=token, headers={"content-type": "application/statuslist+cwt"}
    )
    assert pushed.status_code == 204
    return client, session, service


def tap_body(client: TestClient, session: StarCardSession, terminal: str = "t-9") -> dict[str, str]:
    begun = client.post("/v1/challenges", json={"terminal_id": terminal}).json()
    challenge = base64.urlsafe_b64decode(begun["challenge"] + "==")
    data = read_tap(session, challenge)
    return {
        "terminal_id": terminal,
        "handle": begun["handle"],
        "credential": b64encode(data.credential),
        "signature": b64encode(data.card_signature),
    }


def test_tap_over_http_is_valid_and_receipted(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    client, session, service = setup(sqlite_issuer, tmp_path)
    result = client.post("/v1/verifications", json=tap_body(client, session))
    assert result.status_code == 200
    assert result.json() == {
        "state": "valid",
        "star_level": 3,
        "reason_class": None,
        "assurance": "high",
    }
    assert [r.state for r in service.receipts] == ["valid"]
    assert service.receipts[0].terminal_id == "t-9"


def test_replayed_challenge_is_refused(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    client, session, _ = setup(sqlite_issuer, tmp_path)
    body = tap_body(client, session)
    assert client.post("/v1/verifications", json=body).json()["state"] == "valid"
    again = client.post("/v1/verifications", json=body).json()
    assert again["state"] == "invalid"
    assert again["reason_class"] == "replayed"


def test_challenge_bound_to_its_terminal(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    client, session, _ = setup(sqlite_issuer, tmp_path)
    body = tap_body(client, session, terminal="t-1")
    body["terminal_id"] = "t-2"
    assert client.post("/v1/verifications", json=body).json()["state"] == "invalid"


def test_forged_handle_and_bad_input(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    client, session, _ = setup(sqlite_issuer, tmp_path)
    body = tap_body(client, session)
    body["handle"] = body["handle"][:-4] + (
        "AAAA" if not body["handle"].endswith("AAAA") else "BBBB"
    )
    assert client.post("/v1/verifications", json=body).json()["state"] == "invalid"
    body["credential"] = "!!!not base64!!!"
    assert client.post("/v1/verifications", json=body).status_code == 422


def test_older_status_list_push_is_refused(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    client, _, _ = setup(sqlite_issuer, tmp_path)
    with sqlite_issuer.engine.connect() as conn:
        old = current_token(conn, 1)
    assert old is not None
    sqlite_issuer.issuance.publish_now(NOW)  # a newer list (iat moves forward)
    with sqlite_issuer.engine.connect() as conn:
        new = current_token(conn, 1)
    assert new is not None
    headers = {"content-type": "application/statuslist+cwt"}
    assert client.post("/v1/status-lists", content=new, headers=headers).status_code == 204
    refused = client.post("/v1/status-lists", content=old, headers=headers)
    assert refused.status_code == 409
