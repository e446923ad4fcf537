"""The credential CWT: size, round trip, strict parsing, and tamper evidence bit by bit."""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.keysigner import KeySigner
from verifier.core.cose import parse_sign1, sign1, verify_sign1
from verifier.core.credential import (
    CLAIM_CNF,
    CLAIM_STAR_LEVEL,
    CredentialClaims,
    issue_credential,
    parse_credential,
    qr_token_binding,
)
from verifier.core.errors import MalformedCredential, UntrustedKey, VerificationError
from verifier.core.keys import (
    cose_key_from_public,
    kid_for,
    p256_to_point,
    public_from_cose_key,
)
from verifier.core.trust import TrustedKey, TrustStore

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
YEAR = 365 * 24 * 3600


ISSUER = KeySigner()
ISSUER_KID = kid_for(ISSUER.public_key())
CARD = ec.generate_private_key(ec.SECP256R1())
TRUST = TrustStore([TrustedKey.for_public_key(ISSUER.public_key(), "credential", 0, 2**40)])


def realistic_claims(**overrides: object) -> CredentialClaims:
    values: dict[str, object] = {
        "iss": "sc.example.cn",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 3 * YEAR,
        "cti": bytes.fromhex("5343000000012345"),
        "card_key": p256_to_point(CARD.public_key()),
        "status_idx": 2**32 - 1,  # the largest index: its CBOR head is the longest
        "status_uri": "https://sc.example.cn/s/1",
        "star_level": 5,
        "policy_version": "2026.1",
        "profile": "starcard-v1",
        "qr_hash": qr_token_binding("Qm9u2f7xk3YpT1vQe8Zr0w"),
    }
    values.update(overrides)
    return CredentialClaims(**values)  # type: ignore[arg-type]


def issue(**overrides: object) -> bytes:
    return issue_credential(realistic_claims(**overrides), ISSUER, ISSUER_KID)


def parse_and_verify(data: bytes) -> CredentialClaims:
    cred = parse_credential(data)
    verify_sign1(cred.message, TRUST.lookup(cred.kid, "credential", NOW).public_key)
    return cred.claims


def resign_payload(claims: dict[Any, object], typ: object = 61) -> bytes:
    """A credential whose (bad) claims carry a *valid* issuer signature."""
    return sign1(cbor2.dumps(claims, canonical=True), ISSUER, ISSUER_KID, {16: typ})


def test_size_is_under_300_bytes() -> None:
    data = issue()
    print(f"credential size: {len(data)} bytes")
    assert len(data) < 300


def test_round_trip_keeps_exact_bytes_and_claims() -> None:
    claims = realistic_claims()
    data = issue_credential(claims, ISSUER, ISSUER_KID)
    cred = parse_credential(data)
    assert cred.raw == data
    assert cred.kid == ISSUER_KID
    assert cred.claims == claims
    assert cred.claims.card_public_key.public_numbers() == CARD.public_key().public_numbers()
    assert parse_and_verify(data) == claims


def test_card_key_is_bound_in_compressed_form() -> None:
    payload = cbor2.loads(parse_credential(issue()).message.payload)
    cose_key = payload[CLAIM_CNF][1]
    assert set(cose_key) == {1, -1, -2, -3}
    assert isinstance(cose_key[-3], bool)


def test_every_single_bit_flip_is_rejected() -> None:
    data = issue()
    rejected = 0
    for bit in range(len(data) * 8):
        tampered = bytearray(data)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(VerificationError):
            parse_and_verify(bytes(tampered))
        rejected += 1
    assert rejected == len(data) * 8


def test_unknown_issuer_kid_is_untrusted() -> None:
    other = KeySigner()
    data = issue_credential(realistic_claims(), other, kid_for(other.public_key()))
    with pytest.raises(UntrustedKey):
        parse_and_verify(data)


