"""``starcard-issuer``: operator commands (serve the API, migrate, export trust data, import
records, manage department credentials).

Commands that need the issuer use the :class:`~issuer.wiring.IssuerContext` passed as the
Click context object (tests, embedding) or wire one from the environment
(:meth:`IssuerSettings.from_env`).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from issuer.audit import checkpointer_of, write_checkpoint
from issuer.changes import after_records_changed
from issuer.cli_audit import audit_app, staff_app
from issuer.cli_cards import cards_app
from issuer.departments import (
    DepartmentError,
    add_department,
    disable_department,
    list_departments,
    rotate_token,
)
from issuer.events import regrade_and_announce
from issuer.grading import due_for_regrade
from issuer.ingest import (
    IngestError,
    IngestSummary,
    Mode,
    ReportWriter,
    RowResult,
    Status,
    ingest,
    read_file,
)
from issuer.lifecycle import apply_pending
from issuer.objections import ObjectionDesk
from issuer.repair import RepairDesk
from issuer.settings import IssuerSettings
from issuer.wiring import IssuerContext, build_issuer, make_engine
from issuer.workdays import local_date

app = typer.Typer(help="StarCard issuer (credit platform and card issuance)", no_args_is_help=True)
records_app = typer.Typer(help="Records delivered by departments", no_args_is_help=True)
departments_app = typer.Typer(help="Departments and their delivery tokens", no_args_is_help=True)
app.add_typer(records_app, name="records")
app.add_typer(departments_app, name="departments")
app.add_typer(cards_app, name="cards")
app.add_typer(audit_app, name="audit")
app.add_typer(staff_app, name="staff")

PROGRESS_FROM_BYTES = 1 << 20
"""Files at least this large get a progress bar."""
TABLE_ROWS = 100
"""Most rows printed in the report table (the --report file has them all)."""
FILE_CHUNK_ROWS = 5000
"""Rows per transaction for file imports: each transaction re-grades the subjects it
touched, so larger chunks re-grade a subject spread over a big file fewer times."""


def _context(ctx: typer.Context) -> IssuerContext:
    if isinstance(ctx.obj, IssuerContext):
        return ctx.obj
    issuer = build_issuer(IssuerSettings.from_env())
    ctx.obj = issuer
    return issuer


def _operator() -> str:
    return "cli:" + getpass.getuser()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@app.command()
def migrate() -> None:
    """Bring the database (STARCARD_DATABASE_URL) to the latest schema."""
    from issuer.migrate import upgrade

    upgrade(make_engine(IssuerSettings.from_env().database_url))
    typer.echo("database is at the latest schema")


@app.command()
def jwks() -> None:
    """Print the issuer's public keys as an RFC 7517 JWKS."""
    typer.echo(json.dumps(build_issuer(IssuerSettings.from_env()).keys.jwks(), indent=2))


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
) -> None:
    """Run the issuer API (staff token from STARCARD_STAFF_TOKEN)."""
    import uvicorn

    from issuer.api import create_app

    token = os.environ.get("STARCARD_STAFF_TOKEN")
    if not token:
        raise typer.BadParameter("set STARCARD_STAFF_TOKEN")
    uvicorn.run(create_app(IssuerSettings.from_env(), token), host=host, port=port)


@records_app.command("import")
def import_records(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    atomic: Annotated[
        bool,
        typer.Option(
            "--atomic/--per-row",
            help="all rows or none (--atomic), or each row on its own (--per-row, default)",
        ),
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="write the per-row report to this .csv or .json file")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="source department for rows without a source column")
    ] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of the file")] = "utf-8",
) -> None:
    """Import a CSV, JSON or JSON Lines file of records (see docs/ingestion.md).

    Re-importing the same file changes nothing. Exit code 0 when every row was accepted or a
    duplicate, 1 when some were refused (or an atomic batch rolled back), 2 when the file
    could not be read.
    """
    issuer = _context(ctx)
    console = Console()
    mode = Mode.ATOMIC if atomic else Mode.PER_ROW
    try:
        writer = ReportWriter(report) if report is not None else None
    except IngestError as exc:
        raise typer.BadParameter(str(exc), param_hint="--report") from None
    first: list[RowResult] = []  # shown when the whole file fits the table
    problems: list[RowResult] = []  # shown otherwise: rows not accepted
    total_rows = 0

    def on_result(result: RowResult) -> None:
        nonlocal total_rows
        total_rows += 1
        if writer is not None:
            writer.add(result)
        if len(first) < TABLE_ROWS:
            first.append(result)
        if result.status is not Status.ACCEPTED and len(problems) < TABLE_ROWS:
            problems.append(result)

    size = file.stat().st_size
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=size < PROGRESS_FROM_BYTES,
    )
    summary: IngestSummary | None = None
    try:
        with progress:
            task = progress.add_task(f"importing {file.name}", total=size)
            rows = read_file(
                file,
                encoding=encoding,
                default_source=source,
                on_progress=lambda done: progress.update(task, completed=done),
            )
            at = _now()
            summary = ingest(
                issuer.engine,
                issuer.vault,
                issuer.policy,
                rows,
                mode=mode,
                actor=_operator(),
                now=at,
                default_source=source,
                on_result=on_result,
                on_changes=after_records_changed(issuer.policy, at, _operator()),
                chunk_size=FILE_CHUNK_ROWS,
            )
    except IngestError as exc:
        _print_table(console, first, problems, total_rows)
        console.print(f"[red]stopped:[/red] {exc}")
        if total_rows and mode is Mode.PER_ROW:
            console.print(
                f"the {total_rows} row(s) reported above the error were processed; fix the "
                "file and import it again (rows stored already come back as duplicates)"
            )
        raise typer.Exit(2) from None
    finally:
        if writer is not None:
            writer.close(summary)
    _print_table(console, first, problems, total_rows)
    _print_summary(console, summary, report)
    if summary.refused or not summary.committed:
        raise typer.Exit(1)


