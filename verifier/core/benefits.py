"""The signed benefits catalogue: which benefit a merchant category grants from which star level.

**Format.** A tagged COSE_Sign1 (see :mod:`.cose`) signed by the issuer's **credential** key
(its ``kid`` is looked up in the trust list, purpose ``credential``), protected
``{1: alg, 4: kid, 16: "application/starcard-benefits+cwt"}``, payload a canonical CBOR map::

    {"version": uint, "iat": int, "exp": int,
     "categories": {category: {"min_stars": 1..5, "name": text}, ...}}

One benefit per merchant category; the category ``"office"`` is reserved (offices see the
star level, never a benefit). The issuer builds the catalogue from its policy file with
:func:`issue_benefits` (plain dicts in, exact bytes out); the policy already refuses benefits
that are basic public services.

**Acceptance** (:class:`BenefitsCache`, pure): signature by a key trusted for ``credential``
whose signing window holds ``iat``; ``iat`` not in the future beyond the clock skew; not
expired (:class:`BenefitsUnavailable`, verdict ``unknown``); ``version`` never lower than the
one held and an equal version must be the same bytes (:class:`BenefitsRollback`).

**Answers.** :meth:`BenefitCatalogue.benefit_for` says yes/no (and the benefit's name) for
one category and star level. A category the catalogue does not list gets "no benefit": the
signed catalogue is the whole truth. No catalogue, or an expired one, raises
:class:`BenefitsUnavailable`: a merchant then gets ``unknown``, never a made-up benefit.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from verifier.core.cbor import decode_strict, encode
from verifier.core.cose import HDR_TYP, IssuerSigner, parse_sign1, sign1, verify_sign1
from verifier.core.errors import (
    CannotVerify,
    InputTooLarge,
    MalformedCredential,
    NotYetValid,
    UnsupportedAlgorithm,
)
from verifier.core.timing import CLOCK_SKEW_S
from verifier.core.trust import TrustStore

__all__ = [
    "BENEFITS_TYP",
    "MAX_BENEFITS_BYTES",
    "OFFICE_CATEGORY",
    "BenefitAnswer",
    "BenefitCatalogue",
    "BenefitRule",
    "BenefitsCache",
    "BenefitsRollback",
    "BenefitsUnavailable",
    "issue_benefits",
    "parse_benefits",
]

BENEFITS_TYP = "application/starcard-benefits+cwt"
MAX_BENEFITS_BYTES = 64 * 1024
OFFICE_CATEGORY = "office"
"""Terminals of this category see the star level; every other category is a merchant's."""
_DOC_KEYS = frozenset({"version", "iat", "exp", "categories"})
_RULE_KEYS = frozenset({"min_stars", "name"})
_MAX_CATEGORY = 64
_MAX_NAME = 200


class BenefitsUnavailable(CannotVerify):
    """No benefits catalogue is held, or the held one has expired: merchants get ``unknown``."""


class BenefitsRollback(CannotVerify):
    """An offered catalogue is older than the one held, or differs with the same version."""


@dataclass(frozen=True)
class BenefitRule:
    """The benefit of one merchant category, granted from ``min_stars`` stars up."""

    category: str
    min_stars: int
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.category, str) or not 0 < len(self.category) <= _MAX_CATEGORY:
            raise ValueError("a category is a non-empty text of at most 64 characters")
        if self.category == OFFICE_CATEGORY:
            raise ValueError("category 'office' sees star levels and has no benefit")
        if type(self.min_stars) is not int or not 1 <= self.min_stars <= 5:
            raise ValueError(f"min_stars of {self.category!r} must be an int from 1 to 5")
        if not isinstance(self.name, str) or not 0 < len(self.name.strip()) <= _MAX_NAME:
            raise ValueError(f"the benefit of {self.category!r} needs a name")


@dataclass(frozen=True)
class BenefitAnswer:
    """What a merchant learns: whether the holder gets its category's benefit, and its name
    (``None`` when the catalogue lists no benefit for the category)."""

    granted: bool
    name: str | None


@dataclass(frozen=True)
class BenefitCatalogue:
    """A verified catalogue: exact bytes, version, validity and one rule per category."""

    raw: bytes
    version: int
    iat: int
    exp: int
    rules: Mapping[str, BenefitRule]

    def benefit_for(self, category: str, stars: int, now: int) -> BenefitAnswer:
        """Yes/no for a holder of ``stars`` at a merchant of ``category``.

        Raises :class:`BenefitsUnavailable` if the catalogue has expired at ``now``.
        """
        if now >= self.exp:
            raise BenefitsUnavailable(
                "benefits catalogue has expired", detail=f"exp {self.exp}, now {now}"
            )
        rule = self.rules.get(category)
        if rule is None:
            return BenefitAnswer(granted=False, name=None)
        return BenefitAnswer(granted=stars >= rule.min_stars, name=rule.name)


