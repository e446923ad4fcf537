"""Protections of the citizen pages: access-code lockout, the signed session cookie, CSRF
tokens and the per-client rate limit's settings.

- The access code is checked in constant time (:func:`issuer.issuance.check_secret`); after
  ``max_wrong_codes`` wrong codes in a row a card is locked for ``lock_minutes`` (persisted in
  ``citizen_code_attempts``: shared by all workers, kept over restarts). A locked card refuses
  every code, right or wrong, so guessing cannot continue during the lock.
- The session cookie names the card by the SHA-256 of its QR token (so it only opens the page
  of that token) and its expiry; it is HMAC-SHA256-signed with a key derived from the
  issuer's PII key (HKDF, label ``starcard citizen session``): no server-side session state.
- CSRF: double submit — a random ``sc_csrf`` cookie (SameSite=Strict, HttpOnly) that every
  POST form must repeat in its ``csrf`` field (compared in constant time).

Time is an argument everywhere (``now``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, insert, select, update

from issuer.db import stored_utc
from issuer.db_citizen import citizen_code_attempts
from issuer.issuance import WrongSecret, check_secret

SESSION_COOKIE = "sc_session"
CSRF_COOKIE = "sc_csrf"
# Checked when a token matches no card, so that a wrong guess costs the same scrypt work.
_DUMMY_HASH = "scrypt$" + "00" * 16 + "$" + "00" * 64


@dataclass(frozen=True)
class CitizenLimits:
    """Rate limit per client IP (``rate_per_s``, ``burst``), access-code lockout, session."""

    rate_per_s: float = 0.5
    burst: int = 30
    max_wrong_codes: int = 5
    lock_minutes: int = 15
    session_minutes: int = 15


class CitizenRefused(Exception):
    """A citizen request refused; ``key`` and ``values`` name the message in the catalogue."""

    status = 403

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


class WrongCode(CitizenRefused):
    status = 403


class CodeLocked(CitizenRefused):
    status = 429


class SessionRequired(CitizenRefused):
    status = 401


class CsrfRefused(CitizenRefused):
    status = 403


def token_hash(token: str) -> bytes:
    """The stored form of a QR token (``cards.qr_token_hash``); any string hashes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def check_access_code(
    conn: Connection, card: Any, code: str, now: dt.datetime, limits: CitizenLimits
) -> None:
    """Checks ``code`` for ``card`` (a ``cards`` row, or None for a token that matches no card:
    the same work is done and :class:`WrongCode` raised). Writes the attempt counter in
    ``conn``: the caller commits even when this raises.

    Raises:
        CodeLocked: the card is locked (also when this wrong code locks it).
        WrongCode: the code is wrong (``left``: wrong codes before the lock).
    """
    stored = card.access_code_hash if card is not None and card.access_code_hash else None
    row = None
    if card is not None:
        row = conn.execute(
            select(citizen_code_attempts)
            .where(citizen_code_attempts.c.serial == card.serial)
            .with_for_update()
        ).first()
    locked_until = stored_utc(row.locked_until) if row is not None and row.locked_until else None
    try:
        check_secret(code, stored or _DUMMY_HASH)
        wrong = stored is None
    except WrongSecret:
        wrong = True
    if locked_until is not None and locked_until > now:
        raise CodeLocked("locked", until=_beijing(locked_until))
    if card is None:
        raise WrongCode("wrong_code", left=limits.max_wrong_codes, minutes=limits.lock_minutes)
    failures = (row.failures if row is not None else 0) + 1 if wrong else 0
    locks = failures >= limits.max_wrong_codes
    lock = now + dt.timedelta(minutes=limits.lock_minutes) if locks else None
    values = {
        "failures": 0 if lock is not None else failures,
        "locked_until": lock,
        "updated_at": now,
    }
    if row is None:
        conn.execute(insert(citizen_code_attempts).values(serial=card.serial, **values))
    else:
        conn.execute(
            update(citizen_code_attempts)
            .where(citizen_code_attempts.c.serial == card.serial)
            .values(**values)
        )
    if lock is not None:
        raise CodeLocked("locked", until=_beijing(lock))
    if wrong:
        left = limits.max_wrong_codes - failures
        raise WrongCode("wrong_code", left=left, minutes=limits.lock_minutes)


def _beijing(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone(dt.timedelta(hours=8))).strftime("%H:%M")


class SessionSigner:
    """Signs and checks the citizen session cookie (``hash.expiry.mac``, base64url)."""

    def __init__(self, pii_key: bytes) -> None:
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"starcard citizen session"
        ).derive(pii_key or b"\0" * 32)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, b"citizen-session-v1|" + payload, hashlib.sha256).digest()

    def issue(self, qr_hash: bytes, expires: dt.datetime) -> str:
        payload = qr_hash + int(expires.timestamp()).to_bytes(8, "big")
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def check(self, cookie: str | None, qr_hash: bytes, now: dt.datetime) -> None:
        """Raises :class:`SessionRequired` unless ``cookie`` is a live session for
        ``qr_hash``."""
        try:
            raw = base64.urlsafe_b64decode((cookie or "") + "=" * (-len(cookie or "") % 4))
        except ValueError:
            raw = b""
        payload, mac = raw[:40], raw[40:]
        good = len(raw) == 72 and hmac.compare_digest(mac, self._mac(payload))
        if not good or not hmac.compare_digest(payload[:32], qr_hash):
            raise SessionRequired("session_expired")
        if int.from_bytes(payload[32:], "big") <= now.timestamp():
            raise SessionRequired("session_expired")


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def check_csrf(cookie: str | None, field: str | None) -> None:
    """Raises :class:`CsrfRefused` unless the form repeats the cookie's token."""
    if not cookie or not field or not hmac.compare_digest(cookie.encode(), field.encode()):
        raise CsrfRefused("csrf")
