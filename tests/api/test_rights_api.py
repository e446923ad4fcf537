"""The rights desks over the staff HTTP API (``issuer.api_rights``), on SQLite and PostgreSQL.

The app reads the wall clock, so record dates here are either far enough in the past to be
settled or relative to today's Beijing date.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import select

from issuer.api import create_app
from issuer.db import audit_events, metadata, records, subjects
from issuer.db_platform import record_history
from issuer.query_log import reads_of
from issuer.staff import create_account
from issuer.wiring import IssuerContext
from issuer.workdays import local_date
from tests.api.test_events import person_with
from tests.conftest import NOW
from tests.helpers import id_number

STAFF = {"Authorization": "Bearer t"}
TODAY = local_date(dt.datetime.now(dt.UTC))
SHOWN_ID_NUMBERS = tuple(id_number(i) for i in range(3))


def client(ctx: IssuerContext) -> TestClient:
    return TestClient(create_app(ctx.settings, "t", context=ctx))


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body after checking the status, and that no ID number is shown unmasked."""
    assert response.status_code == status, response.text
    assert not any(number in response.text for number in SHOWN_ID_NUMBERS)
    return response.json()


def purposes(ctx: IssuerContext, subject: str) -> set[str]:
    with ctx.engine.connect() as conn:
        return {entry.purpose for entry in reads_of(conn, subject)}


def test_an_objection_corrected_over_http_keeps_the_old_values(issuer_ctx: IssuerContext) -> None:
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "严重", dt.date(2026, 6, 1)))
    c = client(issuer_ctx)  # 118 - 25 = 93: class C
    filed = ok(
        c.post(
            f"/v1/subjects/{subject}/objections",
            json={"record_id": tax, "grounds": "the arrears were 一般, not 严重"},
            headers=STAFF,
        ),
        201,
    )
    assert filed["status"] == "open" and filed["record_id"] == tax
    objection = filed["objection_id"]
    decision = f"/v1/objections/{objection}/decision"
    without = {"outcome": "corrected", "note": "the amount was small"}
    assert "correction" in ok(c.post(decision, json=without, headers=STAFF), 422)["detail"]
    stray = {"outcome": "rejected", "note": "x", "correction": {"severity": "一般"}}
    ok(c.post(decision, json=stray, headers=STAFF), 422)
    unknown = {**without, "correction": {"category": "no_such_item"}}
    assert "not valid" in ok(c.post(decision, json=unknown, headers=STAFF), 422)["detail"]
    corrected = ok(
        c.post(decision, json={**without, "correction": {"severity": "一般"}}, headers=STAFF)
    )
    assert corrected == {
        "objection_id": objection,
        "outcome": "corrected",
        "score": 108,
        "class": "A",
        "stars": 1,
        "card_event": "reissue",
    }
    ok(c.post(decision, json={"outcome": "rejected", "note": "again"}, headers=STAFF), 409)
    view = ok(c.get(f"/v1/objections/{objection}", headers=STAFF))
    assert (view["status"], view["outcome"]) == ("closed", "corrected")
    with issuer_ctx.engine.connect() as conn:
        row = conn.execute(select(records).where(records.c.id == tax)).one()
        history = conn.execute(
            select(record_history).where(record_history.c.record_id == tax)
        ).one()
    assert (row.severity, row.objection_open) == ("一般", 0)
    assert history.action == "correction" and history.old_values["severity"] == "严重"
    assert {"objection filed", "objection decision", "objection"} <= purposes(issuer_ctx, subject)


