"""Interop with pycose 1.1, an independent COSE implementation (its ES256 runs on the
python-ecdsa library, not on ``cryptography``).

Known problem and workaround: with cbor2 >= 6, ``cbor2.loads`` returns the contents of a tag
as a tuple (and maps inside it as frozendicts), and pycose 1.1's ``CoseMessage.decode``
only accepts a list, so ``Sign1Message.decode`` fails ("Bytes cannot be decoded as COSE
message"). :func:`pycose_decode` tries pycose's own decoder first and, only on that known
failure, decodes the tag itself and hands the four parts (as a list, with the unprotected
header as a dict) to pycose's ``Sign1Message.from_cose_obj``. Everything after that —
header parsing, Sig_structure, signature verification — is pycose's.
"""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys.cosekey import CoseKey
from pycose.keys.curves import P256
from pycose.keys.ec2 import EC2Key
from pycose.messages.sign1message import Sign1Message as PycoseSign1

from verifier.core.challenge import begin, challenge_bytes
from verifier.core.cose import parse_sign1, verify_sign1
from verifier.core.credential import (
    CWT_TYP,
    CredentialClaims,
    issue_credential,
    parse_credential,
    qr_token_binding,
)
from verifier.core.errors import BadSignature
from verifier.core.keys import kid_for, p256_to_point
from verifier.core.status_list import MIN_ENTRIES, StatusList, StatusListCache, issue_status_list
from verifier.core.trust import TrustedKey, TrustStore
from verifier.core.verify import verify_card

NOW = 1_767_225_600
URI = "https://sc.example.cn/s/1"


class KeySigner:
    """Test double for the HSM: a software P-256 key behind the Signer port."""

    algorithm = "ES256"

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


ISSUER = KeySigner()
ISSUER_KID = kid_for(ISSUER.public_key())
CARD = ec.generate_private_key(ec.SECP256R1())


def claims() -> CredentialClaims:
    return CredentialClaims(
        iss="sc.example.cn",
        iat=NOW,
        nbf=NOW,
        exp=NOW + 10**8,
        cti=bytes.fromhex("5343000000000001"),
        card_key=p256_to_point(CARD.public_key()),
        status_idx=77,
        status_uri=URI,
        star_level=3,
        policy_version="2026.1",
        profile="starcard-v1",
        qr_hash=qr_token_binding("qr"),
    )


def pycose_decode(data: bytes) -> PycoseSign1:
    """pycose's decoder, or the documented workaround for its cbor2 >= 6 failure."""
    try:
        return PycoseSign1.decode(data)
    except TypeError as exc:
        if "cannot be decoded as COSE message" not in str(exc):
            raise
    item = cbor2.loads(data)
    assert isinstance(item, cbor2.CBORTag) and item.tag == 18
    protected, unprotected, payload, signature = item.value
    return PycoseSign1.from_cose_obj([protected, dict(unprotected), payload, signature], True)


def pycose_public_key(pub: ec.EllipticCurvePublicKey) -> EC2Key:
    numbers = pub.public_numbers()
    return EC2Key(crv=P256, x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big"))


def pycose_private_key(key: ec.EllipticCurvePrivateKey) -> EC2Key:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cose_key = CoseKey.from_pem_private_key(pem.decode("ascii"))
    assert isinstance(cose_key, EC2Key)
    return cose_key


def test_pycose_verifies_our_credential() -> None:
    data = issue_credential(claims(), ISSUER, ISSUER_KID)
    msg = pycose_decode(data)
    assert msg.get_attr(Algorithm) is Es256
    assert msg.get_attr(KID) == ISSUER_KID
    assert msg.phdr_encoded == parse_sign1(data).protected_bytes
    msg.key = pycose_public_key(ISSUER.public_key())
    assert msg.verify_signature() is True
    assert msg.payload is not None
    assert cbor2.loads(msg.payload)[-65537] == 3


def test_pycose_rejects_our_tampered_credential() -> None:
    data = bytearray(issue_credential(claims(), ISSUER, ISSUER_KID))
    data[-5] ^= 0x40  # inside the signature
    msg = pycose_decode(bytes(data))
    msg.key = pycose_public_key(ISSUER.public_key())
    assert msg.verify_signature() is False


def test_pycose_verifies_our_status_list_token() -> None:
    status = KeySigner()
    data = issue_status_list(
        StatusList(MIN_ENTRIES), URI, NOW, NOW + 3600, 300, status, kid_for(status.public_key())
    )
    msg = pycose_decode(data)
    msg.key = pycose_public_key(status.public_key())
    assert msg.verify_signature() is True


def test_we_verify_a_pycose_made_sign1() -> None:
    signer = KeySigner()
    kid = kid_for(signer.public_key())
    made = PycoseSign1(
        phdr={Algorithm: Es256, KID: kid},
        payload=cbor2.dumps({1: "pycose"}, canonical=True),
        key=pycose_private_key(signer.key),
    ).encode()
    msg = parse_sign1(made)
    assert msg.kid == kid and msg.alg == "ES256"
    verify_sign1(msg, signer.public_key())
    with pytest.raises(BadSignature):
        verify_sign1(msg, KeySigner().public_key())


def test_a_pycose_made_credential_passes_verify_card() -> None:
    """The whole verification pipeline accepts a credential signed by pycose."""
    made = PycoseSign1(
        phdr={Algorithm: Es256, KID: ISSUER_KID, 16: CWT_TYP},
        payload=cbor2.dumps(claims().to_cbor_map(), canonical=True),
        key=pycose_private_key(ISSUER.key),
    ).encode()
    assert parse_credential(made).claims == claims()

    status = KeySigner()
    trust = TrustStore(
        [
            TrustedKey.for_public_key(ISSUER.public_key(), "credential", 0, 2**40),
            TrustedKey.for_public_key(status.public_key(), "status_list", 0, 2**40),
        ]
    )
    cache = StatusListCache()
    cache.accept(
        issue_status_list(
            StatusList(MIN_ENTRIES), URI, NOW, NOW + 3600, 300, status, kid_for(status.public_key())
        ),
        trust,
        NOW,
    )
    state = begin("terminal-1", b"", NOW)
    r, s = decode_dss_signature(CARD.sign(challenge_bytes(state), ec.ECDSA(hashes.SHA256())))
    card_sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert verify_card(made, card_sig, state, trust, cache, NOW).star_level == 3
