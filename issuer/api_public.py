"""Public issuer artefacts that verifiers fetch: the signed benefits catalogue.

``GET /.well-known/starcard/benefits`` serves the catalogue of :mod:`verifier.core.benefits`
built from the current policy's ``[benefits]``, signed with the issuer's credential key, with
a strong ETag (``304`` on ``If-None-Match``) like the trust list.

**One benefit per category.** The verifier's format holds one benefit per merchant category;
the policy may list several benefits for one category. The catalogue takes, per category, the
benefit with the **lowest** ``min_stars`` (ties: the benefit whose key sorts first), so that a
holder is never told "no" where some benefit of the policy applies. The category ``office`` is
reserved for star-level terminals and never carries a benefit (such entries are left out).

**Version.** The catalogue's ``version`` is the unix second it was signed (``iat``), bumped
to one more than the last version this process issued if the clock has not moved on. Verifiers
refuse a lower version and a different catalogue with an equal one, so the version must never
go backwards: it only could if the issuer's clock stepped back across a restart — the same
clock that dates every grade, card and status list, which is kept by NTP. A signed catalogue
is kept in memory and served unchanged (same bytes, same ETag) until half of its validity has
passed, then re-signed with a new version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import APIRouter, Header, Response

from hsm_sim.errors import HsmUnavailable
from issuer.issuance_errors import HsmUnreachable
from issuer.policy import Benefit
from issuer.wiring import IssuerContext
from verifier.core.benefits import BENEFITS_TYP, OFFICE_CATEGORY, issue_benefits

BENEFITS_VALIDITY_S = 7 * 86_400
"""How long a signed catalogue is valid; it is re-signed after half of it."""
BENEFITS_MAX_AGE_S = 3600

__all__ = ["BENEFITS_VALIDITY_S", "catalogue_categories", "etagged", "public_router"]


def etagged(body: bytes, media_type: str, if_none_match: str | None, max_age: int) -> Response:
    """A signed artefact with a strong ETag; ``304`` when the client already has it."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": f"max-age={max_age}"}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def catalogue_categories(benefits: Mapping[str, Benefit]) -> dict[str, dict[str, object]]:
    """``{category: {"min_stars", "name"}}`` with the lowest-``min_stars`` benefit per
    merchant category (ties: the first key in sort order); ``office`` is left out."""
    chosen: dict[str, Benefit] = {}
    for _, benefit in sorted(benefits.items()):
        for category in benefit.merchant_categories:
            if category == OFFICE_CATEGORY:
                continue
            held = chosen.get(category)
            if held is None or benefit.min_stars < held.min_stars:
                chosen[category] = benefit
    return {
        category: {"min_stars": b.min_stars, "name": b.name}
        for category, b in sorted(chosen.items())
    }


class _SignedCatalogue:
    """The catalogue this process serves: re-signed when half its validity has passed."""

    def __init__(self, ctx: IssuerContext) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._data = b""
        self._version = -1
        self._iat = 0

    def current(self, now: int) -> bytes:
        """Raises HsmUnreachable (retryable) when the catalogue must be signed and cannot."""
        with self._lock:
            if not self._data or now - self._iat >= BENEFITS_VALIDITY_S // 2 or now < self._iat:
                version = max(now, self._version + 1)
                try:
                    data = issue_benefits(
                        catalogue_categories(self._ctx.policy.benefits),
                        version=version,
                        iat=now,
                        exp=now + BENEFITS_VALIDITY_S,
                        signer=self._ctx.keys.credential,
                        kid=self._ctx.keys.credential_kid,
                    )
                except HsmUnavailable as exc:
                    raise HsmUnreachable(
                        f"the benefits catalogue cannot be signed now (HSM: {exc}); retry later"
                    ) from None
                self._data, self._version, self._iat = data, version, now
            return self._data


def public_router(ctx: IssuerContext, now: Callable[[], dt.datetime]) -> APIRouter:
    router = APIRouter(tags=["public"])
    catalogue = _SignedCatalogue(ctx)

    @router.get(
        "/.well-known/starcard/benefits",
        response_class=Response,
        responses={
            200: {"content": {BENEFITS_TYP: {}}, "description": "the signed catalogue"},
            304: {"description": "the client's copy (If-None-Match) is current"},
            503: {"description": "the HSM is unreachable; retry after Retry-After"},
        },
    )
    def benefits(if_none_match: Annotated[str | None, Header()] = None) -> Response:
        """The signed benefits catalogue (module docstring: one benefit per category)."""
        data = catalogue.current(int(now().timestamp()))
        return etagged(data, BENEFITS_TYP, if_none_match, BENEFITS_MAX_AGE_S)

    return router
