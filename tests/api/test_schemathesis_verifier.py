"""Schemathesis against the verifier API: no 5xx, responses and status codes as declared,
and every terminal, operator and issuer-service route refuses a caller without credentials.

Generated terminal calls are signed by a registered terminal's own key (a ``requests`` auth
that signs the exact prepared request, as ``TerminalAuth`` does for ``httpx``); operator
routes get the operator token, the card-receipts route the issuer service token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
import schemathesis
from fastapi.testclient import TestClient

from issuer.wiring import IssuerContext
from tests.api.schemathesis_run import auth_dependants, concrete, fuzz
from tests.api.test_verifier_api import ISSUER, OPERATOR, Clock, make_world
from verifier.api.auth import authenticated_terminal, issuer_service, operator_name
from verifier.core.benefits import BENEFITS_TYP
from verifier.core.trust_list import TRUST_LIST_TYP
from verifier.terminal_auth import TerminalPrivateKey, generate_key, sign_request

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}  # probes: a load balancer calls them
TERMINAL_PATHS = {"/v1/challenges", "/v1/verifications", "/v1/receipts"}


@schemathesis.serializer(TRUST_LIST_TYP, "application/statuslist+cwt", BENEFITS_TYP)
def _signed_artefact(_: Any, value: Any) -> dict[str, bytes]:
    """Generated bodies of the signed-artefact uploads go as raw bytes."""
    return {"data": value if isinstance(value, bytes) else str(value).encode()}


class SignedRequests(requests.auth.AuthBase):
    """Signs each prepared request (method, path?query, body) for one terminal."""

    def __init__(self, terminal_id: str, key: TerminalPrivateKey, clock: Clock) -> None:
        self.terminal_id, self.key, self.clock = terminal_id, key, clock

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        data = body.encode() if isinstance(body, str) else body
        assert isinstance(data, bytes)
        headers = sign_request(
            self.key,
            self.terminal_id,
            str(request.method),
            request.path_url,
            data,
            int(self.clock()),
        )
        request.headers.update(headers)
        return request


def _bearer(headers: dict[str, str]) -> requests.Session:
    session = requests.Session()
    session.headers.update(headers)
    return session


def _is_auth(call: Any) -> bool:
    return call in (authenticated_terminal, operator_name, issuer_service)


def test_schemathesis_finds_no_failure(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    world = make_world(
        sqlite_issuer, tmp_path, "sqlite://", terminal_rate_per_s=1000.0, terminal_burst=1000
    )
    world.push_benefits()
    key = generate_key()
    world.terminal("fuzz-1", "library", key)
    terminal = requests.Session()
    terminal.auth = SignedRequests("fuzz-1", key, world.clock)
    operator, issuer = _bearer(OPERATOR), _bearer(ISSUER)

    def session_for(method: str, path: str) -> requests.Session:
        if path in TERMINAL_PATHS:
            return terminal
        return issuer if path.startswith("/v1/cards/") else operator

    seen: dict[str, set[int]] = {}
    failures = fuzz(world.client.app, session_for, max_examples=20, seen=seen)  # type: ignore[arg-type]
    assert failures == [], "\n".join(failures)
    # the credentials were accepted: signed terminal calls, operator and issuer tokens
    assert seen["POST /v1/challenges"] == {200}
    assert 200 in seen["POST /v1/verifications"]
    assert 200 in seen["GET /v1/receipts"]
    assert seen["GET /v1/terminals"] == seen["GET /v1/cards/{serial}/receipts"] == {200}


def test_every_route_but_healthz_needs_credentials(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    world = make_world(sqlite_issuer, tmp_path, "sqlite://")
    app = world.client.app
    routes = auth_dependants(app, _is_auth)  # type: ignore[arg-type]
    assert {route for route, protected in routes.items() if not protected} == PUBLIC
    client = TestClient(app)
    refused = {}
    wrong = {"Authorization": "Bearer not-a-token", "X-StarCard-Terminal": "nobody"}
    for (method, path), protected in sorted(routes.items()):
        if not protected:
            continue
        for headers in ({}, wrong, ISSUER if path in TERMINAL_PATHS else {}):
            response = client.request(method, concrete(path), headers=headers)
            refused[(method, path, tuple(headers))] = response.status_code
    assert len(refused) >= 20
    assert {key: status for key, status in refused.items() if status != 401} == {}
