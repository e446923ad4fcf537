"""The verifier's on-disk cache of the signed lists it last accepted, with their watermarks.

A cache directory holds:

* ``trust-list.cbor``: the exact bytes of the last accepted trust list;
* ``status-<list id>.cwt``: the exact bytes of the last accepted token of each status list;
* ``state.json``: ETags, the watermarks (trust list ``seq``/``iat`` and SHA-256, each status
  list's ``uri``/``iat`` and SHA-256) and the time of the last successful sync.

Invariants:

* Every write is atomic: a temporary file in the same directory, ``fsync``, ``os.replace``,
  then ``fsync`` of the directory. A list file is written before the state that names it,
  so a crash between the two leaves a list *newer* than the state, never older.
* Nothing on disk is trusted: :func:`load_lists` re-verifies every list against the pinned
  root (a trust list) or the keys of that trust list (status lists), each at its own ``iat``
  first, so that its authenticated ``seq``/``iat`` are known even when it has expired since.
  The watermark restored is the higher of the state's and the verified list's own: the state
  file can raise a watermark (fail closed) but never lower one a verified list exceeds.
* A list file that does not verify, is older than the state's watermark, or differs from it
  at the same watermark (torn, tampered or rolled back) is **refused**: :func:`load_service`
  raises :class:`CacheRefused`; with ``salvage=True`` the list is dropped (its watermark
  stays) so that a sync can fetch a good one.
* An expired list (or a clock behind a list) is not refused, it is just not usable: the
  service built from the cache answers ``unknown`` for what it covered, never ``valid``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from verifier.core.cbor import decode_strict
from verifier.core.cose import parse_sign1
from verifier.core.errors import (
    CannotVerify,
    MalformedCredential,
    StatusListRollback,
    TrustListRollback,
    VerificationError,
)
from verifier.core.status_list import (
    CLAIM_IAT,
    StatusListCache,
    StatusListToken,
    Watermark,
    parse_status_list_token,
)
from verifier.core.trust import TrustStore
from verifier.core.trust_list import TrustList, TrustListCache, TrustWatermark, parse_trust_list
from verifier.service import VerifierService

__all__ = [
    "CacheRefused",
    "CacheState",
    "ListStore",
    "LoadedLists",
    "StatusEntry",
    "load_lists",
    "load_service",
    "peek_claim",
]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
TRUST_FILE = "trust-list.cbor"
_FORMAT = 1


class CacheRefused(RuntimeError):
    """The cache directory holds a torn, tampered or rolled-back file; says which and what
    to do."""


@dataclass(frozen=True)
class StatusEntry:
    """What the state records for one status list id."""

    uri: str
    iat: int
    digest: str
    etag: str | None = None


@dataclass(frozen=True)
class CacheState:
    """The contents of ``state.json`` (all fields optional: an empty cache is valid)."""

    trust_seq: int | None = None
    trust_iat: int | None = None
    trust_digest: str | None = None
    trust_etag: str | None = None
    status: dict[int, StatusEntry] = field(default_factory=dict)
    last_sync: int | None = None

    def to_json(self) -> bytes:
        doc = {
            "format": _FORMAT,
            "trust_list": None
            if self.trust_seq is None
            else {
                "seq": self.trust_seq,
                "iat": self.trust_iat,
                "sha256": self.trust_digest,
                "etag": self.trust_etag,
            },
            "status_lists": {
                str(list_id): {"uri": e.uri, "iat": e.iat, "sha256": e.digest, "etag": e.etag}
                for list_id, e in sorted(self.status.items())
            },
            "last_sync": self.last_sync,
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: Path) -> CacheState:
        """Raises :class:`CacheRefused` naming ``where`` for anything but the written form."""
        try:
            doc = json.loads(raw)
            if doc["format"] != _FORMAT:
                raise ValueError(f"format {doc['format']!r} is not {_FORMAT}")
            trust = doc["trust_list"]
            status = {
                int(k): StatusEntry(_text(v["uri"]), _int(v["iat"]), _hex(v["sha256"]), v["etag"])
                for k, v in doc["status_lists"].items()
            }
            last_sync = doc["last_sync"]
            if last_sync is not None:
                _int(last_sync)
            if trust is None:
                return cls(status=status, last_sync=last_sync)
            return cls(
                _int(trust["seq"]),
                _int(trust["iat"]),
                _hex(trust["sha256"]),
                trust["etag"],
                status,
                last_sync,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CacheRefused(
                f"{where} is torn or was altered ({exc}); delete it and run "
                "`starcard-verifier sync` to fetch the lists again (the list files keep "
                "their own watermarks)"
            ) from None


def _int(value: object) -> int:
    if type(value) is not int:
        raise ValueError(f"{value!r} is not an integer")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a non-empty text")
    return value


def _hex(value: object) -> str:
    if not isinstance(value, str) or len(bytes.fromhex(value)) != 32:
        raise ValueError(f"{value!r} is not a SHA-256 in hex")
    return value


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def status_file(list_id: int) -> str:
    return f"status-{list_id}.cwt"


class ListStore:
    """One cache directory (created 0700 if missing). Safe for one writer thread at a time
    plus readers; writes are atomic (see module doc)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def state(self) -> CacheState:
        """The recorded state (empty if none); :class:`CacheRefused` if torn or altered."""
        path = self.directory / STATE_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return CacheState()
        return CacheState.from_json(raw, path)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None

    def status_list_ids(self) -> set[int]:
        """The ids of the status list files present (a crash may leave one the state does not
        name yet)."""
        ids: set[int] = set()
        for path in self.directory.glob("status-*.cwt"):
            number = path.name.removeprefix("status-").removesuffix(".cwt")
            if number.isdigit():
                ids.add(int(number))
        return ids

    def save_trust_list(self, data: bytes, accepted: TrustList, etag: str | None) -> None:
        """Persists an accepted trust list (its bytes first, then the state)."""
        with self._lock:
            state = self._state_or_empty()
            self._write(TRUST_FILE, data)
            self._write_state(
                replace(
                    state,
                    trust_seq=accepted.sequence,
                    trust_iat=accepted.iat,
                    trust_digest=_sha256(data),
                    trust_etag=etag,
                )
            )

    def save_status_list(
        self, list_id: int, data: bytes, accepted: StatusListToken, etag: str | None
    ) -> None:
        """Persists an accepted status list token of ``list_id`` (bytes first, then state)."""
        with self._lock:
            state = self._state_or_empty()
            self._write(status_file(list_id), data)
            status = dict(state.status)
            status[list_id] = StatusEntry(accepted.uri, accepted.iat, _sha256(data), etag)
            self._write_state(replace(state, status=status))

    def record_sync(self, now: int) -> None:
        """Records ``now`` as the time of the last sync that reached the issuer."""
        with self._lock:
            self._write_state(replace(self._state_or_empty(), last_sync=now))

    def forget_etags(self, trust: bool, list_ids: set[int]) -> None:
        """Drops the ETags of refused lists, so that the next sync fetches them in full."""
        with self._lock:
            state = self._state_or_empty()
            status = {
                i: replace(e, etag=None) if i in list_ids else e for i, e in state.status.items()
            }
            etag = None if trust else state.trust_etag
            self._write_state(replace(state, trust_etag=etag, status=status))

    def _state_or_empty(self) -> CacheState:
        try:
            return self.state()
        except CacheRefused:
            return CacheState()  # a torn state is rewritten; the list files carry watermarks

    def _write_state(self, state: CacheState) -> None:
        self._write(STATE_FILE, state.to_json())

    def _write(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.directory / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def peek_claim(data: bytes, key: int | str) -> Any:
    """One claim of a COSE_Sign1 payload, **not verified**: only to find out at which time to
    verify it, or to choose between candidates that are verified afterwards.

    Raises :class:`~verifier.core.errors.MalformedCredential` for a malformed message or a
    missing claim."""
    claims = decode_strict(parse_sign1(data).payload)
    if not isinstance(claims, dict) or key not in claims:
        raise MalformedCredential(f"claim {key!r} is missing")
    return claims[key]


@dataclass
class LoadedLists:
    """The verifier state rebuilt from a cache: caches with watermarks restored, the usable
    lists in them, and what was refused (torn/tampered/rolled back) or is unusable (expired,
    clock behind) — each a sentence for the operator."""

    trust_lists: TrustListCache
    status: StatusListCache
    refused: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)
    refused_trust: bool = False
    refused_status: set[int] = field(default_factory=set)

    def store(self, now: int) -> TrustStore:
        """The usable keys, or an empty store (every answer ``unknown``)."""
        try:
            return self.trust_lists.store(now)
        except CannotVerify:
            return TrustStore(())


