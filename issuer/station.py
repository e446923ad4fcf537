"""``starcard-station``: the office station that personalizes a card in a PC/SC reader.

In this walking skeleton the station runs the issuance service in-process against the
configured database and HSM (``STARCARD_*`` variables).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.console import Console

from card_profiles.errors import CardError
from card_profiles.pcsc import PcscTransport, wait_for_card
from card_profiles.starcard import StarCardSession
from issuer.issuance import IssuanceError
from issuer.settings import IssuerSettings
from issuer.wiring import build_issuer

app = typer.Typer(help="StarCard office station", no_args_is_help=True)
console = Console()


@app.command()
def personalize(
    reader: Annotated[str, typer.Option(help="PC/SC reader name")],
    subject: Annotated[str, typer.Option(help="pseudonymous subject id")],
    clerk: Annotated[str, typer.Option(help="staff id, for the audit log")] = "clerk",
    timeout: Annotated[float, typer.Option(help="seconds to wait for the card")] = 30.0,
) -> None:
    """Personalize the card in READER for SUBJECT; re-run after any interruption."""
    ctx = build_issuer(IssuerSettings.from_env())
    wait_for_card(reader, timeout)
    transport = PcscTransport.connect(reader, timeout_s=10.0, exclusive=True)
    try:
        issued = ctx.issuance.personalize(
            StarCardSession(transport), subject, dt.datetime.now(dt.UTC), clerk
        )
    except IssuanceError as exc:
        console.print(f"[bold red]not issued:[/] {exc}")
        raise typer.Exit(1) from None
    except CardError as exc:
        console.print(f"[bold yellow]card problem ({type(exc).__name__}):[/] re-insert and re-run")
        raise typer.Exit(2) from None
    finally:
        transport.close()
    console.print(f"[bold green]card {issued.serial} active[/] {'★' * issued.stars}")
    console.print(f"access code for the holder letter: {issued.access_code}")
