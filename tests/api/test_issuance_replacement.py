"""Eligibility that follows the card status rules, and the replacement flow.

An open objection refuses a card only when it would lower the level (against a positive
record); against a negative record the card is issued at the settled level. A replacement
revokes the old card in the activation's transaction: the status list never shows two valid
cards, and the person's open re-issue due is resolved.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from issuer.db import audit_events, cards, records
from issuer.db_lifecycle import reissue_due
from issuer.grading import regrade
from issuer.issuance import IssuanceError, NotEligible, check_eligibility
from issuer.publisher import INVALID, VALID, current_token
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_card, factory_session, graded_subject
from verifier.core.status_list import StatusList, parse_status_list_token


def open_objection(ctx: IssuerContext, subject: str, category: str) -> None:
    """Marks the subject's record of ``category`` as under objection and re-grades."""
    with ctx.engine.begin() as conn:
        conn.execute(
            update(records)
            .where(records.c.subject_id == subject, records.c.category == category)
            .values(objection_open=1)
        )
        regrade(conn, ctx.policy, [subject], NOW.date(), NOW)


def statuses(ctx: IssuerContext) -> StatusList:
    with ctx.engine.connect() as conn:
        token = current_token(conn, ctx.settings.status_list_id)
    assert token is not None
    at = int((NOW + dt.timedelta(hours=1)).timestamp())
    parsed = parse_status_list_token(token, ctx.keys.trust_store(), at)
    return parsed.statuses


def card_row(ctx: IssuerContext, serial: str) -> tuple[str, str | None, int]:
    with ctx.engine.connect() as conn:
        row = conn.execute(select(cards).where(cards.c.serial == serial)).one()
    return row.state, row.revoked_reason, int(row.status_idx)


def test_objection_against_a_positive_record_refuses_with_a_reason(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    subject = graded_subject(issuer_ctx, NOW)
    open_objection(issuer_ctx, subject, "honour")
    with issuer_ctx.engine.connect() as conn:
        result = check_eligibility(conn, issuer_ctx.policy, subject, NOW.date())
    assert not result.eligible
    assert result.reasons == (
        "an objection that would lower the star level is being verified; issue after it is decided",
    )
    with pytest.raises(NotEligible, match="would lower the star level"):
        issuer_ctx.issuance.personalize(factory_session(issuer_ctx), subject, NOW, "c")


def test_objection_against_a_negative_record_does_not_block_the_card(
    issuer_ctx: IssuerContext,
) -> None:
    """The disputed penalty stops counting (the provisional grade rises), but the card shows
    the settled level: the one it would show if the objection were rejected."""
    subject = graded_subject(issuer_ctx, NOW)
    with issuer_ctx.engine.connect() as conn:
        before = check_eligibility(conn, issuer_ctx.policy, subject, NOW.date())
    open_objection(issuer_ctx, subject, "admin_penalty")
    with issuer_ctx.engine.connect() as conn:
        during = check_eligibility(conn, issuer_ctx.policy, subject, NOW.date())
    assert before.eligible and during.eligible, during.reasons
    assert during.stars == before.stars == 3
    issued = issuer_ctx.issuance.personalize(factory_session(issuer_ctx), subject, NOW, "c")
    assert issued.stars == 3


def test_replacement_revokes_the_old_card_in_the_activation(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    ctx = issuer_ctx
    subject = graded_subject(ctx, NOW)
    old = ctx.issuance.personalize(factory_session(ctx), subject, NOW, "c")
    with ctx.engine.begin() as conn:
        conn.execute(
            insert(reissue_due).values(
                subject_id=subject, stars=3, reason="objection_upheld", serial=old.serial, since=NOW
            )
        )
    later = NOW + dt.timedelta(minutes=5)
    session = StarCardSession(InProcessTransport(factory_card(ctx)))
    new = ctx.issuance.personalize(
        session, subject, later, "c", replaces=old.serial, replace_reason="damaged"
    )
    assert new.replaced == old.serial
    old_state, old_reason, old_idx = card_row(ctx, old.serial)
    new_state, _, new_idx = card_row(ctx, new.serial)
    assert (old_state, old_reason, new_state) == ("revoked", "damaged", "active")
    listed = statuses(ctx)
    assert (listed.get(old_idx), listed.get(new_idx)) == (INVALID, VALID)
    with ctx.engine.connect() as conn:
        due = conn.execute(select(reissue_due)).one()
        revoked = conn.execute(
            select(audit_events.c.detail).where(
                audit_events.c.action == "card.revoked", audit_events.c.card_serial == old.serial
            )
        ).scalar_one()
    assert (due.resolution, due.resolved_at is not None) == ("issued", True)
    assert revoked["replaced_by"] == new.serial


def test_replacement_is_refused_unless_it_names_the_only_live_card(
    sqlite_issuer: IssuerContext,
) -> None:
    ctx = sqlite_issuer
    subject = graded_subject(ctx, NOW)
    with pytest.raises(NotEligible, match="is not a live card of this person"):
        ctx.issuance.personalize(
            factory_session(ctx), subject, NOW, "c", replaces="00" * 8, replace_reason="damaged"
        )
    old = ctx.issuance.personalize(factory_session(ctx), subject, NOW, "c")
    with pytest.raises(NotEligible, match=f"already has an active card \\({old.serial}\\)"):
        ctx.issuance.personalize(factory_session(ctx), subject, NOW, "c")
    with pytest.raises(NotEligible, match=f"the person's card is {old.serial}"):
        ctx.issuance.personalize(
            factory_session(ctx), subject, NOW, "c", replaces="00" * 8, replace_reason="reissue"
        )
    with pytest.raises(IssuanceError, match="say why card"):
        ctx.issuance.personalize(factory_session(ctx), subject, NOW, "c", replaces=old.serial)
    with pytest.raises(IssuanceError, match="lost or stolen card is revoked first"):
        ctx.issuance.personalize(
            factory_session(ctx),
            subject,
            NOW,
            "c",
            replaces=old.serial,
            replace_reason="lost",  # type: ignore[arg-type]
        )
    assert card_row(ctx, old.serial)[0] == "active"
    with ctx.engine.connect() as conn:
        assert conn.execute(select(cards.c.serial)).scalars().all() == [old.serial]


def test_replaced_card_cannot_be_personalized_again(sqlite_issuer: IssuerContext) -> None:
    ctx = sqlite_issuer
    subject = graded_subject(ctx, NOW)
    first_card = factory_card(ctx)
    old = ctx.issuance.personalize(
        StarCardSession(InProcessTransport(first_card)), subject, NOW, "c"
    )
    ctx.issuance.personalize(
        factory_session(ctx), subject, NOW, "c", replaces=old.serial, replace_reason="renewal"
    )
    with pytest.raises(IssuanceError, match="already issued \\(revoked\\)"):
        ctx.issuance.personalize(StarCardSession(InProcessTransport(first_card)), subject, NOW, "c")
