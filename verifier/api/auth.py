"""Who is calling the verifier: a terminal (signed request), an operator or the issuer service.

Terminals sign every request with their own key (:mod:`verifier.terminal_auth`); there is no
shared terminal key. Operators and the issuer service present ``Authorization: Bearer`` tokens
whose SHA-256 the settings hold. A credential of one kind never opens the endpoints of
another: terminal endpoints need the signature headers, operator endpoints an operator token,
the card-receipts endpoint the issuer service token.

Each terminal has a token bucket (``terminal_rate_per_s``, ``terminal_burst``): over it, 429
with ``Retry-After``. The buckets live in the instance's memory, so behind a load balancer
with N instances a terminal may get up to N times the rate.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from verifier.store import Terminal
from verifier.terminal_auth import (
    HEADER_SIGNATURE,
    HEADER_TERMINAL,
    HEADER_TIMESTAMP,
    TerminalAuthError,
    load_public_key,
    verify_request,
)

__all__ = ["IssuerService", "OperatorName", "TerminalCaller", "TokenBucket"]


class TokenBucket:
    """Per-key token buckets: ``rate_per_s`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float) -> float:
        """Takes one token; returns 0.0, or the seconds to wait when the bucket is empty."""
        with self._lock:
            tokens, last = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self._rate
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0


def _unauthorized(message: str, scheme: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": scheme})


async def authenticated_terminal(request: Request) -> Terminal:
    """The registered, unrevoked terminal whose key signed this request (401 otherwise;
    429 with Retry-After over its rate)."""
    state = request.app.state
    terminal_id = request.headers.get(HEADER_TERMINAL)
    if not terminal_id or HEADER_SIGNATURE not in request.headers:
        raise _unauthorized(
            f"terminal requests must be signed: send {HEADER_TERMINAL}, {HEADER_TIMESTAMP} "
            f"and {HEADER_SIGNATURE} (starcard-terminal does this with --key)",
            "StarCard-Terminal",
        )
    terminal: Terminal | None = await run_in_threadpool(state.store.terminal, terminal_id)
    if terminal is None:
        raise _unauthorized(
            "unknown terminal: an operator must register its public key first",
            "StarCard-Terminal",
        )
    if terminal.revoked_at is not None:
        raise _unauthorized("this terminal has been revoked", "StarCard-Terminal")
    now = state.clock()
    target = request.scope.get("raw_path", request.url.path.encode()).decode("ascii")
    query = request.scope.get("query_string", b"")
    if query:
        target += "?" + query.decode("ascii")
    try:
        verify_request(
            load_public_key(terminal.public_key),
            request.method,
            target,
            request.headers,
            await request.body(),
            int(now),
        )
    except TerminalAuthError as exc:
        raise _unauthorized(str(exc), "StarCard-Terminal") from None
    wait = state.limiter.take(terminal.id, now)
    if wait > 0:
        raise HTTPException(
            429,
            "too many requests from this terminal: wait and tap again",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    return terminal


def _bearer_digest(request: Request, who: str) -> bytes:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized(f"send the {who} token as 'Authorization: Bearer <token>'", "Bearer")
    return hashlib.sha256(token.strip().encode()).digest()


def operator_name(request: Request) -> str:
    """The operator whose token this is (401 otherwise); compares against every
    configured hash in constant time."""
    digest = _bearer_digest(request, "operator")
    found = None
    for name, expected in request.app.state.operator_tokens:
        if hmac.compare_digest(digest, bytes.fromhex(expected)):
            found = name
    if found is None:
        raise _unauthorized("not an operator token of this verifier", "Bearer")
    return str(found)


def issuer_service(request: Request) -> None:
    """Passes only for the issuer service's token (401 otherwise)."""
    digest = _bearer_digest(request, "issuer service")
    expected: str | None = request.app.state.issuer_token_sha256
    if expected is None or not hmac.compare_digest(digest, bytes.fromhex(expected)):
        raise _unauthorized("not the issuer service token of this verifier", "Bearer")


TerminalCaller = Annotated[Terminal, Depends(authenticated_terminal)]
OperatorName = Annotated[str, Depends(operator_name)]
IssuerService = Annotated[None, Depends(issuer_service)]
