"""Verifier HTTP API with a real issuer behind it, an in-process virtual card and terminals
that sign their requests with their own keys; the verifier's store on SQLite and PostgreSQL.

The helpers here (``VerifierWorld``, ``verifier_db``) are shared by the other
``test_verifier_*`` modules.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from card_profiles.starcard import StarCardSession
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_session, graded_subject, write_trust_files
from verifier.api.app import b64encode, create_app
from verifier.core.benefits import BENEFITS_TYP, issue_benefits
from verifier.core.credential import parse_credential
from verifier.core.status_list import INVALID, MIN_ENTRIES, SUSPENDED, StatusList, issue_status_list
from verifier.settings import VerifierSettings, token_sha256
from verifier.tap import read_tap
from verifier.terminal_auth import TerminalAuth, TerminalPrivateKey, generate_key, public_key_pem

TS = int(NOW.timestamp())
OPERATOR = {"Authorization": "Bearer operator-token-for-tests-0123456789"}
ISSUER = {"Authorization": "Bearer issuer-service-token-for-tests-9876543210"}
CATALOGUE = {
    "library": {"min_stars": 2, "name": "图书馆免押金借阅"},
    "hotel": {"min_stars": 5, "name": "酒店免费住宿一晚"},
}
SEAL_KEY = bytes(range(32))


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture(params=["sqlite", "postgres"])
def verifier_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The verifier's own database (separate from the issuer's)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'verifier.db'}"
    return str(request.getfixturevalue("postgres_url"))


@dataclass
class Clock:
    now: float = float(TS)

    def __call__(self) -> float:
        return self.now


@dataclass
class VerifierWorld:
    """One issuer, one personalized card (3 stars), one verifier app."""

    ctx: IssuerContext
    session: StarCardSession
    settings: VerifierSettings
    client: TestClient
    clock: Clock
    keys: dict[str, TerminalPrivateKey] = field(default_factory=dict)

    def terminal(
        self, terminal_id: str, category: str = "office", key: TerminalPrivateKey | None = None
    ) -> TestClient:
        """Registers a terminal through the operator API; returns a client that signs."""
        key = key or generate_key()
        body = {
            "id": terminal_id,
            "merchant_name": f"Merchant {terminal_id}",
            "category": category,
            "public_key": public_key_pem(key),
        }
        registered = self.client.post("/v1/terminals", json=body, headers=OPERATOR)
        assert registered.status_code == 201, registered.text
        self.keys[terminal_id] = key
        return self.signed(terminal_id, key)

    def signed(self, terminal_id: str, key: TerminalPrivateKey) -> TestClient:
        client = TestClient(self.client.app)
        client.auth = TerminalAuth(terminal_id, key, self.clock)
        return client

    def push(self, path: str, data: bytes, media: str) -> int:
        headers = {**OPERATOR, "content-type": media}
        response = self.client.post(path, content=data, headers=headers)
        return response.status_code

    def push_benefits(self, version: int = 1, exp: int = TS + 86_400) -> None:
        data = issue_benefits(
            CATALOGUE,
            version=version,
            iat=TS,
            exp=exp,
            signer=self.ctx.keys.credential,
            kid=self.ctx.keys.credential_kid,
        )
        assert self.push("/v1/benefits", data, BENEFITS_TYP) == 204

    def status_of_card(self, value: int, iat: int) -> int:
        """Pushes a list (signed by the issuer's status key) giving this card ``value``."""
        claims = parse_credential(read_tap(self.session, b"\x00" * 32).credential).claims
        statuses = StatusList(MIN_ENTRIES)
        statuses.set(claims.status_idx, value)
        token = issue_status_list(
            statuses,
            claims.status_uri,
            iat,
            iat + 3600,
            300,
            self.ctx.keys.status,
            self.ctx.keys.status_kid,
        )
        return self.push("/v1/status-lists", token, "application/statuslist+cwt")


def operator_settings(root: Path, trust_list: Path, **options: object) -> VerifierSettings:
    """Settings with the test operator and issuer-service tokens."""
    return VerifierSettings(
        root,
        trust_list,
        seal_key=SEAL_KEY,
        operator_tokens=(("ops-1", token_sha256(_token(OPERATOR))),),
        issuer_token_sha256=token_sha256(_token(ISSUER)),
        **options,  # type: ignore[arg-type]
    )


def make_world(
    ctx: IssuerContext, tmp_path: Path, database_url: str, **options: object
) -> VerifierWorld:
    subject = graded_subject(ctx, NOW)
    session = factory_session(ctx, tmp_path / "card.json")
    ctx.issuance.personalize(session, subject, NOW, "clerk")
    root, trust_list = write_trust_files(ctx, tmp_path)
    settings = operator_settings(root, trust_list, database_url=database_url, **options)
    clock = Clock()
    client = TestClient(create_app(settings, clock=clock))
    world = VerifierWorld(ctx, session, settings, client, clock)
    with ctx.engine.connect() as conn:
        token = current_token(conn, 1)
    assert token is not None
    assert world.push("/v1/status-lists", token, "application/statuslist+cwt") == 204
    return world


def tap_body(world: VerifierWorld, terminal: TestClient) -> dict[str, str]:
    begun = terminal.post("/v1/challenges", json={})
    assert begun.status_code == 200, begun.text
    challenge = base64.urlsafe_b64decode(begun.json()["challenge"] + "==")
    data = read_tap(world.session, challenge)
    return {
        "handle": begun.json()["handle"],
        "credential": b64encode(data.credential),
        "signature": b64encode(data.card_signature),
    }


def tap(world: VerifierWorld, terminal: TestClient) -> dict[str, object]:
    result = terminal.post("/v1/verifications", json=tap_body(world, terminal))
    assert result.status_code == 200, result.text
    body: dict[str, object] = result.json()
    return body


# -- answers -----------------------------------------------------------------------------


def test_office_sees_the_star_level_and_the_tap_is_receipted(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier_db: str
) -> None:
    world = make_world(sqlite_issuer, tmp_path, verifier_db)
    office = world.terminal("office-1", "office")
    assert tap(world, office) == {"state": "valid", "star_level": 3, "assurance": "high"}
    receipts = office.get("/v1/receipts").json()["receipts"]
    assert [(r["state"], r["category"]) for r in receipts] == [("valid", "office")]


def test_merchant_learns_only_its_benefit_never_the_star_level(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    world = make_world(sqlite_issuer, tmp_path, "sqlite://")
    world.push_benefits()
    library = world.terminal("lib-1", "library")
    hotel = world.terminal("hotel-1", "hotel")
    bakery = world.terminal("bakery-1", "bakery")
    granted = tap(world, library)
    assert granted == {
        "state": "valid",
        "benefit": {"granted": True, "name": "图书馆免押金借阅"},
        "assurance": "high",
    }
    assert "star_level" not in granted
    assert tap(world, hotel)["benefit"] == {"granted": False, "name": "酒店免费住宿一晚"}
    assert tap(world, bakery)["benefit"] == {"granted": False}


def test_merchant_without_a_fresh_catalogue_gets_cannot_check(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    world = make_world(sqlite_issuer, tmp_path, "sqlite://")
    library = world.terminal("lib-1", "library")
    office = world.terminal("office-1", "office")
    assert tap(world, library) == {"state": "unknown", "reason_class": "cannot_check"}
    world.push_benefits(exp=TS + 60)
    assert tap(world, library)["state"] == "valid"
    world.clock.now = TS + 61  # the catalogue expired; the status list has not
    assert tap(world, library) == {"state": "unknown", "reason_class": "cannot_check"}
    assert tap(world, office)["state"] == "valid"
    store = world.client.app.state.store  # type: ignore[attr-defined]
    details = [r.reason_class for r in store.receipts_of_terminal("lib-1")]
    assert details.count("benefits_unavailable") == 2


def test_suspended_and_revoked_cards_give_byte_identical_answers(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier_db: str
) -> None:
    world = make_world(sqlite_issuer, tmp_path, verifier_db)
    world.push_benefits()
    bodies = {}
    world.clock.now = TS + 20  # after the issuer's own list
    for category in ("office", "library"):
        terminal = world.terminal(f"t-{category}", category)
        assert world.status_of_card(SUSPENDED, TS + 11 if category == "office" else TS + 13) == 204
        suspended = terminal.post("/v1/verifications", json=tap_body(world, terminal))
        assert world.status_of_card(INVALID, TS + 12 if category == "office" else TS + 14) == 204
        revoked = terminal.post("/v1/verifications", json=tap_body(world, terminal))
        assert suspended.content == revoked.content
        bodies[category] = revoked.content
    assert set(bodies.values()) == {b'{"state":"invalid","reason_class":"not_valid"}'}
    # the detail stays in the verifier's own receipts
    store = world.client.app.state.store  # type: ignore[attr-defined]
    details = [r.reason_class for r in store.receipts_of_terminal("t-office")]
    assert sorted(details) == ["revoked", "suspended"]


def test_replay_other_terminal_and_expired_challenge_ask_for_a_retap(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier_db: str
) -> None:
    world = make_world(sqlite_issuer, tmp_path, verifier_db)
    first = world.terminal("t-1")
    second = world.terminal("t-2")
    retry = {"state": "invalid", "reason_class": "retry"}
    body = tap_body(world, first)
    assert first.post("/v1/verifications", json=body).json()["state"] == "valid"
    assert first.post("/v1/verifications", json=body).json() == retry  # replayed
    assert second.post("/v1/verifications", json=tap_body(world, first)).json() == retry
    late = tap_body(world, first)
    world.clock.now = TS + 31  # past the 30 s challenge
    assert first.post("/v1/verifications", json=late).json() == retry


def test_forged_handle_garbage_signature_and_bad_input(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    world = make_world(sqlite_issuer, tmp_path, "sqlite://")
    terminal = world.terminal("t-9")
    body = tap_body(world, terminal)
    forged = dict(
        body, handle=body["handle"][:-4] + ("AAAA" if body["handle"][-4:] != "AAAA" else "BBBB")
    )
    assert terminal.post("/v1/verifications", json=forged).json()["reason_class"] == "retry"
    clone = dict(tap_body(world, terminal), signature=b64encode(b"\x01" * 64))
    assert terminal.post("/v1/verifications", json=clone).json() == {
        "state": "invalid",
        "reason_class": "not_genuine",
    }
    body["credential"] = "!!!not base64!!!"
    assert terminal.post("/v1/verifications", json=body).status_code == 422


def test_a_challenge_is_used_once_across_instances(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier_db: str
) -> None:
    world = make_world(sqlite_issuer, tmp_path, verifier_db)
    terminal = world.terminal("t-1")
    other = TestClient(create_app(world.settings, clock=world.clock))  # a second instance
    with sqlite_issuer.engine.connect() as conn:
        token = current_token(conn, 1)
    assert token is not None
    headers = {**OPERATOR, "content-type": "application/statuslist+cwt"}
    assert other.post("/v1/status-lists", content=token, headers=headers).status_code == 204
    other.auth = TerminalAuth("t-1", world.keys["t-1"], world.clock)
    body = tap_body(world, terminal)  # begun on the first instance
    assert other.post("/v1/verifications", json=body).json()["state"] == "valid"
    assert terminal.post("/v1/verifications", json=body).json()["reason_class"] == "retry"


def test_older_status_list_push_is_refused(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    world = make_world(sqlite_issuer, tmp_path, "sqlite://")
    with sqlite_issuer.engine.connect() as conn:
        old = current_token(conn, 1)
    assert old is not None
    sqlite_issuer.issuance.publish_now(NOW)  # a newer list (iat moves forward)
    with sqlite_issuer.engine.connect() as conn:
        new = current_token(conn, 1)
    assert new is not None
    media = "application/statuslist+cwt"
    assert world.push("/v1/status-lists", new, media) == 204
    assert world.push("/v1/status-lists", old, media) == 409


def test_p256_terminal_keys_work_too(sqlite_issuer: IssuerContext, tmp_path: Path) -> None:
    world = make_world(sqlite_issuer, tmp_path, "sqlite://")
    terminal = world.terminal("p256-1", key=ec.generate_private_key(ec.SECP256R1()))
    assert tap(world, terminal)["state"] == "valid"
