"""The COSE WG examples (cose-wg/Examples: sign1-tests, the Sign1 ECDSA/EdDSA examples and
CWT/A_3) and the RFC 8392 A.3 signed CWT, run through our production code.

Our profile is deliberately stricter than COSE (see :mod:`verifier.core.cose`): tagged only,
``alg`` and an 8-byte ``kid`` in the protected header, empty unprotected header, ES256 or
EdDSA (Ed25519) only, no external AAD. So every example is *rejected* by
:func:`parse_sign1`, and each test asserts the exact rule that fires first, with a reason.
Independently of the structure policy, the signature math is checked on the example's own
bytes with our ``sig_structure`` + ``verify_es256``/``verify_eddsa``: over the Sig_structure
built from the bytes as received (what our verifier does), and over the example's
``ToBeSign`` intermediate (what the signer signed). A ``fail`` example is thereby shown to
fail for its own reason: the signature is genuine over what was signed, and breaks only
through the example's modification.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from verifier.core.cbor import decode_strict
from verifier.core.cose import (
    parse_protected_header,
    parse_sign1,
    sig_structure,
    sign1,
    verify_sign1,
)
from verifier.core.credential import parse_credential
from verifier.core.errors import (
    BadSignature,
    MalformedCredential,
    UnexpectedCborType,
    UnsupportedAlgorithm,
    VerificationError,
)
from verifier.core.keys import (
    ed25519_from_raw,
    kid_for,
    p256_from_point,
    verify_eddsa,
    verify_es256,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
COSE_WG = VECTORS / "cose-wg"
RFC8392 = VECTORS / "rfc8392" / "a3_signed_cwt.json"

Sig = Literal["verifies", "fails", "not_checkable"]
UNPROTECTED = "unprotected header must be empty"
NO_KID = "8-byte kid"


@dataclass(frozen=True)
class Expected:
    """The outcome of one example under our policy."""

    parse: type[VerificationError]  # what parse_sign1 raises (the first rule that fires)
    parse_match: str
    header: type[VerificationError]  # what parse_protected_header raises on its protected
    header_match: str
    received: Sig  # signature over the Sig_structure of the bytes as received
    signed: Sig  # signature over the example's ToBeSign intermediate
    reason: str


EXPECTED: dict[str, Expected] = {
    "sign1-tests/sign-pass-01.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        MalformedCredential,
        "lacks alg",
        "fails",
        "verifies",
        "pass vector rejected by policy: alg and kid unprotected. Its protected bstr is h'A0' "
        "(an empty map) but the signer used h'' in Sig_structure (COSE's rule for 'no "
        "protected attributes'); we sign and verify the exact received bytes, so the math "
        "over h'A0' fails - irrelevant for us, since we require alg and kid protected",
    ),
    "sign1-tests/sign-pass-02.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        MalformedCredential,
        NO_KID,
        "fails",
        "verifies",
        "pass vector rejected by policy: kid unprotected; it also needs external AAD "
        "11aa22bb33cc44dd55006699, which StarCard never uses, so over our Sig_structure "
        "(external_aad h'') the math fails and over the example's (with the AAD) it verifies",
    ),
    "sign1-tests/sign-pass-03.json": Expected(
        MalformedCredential,
        "must be tagged",
        MalformedCredential,
        NO_KID,
        "verifies",
        "verifies",
        "pass vector rejected by policy: untagged (we require tag 18); kid unprotected too",
    ),
    "sign1-tests/sign-fail-01.json": Expected(
        UnexpectedCborType,
        "tag 998",
        MalformedCredential,
        NO_KID,
        "verifies",
        "verifies",
        "fail vector (tag 998 instead of 18) rejected for the right reason: the tag; the "
        "signature itself is intact",
    ),
    "sign1-tests/sign-fail-02.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        MalformedCredential,
        NO_KID,
        "fails",
        "verifies",
        "fail vector (payload changed after signing) rejected by policy (kid unprotected) "
        "and, independently, its signature does not verify over the received payload",
    ),
    "sign1-tests/sign-fail-03.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        UnsupportedAlgorithm,
        "-999",
        "fails",
        "verifies",
        "fail vector (protected alg changed to -999) rejected: unknown alg in the protected "
        "header, and the signature breaks over the changed protected bytes",
    ),
    "sign1-tests/sign-fail-04.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        UnsupportedAlgorithm,
        "'unknown'",
        "fails",
        "verifies",
        "fail vector (protected alg changed to the text 'unknown') rejected: alg must be an "
        "accepted integer, and the signature breaks over the changed protected bytes",
    ),
    "sign1-tests/sign-fail-06.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        MalformedCredential,
        NO_KID,
        "fails",
        "verifies",
        "fail vector (content type 0 added to the protected header after signing) rejected: "
        "the signature does not cover the received protected bytes (content type itself is "
        "an allowed label)",
    ),
    "sign1-tests/sign-fail-07.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        MalformedCredential,
        NO_KID,
        "fails",
        "verifies",
        "fail vector (content type removed from the protected header after signing) "
        "rejected: the signature does not cover the received protected bytes",
    ),
    "ecdsa-examples/ecdsa-sig-01.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        MalformedCredential,
        NO_KID,
        "verifies",
        "verifies",
        "valid ES256 example rejected by policy: kid unprotected (and 2 bytes, not 8)",
    ),
    "ecdsa-examples/ecdsa-sig-02.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        UnsupportedAlgorithm,
        "-35",
        "not_checkable",
        "not_checkable",
        "valid ES384 (P-384) example rejected: ES384 is not in our suite; kid unprotected",
    ),
    "ecdsa-examples/ecdsa-sig-03.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        UnsupportedAlgorithm,
        "-36",
        "not_checkable",
        "not_checkable",
        "valid ES512 (P-521) example rejected: ES512 is not in our suite; kid unprotected",
    ),
    "ecdsa-examples/ecdsa-sig-04.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        UnsupportedAlgorithm,
        "-36",
        "fails",
        "fails",
        "ES512 (SHA-512) over a P-256 key rejected: alg not in our suite; checked as ES256 "
        "(SHA-256) with the same key it must fail, so hash substitution does not verify",
    ),
    "eddsa-examples/eddsa-sig-01.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        MalformedCredential,
        NO_KID,
        "verifies",
        "verifies",
        "valid EdDSA (Ed25519) example rejected by policy: kid unprotected; its signature "
        "verifies with verify_eddsa",
    ),
    "eddsa-examples/eddsa-sig-02.json": Expected(
        MalformedCredential,
        UNPROTECTED,
        MalformedCredential,
        NO_KID,
        "not_checkable",
        "not_checkable",
        "valid EdDSA example on Ed448 rejected: kid unprotected, and only Ed25519 keys can "
        "be trusted for EdDSA (a 57-byte Ed448 key does not load)",
    ),
    "CWT/A_3.json": Expected(
        MalformedCredential,
        NO_KID,
        MalformedCredential,
        NO_KID,
        "verifies",
        "verifies",
        "the COSE WG copy of RFC 8392 A.3 (unprotected header emptied) is tagged and has "
        "alg protected, but no kid in the protected header",
    ),
}


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((COSE_WG / name).read_text())
    return doc


def _parts(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """protected, payload, signature of a COSE_Sign1, tagged or not, decoded leniently."""
    item = cbor2.loads(raw)
    body = item.value if isinstance(item, cbor2.CBORTag) else item
    protected, _unprotected, payload, signature = body
    return protected, payload, signature


def _check(key: dict[str, str], signature: bytes, tbs: bytes) -> Sig:
    """Our signature math over ``tbs`` with the example's key."""
    try:
        if key.get("crv") == "P-256":
            if "x" in key:
                x, y = _b64(key["x"]), _b64(key["y"])
            else:
                x, y = bytes.fromhex(key["x_hex"]), bytes.fromhex(key["y_hex"])
            verify_es256(p256_from_point(b"\x04" + x + y), signature, tbs)
        elif key.get("crv") == "Ed25519":
            verify_eddsa(ed25519_from_raw(bytes.fromhex(key["x_hex"])), signature, tbs)
        else:
            return "not_checkable"
    except BadSignature:
        return "fails"
    return "verifies"


