"""Grading tables and the set-based grading statement (SQLAlchemy Core, SQLite and PostgreSQL).

Tables (on :data:`issuer.db.metadata`; migration ``0004_grading`` creates exactly these):

- ``policy_documents``: every policy file that ever graded, by SHA-256, with its full text,
  so that any stored grade can be reproduced even after the file left the policy folder;
- ``policy_points``: the catalogue of each of those files, (hash, category, direction,
  severity) -> signed points, which the grading statement joins;
- ``grade_runs``: one row per grading run (full or incremental): policy, ``as_of``, time and
  number of subjects, the log of this automated decision-making (PIPL Art. 24).

The statement. :func:`grade_statements` builds two ``INSERT ... SELECT`` into ``grades``:

1. ``records LEFT JOIN policy_points`` (this policy's hash). A ``CASE`` gives each record its
   reason (``not_in_catalogue``, ``withdrawn``, ``repaired``, ``archived``, ``objection``,
   ``future``, ``expired``, ``no_points``, ``counts``); ``GROUP BY subject_id`` sums the
   counted points and concatenates the per-record verdicts; ``CASE`` over the policy's bands
   gives class and stars.
2. Subjects without any record get the base score (an anti-join).

Date arithmetic. None runs in SQL. A record's effect ends on ``decision_date + max_days``, so
it is expired at ``as_of`` iff ``decision_date <= as_of - max_days``. The cut-off dates
``as_of - max_days`` are computed in Python, one per (direction, regime, severity), bound as
date parameters and chosen per record by a ``CASE`` on its direction, decision date (regime
start dates) and severity (:func:`expired_on_or_before`). Dates then only compare, which both
databases do the same way (PostgreSQL ``date``; SQLite ISO text); no ``date()`` /
``interval`` whose month and overflow rules differ.

The stored explanation (``grades.explanation``) is a JSON object ``{"<record id>": [points,
"<reason code>"], ...}``: one entry per record of the subject, built by the same statement.
Its key order carries no meaning (SQLite before 3.44 cannot order an aggregate); readers
order lines by (decision date, record id), see :func:`issuer.grading.load_grade`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Insert,
    Integer,
    Select,
    String,
    Table,
    Text,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FunctionElement

from issuer.db import grades, metadata, records, subjects
from issuer.policy import SEVERITIES, Policy, Regime

policy_documents = Table(
    "policy_documents",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("effective_from", Date, nullable=False),
    Column("document", Text, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
)

policy_points = Table(
    "policy_points",
    metadata,
    Column("policy_hash", String(64), ForeignKey("policy_documents.sha256"), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("direction", String(1), primary_key=True),
    Column("severity", String(16), primary_key=True),
    Column("points", Integer, nullable=False),
)

grade_runs = Table(
    "grade_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("policy_hash", String(64), ForeignKey("policy_documents.sha256"), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("graded_at", DateTime(timezone=True), nullable=False),
    Column("subjects", Integer, nullable=False),
)

#: Reason codes of the explanation, in the order the rules are applied.
REASON_CODES = (
    "not_in_catalogue",
    "withdrawn",
    "repaired",
    "archived",
    "objection",
    "future",
    "expired",
    "no_points",
    "counts",
)


class _ConcatAgg(FunctionElement[str]):
    """``string_agg(x, ',')`` on PostgreSQL, ``group_concat(x, ',')`` on SQLite (order free)."""

    type = String()
    inherit_cache = True
    name = "concat_agg"


@compiles(_ConcatAgg, "postgresql")
def _concat_agg_pg(element: _ConcatAgg, compiler: SQLCompiler, **kw: Any) -> str:
    return f"string_agg({compiler.process(element.clauses, **kw)}, ',')"


@compiles(_ConcatAgg)
def _concat_agg_default(element: _ConcatAgg, compiler: SQLCompiler, **kw: Any) -> str:
    return f"group_concat({compiler.process(element.clauses, **kw)}, ',')"


class _AsJson(FunctionElement[Any]):
    """Text that holds JSON, as a JSON column value: ``CAST(x AS JSON)`` on PostgreSQL; on
    SQLite the text itself (a cast there would give it numeric affinity)."""

    type = JSON()
    inherit_cache = True
    name = "as_json"


@compiles(_AsJson, "postgresql")
def _as_json_pg(element: _AsJson, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS JSON)"


@compiles(_AsJson)
def _as_json_default(element: _AsJson, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


def insert_new(dialect: str, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` into ``table`` (rows whose key exists are skipped).

    Raises:
        ValueError: a database other than SQLite or PostgreSQL.
    """
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"grading runs on SQLite and PostgreSQL, not {dialect}")


