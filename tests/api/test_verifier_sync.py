"""Verifier list sync against the real issuer app served over HTTP (uvicorn on 127.0.0.1).

The issuer runs behind a thin ASGI front that logs each request's path and status (as a
reverse proxy's access log would) and can answer ``503`` for everything (an outage).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import update
from typer.testing import CliRunner

from card_profiles.starcard import StarCardSession
from issuer.api import create_app as issuer_app
from issuer.db import status_lists
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.api.test_trust_distribution import resigned
from tests.conftest import NOW
from tests.helpers import factory_session, graded_subject, write_trust_files
from verifier.cli import app as verifier_cli
from verifier.core.errors import StatusListRollback
from verifier.core.status_list import parse_status_list_token
from verifier.list_store import CacheRefused, ListStore, load_service, status_file
from verifier.service import VerifierService
from verifier.sync import ListSync

TS = int(NOW.timestamp())
URI = "https://sc.example.cn/s/1"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class Front:
    """The issuer's ASGI app with an access log and an outage switch."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self.log: list[tuple[str, int]] = []
        self.outage = False

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        if self.outage:
            self.log.append((path, 503))
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"down"})
            return

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.log.append((path, int(message["status"])))
            await send(message)

        await self.app(scope, receive, logged)


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Runs ``app`` with uvicorn in a thread on a free 127.0.0.1 port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclasses.dataclass
class World:
    ctx: IssuerContext
    front: Front
    base_url: str
    cache: Path
    session: StarCardSession
    serial: str

    def verifier(self, now: int = TS) -> VerifierService:
        return load_service(self.cache, self.ctx.root_public_key, now, salvage=True)

    def syncer(
        self,
        service: VerifierService,
        base_url: str | None = None,
        sleep: Callable[[float], object] = lambda _: None,
        **options: Any,
    ) -> ListSync:
        """A sync of list 1 on the fixed clock; ``sleep`` returns at once unless given."""
        return ListSync(
            base_url or self.base_url,
            [1],
            ListStore(self.cache),
            service,
            clock=lambda: float(TS),
            sleep=sleep,
            http_client=httpx.Client(timeout=5),
            **options,
        )


@pytest.fixture
def world(sqlite_issuer: IssuerContext, tmp_path: Path) -> Iterator[World]:
    subject = graded_subject(sqlite_issuer, NOW)
    session = factory_session(sqlite_issuer, tmp_path / "card.json")
    issued = sqlite_issuer.issuance.personalize(session, subject, NOW, "clerk")
    front = Front(issuer_app(sqlite_issuer.settings, "t", context=sqlite_issuer))
    with served(front) as base_url:
        yield World(sqlite_issuer, front, base_url, tmp_path / "cache", session, issued.serial)


def tap(service: VerifierService, session: StarCardSession, now: int) -> str:
    """One tap of the card at ``now``; the three-state answer (reason appended if any)."""
    from verifier.tap import read_tap

    handle, challenge = service.begin("t-1", b"", now)
    data = read_tap(session, challenge)
    verdict = service.complete(handle, "t-1", data.credential, data.card_signature, now)
    return verdict.state + (f"/{verdict.reason_class}" if verdict.reason_class else "")


def held_token(ctx: IssuerContext) -> bytes:
    with ctx.engine.connect() as conn:
        token = current_token(conn, 1)
    assert token is not None
    return token


def test_first_sync_fetches_then_304_keeps_the_cache(world: World) -> None:
    service = world.verifier()
    assert tap(service, world.session, TS) == "unknown/unavailable"  # nothing cached yet
    sync = world.syncer(service)
    first = sync.sync_once(TS)
    assert [o.result for o in first.outcomes] == ["updated", "updated"]
    second = sync.sync_once(TS + 10)
    assert [o.result for o in second.outcomes] == ["not_modified", "not_modified"]
    assert world.front.log == [
        ("/.well-known/starcard/trust-list", 200),
        ("/s/1", 200),
        ("/.well-known/starcard/trust-list", 304),
        ("/s/1", 304),
    ]
    assert tap(service, world.session, TS + 10) == "valid"
    state = ListStore(world.cache).state()
    assert state.last_sync == TS + 10
    held = parse_status_list_token(held_token(world.ctx), service.trust, TS)
    assert state.status[1].iat == held.iat and state.status[1].etag
    assert (world.cache / status_file(1)).read_bytes() == held_token(world.ctx)


