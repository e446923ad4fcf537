"""``starcard-terminal``: the merchant's tap client.

Online: asks the verifier service for a challenge, taps the card (3 APDUs), sends the answer;
every request is signed with this terminal's own key (``--key``, made by ``keygen`` and
registered by an operator). Offline: verifies locally against the pinned root (``--root``)
and either the signed trust list and last status list files (``--trust-list``,
``--status-list``) or the list cache that ``starcard-verifier sync`` keeps (``--cache``; a
damaged, altered or rolled-back cache is refused: "cannot check now", exit 3), and appends a
receipt to ``--receipts`` for ``upload`` later. The result is one big line: ✓ valid ★★★★
(an office) or ✓ valid with the benefit (a merchant), ✗ not valid, or ? cannot check now.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from card_profiles.detect import UnknownCard
from card_profiles.errors import CardError, CardRemoved, CardTimeout
from card_profiles.pcsc import PcscTransport, wait_for_card
from verifier.api.app import b64decode, b64encode
from verifier.core.benefits import OFFICE_CATEGORY, BenefitAnswer
from verifier.core.errors import VerificationError
from verifier.core.status_list import StatusListCache
from verifier.core.verify import Answer
from verifier.list_store import CacheRefused, load_service
from verifier.service import MemoryLedger, VerifierService
from verifier.settings import VerifierSettings
from verifier.tap import TapData, tap_card
from verifier.terminal_auth import (
    TerminalAuth,
    TerminalPrivateKey,
    generate_key,
    load_private_key,
    private_key_pem,
    public_key_pem,
)

app = typer.Typer(help="StarCard merchant terminal", no_args_is_help=True)
console = Console()

KeyOption = Annotated[
    Path | None, typer.Option("--key", help="this terminal's private key (PEM), see keygen")
]
TerminalOption = Annotated[str, typer.Option(help="this terminal's registered id")]
VerifierOption = Annotated[str, typer.Option(help="verifier base URL")]


def show(answer: Answer) -> None:
    """The big result line, and the benefit for a merchant."""
    if answer.state == "valid":
        stars = " " + "★" * answer.star_level if answer.star_level else ""
        console.print(f"[bold green]✓ valid{stars}[/]")
        if answer.benefit is not None:
            _show_benefit(answer.benefit)
        if answer.assurance == "low":
            console.print("  (basic card: no clone protection)")
    elif answer.state == "invalid" and answer.reason_class == "retry":
        console.print("[bold yellow]↻ not checked — please tap again[/]")
    elif answer.state == "invalid":
        console.print("[bold red]✗ not valid[/]")
    else:
        console.print("[bold yellow]? cannot check now[/] — try again or check the network")


def _show_benefit(benefit: BenefitAnswer) -> None:
    if benefit.name is None:
        console.print("  no benefit is offered in this merchant category")
    elif benefit.granted:
        console.print(f"  [bold green]benefit: {benefit.name} — yes[/]")
    else:
        console.print(f"  benefit: {benefit.name} — no")


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
    terminal_id: TerminalOption = "terminal-1",
    verifier: VerifierOption = "http://127.0.0.1:8081",
    key: KeyOption = None,
    offline: Annotated[bool, typer.Option(help="verify locally from pinned files")] = False,
    root: Annotated[Path | None, typer.Option(help="offline: pinned root key (PEM)")] = None,
    trust_list: Annotated[Path | None, typer.Option(help="offline: signed trust list")] = None,
    status_list: Annotated[Path | None, typer.Option(help="offline: signed status list")] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="offline: list cache of `starcard-verifier sync` (for the two lists)"),
    ] = None,
    category: Annotated[
        str, typer.Option(help="offline: this terminal's category (office sees stars)")
    ] = OFFICE_CATEGORY,
    benefits: Annotated[
        Path | None, typer.Option(help="offline: signed benefits catalogue")
    ] = None,
    receipts: Annotated[
        Path | None, typer.Option(help="offline: append a receipt here for upload")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the card")] = 10.0,
    accept_low_assurance: Annotated[
        bool, typer.Option(help="offline: accept basic cards without clone protection")
    ] = False,
) -> None:
    """Tap one card and show the answer."""
    try:
        if offline:
            lists = _offline_lists(root, cache, trust_list, status_list)
            answer = _tap_offline(
                reader, terminal_id, category, lists, benefits, receipts, timeout,
                accept_low_assurance,
            )  # fmt: skip
        else:
            if key is None:
                raise typer.BadParameter("online taps need --key (this terminal's private key)")
            answer = _tap_online(reader, terminal_id, verifier, key, timeout)
        show(answer)
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


OfflineLists = tuple[Path, Path] | tuple[Path, Path, Path]
"""(root, cache directory) or (root, trust list file, status list file)."""


def _offline_lists(
    root: Path | None, cache: Path | None, trust_list: Path | None, status_list: Path | None
) -> OfflineLists:
    """The sources of an offline tap; raises BadParameter saying which options to give."""
    if root is None:
        raise typer.BadParameter("--offline needs --root (the pinned root key)")
    if cache is not None:
        if trust_list is not None or status_list is not None:
            raise typer.BadParameter("give either --cache or --trust-list/--status-list")
        return root, cache
    if trust_list is None or status_list is None:
        raise typer.BadParameter("--offline needs --cache, or --trust-list and --status-list")
    return root, trust_list, status_list


def _offline_service(
    lists: OfflineLists, now: int, accept_low_assurance: bool, ledger: MemoryLedger
) -> VerifierService:
    """The local verifier; exits 3 ("cannot check now") without usable trust data."""
    pinned = VerifierSettings(lists[0], lists[0]).root()
    if len(lists) == 2:
        try:
            return load_service(
                lists[1], pinned, now, accept_low_assurance=accept_low_assurance, ledger=ledger
            )
        except CacheRefused as exc:
            console.print(f"[bold yellow]? cannot check now[/] — {exc}")
            raise typer.Exit(3) from None
    _, trust_list, status_list = lists
    try:
        service = VerifierService.from_trust_list(
            pinned,
            trust_list.read_bytes(),
            now,
            status=StatusListCache(),
            accept_low_assurance=accept_low_assurance,
            ledger=ledger,
        )
    except VerificationError as exc:  # no usable trust data: cannot check, never valid
        console.print(f"[bold yellow]? cannot check now[/] — trust list: {exc}")
        raise typer.Exit(3) from None
    try:
        service.accept_status_list(status_list.read_bytes(), now)
    except (OSError, VerificationError) as exc:  # a bad or stale list: "cannot check"
        console.print(f"status list not usable: {exc}")
    return service


def _tap_offline(
    reader: str,
    terminal_id: str,
    category: str,
    lists: OfflineLists,
    benefits: Path | None,
    receipts: Path | None,
    timeout: float,
    accept_low_assurance: bool,
) -> Answer:
    now = int(time.time())
    ledger = MemoryLedger()
    service = _offline_service(lists, now, accept_low_assurance, ledger)
    if benefits is not None:
        try:
            service.accept_benefits(benefits.read_bytes(), now)
        except (OSError, VerificationError) as exc:  # merchants then get "cannot check"
            console.print(f"benefits catalogue not usable: {exc}")
    handle, challenge = service.begin(terminal_id, b"offline", now)
    data = _tap_card(reader, challenge, timeout)
    answer = service.answer(
        handle, terminal_id, category, data.credential, data.card_signature, now
    )
    if receipts is not None:
        with receipts.open("a", encoding="utf-8") as out:
            for receipt in ledger.receipts:
                line = {
                    k: v for k, v in asdict(receipt).items() if k not in ("category", "offline")
                }
                out.write(json.dumps(line) + "\n")
    return answer


def _tap_online(reader: str, terminal_id: str, verifier: str, key: Path, timeout: float) -> Answer:
    auth = TerminalAuth(terminal_id, _private_key(key), time.time)
    with httpx.Client(base_url=verifier, timeout=5.0, auth=auth) as client:
        begun = _json(client.post("/v1/challenges", json={}))
        data = _tap_card(reader, b64decode(begun["challenge"]), timeout)
        result = _json(
            client.post(
                "/v1/verifications",
                json={
                    "handle": begun["handle"],
                    "credential": b64encode(data.credential),
                    "signature": b64encode(data.card_signature),
                },
            )
        )
    benefit = result.get("benefit")
    return Answer(
        state=result["state"],
        star_level=result.get("star_level"),
        benefit=None if benefit is None else BenefitAnswer(benefit["granted"], benefit.get("name")),
        reason_class=result.get("reason_class"),
        assurance=result.get("assurance"),
    )


def _private_key(path: Path) -> TerminalPrivateKey:
    try:
        return load_private_key(path)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _json(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 2xx answer; otherwise says what the verifier refused and exits 3
    (a refusal of this terminal is never shown as "not valid" for the card)."""
    if response.status_code == 429:
        wait = response.headers.get("Retry-After", "a few")
        console.print(f"[bold yellow]? cannot check now[/] — too many taps, wait {wait} s")
        raise typer.Exit(3)
    if not response.is_success:
        detail = response.json().get("detail") if response.content else ""
        console.print(
            f"[bold yellow]? cannot check now[/] — verifier refused ({response.status_code}): "
            f"{detail}"
        )
        raise typer.Exit(3)
    body: dict[str, Any] = response.json()
    return body


