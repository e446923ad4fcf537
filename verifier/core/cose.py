"""COSE_Sign1 (RFC 9052 §4.2) with ES256, EdDSA or (optional) SM2, as StarCard profiles it.

Wire form: ``18([protected: bstr, unprotected: {}, payload: bstr, signature: bstr])``.

Profile rules, each enforced by :func:`parse_sign1` (on top of the strict CBOR rules of
:mod:`verifier.core.cbor`):

0. The whole message is at most :data:`MAX_SIGN1_BYTES` (checked before any decoding,
   :class:`InputTooLarge`).
1. **Tag 18 is required.** RFC 9052 lets the application decide; our artefacts are read off
   cards and fetched from URLs without any context, so the tag is what says "COSE_Sign1".
   Untagged or otherwise tagged input raises :class:`MalformedCredential`.
2. The array has exactly four elements; the payload is attached (not ``nil``).
3. The protected header is a non-empty bstr holding a map with ``alg`` (1) and ``kid`` (4,
   exactly 8 bytes). Only these labels are allowed in it: ``alg``, ``content type`` (3),
   ``kid``, ``typ`` (16). ``alg`` must be ES256 (-7), EdDSA (-8, Ed25519 only) or, for the
   optional suite, SM2-with-SM3 (-65601, private use, see :mod:`.sm2`), else
   :class:`UnsupportedAlgorithm`. The message names its algorithm, but the **trusted key
   decides**: :func:`verify_sign1` refuses a key of another type than ``alg`` requires, and
   callers also require the trusted key's declared ``alg`` to equal the header's
   (algorithm substitution is rejected both ways).
4. ``crit`` (2) is rejected: we implement no extension a sender could mark critical.
5. The unprotected header must be empty; in particular ``kid`` and ``alg`` there (where an
   attacker could change them without breaking the signature) are rejected.
6. The signature is exactly 64 bytes: raw ``r || s`` for ES256 and SM2, ``R || S`` for
   Ed25519.
7. No external AAD: StarCard signs nothing outside the message.

:func:`verify_sign1` checks the signature over ``Sig_structure = ["Signature1",
protected, h'', payload]`` built from the protected bytes and payload **as received**,
never from a re-encoding. It raises :class:`BadSignature`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from verifier.core.cbor import decode_strict, encode
from verifier.core.errors import (
    BadSignature,
    InputTooLarge,
    MalformedCredential,
    UnsupportedAlgorithm,
)
from verifier.core.keys import (
    KID_SIZE,
    RAW_SIGNATURE_SIZE,
    IssuerPublicKey,
    kid_for,
    verify_eddsa,
    verify_es256,
)
from verifier.core.sm2 import ALG_SM2_SM3, Sm2PublicKey, verify_sm2_sm3

__all__ = [
    "ALGORITHMS",
    "ALG_EDDSA",
    "ALG_ES256",
    "COSE_SIGN1_TAG",
    "HDR_ALG",
    "HDR_CONTENT_TYPE",
    "HDR_CRIT",
    "HDR_KID",
    "HDR_TYP",
    "MAX_SIGN1_BYTES",
    "IssuerSigner",
    "Sign1Message",
    "check_key_for_alg",
    "parse_protected_header",
    "parse_sign1",
    "sig_structure",
    "sign1",
    "verify_sign1",
]

COSE_SIGN1_TAG = 18
HDR_ALG, HDR_CRIT, HDR_CONTENT_TYPE, HDR_KID, HDR_TYP = 1, 2, 3, 4, 16
ALG_ES256 = -7
ALG_EDDSA = -8
#: COSE algorithm id (IANA "COSE Algorithms") -> the name used in trust data.
ALGORITHMS: Mapping[int, str] = MappingProxyType(
    {ALG_ES256: "ES256", ALG_EDDSA: "EdDSA", ALG_SM2_SM3: "SM2SM3"}
)
_ALG_IDS = {name: alg_id for alg_id, name in ALGORITHMS.items()}
_ALLOWED_PROTECTED = frozenset({HDR_ALG, HDR_CONTENT_TYPE, HDR_KID, HDR_TYP})
#: Largest COSE_Sign1 accepted (bytes), checked before decoding: credentials are ~300 bytes,
#: status list tokens of the largest lists a few hundred KiB.
MAX_SIGN1_BYTES = 4 * 1024 * 1024


class IssuerSigner(Protocol):
    """What :func:`sign1` needs: the ``Signer`` port, widened to Ed25519 and SM2 issuer keys.

    ``algorithm`` is ``"ES256"`` (``public_key()`` a P-256 key, ``sign`` returns raw
    ``r || s`` over SHA-256 of the data), ``"EdDSA"`` (an Ed25519 key, ``sign`` returns
    the 64-byte RFC 8032 signature of the data) or ``"SM2SM3"`` (an :class:`Sm2PublicKey`,
    ``sign`` returns raw ``r || s`` with the default signer ID). Every
    :class:`verifier.core.signer.Signer` is an ``IssuerSigner``.
    """

    @property
    def algorithm(self) -> str: ...

    def public_key(self) -> IssuerPublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


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
        """The algorithm name: ``"ES256"``, ``"EdDSA"`` or ``"SM2SM3"`` (:data:`ALGORITHMS`)."""
        value = self.protected[HDR_ALG]
        assert isinstance(value, int)
        return ALGORITHMS[value]

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


def check_key_for_alg(alg: str, pub: object) -> None:
    """Raise :class:`UnsupportedAlgorithm` unless ``pub`` is the key type ``alg`` needs:
    ES256 a P-256 key, EdDSA an Ed25519 key, SM2SM3 an :class:`Sm2PublicKey` (algorithm
    substitution is refused)."""
    if alg == "ES256":
        if isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1):
            return
    elif alg == "EdDSA":
        if isinstance(pub, ed25519.Ed25519PublicKey):
            return
    elif alg == "SM2SM3":
        if isinstance(pub, Sm2PublicKey):
            return
    else:
        raise UnsupportedAlgorithm(f"algorithm {alg!r} is not accepted")
    raise UnsupportedAlgorithm(
        f"message alg {alg} does not match the key", detail=f"key type {type(pub).__name__}"
    )


def _verify(alg: str, pub: IssuerPublicKey, signature: bytes, data: bytes) -> None:
    check_key_for_alg(alg, pub)
    if isinstance(pub, ed25519.Ed25519PublicKey):
        verify_eddsa(pub, signature, data)
    elif isinstance(pub, Sm2PublicKey):
        verify_sm2_sm3(pub, signature, data)
    else:
        verify_es256(pub, signature, data)


def sign1(
    payload: bytes,
    signer: IssuerSigner,
    kid: bytes,
    extra_protected: Mapping[int, object] | None = None,
) -> bytes:
    """Build and sign a tagged COSE_Sign1 with ``{1: alg, 4: kid} | extra_protected``.

    ``alg`` is the signer's (ES256 -7, EdDSA -8, or SM2SM3 -65601 with the ``[sm2]``
    extra). Invariants checked before returning
    (``ValueError`` otherwise): the signer's algorithm is one of :data:`ALGORITHMS` and its
    key has the matching type, ``kid`` is ``kid_for(signer.public_key())``,
    ``extra_protected`` only uses ``content type`` and ``typ``, and the signature returned
    by the signer verifies (a faulty signer never yields a published artefact).
    """
    if signer.algorithm not in _ALG_IDS:
        raise ValueError(f"unsupported signer algorithm {signer.algorithm!r}")
    alg = signer.algorithm
    if not isinstance(payload, bytes):
        raise TypeError("payload must be bytes")
    if not isinstance(kid, bytes) or len(kid) != KID_SIZE:
        raise ValueError("kid must be 8 bytes")
    public_key = signer.public_key()
    try:
        check_key_for_alg(alg, public_key)
    except UnsupportedAlgorithm as exc:
        raise ValueError(f"signer key does not fit its algorithm {alg}") from exc
    if not hmac.compare_digest(kid, kid_for(public_key)):
        raise ValueError("kid does not identify the signer's key")
    protected: dict[int, object] = {HDR_ALG: _ALG_IDS[alg], HDR_KID: kid}
    for label, value in (extra_protected or {}).items():
        if label not in (HDR_CONTENT_TYPE, HDR_TYP):
            raise ValueError(f"protected header label {label} is not allowed")
        protected[label] = value
    protected_bytes = encode(protected)
    signature = signer.sign(sig_structure(protected_bytes, payload))
    if not isinstance(signature, bytes) or len(signature) != RAW_SIGNATURE_SIZE:
        raise ValueError("signer returned a signature that is not 64 bytes")
    try:
        _verify(alg, public_key, signature, sig_structure(protected_bytes, payload))
    except BadSignature as exc:
        raise ValueError("signer returned a signature that does not verify") from exc
    return encode(cbor2.CBORTag(COSE_SIGN1_TAG, [protected_bytes, {}, payload, signature]))


def parse_sign1(data: bytes) -> Sign1Message:
    """Parse a COSE_Sign1 under the profile rules of this module (signature not checked).

    Raises :class:`InputTooLarge` for more than :data:`MAX_SIGN1_BYTES`,
    :class:`MalformedCredential` (or a subclass) for any structural violation and
    :class:`UnsupportedAlgorithm` for an ``alg`` other than ES256 or EdDSA. ``TypeError``
    if ``data`` is not ``bytes``.
    """
    if not isinstance(data, bytes):
        raise TypeError("COSE_Sign1 input must be bytes")
    if len(data) > MAX_SIGN1_BYTES:
        raise InputTooLarge(
            "COSE_Sign1 is larger than allowed", detail=f"{len(data)} > {MAX_SIGN1_BYTES} bytes"
        )
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
    protected = parse_protected_header(protected_bytes)
    return Sign1Message(
        raw=data,
        protected_bytes=protected_bytes,
        protected=MappingProxyType(protected),
        payload=payload,
        signature=signature,
    )


def parse_protected_header(protected_bytes: bytes) -> dict[int, object]:
    """Decode and check a protected header under rules 3 and 4 of the module docstring.

    Raises :class:`MalformedCredential` (or a subclass) or :class:`UnsupportedAlgorithm`.
    """
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
    if type(alg) is not int or alg not in ALGORITHMS:
        raise UnsupportedAlgorithm(f"algorithm {alg!r} is not accepted")
    kid = header.get(HDR_KID)
    if not isinstance(kid, bytes) or len(kid) != KID_SIZE:
        raise MalformedCredential("protected header must hold an 8-byte kid")
    return {k: v for k, v in header.items() if type(k) is int}


def verify_sign1(msg: Sign1Message, pub: IssuerPublicKey) -> None:
    """Verify ``msg``'s signature with ``pub`` over the bytes as received.

    The algorithm is the message's ``alg``; ``pub`` must be of the type it needs (P-256 for
    ES256, Ed25519 for EdDSA), else :class:`UnsupportedAlgorithm`. Raises
    :class:`BadSignature` if the signature does not verify; returns nothing on success.
    """
    _verify(msg.alg, pub, msg.signature, sig_structure(msg.protected_bytes, msg.payload))
