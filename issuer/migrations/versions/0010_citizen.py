"""Citizen pages: wrong access-code attempts per card (lockout).

Revision ID: 0010_citizen
Revises: 0006_rights
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_citizen"
down_revision = "0006_rights"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "citizen_code_attempts",
        sa.Column("serial", sa.String(16), sa.ForeignKey("cards.serial"), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("locked_until", _TS),
        sa.Column("updated_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("citizen_code_attempts")
