"""The issuer publishes its signed benefits catalogue; verifiers take it and merchants get
their benefit. An unreachable HSM is a retryable 503 with Retry-After, not a 422."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from issuer.api import HSM_RETRY_AFTER_S, create_app
from issuer.api_public import BENEFITS_VALIDITY_S, catalogue_categories, public_router
from issuer.policy import Benefit
from issuer.wiring import IssuerContext
from tests.api.test_issuance_hsm_lost import hsm_server, remote_issuer  # noqa: F401 (fixtures)
from tests.api.test_verifier_api import OPERATOR, TS, make_world, tap
from tests.conftest import NOW
from tests.helpers import factory_session, graded_subject
from tests.hsm.conftest import ServerProcess
from verifier.core.benefits import BENEFITS_TYP, BenefitsCache, parse_benefits

STAFF = {"Authorization": "Bearer test-staff-token"}


class Clock:
    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


def public_client(ctx: IssuerContext, clock: Clock) -> TestClient:
    """The public router alone, on the fixed test clock (create_app reads the wall clock)."""
    app = FastAPI()
    app.include_router(public_router(ctx, clock))
    return TestClient(app)


def test_one_benefit_per_category_the_lowest_min_stars_and_never_office() -> None:
    benefits = {
        "b_gold": Benefit("b_gold", "Gold", 4, ("hotel", "retail"), "p"),
        "a_basic": Benefit("a_basic", "Basic", 2, ("hotel",), "p"),
        "c_same": Benefit("c_same", "Same level, later key", 2, ("hotel",), "p"),
        "d_office": Benefit("d_office", "Office", 1, ("office", "bank"), "p"),
    }
    assert catalogue_categories(benefits) == {
        "bank": {"min_stars": 1, "name": "Office"},
        "hotel": {"min_stars": 2, "name": "Basic"},
        "retail": {"min_stars": 4, "name": "Gold"},
    }


def test_verifier_accepts_the_published_catalogue_and_a_merchant_gets_its_benefit(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    published = public_client(sqlite_issuer, clock).get("/.well-known/starcard/benefits")
    assert published.status_code == 200
    assert published.headers["content-type"] == BENEFITS_TYP
    catalogue = BenefitsCache().accept(published.content, sqlite_issuer.keys.trust_store(), TS)
    assert catalogue.rules["library"].name == "图书馆免押金借阅"
    assert "office" not in catalogue.rules

    world = make_world(sqlite_issuer, tmp_path, "sqlite://")  # the card holds 3 stars
    pushed = world.client.post(
        "/v1/benefits",
        content=published.content,
        headers={**OPERATOR, "content-type": BENEFITS_TYP},
    )
    assert pushed.status_code == 204, pushed.text
    library = world.terminal("lib-1", "library")
    assert tap(world, library)["benefit"] == {"granted": True, "name": "图书馆免押金借阅"}


def test_same_bytes_until_half_the_validity_then_a_higher_version(
    sqlite_issuer: IssuerContext,
) -> None:
    clock = Clock(NOW)
    client = public_client(sqlite_issuer, clock)
    first = client.get("/.well-known/starcard/benefits")
    etag = first.headers["ETag"]
    assert client.get("/.well-known/starcard/benefits").content == first.content
    assert (
        client.get("/.well-known/starcard/benefits", headers={"If-None-Match": etag}).status_code
        == 304
    )
    trust = sqlite_issuer.keys.trust_store()
    clock.at = NOW + dt.timedelta(seconds=BENEFITS_VALIDITY_S // 2)
    second = client.get("/.well-known/starcard/benefits")
    assert second.headers["ETag"] != etag
    cache = BenefitsCache()
    cache.accept(first.content, trust, TS)
    later = int(clock.at.timestamp())
    assert (
        cache.accept(second.content, trust, later).version
        > parse_benefits(first.content, trust, TS).version
    )


def test_the_app_serves_the_catalogue_with_an_etag(sqlite_issuer: IssuerContext) -> None:
    client = TestClient(
        create_app(sqlite_issuer.settings, "test-staff-token", context=sqlite_issuer)
    )
    first = client.get("/.well-known/starcard/benefits")
    assert first.status_code == 200
    again = client.get(
        "/.well-known/starcard/benefits", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304


def test_hsm_unreachable_is_503_with_retry_after(
    remote_issuer: IssuerContext,  # noqa: F811
    hsm_server: ServerProcess,  # noqa: F811
) -> None:
    ctx = remote_issuer
    subject = graded_subject(ctx, NOW)
    session = factory_session(ctx)
    serial = ctx.issuance.personalize(session, subject, NOW, "clerk").serial
    client = TestClient(create_app(ctx.settings, "test-staff-token", context=ctx))
    hsm_server.stop()
    revoked = client.post(f"/v1/cards/{serial}/revoke", json={"reason": "lost"}, headers=STAFF)
    assert revoked.status_code == 503, revoked.text
    assert revoked.headers["Retry-After"] == str(HSM_RETRY_AFTER_S)
    assert "HSM" in revoked.json()["detail"]
    benefits = client.get("/.well-known/starcard/benefits")
    assert benefits.status_code == 503
    assert benefits.headers["Retry-After"] == str(HSM_RETRY_AFTER_S)
