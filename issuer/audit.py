"""Audit events: who did what, when, to which subject or card. Never secrets.

The log is a hash chain (``docs/audit.md``). Event ``n`` stores ``seq = n``, the hash of
event ``n - 1`` as ``prev_hash`` (:data:`GENESIS` for the first) and
``hash = SHA-256(domain ‖ canonical JSON of the event including prev_hash)``. Appends run in
the caller's transaction and go through the one-row ``audit_chain_head``: its ``UPDATE``
takes a row lock on PostgreSQL (SQLite serialises writers anyway), so two transactions never
both extend the same head and the chain cannot fork. The lock is held until the caller
commits; an appending transaction that rolls back leaves no gap.

Checkpoints sign ``(seq, head hash, event count, time, kid)`` with an HSM key of purpose
``AUDIT_CHECKPOINT_SIGNING``: explicitly (:func:`write_checkpoint`, ``starcard-issuer audit
checkpoint``) and automatically once ``every`` events were appended since the last one, when
the composition root has called :func:`enable_checkpoints` on the engine. Verification is in
:mod:`issuer.audit_verify`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from hsm_sim import Hsm, KeyPurpose, Signer
from issuer.db import audit_events
from issuer.db_staff import audit_chain_head, audit_checkpoints
from verifier.core.keys import kid_for

GENESIS = "0" * 64
"""The ``prev_hash`` of the first event."""
_EVENT_DOMAIN = b"starcard-audit-event-v1\n"
_CHECKPOINT_DOMAIN = b"starcard-audit-checkpoint-v1\n"
_CHECKPOINTER_OPTION = "starcard_audit_checkpointer"
"""The engine execution option that carries the engine's :class:`Checkpointer`."""
DEFAULT_CHECKPOINT_EVERY = 1000


class AuditLogError(RuntimeError):
    """The audit log cannot be appended to or checkpointed; the message says what to fix."""


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime. A naive value is UTC: timestamps are stored in UTC
    and SQLite gives ``DateTime(timezone=True)`` back without a zone."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def canonical_time(at: dt.datetime) -> str:
    """UTC with microseconds and ``Z`` (see :func:`as_utc`)."""
    return as_utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical_json(value: object) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


