"""Card lifecycle: the consumer of the card status outbox, lost/stolen cards, re-issues due.

:func:`apply_pending` applies the pending ``card_status_events`` (``issuer.events``) in id
order, each in ONE transaction holding the ``cards`` update, the status-list republish, the
event's ``mark_consumed`` and an audit event: a process killed between two events (or in the
middle of one) leaves every event either applied and consumed, or untouched and pending, so a
re-run never applies one twice and never loses one. The subject's row is locked first (the
lock :func:`issuer.events.lock_subjects` takes), so two consumers, or a consumer and a rights
decision, cannot interleave on one subject; a consumer that finds its event consumed meanwhile
moves on.

Mapping (``docs/lifecycle.md`` has the table), applied to the subject's *live* card (``active``
or ``suspended``; the database allows one):

- ``suspend``: ``active`` → ``suspended`` (SUSPENDED on the list); the suspension is recorded
  (``card_suspensions``) so that only an event-made suspension is ever restored;
- ``restore``: an event-suspended card → ``active``; if the level differs from the card's,
  it continues as a ``reissue``;
- ``revoke``: → ``revoked`` (reason ``consent_withdrawn`` when consent was withdrawn, else
  ``downgraded``); an open re-issue due is closed (no longer entitled);
- ``reissue`` lower than the card shows: the card is revoked now (``downgraded``) and the
  subject is due a new card at the new level; higher: the card stays valid (it understates;
  stars are an incentive) and the subject is due a re-issue (the new card's activation
  revokes the old one: :func:`resolve_due` is called there); the same level: an event-made
  suspension is lifted and an open due closed.

A subject without a live card: the event is consumed with no card change and audited; a
``reissue`` then only moves an open due to the new level (it never creates a card), a
``revoke`` closes it.

A card being personalized is not touched here: its entry is SUSPENDED until activation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Connection, Engine, insert, select, update

from issuer.audit import audit
from issuer.db import cards, stored_utc
from issuer.db_lifecycle import card_suspensions, reissue_due
from issuer.db_rights import card_status_events
from issuer.events import (
    CardStatusEvent,
    EventKind,
    RightsConflict,
    RightsError,
    RightsNotFound,
    lock_subjects,
    locked_row,
    mark_consumed,
    pending,
)
from issuer.keys import IssuerKeys
from issuer.publisher import publish_list
from issuer.settings import IssuerSettings

LIVE_STATES = ("active", "suspended")
LostKind = Literal["lost", "stolen"]
LOST_KINDS: tuple[str, ...] = get_args(LostKind)
Outcome = Literal["suspended", "restored", "revoked", "downgraded", "reissue_due", "unchanged"]


class CardNotFound(RightsNotFound):
    """No card with that serial (HTTP 404)."""


class CardStateConflict(RightsConflict):
    """The card's state does not allow the request, e.g. reporting a revoked card lost (409)."""


@dataclass(frozen=True)
class Applied:
    """What one card status event did. ``serial`` is the live card it applied to (None: the
    subject had none); ``card_state`` its state afterwards; ``due_stars`` the level of the
    re-issue the subject is due afterwards (None: none due)."""

    event_id: int
    subject_id: str
    kind: EventKind
    outcome: Outcome
    serial: str | None
    card_state: str | None
    due_stars: int | None


@dataclass(frozen=True)
class ReissueDue:
    """A subject who should get a new card (open until a new card is activated)."""

    subject_id: str
    stars: int
    reason: str
    serial: str | None
    since: dt.datetime


@dataclass(frozen=True)
class _Card:
    serial: str
    state: str
    stars: int
    status_list_id: int


def apply_pending(
    engine: Engine,
    keys: IssuerKeys,
    settings: IssuerSettings,
    now: dt.datetime,
    actor: str,
    *,
    limit: int | None = None,
) -> list[Applied]:
    """Applies pending card status events, oldest first, one transaction each; returns what
    each did. ``limit`` caps how many are applied in this call (None: until none is pending).
    """
    applied: list[Applied] = []
    while limit is None or len(applied) < limit:
        with engine.connect() as conn:
            batch = pending(conn, limit=1)
        if not batch:
            break
        try:
            with engine.begin() as conn:
                result = apply_event(conn, keys, settings, batch[0].id, now, actor)
        except RightsConflict:
            continue  # another consumer applied it meanwhile: its transaction won
        if result is not None:
            applied.append(result)
    return applied


