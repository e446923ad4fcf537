"""Issuer HTTP API: staff endpoints, department delivery endpoints and public artefacts.

Public: the JWKS, the signed status list (with ETag); the citizen pages live in
:mod:`issuer.citizen`. Staff: register
persons and organisations, consent and its withdrawal, records, grade, eligibility, the
subject view, revoke — each for the staff roles of ``docs/staff.md``. Departments: record
batches, corrections and withdrawals, each department with its own bearer token and only for
records whose source is its name (``docs/ingestion.md``).

Every response that shows a subject's personal data is logged in the query log in the same
transaction as the read. Errors are mapped to HTTP in this module only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from issuer.api_auth import Operator, SupervisorName
from issuer.api_cards import cards_router
from issuer.api_public import etagged as _etagged
from issuer.api_public import public_router
from issuer.api_rights import rights_router
from issuer.api_rights_schemas import MAX_ID
from issuer.api_staff import staff_router
from issuer.changes import after_records_changed
from issuer.citizen import citizen_router
from issuer.departments import NotAuthenticated, authenticate
from issuer.events import RightsConflict, RightsError, RightsNotFound, regrade_and_announce
from issuer.grading import GradingError
from issuer.grading import UnknownSubject as GradingUnknownSubject
from issuer.identity import InvalidIdentityNumber
from issuer.ingest import ConcurrentDelivery, Mode, Problem, RowResult, Status, ingest, raw_row
from issuer.issuance import HsmUnreachable, IssuanceError, check_eligibility
from issuer.platform import (
    ORGANISATION,
    NewRecord,
    PlatformError,
    UnknownSubject,
    add_record,
    read_subject,
    record_consent,
    register_organisation,
    register_subject,
    subject_kind,
    withdraw_consent,
)
from issuer.publisher import current_token
from issuer.query_log import QueryLogError, log_read
from issuer.receipts import issue_receipt
from issuer.settings import IssuerSettings
from issuer.uscc import InvalidUscc
from issuer.wiring import IssuerContext, build_issuer
from issuer.workdays import local_date
from verifier.api.responses import ERROR_RESPONSES
from verifier.core.trust_list import TRUST_LIST_TYP

STATUS_LIST_MEDIA_TYPE = "application/statuslist+cwt"
MAX_BATCH = 5000
HSM_RETRY_AFTER_S = 30
"""Retry-After of a 503 when the HSM is unreachable (the job waits in its state)."""
"""Most records in one department batch (larger deliveries: several batches or a file)."""
_PROBLEM_STATUS = {
    Problem.NOT_FOUND: 404,
    Problem.FORBIDDEN: 403,
    Problem.CONFLICT: 409,
}


class SubjectIn(BaseModel):
    id_number: str = Field(min_length=18, max_length=18)
    name: str = Field(min_length=1, max_length=64)


class OrganisationIn(BaseModel):
    uscc: str = Field(min_length=18, max_length=18)
    name: str = Field(min_length=1, max_length=64)
    check_override_reason: str | None = Field(default=None, max_length=500)
    """Staff only: accept an early pilot-area code that fails its check, and why."""


class ConsentIn(BaseModel):
    channel: str = Field(min_length=1, max_length=32)


class RecordIn(BaseModel):
    category: str
    direction: str
    severity: str
    legal_basis: str
    authority: str
    document_number: str
    decision_date: dt.date
    source: str


class _RecordFields(BaseModel):
    """A record as a department delivers it: text fields, checked row by row by the ingest
    engine (so that one bad row gets its own reason instead of failing the request)."""

    model_config = ConfigDict(extra="forbid")

    id_number: str | None = None
    uscc: str | None = None
    name: str | None = None
    category: str | None = None
    direction: str | None = None
    severity: str | None = None
    legal_basis: str | None = None
    authority: str | None = None
    decision_date: str | None = None
    source: str | None = None


class DeliveryIn(_RecordFields):
    document_number: str | None = None
    action: str | None = None
    reason: str | None = None


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[DeliveryIn] = Field(min_length=1, max_length=MAX_BATCH)
    mode: Mode = Mode.ATOMIC


class CorrectionIn(_RecordFields):
    """The full corrected record (every field is replaced) and why."""

    reason: str = Field(min_length=1, max_length=500)


class WithdrawalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class RevokeIn(BaseModel):
    reason: str = Field(pattern="^(lost|stolen|damaged|consent_withdrawn|downgraded|other)$")


def _signed(media_type: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a signed artefact served by ``_etagged``."""
    return {
        200: {"content": {media_type: {}}, "description": "the signed artefact"},
        304: {"description": "the client's copy (If-None-Match) is current"},
    }


