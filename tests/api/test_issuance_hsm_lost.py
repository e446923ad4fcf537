"""The HSM lost between the card's key generation and the credential signing.

The issuer talks to an ``hsm_sim`` server process (``RemoteHsm``); the server is stopped
right after the card generated its key. Personalization stops with ``HsmUnreachable`` saying
where the job waits; the job stays at ``card_key_generated`` with nothing signed; once the
server is back, a re-run on the same card completes it to an active card that taps valid.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from issuer.db import cards
from issuer.issuance import HsmUnreachable
from issuer.wiring import IssuerContext, build_issuer
from tests.conftest import NOW, make_settings, trust_clock
from tests.helpers import factory_card, graded_subject
from tests.hsm.conftest import ServerProcess
from verifier.service import VerifierService
from verifier.tap import read_tap


@pytest.fixture
def hsm_server() -> Iterator[ServerProcess]:
    directory = Path(tempfile.mkdtemp(prefix="hsm-", dir="/tmp"))  # socket paths are short
    server = ServerProcess(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def remote_issuer(
    database_url: str, tmp_path: Path, hsm_server: ServerProcess
) -> Iterator[IssuerContext]:
    settings = dataclasses.replace(
        make_settings(database_url, tmp_path),
        hsm_backend="remote",
        hsm_socket=hsm_server.socket_path,
    )
    ctx = build_issuer(settings, clock=trust_clock)
    yield ctx
    ctx.engine.dispose()


def test_hsm_lost_after_key_generation_job_waits_then_resumes(
    remote_issuer: IssuerContext, hsm_server: ServerProcess
) -> None:
    ctx = remote_issuer
    subject = graded_subject(ctx, NOW)
    card = factory_card(ctx)
    session = StarCardSession(InProcessTransport(card))
    generate_key = session.generate_key

    def generate_then_lose_the_hsm() -> bytes:
        key = generate_key()
        hsm_server.stop()
        return key

    session.generate_key = generate_then_lose_the_hsm  # type: ignore[method-assign]
    with pytest.raises(HsmUnreachable, match="kept at card_key_generated") as lost:
        ctx.issuance.personalize(session, subject, NOW, "clerk")
    assert "re-run the personalization when the HSM is back" in str(lost.value)
    with ctx.engine.connect() as conn:
        row = conn.execute(select(cards).where(cards.c.serial == card.serial.hex())).one()
    assert (row.state, row.credential) == ("card_key_generated", None)
    assert row.card_public_key is not None
    assert card.state.credential is None  # nothing was written after the key

    hsm_server.start()
    issued = ctx.issuance.personalize(
        StarCardSession(InProcessTransport(card)), subject, NOW, "clerk"
    )
    with ctx.engine.connect() as conn:
        states = conn.execute(select(cards.c.state).where(cards.c.subject_id == subject)).all()
    assert [s for (s,) in states] == ["active"]
    verifier = VerifierService(trust=ctx.keys.trust_store())
    verifier.accept_status_list(ctx.issuance.publish_now(NOW), int(NOW.timestamp()))
    handle, challenge = verifier.begin("t-1", b"test", int(NOW.timestamp()))
    data = read_tap(StarCardSession(InProcessTransport(card)), challenge)
    verdict = verifier.complete(
        handle, "t-1", data.credential, data.card_signature, int(NOW.timestamp())
    )
    assert (verdict.state, verdict.star_level) == ("valid", issued.stars)


def test_hsm_down_at_revocation_changes_nothing(
    remote_issuer: IssuerContext, hsm_server: ServerProcess
) -> None:
    ctx = remote_issuer
    subject = graded_subject(ctx, NOW)
    issued = ctx.issuance.personalize(
        StarCardSession(InProcessTransport(factory_card(ctx))), subject, NOW, "clerk"
    )
    hsm_server.stop()
    with pytest.raises(HsmUnreachable, match="is not revoked yet"):
        ctx.issuance.revoke(issued.serial, "lost", NOW, "clerk")
    with ctx.engine.connect() as conn:
        state = conn.execute(select(cards.c.state).where(cards.c.serial == issued.serial))
        assert state.scalar_one() == "active"
    hsm_server.start()
    ctx.issuance.revoke(issued.serial, "lost", NOW, "clerk")
    with ctx.engine.connect() as conn:
        state = conn.execute(select(cards.c.state).where(cards.c.serial == issued.serial))
        assert state.scalar_one() == "revoked"
