"""Objections (异议) against a record or against the evaluation itself.

The policy text (五(二)2⑧): information found or claimed to be untrue is verified by its
provider; **joint measures are not executed while it is verified**; wrong information is
corrected or withdrawn. In StarCard:

1. Filing (by the subject or by staff) marks the record at once (``records.objection_open``
   = 1, same transaction); under the policy's ``objection.suspends_effect`` the record stops
   counting; the subject is re-graded and the card status announced
   (:func:`issuer.events.regrade_and_announce`: an objection against a negative record
   never touches the card).
2. Deadlines come from the policy's ``[objection]`` section, in working days counted from
   the day after filing (:mod:`issuer.workdays`): the decision is due after
   ``decide_working_days`` (staff may extend it once, up to the escalation day); undecided
   after ``escalate_after_working_days`` the objection goes to the supervising unit.
   :meth:`ObjectionDesk.escalate_overdue` (daily job) marks missed decision deadlines and
   escalates (audit + a row in ``objection_escalations``, the supervising unit's queue); the
   supervising unit then has ``decide_working_days`` again, and so on.
3. Outcomes, each clearing the mark, re-grading and announcing:
   ``upheld`` (the record is wrong: withdrawn through :func:`issuer.platform.withdraw_record`
   and archived), ``corrected`` (new values through :func:`issuer.platform.correct_record`,
   old ones kept in ``record_history``), ``rejected`` (the record counts again),
   ``objection_withdrawn`` (the filer withdrew it; the record counts again). A record
   withdrawn upstream meanwhile closes the objection as ``superseded``
   (:func:`issuer.repair.cascade_withdrawal`).

Invariants: one open objection per record and one open evaluation objection per subject
(database indexes); every decision carries its reasons (PIPL Art. 50); every step is audited.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Connection, insert, select, update

from issuer.audit import audit
from issuer.db import records
from issuer.db_rights import objection_escalations, objections
from issuer.events import (
    Announcement,
    RightsConflict,
    RightsError,
    RightsNotFound,
    announce_one,
    lock_subjects,
    locked_row,
    new_id,
)
from issuer.platform import (
    PlatformError,
    check_record,
    correct_record,
    load_records,
    withdraw_record,
)
from issuer.policy import Policy, PolicyRegistry, policy_in_force
from issuer.repair import JOB_ACTOR, cascade_withdrawal
from issuer.workdays import WorkCalendar, china_calendar, local_date

Outcome = Literal["upheld", "corrected", "rejected", "objection_withdrawn"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
Filer = Literal["subject", "staff"]
SUPERVISING_UNIT = "区社会信用体系建设牵头部门"


@dataclass(frozen=True)
class RecordCorrection:
    """New values for a record's content; None leaves a field as it is. The direction is
    not among them: it follows the catalogue category, and a correction never turns a
    negative record into a positive one (uphold the objection and have it re-delivered)."""

    category: str | None = None
    severity: str | None = None
    decision_date: dt.date | None = None
    legal_basis: str | None = None
    authority: str | None = None


@dataclass(frozen=True)
class Objection:
    id: int
    subject_id: str
    record_id: int | None
    target: str
    filed_by: str
    grounds: str
    filed_on: dt.date
    due_on: dt.date
    escalate_on: dt.date
    deadline_missed_on: dt.date | None
    extended: bool
    escalation_level: int
    status: str
    outcome: str | None
    decision_note: str | None


@dataclass(frozen=True)
class Escalation:
    objection_id: int
    subject_id: str
    level: int
    missed_due_on: dt.date
    new_due_on: dt.date
    escalated_to: str


@dataclass(frozen=True)
class DeadlineReport:
    """What one run of :meth:`ObjectionDesk.escalate_overdue` did."""

    missed: tuple[int, ...]
    escalations: tuple[Escalation, ...]


class ObjectionDesk:
    """Files, extends, decides and escalates objections under the policy in force on the day
    of each step (``policies``: a registry, or one fixed version) and one calendar."""

    def __init__(
        self,
        policies: Policy | PolicyRegistry,
        calendar: WorkCalendar | None = None,
        *,
        escalate_to: str = SUPERVISING_UNIT,
    ) -> None:
        if not escalate_to.strip():
            raise RightsError("name the unit missed objection deadlines escalate to")
        self._policies = policies
        self._calendar = calendar or china_calendar()
        self._escalate_to = escalate_to

    def file(
        self,
        conn: Connection,
        subject_id: str,
        *,
        record_id: int | None,
        grounds: str,
        filed_by: Filer,
        actor: str,
        now: dt.datetime,
    ) -> int:
        """Files an objection against ``record_id``, or against the evaluation when None.

        Raises:
            RightsError: no grounds, or ``filed_by`` is neither ``subject`` nor ``staff``.
            RightsNotFound: no such subject, or the record is not the subject's.
            RightsConflict: the record was withdrawn, or an objection on it is already open.
        """
        if not grounds.strip():
            raise RightsError("an objection needs its grounds (what is wrong and why)")
        if filed_by not in get_args(Filer):
            raise RightsError("an objection is filed by the 'subject' or by 'staff'")
        lock_subjects(conn, [subject_id])
        if record_id is not None:
            record = conn.execute(
                select(records.c.subject_id, records.c.withdrawn_at).where(
                    records.c.id == record_id
                )
            ).first()
            if record is None or record.subject_id != subject_id:
                raise RightsNotFound(f"subject {subject_id} has no record {record_id}")
            if record.withdrawn_at is not None:
                raise RightsConflict(f"record {record_id} was withdrawn: nothing to object to")
            same = objections.c.record_id == record_id
        else:
            same = (objections.c.subject_id == subject_id) & (objections.c.target == "evaluation")
        already = conn.execute(
            select(objections.c.id).where(objections.c.status == "open", same)
        ).scalar_one_or_none()
        if already is not None:
            what = f"record {record_id}" if record_id is not None else "the evaluation"
            raise RightsConflict(f"objection {already} against {what} is already open")
        today = local_date(now)
        policy = policy_in_force(self._policies, today)
        rules = policy.objection
        due_on = self._calendar.add_working_days(today, rules.decide_working_days)
        escalate_on = self._calendar.add_working_days(today, rules.escalate_after_working_days)
        objection_id = new_id(
            conn.execute(
                insert(objections).values(
                    subject_id=subject_id,
                    record_id=record_id,
                    target="record" if record_id is not None else "evaluation",
                    filed_by=filed_by,
                    grounds=grounds.strip(),
                    filed_at=now,
                    filed_on=today,
                    filed_by_actor=actor,
                    due_on=due_on,
                    escalate_on=escalate_on,
                    status="open",
                )
            ).inserted_primary_key
        )
        if record_id is not None:
            conn.execute(update(records).where(records.c.id == record_id).values(objection_open=1))
        audit(
            conn,
            now,
            actor,
            "objection.filed",
            subject_id=subject_id,
            objection_id=objection_id,
            record_id=record_id,
            filed_by=filed_by,
            due_on=due_on.isoformat(),
            escalate_on=escalate_on.isoformat(),
        )
        announce_one(
            conn,
            policy,
            subject_id,
            now,
            reason="objection_filed",
            ref=f"objection:{objection_id}",
            actor=actor,
        )
        return objection_id

    def extend(
        self, conn: Connection, objection_id: int, reason: str, actor: str, now: dt.datetime
    ) -> dt.date:
        """Extends the decision deadline once, to the escalation day (e.g. Zhejiang: 5
        working days, extendable to 20). Returns the new deadline.

        Raises:
            RightsError: no reason given.
            RightsNotFound: no such objection.
            RightsConflict: not open, extended already, or the deadline has passed.
        """
        if not reason.strip():
            raise RightsError("an extension needs its reason")
        row = self._open_locked(conn, objection_id)
        if row.extended:
            raise RightsConflict(f"objection {objection_id} was extended already")
        if local_date(now) > row.due_on:
            raise RightsConflict(
                f"objection {objection_id} was due on {row.due_on}: a missed deadline is not "
                "extended afterwards"
            )
        due_on: dt.date = max(row.due_on, row.escalate_on)
        conn.execute(
            update(objections)
            .where(objections.c.id == objection_id)
            .values(due_on=due_on, extended=True)
        )
        audit(
            conn,
            now,
            actor,
            "objection.extended",
            subject_id=row.subject_id,
            objection_id=objection_id,
            due_on=due_on.isoformat(),
            reason=reason.strip(),
        )
        return due_on

    def decide(
        self,
        conn: Connection,
        objection_id: int,
        outcome: Outcome,
        note: str,
        actor: str,
        now: dt.datetime,
        correction: RecordCorrection | None = None,
    ) -> Announcement:
        """Closes an open objection with ``outcome`` and its reasons, then re-grades.

        Writes in the caller's transaction; after an error roll it back (the default of
        ``engine.begin()``): a refused correction is found after the objection row changed.

        Raises:
            RightsNotFound: no such objection.
            RightsConflict: it was decided already.
            RightsError: unknown outcome; no reasons; a correction without the outcome
                ``corrected`` or the reverse; a correction that changes nothing or breaks the
                catalogue; ``corrected`` against the evaluation (object to the record).
        """
        if outcome not in OUTCOMES:
            raise RightsError(f"the outcome must be one of {', '.join(OUTCOMES)}")
        if not note.strip():
            raise RightsError("a decision must give its reasons (PIPL Art. 50)")
        if (correction is not None) != (outcome == "corrected"):
            raise RightsError("a correction goes with the outcome 'corrected', and only with it")
        row = self._open_locked(conn, objection_id)
        policy = policy_in_force(self._policies, local_date(now))
        if row.record_id is None and outcome == "corrected":
            raise RightsError(
                "an objection against the evaluation corrects no record by itself: correct the "
                "record through an objection against it, then decide this one"
            )
        conn.execute(
            update(objections)
            .where(objections.c.id == objection_id)
            .values(
                status="closed",
                outcome=outcome,
                decision_note=note.strip(),
                decided_at=now,
                decided_by=actor,
            )
        )
        if row.record_id is not None:
            self._apply_to_record(conn, policy, row, outcome, note, actor, now, correction)
        audit(
            conn,
            now,
            actor,
            "objection.decided",
            subject_id=row.subject_id,
            objection_id=objection_id,
            record_id=row.record_id,
            outcome=outcome,
            note=note.strip(),
        )
        return announce_one(
            conn,
            policy,
            row.subject_id,
            now,
            reason=f"objection_{outcome}",
            ref=f"objection:{objection_id}",
            actor=actor,
        )

    def escalate_overdue(
        self, conn: Connection, now: dt.datetime, actor: str = JOB_ACTOR
    ) -> DeadlineReport:
        """The daily job, on the Beijing date of ``now``:

        - an open objection past its decision deadline is marked (``deadline_missed_on``,
          audit ``objection.deadline_missed``), once;
        - an open objection past its escalation day goes one level up to the supervising unit
          (a row in ``objection_escalations``, audit ``objection.escalated``), which gets
          ``decide_working_days`` from today; missing that escalates again.

        The record stays without effect all along, so the card is not touched. Running the
        job twice on one day does nothing more the second time.
        """
        today = local_date(now)
        decide_days = policy_in_force(self._policies, today).objection.decide_working_days
        overdue = conn.execute(
            select(objections)
            .where(objections.c.status == "open", objections.c.due_on < today)
            .order_by(objections.c.id)
        ).all()
        missed = []
        escalations = []
        for row in overdue:
            if row.deadline_missed_on is None:
                conn.execute(
                    update(objections)
                    .where(objections.c.id == row.id)
                    .values(deadline_missed_on=row.due_on)
                )
                audit(
                    conn,
                    now,
                    actor,
                    "objection.deadline_missed",
                    subject_id=row.subject_id,
                    objection_id=row.id,
                    due_on=row.due_on.isoformat(),
                )
                missed.append(int(row.id))
            if row.escalate_on < today:
                escalations.append(self._escalate(conn, row, today, decide_days, actor, now))
        return DeadlineReport(tuple(missed), tuple(escalations))

    def _escalate(
        self,
        conn: Connection,
        row: Any,
        today: dt.date,
        decide_days: int,
        actor: str,
        now: dt.datetime,
    ) -> Escalation:
        level = int(row.escalation_level) + 1
        new_due = self._calendar.add_working_days(today, decide_days)
        conn.execute(
            insert(objection_escalations).values(
                objection_id=row.id,
                level=level,
                missed_due_on=row.escalate_on,
                escalated_to=self._escalate_to,
                new_due_on=new_due,
                escalated_at=now,
            )
        )
        conn.execute(
            update(objections)
            .where(objections.c.id == row.id)
            .values(escalation_level=level, escalate_on=new_due)
        )
        audit(
            conn,
            now,
            actor,
            "objection.escalated",
            subject_id=row.subject_id,
            objection_id=row.id,
            level=level,
            missed_due_on=row.escalate_on.isoformat(),
            escalated_to=self._escalate_to,
            new_due_on=new_due.isoformat(),
        )
        return Escalation(
            row.id, row.subject_id, level, row.escalate_on, new_due, self._escalate_to
        )

    @staticmethod
    def _open_locked(conn: Connection, objection_id: int) -> Any:
        """The objection, read after locking its subject.

        Raises:
            RightsNotFound: no such objection.
            RightsConflict: it is not open.
        """
        row = locked_row(conn, objections, objection_id, "objection")
        if row.status != "open":
            raise RightsConflict(f"objection {objection_id} was decided already ({row.outcome})")
        return row

    def _apply_to_record(
        self,
        conn: Connection,
        policy: Policy,
        objection: Any,
        outcome: Outcome,
        note: str,
        actor: str,
        now: dt.datetime,
        correction: RecordCorrection | None,
    ) -> None:
        """Clears the mark; withdraws (upheld) or corrects (corrected) through the platform."""
        row = conn.execute(select(records).where(records.c.id == objection.record_id)).one()
        conn.execute(update(records).where(records.c.id == row.id).values(objection_open=0))
        if outcome not in ("upheld", "corrected"):
            return
        stored = load_records(conn, [(row.source, row.document_number)])[
            (row.source, row.document_number)
        ]
        reason = f"objection {objection.id} {outcome}: {note.strip()}"
        if outcome == "upheld":
            withdraw_record(conn, stored, reason, now, actor)
            cascade_withdrawal(conn, row, now, actor)
            return
        assert correction is not None  # checked by decide()
        changes = {
            f.name: getattr(correction, f.name)
            for f in dataclasses.fields(correction)
            if getattr(correction, f.name) is not None
        }
        corrected = dataclasses.replace(stored.content, **changes)
        if corrected == stored.content:
            raise RightsError("the correction changes nothing: give the corrected values")
        if corrected.decision_date > local_date(now):
            raise RightsError("the corrected decision date lies in the future")
        try:
            check_record(policy, corrected)
        except PlatformError as exc:
            raise RightsError(f"the corrected record is not valid: {exc}") from None
        correct_record(conn, stored, row.subject_id, corrected, reason, now, actor)


def get_objection(conn: Connection, objection_id: int) -> Objection:
    """One objection as a value.

    Raises:
        RightsNotFound: no such objection.
    """
    row = conn.execute(select(objections).where(objections.c.id == objection_id)).first()
    if row is None:
        raise RightsNotFound(f"no objection {objection_id}")
    return Objection(
        id=int(row.id),
        subject_id=row.subject_id,
        record_id=row.record_id,
        target=row.target,
        filed_by=row.filed_by,
        grounds=row.grounds,
        filed_on=row.filed_on,
        due_on=row.due_on,
        escalate_on=row.escalate_on,
        deadline_missed_on=row.deadline_missed_on,
        extended=bool(row.extended),
        escalation_level=int(row.escalation_level),
        status=row.status,
        outcome=row.outcome,
        decision_note=row.decision_note,
    )
