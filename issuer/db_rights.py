"""Tables for the data subject's rights and the lists, on :data:`issuer.db.metadata`.

Migration ``0006_rights`` creates exactly these. Invariants the database holds itself:

- at most one *open* objection per record, and one open objection against the evaluation
  per subject (partial unique indexes): ``records.objection_open`` is a flag, not a count;
- at most one *pending* repair request per record, one *open* human review per subject;
- one entitlement row per subject (the card state last announced to the issuance consumer);
- card status events and escalations are append-only (nothing here deletes them).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from issuer.db import metadata, unique_where

_OPEN = "status = 'open'"

card_status_events = Table(
    "card_status_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), ForeignKey("subjects.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("stars", Integer, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("ref", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("consumed_at", DateTime(timezone=True)),
    CheckConstraint(
        "kind IN ('suspend', 'restore', 'revoke', 'reissue')", name="ck_card_status_events_kind"
    ),
)
Index("ix_card_status_events_pending", card_status_events.c.consumed_at, card_status_events.c.id)

card_entitlements = Table(
    "card_entitlements",
    metadata,
    Column("subject_id", String(32), ForeignKey("subjects.id"), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("stars", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("state IN ('none', 'active', 'suspended')", name="ck_card_entitlements_state"),
)

objections = Table(
    "objections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), ForeignKey("subjects.id"), nullable=False, index=True),
    Column("record_id", Integer, ForeignKey("records.id")),
    Column("target", String(16), nullable=False),
    Column("filed_by", String(16), nullable=False),
    Column("grounds", Text, nullable=False),
    Column("filed_at", DateTime(timezone=True), nullable=False),
    Column("filed_on", Date, nullable=False),
    Column("filed_by_actor", String(64), nullable=False),
    Column("due_on", Date, nullable=False),
    Column("escalate_on", Date, nullable=False),
    Column("deadline_missed_on", Date),
    Column("extended", Boolean, nullable=False, server_default=false()),
    Column("escalation_level", Integer, nullable=False, server_default=text("0")),
    Column("status", String(16), nullable=False),
    Column("outcome", String(32)),
    Column("decision_note", Text),
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", String(64)),
    CheckConstraint("target IN ('record', 'evaluation')", name="ck_objections_target"),
    CheckConstraint(
        "(target = 'record') = (record_id IS NOT NULL)", name="ck_objections_record_target"
    ),
    CheckConstraint("status IN ('open', 'closed')", name="ck_objections_status"),
)
unique_where("uq_objections_one_open_per_record", objections.c.record_id, _OPEN)
unique_where(
    "uq_objections_one_open_evaluation",
    objections.c.subject_id,
    "status = 'open' AND target = 'evaluation'",
)
Index("ix_objections_status_due", objections.c.status, objections.c.due_on)

objection_escalations = Table(
    "objection_escalations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("objection_id", Integer, ForeignKey("objections.id"), nullable=False),
    Column("level", Integer, nullable=False),
    Column("missed_due_on", Date, nullable=False),
    Column("escalated_to", String(128), nullable=False),
    Column("new_due_on", Date, nullable=False),
    Column("escalated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("objection_id", "level", name="uq_objection_escalations_level"),
)

repair_requests = Table(
    "repair_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), ForeignKey("subjects.id"), nullable=False, index=True),
    Column("record_id", Integer, ForeignKey("records.id"), nullable=False),
    Column("obligations_performed", Boolean, nullable=False),
    Column("obligations_evidence", Text, nullable=False),
    Column("commitment", Text, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("requested_by", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", String(64)),
    Column("decision_reason", Text),
    CheckConstraint(
        "status IN ('pending', 'granted', 'refused', 'moot')", name="ck_repair_requests_status"
    ),
)
unique_where(
    "uq_repair_requests_one_pending_per_record", repair_requests.c.record_id, "status = 'pending'"
)

list_entries = Table(
    "list_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), ForeignKey("subjects.id"), nullable=False, index=True),
    Column("list_kind", String(8), nullable=False),
    Column("legal_basis", Text, nullable=False),
    Column("document_number", String(128), nullable=False),
    Column("record_id", Integer, ForeignKey("records.id")),
    Column("notice_document", String(128), nullable=False),
    Column("notice_served_at", DateTime(timezone=True), nullable=False),
    Column("notice_reasons", Text, nullable=False),
    Column("notice_rights", Text, nullable=False),
    Column("exit_conditions", Text, nullable=False),
    Column("exit_on", Date),
    Column("exit_when_record_cleared", Boolean, nullable=False, server_default=false()),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("added_by", String(64), nullable=False),
    Column("removed_at", DateTime(timezone=True)),
    Column("removed_by", String(64)),
    Column("removal_note", Text),
    CheckConstraint("list_kind IN ('red', 'black')", name="ck_list_entries_kind"),
    UniqueConstraint("list_kind", "subject_id", "document_number", name="uq_list_entries_document"),
)

list_entry_measures = Table(
    "list_entry_measures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("list_entries.id"), nullable=False),
    Column("measure_key", String(64), nullable=False),
    Column("implementing_unit", String(128), nullable=False),
    Column("mandatory", Boolean, nullable=False),
    Column("catalogue_version", String(64), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Column("applied_by", String(64), nullable=False),
    Column("lifted_at", DateTime(timezone=True)),
    UniqueConstraint("entry_id", "measure_key", name="uq_list_entry_measures_measure"),
)

review_requests = Table(
    "review_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), ForeignKey("subjects.id"), nullable=False, index=True),
    Column("reason", Text, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("requested_by", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("grade_score", Integer, nullable=False),
    Column("grade_class", String(1), nullable=False),
    Column("grade_stars", Integer, nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("policy_hash", String(64), nullable=False),
    Column("reviewer", String(64)),
    Column("outcome", String(16)),
    Column("objection_id", Integer, ForeignKey("objections.id")),
    Column("decision_note", Text),
    Column("decided_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('open', 'decided')", name="ck_review_requests_status"),
)
unique_where("uq_review_requests_one_open_per_subject", review_requests.c.subject_id, _OPEN)

RIGHTS_TABLES = (
    card_status_events,
    card_entitlements,
    objections,
    objection_escalations,
    repair_requests,
    list_entries,
    list_entry_measures,
    review_requests,
)
