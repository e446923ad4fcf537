"""Credit-platform tables beside the core schema: departments, record history, query log.

They live on :data:`issuer.db.metadata`; migration ``0005_platform`` creates exactly these.

Invariants held by the database:
- a department's delivery token is stored only as its SHA-256 (unique), never in clear;
- ``record_history`` keeps the values a record had before each correction or withdrawal;
  the record keeps its id, so grades and objections that name it stay valid;
- ``query_log`` is append-only for the code (no update path); rows are kept at least five
  years (深圳经济特区社会信用条例 Art. 45, 征信业管理条例 Art. 22), see
  :func:`issuer.query_log.purge_query_log`.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from issuer.db import metadata

departments = Table(
    "departments",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("token_rotated_at", DateTime(timezone=True)),
    Column("disabled_at", DateTime(timezone=True)),
)

record_history = Table(
    "record_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("record_id", Integer, ForeignKey("records.id"), nullable=False, index=True),
    Column("action", String(16), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("old_values", JSON, nullable=False),
)

query_log = Table(
    "query_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("actor", String(64), nullable=False),
    Column("subject_id", String(32), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("fields", String(200), nullable=False),
    Column("channel", String(16), nullable=False),
)

Index("ix_query_log_subject_at", query_log.c.subject_id, query_log.c.at)
