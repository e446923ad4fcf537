"""Who is calling the issuer API: the staff principal and its role, as FastAPI dependencies.

Roles (least privilege, ``docs/staff.md``):

- ``operator``: issuance at the counter; sees masked subject data and what issuance needs.
- ``supervisor``: everything an operator does, plus decisions (objections, repair, lists,
  review), revocations and staff management.
- ``auditor``: reads the audit log and verifies its chain; no personal data.

A caller presents ``Authorization: Bearer <token>``: a session token from
``POST /v1/staff/sessions`` (:mod:`issuer.staff`), or the bootstrap token given to
:func:`issuer.api.create_app` (first setup and tests; it acts as the supervisor
``bootstrap``). Routers declare the roles they admit with ``Depends(require_roles(...))`` or
the aliases below and receive the :class:`Principal` (its ``name`` goes to the audit log).

The app state carries ``context`` (the :class:`~issuer.wiring.IssuerContext`), ``clock``
(the composition root's ``now``) and ``staff_token_hash`` (SHA-256 of the bootstrap token).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from issuer.staff import ROLES, Role, SessionInvalid, authenticate, is_session_token

__all__ = [
    "ROLES",
    "AnyStaff",
    "Auditor",
    "Operator",
    "OperatorName",
    "Principal",
    "Role",
    "Supervisor",
    "SupervisorName",
    "bearer_token",
    "require_roles",
]

BOOTSTRAP = "bootstrap"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    """An authenticated staff member (or the bootstrap token, which acts as a supervisor)."""

    name: str
    role: Role


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header ("" when there is none)."""
    return (authorization or "").removeprefix("Bearer ").strip()


def _authenticate(request: Request, authorization: str | None) -> Principal:
    """The session's staff member, or the bootstrap supervisor (compared in constant time).

    Raises HTTPException 401 saying what to do: log in (again).
    """
    presented = bearer_token(authorization)
    if not presented:
        raise HTTPException(
            401,
            "staff token required: log in with POST /v1/staff/sessions and send "
            "'Authorization: Bearer <token>'",
            headers=_CHALLENGE,
        )
    if is_session_token(presented):
        now: Callable[[], dt.datetime] = request.app.state.clock
        try:
            with request.app.state.context.engine.begin() as conn:
                member = authenticate(conn, presented, now())
        except SessionInvalid as exc:
            raise HTTPException(401, str(exc), headers=_CHALLENGE) from None
        return Principal(member.name, member.role)
    expected: bytes = request.app.state.staff_token_hash
    if not hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), expected):
        raise HTTPException(
            401,
            "unknown staff token: log in again with POST /v1/staff/sessions",
            headers=_CHALLENGE,
        )
    return Principal(BOOTSTRAP, "supervisor")


def require_roles(*roles: Role) -> Callable[..., Principal]:
    """A dependency that admits an authenticated principal holding one of ``roles``."""
    admitted = frozenset(roles)

    def dependency(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Principal:
        principal = _authenticate(request, authorization)
        if principal.role not in admitted:
            raise HTTPException(
                403,
                f"{principal.name} is {principal.role}; this needs the role "
                f"{' or '.join(sorted(admitted))}",
            )
        return principal

    return dependency


Operator = Annotated[Principal, Depends(require_roles("operator", "supervisor"))]
Supervisor = Annotated[Principal, Depends(require_roles("supervisor"))]
Auditor = Annotated[Principal, Depends(require_roles("auditor", "supervisor"))]
AnyStaff = Annotated[Principal, Depends(require_roles(*ROLES))]


def _operator_name(principal: Operator) -> str:
    return principal.name


def _supervisor_name(principal: Supervisor) -> str:
    return principal.name


OperatorName = Annotated[str, Depends(_operator_name)]
"""An operator or supervisor, as the actor name for the audit log."""
SupervisorName = Annotated[str, Depends(_supervisor_name)]
"""A supervisor, as the actor name for the audit log."""
