"""IETF OAuth Token Status List (draft-ietf-oauth-status-list), CWT form.

**The list.** ``bits`` (1, 2, 4 or 8) per referenced token, packed so that index 0 is in
the least significant bits of byte 0 (the draft's bit order), then compressed with DEFLATE
in the ZLIB format. StarCard uses 2 bits: ``0`` VALID, ``1`` INVALID, ``2`` SUSPENDED.
Issued lists have at least :data:`MIN_ENTRIES` entries (herd privacy).

**The token.** A tagged ES256 COSE_Sign1 (see :mod:`.cose`) with protected ``typ`` (16)
``"application/statuslist+cwt"`` and claims ``2`` sub = list URI, ``6`` iat, ``4`` exp,
``65534`` ttl, ``65533`` ``{"bits": n, "lst": zlib bytes}``. All five are required here.

**The cache** (:class:`StatusListCache`) is the verifier's pure, in-memory state machine,
written as plain ordered checks in the style of python-tuf:

* a token is accepted only if its signature verifies with a key trusted for purpose
  ``status_list`` at ``now``;
* **rollback**: a token older than the one held for its URI (``iat`` lower), or with the same
  ``iat`` but different bytes (equivocation), raises :class:`StatusListRollback`. The holder
  persists :attr:`StatusListCache.watermark` and passes it back after a restart, so a
  rollback across restarts is caught too;
* **freeze**: a list past its ``exp`` is never accepted nor used
  (:class:`StatusListExpired`); there is no grace period.

Errors: :class:`MalformedCredential` (or subclass) for a malformed token or list,
:class:`UntrustedKey`/:class:`BadSignature`/:class:`NotYetValid` from verification, and the
:class:`CannotVerify` family from the cache.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from verifier.core.cbor import decode_strict, encode
from verifier.core.cose import HDR_TYP, parse_sign1, sign1, verify_sign1
from verifier.core.errors import (
    MalformedCredential,
    NotYetValid,
    StatusIndexOutOfRange,
    StatusListExpired,
    StatusListMissing,
    StatusListRollback,
)
from verifier.core.signer import Signer
from verifier.core.timing import CLOCK_SKEW_S
from verifier.core.trust import TrustStore

__all__ = [
    "INVALID",
    "MAX_LIST_BYTES",
    "MIN_ENTRIES",
    "STATUS_LIST_TYP",
    "SUSPENDED",
    "VALID",
    "StatusList",
    "StatusListCache",
    "StatusListToken",
    "Watermark",
    "issue_status_list",
    "parse_status_list_token",
]

VALID, INVALID, SUSPENDED = 0, 1, 2
MIN_ENTRIES = 131_072
#: Largest decompressed list accepted (zlib-bomb guard): 16 MiB.
MAX_LIST_BYTES = 16 * 1024 * 1024
STATUS_LIST_TYP = "application/statuslist+cwt"
CLAIM_SUB, CLAIM_EXP, CLAIM_IAT = 2, 4, 6
CLAIM_TTL, CLAIM_STATUS_LIST = 65534, 65533
_TOKEN_CLAIMS = frozenset({CLAIM_SUB, CLAIM_EXP, CLAIM_IAT, CLAIM_TTL, CLAIM_STATUS_LIST})
_BITS = (1, 2, 4, 8)


class StatusList:
    """A packed list of ``size`` statuses of ``bits`` bits each, all VALID (0) initially."""

    def __init__(self, size: int, bits: int = 2) -> None:
        if bits not in _BITS:
            raise ValueError("bits must be 1, 2, 4 or 8")
        if type(size) is not int or size < 1:
            raise ValueError("size must be a positive int")
        self._bits = bits
        self._size = size
        self._data = bytearray((size * bits + 7) // 8)
        self._readonly = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def bits(self) -> int:
        return self._bits

    def get(self, idx: int) -> int:
        """The status at ``idx``; ``IndexError`` outside ``0..size-1``."""
        self._check_index(idx)
        pos = idx * self._bits
        return (self._data[pos // 8] >> (pos % 8)) & ((1 << self._bits) - 1)

    def set(self, idx: int, value: int) -> None:
        """Set the status at ``idx`` (``IndexError``/``ValueError`` if out of range)."""
        if self._readonly:
            raise TypeError("this status list is read-only (it belongs to a signed token)")
        self._check_index(idx)
        mask = (1 << self._bits) - 1
        if type(value) is not int or not 0 <= value <= mask:
            raise ValueError(f"status must be 0..{mask}")
        pos = idx * self._bits
        byte, shift = pos // 8, pos % 8
        self._data[byte] = (self._data[byte] & ~(mask << shift) & 0xFF) | (value << shift)

    def to_bytes(self) -> bytes:
        """The packed, uncompressed list."""
        return bytes(self._data)

    def encode(self) -> bytes:
        """The ``lst`` value: the packed list, zlib-compressed at the best level."""
        return zlib.compress(bytes(self._data), level=9)

    @classmethod
    def decode(cls, lst: bytes, bits: int) -> StatusList:
        """Decompress an ``lst`` value; the size is every entry the bytes hold.

        Raises :class:`MalformedCredential` for bad ``bits``, bad or trailing zlib data, an
        empty list or one larger than :data:`MAX_LIST_BYTES` decompressed.
        """
        if type(bits) is not int or bits not in _BITS:
            raise MalformedCredential("status list bits must be 1, 2, 4 or 8")
        if not isinstance(lst, bytes):
            raise MalformedCredential("status list lst must be bytes")
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(lst, MAX_LIST_BYTES + 1)
        except zlib.error as exc:
            raise MalformedCredential("status list is not zlib data") from exc
        if len(raw) > MAX_LIST_BYTES or inflater.unconsumed_tail:
            raise MalformedCredential("status list is too large")
        if not inflater.eof or inflater.unused_data:
            raise MalformedCredential("status list zlib stream is truncated or has trailing data")
        if not raw:
            raise MalformedCredential("status list is empty")
        return cls._from_raw(raw, bits, readonly=False)

    @classmethod
    def _from_raw(cls, raw: bytes, bits: int, *, readonly: bool) -> StatusList:
        lst = cls(len(raw) * 8 // bits, bits)
        lst._data = bytearray(raw)
        lst._readonly = readonly
        return lst

    def read_only(self) -> StatusList:
        """A read-only copy."""
        return StatusList._from_raw(bytes(self._data), self._bits, readonly=True)

    def _check_index(self, idx: int) -> None:
        if type(idx) is not int or not 0 <= idx < self._size:
            raise IndexError(f"status index {idx} outside 0..{self._size - 1}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StatusList):
            return NotImplemented
        return (self._bits, self._size, self._data) == (other._bits, other._size, other._data)

    def __hash__(self) -> int:
        return hash((self._bits, self._size, bytes(self._data)))

    def __repr__(self) -> str:
        return f"<StatusList size={self._size} bits={self._bits}>"


@dataclass(frozen=True)
class StatusListToken:
    """A verified status list token; ``statuses`` is read-only; ``raw`` the exact bytes."""

    raw: bytes
    kid: bytes
    uri: str
    iat: int
    exp: int
    ttl: int
    statuses: StatusList


def issue_status_list(
    lst: StatusList | bytes,
    uri: str,
    iat: int,
    exp: int,
    ttl: int,
    signer: Signer,
    kid: bytes,
    *,
    bits: int = 2,
) -> bytes:
    """Sign a status list token; return its exact bytes.

    ``lst`` is a :class:`StatusList` or its :meth:`StatusList.encode` output (then ``bits``
    says how it is packed). Raises ``ValueError`` if the list has fewer than
    :data:`MIN_ENTRIES` entries, ``iat >= exp``, ``ttl <= 0``, ``uri`` is empty, or the
    signer misbehaves.
    """
    if isinstance(lst, StatusList):
        statuses, compressed = lst, lst.encode()
    else:
        try:
            statuses, compressed = StatusList.decode(lst, bits), lst
        except MalformedCredential as exc:
            raise ValueError(f"lst is not a valid compressed status list: {exc}") from exc
    if statuses.size < MIN_ENTRIES:
        raise ValueError(f"an issued status list needs at least {MIN_ENTRIES} entries")
    if not isinstance(uri, str) or not uri:
        raise ValueError("uri must be a non-empty str")
    for name, value in (("iat", iat), ("exp", exp), ("ttl", ttl)):
        if type(value) is not int or value < 0:
            raise ValueError(f"{name} must be a non-negative int")
    if exp <= iat or ttl <= 0:
        raise ValueError("exp must be after iat and ttl positive")
    claims = {
        CLAIM_SUB: uri,
        CLAIM_IAT: iat,
        CLAIM_EXP: exp,
        CLAIM_TTL: ttl,
        CLAIM_STATUS_LIST: {"bits": statuses.bits, "lst": compressed},
    }
    return sign1(encode(claims), signer, kid, {HDR_TYP: STATUS_LIST_TYP})


def parse_status_list_token(data: bytes, trust: TrustStore, now: int) -> StatusListToken:
    """Parse and verify a status list token.

    Steps: (1) strict COSE_Sign1 parse; (2) ``typ`` must be ``application/statuslist+cwt``;
    (3) the ``kid`` must be trusted for ``status_list`` at ``now``; (4) the signature must
    verify; (5) the claims must be exactly sub, iat, exp, ttl, status_list with the right
    types, ``iat < exp``, ``ttl > 0``; (6) ``iat`` may not lie beyond ``now`` plus the clock
    skew (:class:`NotYetValid`). Freshness (``exp``) is the cache's business.
    """
    message = parse_sign1(data)
    if message.typ != STATUS_LIST_TYP:
        raise MalformedCredential("protected typ is not application/statuslist+cwt")
    key = trust.lookup(message.kid, "status_list", now)
    verify_sign1(message, key.public_key)
    claims = decode_strict(message.payload)
    if not isinstance(claims, dict) or set(claims) != _TOKEN_CLAIMS:
        raise MalformedCredential("status list token claims are not exactly the required set")
    uri, iat, exp, ttl = (
        claims[CLAIM_SUB],
        claims[CLAIM_IAT],
        claims[CLAIM_EXP],
        claims[CLAIM_TTL],
    )
    if not isinstance(uri, str) or not uri:
        raise MalformedCredential("status list sub must be a non-empty text")
    if type(iat) is not int or type(exp) is not int or type(ttl) is not int:
        raise MalformedCredential("status list iat, exp and ttl must be integers")
    if not 0 <= iat < exp or ttl <= 0:
        raise MalformedCredential("status list must have 0 <= iat < exp and ttl > 0")
    body = claims[CLAIM_STATUS_LIST]
    if not isinstance(body, dict) or set(body) != {"bits", "lst"}:
        raise MalformedCredential('status_list must be {"bits": uint, "lst": bstr}')
    lst, bits = body["lst"], body["bits"]
    if not isinstance(lst, bytes) or type(bits) is not int:
        raise MalformedCredential("status list bits/lst have the wrong type")
    statuses = StatusList.decode(lst, bits).read_only()
    if iat > now + CLOCK_SKEW_S:
        raise NotYetValid("status list is issued in the future", detail=f"iat {iat}, now {now}")
    key.check_signed_at(iat)
    return StatusListToken(data, message.kid, uri, iat, exp, ttl, statuses)


@dataclass(frozen=True)
class Watermark:
    """The newest status list seen for a URI: its ``iat`` and SHA-256 of its bytes."""

    iat: int
    digest: bytes


class StatusListCache:
    """Held status list tokens by URI with rollback and freeze protection (see module doc).

    ``watermark`` restores the rollback state persisted by the holder (e.g. after a
    restart); lists themselves must be offered again through :meth:`accept`. All methods are
    safe to call from several threads.
    """

    def __init__(self, watermark: Mapping[str, Watermark] | None = None) -> None:
        self._lock = threading.Lock()
        self._marks: dict[str, Watermark] = dict(watermark or {})
        self._tokens: dict[str, StatusListToken] = {}
        self._accepted_at: dict[str, int] = {}

    @property
    def watermark(self) -> dict[str, Watermark]:
        """URI → newest (iat, digest) accepted; persist this and pass it back on restart."""
        with self._lock:
            return dict(self._marks)

    def accept(self, token_bytes: bytes, trust: TrustStore, now: int) -> StatusListToken:
        """Verify ``token_bytes`` and hold it as the current list for its URI.

        Ordered checks: (1) parse and verify (see :func:`parse_status_list_token`);
        (2) rollback: ``iat`` older than the held watermark → :class:`StatusListRollback`;
        (3) equivocation: same ``iat``, different bytes → :class:`StatusListRollback`;
        (4) freeze: ``now >= exp`` → :class:`StatusListExpired` (nothing is stored).
        Offering the held token again is a no-op. Returns the held token.
        """
        token = parse_status_list_token(token_bytes, trust, now)
        digest = hashlib.sha256(token_bytes).digest()
        with self._lock:
            held = self._marks.get(token.uri)
            if held is not None and token.iat < held.iat:
                raise StatusListRollback(
                    "offered status list is older than the one held",
                    detail=f"{token.uri}: offered iat {token.iat}, held iat {held.iat}",
                )
            if (
                held is not None
                and token.iat == held.iat
                and not hmac.compare_digest(digest, held.digest)
            ):
                raise StatusListRollback(
                    "offered status list conflicts with the held one (same iat)",
                    detail=f"{token.uri}: iat {token.iat}",
                )
            if now >= token.exp:
                raise StatusListExpired(
                    "offered status list has expired", detail=f"{token.uri}: exp {token.exp}"
                )
            self._marks[token.uri] = Watermark(token.iat, digest)
            if token.uri not in self._tokens or self._tokens[token.uri].iat != token.iat:
                self._accepted_at[token.uri] = now
            self._tokens[token.uri] = token
            return token

    def token(self, uri: str) -> StatusListToken | None:
        """The held token for ``uri``, if any (possibly expired)."""
        with self._lock:
            return self._tokens.get(uri)

    def refresh_due(self, uri: str, now: int) -> bool:
        """Whether the holder should fetch ``uri`` again: nothing held, ``ttl`` elapsed since
        the held list was accepted, or it has expired."""
        with self._lock:
            token = self._tokens.get(uri)
            if token is None:
                return True
            return now >= self._accepted_at[uri] + token.ttl or now >= token.exp

    def status_of(self, uri: str, idx: int, now: int) -> int:
        """The status value at ``idx`` of the list held for ``uri``.

        Raises :class:`StatusListMissing` if none is held, :class:`StatusListExpired` if it
        is past ``exp`` (never used then), :class:`StatusIndexOutOfRange` if ``idx`` lies
        outside it.
        """
        with self._lock:
            token = self._tokens.get(uri)
        if token is None:
            raise StatusListMissing("no status list held", detail=uri)
        if now >= token.exp:
            raise StatusListExpired(
                "held status list has expired", detail=f"{uri}: exp {token.exp}, now {now}"
            )
        if not 0 <= idx < token.statuses.size:
            raise StatusIndexOutOfRange("status index outside the list", detail=f"{uri}: idx {idx}")
        return token.statuses.get(idx)
