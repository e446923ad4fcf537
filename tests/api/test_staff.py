"""Staff accounts, argon2id passwords, lockout, sessions with idle and absolute expiry, and
their audit trail (``docs/staff.md``); the domain with an explicit clock, then over HTTP."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from issuer.api import create_app
from issuer.db import audit_events
from issuer.db_staff import staff_accounts, staff_sessions
from issuer.staff import (
    DEFAULT_POLICY,
    LoginRefused,
    SessionInvalid,
    StaffError,
    StaffExists,
    authenticate,
    create_account,
    disable_account,
    log_in,
    log_out,
    set_password,
)
from issuer.wiring import IssuerContext
from tests.conftest import NOW

PASSWORD = "correct horse battery"
BOOTSTRAP = {"Authorization": "Bearer test-staff-token"}


def _account(ctx: IssuerContext, name: str = "wang.li", role: str = "operator") -> None:
    with ctx.engine.begin() as conn:
        create_account(conn, name, role, PASSWORD, NOW, "bootstrap")


def _who(ctx: IssuerContext, token: str, at: dt.datetime) -> str:
    with ctx.engine.begin() as conn:
        member = authenticate(conn, token, at)
    return f"{member.name}/{member.role}"


def _audit_text(ctx: IssuerContext) -> str:
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
    return json.dumps([[r.actor, r.action, r.detail] for r in rows], ensure_ascii=False)


def _actions(ctx: IssuerContext) -> list[tuple[str, str]]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(audit_events.c.actor, audit_events.c.action)
            .where(audit_events.c.action.like("staff.%"))
            .order_by(audit_events.c.seq)
        ).all()
    return [(r.actor, r.action) for r in rows]


def test_password_is_stored_as_argon2id_and_the_token_only_as_a_hash(
    issuer_ctx: IssuerContext,
) -> None:
    _account(issuer_ctx)
    session = log_in(issuer_ctx.engine, "wang.li", PASSWORD, NOW)
    assert session.token.startswith("scs_") and len(session.token) >= 4 + 43
    assert session.token not in repr(session)
    with issuer_ctx.engine.connect() as conn:
        stored = conn.execute(select(staff_accounts.c.password_hash)).scalar_one()
        sessions = conn.execute(select(staff_sessions)).all()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert len(sessions) == 1 and session.token.encode() not in bytes(sessions[0].token_hash)
    assert _who(issuer_ctx, session.token, NOW) == "wang.li/operator"
    text = _audit_text(issuer_ctx)
    assert PASSWORD not in text and session.token not in text
    assert _actions(issuer_ctx) == [
        ("bootstrap", "staff.account_created"),
        ("wang.li", "staff.login"),
    ]


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("short pw", "at least 12"),
        ("aaaaaaaaaaaaaaaa", "different"),
        ("my name is wang.li", "account name"),
        ("Password1234", "well-known"),
        ("x" * 129, "longer than 128"),
    ],
)
def test_password_policy_says_what_to_change(
    sqlite_issuer: IssuerContext, password: str, says: str
) -> None:
    with sqlite_issuer.engine.begin() as conn, pytest.raises(StaffError, match=says):
        create_account(conn, "wang.li", "operator", password, NOW, "bootstrap")


def test_bad_names_roles_and_duplicates_are_refused(sqlite_issuer: IssuerContext) -> None:
    _account(sqlite_issuer)
    with sqlite_issuer.engine.begin() as conn:
        with pytest.raises(StaffExists, match="exists already"):
            create_account(conn, "wang.li", "operator", PASSWORD, NOW, "bootstrap")
        with pytest.raises(StaffError, match="lower-case"):
            create_account(conn, "Wang Li", "operator", PASSWORD, NOW, "bootstrap")
        with pytest.raises(StaffError, match="not anonymous, bootstrap, system"):
            create_account(conn, "bootstrap", "operator", PASSWORD, NOW, "bootstrap")
        with pytest.raises(StaffError, match="use one of operator, supervisor, auditor"):
            create_account(conn, "zhao", "admin", PASSWORD, NOW, "bootstrap")


def test_wrong_and_unknown_names_get_the_same_answer_and_are_audited(
    issuer_ctx: IssuerContext,
) -> None:
    _account(issuer_ctx)
    with pytest.raises(LoginRefused) as wrong:
        log_in(issuer_ctx.engine, "wang.li", "not the password", NOW)
    with pytest.raises(LoginRefused) as unknown:
        log_in(issuer_ctx.engine, "my secret typed as name", PASSWORD, NOW)
    assert str(wrong.value) == str(unknown.value) == "wrong name or password"
    assert _actions(issuer_ctx)[1:] == [
        ("wang.li", "staff.login_failed"),
        ("anonymous", "staff.login_failed"),
    ]
    assert "my secret typed as name" not in _audit_text(issuer_ctx)


def test_failed_logins_lock_the_account_until_the_lockout_ends(issuer_ctx: IssuerContext) -> None:
    _account(issuer_ctx)
    for attempt in range(DEFAULT_POLICY.max_failed_logins):
        with pytest.raises(LoginRefused) as refused:
            log_in(issuer_ctx.engine, "wang.li", f"guess number {attempt}", NOW)
    assert "now locked for 15 minutes" in str(refused.value)
    with pytest.raises(LoginRefused, match=r"locked after 5 failed log-ins until 09:45 UTC"):
        log_in(issuer_ctx.engine, "wang.li", PASSWORD, NOW + dt.timedelta(minutes=1))
    later = NOW + DEFAULT_POLICY.lockout
    assert log_in(issuer_ctx.engine, "wang.li", PASSWORD, later).name == "wang.li"
    assert ("wang.li", "staff.locked") in _actions(issuer_ctx)


def test_a_new_password_unlocks_and_ends_sessions(issuer_ctx: IssuerContext) -> None:
    _account(issuer_ctx)
    session = log_in(issuer_ctx.engine, "wang.li", PASSWORD, NOW)
    for attempt in range(DEFAULT_POLICY.max_failed_logins):
        with pytest.raises(LoginRefused):
            log_in(issuer_ctx.engine, "wang.li", f"guess number {attempt}", NOW)
    with issuer_ctx.engine.begin() as conn:
        set_password(conn, "wang.li", "a brand new long secret", NOW, "zhao.sup")
    with pytest.raises(SessionInvalid, match="log in again"):
        _who(issuer_ctx, session.token, NOW)
    assert log_in(issuer_ctx.engine, "wang.li", "a brand new long secret", NOW).role == "operator"


def test_sessions_expire_when_idle_and_after_the_absolute_limit(
    issuer_ctx: IssuerContext,
) -> None:
    _account(issuer_ctx)
    idle = log_in(issuer_ctx.engine, "wang.li", PASSWORD, NOW)
    assert _who(issuer_ctx, idle.token, NOW + dt.timedelta(minutes=29)) == "wang.li/operator"
    with pytest.raises(SessionInvalid, match="30 minutes without activity: log in again"):
        _who(issuer_ctx, idle.token, NOW + dt.timedelta(minutes=59))
    busy = log_in(issuer_ctx.engine, "wang.li", PASSWORD, NOW)
    at = NOW
    while at < NOW + dt.timedelta(hours=11, minutes=40):
        at += dt.timedelta(minutes=20)  # active all day: the idle timer keeps being reset
        assert _who(issuer_ctx, busy.token, at) == "wang.li/operator"
    with pytest.raises(SessionInvalid, match="ended after 12 hours: log in again"):
        _who(issuer_ctx, busy.token, NOW + dt.timedelta(hours=12))


def test_logout_and_disable_end_sessions(issuer_ctx: IssuerContext) -> None:
    _account(issuer_ctx)
    first = log_in(issuer_ctx.engine, "wang.li", PASSWORD, NOW)
    second = log_in(issuer_ctx.engine, "wang.li", PASSWORD, NOW)
    with issuer_ctx.engine.begin() as conn:
        assert log_out(conn, first.token, NOW) == "wang.li"
    with pytest.raises(SessionInvalid, match="unknown or ended"):
        _who(issuer_ctx, first.token, NOW)
    assert _who(issuer_ctx, second.token, NOW) == "wang.li/operator"
    with issuer_ctx.engine.begin() as conn:
        disable_account(conn, "wang.li", NOW, "zhao.sup")
    with pytest.raises(SessionInvalid):
        _who(issuer_ctx, second.token, NOW)
    with pytest.raises(LoginRefused, match="disabled: ask a supervisor"):
        log_in(issuer_ctx.engine, "wang.li", PASSWORD, NOW)
    assert _actions(issuer_ctx)[-3:] == [
        ("wang.li", "staff.logout"),
        ("zhao.sup", "staff.disabled"),
        ("wang.li", "staff.login_failed"),
    ]


def _client(ctx: IssuerContext) -> TestClient:
    return TestClient(create_app(ctx.settings, "test-staff-token", context=ctx))


def test_http_login_use_and_logout(sqlite_issuer: IssuerContext) -> None:
    c = _client(sqlite_issuer)
    account = {"name": "zhao.sup", "role": "supervisor", "password": PASSWORD}
    assert c.post("/v1/staff/accounts", json=account, headers=BOOTSTRAP).status_code == 201
    assert c.post("/v1/staff/accounts", json=account, headers=BOOTSTRAP).status_code == 409
    weak = {**account, "name": "li", "password": "short"}
    refused = c.post("/v1/staff/accounts", json=weak, headers=BOOTSTRAP)
    assert refused.status_code == 422 and "at least 12" in refused.json()["detail"]

    wrong = c.post("/v1/staff/sessions", json={"name": "zhao.sup", "password": "nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong name or password"
    login = c.post("/v1/staff/sessions", json={"name": "zhao.sup", "password": PASSWORD})
    assert login.status_code == 201
    body = login.json()
    assert (body["name"], body["role"], body["idle_timeout_s"]) == ("zhao.sup", "supervisor", 1800)
    mine = {"Authorization": f"Bearer {body['token']}"}
    operator = {"name": "wang.li", "role": "operator", "password": PASSWORD}
    assert c.post("/v1/staff/accounts", json=operator, headers=mine).status_code == 201
    assert c.post("/v1/staff/accounts/zhao.sup/disable", headers=mine).status_code == 422
    assert c.delete("/v1/staff/sessions/current", headers=BOOTSTRAP).status_code == 400
    assert c.delete("/v1/staff/sessions/current", headers=mine).status_code == 204
    after = c.post("/v1/staff/accounts", json=operator, headers=mine)
    assert after.status_code == 401 and "log in again" in after.json()["detail"]
    with sqlite_issuer.engine.connect() as conn:
        created = conn.execute(
            select(audit_events.c.actor).where(audit_events.c.action == "staff.account_created")
        ).scalars()
        assert list(created) == ["bootstrap", "zhao.sup"]
