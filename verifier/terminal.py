"""``starcard-terminal``: the merchant's tap client.

Online: asks the verifier service for a challenge, taps the card (3 APDUs), sends the answer.
Offline: verifies locally against a pinned JWKS and the last signed status list held on disk.
The result is one big line: ✓ valid ★★★★, ✗ not valid, or ? cannot check now.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from card_profiles.detect import UnknownCard
from card_profiles.errors import CardError, CardRemoved, CardTimeout
from card_profiles.pcsc import PcscTransport, wait_for_card
from verifier.api.app import b64encode
from verifier.core.errors import VerificationError
from verifier.core.status_list import StatusListCache
from verifier.core.verify import Verdict
from verifier.service import VerifierService
from verifier.settings import VerifierSettings
from verifier.tap import TapData, tap_card

app = typer.Typer(help="StarCard merchant terminal", no_args_is_help=True)
console = Console()


def show(verdict: Verdict) -> None:
    if verdict.state == "valid":
        console.print(f"[bold green]✓ valid {'★' * (verdict.star_level or 0)}[/]")
        if verdict.assurance == "low":
            console.print("  (basic card: no clone protection)")
    elif verdict.state == "invalid":
        console.print("[bold red]✗ not valid[/]")
    else:
        console.print("[bold yellow]? cannot check now[/] — try again or check the network")


def _tap_card(reader: str, challenge: bytes, timeout_s: float) -> TapData:
    wait_for_card(reader, timeout_s)
    transport = PcscTransport.connect(reader, timeout_s=timeout_s)
    try:
        return tap_card(transport, transport.atr, challenge)
    finally:
        transport.close()


@app.command()
def tap(
    reader: Annotated[str, typer.Option(help="PC/SC reader name")],
    terminal_id: Annotated[str, typer.Option(help="this terminal's registered id")] = "terminal-1",
    verifier: Annotated[str, typer.Option(help="verifier base URL")] = "http://127.0.0.1:8081",
    offline: Annotated[bool, typer.Option(help="verify locally from pinned files")] = False,
    root: Annotated[Path | None, typer.Option(help="offline: pinned root key (PEM)")] = None,
    trust_list: Annotated[Path | None, typer.Option(help="offline: signed trust list")] = None,
    status_list: Annotated[Path | None, typer.Option(help="offline: signed status list")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the card")] = 10.0,
    accept_low_assurance: Annotated[
        bool, typer.Option(help="offline: accept basic cards without clone protection")
    ] = False,
) -> None:
    """Tap one card and show the answer."""
    now = int(time.time())
    try:
        if offline:
            if root is None or trust_list is None or status_list is None:
                raise typer.BadParameter("--offline needs --root, --trust-list and --status-list")
            settings = VerifierSettings(root, trust_list, accept_low_assurance=accept_low_assurance)
            try:
                service = VerifierService.from_trust_list(
                    settings.root(),
                    trust_list.read_bytes(),
                    now,
                    status=StatusListCache(),
                    accept_low_assurance=accept_low_assurance,
                )
            except VerificationError as exc:  # no usable trust data: cannot check, never valid
                console.print(f"[bold yellow]? cannot check now[/] — trust list: {exc}")
                raise typer.Exit(3) from None
            try:
                service.accept_status_list(status_list.read_bytes(), now)
            except Exception as exc:  # a bad or stale list: the answer is "cannot check"
                console.print(f"status list not usable: {exc}")
            handle, challenge = service.begin(terminal_id, b"offline", now)
            data = _tap_card(reader, challenge, timeout)
            show(service.complete(handle, terminal_id, data.credential, data.card_signature, now))
            return
        with httpx.Client(base_url=verifier, timeout=5.0) as client:
            begun = client.post("/v1/challenges", json={"terminal_id": terminal_id}).json()
            challenge = _b64decode(begun["challenge"])
            data = _tap_card(reader, challenge, timeout)
            result = client.post(
                "/v1/verifications",
                json={
                    "terminal_id": terminal_id,
                    "handle": begun["handle"],
                    "credential": b64encode(data.credential),
                    "signature": b64encode(data.card_signature),
                },
            ).json()
        show(
            Verdict(
                state=result["state"],
                star_level=result.get("star_level"),
                reason_class=result.get("reason_class"),
                assurance=result.get("assurance"),
            )
        )
    except UnknownCard:
        console.print("[bold red]✗ not a StarCard[/] — no star-card application on this card")
        raise typer.Exit(4) from None
    except (CardRemoved, CardTimeout):
        console.print("[bold yellow]card moved too early — please tap again[/]")
        raise typer.Exit(2) from None
    except CardError as exc:
        console.print(f"[bold yellow]card could not be read ({type(exc).__name__}) — tap again[/]")
        raise typer.Exit(2) from None
    except httpx.HTTPError:
        console.print("[bold yellow]? cannot check now[/] — verifier unreachable")
        raise typer.Exit(3) from None


def _b64decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
