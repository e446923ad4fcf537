"""COSE_Sign1 profile: round trip and every rejection rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2
import pytest

from tests.keysigner import KeySigner
from verifier.core.cose import parse_sign1, sig_structure, sign1, verify_sign1
from verifier.core.errors import (
    BadSignature,
    DuplicateMapKey,
    IndefiniteLength,
    MalformedCredential,
    NonCanonicalEncoding,
    TrailingBytes,
    UnexpectedCborType,
    UnsupportedAlgorithm,
)
from verifier.core.keys import kid_for

SIGNER = KeySigner()
KID = kid_for(SIGNER.public_key())
PAYLOAD = cbor2.dumps({1: "sc.example.cn"}, canonical=True)


def build(
    protected: Mapping[Any, object] | bytes,
    unprotected: Mapping[Any, object] | None = None,
    payload: bytes | None = PAYLOAD,
    *,
    tag: int | None = 18,
    signature: bytes | None = None,
) -> bytes:
    """A COSE_Sign1 with a *valid* signature over whatever headers are given, so that each
    rejection below is caused by the rule under test and not by the signature."""
    pbytes = protected if isinstance(protected, bytes) else cbor2.dumps(protected, canonical=True)
    if signature is None:
        signature = SIGNER.sign(sig_structure(pbytes, payload or b""))
    body = [pbytes, dict(unprotected or {}), payload, signature]
    item = body if tag is None else cbor2.CBORTag(tag, body)
    return cbor2.dumps(item, canonical=True)


GOOD_HEADER = {1: -7, 4: KID}


def test_round_trip() -> None:
    data = sign1(PAYLOAD, SIGNER, KID, {16: 61})
    msg = parse_sign1(data)
    assert msg.raw == data
    assert msg.payload == PAYLOAD
    assert msg.kid == KID and msg.alg == "ES256" and msg.typ == 61
    assert dict(msg.protected) == {1: -7, 4: KID, 16: 61}
    assert len(msg.signature) == 64
    verify_sign1(msg, SIGNER.public_key())
    assert data[0] == 0xD2, "tag 18"


def test_hand_built_message_verifies() -> None:
    verify_sign1(parse_sign1(build(GOOD_HEADER)), SIGNER.public_key())


def test_wrong_key_is_bad_signature() -> None:
    msg = parse_sign1(sign1(PAYLOAD, SIGNER, KID))
    with pytest.raises(BadSignature):
        verify_sign1(msg, KeySigner().public_key())


def test_signature_covers_protected_header_and_payload() -> None:
    good = parse_sign1(build(GOOD_HEADER))
    other_payload = cbor2.dumps({1: "evil.example"}, canonical=True)
    swapped = build(GOOD_HEADER, payload=other_payload, signature=good.signature)
    with pytest.raises(BadSignature):
        verify_sign1(parse_sign1(swapped), SIGNER.public_key())
    with_typ = build({1: -7, 4: KID, 16: 61}, signature=good.signature)
    with pytest.raises(BadSignature):
        verify_sign1(parse_sign1(with_typ), SIGNER.public_key())


def test_untagged_is_rejected() -> None:
    with pytest.raises(MalformedCredential, match="tagged"):
        parse_sign1(build(GOOD_HEADER, tag=None))


@pytest.mark.parametrize("tag", [17, 98, 61, 55799])
def test_wrong_tag_is_rejected(tag: int) -> None:
    with pytest.raises(MalformedCredential):
        parse_sign1(build(GOOD_HEADER, tag=tag))


def test_duplicate_key_in_protected_header_is_rejected() -> None:
    # {1: -7, 4: kid, 1: -7}: a second alg after kid (map of 3 with a repeated label).
    protected = b"\xa3\x01\x26\x04\x48" + KID + b"\x01\x26"
    with pytest.raises(DuplicateMapKey):
        parse_sign1(build(protected))


def test_duplicate_key_in_claims_is_caught_by_strict_decoding() -> None:
    from verifier.core.cbor import decode_strict

    with pytest.raises(DuplicateMapKey):
        decode_strict(b"\xa2\x01\x61a\x01\x61b")


def test_non_canonical_protected_header_is_rejected() -> None:
    # alg -7 encoded in two bytes (0x38 0x06) instead of one (0x26).
    protected = b"\xa2\x01\x38\x06\x04\x48" + KID
    with pytest.raises(NonCanonicalEncoding):
        parse_sign1(build(protected))


def test_non_canonical_map_order_is_rejected() -> None:
    protected = b"\xa2\x04\x48" + KID + b"\x01\x26"  # kid before alg
    with pytest.raises(NonCanonicalEncoding):
        parse_sign1(build(protected))


def test_non_canonical_outer_array_is_rejected() -> None:
    good = build(GOOD_HEADER)
    assert good[1] == 0x84
    with pytest.raises(NonCanonicalEncoding):
        parse_sign1(good[:1] + b"\x98\x04" + good[2:])


def test_indefinite_length_is_rejected() -> None:
    good = build(GOOD_HEADER)
    body = good[2:]  # after tag and array head
    with pytest.raises(IndefiniteLength):
        parse_sign1(good[:1] + b"\x9f" + body + b"\xff")


def test_kid_in_unprotected_header_is_rejected() -> None:
    with pytest.raises(MalformedCredential, match="unprotected"):
        parse_sign1(build({1: -7}, {4: KID}))
    with pytest.raises(MalformedCredential, match="unprotected"):
        parse_sign1(build(GOOD_HEADER, {4: b"\x00" * 8}))


def test_alg_in_unprotected_header_is_rejected() -> None:
    with pytest.raises(MalformedCredential, match="unprotected"):
        parse_sign1(build({4: KID}, {1: -7}))


def test_crit_is_rejected() -> None:
    with pytest.raises(MalformedCredential, match="critical"):
        parse_sign1(build({1: -7, 2: [-70000], 4: KID, -70000: 1}))


def test_unknown_protected_label_is_rejected() -> None:
    with pytest.raises(MalformedCredential, match="not allowed"):
        parse_sign1(build({1: -7, 4: KID, 99: 1}))


# EdDSA (-8) parses since issuer keys may be Ed25519; substituting it for a P-256 key is
# refused at verification (tests/unit/test_eddsa.py).
@pytest.mark.parametrize("alg", [-35, -36, -37, -257, 5, 0])
def test_alg_substitution_is_rejected(alg: int) -> None:
    with pytest.raises(UnsupportedAlgorithm):
        parse_sign1(build({1: alg, 4: KID}))


def test_alg_as_text_is_rejected() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        parse_sign1(build({1: "ES256", 4: KID}))


def test_missing_alg_is_rejected() -> None:
    with pytest.raises(MalformedCredential, match="alg"):
        parse_sign1(build({4: KID}))


@pytest.mark.parametrize("kid", [b"", b"\x01" * 7, b"\x01" * 9, "kid-text"])
def test_kid_must_be_8_bytes(kid: object) -> None:
    with pytest.raises(MalformedCredential, match="kid"):
        parse_sign1(build({1: -7, 4: kid}))


def test_empty_protected_header_is_rejected() -> None:
    with pytest.raises(MalformedCredential):
        parse_sign1(build(b""))


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(TrailingBytes):
        parse_sign1(build(GOOD_HEADER) + b"\x00")


@pytest.mark.parametrize("length", [0, 32, 63, 65, 72])
def test_signature_length_must_be_64(length: int) -> None:
    with pytest.raises(MalformedCredential, match="64"):
        parse_sign1(build(GOOD_HEADER, signature=b"\x01" * length))


def test_truncated_message_is_rejected() -> None:
    good = build(GOOD_HEADER)
    for cut in (1, 10, len(good) // 2, len(good) - 1):
        with pytest.raises(MalformedCredential):
            parse_sign1(good[:cut])


def test_detached_payload_is_rejected() -> None:
    with pytest.raises(MalformedCredential, match="payload"):
        parse_sign1(build(GOOD_HEADER, payload=None))


def test_wrong_array_length_is_rejected() -> None:
    good = cbor2.loads(build(GOOD_HEADER))
    three = cbor2.dumps(cbor2.CBORTag(18, list(good.value)[:3]), canonical=True)
    with pytest.raises(MalformedCredential, match="four"):
        parse_sign1(three)


def test_float_and_undefined_are_rejected() -> None:
    with pytest.raises(UnexpectedCborType):
        parse_sign1(build({1: -7, 4: KID, 16: 1.5}))
    with pytest.raises(UnexpectedCborType):
        parse_sign1(build({1: -7, 4: KID, 16: cbor2.undefined}))


def test_sign1_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="kid"):
        sign1(PAYLOAD, SIGNER, b"\x00" * 8)
    with pytest.raises(ValueError, match="not allowed"):
        sign1(PAYLOAD, SIGNER, KID, {4: KID})
    with pytest.raises(ValueError, match="not allowed"):
        sign1(PAYLOAD, SIGNER, KID, {2: [1]})


class FaultySigner(KeySigner):
    def sign(self, data: bytes) -> bytes:
        sig = bytearray(super().sign(data))
        sig[10] ^= 1
        return bytes(sig)


def test_sign1_refuses_a_faulty_signature() -> None:
    faulty = FaultySigner()
    with pytest.raises(ValueError, match="does not verify"):
        sign1(PAYLOAD, faulty, kid_for(faulty.public_key()))
