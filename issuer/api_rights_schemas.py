"""Request and response bodies of the rights routes (:mod:`issuer.api_rights`), with their
limits. Responses name subjects only by their pseudonymous id."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

MAX_ID = 2**63 - 1
"""Largest row id (a signed 64-bit integer in both databases); larger ids are a 422."""
_TEXT = 4000
"""Longest free text accepted (grounds, reasons, notes, evidence)."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ObjectionIn(_In):
    record_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    """None objects to the evaluation itself."""
    grounds: str = Field(min_length=1, max_length=_TEXT)
    filed_by: Literal["subject", "staff"] = "subject"


class CorrectionIn(_In):
    """New values for the record under objection; fields left out stay as they are."""

    category: str | None = Field(default=None, min_length=1, max_length=64)
    severity: Literal["轻微", "一般", "严重"] | None = None
    decision_date: dt.date | None = None
    legal_basis: str | None = Field(default=None, min_length=1, max_length=1000)
    authority: str | None = Field(default=None, min_length=1, max_length=200)


class ObjectionDecisionIn(_In):
    outcome: Literal["upheld", "corrected", "rejected", "objection_withdrawn"]
    note: str = Field(min_length=1, max_length=_TEXT)
    correction: CorrectionIn | None = None
    """Required with ``corrected``, refused with any other outcome."""


class ReasonIn(_In):
    reason: str = Field(min_length=1, max_length=_TEXT)


class RepairRequestIn(_In):
    """Empty texts are accepted here so that the refusal can list every unmet condition."""

    obligations_performed: bool
    obligations_evidence: str = Field(default="", max_length=_TEXT)
    commitment: str = Field(default="", max_length=_TEXT)


class RepairDecisionIn(_In):
    grant: bool
    reason: str = Field(default="", max_length=_TEXT)
    """Required for a refusal (PIPL Art. 50)."""


class ListEntryIn(_In):
    """Left-out texts are refused by the desk with the full list of what is missing."""

    subject_id: str = Field(min_length=1, max_length=32)
    list_kind: Literal["red", "black"]
    legal_basis: str = Field(default="", max_length=1000)
    document_number: str = Field(default="", max_length=128)
    notice_document: str = Field(default="", max_length=128)
    notice_served_at: AwareDatetime | None = None
    notice_reasons: str = Field(default="", max_length=_TEXT)
    notice_rights: str = Field(default="", max_length=_TEXT)
    exit_conditions: str = Field(default="", max_length=_TEXT)
    exit_on: dt.date | None = None
    record_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    exit_when_record_cleared: bool = False


class MeasureIn(_In):
    measure_key: str = Field(min_length=1, max_length=64)
    unit: str = Field(min_length=1, max_length=128)


class RemovalIn(_In):
    note: str = Field(default="", max_length=_TEXT)


class ReviewDecisionIn(_In):
    outcome: Literal["confirmed", "amended"]
    note: str = Field(min_length=1, max_length=_TEXT)
    objection_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class GradeOut(_Out):
    score: int
    grade_class: str = Field(serialization_alias="class")
    stars: int
    card_event: str | None


class ObjectionOut(_Out):
    objection_id: int = Field(validation_alias="id")
    subject_id: str
    record_id: int | None
    target: str
    filed_by: str
    grounds: str
    filed_on: dt.date
    due_on: dt.date
    escalate_on: dt.date
    deadline_missed_on: dt.date | None
    extended: bool
    escalation_level: int
    status: str
    outcome: str | None
    decision_note: str | None


class ObjectionDecisionOut(GradeOut):
    objection_id: int
    outcome: str


class EffectWindowOut(_Out):
    regime: str
    min_days: int
    max_days: int
    repair_from: dt.date
    effect_until: dt.date


class RepairOutlookOut(_Out):
    record_id: int
    subject_id: str
    as_of: dt.date
    policy_version: str
    window: EffectWindowOut | None
    blockers: tuple[str, ...]


class RepairRequestOut(_Out):
    request_id: int = Field(validation_alias="id")
    subject_id: str
    record_id: int
    status: str
    decision_reason: str | None
    grade: GradeOut | None = None


class ListEntryOut(_Out):
    entry_id: int = Field(validation_alias="id")
    subject_id: str
    list_kind: str
    legal_basis: str
    document_number: str
    record_id: int | None
    notice_document: str
    notice_served_at: dt.datetime
    exit_conditions: str
    exit_on: dt.date | None
    exit_when_record_cleared: bool
    added_at: dt.datetime
    removed_at: dt.datetime | None
    measures: tuple[str, ...]
    lifted_measures: tuple[str, ...]


class MeasureInForceOut(_Out):
    entry_id: int
    list_kind: str
    measure_key: str
    implementing_unit: str
    mandatory: bool


class SubjectListsOut(BaseModel):
    entries: list[ListEntryOut]
    measures_in_force: list[MeasureInForceOut]


class ExitCheckOut(_Out):
    entry_id: int
    subject_id: str
    met: bool
    reasons: tuple[str, ...]


class MeasureOut(_Out):
    key: str
    list_kind: str
    targets: tuple[str, ...]
    measure: str
    basis: str
    implementing_unit: str
    mandatory: bool


class CatalogueOut(BaseModel):
    version: str
    sha256: str
    measures: list[MeasureOut]


class ReviewOut(_Out):
    review_id: int = Field(validation_alias="id")
    subject_id: str
    reason: str
    status: str
    grade_score: int
    grade_class: str
    grade_stars: int
    policy_version: str
    reviewer: str | None
    outcome: str | None
    objection_id: int | None
    decision_note: str | None


class WarningOut(_Out):
    subject_id: str
    score: int
    grade_class: str
    stars: int
    reasons: tuple[str, ...]
    points_to_drop: int | None
    record_ids: tuple[int, ...]
