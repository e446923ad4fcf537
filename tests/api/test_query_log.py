"""Query log: every read of personal data is logged (who, whom, when, why); kept 5 years."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from issuer.api import create_app
from issuer.db_platform import query_log
from issuer.platform import register_organisation, register_subject
from issuer.query_log import (
    QueryLogError,
    log_read,
    purge_query_log,
    reads_of,
    retention_cutoff,
)
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import id_number

STAFF = {"Authorization": "Bearer test-staff-token"}


def client(ctx: IssuerContext) -> TestClient:
    return TestClient(create_app(ctx.settings, "test-staff-token", context=ctx))


def logged(ctx: IssuerContext) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(query_log)).scalar_one())


def test_subject_view_needs_a_purpose_shows_masked_data_and_is_logged(
    issuer_ctx: IssuerContext,
) -> None:
    c = client(issuer_ctx)
    number = id_number(3)
    subject = c.post(
        "/v1/subjects", json={"id_number": number, "name": "欧阳娜娜"}, headers=STAFF
    ).json()["subject_id"]
    assert c.get(f"/v1/subjects/{subject}", headers=STAFF).status_code == 422
    assert c.get(f"/v1/subjects/{subject}?purpose=", headers=STAFF).status_code == 422
    assert logged(issuer_ctx) == 0
    assert c.get(f"/v1/subjects/{subject}?purpose=counter", headers={}).status_code == 401

    r = c.get(f"/v1/subjects/{subject}", params={"purpose": "窗口核验身份"}, headers=STAFF)
    assert r.status_code == 200
    view = r.json()
    assert view["identifier"] == number[:4] + "**********" + number[-4:]
    assert view["name"] == "欧***"
    assert view["kind"] == "individual" and view["adult"] is True
    assert number not in r.text and "欧阳娜娜" not in r.text
    with issuer_ctx.engine.connect() as conn:
        entries = reads_of(conn, subject)
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.actor, entry.purpose, entry.channel) == ("bootstrap", "窗口核验身份", "api")
    assert "name" in entry.fields and "id_number_masked" in entry.fields
    assert abs(entry.at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)

    assert c.get("/v1/subjects/Snope?purpose=check", headers=STAFF).status_code == 404
    assert logged(issuer_ctx) == 1


def test_eligibility_and_grading_are_logged_reads(issuer_ctx: IssuerContext) -> None:
    c = client(issuer_ctx)
    subject = c.post(
        "/v1/subjects", json={"id_number": id_number(4), "name": "张三"}, headers=STAFF
    ).json()["subject_id"]
    c.get(f"/v1/subjects/{subject}/eligibility", headers=STAFF)
    c.post(f"/v1/subjects/{subject}/grade", headers=STAFF)
    with issuer_ctx.engine.connect() as conn:
        purposes = [e.purpose for e in reads_of(conn, subject)]
    assert purposes == ["card eligibility check", "grading"]


def test_organisation_view_shows_its_name_and_masks_its_code(issuer_ctx: IssuerContext) -> None:
    with issuer_ctx.engine.begin() as conn:
        subject = register_organisation(
            conn, issuer_ctx.vault, "91350200776049653A", "厦门某某有限公司", NOW, "clerk"
        )
    r = client(issuer_ctx).get(f"/v1/subjects/{subject}?purpose=核查", headers=STAFF).json()
    assert r["kind"] == "organisation" and r["adult"] is None
    assert r["name"] == "厦门某某有限公司"
    assert r["identifier"] == "9135**********653A"


def test_entries_are_kept_five_years(issuer_ctx: IssuerContext) -> None:
    with issuer_ctx.engine.begin() as conn:
        subject = register_subject(conn, issuer_ctx.vault, id_number(5), "张三", NOW, "test")
        for years in (7, 6, 4, 0):
            at = NOW.replace(year=NOW.year - years)
            log_read(conn, at, "staff", subject, f"{years} years ago", ["name"], "api")
        with pytest.raises(QueryLogError, match="purpose"):
            log_read(conn, NOW, "staff", subject, " ", ["name"], "api")
    with issuer_ctx.engine.begin() as conn:
        too_young = retention_cutoff(NOW) + dt.timedelta(days=1)
        with pytest.raises(QueryLogError, match="at least 5 years"):
            purge_query_log(conn, too_young, NOW)
        assert purge_query_log(conn, retention_cutoff(NOW), NOW) == 2
    with issuer_ctx.engine.connect() as conn:
        left = [e.purpose for e in reads_of(conn, subject)]
    assert left == ["4 years ago", "0 years ago"]


def test_retention_cutoff_on_29_february() -> None:
    leap = dt.datetime(2028, 2, 29, 12, tzinfo=dt.UTC)
    assert retention_cutoff(leap) == dt.datetime(2023, 2, 28, 12, tzinfo=dt.UTC)
