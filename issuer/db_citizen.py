"""Citizen-page state: wrong access-code attempts per card (the lockout survives restarts and
is shared by every issuer worker).

It lives on :data:`issuer.db.metadata`; migration ``0010_citizen`` creates exactly this.
Invariants: one row per card; ``failures`` counts wrong codes since the last success or lock,
``locked_until`` (when set and in the future) refuses every code, right or wrong.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, ForeignKey, Integer, String, Table, text

from issuer.db import metadata

citizen_code_attempts = Table(
    "citizen_code_attempts",
    metadata,
    Column("serial", String(16), ForeignKey("cards.serial"), primary_key=True),
    Column("failures", Integer, nullable=False, server_default=text("0")),
    Column("locked_until", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
