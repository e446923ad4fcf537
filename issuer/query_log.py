"""Query log: every read of a subject's personal data — who, whom, when, why, what.

PIPL and the local credit laws require a record of who queried whom, when and under what
authorisation, kept for at least five years (深圳经济特区社会信用条例 Art. 45; 征信业管理条例
Art. 22). Every code path that decrypts or shows a subject's personal data (identity number,
name, birth date, consent, records, grade) calls :func:`log_read` in the same transaction as
the read, so a read that cannot be logged does not happen (the transaction fails).

The log never holds the data that was read: only the subject's pseudonymous id and the names
of the fields.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select

from issuer.db import stored_utc
from issuer.db_platform import query_log

MIN_RETENTION_YEARS = 5
"""Legal minimum (深圳 Art. 45; 征信业管理条例 Art. 22). Longer retention is policy."""


class QueryLogError(ValueError):
    """A read without a stated purpose, or a purge that would cut the legal retention."""


@dataclass(frozen=True)
class QueryLogEntry:
    at: dt.datetime
    actor: str
    subject_id: str
    purpose: str
    fields: tuple[str, ...]
    channel: str


def log_read(
    conn: Connection,
    now: dt.datetime,
    actor: str,
    subject_id: str,
    purpose: str,
    fields: Sequence[str],
    channel: str,
) -> None:
    """Appends one entry in the caller's transaction (it commits or rolls back with the read).

    Raises:
        QueryLogError: an empty purpose or no fields (a read must say why and what).
    """
    if not purpose.strip():
        raise QueryLogError("state the purpose of reading this person's data")
    if not fields:
        raise QueryLogError("name the fields that are read")
    conn.execute(
        insert(query_log).values(
            at=now,
            actor=actor,
            subject_id=subject_id,
            purpose=purpose.strip(),
            fields=",".join(fields),
            channel=channel,
        )
    )


def reads_of(conn: Connection, subject_id: str) -> list[QueryLogEntry]:
    """Every logged read of ``subject_id``'s data, oldest first (for the subject's report)."""
    rows = conn.execute(
        select(query_log)
        .where(query_log.c.subject_id == subject_id)
        .order_by(query_log.c.at, query_log.c.id)
    )
    return [
        QueryLogEntry(
            at=stored_utc(row.at),
            actor=row.actor,
            subject_id=row.subject_id,
            purpose=row.purpose,
            fields=tuple(row.fields.split(",")),
            channel=row.channel,
        )
        for row in rows
    ]


def retention_cutoff(now: dt.datetime, years: int = MIN_RETENTION_YEARS) -> dt.datetime:
    """The instant ``years`` calendar years before ``now`` (29 February → 28 February)."""
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)


def purge_query_log(conn: Connection, before: dt.datetime, now: dt.datetime) -> int:
    """Deletes entries older than ``before``; returns how many.

    Raises:
        QueryLogError: ``before`` is later than :data:`MIN_RETENTION_YEARS` years before
            ``now``, which would delete entries the law requires to be kept.
    """
    if before > retention_cutoff(now):
        raise QueryLogError(
            f"query log entries are kept at least {MIN_RETENTION_YEARS} years: purge before "
            f"{retention_cutoff(now).date().isoformat()} or earlier"
        )
    count = conn.execute(
        select(func.count()).select_from(query_log).where(query_log.c.at < before)
    ).scalar_one()
    conn.execute(delete(query_log).where(query_log.c.at < before))
    return int(count)
