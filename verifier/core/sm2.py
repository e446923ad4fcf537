"""SM2-with-SM3 signatures (GB/T 32918.2 / GM/T 0003.2, hash GB/T 32905 / GM/T 0004): the
optional suite, behind the ``[sm2]`` extra.

Neither ``cryptography`` nor the standard library can verify SM2 (``cryptography`` has SM3
but no SM2 curve), so the arithmetic comes from the ``gmssl-pyx`` package (a C extension
around GmSSL, Apache-2.0; see ``docs/formats.md`` for why this one). It is imported **only
when an SM2 signature is actually checked**: importing this module, building keys and
computing key ids need nothing beyond the core dependencies. Without the extra,
:func:`verify_sm2_sm3` raises :class:`~verifier.core.errors.Sm2Unavailable` (verdict
``unknown``: our misconfiguration, not the card's fault).

Profile:

* Keys: :class:`Sm2PublicKey`, the 65-byte uncompressed SEC1 point on the SM2 curve
  (checked on construction; the curve has cofactor 1, so every affine point on it is in the
  prime-order group). Its SubjectPublicKeyInfo is ``id-ecPublicKey`` with the named curve
  ``1.2.156.10197.1.301`` (as OpenSSL and GmSSL write it); ``kid`` is SHA-256 over that
  DER, first 8 bytes, as for every other key.
* Signatures travel as 64 bytes raw ``r || s`` (like ES256 in COSE); the backend speaks DER.
* ``e = SM3(Z || M)`` with ``Z`` over the default signer ID ``"1234567812345678"``
  (GB/T 35276-2017, also RFC 8998); ``M`` is the COSE ``Sig_structure``.
* COSE ``alg``: there is no IANA value for SM2. StarCard uses :data:`ALG_SM2_SM3` = -65601,
  from the private-use range (below -65536) of the COSE Algorithms registry. It is only
  ever honoured for a key the trust data declares with ``alg`` ``"SM2SM3"``.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from types import ModuleType

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.core.errors import BadSignature, MalformedCredential, Sm2Unavailable

__all__ = [
    "ALG_SM2_SM3",
    "BACKEND_MODULE",
    "DEFAULT_SIGNER_ID",
    "SM2_N",
    "SM2_SIGNATURE_SIZE",
    "Sm2PublicKey",
    "backend_available",
    "verify_sm2_sm3",
]

#: StarCard-private COSE algorithm id for SM2-with-SM3 (private-use range, < -65536).
ALG_SM2_SM3 = -65601
#: The PyPI distribution of the ``[sm2]`` extra is ``gmssl-pyx``; this is its module.
BACKEND_MODULE = "gmssl_pyx"
DEFAULT_SIGNER_ID = b"1234567812345678"
SM2_SIGNATURE_SIZE = 64

# GB/T 32918.5 recommended curve parameters.
SM2_P = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF", 16)
SM2_A = SM2_P - 3
SM2_B = int("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93", 16)
SM2_N = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123", 16)

_COORD = 32
# SEQUENCE { SEQUENCE { id-ecPublicKey, 1.2.156.10197.1.301 }, BIT STRING (65-byte point) }
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")


@dataclass(frozen=True)
class Sm2PublicKey:
    """An SM2 public key: ``point`` is the 65-byte uncompressed SEC1 encoding ``04||X||Y``.

    Construction checks the length, the prefix and that the point lies on the SM2 curve
    (``ValueError`` otherwise).
    """

    point: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.point, bytes) or len(self.point) != 1 + 2 * _COORD:
            raise ValueError("SM2 public key must be a 65-byte uncompressed point")
        if self.point[0] != 0x04:
            raise ValueError("SM2 public key must be uncompressed (04||X||Y)")
        x = int.from_bytes(self.point[1 : 1 + _COORD], "big")
        y = int.from_bytes(self.point[1 + _COORD :], "big")
        if not (x < SM2_P and y < SM2_P) or (y * y - (x * x * x + SM2_A * x + SM2_B)) % SM2_P:
            raise ValueError("point is not on the SM2 curve")

    @classmethod
    def from_spki_der(cls, der: bytes) -> Sm2PublicKey:
        """Load the SubjectPublicKeyInfo DER that OpenSSL/GmSSL write for an SM2 key.

        Raises :class:`MalformedCredential` for anything else.
        """
        if not isinstance(der, bytes) or len(der) != len(_SPKI_PREFIX) + 1 + 2 * _COORD:
            raise MalformedCredential("not an SM2 SubjectPublicKeyInfo")
        if not der.startswith(_SPKI_PREFIX):
            raise MalformedCredential("not an SM2 SubjectPublicKeyInfo")
        try:
            return cls(der[len(_SPKI_PREFIX) :])
        except ValueError as exc:
            raise MalformedCredential("SM2 SubjectPublicKeyInfo holds no curve point") from exc

    def spki_der(self) -> bytes:
        """The SubjectPublicKeyInfo DER (``id-ecPublicKey``, curve ``1.2.156.10197.1.301``)."""
        return _SPKI_PREFIX + self.point

    def kid(self) -> bytes:
        """The 8-byte key id: SHA-256 over :meth:`spki_der`, first 8 bytes."""
        return hashlib.sha256(self.spki_der()).digest()[:8]


def _backend() -> ModuleType:
    try:
        return importlib.import_module(BACKEND_MODULE)
    except ImportError as exc:
        raise Sm2Unavailable(
            "SM2 signatures need the optional extra: pip install 'starcard[sm2]'",
            detail=f"module {BACKEND_MODULE!r} (PyPI: gmssl-pyx) is not installed",
        ) from exc


def backend_available() -> bool:
    """Whether the ``[sm2]`` extra is installed (for wiring and test selection)."""
    try:
        _backend()
    except Sm2Unavailable:
        return False
    return True


def verify_sm2_sm3(
    pub: Sm2PublicKey, signature: bytes, data: bytes, *, signer_id: bytes = DEFAULT_SIGNER_ID
) -> None:
    """Verify a raw ``r || s`` SM2 signature over ``data`` (``e = SM3(Z || data)``).

    Raises ``ValueError`` if ``pub`` is not an :class:`Sm2PublicKey`,
    :class:`MalformedCredential` for a signature that is not 64 bytes,
    :class:`BadSignature` if it does not verify (``r`` or ``s`` outside ``[1, n-1]``
    included), :class:`Sm2Unavailable` if the extra is not installed. Returns nothing on
    success.
    """
    if not isinstance(pub, Sm2PublicKey):
        raise ValueError("only SM2 public keys are supported for SM2SM3")
    if not isinstance(signature, bytes) or len(signature) != SM2_SIGNATURE_SIZE:
        raise MalformedCredential("SM2 signature must be 64 bytes r || s")
    r = int.from_bytes(signature[:_COORD], "big")
    s = int.from_bytes(signature[_COORD:], "big")
    if not (0 < r < SM2_N and 0 < s < SM2_N):
        raise BadSignature("SM2 signature does not verify", detail="r or s out of range")
    backend = _backend()
    try:
        ok = backend.sm2_verify(pub.point[1:], data, encode_dss_signature(r, s), signer_id)
    except backend.InvalidValueError as exc:
        raise BadSignature("SM2 signature does not verify", detail=str(exc)) from exc
    if ok is not True:
        raise BadSignature("SM2 signature does not verify")
