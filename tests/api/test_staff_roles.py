"""Least privilege: each role against representative endpoints (``docs/staff.md``), and what
happens without a token, with an expired session and with a disabled account."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from issuer.api import create_app
from issuer.staff import create_account, disable_account
from issuer.wiring import IssuerContext
from tests.conftest import NOW

PASSWORD = "correct horse battery"
ID_NUMBER = "11010519491231002X"
BOOTSTRAP = {"Authorization": "Bearer test-staff-token"}
ROLE_NAMES = {"operator": "op.wang", "supervisor": "sup.zhao", "auditor": "aud.li"}


@dataclass(frozen=True)
class Office:
    app: FastAPI
    client: TestClient
    headers: dict[str, dict[str, str]]
    subject_id: str


@pytest.fixture
def office(sqlite_issuer: IssuerContext) -> Iterator[Office]:
    with sqlite_issuer.engine.begin() as conn:
        for role, name in ROLE_NAMES.items():
            create_account(conn, name, role, PASSWORD, NOW, "bootstrap")
    app = create_app(sqlite_issuer.settings, "test-staff-token", context=sqlite_issuer)
    client = TestClient(app)
    headers = {}
    for role, name in ROLE_NAMES.items():
        login = client.post("/v1/staff/sessions", json={"name": name, "password": PASSWORD})
        assert login.status_code == 201, login.text
        headers[role] = {"Authorization": f"Bearer {login.json()['token']}"}
    person = {"id_number": ID_NUMBER, "name": "张三"}
    subject_id = client.post("/v1/subjects", json=person, headers=headers["operator"]).json()[
        "subject_id"
    ]
    yield Office(app, client, headers, subject_id)


MATRIX: list[tuple[str, str, set[str]]] = [
    ("POST", "/v1/subjects", {"operator", "supervisor"}),
    ("GET", "/v1/subjects/{subject}?purpose=窗口核验", {"operator", "supervisor"}),
    ("POST", "/v1/subjects/{subject}/consent", {"operator", "supervisor"}),
    ("GET", "/v1/subjects/{subject}/eligibility", {"operator", "supervisor"}),
    ("POST", "/v1/subjects/{subject}/records", {"supervisor"}),
    ("POST", "/v1/subjects/{subject}/grade", {"supervisor"}),
    ("POST", "/v1/cards/NOSUCHCARD/revoke", {"supervisor"}),
    ("POST", "/v1/staff/accounts", {"supervisor"}),
    ("POST", "/v1/staff/accounts/nobody/disable", {"supervisor"}),
    ("GET", "/v1/audit/events", {"auditor", "supervisor"}),
    ("POST", "/v1/audit/verify", {"auditor", "supervisor"}),
]
BODIES = {
    "/v1/subjects": {"id_number": "440524188001010014", "name": "李四"},
    "/v1/subjects/{subject}/consent": {"channel": "counter"},
    "/v1/subjects/{subject}/records": {
        "category": "volunteering",
        "direction": "+",
        "severity": "一般",
        "legal_basis": "《志愿服务条例》",
        "authority": "区文明办",
        "document_number": "志〔2026〕1号",
        "decision_date": "2026-05-01",
        "source": "civilization",
    },
    "/v1/cards/NOSUCHCARD/revoke": {"reason": "lost"},
    "/v1/staff/accounts": {"name": "new.one", "role": "operator", "password": PASSWORD},
}


@pytest.mark.parametrize("role", sorted(ROLE_NAMES))
def test_role_matrix(office: Office, role: str) -> None:
    """Every row of MATRIX for ``role`` (one set-up per role: argon2 log-ins are slow)."""
    for method, path, admitted in MATRIX:
        url = path.replace("{subject}", office.subject_id)
        body = BODIES.get(path)
        r = office.client.request(method, url, json=body, headers=office.headers[role])
        if role in admitted:
            assert r.status_code not in (401, 403), (role, url, r.status_code, r.text)
        else:
            assert r.status_code == 403, (role, url, r.status_code, r.text)
            assert f"is {role}; this needs the role" in r.json()["detail"]
        anonymous = office.client.request(method, url, json=body)
        assert anonymous.status_code == 401, (url, anonymous.status_code)
        assert "log in" in anonymous.json()["detail"]


def test_only_a_supervisor_may_accept_a_code_that_fails_its_check(office: Office) -> None:
    body = {
        "uscc": "91350100M0001TGQXM",
        "name": "某某公司",
        "check_override_reason": "早期试点代码",
    }
    refused = office.client.post("/v1/organisations", json=body, headers=office.headers["operator"])
    assert refused.status_code == 403 and "supervisor decision" in refused.json()["detail"]
    plain = {"uscc": "91110000600037341L", "name": "某某公司"}
    assert (
        office.client.post("/v1/organisations", json=plain, headers=office.headers["operator"])
    ).status_code == 201
    accepted = office.client.post(
        "/v1/organisations", json=body, headers=office.headers["supervisor"]
    )
    assert accepted.status_code == 201, accepted.text


def test_an_expired_session_gets_401_saying_to_log_in_again(office: Office) -> None:
    url = f"/v1/subjects/{office.subject_id}/eligibility"
    assert office.client.get(url, headers=office.headers["operator"]).status_code == 200
    wall_clock = office.app.state.clock
    office.app.state.clock = lambda: wall_clock() + dt.timedelta(minutes=31)
    expired = office.client.get(url, headers=office.headers["operator"])
    assert expired.status_code == 401
    assert "without activity: log in again" in expired.json()["detail"]
    assert expired.headers["WWW-Authenticate"] == "Bearer"


def test_a_disabled_account_gets_401_at_once(office: Office, sqlite_issuer: IssuerContext) -> None:
    url = f"/v1/subjects/{office.subject_id}/eligibility"
    disabled = office.client.post(
        f"/v1/staff/accounts/{ROLE_NAMES['operator']}/disable", headers=office.headers["supervisor"]
    )
    assert disabled.status_code == 204
    refused = office.client.get(url, headers=office.headers["operator"])
    assert refused.status_code == 401 and "log in again" in refused.json()["detail"]
    with sqlite_issuer.engine.begin() as conn:  # the account itself, disabled after log-in
        create_account(conn, "late.one", "operator", PASSWORD, NOW, "bootstrap")
    login = office.client.post(
        "/v1/staff/sessions", json={"name": "late.one", "password": PASSWORD}
    )
    token = {"Authorization": f"Bearer {login.json()['token']}"}
    with sqlite_issuer.engine.begin() as conn:
        disable_account(conn, "late.one", NOW, "sup.zhao")
    assert office.client.get(url, headers=token).status_code == 401


def test_the_auditor_sees_pseudonymous_ids_only(office: Office) -> None:
    r = office.client.get(
        "/v1/audit/events",
        params={"action": "subject.registered"},
        headers=office.headers["auditor"],
    )
    assert r.status_code == 200
    events = r.json()["events"]
    assert [e["subject_id"] for e in events] == [office.subject_id]
    assert events[0]["actor"] == "op.wang"
    assert ID_NUMBER not in r.text and "张三" not in r.text


def test_audit_events_page_by_seq(office: Office) -> None:
    auditor = office.headers["auditor"]
    first = office.client.get("/v1/audit/events", params={"limit": 2}, headers=auditor).json()
    assert len(first["events"]) == 2 and first["next_after_seq"] == first["events"][1]["seq"]
    rest = office.client.get(
        "/v1/audit/events", params={"after_seq": first["next_after_seq"]}, headers=auditor
    ).json()
    assert rest["events"][0]["seq"] == first["next_after_seq"] + 1
    verified = office.client.post("/v1/audit/verify", headers=auditor)
    assert verified.status_code == 200 and verified.json()["ok"] is True