def test_revocation_on_the_issuer_shows_after_the_next_sync(world: World) -> None:
    service = world.verifier()
    sync = world.syncer(service)
    sync.sync_once(TS)
    assert tap(service, world.session, TS) == "valid"
    world.ctx.issuance.revoke(world.serial, "lost", NOW + dt.timedelta(seconds=60), "clerk")
    report = sync.sync_once(TS + 60)
    assert [o.result for o in report.outcomes] == ["not_modified", "updated"]
    assert tap(service, world.session, TS + 60) == "invalid/revoked"
    assert sync.next_delay(report, TS + 60) == world.ctx.settings.status_list_ttl_s


def test_issuer_down_backs_off_capped_and_answers_valid_until_exp_then_unknown(
    world: World,
) -> None:
    service = world.verifier()
    stop = threading.Event()
    slept: list[float] = []

    def sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 7:
            stop.set()

    sync = world.syncer(service, sleep=sleep, backoff_cap_s=20.0, jitter=lambda c: c)
    assert sync.sync_once(TS).reached_issuer
    exp = parse_status_list_token(held_token(world.ctx), service.trust, TS).exp
    world.front.outage = True  # every answer 503 from here on
    sync.run(stop)
    assert slept == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    assert tap(service, world.session, exp - 1) == "valid"
    assert not sync.sync_once(exp).reached_issuer
    assert tap(service, world.session, exp) == "unknown/unavailable"
    assert tap(service, world.session, exp + 3600) == "unknown/unavailable"


