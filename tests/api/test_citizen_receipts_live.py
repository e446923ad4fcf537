""" "Who checked my card" against a real verifier: the verifier app served by uvicorn on
127.0.0.1 (its store on SQLite), terminals that sign their requests, taps of real issued
cards, and the citizen report of the issuer configured with ``verifier_url`` /
``verifier_token`` fetching the receipts over HTTP."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from card_profiles.starcard import StarCardSession
from issuer.issuance import IssuedCard
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.api.test_citizen import Clock as IssuerClock
from tests.api.test_citizen import browser, log_in
from tests.api.test_verifier_api import (
    CATALOGUE,
    ISSUER,
    OPERATOR,
    TS,
    Clock,
    _token,
    operator_settings,
)
from tests.api.test_verifier_sync import served
from tests.conftest import NOW
from tests.helpers import factory_session, graded_subject, id_number, write_trust_files
from verifier.api.app import b64encode, create_app
from verifier.core.benefits import BENEFITS_TYP, issue_benefits
from verifier.tap import read_tap
from verifier.terminal_auth import TerminalAuth, generate_key, public_key_pem


@dataclasses.dataclass
class Card:
    issued: IssuedCard
    session: StarCardSession


@dataclasses.dataclass
class LiveVerifier:
    base_url: str
    clock: Clock
    operator: httpx.Client

    def terminal(self, terminal_id: str, merchant_name: str, category: str) -> httpx.Client:
        """Registers a terminal (its own key) and returns an HTTP client that signs as it."""
        key = generate_key()
        body = {
            "id": terminal_id,
            "merchant_name": merchant_name,
            "category": category,
            "public_key": public_key_pem(key),
        }
        registered = self.operator.post("/v1/terminals", json=body)
        assert registered.status_code == 201, registered.text
        return httpx.Client(
            base_url=self.base_url, auth=TerminalAuth(terminal_id, key, self.clock), timeout=10
        )


def issue(ctx: IssuerContext, tmp_path: Path, i: int) -> Card:
    subject = graded_subject(ctx, NOW, id_number=id_number(i))
    session = factory_session(ctx, tmp_path / f"card-{i}.json")
    return Card(ctx.issuance.personalize(session, subject, NOW, "clerk"), session)


def tap(terminal: httpx.Client, card: Card) -> dict[str, object]:
    begun = terminal.post("/v1/challenges", json={})
    assert begun.status_code == 200, begun.text
    data = read_tap(card.session, base64.urlsafe_b64decode(begun.json()["challenge"] + "=="))
    body = {
        "handle": begun.json()["handle"],
        "credential": b64encode(data.credential),
        "signature": b64encode(data.card_signature),
    }
    done = terminal.post("/v1/verifications", json=body)
    assert done.status_code == 200, done.text
    answer: dict[str, object] = done.json()
    return answer


@pytest.fixture
def verifier(sqlite_issuer: IssuerContext, tmp_path: Path) -> Iterator[LiveVerifier]:
    """The verifier app over HTTP with the issuer's trust list, status list and catalogue."""
    root, trust_list = write_trust_files(sqlite_issuer, tmp_path)
    settings = operator_settings(
        root, trust_list, database_url=f"sqlite:///{tmp_path / 'verifier.db'}"
    )
    clock = Clock()
    with served(create_app(settings, clock=clock)) as base_url:
        operator = httpx.Client(base_url=base_url, headers=OPERATOR, timeout=10)
        live = LiveVerifier(base_url, clock, operator)
        yield live
        operator.close()


def push_lists(ctx: IssuerContext, live: LiveVerifier) -> None:
    with ctx.engine.connect() as conn:
        status = current_token(conn, 1)
    assert status is not None
    catalogue = issue_benefits(
        CATALOGUE,
        version=1,
        iat=TS,
        exp=TS + 86_400,
        signer=ctx.keys.credential,
        kid=ctx.keys.credential_kid,
    )
    for path, data, media in (
        ("/v1/status-lists", status, "application/statuslist+cwt"),
        ("/v1/benefits", catalogue, BENEFITS_TYP),
    ):
        pushed = live.operator.post(path, content=data, headers={"content-type": media})
        assert pushed.status_code == 204, pushed.text


def beijing(unix: int) -> str:
    """How the page shows a receipt time: Beijing local time to the minute."""
    return dt.datetime.fromtimestamp(unix, dt.timezone(dt.timedelta(hours=8))).strftime(
        "%Y-%m-%d %H:%M"
    )


def checks_on(page: str) -> list[str]:
    """The lines of the report's "who checked my card" list."""
    found = re.search(r'<ul id="checks">(.*?)</ul>', page, re.S)
    assert found is not None, page
    return [html.unescape(li).strip() for li in re.findall(r"<li>(.*?)</li>", found.group(1))]


def test_the_holder_sees_who_checked_the_card_and_only_that_card(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier: LiveVerifier
) -> None:
    mine, other = issue(sqlite_issuer, tmp_path, 1), issue(sqlite_issuer, tmp_path, 2)
    sqlite_issuer.issuance.publish_now(NOW)  # both cards in the status list
    push_lists(sqlite_issuer, verifier)
    library = verifier.terminal("lib-1", "区图书馆", "library")
    office = verifier.terminal("office-1", "街道办事处", "office")
    assert tap(library, mine)["state"] == "valid"
    verifier.clock.now += 60
    assert tap(office, other)["state"] == "valid"  # another card: not on my page

    settings = dataclasses.replace(
        sqlite_issuer.settings, verifier_url=verifier.base_url, verifier_token=_token(ISSUER)
    )
    c = browser(dataclasses.replace(sqlite_issuer, settings=settings), IssuerClock(NOW))
    log_in(c, mine.issued)
    report = c.get(f"/c/{mine.issued.qr_token}/report")
    assert report.status_code == 200
    assert checks_on(report.text) == [f"{beijing(TS)} — 区图书馆 (library): valid"]

    log_in(c, other.issued)
    theirs = c.get(f"/c/{other.issued.qr_token}/report")
    assert checks_on(theirs.text) == [f"{beijing(TS + 60)} — 街道办事处 (office): valid"]


def test_a_wrong_issuer_token_shows_the_checks_as_unavailable(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier: LiveVerifier
) -> None:
    card = issue(sqlite_issuer, tmp_path, 3)
    settings = dataclasses.replace(
        sqlite_issuer.settings, verifier_url=verifier.base_url, verifier_token="not-the-token"
    )
    c = browser(dataclasses.replace(sqlite_issuer, settings=settings), IssuerClock(NOW))
    log_in(c, card.issued)
    page = c.get(f"/c/{card.issued.qr_token}/report")
    assert page.status_code == 200 and "核验记录暂时无法获取" in page.text
    assert '<ul id="checks">' not in page.text
