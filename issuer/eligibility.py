"""Who may get a star card now, with reasons a clerk can read aloud.

Eligible means: an individual, adult (18+), consent to the star programme on file, class A with
at least one star at the *settled* level, no open objection that would lower that level, and no
live card (``active`` or ``suspended``) other than the one being replaced.

The level is the one :func:`issuer.events.card_target` gives from the records as of ``today``
(the same rule the card status events follow): an open objection against a positive record
lowers the provisional level, so the card would be suspended at once and none is issued until
it is decided; an open objection against a negative record does not lower it, and the card
shows the settled level (a provisional rise never raises a card).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from issuer.db import cards, grades, records, subjects
from issuer.events import card_target
from issuer.lifecycle import LIVE_STATES
from issuer.platform import PROGRAMME_MIN_AGE
from issuer.policy import Policy

__all__ = ["LIVE_STATES", "Eligibility", "check_eligibility", "lock_subject"]


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    reasons: tuple[str, ...]
    stars: int


def check_eligibility(
    conn: Connection,
    policy: Policy,
    subject_id: str,
    today: dt.date,
    *,
    replaces: str | None = None,
) -> Eligibility:
    """Whether ``subject_id`` may get a card today; ``stars`` is the level it would show.

    ``replaces``: the serial of the subject's live card that the new card replaces (it must be
    their only live card). Reasons are plain sentences a clerk can read aloud.
    """
    subject = conn.execute(select(subjects).where(subjects.c.id == subject_id)).first()
    if subject is None:
        return Eligibility(False, ("no such person is registered",), 0)
    if subject.kind != "individual":
        return Eligibility(False, ("organisations cannot hold the star card (it is personal)",), 0)
    reasons = []
    born = subject.birth_date
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if age < PROGRAMME_MIN_AGE:
        reasons.append("the star card is for adults (18 or older)")
    if subject.consent_given_at is None or subject.consent_withdrawn_at is not None:
        reasons.append("no consent to the star programme is on file")
    stars = _level(conn, policy, subject_id, today, reasons)
    reasons.extend(_live_card_reasons(conn, subject_id, replaces))
    return Eligibility(not reasons, tuple(reasons), stars)


def _level(
    conn: Connection, policy: Policy, subject_id: str, today: dt.date, reasons: list[str]
) -> int:
    """The settled star level (0 if none); appends why it does not allow a card."""
    graded = conn.execute(select(grades.c.stars).where(grades.c.subject_id == subject_id)).first()
    if graded is None:
        reasons.append("the person has not been graded yet")
        return 0
    rows = conn.execute(select(records).where(records.c.subject_id == subject_id)).all()
    target = card_target(policy, rows, today)
    if target.state == "suspended":
        reasons.append(
            "an objection that would lower the star level is being verified; "
            "issue after it is decided"
        )
    elif target.state == "none":
        if any(row.objection_open for row in rows):
            reasons.append(
                "the star level depends on an objection that is being verified; "
                "issue after it is decided"
            )
        else:
            reasons.append("the grade is not class A (star level)")
    return target.stars


def _live_card_reasons(conn: Connection, subject_id: str, replaces: str | None) -> list[str]:
    live = conn.execute(
        select(cards.c.serial, cards.c.state).where(
            cards.c.subject_id == subject_id, cards.c.state.in_(LIVE_STATES)
        )
    ).all()
    reasons = []
    for row in live:
        if row.serial == replaces:
            continue
        if replaces is None:
            which = "an active" if row.state == "active" else f"a {row.state}"
            reasons.append(f"the person already has {which} card ({row.serial}): use replacement")
        else:
            reasons.append(
                f"the person's card is {row.serial}, not {replaces}: replace that card instead"
            )
    if replaces is not None and not any(row.serial == replaces for row in live):
        reasons.append(
            f"card {replaces} is not a live card of this person (nothing to replace): "
            "issue a new card without replacement"
        )
    return reasons


def lock_subject(conn: Connection, subject_id: str) -> None:
    """Serialises card operations on one subject until the caller's transaction ends.

    A write to the subject's row: on PostgreSQL it takes the row lock (a second transaction
    waits here, then reads what the first committed); on SQLite it takes the database write
    lock before anything is read in the transaction, so the reads that follow are current.
    Call it first in the transaction.
    """
    conn.execute(update(subjects).where(subjects.c.id == subject_id).values(kind=subjects.c.kind))
