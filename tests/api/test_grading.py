"""Set-based grading in SQL, on SQLite and PostgreSQL (``issuer_ctx`` runs each test on both).

- determinism: same records + same policy = the same grades bit for bit, whatever the order
  the records arrived in, full run or incremental, SQLite or PostgreSQL (one golden digest);
- SQL == the pure reference (:func:`issuer.grading.grade_records`) on random record sets;
- incremental re-grade touches only the subjects asked for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, insert, select, update

from issuer.db import grades, records, subjects
from issuer.db_grading import grade_runs, policy_documents, policy_points
from issuer.grading import (
    Grade,
    GradingError,
    UnknownSubject,
    due_for_regrade,
    grade_all,
    grade_records,
    load_grade,
    refresh_grades,
    regrade,
)
from issuer.policy import DEFAULT_POLICY, POLICY_DIR, Policy, load_policy, make_registry
from issuer.receipts import merkle_root
from issuer.wiring import IssuerContext
from verifier.core.cbor import encode

AS_OF = dt.date(2026, 11, 28)
NOW = dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC)
LATER = dt.datetime(2026, 11, 29, 9, 30, tzinfo=dt.UTC)

# A policy owned by this test, so that the golden digest does not move when the shipped
# policy is edited. Two regimes, a catalogue with a zero-point item, objections suspend.
TEST_POLICY = """
version = "test-grading.1"
effective_from = 2026-01-01
base_score = 100
[classes]
A = 105
B = 95
C = 80
[stars]
1 = 105
2 = 110
3 = 115
4 = 120
5 = 130
[effect_days]
"+" = { "轻微" = 365, "一般" = 730, "严重" = 1095 }
[[regimes]]
name = "old regime"
in_force_from = 2019-07-01
periods."轻微" = { min_days = 0, max_days = 0 }
periods."一般" = { min_days = 92, max_days = 365 }
periods."严重" = { min_days = 184, max_days = 1095 }
[[regimes]]
name = "new regime"
in_force_from = 2026-04-01
periods."轻微" = { min_days = 0, max_days = 92 }
periods."一般" = { min_days = 92, max_days = 180 }
periods."严重" = { min_days = 366, max_days = 1095 }
[objection]
suspends_effect = true
decide_working_days = 5
escalate_after_working_days = 20
[categories.volunteering]
direction = "+"
points = { "轻微" = 2, "一般" = 5, "严重" = 10 }
[categories.honour]
direction = "+"
points = { "轻微" = 5, "一般" = 10, "严重" = 20 }
[categories.admin_penalty]
direction = "-"
points = { "轻微" = 0, "一般" = 10, "严重" = 30 }
[categories.court_judgment_default]
direction = "-"
points = { "轻微" = 10, "一般" = 30, "严重" = 60 }
"""
#: The digest of the seed-2026 data set graded under TEST_POLICY at AS_OF, on any database.
GOLDEN = "4f19cb3c19fd80681621d3cb5860026afb48192f43f66439d77b703ade59748d"

CATEGORIES = ("volunteering", "honour", "admin_penalty", "court_judgment_default", "littering")
SEVERITIES = ("轻微", "一般", "严重", "未知")
BOUNDARIES = (
    dt.date(2026, 3, 31),
    dt.date(2026, 4, 1),
    AS_OF,
    AS_OF + dt.timedelta(days=1),
    AS_OF - dt.timedelta(days=180),
    AS_OF - dt.timedelta(days=181),
    AS_OF - dt.timedelta(days=365),
    AS_OF - dt.timedelta(days=1095),
    AS_OF - dt.timedelta(days=1094),
)


@pytest.fixture
def test_policy(tmp_path: Path) -> Policy:
    path = tmp_path / "test-grading.toml"
    path.write_text(TEST_POLICY, encoding="utf-8")
    return load_policy(path)


def add_subjects(conn: Connection, ids: list[str]) -> None:
    conn.execute(
        insert(subjects),
        [
            dict(
                id=sid,
                id_number_enc=b"\x00",
                id_number_index=hashlib.sha256(sid.encode()).digest(),
                id_number_masked="110105********0000",
                name_enc=b"\x00",
                birth_date=dt.date(1980, 1, 1),
                created_at=NOW,
            )
            for sid in ids
        ],
    )


def record_row(rid: int, subject_id: str, rng: random.Random) -> dict[str, Any]:
    category = rng.choice(CATEGORIES)
    direction = "+" if category in ("volunteering", "honour") else "-"
    if rng.random() < 0.05:
        direction = "+" if direction == "-" else "-"  # contradicts the catalogue
    stamp = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    return dict(
        id=rid,
        subject_id=subject_id,
        category=category,
        direction=direction,
        severity=rng.choice(SEVERITIES) if rng.random() < 0.1 else rng.choice(SEVERITIES[:3]),
        legal_basis=f"《条例》第{rid % 40}条",
        authority="区信用办",
        document_number=f"DOC-{rid}",
        decision_date=rng.choice(BOUNDARIES)
        if rng.random() < 0.3
        else dt.date(2018, 1, 1) + dt.timedelta(days=rng.randrange(3300)),
        source="test",
        received_at=stamp,
        objection_open=1 if rng.random() < 0.1 else 0,
        withdrawn_at=stamp if rng.random() < 0.05 else None,
        repaired_at=stamp if rng.random() < 0.05 else None,
        archived_at=stamp if rng.random() < 0.03 else None,
    )


def dataset(seed: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Subjects S000..S079 (some without records) and their records, in a shuffled order."""
    rng = random.Random(seed)
    ids = [f"S{i:03d}" for i in range(80)]
    rows: list[dict[str, Any]] = []
    for sid in ids:
        for _ in range(rng.choice((0, 1, 3, 8, 15))):
            rows.append(record_row(len(rows) + 1, sid, rng))
    rng.shuffle(rows)
    return ids, rows


