"""Grading: score, class and star level with an explanation of every record.

``grade_records`` is pure: the same records and the same policy give the same result, bit for
bit. ``regrade`` applies it to subjects in the database and stores the result with the policy
version and hash.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from issuer.db import grades, records
from issuer.policy import Policy


@dataclass(frozen=True)
class RecordLine:
    """One record in the explanation: its points and why it counts or not."""

    record_id: int
    category: str
    direction: str
    severity: str
    points: int
    counts: bool
    reason: str
    legal_basis: str
    document_number: str
    decision_date: str
    effect_until: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Grade:
    score: int
    grade_class: str
    stars: int
    lines: tuple[RecordLine, ...]


def grade_records(policy: Policy, rows: Iterable[Any], as_of: dt.date) -> Grade:
    """Grades one subject from its record rows (mappings with the ``records`` columns)."""
    score = policy.base_score
    lines = []
    for row in sorted(rows, key=lambda r: (r.decision_date, r.id)):
        category = policy.categories.get(row.category)
        if category is None:
            lines.append(
                _line(row, 0, False, "category not in the policy catalogue", row.decision_date)
            )
            continue
        magnitude = category.points.get(row.severity, 0)
        points = magnitude if row.direction == "+" else -magnitude
        until = row.decision_date + dt.timedelta(
            days=policy.effect_days[row.direction][row.severity]
        )
        if row.withdrawn_at is not None:
            counts, reason = False, "withdrawn by the source department"
        elif row.repaired_at is not None:
            counts, reason = False, "credit repaired: no longer used (record archived)"
        elif row.objection_open and policy.objection_suspends_effect:
            counts, reason = False, "under objection: no effect while it is verified"
        elif row.decision_date > as_of:
            counts, reason = False, "decision date is after the grading date"
        elif until <= as_of:
            counts, reason = False, "effect period ended"
        elif points == 0:
            counts, reason = False, "no points under this policy"
        else:
            counts, reason = True, "counts"
        if counts:
            score += points
        lines.append(_line(row, points, counts, reason, until))
    grade_class, stars = policy.classify(score)
    return Grade(score, grade_class, stars, tuple(lines))


def _line(row: Any, points: int, counts: bool, reason: str, until: dt.date) -> RecordLine:
    return RecordLine(
        record_id=row.id,
        category=row.category,
        direction=row.direction,
        severity=row.severity,
        points=points,
        counts=counts,
        reason=reason,
        legal_basis=row.legal_basis,
        document_number=row.document_number,
        decision_date=row.decision_date.isoformat(),
        effect_until=until.isoformat(),
    )


def regrade(
    conn: Connection, policy: Policy, subject_ids: Sequence[str], as_of: dt.date, now: dt.datetime
) -> dict[str, Grade]:
    """Re-grades the given subjects and replaces their stored grades."""
    rows = conn.execute(select(records).where(records.c.subject_id.in_(subject_ids))).all()
    by_subject: dict[str, list[Any]] = {s: [] for s in subject_ids}
    for row in rows:
        by_subject[row.subject_id].append(row)
    result = {s: grade_records(policy, rs, as_of) for s, rs in by_subject.items()}
    conn.execute(delete(grades).where(grades.c.subject_id.in_(subject_ids)))
    for subject_id, grade in result.items():
        conn.execute(
            insert(grades).values(
                subject_id=subject_id,
                policy_version=policy.version,
                policy_hash=policy.sha256,
                score=grade.score,
                grade_class=grade.grade_class,
                stars=grade.stars,
                explanation=[line.as_dict() for line in grade.lines],
                as_of=as_of,
                graded_at=now,
            )
        )
    return result
