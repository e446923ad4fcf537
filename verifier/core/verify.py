"""Verifying a tap, written as the numbered steps of the StarCard trust spec.

``verify_card`` raises a :class:`VerificationError` at the first failing step and returns
a :class:`VerifiedCard` only when every step passed:

0. **Clock**: ``now`` earlier than the newest status list already accepted (minus the skew)
   means the verifier's clock is wrong → :class:`ClockBehindWatermark` (``unknown``).
1. **Parse** the credential strictly (:func:`parse_credential`): malformed →
   :class:`MalformedCredential`, alg other than ES256 → :class:`UnsupportedAlgorithm`.
2. **Issuer key**: the ``kid`` must be trusted for purpose ``credential`` at ``now``
   (:class:`UntrustedKey`; :class:`TrustDataMissing` if no usable trust data).
3. **Issuer signature** over the exact received bytes (:class:`BadSignature`).
4. **Validity**: ``nbf <= now + CLOCK_SKEW_S`` (:class:`NotYetValid`) and
   ``now - CLOCK_SKEW_S < exp`` (:class:`Expired`).
5. **Challenge freshness**: ``now < challenge.expires_at`` (:class:`ChallengeExpired`).
6. **Card signature** over ``challenge_bytes(challenge)`` with the ``cnf`` key from the
   credential (never a key the card reports): anything else → :class:`CloneSuspected`.
   A credential of a keyless profile (no ``cnf``, e.g. ``iso7816-fs``) skips this step
   and is marked ``assurance="low"``: nothing proves the card is not a copy.
7. **Status** from the held status list: INVALID → :class:`Revoked`, SUSPENDED →
   :class:`Suspended`, other values → :class:`StatusUnrecognized`; missing, expired or
   rolled-back data → the :class:`CannotVerify` family.

``decide`` runs the same steps and turns the outcome into a three-state :class:`Verdict`.
``answer_for`` turns a verdict into what one terminal may see (:class:`Answer`): an office the
star level, a merchant only the yes/no of its category's benefit, and a coarse reason class
that never tells a revoked card from a suspended or expired one.
It never returns ``valid`` if anything raised, and returns ``valid`` for a low-assurance card
only when the caller's policy says ``accept_low_assurance`` (otherwise ``invalid`` with
reason class ``"low_assurance"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from verifier.core.benefits import OFFICE_CATEGORY, BenefitAnswer, BenefitsCache
from verifier.core.challenge import ChallengeState, challenge_bytes, check_fresh
from verifier.core.cose import verify_sign1
from verifier.core.credential import parse_credential
from verifier.core.errors import (
    BadSignature,
    CannotVerify,
    CloneSuspected,
    Expired,
    MalformedCredential,
    NotYetValid,
    Revoked,
    StatusUnrecognized,
    Suspended,
    UnsupportedAlgorithm,
    VerificationError,
)
from verifier.core.keys import verify_es256
from verifier.core.status_list import INVALID, SUSPENDED, VALID, StatusListCache
from verifier.core.timing import CLOCK_SKEW_S
from verifier.core.trust import TrustStore

__all__ = [
    "CLOCK_SKEW_S",
    "COARSE_REASONS",
    "Answer",
    "Verdict",
    "VerifiedCard",
    "answer_for",
    "coarse_reason",
    "decide",
    "verify_card",
]

CoarseReason = Literal["not_valid", "not_genuine", "retry", "cannot_check"]
COARSE_REASONS: dict[str, CoarseReason] = {
    # the holder's status: a card that lost its star looks like any other invalid card
    "revoked": "not_valid",
    "suspended": "not_valid",
    "expired": "not_valid",
    # the card or credential is not what the issuer made
    "not_genuine": "not_genuine",
    "malformed": "not_genuine",
    "untrusted": "not_genuine",
    "low_assurance": "not_genuine",
    # the tap itself went wrong: tap again
    "challenge_expired": "retry",
    "challenge_mismatch": "retry",
    "replayed": "retry",
}
"""Detailed reason class of an ``invalid`` verdict → the class a terminal is shown. Anything
``unknown`` is ``cannot_check``; an unlisted ``invalid`` reason is ``not_genuine``."""


@dataclass(frozen=True)
class VerifiedCard:
    """A card that passed every step. ``assurance`` is ``"high"``: the card proved
    possession of the key bound in the credential (clone protection)."""

    serial: bytes
    star_level: int
    policy_version: str
    profile: str
    exp: int
    assurance: Literal["high", "low"] = "high"


@dataclass(frozen=True)
class Verdict:
    """The three-state answer for a merchant.

    ``star_level`` is set only when ``state == "valid"``; ``reason_class`` only when it is
    not. ``serial`` (hex) is set when the credential parsed and its issuer signature
    verified, for receipts. ``diagnostics`` is for logs, never for merchants.
    """

    state: Literal["valid", "invalid", "unknown"]
    star_level: int | None
    reason_class: str | None
    serial: str | None = None
    diagnostics: str | None = None
    assurance: Literal["high", "low"] | None = None


def verify_card(
    credential: bytes,
    card_signature: bytes,
    challenge: ChallengeState,
    trust: TrustStore,
    status: StatusListCache,
    now: int,
) -> VerifiedCard:
    """Run steps 1–7 (module docstring); return the verified card or raise."""
    # 0. A clock behind the newest status list already accepted is wrong: fail closed as
    #    "cannot verify" before any time-dependent step could call the card expired.
    status.check_clock(now)
    # 1. Parse (unverified, strict).
    cred = parse_credential(credential)
    claims = cred.claims
    # 2. Issuer key by kid and purpose, valid now.
    issuer_key = trust.lookup(cred.kid, "credential", now)
    issuer_key.check_signed_at(claims.iat)
    if issuer_key.alg != cred.message.alg:
        raise UnsupportedAlgorithm("credential alg differs from the trusted key's alg")
    # 3. Issuer signature over the bytes as received.
    verify_sign1(cred.message, issuer_key.public_key)
    # 4. Validity window, with the documented clock skew.
    if now + CLOCK_SKEW_S < claims.nbf:
        raise NotYetValid("credential is not valid yet", detail=f"nbf {claims.nbf}, now {now}")
    if now - CLOCK_SKEW_S >= claims.exp:
        raise Expired("credential has expired", detail=f"exp {claims.exp}, now {now}")
    # 5. The challenge is still fresh.
    check_fresh(challenge, now)
    # 6. The card proves possession of the cnf key over this challenge (keyed profiles).
    if claims.has_card_key:
        try:
            verify_es256(claims.card_public_key, card_signature, challenge_bytes(challenge))
        except (BadSignature, MalformedCredential) as exc:
            raise CloneSuspected(
                "card signature over the challenge does not verify with the bound key",
                detail=f"serial {claims.cti.hex()}: {type(exc).__name__}",
            ) from exc
    # 7. Status list.
    value = status.status_of(claims.status_uri, claims.status_idx, now)
    if value == INVALID:
        raise Revoked("credential is revoked", detail=f"serial {claims.cti.hex()}")
    if value == SUSPENDED:
        raise Suspended("credential is suspended", detail=f"serial {claims.cti.hex()}")
    if value != VALID:
        raise StatusUnrecognized(f"status value {value} is not defined")
    return VerifiedCard(
        serial=claims.cti,
        star_level=claims.star_level,
        policy_version=claims.policy_version,
        profile=claims.profile,
        exp=claims.exp,
        assurance="high" if claims.has_card_key else "low",
    )


def decide(
    credential: bytes,
    card_signature: bytes,
    challenge: ChallengeState,
    trust: TrustStore,
    status: StatusListCache,
    now: int,
    *,
    accept_low_assurance: bool = False,
) -> Verdict:
    """Three-state verdict: ``valid`` only if :func:`verify_card` returned.

    :class:`CannotVerify` → ``unknown``; any other :class:`VerificationError` →
    ``invalid`` with its ``reason_class``; any unexpected exception (a bug, never the
    card's fault) → ``unknown`` with reason class ``"internal_error"``. Never raises for a
    bad card.
    """
    try:
        card = verify_card(credential, card_signature, challenge, trust, status, now)
    except VerificationError as exc:
        return Verdict(
            state=exc.verdict,
            star_level=None,
            reason_class=exc.reason_class,
            serial=_serial_for_receipt(credential, trust, now),
            diagnostics=exc.diagnostics(),
        )
    except Exception as exc:  # fail safe: a bug must not turn into "valid" or "invalid"
        return Verdict(
            state="unknown",
            star_level=None,
            reason_class="internal_error",
            diagnostics=f"unexpected {type(exc).__name__}: {exc}",
        )
    if card.assurance == "low" and not accept_low_assurance:
        return Verdict(
            state="invalid",
            star_level=None,
            reason_class="low_assurance",
            serial=card.serial.hex(),
            diagnostics=f"profile {card.profile} has no card key; policy refuses low assurance",
            assurance="low",
        )
    return Verdict(
        state="valid",
        star_level=card.star_level,
        reason_class=None,
        serial=card.serial.hex(),
        assurance=card.assurance,
    )


def _serial_for_receipt(credential: bytes, trust: TrustStore, now: int) -> str | None:
    """The serial of a credential whose issuer signature verifies, else ``None``: a receipt
    must never name a serial an attacker made up."""
    try:
        cred = parse_credential(credential)
        verify_sign1(cred.message, trust.lookup(cred.kid, "credential", now).public_key)
    except Exception:  # no verified serial: the receipt just has none
        return None
    return cred.claims.cti.hex()


def coarse_reason(
    state: Literal["valid", "invalid", "unknown"], reason_class: str | None
) -> CoarseReason | None:
    """The class a terminal is shown for a detailed ``reason_class`` (None when valid)."""
    if state == "valid":
        return None
    if state == "unknown":
        return "cannot_check"
    return COARSE_REASONS.get(reason_class or "", "not_genuine")


@dataclass(frozen=True)
class Answer:
    """What one terminal is told about one tap.

    ``valid``: ``star_level`` for an office, ``benefit`` for a merchant (never both).
    ``invalid``/``unknown``: ``reason_class`` is coarse (:data:`COARSE_REASONS`).
    ``detail`` (the verdict's detailed reason class) and ``serial`` are for receipts and
    logs only, never for the terminal's response.
    """

    state: Literal["valid", "invalid", "unknown"]
    star_level: int | None = None
    benefit: BenefitAnswer | None = None
    reason_class: CoarseReason | None = None
    assurance: Literal["high", "low"] | None = None
    detail: str | None = None
    serial: str | None = None


def answer_for(verdict: Verdict, category: str, benefits: BenefitsCache, now: int) -> Answer:
    """The one mapping from a :class:`Verdict` to what a terminal of ``category`` sees.

    A merchant's ``valid`` needs a held, unexpired benefits catalogue; without one the
    answer is ``unknown``/``cannot_check`` (never a made-up benefit).
    """
    if verdict.state != "valid":
        return Answer(
            verdict.state,
            reason_class=coarse_reason(verdict.state, verdict.reason_class),
            detail=verdict.reason_class,
            serial=verdict.serial,
        )
    stars = verdict.star_level or 0
    if category == OFFICE_CATEGORY:
        return Answer("valid", star_level=stars, assurance=verdict.assurance, serial=verdict.serial)
    try:
        benefit = benefits.benefit_for(category, stars, now)
    except CannotVerify:
        return Answer(
            "unknown",
            reason_class="cannot_check",
            detail="benefits_unavailable",
            serial=verdict.serial,
        )
    return Answer("valid", benefit=benefit, assurance=verdict.assurance, serial=verdict.serial)
