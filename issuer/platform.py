"""Credit platform basics: subjects (with consent) and records from departments.

Subjects are individuals (GB 11643 identity number) or organisations (GB 32100 USCC). The
identifier and the name are encrypted at rest and looked up through a keyed index; outside
this module a subject is known by its pseudonymous id and the masked identifier only.

Invariants:
- one subject per identifier (unique blind index; organisations' index is taken over
  ``"uscc:" + code`` so that no code can collide with an identity number);
- only adult individuals can consent to the star programme; withdrawing consent is recorded
  with its time and channel and emits a ``revoke`` card status event (reason
  ``consent_withdrawn``, :mod:`issuer.events`) in the same transaction;
- a record needs its legal basis and document number, a catalogue category with the
  catalogue's direction and a known severity; (source, document number) names one record,
  whose content only a correction can change (old values kept in ``record_history``).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from issuer.audit import AuditEntry, append_events, audit
from issuer.db import records, subjects
from issuer.db_platform import record_history
from issuer.events import emit
from issuer.identity import IdentityNumber, parse_identity_number
from issuer.pii import PiiVault
from issuer.policy import DIRECTIONS, SEVERITIES, Policy
from issuer.query_log import log_read
from issuer.uscc import Uscc, UsccCheckMismatch, parse_uscc

INDIVIDUAL = "individual"
ORGANISATION = "organisation"
PROGRAMME_MIN_AGE = 18
"""The star programme is for adults (PIPL; DOMAIN.md "Personal information")."""
_ORGANISATION_INDEX_PREFIX = "uscc:"
_CONTENT_FIELDS = (
    "category",
    "direction",
    "severity",
    "legal_basis",
    "authority",
    "decision_date",
)


class PlatformError(ValueError):
    """A request the platform refuses; the message says what to fix."""


class DuplicateRecord(PlatformError):
    """Same source and document number already delivered with different content."""


class UnknownSubject(PlatformError):
    """No subject has the id given."""


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


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored: its id, its subject, its content and whether it was withdrawn."""

    id: int
    subject_id: str
    content: NewRecord
    withdrawn_at: dt.datetime | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.content.source, self.content.document_number)

    def same_as(self, subject_id: str, record: NewRecord) -> bool:
        """True if delivering ``record`` for ``subject_id`` would change nothing."""
        return subject_id == self.subject_id and all(
            getattr(record, f) == getattr(self.content, f) for f in _CONTENT_FIELDS
        )

    def values(self) -> dict[str, Any]:
        """The stored values as JSON-ready data (for ``record_history``)."""
        data = asdict(self.content)
        data["decision_date"] = self.content.decision_date.isoformat()
        data["subject_id"] = self.subject_id
        data["withdrawn_at"] = None if self.withdrawn_at is None else self.withdrawn_at.isoformat()
        return data


# --- subjects -------------------------------------------------------------------------------


def subject_index(vault: PiiVault, identifier: IdentityNumber | Uscc) -> bytes:
    """The blind index under which the subject with ``identifier`` is stored."""
    if isinstance(identifier, Uscc):
        return vault.blind_index(_ORGANISATION_INDEX_PREFIX + identifier.value)
    return vault.blind_index(identifier.value)


def subject_ids_by_index(conn: Connection, indexes: Iterable[bytes]) -> dict[bytes, str]:
    """Maps each registered blind index among ``indexes`` to its subject id."""
    wanted = list(set(indexes))
    if not wanted:
        return {}
    rows = conn.execute(
        select(subjects.c.id_number_index, subjects.c.id).where(
            subjects.c.id_number_index.in_(wanted)
        )
    )
    return {bytes(row.id_number_index): str(row.id) for row in rows}


def register_subject(
    conn: Connection, vault: PiiVault, id_number: str, name: str, now: dt.datetime, actor: str
) -> str:
    """Registers an individual (or returns the existing pseudonymous id for the same number).

    Raises:
        InvalidIdentityNumber: the number is not a valid GB 11643 number.
        PlatformError: the name is empty.
    """
    number = parse_identity_number(id_number)
    return _register(conn, vault, number, name, now, actor, None)


