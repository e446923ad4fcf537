"""Credit repair, end of effect and upstream withdrawal (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Connection, select

from issuer.db import audit_events, records
from issuer.db_rights import repair_requests
from issuer.events import (
    RightsConflict,
    RightsError,
    RightsNotFound,
    pending,
)
from issuer.objections import ObjectionDesk, get_objection
from issuer.platform import load_records, withdraw_record
from issuer.repair import RepairApplication, RepairConditionsNotMet, RepairDesk
from issuer.wiring import IssuerContext
from tests.api.test_events import person_with
from tests.conftest import NOW

LATER = NOW + dt.timedelta(hours=2)
DEC_1 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)  # 10:00 in Beijing


def apply(record_id: int) -> RepairApplication:
    return RepairApplication(
        record_id, True, "税款及滞纳金缴纳凭证 No. 123", "本人承诺所提交材料真实"
    )


def demo_penalty(conn: Connection, subject: str) -> int:
    """The demo person's 2024 traffic penalty: its effect ended on 2025-06-03."""
    return int(
        conn.execute(
            select(records.c.id).where(
                records.c.subject_id == subject, records.c.category == "admin_penalty"
            )
        ).scalar_one()
    )


def events(conn: Connection) -> list[tuple[str, int, str]]:
    return [(e.kind, e.stars, e.reason) for e in pending(conn)]


def test_every_unmet_condition_is_named(issuer_ctx: IssuerContext) -> None:
    _, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", dt.date(2026, 10, 1)))
    desk = RepairDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn, pytest.raises(RepairConditionsNotMet) as refused:
        desk.request(conn, RepairApplication(tax, False, " ", ""), "citizen", NOW)
    reasons = refused.value.reasons
    assert len(reasons) == 4
    assert "minimum period runs until 2027-01-01" in reasons[0]
    assert "obligations" in reasons[1]
    assert "evidence" in reasons[2]
    assert "commitment" in reasons[3]


def test_granted_repair_archives_regrades_and_reissues(issuer_ctx: IssuerContext) -> None:
    subject, (tax,) = person_with(
        issuer_ctx, ("tax_arrears", "-", "一般", dt.date(2026, 6, 1))
    )  # 108: A 1★
    desk = RepairDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        request = desk.request(conn, apply(tax), "citizen", NOW)
        with pytest.raises(RightsConflict, match="already pending"):
            desk.request(conn, apply(tax), "citizen", NOW)
    with issuer_ctx.engine.begin() as conn:
        result = desk.decide(conn, request, True, "", "clerk", LATER)
        assert result is not None
        assert (result.grade.score, result.kind) == (118, "reissue")
    with issuer_ctx.engine.connect() as conn:
        row = conn.execute(select(records).where(records.c.id == tax)).one()
        assert row.repaired_at is not None and row.archived_at is not None
        assert (
            conn.execute(
                select(repair_requests.c.status).where(repair_requests.c.id == request)
            ).scalar_one()
            == "granted"
        )
        assert events(conn) == [("reissue", 3, "repair_granted")]
        assert pending(conn)[0].ref == f"repair:{request}"
        actions = set(
            conn.execute(
                select(audit_events.c.action).where(audit_events.c.subject_id == subject)
            ).scalars()
        )
        assert {"repair.requested", "repair.granted"} <= actions
        with pytest.raises(RightsConflict, match="decided already"):
            desk.decide(conn, request, False, "too late", "clerk", LATER)


def test_the_minimum_period_follows_the_regime_of_the_decision_date(
    issuer_ctx: IssuerContext,
) -> None:
    _, (new, old) = person_with(
        issuer_ctx,
        ("admin_penalty", "-", "严重", dt.date(2026, 5, 1)),  # NDRC 2026: at least 366 days
        ("admin_penalty", "-", "严重", dt.date(2026, 1, 10)),  # 527号: at least 184 days
    )
    desk = RepairDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        with pytest.raises(RepairConditionsNotMet, match="until 2027-05-02"):
            desk.request(conn, apply(new), "citizen", NOW)
        assert desk.request(conn, apply(old), "citizen", NOW) > 0


def test_refusal_needs_a_reason_and_changes_no_grade(issuer_ctx: IssuerContext) -> None:
    _, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", dt.date(2026, 6, 1)))
    desk = RepairDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        request = desk.request(conn, apply(tax), "citizen", NOW)
        with pytest.raises(RightsError, match="reason"):
            desk.decide(conn, request, False, " ", "clerk", LATER)
        assert desk.decide(conn, request, False, "the receipt is forged", "clerk", LATER) is None
        assert conn.execute(select(records.c.repaired_at).where(records.c.id == tax)).scalar() is (
            None
        )
        assert events(conn) == []
        with pytest.raises(RightsNotFound):
            desk.decide(conn, 999_999, True, "", "clerk", LATER)


