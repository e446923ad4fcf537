"""Credit platform: organisations and consent withdrawal on subjects; departments with
hashed delivery tokens; record history (corrections, withdrawals); query log.

Revision ID: 0005_platform
Revises: 0003_record_effect
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_platform"
down_revision = "0003_record_effect"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "subjects",
        sa.Column("kind", sa.String(16), nullable=False, server_default=sa.text("'individual'")),
    )
    op.add_column("subjects", sa.Column("uscc_override_reason", sa.Text))
    op.add_column("subjects", sa.Column("consent_withdrawn_channel", sa.String(32)))
    op.create_table(
        "departments",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("token_rotated_at", _TS),
        sa.Column("disabled_at", _TS),
    )
    op.create_table(
        "record_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("old_values", sa.JSON, nullable=False),
    )
    op.create_index("ix_record_history_record_id", "record_history", ["record_id"])
    op.create_table(
        "query_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(32), nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("fields", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
    )
    op.create_index("ix_query_log_at", "query_log", ["at"])
    op.create_index("ix_query_log_subject_at", "query_log", ["subject_id", "at"])


def downgrade() -> None:
    op.drop_table("query_log")
    op.drop_table("record_history")
    op.drop_table("departments")
    with op.batch_alter_table("subjects") as batch:
        batch.drop_column("consent_withdrawn_channel")
        batch.drop_column("uscc_override_reason")
        batch.drop_column("kind")
