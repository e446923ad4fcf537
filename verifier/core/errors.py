"""Verification errors: one base, two families, coarse reason classes for merchants.

Every failure of :mod:`verifier.core` raises a :class:`VerificationError`. The class decides
the three-state verdict (see :func:`verifier.core.verify.decide`):

* ``verdict == "invalid"``: the card or credential itself is at fault (malformed, untrusted,
  forged, expired, cloned, revoked, suspended).
* ``verdict == "unknown"`` (:class:`CannotVerify` and subclasses): our own status or trust
  data is missing, stale or inconsistent; the card may well be fine. Never ``valid``, never
  ``invalid``.

``reason_class`` is the coarse, merchant-facing reason (``"malformed"``, ``"untrusted"``,
``"expired"``, ``"not_genuine"``, ``"revoked"``, ``"suspended"``, ``"challenge_expired"``,
``"challenge_mismatch"``; ``"unavailable"`` for :class:`CannotVerify`).
:func:`verifier.core.verify.answer_for` folds them further into what a terminal is shown
(``not_valid``, ``not_genuine``, ``retry``, ``cannot_check``).
:meth:`VerificationError.diagnostics` is the detail for logs only.
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "BadSignature",
    "CannotVerify",
    "ChallengeExpired",
    "ChallengeMismatch",
    "ClockBehindWatermark",
    "CloneSuspected",
    "DuplicateMapKey",
    "Expired",
    "IndefiniteLength",
    "InputTooLarge",
    "MalformedCredential",
    "NonCanonicalEncoding",
    "NotYetValid",
    "Revoked",
    "Sm2Unavailable",
    "StatusIndexOutOfRange",
    "StatusListExpired",
    "StatusListMissing",
    "StatusListRollback",
    "StatusListUriMismatch",
    "StatusUnrecognized",
    "Suspended",
    "TrailingBytes",
    "TrustDataMissing",
    "UnexpectedCborType",
    "UnsupportedAlgorithm",
    "UntrustedKey",
    "VerificationError",
]


class VerificationError(Exception):
    """Base of every verification failure.

    ``str(err)`` is a short message; ``diagnostics()`` adds the error class and any detail
    (never secrets, but possibly identifiers: for logs, not for merchants).
    """

    reason_class: ClassVar[str] = "malformed"
    verdict: ClassVar[Literal["invalid", "unknown"]] = "invalid"

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def diagnostics(self) -> str:
        """A one-line description for logs: class, message and detail."""
        text = f"{type(self).__name__} [{self.verdict}/{self.reason_class}]: {self.message}"
        return f"{text} ({self.detail})" if self.detail else text


# -- invalid: the credential or the card is at fault -------------------------------------


class MalformedCredential(VerificationError):
    """A signed artefact (credential or status list token) is not well formed."""

    reason_class = "malformed"


class DuplicateMapKey(MalformedCredential):
    """A CBOR map repeats a key."""


class NonCanonicalEncoding(MalformedCredential):
    """The CBOR is valid but not in canonical (deterministic, shortest) form."""


class IndefiniteLength(MalformedCredential):
    """The CBOR uses an indefinite-length string or container."""


class TrailingBytes(MalformedCredential):
    """Bytes follow the single CBOR data item."""


class UnexpectedCborType(MalformedCredential):
    """A CBOR item has a type this format does not allow (float, undefined, tags...)."""


class InputTooLarge(MalformedCredential):
    """The raw input exceeds the size cap of its format; it was refused before parsing."""


class UnsupportedAlgorithm(VerificationError):
    """The ``alg`` header names an algorithm we do not accept (only ES256 today)."""

    reason_class = "untrusted"


class UntrustedKey(VerificationError):
    """The ``kid`` is unknown, of the wrong purpose, or outside its validity window."""

    reason_class = "untrusted"


class BadSignature(VerificationError):
    """The issuer signature does not verify: forged or altered."""

    reason_class = "not_genuine"


class NotYetValid(VerificationError):
    """``nbf`` (or a token's ``iat``) lies in the future beyond the allowed clock skew."""

    reason_class = "expired"


class Expired(VerificationError):
    """``exp`` has passed (beyond the allowed clock skew)."""

    reason_class = "expired"


class CloneSuspected(VerificationError):
    """The card's signature over the challenge does not verify with the ``cnf`` key."""

    reason_class = "not_genuine"


class Revoked(VerificationError):
    """The status list marks the credential INVALID."""

    reason_class = "revoked"


class Suspended(VerificationError):
    """The status list marks the credential SUSPENDED."""

    reason_class = "suspended"


class ChallengeExpired(VerificationError):
    """The terminal's challenge is older than its time-to-live: the tap was too slow."""

    reason_class = "challenge_expired"


class ChallengeMismatch(VerificationError):
    """The challenge the card answered is not the one this terminal issued."""

    reason_class = "challenge_mismatch"


# -- unknown: our own data does not allow an answer ---------------------------------------


class CannotVerify(VerificationError):
    """Status or trust data is missing, stale or inconsistent: the answer is ``unknown``."""

    reason_class = "unavailable"
    verdict = "unknown"


class StatusListExpired(CannotVerify):
    """The held status list is past its ``exp`` (freeze attack or publisher outage)."""


class StatusListMissing(CannotVerify):
    """No status list is held for the URI the credential references."""


class StatusListRollback(CannotVerify):
    """An offered status list is older than (or conflicts with) the one already held."""


class StatusListUriMismatch(CannotVerify):
    """A validly signed status list is for another URI than the one it was fetched for
    (mix-and-match): it is never used for credentials that reference the expected URI."""


class ClockBehindWatermark(CannotVerify):
    """The verifier's clock (``now``) lies before the newest status list ``iat`` it has
    already accepted, minus the allowed skew: the clock is wrong, so no time-dependent
    answer can be trusted (fail closed)."""


class Sm2Unavailable(CannotVerify):
    """An SM2-with-SM3 signature must be checked but the optional ``[sm2]`` extra (the
    ``gmssl-pyx`` package) is not installed: our misconfiguration, verdict ``unknown``."""


class StatusIndexOutOfRange(CannotVerify):
    """The credential's status index lies outside the held list."""


class StatusUnrecognized(CannotVerify):
    """The status list holds a value this verifier does not define (e.g. 3)."""


class TrustDataMissing(CannotVerify):
    """No trust data is loaded, or it is past its validity."""


class TrustListRollback(CannotVerify):
    """A trust list older than the one held (or a different one with the same seq)."""
