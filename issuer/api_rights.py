"""Staff HTTP routes of the rights desks: objections, repair, red and black lists with the
measures catalogue, human review of the grade, early warnings (``docs/rights.md``).

Roles: an operator files for the citizen at the counter (objection, repair request, review
request) and reads; a supervisor decides (objections, repair, reviews), keeps the lists and
lists the early warnings. The principal's name is the audit actor.

Every step runs in one transaction under the policy in force on that day
(``ctx.policies.policy_for``); each record keeps the periods of the regime in force on its own
decision date. Every response that shows a subject's data is logged in the query log
(:func:`issuer.query_log.log_read`) in the same transaction; subjects appear only by their
pseudonymous id, never by ID number. Domain errors reach HTTP through the app's handlers
(``RightsError`` 422, ``RightsNotFound`` 404, ``RightsConflict`` 409); refusals that list
several unmet conditions also return them as a list (``unmet`` / ``missing``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from issuer.api_auth import Operator, Supervisor
from issuer.api_rights_schemas import (
    MAX_ID,
    CatalogueOut,
    ExitCheckOut,
    GradeOut,
    ListEntryIn,
    ListEntryOut,
    MeasureIn,
    MeasureInForceOut,
    MeasureOut,
    ObjectionDecisionIn,
    ObjectionDecisionOut,
    ObjectionIn,
    ObjectionOut,
    ReasonIn,
    RemovalIn,
    RepairDecisionIn,
    RepairOutlookOut,
    RepairRequestIn,
    RepairRequestOut,
    ReviewDecisionIn,
    ReviewOut,
    SubjectListsOut,
    WarningOut,
)
from issuer.events import Announcement
from issuer.lists import ListDesk, ListEntryRefused, NewListEntry, entries_of, load_catalogue
from issuer.objections import ObjectionDesk, RecordCorrection, get_objection
from issuer.query_log import log_read
from issuer.repair import RepairApplication, RepairConditionsNotMet, RepairDesk, get_repair_request
from issuer.review import decide_review, get_review, request_review
from issuer.warnings import early_warnings
from issuer.wiring import IssuerContext
from issuer.workdays import local_date

CHANNEL = "api"


def _grade(announced: Announcement) -> GradeOut:
    grade = announced.grade
    return GradeOut(
        score=grade.score,
        grade_class=grade.grade_class,
        stars=grade.stars,
        card_event=announced.kind,
    )


RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
"""A row id in a path: larger than the databases hold is a 422, not a server error."""


def rights_router(ctx: IssuerContext, now: Callable[[], dt.datetime]) -> APIRouter:
    """The rights routes for ``ctx``; ``now`` is the app's clock."""
    router = APIRouter(prefix="/v1", tags=["rights"])
    objections = ObjectionDesk(ctx.policies)
    repairs = RepairDesk(ctx.policies)
    lists = ListDesk(ctx.policies, load_catalogue())

    def logged(
        conn: Connection, at: dt.datetime, actor: str, subject_id: str, why: str, *fields: str
    ) -> None:
        log_read(conn, at, actor, subject_id, why, fields, CHANNEL)

    # --- objections ---------------------------------------------------------------------

    @router.post("/subjects/{subject_id}/objections", status_code=201)
    def file_objection(subject_id: str, body: ObjectionIn, principal: Operator) -> ObjectionOut:
        """Files an objection (for the citizen at the counter, or by staff); the record stops
        counting at once and the subject is re-graded in the same transaction."""
        at = now()
        with ctx.engine.begin() as conn:
            objection_id = objections.file(
                conn,
                subject_id,
                record_id=body.record_id,
                grounds=body.grounds,
                filed_by=body.filed_by,
                actor=principal.name,
                now=at,
            )
            logged(conn, at, principal.name, subject_id, "objection filed", "objections")
            return ObjectionOut.model_validate(get_objection(conn, objection_id))

    @router.get("/objections/{objection_id}")
    def view_objection(objection_id: RowId, principal: Operator) -> ObjectionOut:
        at = now()
        with ctx.engine.begin() as conn:
            objection = get_objection(conn, objection_id)
            logged(conn, at, principal.name, objection.subject_id, "objection", "objections")
        return ObjectionOut.model_validate(objection)

    @router.post("/objections/{objection_id}/extension")
    def extend_objection(
        objection_id: RowId, body: ReasonIn, principal: Supervisor
    ) -> ObjectionOut:
        """Extends the decision deadline once, to the escalation day."""
        at = now()
        with ctx.engine.begin() as conn:
            objections.extend(conn, objection_id, body.reason, principal.name, at)
            objection = get_objection(conn, objection_id)
            logged(conn, at, principal.name, objection.subject_id, "objection", "objections")
        return ObjectionOut.model_validate(objection)

    @router.post("/objections/{objection_id}/decision")
    def decide_objection(
        objection_id: RowId, body: ObjectionDecisionIn, principal: Supervisor
    ) -> ObjectionDecisionOut:
        """Closes the objection: ``upheld`` withdraws the record, ``corrected`` replaces the
        values given in ``correction`` (old ones kept in the record history), ``rejected``
        and ``objection_withdrawn`` let it count again. The subject is re-graded."""
        at = now()
        correction = None
        if body.correction is not None:
            correction = RecordCorrection(**body.correction.model_dump())
        with ctx.engine.begin() as conn:
            announced = objections.decide(
                conn, objection_id, body.outcome, body.note, principal.name, at, correction
            )
            subject_id = get_objection(conn, objection_id).subject_id
            logged(conn, at, principal.name, subject_id, "objection decision", "records", "grade")
        return ObjectionDecisionOut(
            objection_id=objection_id, outcome=body.outcome, **_grade(announced).model_dump()
        )

    # --- repair -------------------------------------------------------------------------

    @router.get("/records/{record_id}/repair-outlook")
    def repair_outlook(record_id: RowId, principal: Operator) -> RepairOutlookOut:
        """The record's periods (regime of its decision date) and what blocks repair today."""
        at = now()
        with ctx.engine.begin() as conn:
            outlook = repairs.outlook(conn, record_id, local_date(at))
            logged(conn, at, principal.name, outlook.subject_id, "repair outlook", "records")
        return RepairOutlookOut.model_validate(outlook)

    @router.post("/records/{record_id}/repair-requests", status_code=201, response_model=None)
    def request_repair(
        record_id: RowId, body: RepairRequestIn, principal: Operator
    ) -> RepairRequestOut | JSONResponse:
        """Applies for repair on the citizen's behalf; 422 lists every unmet condition."""
        at = now()
        application = RepairApplication(
            record_id, body.obligations_performed, body.obligations_evidence, body.commitment
        )
        try:
            with ctx.engine.begin() as conn:
                request_id = repairs.request(conn, application, principal.name, at)
                request = get_repair_request(conn, request_id)
                logged(conn, at, principal.name, request.subject_id, "repair request", "records")
        except RepairConditionsNotMet as exc:
            return JSONResponse({"detail": str(exc), "unmet": list(exc.reasons)}, 422)
        return RepairRequestOut.model_validate(request)

    @router.post("/repair-requests/{request_id}/decision")
    def decide_repair(
        request_id: RowId, body: RepairDecisionIn, principal: Supervisor
    ) -> RepairRequestOut:
        """Grants (conditions re-checked today; the record is archived, the subject re-graded)
        or refuses with its reason."""
        at = now()
        with ctx.engine.begin() as conn:
            announced = repairs.decide(
                conn, request_id, body.grant, body.reason, principal.name, at
            )
            request = get_repair_request(conn, request_id)
            logged(conn, at, principal.name, request.subject_id, "repair decision", "grade")
        out = RepairRequestOut.model_validate(request)
        return out if announced is None else out.model_copy(update={"grade": _grade(announced)})

    # --- red and black lists ------------------------------------------------------------

    @router.get("/measures")
    def measures_catalogue(
        principal: Operator,
        list_kind: Annotated[Literal["red", "black"] | None, Query(alias="list")] = None,
    ) -> CatalogueOut:
        """The measures catalogue: list, targets, measure, basis, unit, mandatory or not."""
        catalogue = lists.catalogue
        chosen = [
            MeasureOut.model_validate(m)
            for _, m in sorted(catalogue.measures.items())
            if list_kind is None or m.list_kind == list_kind
        ]
        return CatalogueOut(version=catalogue.version, sha256=catalogue.sha256, measures=chosen)

    @router.post("/list-entries", status_code=201, response_model=None)
    def add_list_entry(body: ListEntryIn, principal: Supervisor) -> ListEntryOut | JSONResponse:
        """Adds an entry with its basis, prior notice and exit conditions and applies the
        catalogue's mandatory measures; 422 lists everything missing."""
        at = now()
        try:
            with ctx.engine.begin() as conn:
                entry_id = lists.add_entry(
                    conn, NewListEntry(**body.model_dump()), principal.name, at
                )
                entry = _entry(conn, body.subject_id, entry_id)
                logged(conn, at, principal.name, body.subject_id, "list entry", "list_entries")
        except ListEntryRefused as exc:
            return JSONResponse({"detail": str(exc), "missing": list(exc.missing)}, 422)
        return entry

    @router.get("/subjects/{subject_id}/list-entries")
    def subject_lists(subject_id: str, principal: Operator) -> SubjectListsOut:
        """The subject's entries (removed ones too) and the measures to execute today."""
        at = now()
        with ctx.engine.begin() as conn:
            entries = [ListEntryOut.model_validate(e) for e in entries_of(conn, subject_id)]
            in_force = lists.measures_in_force(conn, subject_id, at)
            logged(conn, at, principal.name, subject_id, "list entries", "list_entries")
        return SubjectListsOut(
            entries=entries,
            measures_in_force=[MeasureInForceOut.model_validate(m) for m in in_force],
        )

    @router.get("/list-entries/due-for-removal")
    def due_for_removal(principal: Supervisor) -> list[ExitCheckOut]:
        """Active entries whose exit conditions are met: the staff's confirmation queue."""
        at = now()
        with ctx.engine.begin() as conn:
            due = lists.due_for_removal(conn, at)
            for check in due:
                logged(conn, at, principal.name, check.subject_id, "list exit", "list_entries")
        return [ExitCheckOut.model_validate(check) for check in due]

    @router.get("/list-entries/{entry_id}/exit-check")
    def exit_check(entry_id: RowId, principal: Operator) -> ExitCheckOut:
        at = now()
        with ctx.engine.begin() as conn:
            check = lists.exit_check(conn, entry_id, at)
            logged(conn, at, principal.name, check.subject_id, "list exit", "list_entries")
        return ExitCheckOut.model_validate(check)

    @router.post("/list-entries/{entry_id}/removal")
    def remove_list_entry(entry_id: RowId, body: RemovalIn, principal: Supervisor) -> ExitCheckOut:
        """Removes the entry (and lifts its measures) when an exit condition is met; 409
        otherwise, with the reasons."""
        at = now()
        with ctx.engine.begin() as conn:
            check = lists.remove_entry(conn, entry_id, principal.name, body.note, at)
            logged(conn, at, principal.name, check.subject_id, "list exit", "list_entries")
        return ExitCheckOut.model_validate(check)

    @router.post("/list-entries/{entry_id}/measures", status_code=201)
    def apply_measure(entry_id: RowId, body: MeasureIn, principal: Supervisor) -> dict[str, int]:
        """A unit applies a recommended catalogue measure (its own, for this list and kind)."""
        with ctx.engine.begin() as conn:
            measure_id = lists.apply_measure(
                conn, entry_id, body.measure_key, body.unit, principal.name, now()
            )
        return {"measure_id": measure_id}

    # --- human review (PIPL Art. 24) ----------------------------------------------------

    @router.post("/subjects/{subject_id}/reviews", status_code=201)
    def ask_review(subject_id: str, body: ReasonIn, principal: Operator) -> ReviewOut:
        """Opens a human review of the subject's current (automated) grade."""
        at = now()
        with ctx.engine.begin() as conn:
            review_id = request_review(conn, subject_id, body.reason, principal.name, at)
            logged(conn, at, principal.name, subject_id, "human review", "grade")
            return ReviewOut.model_validate(get_review(conn, review_id))

    @router.get("/reviews/{review_id}")
    def view_review(review_id: RowId, principal: Operator) -> ReviewOut:
        at = now()
        with ctx.engine.begin() as conn:
            review = get_review(conn, review_id)
            logged(conn, at, principal.name, review.subject_id, "human review", "grade")
        return ReviewOut.model_validate(review)

    @router.post("/reviews/{review_id}/decision")
    def decide_human_review(
        review_id: RowId, body: ReviewDecisionIn, principal: Supervisor
    ) -> ReviewOut:
        """The reviewer (the principal) confirms the grade or names the objection that
        amends it, with the explanation given to the subject."""
        at = now()
        with ctx.engine.begin() as conn:
            decide_review(
                conn,
                review_id,
                reviewer=principal.name,
                outcome=body.outcome,
                note=body.note,
                now=at,
                objection_id=body.objection_id,
            )
            review = get_review(conn, review_id)
            logged(conn, at, principal.name, review.subject_id, "human review", "grade")
        return ReviewOut.model_validate(review)

    # --- early warning ------------------------------------------------------------------

    @router.get("/warnings")
    def warnings(
        principal: Supervisor,
        margin: Annotated[int, Query(ge=0, le=100)] = 5,
        horizon_days: Annotated[int, Query(ge=0, le=1095)] = 30,
    ) -> list[WarningOut]:
        """Graded subjects near a lower level (``near_band``) or heading there within the
        horizon without any new record (``outlook``), each with its reasons."""
        at = now()
        with ctx.engine.begin() as conn:
            found = early_warnings(
                conn,
                ctx.policies,
                at,
                margin=margin,
                horizon_days=horizon_days,
                actor=principal.name,
            )
            for warning in found:
                logged(conn, at, principal.name, warning.subject_id, "early warning", "grade")
        return [WarningOut.model_validate(w) for w in found]

    return router


def _entry(conn: Connection, subject_id: str, entry_id: int) -> ListEntryOut:
    (entry,) = [e for e in entries_of(conn, subject_id) if e.id == entry_id]
    return ListEntryOut.model_validate(entry)
