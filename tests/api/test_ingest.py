"""Record ingestion from files: per-row and atomic modes, reports, corrections and
withdrawals, unknown subjects, encodings and headers (CLI and engine, real databases)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from issuer.cli import app
from issuer.db import audit_events, records, subjects
from issuer.db_platform import record_history
from issuer.ingest import IngestFileError, Mode, RawRow, RowResult, Status, ingest, read_file
from issuer.platform import register_organisation, register_subject
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import id_number

HEADER = (
    "id_number",
    "uscc",
    "name",
    "category",
    "direction",
    "severity",
    "legal_basis",
    "authority",
    "document_number",
    "decision_date",
    "source",
    "action",
    "reason",
)
RECENT = (dt.date.today() - dt.timedelta(days=60)).isoformat()


def row(n: int, **changes: str) -> dict[str, str]:
    base = {
        "id_number": id_number(1),
        "category": "tax_arrears",
        "direction": "-",
        "severity": "一般",
        "legal_basis": "《税收征收管理法》第六十八条",
        "authority": "区税务局",
        "document_number": f"税罚〔2026〕{n}号",
        "decision_date": RECENT,
        "source": "tax",
    }
    return {**base, **changes}


def write_csv(
    path: Path, rows: Sequence[dict[str, str]], header: Sequence[str] = HEADER, **kw: Any
) -> Path:
    with path.open("w", newline="", **{"encoding": "utf-8", **kw}) as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(ctx: IssuerContext, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), obj=ctx, env={"COLUMNS": "250"})


def count(ctx: IssuerContext, table: Any = records) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def registered(ctx: IssuerContext, number: str = id_number(1)) -> str:
    with ctx.engine.begin() as conn:
        return register_subject(conn, ctx.vault, number, "张三", NOW, "test")


def test_per_row_file_reports_every_row_and_re_import_changes_nothing(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    person = registered(issuer_ctx)
    newcomer = id_number(2)
    rows = [
        row(1),  # line 2: accepted
        row(1),  # line 3: same again in the same file
        row(2, legal_basis=""),  # line 4
        row(3, id_number=id_number(3)),  # line 5: unknown person, no name
        row(4, id_number=newcomer, name="李四"),  # line 6: registered from the row
        row(5, category="jaywalking"),  # line 7
        row(6, id_number="110105194912310021"),  # line 8: wrong check character
        row(1, severity="严重"),  # line 9: same document, other content
        row(7, id_number="", uscc="91110000600037341L", name="某某有限公司"),  # line 10
    ]
    source = write_csv(tmp_path / "tax.csv", rows)
    report = tmp_path / "report.csv"
    result = run(issuer_ctx, "records", "import", str(source), "--report", str(report))
    assert result.exit_code == 1, result.output
    with report.open(encoding="utf-8") as f:
        lines = {int(r["row"]): r for r in csv.DictReader(f)}
    assert {n: lines[n]["status"] for n in lines} == {
        2: "accepted",
        3: "duplicate",
        4: "refused",
        5: "refused",
        6: "accepted",
        7: "refused",
        8: "refused",
        9: "refused",
        10: "accepted",
    }
    assert "legal basis" in lines[4]["reason"]
    assert "not registered" in lines[5]["reason"] and "name" in lines[5]["reason"]
    assert "registered" in lines[6]["reason"]
    assert "catalogue" in lines[7]["reason"]
    assert "id_number" in lines[8]["reason"] and "check character" in lines[8]["reason"]
    assert "correction" in lines[9]["reason"]
    assert count(issuer_ctx) == 3
    assert count(issuer_ctx, subjects) == 3
    # identity numbers never appear in clear in what the clerk sees
    shown = result.output + report.read_text(encoding="utf-8")
    for number in (id_number(1), id_number(3), newcomer):
        assert number not in shown
    assert id_number(3)[:4] + "**********" + id_number(3)[-4:] in shown
    assert "3 accepted, 1 duplicate, 5 refused" in result.output
    assert "3 subject(s) to re-grade" in result.output
    with issuer_ctx.engine.connect() as conn:
        stored = conn.execute(select(records.c.subject_id)).scalars().all()
    assert person in stored

    again = run(issuer_ctx, "records", "import", str(source), "--report", str(report))
    assert again.exit_code == 1
    assert "0 accepted, 4 duplicate, 5 refused" in again.output
    assert "0 subject(s) to re-grade" in again.output
    assert count(issuer_ctx) == 3


def test_atomic_file_stores_all_rows_or_none(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    registered(issuer_ctx)
    source = write_csv(tmp_path / "tax.csv", [row(1), row(2), row(3, severity="很严重")])
    report = tmp_path / "report.json"
    result = run(issuer_ctx, "records", "import", str(source), "--atomic", "--report", str(report))
    assert result.exit_code == 1
    assert "NOTHING stored" in result.output
    data = json.loads(report.read_text(encoding="utf-8"))
    assert [r["status"] for r in data["rows"]] == ["rolled_back", "rolled_back", "refused"]
    assert "row 4" in data["rows"][0]["reason"]
    assert data["summary"]["committed"] is False
    assert (data["summary"]["total"], data["summary"]["rolled_back"]) == (3, 2)
    assert data["summary"]["affected_subject_ids"] == []
    assert count(issuer_ctx) == 0

    write_csv(source, [row(1), row(2), row(3, severity="严重")])
    fixed = run(issuer_ctx, "records", "import", str(source), "--atomic")
    assert fixed.exit_code == 0, fixed.output
    assert count(issuer_ctx) == 3


def test_corrections_and_withdrawals_keep_the_record_and_its_history(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    person = registered(issuer_ctx)
    other = registered(issuer_ctx, id_number(5))
    rows = [
        row(1),
        row(1, severity="严重", action="correct", reason="复议变更 区税复〔2026〕2号"),
        row(1, severity="严重", action="correct", reason="复议变更 区税复〔2026〕2号"),
        row(2),
        row(2, id_number=id_number(5), action="correct", reason="错录当事人"),
        row(3),
        {
            "document_number": "税罚〔2026〕3号",
            "source": "tax",
            "action": "withdraw",
            "reason": "行政复议撤销",
        },
        {
            "document_number": "税罚〔2026〕3号",
            "source": "tax",
            "action": "withdraw",
            "reason": "行政复议撤销",
        },
        row(3, severity="严重", action="correct", reason="x"),
        row(9, action="correct", reason="x"),
        {"document_number": "税罚〔2026〕1号", "source": "tax", "action": "withdraw"},
        row(1, action="remove"),
    ]
    results: list[RowResult] = []
    path = write_csv(tmp_path / "changes.csv", rows)
    summary = ingest(
        issuer_ctx.engine,
        issuer_ctx.vault,
        issuer_ctx.policy,
        read_file(path),
        mode=Mode.PER_ROW,
        actor="test",
        now=NOW,
        on_result=results.append,
        chunk_size=4,  # rows of one document across chunks, and within one
    )
    statuses = [r.status.value for r in results]
    assert statuses == [
        "accepted", "accepted", "duplicate",
        "accepted", "accepted",
        "accepted", "accepted", "duplicate",
        "refused", "refused", "refused", "refused",
    ]  # fmt: skip
    assert "withdrawn" in results[8].reason
    assert "deliver it first" in results[9].reason
    assert "reason" in results[10].reason
    assert "action must be one of" in results[11].reason
    assert results[0].record_id == results[1].record_id == results[2].record_id
    assert set(summary.affected_subject_ids) == {person, other}
    with issuer_ctx.engine.connect() as conn:
        by_doc = {r.document_number: r for r in conn.execute(select(records))}
        history = conn.execute(select(record_history).order_by(record_history.c.id)).all()
        actions = conn.execute(select(audit_events.c.action)).scalars().all()
    assert len(by_doc) == 3
    assert by_doc["税罚〔2026〕1号"].severity == "严重"
    assert by_doc["税罚〔2026〕2号"].subject_id == other
    assert by_doc["税罚〔2026〕3号"].withdrawn_at is not None
    assert by_doc["税罚〔2026〕1号"].withdrawn_at is None
    assert [(h.record_id, h.action) for h in history] == [
        (results[0].record_id, "correction"),
        (results[3].record_id, "correction"),
        (results[5].record_id, "withdrawal"),
    ]
    assert history[0].old_values["severity"] == "一般"
    assert history[1].old_values["subject_id"] == person
    assert history[2].reason == "行政复议撤销"
    assert actions.count("record.corrected") == 2
    assert actions.count("record.withdrawn") == 1
    assert "records.batch" in actions


def test_unknown_pilot_area_code_needs_staff_registration_first(
    issuer_ctx: IssuerContext,
) -> None:
    pilot = "91350100M0001TGQXM"
    rows = [RawRow(1, {**row(1), "id_number": None, "uscc": pilot, "name": "老试点公司"})]

    def deliver() -> RowResult:
        results: list[RowResult] = []
        ingest(
            issuer_ctx.engine,
            issuer_ctx.vault,
            issuer_ctx.policy,
            rows,
            mode=Mode.PER_ROW,
            actor="test",
            now=NOW,
            on_result=results.append,
        )
        return results[0]

    refused = deliver()
    assert refused.status is Status.REFUSED
    assert "override reason" in refused.reason and pilot not in refused.reason
    with issuer_ctx.engine.begin() as conn:
        organisation = register_organisation(
            conn,
            issuer_ctx.vault,
            pilot,
            "老试点公司",
            NOW,
            "clerk",
            check_override_reason="早期试点代码，经市场监管局核实",
        )
    accepted = deliver()
    assert accepted.status is Status.ACCEPTED
    with issuer_ctx.engine.connect() as conn:
        owner = conn.execute(select(records.c.subject_id)).scalar_one()
    assert owner == organisation


def test_row_checks_dates_sources_and_both_identifiers(issuer_ctx: IssuerContext) -> None:
    registered(issuer_ctx)
    tomorrow = (NOW.date() + dt.timedelta(days=1)).isoformat()
    rows = [
        RawRow(1, row(1, decision_date="2026/05/01")),
        RawRow(2, row(2, decision_date="2026-02-30")),
        RawRow(3, row(3, decision_date=tomorrow)),
        RawRow(4, {**row(4), "uscc": "91110000600037341L"}),
        RawRow(5, {**row(5), "source": None}),
        RawRow(6, {**row(6), "id_number": None}),
        RawRow(7, {**row(7), "colour": "red"}),
        RawRow(8, row(8, direction="+")),
    ]
    results: list[RowResult] = []
    summary = ingest(
        issuer_ctx.engine,
        issuer_ctx.vault,
        issuer_ctx.policy,
        rows,
        mode=Mode.PER_ROW,
        actor="test",
        now=NOW,
        on_result=results.append,
    )
    assert summary.refused == 8 and summary.accepted == 0
    reasons = [r.reason for r in results]
    assert "YYYY-MM-DD" in reasons[0]
    assert "real date" in reasons[1]
    assert "future" in reasons[2]
    assert "not both" in reasons[3]
    assert "source" in reasons[4]
    assert "id_number" in reasons[5] and "uscc" in reasons[5]
    assert "colour" in reasons[6]
    assert "direction '-'" in reasons[7]
    assert count(issuer_ctx) == 0


def test_missing_and_unknown_columns_are_named(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    header = [h for h in HEADER if h not in ("legal_basis", "authority")] + ["legal basis"]
    source = write_csv(
        tmp_path / "bad.csv", [{k: v for k, v in row(1).items() if k in header}], header
    )
    result = run(sqlite_issuer, "records", "import", str(source))
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "missing column(s) legal_basis, authority" in message
    assert "unknown column(s) legal basis" in message
    assert count(sqlite_issuer) == 0

    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert "is empty" in run(sqlite_issuer, "records", "import", str(empty)).output


def test_gbk_file_is_refused_unless_its_encoding_is_named(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    registered(sqlite_issuer)
    rows = [row(n) for n in range(1, 4)]
    source = write_csv(tmp_path / "gbk.csv", rows, encoding="gb18030")
    result = run(sqlite_issuer, "records", "import", str(source))
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "is not utf-8 text" in message and "line 2" in message
    assert "--encoding gb18030" in message
    assert count(sqlite_issuer) == 0
    named = run(sqlite_issuer, "records", "import", str(source), "--encoding", "gb18030")
    assert named.exit_code == 0, named.output
    assert count(sqlite_issuer) == 3


def test_excel_utf8_bom_and_default_source(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    registered(sqlite_issuer)
    header = [h for h in HEADER if h != "source"]
    rows = [{k: v for k, v in row(1).items() if k != "source"}]
    source = write_csv(tmp_path / "excel.csv", rows, header, encoding="utf-8-sig")
    assert run(sqlite_issuer, "records", "import", str(source)).exit_code == 2  # no source
    result = run(sqlite_issuer, "records", "import", str(source), "--source", "tax")
    assert result.exit_code == 0, result.output
    with sqlite_issuer.engine.connect() as conn:
        assert conn.execute(select(records.c.source)).scalar_one() == "tax"


def test_json_array_and_json_lines(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    registered(issuer_ctx)
    elements: list[Any] = [row(1), "not an object", {**row(2), "decision_date": 20260501}, row(3)]
    array = tmp_path / "records.json"
    array.write_text(json.dumps(elements, ensure_ascii=False, indent=1), encoding="utf-8")
    result = run(issuer_ctx, "records", "import", str(array))
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "2 accepted, 0 duplicate, 2 refused" in output
    assert "is not an object" in output and "must be text" in output

    lines = tmp_path / "records.jsonl"
    lines.write_text(
        "\n".join(json.dumps(e, ensure_ascii=False) for e in [row(3), row(4), {}]) + "\n\n",
        encoding="utf-8",
    )
    result = run(issuer_ctx, "records", "import", str(lines))
    assert "1 accepted, 1 duplicate, 1 refused" in " ".join(result.output.split())
    assert count(issuer_ctx) == 3


def test_broken_json_stops_with_its_line_and_keeps_what_came_before(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    registered(sqlite_issuer)
    good = ",\n".join(json.dumps(row(n), ensure_ascii=False) for n in (1, 2))
    path = tmp_path / "broken.json"
    path.write_text(f'[\n{good},\n{{"category": }}\n]', encoding="utf-8")
    result = run(sqlite_issuer, "records", "import", str(path))
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "broken.json line 4" in output and "element 3" in output
    assert count(sqlite_issuer) == 2  # per-row: the rows before the error are stored
    path.write_text('{"records": []}', encoding="utf-8")
    assert "expected '['" in run(sqlite_issuer, "records", "import", str(path)).output


def _big_file(path: Path, rows: int, people: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for n in range(rows):
            person = n % people
            writer.writerow(
                [id_number(person), "", f"人{person}", "volunteering", "+", "轻微",
                 "《志愿服务条例》第三十五条", "区文明办", f"志愿〔2026〕{n}号", "2026-03-05",
                 "wenmingban", "", ""]
            )  # fmt: skip
    return path


def test_reader_streams_the_file(tmp_path: Path) -> None:
    path = _big_file(tmp_path / "big.csv", 20_000, 10)
    seen: list[int] = []
    rows = read_file(path, on_progress=seen.append)
    first = next(rows)
    assert first.number == 2 and first.fields["source"] == "wenmingban"
    assert seen and seen[-1] < path.stat().st_size // 10
    rest = sum(1 for _ in rows)
    assert rest == 19_999
    assert seen[-1] == path.stat().st_size


def test_fifty_thousand_rows(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    path = _big_file(tmp_path / "big.csv", 50_000, 1000)
    report = tmp_path / "report.json"
    result = run(issuer_ctx, "records", "import", str(path), "--report", str(report))
    assert result.exit_code == 0, result.output[-2000:]
    assert "50000 rows: 50000 accepted" in result.output
    assert "1000 subject(s) to re-grade" in result.output
    data = json.loads(report.read_text(encoding="utf-8"))
    assert len(data["rows"]) == 50_000 and data["summary"]["accepted"] == 50_000
    assert count(issuer_ctx) == 50_000
    assert count(issuer_ctx, subjects) == 1000
    again = run(issuer_ctx, "records", "import", str(path))
    assert "50000 rows: 0 accepted, 50000 duplicate" in again.output
    assert count(issuer_ctx) == 50_000


def test_json_array_streams_across_reads(tmp_path: Path) -> None:
    elements = [row(n, authority="区税务局" * (n % 50)) for n in range(3000)]
    path = tmp_path / "many.json"
    text = "[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in elements) + "\n]\n"
    path.write_text(text, encoding="utf-8")
    assert path.stat().st_size > 4 * 65536  # several reads, elements cut at read borders
    rows = list(read_file(path))
    assert [r.number for r in rows] == list(range(1, 3001))
    assert all(r.problem is None for r in rows)
    assert rows[2999].fields["document_number"] == "税罚〔2026〕2999号"
    assert rows[49].fields["authority"] == "区税务局" * 49

    path.write_text(text.replace("]\n", "{oops}\n]\n"), encoding="utf-8")
    with pytest.raises(IngestFileError, match=r"many\.json line 3002: expected"):
        list(read_file(path))


def test_report_needs_a_csv_or_json_name(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "tax.csv", [row(1)])
    result = run(sqlite_issuer, "records", "import", str(source), "--report", "out.txt")
    assert result.exit_code == 2 and "use a .csv or .json" in result.output
    assert count(sqlite_issuer) == 0


def test_atomic_rollback_spans_earlier_chunks(issuer_ctx: IssuerContext) -> None:
    registered(issuer_ctx)
    rows = [RawRow(n, row(n)) for n in range(1, 10)] + [RawRow(10, row(10, severity="?"))]
    results: list[RowResult] = []
    summary = ingest(
        issuer_ctx.engine,
        issuer_ctx.vault,
        issuer_ctx.policy,
        rows,
        mode=Mode.ATOMIC,
        actor="test",
        now=NOW,
        on_result=results.append,
        chunk_size=3,
    )
    assert not summary.committed and summary.total == 10
    assert (summary.accepted, summary.refused, summary.rolled_back) == (0, 1, 9)
    assert [r.status for r in results] == [Status.ROLLED_BACK] * 9 + [Status.REFUSED]
    assert all(r.record_id is None for r in results)
    assert count(issuer_ctx) == 0


def test_change_hook_runs_inside_each_chunk_transaction(issuer_ctx: IssuerContext) -> None:
    person = registered(issuer_ctx)
    seen: list[tuple[frozenset[str], tuple[int, ...], int]] = []

    def hook(conn: Any, changes: Any) -> None:
        stored = conn.execute(select(func.count()).select_from(records)).scalar_one()
        seen.append((changes.subject_ids, changes.withdrawn_record_ids, stored))

    withdraw = {"document_number": "税罚〔2026〕1号", "source": "tax", "action": "withdraw",
                "reason": "撤销"}  # fmt: skip
    rows = [RawRow(1, row(1)), RawRow(2, row(2)), RawRow(3, withdraw)]
    common: dict[str, Any] = {"mode": Mode.PER_ROW, "actor": "test", "now": NOW}
    ingest(issuer_ctx.engine, issuer_ctx.vault, issuer_ctx.policy, rows, on_changes=hook,
           chunk_size=2, **common)  # fmt: skip
    assert seen[0] == (frozenset({person}), (), 2)
    assert seen[1][0] == frozenset({person}) and len(seen[1][1]) == 1

    def failing(conn: Any, changes: Any) -> None:
        raise RuntimeError("grading is down")

    with pytest.raises(RuntimeError, match="grading is down"):
        ingest(issuer_ctx.engine, issuer_ctx.vault, issuer_ctx.policy, [RawRow(1, row(5))],
               on_changes=failing, **common)  # fmt: skip
    assert count(issuer_ctx) == 2  # the chunk whose hook failed was rolled back
