"""Tap routes for terminals: challenge ``begin`` and ``complete`` with the answer it may see."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from verifier.api.auth import TerminalCaller
from verifier.core.verify import Answer
from verifier.service import VerifierService

MAX_CREDENTIAL_B64 = 4096


class ChallengeIn(BaseModel):
    context: str = Field(default="", max_length=128)


class ChallengeOut(BaseModel):
    handle: str
    challenge: str


class VerificationIn(BaseModel):
    handle: str = Field(min_length=1, max_length=1024)
    credential: str = Field(min_length=1, max_length=MAX_CREDENTIAL_B64)
    signature: str = Field(max_length=256)


class BenefitOut(BaseModel):
    granted: bool
    name: str | None = None


class AnswerOut(BaseModel):
    """``valid``: ``star_level`` (office) or ``benefit`` (merchant); otherwise a coarse
    ``reason_class``: ``not_valid``, ``not_genuine``, ``retry`` or ``cannot_check``."""

    state: Literal["valid", "invalid", "unknown"]
    star_level: int | None = None
    benefit: BenefitOut | None = None
    reason_class: str | None = None
    assurance: str | None = None

    @classmethod
    def of(cls, answer: Answer) -> AnswerOut:
        """The one place an :class:`Answer` becomes a response: the detail and the serial
        stay in the receipt."""
        benefit = answer.benefit
        return cls(
            state=answer.state,
            star_level=answer.star_level,
            benefit=None
            if benefit is None
            else BenefitOut(granted=benefit.granted, name=benefit.name),
            reason_class=answer.reason_class,
            assurance=answer.assurance,
        )


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64decode(text: str) -> bytes:
    """Raises 422 for text that is not base64url."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise HTTPException(422, "credential, signature must be base64url") from None


def taps_router(service: VerifierService, clock: Callable[[], float]) -> APIRouter:
    router = APIRouter(tags=["taps"])

    @router.post("/v1/challenges")
    async def begin(body: ChallengeIn, terminal: TerminalCaller) -> ChallengeOut:
        handle, challenge = service.begin(terminal.id, body.context.encode(), int(clock()))
        return ChallengeOut(handle=handle, challenge=b64encode(challenge))

    @router.post("/v1/verifications", response_model_exclude_none=True)
    def complete(body: VerificationIn, terminal: TerminalCaller) -> AnswerOut:
        answer = service.answer(
            body.handle,
            terminal.id,
            terminal.category,
            b64decode(body.credential),
            b64decode(body.signature),
            int(clock()),
        )
        return AnswerOut.of(answer)

    return router