def test_network_error_backs_off_with_full_jitter_below_the_cap(world: World) -> None:
    service = world.verifier()
    with served(world.front) as dead_url:
        pass  # that port is closed now: connection refused
    ceilings: list[float] = []

    def jitter(ceiling: float) -> float:
        ceilings.append(ceiling)
        return ceiling / 2

    sync = world.syncer(service, dead_url, backoff_cap_s=8.0, jitter=jitter)
    delays = [sync.next_delay(sync.sync_once(TS), TS) for _ in range(6)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(o.result == "unreachable" for o in sync.sync_once(TS).outcomes)
    assert tap(service, world.session, TS) == "unknown/unavailable"  # never invalid
    recovered = world.syncer(service, backoff_cap_s=8.0, jitter=jitter)
    assert recovered.next_delay(recovered.sync_once(TS), TS) == 300


def test_freeze_same_list_served_for_ever_ends_in_unknown_at_exp(world: World) -> None:
    service = world.verifier()
    sync = world.syncer(service)
    sync.sync_once(TS)
    exp = parse_status_list_token(held_token(world.ctx), service.trust, TS).exp
    for now in (exp - 600, exp - 1, exp, exp + 60):
        report = sync.sync_once(now)
        assert [o.result for o in report.outcomes] == ["not_modified", "not_modified"]
    assert tap(service, world.session, exp - 1) == "valid"
    assert tap(service, world.session, exp) == "unknown/unavailable"


def test_rollback_served_is_refused_and_the_cache_is_unchanged(world: World) -> None:
    service = world.verifier()
    sync = world.syncer(service)
    sync.sync_once(TS)
    old = held_token(world.ctx)
    world.ctx.issuance.publish_now(NOW + dt.timedelta(seconds=60))
    new = held_token(world.ctx)
    assert [o.result for o in sync.sync_once(TS + 60).outcomes] == ["not_modified", "updated"]
    with world.ctx.engine.begin() as conn:  # the issuer's database restored from a backup
        conn.execute(update(status_lists).values(token=old, issued_at=TS, expires_at=TS + 86_400))
    before = ListStore(world.cache).state()
    report = sync.sync_once(TS + 120)
    assert [o.result for o in report.outcomes] == ["not_modified", "refused"]
    assert "StatusListRollback" in report.outcomes[1].detail
    assert sync.refusals == [report.outcomes[1]]
    assert (world.cache / status_file(1)).read_bytes() == new
    after = ListStore(world.cache).state()
    assert after.status == before.status and after.status[1].iat == TS + 60
    token = service.status.token(URI)
    assert token is not None and token.raw == new


def test_trust_list_rollback_from_a_misconfigured_mirror_is_refused(world: World) -> None:
    service = world.verifier()
    sync = world.syncer(service)
    sync.sync_once(TS)
    held = service.trust_lists.current if service.trust_lists else None
    assert held is not None
    older = dataclasses.replace(world.ctx, trust_list=resigned(world.ctx, held.sequence - 1))
    with served(issuer_app(older.settings, "t", context=older)) as mirror:
        mirror_sync = world.syncer(service, mirror)
        report = mirror_sync.sync_once(TS + 5)
    assert report.outcomes[0].result == "refused"
    assert "TrustListRollback" in report.outcomes[0].detail
    assert ListStore(world.cache).state().trust_seq == held.sequence
    assert tap(service, world.session, TS + 5) == "valid"


def test_restart_from_cache_keeps_watermarks(world: World) -> None:
    sync = world.syncer(world.verifier())
    sync.sync_once(TS)
    old = held_token(world.ctx)
    world.ctx.issuance.publish_now(NOW + dt.timedelta(seconds=60))
    sync.sync_once(TS + 60)
    restarted = load_service(world.cache, world.ctx.root_public_key, TS + 90)
    assert tap(restarted, world.session, TS + 90) == "valid"  # offline, from the cache
    with pytest.raises(StatusListRollback):
        restarted.accept_status_list(old, TS + 90)
    with world.ctx.engine.begin() as conn:
        conn.execute(update(status_lists).values(token=old, issued_at=TS, expires_at=TS + 86_400))
    again = world.syncer(restarted)
    assert again.sync_once(TS + 120).outcomes[1].result == "refused"


def test_tampered_cache_file_is_refused_on_load(world: World) -> None:
    world.syncer(world.verifier()).sync_once(TS)
    path = world.cache / status_file(1)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the signature
    path.write_bytes(bytes(data))
    with pytest.raises(
        CacheRefused, match=r"status-1\.cwt does not verify.*starcard-verifier sync"
    ):
        load_service(world.cache, world.ctx.root_public_key, TS)
    salvaged = world.verifier()  # a syncing process drops it and fetches it again
    assert tap(salvaged, world.session, TS) == "unknown/unavailable"
    report = world.syncer(salvaged).sync_once(TS)
    assert [o.result for o in report.outcomes] == ["not_modified", "updated"]
    assert tap(salvaged, world.session, TS) == "valid"


def test_cli_sync_once_fills_a_cache_for_offline_use(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    wall = int(time.time())  # the CLI reads the real clock: publish a list dated now
    sqlite_issuer.issuance.publish_now(dt.datetime.fromtimestamp(wall - 5, dt.UTC))
    root, _ = write_trust_files(sqlite_issuer, tmp_path)
    cache = tmp_path / "cache"
    runner = CliRunner()
    front = Front(issuer_app(sqlite_issuer.settings, "t", context=sqlite_issuer))
    with served(front) as base_url:
        args = ["sync", "--issuer", base_url, "--cache", str(cache), "--root", str(root)]
        first = runner.invoke(verifier_cli, [*args, "--once"])
        second = runner.invoke(verifier_cli, [*args, "--once"])
    assert first.exit_code == 0, first.output
    assert "status list 1: updated" in first.output
    assert "status list 1: not modified" in second.output
    service = load_service(cache, sqlite_issuer.root_public_key, int(time.time()))
    assert service.status.token(URI) is not None
    with served(front) as base_url:
        pass
    down = runner.invoke(verifier_cli, [*args[:1], "--issuer", base_url, *args[3:], "--once"])
    assert down.exit_code == 1
    assert "unreachable" in down.output
