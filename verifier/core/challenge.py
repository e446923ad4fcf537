"""Challenge-response for a tap, stateless in the python-fido2 style.

``begin(...)`` returns a :class:`ChallengeState`; the terminal sends
``challenge_bytes(state)`` (32 bytes) in INTERNAL AUTHENTICATE, the card returns an ECDSA
P-256 signature over SHA-256 of those 32 bytes (raw ``r || s``), and
:func:`verifier.core.verify.verify_card` checks it against the ``cnf`` key with the same
state.

``challenge_bytes`` = SHA-256( ``b"starcard-auth-v1\\x00"`` ‖ nonce (32) ‖
u16be(len(terminal_id UTF-8)) ‖ terminal_id UTF-8 ‖ u16be(len(context)) ‖ context ).
The domain-separation prefix keeps these signatures from being valid for anything else;
the length prefixes make the encoding injective; binding the terminal id and context stops a
response captured at one terminal from being replayed at another.

Invariants: the nonce is 32 bytes (fresh from :mod:`secrets` unless given, for tests);
``terminal_id`` (UTF-8) and ``context`` are at most 65535 bytes; ``expires_at = issued_at +
ttl_s`` with ``ttl_s > 0``. Invalid arguments raise ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from verifier.core.errors import ChallengeExpired, ChallengeMismatch

__all__ = [
    "CHALLENGE_DOMAIN",
    "DEFAULT_TTL_S",
    "NONCE_SIZE",
    "ChallengeState",
    "begin",
    "challenge_bytes",
    "check_fresh",
    "check_presented",
]

CHALLENGE_DOMAIN = b"starcard-auth-v1\x00"
NONCE_SIZE = 32
DEFAULT_TTL_S = 30
_MAX_FIELD = 0xFFFF


@dataclass(frozen=True)
class ChallengeState:
    """What the verifier must remember between sending the challenge and checking it."""

    nonce: bytes
    terminal_id: str
    context: bytes
    issued_at: int
    expires_at: int

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise ValueError("nonce must be 32 bytes")
        if not isinstance(self.terminal_id, str) or not self.terminal_id:
            raise ValueError("terminal_id must be a non-empty str")
        if len(self.terminal_id.encode("utf-8")) > _MAX_FIELD:
            raise ValueError("terminal_id is too long")
        if not isinstance(self.context, bytes) or len(self.context) > _MAX_FIELD:
            raise ValueError("context must be at most 65535 bytes")
        if type(self.issued_at) is not int or type(self.expires_at) is not int:
            raise TypeError("issued_at and expires_at must be ints")
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")


def begin(
    terminal_id: str,
    context: bytes,
    now: int,
    ttl_s: int = DEFAULT_TTL_S,
    nonce: bytes | None = None,
) -> ChallengeState:
    """Start a challenge for ``terminal_id`` valid for ``ttl_s`` seconds from ``now``."""
    if type(ttl_s) is not int or ttl_s <= 0:
        raise ValueError("ttl_s must be a positive int")
    return ChallengeState(
        nonce=secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce,
        terminal_id=terminal_id,
        context=context,
        issued_at=now,
        expires_at=now + ttl_s,
    )


def challenge_bytes(state: ChallengeState) -> bytes:
    """The 32 bytes the card signs (see the module docstring for the exact encoding)."""
    terminal = state.terminal_id.encode("utf-8")
    return hashlib.sha256(
        CHALLENGE_DOMAIN
        + state.nonce
        + len(terminal).to_bytes(2, "big")
        + terminal
        + len(state.context).to_bytes(2, "big")
        + state.context
    ).digest()


def check_fresh(state: ChallengeState, now: int) -> None:
    """Raise :class:`ChallengeExpired` if ``now`` is at or past ``expires_at``."""
    if now >= state.expires_at:
        raise ChallengeExpired(
            "challenge has expired", detail=f"expired at {state.expires_at}, now {now}"
        )


def check_presented(state: ChallengeState, presented: bytes) -> None:
    """Raise :class:`ChallengeMismatch` unless ``presented`` equals ``challenge_bytes(state)``
    (constant-time), for flows where the client echoes the challenge it used."""
    if not isinstance(presented, bytes) or not hmac.compare_digest(
        presented, challenge_bytes(state)
    ):
        raise ChallengeMismatch("presented challenge is not the one issued")
