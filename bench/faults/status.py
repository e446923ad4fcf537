"""Status-list attacks on the verifier's cache (the state machine of
tests/unit/test_status_list_attacks.py, whose token builders and merchant tap are reused):
stale, rollback, freeze, mix-and-match, fast-forward, clock skew, oversize, zlib bomb. After
each attack a genuine card whose status is revoked (or unknowable) must never tap valid."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from tests.unit.test_status_list_attacks import (
    ATTACKER,
    DAY,
    IDX,
    NOW,
    TRUST,
    URI_B,
    YEAR,
    raw_token,
    status_token,
    tap,
)
from verifier.core.errors import VerificationError
from verifier.core.status_list import (
    INVALID,
    MAX_TOKEN_BYTES,
    StatusListCache,
    StatusListToken,
)
from verifier.core.timing import CLOCK_SKEW_S
from verifier.core.trust import TrustStore

from .core import Category, Probe

Cache = Callable[[], StatusListCache]


def offer(probe: Probe, cache: StatusListCache, token: bytes, now: int, **kw: str) -> None:
    """One attacker-controlled list offered to the cache (refusal is the expected outcome)."""
    probe.fault()
    with suppress(VerificationError):
        cache.accept(token, TRUST, now, **kw)


def revoked_then(cache: Cache) -> StatusListCache:
    held = cache()
    held.accept(status_token({IDX: INVALID}, iat=NOW + 60), TRUST, NOW + 60)
    return held


def scenarios(cache: Cache) -> dict[str, Callable[[Probe], None]]:
    def rollback(probe: Probe) -> None:
        held = revoked_then(cache)
        offer(probe, held, status_token(iat=NOW), NOW + 120)
        probe.verdict(tap(held, NOW + 120).state, "a revoked card after a rollback")

    def equivocation(probe: Probe) -> None:
        held = revoked_then(cache)
        offer(probe, held, status_token(iat=NOW + 60, exp=NOW + 2 * DAY), NOW + 120)
        probe.verdict(tap(held, NOW + 120).state, "a revoked card after a same-iat list")

    def stale(probe: Probe) -> None:
        held = cache()
        held.accept(status_token(exp=NOW + 600), TRUST, NOW)
        probe.fault()  # no newer list arrives
        probe.verdict(tap(held, NOW + 600).state, "a tap on an expired list")

    def freeze(probe: Probe) -> None:
        held = cache()
        offer(probe, held, status_token(exp=NOW + 600), NOW + 600)
        probe.verdict(tap(held, NOW + 600).state, "a tap on a frozen (replayed expired) list")

    def mix_and_match(probe: Probe) -> None:
        held = revoked_then(cache)
        offer(probe, held, status_token(iat=NOW + 120, uri=URI_B), NOW + 120)
        offer(probe, held, status_token(iat=NOW + 130, uri=URI_B), NOW + 130, uri=URI_B)
        probe.verdict(tap(held, NOW + 130).state, "a revoked card after another URI's list")

    def fast_forward(probe: Probe) -> None:
        held = revoked_then(cache)
        forged = status_token(iat=NOW + YEAR, exp=NOW + YEAR + DAY, signer=ATTACKER)
        offer(probe, held, forged, NOW + 120)
        probe.verdict(tap(held, NOW + 120).state, "a revoked card after an untrusted list")

    def clock_behind(probe: Probe) -> None:
        held = cache()
        held.accept(status_token(iat=NOW), TRUST, NOW)
        probe.fault()
        for behind in (NOW - CLOCK_SKEW_S - 1, 86_400):
            probe.verdict(tap(held, behind).state, f"a tap with the clock at {behind}")

    def clock_ahead(probe: Probe) -> None:
        held = revoked_then(cache)
        ahead = status_token(iat=NOW + 60 + CLOCK_SKEW_S * 3, exp=NOW + YEAR)
        offer(probe, held, ahead, NOW + 60)
        probe.verdict(tap(held, NOW + 60).state, "a revoked card after a future-dated list")

    def oversize(probe: Probe) -> None:
        held = revoked_then(cache)
        offer(probe, held, b"\xd2" + bytes(MAX_TOKEN_BYTES), NOW + 120)
        lie = b"\xd2\x84\x5b" + (2**62).to_bytes(8, "big") + b"\x00" * 16
        offer(probe, held, lie, NOW + 120)
        probe.verdict(tap(held, NOW + 120).state, "a revoked card after oversized input")

    def zlib_bomb(probe: Probe) -> None:
        from tests.unit.test_status_list_attacks import BOMB

        held = revoked_then(cache)
        offer(probe, held, raw_token(BOMB, iat=NOW + 120), NOW + 120)
        probe.verdict(tap(held, NOW + 120).state, "a revoked card after a zlib bomb")

    return {
        "rollback": rollback,
        "equivocation": equivocation,
        "stale": stale,
        "freeze": freeze,
        "mix_and_match": mix_and_match,
        "fast_forward_untrusted": fast_forward,
        "clock_behind_watermark": clock_behind,
        "clock_ahead": clock_ahead,
        "oversize": oversize,
        "zlib_bomb": zlib_bomb,
    }


def run(quick: bool) -> Category:
    category = Category("status")
    for name, fn in scenarios(StatusListCache).items():
        category.run(name, fn)
    return category


class NoWatermarkCache(StatusListCache):
    """CONTROL ONLY: a cache that forgets its rollback watermark before each list."""

    def accept(
        self, token_bytes: bytes, trust: TrustStore, now: int, *, uri: str | None = None
    ) -> StatusListToken:
        self._marks.clear()
        return super().accept(token_bytes, trust, now, uri=uri)


def control_no_rollback_watermark(category: Category) -> None:
    category.run("rollback", scenarios(NoWatermarkCache)["rollback"])
