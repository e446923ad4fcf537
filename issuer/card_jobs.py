"""The database side of personalization: a persisted state machine, one row per card.

::

    requested → card_key_generated → credential_signed → written → verified → active

Each step is one transaction that first moves the row from the state it expects to the next
(compare-and-set, :func:`advance`): a run whose row was moved meanwhile stops with
:class:`Superseded` before its next card write. :meth:`CardJobs.start` runs under the
subject's lock and gives up every other unfinished job of that subject (``abandoned``,
INVALID on the status list): the newest request wins, so a card left half-way (pulled, power
lost, the clerk took another card) never blocks the person, and of concurrent requests at
most one activates. :meth:`CardJobs.activate` runs under the subject's lock too and revokes
the replaced card (if any) in the same transaction, before the new one becomes ``active``.

The status list is republished in the transaction of every step that changes what it says
(``credential_signed``: SUSPENDED; ``active``, a revocation, an abandoned signed job).

Fault points (:mod:`issuer.faults`): ``issuance.<step>.before_commit`` inside each
transaction, ``issuance.<step>.after_commit`` right after it; :data:`FAULT_POINTS` lists them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Connection, Engine, insert, select, update

from issuer.audit import audit
from issuer.db import cards
from issuer.eligibility import LIVE_STATES, lock_subject
from issuer.faults import fault_point
from issuer.issuance_errors import CardRejected, IssuanceError, NotEligible, Superseded
from issuer.keys import IssuerKeys
from issuer.lifecycle import resolve_due
from issuer.publisher import publish_list
from issuer.settings import IssuerSettings
from verifier.core.status_list import MIN_ENTRIES

JOB_STATES = ("requested", "card_key_generated", "credential_signed", "written", "verified")
"""A personalization in one of these states is unfinished (a re-run continues it)."""

ReplaceReason = Literal["damaged", "reissue", "renewal"]
"""Why a live card is replaced by a new one (stored as the old card's ``revoked_reason``).
A lost or stolen card is not replaced: it is revoked at once, then a new card is issued."""
REPLACE_REASONS: tuple[str, ...] = get_args(ReplaceReason)

FAULT_POINTS: tuple[str, ...] = tuple(
    f"issuance.{step}.{when}_commit"
    for step in ("start_job", *JOB_STATES[1:], "activated", "revoke")
    for when in ("before", "after")
)
"""Every fault point of personalization and revocation, in the order they are reached."""


@dataclass(frozen=True)
class Job:
    """What the database already knows about this card's personalization."""

    credential_version: int
    card_public_key: bytes | None


class CardJobs:
    """Persists personalization jobs and revocations; publishes the status list."""

    def __init__(
        self,
        engine: Engine,
        keys: IssuerKeys,
        settings: IssuerSettings,
        random_index: Callable[[int], int],
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._settings = settings
        self._random_index = random_index

    def publish(self, conn: Connection, now: dt.datetime, list_id: int | None = None) -> bytes:
        return publish_list(conn, self._keys, self._settings, now, list_id)

    def start(
        self,
        conn: Connection,
        serial: str,
        subject_id: str,
        stars: int,
        now: dt.datetime,
        actor: str,
    ) -> Job:
        """Creates or restarts this card's job (``requested``) and gives up every other
        unfinished job of the subject. Call it under :func:`lock_subject`.

        Raises:
            CardRejected: the card's job was given up after a credential was signed.
            IssuanceError: the card is being personalized for someone else; the list is full.
        """
        self._supersede_others(conn, serial, subject_id, now, actor)
        existing = conn.execute(select(cards).where(cards.c.serial == serial)).first()
        if existing is not None:
            if existing.state == "abandoned" and existing.credential is not None:
                raise CardRejected(
                    f"card {serial} was given up after a credential was signed for it: "
                    "it cannot be issued any more, use another card"
                )
            if existing.state != "abandoned" and existing.subject_id != subject_id:
                raise IssuanceError(f"card {serial} is being personalized for someone else")
            values = {"state": "requested", "subject_id": subject_id, "stars": stars}
            set_card(conn, serial, **values, updated_at=now)
            audit(conn, now, actor, "card.restarted", subject_id=subject_id, card_serial=serial)
            key = existing.card_public_key
            return Job(int(existing.credential_version), None if key is None else bytes(key))
        list_id = self._settings.status_list_id
        taken = set(
            conn.execute(
                select(cards.c.status_idx).where(cards.c.status_list_id == list_id)
            ).scalars()
        )
        if len(taken) >= MIN_ENTRIES:
            raise IssuanceError("the status list is full: open a new list")
        idx = self._random_index(MIN_ENTRIES)
        while idx in taken:
            idx = self._random_index(MIN_ENTRIES)
        conn.execute(
            insert(cards).values(
                serial=serial,
                subject_id=subject_id,
                state="requested",
                profile="starcard-v1",
                status_list_id=list_id,
                status_idx=idx,
                stars=stars,
                created_at=now,
                updated_at=now,
            )
        )
        audit(conn, now, actor, "card.requested", subject_id=subject_id, card_serial=serial)
        return Job(0, None)

    def _supersede_others(
        self, conn: Connection, serial: str, subject_id: str, now: dt.datetime, actor: str
    ) -> None:
        others = conn.execute(
            select(cards.c.serial, cards.c.state, cards.c.status_list_id).where(
                cards.c.subject_id == subject_id,
                cards.c.state.in_(JOB_STATES),
                cards.c.serial != serial,
            )
        ).all()
        if not others:
            return
        conn.execute(
            update(cards)
            .where(cards.c.serial.in_([row.serial for row in others]))
            .values(state="abandoned", updated_at=now)
        )
        for row in others:
            audit(
                conn,
                now,
                actor,
                "card.superseded",
                subject_id=subject_id,
                card_serial=row.serial,
                state=row.state,
                superseded_by=serial,
            )
        signed = {int(r.status_list_id) for r in others if r.state not in JOB_STATES[:2]}
        for list_id in sorted(signed):  # a credential exists: its entry turns INVALID now
            self.publish(conn, now, list_id)

    @contextmanager
    def step(
        self, serial: str, expected: str, state: str, now: dt.datetime
    ) -> Iterator[Connection]:
        """One persisted step: a transaction that first moves the job from ``expected`` to
        ``state`` (or raises :class:`Superseded`), then runs the caller's block, then commits.
        Fault points ``issuance.<state>.before_commit`` / ``.after_commit`` frame the commit."""
        with self._engine.begin() as conn:
            advance(conn, serial, expected, state, now)
            yield conn
            fault_point(f"issuance.{state}.before_commit")
        fault_point(f"issuance.{state}.after_commit")

    def activate(
        self,
        serial: str,
        subject_id: str,
        now: dt.datetime,
        actor: str,
        replaces: str | None,
        replace_reason: str | None,
    ) -> None:
        """``verified`` → ``active`` under the subject's lock. The replaced card (the only
        other live card allowed) is revoked first in the same transaction; the subject's open
        re-issue due is resolved; the list is republished once.

        Raises:
            NotEligible: the person got another live card meanwhile.
            Superseded: this job was given up meanwhile.
        """
        with self._engine.begin() as conn:
            lock_subject(conn, subject_id)
            # A job given up meanwhile says so (Superseded) before any other reason.
            advance(conn, serial, "verified", "verified", now)
            live = conn.execute(
                select(cards.c.serial, cards.c.status_list_id).where(
                    cards.c.subject_id == subject_id, cards.c.state.in_(LIVE_STATES)
                )
            ).all()
            others = [row.serial for row in live if row.serial != replaces]
            if others:
                raise NotEligible(
                    [f"the person got card {others[0]} meanwhile: card {serial} is not activated"]
                )
            lists = {self._settings.status_list_id}
            for old in live:  # only ``replaces`` is left
                values = {"state": "revoked", "revoked_reason": replace_reason, "updated_at": now}
                set_card(conn, old.serial, **values)
                lists.add(int(old.status_list_id))
                audit(
                    conn,
                    now,
                    actor,
                    "card.revoked",
                    subject_id=subject_id,
                    card_serial=old.serial,
                    reason=replace_reason,
                    replaced_by=serial,
                )
            advance(conn, serial, "verified", "active", now)
            resolve_due(conn, subject_id, now, "issued")
            for list_id in sorted(lists):
                self.publish(conn, now, list_id)
            audit(
                conn,
                now,
                actor,
                "card.activated",
                subject_id=subject_id,
                card_serial=serial,
                replaces=replaces,
            )
            fault_point("issuance.activated.before_commit")
        fault_point("issuance.activated.after_commit")

    def revoke(self, serial: str, reason: str, now: dt.datetime, actor: str) -> None:
        """Revokes a card and republishes its list, in one transaction.

        Raises:
            IssuanceError: no such card.
        """
        with self._engine.begin() as conn:
            row = conn.execute(
                select(cards.c.subject_id, cards.c.status_list_id).where(cards.c.serial == serial)
            ).first()
            if row is None:
                raise IssuanceError(f"no card {serial}")
            set_card(conn, serial, state="revoked", revoked_reason=reason, updated_at=now)
            self.publish(conn, now, int(row.status_list_id))
            audit(
                conn,
                now,
                actor,
                "card.revoked",
                subject_id=row.subject_id,
                card_serial=serial,
                reason=reason,
            )
            fault_point("issuance.revoke.before_commit")
        fault_point("issuance.revoke.after_commit")

    def kept_at(self, serial: str | None) -> str:
        """Where an interrupted job stays, for the clerk's message."""
        if serial is None:
            return "nothing was written"
        try:
            with self._engine.connect() as conn:
                state = conn.execute(
                    select(cards.c.state).where(cards.c.serial == serial)
                ).scalar_one_or_none()
        except Exception:  # the database may be down too: the message must still go out
            return f"the personalization of card {serial} is kept where it stopped"
        if state is None:
            return f"nothing was recorded for card {serial}"
        return f"the personalization of card {serial} is kept at {state}"


def refuse_issued(conn: Connection, serial: str) -> None:
    """A card that was issued (live or revoked) is never personalized again.

    Raises:
        IssuanceError: it was.
    """
    state = conn.execute(select(cards.c.state).where(cards.c.serial == serial)).scalar_one_or_none()
    if state in (*LIVE_STATES, "revoked"):
        raise IssuanceError(f"card {serial} was already issued ({state})")


def set_card(conn: Connection, serial: str, **values: Any) -> None:
    conn.execute(update(cards).where(cards.c.serial == serial).values(**values))


def advance(conn: Connection, serial: str, expected: str, state: str, now: dt.datetime) -> None:
    """Moves the job from ``expected`` to ``state``, or raises :class:`Superseded`."""
    moved = conn.execute(
        update(cards)
        .where(cards.c.serial == serial, cards.c.state == expected)
        .values(state=state, updated_at=now)
    )
    if moved.rowcount == 1:
        return
    current = conn.execute(
        select(cards.c.state).where(cards.c.serial == serial)
    ).scalar_one_or_none()
    if current == "abandoned":
        raise Superseded(
            f"the personalization of card {serial} was given up: a personalization for the same "
            "person was started on another card (or reconciliation gave it up); nothing more "
            "was written to this card"
        )
    raise Superseded(
        f"card {serial} is {current}, not {expected}, in the database: another run changed it; "
        "nothing more was written to this card"
    )