def digest(result: dict[str, Grade]) -> str:
    """SHA-256 over the canonical CBOR of every grade (score, class, stars, explanation root)."""
    body = {
        sid: [g.score, g.grade_class, g.stars, merkle_root(g.lines)]
        for sid, g in sorted(result.items())
    }
    return hashlib.sha256(encode(body)).hexdigest()


def stored(conn: Connection) -> list[tuple[Any, ...]]:
    return [
        (r.subject_id, r.score, r.grade_class, r.stars, r.explanation, r.policy_hash, r.as_of)
        for r in conn.execute(select(grades).order_by(grades.c.subject_id))
    ]


def test_same_records_same_policy_same_grades_bit_for_bit(
    issuer_ctx: IssuerContext, test_policy: Policy
) -> None:
    ids, rows = dataset(2026)
    with issuer_ctx.engine.begin() as conn:
        add_subjects(conn, ids)
        conn.execute(insert(records), rows)
        run = grade_all(conn, test_policy, AS_OF, NOW)
        full = {sid: load_grade(conn, test_policy, sid) for sid in ids}
        first_rows = stored(conn)
    assert run.subjects == len(ids) and sum(run.by_class.values()) == len(ids)
    assert len(run.by_class) >= 3  # the data set spans several classes
    graded = {sid: g for sid, g in full.items() if g is not None}
    assert len(graded) == len(ids)

    # the same records delivered in the opposite order, into a fresh copy of the tables
    with issuer_ctx.engine.begin() as conn:
        conn.execute(grades.delete())
        conn.execute(records.delete())
        conn.execute(insert(records), list(reversed(rows)))
        incremental = regrade(conn, test_policy, ids, AS_OF, NOW)
        assert stored(conn) == first_rows
        grade_all(conn, test_policy, AS_OF, NOW)
        assert stored(conn) == first_rows
        by_subject: dict[str, list[Any]] = {sid: [] for sid in ids}
        for row in conn.execute(select(records)):
            by_subject[row.subject_id].append(row)
    reference = {sid: grade_records(test_policy, rs, AS_OF) for sid, rs in by_subject.items()}
    assert incremental == graded == reference
    assert digest(graded) == digest(incremental) == GOLDEN


