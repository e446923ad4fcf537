"""EdDSA (Ed25519, COSE alg -8) for issuer keys: credentials and status lists signed with it
verify end to end; the protected ``alg`` must match the trusted key's ``alg`` and key type
exactly (algorithm substitution is refused both ways); card keys stay ES256; pycose, an
independent implementation, agrees."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pycose.algorithms import EdDSA as PycoseEdDSA
from pycose.headers import KID, Algorithm
from pycose.keys.curves import Ed25519 as PycoseEd25519
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message as PycoseSign1

from tests.keysigner import KeySigner
from tests.unit.test_cose_interop import pycose_decode
from verifier.core.challenge import begin, challenge_bytes
from verifier.core.cose import parse_sign1, sig_structure, sign1, verify_sign1
from verifier.core.credential import (
    CredentialClaims,
    issue_credential,
    parse_credential,
    qr_token_binding,
)
from verifier.core.errors import BadSignature, MalformedCredential, UnsupportedAlgorithm
from verifier.core.keys import kid_for, p256_to_point, verify_eddsa
from verifier.core.status_list import (
    INVALID,
    MIN_ENTRIES,
    StatusList,
    StatusListCache,
    issue_status_list,
    parse_status_list_token,
)
from verifier.core.trust import TrustedKey, TrustStore
from verifier.core.verify import decide, verify_card

NOW = 1_767_225_600
YEAR = 365 * 24 * 3600
URI = "https://sc.example.cn/s/1"
IDX = 77


class Ed25519Signer:
    """Test double for an HSM Ed25519 key behind the signer port (RFC 8032 signatures)."""

    algorithm = "EdDSA"

    def __init__(self) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self.key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def eddsa_trusted(signer: Ed25519Signer, purpose: str) -> TrustedKey:
    pub = signer.public_key()
    return TrustedKey(kid_for(pub), "EdDSA", purpose, pub, 0, 2**40)


ISSUER = Ed25519Signer()
STATUS = Ed25519Signer()
P256_ISSUER = KeySigner()
CARD = ec.generate_private_key(ec.SECP256R1())
TRUST = TrustStore(
    [
        eddsa_trusted(ISSUER, "credential"),
        eddsa_trusted(STATUS, "status_list"),
        TrustedKey.for_public_key(P256_ISSUER.public_key(), "credential", 0, 2**40),
    ]
)


def claims() -> CredentialClaims:
    return CredentialClaims(
        iss="sc.example.cn",
        iat=NOW,
        nbf=NOW,
        exp=NOW + 3 * YEAR,
        cti=bytes.fromhex("5343000000000042"),
        card_key=p256_to_point(CARD.public_key()),
        status_idx=IDX,
        status_uri=URI,
        star_level=5,
        policy_version="2026.1",
        profile="starcard-v1",
        qr_hash=qr_token_binding("qr"),
    )


def status_cache(revoked: dict[int, int] | None = None) -> StatusListCache:
    lst = StatusList(MIN_ENTRIES)
    for idx, value in (revoked or {}).items():
        lst.set(idx, value)
    cache = StatusListCache()
    token = issue_status_list(lst, URI, NOW, NOW + 3600, 300, STATUS, kid_for(STATUS.public_key()))
    cache.accept(token, TRUST, NOW)
    return cache


def card_signature(now: int = NOW) -> tuple[bytes, object]:
    state = begin("terminal-7", b"merchant", now)
    r, s = decode_dss_signature(CARD.sign(challenge_bytes(state), ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big"), state


def hand_built(protected: dict[int, object], payload: bytes, signature: bytes) -> bytes:
    return cbor2.dumps(
        cbor2.CBORTag(18, [cbor2.dumps(protected, canonical=True), {}, payload, signature]),
        canonical=True,
    )


# -- the happy path ---------------------------------------------------------------------


def test_kid_of_an_ed25519_key_is_sha256_of_its_spki() -> None:
    pub = ISSUER.public_key()
    spki = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert kid_for(pub) == hashlib.sha256(spki).digest()[:8]


def test_eddsa_sign1_round_trip() -> None:
    kid = kid_for(ISSUER.public_key())
    data = sign1(b"payload", ISSUER, kid, {16: 61})
    msg = parse_sign1(data)
    assert dict(msg.protected) == {1: -8, 4: kid, 16: 61}
    assert msg.alg == "EdDSA" and len(msg.signature) == 64
    verify_sign1(msg, ISSUER.public_key())
    with pytest.raises(BadSignature):
        verify_sign1(msg, Ed25519Signer().public_key())


def test_eddsa_credential_passes_verify_card() -> None:
    credential = issue_credential(claims(), ISSUER, kid_for(ISSUER.public_key()))
    assert parse_credential(credential).message.alg == "EdDSA"
    sig, state = card_signature()
    card = verify_card(credential, sig, state, TRUST, status_cache(), NOW)
    assert card.star_level == 5 and card.assurance == "high"
    verdict = decide(credential, sig, state, TRUST, status_cache({IDX: INVALID}), NOW)
    assert (verdict.state, verdict.reason_class) == ("invalid", "revoked")


def test_eddsa_status_list_token_is_accepted() -> None:
    cache = status_cache({IDX: INVALID})
    assert cache.status_of(URI, IDX, NOW) == INVALID
    assert cache.token(URI) is not None


def test_eddsa_tampered_credential_is_bad_signature() -> None:
    credential = bytearray(issue_credential(claims(), ISSUER, kid_for(ISSUER.public_key())))
    credential[-3] ^= 0x01
    sig, state = card_signature()
    verdict = decide(bytes(credential), sig, state, TRUST, status_cache(), NOW)
    assert (verdict.state, verdict.reason_class) == ("invalid", "not_genuine")


# -- algorithm substitution -------------------------------------------------------------


def test_eddsa_header_with_a_trusted_es256_key_is_refused() -> None:
    """An attacker labels a message EdDSA under the kid of a trusted P-256 key."""
    payload = cbor2.dumps(claims().to_cbor_map(), canonical=True)
    protected = {1: -8, 4: kid_for(P256_ISSUER.public_key()), 16: 61}
    forged = hand_built(protected, payload, bytes(64))
    msg = parse_credential(forged).message
    assert msg.alg == "EdDSA"
    with pytest.raises(UnsupportedAlgorithm):
        verify_sign1(msg, P256_ISSUER.public_key())
    sig, state = card_signature()
    with pytest.raises(UnsupportedAlgorithm):
        verify_card(forged, sig, state, TRUST, status_cache(), NOW)
    verdict = decide(forged, sig, state, TRUST, status_cache(), NOW)
    assert (verdict.state, verdict.reason_class) == ("invalid", "untrusted")


def test_es256_header_with_a_trusted_eddsa_key_is_refused() -> None:
    payload = cbor2.dumps(claims().to_cbor_map(), canonical=True)
    protected = {1: -7, 4: kid_for(ISSUER.public_key()), 16: 61}
    pbytes = cbor2.dumps(protected, canonical=True)
    # Even a signature that is a genuine EdDSA signature of the Sig_structure.
    genuine = ISSUER.sign(sig_structure(pbytes, payload))
    forged = hand_built(protected, payload, genuine)
    with pytest.raises(UnsupportedAlgorithm):
        verify_sign1(parse_sign1(forged), ISSUER.public_key())
    sig, state = card_signature()
    with pytest.raises(UnsupportedAlgorithm):
        verify_card(forged, sig, state, TRUST, status_cache(), NOW)


def test_status_list_alg_must_match_the_trusted_key() -> None:
    lst = StatusList(MIN_ENTRIES).encode()
    claims_map = {2: URI, 4: NOW + 3600, 6: NOW, 65534: 300, 65533: {"bits": 2, "lst": lst}}
    payload = cbor2.dumps(claims_map, canonical=True)
    protected = {1: -7, 4: kid_for(STATUS.public_key()), 16: "application/statuslist+cwt"}
    forged = hand_built(protected, payload, bytes(64))
    # Refused by the alg comparison itself (verify_sign1's key-type check is the backstop).
    with pytest.raises(UnsupportedAlgorithm, match="differs from the trusted key"):
        parse_status_list_token(forged, TRUST, NOW)
    with pytest.raises(UnsupportedAlgorithm):
        StatusListCache().accept(forged, TRUST, NOW)


def test_trusted_key_alg_and_key_type_must_agree() -> None:
    ed_pub, p256_pub = ISSUER.public_key(), P256_ISSUER.public_key()
    with pytest.raises(ValueError, match="Ed25519"):
        TrustedKey(kid_for(p256_pub), "EdDSA", "credential", p256_pub, 0, 1)
    with pytest.raises(ValueError, match="P-256"):
        TrustedKey(kid_for(ed_pub), "ES256", "credential", ed_pub, 0, 1)
    with pytest.raises(ValueError, match="P-256"):
        TrustedKey.for_public_key(ed_pub, "credential", 0, 1)
    ed448_pub = ed448.Ed448PrivateKey.generate().public_key()
    with pytest.raises(ValueError):
        TrustedKey(kid_for(ed448_pub), "EdDSA", "credential", ed448_pub, 0, 1)
    with pytest.raises(ValueError, match="unsupported algorithm"):
        TrustedKey(kid_for(ed_pub), "Ed25519", "credential", ed_pub, 0, 1)
    assert TrustedKey(kid_for(ed_pub), "EdDSA", "status_list", ed_pub, 0, 1).alg == "EdDSA"


def test_sign1_refuses_a_signer_whose_key_does_not_fit_its_algorithm() -> None:
    class Mislabelled(KeySigner):
        algorithm = "EdDSA"

    wrong = Mislabelled()
    with pytest.raises(ValueError, match="does not fit"):
        sign1(b"x", wrong, kid_for(wrong.public_key()))

    class FaultyEd25519(Ed25519Signer):
        def sign(self, data: bytes) -> bytes:
            sig = bytearray(super().sign(data))
            sig[0] ^= 1
            return bytes(sig)

    faulty = FaultyEd25519()
    with pytest.raises(ValueError, match="does not verify"):
        sign1(b"x", faulty, kid_for(faulty.public_key()))


def test_verify_eddsa_checks_key_type_and_signature_length() -> None:
    with pytest.raises(ValueError):
        verify_eddsa(P256_ISSUER.public_key(), bytes(64), b"x")
    with pytest.raises(MalformedCredential, match="64"):
        verify_eddsa(ISSUER.public_key(), bytes(63), b"x")


# -- card keys stay ES256 ---------------------------------------------------------------


def test_card_keys_stay_p256() -> None:
    ed_card = Ed25519Signer().public_key().public_bytes_raw()
    with pytest.raises(ValueError, match="P-256"):
        CredentialClaims(**{**claims().__dict__, "card_key": ed_card})
    okp_cnf = {**claims().to_cbor_map(), 8: {1: {1: 1, -1: 6, -2: ed_card}}}
    credential = sign1(
        cbor2.dumps(okp_cnf, canonical=True),
        ISSUER,
        kid_for(ISSUER.public_key()),
        {16: 61},
    )
    with pytest.raises(MalformedCredential, match="COSE_Key"):
        parse_credential(credential)


# -- interop with pycose ----------------------------------------------------------------


def pycose_okp(
    public: ed25519.Ed25519PublicKey, private: ed25519.Ed25519PrivateKey | None = None
) -> OKPKey:
    x = public.public_bytes_raw()
    if private is None:
        return OKPKey(crv=PycoseEd25519, x=x)
    return OKPKey(crv=PycoseEd25519, x=x, d=private.private_bytes_raw())


def test_pycose_verifies_our_eddsa_credential() -> None:
    data = issue_credential(claims(), ISSUER, kid_for(ISSUER.public_key()))
    msg = pycose_decode(data)
    assert msg.get_attr(Algorithm) is PycoseEdDSA
    msg.key = pycose_okp(ISSUER.public_key())
    assert msg.verify_signature() is True
    tampered = bytearray(data)
    tampered[-1] ^= 0x80
    bad = pycose_decode(bytes(tampered))
    bad.key = pycose_okp(ISSUER.public_key())
    assert bad.verify_signature() is False


def test_we_verify_a_pycose_made_eddsa_sign1() -> None:
    signer = Ed25519Signer()
    kid = kid_for(signer.public_key())
    made = PycoseSign1(
        phdr={Algorithm: PycoseEdDSA, KID: kid},
        payload=b"from pycose",
        key=pycose_okp(signer.public_key(), signer.key),
    ).encode()
    msg = parse_sign1(made)
    assert msg.alg == "EdDSA" and msg.kid == kid
    verify_sign1(msg, signer.public_key())
    with pytest.raises(UnsupportedAlgorithm):
        verify_sign1(msg, P256_ISSUER.public_key())