def issue_benefits(
    categories: Mapping[str, Mapping[str, object]],
    *,
    version: int,
    iat: int,
    exp: int,
    signer: IssuerSigner,
    kid: bytes,
) -> bytes:
    """Signs a catalogue with the issuer's credential key; returns its exact bytes.

    ``categories`` maps each merchant category to ``{"min_stars": int, "name": str}``.
    Raises ValueError for a malformed catalogue (bad rule, the ``office`` category,
    ``exp <= iat``, negative version) or a ``kid`` that is not the signer's.
    """
    if type(version) is not int or version < 0:
        raise ValueError("version must be an int >= 0")
    if type(iat) is not int or type(exp) is not int or exp <= iat:
        raise ValueError("a catalogue needs int iat < exp")
    rules: dict[str, dict[str, object]] = {}
    for category, rule in categories.items():
        if set(rule) != _RULE_KEYS:
            raise ValueError(f"{category!r} must be exactly {{'min_stars', 'name'}}")
        min_stars, name = rule["min_stars"], rule["name"]
        if type(min_stars) is not int or not isinstance(name, str):
            raise ValueError(f"{category!r} needs an int min_stars and a text name")
        BenefitRule(category, min_stars, name)  # checks the rule now, not at the verifier
        rules[category] = {"min_stars": min_stars, "name": name}
    payload = {"version": version, "iat": iat, "exp": exp, "categories": rules}
    return sign1(encode(payload), signer, kid, {HDR_TYP: BENEFITS_TYP})


def parse_benefits(data: bytes, trust: TrustStore, now: int) -> BenefitCatalogue:
    """Parses and verifies a catalogue against the keys ``trust`` holds for ``credential``.

    Steps: (0) size bound (:class:`InputTooLarge`); (1) strict COSE_Sign1 with the benefits
    ``typ``; (2) the ``kid`` is trusted for ``credential`` at ``now`` with the header's alg
    (:class:`UntrustedKey`, :class:`UnsupportedAlgorithm`, :class:`TrustDataMissing`);
    (3) the signature verifies (:class:`BadSignature`); (4) the payload is exactly the
    documented map (:class:`MalformedCredential`); (5) ``iat`` is not in the future beyond
    the clock skew (:class:`NotYetValid`) and lies in the key's signing window;
    (6) the catalogue has not expired (:class:`BenefitsUnavailable`).
    """
    if len(data) > MAX_BENEFITS_BYTES:
        raise InputTooLarge("benefits catalogue is larger than allowed")
    message = parse_sign1(data)
    if message.typ != BENEFITS_TYP:
        raise MalformedCredential(f"protected typ is not {BENEFITS_TYP}")
    key = trust.lookup(message.kid, "credential", now)
    if key.alg != message.alg:
        raise UnsupportedAlgorithm("benefits catalogue alg differs from the trusted key's alg")
    verify_sign1(message, key.public_key)
    doc = decode_strict(message.payload)
    if not isinstance(doc, dict) or set(doc) != _DOC_KEYS:
        raise MalformedCredential("benefits payload is not {version, iat, exp, categories}")
    version, iat, exp, categories = doc["version"], doc["iat"], doc["exp"], doc["categories"]
    if not all(type(v) is int for v in (version, iat, exp)) or version < 0 or exp <= iat:
        raise MalformedCredential("benefits version/iat/exp must be ints with iat < exp")
    if not isinstance(categories, dict):
        raise MalformedCredential("benefits categories must be a map")
    rules: dict[str, BenefitRule] = {}
    for category, rule in categories.items():
        if not isinstance(category, str) or not isinstance(rule, dict) or set(rule) != _RULE_KEYS:
            raise MalformedCredential("a benefit rule must be text -> {min_stars, name}")
        try:
            rules[category] = BenefitRule(category, rule["min_stars"], rule["name"])
        except ValueError as exc:
            raise MalformedCredential("benefit rule is invalid", detail=str(exc)) from exc
    if iat > now + CLOCK_SKEW_S:
        raise NotYetValid("benefits catalogue is issued in the future", detail=f"iat {iat}")
    key.check_signed_at(iat)
    if now >= exp:
        raise BenefitsUnavailable("benefits catalogue has expired", detail=f"exp {exp}")
    return BenefitCatalogue(data, version, iat, exp, MappingProxyType(rules))


class BenefitsCache:
    """The verifier's catalogue: the newest accepted one, with rollback protection."""

    def __init__(self) -> None:
        self._current: BenefitCatalogue | None = None

    @property
    def current(self) -> BenefitCatalogue | None:
        return self._current

    def accept(self, data: bytes, trust: TrustStore, now: int) -> BenefitCatalogue:
        """Verifies ``data`` and makes it current; raises (keeping the held one) on a bad,
        expired or older catalogue (:class:`BenefitsRollback`)."""
        catalogue = parse_benefits(data, trust, now)
        held = self._current
        if held is not None:
            if catalogue.version < held.version:
                raise BenefitsRollback(
                    "benefits catalogue is older than the one held",
                    detail=f"version {catalogue.version} < {held.version}",
                )
            if catalogue.version == held.version and not hmac.compare_digest(
                hashlib.sha256(data).digest(), hashlib.sha256(held.raw).digest()
            ):
                raise BenefitsRollback("two different benefits catalogues with the same version")
        self._current = catalogue
        return catalogue

    def benefit_for(self, category: str, stars: int, now: int) -> BenefitAnswer:
        """The held catalogue's answer; :class:`BenefitsUnavailable` if none or expired."""
        if self._current is None:
            raise BenefitsUnavailable("no benefits catalogue has been accepted")
        return self._current.benefit_for(category, stars, now)