def load_lists(store: ListStore, root: ec.EllipticCurvePublicKey, now: int) -> LoadedLists:
    """Rebuilds the verifier's list state from ``store`` (see the module doc for the rules).

    Raises :class:`CacheRefused` only if ``state.json`` itself is torn or altered.
    """
    state = store.state()
    where = store.directory
    trust_mark = None
    if state.trust_seq is not None and state.trust_digest is not None:
        trust_mark = TrustWatermark(state.trust_seq, bytes.fromhex(state.trust_digest))
    trust_raw = store.read(TRUST_FILE)
    authentic: TrustList | None = None
    refused: list[str] = []
    unusable: list[str] = []
    refused_trust = False
    if trust_raw is None:
        if trust_mark is not None:
            refused.append(f"{where / TRUST_FILE} is missing but {where / STATE_FILE} names one")
            refused_trust = True
    else:
        try:
            authentic = parse_trust_list(trust_raw, root, _int(peek_claim(trust_raw, "iat")))
        except (VerificationError, ValueError) as exc:
            refused.append(f"{where / TRUST_FILE} does not verify against the pinned root: {exc}")
            refused_trust = True
        else:
            if trust_mark is None or authentic.sequence > trust_mark.sequence:
                trust_mark = TrustWatermark(authentic.sequence, hashlib.sha256(trust_raw).digest())
    trust_lists = TrustListCache(root, trust_mark)
    if authentic is not None:
        try:
            trust_lists.accept(authentic.raw, now)
        except TrustListRollback as exc:  # older than the watermark, or equivocating
            refused.append(f"{where / TRUST_FILE} was rolled back or altered: {exc}")
            refused_trust = True
        except VerificationError as exc:  # expired, or our clock is behind it
            unusable.append(f"{where / TRUST_FILE} is not usable now: {exc}")
    marks: dict[str, Watermark] = {}
    for entry in state.status.values():
        marks[entry.uri] = _higher(
            marks.get(entry.uri), Watermark(entry.iat, bytes.fromhex(entry.digest))
        )
    tokens: list[tuple[int, bytes]] = []
    refused_status: set[int] = set()
    for list_id in sorted(set(state.status) | store.status_list_ids()):
        path = where / status_file(list_id)
        raw = store.read(status_file(list_id))
        if raw is None:
            refused.append(f"{path} is missing but {where / STATE_FILE} names it")
            refused_status.add(list_id)
            continue
        if authentic is None:
            refused.append(f"{path} cannot be checked without a verified trust list")
            refused_status.add(list_id)
            continue
        try:
            token = parse_status_list_token(
                raw, authentic.store(), _int(peek_claim(raw, CLAIM_IAT))
            )
        except (VerificationError, ValueError) as exc:
            refused.append(f"{path} does not verify with the trusted status-list keys: {exc}")
            refused_status.add(list_id)
            continue
        own = Watermark(token.iat, hashlib.sha256(raw).digest())
        held = marks.get(token.uri)
        if held is not None and (
            own.iat < held.iat or (own.iat == held.iat and own.digest != held.digest)
        ):
            refused.append(f"{path} was rolled back or altered: older than {where / STATE_FILE}")
            refused_status.add(list_id)
            continue
        marks[token.uri] = _higher(held, own)
        tokens.append((list_id, raw))
    status = StatusListCache(marks)
    trust_now = _store_or_none(trust_lists, now)
    for list_id, raw in tokens:
        path = where / status_file(list_id)
        if trust_now is None:
            unusable.append(f"{path} is not usable now: the trust list is not")
            continue
        try:
            status.accept(raw, trust_now, now)
        except StatusListRollback as exc:  # older than the watermark, or equivocating
            refused.append(f"{path} was rolled back or altered: {exc}")
            refused_status.add(list_id)
        except VerificationError as exc:  # expired, our clock behind it, key retired
            unusable.append(f"{path} is not usable now: {exc}")
    return LoadedLists(trust_lists, status, refused, unusable, refused_trust, refused_status)


