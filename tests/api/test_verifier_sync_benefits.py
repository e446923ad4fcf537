"""The list sync also keeps the benefits catalogue (``benefits=True``), against the real issuer
app served over HTTP: no operator push is needed; an older catalogue is refused; a restart from
the cache keeps the version watermark. And the verifier's ``/readyz`` follows what it holds.

The issuer's public router runs on the fixed test clock (``create_app`` reads the wall clock);
everything else is the issuer app. A :class:`Mirror` can serve other bytes for one path, as a
misconfigured mirror or a replaying attacker would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from card_profiles.starcard import StarCardSession
from issuer.api import create_app as issuer_app
from issuer.api_public import public_router
from issuer.wiring import IssuerContext
from tests.api.test_verifier_api import CATALOGUE, VerifierWorld, operator_settings, tap
from tests.api.test_verifier_api import Clock as VerifierClock
from tests.api.test_verifier_sync import Front, Message, Scope, served
from tests.conftest import NOW
from tests.helpers import factory_session, graded_subject, write_trust_files
from verifier.api.app import create_app
from verifier.core.benefits import BenefitsRollback, issue_benefits
from verifier.list_store import BENEFITS_FILE, ListStore, load_service
from verifier.service import VerifierService
from verifier.sync import BENEFITS_PATH, ListSync

TS = int(NOW.timestamp())


class Mirror(Front):
    """The issuer's app, except that paths in ``replace`` answer the bytes given there."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        super().__init__(app)
        self.replace: dict[str, bytes] = {}

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        body = self.replace.get(str(scope.get("path"))) if scope["type"] == "http" else None
        if body is None:
            await super().__call__(scope, receive, send)
            return
        self.log.append((str(scope["path"]), 200))
        headers = [(b"etag", b'"replayed"'), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclasses.dataclass
class World:
    ctx: IssuerContext
    front: Mirror
    base_url: str
    cache: Path
    session: StarCardSession
    tmp_path: Path

    def verifier(self, now: int = TS) -> VerifierService:
        return load_service(self.cache, self.ctx.root_public_key, now, salvage=True)

    def syncer(self, service: VerifierService) -> ListSync:
        return ListSync(
            self.base_url,
            [1],
            ListStore(self.cache),
            service,
            clock=lambda: float(TS),
            sleep=lambda _: None,
            http_client=httpx.Client(timeout=5),
            benefits=True,
        )

    def app(self, service: VerifierService, clock: VerifierClock) -> VerifierWorld:
        """The verifier's HTTP app around ``service`` (lists come only from the sync)."""
        root, trust_list = write_trust_files(self.ctx, self.tmp_path)
        settings = operator_settings(root, trust_list, database_url="sqlite://")
        client = TestClient(create_app(settings, service=service, clock=clock))
        return VerifierWorld(self.ctx, self.session, settings, client, clock)

    def older_catalogue(self) -> bytes:
        """Properly signed by the issuer, but with a version below the issuer's own."""
        return issue_benefits(
            CATALOGUE,
            version=1,
            iat=TS,
            exp=TS + 86_400,
            signer=self.ctx.keys.credential,
            kid=self.ctx.keys.credential_kid,
        )


@pytest.fixture
def world(sqlite_issuer: IssuerContext, tmp_path: Path) -> Iterator[World]:
    subject = graded_subject(sqlite_issuer, NOW)  # 3 stars
    session = factory_session(sqlite_issuer, tmp_path / "card.json")
    sqlite_issuer.issuance.personalize(session, subject, NOW, "clerk")
    app = FastAPI()
    app.include_router(public_router(sqlite_issuer, lambda: NOW))
    app.mount("/", issuer_app(sqlite_issuer.settings, "t", context=sqlite_issuer))
    front = Mirror(app)
    with served(front) as base_url:
        yield World(sqlite_issuer, front, base_url, tmp_path / "cache", session, tmp_path)


def results(sync: ListSync, now: int) -> list[str]:
    return [o.result for o in sync.sync_once(now).outcomes]


def test_first_sync_gets_the_catalogue_and_a_merchant_gets_its_benefit(world: World) -> None:
    service = world.verifier()
    assert service.benefits.current is None
    clock = VerifierClock()
    verifier = world.app(service, clock)
    not_ready = verifier.client.get("/readyz")
    assert not_ready.status_code == 503
    assert "status list" in str(not_ready.json()["missing"])
    sync = world.syncer(service)
    assert results(sync, TS) == ["updated", "updated", "updated"]
    assert results(sync, TS + 10) == ["not_modified", "not_modified", "not_modified"]
    assert world.front.log[-1] == (BENEFITS_PATH, 304)
    assert verifier.client.get("/readyz").status_code == 200
    library = verifier.terminal("lib-1", "library")
    assert tap(verifier, library)["benefit"] == {"granted": True, "name": "图书馆免押金借阅"}
    held = service.benefits.current
    assert held is not None
    state = ListStore(world.cache).state()
    assert state.benefits_version == held.version and state.benefits_etag
    assert (world.cache / BENEFITS_FILE).read_bytes() == held.raw
    token = service.status.token(held_uri(service))
    assert token is not None
    clock.now = float(token.exp)  # the status list has run out: not ready any more
    assert verifier.client.get("/readyz").status_code == 503


def held_uri(service: VerifierService) -> str:
    (uri,) = service.status.watermark
    return uri


def test_an_older_catalogue_is_refused_and_the_cache_is_unchanged(world: World) -> None:
    service = world.verifier()
    sync = world.syncer(service)
    assert results(sync, TS) == ["updated", "updated", "updated"]
    held = service.benefits.current
    assert held is not None and held.version > 1
    world.front.replace[BENEFITS_PATH] = world.older_catalogue()
    report = sync.sync_once(TS + 10)
    assert [o.result for o in report.outcomes] == ["not_modified", "not_modified", "refused"]
    assert "older" in report.outcomes[-1].detail
    assert sync.refusals[-1].resource == "benefits catalogue"
    assert service.benefits.current is held
    assert (world.cache / BENEFITS_FILE).read_bytes() == held.raw
    assert ListStore(world.cache).state().benefits_version == held.version


def test_restart_from_the_cache_keeps_the_catalogue_and_its_watermark(world: World) -> None:
    first = world.verifier()
    assert results(world.syncer(first), TS) == ["updated", "updated", "updated"]
    held = first.benefits.current
    assert held is not None
    restarted = world.verifier(TS + 60)
    assert restarted.benefits.current is not None
    assert restarted.benefits.current.raw == held.raw
    with pytest.raises(BenefitsRollback):
        restarted.accept_benefits(world.older_catalogue(), TS + 60)

    (world.cache / BENEFITS_FILE).unlink()  # lost: refused on load, salvaged by the sync
    salvaged = world.verifier(TS + 60)
    assert salvaged.benefits.current is None
    with pytest.raises(BenefitsRollback):  # nothing held, yet the watermark holds
        salvaged.accept_benefits(world.older_catalogue(), TS + 60)
    world.front.replace[BENEFITS_PATH] = world.older_catalogue()
    sync = world.syncer(salvaged)
    assert results(sync, TS + 60)[-1] == "refused"
    del world.front.replace[BENEFITS_PATH]
    assert results(sync, TS + 70)[-1] == "updated"  # fetched in full: no ETag was sent
    assert salvaged.benefits.current is not None
    assert salvaged.benefits.current.raw == held.raw


def test_a_lowered_state_cannot_lower_the_watermark_of_the_file(world: World) -> None:
    first = world.verifier()
    assert results(world.syncer(first), TS) == ["updated", "updated", "updated"]
    store = ListStore(world.cache)
    state_file = world.cache / "state.json"
    text = state_file.read_text()
    version = store.state().benefits_version
    assert version is not None and f'"version": {version}' in text
    state_file.write_text(text.replace(f'"version": {version}', '"version": 0'))
    restarted = world.verifier(TS + 60)
    with pytest.raises(BenefitsRollback):
        restarted.accept_benefits(world.older_catalogue(), TS + 60)


def test_an_expired_cached_catalogue_is_not_used_but_its_watermark_is(world: World) -> None:
    first = world.verifier()
    assert results(world.syncer(first), TS) == ["updated", "updated", "updated"]
    held = first.benefits.current
    assert held is not None
    later = held.exp + 1
    restarted = world.verifier(later)
    assert restarted.benefits.current is None
    fresh_but_older = issue_benefits(
        CATALOGUE,
        version=1,
        iat=later,
        exp=later + 86_400,
        signer=world.ctx.keys.credential,
        kid=world.ctx.keys.credential_kid,
    )
    with pytest.raises(BenefitsRollback):
        restarted.accept_benefits(fresh_but_older, later)


def test_a_service_not_built_from_the_cache_still_honours_the_recorded_version(
    world: World,
) -> None:
    assert results(world.syncer(world.verifier()), TS) == ["updated", "updated", "updated"]
    plain = VerifierService.from_trust_list(world.ctx.root_public_key, world.ctx.trust_list, TS)
    world.front.replace[BENEFITS_PATH] = world.older_catalogue()
    assert results(world.syncer(plain), TS + 10)[-1] == "refused"
    assert plain.benefits.current is None
