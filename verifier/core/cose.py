"""COSE_Sign1 (RFC 9052 §4.2) with ES256, as StarCard profiles it.

Wire form: ``18([protected: bstr, unprotected: {}, payload: bstr, signature: bstr])``.

Profile rules, each enforced by :func:`parse_sign1` (on top of the strict CBOR rules of
:mod:`verifier.core.cbor`):

1. **Tag 18 is required.** RFC 9052 lets the application decide; our artefacts are read off
   cards and fetched from URLs without any context, so the tag is what says "COSE_Sign1".
   Untagged or otherwise tagged input raises :class:`MalformedCredential`.
2. The array has exactly four elements; the payload is attached (not ``nil``).
3. The protected header is a non-empty bstr holding a map with ``alg`` (1) and ``kid`` (4,
   exactly 8 bytes). Only these labels are allowed in it: ``alg``, ``content type`` (3),
   ``kid``, ``typ`` (16). ``alg`` must be ES256 (-7), else :class:`UnsupportedAlgorithm`:
   the key's algorithm is fixed by our profile, never chosen by the message.
4. ``crit`` (2) is rejected: we implement no extension a sender could mark critical.
5. The unprotected header must be empty; in particular ``kid`` and ``alg`` there (where an
   attacker could change them without breaking the signature) are rejected.
6. The signature is exactly 64 bytes, raw ``r || s``.

:func:`verify_sign1` checks the signature over ``Sig_structure = ["Signature1",
protected, h'', payload]`` built from the protected bytes and payload **as received**,
never from a re-encoding. It raises :class:`BadSignature`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.core.cbor import decode_strict, encode
from verifier.core.errors import BadSignature, MalformedCredential, UnsupportedAlgorithm
from verifier.core.keys import KID_SIZE, RAW_SIGNATURE_SIZE, kid_for, verify_es256
from verifier.core.signer import Signer

__all__ = [
    "ALG_ES256",
    "COSE_SIGN1_TAG",
    "HDR_ALG",
    "HDR_CONTENT_TYPE",
    "HDR_CRIT",
    "HDR_KID",
    "HDR_TYP",
    "Sign1Message",
    "parse_sign1",
    "sig_structure",
    "sign1",
    "verify_sign1",
]

COSE_SIGN1_TAG = 18
HDR_ALG, HDR_CRIT, HDR_CONTENT_TYPE, HDR_KID, HDR_TYP = 1, 2, 3, 4, 16
ALG_ES256 = -7
_ALG_NAMES = {ALG_ES256: "ES256"}
_ALLOWED_PROTECTED = frozenset({HDR_ALG, HDR_CONTENT_TYPE, HDR_KID, HDR_TYP})


@dataclass(frozen=True)
class Sign1Message:
    """A parsed, **unverified** COSE_Sign1, keeping the exact received bytes.

    ``protected_bytes`` and ``payload`` are the byte strings as received (what the signature
    covers); ``protected`` is their decoded, read-only view; ``raw`` is the whole message.
    """

    raw: bytes
    protected_bytes: bytes
    protected: Mapping[int, object] = field(compare=False)
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        """The algorithm name (always ``"ES256"`` for a parsed message)."""
        value = self.protected[HDR_ALG]
        assert isinstance(value, int)
        return _ALG_NAMES[value]

    @property
    def kid(self) -> bytes:
        """The 8-byte key id from the protected header."""
        value = self.protected[HDR_KID]
        assert isinstance(value, bytes)
        return value

    @property
    def typ(self) -> object:
        """The ``typ`` header (16) or ``None``."""
        return self.protected.get(HDR_TYP)


def sig_structure(protected_bytes: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The RFC 9052 §4.4 ``Sig_structure`` for COSE_Sign1, CBOR-encoded."""
    return encode(["Signature1", protected_bytes, external_aad, payload])


