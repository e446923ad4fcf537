"""Verification of the audit log's hash chain and its HSM-signed checkpoints.

:func:`verify_chain` walks the events in ``seq`` order (streamed, constant memory) and
raises :class:`AuditChainBroken` at the first broken link, naming its kind:

1. ``modified``: an event's content no longer gives its stored hash; or the chain up to a
   checkpoint was rewritten (its hash at the checkpoint differs from the signed one); or the
   chain head disagrees with the last event;
2. ``deleted``: a ``seq`` is missing, or an event links to an event that is not in the log;
3. ``reordered``: an event links to an event that comes later in ``seq`` order;
4. ``inserted``: an event links past the event before it (events in between are not part
   of the chain), or events exist beyond the chain head;
5. ``truncated``: the log ends before the chain head or before a signed checkpoint;
6. ``checkpoint``: a checkpoint is signed by an unknown key or its signature does not verify.

Events after the last checkpoint are protected by the chain head only: whoever can write the
database can rewrite them together with the head (``docs/audit.md``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from sqlalchemy import Connection, Row, func, select

from hsm_sim import Hsm, KeyPurpose
from issuer.audit import GENESIS, AuditEntry, checkpoint_payload
from issuer.db import audit_events
from issuer.db_staff import audit_chain_head, audit_checkpoints
from verifier.core.errors import VerificationError
from verifier.core.keys import kid_for, verify_es256

_BATCH = 1000


class BreakKind(enum.StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    REORDERED = "reordered"
    INSERTED = "inserted"
    TRUNCATED = "truncated"
    CHECKPOINT = "checkpoint"


class AuditChainBroken(Exception):
    """The audit log fails verification at ``seq``; ``kind`` says how, the message where."""

    def __init__(self, kind: BreakKind, seq: int, detail: str) -> None:
        super().__init__(f"audit log broken at seq {seq}: {kind}: {detail}")
        self.kind = kind
        self.seq = seq
        self.detail = detail


@dataclass(frozen=True)
class ChainReport:
    """A log that verified: its events, head and checkpoints."""

    events: int
    head_seq: int
    head_hash: str
    checkpoints: int
    last_checkpoint_seq: int | None


def audit_keys(hsm: Hsm) -> dict[str, EllipticCurvePublicKey]:
    """Every audit-checkpoint public key in ``hsm`` (retired ones too) by hex ``kid``."""
    found: dict[str, EllipticCurvePublicKey] = {}
    for label in hsm.labels():
        if hsm.purpose_of(label) is KeyPurpose.AUDIT_CHECKPOINT_SIGNING:
            public_key = hsm.public_key(label)
            found[kid_for(public_key).hex()] = public_key
    return found


def verify_chain(conn: Connection, keys: Mapping[str, EllipticCurvePublicKey]) -> ChainReport:
    """Verifies every event link up to the chain head, the head, and every checkpoint
    (signed by one of ``keys``, by hex kid). Returns what was verified.

    Needs no snapshot: events up to the head read first are complete (an append updates the
    head in its own transaction); what is appended meanwhile is left for the next run, and
    rows past the head read again at the end are insertions.

    Raises:
        AuditChainBroken: at the first broken link (see the module docstring for kinds).
    """
    head_seq, head_hash = _head(conn)
    checkpoints = list(
        conn.execute(
            select(audit_checkpoints)
            .where(audit_checkpoints.c.seq <= head_seq)
            .order_by(audit_checkpoints.c.seq)
        )
    )
    pending = iter(checkpoints)
    checkpoint = next(pending, None)
    prev_seq, prev_hash = 0, GENESIS
    broken_link: tuple[int, str] | None = None
    rows = conn.execution_options(yield_per=_BATCH).execute(
        select(audit_events).where(audit_events.c.seq <= head_seq).order_by(audit_events.c.seq)
    )
    with rows:
        for row in rows:
            seq = int(row.seq)
            entry = AuditEntry(
                row.at, row.actor, row.action, row.subject_id, row.card_serial, row.detail
            )
            if entry.stored().chained_hash(row.prev_hash) != row.hash:
                raise AuditChainBroken(
                    BreakKind.MODIFIED, seq, "the event's content does not give its stored hash"
                )
            if seq != prev_seq + 1:
                gap = f"{prev_seq + 1}" if seq == prev_seq + 2 else f"{prev_seq + 1}..{seq - 1}"
                raise AuditChainBroken(BreakKind.DELETED, prev_seq + 1, f"events {gap} are missing")
            if row.prev_hash != prev_hash:
                broken_link = (seq, str(row.prev_hash))
                break
            while checkpoint is not None and int(checkpoint.seq) == seq:
                _check_checkpoint(checkpoint, str(row.hash), keys)
                checkpoint = next(pending, None)
            prev_seq, prev_hash = seq, str(row.hash)
    if broken_link is not None:
        raise _classify_link(conn, *broken_link, prev_hash)
    if prev_seq < head_seq:
        signed = "" if checkpoint is None else f" (checkpoint {checkpoint.seq} signed more)"
        raise AuditChainBroken(
            BreakKind.TRUNCATED,
            prev_seq + 1,
            f"the log ends at seq {prev_seq}, the chain head is at seq {head_seq}{signed}",
        )
    if prev_hash != head_hash:
        raise AuditChainBroken(
            BreakKind.MODIFIED, head_seq, "the chain head's hash differs from the last event's"
        )
    _check_nothing_past_head(conn)
    last = int(checkpoints[-1].seq) if checkpoints else None
    return ChainReport(prev_seq, head_seq, head_hash, len(checkpoints), last)


def _head(conn: Connection) -> tuple[int, str]:
    head = conn.execute(select(audit_chain_head).where(audit_chain_head.c.id == 1)).first()
    if head is None:
        raise AuditChainBroken(BreakKind.TRUNCATED, 0, "the chain head row is missing")
    return int(head.seq), str(head.hash)


def _check_nothing_past_head(conn: Connection) -> None:
    """Events or checkpoints past the head (read again now) were not appended by the chain."""
    head_seq, _ = _head(conn)
    last_event = conn.execute(select(func.max(audit_events.c.seq))).scalar()
    if last_event is not None and int(last_event) > head_seq:
        raise AuditChainBroken(
            BreakKind.INSERTED,
            head_seq + 1,
            f"events {head_seq + 1}..{last_event} come after the chain head (seq {head_seq})",
        )
    last_checkpoint = conn.execute(select(func.max(audit_checkpoints.c.seq))).scalar()
    if last_checkpoint is not None and int(last_checkpoint) > head_seq:
        raise AuditChainBroken(
            BreakKind.TRUNCATED,
            head_seq + 1,
            f"checkpoint {last_checkpoint} signed events past the chain head (seq {head_seq})",
        )


def _check_checkpoint(
    checkpoint: Row[Any], event_hash: str, keys: Mapping[str, EllipticCurvePublicKey]
) -> None:
    seq, kid, head_hash = int(checkpoint.seq), str(checkpoint.kid), str(checkpoint.head_hash)
    public_key = keys.get(kid)
    if public_key is None:
        raise AuditChainBroken(
            BreakKind.CHECKPOINT, seq, f"checkpoint signed by unknown audit key kid {kid}"
        )
    count = int(checkpoint.event_count)
    payload = checkpoint_payload(seq, head_hash, count, checkpoint.at, kid)
    try:
        verify_es256(public_key, bytes(checkpoint.signature), payload)
    except VerificationError:
        raise AuditChainBroken(
            BreakKind.CHECKPOINT, seq, "the checkpoint's signature does not verify"
        ) from None
    if count != seq:
        raise AuditChainBroken(BreakKind.CHECKPOINT, seq, f"checkpoint {seq} counts {count} events")
    if head_hash != event_hash:
        raise AuditChainBroken(
            BreakKind.MODIFIED,
            seq,
            f"the events up to seq {seq} were rewritten after checkpoint {seq} was signed",
        )


def _classify_link(conn: Connection, seq: int, links_to: str, expected: str) -> AuditChainBroken:
    """Event ``seq`` links to ``links_to`` instead of ``expected`` (the previous event's hash):
    which kind of break is it?"""
    target = conn.execute(
        select(func.min(audit_events.c.seq)).where(audit_events.c.hash == links_to)
    ).scalar()
    if target is not None and int(target) > seq:
        return AuditChainBroken(
            BreakKind.REORDERED, seq, f"event {seq} belongs after event {target} in the chain"
        )
    if target is not None:
        first = int(target) + 1
        return AuditChainBroken(
            BreakKind.INSERTED,
            first,
            f"events {first}..{seq - 1} are not part of the chain (event {seq} links to {target})",
        )
    resumed = conn.execute(
        select(func.min(audit_events.c.seq)).where(
            audit_events.c.prev_hash == expected, audit_events.c.seq > seq
        )
    ).scalar()
    if resumed is not None:
        return AuditChainBroken(
            BreakKind.INSERTED,
            seq,
            f"events {seq}..{int(resumed) - 1} are not part of the chain",
        )
    return AuditChainBroken(
        BreakKind.DELETED,
        seq,
        f"event {seq} links to an event that is not in the log (deleted, or replaced by an "
        "edited copy)",
    )
