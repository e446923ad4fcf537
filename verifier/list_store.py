"""The verifier's on-disk cache of the signed lists it last accepted, with their watermarks.

A cache directory holds:

* ``trust-list.cbor``: the exact bytes of the last accepted trust list;
* ``status-<list id>.cwt``: the exact bytes of the last accepted token of each status list;
* ``benefits.cwt``: the exact bytes of the last accepted benefits catalogue (if synced);
* ``state.json``: ETags, the watermarks (trust list ``seq``/``iat`` and SHA-256, each status
  list's ``uri``/``iat`` and SHA-256, the catalogue's ``version`` and SHA-256) and the time
  of the last successful sync.

Invariants:

* Every write is atomic: a temporary file in the same directory, ``fsync``, ``os.replace``,
  then ``fsync`` of the directory. A list file is written before the state that names it,
  so a crash between the two leaves a list *newer* than the state, never older.
* Nothing on disk is trusted: :func:`load_lists` re-verifies every list against the pinned
  root (a trust list) or the keys of that trust list (status lists, the catalogue), each at
  its own ``iat``
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
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from verifier.benefits_store import MarkedBenefitsCache, check_mark, mark_of
from verifier.core.benefits import BenefitCatalogue, parse_benefits
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
from verifier.list_state import CacheRefused, CacheState, StatusEntry, _int
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
BENEFITS_FILE = "benefits.cwt"


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

    def save_benefits(self, data: bytes, accepted: BenefitCatalogue, etag: str | None) -> None:
        """Persists an accepted benefits catalogue (its bytes first, then the state)."""
        with self._lock:
            state = self._state_or_empty()
            self._write(BENEFITS_FILE, data)
            self._write_state(
                replace(
                    state,
                    benefits_version=accepted.version,
                    benefits_iat=accepted.iat,
                    benefits_digest=_sha256(data),
                    benefits_etag=etag,
                )
            )

    def record_sync(self, now: int) -> None:
        """Records ``now`` as the time of the last sync that reached the issuer."""
        with self._lock:
            self._write_state(replace(self._state_or_empty(), last_sync=now))

    def forget_etags(self, trust: bool, list_ids: set[int], benefits: bool = False) -> None:
        """Drops the ETags of refused lists, so that the next sync fetches them in full."""
        with self._lock:
            state = self._state_or_empty()
            status = {
                i: replace(e, etag=None) if i in list_ids else e for i, e in state.status.items()
            }
            etag = None if trust else state.trust_etag
            benefits_etag = None if benefits else state.benefits_etag
            self._write_state(
                replace(state, trust_etag=etag, status=status, benefits_etag=benefits_etag)
            )

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
    benefits: MarkedBenefitsCache = field(default_factory=MarkedBenefitsCache)
    refused_benefits: bool = False

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
    benefits, benefits_problem = _load_benefits(store, state, authentic, trust_now, now)
    if benefits_problem is not None:
        refused.append(benefits_problem)
    elif store.read(BENEFITS_FILE) is not None and benefits.current is None:
        unusable.append(f"{where / BENEFITS_FILE} is not usable now (expired or key retired)")
    return LoadedLists(
        trust_lists,
        status,
        refused,
        unusable,
        refused_trust,
        refused_status,
        benefits,
        benefits_problem is not None,
    )


def _load_benefits(
    store: ListStore,
    state: CacheState,
    authentic: TrustList | None,
    trust_now: TrustStore | None,
    now: int,
) -> tuple[MarkedBenefitsCache, str | None]:
    """The catalogue cache with its watermark restored (the higher of the state's and the
    verified file's own), and why the file was refused (``None`` if it was not)."""
    path = store.directory / BENEFITS_FILE
    mark = state.benefits_mark
    raw = store.read(BENEFITS_FILE)
    if raw is None:
        missing = f"{path} is missing but {store.directory / STATE_FILE} names it"
        return MarkedBenefitsCache(mark), None if mark is None else missing
    if authentic is None:
        return MarkedBenefitsCache(mark), f"{path} cannot be checked without a trust list"
    try:
        own = parse_benefits(raw, authentic.store(), _int(peek_claim(raw, "iat")))
    except (VerificationError, ValueError) as exc:
        return MarkedBenefitsCache(mark), f"{path} does not verify: {exc}"
    try:
        check_mark(mark, own)
    except VerificationError as exc:
        return MarkedBenefitsCache(mark), f"{path} was rolled back or altered: {exc}"
    cache = MarkedBenefitsCache(mark_of(own))
    if trust_now is not None:
        with contextlib.suppress(VerificationError):  # expired: not usable, mark kept
            cache.accept(raw, trust_now, now)
    return cache, None


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
        store.forget_etags(loaded.refused_trust, loaded.refused_status, loaded.refused_benefits)
    return VerifierService(
        trust=loaded.store(now),
        status=loaded.status,
        trust_lists=loaded.trust_lists,
        benefits=loaded.benefits,
        **options,
    )