def sign1(
    payload: bytes,
    signer: Signer,
    kid: bytes,
    extra_protected: Mapping[int, object] | None = None,
) -> bytes:
    """Build and sign a tagged COSE_Sign1 with ``{1: -7, 4: kid} | extra_protected``.

    Invariants checked before returning (``ValueError`` otherwise): the signer is ES256,
    ``kid`` is ``kid_for(signer.public_key())``, ``extra_protected`` only uses ``content
    type`` and ``typ``, and the signature returned by the signer verifies (a faulty signer
    never yields a published artefact).
    """
    if signer.algorithm != "ES256":
        raise ValueError(f"unsupported signer algorithm {signer.algorithm!r}")
    if not isinstance(payload, bytes):
        raise TypeError("payload must be bytes")
    if not isinstance(kid, bytes) or len(kid) != KID_SIZE:
        raise ValueError("kid must be 8 bytes")
    public_key = signer.public_key()
    if not hmac.compare_digest(kid, kid_for(public_key)):
        raise ValueError("kid does not identify the signer's key")
    protected: dict[int, object] = {HDR_ALG: ALG_ES256, HDR_KID: kid}
    for label, value in (extra_protected or {}).items():
        if label not in (HDR_CONTENT_TYPE, HDR_TYP):
            raise ValueError(f"protected header label {label} is not allowed")
        protected[label] = value
    protected_bytes = encode(protected)
    signature = signer.sign(sig_structure(protected_bytes, payload))
    if not isinstance(signature, bytes) or len(signature) != RAW_SIGNATURE_SIZE:
        raise ValueError("signer returned a signature that is not 64 bytes")
    try:
        verify_es256(public_key, signature, sig_structure(protected_bytes, payload))
    except BadSignature as exc:
        raise ValueError("signer returned a signature that does not verify") from exc
    return encode(cbor2.CBORTag(COSE_SIGN1_TAG, [protected_bytes, {}, payload, signature]))


def parse_sign1(data: bytes) -> Sign1Message:
    """Parse a COSE_Sign1 under the profile rules of this module (signature not checked).

    Raises :class:`MalformedCredential` (or a subclass) for any structural violation and
    :class:`UnsupportedAlgorithm` for an ``alg`` other than ES256.
    """
    item = decode_strict(data, allowed_tags=(COSE_SIGN1_TAG,))
    if not isinstance(item, cbor2.CBORTag):
        raise MalformedCredential("COSE_Sign1 must be tagged (tag 18)")
    if item.tag != COSE_SIGN1_TAG:  # pragma: no cover - decode_strict allows only tag 18
        raise MalformedCredential(f"expected tag 18, got {item.tag}")
    parts = item.value
    if not isinstance(parts, list) or len(parts) != 4:
        raise MalformedCredential("COSE_Sign1 must be an array of four elements")
    protected_bytes, unprotected, payload, signature = parts
    if not isinstance(protected_bytes, bytes) or not protected_bytes:
        raise MalformedCredential("protected header must be a non-empty bstr")
    if not isinstance(unprotected, dict):
        raise MalformedCredential("unprotected header must be a map")
    if unprotected:
        labels = ", ".join(str(k) for k in unprotected)
        raise MalformedCredential(
            "unprotected header must be empty", detail=f"labels present: {labels}"
        )
    if not isinstance(payload, bytes):
        raise MalformedCredential("payload must be an attached bstr")
    if not isinstance(signature, bytes) or len(signature) != RAW_SIGNATURE_SIZE:
        raise MalformedCredential("signature must be a 64-byte bstr")
    protected = _parse_protected(protected_bytes)
    return Sign1Message(
        raw=data,
        protected_bytes=protected_bytes,
        protected=MappingProxyType(protected),
        payload=payload,
        signature=signature,
    )


def _parse_protected(protected_bytes: bytes) -> dict[int, object]:
    header = decode_strict(protected_bytes)
    if not isinstance(header, dict):
        raise MalformedCredential("protected header must be a map")
    if HDR_CRIT in header:
        raise MalformedCredential("critical header parameters are not supported")
    for label in header:
        if type(label) is not int or label not in _ALLOWED_PROTECTED:
            raise MalformedCredential(f"protected header label {label!r} is not allowed")
    if HDR_ALG not in header:
        raise MalformedCredential("protected header lacks alg")
    alg = header[HDR_ALG]
    if type(alg) is not int or alg not in _ALG_NAMES:
        raise UnsupportedAlgorithm(f"algorithm {alg!r} is not accepted")
    kid = header.get(HDR_KID)
    if not isinstance(kid, bytes) or len(kid) != KID_SIZE:
        raise MalformedCredential("protected header must hold an 8-byte kid")
    return {k: v for k, v in header.items() if type(k) is int}


def verify_sign1(msg: Sign1Message, pub: ec.EllipticCurvePublicKey) -> None:
    """Verify ``msg``'s ES256 signature with ``pub`` over the bytes as received.

    Raises :class:`BadSignature`; returns nothing on success.
    """
    verify_es256(pub, msg.signature, sig_structure(msg.protected_bytes, msg.payload))
