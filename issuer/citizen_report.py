"""What the holder sees after the access code: the explained grade, its signed receipt, a
star-level simulator and "who checked my card".

:func:`load_report` reads in the caller's transaction and writes the read to the query log
(actor ``citizen``, purpose ``own report``) in the same transaction. The simulator is pure
(:func:`simulate`): it grades the subject's own records with the grading rules
(:func:`issuer.grading.grade_records`, as :mod:`issuer.warnings` does) on the day each
negative record's effect ends, and without the record once it may be repaired (after its
minimum period), so every line it shows is a lawful change with its date.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Connection, select

from issuer.db import grades, records
from issuer.grading import GradingError, grade_records, load_grade
from issuer.policy import Policy, policy_in_force
from issuer.query_log import log_read
from issuer.receipts import issue_receipt
from issuer.repair import effect_window
from issuer.wiring import IssuerContext
from issuer.workdays import BEIJING, local_date

ACTOR = "citizen"
PURPOSE = "own report"
CHANNEL = "citizen"
CHECKS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class SimStep:
    """One lawful change: ``kind`` ``expiry``, ``repair`` (from ``on``) or ``repair_now``."""

    kind: str
    on: dt.date
    record_id: int
    category: str
    level: str


@dataclass(frozen=True)
class Checks:
    """``state``: ``ok`` (``items`` listed), ``unconfigured`` or ``unreachable``."""

    state: str
    items: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class Report:
    subject_id: str
    score: int
    grade_class: str
    stars: int
    policy_version: str
    lines: tuple[Any, ...]
    receipt_b64: str
    simulation: tuple[SimStep, ...]
    current_level: str
    repairable: tuple[Any, ...]
    objectionable: tuple[Any, ...]
    category_names: dict[str, str]
    """Catalogue names (the policy's, Chinese) by category key."""


def level_text(grade_class: str, stars: int) -> str:
    return f"{grade_class} {'★' * stars}".strip()


def load_report(
    conn: Connection, ctx: IssuerContext, subject_id: str, now: dt.datetime
) -> Report | None:
    """The subject's report, or None when there is no grade yet.

    Raises:
        GradingError: the stored grade is stale (records changed since): re-grade first.
    """
    grade = load_grade(conn, ctx.policies, subject_id)
    log_read(conn, now, ACTOR, subject_id, PURPOSE, ("grade", "records"), CHANNEL)
    if grade is None:
        return None
    stored = conn.execute(
        select(grades.c.policy_hash, grades.c.policy_version, grades.c.as_of).where(
            grades.c.subject_id == subject_id
        )
    ).one()
    graded_under = ctx.policies.by_hash(stored.policy_hash)
    receipt = issue_receipt(
        subject_id, grade, graded_under, stored.as_of, int(now.timestamp()), ctx.keys.credential
    )
    rows = conn.execute(select(records).where(records.c.subject_id == subject_id)).all()
    today = local_date(now)
    policy = policy_in_force(ctx.policies, today)
    by_id = {row.id: row for row in rows}
    return Report(
        subject_id=subject_id,
        score=grade.score,
        grade_class=grade.grade_class,
        stars=grade.stars,
        policy_version=stored.policy_version,
        lines=grade.lines,
        receipt_b64=base64.b64encode(receipt).decode(),
        simulation=tuple(simulate(policy, rows, today)),
        current_level=level_text(grade.grade_class, grade.stars),
        repairable=tuple(line for line in grade.lines if line.direction == "-" and line.counts),
        objectionable=tuple(
            line
            for line in grade.lines
            if by_id[line.record_id].withdrawn_at is None
            and not by_id[line.record_id].objection_open
        ),
        category_names={key: c.name for key, c in policy.categories.items()},
    )


def simulate(policy: Policy, rows: Sequence[Any], as_of: dt.date) -> list[SimStep]:
    """For each negative record counting on ``as_of``: the level on the day its effect ends
    (nothing else done), and the level once it is repaired (possible from the end of its
    minimum period). Sorted by date (pure)."""
    now = grade_records(policy, rows, as_of)
    steps = []
    for line in now.lines:
        if not (line.counts and line.points < 0):
            continue
        row = next(r for r in rows if r.id == line.record_id)
        window = effect_window(policy, row)
        if window is None:
            continue
        ended = grade_records(policy, rows, window.effect_until)
        steps.append(
            SimStep(
                "expiry",
                window.effect_until,
                line.record_id,
                _name(policy, line.category),
                level_text(ended.grade_class, ended.stars),
            )
        )
        if window.repair_from < window.effect_until:
            on = max(window.repair_from, as_of)
            others = [r for r in rows if r.id != line.record_id]
            repaired = grade_records(policy, others, on)
            steps.append(
                SimStep(
                    "repair_now" if on == as_of else "repair",
                    on,
                    line.record_id,
                    _name(policy, line.category),
                    level_text(repaired.grade_class, repaired.stars),
                )
            )
    return sorted(steps, key=lambda s: (s.on, s.record_id, s.kind))


def _name(policy: Policy, category: str) -> str:
    known = policy.categories.get(category)
    return category if known is None else known.name


def _local_time(at: object) -> str:
    """The verifier's receipt time (unix seconds) as Beijing local time, ``YYYY-MM-DD HH:MM``;
    any other form is shown as given."""
    if isinstance(at, int) and not isinstance(at, bool):
        return dt.datetime.fromtimestamp(at, BEIJING).strftime("%Y-%m-%d %H:%M")
    return str(at)


def fetch_checks(
    verifier_url: str | None,
    verifier_token: str | None,
    serial: str,
    get: Callable[..., httpx.Response] = httpx.get,
) -> Checks:
    """The verifier's receipts for ``serial`` (``GET /v1/cards/{serial}/receipts``); never
    raises: not configured or not reachable (any failure) is a state the page shows."""
    if not verifier_url or not verifier_token:
        return Checks("unconfigured")
    try:
        response = get(
            f"{verifier_url.rstrip('/')}/v1/cards/{serial}/receipts",
            headers={"Authorization": f"Bearer {verifier_token}"},
            timeout=CHECKS_TIMEOUT_S,
        )
        response.raise_for_status()
        items = tuple(
            {
                "at": _local_time(c["at"]),
                "merchant_name": str(c["merchant_name"]),
                "category": str(c["category"]),
                "state": str(c["state"]),
            }
            for c in response.json()["checks"]
        )
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return Checks("unreachable")
    return Checks("ok", items)


__all__ = ["Checks", "GradingError", "Report", "SimStep", "fetch_checks", "load_report"]
