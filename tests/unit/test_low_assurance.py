"""Keyless (iso7816-fs) credentials: no cnf, low assurance, and policy decides."""

from __future__ import annotations

import cbor2
import pytest

from tests.keysigner import KeySigner
from tests.unit.test_verify import NOW, TRUST, URI, YEAR, World
from verifier.core.challenge import begin
from verifier.core.credential import (
    CLAIM_CNF,
    CredentialClaims,
    issue_credential,
    parse_credential,
    qr_token_binding,
)
from verifier.core.errors import MalformedCredential
from verifier.core.keys import kid_for
from verifier.core.verify import decide, verify_card


def keyless_claims(profile: str = "iso7816-fs", card_key: bytes | None = None) -> CredentialClaims:
    return CredentialClaims(
        iss="sc.example.cn",
        iat=NOW,
        nbf=NOW,
        exp=NOW + YEAR,
        cti=bytes.fromhex("1122334455667788"),
        card_key=card_key,
        status_idx=7,
        status_uri=URI,
        star_level=2,
        policy_version="2026.1",
        profile=profile,
        qr_hash=qr_token_binding("t"),
    )


def keyless_credential(signer: KeySigner) -> bytes:
    return issue_credential(keyless_claims(), signer, kid_for(signer.public_key()))


def test_keyless_credential_has_no_cnf_and_round_trips() -> None:
    world = World()
    raw = keyless_credential(world.signer)
    parsed = parse_credential(raw)
    assert parsed.claims.card_key is None
    assert not parsed.claims.has_card_key
    payload = cbor2.loads(cbor2.loads(raw).value[2])
    assert CLAIM_CNF not in payload
    assert len(raw) < 250


def test_a_keyed_profile_cannot_drop_its_cnf() -> None:
    with pytest.raises(ValueError, match="needs a card key"):
        keyless_claims(profile="starcard-v1")
    with pytest.raises(ValueError, match="has no card key"):
        keyless_claims(card_key=World().card.point())


def test_forged_keyless_starcard_credential_is_malformed() -> None:
    """A starcard-v1 credential re-encoded without cnf cannot even be parsed."""
    world = World()
    raw = world.credential()
    outer = cbor2.loads(raw)
    claims = cbor2.loads(outer.value[2])
    del claims[CLAIM_CNF]
    protected, unprotected, _, signature = outer.value
    forged = cbor2.CBORTag(
        18, [protected, dict(unprotected), cbor2.dumps(claims, canonical=True), signature]
    )
    with pytest.raises(MalformedCredential):
        parse_credential(cbor2.dumps(forged, canonical=True))


def test_low_assurance_card_verifies_as_low_and_policy_decides() -> None:
    world = World()
    raw = keyless_credential(world.signer)
    state = begin("t-1", b"ctx", NOW)
    card = verify_card(raw, b"", state, TRUST, world.status_cache(), NOW)
    assert card.assurance == "low"
    refused = decide(raw, b"", state, TRUST, world.status_cache(), NOW)
    assert (refused.state, refused.reason_class) == ("invalid", "low_assurance")
    accepted = decide(raw, b"", state, TRUST, world.status_cache(), NOW, accept_low_assurance=True)
    assert (accepted.state, accepted.star_level, accepted.assurance) == ("valid", 2, "low")


def test_high_assurance_verdict_says_so() -> None:
    world = World()
    cred, sig, state = world.tap()
    verdict = decide(cred, sig, state, TRUST, world.status_cache(), NOW)
    assert (verdict.state, verdict.assurance) == ("valid", "high")


def test_revoked_low_assurance_card_is_invalid_even_when_accepted() -> None:
    world = World(statuses={7: 1})
    raw = keyless_credential(world.signer)
    state = begin("t-1", b"ctx", NOW)
    verdict = decide(raw, b"", state, TRUST, world.status_cache(), NOW, accept_low_assurance=True)
    assert (verdict.state, verdict.reason_class) == ("invalid", "revoked")
