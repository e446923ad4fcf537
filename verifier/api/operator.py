"""Operator routes: register, revoke and list terminals; take signed trust lists, status
lists and benefits catalogues (each verified before use: the operator token only decides who
may push, the signatures decide what is trusted)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException
from pydantic import BaseModel, Field

from verifier.api.auth import OperatorName
from verifier.core.benefits import BENEFITS_TYP
from verifier.core.errors import VerificationError
from verifier.core.trust_list import TRUST_LIST_TYP
from verifier.service import VerifierService
from verifier.store import Terminal, TerminalExists, VerifierStore
from verifier.terminal_auth import load_public_key

_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_CATEGORY = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class TerminalIn(BaseModel):
    id: str = Field(pattern=_ID)
    merchant_name: str = Field(min_length=1, max_length=200)
    category: str = Field(pattern=_CATEGORY, description='"office" sees star levels')
    public_key: str = Field(min_length=1, max_length=4096, description="PEM, Ed25519 or P-256")


class TerminalOut(BaseModel):
    id: str
    merchant_name: str
    category: str
    public_key: str
    registered_by: str
    registered_at: int
    revoked_at: int | None
    revoked_by: str | None

    @classmethod
    def of(cls, t: Terminal) -> TerminalOut:
        return cls(**asdict(t))


class TerminalsOut(BaseModel):
    terminals: list[TerminalOut]


def operator_router(
    service: VerifierService, store: VerifierStore, clock: Callable[[], float]
) -> APIRouter:
    router = APIRouter(tags=["operator"])

    @router.post("/v1/terminals", status_code=201)
    def register(body: TerminalIn, operator: OperatorName) -> TerminalOut:
        try:
            load_public_key(body.public_key)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        terminal = Terminal(
            body.id, body.merchant_name, body.category, body.public_key.strip() + "\n",
            operator, int(clock()),
        )  # fmt: skip
        try:
            store.register_terminal(terminal)
        except TerminalExists as exc:
            raise HTTPException(409, f"{exc}: pick another id (ids are never reused)") from None
        return TerminalOut.of(terminal)

    @router.post("/v1/terminals/{terminal_id}/revoke")
    def revoke(terminal_id: str, operator: OperatorName) -> TerminalOut:
        terminal = store.revoke_terminal(terminal_id, int(clock()), operator)
        if terminal is None:
            raise HTTPException(404, f"no terminal {terminal_id!r} is registered")
        return TerminalOut.of(terminal)

    @router.get("/v1/terminals")
    def list_terminals(_operator: OperatorName) -> TerminalsOut:
        return TerminalsOut(terminals=[TerminalOut.of(t) for t in store.terminals()])

    @router.post("/v1/trust-lists", status_code=204)
    def accept_trust_list(
        data: Annotated[bytes, Body(media_type=TRUST_LIST_TYP)], _operator: OperatorName
    ) -> None:
        _refusing("trust list", service.accept_trust_list, data, int(clock()))

    @router.post("/v1/status-lists", status_code=204)
    def accept_status_list(
        token: Annotated[bytes, Body(media_type="application/statuslist+cwt")],
        _operator: OperatorName,
    ) -> None:
        _refusing("status list", service.accept_status_list, token, int(clock()))

    @router.post("/v1/benefits", status_code=204)
    def accept_benefits(
        data: Annotated[bytes, Body(media_type=BENEFITS_TYP)], _operator: OperatorName
    ) -> None:
        _refusing("benefits catalogue", service.accept_benefits, data, int(clock()))

    return router


def _refusing(what: str, accept: Callable[[bytes, int], None], data: bytes, now: int) -> None:
    """Runs ``accept``; a verification failure is 409 naming its reason class."""
    try:
        accept(data, now)
    except VerificationError as exc:
        raise HTTPException(409, f"{what} refused: {exc.reason_class} ({exc.message})") from None
