"""Credit repair (信用修复), the automatic end of effect, and upstream withdrawal of records.

Repair (DOMAIN.md, Records): a negative record may be repaired once its minimum period has
passed (``min_days`` of the policy regime in force on its decision date), the obligations of
the decision are performed and the subject has made a credit commitment. A granted repair
stops the record's use (``repaired_at``) and archives it (``archived_at``); the record is
never deleted. The subject is re-graded and the card status event follows
(:func:`issuer.events.regrade_and_announce`).

At the maximum period (``max_days`` of that regime) a record stops counting without any
request: :meth:`RepairDesk.expire_effects` archives negative records whose effect ended and
re-grades every graded subject whose stored grade predates such an end.

A record withdrawn by its source (``records.withdrawn_at``, set by ingestion) goes through
:meth:`RepairDesk.apply_withdrawal`: archived, its open objection closed as ``superseded``,
pending repair requests closed as ``moot``, the subject re-graded and announced.

Invariants: a record is repaired at most once; at most one pending request per record (a
partial unique index); every decision is audited with its reason.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from issuer.audit import audit
from issuer.db import grades, records
from issuer.db_rights import objections, repair_requests
from issuer.events import (
    Announcement,
    RightsConflict,
    RightsError,
    RightsNotFound,
    announce_one,
    locked_row,
    new_id,
    regrade_and_announce,
)
from issuer.policy import Policy, PolicyRegistry, policy_in_force
from issuer.workdays import local_date

JOB_ACTOR = "rights-job"


class RepairConditionsNotMet(RightsError):
    """The repair conditions are not all met; ``reasons`` lists each unmet one."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("repair is not possible: " + "; ".join(reasons))
        self.reasons = tuple(reasons)


@dataclass(frozen=True)
class RepairApplication:
    """What the subject hands in: the record, proof of performance, the commitment text."""

    record_id: int
    obligations_performed: bool
    obligations_evidence: str
    commitment: str


@dataclass(frozen=True)
class EffectWindow:
    """A record's periods under one policy: the regime in force on its decision date
    (``regime``), repair possible from ``repair_from`` (decision date + ``min_days``), no
    effect from ``effect_until`` (decision date + ``max_days``)."""

    regime: str
    min_days: int
    max_days: int
    repair_from: dt.date
    effect_until: dt.date


@dataclass(frozen=True)
class RepairOutlook:
    """Where a record stands for repair on ``as_of``: its periods under ``policy_version``
    and what the record itself still fails (obligations and commitment aside)."""

    record_id: int
    subject_id: str
    as_of: dt.date
    policy_version: str
    window: EffectWindow | None
    blockers: tuple[str, ...]


@dataclass(frozen=True)
class RepairRequest:
    id: int
    subject_id: str
    record_id: int
    status: str
    decision_reason: str | None


@dataclass(frozen=True)
class ExpiryReport:
    archived_record_ids: tuple[int, ...]
    announcements: dict[str, Announcement]