def require_staff(principal: Operator) -> str:
    """Any operator or supervisor; returns the actor name for the audit log."""
    return principal.name


Staff = Annotated[str, Depends(require_staff)]


def require_department(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> str:
    """Returns the name of the department whose token is presented (401 otherwise)."""
    token = (authorization or "").removeprefix("Bearer ").strip()
    ctx: IssuerContext = request.app.state.context
    try:
        if not token:
            raise NotAuthenticated("no token")
        with ctx.engine.connect() as conn:
            return authenticate(conn, token)
    except NotAuthenticated:
        raise HTTPException(
            401, "department token required", headers={"WWW-Authenticate": "Bearer"}
        ) from None


DepartmentName = Annotated[str, Depends(require_department)]


def _single_result(result: RowResult, affected: tuple[str, ...]) -> JSONResponse:
    """One correction or withdrawal: 200 when applied or already applied, else by problem."""
    body = {
        "status": str(result.status),
        "record_id": result.record_id,
        "reason": result.reason,
        "affected_subject_ids": list(affected),
    }
    if result.status is not Status.REFUSED:
        return JSONResponse(body)
    problem = result.problem or Problem.INVALID
    body = {"detail": result.reason, "problem": str(problem), **body}
    return JSONResponse(body, status_code=_PROBLEM_STATUS.get(problem, 422))


def create_app(
    settings: IssuerSettings, staff_token: str, *, context: IssuerContext | None = None
) -> FastAPI:
    """Builds the app from ``settings`` (no globals, nothing built at import time).

    ``context`` lets a caller that already wired the issuer for these settings share it.
    """
    if context is not None and context.settings != settings:
        raise ValueError("the issuer context was built for other settings")
    ctx = context or build_issuer(settings)
    app = FastAPI(title="StarCard issuer", version="0.1.0", responses=ERROR_RESPONSES)
    app.state.context = ctx
    app.state.staff_token_hash = hashlib.sha256(staff_token.encode()).digest()

    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    app.state.clock = now  # staff sessions expire by this clock (issuer.api_auth)

    @app.exception_handler(PlatformError)
    @app.exception_handler(InvalidIdentityNumber)
    @app.exception_handler(InvalidUscc)
    @app.exception_handler(QueryLogError)
    @app.exception_handler(IssuanceError)
    async def _refused(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, HsmUnreachable):  # infrastructure, retryable
            headers = {"Retry-After": str(HSM_RETRY_AFTER_S)}
            return JSONResponse({"detail": str(exc)}, status_code=503, headers=headers)
        status = 404 if isinstance(exc, UnknownSubject) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RightsError)
    @app.exception_handler(GradingError)
    async def _rights(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RightsNotFound | GradingUnknownSubject):
            status = 404
        elif isinstance(exc, RightsConflict):
            status = 409
        else:
            status = 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(ConcurrentDelivery)
    async def _concurrent(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/.well-known/starcard/jwks.json")
    async def jwks() -> dict[str, Any]:
        return ctx.keys.jwks()

    @app.get(
        "/.well-known/starcard/trust-list",
        response_class=Response,
        responses=_signed(TRUST_LIST_TYP),
    )
    def trust_list(if_none_match: Annotated[str | None, Header()] = None) -> Response:
        """The root-signed trust list (verifiers pin the root key, not this endpoint)."""
        return _etagged(ctx.trust_list, TRUST_LIST_TYP, if_none_match, 3600)

    @app.get("/s/{list_id}", response_class=Response, responses=_signed(STATUS_LIST_MEDIA_TYPE))
    def status_list(
        list_id: Annotated[int, Path(ge=1, le=MAX_ID)],
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        with ctx.engine.connect() as conn:
            token = current_token(conn, list_id)
        if token is None:
            raise HTTPException(404, "no such status list")
        return _etagged(
            token, STATUS_LIST_MEDIA_TYPE, if_none_match, ctx.settings.status_list_ttl_s
        )

    @app.post("/v1/subjects", status_code=201)
    def create_subject(body: SubjectIn, actor: Staff) -> dict[str, str]:
        with ctx.engine.begin() as conn:
            subject_id = register_subject(conn, ctx.vault, body.id_number, body.name, now(), actor)
        return {"subject_id": subject_id}

    @app.post("/v1/organisations", status_code=201)
    def create_organisation(body: OrganisationIn, principal: Operator) -> dict[str, str]:
        """Operators register organisations; accepting a code that fails its check (with a
        reason) is a decision, so only a supervisor may give ``check_override_reason``."""
        if body.check_override_reason is not None and principal.role != "supervisor":
            raise HTTPException(
                403,
                "accepting a code that fails its check is a supervisor decision: "
                "ask a supervisor to register this organisation",
            )
        actor = principal.name
        with ctx.engine.begin() as conn:
            subject_id = register_organisation(
                conn,
                ctx.vault,
                body.uscc,
                body.name,
                now(),
                actor,
                check_override_reason=body.check_override_reason,
            )
        return {"subject_id": subject_id}

    @app.get("/v1/subjects/{subject_id}")
    def view_subject(
        subject_id: str,
        actor: Staff,
        purpose: Annotated[str, Query(min_length=2, max_length=200)],
    ) -> dict[str, Any]:
        """Masked identity, consent state; the read is logged with ``purpose``."""
        with ctx.engine.begin() as conn:
            view = read_subject(conn, ctx.vault, subject_id, now(), actor, purpose, "api")
        return {
            "subject_id": view.subject_id,
            "kind": view.kind,
            "identifier": view.identifier_masked,
            "name": view.name_shown,
            "adult": view.adult,
            "consent": {
                "given_at": _iso(view.consent_given_at),
                "channel": view.consent_channel,
                "withdrawn_at": _iso(view.consent_withdrawn_at),
                "withdrawn_channel": view.consent_withdrawn_channel,
            },
            "uscc_check_overridden": view.uscc_check_overridden,
            "registered_at": _iso(view.created_at),
        }

    @app.post("/v1/subjects/{subject_id}/consent", status_code=204)
    def consent(subject_id: str, body: ConsentIn, actor: Staff) -> None:
        with ctx.engine.begin() as conn:
            record_consent(conn, subject_id, body.channel, now(), actor)

    @app.post("/v1/subjects/{subject_id}/consent/withdrawal")
    def consent_withdrawal(subject_id: str, body: ConsentIn, actor: Staff) -> dict[str, bool]:
        """``withdrawn`` is False when consent was withdrawn before (nothing changed)."""
        with ctx.engine.begin() as conn:
            changed = withdraw_consent(conn, subject_id, body.channel, now(), actor)
        return {"withdrawn": changed}

    @app.post("/v1/subjects/{subject_id}/records", status_code=201)
    def create_record(subject_id: str, body: RecordIn, actor: SupervisorName) -> dict[str, int]:
        with ctx.engine.begin() as conn:
            record_id = add_record(
                conn, ctx.policy, subject_id, NewRecord(**body.model_dump()), now(), actor
            )
        return {"record_id": record_id}

    @app.post("/v1/subjects/{subject_id}/grade")
    def grade(subject_id: str, actor: SupervisorName) -> dict[str, Any]:
        at = now()
        with ctx.engine.begin() as conn:
            subject_kind(conn, subject_id)
            log_read(conn, at, actor, subject_id, "grading", ("records", "grade"), "api")
            announced = regrade_and_announce(
                conn, ctx.policy, [subject_id], at, reason="staff_regrade", actor=actor
            )
            result = announced[subject_id].grade
        receipt = issue_receipt(
            subject_id, result, ctx.policy, local_date(at), int(at.timestamp()), ctx.keys.credential
        )
        return {
            "score": result.score,
            "class": result.grade_class,
            "stars": result.stars,
            "policy_version": ctx.policy.version,
            "policy_hash": ctx.policy.sha256,
            "explanation": [line.as_dict() for line in result.lines],
            "receipt": base64.b64encode(receipt).decode(),
        }

    @app.get("/v1/subjects/{subject_id}/eligibility")
    def eligibility(subject_id: str, actor: Staff) -> dict[str, Any]:
        at = now()
        with ctx.engine.begin() as conn:
            if subject_kind(conn, subject_id) == ORGANISATION:
                reason = "organisations cannot hold the star card (it is personal)"
                return {"eligible": False, "reasons": [reason], "stars": 0}
            fields = ("birth_date", "consent", "grade", "records")
            log_read(conn, at, actor, subject_id, "card eligibility check", fields, "api")
            result = check_eligibility(conn, ctx.policy, subject_id, at.date())
        return {"eligible": result.eligible, "reasons": list(result.reasons), "stars": result.stars}

    @app.post("/v1/departments/records")
    def deliver_records(body: BatchIn, department: DepartmentName) -> JSONResponse:
        """A batch of deliveries (``add`` by default; ``correct``/``withdraw`` rows too).

        200 when the batch was stored (``per_row``: the rows accepted, see ``rows``); 422 in
        ``atomic`` mode when a row was refused and nothing was stored.
        """
        rows = [
            raw_row(number, item.model_dump(exclude_none=True))
            for number, item in enumerate(body.records, start=1)
        ]
        results: list[dict[str, Any]] = []
        at = now()
        summary = ingest(
            ctx.engine,
            ctx.vault,
            ctx.policy,
            rows,
            mode=body.mode,
            actor=f"department:{department}",
            now=at,
            department=department,
            on_result=lambda r: results.append(r.as_dict()),
            on_changes=after_records_changed(ctx.policy, at, f"department:{department}"),
        )
        answer = {**summary.as_dict(), "rows": results}
        if summary.committed:
            return JSONResponse(answer)
        detail = "nothing was stored: a row was refused (see rows); fix it and resend the batch"
        return JSONResponse({"detail": detail, **answer}, status_code=422)

    @app.post("/v1/departments/records/{document_number:path}/correction")
    def correct(document_number: str, body: CorrectionIn, department: DepartmentName) -> Response:
        """Replaces the record's content (the full record is sent); old values are kept."""
        fields = body.model_dump(exclude_none=True)
        return _one(department, {**fields, "document_number": document_number, "action": "correct"})

    @app.post("/v1/departments/records/{document_number:path}/withdrawal")
    def withdraw(document_number: str, body: WithdrawalIn, department: DepartmentName) -> Response:
        """Marks the record withdrawn by its source; it stops counting and stays stored."""
        fields = {"document_number": document_number, "action": "withdraw", "reason": body.reason}
        return _one(department, fields)

    def _one(department: str, fields: dict[str, Any]) -> Response:
        results: list[RowResult] = []
        at = now()
        summary = ingest(
            ctx.engine,
            ctx.vault,
            ctx.policy,
            [raw_row(1, fields)],
            mode=Mode.ATOMIC,
            actor=f"department:{department}",
            now=at,
            department=department,
            on_result=results.append,
            on_changes=after_records_changed(ctx.policy, at, f"department:{department}"),
        )
        return _single_result(results[0], summary.affected_subject_ids)

    @app.post("/v1/cards/{serial}/revoke", status_code=204)
    def revoke(serial: str, body: RevokeIn, actor: SupervisorName) -> None:
        ctx.issuance.revoke(serial, body.reason, now(), actor)

    app.include_router(cards_router(ctx, now))
    app.include_router(citizen_router(ctx, now))
    app.include_router(rights_router(ctx, now))
    app.include_router(staff_router(ctx, now))
    app.include_router(public_router(ctx, now))
    return app


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()
