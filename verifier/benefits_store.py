"""The benefits catalogue's rollback watermark, kept across restarts.

:class:`~verifier.core.benefits.BenefitsCache` refuses an older catalogue than the one it
holds. A verifier restarted from its list cache may hold none (the cached one expired, or did
not load), yet must still refuse one older than it has ever accepted: :class:`MarkedBenefitsCache`
starts from the persisted :class:`BenefitsMark` (version and SHA-256 of the newest catalogue
accepted) and checks it while nothing is held.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from verifier.core.benefits import (
    BenefitCatalogue,
    BenefitsCache,
    BenefitsRollback,
    parse_benefits,
)
from verifier.core.trust import TrustStore

__all__ = ["BenefitsMark", "MarkedBenefitsCache", "check_mark", "mark_of"]


@dataclass(frozen=True)
class BenefitsMark:
    """The newest catalogue accepted: its ``version`` and the SHA-256 of its bytes."""

    version: int
    digest: bytes


def mark_of(catalogue: BenefitCatalogue) -> BenefitsMark:
    return BenefitsMark(catalogue.version, hashlib.sha256(catalogue.raw).digest())


def check_mark(mark: BenefitsMark | None, catalogue: BenefitCatalogue) -> None:
    """Raises :class:`BenefitsRollback` if ``catalogue`` is older than ``mark`` or differs
    from it at the same version."""
    if mark is None:
        return
    if catalogue.version < mark.version:
        raise BenefitsRollback(
            "benefits catalogue is older than one accepted before",
            detail=f"version {catalogue.version} < {mark.version}",
        )
    if catalogue.version == mark.version and not hmac.compare_digest(
        mark_of(catalogue).digest, mark.digest
    ):
        raise BenefitsRollback("two different benefits catalogues with the same version")


class MarkedBenefitsCache(BenefitsCache):
    """A :class:`BenefitsCache` that also refuses anything older than a restored watermark."""

    def __init__(self, mark: BenefitsMark | None = None) -> None:
        super().__init__()
        self._mark = mark

    @property
    def watermark(self) -> BenefitsMark | None:
        return self._mark

    def accept(self, data: bytes, trust: TrustStore, now: int) -> BenefitCatalogue:
        if self.current is None and self._mark is not None:
            check_mark(self._mark, parse_benefits(data, trust, now))
        accepted = super().accept(data, trust, now)
        self._mark = mark_of(accepted)
        return accepted
