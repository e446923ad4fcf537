"""Issuer HTTP API (thin, for the walking skeleton): staff endpoints and public artefacts.

Public: the JWKS, the signed status list (with ETag), the citizen status page. Staff: register,
consent, records, grade, eligibility, revoke — behind a bearer token (roles come later).
Errors are mapped to HTTP in this module only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from issuer.db import cards
from issuer.grading import regrade
from issuer.identity import InvalidIdentityNumber
from issuer.issuance import IssuanceError, check_eligibility
from issuer.platform import NewRecord, PlatformError, add_record, record_consent, register_subject
from issuer.publisher import current_token
from issuer.settings import IssuerSettings
from issuer.wiring import IssuerContext, build_issuer
from verifier.core.trust_list import TRUST_LIST_TYP

STATUS_LIST_MEDIA_TYPE = "application/statuslist+cwt"


class SubjectIn(BaseModel):
    id_number: str = Field(min_length=18, max_length=18)
    name: str = Field(min_length=1, max_length=64)


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


class RevokeIn(BaseModel):
    reason: str = Field(pattern="^(lost|stolen|damaged|consent_withdrawn|downgraded|other)$")


def _etagged(body: bytes, media_type: str, if_none_match: str | None, max_age: int) -> Response:
    """A signed artefact with a strong ETag; ``304`` when the client already has it."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": f"max-age={max_age}"}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def require_staff(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """Checks the bearer token in constant time; returns the actor name for the audit log."""
    presented = (authorization or "").removeprefix("Bearer ").encode()
    expected: bytes = request.app.state.staff_token_hash
    if not hmac.compare_digest(hashlib.sha256(presented).digest(), expected):
        raise HTTPException(401, "staff token required")
    return "staff"


Staff = Annotated[str, Depends(require_staff)]


def create_app(
    settings: IssuerSettings, staff_token: str, *, context: IssuerContext | None = None
) -> FastAPI:
    """Builds the app from ``settings`` (no globals, nothing built at import time).

    ``context`` lets a caller that already wired the issuer for these settings share it.
    """
    if context is not None and context.settings != settings:
        raise ValueError("the issuer context was built for other settings")
    ctx = context or build_issuer(settings)
    app = FastAPI(title="StarCard issuer", version="0.1.0")
    app.state.context = ctx
    app.state.staff_token_hash = hashlib.sha256(staff_token.encode()).digest()

    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    @app.exception_handler(PlatformError)
    @app.exception_handler(InvalidIdentityNumber)
    @app.exception_handler(IssuanceError)
    async def _refused(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/.well-known/starcard/jwks.json")
    async def jwks() -> dict[str, Any]:
        return ctx.keys.jwks()

    @app.get("/.well-known/starcard/trust-list")
    def trust_list(if_none_match: Annotated[str | None, Header()] = None) -> Response:
        """The root-signed trust list (verifiers pin the root key, not this endpoint)."""
        return _etagged(ctx.trust_list, TRUST_LIST_TYP, if_none_match, 3600)

    @app.get("/s/{list_id}")
    def status_list(
        list_id: int, if_none_match: Annotated[str | None, Header()] = None
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

    @app.post("/v1/subjects/{subject_id}/consent", status_code=204)
    def consent(subject_id: str, body: ConsentIn, actor: Staff) -> None:
        with ctx.engine.begin() as conn:
            record_consent(conn, subject_id, body.channel, now(), actor)

    @app.post("/v1/subjects/{subject_id}/records", status_code=201)
    def create_record(subject_id: str, body: RecordIn, actor: Staff) -> dict[str, int]:
        with ctx.engine.begin() as conn:
            record_id = add_record(
                conn, ctx.policy, subject_id, NewRecord(**body.model_dump()), now(), actor
            )
        return {"record_id": record_id}

    @app.post("/v1/subjects/{subject_id}/grade")
    def grade(subject_id: str, actor: Staff) -> dict[str, Any]:
        at = now()
        with ctx.engine.begin() as conn:
            result = regrade(conn, ctx.policy, [subject_id], at.date(), at)[subject_id]
        return {
            "score": result.score,
            "class": result.grade_class,
            "stars": result.stars,
            "policy_version": ctx.policy.version,
            "explanation": [line.as_dict() for line in result.lines],
        }

    @app.get("/v1/subjects/{subject_id}/eligibility")
    def eligibility(subject_id: str, actor: Staff) -> dict[str, Any]:
        with ctx.engine.connect() as conn:
            result = check_eligibility(conn, subject_id, now().date())
        return {"eligible": result.eligible, "reasons": list(result.reasons), "stars": result.stars}

    @app.post("/v1/cards/{serial}/revoke", status_code=204)
    def revoke(serial: str, body: RevokeIn, actor: Staff) -> None:
        ctx.issuance.revoke(serial, body.reason, now(), actor)

    @app.get("/c/{token}", response_class=HTMLResponse)
    def citizen_status(token: str) -> HTMLResponse:
        digest = hashlib.sha256(token.encode()).digest()
        with ctx.engine.connect() as conn:
            row = conn.execute(
                select(cards.c.state, cards.c.stars).where(cards.c.qr_token_hash == digest)
            ).first()
        # Unknown, revoked and malformed tokens get the same page: no enumeration oracle.
        if row is not None and row.state == "active":
            body = f"<p>有效 / Valid</p><p>{'★' * row.stars}</p>"
        else:
            body = "<p>此卡当前无效或无法识别 / This card is not valid or not recognised.</p>"
        page = (
            '<!doctype html><html lang="zh"><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>星级诚信卡</title><h1>星级诚信卡 Star Integrity Card</h1>{body}</html>"
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    return app
