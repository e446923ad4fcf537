"""Staff API: log-in and logout, staff accounts, and the audit log (``docs/staff.md``,
``docs/audit.md``).

- ``POST /v1/staff/sessions`` (no token): name and password → session token and expiry;
  401 with the reason (wrong name or password, locked, disabled).
- ``DELETE /v1/staff/sessions/current`` (any staff session): ends the caller's session.
- ``POST /v1/staff/accounts``, ``POST /v1/staff/accounts/{name}/disable`` (supervisor).
- ``GET /v1/audit/events`` (auditor): filtered, paged by ``seq``; subjects appear only as
  their pseudonymous ids. ``POST /v1/audit/verify`` (auditor): the chain and its signed
  checkpoints; 409 with the first broken link and its kind.

Staff errors map to HTTP here (the router's own small table); every read of the audit log
and every verification is itself audited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from issuer.api_auth import AnyStaff, Auditor, Supervisor, bearer_token
from issuer.audit import EventFilter, audit, list_events
from issuer.audit_verify import AuditChainBroken, audit_keys, verify_chain
from issuer.staff import (
    LoginRefused,
    Role,
    SessionInvalid,
    StaffError,
    StaffExists,
    UnknownStaff,
    create_account,
    disable_account,
    is_session_token,
    log_in,
    log_out,
)
from issuer.wiring import IssuerContext

MAX_PAGE = 500


class LoginIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024, repr=False)


class AccountIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(min_length=1, max_length=1024, repr=False)


def _staff_error(exc: StaffError) -> HTTPException:
    if isinstance(exc, UnknownStaff):
        return HTTPException(404, str(exc))
    if isinstance(exc, StaffExists):
        return HTTPException(409, str(exc))
    return HTTPException(422, str(exc))


def staff_router(ctx: IssuerContext, now: Callable[[], dt.datetime]) -> APIRouter:
    """Staff sessions and accounts, and the audit log, on ``ctx``; ``now`` is the clock."""
    router = APIRouter(tags=["staff"])

    @router.post("/v1/staff/sessions", status_code=201)
    def login(body: LoginIn) -> dict[str, Any]:
        """Opens a session; send its token as ``Authorization: Bearer <token>``."""
        try:
            session = log_in(ctx.engine, body.name, body.password, now())
        except LoginRefused as exc:
            raise HTTPException(401, str(exc)) from None
        return {
            "token": session.token,
            "name": session.name,
            "role": session.role,
            "expires_at": session.expires_at.isoformat(),
            "idle_timeout_s": int(session.idle_timeout.total_seconds()),
        }

    @router.delete("/v1/staff/sessions/current", status_code=204)
    def logout(principal: AnyStaff, authorization: Annotated[str | None, Header()] = None) -> None:
        token = bearer_token(authorization)
        if not is_session_token(token):
            raise HTTPException(400, f"{principal.name} has no session to end (bootstrap token)")
        try:
            with ctx.engine.begin() as conn:
                log_out(conn, token, now())
        except SessionInvalid as exc:
            raise HTTPException(401, str(exc)) from None

    @router.post("/v1/staff/accounts", status_code=201)
    def add_account(body: AccountIn, principal: Supervisor) -> dict[str, str]:
        try:
            with ctx.engine.begin() as conn:
                create_account(conn, body.name, body.role, body.password, now(), principal.name)
        except StaffError as exc:
            raise _staff_error(exc) from None
        return {"name": body.name, "role": body.role}

    @router.post("/v1/staff/accounts/{name}/disable", status_code=204)
    def disable(name: str, principal: Supervisor) -> None:
        if name == principal.name:
            raise HTTPException(422, "you cannot disable your own account: ask another supervisor")
        try:
            with ctx.engine.begin() as conn:
                disable_account(conn, name, now(), principal.name)
        except StaffError as exc:
            raise _staff_error(exc) from None

    @router.get("/v1/audit/events")
    def events(
        principal: Auditor,
        actor: Annotated[str | None, Query(max_length=64)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        subject_id: Annotated[str | None, Query(max_length=32)] = None,
        card_serial: Annotated[str | None, Query(max_length=16)] = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        after_seq: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        """Events in chain order; ``next_after_seq`` pages on (null on the last page)."""
        where = EventFilter(actor, action, subject_id, card_serial, since, until)
        with ctx.engine.begin() as conn:
            found = list_events(conn, where, after_seq=after_seq, limit=limit)
            audit(conn, now(), principal.name, "audit.events_read", returned=len(found))
        more = len(found) == limit
        return {
            "events": [e.as_dict() for e in found],
            "next_after_seq": found[-1].seq if more else None,
        }

    @router.post("/v1/audit/verify")
    def verify(principal: Auditor) -> JSONResponse:
        """200 with what was verified, or 409 with the first broken link and its kind."""
        keys = audit_keys(ctx.hsm)
        try:
            with ctx.engine.connect() as conn:
                report = verify_chain(conn, keys)
        except AuditChainBroken as exc:
            with ctx.engine.begin() as conn:
                audit(conn, now(), principal.name, "audit.verified", ok=False, kind=str(exc.kind))
            body = {"detail": str(exc), "kind": str(exc.kind), "seq": exc.seq}
            return JSONResponse(body, status_code=409)
        with ctx.engine.begin() as conn:
            audit(conn, now(), principal.name, "audit.verified", ok=True, events=report.events)
        return JSONResponse(
            {
                "ok": True,
                "events": report.events,
                "head_seq": report.head_seq,
                "head_hash": report.head_hash,
                "checkpoints": report.checkpoints,
                "last_checkpoint_seq": report.last_checkpoint_seq,
            }
        )

    return router
