"""Reconciliation: cards the issuance left behind, and states the database should never hold.

After a crash (the issuer killed at a commit boundary, a station unplugged) the database is at
a before or after state of each step, and a personalization job may stay in one of its
unfinished states: an *orphan card*. :func:`find_orphans` lists the jobs not updated for
``stale_after``; a re-run of the personalization on the same card finishes such a job, and
:func:`abandon` gives one up (state ``abandoned``, INVALID on the status list, audited) when
the card is gone.

:func:`anomalies` also reports what the constraints and the activation step should make
impossible: a subject with more than one live (``active`` or ``suspended``) card, and a live
card without a credential or card key. Anything it finds is a bug to investigate, never
something to fix silently.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, or_, select, update

from issuer.audit import audit
from issuer.card_jobs import JOB_STATES
from issuer.db import cards, stored_utc
from issuer.events import lock_subjects
from issuer.keys import IssuerKeys
from issuer.lifecycle import LIVE_STATES, CardNotFound, CardStateConflict
from issuer.publisher import publish_list
from issuer.settings import IssuerSettings

PERSONALIZATION_STATES = JOB_STATES
"""The states of a personalization job that has not reached ``active``."""
DEFAULT_STALE_AFTER = dt.timedelta(minutes=30)
"""A job untouched this long is taken as left behind (a personalization takes a minute)."""


@dataclass(frozen=True)
class OrphanCard:
    """A personalization job in an unfinished state, last updated at ``updated_at``."""

    serial: str
    subject_id: str
    state: str
    updated_at: dt.datetime


@dataclass(frozen=True)
class Anomaly:
    """A state that must be impossible: ``kind`` is ``more_than_one_live_card`` (``serials``
    are the subject's live cards) or ``live_card_without_credential``."""

    kind: str
    subject_id: str
    serials: tuple[str, ...]


def find_orphans(conn: Connection, now: dt.datetime, stale_after: dt.timedelta) -> list[OrphanCard]:
    """Cards in a personalization state not updated for ``stale_after``, oldest first."""
    rows = conn.execute(
        select(cards.c.serial, cards.c.subject_id, cards.c.state, cards.c.updated_at)
        .where(
            cards.c.state.in_(PERSONALIZATION_STATES),
            cards.c.updated_at <= now - stale_after,
        )
        .order_by(cards.c.updated_at, cards.c.serial)
    ).all()
    return [OrphanCard(r.serial, r.subject_id, r.state, stored_utc(r.updated_at)) for r in rows]


def anomalies(conn: Connection) -> list[Anomaly]:
    """Subjects with more than one live card, and live cards without credential or key."""
    found: list[Anomaly] = []
    doubles = conn.execute(
        select(cards.c.subject_id)
        .where(cards.c.state.in_(LIVE_STATES))
        .group_by(cards.c.subject_id)
        .having(func.count() > 1)
        .order_by(cards.c.subject_id)
    ).scalars()
    for subject_id in doubles.all():
        serials = conn.execute(
            select(cards.c.serial)
            .where(cards.c.subject_id == subject_id, cards.c.state.in_(LIVE_STATES))
            .order_by(cards.c.serial)
        ).scalars()
        found.append(Anomaly("more_than_one_live_card", subject_id, tuple(serials)))
    bare = conn.execute(
        select(cards.c.serial, cards.c.subject_id)
        .where(
            cards.c.state.in_(LIVE_STATES),
            or_(cards.c.credential.is_(None), cards.c.card_public_key.is_(None)),
        )
        .order_by(cards.c.serial)
    ).all()
    found.extend(Anomaly("live_card_without_credential", r.subject_id, (r.serial,)) for r in bare)
    return found


def abandon(
    engine: Engine,
    serial: str,
    now: dt.datetime,
    actor: str,
    keys: IssuerKeys,
    settings: IssuerSettings,
    *,
    stale_after: dt.timedelta = DEFAULT_STALE_AFTER,
) -> OrphanCard:
    """Gives up the unfinished personalization of card ``serial``: state ``abandoned``
    (INVALID on the status list, republished in the same transaction), audited. Returns the
    job as it was. A job updated within ``stale_after`` may still be running at a station and
    is refused.

    Raises:
        CardNotFound: no card ``serial``.
        CardStateConflict: the card is not in a personalization state, or was updated within
            ``stale_after``.
    """
    with engine.begin() as conn:
        subject_id = conn.execute(
            select(cards.c.subject_id).where(cards.c.serial == serial)
        ).scalar_one_or_none()
        if subject_id is None:
            raise CardNotFound(f"no card {serial}: check the serial")
        lock_subjects(conn, [subject_id])
        row = conn.execute(select(cards).where(cards.c.serial == serial)).one()
        if row.state not in PERSONALIZATION_STATES:
            raise CardStateConflict(
                f"card {serial} is {row.state}: only an unfinished personalization can be "
                "abandoned (revoke an issued card instead)"
            )
        job = OrphanCard(serial, subject_id, row.state, stored_utc(row.updated_at))
        if job.updated_at > now - stale_after:
            raise CardStateConflict(
                f"card {serial} was updated at {job.updated_at.isoformat()}, within "
                f"{stale_after}: a station may still be personalizing it; try again later"
            )
        conn.execute(
            update(cards).where(cards.c.serial == serial).values(state="abandoned", updated_at=now)
        )
        publish_list(conn, keys, settings, now, int(row.status_list_id))
        audit(
            conn,
            now,
            actor,
            "card.abandoned",
            subject_id=subject_id,
            card_serial=serial,
            previous_state=row.state,
        )
    return job
