"""Human review of the automated grade, PIPL Art. 24 (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from issuer.db import audit_events
from issuer.events import RightsConflict, RightsError, RightsNotFound
from issuer.objections import ObjectionDesk
from issuer.platform import register_subject
from issuer.review import decide_review, get_review, request_review, under_review
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import graded_subject, id_number

LATER = NOW + dt.timedelta(days=3)


def test_a_review_snapshots_the_grade_and_flags_it(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    other = graded_subject(issuer_ctx, NOW, id_number(1))
    with issuer_ctx.engine.begin() as conn:
        review = request_review(
            conn, subject, "the score ignores my blood donation", "citizen", NOW
        )
        assert under_review(conn, [subject, other]) == {subject}
        with pytest.raises(RightsConflict, match="already open"):
            request_review(conn, subject, "again", "citizen", NOW)
        snapshot = get_review(conn, review)
        assert (snapshot.grade_score, snapshot.grade_class, snapshot.grade_stars) == (118, "A", 3)
        assert snapshot.policy_version == issuer_ctx.policy.version
    with issuer_ctx.engine.begin() as conn:
        decide_review(
            conn,
            review,
            reviewer="王审核",
            outcome="confirmed",
            note="the donation counts: 3 points, within its effect period",
            now=LATER,
        )
        assert under_review(conn, [subject]) == set()
        decided = get_review(conn, review)
        assert (decided.status, decided.reviewer, decided.outcome) == (
            "decided",
            "王审核",
            "confirmed",
        )
        actions = list(
            conn.execute(
                select(audit_events.c.action).where(audit_events.c.action.like("review.%"))
            ).scalars()
        )
        assert actions == ["review.requested", "review.decided"]
        with pytest.raises(RightsConflict, match="decided already"):
            decide_review(conn, review, reviewer="王审核", outcome="confirmed", note="x", now=LATER)


def test_an_amended_grade_names_the_objection_that_changes_it(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    other = graded_subject(issuer_ctx, NOW, id_number(1))
    objections = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        review = request_review(conn, subject, "wrong", "citizen", NOW)
        theirs = objections.file(
            conn, other, record_id=None, grounds="x", filed_by="staff", actor="w", now=NOW
        )
        mine = objections.file(
            conn,
            subject,
            record_id=None,
            grounds="review found",
            filed_by="staff",
            actor="w",
            now=NOW,
        )
        with pytest.raises(RightsError, match="names the objection"):
            decide_review(conn, review, reviewer="王审核", outcome="amended", note="x", now=LATER)
        with pytest.raises(RightsError, match="another subject"):
            decide_review(
                conn,
                review,
                reviewer="王审核",
                outcome="amended",
                note="x",
                now=LATER,
                objection_id=theirs,
            )
        with pytest.raises(RightsNotFound):
            decide_review(
                conn,
                review,
                reviewer="王审核",
                outcome="amended",
                note="x",
                now=LATER,
                objection_id=999_999,
            )
        decide_review(
            conn,
            review,
            reviewer="王审核",
            outcome="amended",
            note="see objection",
            now=LATER,
            objection_id=mine,
        )
        assert get_review(conn, review).objection_id == mine


def test_only_a_person_decides_with_an_explanation(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    with issuer_ctx.engine.begin() as conn:
        review = request_review(conn, subject, "wrong", "citizen", NOW)
        for reviewer in ("", "rights-job", "system"):
            with pytest.raises(RightsError, match="named staff member"):
                decide_review(
                    conn, review, reviewer=reviewer, outcome="confirmed", note="x", now=LATER
                )
        with pytest.raises(RightsError, match="explain"):
            decide_review(conn, review, reviewer="王审核", outcome="confirmed", note=" ", now=LATER)
        with pytest.raises(RightsError, match="outcome"):
            decide_review(
                conn,
                review,
                reviewer="王审核",
                outcome="maybe",  # type: ignore[arg-type]
                note="x",
                now=LATER,
            )
        with pytest.raises(RightsNotFound):
            decide_review(
                conn, 999_999, reviewer="王审核", outcome="confirmed", note="x", now=LATER
            )


def test_nothing_to_review_without_a_grade(issuer_ctx: IssuerContext) -> None:
    with issuer_ctx.engine.begin() as conn:
        subject = register_subject(conn, issuer_ctx.vault, id_number(2), "李四", NOW, "test")
        with pytest.raises(RightsNotFound, match="not been graded"):
            request_review(conn, subject, "why", "citizen", NOW)
        with pytest.raises(RightsError, match="reason"):
            request_review(conn, subject, " ", "citizen", NOW)
        with pytest.raises(RightsNotFound, match="no subject"):
            request_review(conn, "Snope", "why", "citizen", NOW)
