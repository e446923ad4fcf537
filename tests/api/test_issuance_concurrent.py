"""64 concurrent issuance requests for the same person, 64 different cards, on SQLite and on
PostgreSQL: exactly one card ends active; every other request ends refused with a reason
(superseded by a newer request, or the person has a card), and none of their cards is active
or shows VALID on the status list."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from issuer.db import cards
from issuer.issuance import IssuanceError, IssuedCard, NotEligible, Superseded
from issuer.publisher import VALID, current_token
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_card, graded_subject
from verifier.core.status_list import parse_status_list_token

REQUESTS = 64


def test_64_concurrent_requests_for_one_person_give_one_active_card(
    issuer_ctx: IssuerContext,
) -> None:
    ctx = issuer_ctx
    subject = graded_subject(ctx, NOW)
    sessions = [StarCardSession(InProcessTransport(factory_card(ctx))) for _ in range(REQUESTS)]
    barrier = threading.Barrier(REQUESTS)

    def request(session: StarCardSession) -> IssuedCard | BaseException:
        barrier.wait(timeout=60)
        try:
            return ctx.issuance.personalize(session, subject, NOW, "clerk")
        except BaseException as exc:  # every outcome is inspected below
            return exc

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        outcomes = list(pool.map(request, sessions))

    issued = [o for o in outcomes if isinstance(o, IssuedCard)]
    refused = [o for o in outcomes if not isinstance(o, IssuedCard)]
    assert len(issued) == 1, refused[:3]
    unexpected = [o for o in refused if not isinstance(o, Superseded | NotEligible)]
    assert not unexpected, unexpected[:3]
    for exc in refused:
        assert isinstance(exc, IssuanceError)
        text = str(exc)
        assert "given up" in text or "already has an active card" in text, text

    with ctx.engine.connect() as conn:
        rows = conn.execute(select(cards).where(cards.c.subject_id == subject)).all()
        token = current_token(conn, ctx.settings.status_list_id)
    assert [r.serial for r in rows if r.state == "active"] == [issued[0].serial]
    assert token is not None
    listed = parse_status_list_token(token, ctx.keys.trust_store(), int(NOW.timestamp())).statuses
    for row in rows:
        if row.serial != issued[0].serial:
            assert row.state == "abandoned", row.state
            # an entry stays VALID (0, like unused space) only if no credential names it
            assert listed.get(int(row.status_idx)) != VALID or row.credential is None
    assert listed.get(int(next(r for r in rows if r.state == "active").status_idx)) == VALID