def test_every_stored_example_has_an_expectation() -> None:
    stored = {str(p.relative_to(COSE_WG)) for p in COSE_WG.rglob("*.json")}
    assert stored == set(EXPECTED)
    sign1_tests = {n for n in stored if n.startswith("sign1-tests/")}
    assert len(sign1_tests) == 9  # 3 pass + 6 fail (the repository has no sign-fail-05)
    assert sum(1 for n in sign1_tests if _load(n).get("fail")) == 6


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cose_wg_example_under_our_policy(name: str) -> None:
    doc, expected = _load(name), EXPECTED[name]
    raw = bytes.fromhex(doc["output"]["cbor"])
    protected, payload, signature = _parts(raw)
    sign0 = doc["input"]["sign0"]

    # 1. The production parser rejects it, by the rule named in EXPECTED.
    with pytest.raises(expected.parse, match=expected.parse_match) as exc:
        parse_sign1(raw)
    assert type(exc.value) is expected.parse, expected.reason
    # 2. The protected header on its own, under our header rules.
    with pytest.raises(expected.header, match=expected.header_match):
        parse_protected_header(protected)
    # 3. Our Sig_structure encoding reproduces the example's ToBeSign byte for byte when
    #    the example did not modify the message after signing (sign-pass-01 signed h'' for
    #    its received h'A0'); a modification changes it.
    external = bytes.fromhex(sign0.get("external", ""))
    to_be_signed = bytes.fromhex(doc["intermediates"]["ToBeSign_hex"])
    modified = doc.get("fail") and name != "sign1-tests/sign-fail-01.json"
    signed_protected = b"" if name == "sign1-tests/sign-pass-01.json" else protected
    assert (sig_structure(signed_protected, payload, external) == to_be_signed) is not modified
    # 4. The signature math, over what we would verify and over what was signed.
    key = sign0["key"]
    assert _check(key, signature, sig_structure(protected, payload)) == expected.received, (
        expected.reason
    )
    assert _check(key, signature, to_be_signed) == expected.signed, expected.reason


