"""Issuer HTTP API through FastAPI's test client (real app, real database)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from issuer.api import create_app
from issuer.db import audit_events, subjects
from issuer.db_rights import card_status_events
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
    assert "★★★" in active.text and "有效" in active.text
    unknown = c.get("/c/" + hashlib.sha256(b"nope").hexdigest()[:22])
    sqlite_issuer.issuance.revoke(issued.serial, "lost", NOW, "clerk")
    revoked = c.get(f"/c/{issued.qr_token}")
    assert revoked.text == unknown.text
    assert revoked.status_code == unknown.status_code == 200


def _number_born(day: str) -> str:
    body = f"110105{day}123"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]


def test_organisations_by_uscc_with_a_staff_override_for_pilot_codes(
    issuer_ctx: IssuerContext,
) -> None:
    c = client(issuer_ctx)

    def register(uscc: str, reason: str | None = None) -> Any:
        body = {"uscc": uscc, "name": "某某公司", "check_override_reason": reason}
        return c.post("/v1/organisations", json=body, headers=STAFF)

    first = register("91110000600037341L")
    assert first.status_code == 201
    assert register("91110000600037341l").json() == first.json()  # same code, same subject
    assert register("N2520113MA6H00003A").status_code == 201  # letter prefix
    wrong = register("91110000600037341M")
    assert wrong.status_code == 422 and "check character" in wrong.json()["detail"]
    pilot = "91350100M0001TGQXM"
    assert register(pilot).status_code == 422
    assert register(pilot, "   ").status_code == 422
    accepted = register(pilot, "早期试点代码，经市场监管局书面核实")
    assert accepted.status_code == 201
    subject = accepted.json()["subject_id"]
    with issuer_ctx.engine.connect() as conn:
        events = conn.execute(
            select(audit_events.c.actor, audit_events.c.detail).where(
                audit_events.c.action == "subject.uscc_check_overridden"
            )
        ).all()
        row = conn.execute(select(subjects).where(subjects.c.id == subject)).one()
    assert [(e.actor, e.detail["reason"]) for e in events] == [
        ("bootstrap", "早期试点代码，经市场监管局书面核实")
    ]
    assert row.kind == "organisation" and row.uscc_override_reason is not None
    assert pilot.encode() not in row.id_number_enc  # encrypted at rest
    # the star card is personal: no consent, not eligible
    refused = c.post(f"/v1/subjects/{subject}/consent", json={"channel": "counter"}, headers=STAFF)
    assert refused.status_code == 422 and "organisations" in refused.json()["detail"]
    eligibility = c.get(f"/v1/subjects/{subject}/eligibility", headers=STAFF).json()
    assert eligibility["eligible"] is False
    assert "organisations" in eligibility["reasons"][0]


def test_consent_is_for_adults_only(sqlite_issuer: IssuerContext) -> None:
    c = client(sqlite_issuer)
    today = dt.date.today()
    try:
        adult_birthday = today.replace(year=today.year - 18)
    except ValueError:  # 29 February
        adult_birthday = dt.date(today.year - 18, 2, 28)
    minor_birthday = adult_birthday + dt.timedelta(days=1)
    minor, adult = (
        c.post(
            "/v1/subjects",
            json={"id_number": _number_born(day.strftime("%Y%m%d")), "name": "小明"},
            headers=STAFF,
        ).json()["subject_id"]
        for day in (minor_birthday, adult_birthday)
    )
    refused = c.post(f"/v1/subjects/{minor}/consent", json={"channel": "app"}, headers=STAFF)
    assert refused.status_code == 422
    assert (
        f"can consent from {(today + dt.timedelta(days=1)).isoformat()}" in refused.json()["detail"]
    )
    given = c.post(f"/v1/subjects/{adult}/consent", json={"channel": "app"}, headers=STAFF)
    assert given.status_code == 204
    missing = c.post("/v1/subjects/Snope/consent", json={"channel": "app"}, headers=STAFF)
    assert missing.status_code == 404


def test_consent_withdrawal_records_time_and_channel_and_asks_for_revocation(
    issuer_ctx: IssuerContext,
) -> None:
    c = client(issuer_ctx)
    subject = graded_subject(issuer_ctx, NOW)
    assert c.get(f"/v1/subjects/{subject}/eligibility", headers=STAFF).json()["eligible"]
    url = f"/v1/subjects/{subject}/consent/withdrawal"
    first = c.post(url, json={"channel": "app"}, headers=STAFF)
    assert first.status_code == 200 and first.json() == {"withdrawn": True}
    assert c.post(url, json={"channel": "app"}, headers=STAFF).json() == {"withdrawn": False}
    eligibility = c.get(f"/v1/subjects/{subject}/eligibility", headers=STAFF).json()
    assert eligibility["eligible"] is False
    assert any("consent" in r for r in eligibility["reasons"])
    view = c.get(f"/v1/subjects/{subject}?purpose=撤回核对", headers=STAFF).json()["consent"]
    assert view["withdrawn_channel"] == "app" and view["withdrawn_at"] is not None
    assert view["channel"] == "counter"
    with issuer_ctx.engine.connect() as conn:
        events = conn.execute(select(card_status_events)).all()
    assert [(e.subject_id, e.kind, e.reason, e.stars) for e in events] == [
        (subject, "revoke", "consent_withdrawn", 0)
    ]
    never = c.post(
        "/v1/subjects", json={"id_number": "440524188001010014", "name": "王五"}, headers=STAFF
    ).json()["subject_id"]
    nothing = c.post(
        f"/v1/subjects/{never}/consent/withdrawal", json={"channel": "app"}, headers=STAFF
    )
    assert nothing.status_code == 422 and "nothing to withdraw" in nothing.json()["detail"]
    # consent given again starts afresh
    c.post(f"/v1/subjects/{subject}/consent", json={"channel": "counter"}, headers=STAFF)
    assert c.get(f"/v1/subjects/{subject}/eligibility", headers=STAFF).json()["eligible"]
