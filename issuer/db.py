"""The issuer's tables (SQLAlchemy Core). The Alembic migrations create exactly these.

Invariants held by the database itself, not only by code:
- one record per (source, document number): re-delivery is idempotent;
- one status-list index per card, unique within its list;
- at most one ``active`` card per subject (a partial unique index, SQLite and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()


def stored_utc(value: dt.datetime) -> dt.datetime:
    """A timestamp read back from the database as an aware datetime. Stored values are UTC;
    SQLite returns ``DateTime(timezone=True)`` columns naive, so a naive value is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def unique_where(name: str, column: Column[Any], condition: str) -> Index:
    """A partial unique index (``condition`` holds on at most one row per ``column`` value),
    the same on SQLite and PostgreSQL: the database, not only code, enforces the rule."""
    where = text(condition)
    return Index(name, column, unique=True, sqlite_where=where, postgresql_where=where)


subjects = Table(
    "subjects",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("id_number_enc", LargeBinary, nullable=False),
    Column("id_number_index", LargeBinary(32), nullable=False, unique=True),
    Column("id_number_masked", String(18), nullable=False),
    Column("name_enc", LargeBinary, nullable=False),
    Column("birth_date", Date),  # 0007: None for organisations (they have no birth date)
    Column("consent_given_at", DateTime(timezone=True)),
    Column("consent_channel", String(32)),
    Column("consent_withdrawn_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # 0005: "individual" (GB 11643 number in id_number_*) or "organisation" (GB 32100 code in
    # id_number_*, blind index over "uscc:" + code; birth_date is the placeholder 0001-01-01
    # until the column may be null). Only individuals may consent or hold a card.
    Column("kind", String(16), nullable=False, server_default=text("'individual'")),
    # 0005: the staff reason for accepting a pilot-area USCC that fails its check.
    Column("uscc_override_reason", Text),
    # 0005: the channel through which consent was withdrawn (time in consent_withdrawn_at).
    Column("consent_withdrawn_channel", String(32)),
)

records = Table(
    "records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), ForeignKey("subjects.id"), nullable=False, index=True),
    Column("category", String(64), nullable=False),
    Column("direction", String(1), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("legal_basis", Text, nullable=False),
    Column("authority", Text, nullable=False),
    Column("document_number", String(128), nullable=False),
    Column("decision_date", Date, nullable=False),
    Column("source", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("objection_open", Integer, nullable=False, server_default=text("0")),
    Column("withdrawn_at", DateTime(timezone=True)),
    Column("repaired_at", DateTime(timezone=True)),
    Column("archived_at", DateTime(timezone=True)),
    UniqueConstraint("source", "document_number", name="uq_records_source_document"),
)

grades = Table(
    "grades",
    metadata,
    Column("subject_id", String(32), ForeignKey("subjects.id"), primary_key=True),
    Column("policy_version", String(64), nullable=False),
    Column("policy_hash", String(64), nullable=False),
    Column("score", Integer, nullable=False),
    Column("grade_class", String(1), nullable=False),
    Column("stars", Integer, nullable=False),
    Column("explanation", JSON, nullable=False),
    Column("as_of", Date, nullable=False),
    Column("graded_at", DateTime(timezone=True), nullable=False),
)

cards = Table(
    "cards",
    metadata,
    Column("serial", String(16), primary_key=True),
    Column("subject_id", String(32), ForeignKey("subjects.id"), nullable=False, index=True),
    Column("state", String(24), nullable=False),
    Column("profile", String(32), nullable=False),
    Column("status_list_id", Integer, nullable=False),
    Column("status_idx", Integer, nullable=False),
    Column("card_public_key", LargeBinary),
    Column("credential", LargeBinary),
    Column("stars", Integer, nullable=False),
    Column("qr_token_hash", LargeBinary(32)),
    Column("access_code_hash", Text),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("revoked_reason", String(32)),
    # 0002: the version of the credential written (or being written) to the card; it only
    # grows, as the card refuses a version not above its own.
    Column("credential_version", Integer, nullable=False, server_default=text("0")),
    # 0002: the secure-channel key version the card authenticated with.
    Column("card_key_version", Integer),
    UniqueConstraint("status_list_id", "status_idx", name="uq_cards_status_entry"),
)

unique_where("uq_cards_one_active_per_subject", cards.c.subject_id, "state = 'active'")
# 0009: a suspended card is still the subject's card: at most one live (active or suspended).
unique_where(
    "uq_cards_one_live_per_subject", cards.c.subject_id, "state IN ('active', 'suspended')"
)

status_lists = Table(
    "status_lists",
    metadata,
    Column("list_id", Integer, primary_key=True),
    Column("sequence", Integer, nullable=False),
    Column("token", LargeBinary, nullable=False),
    Column("issued_at", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject_id", String(32)),
    Column("card_serial", String(16)),
    Column("detail", JSON, nullable=False),
    # 0008: the hash chain (``issuer.audit``): position, the previous event's hash, and
    # SHA-256 over this event's canonical encoding (which includes ``prev_hash``).
    Column("seq", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("uq_audit_events_seq", audit_events.c.seq, unique=True)

# The credit platform's own tables (departments, record history, query log) join this
# metadata when their module is imported; imported last because it imports ``metadata``.
from issuer import db_citizen as _db_citizen  # noqa: E402, F401
from issuer import db_grading as _db_grading  # noqa: E402, F401
from issuer import db_lifecycle as _db_lifecycle  # noqa: E402, F401
from issuer import db_platform as _db_platform  # noqa: E402, F401
from issuer import db_rights as _db_rights  # noqa: E402, F401
from issuer import db_staff as _db_staff  # noqa: E402, F401
