"""Grading at scale: 1,000,000 subjects x 20 records, on SQLite and on PostgreSQL.

``run(quick)`` returns three metrics in ``bench/run.py``'s format:

- ``grade_full_1m_s_sqlite`` / ``grade_full_1m_s_postgres``: :func:`issuer.grading.grade_all`
  (one transaction: replace every grade, log the run) beside a bare ``GROUP BY subject_id``
  over the same ``records`` table in the same run and database;
- ``regrade_1k_ms``: :func:`issuer.grading.regrade` of 1,000 subjects spread over the table
  (grades rewritten and returned with their full explanations), on PostgreSQL, median of 5,
  beside a bare ``GROUP BY`` over those subjects' records. Also printed:
  :func:`issuer.grading.refresh_grades` (the same re-grade without building explanation
  objects) and the SQLite figures.

``QUICK=1`` uses 20,000 subjects. The data are generated set-based in the database
(``generate_series`` on PostgreSQL, a recursive CTE on SQLite) with the same values on both,
and both databases must give the same class counts (checked). PostgreSQL is reached through
``STARCARD_BENCH_PG`` (an admin DSN; default the local server); a scratch database is created
and dropped. Run alone: ``.venv/bin/python -m bench.grade`` (prints the figures).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select, text

from bench.common import metric
from issuer.db import records
from issuer.grading import grade_all, refresh_grades, regrade
from issuer.migrate import upgrade
from issuer.policy import load_policy
from issuer.wiring import make_engine

RECORDS_PER_SUBJECT = 20
AS_OF = dt.date(2026, 11, 28)
NOW = dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC)
PG_ADMIN_DSN = os.environ.get("STARCARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# One expression set for both dialects: integer / and % behave the same on SQLite and
# PostgreSQL. ``k`` is the insertion order and ``r = k * SPREAD mod m`` (a bijection) the
# record number, ``r / 20`` its subject: a subject's records arrive scattered over the whole
# load, as deliveries from many departments over years do (not clustered by subject).
SPREAD = 1_000_003  # prime; coprime with m = 20 * n for every n used here
_KIND = "((r * 7 + r / 20) % 6)"
_CATEGORY = (
    f"CASE {_KIND} WHEN 0 THEN 'volunteering' WHEN 1 THEN 'honour' "
    "WHEN 2 THEN 'blood_donation' WHEN 3 THEN 'admin_penalty' "
    "WHEN 4 THEN 'court_judgment_default' ELSE 'tax_arrears' END"
)
_DIRECTION = f"CASE WHEN {_KIND} < 3 THEN '+' ELSE '-' END"
_SEVERITY = "CASE (r / 7) % 3 WHEN 0 THEN '轻微' WHEN 1 THEN '一般' ELSE '严重' END"
_COLUMNS = (
    "subject_id, category, direction, severity, legal_basis, authority, document_number, "
    "decision_date, source, received_at, objection_open, withdrawn_at, repaired_at, archived_at"
)


def _record_select(dialect: str) -> str:
    """SELECT of the generated records over a sequence ``r`` (dialect specifics inline)."""
    if dialect == "postgresql":
        subject = "'B' || lpad((r / 20)::text, 9, '0')"
        document = "'D' || lpad(k::text, 10, '0')"
        decided = "DATE '2019-01-01' + ((r * 37) % 2888)::int"
        received, changed = "TIMESTAMPTZ '2026-11-01 00:00+00'", "TIMESTAMPTZ '2026-11-02 00:00+00'"
    else:
        subject = "'B' || printf('%09d', r / 20)"
        document = "'D' || printf('%010d', k)"
        decided = "date('2019-01-01', '+' || ((r * 37) % 2888) || ' days')"
        received, changed = "'2026-11-01 00:00:00.000000'", "'2026-11-02 00:00:00.000000'"
    return (
        f"SELECT {subject}, {_CATEGORY}, {_DIRECTION}, {_SEVERITY}, "
        "'《条例》第' || (r % 50) || '条', '区信用办', "
        f"{document}, {decided}, 'bench', {received}, "
        "CASE WHEN r % 200 = 11 THEN 1 ELSE 0 END, "
        f"CASE WHEN r % 100 = 3 THEN {changed} END, "
        f"CASE WHEN r % 50 = 7 THEN {changed} END, "
        f"CASE WHEN r % 50 = 7 THEN {changed} END"
    )


def _load_postgres(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subjects (id, id_number_enc, id_number_index, id_number_masked, "
                "name_enc, birth_date, created_at) "
                "SELECT 'B' || lpad(i::text, 9, '0'), '\\x00'::bytea, int8send(i::bigint), "
                "'110105********0000', '\\x00'::bytea, DATE '1980-01-01', "
                "TIMESTAMPTZ '2026-11-01 00:00+00' FROM generate_series(0, :n - 1) AS i"
            ),
            {"n": n},
        )
        # Bulk load without the secondary indexes and the foreign key, then build and
        # validate them (as any bulk load would): the table ends up exactly as migrated.
        conn.execute(text("DROP INDEX ix_records_subject_id"))
        conn.execute(text("ALTER TABLE records DROP CONSTRAINT uq_records_source_document"))
        conn.execute(text("ALTER TABLE records DROP CONSTRAINT records_subject_id_fkey"))
        conn.execute(
            text(
                f"INSERT INTO records ({_COLUMNS}) {_record_select('postgresql')} "
                f"FROM (SELECT k, k * {SPREAD} % :m AS r "
                "FROM generate_series(0::bigint, :m - 1) AS k) AS g"
            ),
            {"m": n * RECORDS_PER_SUBJECT},
        )
        conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        conn.execute(text("CREATE INDEX ix_records_subject_id ON records (subject_id)"))
        conn.execute(
            text(
                "ALTER TABLE records ADD CONSTRAINT uq_records_source_document "
                "UNIQUE (source, document_number)"
            )
        )
        conn.execute(
            text(
                "ALTER TABLE records ADD CONSTRAINT records_subject_id_fkey "
                "FOREIGN KEY (subject_id) REFERENCES subjects (id)"
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE subjects"))
        conn.execute(text("VACUUM ANALYZE records"))


def _load_sqlite(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subjects (id, id_number_enc, id_number_index, id_number_masked, "
                "name_enc, birth_date, created_at) "
                "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq "
                "WHERE i < :n - 1) "
                "SELECT 'B' || printf('%09d', i), X'00', CAST(printf('%016d', i) AS BLOB), "
                "'110105********0000', X'00', '1980-01-01', '2026-11-01 00:00:00.000000' "
                "FROM seq"
            ),
            {"n": n},
        )
        conn.execute(
            text(
                f"INSERT INTO records ({_COLUMNS}) "
                "WITH RECURSIVE seq(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM seq "
                f"WHERE k < :m - 1) {_record_select('sqlite')} "
                f"FROM (SELECT k, k * {SPREAD} % :m AS r FROM seq)"
            ),
            {"m": n * RECORDS_PER_SUBJECT},
        )
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise RuntimeError(
            f"the grading benchmark needs PostgreSQL (STARCARD_BENCH_PG={PG_ADMIN_DSN}): {exc}"
        ) from exc
    name = "starcard_bench_" + secrets.token_hex(6)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _timed(label: str, fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t0
    print(f"  {label}: {elapsed:.2f} s", file=sys.stderr)
    return elapsed


def _bench_database(url: str, n: int) -> dict[str, Any]:
    """Loads, then measures bare GROUP BY, full grading and 1k re-grades on one database."""
    engine = make_engine(url)
    dialect = engine.dialect.name
    print(f"{dialect}: {n:,} subjects x {RECORDS_PER_SUBJECT} records", file=sys.stderr)
    if dialect == "sqlite":

        @event.listens_for(engine, "connect")
        def _tune(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA synchronous=OFF")  # a benchmark's scratch file
            cursor.execute("PRAGMA cache_size=-1000000")  # 1 GB page cache
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

    upgrade(engine)
    policy = load_policy()
    loader = _load_postgres if dialect == "postgresql" else _load_sqlite
    result: dict[str, Any] = {"load_s": _timed("load", lambda: loader(engine, n))}

    def bare() -> None:
        with engine.connect() as conn:
            grouped = select(records.c.subject_id).group_by(records.c.subject_id).subquery()
            count = conn.execute(select(text("count(*)")).select_from(grouped)).scalar_one()
            assert count == n, count

    bare()  # warm the cache the same way for both measurements
    result["bare_s"] = _timed("bare GROUP BY subject_id", bare)
    runs = []

    def full() -> None:
        with engine.begin() as conn:
            runs.append(grade_all(conn, policy, AS_OF, NOW))

    result["full_s"] = _timed("grade_all", full)
    run = runs[-1]
    assert run.subjects == n, run
    result["by_class"] = run.by_class
    step = max(1, n // 1000)
    sample = [f"B{i:09d}" for i in range(0, n, step)][:1000]
    timings: dict[str, list[float]] = {"regrade": [], "refresh": [], "bare": []}
    for _ in range(5):
        t0 = time.perf_counter()
        with engine.begin() as conn:
            graded = regrade(conn, policy, sample, AS_OF, NOW)
        timings["regrade"].append(time.perf_counter() - t0)
        assert len(graded) == len(sample)
        t0 = time.perf_counter()
        with engine.begin() as conn:
            refresh_grades(conn, policy, sample, AS_OF, NOW)
        timings["refresh"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(
                select(records.c.subject_id, text("count(*)"))
                .where(records.c.subject_id.in_(sample))
                .group_by(records.c.subject_id)
            ).all()
        timings["bare"].append(time.perf_counter() - t0)
    result["regrade_1k_s"] = statistics.median(timings["regrade"])
    result["refresh_1k_s"] = statistics.median(timings["refresh"])
    result["bare_1k_s"] = statistics.median(timings["bare"])
    print(
        f"  regrade 1k: {result['regrade_1k_s'] * 1e3:.1f} ms with explanations, "
        f"{result['refresh_1k_s'] * 1e3:.1f} ms grades only "
        f"(bare 1k GROUP BY {result['bare_1k_s'] * 1e3:.1f} ms)",
        file=sys.stderr,
    )
    engine.dispose()
    return result


def run(quick: bool, subjects: int | None = None) -> dict[str, Any]:
    """The three grading metrics (see the module docstring); ``subjects`` overrides the size
    (the metric names keep saying 1m)."""
    n = subjects or (20_000 if quick else 1_000_000)
    if math.gcd(SPREAD, n * RECORDS_PER_SUBJECT) != 1:
        raise ValueError(f"{n} subjects: choose a size whose record count is coprime to {SPREAD}")
    size = f"{n:,} subjects x {RECORDS_PER_SUBJECT} records"
    with tempfile.TemporaryDirectory(prefix="starcard-grade-") as tmp:
        lite = _bench_database(f"sqlite:///{Path(tmp) / 'grade.db'}", n)
    with postgres_database() as url:
        pg = _bench_database(url, n)
    if lite["by_class"] != pg["by_class"]:
        raise RuntimeError(f"SQLite and PostgreSQL disagree: {lite['by_class']} {pg['by_class']}")
    bare = "bare GROUP BY subject_id over the same records table, same run"
    return {
        "grade_full_1m_s_sqlite": metric(
            lite["full_s"], "s", lite["bare_s"], f"{bare} (SQLite, {size})", "lower"
        ),
        "grade_full_1m_s_postgres": metric(
            pg["full_s"], "s", pg["bare_s"], f"{bare} (PostgreSQL, {size})", "lower"
        ),
        "regrade_1k_ms": metric(
            pg["regrade_1k_s"] * 1e3,
            "ms",
            pg["bare_1k_s"] * 1e3,
            "bare GROUP BY over the same 1,000 subjects' records (PostgreSQL, median of 5)",
            "lower",
        ),
    }


def main() -> None:
    quick = os.environ.get("QUICK") == "1"
    size = os.environ.get("GRADE_SUBJECTS")
    print(json.dumps(run(quick, int(size) if size else None), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
