"""``starcard-verifier``: run the merchant-facing verifier service, or sync a list cache.

This is a composition root: it reads the clock and the environment and wires the parts.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.core.errors import VerificationError
from verifier.list_store import CacheRefused, ListStore, load_service
from verifier.service import VerifierService
from verifier.settings import VerifierSettings
from verifier.store import VerifierStore
from verifier.sync import ListSync, SyncReport

if TYPE_CHECKING:
    from fastapi import FastAPI

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
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="worker processes (production: one per core); more than 1 needs "
            "STARCARD_ISSUER_URL and STARCARD_VERIFIER_SEAL_KEY",
        ),
    ] = 1,
) -> None:
    """Run the verifier (pinned root STARCARD_ROOT_KEY, trust list STARCARD_TRUST_LIST).

    With STARCARD_ISSUER_URL set, a background thread keeps the trust list and the status
    lists (ids STARCARD_STATUS_LIST_IDS, default 1) in step with that issuer, cached in
    STARCARD_CACHE_DIR (required then). With ``--workers N`` every worker process syncs
    by itself into its own ``worker-K`` directory of that cache. Production server settings
    (:func:`server_options`): no reload, no access log, httptools and uvloop when installed.
    """
    import uvicorn

    from verifier.api.app import create_app

    settings = VerifierSettings.from_env()
    issuer = os.environ.get("STARCARD_ISSUER_URL")
    options = server_options(workers)
    if workers > 1:
        if not issuer or not os.environ.get("STARCARD_CACHE_DIR"):
            raise typer.BadParameter(
                "--workers > 1 needs STARCARD_ISSUER_URL and STARCARD_CACHE_DIR: every worker "
                "keeps its own lists in step with the issuer"
            )
        if settings.seal_key is None:
            raise typer.BadParameter(
                "--workers > 1 needs STARCARD_VERIFIER_SEAL_KEY (64 hex) so that a challenge "
                "begun on one worker completes on another"
            )
        # the tables once here: workers creating them at the same time collide
        VerifierStore.connect(settings.database_url).engine.dispose()
        uvicorn.run("verifier.cli:worker_app", factory=True, host=host, port=port, **options)
        return
    if not issuer:
        uvicorn.run(create_app(settings), host=host, port=port, **options)
        return
    uvicorn.run(_synced_app(settings, issuer, _cache_dir()), host=host, port=port, **options)


def server_options(workers: int) -> dict[str, Any]:
    """uvicorn settings of ``serve`` (and of the benchmark's baseline server): ``workers``
    processes, no reload, no access log (every tap leaves a receipt), httptools and uvloop
    when installed (``pip install httptools uvloop``), else h11 and asyncio."""
    return {
        "workers": workers,
        "reload": False,
        "access_log": False,
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    }


def worker_app() -> FastAPI:
    """The app of one ``serve --workers N`` process: its own list sync into its own
    ``worker-K`` directory of STARCARD_CACHE_DIR (K is the first free slot)."""
    settings = VerifierSettings.from_env()
    issuer = os.environ.get("STARCARD_ISSUER_URL")
    if not issuer:
        raise RuntimeError("set STARCARD_ISSUER_URL (each worker syncs the lists itself)")
    return _synced_app(settings, issuer, _claim_slot(_cache_dir()))


def _cache_dir() -> Path:
    cache = os.environ.get("STARCARD_CACHE_DIR")
    if not cache:
        raise typer.BadParameter("STARCARD_ISSUER_URL needs STARCARD_CACHE_DIR (a directory)")
    return Path(cache)


#: Lock files of the worker slots this process holds (kept open for its life).
_SLOT_LOCKS: list[int] = []


def _claim_slot(cache: Path) -> Path:
    """``cache/worker-K`` for the first K whose lock no live process holds."""
    cache.mkdir(parents=True, exist_ok=True)
    for k in range(4 * (os.cpu_count() or 1) + 4):
        fd = os.open(cache / f"worker-{k}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _SLOT_LOCKS.append(fd)
        return cache / f"worker-{k}"
    raise RuntimeError(f"every worker slot of {cache} is taken: fewer --workers")


def _synced_app(settings: VerifierSettings, issuer: str, cache: Path) -> FastAPI:
    """The app with a list-sync thread that stops when the server shuts down."""
    from verifier.api.app import create_app

    ids = _list_ids(os.environ.get("STARCARD_STATUS_LIST_IDS", "1"))
    now = int(time.time())
    service = load_service(
        cache,
        settings.root(),
        now,
        salvage=True,
        challenge_ttl_s=settings.challenge_ttl_s,
        accept_low_assurance=settings.accept_low_assurance,
    )
    store = ListStore(cache)
    _bootstrap_trust_list(service, store, settings.trust_list.read_bytes(), now)
    stop = threading.Event()
    client = _http_client()
    sync = ListSync(issuer, ids, store, service, time.time, stop.wait, client, benefits=True)
    worker = threading.Thread(target=sync.run, args=(stop,), name="list-sync", daemon=True)
    app = create_app(settings, service=service)

    def stop_sync() -> None:
        stop.set()
        worker.join(timeout=sum(HTTP_TIMEOUT))
        client.close()

    app.router.add_event_handler("shutdown", stop_sync)
    worker.start()
    return app


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
        syncer = ListSync(issuer, ids, store, service, time.time, stop.wait, client, benefits=True)
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
