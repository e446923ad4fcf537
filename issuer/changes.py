"""What happens after records change: the one place ingestion hands over to the rights rules.

Every delivered, corrected or withdrawn record re-grades its subjects and announces any card
status change (``issuer.events``) in the same transaction as the change; a withdrawal first
archives the record and closes what depended on it (``RepairDesk.apply_withdrawal``).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection

from issuer.events import regrade_and_announce
from issuer.ingest import ChangeHook, Changes
from issuer.policy import Policy
from issuer.repair import RepairDesk


def after_records_changed(policy: Policy, now: dt.datetime, actor: str) -> ChangeHook:
    """The ``on_changes`` hook for :func:`issuer.ingest.ingest`."""
    desk = RepairDesk(policy)

    def hook(conn: Connection, changes: Changes) -> None:
        for record_id in changes.withdrawn_record_ids:
            desk.apply_withdrawal(conn, record_id, now, actor)
        regrade_and_announce(
            conn, policy, sorted(changes.subject_ids), now, reason="records_delivered", actor=actor
        )

    return hook
