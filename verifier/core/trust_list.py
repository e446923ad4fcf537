"""The signed trust list: which issuer and status-list keys a verifier trusts, and when.

A verifier pins one thing, the **root key** (kept offline, purpose trust-list root). The root
signs a trust list; everything else a verifier trusts comes from the newest valid list.

**Format.** A tagged COSE_Sign1 (see :mod:`.cose`), protected ``{1: alg, 4: root kid,
16: "application/starcard-trustlist+cbor"}``, payload a canonical CBOR map::

    {"v": 1, "iss": text, "seq": uint, "iat": int, "exp": int,
     "keys": [{"kid": bstr(8), "alg": "ES256", "use": "credential" | "status_list",
               "key": COSE_Key, "sign_from": int, "sign_until": int,
               "verify_until": int}, ...]}

**Rotation.** A key may sign objects dated in ``[sign_from, sign_until)`` and is trusted for
verification until ``verify_until``. A successor is listed before its ``sign_from`` (so every
verifier knows it before it signs); a retired key keeps its entry, with ``sign_until`` in the
past, until everything it signed has expired (``verify_until``). A key absent from the list,
used for another purpose, or outside its windows is rejected (:class:`UntrustedKey`).

**Acceptance** (:class:`TrustListCache`, pure, in the style of python-tuf): signature by the
pinned root; ``iat`` not in the future beyond the clock skew; not expired (**freeze**: an
expired list is never used, the verdict becomes ``unknown``); ``seq`` never lower than the
one held (**rollback**), and an equal ``seq`` must be the same bytes (**equivocation**). The
holder persists :attr:`TrustListCache.watermark`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from verifier.core.cbor import decode_strict, encode
from verifier.core.cose import HDR_TYP, parse_sign1, sign1, verify_sign1
from verifier.core.errors import (
    MalformedCredential,
    NotYetValid,
    TrustDataMissing,
    TrustListRollback,
    UntrustedKey,
)
from verifier.core.keys import (
    IssuerPublicKey,
    issuer_cose_key,
    issuer_public_from_cose_key,
    kid_for,
)
from verifier.core.signer import Signer
from verifier.core.timing import CLOCK_SKEW_S
from verifier.core.trust import KeyUse, TrustedKey, TrustStore

__all__ = [
    "MAX_TRUST_LIST_BYTES",
    "TRUST_LIST_TYP",
    "TrustList",
    "TrustListCache",
    "TrustListEntry",
    "issue_trust_list",
    "parse_trust_list",
]

TRUST_LIST_TYP = "application/starcard-trustlist+cbor"
MAX_TRUST_LIST_BYTES = 64 * 1024
_VERSION = 1
_DOC_KEYS = frozenset({"v", "iss", "seq", "iat", "exp", "keys"})
_ENTRY_KEYS = frozenset({"kid", "alg", "use", "key", "sign_from", "sign_until", "verify_until"})
_USES = ("credential", "status_list")


@dataclass(frozen=True)
class TrustListEntry:
    """One listed key. ``sign_from < sign_until <= verify_until`` (ValueError otherwise)."""

    kid: bytes
    alg: str
    purpose: KeyUse
    public_key: IssuerPublicKey
    sign_from: int
    sign_until: int
    verify_until: int

    def __post_init__(self) -> None:
        if not self.sign_from < self.sign_until <= self.verify_until:
            raise ValueError("a key needs sign_from < sign_until <= verify_until")

    @classmethod
    def for_key(
        cls,
        public_key: IssuerPublicKey,
        purpose: KeyUse,
        sign_from: int,
        sign_until: int,
        verify_until: int,
    ) -> TrustListEntry:
        """An entry with ``kid`` and ``alg`` (ES256 or EdDSA) derived from the key."""
        alg = "EdDSA" if isinstance(public_key, ed25519.Ed25519PublicKey) else "ES256"
        return cls(
            kid_for(public_key), alg, purpose, public_key, sign_from, sign_until, verify_until
        )

    def trusted_key(self) -> TrustedKey:
        """The entry as a key of a :class:`TrustStore` (checks kid and algorithm)."""
        return TrustedKey(
            kid=self.kid,
            alg=self.alg,
            purpose=self.purpose,
            public_key=self.public_key,
            not_before=self.sign_from,
            not_after=self.verify_until,
            sign_until=self.sign_until,
        )


@dataclass(frozen=True)
class TrustList:
    """A verified trust list: exact bytes, sequence number, validity and entries."""

    raw: bytes
    issuer: str
    sequence: int
    iat: int
    exp: int
    entries: tuple[TrustListEntry, ...]

    def store(self) -> TrustStore:
        """The keys as a :class:`TrustStore` that expires with the list."""
        return TrustStore((e.trusted_key() for e in self.entries), valid_until=self.exp)


def issue_trust_list(
    entries: Iterable[TrustListEntry],
    *,
    issuer: str,
    sequence: int,
    iat: int,
    exp: int,
    root_signer: Signer,
    root_kid: bytes,
) -> bytes:
    """Signs a trust list with the root key; returns its exact bytes.

    Raises ValueError for a malformed list (no entries, ``exp <= iat``, duplicate kid and
    purpose) or a ``root_kid`` that does not belong to ``root_signer``.
    """
    listed = list(entries)
    if not listed:
        raise ValueError("a trust list needs at least one key")
    if exp <= iat or sequence < 0:
        raise ValueError("a trust list needs exp > iat and seq >= 0")
    if len({(e.kid, e.purpose) for e in listed}) != len(listed):
        raise ValueError("each key may be listed once per purpose")
    for entry in listed:
        entry.trusted_key()  # checks kid and algorithm now, not at the verifier
    payload = {
        "v": _VERSION,
        "iss": issuer,
        "seq": sequence,
        "iat": iat,
        "exp": exp,
        "keys": [
            {
                "kid": e.kid,
                "alg": e.alg,
                "use": e.purpose,
                "key": issuer_cose_key(e.public_key),
                "sign_from": e.sign_from,
                "sign_until": e.sign_until,
                "verify_until": e.verify_until,
            }
            for e in listed
        ],
    }
    return sign1(encode(payload), root_signer, root_kid, {HDR_TYP: TRUST_LIST_TYP})


def parse_trust_list(data: bytes, root: ec.EllipticCurvePublicKey, now: int) -> TrustList:
    """Parses and verifies a trust list against the pinned ``root`` key.

    Steps: (1) size bound; (2) strict COSE_Sign1 parse with typ trust list; (3) the kid is the
    pinned root's and the signature verifies (:class:`UntrustedKey`, :class:`BadSignature`);
    (4) the payload is exactly the documented map; (5) ``iat`` is not in the future beyond
    the clock skew (:class:`NotYetValid`); (6) the list has not expired
    (:class:`TrustDataMissing`, verdict ``unknown``).
    """
    if len(data) > MAX_TRUST_LIST_BYTES:
        raise MalformedCredential("trust list is larger than allowed")
    message = parse_sign1(data)
    if message.typ != TRUST_LIST_TYP:
        raise MalformedCredential(f"protected typ is not {TRUST_LIST_TYP}")
    if not hmac.compare_digest(message.kid, kid_for(root)):
        raise UntrustedKey("trust list is not signed by the pinned root key")
    verify_sign1(message, root)
    doc = decode_strict(message.payload)
    if not isinstance(doc, dict) or set(doc) != _DOC_KEYS or doc["v"] != _VERSION:
        raise MalformedCredential("trust list payload is not a version-1 trust list")
    issuer, seq, iat, exp = doc["iss"], doc["seq"], doc["iat"], doc["exp"]
    if not isinstance(issuer, str) or not all(type(v) is int for v in (seq, iat, exp)):
        raise MalformedCredential("trust list iss/seq/iat/exp have the wrong types")
    if seq < 0 or exp <= iat:
        raise MalformedCredential("trust list needs seq >= 0 and exp > iat")
    keys = doc["keys"]
    if not isinstance(keys, list | tuple) or not keys:
        raise MalformedCredential("trust list keys must be a non-empty array")
    entries = tuple(_entry(k) for k in keys)
    if iat > now + CLOCK_SKEW_S:
        raise NotYetValid("trust list is issued in the future", detail=f"iat {iat}, now {now}")
    if now >= exp:
        raise TrustDataMissing("trust list has expired", detail=f"exp {exp}, now {now}")
    return TrustList(data, issuer, seq, iat, exp, entries)


def _entry(raw: object) -> TrustListEntry:
    if not isinstance(raw, dict) or set(raw) != _ENTRY_KEYS:
        raise MalformedCredential("trust list entry is not the documented map")
    kid, alg, use = raw["kid"], raw["alg"], raw["use"]
    times = (raw["sign_from"], raw["sign_until"], raw["verify_until"])
    if not isinstance(kid, bytes) or not isinstance(alg, str) or use not in _USES:
        raise MalformedCredential("trust list entry kid/alg/use have the wrong types")
    if not all(type(t) is int for t in times):
        raise MalformedCredential("trust list entry windows must be integers")
    cose_key = raw["key"]
    if not isinstance(cose_key, Mapping):
        raise MalformedCredential("trust list entry key must be a COSE_Key map")
    public_key = issuer_public_from_cose_key(cose_key)
    try:
        entry = TrustListEntry(kid, alg, use, public_key, *times)
        entry.trusted_key()
    except ValueError as exc:
        raise MalformedCredential("trust list entry is inconsistent", detail=str(exc)) from exc
    return entry


@dataclass(frozen=True)
class TrustWatermark:
    """What a verifier persists: the newest accepted ``seq`` and the digest of its bytes."""

    sequence: int
    digest: bytes


class TrustListCache:
    """The verifier's trust state: the newest accepted list for one pinned root."""

    def __init__(
        self, root: ec.EllipticCurvePublicKey, watermark: TrustWatermark | None = None
    ) -> None:
        self._root = root
        self._watermark = watermark
        self._current: TrustList | None = None

    @property
    def watermark(self) -> TrustWatermark | None:
        return self._watermark

    @property
    def current(self) -> TrustList | None:
        return self._current

    def accept(self, data: bytes, now: int) -> TrustList:
        """Verifies ``data`` and makes it current.

        Raises (and keeps the held list) on a bad list, :class:`TrustListRollback` for an
        older ``seq`` or a different list with the same ``seq``; an expired list raises
        :class:`TrustDataMissing`.
        """
        trust_list = parse_trust_list(data, self._root, now)
        digest = hashlib.sha256(data).digest()
        held = self._watermark
        if held is not None:
            if trust_list.sequence < held.sequence:
                raise TrustListRollback(
                    "trust list is older than the one held",
                    detail=f"seq {trust_list.sequence} < {held.sequence}",
                )
            if trust_list.sequence == held.sequence and not hmac.compare_digest(
                digest, held.digest
            ):
                raise TrustListRollback("two different trust lists with the same seq")
        self._watermark = TrustWatermark(trust_list.sequence, digest)
        self._current = trust_list
        return trust_list

    def store(self, now: int) -> TrustStore:
        """The current keys; :class:`TrustDataMissing` if none is held or it has expired."""
        if self._current is None:
            raise TrustDataMissing("no trust list has been accepted")
        if now >= self._current.exp:
            raise TrustDataMissing("the held trust list has expired")
        return self._current.store()
