"""The verifier as a service object: trust and status caches, challenges, receipts.

HTTP lives in ``verifier.api``; the rules live in ``verifier.core``. Challenges are sealed
(HMAC over nonce, terminal, context and expiry) and handed to the terminal, so any instance
can complete them; a used nonce is remembered until it expires so it cannot be replayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from verifier.core.challenge import ChallengeState, begin, challenge_bytes
from verifier.core.errors import ChallengeMismatch, VerificationError
from verifier.core.status_list import StatusListCache
from verifier.core.trust import TrustStore
from verifier.core.trust_list import TrustListCache
from verifier.core.verify import Verdict, decide


@dataclass(frozen=True)
class Receipt:
    """One verification, kept for the holder's "who checked my card" and the audit."""

    terminal_id: str
    at: int
    serial: str | None
    state: str
    reason_class: str | None


@dataclass
class VerifierService:
    trust: TrustStore
    status: StatusListCache = field(default_factory=StatusListCache)
    seal_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    challenge_ttl_s: int = 30
    trust_lists: TrustListCache | None = None
    accept_low_assurance: bool = False
    """Policy: whether a card without clone protection (keyless profile) may be ``valid``."""
    receipts: list[Receipt] = field(default_factory=list)
    _used: dict[bytes, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, terminal_id: str, context: bytes, now: int) -> tuple[str, bytes]:
        """Returns (sealed challenge handle, the 32 bytes the card must sign)."""
        state = begin(terminal_id, context, now, ttl_s=self.challenge_ttl_s)
        return self._seal(state), challenge_bytes(state)

    def complete(
        self, handle: str, terminal_id: str, credential: bytes, card_signature: bytes, now: int
    ) -> Verdict:
        """Verifies a tap; never raises for a bad card (the verdict says invalid/unknown)."""
        try:
            state = self._unseal(handle, terminal_id)
        except VerificationError as exc:
            verdict = Verdict(state="invalid", star_level=None, reason_class=exc.reason_class)
            self._receipt(terminal_id, now, None, verdict)
            return verdict
        with self._lock:
            self._used = {n: e for n, e in self._used.items() if e > now}
            replayed = state.nonce in self._used
            self._used[state.nonce] = state.expires_at
        if replayed:
            verdict = Verdict(state="invalid", star_level=None, reason_class="replayed")
        else:
            verdict = decide(
                credential,
                card_signature,
                state,
                self.trust,
                self.status,
                now,
                accept_low_assurance=self.accept_low_assurance,
            )
        self._receipt(
            terminal_id, now, verdict.serial if hasattr(verdict, "serial") else None, verdict
        )
        return verdict

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
        nothing. Needs a verifier made by :meth:`from_trust_list`."""
        if self.trust_lists is None:
            raise RuntimeError("this verifier pins keys directly, not a trust-list root")
        self.trust_lists.accept(data, now)
        self.trust = self.trust_lists.store(now)

    def accept_status_list(self, token: bytes, now: int) -> None:
        """Raises a ``CannotVerify`` subclass on rollback; invalid tokens raise their error."""
        self.status.accept(token, self.trust, now)

    def _receipt(self, terminal_id: str, now: int, serial: object, verdict: Verdict) -> None:
        with self._lock:
            self.receipts.append(
                Receipt(
                    terminal_id,
                    now,
                    serial if isinstance(serial, str) else None,
                    verdict.state,
                    verdict.reason_class,
                )
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
