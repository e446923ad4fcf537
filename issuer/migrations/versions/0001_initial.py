"""Initial schema: subjects, records, grades, cards, status lists, audit events.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subjects",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("id_number_enc", sa.LargeBinary, nullable=False),
        sa.Column("id_number_index", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("id_number_masked", sa.String(18), nullable=False),
        sa.Column("name_enc", sa.LargeBinary, nullable=False),
        sa.Column("birth_date", sa.Date, nullable=False),
        sa.Column("consent_given_at", _TS),
        sa.Column("consent_channel", sa.String(32)),
        sa.Column("consent_withdrawn_at", _TS),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(1), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("legal_basis", sa.Text, nullable=False),
        sa.Column("authority", sa.Text, nullable=False),
        sa.Column("document_number", sa.String(128), nullable=False),
        sa.Column("decision_date", sa.Date, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("objection_open", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("withdrawn_at", _TS),
        sa.UniqueConstraint("source", "document_number", name="uq_records_source_document"),
    )
    op.create_index("ix_records_subject_id", "records", ["subject_id"])
    op.create_table(
        "grades",
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), primary_key=True),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("policy_hash", sa.String(64), nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("grade_class", sa.String(1), nullable=False),
        sa.Column("stars", sa.Integer, nullable=False),
        sa.Column("explanation", sa.JSON, nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("graded_at", _TS, nullable=False),
    )
    op.create_table(
        "cards",
        sa.Column("serial", sa.String(16), primary_key=True),
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("status_list_id", sa.Integer, nullable=False),
        sa.Column("status_idx", sa.Integer, nullable=False),
        sa.Column("card_public_key", sa.LargeBinary),
        sa.Column("credential", sa.LargeBinary),
        sa.Column("stars", sa.Integer, nullable=False),
        sa.Column("qr_token_hash", sa.LargeBinary(32)),
        sa.Column("access_code_hash", sa.Text),
        sa.Column("expires_at", _TS),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("revoked_reason", sa.String(32)),
        sa.UniqueConstraint("status_list_id", "status_idx", name="uq_cards_status_entry"),
    )
    op.create_index("ix_cards_subject_id", "cards", ["subject_id"])
    op.create_index(
        "uq_cards_one_active_per_subject",
        "cards",
        ["subject_id"],
        unique=True,
        sqlite_where=sa.text("state = 'active'"),
        postgresql_where=sa.text("state = 'active'"),
    )
    op.create_table(
        "status_lists",
        sa.Column("list_id", sa.Integer, primary_key=True),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("token", sa.LargeBinary, nullable=False),
        sa.Column("issued_at", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(32)),
        sa.Column("card_serial", sa.String(16)),
        sa.Column("detail", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("audit_events", "status_lists", "cards", "grades", "records", "subjects"):
        op.drop_table(table)
