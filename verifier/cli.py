"""``starcard-verifier``: run the merchant-facing verifier service."""

from __future__ import annotations

from typing import Annotated

import typer

from verifier.settings import VerifierSettings

app = typer.Typer(help="StarCard verifier service", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8081,
) -> None:
    """Run the verifier (pinned JWKS from STARCARD_TRUST_JWKS)."""
    import uvicorn

    from verifier.api.app import create_app

    uvicorn.run(create_app(VerifierSettings.from_env()), host=host, port=port)


@app.command()
def version() -> None:
    """Print the verifier's version."""
    typer.echo("starcard-verifier 0.1.0")