def test_sign_pass_02_needs_its_external_aad() -> None:
    doc = _load("sign1-tests/sign-pass-02.json")
    protected, payload, signature = _parts(bytes.fromhex(doc["output"]["cbor"]))
    aad = bytes.fromhex(doc["input"]["sign0"]["external"])
    key = doc["input"]["sign0"]["key"]
    assert _check(key, signature, sig_structure(protected, payload, aad)) == "verifies"
    assert _check(key, signature, sig_structure(protected, payload)) == "fails"


def test_ed448_key_of_eddsa_sig_02_does_not_load_as_ed25519() -> None:
    key = _load("eddsa-examples/eddsa-sig-02.json")["input"]["sign0"]["key"]
    assert key["crv"] == "Ed448"
    with pytest.raises(MalformedCredential, match="32 bytes"):
        ed25519_from_raw(bytes.fromhex(key["x_hex"]))


# -- RFC 8392 A.3 -----------------------------------------------------------------------


def _rfc8392() -> tuple[bytes, dict[int, Any]]:
    doc = json.loads(RFC8392.read_text())
    return bytes.fromhex(doc["signed_cwt_hex"]), cbor2.loads(
        bytes.fromhex(doc["cose_key_a_2_3_hex"])
    )


def _rfc8392_public_key() -> ec.EllipticCurvePublicKey:
    _, cose_key = _rfc8392()
    assert (cose_key[1], cose_key[-1], cose_key[3]) == (2, 1, -7)  # EC2, P-256, ES256
    return p256_from_point(b"\x04" + cose_key[-2] + cose_key[-3])


def test_rfc8392_a3_signature_verifies_with_the_a23_key() -> None:
    cwt, _ = _rfc8392()
    protected, payload, signature = _parts(cwt)
    assert protected == bytes.fromhex("a10126")  # {1: -7}: ES256
    verify_es256(_rfc8392_public_key(), signature, sig_structure(protected, payload))
    tampered = payload[:-1] + b"\x72"  # cti 0b71 -> 0b72
    with pytest.raises(BadSignature):
        verify_es256(_rfc8392_public_key(), signature, sig_structure(protected, tampered))


def test_rfc8392_a3_claims_decode_strictly() -> None:
    cwt, _ = _rfc8392()
    _, payload, _ = _parts(cwt)
    claims = decode_strict(payload)  # the RFC's claims are canonical CBOR
    assert claims == {
        1: "coap://as.example.com",
        2: "erikw",
        3: "coap://light.example.com",
        4: 1444064944,
        5: 1443944944,
        6: 1443944944,
        7: bytes.fromhex("0b71"),
    }


def test_rfc8392_a3_is_not_a_starcard_credential() -> None:
    cwt, _ = _rfc8392()
    # Rejected at the first profile rule it breaks: its kid "AsymmetricECDSA256" is in the
    # unprotected header (and is 18 bytes, not our 8).
    with pytest.raises(MalformedCredential, match=UNPROTECTED):
        parse_credential(cwt)
    with pytest.raises(MalformedCredential, match=UNPROTECTED):
        parse_sign1(cwt)


class _Rfc8392Signer:
    """The RFC's A.2.3 private key behind our Signer port (it is a published example key)."""

    algorithm = "ES256"

    def __init__(self, d: bytes) -> None:
        self._key = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_rfc8392_a3_claims_rewrapped_in_our_profile_are_still_not_a_credential() -> None:
    """Re-signed with the same key in our COSE profile (kid protected, typ CWT), the A.3
    claims pass the COSE rules and the signature, and the credential parser rejects them
    for what they are: not the StarCard claims set."""
    cwt, cose_key = _rfc8392()
    _, payload, _ = _parts(cwt)
    signer = _Rfc8392Signer(cose_key[-4])
    assert signer.public_key().public_numbers() == _rfc8392_public_key().public_numbers()
    rewrapped = sign1(payload, signer, kid_for(signer.public_key()), {16: 61})
    msg = parse_sign1(rewrapped)
    verify_sign1(msg, _rfc8392_public_key())
    with pytest.raises(MalformedCredential, match="required set") as exc:
        parse_credential(rewrapped)
    assert "unexpected ['2', '3']" in exc.value.detail  # sub and aud are not ours
    assert "65535" in exc.value.detail  # no status reference, among others
