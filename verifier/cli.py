"""``starcard-verifier``: run the merchant-facing verifier service, or sync a list cache.

This is a composition root: it reads the clock and the environment and wires the parts.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.core.errors import VerificationError
from verifier.list_store import CacheRefused, ListStore, load_service
from verifier.service import VerifierService
from verifier.settings import VerifierSettings
from verifier.sync import ListSync, SyncReport

app = typer.Typer(help="StarCard verifier service", no_args_is_help=True)

#: Timeouts of the list fetches (seconds): connect, then read/write/pool.
HTTP_TIMEOUT = (5.0, 30.0)


def _pinned_root(path: Path) -> ec.EllipticCurvePublicKey:
    """The pinned root key read the way the service settings read it."""
    try:
        return VerifierSettings(root_public_key=path, trust_list=path).root()
    except RuntimeError as exc:
        raise typer.BadParameter(str(exc)) from None


def _list_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"status list ids must be numbers like 1,2 (got {text!r})"
        ) from None
    if not ids or any(i < 1 for i in ids):
        raise typer.BadParameter("name at least one status list id (1 or more)")
    return ids


def _http_client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(HTTP_TIMEOUT[1], connect=HTTP_TIMEOUT[0]))


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8081,
) -> None:
    """Run the verifier (pinned root STARCARD_ROOT_KEY, trust list STARCARD_TRUST_LIST).

    With STARCARD_ISSUER_URL set, a background thread keeps the trust list and the status
    lists (ids STARCARD_STATUS_LIST_IDS, default 1) in step with that issuer, cached in
    STARCARD_CACHE_DIR (required then).
    """
    import uvicorn

    from verifier.api.app import create_app

    settings = VerifierSettings.from_env()
    issuer = os.environ.get("STARCARD_ISSUER_URL")
    if not issuer:
        uvicorn.run(create_app(settings), host=host, port=port)
        return
    cache = os.environ.get("STARCARD_CACHE_DIR")
    if not cache:
        raise typer.BadParameter("STARCARD_ISSUER_URL needs STARCARD_CACHE_DIR (a directory)")
    ids = _list_ids(os.environ.get("STARCARD_STATUS_LIST_IDS", "1"))
    now = int(time.time())
    service = load_service(
        Path(cache),
        settings.root(),
        now,
        salvage=True,
        challenge_ttl_s=settings.challenge_ttl_s,
        accept_low_assurance=settings.accept_low_assurance,
    )
    store = ListStore(Path(cache))
    _bootstrap_trust_list(service, store, settings.trust_list.read_bytes(), now)
    stop = threading.Event()
    with _http_client() as client:
        sync = ListSync(issuer, ids, store, service, time.time, stop.wait, client)
        worker = threading.Thread(target=sync.run, args=(stop,), name="list-sync", daemon=True)
        worker.start()
        try:
            uvicorn.run(create_app(settings, service=service), host=host, port=port)
        finally:
            stop.set()
            worker.join(timeout=sum(HTTP_TIMEOUT))


def _bootstrap_trust_list(
    service: VerifierService, store: ListStore, data: bytes, now: int
) -> None:
    """Offers the configured trust list; an older one than the cache holds is ignored."""
    try:
        service.accept_trust_list(data, now)
    except VerificationError as exc:
        typer.echo(f"configured trust list not taken ({exc}); using the cached one", err=True)
        return
    held = service.trust_lists.current if service.trust_lists else None
    if held is not None and store.state().trust_seq != held.sequence:
        store.save_trust_list(data, held, None)


@app.command()
def sync(
    issuer: Annotated[str, typer.Option(help="issuer base URL, e.g. https://sc.example.cn")],
    cache: Annotated[Path, typer.Option(help="list cache directory (created if missing)")],
    root: Annotated[
        Path, typer.Option(envvar="STARCARD_ROOT_KEY", help="pinned trust-list root key (PEM)")
    ],
    list_ids: Annotated[str, typer.Option("--lists", help="status list ids, e.g. 1,2")] = "1",
    once: Annotated[bool, typer.Option(help="one round, then exit (1 if it failed)")] = False,
) -> None:
    """Fetch the trust list and status lists into CACHE (for offline terminals).

    Without --once it keeps polling (status-list ttl, backoff when the issuer is down).
    Offline verification then uses ``verifier.list_store.load_service(CACHE, ...)``.
    """
    ids = _list_ids(list_ids)
    pinned = _pinned_root(root)
    try:
        service = load_service(cache, pinned, int(time.time()), salvage=True)
    except CacheRefused as exc:  # only a torn state file gets here
        raise typer.BadParameter(str(exc)) from None
    store = ListStore(cache)
    stop = threading.Event()
    with _http_client() as client:
        syncer = ListSync(issuer, ids, store, service, time.time, stop.wait, client)
        if once:
            report = syncer.sync_once(int(time.time()))
            _show(report)
            if not report.reached_issuer or report.refused:
                raise typer.Exit(1)
            return
        try:
            syncer.run(stop)
        except KeyboardInterrupt:
            stop.set()


def _show(report: SyncReport) -> None:
    for outcome in report.outcomes:
        detail = f" ({outcome.detail})" if outcome.detail else ""
        typer.echo(f"{outcome.resource}: {outcome.result.replace('_', ' ')}{detail}")


@app.command()
def version() -> None:
    """Print the verifier's version."""
    typer.echo("starcard-verifier 0.1.0")