def test_missing_claim_is_rejected() -> None:
    claims: dict[Any, object] = dict(realistic_claims().to_cbor_map())
    del claims[CLAIM_STAR_LEVEL]
    with pytest.raises(MalformedCredential, match="required set"):
        parse_credential(resign_payload(claims))


def test_extra_claim_is_rejected() -> None:
    claims: dict[Any, object] = dict(realistic_claims().to_cbor_map())
    claims[-65541] = "surprise"
    with pytest.raises(MalformedCredential, match="required set"):
        parse_credential(resign_payload(claims))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (CLAIM_STAR_LEVEL, 6),
        (CLAIM_STAR_LEVEL, -1),
        (CLAIM_STAR_LEVEL, True),
        (CLAIM_STAR_LEVEL, "5"),
        (4, True),  # exp as a boolean
        (4, NOW - 10),  # exp before nbf
        (1, b"sc.example.cn"),  # iss as bytes
        (-65540, b"\x00" * 15),  # QR binding too short
        (7, b""),  # empty serial
        (65535, {"status_list": {"idx": -1, "uri": "https://sc.example.cn/s/1"}}),
        (65535, {"status_list": {"idx": 1}}),
        (65535, {"status": {"idx": 1, "uri": "u"}}),
        (8, {2: b"\x00"}),
    ],
)
def test_wrongly_typed_claims_are_rejected(key: int, value: object) -> None:
    claims: dict[Any, object] = dict(realistic_claims().to_cbor_map())
    claims[key] = value
    with pytest.raises(MalformedCredential):
        parse_credential(resign_payload(claims))


def test_typ_must_be_cwt() -> None:
    claims: dict[Any, object] = dict(realistic_claims().to_cbor_map())
    with pytest.raises(MalformedCredential, match="typ"):
        parse_credential(resign_payload(claims, typ="application/statuslist+cwt"))
    no_typ = sign1(cbor2.dumps(claims, canonical=True), ISSUER, ISSUER_KID)
    with pytest.raises(MalformedCredential, match="typ"):
        parse_credential(no_typ)


def test_claims_validate_on_construction() -> None:
    with pytest.raises(ValueError):
        realistic_claims(star_level=6)
    with pytest.raises(ValueError):
        realistic_claims(qr_hash=b"\x00" * 15)
    with pytest.raises(ValueError):
        realistic_claims(exp=NOW)
    with pytest.raises(ValueError):
        realistic_claims(card_key=b"\x04" + b"\x00" * 64)
    with pytest.raises(TypeError):
        realistic_claims(iat=True)


def test_compressed_card_key_input_is_normalized() -> None:
    compressed = p256_to_point(CARD.public_key(), compressed=True)
    claims = realistic_claims(card_key=compressed)
    assert claims.card_key == p256_to_point(CARD.public_key())


def test_cose_key_decoding() -> None:
    pub = CARD.public_key()
    compressed = cose_key_from_public(pub)
    assert public_from_cose_key(compressed).public_numbers() == pub.public_numbers()
    full = dict(compressed)
    full[-3] = pub.public_numbers().y.to_bytes(32, "big")
    assert public_from_cose_key(full).public_numbers() == pub.public_numbers()
    for bad in (
        {**compressed, -4: b"\x01" * 32},  # private key material
        {**compressed, -1: 2},  # P-384
        {**compressed, 1: 1},  # OKP
        {**compressed, -2: b"\x00" * 31},
        {**compressed, -3: b"\x00" * 31},
        {**full, -3: bytes(32)},  # point not on the curve
    ):
        with pytest.raises(MalformedCredential):
            public_from_cose_key(bad)


def test_qr_binding_is_first_16_bytes_of_sha256() -> None:
    token = "Qm9u2f7xk3YpT1vQe8Zr0w"
    assert qr_token_binding(token) == hashlib.sha256(token.encode()).digest()[:16]


def test_parsed_message_is_the_received_bytes() -> None:
    data = issue()
    assert parse_sign1(data).raw == data
