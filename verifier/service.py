"""The verifier as a service object: trust, status and benefits caches, challenges, receipts.

HTTP lives in ``verifier.api``; the rules live in ``verifier.core``. Challenges are sealed
(HMAC over nonce, terminal, context and expiry) and handed to the terminal, so any instance
that shares the seal key can complete them; a used nonce goes to the :class:`Ledger` until it
expires so it cannot be replayed. The ledger is in memory for one process (offline terminal,
demo, tests) or the SQL :class:`~verifier.store.VerifierStore` shared by every instance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from verifier.core.benefits import OFFICE_CATEGORY, BenefitsCache
from verifier.core.challenge import ChallengeState, begin, challenge_bytes
from verifier.core.errors import ChallengeMismatch, VerificationError
from verifier.core.status_list import StatusListCache
from verifier.core.trust import TrustStore
from verifier.core.trust_list import TrustListCache
from verifier.core.verify import Answer, Verdict, answer_for, decide
from verifier.store import Receipt

__all__ = ["Ledger", "MemoryLedger", "Receipt", "VerifierService"]

log = logging.getLogger("starcard.verifier")


class Ledger(Protocol):
    """Where used nonces and receipts go (:class:`MemoryLedger` or ``VerifierStore``)."""

    def use_nonce(self, nonce: bytes, expires_at: int, now: int) -> bool:
        """``False`` if ``nonce`` was used before (a replay)."""
        ...

    def add_receipt(self, receipt: Receipt) -> bool:
        """``False`` if this receipt id was stored before."""
        ...


@dataclass
class MemoryLedger:
    """The ledger of one process: nonces and receipts in memory."""

    receipts: list[Receipt] = field(default_factory=list)
    _used: dict[bytes, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def use_nonce(self, nonce: bytes, expires_at: int, now: int) -> bool:
        with self._lock:
            self._used = {n: e for n, e in self._used.items() if e >= now}
            if nonce in self._used:
                return False
            self._used[nonce] = expires_at
            return True

    def add_receipt(self, receipt: Receipt) -> bool:
        with self._lock:
            if any(r.id == receipt.id for r in self.receipts):
                return False
            self.receipts.append(receipt)
            return True


@dataclass
class VerifierService:
    trust: TrustStore
    status: StatusListCache = field(default_factory=StatusListCache)
    seal_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    challenge_ttl_s: int = 30
    trust_lists: TrustListCache | None = None
    accept_low_assurance: bool = False
    """Policy: whether a card without clone protection (keyless profile) may be ``valid``."""
    ledger: Ledger = field(default_factory=MemoryLedger)
    benefits: BenefitsCache = field(default_factory=BenefitsCache)
    _trust_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    """Serialises trust-list swaps (the sync thread and an operator's push)."""

    def begin(self, terminal_id: str, context: bytes, now: int) -> tuple[str, bytes]:
        """Returns (sealed challenge handle, the 32 bytes the card must sign)."""
        state = begin(terminal_id, context, now, ttl_s=self.challenge_ttl_s)
        return self._seal(state), challenge_bytes(state)

    def complete(
        self,
        handle: str,
        terminal_id: str,
        credential: bytes,
        card_signature: bytes,
        now: int,
        *,
        category: str = OFFICE_CATEGORY,
    ) -> Verdict:
        """Verifies a tap and keeps a receipt; never raises for a bad card (the verdict
        says invalid/unknown). The full verdict, star level included: for offices and for
        callers that map it themselves (use :meth:`answer` for a terminal's response)."""
        verdict = self._verdict(handle, terminal_id, credential, card_signature, now)
        self._receipt(
            terminal_id,
            category,
            now,
            verdict.serial,
            verdict.state,
            verdict.reason_class,
            verdict.diagnostics,
        )
        return verdict

    def answer(
        self,
        handle: str,
        terminal_id: str,
        category: str,
        credential: bytes,
        card_signature: bytes,
        now: int,
    ) -> Answer:
        """Verifies a tap and answers what a terminal of ``category`` may learn
        (:func:`~verifier.core.verify.answer_for`); the receipt keeps the detailed reason."""
        verdict = self._verdict(handle, terminal_id, credential, card_signature, now)
        answer = answer_for(verdict, category, self.benefits, now)
        self._receipt(
            terminal_id,
            category,
            now,
            answer.serial,
            answer.state,
            answer.detail,
            verdict.diagnostics,
        )
        return answer

    def _verdict(
        self, handle: str, terminal_id: str, credential: bytes, card_signature: bytes, now: int
    ) -> Verdict:
        try:
            state = self._unseal(handle, terminal_id)
        except VerificationError as exc:
            return Verdict("invalid", None, exc.reason_class, diagnostics=exc.diagnostics())
        if not self.ledger.use_nonce(state.nonce, state.expires_at, now):
            return Verdict("invalid", None, "replayed", diagnostics="challenge used before")
        return decide(
            credential,
            card_signature,
            state,
            self.trust,
            self.status,
            now,
            accept_low_assurance=self.accept_low_assurance,
        )

    @classmethod
    def from_trust_list(
        cls, root: ec.EllipticCurvePublicKey, trust_list: bytes, now: int, **options: Any
    ) -> VerifierService:
        """A verifier pinned to ``root`` that trusts the keys of ``trust_list``.

        Raises the trust list's verification errors (wrong root, expired, malformed).
        """
        cache = TrustListCache(root)
        cache.accept(trust_list, now)
        return cls(trust=cache.store(now), trust_lists=cache, **options)

    def accept_trust_list(self, data: bytes, now: int) -> None:
        """Takes a newer trust list (rotation); rollback and bad lists raise and change
        nothing. Needs a verifier made by :meth:`from_trust_list`.

        Safe while requests are served: swaps are serialised, and ``trust`` is replaced by
        a new store in one assignment (a request uses either the old or the new keys)."""
        if self.trust_lists is None:
            raise RuntimeError("this verifier pins keys directly, not a trust-list root")
        with self._trust_lock:
            self.trust_lists.accept(data, now)
            self.trust = self.trust_lists.store(now)

    def accept_status_list(self, token: bytes, now: int, *, uri: str | None = None) -> None:
        """Verifies ``token`` and holds it (``status.token(uri)`` then returns it). ``uri``:
        the URI it was fetched from (its signed ``sub`` must match: mix-and-match). Raises a
        ``CannotVerify`` subclass on rollback; invalid tokens raise their error."""
        self.status.accept(token, self.trust, now, uri=uri)

    def accept_benefits(self, data: bytes, now: int) -> None:
        """Takes a newer signed benefits catalogue; bad, expired or older ones raise and
        change nothing."""
        self.benefits.accept(data, self.trust, now)

    def _receipt(
        self,
        terminal_id: str,
        category: str,
        now: int,
        serial: str | None,
        state: Literal["valid", "invalid", "unknown"],
        reason_class: str | None,
        diagnostics: str | None,
    ) -> None:
        receipt = Receipt(
            str(uuid.uuid4()), terminal_id, category, now, serial, state, reason_class
        )
        self.ledger.add_receipt(receipt)
        log.info(
            "tap terminal=%s category=%s state=%s reason=%s receipt=%s%s",
            terminal_id,
            category,
            state,
            reason_class,
            receipt.id,
            f" ({diagnostics})" if diagnostics else "",
        )

    def _seal(self, state: ChallengeState) -> str:
        body = json.dumps(
            {
                "n": state.nonce.hex(),
                "t": state.terminal_id,
                "c": state.context.hex(),
                "e": state.expires_at,
                "i": state.issued_at,
            },
            separators=(",", ":"),
        ).encode()
        mac = hmac.new(self.seal_key, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")

    def _unseal(self, handle: str, terminal_id: str) -> ChallengeState:
        try:
            raw = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4))
        except ValueError:
            raise ChallengeMismatch("challenge handle is not base64url") from None
        body, mac = raw[:-32], raw[-32:]
        if not hmac.compare_digest(mac, hmac.new(self.seal_key, body, hashlib.sha256).digest()):
            raise ChallengeMismatch("challenge handle was not issued by this verifier")
        data = json.loads(body)
        if not hmac.compare_digest(str(data["t"]).encode(), terminal_id.encode()):
            raise ChallengeMismatch("challenge was issued to another terminal")
        return ChallengeState(
            nonce=bytes.fromhex(data["n"]),
            terminal_id=data["t"],
            context=bytes.fromhex(data["c"]),
            issued_at=int(data["i"]),
            expires_at=int(data["e"]),
        )
