"""Card status changes as ONE internal event type, written to an outbox in the caller's transaction.

Everything that can change what a subject's card should say (an objection filed or decided, a
repair granted, an effect period ending, a record withdrawn upstream) ends in
:func:`regrade_and_announce`: it re-grades the subject, works out the card state the records
now call for (:func:`card_target`), compares it with the state last announced (table
``card_entitlements``) and, when they differ, appends one row to ``card_status_events``.
The issuance side reads :func:`pending` and calls :func:`mark_consumed` for each event it has
applied, in ``id`` order.

The mapping (docs/rights.md has the table):

- the card follows the *settled* level: the grade with every open objection treated as not
  open. A provisional change never raises the card's level, and an objection against a
  negative record never touches the card (the record stops counting; the card stays valid);
- when open objections *lower* the level (an objection against a positive record), the card
  is ``suspend``-ed, not revoked: the outcome is not known yet;
- after a suspension, the same level again is ``restore``; another star level is
  ``reissue``; no longer class A (or no stars) is ``revoke``; any other change of star level
  is ``reissue`` (up or down).

Invariants: events are append-only; ``consumed_at`` is set once; an event is written only in
the transaction that changed the records, so it commits or rolls back with them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal, get_args

from sqlalchemy import Connection, Table, insert, select, update

from issuer.audit import audit
from issuer.db import grades, records, subjects
from issuer.db_rights import card_entitlements, card_status_events
from issuer.grading import Grade, grade_records, regrade
from issuer.policy import Policy
from issuer.workdays import local_date

EventKind = Literal["suspend", "restore", "revoke", "reissue"]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
CardState = Literal["none", "active", "suspended"]


class RightsError(ValueError):
    """A rights or list request that is refused; the message says what to fix (HTTP 422)."""


class RightsNotFound(RightsError):
    """The subject, record, objection, request or entry named does not exist (HTTP 404)."""


class RightsConflict(RightsError):
    """The request does not fit the current state, e.g. deciding twice (HTTP 409)."""


@dataclass(frozen=True)
class CardStatusEvent:
    """One change the issuance side must apply to the subject's card.

    ``stars`` is the level the card should show afterwards (``reissue``, ``restore``), the
    level it keeps while suspended (``suspend``), or 0 (``revoke``).
    """

    id: int
    subject_id: str
    kind: EventKind
    stars: int
    reason: str
    ref: str | None
    created_at: dt.datetime
    consumed_at: dt.datetime | None


@dataclass(frozen=True)
class CardTarget:
    """What the subject's card should be: no card, valid at ``stars``, or suspended."""

    state: CardState
    stars: int


@dataclass(frozen=True)
class Announcement:
    """The outcome of :func:`regrade_and_announce` for one subject."""

    grade: Grade
    target: CardTarget
    event_id: int | None
    kind: EventKind | None


def emit(
    conn: Connection,
    kind: EventKind,
    subject_id: str,
    reason: str,
    now: dt.datetime,
    *,
    stars: int = 0,
    ref: str | None = None,
    actor: str = "rights",
) -> int:
    """Appends one card status event in the caller's transaction and audits it.

    ``stars`` is required (1-5) for ``reissue`` and ``restore``; a ``revoke`` carries 0.
    Other modules that must take a card away (consent withdrawn) call
    ``emit(conn, "revoke", subject_id, "consent_withdrawn", now)``.

    Raises:
        RightsError: ``kind`` is not one of the four kinds, ``reason`` is empty, or a
            ``reissue``/``restore`` without a star level.
    """
    if kind not in EVENT_KINDS:
        raise RightsError(f"card status event kind must be one of {', '.join(EVENT_KINDS)}")
    if not reason.strip():
        raise RightsError("a card status event needs a reason")
    if kind in ("reissue", "restore") and not 1 <= stars <= 5:
        raise RightsError(f"a {kind} names the star level the card shows (1-5), got {stars}")
    result = conn.execute(
        insert(card_status_events).values(
            subject_id=subject_id, kind=kind, stars=stars, reason=reason, ref=ref, created_at=now
        )
    )
    event_id = new_id(result.inserted_primary_key)
    audit(
        conn,
        now,
        actor,
        "card_status.emitted",
        subject_id=subject_id,
        event_id=event_id,
        kind=kind,
        stars=stars,
        reason=reason,
        ref=ref,
    )
    return event_id


