"""Schemathesis against the issuer API: no 5xx, responses and status codes as the OpenAPI
schema declares them, and every staff/department route refuses a caller without credentials.

Generated calls carry the bootstrap staff token (a supervisor: every staff route admits it)
or, for the department routes, a department's own token. Cases are derandomized.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from issuer.api import create_app, require_department
from issuer.departments import add_department
from issuer.wiring import IssuerContext
from tests.api.schemathesis_run import auth_dependants, concrete, fuzz
from tests.conftest import NOW

STAFF_TOKEN = "schemathesis-staff-token"
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/.well-known/starcard/jwks.json"),
    ("GET", "/.well-known/starcard/trust-list"),
    ("GET", "/.well-known/starcard/benefits"),
    ("GET", "/s/{list_id}"),
    ("POST", "/v1/staff/sessions"),  # the login itself
}


def _is_auth(call: Any) -> bool:
    name = getattr(call, "__qualname__", "")
    return call is require_department or name.startswith("require_roles.")


def _session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def test_schemathesis_finds_no_failure(sqlite_issuer: IssuerContext) -> None:
    app = create_app(sqlite_issuer.settings, STAFF_TOKEN, context=sqlite_issuer)
    with sqlite_issuer.engine.begin() as conn:
        department_token = add_department(conn, "tax", NOW, "test")
    staff, department = _session(STAFF_TOKEN), _session(department_token)

    def session_for(method: str, path: str) -> requests.Session:
        return department if path.startswith("/v1/departments/") else staff

    seen: dict[str, set[int]] = {}
    failures = fuzz(app, session_for, max_examples=15, seen=seen)
    assert failures == [], "\n".join(failures)
    refused = {op for op, codes in seen.items() if 401 in codes}
    assert refused == {"POST /v1/staff/sessions"}  # only the login with made-up credentials
    assert len(seen) >= 40 and 200 in seen["GET /v1/audit/events"]


def test_every_route_but_the_public_ones_needs_credentials(sqlite_issuer: IssuerContext) -> None:
    app = create_app(sqlite_issuer.settings, STAFF_TOKEN, context=sqlite_issuer)
    routes = auth_dependants(app, _is_auth)
    assert {route for route, protected in routes.items() if not protected} == PUBLIC
    client = TestClient(app)
    refused = {}
    for (method, path), protected in sorted(routes.items()):
        if not protected:
            continue
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            response = client.request(method, concrete(path), headers=headers)
            refused[(method, path, bool(headers))] = response.status_code
    wrong = {key: status for key, status in refused.items() if status != 401}
    assert len(refused) > 40
    assert wrong == {}


@pytest.mark.parametrize("path", ["/v1/departments/records", "/v1/subjects"])
def test_a_staff_token_does_not_open_department_routes_and_back(
    sqlite_issuer: IssuerContext, path: str
) -> None:
    app = create_app(sqlite_issuer.settings, STAFF_TOKEN, context=sqlite_issuer)
    with sqlite_issuer.engine.begin() as conn:
        department_token = add_department(conn, "tax", NOW, "test")
    wrong = department_token if path == "/v1/subjects" else STAFF_TOKEN
    response = TestClient(app).post(path, json={}, headers={"Authorization": f"Bearer {wrong}"})
    assert response.status_code == 401
