"""The verifier's shared state in SQL: registered terminals, used challenge nonces, receipts.

SQLAlchemy Core on SQLite (default) or PostgreSQL. Every verifier instance behind the load
balancer points at the same database, so that a challenge nonce is used once across all of
them (insert-or-fail on the nonce's primary key; expired nonces are pruned on the way) and a
terminal revoked on one instance is refused by all. Tables are created with
``metadata.create_all`` when the store connects (no migrations for the verifier yet: a schema
change means a new table or a manual migration, see ``docs/verifier.md``).

Receipts are idempotent by id: an offline terminal uploads a receipt with the uuid it made
when the tap happened, and uploading it again changes nothing. A receipt id belongs to one
terminal; :class:`ReceiptConflict` if another terminal claims it.

Receipts are kept at least :data:`RECEIPT_RETENTION_YEARS` years (like the issuer's query log,
they record who looked at a citizen's card); :meth:`VerifierStore.purge_receipts` refuses a
younger cut-off.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

__all__ = [
    "RECEIPT_RETENTION_YEARS",
    "CardCheck",
    "Receipt",
    "ReceiptConflict",
    "RetentionError",
    "Terminal",
    "TerminalExists",
    "VerifierStore",
    "metadata",
]

metadata = sa.MetaData()

RECEIPT_RETENTION_YEARS = 5
"""Default minimum age of a receipt before it may be purged (as the issuer's query log)."""

terminals = sa.Table(
    "verifier_terminals",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("merchant_name", sa.String(200), nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("registered_by", sa.String(128), nullable=False),
    sa.Column("registered_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Column("revoked_by", sa.String(128), nullable=True),
)

used_nonces = sa.Table(
    "verifier_used_nonces",
    metadata,
    sa.Column("nonce", sa.LargeBinary(32), primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
)

receipts = sa.Table(
    "verifier_receipts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("terminal_id", sa.String(64), sa.ForeignKey("verifier_terminals.id"), nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("serial", sa.String(64), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason_class", sa.String(32), nullable=True),
    sa.Column("offline", sa.Boolean, nullable=False),
    sa.Index("ix_verifier_receipts_terminal_at", "terminal_id", "at"),
    sa.Index("ix_verifier_receipts_serial_at", "serial", "at"),
)


class TerminalExists(Exception):
    """A terminal with this id is already registered (revoked ones included: ids are never
    reused, so old receipts keep pointing at the right merchant)."""


class ReceiptConflict(Exception):
    """A receipt id that another terminal already used."""


class RetentionError(ValueError):
    """A purge cut-off that would delete receipts younger than the retention period."""


def retention_cutoff(now: int, years: int) -> int:
    """The unix time ``years`` calendar years before ``now`` (UTC; 29 February → 28th)."""
    at = dt.datetime.fromtimestamp(now, dt.UTC)
    try:
        return int(at.replace(year=at.year - years).timestamp())
    except ValueError:
        return int(at.replace(year=at.year - years, day=28).timestamp())


@dataclass(frozen=True)
class Terminal:
    id: str
    merchant_name: str
    category: str
    public_key: str
    """SubjectPublicKeyInfo PEM, Ed25519 or P-256."""
    registered_by: str
    registered_at: int
    revoked_at: int | None = None
    revoked_by: str | None = None


@dataclass(frozen=True)
class Receipt:
    """One verification, kept for the holder's "who checked my card" and the audit.

    ``reason_class`` is the detailed class (``revoked``, ``suspended``...), never shown to
    terminals. ``serial`` is the card serial (hex) when the credential's signature verified.
    """

    id: str
    terminal_id: str
    category: str
    at: int
    serial: str | None
    state: Literal["valid", "invalid", "unknown"]
    reason_class: str | None
    offline: bool = False


@dataclass(frozen=True)
class CardCheck:
    """One line of a card's "who checked my card" view: no terminal keys, no reasons."""

    at: int
    merchant_name: str
    category: str
    state: str


class VerifierStore:
    """Terminals, nonces and receipts over one SQLAlchemy engine."""

    def __init__(self, engine: Engine, *, retention_years: int = RECEIPT_RETENTION_YEARS) -> None:
        if retention_years < RECEIPT_RETENTION_YEARS:
            raise ValueError(
                f"receipts are kept at least {RECEIPT_RETENTION_YEARS} years; "
                f"set retention_years to {RECEIPT_RETENTION_YEARS} or more"
            )
        self.engine = engine
        self.retention_years = retention_years
        metadata.create_all(engine)

    @classmethod
    def connect(cls, url: str, *, retention_years: int = RECEIPT_RETENTION_YEARS) -> VerifierStore:
        """Opens ``url`` (``sqlite://`` is one in-memory database shared by the threads of
        this process) and creates the tables if they are missing."""
        if url in ("sqlite://", "sqlite:///:memory:"):
            engine = sa.create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
        return cls(engine, retention_years=retention_years)

    # -- terminals ----------------------------------------------------------------------

    def register_terminal(self, terminal: Terminal) -> None:
        """Raises :class:`TerminalExists` if the id is taken."""
        try:
            with self.engine.begin() as conn:
                conn.execute(terminals.insert().values(**asdict(terminal)))
        except IntegrityError:
            raise TerminalExists(f"terminal {terminal.id!r} is already registered") from None

    def revoke_terminal(self, terminal_id: str, now: int, by: str) -> Terminal | None:
        """Revokes the terminal (a second revocation keeps the first date); ``None`` if no
        such terminal."""
        with self.engine.begin() as conn:
            conn.execute(
                terminals.update()
                .where(terminals.c.id == terminal_id, terminals.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_by=by)
            )
        return self.terminal(terminal_id)

    def terminal(self, terminal_id: str) -> Terminal | None:
        with self.engine.connect() as conn:
            row = conn.execute(terminals.select().where(terminals.c.id == terminal_id)).first()
        return None if row is None else Terminal(**row._mapping)

    def terminals(self) -> list[Terminal]:
        with self.engine.connect() as conn:
            rows = conn.execute(terminals.select().order_by(terminals.c.id)).all()
        return [Terminal(**row._mapping) for row in rows]

    # -- nonces -------------------------------------------------------------------------

    def use_nonce(self, nonce: bytes, expires_at: int, now: int) -> bool:
        """Marks a challenge nonce used; ``False`` if it was used before (a replay).

        Nonces that expired before ``now`` are pruned first: their challenges fail the
        freshness check anyway.
        """
        with self.engine.begin() as conn:
            conn.execute(used_nonces.delete().where(used_nonces.c.expires_at < now))
        try:
            with self.engine.begin() as conn:
                conn.execute(used_nonces.insert().values(nonce=nonce, expires_at=expires_at))
        except IntegrityError:
            return False
        return True

    # -- receipts -----------------------------------------------------------------------

    def add_receipt(self, receipt: Receipt) -> bool:
        """Stores ``receipt``; ``False`` if the same terminal stored this id before
        (idempotent upload). Raises :class:`ReceiptConflict` if another terminal did."""
        return self.add_receipts([receipt]) == 1

    def add_receipts(self, batch: list[Receipt]) -> int:
        """Stores a batch in one transaction; returns how many were new. Raises
        :class:`ReceiptConflict` (storing nothing) if an id belongs to another terminal."""
        ids = [r.id for r in batch]
        if len(set(ids)) != len(ids):
            raise ReceiptConflict("the batch repeats a receipt id")
        for attempt in (1, 2):  # a concurrent upload of the same id on another instance
            try:
                return self._insert_receipts(batch, ids)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _insert_receipts(self, batch: list[Receipt], ids: list[str]) -> int:
        with self.engine.begin() as conn:
            held = dict(
                conn.execute(
                    sa.select(receipts.c.id, receipts.c.terminal_id).where(receipts.c.id.in_(ids))
                ).all()
            )
            for r in batch:
                if r.id in held and held[r.id] != r.terminal_id:
                    raise ReceiptConflict(f"receipt {r.id} belongs to another terminal")
            new = [asdict(r) for r in batch if r.id not in held]
            if new:
                conn.execute(receipts.insert(), new)
        return len(new)

    def receipts_of_terminal(self, terminal_id: str, limit: int = 100) -> list[Receipt]:
        """The terminal's own receipts, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                receipts.select()
                .where(receipts.c.terminal_id == terminal_id)
                .order_by(receipts.c.at.desc(), receipts.c.id)
                .limit(limit)
            ).all()
        return [Receipt(**row._mapping) for row in rows]

    def checks_of_card(self, serial: str, limit: int = 200) -> list[CardCheck]:
        """Who checked the card ``serial``, newest first (for the holder's page)."""
        query = (
            sa.select(receipts.c.at, terminals.c.merchant_name, receipts.c.category,
                      receipts.c.state)
            .join(terminals, terminals.c.id == receipts.c.terminal_id)
            .where(receipts.c.serial == serial)
            .order_by(receipts.c.at.desc(), receipts.c.id)
            .limit(limit)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return [CardCheck(*row) for row in conn.execute(query).all()]

    def purge_receipts(self, before: int, now: int) -> int:
        """Deletes the receipts dated before ``before`` (unix time); returns how many.

        Raises :class:`RetentionError` if ``before`` is later than ``retention_years``
        calendar years before ``now`` (receipts younger than that must be kept).
        """
        cutoff = retention_cutoff(now, self.retention_years)
        if before > cutoff:
            day = dt.datetime.fromtimestamp(cutoff, dt.UTC).date().isoformat()
            raise RetentionError(
                f"receipts are kept {self.retention_years} years: purge before {day} "
                f"(unix {cutoff}) or earlier"
            )
        with self.engine.begin() as conn:
            result = conn.execute(receipts.delete().where(receipts.c.at < before))
        return int(result.rowcount)