def pending(conn: Connection, limit: int = 100) -> list[CardStatusEvent]:
    """Unconsumed events, oldest first (apply them in this order, per subject at least)."""
    rows = conn.execute(
        select(card_status_events)
        .where(card_status_events.c.consumed_at.is_(None))
        .order_by(card_status_events.c.id)
        .limit(limit)
    ).all()
    return [_event(row) for row in rows]


def mark_consumed(
    conn: Connection, event_id: int, now: dt.datetime, actor: str = "issuance"
) -> None:
    """Marks one event as applied, in the consumer's transaction.

    Two consumers racing for one event: the second one's update matches nothing and raises,
    so its transaction (with whatever it did to the card) rolls back.

    Raises:
        RightsNotFound: no such event.
        RightsConflict: the event was consumed already.
    """
    subject_id = conn.execute(
        select(card_status_events.c.subject_id).where(card_status_events.c.id == event_id)
    ).scalar_one_or_none()
    if subject_id is None:
        raise RightsNotFound(f"no card status event {event_id}")
    result = conn.execute(
        update(card_status_events)
        .where(card_status_events.c.id == event_id, card_status_events.c.consumed_at.is_(None))
        .values(consumed_at=now)
    )
    if result.rowcount != 1:
        raise RightsConflict(f"card status event {event_id} was consumed already")
    audit(conn, now, actor, "card_status.consumed", subject_id=subject_id, event_id=event_id)


def level_rank(policy: Policy, grade_class: str, stars: int) -> tuple[int, int]:
    """Orders levels: a better class ranks higher, then more stars."""
    order = [name for name, _ in policy.class_minimums]
    position = order.index(grade_class) if grade_class in order else len(order)
    return (-position, stars)


def settled_rows(rows: Iterable[Any]) -> list[Any]:
    """The records as they would count if every open objection were closed without change."""
    return [SimpleNamespace(**{**row._mapping, "objection_open": 0}) for row in rows]


def card_target(policy: Policy, rows: Sequence[Any], as_of: dt.date) -> CardTarget:
    """The card state the records call for (pure: same records, same answer)."""
    provisional = grade_records(policy, rows, as_of)
    settled = grade_records(policy, settled_rows(rows), as_of)
    if settled.grade_class != "A" or settled.stars < 1:
        return CardTarget("none", 0)
    if level_rank(policy, provisional.grade_class, provisional.stars) < level_rank(
        policy, settled.grade_class, settled.stars
    ):
        return CardTarget("suspended", settled.stars)
    return CardTarget("active", settled.stars)


def transition(before: CardTarget, after: CardTarget) -> tuple[EventKind | None, CardTarget]:
    """The event (if any) from the last announced state to the new target, and the state to
    store. While suspended the stored stars stay those the card shows, so that ``restore``
    means "back to exactly what the card says"."""
    if after.state == "none":
        return ("revoke" if before.state != "none" else None), after
    if after.state == "suspended":
        if before.state == "active":
            return "suspend", CardTarget("suspended", before.stars)
        return None, before
    if before.state == "none":
        return "reissue", after
    if before.state == "suspended":
        return ("restore" if before.stars == after.stars else "reissue"), after
    return ("reissue" if before.stars != after.stars else None), after


def lock_subjects(conn: Connection, subject_ids: Iterable[str]) -> None:
    """Locks the subjects' rows (PostgreSQL ``FOR UPDATE``; SQLite serialises writers anyway)
    so that two rights operations on one subject cannot interleave.

    Raises:
        RightsNotFound: a subject does not exist.
    """
    wanted = sorted(set(subject_ids))
    found = set(
        conn.execute(
            select(subjects.c.id)
            .where(subjects.c.id.in_(wanted))
            .order_by(subjects.c.id)
            .with_for_update()
        ).scalars()
    )
    missing = [s for s in wanted if s not in found]
    if missing:
        raise RightsNotFound(f"no subject {missing[0]}")


def locked_row(conn: Connection, table: Table, row_id: int, what: str) -> Any:
    """The row ``row_id`` of ``table`` (which has ``id`` and ``subject_id``), read after
    locking its subject: a concurrent change to it has either committed, and is seen here,
    or waits for this transaction.

    Raises:
        RightsNotFound: no such row (the message says "no <what> <id>").
    """
    subject_id = conn.execute(
        select(table.c.subject_id).where(table.c.id == row_id)
    ).scalar_one_or_none()
    if subject_id is None:
        raise RightsNotFound(f"no {what} {row_id}")
    lock_subjects(conn, [subject_id])
    return conn.execute(select(table).where(table.c.id == row_id)).one()


