"""Time-bounded, serialized calls into a library that may hang and is not thread-safe.

:class:`BoundedWorker` runs each call on its own worker thread while holding a lock that is
shared by every worker of the same library (python-pkcs11 on SoftHSM2 fails with
``CKR_GENERAL_ERROR`` on concurrent calls, because SoftHSM's ``C_Initialize(NULL)``
disables its mutexes). The caller waits at most ``timeout_s``.

Invariants:

* At most one call per shared lock runs at any time.
* A caller that gave up (:class:`~hsm_sim.errors.HsmTimeout`) never has its call started
  later: a call still queued, or waiting for the shared lock, is abandoned, not run. A call
  that had already started runs to its end; its result is discarded and its outcome is
  unknown to the caller.
* A hung call blocks every later call on the same lock; those time out in turn. Once it
  returns, the worker serves calls again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from hsm_sim.errors import HsmTimeout, HsmUnavailable

__all__ = ["BoundedWorker"]

T = TypeVar("T")


class BoundedWorker:
    """One worker thread; :meth:`call` runs a function on it under ``lock``, bounded in time.

    ``name`` appears in thread names and error messages. Raises ValueError for a
    non-positive ``timeout_s``.
    """

    def __init__(self, name: str, lock: threading.Lock, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self._name = name
        self._lock = lock
        self._timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hsm-{name}")
        self._closed = False

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def call(self, what: str, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run ``fn()`` on the worker under the shared lock; return its result or re-raise
        its exception. Raises :class:`HsmTimeout` if it has not returned within the bound,
        :class:`HsmUnavailable` after :meth:`close`."""
        if self._closed:
            raise HsmUnavailable(f"{self._name}: closed")
        bound = self._timeout_s if timeout_s is None else timeout_s
        abandoned = threading.Event()

        def guarded() -> T:
            # Wait for the shared lock in small steps, so that a caller who gave up is seen.
            while not self._lock.acquire(timeout=0.05):
                if abandoned.is_set():
                    raise CancelledError
            try:
                if abandoned.is_set():
                    raise CancelledError
                return fn()
            finally:
                self._lock.release()

        try:
            future: Future[T] = self._executor.submit(guarded)
        except RuntimeError as exc:  # executor shut down concurrently
            raise HsmUnavailable(f"{self._name}: closed") from exc
        try:
            return future.result(timeout=bound)
        except FutureTimeout:
            abandoned.set()
            future.cancel()
            raise HsmTimeout(f"{self._name}: {what} did not return within {bound:g} s") from None

    def close(self) -> None:
        """Stop accepting calls; a call still running is left to finish on its own."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
