"""Staff accounts and sessions; the audit log as a hash chain with signed checkpoints.

Existing audit events are chained in id order (the order they were written).

Revision ID: 0008_staff_audit
Revises: 0006_rights
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from issuer.audit import GENESIS, AuditEntry

revision = "0008_staff_audit"
down_revision = "0006_rights"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "staff_accounts",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("password_changed_at", _TS, nullable=False),
        sa.Column("disabled_at", _TS),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("locked_until", _TS),
        sa.CheckConstraint(
            "role IN ('operator', 'supervisor', 'auditor')", name="ck_staff_accounts_role"
        ),
    )
    op.create_table(
        "staff_sessions",
        sa.Column("token_hash", sa.LargeBinary(32), primary_key=True),
        sa.Column(
            "staff_name", sa.String(64), sa.ForeignKey("staff_accounts.name"), nullable=False
        ),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("ended_at", _TS),
    )
    op.create_index("ix_staff_sessions_staff_name", "staff_sessions", ["staff_name"])
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("checkpointed_seq", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_chain_head_single_row"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("kid", sa.String(16), nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
    )
    op.add_column("audit_events", sa.Column("seq", sa.BigInteger))
    op.add_column("audit_events", sa.Column("prev_hash", sa.String(64)))
    op.add_column("audit_events", sa.Column("hash", sa.String(64)))
    seq, head = _chain_existing_events()
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger, nullable=False)
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("hash", existing_type=sa.String(64), nullable=False)
    op.create_index("uq_audit_events_seq", "audit_events", ["seq"], unique=True)
    head_table = sa.table(
        "audit_chain_head",
        sa.column("id", sa.Integer),
        sa.column("seq", sa.BigInteger),
        sa.column("hash", sa.String),
        sa.column("checkpointed_seq", sa.BigInteger),
    )
    op.bulk_insert(head_table, [{"id": 1, "seq": seq, "hash": head, "checkpointed_seq": 0}])


def _chain_existing_events() -> tuple[int, str]:
    """Chains the events written before this migration in id order; returns the head."""
    events = sa.table(
        "audit_events",
        sa.column("id", sa.Integer),
        sa.column("at", _TS),
        sa.column("actor", sa.String),
        sa.column("action", sa.String),
        sa.column("subject_id", sa.String),
        sa.column("card_serial", sa.String),
        sa.column("detail", sa.JSON),
        sa.column("seq", sa.BigInteger),
        sa.column("prev_hash", sa.String),
        sa.column("hash", sa.String),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(events).order_by(events.c.id)).all()
    prev, seq = GENESIS, 0
    for seq, row in enumerate(rows, start=1):
        entry = AuditEntry(
            row.at, row.actor, row.action, row.subject_id, row.card_serial, row.detail
        ).stored()
        digest = entry.chained_hash(prev)
        conn.execute(
            sa.update(events)
            .where(events.c.id == row.id)
            .values(seq=seq, prev_hash=prev, hash=digest)
        )
        prev = digest
    return seq, prev


def downgrade() -> None:
    op.drop_index("uq_audit_events_seq", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("seq")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_chain_head")
    op.drop_index("ix_staff_sessions_staff_name", table_name="staff_sessions")
    op.drop_table("staff_sessions")
    op.drop_table("staff_accounts")
