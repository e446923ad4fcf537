"""``starcard-issuer``: operator commands (serve the API, migrate, export trust data)."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from issuer.settings import IssuerSettings
from issuer.wiring import build_issuer, make_engine

app = typer.Typer(help="StarCard issuer (credit platform and card issuance)", no_args_is_help=True)


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
