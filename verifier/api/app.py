"""Verifier HTTP API: challenge ``begin`` and ``complete``, status-list intake, health.

Merchants get the three-state answer and a coarse reason class only. Time is read here (the
composition root of a request) and handed to the service as ``now``.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Body, FastAPI, HTTPException
from pydantic import BaseModel, Field

from verifier.core.errors import VerificationError
from verifier.core.trust_list import TRUST_LIST_TYP
from verifier.service import VerifierService
from verifier.settings import VerifierSettings

MAX_CREDENTIAL_B64 = 4096


class ChallengeIn(BaseModel):
    terminal_id: str = Field(min_length=1, max_length=64)
    context: str = Field(default="", max_length=128)


class ChallengeOut(BaseModel):
    handle: str
    challenge: str


class VerificationIn(BaseModel):
    terminal_id: str = Field(min_length=1, max_length=64)
    handle: str = Field(min_length=1, max_length=1024)
    credential: str = Field(min_length=1, max_length=MAX_CREDENTIAL_B64)
    signature: str = Field(min_length=1, max_length=256)


class VerdictOut(BaseModel):
    state: str
    star_level: int | None = None
    reason_class: str | None = None
    assurance: str | None = None


def _b64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise HTTPException(422, "fields must be base64url") from None


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def create_app(
    settings: VerifierSettings,
    *,
    service: VerifierService | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Builds the app from ``settings``; ``service`` lets a caller share a wired one."""
    if service is None:
        service = VerifierService.from_trust_list(
            settings.root(),
            settings.trust_list.read_bytes(),
            int(clock()),
            challenge_ttl_s=settings.challenge_ttl_s,
            accept_low_assurance=settings.accept_low_assurance,
        )
    app = FastAPI(title="StarCard verifier", version="0.1.0")
    app.state.service = service

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/challenges")
    async def begin(body: ChallengeIn) -> ChallengeOut:
        handle, challenge = service.begin(body.terminal_id, body.context.encode(), int(clock()))
        return ChallengeOut(handle=handle, challenge=b64encode(challenge))

    @app.post("/v1/verifications")
    async def complete(body: VerificationIn) -> VerdictOut:
        verdict = service.complete(
            body.handle,
            body.terminal_id,
            _b64(body.credential),
            _b64(body.signature),
            int(clock()),
        )
        return VerdictOut(
            state=verdict.state,
            star_level=verdict.star_level,
            reason_class=verdict.reason_class,
            assurance=verdict.assurance,
        )

    @app.post("/v1/trust-lists", status_code=204)
    def accept_trust_list(
        data: Annotated[bytes, Body(media_type=TRUST_LIST_TYP)],
    ) -> None:
        try:
            service.accept_trust_list(data, int(clock()))
        except VerificationError as exc:
            raise HTTPException(409, f"trust list refused: {exc.reason_class}") from None

    @app.post("/v1/status-lists", status_code=204)
    def accept_status_list(
        token: Annotated[bytes, Body(media_type="application/statuslist+cwt")],
    ) -> None:
        try:
            service.accept_status_list(token, int(clock()))
        except VerificationError as exc:
            raise HTTPException(409, f"status list refused: {exc.reason_class}") from None

    return app