def apply_event(
    conn: Connection,
    keys: IssuerKeys,
    settings: IssuerSettings,
    event_id: int,
    now: dt.datetime,
    actor: str,
) -> Applied | None:
    """Applies one event in the caller's transaction (None: it was consumed meanwhile).

    Raises:
        RightsNotFound: no such event.
        RightsConflict: another consumer consumed it between the check and the update.
    """
    row = locked_row(conn, card_status_events, event_id, "card status event")
    if row.consumed_at is not None:
        return None
    event = CardStatusEvent(**row._mapping)
    subject_id = event.subject_id
    card = _live_card(conn, subject_id)
    if card is None:
        outcome: Outcome = "unchanged"
        _without_card(conn, event, now)
        state = None
    else:
        outcome, state = _with_card(conn, event, card, now)
        if state != card.state:
            publish_list(conn, keys, settings, now, card.status_list_id)
    mark_consumed(conn, event.id, now, actor)
    due = open_due(conn, subject_id)
    audit(
        conn,
        now,
        actor,
        f"card_event.{outcome}" if card is not None else "card_event.no_card",
        subject_id=subject_id,
        card_serial=None if card is None else card.serial,
        event_id=event.id,
        kind=event.kind,
        stars=event.stars,
        reason=event.reason,
        due_stars=None if due is None else due.stars,
    )
    return Applied(
        event.id,
        subject_id,
        event.kind,
        outcome,
        None if card is None else card.serial,
        state,
        None if due is None else due.stars,
    )


def report_lost(
    engine: Engine,
    serial: str,
    kind: str,
    now: dt.datetime,
    actor: str,
    keys: IssuerKeys,
    settings: IssuerSettings,
) -> ReissueDue:
    """Revokes a lost or stolen card (reason ``kind``) and records its holder as due a new
    card at the card's level; the new card then goes through the usual eligibility, which
    allows it since no card is active any more.

    Raises:
        RightsError: ``kind`` is neither ``lost`` nor ``stolen``.
        CardNotFound: no card ``serial``.
        CardStateConflict: the card is not live (revoked already, or never activated).
    """
    if kind not in LOST_KINDS:
        raise RightsError(f"say whether the card was {' or '.join(LOST_KINDS)}, not {kind!r}")
    with engine.begin() as conn:
        subject_id = conn.execute(
            select(cards.c.subject_id).where(cards.c.serial == serial)
        ).scalar_one_or_none()
        if subject_id is None:
            raise CardNotFound(f"no card {serial}: check the serial printed on the card")
        lock_subjects(conn, [subject_id])
        card = _card(conn, serial)
        if card.state not in LIVE_STATES:
            raise CardStateConflict(
                f"card {serial} is {card.state}, not in use: only an active or suspended card "
                "can be reported lost or stolen"
            )
        _revoke(conn, card, kind, now)
        set_due(conn, subject_id, card.stars, kind, now, serial=serial)
        publish_list(conn, keys, settings, now, card.status_list_id)
        audit(conn, now, actor, "card.reported_lost", subject_id=subject_id, card_serial=serial)
        audit(
            conn, now, actor, "card.revoked", subject_id=subject_id, card_serial=serial, reason=kind
        )
        due = open_due(conn, subject_id)
    assert due is not None  # set just above, in this transaction
    return due


def set_due(
    conn: Connection,
    subject_id: str,
    stars: int,
    reason: str,
    now: dt.datetime,
    *,
    serial: str | None = None,
    event_id: int | None = None,
) -> None:
    """Records that ``subject_id`` is due a new card at ``stars`` (an open due is superseded)."""
    resolve_due(conn, subject_id, now, "superseded")
    conn.execute(
        insert(reissue_due).values(
            subject_id=subject_id,
            stars=stars,
            reason=reason,
            serial=serial,
            event_id=event_id,
            since=now,
        )
    )


def resolve_due(conn: Connection, subject_id: str, now: dt.datetime, resolution: str) -> bool:
    """Closes the subject's open re-issue due, if any (``issued`` when issuance activates the
    new card, in that transaction); returns whether one was open."""
    result = conn.execute(
        update(reissue_due)
        .where(reissue_due.c.subject_id == subject_id, reissue_due.c.resolved_at.is_(None))
        .values(resolved_at=now, resolution=resolution)
    )
    return bool(result.rowcount)


def open_due(conn: Connection, subject_id: str) -> ReissueDue | None:
    """The subject's open re-issue due."""
    row = conn.execute(
        select(reissue_due).where(
            reissue_due.c.subject_id == subject_id, reissue_due.c.resolved_at.is_(None)
        )
    ).first()
    return None if row is None else _due(row)


