"""Grading: policy documents and their points by hash, and the log of grading runs.

Revision ID: 0004_grading
Revises: 0003_record_effect
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_grading"
down_revision = "0003_record_effect"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "policy_documents",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("effective_from", sa.Date, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("registered_at", _TS, nullable=False),
    )
    op.create_table(
        "policy_points",
        sa.Column(
            "policy_hash",
            sa.String(64),
            sa.ForeignKey("policy_documents.sha256"),
            primary_key=True,
        ),
        sa.Column("category", sa.String(64), primary_key=True),
        sa.Column("direction", sa.String(1), primary_key=True),
        sa.Column("severity", sa.String(16), primary_key=True),
        sa.Column("points", sa.Integer, nullable=False),
    )
    op.create_table(
        "grade_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column(
            "policy_hash",
            sa.String(64),
            sa.ForeignKey("policy_documents.sha256"),
            nullable=False,
        ),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("graded_at", _TS, nullable=False),
        sa.Column("subjects", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("grade_runs")
    op.drop_table("policy_points")
    op.drop_table("policy_documents")
