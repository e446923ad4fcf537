"""Objections: marking, re-grading, outcomes, card events, deadlines (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Connection, func, select

from issuer.db import audit_events, grades, records
from issuer.db_platform import record_history
from issuer.db_rights import objection_escalations
from issuer.events import (
    RightsConflict,
    RightsError,
    RightsNotFound,
    pending,
)
from issuer.objections import ObjectionDesk, RecordCorrection, get_objection
from issuer.wiring import IssuerContext
from tests.api.test_events import person_with
from tests.conftest import NOW

LATER = NOW + dt.timedelta(hours=2)
T0 = dt.datetime(2026, 9, 14, 2, 0, tzinfo=dt.UTC)  # Monday 10:00 in Beijing
JUNE = dt.date(2026, 6, 1)


def at(day: dt.date) -> dt.datetime:
    """10:00 Beijing time on ``day``."""
    return dt.datetime.combine(day, dt.time(2, 0), tzinfo=dt.UTC)


def demo_record(conn: Connection, subject: str, category: str) -> int:
    return int(
        conn.execute(
            select(records.c.id).where(
                records.c.subject_id == subject, records.c.category == category
            )
        ).scalar_one()
    )


def score(conn: Connection, subject: str) -> int:
    return int(conn.execute(select(grades.c.score).where(grades.c.subject_id == subject)).one()[0])


def events(conn: Connection) -> list[tuple[str, int, str]]:
    return [(e.kind, e.stars, e.reason) for e in pending(conn)]


def test_objection_to_a_negative_record_suspends_it_and_leaves_the_card(
    issuer_ctx: IssuerContext,
) -> None:
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", JUNE))  # 108: A 1★
    desk = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        objection = desk.file(
            conn,
            subject,
            record_id=tax,
            grounds="the arrears were paid before the decision",
            filed_by="subject",
            actor="citizen",
            now=NOW,
        )
        marked = conn.execute(select(records.c.objection_open).where(records.c.id == tax))
        assert marked.scalar_one() == 1
        assert score(conn, subject) == 118  # the record has no effect while verified
    with issuer_ctx.engine.connect() as conn:
        filed = get_objection(conn, objection)
        assert (filed.status, filed.target, filed.filed_by) == ("open", "record", "subject")
        assert filed.due_on == dt.date(2026, 12, 4)  # 5 working days from a Saturday
        assert filed.escalate_on == dt.date(2026, 12, 25)
        assert events(conn) == []  # a provisional rise never reissues the card
    with issuer_ctx.engine.begin() as conn:
        decided = desk.decide(conn, objection, "rejected", "the payment came later", "clerk", LATER)
        assert decided.kind is None
        assert score(conn, subject) == 108
        cleared = conn.execute(select(records.c.objection_open).where(records.c.id == tax))
        assert cleared.scalar_one() == 0
        assert events(conn) == []
    with issuer_ctx.engine.connect() as conn:
        assert get_objection(conn, objection).outcome == "rejected"
        actions = conn.execute(
            select(audit_events.c.action).where(audit_events.c.subject_id == subject)
        ).scalars()
        assert {"objection.filed", "objection.decided"} <= set(actions)


def test_marking_is_undone_with_a_failed_transaction(issuer_ctx: IssuerContext) -> None:
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", JUNE))
    desk = ObjectionDesk(issuer_ctx.policy)
    with pytest.raises(ZeroDivisionError), issuer_ctx.engine.begin() as conn:
        desk.file(
            conn, subject, record_id=tax, grounds="wrong", filed_by="subject", actor="c", now=NOW
        )
        _ = 1 / 0
    with issuer_ctx.engine.connect() as conn:
        flag = conn.execute(select(records.c.objection_open).where(records.c.id == tax))
        assert flag.scalar_one() == 0
        assert score(conn, subject) == 108


def test_upheld_withdraws_archives_and_reissues(issuer_ctx: IssuerContext) -> None:
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", JUNE))  # A 1★
    desk = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        objection = desk.file(
            conn, subject, record_id=tax, grounds="not me", filed_by="subject", actor="c", now=NOW
        )
        result = desk.decide(conn, objection, "upheld", "wrong person", "clerk", LATER)
    assert (result.kind, result.grade.stars) == ("reissue", 3)
    with issuer_ctx.engine.connect() as conn:
        row = conn.execute(select(records).where(records.c.id == tax)).one()
        assert row.withdrawn_at is not None and row.archived_at is not None
        assert row.objection_open == 0
        history = conn.execute(
            select(record_history.c.action, record_history.c.reason).where(
                record_history.c.record_id == tax
            )
        ).one()
        assert history.action == "withdrawal"
        assert f"objection {objection} upheld" in history.reason
        assert events(conn) == [("reissue", 3, "objection_upheld")]
        assert pending(conn)[0].ref == f"objection:{objection}"


def test_corrected_changes_values_with_history(issuer_ctx: IssuerContext) -> None:
    subject, (penalty,) = person_with(issuer_ctx, ("admin_penalty", "-", "严重", JUNE))  # 88: C
    desk = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        objection = desk.file(
            conn,
            subject,
            record_id=penalty,
            grounds="not 严重",
            filed_by="staff",
            actor="clerk",
            now=NOW,
        )
        assert events(conn) == []  # class C has no card: nothing to suspend or reissue
        result = desk.decide(
            conn,
            objection,
            "corrected",
            "the decision says 一般",
            "clerk",
            LATER,
            RecordCorrection(severity="一般"),
        )
    assert (result.grade.score, result.grade.stars) == (108, 1)
    with issuer_ctx.engine.connect() as conn:
        assert conn.execute(select(records.c.severity).where(records.c.id == penalty)).scalar() == (
            "一般"
        )
        old = conn.execute(
            select(record_history.c.old_values).where(record_history.c.record_id == penalty)
        ).scalar_one()
        assert old["severity"] == "严重"
        assert events(conn) == [("reissue", 1, "objection_corrected")]


@pytest.mark.parametrize(
    ("correction", "message"),
    [
        (RecordCorrection(severity="严重"), "changes nothing"),
        (RecordCorrection(category="honour"), "takes direction"),
        (RecordCorrection(category="no_such_item"), "not valid"),
        (RecordCorrection(decision_date=dt.date(2027, 1, 1)), "future"),
    ],
)
def test_an_invalid_correction_changes_nothing(
    issuer_ctx: IssuerContext, correction: RecordCorrection, message: str
) -> None:
    subject, (penalty,) = person_with(issuer_ctx, ("admin_penalty", "-", "严重", JUNE))
    desk = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        objection = desk.file(
            conn, subject, record_id=penalty, grounds="x", filed_by="subject", actor="c", now=NOW
        )
    with pytest.raises(RightsError, match=message), issuer_ctx.engine.begin() as conn:
        desk.decide(conn, objection, "corrected", "fix", "clerk", LATER, correction)
    with issuer_ctx.engine.connect() as conn:
        assert get_objection(conn, objection).status == "open"
        assert conn.execute(select(records.c.severity).where(records.c.id == penalty)).scalar() == (
            "严重"
        )


def test_objection_to_a_positive_record_suspends_then_restores(
    issuer_ctx: IssuerContext,
) -> None:
    subject, _ = person_with(issuer_ctx)  # 118: A 3★
    desk = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        honour = demo_record(conn, subject, "honour")
        objection = desk.file(
            conn,
            subject,
            record_id=honour,
            grounds="the honour may belong to a namesake",
            filed_by="staff",
            actor="clerk",
            now=NOW,
        )
        assert score(conn, subject) == 108
        assert events(conn) == [("suspend", 3, "objection_filed")]
    with issuer_ctx.engine.begin() as conn:
        desk.decide(conn, objection, "rejected", "the honour is theirs", "clerk", LATER)
        assert events(conn)[1:] == [("restore", 3, "objection_rejected")]


def test_upheld_objection_to_a_positive_record_reissues_lower(issuer_ctx: IssuerContext) -> None:
    subject, _ = person_with(issuer_ctx)
    desk = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        honour = demo_record(conn, subject, "honour")
        objection = desk.file(
            conn,
            subject,
            record_id=honour,
            grounds="namesake",
            filed_by="staff",
            actor="clerk",
            now=NOW,
        )
        desk.decide(conn, objection, "upheld", "a namesake's honour", "clerk", LATER)
        assert events(conn) == [
            ("suspend", 3, "objection_filed"),
            ("reissue", 1, "objection_upheld"),
        ]


def test_objection_against_the_evaluation(issuer_ctx: IssuerContext) -> None:
    subject, _ = person_with(issuer_ctx)
    desk = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        objection = desk.file(
            conn,
            subject,
            record_id=None,
            grounds="my volunteering hours are missing",
            filed_by="subject",
            actor="citizen",
            now=NOW,
        )
        marked = conn.execute(
            select(func.count()).where(
                records.c.subject_id == subject, records.c.objection_open != 0
            )
        ).scalar()
        assert marked == 0
        with pytest.raises(RightsConflict, match="already open"):
            desk.file(
                conn,
                subject,
                record_id=None,
                grounds="again",
                filed_by="subject",
                actor="c",
                now=NOW,
            )
        with pytest.raises(RightsError, match="corrects no record"):
            desk.decide(
                conn, objection, "corrected", "x", "clerk", LATER, RecordCorrection(severity="一般")
            )
    with issuer_ctx.engine.begin() as conn:
        desk.decide(conn, objection, "objection_withdrawn", "the citizen withdrew it", "c", LATER)
        assert get_objection(conn, objection).target == "evaluation"
        assert events(conn) == []


def test_filing_is_refused_with_clear_reasons(issuer_ctx: IssuerContext) -> None:
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", JUNE))
    other, _ = person_with(issuer_ctx, person=1)
    desk = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        with pytest.raises(RightsError, match="grounds"):
            desk.file(
                conn, subject, record_id=tax, grounds=" ", filed_by="subject", actor="c", now=NOW
            )
        with pytest.raises(RightsError, match="'subject' or by 'staff'"):
            desk.file(
                conn,
                subject,
                record_id=tax,
                grounds="x",
                filed_by="cat",  # type: ignore[arg-type]
                actor="c",
                now=NOW,
            )
        with pytest.raises(RightsNotFound, match="has no record"):
            desk.file(
                conn, other, record_id=tax, grounds="x", filed_by="subject", actor="c", now=NOW
            )
        with pytest.raises(RightsNotFound, match="no subject"):
            desk.file(
                conn, "Snope", record_id=None, grounds="x", filed_by="subject", actor="c", now=NOW
            )
        first = desk.file(
            conn, subject, record_id=tax, grounds="x", filed_by="subject", actor="c", now=NOW
        )
        with pytest.raises(RightsConflict, match=f"objection {first} against record"):
            desk.file(
                conn, subject, record_id=tax, grounds="y", filed_by="staff", actor="c", now=NOW
            )
        desk.decide(conn, first, "upheld", "withdrawn", "clerk", LATER)
        with pytest.raises(RightsConflict, match="withdrawn"):
            desk.file(
                conn, subject, record_id=tax, grounds="z", filed_by="subject", actor="c", now=LATER
            )


def test_decisions_are_refused_with_clear_reasons(issuer_ctx: IssuerContext) -> None:
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", JUNE))
    desk = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        objection = desk.file(
            conn, subject, record_id=tax, grounds="x", filed_by="subject", actor="c", now=NOW
        )
        with pytest.raises(RightsError, match="reasons"):
            desk.decide(conn, objection, "rejected", " ", "clerk", LATER)
        with pytest.raises(RightsError, match="outcome must be"):
            desk.decide(conn, objection, "maybe", "x", "clerk", LATER)  # type: ignore[arg-type]
        with pytest.raises(RightsError, match="only with it"):
            desk.decide(
                conn, objection, "rejected", "x", "clerk", LATER, RecordCorrection(severity="轻微")
            )
        with pytest.raises(RightsNotFound):
            desk.decide(conn, 999_999, "rejected", "x", "clerk", LATER)
        desk.decide(conn, objection, "rejected", "checked", "clerk", LATER)
        with pytest.raises(RightsConflict, match="decided already"):
            desk.decide(conn, objection, "upheld", "again", "clerk", LATER)


def test_deadlines_in_working_days_missed_and_escalated(issuer_ctx: IssuerContext) -> None:
    subject, _ = person_with(issuer_ctx, now=T0)
    desk = ObjectionDesk(issuer_ctx.policy, escalate_to="区信用办")
    with issuer_ctx.engine.begin() as conn:
        late = desk.file(
            conn, subject, record_id=None, grounds="x", filed_by="subject", actor="c", now=T0
        )
        honour = demo_record(conn, subject, "honour")
        decided = desk.file(
            conn, subject, record_id=honour, grounds="y", filed_by="staff", actor="clerk", now=T0
        )
        filed = get_objection(conn, late)
        # 9/20 is a Sunday worked for the National Day holiday; 9/25-27 and 10/1-7 are off
        assert (filed.due_on, filed.escalate_on) == (dt.date(2026, 9, 20), dt.date(2026, 10, 16))
        desk.decide(conn, decided, "rejected", "checked", "clerk", at(dt.date(2026, 9, 15)))
        before = events(conn)
        assert [kind for kind, _, _ in before] == ["suspend", "restore"]
    with issuer_ctx.engine.begin() as conn:
        assert desk.escalate_overdue(conn, at(dt.date(2026, 9, 20))).missed == ()
    with issuer_ctx.engine.begin() as conn:
        report = desk.escalate_overdue(conn, at(dt.date(2026, 9, 21)))
        assert (report.missed, report.escalations) == ((late,), ())
        assert get_objection(conn, late).deadline_missed_on == dt.date(2026, 9, 20)
        assert desk.escalate_overdue(conn, at(dt.date(2026, 9, 21))).missed == ()
    with issuer_ctx.engine.begin() as conn:
        assert desk.escalate_overdue(conn, at(dt.date(2026, 10, 16))).escalations == ()
        (first,) = desk.escalate_overdue(conn, at(dt.date(2026, 10, 17))).escalations
        assert (first.objection_id, first.level, first.escalated_to) == (late, 1, "区信用办")
        assert (first.missed_due_on, first.new_due_on) == (
            dt.date(2026, 10, 16),
            dt.date(2026, 10, 23),
        )
        assert desk.escalate_overdue(conn, at(dt.date(2026, 10, 17))).escalations == ()
    with issuer_ctx.engine.begin() as conn:
        (second,) = desk.escalate_overdue(conn, at(dt.date(2026, 10, 24))).escalations
        assert (second.level, second.new_due_on) == (2, dt.date(2026, 10, 30))
        levels = conn.execute(
            select(objection_escalations.c.level).where(
                objection_escalations.c.objection_id == late
            )
        ).scalars()
        assert list(levels) == [1, 2]
        actions = list(
            conn.execute(
                select(audit_events.c.action).where(
                    audit_events.c.action.in_(["objection.deadline_missed", "objection.escalated"])
                )
            ).scalars()
        )
        assert actions == [
            "objection.deadline_missed",
            "objection.escalated",
            "objection.escalated",
        ]
        assert get_objection(conn, late).escalation_level == 2
        assert events(conn) == before  # escalation never touches the card


def test_one_extension_before_the_deadline(issuer_ctx: IssuerContext) -> None:
    subject, (tax,) = person_with(issuer_ctx, ("tax_arrears", "-", "一般", JUNE), now=T0)
    desk = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        first = desk.file(
            conn, subject, record_id=tax, grounds="x", filed_by="subject", actor="c", now=T0
        )
        second = desk.file(
            conn, subject, record_id=None, grounds="y", filed_by="subject", actor="c", now=T0
        )
        with pytest.raises(RightsError, match="reason"):
            desk.extend(conn, first, " ", "clerk", at(dt.date(2026, 9, 18)))
        assert desk.extend(
            conn, first, "needs the court file", "clerk", at(dt.date(2026, 9, 18))
        ) == dt.date(2026, 10, 16)
        assert get_objection(conn, first).extended
        with pytest.raises(RightsConflict, match="extended already"):
            desk.extend(conn, first, "more", "clerk", at(dt.date(2026, 9, 18)))
        with pytest.raises(RightsConflict, match="not extended afterwards"):
            desk.extend(conn, second, "late", "clerk", at(dt.date(2026, 9, 21)))
        report = desk.escalate_overdue(conn, at(dt.date(2026, 9, 21)))
        assert report.missed == (second,)
