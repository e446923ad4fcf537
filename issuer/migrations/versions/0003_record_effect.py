"""Records: repair and archive marks (repair stops a record's effect; it is never deleted).

Revision ID: 0003_record_effect
Revises: 0002_card_credential_version
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_record_effect"
down_revision = "0002_card_credential_version"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("records", sa.Column("repaired_at", sa.DateTime(timezone=True)))
    op.add_column("records", sa.Column("archived_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_column("archived_at")
        batch.drop_column("repaired_at")