def _print_table(
    console: Console, first: list[RowResult], problems: list[RowResult], total: int
) -> None:
    everything = total <= TABLE_ROWS
    shown = first if everything else problems
    if not shown:
        return
    title = "rows" if everything else f"rows not accepted (first {len(shown)})"
    table = Table("row", "action", "document", "status", "reason", title=title)
    colours = {
        Status.ACCEPTED: "green",
        Status.DUPLICATE: "cyan",
        Status.REFUSED: "red",
        Status.ROLLED_BACK: "yellow",
    }
    for result in shown:
        table.add_row(
            str(result.row),
            result.action,
            result.document_number,
            f"[{colours[result.status]}]{result.status}[/]",
            result.reason,
        )
    console.print(table)


def _print_summary(console: Console, summary: IngestSummary, report: Path | None) -> None:
    stored = "stored" if summary.committed else "NOTHING stored (atomic batch rolled back)"
    rolled_back = f", {summary.rolled_back} rolled back" if summary.rolled_back else ""
    console.print(
        f"{summary.total} rows: {summary.accepted} accepted, {summary.duplicates} duplicate, "
        f"{summary.refused} refused{rolled_back}; {stored}; "
        f"{len(summary.affected_subject_ids)} subject(s) to re-grade ({summary.mode})"
    )
    if report is not None:
        console.print(f"report: {report}")


@departments_app.command("add")
def departments_add(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="the records' source name")]
) -> None:
    """Create a department and print its delivery token (shown this once only)."""
    issuer = _context(ctx)
    try:
        with issuer.engine.begin() as conn:
            token = add_department(conn, name, _now(), _operator())
    except DepartmentError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"department {name} added; its token (shown once, store it safely):")
    typer.echo(token)


@departments_app.command("rotate-token")
def departments_rotate(ctx: typer.Context, name: str) -> None:
    """Give a department a new token (the old one stops working) and print it once."""
    issuer = _context(ctx)
    try:
        with issuer.engine.begin() as conn:
            token = rotate_token(conn, name, _now(), _operator())
    except DepartmentError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"new token for {name} (shown once; the old one no longer works):")
    typer.echo(token)


@departments_app.command("disable")
def departments_disable(ctx: typer.Context, name: str) -> None:
    """Stop a department's token from working (rotate-token enables it again)."""
    issuer = _context(ctx)
    try:
        with issuer.engine.begin() as conn:
            disable_department(conn, name, _now(), _operator())
    except DepartmentError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"department {name} disabled")


@departments_app.command("list")
def departments_list(ctx: typer.Context) -> None:
    """List departments (never their tokens)."""
    issuer = _context(ctx)
    with issuer.engine.connect() as conn:
        found = list_departments(conn)
    table = Table("department", "created", "state")
    for department in found:
        state = "enabled" if department.disabled_at is None else "disabled"
        table.add_row(department.name, department.created_at.date().isoformat(), state)
    Console().print(table)


@app.command("daily")
def daily_jobs(ctx: typer.Context) -> None:
    """The daily jobs, each in its own transaction: escalate objections past their deadlines,
    end the effect of records whose maximum period has passed, re-grade stale grades (every
    card change goes to the card-status outbox), then apply the pending card status events
    and sign an audit checkpoint."""
    issuer = _context(ctx)
    now = _now()
    actor = _operator()
    with issuer.engine.begin() as conn:
        deadlines = ObjectionDesk(issuer.policy).escalate_overdue(conn, now, actor)
    with issuer.engine.begin() as conn:
        expiry = RepairDesk(issuer.policy).expire_effects(conn, now, actor)
    with issuer.engine.begin() as conn:
        due = due_for_regrade(conn, issuer.policy, local_date(now))
        if due:
            regrade_and_announce(conn, issuer.policy, due, now, reason="daily_regrade", actor=actor)
    typer.echo(f"objections: {deadlines}")
    typer.echo(f"effects ended: {expiry}")
    typer.echo(f"re-graded: {len(due)} subject(s)")
    applied = apply_pending(issuer.engine, issuer.keys, issuer.settings, now, actor)
    typer.echo(f"card status events applied: {len(applied)}")
    with issuer.engine.begin() as conn:
        checkpointer = checkpointer_of(conn)
        if checkpointer is not None:
            seq, _ = write_checkpoint(conn, checkpointer, now, actor)
            typer.echo(f"audit checkpoint signed at seq {seq}")
