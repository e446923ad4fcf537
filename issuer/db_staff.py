"""Staff accounts and sessions, and the audit log's chain head and signed checkpoints.

They live on :data:`issuer.db.metadata`; migration ``0008_staff_audit`` creates exactly these
(and adds ``seq``, ``prev_hash``, ``hash`` to ``audit_events``).

Invariants held by the database:
- a staff member's password is stored only as an argon2id hash, a session token only as its
  SHA-256 (the primary key): neither can be read back;
- a role is one of ``operator``, ``supervisor``, ``auditor``;
- ``audit_chain_head`` has exactly one row (``id = 1``): the last event's ``seq`` and ``hash``.
  Every append updates it in the appending transaction, so on PostgreSQL its row lock
  serialises appends and the chain cannot fork;
- one checkpoint per ``seq``; a checkpoint is never updated (no code path does).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    text,
)

from issuer.db import metadata

staff_accounts = Table(
    "staff_accounts",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("password_changed_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True)),
    Column("failed_logins", Integer, nullable=False, server_default=text("0")),
    Column("locked_until", DateTime(timezone=True)),
    CheckConstraint("role IN ('operator', 'supervisor', 'auditor')", name="ck_staff_accounts_role"),
)

staff_sessions = Table(
    "staff_sessions",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column("staff_name", String(64), ForeignKey("staff_accounts.name"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
)

audit_chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("checkpointed_seq", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="ck_audit_chain_head_single_row"),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("head_hash", String(64), nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kid", String(16), nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

STAFF_TABLES = (staff_accounts, staff_sessions, audit_chain_head, audit_checkpoints)
