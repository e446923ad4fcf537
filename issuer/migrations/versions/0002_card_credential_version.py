"""Cards: credential version (anti-rollback) and the secure-channel key version.

Revision ID: 0002_card_credential_version
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_card_credential_version"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "cards",
        sa.Column("credential_version", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.add_column("cards", sa.Column("card_key_version", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("cards") as batch:
        batch.drop_column("card_key_version")
        batch.drop_column("credential_version")
