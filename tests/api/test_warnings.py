"""Early warning for subjects near a downgrade (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from issuer.db import audit_events
from issuer.events import RightsError
from issuer.objections import ObjectionDesk
from issuer.policy import load_policy
from issuer.warnings import EarlyWarning, band_floor, early_warnings
from issuer.wiring import IssuerContext
from tests.api.test_events import person_with
from tests.conftest import NOW


def warnings_for(
    ctx: IssuerContext, subject: str, *, margin: int, horizon_days: int
) -> EarlyWarning | None:
    with ctx.engine.begin() as conn:
        found = early_warnings(
            conn, ctx.policy, NOW, margin=margin, horizon_days=horizon_days, actor="analyst"
        )
    return next((w for w in found if w.subject_id == subject), None)


def test_band_floor() -> None:
    policy = load_policy()
    assert band_floor(policy, 118) == 115
    assert band_floor(policy, 130) == 130
    assert band_floor(policy, 100) == 95
    assert band_floor(policy, 80) == 80
    assert band_floor(policy, 79) is None


def test_near_the_lower_band(issuer_ctx: IssuerContext) -> None:
    subject, _ = person_with(issuer_ctx, person=0)  # 118: 3★ from 115
    warning = warnings_for(issuer_ctx, subject, margin=4, horizon_days=0)
    assert warning is not None
    assert (warning.points_to_drop, warning.stars, warning.record_ids) == (4, 3, ())
    assert warning.reasons[0].startswith("near_band")
    assert warnings_for(issuer_ctx, subject, margin=3, horizon_days=0) is None


def test_a_record_under_objection_that_would_count_again(issuer_ctx: IssuerContext) -> None:
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", dt.date(2026, 6, 1)))
    with issuer_ctx.engine.begin() as conn:
        ObjectionDesk(issuer_ctx.policy).file(
            conn, subject, record_id=tax, grounds="x", filed_by="subject", actor="c", now=NOW
        )
    warning = warnings_for(issuer_ctx, subject, margin=0, horizon_days=0)
    assert warning is not None
    assert (warning.score, warning.stars) == (118, 3)  # provisional: the record has no effect
    assert warning.record_ids == (tax,)
    assert warning.reasons == (f"outlook: level A★ within 0 days (records {tax})",)


def test_a_positive_record_about_to_end(issuer_ctx: IssuerContext) -> None:
    subject, (honour,) = person_with(
        issuer_ctx, ("honour", "+", "轻微", dt.date(2023, 12, 1))
    )  # 123: 4★ until 2026-11-30
    assert warnings_for(issuer_ctx, subject, margin=0, horizon_days=1) is None
    warning = warnings_for(issuer_ctx, subject, margin=0, horizon_days=2)
    assert warning is not None
    assert (warning.stars, warning.record_ids) == (4, (honour,))


def test_class_d_is_never_warned_and_the_list_is_audited(issuer_ctx: IssuerContext) -> None:
    low, _ = person_with(issuer_ctx, ("court_judgment_default", "-", "严重", dt.date(2026, 6, 1)))
    near, _ = person_with(issuer_ctx, person=1)
    with issuer_ctx.engine.begin() as conn:
        found = early_warnings(
            conn, issuer_ctx.policy, NOW, margin=100, horizon_days=365, actor="analyst"
        )
        assert [w.subject_id for w in found] == [near]
        detail = conn.execute(
            select(audit_events.c.detail).where(audit_events.c.action == "warnings.listed")
        ).scalar_one()
        assert (detail["subjects"], detail["warned"], detail["margin"]) == (2, 1, 100)
        assert low not in {w.subject_id for w in found}
        with pytest.raises(RightsError, match="negative"):
            early_warnings(conn, issuer_ctx.policy, NOW, margin=-1, horizon_days=0, actor="a")
