"""Early warning (诚信预警, policy text 五(二)1(4)): subjects close to a lower level.

A subject is warned for either of two reasons, both computed from its records with the
grading rules (:func:`issuer.grading.grade_records`), so a warning is as explainable as the
grade:

1. ``near_band``: losing ``margin`` points or fewer would drop the subject's current level
   (star level or class). ``points_to_drop`` is the smallest loss that drops it.
2. ``outlook``: within ``horizon_days`` the level would drop *without any new record*, when
   the records that do not count today but may soon do count (a negative record under
   objection whose objection is rejected; a record decided after today) and the effects
   that end in the meantime (a positive record reaching its maximum period). The records
   responsible are listed.

Class D subjects have no lower level and are never warned. The list is a query: it changes
nothing but the audit log (who listed warnings, when, with what parameters).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from issuer.audit import audit
from issuer.db import grades, records
from issuer.events import RightsError, level_rank, settled_rows
from issuer.grading import Grade, grade_records
from issuer.policy import Policy, PolicyRegistry, policy_in_force
from issuer.workdays import local_date


@dataclass(frozen=True)
class EarlyWarning:
    subject_id: str
    score: int
    grade_class: str
    stars: int
    reasons: tuple[str, ...]
    points_to_drop: int | None
    record_ids: tuple[int, ...]


def band_floor(policy: Policy, score: int) -> int | None:
    """The lowest score with the same level (class and stars) as ``score``; None for class D
    (nothing below it)."""
    a_minimum = policy.class_minimums[0][1]
    thresholds = [m for _, m in policy.class_minimums]
    thresholds += [m for _, m in policy.star_minimums if m >= a_minimum]
    below = [t for t in thresholds if t <= score]
    return max(below) if below else None


def assess(
    policy: Policy,
    subject_id: str,
    rows: Sequence[Any],
    as_of: dt.date,
    *,
    margin: int,
    horizon_days: int,
) -> EarlyWarning | None:
    """The warning for one subject's records on ``as_of``, or None (pure).

    Raises:
        RightsError: a negative margin or horizon.
    """
    if margin < 0 or horizon_days < 0:
        raise RightsError("the warning margin and horizon cannot be negative")
    now = grade_records(policy, rows, as_of)
    reasons = []
    floor = band_floor(policy, now.score)
    to_drop = None if floor is None else now.score - floor + 1
    if to_drop is not None and to_drop <= margin:
        reasons.append(f"near_band: losing {to_drop} points drops the level")
    later = grade_records(policy, settled_rows(rows), as_of + dt.timedelta(days=horizon_days))
    responsible: tuple[int, ...] = ()
    if level_rank(policy, later.grade_class, later.stars) < level_rank(
        policy, now.grade_class, now.stars
    ):
        responsible = _adverse_changes(now, later)
        reasons.append(
            f"outlook: level {later.grade_class}{'★' * later.stars} within {horizon_days} days "
            f"(records {', '.join(map(str, responsible))})"
        )
    if not reasons:
        return None
    return EarlyWarning(
        subject_id,
        now.score,
        now.grade_class,
        now.stars,
        tuple(reasons),
        to_drop,
        responsible,
    )


def _adverse_changes(now: Grade, later: Grade) -> tuple[int, ...]:
    """Records that start counting with negative points, or stop counting with positive ones."""
    before = {line.record_id: line for line in now.lines}
    return tuple(
        line.record_id
        for line in later.lines
        if (line.counts and not before[line.record_id].counts and line.points < 0)
        or (not line.counts and before[line.record_id].counts and line.points > 0)
    )


def early_warnings(
    conn: Connection,
    policies: Policy | PolicyRegistry,
    now: dt.datetime,
    *,
    margin: int,
    horizon_days: int,
    actor: str,
) -> list[EarlyWarning]:
    """Warnings for every graded subject, ordered by subject id, under the policy in force
    today (``policies``: a registry, or one fixed version); the listing is audited.

    Raises:
        RightsError: a negative margin or horizon.
    """
    as_of = local_date(now)
    policy = policy_in_force(policies, as_of)
    graded = sorted(conn.execute(select(grades.c.subject_id)).scalars())
    by_subject: dict[str, list[Any]] = {s: [] for s in graded}
    graded_records = select(records).join(grades, grades.c.subject_id == records.c.subject_id)
    for row in conn.execute(graded_records):
        by_subject[row.subject_id].append(row)
    warnings = []
    for subject_id in graded:
        warning = assess(
            policy,
            subject_id,
            by_subject[subject_id],
            as_of,
            margin=margin,
            horizon_days=horizon_days,
        )
        if warning is not None:
            warnings.append(warning)
    audit(
        conn,
        now,
        actor,
        "warnings.listed",
        margin=margin,
        horizon_days=horizon_days,
        subjects=len(graded),
        warned=len(warnings),
    )
    return warnings
