"""Keeps a verifier's trust list, status lists and benefits catalogue in step with the issuer.

:class:`ListSync` fetches ``/.well-known/starcard/trust-list``, ``/s/<id>`` and (with
``benefits=True``) ``/.well-known/starcard/benefits`` with ``If-None-Match``. Rules (the
issue: "never valid on stale data, never invalid for a network error"):

* ``304``: the cached list stays; that only proves the HTTP layer is in step. The signed
  list's own ``exp`` still rules: a list the issuer keeps serving unchanged (a freeze) ends
  in ``unknown`` at its ``exp``.
* ``200``: the list is handed to the service, which verifies it and refuses a forgery, an
  older list (rollback) or a different list with the same watermark (equivocation); a
  refused list changes nothing, in memory or on disk, and is reported. A status list must be
  for the URI the list id stands for (its ``sub`` ends in ``/s/<id>``, and stays the URI
  first accepted for that id): mix-and-match is refused. A benefits catalogue older than
  the version the cache recorded (or differing at that version) is refused too. Accepted
  lists are then persisted through the :class:`~verifier.list_store.ListStore`.
* network errors and ``5xx``: exponential backoff with full jitter (``base * 2**n`` capped
  at ``cap``, then a uniform draw below it); the service keeps answering from the lists it
  holds until their ``exp``, then ``unknown``.
* otherwise the next poll comes after the smallest ``ttl`` of the held status lists.

Time is injected (``clock``, ``sleep``); the HTTP client is injected (``httpx.Client``).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

from verifier.benefits_store import check_mark
from verifier.core.benefits import MAX_BENEFITS_BYTES, parse_benefits
from verifier.core.errors import MalformedCredential, VerificationError
from verifier.core.status_list import CLAIM_SUB, MAX_TOKEN_BYTES
from verifier.core.trust_list import MAX_TRUST_LIST_BYTES
from verifier.list_store import ListStore, peek_claim
from verifier.service import VerifierService

__all__ = ["ListSync", "Outcome", "SyncReport", "full_jitter"]

log = logging.getLogger(__name__)

TRUST_LIST_PATH = "/.well-known/starcard/trust-list"
BENEFITS_PATH = "/.well-known/starcard/benefits"
Result = Literal["updated", "not_modified", "refused", "unreachable"]


@dataclass(frozen=True)
class Outcome:
    """What one fetch did. ``detail`` is for logs (error class and message, no secrets)."""

    resource: str
    result: Result
    detail: str = ""


@dataclass(frozen=True)
class SyncReport:
    now: int
    outcomes: tuple[Outcome, ...]

    @property
    def reached_issuer(self) -> bool:
        """True when no fetch failed for the network or a 5xx."""
        return all(o.result != "unreachable" for o in self.outcomes)

    @property
    def refused(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.result == "refused")


def full_jitter(ceiling: float) -> float:
    """A uniform draw in ``[0, ceiling]`` (AWS "full jitter")."""
    return secrets.SystemRandom().uniform(0.0, ceiling)


class _Unreachable(Exception):
    pass


class _Refused(Exception):
    pass


class ListSync:
    """Polls the issuer at ``base_url`` for the trust list and the status lists ``list_ids``,
    and with ``benefits=True`` for the benefits catalogue (handed to ``service.benefits``, so
    that no operator has to push it to each instance).

    ``service`` must hold a trust-list cache (built by
    :func:`~verifier.list_store.load_service` or ``VerifierService.from_trust_list``).
    """

    def __init__(
        self,
        base_url: str,
        list_ids: Sequence[int],
        store: ListStore,
        service: VerifierService,
        clock: Callable[[], float],
        sleep: Callable[[float], object],
        http_client: httpx.Client,
        *,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        default_poll_s: float = 300.0,
        min_poll_s: float = 1.0,
        jitter: Callable[[float], float] = full_jitter,
        benefits: bool = False,
    ) -> None:
        if not list_ids:
            raise ValueError("name at least one status list id to sync")
        self._base = base_url.rstrip("/")
        self._list_ids = tuple(list_ids)
        self._store = store
        self._service = service
        self._clock = clock
        self._sleep = sleep
        self._http = http_client
        self._base_s = backoff_base_s
        self._cap_s = backoff_cap_s
        self._default_poll_s = default_poll_s
        self._min_poll_s = min_poll_s
        self._jitter = jitter
        self._benefits = benefits
        self._failures = 0
        self.refusals: list[Outcome] = []
        """Every refused list so far (rollback, forgery, mix-and-match), oldest first."""

    def sync_once(self, now: int) -> SyncReport:
        """One round: the trust list first (new keys before lists they sign), then each
        status list, then the benefits catalogue if asked for. Never raises for the network
        or a bad list (see the outcomes)."""
        outcomes = [self._sync_trust_list(now)]
        outcomes += [self._sync_status_list(list_id, now) for list_id in self._list_ids]
        if self._benefits:
            outcomes.append(self._sync_benefits(now))
        report = SyncReport(now, tuple(outcomes))
        for outcome in report.outcomes:
            if outcome.result == "refused":
                log.warning("list refused: %s: %s", outcome.resource, outcome.detail)
                self.refusals.append(outcome)
            elif outcome.result == "unreachable":
                log.info("issuer unreachable: %s: %s", outcome.resource, outcome.detail)
        if report.reached_issuer:
            self._store.record_sync(now)
        return report

    def next_delay(self, report: SyncReport, now: int) -> float:
        """Seconds until the next round: backoff after a failed round, else the held status
        lists' smallest ``ttl`` (never beyond the soonest ``exp``)."""
        if not report.reached_issuer:
            ceiling = min(self._cap_s, self._base_s * 2.0**self._failures)
            self._failures += 1
            return self._jitter(ceiling)
        self._failures = 0
        delay = self._default_poll_s
        for uri in self._held_uris():
            token = self._service.status.token(uri)
            if token is not None:
                delay = min(delay, token.ttl, max(token.exp - now, 0))
        return max(delay, self._min_poll_s)

    def run(self, stop: threading.Event) -> None:
        """Syncs until ``stop`` is set, sleeping with ``sleep`` between rounds."""
        while not stop.is_set():
            now = int(self._clock())
            try:
                report = self.sync_once(now)
            except OSError as exc:  # the cache could not be written: retry as for the network
                log.error("list cache write failed: %s", exc)
                report = SyncReport(now, (Outcome("cache", "unreachable", str(exc)),))
            delay = self.next_delay(report, now)
            if stop.is_set():
                return
            self._sleep(delay)

    def _held_uris(self) -> list[str]:
        state = self._store.state()
        return [state.status[i].uri for i in self._list_ids if i in state.status]

    def _sync_trust_list(self, now: int) -> Outcome:
        resource = "trust list"
        held = self._service.trust_lists.current if self._service.trust_lists else None
        etag = self._store.state().trust_etag if held is not None else None
        fetched = self._fetch(resource, TRUST_LIST_PATH, etag, MAX_TRUST_LIST_BYTES)
        if isinstance(fetched, Outcome):
            return fetched
        data, new_etag = fetched
        try:
            self._service.accept_trust_list(data, now)
        except VerificationError as exc:
            return Outcome(resource, "refused", exc.diagnostics())
        accepted = self._service.trust_lists.current if self._service.trust_lists else None
        if accepted is None:  # pragma: no cover - accept_trust_list sets it or raises
            raise RuntimeError("the trust list was accepted but is not held")
        self._store.save_trust_list(data, accepted, new_etag)
        return Outcome(resource, "updated", f"seq {accepted.sequence}")

    def _sync_status_list(self, list_id: int, now: int) -> Outcome:
        resource = f"status list {list_id}"
        held = self._store.state().status.get(list_id)
        # an ETag only stands for a list the service still holds (one refused at load is not)
        etag = held.etag if held and self._service.status.token(held.uri) else None
        fetched = self._fetch(resource, f"/s/{list_id}", etag, MAX_TOKEN_BYTES)
        if isinstance(fetched, Outcome):
            return fetched
        data, new_etag = fetched
        try:
            uri = peek_claim(data, CLAIM_SUB)
            if not isinstance(uri, str) or not uri.endswith(f"/s/{list_id}"):
                raise MalformedCredential(f"status list sub {uri!r} is not list {list_id}")
            if held is not None and uri != held.uri:
                raise MalformedCredential(f"status list sub {uri!r} is not {held.uri!r}")
            self._service.accept_status_list(data, now, uri=uri)
        except VerificationError as exc:
            return Outcome(resource, "refused", exc.diagnostics())
        token = self._service.status.token(uri)
        if token is None:  # pragma: no cover - accept_status_list holds it or raises
            raise RuntimeError("the status list was accepted but is not held")
        self._store.save_status_list(list_id, data, token, new_etag)
        return Outcome(resource, "updated", f"iat {token.iat}, exp {token.exp}")

    def _sync_benefits(self, now: int) -> Outcome:
        resource = "benefits catalogue"
        state = self._store.state()
        etag = state.benefits_etag if self._service.benefits.current is not None else None
        fetched = self._fetch(resource, BENEFITS_PATH, etag, MAX_BENEFITS_BYTES)
        if isinstance(fetched, Outcome):
            return fetched
        data, new_etag = fetched
        try:
            # the recorded watermark counts even when the service holds no catalogue
            catalogue = parse_benefits(data, self._service.trust, now)
            check_mark(state.benefits_mark, catalogue)
            self._service.accept_benefits(data, now)
        except VerificationError as exc:
            return Outcome(resource, "refused", exc.diagnostics())
        self._store.save_benefits(data, catalogue, new_etag)
        return Outcome(resource, "updated", f"version {catalogue.version}, exp {catalogue.exp}")

    def _fetch(
        self, resource: str, path: str, etag: str | None, limit: int
    ) -> Outcome | tuple[bytes, str | None]:
        """:meth:`_get`, with a failure or a ``304`` as the round's :class:`Outcome`."""
        try:
            fetched = self._get(path, etag, limit)
        except _Unreachable as exc:
            return Outcome(resource, "unreachable", str(exc))
        except _Refused as exc:
            return Outcome(resource, "refused", str(exc))
        if fetched is None:
            return Outcome(resource, "not_modified")
        return fetched

    def _get(self, path: str, etag: str | None, limit: int) -> tuple[bytes, str | None] | None:
        """The body and ETag of a ``200``, ``None`` for a ``304``. Raises :class:`_Unreachable`
        for the network or a ``5xx``, :class:`_Refused` for any other answer or a body over
        ``limit`` bytes (read no further)."""
        headers = {"If-None-Match": etag} if etag else {}
        url = self._base + path
        try:
            with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code == 304:
                    return None
                if response.status_code >= 500:
                    raise _Unreachable(f"GET {url}: HTTP {response.status_code}")
                if response.status_code != 200:
                    raise _Refused(f"GET {url}: HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise _Refused(f"GET {url}: body larger than {limit} bytes")
                return bytes(body), response.headers.get("ETag")
        except httpx.HTTPError as exc:
            raise _Unreachable(f"GET {url}: {type(exc).__name__}: {exc}") from None