def test_repair_applied_at_the_counter_and_granted(issuer_ctx: IssuerContext) -> None:
    decided = TODAY - dt.timedelta(days=100)  # 一般: repair from 92 days, effect 365 days
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", decided))
    c = client(issuer_ctx)
    applied = f"/v1/records/{tax}/repair-requests"
    refused = ok(c.post(applied, json={"obligations_performed": False}, headers=STAFF), 422)
    assert len(refused["unmet"]) == 3  # obligations, evidence, commitment: each named
    application = {
        "obligations_performed": True,
        "obligations_evidence": "完税证明 税收完税〔2026〕77号",
        "commitment": "本人承诺依法诚信纳税",
    }
    request = ok(c.post(applied, json=application, headers=STAFF), 201)
    assert (request["status"], request["record_id"], request["grade"]) == ("pending", tax, None)
    ok(c.post(applied, json=application, headers=STAFF), 409)
    decision = f"/v1/repair-requests/{request['request_id']}/decision"
    ok(c.post(decision, json={"grant": False, "reason": " "}, headers=STAFF), 422)
    granted = ok(c.post(decision, json={"grant": True}, headers=STAFF))
    assert granted["status"] == "granted"
    assert (granted["grade"]["score"], granted["grade"]["class"]) == (118, "A")
    ok(c.post(decision, json={"grant": True}, headers=STAFF), 409)
    outlook = ok(c.get(f"/v1/records/{tax}/repair-outlook", headers=STAFF))
    assert outlook["blockers"] == ["the record was repaired already"]
    with issuer_ctx.engine.connect() as conn:
        row = conn.execute(select(records).where(records.c.id == tax)).one()
    assert row.repaired_at is not None and row.archived_at is not None  # archived, not deleted
    assert {"repair request", "repair decision", "repair outlook"} <= purposes(issuer_ctx, subject)


def test_black_list_entry_needs_notice_and_leaves_when_its_basis_clears(
    issuer_ctx: IssuerContext,
) -> None:
    decided = TODAY - dt.timedelta(days=60)
    subject, (record,) = person_with(issuer_ctx, ("court_judgment_default", "-", "一般", decided))
    c = client(issuer_ctx)
    bare = ok(
        c.post(
            "/v1/list-entries", json={"subject_id": subject, "list_kind": "black"}, headers=STAFF
        ),
        422,
    )
    assert len(bare["missing"]) >= 6 and any("prior written notice" in m for m in bare["missing"])
    entry_in = {
        "subject_id": subject,
        "list_kind": "black",
        "legal_basis": "《最高人民法院关于公布失信被执行人名单信息的若干规定》第一条",
        "document_number": "(2026)黔0113执123号",
        "notice_document": "白云信用告〔2026〕5号",
        "notice_served_at": (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).isoformat(),
        "notice_reasons": "有履行能力而拒不履行生效法律文书确定的义务",
        "notice_rights": "可在五个工作日内提出异议；可依法申请行政复议或者提起行政诉讼",
        "exit_conditions": "履行义务或基础信息失效（修复、撤销、期满）后移出",
        "record_id": record,
        "exit_when_record_cleared": True,
    }
    naive = {**entry_in, "notice_served_at": "2026-10-01T10:00:00"}
    ok(c.post("/v1/list-entries", json=naive, headers=STAFF), 422)  # a time needs its zone
    entry = ok(c.post("/v1/list-entries", json=entry_in, headers=STAFF), 201)
    assert entry["measures"] == ["high_consumption"]  # the mandatory one, applied at once
    ok(c.post("/v1/list-entries", json=entry_in, headers=STAFF), 409)
    measures = f"/v1/list-entries/{entry['entry_id']}/measures"
    wrong_unit = {"measure_key": "public_funds", "unit": "区人民法院"}
    assert "区财政局" in ok(c.post(measures, json=wrong_unit, headers=STAFF), 422)["detail"]
    ok(
        c.post(measures, json={"measure_key": "public_funds", "unit": "区财政局"}, headers=STAFF),
        201,
    )
    shown = ok(c.get(f"/v1/subjects/{subject}/list-entries", headers=STAFF))
    assert [m["measure_key"] for m in shown["measures_in_force"]] == [
        "high_consumption",
        "public_funds",
    ]
    removal = f"/v1/list-entries/{entry['entry_id']}/removal"
    held = ok(c.post(removal, json={"note": "asked by the subject"}, headers=STAFF), 409)
    assert "still has effect" in held["detail"]
    assert ok(c.get("/v1/list-entries/due-for-removal", headers=STAFF)) == []
    filed = c.post(
        f"/v1/subjects/{subject}/objections",
        json={"record_id": record, "grounds": "the judgment was revoked on appeal"},
        headers=STAFF,
    )
    upheld = {"outcome": "upheld", "note": "revoked by (2026)黔01执复9号"}
    ok(
        c.post(
            f"/v1/objections/{ok(filed, 201)['objection_id']}/decision", json=upheld, headers=STAFF
        )
    )
    due = ok(c.get("/v1/list-entries/due-for-removal", headers=STAFF))
    assert [d["entry_id"] for d in due] == [entry["entry_id"]] and due[0]["met"]
    removed = ok(c.post(removal, json={"note": "basis withdrawn"}, headers=STAFF))
    assert removed["reasons"] == ["the basis record was withdrawn by its source"]
    (after,) = ok(c.get(f"/v1/subjects/{subject}/list-entries", headers=STAFF))["entries"]
    assert after["removed_at"] is not None and after["measures"] == []
    assert sorted(after["lifted_measures"]) == ["high_consumption", "public_funds"]
    assert "list entries" in purposes(issuer_ctx, subject)


