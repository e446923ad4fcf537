"""Credit platform basics: subjects (with consent) and records from departments.

Identity numbers and names are encrypted at rest and looked up through a keyed index; outside
this module a subject is known by its pseudonymous id and the masked number only.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from issuer.audit import audit
from issuer.db import records, subjects
from issuer.identity import parse_identity_number
from issuer.pii import PiiVault
from issuer.policy import DIRECTIONS, SEVERITIES, Policy


class PlatformError(ValueError):
    """A request the platform refuses; the message says what to fix."""


class DuplicateRecord(PlatformError):
    """Same source and document number already delivered with different content."""


@dataclass(frozen=True)
class NewRecord:
    category: str
    direction: str
    severity: str
    legal_basis: str
    authority: str
    document_number: str
    decision_date: dt.date
    source: str


def register_subject(
    conn: Connection, vault: PiiVault, id_number: str, name: str, now: dt.datetime, actor: str
) -> str:
    """Registers an individual (or returns the existing pseudonymous id for the same number).

    Raises:
        InvalidIdentityNumber: the number is not a valid GB 11643 number.
        PlatformError: the name is empty.
    """
    number = parse_identity_number(id_number)
    if not name.strip():
        raise PlatformError("the name must not be empty")
    index = vault.blind_index(number.value)
    existing = conn.execute(
        select(subjects.c.id).where(subjects.c.id_number_index == index)
    ).scalar_one_or_none()
    if existing is not None:
        return str(existing)
    subject_id = "S" + secrets.token_hex(8)
    conn.execute(
        insert(subjects).values(
            id=subject_id,
            id_number_enc=vault.encrypt(number.value, "id_number"),
            id_number_index=index,
            id_number_masked=number.masked(),
            name_enc=vault.encrypt(name.strip(), "name"),
            birth_date=number.birth_date,
            created_at=now,
        )
    )
    audit(conn, now, actor, "subject.registered", subject_id=subject_id)
    return subject_id


def record_consent(
    conn: Connection, subject_id: str, channel: str, now: dt.datetime, actor: str
) -> None:
    """Records consent to the star programme (given now, through ``channel``)."""
    result = conn.execute(
        update(subjects)
        .where(subjects.c.id == subject_id)
        .values(consent_given_at=now, consent_channel=channel, consent_withdrawn_at=None)
    )
    if result.rowcount != 1:
        raise PlatformError(f"no subject {subject_id}")
    audit(conn, now, actor, "consent.given", subject_id=subject_id, channel=channel)


def add_record(
    conn: Connection,
    policy: Policy,
    subject_id: str,
    record: NewRecord,
    now: dt.datetime,
    actor: str,
) -> int:
    """Stores a record delivered by a department; re-delivery of the same record is a no-op.

    Raises:
        PlatformError: missing legal basis or document number, a category outside the policy
            catalogue, a direction that contradicts the catalogue, unknown severity or subject.
        DuplicateRecord: the same source and document number with different content.
    """
    if not record.legal_basis.strip() or not record.document_number.strip():
        raise PlatformError("a record needs its legal basis and document number")
    category = policy.categories.get(record.category)
    if category is None:
        raise PlatformError(f"category {record.category!r} is not in the catalogue")
    if record.direction not in DIRECTIONS or record.direction != category.direction:
        raise PlatformError(f"category {record.category!r} takes direction {category.direction!r}")
    if record.severity not in SEVERITIES:
        raise PlatformError(f"severity must be one of {', '.join(SEVERITIES)}")
    if conn.execute(select(subjects.c.id).where(subjects.c.id == subject_id)).first() is None:
        raise PlatformError(f"no subject {subject_id}")
    existing = conn.execute(
        select(records).where(
            records.c.source == record.source,
            records.c.document_number == record.document_number,
        )
    ).first()
    if existing is not None:
        same = (
            existing.subject_id == subject_id
            and existing.category == record.category
            and existing.direction == record.direction
            and existing.severity == record.severity
            and existing.decision_date == record.decision_date
        )
        if not same:
            raise DuplicateRecord(
                f"{record.source} {record.document_number} was delivered before with other "
                "content: send a correction instead"
            )
        return int(existing.id)
    result = conn.execute(
        insert(records).values(subject_id=subject_id, received_at=now, **record.__dict__)
    )
    inserted = result.inserted_primary_key
    if inserted is None:
        raise RuntimeError("the database did not return the new record's id")
    record_id = int(inserted[0])
    audit(conn, now, actor, "record.added", subject_id=subject_id, record_id=record_id)
    return record_id
