"""Department delivery API: per-department tokens (created by the operator CLI), batches in
atomic and per-row mode, own records only, corrections with history, withdrawals."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from issuer.api import create_app
from issuer.cli import app as cli
from issuer.db import audit_events, records
from issuer.db_platform import departments, record_history
from issuer.platform import register_subject
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import id_number

STAFF = {"Authorization": "Bearer test-staff-token"}
RECENT = (dt.date.today() - dt.timedelta(days=60)).isoformat()


def client(ctx: IssuerContext) -> TestClient:
    return TestClient(create_app(ctx.settings, "test-staff-token", context=ctx))


def add_department(ctx: IssuerContext, name: str) -> dict[str, str]:
    """Runs the operator command and returns the bearer header with the printed token."""
    result = CliRunner().invoke(cli, ["departments", "add", name], obj=ctx)
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert token.startswith("scd_")
    return {"Authorization": f"Bearer {token}"}


def person(ctx: IssuerContext, n: int = 1) -> str:
    with ctx.engine.begin() as conn:
        return register_subject(conn, ctx.vault, id_number(n), "张三", NOW, "test")


def record(n: int, **changes: str) -> dict[str, Any]:
    base = {
        "id_number": id_number(1),
        "category": "tax_arrears",
        "direction": "-",
        "severity": "一般",
        "legal_basis": "《税收征收管理法》第六十八条",
        "authority": "区税务局",
        "document_number": f"税罚〔2026〕{n}号",
        "decision_date": RECENT,
    }
    return {**base, **changes}


def test_token_is_printed_once_and_stored_hashed(issuer_ctx: IssuerContext) -> None:
    header = add_department(issuer_ctx, "tax")
    token = header["Authorization"].removeprefix("Bearer ")
    with issuer_ctx.engine.connect() as conn:
        row = conn.execute(select(departments)).one()
    assert row.name == "tax"
    assert bytes(row.token_hash) == hashlib.sha256(token.encode()).digest()
    assert token.encode() not in b"".join(str(v).encode() for v in row)
    again = CliRunner().invoke(cli, ["departments", "add", "tax"], obj=issuer_ctx)
    assert again.exit_code != 0 and "exists already" in again.output
    listed = CliRunner().invoke(cli, ["departments", "list"], obj=issuer_ctx)
    assert "tax" in listed.output and token not in listed.output
    bad = CliRunner().invoke(cli, ["departments", "add", "Tax Bureau"], obj=issuer_ctx)
    assert bad.exit_code != 0 and "lower-case" in bad.output


def test_only_a_department_token_opens_the_department_endpoints(
    sqlite_issuer: IssuerContext,
) -> None:
    tax = add_department(sqlite_issuer, "tax")
    c = client(sqlite_issuer)
    body = {"records": [record(1)]}
    assert c.post("/v1/departments/records", json=body).status_code == 401
    assert c.post("/v1/departments/records", json=body, headers=STAFF).status_code == 401
    wrong = {"Authorization": tax["Authorization"] + "x"}
    assert c.post("/v1/departments/records", json=body, headers=wrong).status_code == 401
    # and a department token is not a staff token
    subject = {"id_number": id_number(1), "name": "张三"}
    assert c.post("/v1/subjects", json=subject, headers=tax).status_code == 401


def test_rotated_and_disabled_tokens_stop_working(sqlite_issuer: IssuerContext) -> None:
    old = add_department(sqlite_issuer, "tax")
    person(sqlite_issuer)
    c = client(sqlite_issuer)
    body = {"records": [record(1)]}
    rotated = CliRunner().invoke(cli, ["departments", "rotate-token", "tax"], obj=sqlite_issuer)
    new = {"Authorization": "Bearer " + rotated.output.strip().splitlines()[-1]}
    assert c.post("/v1/departments/records", json=body, headers=old).status_code == 401
    assert c.post("/v1/departments/records", json=body, headers=new).status_code == 200
    CliRunner().invoke(cli, ["departments", "disable", "tax"], obj=sqlite_issuer)
    assert c.post("/v1/departments/records", json=body, headers=new).status_code == 401


def test_atomic_batch_is_all_or_nothing_and_per_row_keeps_good_rows(
    issuer_ctx: IssuerContext,
) -> None:
    tax = add_department(issuer_ctx, "tax")
    subject = person(issuer_ctx)
    c = client(issuer_ctx)
    batch = [record(1), record(2, legal_basis=""), record(3, id_number=id_number(7))]
    refused = c.post("/v1/departments/records", json={"records": batch}, headers=tax)
    assert refused.status_code == 422
    data = refused.json()
    assert data["committed"] is False and data["mode"] == "atomic"
    assert [r["status"] for r in data["rows"]] == ["rolled_back", "refused", "refused"]
    assert "legal basis" in data["rows"][1]["reason"]
    assert data["rows"][2]["problem"] == "unknown_subject"
    with issuer_ctx.engine.connect() as conn:
        assert conn.execute(select(records)).first() is None

    per_row = {"records": batch, "mode": "per_row"}
    partial = c.post("/v1/departments/records", json=per_row, headers=tax)
    assert partial.status_code == 200
    data = partial.json()
    assert [r["status"] for r in data["rows"]] == ["accepted", "refused", "refused"]
    assert data["affected_subject_ids"] == [subject]
    assert isinstance(data["rows"][0]["record_id"], int)
    again = c.post("/v1/departments/records", json=per_row, headers=tax).json()
    assert again["rows"][0]["status"] == "duplicate"
    assert again["rows"][0]["record_id"] == data["rows"][0]["record_id"]
    assert again["affected_subject_ids"] == []


def test_department_touches_only_its_own_records(issuer_ctx: IssuerContext) -> None:
    tax = add_department(issuer_ctx, "tax")
    health = add_department(issuer_ctx, "health")
    person(issuer_ctx)
    c = client(issuer_ctx)
    own = c.post("/v1/departments/records", json={"records": [record(1)]}, headers=tax)
    assert own.status_code == 200
    foreign = {"records": [record(2, source="health")]}
    r = c.post("/v1/departments/records", json=foreign, headers=tax)
    assert r.status_code == 422
    assert r.json()["rows"][0]["problem"] == "forbidden"
    document = quote("税罚〔2026〕1号", safe="")
    w = c.post(
        f"/v1/departments/records/{document}/withdrawal", json={"reason": "x"}, headers=health
    )
    assert w.status_code == 404  # health has no record of that number; tax's is not visible
    correction = {**record(1, severity="严重"), "source": "tax", "reason": "x"}
    del correction["document_number"]
    r = c.post(f"/v1/departments/records/{document}/correction", json=correction, headers=health)
    assert r.status_code == 403
    with issuer_ctx.engine.connect() as conn:
        stored = conn.execute(select(records)).one()
    assert stored.severity == "一般" and stored.withdrawn_at is None


def test_correction_keeps_the_record_id_and_its_history(issuer_ctx: IssuerContext) -> None:
    tax = add_department(issuer_ctx, "tax")
    subject = person(issuer_ctx)
    c = client(issuer_ctx)
    number = "税罚〔2026〕1/2号"  # a slash in the document number
    delivered = c.post(
        "/v1/departments/records",
        json={"records": [record(1, document_number=number)]},
        headers=tax,
    ).json()
    record_id = delivered["rows"][0]["record_id"]
    before = c.post(f"/v1/subjects/{subject}/grade", headers=STAFF).json()["score"]

    correction = {**record(1, severity="严重"), "reason": "复议变更 区税复〔2026〕2号"}
    del correction["document_number"]
    url = f"/v1/departments/records/{quote(number, safe='')}/correction"
    r = c.post(url, json=correction, headers=tax)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "accepted",
        "record_id": record_id,
        "reason": "",
        "affected_subject_ids": [subject],
    }
    assert c.post(url, json=correction, headers=tax).json()["status"] == "duplicate"
    after = c.post(f"/v1/subjects/{subject}/grade", headers=STAFF).json()["score"]
    assert after == before - 15  # tax_arrears: 一般 10 points, 严重 25
    no_reason = {k: v for k, v in correction.items() if k != "reason"}
    assert c.post(url, json=no_reason, headers=tax).status_code == 422
    missing = c.post("/v1/departments/records/%E7%A8%8E/correction", json=correction, headers=tax)
    assert missing.status_code == 404 and "deliver it first" in missing.json()["detail"]
    with issuer_ctx.engine.connect() as conn:
        history = conn.execute(select(record_history)).one()
        actors = (
            conn.execute(
                select(audit_events.c.actor).where(audit_events.c.action == "record.corrected")
            )
            .scalars()
            .all()
        )
    assert history.record_id == record_id and history.action == "correction"
    assert history.old_values["severity"] == "一般"
    assert history.reason == "复议变更 区税复〔2026〕2号"
    assert actors == ["department:tax"]


def test_withdrawal_stops_the_record_counting(issuer_ctx: IssuerContext) -> None:
    tax = add_department(issuer_ctx, "tax")
    subject = person(issuer_ctx)
    c = client(issuer_ctx)
    c.post("/v1/departments/records", json={"records": [record(1)]}, headers=tax)
    assert c.post(f"/v1/subjects/{subject}/grade", headers=STAFF).json()["score"] == 90
    url = f"/v1/departments/records/{quote('税罚〔2026〕1号', safe='')}/withdrawal"
    r = c.post(url, json={"reason": "行政复议决定撤销"}, headers=tax)
    assert r.status_code == 200
    assert r.json()["affected_subject_ids"] == [subject]
    assert c.post(url, json={"reason": "行政复议决定撤销"}, headers=tax).json()["status"] == (
        "duplicate"
    )
    assert c.post(url, json={}, headers=tax).status_code == 422
    assert c.post(f"/v1/subjects/{subject}/grade", headers=STAFF).json()["score"] == 100
    with issuer_ctx.engine.connect() as conn:
        stored = conn.execute(select(records)).one()
        history = conn.execute(select(record_history)).one()
    assert stored.withdrawn_at is not None  # kept, not deleted
    assert history.action == "withdrawal" and history.old_values["withdrawn_at"] is None