def test_the_measures_catalogue_shows_mandatory_and_recommended(
    issuer_ctx: IssuerContext,
) -> None:
    c = client(issuer_ctx)
    everything = ok(c.get("/v1/measures", headers=STAFF))
    assert everything["version"] == "measures-2026.1"
    assert {m["mandatory"] for m in everything["measures"]} == {True, False}
    red = ok(c.get("/v1/measures", params={"list": "red"}, headers=STAFF))["measures"]
    assert red and {m["list_kind"] for m in red} == {"red"}
    assert all(m["basis"] and m["implementing_unit"] and m["targets"] for m in red)
    ok(c.get("/v1/measures", params={"list": "grey"}, headers=STAFF), 422)
    assert c.get("/v1/measures").status_code == 401


def test_human_review_is_requested_and_decided_by_a_person(issuer_ctx: IssuerContext) -> None:
    subject, _ = person_with(issuer_ctx)
    c = client(issuer_ctx)
    asked = ok(
        c.post(
            f"/v1/subjects/{subject}/reviews", json={"reason": "why only 3 stars"}, headers=STAFF
        ),
        201,
    )
    assert (asked["grade_score"], asked["grade_class"], asked["grade_stars"]) == (118, "A", 3)
    assert asked["status"] == "open"
    again = c.post(f"/v1/subjects/{subject}/reviews", json={"reason": "again"}, headers=STAFF)
    ok(again, 409)
    decision = f"/v1/reviews/{asked['review_id']}/decision"
    amended = {"outcome": "amended", "note": "a record was wrong"}
    assert "objection" in ok(c.post(decision, json=amended, headers=STAFF), 422)["detail"]
    explained = "every record counts as shown in the explanation; 118 points is 3 stars"
    decided = ok(c.post(decision, json={"outcome": "confirmed", "note": explained}, headers=STAFF))
    assert (decided["status"], decided["outcome"]) == ("decided", "confirmed")
    with issuer_ctx.engine.connect() as conn:
        actor = conn.execute(
            select(audit_events.c.actor).where(audit_events.c.action == "review.decided")
        ).scalar_one()
    assert decided["reviewer"] == actor and actor  # the signed-in person, not the system
    assert ok(c.get(f"/v1/reviews/{asked['review_id']}", headers=STAFF))["decision_note"]
    ok(c.get("/v1/reviews/999999", headers=STAFF), 404)
    assert "human review" in purposes(issuer_ctx, subject)


