"""Receipts: a terminal reads and uploads only its own; the issuer service reads a card's."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from verifier.api.auth import IssuerService, TerminalCaller
from verifier.core.timing import CLOCK_SKEW_S
from verifier.core.verify import coarse_reason
from verifier.store import Receipt, ReceiptConflict, VerifierStore

MAX_UPLOAD = 500
_SERIAL = r"^[0-9a-f]{1,64}$"


class ReceiptIn(BaseModel):
    """A receipt an offline terminal made at tap time (``id`` is its own uuid)."""

    id: uuid.UUID
    terminal_id: str = Field(min_length=1, max_length=64)
    at: int = Field(ge=0)
    serial: str | None = Field(default=None, pattern=_SERIAL)
    state: Literal["valid", "invalid", "unknown"]
    reason_class: str | None = Field(default=None, max_length=32)


class UploadIn(BaseModel):
    receipts: list[ReceiptIn] = Field(min_length=1, max_length=MAX_UPLOAD)


class UploadOut(BaseModel):
    stored: int
    already_held: int


class TerminalReceiptOut(BaseModel):
    """A terminal's view of its own receipt: the coarse class only."""

    id: str
    at: int
    category: str
    serial: str | None
    state: str
    reason_class: str | None
    offline: bool


class TerminalReceiptsOut(BaseModel):
    receipts: list[TerminalReceiptOut]


class CardCheckOut(BaseModel):
    at: int
    merchant_name: str
    category: str
    state: str


class CardChecksOut(BaseModel):
    serial: str
    checks: list[CardCheckOut]


def receipts_router(store: VerifierStore, clock: Callable[[], float]) -> APIRouter:
    router = APIRouter(tags=["receipts"])

    @router.get("/v1/receipts")
    def own_receipts(
        terminal: TerminalCaller, limit: Annotated[int, Query(ge=1, le=MAX_UPLOAD)] = 100
    ) -> TerminalReceiptsOut:
        return TerminalReceiptsOut(
            receipts=[
                TerminalReceiptOut(
                    id=r.id,
                    at=r.at,
                    category=r.category,
                    serial=r.serial,
                    state=r.state,
                    reason_class=coarse_reason(r.state, r.reason_class),
                    offline=r.offline,
                )
                for r in store.receipts_of_terminal(terminal.id, limit)
            ]
        )

    @router.post("/v1/receipts")
    def upload(body: UploadIn, terminal: TerminalCaller) -> UploadOut:
        latest = int(clock()) + CLOCK_SKEW_S
        for item in body.receipts:
            if item.terminal_id != terminal.id:
                raise HTTPException(
                    403, f"receipt {item.id} names another terminal: upload only your own"
                )
            if item.at > latest:
                raise HTTPException(422, f"receipt {item.id} is dated in the future")
        batch = [
            Receipt(
                str(item.id),
                terminal.id,
                terminal.category,
                item.at,
                item.serial,
                item.state,
                item.reason_class,
                offline=True,
            )
            for item in body.receipts
        ]
        try:
            stored = store.add_receipts(batch)
        except ReceiptConflict as exc:
            raise HTTPException(409, f"{exc}: make a new uuid per receipt") from None
        return UploadOut(stored=stored, already_held=len(batch) - stored)

    @router.get("/v1/cards/{serial}/receipts")
    def card_checks(
        serial: Annotated[str, Path(pattern=_SERIAL)], _issuer: IssuerService
    ) -> CardChecksOut:
        return CardChecksOut(
            serial=serial,
            checks=[
                CardCheckOut(
                    at=c.at, merchant_name=c.merchant_name, category=c.category, state=c.state
                )
                for c in store.checks_of_card(serial)
            ],
        )

    return router
