"""Rights and lists: card status outbox, objections, repair, red/black lists, human review.

Revision ID: 0006_rights
Revises: 0003_record_effect
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_rights"
down_revision = "0003_record_effect"
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
    op.create_table(
        "card_status_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("stars", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("ref", sa.String(64)),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("consumed_at", _TS),
        sa.CheckConstraint(
            "kind IN ('suspend', 'restore', 'revoke', 'reissue')",
            name="ck_card_status_events_kind",
        ),
    )
    op.create_index("ix_card_status_events_subject_id", "card_status_events", ["subject_id"])
    op.create_index("ix_card_status_events_pending", "card_status_events", ["consumed_at", "id"])
    op.create_table(
        "card_entitlements",
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stars", sa.Integer, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint(
            "state IN ('none', 'active', 'suspended')", name="ck_card_entitlements_state"
        ),
    )
    op.create_table(
        "objections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id")),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("filed_by", sa.String(16), nullable=False),
        sa.Column("grounds", sa.Text, nullable=False),
        sa.Column("filed_at", _TS, nullable=False),
        sa.Column("filed_on", sa.Date, nullable=False),
        sa.Column("filed_by_actor", sa.String(64), nullable=False),
        sa.Column("due_on", sa.Date, nullable=False),
        sa.Column("escalate_on", sa.Date, nullable=False),
        sa.Column("deadline_missed_on", sa.Date),
        sa.Column("extended", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("escalation_level", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32)),
        sa.Column("decision_note", sa.Text),
        sa.Column("decided_at", _TS),
        sa.Column("decided_by", sa.String(64)),
        sa.CheckConstraint("target IN ('record', 'evaluation')", name="ck_objections_target"),
        sa.CheckConstraint(
            "(target = 'record') = (record_id IS NOT NULL)", name="ck_objections_record_target"
        ),
        sa.CheckConstraint("status IN ('open', 'closed')", name="ck_objections_status"),
    )
    op.create_index("ix_objections_subject_id", "objections", ["subject_id"])
    op.create_index("ix_objections_status_due", "objections", ["status", "due_on"])
    _partial_unique(
        "uq_objections_one_open_per_record", "objections", "record_id", "status = 'open'"
    )
    _partial_unique(
        "uq_objections_one_open_evaluation",
        "objections",
        "subject_id",
        "status = 'open' AND target = 'evaluation'",
    )
    op.create_table(
        "objection_escalations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("objection_id", sa.Integer, sa.ForeignKey("objections.id"), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("missed_due_on", sa.Date, nullable=False),
        sa.Column("escalated_to", sa.String(128), nullable=False),
        sa.Column("new_due_on", sa.Date, nullable=False),
        sa.Column("escalated_at", _TS, nullable=False),
        sa.UniqueConstraint("objection_id", "level", name="uq_objection_escalations_level"),
    )
    op.create_table(
        "repair_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), nullable=False),
        sa.Column("obligations_performed", sa.Boolean, nullable=False),
        sa.Column("obligations_evidence", sa.Text, nullable=False),
        sa.Column("commitment", sa.Text, nullable=False),
        sa.Column("requested_at", _TS, nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_at", _TS),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decision_reason", sa.Text),
        sa.CheckConstraint(
            "status IN ('pending', 'granted', 'refused', 'moot')",
            name="ck_repair_requests_status",
        ),
    )
    op.create_index("ix_repair_requests_subject_id", "repair_requests", ["subject_id"])
    _partial_unique(
        "uq_repair_requests_one_pending_per_record",
        "repair_requests",
        "record_id",
        "status = 'pending'",
    )
    op.create_table(
        "list_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("list_kind", sa.String(8), nullable=False),
        sa.Column("legal_basis", sa.Text, nullable=False),
        sa.Column("document_number", sa.String(128), nullable=False),
        sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id")),
        sa.Column("notice_document", sa.String(128), nullable=False),
        sa.Column("notice_served_at", _TS, nullable=False),
        sa.Column("notice_reasons", sa.Text, nullable=False),
        sa.Column("notice_rights", sa.Text, nullable=False),
        sa.Column("exit_conditions", sa.Text, nullable=False),
        sa.Column("exit_on", sa.Date),
        sa.Column(
            "exit_when_record_cleared", sa.Boolean, nullable=False, server_default=sa.false()
        ),
        sa.Column("added_at", _TS, nullable=False),
        sa.Column("added_by", sa.String(64), nullable=False),
        sa.Column("removed_at", _TS),
        sa.Column("removed_by", sa.String(64)),
        sa.Column("removal_note", sa.Text),
        sa.CheckConstraint("list_kind IN ('red', 'black')", name="ck_list_entries_kind"),
        sa.UniqueConstraint(
            "list_kind", "subject_id", "document_number", name="uq_list_entries_document"
        ),
    )
    op.create_index("ix_list_entries_subject_id", "list_entries", ["subject_id"])
    op.create_table(
        "list_entry_measures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.Integer, sa.ForeignKey("list_entries.id"), nullable=False),
        sa.Column("measure_key", sa.String(64), nullable=False),
        sa.Column("implementing_unit", sa.String(128), nullable=False),
        sa.Column("mandatory", sa.Boolean, nullable=False),
        sa.Column("catalogue_version", sa.String(64), nullable=False),
        sa.Column("applied_at", _TS, nullable=False),
        sa.Column("applied_by", sa.String(64), nullable=False),
        sa.Column("lifted_at", _TS),
        sa.UniqueConstraint("entry_id", "measure_key", name="uq_list_entry_measures_measure"),
    )
    op.create_table(
        "review_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_at", _TS, nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("grade_score", sa.Integer, nullable=False),
        sa.Column("grade_class", sa.String(1), nullable=False),
        sa.Column("grade_stars", sa.Integer, nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("policy_hash", sa.String(64), nullable=False),
        sa.Column("reviewer", sa.String(64)),
        sa.Column("outcome", sa.String(16)),
        sa.Column("objection_id", sa.Integer, sa.ForeignKey("objections.id")),
        sa.Column("decision_note", sa.Text),
        sa.Column("decided_at", _TS),
        sa.CheckConstraint("status IN ('open', 'decided')", name="ck_review_requests_status"),
    )
    op.create_index("ix_review_requests_subject_id", "review_requests", ["subject_id"])
    _partial_unique(
        "uq_review_requests_one_open_per_subject",
        "review_requests",
        "subject_id",
        "status = 'open'",
    )


def downgrade() -> None:
    for table in (
        "review_requests",
        "list_entry_measures",
        "list_entries",
        "repair_requests",
        "objection_escalations",
        "objections",
        "card_entitlements",
        "card_status_events",
    ):
        op.drop_table(table)