def test_early_warnings_list_subjects_near_a_lower_level(issuer_ctx: IssuerContext) -> None:
    subject, _ = person_with(issuer_ctx)  # 118: 3 stars from 115, so 4 points drop a star
    c = client(issuer_ctx)
    (warned,) = ok(c.get("/v1/warnings", params={"margin": 5, "horizon_days": 0}, headers=STAFF))
    assert (warned["subject_id"], warned["points_to_drop"]) == (subject, 4)
    assert warned["reasons"][0].startswith("near_band")
    assert ok(c.get("/v1/warnings", params={"margin": 3, "horizon_days": 0}, headers=STAFF)) == []
    ok(c.get("/v1/warnings", params={"margin": -1}, headers=STAFF), 422)
    assert "early warning" in purposes(issuer_ctx, subject)


def test_an_organisation_is_stored_without_a_birth_date(issuer_ctx: IssuerContext) -> None:
    c = client(issuer_ctx)
    body = {"uscc": "91110000600037341L", "name": "某某科技有限公司"}
    organisation = ok(c.post("/v1/organisations", json=body, headers=STAFF), 201)["subject_id"]
    with issuer_ctx.engine.connect() as conn:
        born = conn.execute(
            select(subjects.c.birth_date).where(subjects.c.id == organisation)
        ).scalar_one()
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert born is None
    assert [d for d in diffs if "birth_date" in repr(d)] == []  # migration 0007 == metadata
    view = ok(c.get(f"/v1/subjects/{organisation}", params={"purpose": "audit"}, headers=STAFF))
    assert (view["kind"], view["adult"]) == ("organisation", None)
    eligibility = ok(c.get(f"/v1/subjects/{organisation}/eligibility", headers=STAFF))
    assert eligibility["eligible"] is False
    consent = c.post(
        f"/v1/subjects/{organisation}/consent", json={"channel": "counter"}, headers=STAFF
    )
    assert "organisations" in ok(consent, 422)["detail"]


def test_operators_file_and_supervisors_decide(sqlite_issuer: IssuerContext) -> None:
    subject, (tax,) = person_with(sqlite_issuer, ("tax_arrears", "-", "一般", dt.date(2026, 6, 1)))
    c = client(sqlite_issuer)
    headers = {}
    for role in ("operator", "supervisor", "auditor"):
        with sqlite_issuer.engine.begin() as conn:
            create_account(conn, f"{role}.r", role, "correct horse battery", NOW, "bootstrap")
        login = c.post(
            "/v1/staff/sessions", json={"name": f"{role}.r", "password": "correct horse battery"}
        )
        headers[role] = {"Authorization": f"Bearer {ok(login, 201)['token']}"}
    operator, supervisor, auditor = headers["operator"], headers["supervisor"], headers["auditor"]
    grounds = {"record_id": tax, "grounds": "paid before the decision"}
    filed = ok(c.post(f"/v1/subjects/{subject}/objections", json=grounds, headers=operator), 201)
    assert c.get("/v1/measures", headers=auditor).status_code == 403  # no personal-data desks
    decision = f"/v1/objections/{filed['objection_id']}/decision"
    rejected = {"outcome": "rejected", "note": "the receipt postdates the decision"}
    entry = {"subject_id": subject, "list_kind": "black"}
    assert c.post(decision, json=rejected, headers=operator).status_code == 403
    assert c.post("/v1/list-entries", json=entry, headers=operator).status_code == 403
    assert c.get("/v1/warnings", headers=operator).status_code == 403
    ok(c.get(f"/v1/subjects/{subject}/list-entries", headers=operator))  # operators read lists
    ask = ok(c.post(f"/v1/subjects/{subject}/reviews", json={"reason": "?"}, headers=operator), 201)
    review = f"/v1/reviews/{ask['review_id']}/decision"
    confirm = {"outcome": "confirmed", "note": "the grade follows the records"}
    assert c.post(review, json=confirm, headers=operator).status_code == 403
    assert ok(c.post(review, json=confirm, headers=supervisor))["reviewer"] == "supervisor.r"
    assert ok(c.post(decision, json=rejected, headers=supervisor))["outcome"] == "rejected"