def register_organisation(
    conn: Connection,
    vault: PiiVault,
    uscc: str,
    name: str,
    now: dt.datetime,
    actor: str,
    *,
    check_override_reason: str | None = None,
) -> str:
    """Registers an organisation (or returns the existing id for the same code).

    A code whose check character does not match is accepted only with
    ``check_override_reason`` (staff only: early pilot-area codes); the reason is stored on
    the subject and audited as ``subject.uscc_check_overridden``. A reason given for a code
    that passes the check is ignored.

    Raises:
        InvalidUscc: the code is malformed.
        UsccCheckMismatch: the check fails and no override reason was given.
        PlatformError: the name is empty.
    """
    code = parse_uscc(uscc, accept_check_mismatch=True)
    reason = (check_override_reason or "").strip()
    if not code.check_ok and not reason:
        raise UsccCheckMismatch(code)
    return _register(conn, vault, code, name, now, actor, None if code.check_ok else reason)


def _register(
    conn: Connection,
    vault: PiiVault,
    identifier: IdentityNumber | Uscc,
    name: str,
    now: dt.datetime,
    actor: str,
    override_reason: str | None,
) -> str:
    if not name.strip():
        raise PlatformError("the name must not be empty")
    index = subject_index(vault, identifier)
    existing = subject_ids_by_index(conn, [index]).get(index)
    if existing is not None:
        return existing
    subject_id = "S" + secrets.token_hex(8)
    is_person = isinstance(identifier, IdentityNumber)
    conn.execute(
        insert(subjects).values(
            id=subject_id,
            kind=INDIVIDUAL if is_person else ORGANISATION,
            id_number_enc=vault.encrypt(identifier.value, "id_number"),
            id_number_index=index,
            id_number_masked=identifier.masked(),
            name_enc=vault.encrypt(name.strip(), "name"),
            # an organisation has no birth date (NULL), a person's comes from the ID number
            birth_date=identifier.birth_date if isinstance(identifier, IdentityNumber) else None,
            uscc_override_reason=override_reason,
            created_at=now,
        )
    )
    kind = INDIVIDUAL if is_person else ORGANISATION
    audit(conn, now, actor, "subject.registered", subject_id=subject_id, kind=kind)
    if override_reason is not None:
        audit(
            conn,
            now,
            actor,
            "subject.uscc_check_overridden",
            subject_id=subject_id,
            reason=override_reason,
        )
    return subject_id


def _subject_row(conn: Connection, subject_id: str) -> Any:
    row = conn.execute(select(subjects).where(subjects.c.id == subject_id)).first()
    if row is None:
        raise UnknownSubject(f"no subject {subject_id}")
    return row


@dataclass(frozen=True)
class SubjectView:
    """What staff see of a subject: identifiers masked, a person's name masked."""

    subject_id: str
    kind: str
    identifier_masked: str
    name_shown: str
    adult: bool | None
    consent_given_at: dt.datetime | None
    consent_channel: str | None
    consent_withdrawn_at: dt.datetime | None
    consent_withdrawn_channel: str | None
    uscc_check_overridden: bool
    created_at: dt.datetime


VIEW_FIELDS = ("id_number_masked", "name", "birth_date", "consent")


def read_subject(
    conn: Connection,
    vault: PiiVault,
    subject_id: str,
    now: dt.datetime,
    actor: str,
    purpose: str,
    channel: str,
) -> SubjectView:
    """Reads a subject for staff and logs the read (who, whom, when, why) in the query log.

    Call it inside a transaction that commits: the log entry is written in it, and a read
    whose log entry cannot be written fails with it.

    Raises:
        UnknownSubject: no such subject.
        issuer.query_log.QueryLogError: no purpose given.
    """
    row = _subject_row(conn, subject_id)
    log_read(conn, now, actor, subject_id, purpose, VIEW_FIELDS, channel)
    name = vault.decrypt(row.name_enc, "name")
    person = row.kind == INDIVIDUAL
    return SubjectView(
        subject_id=subject_id,
        kind=row.kind,
        identifier_masked=row.id_number_masked,
        name_shown=mask_name(name) if person else name,
        adult=age_on(row.birth_date, now.date()) >= PROGRAMME_MIN_AGE if person else None,
        consent_given_at=row.consent_given_at,
        consent_channel=row.consent_channel,
        consent_withdrawn_at=row.consent_withdrawn_at,
        consent_withdrawn_channel=row.consent_withdrawn_channel,
        uscc_check_overridden=row.uscc_override_reason is not None,
        created_at=row.created_at,
    )