def policy_point_rows(policy: Policy) -> list[dict[str, object]]:
    """The ``policy_points`` rows of ``policy``: signed points per catalogue item."""
    return [
        {
            "policy_hash": policy.sha256,
            "category": key,
            "direction": category.direction,
            "severity": severity,
            "points": policy.points_for(key, category.direction, severity),
        }
        for key, category in sorted(policy.categories.items())
        for severity in SEVERITIES
    ]


def expired_on_or_before(policy: Policy, as_of: dt.date) -> ColumnElement[Any]:
    """Per record, the last decision date whose effect has ended by ``as_of``
    (``as_of - max_days`` of its period), as a ``CASE`` over direction, regime and severity.
    Unknown directions or severities give NULL (such records are outside the catalogue)."""
    r = records

    def cutoff(days: int) -> dt.date:
        try:
            return as_of - dt.timedelta(days=days)
        except OverflowError:
            return dt.date.min

    def by_severity(days: Mapping[str, int]) -> ColumnElement[Any]:
        return case(
            {severity: literal(cutoff(days[severity]), Date) for severity in SEVERITIES},
            value=r.c.severity,
        )

    def max_days(regime: Regime) -> dict[str, int]:
        return {severity: period.max_days for severity, period in regime.periods.items()}

    first, *later = policy.regimes
    negative_cutoff = by_severity(max_days(first))
    if later:
        negative_cutoff = case(
            *(
                (
                    r.c.decision_date >= literal(regime.in_force_from, Date),
                    by_severity(max_days(regime)),
                )
                for regime in reversed(later)
            ),
            else_=negative_cutoff,
        )
    return case(
        (r.c.direction == "+", by_severity(policy.positive_effect_days)),
        (r.c.direction == "-", negative_cutoff),
    )


def _band_case(score: ColumnElement[Any], policy: Policy) -> tuple[Any, Any]:
    grade_class = case(
        *((score >= minimum, literal(name)) for name, minimum in policy.class_minimums),
        else_=literal("D"),
    )
    stars = case(
        *(
            (score >= minimum, literal(level))
            for level, minimum in sorted(policy.star_minimums, reverse=True)
        ),
        else_=literal(0),
    )
    return grade_class, stars


