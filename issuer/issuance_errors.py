"""Why an issuance stops: one base class, messages meant for the clerk at the counter.

By who is at fault: the person (:class:`NotEligible`), the card (:class:`CardRejected`,
:class:`CardSwapped`, :class:`CardCheckFailed`), a concurrent run (:class:`Superseded`),
infrastructure (:class:`HsmUnreachable`, retryable). The HTTP layer maps the base class.
"""

from __future__ import annotations


class IssuanceError(RuntimeError):
    """Issuance cannot go on; the message is meant for the clerk at the counter."""


class NotEligible(IssuanceError):
    """The person cannot get a card now; ``reasons`` are sentences to read aloud."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("not eligible: " + "; ".join(reasons))
        self.reasons = reasons


class CardCheckFailed(IssuanceError):
    """The card did not pass the self-check after writing; it is not activated."""


class CardSwapped(IssuanceError):
    """The card in the reader is not the one this personalization started with (serial or
    ATR changed). Nothing was written to it; put the first card back and re-run."""


class CardRejected(IssuanceError):
    """This card cannot be personalized here: it failed mutual authentication (not keyed by
    this issuer's master key), its secure channel is blocked, it is LOCKED or TERMINATED,
    it was secured by another personalization, or it was given up after a credential was
    signed for it."""


class Superseded(IssuanceError):
    """Another personalization for the same person started after this one (or the job was
    given up by reconciliation): this one stopped before its next card write."""


class HsmUnreachable(IssuanceError):
    """The HSM could not be reached; the job is kept in the state it reached (the message
    says which) and a re-run completes it once the HSM is back. Retryable."""
