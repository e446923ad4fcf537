"""Card lifecycle: one live (active or suspended) card per subject, re-issues due, suspensions.

Revision ID: 0009_card_lifecycle
Revises: 0006_rights
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_card_lifecycle"
down_revision = "0006_rights"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _partial_unique(name: str, table: str, column: str, where: str) -> None:
    op.create_index(
        name,
        table,
        [column],
        unique=True,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    _partial_unique(
        "uq_cards_one_live_per_subject", "cards", "subject_id", "state IN ('active', 'suspended')"
    )
    op.create_table(
        "reissue_due",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("stars", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(16), sa.ForeignKey("cards.serial")),
        sa.Column("event_id", sa.Integer, sa.ForeignKey("card_status_events.id")),
        sa.Column("since", _TS, nullable=False),
        sa.Column("resolved_at", _TS),
        sa.Column("resolution", sa.String(32)),
    )
    op.create_index("ix_reissue_due_subject_id", "reissue_due", ["subject_id"])
    _partial_unique("uq_reissue_due_one_open", "reissue_due", "subject_id", "resolved_at IS NULL")
    op.create_table(
        "card_suspensions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("serial", sa.String(16), sa.ForeignKey("cards.serial"), nullable=False),
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("event_id", sa.Integer, sa.ForeignKey("card_status_events.id"), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("suspended_at", _TS, nullable=False),
        sa.Column("lifted_at", _TS),
        sa.Column("lifted_by_event_id", sa.Integer, sa.ForeignKey("card_status_events.id")),
    )
    op.create_index("ix_card_suspensions_serial", "card_suspensions", ["serial"])
    _partial_unique(
        "uq_card_suspensions_one_open", "card_suspensions", "serial", "lifted_at IS NULL"
    )


def downgrade() -> None:
    op.drop_table("card_suspensions")
    op.drop_table("reissue_due")
    op.drop_index("uq_cards_one_live_per_subject", table_name="cards")
