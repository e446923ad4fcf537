"""Verifier HTTP API: the app factory.

Routes live in routers per caller: :mod:`.taps` (terminals: challenge ``begin`` and
``complete``), :mod:`.receipts` (terminals' own receipts, the issuer's card view) and
:mod:`.operator` (terminals, trust lists, status lists, benefits). Who may call what is
:mod:`.auth`. Time is read here (the composition root) and handed on as ``now``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from verifier.api.auth import TokenBucket
from verifier.api.operator import operator_router
from verifier.api.receipts import receipts_router
from verifier.api.responses import ERROR_RESPONSES
from verifier.api.taps import b64decode, b64encode, taps_router
from verifier.core.errors import CannotVerify, VerificationError
from verifier.service import VerifierService
from verifier.settings import VerifierSettings
from verifier.store import VerifierStore

__all__ = ["b64decode", "b64encode", "create_app"]

log = logging.getLogger("starcard.verifier")


def create_app(
    settings: VerifierSettings,
    *,
    service: VerifierService | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Builds the app from ``settings``. ``service`` lets a caller share a wired one (e.g.
    kept current by the list sync); unless its ledger already is a :class:`VerifierStore`,
    it is given the settings' store and seal key here.

    Raises RuntimeError naming what to fix (unreadable root or trust list, a benefits file
    that does not verify).
    """
    now = int(clock())
    if service is None:
        store = VerifierStore.connect(settings.database_url)
        options: dict[str, object] = {}
        if settings.seal_key is not None:
            options["seal_key"] = settings.seal_key
        try:
            service = VerifierService.from_trust_list(
                settings.root(),
                settings.trust_list.read_bytes(),
                now,
                challenge_ttl_s=settings.challenge_ttl_s,
                accept_low_assurance=settings.accept_low_assurance,
                ledger=store,
                **options,
            )
        except (OSError, VerificationError) as exc:
            raise RuntimeError(f"trust list {settings.trust_list} is not usable: {exc}") from None
    elif isinstance(service.ledger, VerifierStore):
        store = service.ledger
    else:  # a service built elsewhere (e.g. from the list cache): wire it to the settings
        store = VerifierStore.connect(settings.database_url)
        service.ledger = store
        if settings.seal_key is not None:
            service.seal_key = settings.seal_key
    if settings.benefits is not None:
        _load_benefits(service, settings, now)

    app = FastAPI(title="StarCard verifier", version="0.2.0", responses=ERROR_RESPONSES)
    app.state.service = service
    app.state.store = store
    app.state.clock = clock
    app.state.limiter = TokenBucket(settings.terminal_rate_per_s, settings.terminal_burst)
    app.state.operator_tokens = settings.operator_tokens
    app.state.issuer_token_sha256 = settings.issuer_token_sha256

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "not ready: what is missing"}})
    async def readyz() -> JSONResponse:
        """200 once a usable trust list and at least one unexpired status list are held;
        503 before (an instance that could only answer ``unknown``)."""
        missing = not_ready(service, int(clock()))
        if missing:
            return JSONResponse({"status": "not ready", "missing": missing}, status_code=503)
        return JSONResponse({"status": "ready"})

    app.include_router(taps_router(service, clock))
    app.include_router(receipts_router(store, clock))
    app.include_router(operator_router(service, store, clock))
    return app


def not_ready(service: VerifierService, now: int) -> list[str]:
    """What keeps ``service`` from answering anything but ``unknown`` at ``now`` (empty: it
    is ready): no usable trust list, or no unexpired status list."""
    missing: list[str] = []
    if service.trust_lists is not None:
        try:
            service.trust_lists.store(now)
        except CannotVerify:
            missing.append("trust list (none held, or expired)")
    status = service.status
    tokens = [status.token(uri) for uri in status.watermark]
    if not any(token is not None and now < token.exp for token in tokens):
        missing.append("status list (none held, or all expired)")
    return missing


def _load_benefits(service: VerifierService, settings: VerifierSettings, now: int) -> None:
    """An expired catalogue file still lets the verifier start (merchants get ``unknown``
    until a fresh one is posted); one that does not verify is a misconfiguration."""
    assert settings.benefits is not None
    try:
        service.accept_benefits(settings.benefits.read_bytes(), now)
    except CannotVerify as exc:
        log.warning("benefits catalogue %s not used: %s", settings.benefits, exc.diagnostics())
    except (OSError, VerificationError) as exc:
        raise RuntimeError(f"benefits catalogue {settings.benefits} is not usable: {exc}") from None