def announce_one(
    conn: Connection,
    policy: Policy,
    subject_id: str,
    now: dt.datetime,
    *,
    reason: str,
    ref: str | None = None,
    actor: str = "rights",
) -> Announcement:
    """:func:`regrade_and_announce` for one subject."""
    return regrade_and_announce(
        conn, policy, [subject_id], now, reason=reason, ref=ref, actor=actor
    )[subject_id]


def regrade_and_announce(
    conn: Connection,
    policy: Policy,
    subject_ids: Sequence[str],
    now: dt.datetime,
    *,
    reason: str,
    ref: str | None = None,
    actor: str = "rights",
) -> dict[str, Announcement]:
    """Re-grades the subjects (``issuer.grading.regrade``, as of today in Beijing) and emits
    a card status event for each whose card target changed.

    Call it after any change to a subject's records, in the same transaction. The state
    announced before is read *before* re-grading (first use: from the stored grade).

    Raises:
        RightsNotFound: a subject does not exist.
    """
    lock_subjects(conn, subject_ids)
    as_of = local_date(now)
    before = {s: _announced(conn, s) for s in subject_ids}
    graded = regrade(conn, policy, list(subject_ids), as_of, now)
    rows_by_subject: dict[str, list[Any]] = {s: [] for s in subject_ids}
    for row in conn.execute(select(records).where(records.c.subject_id.in_(subject_ids))):
        rows_by_subject[row.subject_id].append(row)
    may_hold = {
        row.id: row.kind == "individual"
        and row.consent_given_at is not None
        and row.consent_withdrawn_at is None
        for row in conn.execute(
            select(
                subjects.c.id,
                subjects.c.kind,
                subjects.c.consent_given_at,
                subjects.c.consent_withdrawn_at,
            ).where(subjects.c.id.in_(subject_ids))
        )
    }
    result: dict[str, Announcement] = {}
    for subject_id in subject_ids:
        target = card_target(policy, rows_by_subject[subject_id], as_of)
        if not may_hold.get(subject_id, False):
            # No consent on file (or withdrawn), or an organisation: no card, whatever the grade.
            target = CardTarget("none", 0)
        previous, existed = before[subject_id]
        kind, stored = transition(previous, target)
        if not existed or stored != previous:
            _store(conn, subject_id, stored, now, existed)
        event_id = None
        if kind is not None:
            stars = {"revoke": 0, "suspend": stored.stars}.get(kind, target.stars)
            event_id = emit(conn, kind, subject_id, reason, now, stars=stars, ref=ref, actor=actor)
        result[subject_id] = Announcement(graded[subject_id], target, event_id, kind)
    return result


def announced(conn: Connection, subject_id: str) -> CardTarget:
    """The card state last announced for the subject (from the stored grade before any)."""
    return _announced(conn, subject_id)[0]


def _announced(conn: Connection, subject_id: str) -> tuple[CardTarget, bool]:
    row = conn.execute(
        select(card_entitlements).where(card_entitlements.c.subject_id == subject_id)
    ).first()
    if row is not None:
        return CardTarget(row.state, int(row.stars)), True
    grade = conn.execute(
        select(grades.c.grade_class, grades.c.stars).where(grades.c.subject_id == subject_id)
    ).first()
    if grade is not None and grade.grade_class == "A" and grade.stars >= 1:
        return CardTarget("active", int(grade.stars)), False
    return CardTarget("none", 0), False


def _store(
    conn: Connection, subject_id: str, target: CardTarget, now: dt.datetime, existed: bool
) -> None:
    values = {"state": target.state, "stars": target.stars, "updated_at": now}
    if existed:
        conn.execute(
            update(card_entitlements)
            .where(card_entitlements.c.subject_id == subject_id)
            .values(**values)
        )
    else:
        conn.execute(insert(card_entitlements).values(subject_id=subject_id, **values))


def _event(row: Any) -> CardStatusEvent:
    return CardStatusEvent(
        id=int(row.id),
        subject_id=row.subject_id,
        kind=row.kind,
        stars=int(row.stars),
        reason=row.reason,
        ref=row.ref,
        created_at=row.created_at,
        consumed_at=row.consumed_at,
    )


def new_id(inserted: Any) -> int:
    """The id of a row just inserted (``result.inserted_primary_key``)."""
    if inserted is None:
        raise RuntimeError("the database did not return the new row's id")
    return int(inserted[0])
