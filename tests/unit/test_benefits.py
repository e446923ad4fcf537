"""The signed benefits catalogue and the one mapping from verdict to a terminal's answer."""

from __future__ import annotations

import pytest

from tests.keysigner import KeySigner
from verifier.core import errors
from verifier.core.benefits import (
    BenefitAnswer,
    BenefitsCache,
    BenefitsRollback,
    BenefitsUnavailable,
    issue_benefits,
    parse_benefits,
)
from verifier.core.errors import BadSignature, MalformedCredential, UntrustedKey
from verifier.core.keys import kid_for
from verifier.core.trust import TrustedKey, TrustStore
from verifier.core.verify import COARSE_REASONS, Verdict, answer_for

NOW = 1_800_000_000
ISSUER = KeySigner()
STATUS = KeySigner()
TRUST = TrustStore(
    [
        TrustedKey.for_public_key(ISSUER.public_key(), "credential", NOW - 10**6, NOW + 10**7),
        TrustedKey.for_public_key(STATUS.public_key(), "status_list", NOW - 10**6, NOW + 10**7),
    ]
)
RULES = {
    "library": {"min_stars": 2, "name": "免押金借阅"},
    "hotel": {"min_stars": 5, "name": "住宿"},
}


def catalogue(version: int = 1, exp: int = NOW + 3600, signer: KeySigner = ISSUER) -> bytes:
    return issue_benefits(
        RULES, version=version, iat=NOW, exp=exp, signer=signer, kid=kid_for(signer.public_key())
    )


def test_catalogue_round_trip_answers_by_category_and_stars() -> None:
    parsed = parse_benefits(catalogue(), TRUST, NOW)
    assert parsed.benefit_for("library", 2, NOW) == BenefitAnswer(True, "免押金借阅")
    assert parsed.benefit_for("library", 1, NOW) == BenefitAnswer(False, "免押金借阅")
    assert parsed.benefit_for("bakery", 5, NOW) == BenefitAnswer(False, None)


def test_catalogue_signed_by_the_status_key_or_a_stranger_is_refused() -> None:
    with pytest.raises(UntrustedKey):
        parse_benefits(catalogue(signer=STATUS), TRUST, NOW)
    with pytest.raises(UntrustedKey):
        parse_benefits(catalogue(signer=KeySigner()), TRUST, NOW)


def test_tampered_catalogue_is_refused() -> None:
    data = bytearray(catalogue())
    data[data.index("免".encode())] ^= 1
    with pytest.raises((BadSignature, MalformedCredential)):
        parse_benefits(bytes(data), TRUST, NOW)


def test_catalogue_rollback_and_equivocation_are_refused() -> None:
    cache = BenefitsCache()
    cache.accept(catalogue(version=2), TRUST, NOW)
    with pytest.raises(BenefitsRollback):
        cache.accept(catalogue(version=1), TRUST, NOW)
    with pytest.raises(BenefitsRollback):
        cache.accept(catalogue(version=2, exp=NOW + 7200), TRUST, NOW)
    cache.accept(catalogue(version=3), TRUST, NOW)
    assert cache.current is not None and cache.current.version == 3


def test_no_or_expired_catalogue_is_unavailable_never_a_made_up_benefit() -> None:
    cache = BenefitsCache()
    with pytest.raises(BenefitsUnavailable):
        cache.benefit_for("library", 5, NOW)
    cache.accept(catalogue(exp=NOW + 60), TRUST, NOW)
    with pytest.raises(BenefitsUnavailable):
        cache.benefit_for("library", 5, NOW + 60)
    with pytest.raises(BenefitsUnavailable):
        parse_benefits(catalogue(exp=NOW + 60), TRUST, NOW + 60)


@pytest.mark.parametrize(
    "rules",
    [
        {"office": {"min_stars": 1, "name": "x"}},
        {"x": {"min_stars": 6, "name": "y"}},
        {"x": {"min_stars": 1, "name": " "}},
        {"x": {"min_stars": 1}},
    ],
)
def test_issuer_cannot_sign_a_malformed_catalogue(rules: dict[str, dict[str, object]]) -> None:
    with pytest.raises(ValueError):
        issue_benefits(
            rules, version=1, iat=NOW, exp=NOW + 1, signer=ISSUER, kid=kid_for(ISSUER.public_key())
        )


def held() -> BenefitsCache:
    cache = BenefitsCache()
    cache.accept(catalogue(), TRUST, NOW)
    return cache


def test_office_sees_stars_merchant_only_its_benefit() -> None:
    valid = Verdict("valid", 4, None, serial="ab", assurance="high")
    office = answer_for(valid, "office", held(), NOW)
    assert (office.state, office.star_level, office.benefit) == ("valid", 4, None)
    merchant = answer_for(valid, "library", held(), NOW)
    assert (merchant.star_level, merchant.benefit) == (None, BenefitAnswer(True, "免押金借阅"))
    unknown = answer_for(valid, "library", BenefitsCache(), NOW)
    assert (unknown.state, unknown.reason_class) == ("unknown", "cannot_check")


@pytest.mark.parametrize(
    ("state", "reason", "coarse"),
    [
        ("invalid", "revoked", "not_valid"),
        ("invalid", "suspended", "not_valid"),
        ("invalid", "expired", "not_valid"),
        ("invalid", "not_genuine", "not_genuine"),
        ("invalid", "malformed", "not_genuine"),
        ("invalid", "replayed", "retry"),
        ("invalid", "challenge_expired", "retry"),
        ("invalid", "challenge_mismatch", "retry"),
        ("unknown", "unavailable", "cannot_check"),
        ("unknown", "internal_error", "cannot_check"),
    ],
)
def test_reasons_fold_into_coarse_classes(state: str, reason: str, coarse: str) -> None:
    answer = answer_for(Verdict(state, None, reason), "library", held(), NOW)  # type: ignore[arg-type]
    assert (answer.state, answer.reason_class, answer.detail) == (state, coarse, reason)
    assert answer.star_level is None and answer.benefit is None


def test_every_invalid_reason_class_is_mapped_explicitly() -> None:
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type)
        and issubclass(c, errors.VerificationError)
        and c.verdict == "invalid"
    ]
    assert {c.reason_class for c in classes} <= set(COARSE_REASONS)