@app.command()
def keygen(
    out: Annotated[Path, typer.Option(help="where to write the new private key (PEM)")],
) -> None:
    """Make this terminal's key pair; prints the public key for the operator to register."""
    if out.exists():
        raise typer.BadParameter(f"{out} exists: a terminal key is never overwritten")
    key = generate_key()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_pem(key))
    typer.echo(public_key_pem(key), nl=False)


@app.command()
def upload(
    receipts: Annotated[Path, typer.Option(help="receipts file written by offline taps")],
    key: KeyOption = None,
    terminal_id: TerminalOption = "terminal-1",
    verifier: VerifierOption = "http://127.0.0.1:8081",
) -> None:
    """Upload the receipts of offline taps (safe to repeat: the verifier keeps each once)."""
    if key is None:
        raise typer.BadParameter("upload needs --key (this terminal's private key)")
    lines = [json.loads(line) for line in receipts.read_text("utf-8").splitlines() if line]
    if not lines:
        typer.echo("no receipts to upload")
        return
    auth = TerminalAuth(terminal_id, _private_key(key), time.time)
    try:
        with httpx.Client(base_url=verifier, timeout=10.0, auth=auth) as client:
            for start in range(0, len(lines), 500):
                result = _json(
                    client.post("/v1/receipts", json={"receipts": lines[start : start + 500]})
                )
                typer.echo(f"stored {result['stored']}, already held {result['already_held']}")
    except httpx.HTTPError:
        console.print("[bold yellow]verifier unreachable[/] — the receipts stay for next time")
        raise typer.Exit(3) from None
    receipts.rename(receipts.with_name(receipts.name + f".sent-{int(time.time())}"))
