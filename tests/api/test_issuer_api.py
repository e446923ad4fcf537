"""Issuer HTTP API through FastAPI's test client (real app, real database)."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from issuer.api import create_app
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_session, graded_subject

STAFF = {"Authorization": "Bearer test-staff-token"}


def client(ctx: IssuerContext) -> TestClient:
    return TestClient(create_app(ctx.settings, "test-staff-token", context=ctx))


def test_staff_endpoints_need_the_token(sqlite_issuer: IssuerContext) -> None:
    c = client(sqlite_issuer)
    body = {"id_number": "11010519491231002X", "name": "张三"}
    assert c.post("/v1/subjects", json=body).status_code == 401
    assert (
        c.post("/v1/subjects", json=body, headers={"Authorization": "Bearer x"}).status_code == 401
    )
    created = c.post("/v1/subjects", json=body, headers=STAFF)
    assert created.status_code == 201
    assert created.json()["subject_id"].startswith("S")


def test_bad_id_number_gets_a_clear_error(sqlite_issuer: IssuerContext) -> None:
    r = client(sqlite_issuer).post(
        "/v1/subjects", json={"id_number": "110105194912310021", "name": "x"}, headers=STAFF
    )
    assert r.status_code == 422
    assert "check character" in r.json()["detail"]


def test_record_without_legal_basis_is_refused(sqlite_issuer: IssuerContext) -> None:
    c = client(sqlite_issuer)
    subject = c.post(
        "/v1/subjects", json={"id_number": "11010519491231002X", "name": "张三"}, headers=STAFF
    ).json()["subject_id"]
    record = {
        "category": "tax_arrears",
        "direction": "-",
        "severity": "一般",
        "legal_basis": " ",
        "authority": "税务局",
        "document_number": "税罚〔2026〕1号",
        "decision_date": "2026-05-01",
        "source": "tax",
    }
    r = c.post(f"/v1/subjects/{subject}/records", json=record, headers=STAFF)
    assert r.status_code == 422
    assert "legal basis" in r.json()["detail"]
    record["legal_basis"] = "《税收征收管理法》第六十八条"
    first = c.post(f"/v1/subjects/{subject}/records", json=record, headers=STAFF)
    again = c.post(f"/v1/subjects/{subject}/records", json=record, headers=STAFF)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()  # idempotent re-delivery
    graded = c.post(f"/v1/subjects/{subject}/grade", headers=STAFF).json()
    assert graded["score"] == 90 and graded["class"] == "C"


def test_jwks_and_status_list_with_etag(sqlite_issuer: IssuerContext) -> None:
    c = client(sqlite_issuer)
    keys = c.get("/.well-known/starcard/jwks.json").json()["keys"]
    assert {k["kty"] for k in keys} == {"EC"}
    assert len(keys) == 2
    assert c.get("/s/1").status_code == 404
    sqlite_issuer.issuance.publish_now(NOW)
    first = c.get("/s/1")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/statuslist+cwt"
    etag = first.headers["etag"]
    assert c.get("/s/1", headers={"If-None-Match": etag}).status_code == 304
    assert c.get("/s/1", headers={"If-None-Match": '"other"'}).status_code == 200


def test_citizen_page_does_not_distinguish_unknown_and_revoked(
    sqlite_issuer: IssuerContext, tmp_path: object
) -> None:
    from pathlib import Path

    subject = graded_subject(sqlite_issuer, NOW)
    session = factory_session(sqlite_issuer, Path(str(tmp_path)) / "card.json")
    issued = sqlite_issuer.issuance.personalize(session, subject, NOW, "clerk")
    c = client(sqlite_issuer)
    active = c.get(f"/c/{issued.qr_token}")
    assert "★★★" in active.text and "Valid" in active.text
    unknown = c.get("/c/" + hashlib.sha256(b"nope").hexdigest()[:22])
    sqlite_issuer.issuance.revoke(issued.serial, "lost", NOW, "clerk")
    revoked = c.get(f"/c/{issued.qr_token}")
    assert revoked.text == unknown.text
    assert revoked.status_code == unknown.status_code == 200
