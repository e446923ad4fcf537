"""Objections over the staff API and the daily jobs command, end to end on both databases."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from issuer.api import create_app
from issuer.audit_verify import audit_keys, verify_chain
from issuer.cli import app as cli
from issuer.db import records
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import graded_subject

STAFF = {"Authorization": "Bearer t"}


def test_file_and_decide_an_objection_over_http(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    with issuer_ctx.engine.connect() as conn:
        record_id = conn.execute(
            select(records.c.id).where(
                records.c.subject_id == subject, records.c.category == "honour"
            )
        ).scalar_one()
    c = TestClient(create_app(issuer_ctx.settings, "t", context=issuer_ctx))
    refused = c.post(f"/v1/subjects/{subject}/objections", json={"grounds": " "}, headers=STAFF)
    assert refused.status_code == 422
    filed = c.post(
        f"/v1/subjects/{subject}/objections",
        json={"record_id": record_id, "grounds": "the award was given to someone else"},
        headers=STAFF,
    )
    assert filed.status_code == 201, filed.text
    objection_id = filed.json()["objection_id"]
    again = c.post(
        f"/v1/subjects/{subject}/objections",
        json={"record_id": record_id, "grounds": "twice"},
        headers=STAFF,
    )
    assert again.status_code == 409
    decided = c.post(
        f"/v1/objections/{objection_id}/decision",
        json={"outcome": "rejected", "note": "the award document names this person"},
        headers=STAFF,
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["stars"] == 3
    assert (
        c.post(
            "/v1/objections/999999/decision",
            json={"outcome": "rejected", "note": "x"},
            headers=STAFF,
        ).status_code
        == 404
    )


def test_daily_jobs_run(sqlite_issuer: IssuerContext) -> None:
    graded_subject(sqlite_issuer, NOW)
    result = CliRunner().invoke(cli, ["daily"], obj=sqlite_issuer)
    assert result.exit_code == 0, result.output
    assert "re-graded:" in result.output
    assert "audit checkpoint signed at seq" in result.output
    with sqlite_issuer.engine.connect() as conn:
        report = verify_chain(conn, audit_keys(sqlite_issuer.hsm))
    assert report.checkpoints >= 1


def test_grade_response_carries_a_verifiable_receipt(issuer_ctx: IssuerContext) -> None:
    import base64

    from issuer.grading import load_grade
    from issuer.receipts import ReceiptMismatch, verify_receipt

    subject = graded_subject(issuer_ctx, NOW)
    c = TestClient(create_app(issuer_ctx.settings, "t", context=issuer_ctx))
    body = c.post(f"/v1/subjects/{subject}/grade", headers=STAFF).json()
    assert body["policy_hash"] == issuer_ctx.policy.sha256
    receipt = base64.b64decode(body["receipt"])
    public_key = issuer_ctx.keys.credential.public_key()
    with issuer_ctx.engine.connect() as conn:
        stored = load_grade(conn, issuer_ctx.policy, subject)
    claims = verify_receipt(receipt, stored.lines, public_key, policy=issuer_ctx.policy)
    assert claims.stars == body["stars"] == 3
    import pytest

    with pytest.raises(ReceiptMismatch):
        verify_receipt(receipt, stored.lines[:-1], public_key)
