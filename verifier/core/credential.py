"""The StarCard credential: a CWT (RFC 8392) in a tagged ES256 COSE_Sign1.

Protected header: ``{1: -7 (ES256), 4: kid (8 bytes), 16: 61}``; ``typ`` 61 is the CoAP
content format of ``application/cwt`` (RFC 8392 §9.3), so that a status list token (typ
``application/statuslist+cwt``) can never be taken for a credential.

Claims (all required, no others allowed; integers are never booleans):

========  ==========================  ================================================
key       name                        value
========  ==========================  ================================================
1         iss                         text, 1..64 chars (e.g. ``"sc.example.cn"``)
6         iat                         int seconds since the epoch
5         nbf                         int
4         exp                         int, ``exp > nbf`` and ``exp >= iat``
7         cti                         card serial, bstr 1..32 bytes (8 on starcard-v1)
8         cnf                         ``{1: COSE_Key}`` of the card key (RFC 8747), EC2
                                      P-256 with compressed y (see :mod:`.keys`); absent
                                      exactly for keyless profiles (``iso7816-fs``)
65535     status                      ``{"status_list": {"idx": uint, "uri": text}}``
                                      (IETF Token Status List)
-65537    star level                  int 0..5
-65538    policy version              text 1..32
-65539    profile                     text 1..32 (e.g. ``"starcard-v1"``)
-65540    QR-token binding            bstr 16 = first 16 bytes of SHA-256 of the printed QR
                                      token (UTF-8); see :func:`qr_token_binding`
========  ==========================  ================================================

A credential without ``cnf`` belongs to a card that cannot prove possession of a key: the
verifier reports it as low assurance (no clone protection) and policy decides whether it is
accepted. Which profiles are keyless is fixed here (:data:`KEYLESS_PROFILES`), so a credential
for a keyed profile can never drop its ``cnf``.

Private claim keys are negative integers below -65536 (the range RFC 8392 leaves to
private use). No name, no ID number. A realistic credential is about 290 bytes.

:func:`parse_credential` is **unverified**: it checks structure and types and keeps the
exact bytes; signature, trust and time are checked by :func:`verifier.core.verify.verify_card`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from verifier.core.cbor import decode_strict, encode
from verifier.core.cose import HDR_TYP, Sign1Message, parse_sign1, sign1
from verifier.core.errors import MalformedCredential
from verifier.core.keys import (
    cose_key_from_public,
    p256_from_point,
    p256_to_point,
    public_from_cose_key,
)
from verifier.core.signer import Signer

__all__ = [
    "CLAIM_CNF",
    "CLAIM_CTI",
    "CLAIM_EXP",
    "CLAIM_IAT",
    "CLAIM_ISS",
    "CLAIM_NBF",
    "CLAIM_POLICY_VERSION",
    "CLAIM_PROFILE",
    "CLAIM_QR_BINDING",
    "CLAIM_STAR_LEVEL",
    "CLAIM_STATUS",
    "CWT_TYP",
    "KEYLESS_PROFILES",
    "Credential",
    "CredentialClaims",
    "issue_credential",
    "parse_credential",
    "qr_token_binding",
]

CLAIM_ISS, CLAIM_EXP, CLAIM_NBF, CLAIM_IAT, CLAIM_CTI, CLAIM_CNF = 1, 4, 5, 6, 7, 8
CLAIM_STATUS = 65535
CLAIM_STAR_LEVEL = -65537
CLAIM_POLICY_VERSION = -65538
CLAIM_PROFILE = -65539
CLAIM_QR_BINDING = -65540
CWT_TYP = 61  # CoAP content format of application/cwt

_ALL_CLAIMS = frozenset(
    {
        CLAIM_ISS,
        CLAIM_EXP,
        CLAIM_NBF,
        CLAIM_IAT,
        CLAIM_CTI,
        CLAIM_CNF,
        CLAIM_STATUS,
        CLAIM_STAR_LEVEL,
        CLAIM_POLICY_VERSION,
        CLAIM_PROFILE,
        CLAIM_QR_BINDING,
    }
)
_KEYLESS_CLAIMS = _ALL_CLAIMS - {CLAIM_CNF}
KEYLESS_PROFILES = frozenset({"iso7816-fs", "iso7816-fs-mf"})
"""Card profiles without an on-card key (their credentials carry no ``cnf``)."""
_T = TypeVar("_T")
_MAX_TIME = 2**63 - 1
_MAX_IDX = 2**32 - 1
QR_BINDING_SIZE = 16


def qr_token_binding(token: str) -> bytes:
    """The 16-byte claim value binding a printed QR token: SHA-256(token UTF-8)[:16]."""
    return hashlib.sha256(token.encode("utf-8")).digest()[:QR_BINDING_SIZE]


@dataclass(frozen=True)
class CredentialClaims:
    """The claims of a credential, validated on construction (``ValueError``/``TypeError``).

    ``card_key`` is the card's P-256 public key as a SEC1 point; 33- or 65-byte input is
    accepted and stored uncompressed (65 bytes, the form GET DATA returns). It is ``None``
    exactly when ``profile`` is in :data:`KEYLESS_PROFILES`.
    """

    iss: str
    iat: int
    nbf: int
    exp: int
    cti: bytes
    card_key: bytes | None
    status_idx: int
    status_uri: str
    star_level: int
    policy_version: str
    profile: str
    qr_hash: bytes

    def __post_init__(self) -> None:
        _text(self.iss, "iss", 64)
        for name in ("iat", "nbf", "exp"):
            _int(getattr(self, name), name, 0, _MAX_TIME)
        if self.exp <= self.nbf or self.exp < self.iat:
            raise ValueError("exp must be after nbf and not before iat")
        _bytes(self.cti, "cti", 1, 32)
        _text(self.profile, "profile", 32)
        if self.card_key is None:
            if self.profile not in KEYLESS_PROFILES:
                raise ValueError(f"profile {self.profile!r} needs a card key (cnf)")
        else:
            if self.profile in KEYLESS_PROFILES:
                raise ValueError(f"profile {self.profile!r} has no card key")
            if not isinstance(self.card_key, bytes):
                raise TypeError("card_key must be a SEC1 point (bytes)")
            try:
                point = p256_to_point(p256_from_point(self.card_key))
            except MalformedCredential as exc:
                raise ValueError("card_key is not a P-256 point") from exc
            object.__setattr__(self, "card_key", point)
        _int(self.status_idx, "status_idx", 0, _MAX_IDX)
        _text(self.status_uri, "status_uri", 255)
        _int(self.star_level, "star_level", 0, 5)
        _text(self.policy_version, "policy_version", 32)
        _bytes(self.qr_hash, "qr_hash", QR_BINDING_SIZE, QR_BINDING_SIZE)

    @property
    def has_card_key(self) -> bool:
        return self.card_key is not None

    @property
    def card_public_key(self) -> ec.EllipticCurvePublicKey:
        """The card key bound by ``cnf``; ValueError for a keyless profile."""
        if self.card_key is None:
            raise ValueError(f"profile {self.profile!r} has no card key")
        return p256_from_point(self.card_key)

    def to_cbor_map(self) -> dict[int, object]:
        """The CWT claims map (see the module docstring)."""
        claims: dict[int, object] = {
            CLAIM_ISS: self.iss,
            CLAIM_IAT: self.iat,
            CLAIM_NBF: self.nbf,
            CLAIM_EXP: self.exp,
            CLAIM_CTI: self.cti,
        }
        if self.card_key is not None:
            claims[CLAIM_CNF] = {1: cose_key_from_public(self.card_public_key)}
        return claims | {
            CLAIM_STATUS: {"status_list": {"idx": self.status_idx, "uri": self.status_uri}},
            CLAIM_STAR_LEVEL: self.star_level,
            CLAIM_POLICY_VERSION: self.policy_version,
            CLAIM_PROFILE: self.profile,
            CLAIM_QR_BINDING: self.qr_hash,
        }


@dataclass(frozen=True)
class Credential:
    """A parsed, **unverified** credential: exact bytes, the COSE message and its claims."""

    raw: bytes
    message: Sign1Message
    claims: CredentialClaims

    @property
    def kid(self) -> bytes:
        """The issuer key id from the protected header."""
        return self.message.kid


def issue_credential(claims: CredentialClaims, signer: Signer, kid: bytes) -> bytes:
    """Sign ``claims`` as a credential; return its exact bytes.

    Raises ``ValueError`` if ``kid`` does not match the signer or the signer misbehaves
    (see :func:`verifier.core.cose.sign1`).
    """
    payload = encode(claims.to_cbor_map())
    return sign1(payload, signer, kid, {HDR_TYP: CWT_TYP})


def parse_credential(data: bytes) -> Credential:
    """Parse a credential strictly, without verifying anything cryptographic.

    Raises :class:`MalformedCredential` (or a subclass) for any deviation from the format,
    :class:`~verifier.core.errors.UnsupportedAlgorithm` for an ``alg`` other than ES256.
    """
    message = parse_sign1(data)
    typ = message.typ
    if type(typ) is not int or typ != CWT_TYP:
        raise MalformedCredential("protected typ is not application/cwt (61)")
    claims = decode_strict(message.payload)
    if not isinstance(claims, dict):
        raise MalformedCredential("CWT claims must be a map")
    if set(claims) not in (_ALL_CLAIMS, _KEYLESS_CLAIMS):
        missing = sorted(str(k) for k in _KEYLESS_CLAIMS - set(claims))
        extra = sorted(str(k) for k in set(claims) - _ALL_CLAIMS)
        raise MalformedCredential(
            "credential claims are not exactly the required set",
            detail=f"missing {missing}, unexpected {extra}",
        )
    card_key = p256_to_point(_cnf_key(claims[CLAIM_CNF])) if CLAIM_CNF in claims else None
    idx, uri = _status_ref(claims[CLAIM_STATUS])
    try:
        parsed = CredentialClaims(
            iss=_typed(claims[CLAIM_ISS], str, "iss"),
            iat=_typed(claims[CLAIM_IAT], int, "iat"),
            nbf=_typed(claims[CLAIM_NBF], int, "nbf"),
            exp=_typed(claims[CLAIM_EXP], int, "exp"),
            cti=_typed(claims[CLAIM_CTI], bytes, "cti"),
            card_key=card_key,
            status_idx=idx,
            status_uri=uri,
            star_level=_typed(claims[CLAIM_STAR_LEVEL], int, "star level"),
            policy_version=_typed(claims[CLAIM_POLICY_VERSION], str, "policy version"),
            profile=_typed(claims[CLAIM_PROFILE], str, "profile"),
            qr_hash=_typed(claims[CLAIM_QR_BINDING], bytes, "QR binding"),
        )
    except (ValueError, TypeError) as exc:
        raise MalformedCredential("credential claim out of range", detail=str(exc)) from exc
    return Credential(raw=data, message=message, claims=parsed)


def _cnf_key(cnf: object) -> ec.EllipticCurvePublicKey:
    if not isinstance(cnf, dict) or set(cnf) != {1}:
        raise MalformedCredential("cnf must be {1: COSE_Key}")
    cose_key = cnf[1]
    if not isinstance(cose_key, Mapping):
        raise MalformedCredential("cnf COSE_Key must be a map")
    return public_from_cose_key(cose_key)


def _status_ref(status: object) -> tuple[int, str]:
    if not isinstance(status, dict) or set(status) != {"status_list"}:
        raise MalformedCredential('status must be {"status_list": {...}}')
    ref = status["status_list"]
    if not isinstance(ref, dict) or set(ref) != {"idx", "uri"}:
        raise MalformedCredential('status_list must be {"idx": uint, "uri": text}')
    return _typed(ref["idx"], int, "status idx"), _typed(ref["uri"], str, "status uri")


def _typed(value: object, kind: type[_T], name: str) -> _T:
    """``value`` if it is exactly of type ``kind`` (so ``True`` is not an int)."""
    if type(value) is not kind or not isinstance(value, kind):
        raise MalformedCredential(f"claim {name} has the wrong type")
    return value


def _int(value: object, name: str, low: int, high: int) -> None:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}")


def _text(value: object, name: str, max_len: int) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str")
    if not 1 <= len(value) <= max_len:
        raise ValueError(f"{name} must be 1..{max_len} characters")


def _bytes(value: object, name: str, min_len: int, max_len: int) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes")
    if not min_len <= len(value) <= max_len:
        raise ValueError(f"{name} must be {min_len}..{max_len} bytes")