def test_sql_equals_the_reference_on_random_records(
    issuer_ctx: IssuerContext, tmp_path: Path, test_policy: Policy
) -> None:
    registry = make_registry(
        [
            load_policy(DEFAULT_POLICY),
            load_policy(POLICY_DIR / "pilot-2019.1.toml"),
        ]
    )
    no_suspend = tmp_path / "no-suspend.toml"
    no_suspend.write_text(
        DEFAULT_POLICY.read_text(encoding="utf-8")
        .replace("suspends_effect = true", "suspends_effect = false")
        .replace('version = "pilot-2026.1"', 'version = "pilot-2026.1-nosuspend"'),
        encoding="utf-8",
    )
    policies = [*registry.policies, load_policy(no_suspend), test_policy]
    counter = iter(range(1, 10**9))

    record = st.fixed_dictionaries(
        {
            "category": st.sampled_from(
                ("volunteering", "honour", "blood_donation", "admin_penalty", "tax_arrears", "x")
            ),
            "direction": st.sampled_from(("+", "-", "?")),
            "severity": st.sampled_from(("轻微", "一般", "严重", "未知")),
            "decision_date": st.one_of(
                st.dates(dt.date(2015, 1, 1), dt.date(2028, 12, 31)),
                st.sampled_from(BOUNDARIES),
            ),
            "objection_open": st.sampled_from((0, 0, 0, 1, 2)),
            "withdrawn": st.booleans(),
            "repaired": st.booleans(),
            "archived": st.booleans(),
        }
    )

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        st.lists(record, max_size=12),
        st.sampled_from(range(len(policies))),
        st.sampled_from((AS_OF, dt.date(2026, 4, 1), dt.date(2027, 6, 30))),
    )
    def check(recs: list[dict[str, Any]], which: int, as_of: dt.date) -> None:
        policy = policies[which]
        sid = f"P{next(counter):06d}"
        stamp = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        with issuer_ctx.engine.begin() as conn:
            add_subjects(conn, [sid])
            if recs:
                conn.execute(
                    insert(records),
                    [
                        dict(
                            subject_id=sid,
                            category=r["category"],
                            direction=r["direction"],
                            severity=r["severity"],
                            legal_basis="basis",
                            authority="authority",
                            document_number=f"{sid}-{i}",
                            decision_date=r["decision_date"],
                            source="hypothesis",
                            received_at=stamp,
                            objection_open=r["objection_open"],
                            withdrawn_at=stamp if r["withdrawn"] else None,
                            repaired_at=stamp if r["repaired"] else None,
                            archived_at=stamp if r["archived"] else None,
                        )
                        for i, r in enumerate(recs)
                    ],
                )
            sql = regrade(conn, policy, [sid], as_of, NOW)[sid]
            rows = conn.execute(select(records).where(records.c.subject_id == sid)).all()
        assert sql == grade_records(policy, rows, as_of)

    check()


def test_incremental_regrade_touches_only_the_affected_subjects(
    issuer_ctx: IssuerContext, test_policy: Policy
) -> None:
    ids, rows = dataset(7)
    with issuer_ctx.engine.begin() as conn:
        add_subjects(conn, ids)
        conn.execute(insert(records), rows)
        grade_all(conn, test_policy, AS_OF, NOW)
        before = {r.subject_id: r for r in conn.execute(select(grades))}
        counting = next(r for r in rows if grade_counts(conn, test_policy, r["id"]))
        target = counting["subject_id"]
        conn.execute(update(records).where(records.c.id == counting["id"]).values(objection_open=1))
        result = regrade(conn, test_policy, [target], AS_OF, LATER)
        after = {r.subject_id: r for r in conn.execute(select(grades))}
        assert set(result) == {target}
        assert result[target].score != before[target].score
        line = next(x for x in result[target].lines if x.record_id == counting["id"])
        assert line.reason_code == "objection" and not line.counts
        for sid in ids:
            if sid != target:
                assert after[sid].graded_at == before[sid].graded_at
                assert after[sid].explanation == before[sid].explanation
        # a full run now agrees with the incremental one
        grade_all(conn, test_policy, AS_OF, LATER)
        assert load_grade(conn, test_policy, target) == result[target]
        kinds = conn.execute(select(grade_runs.c.kind).order_by(grade_runs.c.id)).scalars()
        assert list(kinds) == ["full", "incremental", "full"]


def grade_counts(conn: Connection, policy: Policy, record_id: int) -> bool:
    row = conn.execute(select(records).where(records.c.id == record_id)).one()
    grade = load_grade(conn, policy, row.subject_id)
    assert grade is not None
    return any(x.record_id == record_id and x.counts for x in grade.lines)


def test_regrade_refuses_unknown_subjects_and_writes_nothing(
    issuer_ctx: IssuerContext, test_policy: Policy
) -> None:
    with issuer_ctx.engine.begin() as conn:
        add_subjects(conn, ["S1"])
        with pytest.raises(UnknownSubject, match="NOPE"):
            regrade(conn, test_policy, ["S1", "NOPE"], AS_OF, NOW)
        assert conn.execute(select(grades)).first() is None
        assert regrade(conn, test_policy, [], AS_OF, NOW) == {}