def dues(conn: Connection, limit: int = 500) -> list[ReissueDue]:
    """Open re-issue dues, oldest first (the office calls these holders in)."""
    rows = conn.execute(
        select(reissue_due)
        .where(reissue_due.c.resolved_at.is_(None))
        .order_by(reissue_due.c.since, reissue_due.c.id)
        .limit(limit)
    ).all()
    return [_due(row) for row in rows]


def _with_card(
    conn: Connection, event: CardStatusEvent, card: _Card, now: dt.datetime
) -> tuple[Outcome, str]:
    """Applies ``event`` to the live ``card``; returns the outcome and the card's new state."""
    if event.kind == "suspend":
        if card.state != "active":
            return "unchanged", card.state
        _set_state(conn, card.serial, "suspended", now)
        _lift(conn, card.serial, now, event.id)  # a leftover, if the card was set active by hand
        conn.execute(
            insert(card_suspensions).values(
                serial=card.serial,
                subject_id=event.subject_id,
                event_id=event.id,
                reason=event.reason,
                suspended_at=now,
            )
        )
        return "suspended", "suspended"
    if event.kind == "revoke":
        reason = "consent_withdrawn" if event.reason == "consent_withdrawn" else "downgraded"
        _revoke(conn, card, reason, now, event_id=event.id)
        resolve_due(conn, event.subject_id, now, "entitlement_revoked")
        return "revoked", "revoked"
    # restore and reissue: the card should show event.stars
    if event.stars < card.stars:
        _revoke(conn, card, "downgraded", now, event_id=event.id)
        set_due(
            conn,
            event.subject_id,
            event.stars,
            event.reason,
            now,
            serial=card.serial,
            event_id=event.id,
        )
        return "downgraded", "revoked"
    lifted = card.state == "suspended" and _lift(conn, card.serial, now, event.id)
    state = "active" if lifted else card.state
    if lifted:
        _set_state(conn, card.serial, "active", now)
    if event.stars > card.stars:
        set_due(
            conn,
            event.subject_id,
            event.stars,
            event.reason,
            now,
            serial=card.serial,
            event_id=event.id,
        )
        return "reissue_due", state
    resolve_due(conn, event.subject_id, now, "card_matches")
    return ("restored" if lifted else "unchanged"), state


def _without_card(conn: Connection, event: CardStatusEvent, now: dt.datetime) -> None:
    if event.kind == "revoke":
        resolve_due(conn, event.subject_id, now, "entitlement_revoked")
    elif event.kind == "reissue":
        due = open_due(conn, event.subject_id)
        if due is not None and due.stars != event.stars:
            set_due(
                conn,
                event.subject_id,
                event.stars,
                event.reason,
                now,
                serial=due.serial,
                event_id=event.id,
            )


def _revoke(
    conn: Connection, card: _Card, reason: str, now: dt.datetime, event_id: int | None = None
) -> None:
    _lift(conn, card.serial, now, event_id)
    conn.execute(
        update(cards)
        .where(cards.c.serial == card.serial)
        .values(state="revoked", revoked_reason=reason, updated_at=now)
    )


def _lift(conn: Connection, serial: str, now: dt.datetime, event_id: int | None) -> bool:
    """Ends the card's open event-made suspension; returns whether there was one."""
    result = conn.execute(
        update(card_suspensions)
        .where(card_suspensions.c.serial == serial, card_suspensions.c.lifted_at.is_(None))
        .values(lifted_at=now, lifted_by_event_id=event_id)
    )
    return bool(result.rowcount)


def _set_state(conn: Connection, serial: str, state: str, now: dt.datetime) -> None:
    conn.execute(update(cards).where(cards.c.serial == serial).values(state=state, updated_at=now))


def _live_card(conn: Connection, subject_id: str) -> _Card | None:
    row = conn.execute(
        select(cards.c.serial).where(
            cards.c.subject_id == subject_id, cards.c.state.in_(LIVE_STATES)
        )
    ).first()
    return None if row is None else _card(conn, row.serial)


def _card(conn: Connection, serial: str) -> _Card:
    row = conn.execute(
        select(cards.c.serial, cards.c.state, cards.c.stars, cards.c.status_list_id).where(
            cards.c.serial == serial
        )
    ).one()
    return _Card(row.serial, row.state, int(row.stars), int(row.status_list_id))


def _due(row: Any) -> ReissueDue:
    return ReissueDue(row.subject_id, int(row.stars), row.reason, row.serial, stored_utc(row.since))