@dataclass(frozen=True)
class AuditEntry:
    """One event's content, as the caller gives it and as the database gives it back."""

    at: dt.datetime
    actor: str
    action: str
    subject_id: str | None = None
    card_serial: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def stored(self) -> AuditEntry:
        """The entry as it will read back: time in UTC, ``detail`` through JSON (tuples
        become lists, keys strings), so that the hash computed now is the one verified."""
        detail = json.loads(json.dumps(dict(self.detail), allow_nan=False))
        return AuditEntry(
            as_utc(self.at), self.actor, self.action, self.subject_id, self.card_serial, detail
        )

    def chained_hash(self, prev_hash: str) -> str:
        """SHA-256 (hex) over the domain tag and the canonical JSON of this entry and
        ``prev_hash`` (``seq`` is not hashed: the order is the chain of ``prev_hash``)."""
        body = {
            "prev_hash": prev_hash,
            "at": canonical_time(self.at),
            "actor": self.actor,
            "action": self.action,
            "subject_id": self.subject_id,
            "card_serial": self.card_serial,
            "detail": self.detail,
        }
        return hashlib.sha256(_EVENT_DOMAIN + _canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class Checkpointer:
    """Signs checkpoints with an HSM key of purpose ``AUDIT_CHECKPOINT_SIGNING``; writes one
    automatically once ``every`` events were appended since the last checkpoint."""

    signer: Signer
    every: int = DEFAULT_CHECKPOINT_EVERY

    @property
    def kid(self) -> str:
        return kid_for(self.signer.public_key()).hex()


def checkpoint_payload(
    seq: int, head_hash: str, event_count: int, at: dt.datetime, kid: str
) -> bytes:
    """The exact bytes a checkpoint signature covers."""
    body = {
        "seq": seq,
        "head_hash": head_hash,
        "event_count": event_count,
        "at": canonical_time(at),
        "kid": kid,
    }
    return _CHECKPOINT_DOMAIN + _canonical_json(body)


def enable_checkpoints(
    engine: Engine, hsm: Hsm, label: str, every: int = DEFAULT_CHECKPOINT_EVERY
) -> Checkpointer:
    """Composition root: creates the audit key ``label`` on first use and makes every append
    on ``engine`` write a checkpoint once ``every`` events were appended since the last one.

    Raises:
        ValueError: ``every`` is below 1.
    """
    if every < 1:
        raise ValueError(f"audit checkpoint interval {every}: use 1 or more events")
    if not hsm.has_key(label):
        hsm.create_key(label, KeyPurpose.AUDIT_CHECKPOINT_SIGNING)
    checkpointer = Checkpointer(hsm.signer(label, KeyPurpose.AUDIT_CHECKPOINT_SIGNING), every)
    engine.update_execution_options(**{_CHECKPOINTER_OPTION: checkpointer})
    return checkpointer


def checkpointer_of(conn: Connection) -> Checkpointer | None:
    """The checkpointer :func:`enable_checkpoints` gave this connection's engine, if any."""
    found = conn.get_execution_options().get(_CHECKPOINTER_OPTION)
    return found if isinstance(found, Checkpointer) else None


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
    append_events(conn, [AuditEntry(now, actor, action, subject_id, card_serial, detail)])


def append_events(conn: Connection, entries: Sequence[AuditEntry]) -> None:
    """Appends ``entries`` in order to the chain, in the caller's transaction (one head
    lock, one multi-row insert); writes a checkpoint when one is due.

    Raises:
        AuditLogError: the chain head is missing (the database was not migrated).
    """
    if not entries:
        return
    head = audit_chain_head.c
    locked = conn.execute(
        update(audit_chain_head)
        .where(head.id == 1)
        .values(seq=head.seq + len(entries))
        .returning(head.seq, head.hash, head.checkpointed_seq)
    ).first()
    if locked is None:
        raise AuditLogError("the audit chain head is missing: run 'starcard-issuer migrate'")
    last_seq, prev_hash = int(locked.seq), str(locked.hash)
    first_seq = last_seq - len(entries) + 1
    rows = []
    for seq, entry in enumerate((e.stored() for e in entries), start=first_seq):
        digest = entry.chained_hash(prev_hash)
        rows.append(
            {
                "at": entry.at,
                "actor": entry.actor,
                "action": entry.action,
                "subject_id": entry.subject_id,
                "card_serial": entry.card_serial,
                "detail": entry.detail,
                "seq": seq,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        prev_hash = digest
    conn.execute(insert(audit_events), rows)
    values: dict[str, object] = {"hash": prev_hash}
    checkpointer = checkpointer_of(conn)
    if checkpointer is not None and last_seq - int(locked.checkpointed_seq) >= checkpointer.every:
        _insert_checkpoint(conn, checkpointer, last_seq, prev_hash, entries[-1].at)
        values["checkpointed_seq"] = last_seq
    conn.execute(update(audit_chain_head).where(head.id == 1).values(**values))


def write_checkpoint(
    conn: Connection, checkpointer: Checkpointer, now: dt.datetime, actor: str
) -> tuple[int, str]:
    """Audits ``audit.checkpoint`` by ``actor`` and signs the head that includes it, in the
    caller's transaction; returns the checkpoint's ``(seq, head hash)``."""
    audit(conn, now, actor, "audit.checkpoint", kid=checkpointer.kid)
    head = conn.execute(
        update(audit_chain_head)
        .where(audit_chain_head.c.id == 1)
        .values(checkpointed_seq=audit_chain_head.c.seq)
        .returning(audit_chain_head.c.seq, audit_chain_head.c.hash)
    ).one()
    _insert_checkpoint(conn, checkpointer, int(head.seq), str(head.hash), now)
    return int(head.seq), str(head.hash)


def _insert_checkpoint(
    conn: Connection, checkpointer: Checkpointer, seq: int, head_hash: str, at: dt.datetime
) -> None:
    at_utc = as_utc(at)
    kid = checkpointer.kid
    signature = checkpointer.signer.sign(checkpoint_payload(seq, head_hash, seq, at_utc, kid))
    conn.execute(
        insert(audit_checkpoints).values(
            seq=seq, head_hash=head_hash, event_count=seq, at=at_utc, kid=kid, signature=signature
        )
    )


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: its place in the chain and its content."""

    seq: int
    hash: str
    entry: AuditEntry

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": canonical_time(self.entry.at),
            "actor": self.entry.actor,
            "action": self.entry.action,
            "subject_id": self.entry.subject_id,
            "card_serial": self.entry.card_serial,
            "detail": dict(self.entry.detail),
            "hash": self.hash,
        }


@dataclass(frozen=True)
class EventFilter:
    """Which events :func:`list_events` returns (all given conditions hold)."""

    actor: str | None = None
    action: str | None = None
    subject_id: str | None = None
    card_serial: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def list_events(
    conn: Connection, where: EventFilter, *, after_seq: int = 0, limit: int = 100
) -> list[StoredEvent]:
    """Up to ``limit`` events matching ``where`` with ``seq > after_seq``, in chain order
    (page on with the last ``seq`` returned)."""
    c = audit_events.c
    query = select(audit_events).where(c.seq > after_seq).order_by(c.seq).limit(limit)
    for column, value in (
        (c.actor, where.actor),
        (c.action, where.action),
        (c.subject_id, where.subject_id),
        (c.card_serial, where.card_serial),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(c.at >= as_utc(where.since))
    if where.until is not None:
        query = query.where(c.at < as_utc(where.until))
    return [
        StoredEvent(
            int(r.seq),
            str(r.hash),
            AuditEntry(r.at, r.actor, r.action, r.subject_id, r.card_serial, r.detail).stored(),
        )
        for r in conn.execute(query)
    ]
