"""Human review of the automated grade (PIPL Art. 24: automated decision-making).

Grading is an automated decision about a person's credit status. The subject (or staff on
their behalf) may ask a person to review it:

- :func:`request_review` records the request with a snapshot of the grade being reviewed
  (score, class, stars, policy version and hash), so the review is about a fixed decision;
  while it is open the subject's grade is flagged (:func:`under_review`);
- :func:`decide_review` is a person's decision: ``confirmed`` (the grade stands, with the
  explanation given to the subject) or ``amended`` (the reviewer found an error; the change
  itself goes through an objection, whose id the decision names, so that there is one path
  that changes records and the card).

A review changes no grade by itself. Invariants: one open review per subject (a partial
unique index); the reviewer is a named person, never the system's own actors; every step is
audited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, get_args

from sqlalchemy import Connection, insert, select, update

from issuer.audit import audit
from issuer.db import grades
from issuer.db_rights import objections, review_requests
from issuer.events import (
    RightsConflict,
    RightsError,
    RightsNotFound,
    lock_subjects,
    locked_row,
    new_id,
)
from issuer.repair import JOB_ACTOR

ReviewOutcome = Literal["confirmed", "amended"]
AUTOMATED_ACTORS = frozenset({JOB_ACTOR, "rights", "system", "grading", "platform", "ingestion"})


@dataclass(frozen=True)
class Review:
    id: int
    subject_id: str
    reason: str
    status: str
    grade_score: int
    grade_class: str
    grade_stars: int
    policy_version: str
    reviewer: str | None
    outcome: str | None
    objection_id: int | None
    decision_note: str | None


def request_review(
    conn: Connection, subject_id: str, reason: str, requested_by: str, now: dt.datetime
) -> int:
    """Opens a review of the subject's current grade.

    Raises:
        RightsError: no reason given.
        RightsNotFound: no such subject, or the subject has no grade (nothing to review).
        RightsConflict: a review of this subject is already open.
    """
    if not reason.strip():
        raise RightsError("a review request needs its reason (what the subject disputes)")
    lock_subjects(conn, [subject_id])
    grade = conn.execute(select(grades).where(grades.c.subject_id == subject_id)).first()
    if grade is None:
        raise RightsNotFound(f"{subject_id} has not been graded: there is no decision to review")
    already = conn.execute(
        select(review_requests.c.id).where(
            review_requests.c.subject_id == subject_id, review_requests.c.status == "open"
        )
    ).scalar_one_or_none()
    if already is not None:
        raise RightsConflict(f"review {already} of {subject_id} is already open")
    review_id = new_id(
        conn.execute(
            insert(review_requests).values(
                subject_id=subject_id,
                reason=reason.strip(),
                requested_at=now,
                requested_by=requested_by,
                status="open",
                grade_score=grade.score,
                grade_class=grade.grade_class,
                grade_stars=grade.stars,
                policy_version=grade.policy_version,
                policy_hash=grade.policy_hash,
            )
        ).inserted_primary_key
    )
    audit(
        conn,
        now,
        requested_by,
        "review.requested",
        subject_id=subject_id,
        review_id=review_id,
        grade_class=grade.grade_class,
        grade_stars=grade.stars,
        policy_version=grade.policy_version,
    )
    return review_id


def decide_review(
    conn: Connection,
    review_id: int,
    *,
    reviewer: str,
    outcome: ReviewOutcome,
    note: str,
    now: dt.datetime,
    objection_id: int | None = None,
) -> None:
    """Records a person's review decision and the explanation given to the subject.

    Raises:
        RightsError: no reviewer, an automated actor as reviewer, no explanation, an unknown
            outcome, ``amended`` without the objection carrying the change (or ``confirmed``
            with one), or an objection about another subject.
        RightsNotFound: no such review or objection.
        RightsConflict: the review was decided already.
    """
    if not reviewer.strip() or reviewer.strip() in AUTOMATED_ACTORS:
        raise RightsError("a human review is decided by a named staff member, not the system")
    if not note.strip():
        raise RightsError("the decision must explain the grade to the subject (PIPL Art. 24)")
    if outcome not in get_args(ReviewOutcome):
        raise RightsError("the outcome must be 'confirmed' or 'amended'")
    if (objection_id is not None) != (outcome == "amended"):
        raise RightsError(
            "an amended grade names the objection that carries the change; a confirmed one none"
        )
    review = locked_row(conn, review_requests, review_id, "review")
    if review.status != "open":
        raise RightsConflict(f"review {review_id} was decided already ({review.outcome})")
    if objection_id is not None:
        owner = conn.execute(
            select(objections.c.subject_id).where(objections.c.id == objection_id)
        ).scalar_one_or_none()
        if owner is None:
            raise RightsNotFound(f"no objection {objection_id}")
        if owner != review.subject_id:
            raise RightsError(f"objection {objection_id} is about another subject")
    conn.execute(
        update(review_requests)
        .where(review_requests.c.id == review_id)
        .values(
            status="decided",
            reviewer=reviewer.strip(),
            outcome=outcome,
            objection_id=objection_id,
            decision_note=note.strip(),
            decided_at=now,
        )
    )
    audit(
        conn,
        now,
        reviewer.strip(),
        "review.decided",
        subject_id=review.subject_id,
        review_id=review_id,
        outcome=outcome,
        objection_id=objection_id,
    )


def under_review(conn: Connection, subject_ids: list[str]) -> set[str]:
    """The subjects among ``subject_ids`` whose grade is under an open human review."""
    return set(
        conn.execute(
            select(review_requests.c.subject_id).where(
                review_requests.c.subject_id.in_(subject_ids), review_requests.c.status == "open"
            )
        ).scalars()
    )


def get_review(conn: Connection, review_id: int) -> Review:
    """One review as a value.

    Raises:
        RightsNotFound: no such review.
    """
    row = conn.execute(select(review_requests).where(review_requests.c.id == review_id)).first()
    if row is None:
        raise RightsNotFound(f"no review {review_id}")
    return Review(
        id=int(row.id),
        subject_id=row.subject_id,
        reason=row.reason,
        status=row.status,
        grade_score=int(row.grade_score),
        grade_class=row.grade_class,
        grade_stars=int(row.grade_stars),
        policy_version=row.policy_version,
        reviewer=row.reviewer,
        outcome=row.outcome,
        objection_id=row.objection_id,
        decision_note=row.decision_note,
    )