def grade_statements(
    policy: Policy,
    as_of: dt.date,
    now: dt.datetime,
    subject_ids: Sequence[str] | None,
) -> tuple[Insert, Insert]:
    """The two ``INSERT ... SELECT`` that write the grades of ``subject_ids`` (every subject
    if ``None``); the caller deletes the old grades first. See the module docstring."""
    catalogue = policy_points
    r = records
    points = func.coalesce(catalogue.c.points, 0)
    rules: list[tuple[ColumnElement[bool], str]] = [
        (catalogue.c.points.is_(None), "not_in_catalogue"),
        (r.c.withdrawn_at.is_not(None), "withdrawn"),
        (r.c.repaired_at.is_not(None), "repaired"),
        (r.c.archived_at.is_not(None), "archived"),
    ]
    if policy.objection.suspends_effect:
        rules.append((r.c.objection_open != 0, "objection"))
    rules += [
        (r.c.decision_date > literal(as_of, Date), "future"),
        (r.c.decision_date <= expired_on_or_before(policy, as_of), "expired"),
        (points == 0, "no_points"),
    ]
    reason = case(*((cond, literal(code)) for cond, code in rules), else_=literal("counts"))
    joined = r.outerjoin(
        catalogue,
        and_(
            catalogue.c.policy_hash == literal(policy.sha256, String),
            catalogue.c.category == r.c.category,
            catalogue.c.direction == r.c.direction,
            catalogue.c.severity == r.c.severity,
        ),
    )
    lines = select(
        r.c.subject_id.label("subject_id"),
        r.c.id.label("record_id"),
        points.label("points"),
        reason.label("reason"),
    ).select_from(joined)
    if subject_ids is not None:
        lines = lines.where(r.c.subject_id.in_(subject_ids))
    line = lines.subquery("lines")
    entry = (
        literal('"')
        + cast(line.c.record_id, String)
        + literal('":[')
        + cast(line.c.points, String)
        + literal(',"')
        + line.c.reason
        + literal('"]')
    )
    per_subject = (
        select(
            line.c.subject_id.label("subject_id"),
            func.sum(case((line.c.reason == "counts", line.c.points), else_=0)).label("delta"),
            _ConcatAgg(entry).label("entries"),
        )
        .group_by(line.c.subject_id)
        .subquery("per_subject")
    )
    score = literal(policy.base_score, Integer) + per_subject.c.delta
    grade_class, stars = _band_case(score, policy)
    columns = [
        grades.c.subject_id,
        grades.c.policy_version,
        grades.c.policy_hash,
        grades.c.score,
        grades.c.grade_class,
        grades.c.stars,
        grades.c.explanation,
        grades.c.as_of,
        grades.c.graded_at,
    ]
    constants = (
        literal(policy.version, String),
        literal(policy.sha256, String),
    )
    stamp = (literal(as_of, Date), literal(now, DateTime(timezone=True)))
    graded = select(
        per_subject.c.subject_id,
        *constants,
        score,
        grade_class,
        stars,
        _AsJson(literal("{") + per_subject.c.entries + literal("}")),
        *stamp,
    )
    base_class, base_stars = _band_case(literal(policy.base_score, Integer), policy)
    empty = select(
        subjects.c.id,
        *constants,
        literal(policy.base_score, Integer),
        base_class,
        base_stars,
        _AsJson(literal("{}")),
        *stamp,
    ).where(~exists().where(r.c.subject_id == subjects.c.id))
    if subject_ids is not None:
        empty = empty.where(subjects.c.id.in_(subject_ids))
    return (
        grades.insert().from_select(columns, graded),
        grades.insert().from_select(columns, empty),
    )


def due_statement(policy: Policy, graded_as_of: dt.date, as_of: dt.date) -> Select[Any]:
    """Subjects graded under ``policy`` at ``graded_as_of`` whose grade may differ at
    ``as_of``: a record's decision date or effect end falls between the two dates, or a
    record arrived, was withdrawn, repaired or archived after the grade was made."""
    r, g = records, grades
    low, high = sorted((graded_as_of, as_of))
    crossed = or_(
        and_(r.c.decision_date > literal(low, Date), r.c.decision_date <= literal(high, Date)),
        and_(
            r.c.decision_date > expired_on_or_before(policy, low),
            r.c.decision_date <= expired_on_or_before(policy, high),
        ),
    )
    changed = or_(
        r.c.received_at > g.c.graded_at,
        r.c.withdrawn_at > g.c.graded_at,
        r.c.repaired_at > g.c.graded_at,
        r.c.archived_at > g.c.graded_at,
    )
    condition = or_(crossed, changed) if low != high else changed
    return (
        select(r.c.subject_id)
        .join(g, g.c.subject_id == r.c.subject_id)
        .where(
            g.c.policy_hash == literal(policy.sha256, String),
            g.c.as_of == literal(graded_as_of, Date),
            condition,
        )
        .distinct()
    )


def ungraded_statement(policy: Policy) -> Select[Any]:
    """Subjects without a grade under ``policy`` (never graded, or under another policy)."""
    return select(subjects.c.id).where(
        ~exists().where(
            grades.c.subject_id == subjects.c.id,
            grades.c.policy_hash == literal(policy.sha256, String),
        )
    )