def test_stored_grade_names_its_policy_and_detects_stale_records(
    issuer_ctx: IssuerContext, test_policy: Policy
) -> None:
    with issuer_ctx.engine.begin() as conn:
        add_subjects(conn, ["S1", "S2"])
        conn.execute(insert(records), [record_row(1, "S1", random.Random(1))])
        regrade(conn, test_policy, ["S1", "S2"], AS_OF, NOW)
        row = conn.execute(select(grades).where(grades.c.subject_id == "S1")).one()
        assert (row.policy_version, row.policy_hash) == (test_policy.version, test_policy.sha256)
        document = conn.execute(
            select(policy_documents.c.document).where(
                policy_documents.c.sha256 == test_policy.sha256
            )
        ).scalar_one()
        assert hashlib.sha256(document.encode()).hexdigest() == test_policy.sha256
        points = conn.execute(
            select(policy_points).where(policy_points.c.policy_hash == test_policy.sha256)
        ).all()
        assert len(points) == 4 * 3
        # the registry finds the grade's policy by hash; another policy is refused
        registry = make_registry([test_policy, load_policy()])
        assert load_grade(conn, registry, "S1") == load_grade(conn, test_policy, "S1")
        with pytest.raises(GradingError, match="graded under policy"):
            load_grade(conn, load_policy(), "S1")
        assert load_grade(conn, test_policy, "S9") is None
        # a record added after grading makes the stored explanation stale
        conn.execute(insert(records), [record_row(2, "S1", random.Random(2))])
        with pytest.raises(GradingError, match="re-grade"):
            load_grade(conn, test_policy, "S1")
        # two policies graded side by side keep their own points
        regrade(conn, load_policy(), ["S2"], AS_OF, NOW)
        hashes = set(conn.execute(select(grades.c.policy_hash)).scalars())
        assert hashes == {test_policy.sha256, load_policy().sha256}


def test_due_for_regrade_finds_subjects_changed_by_time_or_by_records(
    issuer_ctx: IssuerContext, test_policy: Policy
) -> None:
    later = AS_OF + dt.timedelta(days=10)

    def row(rid: int, sid: str, category: str, decided: dt.date) -> dict[str, Any]:
        plain = record_row(rid, sid, random.Random(rid))
        direction = "+" if category == "volunteering" else "-"
        return {
            **plain,
            "category": category,
            "direction": direction,
            "severity": "一般",
            "decision_date": decided,
            "objection_open": 0,
            "withdrawn_at": None,
            "repaired_at": None,
            "archived_at": None,
        }

    with issuer_ctx.engine.begin() as conn:
        add_subjects(conn, ["S1", "S2", "S3", "S4"])
        conn.execute(
            insert(records),
            [
                row(1, "S1", "admin_penalty", dt.date(2026, 6, 5)),  # effect ends 2026-12-02
                row(2, "S2", "volunteering", dt.date(2026, 12, 5)),  # decided after AS_OF
                row(3, "S3", "volunteering", dt.date(2025, 1, 1)),  # counts until 2027
            ],
        )
        grade_all(conn, test_policy, AS_OF, NOW)
        assert due_for_regrade(conn, test_policy, AS_OF) == []
        assert due_for_regrade(conn, test_policy, later) == ["S1", "S2"]
        add_subjects(conn, ["S5"])
        conn.execute(update(records).where(records.c.id == 3).values(withdrawn_at=LATER))
        due = due_for_regrade(conn, test_policy, later)
        assert due == ["S1", "S2", "S3", "S5"]
        assert due_for_regrade(conn, load_policy(), later) == ["S1", "S2", "S3", "S4", "S5"]
        run = refresh_grades(conn, test_policy, due, later, LATER)
        assert run.subjects == 4 and sum(run.by_class.values()) == 4
        assert due_for_regrade(conn, test_policy, later) == []
        incremental = stored(conn)
        grade_all(conn, test_policy, later, LATER)
        full = stored(conn)
    # S4 (no records) kept its AS_OF grade; otherwise the incremental state is the full one
    assert [r[:6] for r in incremental] == [r[:6] for r in full]


def test_migration_creates_exactly_the_grading_tables(issuer_ctx: IssuerContext) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from issuer.db import metadata

    mine = {"policy_documents", "policy_points", "grade_runs"}
    with issuer_ctx.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)

    def table_of(diff: Any) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff
        for part in item[1:]:
            name = getattr(part, "name", None) if not isinstance(part, str) else None
            table = getattr(part, "table", None)
            if table is not None and getattr(table, "name", None):
                return str(table.name)
            if name in mine:
                return str(name)
            if isinstance(part, str) and part in mine:
                return part
        return None

    assert [d for d in diffs if table_of(d) in mine] == []
