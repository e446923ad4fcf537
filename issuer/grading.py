"""Grading: score, class and star level with an explanation of every record.

Two implementations of one rule set:

- set-based SQL (:mod:`issuer.db_grading`): :func:`grade_all` grades every subject;
  :func:`regrade` only the affected ones after a change and returns their explanations;
  :func:`refresh_grades` is the same without building explanation objects (batches);
  :func:`due_for_regrade` finds the subjects whose grade time or unannounced record changes
  may have made stale; :func:`load_grade` reads a stored grade with its explanation. The
  stored grade carries the policy version and the policy file's hash; the policy text is kept
  in ``policy_documents``; every run is logged in ``grade_runs``.
- :func:`grade_records` is the pure reference for one subject. A property test holds the two
  equal on random record sets, on SQLite and PostgreSQL.

The rules, applied in this order to each record (the first that matches is its reason):
not in the policy catalogue (category, direction and severity) -> 0 points; withdrawn by the
source; credit repaired; archived; under an open objection (if the policy says objections
suspend effect); decided after ``as_of``; effect period over (``decision_date + max_days <=
as_of``, the maximum of the regime in force on the decision date); zero points; otherwise it
counts. score = base score + the points of the records that count.

Determinism: same records + same policy + same ``as_of`` = the same :class:`Grade`, bit for
bit, on either database: integers only, no clock read, lines ordered by (decision date,
record id).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, text

from issuer.db import grades, records, subjects
from issuer.db_grading import (
    REASON_CODES,
    due_statement,
    grade_runs,
    grade_statements,
    insert_new,
    policy_documents,
    policy_point_rows,
    policy_points,
    ungraded_statement,
)
from issuer.policy import Policy, PolicyRegistry

REASONS: Mapping[str, str] = {
    "not_in_catalogue": "category not in the policy catalogue",
    "withdrawn": "withdrawn by the source department",
    "repaired": "credit repaired: no longer used (record archived)",
    "archived": "archived: no longer used",
    "objection": "under objection: no effect while it is verified",
    "future": "decision date is after the grading date",
    "expired": "effect period ended",
    "no_points": "no points under this policy",
    "counts": "counts",
}
assert tuple(REASONS) == REASON_CODES

#: The record columns an explanation line shows.
_LINE_COLUMNS = (
    "id",
    "subject_id",
    "category",
    "direction",
    "severity",
    "legal_basis",
    "authority",
    "document_number",
    "decision_date",
)

#: Subjects per statement in :func:`regrade` (bound parameters stay far below the limits).
CHUNK = 5000


class GradingError(RuntimeError):
    """Grading cannot proceed; the message says what to fix."""


class UnknownSubject(GradingError):
    """A subject id given for re-grading is not registered."""


@dataclass(frozen=True)
class RecordLine:
    """One record in the explanation: its points and why it counts or not.

    ``points`` is what the catalogue gives the record (signed) even when it does not count;
    ``effect_until`` is the first day it no longer counts (``None`` outside the catalogue);
    ``effect_basis`` names the regime (negative records) or the policy (positive ones).
    """

    record_id: int
    category: str
    direction: str
    severity: str
    points: int
    counts: bool
    reason_code: str
    reason: str
    legal_basis: str
    authority: str
    document_number: str
    decision_date: str
    effect_until: str | None
    effect_basis: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Grade:
    score: int
    grade_class: str
    stars: int
    lines: tuple[RecordLine, ...]


@dataclass(frozen=True)
class GradeRun:
    """Summary of a full run: how many subjects got which class."""

    run_id: int
    policy_version: str
    policy_hash: str
    as_of: dt.date
    subjects: int
    by_class: dict[str, int]


def grade_records(policy: Policy, rows: Iterable[Any], as_of: dt.date) -> Grade:
    """Grades one subject from its record rows (objects with the ``records`` columns).

    The reference implementation: pure, no database.
    """
    score = policy.base_score
    lines = []
    for row in sorted(rows, key=lambda r: (r.decision_date, r.id)):
        points = policy.points_for(row.category, row.direction, row.severity)
        period = policy.period_for(row.direction, row.severity, row.decision_date)
        if points is None or period is None:
            code = "not_in_catalogue"
        elif row.withdrawn_at is not None:
            code = "withdrawn"
        elif row.repaired_at is not None:
            code = "repaired"
        elif getattr(row, "archived_at", None) is not None:
            code = "archived"
        elif row.objection_open and policy.objection.suspends_effect:
            code = "objection"
        elif row.decision_date > as_of:
            code = "future"
        elif row.decision_date + dt.timedelta(days=period.max_days) <= as_of:
            code = "expired"
        elif points == 0:
            code = "no_points"
        else:
            code = "counts"
        line = _line(policy, row, points or 0, code)
        if line.counts:
            score += line.points
        lines.append(line)
    grade_class, stars = policy.classify(score)
    return Grade(score, grade_class, stars, tuple(lines))


def _line(policy: Policy, row: Any, points: int, code: str) -> RecordLine:
    period = None
    if code != "not_in_catalogue":
        period = policy.period_for(row.direction, row.severity, row.decision_date)
    until = None
    if period is not None:
        until = _add_days(row.decision_date, period.max_days).isoformat()
    return RecordLine(
        record_id=int(row.id),
        category=row.category,
        direction=row.direction,
        severity=row.severity,
        points=points,
        counts=code == "counts",
        reason_code=code,
        reason=REASONS[code],
        legal_basis=row.legal_basis,
        authority=row.authority,
        document_number=row.document_number,
        decision_date=row.decision_date.isoformat(),
        effect_until=until,
        effect_basis=None if period is None else period.basis,
    )


def _add_days(day: dt.date, days: int) -> dt.date:
    try:
        return day + dt.timedelta(days=days)
    except OverflowError:
        return dt.date.max


def register_policy(conn: Connection, policy: Policy, now: dt.datetime) -> None:
    """Stores the policy text and its points under the file's hash (once): the grading SQL
    joins ``policy_points``, and a grade can always be reproduced from ``policy_documents``.

    Idempotent and safe against a concurrent registration of the same file (``INSERT ... ON
    CONFLICT DO NOTHING``: the primary key decides, no savepoint needed).
    """
    known = select(policy_documents.c.sha256).where(policy_documents.c.sha256 == policy.sha256)
    if conn.execute(known).first() is not None:
        return
    dialect = conn.dialect.name
    added = conn.execute(
        insert_new(dialect, policy_documents).values(
            sha256=policy.sha256,
            version=policy.version,
            effective_from=policy.effective_from,
            document=policy.text,
            registered_at=now,
        )
    )
    conn.execute(insert_new(dialect, policy_points), policy_point_rows(policy))
    if added.rowcount == 1 and dialect == "postgresql":
        # Statistics for the new rows now, not at the next autovacuum: without them the
        # planner takes the table for empty and scans it once per record.
        conn.execute(text("ANALYZE policy_points"))


def grade_all(conn: Connection, policy: Policy, as_of: dt.date, now: dt.datetime) -> GradeRun:
    """Grades every subject set-based and replaces all stored grades, in the caller's
    transaction (readers see the old grades until it commits)."""
    register_policy(conn, policy, now)
    conn.execute(delete(grades))
    graded, empty = grade_statements(policy, as_of, now, None)
    conn.execute(graded)
    conn.execute(empty)
    counts = conn.execute(
        select(grades.c.grade_class, func.count()).group_by(grades.c.grade_class)
    ).all()
    by_class = {str(name): int(n) for name, n in counts}
    total = sum(by_class.values())
    run_id = _log_run(conn, "full", policy, as_of, now, total)
    return GradeRun(run_id, policy.version, policy.sha256, as_of, total, by_class)


def refresh_grades(
    conn: Connection, policy: Policy, subject_ids: Sequence[str], as_of: dt.date, now: dt.datetime
) -> GradeRun:
    """Re-grades only the given subjects (the SQL of :func:`grade_all`, restricted to them),
    replaces their stored grades and logs the run; returns the summary only (no explanation
    objects: for batches after ingestion or :func:`due_for_regrade`).

    Raises:
        UnknownSubject: an id is not a registered subject (nothing is written).
    """
    wanted = sorted(set(subject_ids))
    found: set[str] = set()
    for chunk in _chunks(wanted):
        found.update(conn.execute(select(subjects.c.id).where(subjects.c.id.in_(chunk))).scalars())
    missing = [s for s in wanted if s not in found]
    if missing:
        raise UnknownSubject(f"cannot grade unregistered subject(s): {', '.join(missing[:10])}")
    by_class: dict[str, int] = {}
    if not wanted:
        return GradeRun(0, policy.version, policy.sha256, as_of, 0, by_class)
    register_policy(conn, policy, now)
    for chunk in _chunks(wanted):
        conn.execute(delete(grades).where(grades.c.subject_id.in_(chunk)))
        for statement in grade_statements(policy, as_of, now, chunk):
            conn.execute(statement)
        for name, n in conn.execute(
            select(grades.c.grade_class, func.count())
            .where(grades.c.subject_id.in_(chunk))
            .group_by(grades.c.grade_class)
        ):
            by_class[str(name)] = by_class.get(str(name), 0) + int(n)
    run_id = _log_run(conn, "incremental", policy, as_of, now, len(wanted))
    return GradeRun(run_id, policy.version, policy.sha256, as_of, len(wanted), by_class)


def regrade(
    conn: Connection, policy: Policy, subject_ids: Sequence[str], as_of: dt.date, now: dt.datetime
) -> dict[str, Grade]:
    """Re-grades only the given subjects (:func:`refresh_grades`) and returns each one's
    grade with its full explanation, as stored.

    Raises:
        UnknownSubject: an id is not a registered subject (nothing is written).
    """
    if not subject_ids:
        return {}
    refresh_grades(conn, policy, subject_ids, as_of, now)
    result: dict[str, Grade] = {}
    for chunk in _chunks(sorted(set(subject_ids))):
        result.update(_load(conn, policy, chunk))
    return {s: result[s] for s in subject_ids}


def due_for_regrade(conn: Connection, policy: Policy, as_of: dt.date) -> list[str]:
    """Subjects whose stored grade may be out of date at ``as_of`` under ``policy``: never
    graded or graded under another policy; a record entered or left its effect period
    between the grade's ``as_of`` and this one; a record arrived, was withdrawn, repaired or
    archived after the grade was made (timestamps compared as stored: keep them UTC).

    Objection marks carry no time: whoever opens or closes one re-grades the subject.
    Set-based: one query per distinct stored ``as_of`` (typically a few).
    """
    due = set(conn.execute(ungraded_statement(policy)).scalars())
    dates = conn.execute(
        select(grades.c.as_of).where(grades.c.policy_hash == policy.sha256).distinct()
    ).scalars()
    for graded_as_of in list(dates):
        due.update(conn.execute(due_statement(policy, graded_as_of, as_of)).scalars())
    return sorted(due)


def load_grade(
    conn: Connection, policies: Policy | PolicyRegistry, subject_id: str
) -> Grade | None:
    """The stored grade of a subject with its explanation, or ``None`` if never graded.

    Raises:
        GradingError: the grade was made under a policy other than ``policies`` (a
            :class:`Policy`), or the records changed since (re-grade the subject).
        PolicyError: ``policies`` is a registry without the grade's policy file.
    """
    row = conn.execute(
        select(grades.c.policy_hash).where(grades.c.subject_id == subject_id)
    ).first()
    if row is None:
        return None
    if isinstance(policies, PolicyRegistry):
        policy = policies.by_hash(row.policy_hash)
    else:
        policy = policies
        if policy.sha256 != row.policy_hash:
            raise GradingError(
                f"{subject_id} was graded under policy {row.policy_hash[:12]}, not "
                f"{policy.version} ({policy.sha256[:12]}): load that policy or re-grade"
            )
    return _load(conn, policy, [subject_id])[subject_id]


def _load(conn: Connection, policy: Policy, subject_ids: Sequence[str]) -> dict[str, Grade]:
    stored = conn.execute(select(grades).where(grades.c.subject_id.in_(subject_ids))).all()
    rows: dict[str, list[Any]] = {s: [] for s in subject_ids}
    for row in conn.execute(
        select(*(records.c[name] for name in _LINE_COLUMNS))
        .where(records.c.subject_id.in_(subject_ids))
        .order_by(records.c.decision_date, records.c.id)
    ):
        rows[row.subject_id].append(row)
    result = {}
    for grade in stored:
        explanation = grade.explanation
        if not isinstance(explanation, dict) or len(explanation) != len(rows[grade.subject_id]):
            raise GradingError(
                f"the stored grade of {grade.subject_id} does not match its records "
                "(records changed since grading): re-grade the subject"
            )
        lines = []
        for record in rows[grade.subject_id]:
            verdict = explanation.get(str(record.id))
            if not isinstance(verdict, list) or len(verdict) != 2 or verdict[1] not in REASONS:
                raise GradingError(
                    f"record {record.id} of {grade.subject_id} is not in its stored grade: "
                    "re-grade the subject"
                )
            lines.append(_line(policy, record, int(verdict[0]), str(verdict[1])))
        result[grade.subject_id] = Grade(
            int(grade.score), str(grade.grade_class), int(grade.stars), tuple(lines)
        )
    return result


def _log_run(
    conn: Connection, kind: str, policy: Policy, as_of: dt.date, now: dt.datetime, n: int
) -> int:
    result = conn.execute(
        insert(grade_runs).values(
            kind=kind,
            policy_hash=policy.sha256,
            policy_version=policy.version,
            as_of=as_of,
            graded_at=now,
            subjects=n,
        )
    )
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database did not return the grade run's id")
    return int(key[0])


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