def subject_kind(conn: Connection, subject_id: str) -> str:
    """``individual`` or ``organisation``.

    Raises:
        UnknownSubject: no such subject.
    """
    kind = conn.execute(select(subjects.c.kind).where(subjects.c.id == subject_id)).scalar()
    if kind is None:
        raise UnknownSubject(f"no subject {subject_id}")
    return str(kind)


def mask_name(name: str) -> str:
    """The first character of a person's name and one ``*`` per further character."""
    return name[:1] + "*" * (len(name) - 1) if len(name) > 1 else "*"


def age_on(birth_date: dt.date, day: dt.date) -> int:
    """Completed years of someone born on ``birth_date``, on ``day``."""
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def record_consent(
    conn: Connection, subject_id: str, channel: str, now: dt.datetime, actor: str
) -> None:
    """Records consent to the star programme (given now, through ``channel``).

    Consent given again after a withdrawal starts a new consent (the withdrawal is cleared;
    the audit log keeps both).

    Raises:
        PlatformError: unknown subject, an organisation, a person under 18 on ``now``'s date,
            or an empty channel.
    """
    if not channel.strip():
        raise PlatformError("name the channel the consent came through (e.g. counter, app)")
    row = _subject_row(conn, subject_id)
    if row.kind != INDIVIDUAL:
        raise PlatformError("organisations cannot join the star programme (it is personal)")
    if age_on(row.birth_date, now.date()) < PROGRAMME_MIN_AGE:
        adult_on = _adult_on(row.birth_date)
        raise PlatformError(
            f"the star programme is for adults (18 or older); this person can consent from "
            f"{adult_on.isoformat()}"
        )
    conn.execute(
        update(subjects)
        .where(subjects.c.id == subject_id)
        .values(
            consent_given_at=now,
            consent_channel=channel.strip(),
            consent_withdrawn_at=None,
            consent_withdrawn_channel=None,
        )
    )
    audit(conn, now, actor, "consent.given", subject_id=subject_id, channel=channel.strip())


def _adult_on(birth_date: dt.date) -> dt.date:
    year = birth_date.year + PROGRAMME_MIN_AGE
    if (birth_date.month, birth_date.day) == (2, 29):
        return dt.date(year, 3, 1)  # no 29 February that year: the day after 28 February
    return birth_date.replace(year=year)


def withdraw_consent(
    conn: Connection, subject_id: str, channel: str, now: dt.datetime, actor: str
) -> bool:
    """Records the withdrawal of consent (time ``now``, through ``channel``).

    Emits a ``revoke`` card status event (reason ``consent_withdrawn``) in the same
    transaction: the issuance layer consumes it and revokes the person's card. Withdrawing
    an already withdrawn consent changes nothing and returns False.

    Raises:
        PlatformError: unknown subject, no consent on file, or an empty channel.
    """
    if not channel.strip():
        raise PlatformError("name the channel the withdrawal came through (e.g. counter, app)")
    row = _subject_row(conn, subject_id)
    if row.consent_given_at is None:
        raise PlatformError("no consent to the star programme is on file: nothing to withdraw")
    if row.consent_withdrawn_at is not None:
        return False
    conn.execute(
        update(subjects)
        .where(subjects.c.id == subject_id)
        .values(consent_withdrawn_at=now, consent_withdrawn_channel=channel.strip())
    )
    audit(conn, now, actor, "consent.withdrawn", subject_id=subject_id, channel=channel.strip())
    emit(conn, "revoke", subject_id, "consent_withdrawn", now, stars=0, actor=actor)
    return True


# --- records --------------------------------------------------------------------------------


