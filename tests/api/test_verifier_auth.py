"""Who may call the verifier: terminals with their own keys, operators, the issuer service."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from issuer.wiring import IssuerContext
from tests.api.test_verifier_api import (
    ISSUER,
    OPERATOR,
    TS,
    make_world,
    tap_body,
    verifier_db,
)
from verifier.settings import VerifierSettings, token_sha256
from verifier.terminal_auth import TerminalAuth, generate_key, public_key_pem

__all__ = ["verifier_db"]  # the fixture, shared


def test_unsigned_unknown_and_wrongly_signed_requests_are_refused(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier_db: str
) -> None:
    world = make_world(sqlite_issuer, tmp_path, verifier_db)
    terminal = world.terminal("t-1")
    assert terminal.post("/v1/challenges", json={}).status_code == 200
    unsigned = world.client.post("/v1/challenges", json={})
    assert unsigned.status_code == 401
    assert "X-StarCard-Signature" in unsigned.json()["detail"]
    stranger = world.signed("t-unknown", generate_key())
    assert stranger.post("/v1/challenges", json={}).status_code == 401
    impostor = world.signed("t-1", generate_key())  # right id, someone else's key
    refused = impostor.post("/v1/challenges", json={})
    assert refused.status_code == 401
    assert "does not verify" in refused.json()["detail"]


def test_a_tampered_body_or_a_stale_timestamp_is_refused(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    world = make_world(sqlite_issuer, tmp_path, "sqlite://")
    terminal = world.terminal("t-1")
    body = tap_body(world, terminal)
    request = terminal.build_request("POST", "/v1/verifications", json=body)
    signed = next(terminal.auth.sync_auth_flow(request))
    signed.stream = None  # type: ignore[assignment]
    tampered = world.client.post(
        "/v1/verifications",
        content=signed.content.replace(b'"handle"', b'"handle" '),
        headers={k: v for k, v in signed.headers.items() if k.lower().startswith("x-starcard")},
    )
    assert tampered.status_code == 401
    slow_clock = TerminalAuth("t-1", world.keys["t-1"], lambda: TS - 61)
    late = world.signed("t-1", world.keys["t-1"])
    late.auth = slow_clock
    refused = late.post("/v1/challenges", json={})
    assert refused.status_code == 401
    assert "clock" in refused.json()["detail"]


def test_revoked_terminal_is_refused(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier_db: str
) -> None:
    world = make_world(sqlite_issuer, tmp_path, verifier_db)
    terminal = world.terminal("t-1")
    body = tap_body(world, terminal)
    revoked = world.client.post("/v1/terminals/t-1/revoke", headers=OPERATOR)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_by"] == "ops-1"
    assert terminal.post("/v1/verifications", json=body).status_code == 401
    assert terminal.get("/v1/receipts").status_code == 401
    assert world.client.post("/v1/terminals/nope/revoke", headers=OPERATOR).status_code == 404


def test_operator_endpoints_refuse_terminal_and_issuer_credentials(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    world = make_world(sqlite_issuer, tmp_path, "sqlite://")
    terminal = world.terminal("t-1")
    new = {
        "id": "t-2",
        "merchant_name": "x",
        "category": "retail",
        "public_key": public_key_pem(generate_key()),
    }
    assert terminal.post("/v1/terminals", json=new).status_code == 401
    assert terminal.get("/v1/terminals").status_code == 401
    assert terminal.post("/v1/terminals/t-1/revoke").status_code == 401
    assert world.client.post("/v1/terminals", json=new, headers=ISSUER).status_code == 401
    assert world.client.get("/v1/terminals", headers=ISSUER).status_code == 401
    listed = world.client.get("/v1/terminals", headers=OPERATOR).json()["terminals"]
    assert [t["id"] for t in listed] == ["t-1"]
    # and terminal endpoints refuse operator and issuer tokens
    for token in (OPERATOR, ISSUER):
        assert world.client.post("/v1/challenges", json={}, headers=token).status_code == 401
        assert world.client.get("/v1/receipts", headers=token).status_code == 401
    assert world.client.get("/v1/cards/00ff/receipts", headers=OPERATOR).status_code == 401
    assert terminal.get("/v1/cards/00ff/receipts").status_code == 401


def test_registration_checks_keys_and_never_reuses_ids(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    world = make_world(sqlite_issuer, tmp_path, "sqlite://")
    world.terminal("t-1")
    again = {
        "id": "t-1",
        "merchant_name": "x",
        "category": "retail",
        "public_key": public_key_pem(generate_key()),
    }
    assert world.client.post("/v1/terminals", json=again, headers=OPERATOR).status_code == 409
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    bad = dict(again, id="t-rsa", public_key=rsa_pem)
    refused = world.client.post("/v1/terminals", json=bad, headers=OPERATOR)
    assert refused.status_code == 422
    assert "Ed25519 or ECDSA P-256" in refused.json()["detail"]


def test_each_terminal_has_its_own_rate_limit(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    world = make_world(
        sqlite_issuer, tmp_path, "sqlite://", terminal_burst=3, terminal_rate_per_s=1.0
    )
    busy = world.terminal("busy")
    calm = world.terminal("calm")
    assert [busy.post("/v1/challenges", json={}).status_code for _ in range(3)] == [200] * 3
    limited = busy.post("/v1/challenges", json={})
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert calm.post("/v1/challenges", json={}).status_code == 200
    world.clock.now += 1
    assert busy.post("/v1/challenges", json={}).status_code == 200


def test_settings_refuse_a_token_shared_by_operator_and_issuer(tmp_path: Path) -> None:
    digest = token_sha256("same")
    with pytest.raises(RuntimeError, match="their own token"):
        VerifierSettings(
            tmp_path, tmp_path, operator_tokens=(("a", digest),), issuer_token_sha256=digest
        )
