"""``starcard-issuer cards``: apply card status events, reconcile orphan cards, report a card
lost or stolen. The issuer context, clock and operator name come from :mod:`issuer.cli`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from issuer.events import RightsError
from issuer.lifecycle import LOST_KINDS, apply_pending, report_lost
from issuer.reconcile import DEFAULT_STALE_AFTER, abandon, anomalies, find_orphans
from issuer.wiring import IssuerContext

cards_app = typer.Typer(help="Card lifecycle: status events, lost cards, reconciliation")


def _wired(ctx: typer.Context) -> tuple[IssuerContext, dt.datetime, str]:
    """The issuer, ``now`` and the operator, as the parent app provides them."""
    from issuer import cli  # late: issuer.cli imports this module to register it

    return cli._context(ctx), cli._now(), cli._operator()


@cards_app.command("apply-events")
def apply_events(ctx: typer.Context) -> None:
    """Apply the pending card status events (each in its own transaction; re-runnable)."""
    issuer, now, actor = _wired(ctx)
    applied = apply_pending(issuer.engine, issuer.keys, issuer.settings, now, actor)
    table = Table("event", "kind", "outcome", "card", "state", "due ★")
    for a in applied:
        due = "" if a.due_stars is None else str(a.due_stars)
        table.add_row(str(a.event_id), a.kind, a.outcome, a.serial or "-", a.card_state or "-", due)
    if applied:
        Console().print(table)
    typer.echo(f"card status events applied: {len(applied)}")


@cards_app.command("reconcile")
def reconcile(
    ctx: typer.Context,
    stale_after_minutes: Annotated[
        int, typer.Option(min=0, help="a job idle this long counts as left behind")
    ] = int(DEFAULT_STALE_AFTER.total_seconds() // 60),
    apply: Annotated[
        bool, typer.Option("--apply", help="abandon the orphan jobs found (INVALID on the list)")
    ] = False,
) -> None:
    """List unfinished personalizations left behind, and states that must never exist.

    Exit code 0 when nothing is wrong, 1 when anomalies were found (investigate them: they
    are not fixed automatically).
    """
    issuer, now, actor = _wired(ctx)
    stale_after = dt.timedelta(minutes=stale_after_minutes)
    with issuer.engine.connect() as conn:
        orphans = find_orphans(conn, now, stale_after)
        odd = anomalies(conn)
    table = Table("card", "subject", "state", "idle since")
    for orphan in orphans:
        table.add_row(orphan.serial, orphan.subject_id, orphan.state, orphan.updated_at.isoformat())
    if orphans:
        Console().print(table)
    typer.echo(f"orphan cards: {len(orphans)}")
    if apply:
        for orphan in orphans:
            try:
                abandon(
                    issuer.engine,
                    orphan.serial,
                    now,
                    actor,
                    issuer.keys,
                    issuer.settings,
                    stale_after=stale_after,
                )
            except RightsError as exc:  # finished or restarted meanwhile
                typer.echo(f"{orphan.serial}: not abandoned: {exc}")
            else:
                typer.echo(f"{orphan.serial}: abandoned")
    for anomaly in odd:
        typer.echo(
            f"ANOMALY {anomaly.kind}: subject {anomaly.subject_id}, cards "
            f"{', '.join(anomaly.serials)}",
            err=True,
        )
    if odd:
        raise typer.Exit(1)


@cards_app.command("lost")
def lost(
    ctx: typer.Context,
    serial: Annotated[str, typer.Argument(help="the card's serial")],
    kind: Annotated[str, typer.Option(help=" or ".join(LOST_KINDS))] = "lost",
) -> None:
    """Revoke a lost or stolen card; its holder is then due a new card."""
    issuer, now, actor = _wired(ctx)
    try:
        due = report_lost(issuer.engine, serial, kind, now, actor, issuer.keys, issuer.settings)
    except RightsError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"card {serial} revoked ({kind}); subject {due.subject_id} is due a new card")