class RepairDesk:
    """Repair requests and decisions, end of effect, withdrawal, under the policy in force on
    the day of each step (``policies``: a registry, or one fixed version). Holds no state but
    rules."""

    def __init__(self, policies: Policy | PolicyRegistry) -> None:
        self._policies = policies

    def policy_on(self, day: dt.date) -> Policy:
        """The policy the desk applies on ``day``."""
        return policy_in_force(self._policies, day)

    def window(self, record: Any, as_of: dt.date) -> EffectWindow | None:
        """The record's periods under the policy in force on ``as_of`` (None outside them)."""
        return effect_window(self.policy_on(as_of), record)

    def outlook(self, conn: Connection, record_id: int, as_of: dt.date) -> RepairOutlook:
        """The record's repair outlook on ``as_of``.

        Raises:
            RightsNotFound: no such record.
        """
        record = conn.execute(select(records).where(records.c.id == record_id)).first()
        if record is None:
            raise RightsNotFound(f"no record {record_id}")
        return RepairOutlook(
            int(record.id),
            record.subject_id,
            as_of,
            self.policy_on(as_of).version,
            self.window(record, as_of),
            tuple(self.record_blockers(record, as_of)),
        )

    def record_blockers(self, record: Any, as_of: dt.date) -> list[str]:
        """The conditions the record itself fails on ``as_of``, whatever the application."""
        unmet = []
        if record.direction != "-":
            unmet.append("only negative (失信) records are repaired")
        if record.withdrawn_at is not None:
            unmet.append("the record was withdrawn by its source: there is nothing to repair")
        if record.repaired_at is not None:
            unmet.append("the record was repaired already")
        if record.objection_open:
            unmet.append(
                "an objection against the record is being verified (the record has no effect "
                "meanwhile): decide the objection first"
            )
        window = self.window(record, as_of)
        if window is not None and window.effect_until <= as_of:
            unmet.append(
                f"the record's effect ended on {window.effect_until}: there is nothing to repair"
            )
        if window is not None and as_of < window.repair_from:
            unmet.append(
                f"the minimum period runs until {window.repair_from}; repair is possible from "
                f"then ({window.min_days} days under {window.regime})"
            )
        return unmet

    def unmet_conditions(
        self, record: Any, application: RepairApplication, as_of: dt.date
    ) -> list[str]:
        """Every repair condition the record and application fail on ``as_of`` (empty: met)."""
        unmet = self.record_blockers(record, as_of)
        if not application.obligations_performed:
            unmet.append("the obligations of the decision must be performed first")
        if not application.obligations_evidence.strip():
            unmet.append("attach the evidence that the obligations were performed")
        if not application.commitment.strip():
            unmet.append("a credit commitment (信用承诺) must be recorded")
        return unmet

    def request(
        self, conn: Connection, application: RepairApplication, actor: str, now: dt.datetime
    ) -> int:
        """Records a repair request after checking every condition.

        Raises:
            RightsNotFound: no such record.
            RepairConditionsNotMet: a condition fails (all failing ones are listed).
            RightsConflict: a request for this record is already pending.
        """
        record = locked_row(conn, records, application.record_id, "record")
        unmet = self.unmet_conditions(record, application, local_date(now))
        if unmet:
            raise RepairConditionsNotMet(unmet)
        _refuse_second_pending(conn, record.id)
        result = conn.execute(
            insert(repair_requests).values(
                subject_id=record.subject_id,
                record_id=record.id,
                obligations_performed=application.obligations_performed,
                obligations_evidence=application.obligations_evidence.strip(),
                commitment=application.commitment.strip(),
                requested_at=now,
                requested_by=actor,
                status="pending",
            )
        )
        request_id = new_id(result.inserted_primary_key)
        audit(
            conn,
            now,
            actor,
            "repair.requested",
            subject_id=record.subject_id,
            request_id=request_id,
            record_id=record.id,
        )
        return request_id

    def decide(
        self,
        conn: Connection,
        request_id: int,
        grant: bool,
        reason: str,
        actor: str,
        now: dt.datetime,
    ) -> Announcement | None:
        """Grants or refuses a pending request (staff). A grant re-checks the conditions on
        today's date, marks the record repaired and archived, re-grades and announces; a
        refusal must give its reason (PIPL Art. 50).

        Returns the announcement for a grant, None for a refusal.

        Raises:
            RightsNotFound: no such request.
            RightsConflict: the request was decided already.
            RightsError: a refusal without a reason.
            RepairConditionsNotMet: a grant while a condition no longer holds.
        """
        request = locked_row(conn, repair_requests, request_id, "repair request")
        if request.status != "pending":
            raise RightsConflict(
                f"repair request {request_id} was decided already ({request.status})"
            )
        if not grant and not reason.strip():
            raise RightsError("a refusal must give its reason (PIPL Art. 50)")
        record = conn.execute(select(records).where(records.c.id == request.record_id)).one()
        if grant:
            application = RepairApplication(
                record.id,
                bool(request.obligations_performed),
                request.obligations_evidence,
                request.commitment,
            )
            unmet = self.unmet_conditions(record, application, local_date(now))
            if unmet:
                raise RepairConditionsNotMet(unmet)
            conn.execute(
                update(records)
                .where(records.c.id == record.id)
                .values(repaired_at=now, archived_at=record.archived_at or now)
            )
        conn.execute(
            update(repair_requests)
            .where(repair_requests.c.id == request_id)
            .values(
                status="granted" if grant else "refused",
                decided_at=now,
                decided_by=actor,
                decision_reason=reason.strip() or "conditions met",
            )
        )
        audit(
            conn,
            now,
            actor,
            "repair.granted" if grant else "repair.refused",
            subject_id=record.subject_id,
            request_id=request_id,
            record_id=record.id,
            reason=reason.strip(),
        )
        if not grant:
            return None
        return announce_one(
            conn,
            self.policy_on(local_date(now)),
            record.subject_id,
            now,
            reason="repair_granted",
            ref=f"repair:{request_id}",
            actor=actor,
        )

    def expire_effects(
        self, conn: Connection, now: dt.datetime, actor: str = JOB_ACTOR
    ) -> ExpiryReport:
        """The daily job: archives negative records whose maximum period has ended and
        re-grades (with announcement) every graded subject whose stored grade was computed
        before one of its records' effect ended. Running it twice changes nothing more."""
        today = local_date(now)
        policy = self.policy_on(today)
        rows = conn.execute(
            select(records, grades.c.as_of.label("graded_as_of"))
            .outerjoin(grades, grades.c.subject_id == records.c.subject_id)
            .where(records.c.withdrawn_at.is_(None), records.c.repaired_at.is_(None))
            .order_by(records.c.id)
        ).all()
        archived: list[int] = []
        stale: set[str] = set()
        for row in rows:
            until = effect_until(policy, row)
            if until is None or until > today:
                continue
            if row.direction == "-" and row.archived_at is None:
                conn.execute(update(records).where(records.c.id == row.id).values(archived_at=now))
                audit(
                    conn,
                    now,
                    actor,
                    "record.effect_ended",
                    subject_id=row.subject_id,
                    record_id=row.id,
                    effect_until=until.isoformat(),
                )
                archived.append(row.id)
            if row.graded_as_of is not None and row.graded_as_of < until:
                stale.add(row.subject_id)
        announcements = {}
        if stale:
            announcements = regrade_and_announce(
                conn, policy, sorted(stale), now, reason="effect_ended", actor=actor
            )
        return ExpiryReport(tuple(archived), announcements)

    def apply_withdrawal(
        self, conn: Connection, record_id: int, now: dt.datetime, actor: str = "ingestion"
    ) -> Announcement:
        """Applies a withdrawal the source department made (``records.withdrawn_at`` set):
        archive, close what depended on the record, re-grade, announce. Idempotent.

        Raises:
            RightsNotFound: no such record.
            RightsConflict: the record is not withdrawn.
        """
        record = locked_row(conn, records, record_id, "record")
        if record.withdrawn_at is None:
            raise RightsConflict(
                f"record {record_id} is not withdrawn: the source withdraws it (withdrawn_at) first"
            )
        cascade_withdrawal(conn, record, now, actor)
        audit(
            conn,
            now,
            actor,
            "record.withdrawal_applied",
            subject_id=record.subject_id,
            record_id=record_id,
        )
        return announce_one(
            conn,
            self.policy_on(local_date(now)),
            record.subject_id,
            now,
            reason="record_withdrawn",
            ref=f"record:{record_id}",
            actor=actor,
        )


