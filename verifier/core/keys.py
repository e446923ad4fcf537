"""Key identifiers, COSE_Key (EC2, P-256) encoding and ECDSA signature formats.

* ``kid_for(pub)`` = the first 8 bytes of SHA-256 over the key's SubjectPublicKeyInfo DER.
* COSE_Key (RFC 9052 §7, RFC 9053 §7.1.1) for P-256 public keys: ``{1: 2 (EC2), -1: 1
  (P-256), -2: x, -3: y}``. We encode ``y`` in compressed form, as the boolean sign bit
  (the least significant bit of y), which saves 32 bytes; decoding accepts that and the full
  32-byte ``y``. Only these four labels are accepted (in particular never ``-4``, ``d``).
* ES256 signatures travel as 64 bytes raw ``r || s`` (COSE, JOSE, the card's INTERNAL
  AUTHENTICATE); ``cryptography`` speaks DER. The helpers convert and check lengths.
* EdDSA (RFC 8032 Ed25519, COSE alg -8) is allowed for **issuer** keys only (credential and
  status-list signatures); card keys stay P-256. Ed25519 public keys are 32 raw bytes,
  signatures 64 bytes. Ed448 is not supported. ``kid_for`` works the same way for both key
  types (SHA-256 over the SPKI DER).

Decoding failures raise :class:`~verifier.core.errors.MalformedCredential`; a signature that
does not verify raises :class:`~verifier.core.errors.BadSignature`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from verifier.core.errors import BadSignature, MalformedCredential
from verifier.core.sm2 import Sm2PublicKey

__all__ = [
    "COORD_SIZE",
    "ED25519_KEY_SIZE",
    "ED25519_SIGNATURE_SIZE",
    "KID_SIZE",
    "RAW_SIGNATURE_SIZE",
    "IssuerPublicKey",
    "cose_key_from_public",
    "der_to_raw",
    "ed25519_from_raw",
    "kid_for",
    "p256_from_point",
    "p256_to_point",
    "public_from_cose_key",
    "raw_to_der",
    "verify_eddsa",
    "verify_es256",
]

KID_SIZE = 8
COORD_SIZE = 32
RAW_SIGNATURE_SIZE = 2 * COORD_SIZE
ED25519_KEY_SIZE = 32
#: Ed25519 signatures (R || S) are 64 bytes too, like raw ES256 ones.
ED25519_SIGNATURE_SIZE = 64

IssuerPublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | Sm2PublicKey
"""The public key types an issuer (credential or status-list) key may have (SM2 only with
the optional suite, see :mod:`verifier.core.sm2`)."""

_KTY, _CRV, _X, _Y, _D = 1, -1, -2, -3, -4
_KTY_EC2, _CRV_P256 = 2, 1


def kid_for(pub: IssuerPublicKey) -> bytes:
    """The 8-byte key id: SHA-256 over the SubjectPublicKeyInfo DER, first 8 bytes (P-256,
    Ed25519 and SM2 keys alike)."""
    if isinstance(pub, Sm2PublicKey):
        return pub.kid()
    spki = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()[:KID_SIZE]


def _require_p256(pub: object) -> None:
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP256R1):
        raise ValueError("only P-256 public keys are supported")


def p256_from_point(point: bytes) -> ec.EllipticCurvePublicKey:
    """Load a SEC1 P-256 point (33-byte compressed or 65-byte uncompressed).

    Raises :class:`MalformedCredential` if it is not a point on the curve.
    """
    if not isinstance(point, bytes) or len(point) not in (1 + COORD_SIZE, 1 + 2 * COORD_SIZE):
        raise MalformedCredential("EC point has the wrong length")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise MalformedCredential("EC point is not on P-256") from exc


def p256_to_point(pub: IssuerPublicKey, *, compressed: bool = False) -> bytes:
    """The SEC1 encoding of ``pub`` (65 bytes uncompressed, or 33 compressed).

    Raises ``ValueError`` for any key that is not P-256 (an Ed25519 or SM2 issuer key has no
    P-256 point).
    """
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise ValueError("only P-256 public keys are supported")
    _require_p256(pub)
    fmt = (
        serialization.PublicFormat.CompressedPoint
        if compressed
        else serialization.PublicFormat.UncompressedPoint
    )
    return pub.public_bytes(serialization.Encoding.X962, fmt)


def cose_key_from_public(pub: ec.EllipticCurvePublicKey) -> dict[int, object]:
    """The compressed COSE_Key map of a P-256 public key: ``{1: 2, -1: 1, -2: x, -3: bool}``."""
    compressed = p256_to_point(pub, compressed=True)
    return {_KTY: _KTY_EC2, _CRV: _CRV_P256, _X: compressed[1:], _Y: compressed[0] == 0x03}


def public_from_cose_key(cose_key: object) -> ec.EllipticCurvePublicKey:
    """Decode an EC2 P-256 COSE_Key; ``-3`` may be the sign bit (bool) or the 32-byte y.

    Raises :class:`MalformedCredential` for any other key type, curve, label or length, or
    a point not on the curve.
    """
    if not isinstance(cose_key, Mapping):
        raise MalformedCredential("COSE_Key is not a map")
    if set(cose_key) != {_KTY, _CRV, _X, _Y}:
        raise MalformedCredential("COSE_Key must hold exactly kty, crv, x and y")
    kty, crv, x, y = cose_key[_KTY], cose_key[_CRV], cose_key[_X], cose_key[_Y]
    if type(kty) is not int or kty != _KTY_EC2 or type(crv) is not int or crv != _CRV_P256:
        raise MalformedCredential("COSE_Key is not EC2 P-256")
    if not isinstance(x, bytes) or len(x) != COORD_SIZE:
        raise MalformedCredential("COSE_Key x must be 32 bytes")
    if isinstance(y, bool):
        return p256_from_point(bytes([0x03 if y else 0x02]) + x)
    if isinstance(y, bytes) and len(y) == COORD_SIZE:
        return p256_from_point(b"\x04" + x + y)
    raise MalformedCredential("COSE_Key y must be a sign bit or 32 bytes")


_KTY_OKP, _CRV_ED25519 = 1, 6


def issuer_cose_key(pub: IssuerPublicKey) -> dict[int, object]:
    """The COSE_Key of an issuer key: EC2 P-256 (compressed) or OKP Ed25519 ``{1: 1, -1: 6,
    -2: x}``. Raises ValueError for other key types."""
    if isinstance(pub, ed25519.Ed25519PublicKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {_KTY: _KTY_OKP, _CRV: _CRV_ED25519, _X: raw}
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return cose_key_from_public(pub)
    raise ValueError("issuer keys are P-256 or Ed25519")


def issuer_public_from_cose_key(
    cose_key: object,
) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
    """Decodes an issuer COSE_Key (EC2 P-256 or OKP Ed25519); :class:`MalformedCredential`
    for anything else."""
    if isinstance(cose_key, Mapping) and cose_key.get(_KTY) == _KTY_OKP:
        if set(cose_key) != {_KTY, _CRV, _X} or cose_key[_CRV] != _CRV_ED25519:
            raise MalformedCredential("OKP COSE_Key must be exactly Ed25519 kty, crv, x")
        x = cose_key[_X]
        if not isinstance(x, bytes):
            raise MalformedCredential("OKP COSE_Key x must be bytes")
        return ed25519_from_raw(x)
    return public_from_cose_key(cose_key)


def raw_to_der(signature: bytes) -> bytes:
    """Convert a 64-byte raw ``r || s`` signature to DER; :class:`MalformedCredential` if
    the length is wrong."""
    if not isinstance(signature, bytes) or len(signature) != RAW_SIGNATURE_SIZE:
        raise MalformedCredential("ES256 signature must be 64 bytes r || s")
    r = int.from_bytes(signature[:COORD_SIZE], "big")
    s = int.from_bytes(signature[COORD_SIZE:], "big")
    return encode_dss_signature(r, s)


def der_to_raw(der: bytes) -> bytes:
    """Convert a DER ECDSA P-256 signature to 64-byte raw ``r || s``.

    Raises :class:`MalformedCredential` if it is not DER or a value exceeds 32 bytes.
    """
    try:
        r, s = decode_dss_signature(der)
        return r.to_bytes(COORD_SIZE, "big") + s.to_bytes(COORD_SIZE, "big")
    except (ValueError, OverflowError) as exc:
        raise MalformedCredential("not a DER P-256 ECDSA signature") from exc


def verify_es256(pub: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> None:
    """Verify a raw ``r || s`` ECDSA P-256 signature over SHA-256(``data``).

    Raises :class:`BadSignature` if it does not verify (a wrong-length signature raises
    :class:`MalformedCredential`); returns nothing on success.
    """
    _require_p256(pub)
    der = raw_to_der(signature)
    try:
        pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise BadSignature("ES256 signature does not verify") from None


def ed25519_from_raw(raw: bytes) -> ed25519.Ed25519PublicKey:
    """Load a 32-byte raw Ed25519 public key; :class:`MalformedCredential` otherwise."""
    if not isinstance(raw, bytes) or len(raw) != ED25519_KEY_SIZE:
        raise MalformedCredential("Ed25519 public key must be 32 bytes")
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:  # pragma: no cover - OpenSSL accepts every 32-byte string
        raise MalformedCredential("not an Ed25519 public key") from exc


def verify_eddsa(pub: ed25519.Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    """Verify a 64-byte Ed25519 (RFC 8032, pure EdDSA) signature over ``data``.

    Raises ``ValueError`` if ``pub`` is not an Ed25519 key (a programming error: the caller
    picks the key by the message's ``alg``), :class:`MalformedCredential` for a signature
    that is not 64 bytes, :class:`BadSignature` if it does not verify (including a
    non-canonical ``S >= L``, which OpenSSL refuses); returns nothing on success.
    """
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise ValueError("only Ed25519 public keys are supported for EdDSA")
    if not isinstance(signature, bytes) or len(signature) != ED25519_SIGNATURE_SIZE:
        raise MalformedCredential("EdDSA signature must be 64 bytes")
    try:
        pub.verify(signature, data)
    except InvalidSignature:
        raise BadSignature("EdDSA signature does not verify") from None
