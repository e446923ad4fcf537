"""Audit events: who did what, when, to which subject or card. Never secrets."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, insert

from issuer.db import audit_events


def audit(
    conn: Connection,
    now: dt.datetime,
    actor: str,
    action: str,
    *,
    subject_id: str | None = None,
    card_serial: str | None = None,
    **detail: Any,
) -> None:
    """Appends one event in the caller's transaction, so it commits or rolls back with it."""
    conn.execute(
        insert(audit_events),
        {
            "at": now,
            "actor": actor,
            "action": action,
            "subject_id": subject_id,
            "card_serial": card_serial,
            "detail": detail,
        },
    )