def effect_window(policy: Policy, record: Any) -> EffectWindow | None:
    """The record's periods under ``policy`` (the regime in force on its decision date), None
    outside the policy's periods (unknown direction or severity)."""
    period = policy.period_for(record.direction, record.severity, record.decision_date)
    if period is None:
        return None
    decided: dt.date = record.decision_date
    return EffectWindow(
        period.basis,
        period.min_days,
        period.max_days,
        decided + dt.timedelta(period.min_days),
        decided + dt.timedelta(period.max_days),
    )


def effect_until(policy: Policy, record: Any) -> dt.date | None:
    """The first day a record no longer counts (grading's rule: decision date plus the
    maximum period of its regime), None outside the policy's periods."""
    window = effect_window(policy, record)
    return None if window is None else window.effect_until


def cascade_withdrawal(conn: Connection, record: Any, now: dt.datetime, actor: str) -> None:
    """What a withdrawn record takes with it (no re-grade here; the caller does it once):
    the record is archived, its open objection is closed as ``superseded`` and its flag
    cleared, its pending repair requests are closed as ``moot``. Each closure is audited."""
    conn.execute(
        update(records)
        .where(records.c.id == record.id)
        .values(archived_at=record.archived_at or now, objection_open=0)
    )
    open_objection = conn.execute(
        select(objections.c.id).where(
            objections.c.record_id == record.id, objections.c.status == "open"
        )
    ).scalar_one_or_none()
    if open_objection is not None:
        conn.execute(
            update(objections)
            .where(objections.c.id == open_objection)
            .values(
                status="closed",
                outcome="superseded",
                decision_note="the source department withdrew the record",
                decided_at=now,
                decided_by=actor,
            )
        )
        audit(
            conn,
            now,
            actor,
            "objection.superseded",
            subject_id=record.subject_id,
            objection_id=open_objection,
            record_id=record.id,
        )
    moot = (
        conn.execute(
            select(repair_requests.c.id).where(
                repair_requests.c.record_id == record.id, repair_requests.c.status == "pending"
            )
        )
        .scalars()
        .all()
    )
    for request_id in moot:
        conn.execute(
            update(repair_requests)
            .where(repair_requests.c.id == request_id)
            .values(
                status="moot",
                decided_at=now,
                decided_by=actor,
                decision_reason="the record was withdrawn",
            )
        )
        audit(
            conn,
            now,
            actor,
            "repair.moot",
            subject_id=record.subject_id,
            request_id=request_id,
            record_id=record.id,
        )


def get_repair_request(conn: Connection, request_id: int) -> RepairRequest:
    """One repair request as a value.

    Raises:
        RightsNotFound: no such request.
    """
    row = conn.execute(select(repair_requests).where(repair_requests.c.id == request_id)).first()
    if row is None:
        raise RightsNotFound(f"no repair request {request_id}")
    return RepairRequest(
        int(row.id), row.subject_id, int(row.record_id), row.status, row.decision_reason
    )


def _refuse_second_pending(conn: Connection, record_id: int) -> None:
    existing = conn.execute(
        select(repair_requests.c.id).where(
            repair_requests.c.record_id == record_id, repair_requests.c.status == "pending"
        )
    ).scalar_one_or_none()
    if existing is not None:
        raise RightsConflict(f"repair request {existing} for record {record_id} is already pending")