def check_record(policy: Policy, record: NewRecord) -> None:
    """Checks a record's content against the rules and the policy catalogue.

    Raises:
        PlatformError: missing legal basis, document number, authority or source; a category
            outside the catalogue, a direction that contradicts it, or an unknown severity.
    """
    if not record.legal_basis.strip() or not record.document_number.strip():
        raise PlatformError("a record needs its legal basis and document number")
    if not record.authority.strip():
        raise PlatformError("a record needs the issuing authority")
    if not record.source.strip():
        raise PlatformError("a record needs its source department")
    category = policy.categories.get(record.category)
    if category is None:
        known = ", ".join(sorted(policy.categories))
        raise PlatformError(f"category {record.category!r} is not in the catalogue ({known})")
    if record.direction not in DIRECTIONS or record.direction != category.direction:
        raise PlatformError(f"category {record.category!r} takes direction {category.direction!r}")
    if record.severity not in SEVERITIES:
        raise PlatformError(f"severity must be one of {', '.join(SEVERITIES)}")


def load_records(
    conn: Connection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], StoredRecord]:
    """The stored records among ``keys`` ((source, document number) pairs), by key."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    if conn.dialect.name == "postgresql":
        # A join with the keys unnested from two bound arrays: with statistics gone stale
        # while a big import fills the table, PostgreSQL matches "document_number IN (...)"
        # as a filter over every record of the source (quadratic); the join stays linear,
        # and the statement is the same for every chunk (compiled once).
        listed = _PG_WANTED_KEYS
        query = select(records).join(
            listed,
            and_(
                records.c.source == listed.c.source,
                records.c.document_number == listed.c.document_number,
            ),
        )
        rows = conn.execute(
            query, {"sources": [k[0] for k in wanted], "documents": [k[1] for k in wanted]}
        )
    else:
        by_source: dict[str, list[str]] = {}
        for source, document in wanted:
            by_source.setdefault(source, []).append(document)
        rows = conn.execute(
            select(records).where(
                or_(
                    *(
                        and_(records.c.source == source, records.c.document_number.in_(documents))
                        for source, documents in by_source.items()
                    )
                )
            )
        )
    found = {}
    for row in rows:
        stored = _stored(row)
        found[stored.key] = stored
    return found


_PG_WANTED_KEYS = (
    func.unnest(
        bindparam("sources", type_=ARRAY(String)), bindparam("documents", type_=ARRAY(String))
    )
    .table_valued("source", "document_number")
    .render_derived(name="wanted")
)


def _stored(row: Any) -> StoredRecord:
    content = NewRecord(
        category=row.category,
        direction=row.direction,
        severity=row.severity,
        legal_basis=row.legal_basis,
        authority=row.authority,
        document_number=row.document_number,
        decision_date=row.decision_date,
        source=row.source,
    )
    return StoredRecord(int(row.id), str(row.subject_id), content, row.withdrawn_at)


def insert_record(
    conn: Connection, subject_id: str, record: NewRecord, now: dt.datetime, actor: str
) -> int:
    """Inserts a checked record (see :func:`check_record`) for an existing subject; audited.

    Raises:
        sqlalchemy.exc.IntegrityError: (source, document number) exists already (a
            concurrent delivery) or the subject does not exist.
    """
    return insert_records(conn, [(subject_id, record)], now, actor)[0]


def insert_records(
    conn: Connection, items: Sequence[tuple[str, NewRecord]], now: dt.datetime, actor: str
) -> list[int]:
    """Inserts checked records ((subject id, record) pairs), returns their ids in order.

    Two statements whatever the number of records (bulk imports): the records, then one
    ``record.added`` audit event each, chained by :func:`issuer.audit.append_events`.

    Raises:
        sqlalchemy.exc.IntegrityError: see :func:`insert_record`.
    """
    if not items:
        return []
    params = [
        {"subject_id": subject_id, "received_at": now, **asdict(record)}
        for subject_id, record in items
    ]
    statement = insert(records).returning(records.c.id, sort_by_parameter_order=True)
    ids = [int(i) for i in conn.execute(statement, params).scalars()]
    if len(ids) != len(items):
        raise RuntimeError("the database did not return the new records' ids")
    append_events(
        conn,
        [
            AuditEntry(
                now,
                actor,
                "record.added",
                subject_id,
                detail={
                    "record_id": record_id,
                    "source": record.source,
                    "document_number": record.document_number,
                },
            )
            for (subject_id, record), record_id in zip(items, ids, strict=True)
        ],
    )
    return ids


def correct_record(
    conn: Connection,
    stored: StoredRecord,
    subject_id: str,
    record: NewRecord,
    reason: str,
    now: dt.datetime,
    actor: str,
) -> None:
    """Replaces the content of ``stored`` with ``record`` (same id, same source and document).

    The old values go to ``record_history``; the change is audited with both subjects.

    Raises:
        PlatformError: no reason, a different source or document number, or the record was
            withdrawn (a withdrawn record is not corrected: deliver a new one).
    """
    if not reason.strip():
        raise PlatformError("a correction needs a reason (e.g. the amending decision)")
    if (record.source, record.document_number) != stored.key:
        raise PlatformError("a correction keeps the record's source and document number")
    if stored.withdrawn_at is not None:
        raise PlatformError(
            f"{record.document_number} was withdrawn on {stored.withdrawn_at.date().isoformat()}"
            ": a withdrawn record is not corrected; deliver a new record instead"
        )
    _history(conn, stored, "correction", reason, now, actor)
    conn.execute(
        update(records)
        .where(records.c.id == stored.id)
        .values(subject_id=subject_id, **{f: getattr(record, f) for f in _CONTENT_FIELDS})
    )
    audit(
        conn,
        now,
        actor,
        "record.corrected",
        subject_id=subject_id,
        record_id=stored.id,
        previous_subject_id=stored.subject_id,
        reason=reason.strip(),
    )


def withdraw_record(
    conn: Connection, stored: StoredRecord, reason: str, now: dt.datetime, actor: str
) -> None:
    """Marks ``stored`` withdrawn by its source (it stays stored and stops counting).

    Raises:
        PlatformError: no reason, or the record is withdrawn already.
    """
    if not reason.strip():
        raise PlatformError("a withdrawal needs a reason (e.g. the revoking decision)")
    if stored.withdrawn_at is not None:
        raise PlatformError(f"{stored.content.document_number} is withdrawn already")
    _history(conn, stored, "withdrawal", reason, now, actor)
    conn.execute(update(records).where(records.c.id == stored.id).values(withdrawn_at=now))
    audit(
        conn,
        now,
        actor,
        "record.withdrawn",
        subject_id=stored.subject_id,
        record_id=stored.id,
        reason=reason.strip(),
    )


def _history(
    conn: Connection,
    stored: StoredRecord,
    action: str,
    reason: str,
    now: dt.datetime,
    actor: str,
) -> None:
    conn.execute(
        insert(record_history).values(
            record_id=stored.id,
            action=action,
            at=now,
            actor=actor,
            reason=reason.strip(),
            old_values=stored.values(),
        )
    )


def add_record(
    conn: Connection,
    policy: Policy,
    subject_id: str,
    record: NewRecord,
    now: dt.datetime,
    actor: str,
) -> int:
    """Stores a record delivered by a department; re-delivery of the same record is a no-op.

    Text fields are stored stripped of surrounding spaces.

    Raises:
        PlatformError: missing legal basis or document number, a category outside the policy
            catalogue, a direction that contradicts the catalogue, unknown severity or subject.
        DuplicateRecord: the same source and document number with different content.
    """
    record = normalise_record(record)
    check_record(policy, record)
    _subject_row(conn, subject_id)
    existing = load_records(conn, [(record.source, record.document_number)]).get(
        (record.source, record.document_number)
    )
    if existing is not None:
        if not existing.same_as(subject_id, record):
            raise DuplicateRecord(
                f"{record.source} {record.document_number} was delivered before with other "
                "content: send a correction instead"
            )
        return existing.id
    return insert_record(conn, subject_id, record, now, actor)


def normalise_record(record: NewRecord) -> NewRecord:
    """The record with surrounding spaces removed from its text fields."""
    return replace(
        record,
        category=record.category.strip(),
        direction=record.direction.strip(),
        severity=record.severity.strip(),
        legal_basis=record.legal_basis.strip(),
        authority=record.authority.strip(),
        document_number=record.document_number.strip(),
        source=record.source.strip(),
    )
