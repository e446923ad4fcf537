"""Publish trusted keys as a JWK Set (RFC 7517/7518) so independent tools can check us.

Each key: ``kty`` "EC", ``crv`` "P-256", ``x``/``y`` (32-byte coordinates, base64url
without padding), ``kid`` = base64url of the 8-byte kid, ``alg`` "ES256", ``use`` "sig",
``key_ops`` ["verify"], plus the private member ``starcard_purpose`` ("credential" or
"status_list"). Validity windows are not JWK members and are not published here.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from verifier.core.errors import TrustDataMissing
from verifier.core.keys import COORD_SIZE, kid_for, p256_from_point, p256_to_point
from verifier.core.trust import TrustedKey

__all__ = ["b64url", "to_jwk", "to_jwks", "trusted_keys_from_jwks"]


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def to_jwk(key: TrustedKey) -> dict[str, object]:
    """The public JWK of one trusted key: EC P-256 (RFC 7518) or OKP Ed25519 (RFC 8037)."""
    if isinstance(key.public_key, ed25519.Ed25519PublicKey):
        raw = key.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        material: dict[str, object] = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    else:
        point = p256_to_point(key.public_key)
        material = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(point[1 : 1 + COORD_SIZE]),
            "y": b64url(point[1 + COORD_SIZE :]),
        }
    return material | {
        "kid": b64url(key.kid),
        "alg": key.alg,
        "use": "sig",
        "key_ops": ["verify"],
        "starcard_purpose": key.purpose,
    }


def to_jwks(keys: Iterable[TrustedKey]) -> dict[str, object]:
    """``{"keys": [...]}`` for ``keys``, in the given order."""
    return {"keys": [to_jwk(k) for k in keys]}


def _unb64url(text: object) -> bytes:
    if not isinstance(text, str):
        raise TrustDataMissing("JWK member is not a string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise TrustDataMissing("JWK member is not base64url") from None


def trusted_keys_from_jwks(
    jwks: object, not_before: int = 0, not_after: int = 2**62
) -> list[TrustedKey]:
    """Reads a pinned JWKS (as published by the issuer) back into trusted keys.

    A JWKS has no validity windows, so the caller gives one for all keys. Every ``kid`` must
    match the key (first 8 bytes of SHA-256 over its SPKI), so a JWKS cannot relabel a key.

    Raises:
        TrustDataMissing: not a JWKS of P-256 ES256 keys with a known purpose, or a ``kid``
            that does not belong to its key.
    """
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise TrustDataMissing('a JWKS is an object with a "keys" array')
    keys = []
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            raise TrustDataMissing("only P-256 EC keys are supported")
        purpose = jwk.get("starcard_purpose")
        if purpose not in ("credential", "status_list") or jwk.get("alg") != "ES256":
            raise TrustDataMissing("each key needs alg ES256 and a starcard_purpose")
        x, y = _unb64url(jwk.get("x")), _unb64url(jwk.get("y"))
        if len(x) != COORD_SIZE or len(y) != COORD_SIZE:
            raise TrustDataMissing("P-256 coordinates are 32 bytes")
        try:
            public_key = p256_from_point(b"\x04" + x + y)
        except ValueError:
            raise TrustDataMissing("the JWK is not a point on P-256") from None
        kid = _unb64url(jwk.get("kid"))
        if kid != kid_for(public_key):
            raise TrustDataMissing("the JWK kid does not belong to its key")
        keys.append(
            TrustedKey(
                kid=kid,
                alg="ES256",
                purpose=purpose,
                public_key=public_key,
                not_before=not_before,
                not_after=not_after,
            )
        )
    return keys