def _higher(held: Watermark | None, other: Watermark) -> Watermark:
    """The higher watermark; at the same ``iat`` the held one (a conflict is caught later)."""
    if held is None or other.iat > held.iat:
        return other
    return held


def _store_or_none(cache: TrustListCache, now: int) -> TrustStore | None:
    try:
        return cache.store(now)
    except CannotVerify:
        return None


def load_service(
    cache_dir: Path,
    root: ec.EllipticCurvePublicKey,
    now: int,
    *,
    salvage: bool = False,
    **options: Any,
) -> VerifierService:
    """A verifier built from the cache at ``cache_dir``, everything re-verified at ``now``.

    ``options`` go to :class:`VerifierService`. Expired lists make the service answer
    ``unknown`` (never ``valid``). Raises :class:`CacheRefused`, naming the file and the fix,
    for a torn, tampered or rolled-back file, or an empty cache; with ``salvage`` (for a
    process that syncs next) refused lists are dropped instead, their watermarks kept, and
    their ETags forgotten so that the next sync fetches them in full.
    """
    store = ListStore(cache_dir)
    loaded = load_lists(store, root, now)
    fix = f"run `starcard-verifier sync --issuer URL --cache {cache_dir}` to fetch them again"
    if not salvage:
        if loaded.refused:
            raise CacheRefused(
                f"the list cache {cache_dir} is damaged or was altered: "
                + "; ".join(loaded.refused)
                + f"; {fix}"
            )
        if loaded.trust_lists.watermark is None:
            raise CacheRefused(f"the list cache {cache_dir} holds no trust list; {fix}")
    elif loaded.refused:
        for problem in loaded.refused:
            log.warning("list cache: %s; dropped, it will be fetched again", problem)
        store.forget_etags(loaded.refused_trust, loaded.refused_status)
    return VerifierService(
        trust=loaded.store(now), status=loaded.status, trust_lists=loaded.trust_lists, **options
    )
