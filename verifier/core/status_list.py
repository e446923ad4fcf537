"""IETF OAuth Token Status List (draft-ietf-oauth-status-list), CWT form.

**The list.** ``bits`` (1, 2, 4 or 8) per referenced token, packed so that index 0 is in
the least significant bits of byte 0 (the draft's bit order), then compressed with DEFLATE
in the ZLIB format. StarCard uses 2 bits: ``0`` VALID, ``1`` INVALID, ``2`` SUSPENDED.
Issued lists have at least :data:`MIN_ENTRIES` entries (herd privacy).

**The token.** A tagged COSE_Sign1 (see :mod:`.cose`; ES256, or EdDSA when the trusted
status-list key is Ed25519) with protected ``typ`` (16) ``"application/statuslist+cwt"`` and
claims ``2`` sub = list URI, ``6`` iat, ``4`` exp, ``65534`` ttl, ``65533`` ``{"bits": n,
"lst": zlib bytes}``. All five are required here. A token is at most
:data:`MAX_TOKEN_BYTES` (4 MiB), checked before any parsing; its list at most
:data:`MAX_LIST_BYTES` (16 MiB) decompressed, and decompression stops there (zlib bomb).
Nothing is decompressed before the signature has verified.

**The cache** (:class:`StatusListCache`) is the verifier's pure, in-memory state machine,
written as plain ordered checks in the style of python-tuf. Each defence has a test named
after the attack (``tests/unit/test_status_list_attacks.py``):

* **clock error**: if ``now`` lies before the newest ``iat`` already accepted (any URI,
  including a restored watermark) minus :data:`~verifier.core.timing.CLOCK_SKEW_S`, the
  verifier's clock is wrong: :meth:`~StatusListCache.accept` and
  :meth:`~StatusListCache.status_of` raise :class:`ClockBehindWatermark` (fail closed,
  verdict ``unknown``) before anything else;
* **fast-forward / untrusted key**: a token is accepted only if its signature verifies with
  a key trusted for purpose ``status_list`` at ``now`` (a credential key is refused), with
  the key's ``alg``, and ``iat`` no later than ``now`` plus the skew; nothing else can move
  the watermark;
* **mix-and-match**: tokens are held by their signed ``sub`` and looked up by the URI the
  credential references, so a list for another URI is never used for it; a holder that
  fetched a given URI passes it to ``accept(..., uri=...)`` and a token for another URI
  raises :class:`StatusListUriMismatch`;
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
from verifier.core.cose import (
    HDR_TYP,
    MAX_SIGN1_BYTES,
    IssuerSigner,
    parse_sign1,
    sign1,
    verify_sign1,
)
from verifier.core.errors import (
    ClockBehindWatermark,
    InputTooLarge,
    MalformedCredential,
    NotYetValid,
    StatusIndexOutOfRange,
    StatusListExpired,
    StatusListMissing,
    StatusListRollback,
    StatusListUriMismatch,
    UnsupportedAlgorithm,
)
from verifier.core.timing import CLOCK_SKEW_S
from verifier.core.trust import TrustStore

__all__ = [
    "INVALID",
    "MAX_LIST_BYTES",
    "MAX_TOKEN_BYTES",
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
#: Largest status list token accepted (bytes), checked before parsing: 4 MiB. A 1M-entry
#: list with 1 % revoked compresses to about 40 KiB; a random 16 MiB list would not fit, so
#: the token cap is the tighter bound on what an honest publisher can send.
MAX_TOKEN_BYTES = MAX_SIGN1_BYTES
STATUS_LIST_TYP = "application/statuslist+cwt"
CLAIM_SUB, CLAIM_EXP, CLAIM_IAT = 2, 4, 6
CLAIM_TTL, CLAIM_STATUS_LIST = 65534, 65533
_TOKEN_CLAIMS = frozenset({CLAIM_SUB, CLAIM_EXP, CLAIM_IAT, CLAIM_TTL, CLAIM_STATUS_LIST})
_BITS = (1, 2, 4, 8)
#: Output step of the bounded decompression (see :meth:`StatusList.decode`).
_INFLATE_CHUNK = 256 * 1024


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
    def decode(cls, lst: bytes, bits: int, *, read_only: bool = False) -> StatusList:
        """Decompress an ``lst`` value; the size is every entry the bytes hold.

        Decompression runs in :data:`_INFLATE_CHUNK` steps into one buffer and stops as
        soon as the output exceeds :data:`MAX_LIST_BYTES`, so a zlib bomb costs at most
        about that much memory, whatever it would inflate to. ``read_only`` returns the
        list read-only without a copy.

        Raises :class:`MalformedCredential` for bad ``bits``, bad or trailing zlib data, an
        empty list or one larger than :data:`MAX_LIST_BYTES` decompressed.
        """
        if type(bits) is not int or bits not in _BITS:
            raise MalformedCredential("status list bits must be 1, 2, 4 or 8")
        if not isinstance(lst, bytes):
            raise MalformedCredential("status list lst must be bytes")
        inflater = zlib.decompressobj()
        raw = bytearray()
        pending = lst
        try:
            while not inflater.eof:
                chunk = inflater.decompress(pending, _INFLATE_CHUNK)
                progressed = bool(chunk) or len(inflater.unconsumed_tail) < len(pending)
                pending = inflater.unconsumed_tail
                raw += chunk
                if len(raw) > MAX_LIST_BYTES:
                    raise MalformedCredential(
                        "status list is too large", detail=f"over {MAX_LIST_BYTES} bytes inflated"
                    )
                if not progressed:
                    break  # needs input that is not there: truncated
        except zlib.error as exc:
            raise MalformedCredential("status list is not zlib data") from exc
        if not inflater.eof or inflater.unused_data:
            raise MalformedCredential("status list zlib stream is truncated or has trailing data")
        if not raw:
            raise MalformedCredential("status list is empty")
        return cls._from_raw(raw, bits, readonly=read_only)

    @classmethod
    def _from_raw(cls, raw: bytes | bytearray, bits: int, *, readonly: bool) -> StatusList:
        """A list over ``raw`` (a ``bytearray`` is taken over, not copied)."""
        lst = cls.__new__(cls)
        lst._bits = bits
        lst._size = len(raw) * 8 // bits
        lst._data = raw if isinstance(raw, bytearray) else bytearray(raw)
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
    signer: IssuerSigner,
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

    Steps: (0) at most :data:`MAX_TOKEN_BYTES` (:class:`InputTooLarge`, before any
    decoding); (1) strict COSE_Sign1 parse; (2) ``typ`` must be
    ``application/statuslist+cwt``; (3) the ``kid`` must be trusted for ``status_list`` at
    ``now``, and the trusted key's ``alg`` must be the header's (:class:`UnsupportedAlgorithm`);
    (4) the signature must verify; (5) the claims must be exactly sub, iat, exp, ttl,
    status_list with the right types, ``iat < exp``, ``ttl > 0``; (6) ``iat`` may not lie
    beyond ``now`` plus the clock skew (:class:`NotYetValid`) and must lie in the key's
    signing window (:class:`UntrustedKey`); (7) only then is the list decompressed, bounded
    by :data:`MAX_LIST_BYTES`. Freshness (``exp``) is the cache's business.
    """
    if not isinstance(data, bytes):
        raise TypeError("status list token must be bytes")
    if len(data) > MAX_TOKEN_BYTES:
        raise InputTooLarge(
            "status list token is larger than allowed",
            detail=f"{len(data)} > {MAX_TOKEN_BYTES} bytes",
        )
    message = parse_sign1(data)
    if message.typ != STATUS_LIST_TYP:
        raise MalformedCredential("protected typ is not application/statuslist+cwt")
    key = trust.lookup(message.kid, "status_list", now)
    if key.alg != message.alg:
        raise UnsupportedAlgorithm(
            "status list alg differs from the trusted key's alg",
            detail=f"message {message.alg}, key {key.alg}",
        )
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
    if iat > now + CLOCK_SKEW_S:
        raise NotYetValid("status list is issued in the future", detail=f"iat {iat}, now {now}")
    key.check_signed_at(iat)
    statuses = StatusList.decode(lst, bits, read_only=True)
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

    def accept(
        self, token_bytes: bytes, trust: TrustStore, now: int, *, uri: str | None = None
    ) -> StatusListToken:
        """Verify ``token_bytes`` and hold it as the current list for its URI.

        ``uri`` is the URI the holder fetched (``None``: take the token's own ``sub``).
        Ordered checks, each raising before anything is stored:

        1. clock: ``now`` before the newest accepted ``iat`` minus the skew →
           :class:`ClockBehindWatermark`;
        2. parse and verify (see :func:`parse_status_list_token`: size cap, trusted
           status-list key and its ``alg``, signature, claims, ``iat`` not in the future,
           bounded decompression);
        3. mix-and-match: ``sub`` differs from ``uri`` → :class:`StatusListUriMismatch`;
        4. rollback: ``iat`` older than the held watermark → :class:`StatusListRollback`;
        5. equivocation: same ``iat``, different bytes → :class:`StatusListRollback`;
        6. freeze: ``now >= exp`` → :class:`StatusListExpired`.

        Offering the held token again is a no-op. Returns the held token.
        """
        with self._lock:
            self._check_clock(now)
        token = parse_status_list_token(token_bytes, trust, now)
        if uri is not None and token.uri != uri:
            raise StatusListUriMismatch(
                "status list is for another URI than the one fetched",
                detail=f"fetched {uri!r}, token sub {token.uri!r}",
            )
        digest = hashlib.sha256(token_bytes).digest()
        with self._lock:
            self._check_clock(now)
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

    def check_clock(self, now: int) -> None:
        """Raise :class:`ClockBehindWatermark` if ``now`` lies before the newest accepted
        ``iat`` (any URI, restored watermark included) minus the skew. A verifier can call
        this before any other time-dependent step, so that a wrong clock reads ``unknown``."""
        with self._lock:
            self._check_clock(now)

    def _check_clock(self, now: int) -> None:
        """:meth:`check_clock` with the lock already held."""
        newest = max((mark.iat for mark in self._marks.values()), default=None)
        if newest is not None and now < newest - CLOCK_SKEW_S:
            raise ClockBehindWatermark(
                "the verifier's clock is behind a status list it already accepted",
                detail=f"now {now}, newest accepted iat {newest}, skew {CLOCK_SKEW_S}",
            )

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

        Raises, in this order: :class:`ClockBehindWatermark` if ``now`` lies before the
        newest accepted ``iat`` minus the skew (the clock is wrong, so freshness cannot be
        judged), :class:`StatusListMissing` if none is held, :class:`StatusListExpired` if it
        is past ``exp`` (never used then), :class:`StatusIndexOutOfRange` if ``idx`` lies
        outside it.
        """
        with self._lock:
            self._check_clock(now)
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