def test_what_cannot_be_repaired(issuer_ctx: IssuerContext) -> None:
    _, (ended, honour) = person_with(
        issuer_ctx,
        ("tax_arrears", "-", "一般", dt.date(2025, 6, 1)),  # effect ended 2026-06-01
        ("honour", "+", "一般", dt.date(2026, 6, 1)),
    )
    desk = RepairDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        with pytest.raises(RepairConditionsNotMet, match="ended on 2026-06-01"):
            desk.request(conn, apply(ended), "citizen", NOW)
        with pytest.raises(RepairConditionsNotMet, match="only negative"):
            desk.request(conn, apply(honour), "citizen", NOW)
        with pytest.raises(RightsNotFound):
            desk.request(conn, apply(999_999), "citizen", NOW)


def test_a_grant_rechecks_the_conditions(issuer_ctx: IssuerContext) -> None:
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", dt.date(2026, 6, 1)))
    desk = RepairDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        request = desk.request(conn, apply(tax), "citizen", NOW)
        ObjectionDesk(issuer_ctx.policy).file(
            conn, subject, record_id=tax, grounds="x", filed_by="subject", actor="c", now=NOW
        )
        with pytest.raises(RepairConditionsNotMet, match="objection"):
            desk.decide(conn, request, True, "", "clerk", LATER)


def test_effects_end_by_themselves_at_the_maximum(issuer_ctx: IssuerContext) -> None:
    subject, (ending, minor) = person_with(
        issuer_ctx,
        ("tax_arrears", "-", "一般", dt.date(2025, 12, 1)),  # 527号: 365 days, to 2026-12-01
        ("tax_arrears", "-", "轻微", dt.date(2026, 6, 1)),  # never counts (0 days)
    )  # 108: A 1★
    desk = RepairDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        early = desk.expire_effects(conn, NOW)
        expired = (demo_penalty(conn, subject), minor)
        assert (early.archived_record_ids, early.announcements) == (expired, {})
    with issuer_ctx.engine.begin() as conn:
        report = desk.expire_effects(conn, DEC_1)
        assert report.archived_record_ids == (ending,)
        assert report.announcements[subject].kind == "reissue"
        assert events(conn) == [("reissue", 3, "effect_ended")]
    with issuer_ctx.engine.begin() as conn:
        again = desk.expire_effects(conn, DEC_1)
        assert (again.archived_record_ids, again.announcements) == ((), {})
        assert len(pending(conn)) == 1
        archived = conn.execute(
            select(records.c.archived_at).where(records.c.id.in_([ending, minor]))
        ).scalars()
        assert all(a is not None for a in archived)


def test_a_positive_record_ending_downgrades_without_archiving(issuer_ctx: IssuerContext) -> None:
    subject, (honour,) = person_with(
        issuer_ctx,
        ("honour", "+", "轻微", dt.date(2023, 12, 1)),  # +5 until 2026-11-30
    )  # 123: A 4★
    desk = RepairDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        report = desk.expire_effects(conn, DEC_1)
        assert report.archived_record_ids == (demo_penalty(conn, subject),)  # negative only
        assert report.announcements[subject].grade.score == 118
        assert events(conn) == [("reissue", 3, "effect_ended")]
        assert (
            conn.execute(select(records.c.archived_at).where(records.c.id == honour)).scalar()
            is None
        )


def test_upstream_withdrawal_cascades(issuer_ctx: IssuerContext) -> None:
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", dt.date(2026, 6, 1)))
    desk = RepairDesk(issuer_ctx.policy)
    objections = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        request = desk.request(conn, apply(tax), "citizen", NOW)
        objection = objections.file(
            conn, subject, record_id=tax, grounds="x", filed_by="subject", actor="c", now=NOW
        )
        with pytest.raises(RightsConflict, match="not withdrawn"):
            desk.apply_withdrawal(conn, tax, NOW)
        with pytest.raises(RightsNotFound):
            desk.apply_withdrawal(conn, 999_999, NOW)
    with issuer_ctx.engine.begin() as conn:
        row = conn.execute(select(records).where(records.c.id == tax)).one()
        stored = load_records(conn, [(row.source, row.document_number)])[
            (row.source, row.document_number)
        ]
        withdraw_record(conn, stored, "the penalty was revoked on review", LATER, "tax")
        result = desk.apply_withdrawal(conn, tax, LATER)
        assert (result.kind, result.grade.score) == ("reissue", 118)
    with issuer_ctx.engine.begin() as conn:
        assert desk.apply_withdrawal(conn, tax, LATER).kind is None  # idempotent
        closed = get_objection(conn, objection)
        assert (closed.status, closed.outcome) == ("closed", "superseded")
        assert (
            conn.execute(
                select(repair_requests.c.status).where(repair_requests.c.id == request)
            ).scalar_one()
            == "moot"
        )
        row = conn.execute(select(records).where(records.c.id == tax)).one()
        assert row.archived_at is not None and row.objection_open == 0
        assert events(conn) == [("reissue", 3, "record_withdrawn")]
