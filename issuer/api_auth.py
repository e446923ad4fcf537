"""Who is calling the issuer API: the staff principal and its role, as FastAPI dependencies.

Roles (least privilege, ``docs/staff.md``):

- ``operator``: issuance at the counter; sees masked subject data and what issuance needs.
- ``supervisor``: everything an operator does, plus decisions (objections, repair, lists,
  review), revocations and staff management.
- ``auditor``: reads the audit log and verifies its chain; no personal data.

Routers declare the roles they admit with ``Depends(require_roles(...))`` and receive the
:class:`Principal` (its ``name`` goes to the audit log).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Header, HTTPException, Request

Role = Literal["operator", "supervisor", "auditor"]
ROLES: tuple[Role, ...] = ("operator", "supervisor", "auditor")


@dataclass(frozen=True)
class Principal:
    """An authenticated staff member (or the bootstrap token, which acts as a supervisor)."""

    name: str
    role: Role


def _authenticate(request: Request, authorization: str | None) -> Principal:
    """The bootstrap staff token, checked in constant time (staff accounts extend this)."""
    presented = (authorization or "").removeprefix("Bearer ").encode()
    expected: bytes = request.app.state.staff_token_hash
    if not hmac.compare_digest(hashlib.sha256(presented).digest(), expected):
        raise HTTPException(401, "staff token required", headers={"WWW-Authenticate": "Bearer"})
    return Principal("staff", "supervisor")


def require_roles(*roles: Role) -> Callable[..., Principal]:
    """A dependency that admits an authenticated principal holding one of ``roles``."""
    admitted = frozenset(roles)

    def dependency(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Principal:
        principal = _authenticate(request, authorization)
        if principal.role not in admitted:
            raise HTTPException(403, f"this needs the role {' or '.join(sorted(admitted))}")
        return principal

    return dependency


Operator = Annotated[Principal, Depends(require_roles("operator", "supervisor"))]
Supervisor = Annotated[Principal, Depends(require_roles("supervisor"))]
Auditor = Annotated[Principal, Depends(require_roles("auditor", "supervisor"))]
