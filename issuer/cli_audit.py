"""``starcard-issuer audit`` (verify the hash chain, write a signed checkpoint) and
``starcard-issuer staff`` (add, disable, enable, set a password, list).

Passwords are read from the terminal without echo (or from standard input when it is not a
terminal) and never printed. Exit codes: 0 done, 1 the audit log fails verification, 2 a
request that cannot be done (the message says why).
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from issuer.audit import audit, checkpointer_of, write_checkpoint
from issuer.audit_verify import AuditChainBroken, audit_keys, verify_chain
from issuer.staff import (
    ROLES,
    StaffError,
    create_account,
    disable_account,
    enable_account,
    list_accounts,
    set_password,
)
from issuer.wiring import IssuerContext

audit_app = typer.Typer(
    help="The audit log: verify its hash chain, sign a checkpoint", no_args_is_help=True
)
staff_app = typer.Typer(help="Staff accounts and their roles", no_args_is_help=True)


def _issuer(ctx: typer.Context) -> tuple[IssuerContext, str, dt.datetime]:
    """The issuer, the CLI actor and now, from the parent app (imported late: it imports us)."""
    from issuer.cli import _context, _now, _operator

    return _context(ctx), _operator(), _now()


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Verify every link of the audit chain and every checkpoint signature (exit 1 with the
    first broken link and its kind)."""
    issuer, actor, now = _issuer(ctx)
    try:
        with issuer.engine.connect() as conn:
            report = verify_chain(conn, audit_keys(issuer.hsm))
    except AuditChainBroken as exc:
        with issuer.engine.begin() as conn:  # a failed verification is audited too
            audit(conn, now, actor, "audit.verified", ok=False, kind=str(exc.kind))
        typer.echo(f"FAILED: {exc}", err=True)
        raise typer.Exit(1) from None
    with issuer.engine.begin() as conn:
        audit(conn, now, actor, "audit.verified", ok=True, events=report.events)
    last = "none" if report.last_checkpoint_seq is None else str(report.last_checkpoint_seq)
    typer.echo(
        f"ok: {report.events} events, head {report.head_hash[:16]}…, "
        f"{report.checkpoints} signed checkpoint(s), last at seq {last}"
    )


@audit_app.command("checkpoint")
def audit_checkpoint(ctx: typer.Context) -> None:
    """Sign the current head of the audit chain with the HSM's audit key."""
    issuer, actor, now = _issuer(ctx)
    with issuer.engine.begin() as conn:
        checkpointer = checkpointer_of(conn)
        if checkpointer is None:
            raise typer.BadParameter("this issuer has no audit checkpoint key configured")
        seq, head = write_checkpoint(conn, checkpointer, now, actor)
    typer.echo(f"checkpoint at seq {seq}, head {head[:16]}…, kid {checkpointer.kid}")


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        password: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
        return password
    return sys.stdin.readline().rstrip("\n")


@staff_app.command("add")
def staff_add(
    ctx: typer.Context,
    name: str,
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
) -> None:
    """Create a staff account (password asked for, never echoed)."""
    issuer, actor, now = _issuer(ctx)
    password = _read_password(f"password for {name}")
    try:
        with issuer.engine.begin() as conn:
            create_account(conn, name, role, password, now, actor)
    except StaffError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"staff account {name} ({role}) created")


@staff_app.command("disable")
def staff_disable(ctx: typer.Context, name: str) -> None:
    """Disable an account and end its sessions at once."""
    issuer, actor, now = _issuer(ctx)
    try:
        with issuer.engine.begin() as conn:
            disable_account(conn, name, now, actor)
    except StaffError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"staff account {name} disabled")


@staff_app.command("enable")
def staff_enable(ctx: typer.Context, name: str) -> None:
    """Enable a disabled account again."""
    issuer, actor, now = _issuer(ctx)
    try:
        with issuer.engine.begin() as conn:
            enable_account(conn, name, now, actor)
    except StaffError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"staff account {name} enabled")


@staff_app.command("password")
def staff_password(ctx: typer.Context, name: str) -> None:
    """Set a new password (unlocks a locked account, ends its sessions)."""
    issuer, actor, now = _issuer(ctx)
    password = _read_password(f"new password for {name}")
    try:
        with issuer.engine.begin() as conn:
            set_password(conn, name, password, now, actor)
    except StaffError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"password of {name} set; its sessions were ended")


@staff_app.command("list")
def staff_list(ctx: typer.Context) -> None:
    """List staff accounts (never their passwords)."""
    issuer, _, now = _issuer(ctx)
    with issuer.engine.connect() as conn:
        accounts = list_accounts(conn)
    table = Table("name", "role", "created", "state")
    for account in accounts:
        if account.disabled_at is not None:
            state = "disabled"
        elif account.locked_until is not None and account.locked_until > now:
            state = f"locked until {account.locked_until:%H:%M} UTC"
        else:
            state = "enabled"
        table.add_row(account.name, account.role, account.created_at.date().isoformat(), state)
    Console().print(table)
