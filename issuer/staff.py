"""Staff accounts, passwords and sessions (``docs/staff.md``).

- An account has a unique short name and one role (``operator``, ``supervisor``,
  ``auditor``). Its password is kept only as an argon2id hash (argon2-cffi, RFC 9106
  parameters) and must pass :func:`check_password` (the message says what to change).
- :data:`SessionPolicy.max_failed_logins` wrong passwords in a row lock the account for
  :data:`SessionPolicy.lockout`; a supervisor setting a new password unlocks it.
- A log-in returns an opaque session token (256 random bits); only its SHA-256 is stored.
  A session ends at logout, after :data:`SessionPolicy.idle` without a request, after
  :data:`SessionPolicy.absolute` in any case, and when its account is disabled.
- Every log-in, failed log-in, lockout, logout and account change is audited; never a
  password or a token, and never a name typed for an account that does not exist (it may be
  a password typed in the wrong field).

Time is an argument everywhere (``now``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, insert, select, update

from issuer.audit import as_utc, audit
from issuer.db_staff import staff_accounts, staff_sessions

Role = Literal["operator", "supervisor", "auditor"]
ROLES: tuple[Role, ...] = ("operator", "supervisor", "auditor")
SESSION_TOKEN_PREFIX = "scs_"  # noqa: S105 (marks leaked session tokens; not a secret)
MIN_PASSWORD = 12
MAX_PASSWORD = 128
MIN_DISTINCT = 6
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")
_RESERVED = frozenset({"bootstrap", "anonymous", "system"})
_COMMON = frozenset(
    {
        "password1234",
        "passwordpassword",
        "123456789012",
        "qwertyuiop12",
        "qwertyuiopasdf",
        "iloveyou1234",
        "administrator",
        "starcard1234",
        "letmein12345",
        "welcome12345",
        "1q2w3e4r5t6y",
        "abc123456789",
    }
)
_HASHER = PasswordHasher()  # argon2id with the RFC 9106 low-memory parameters


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown names (same work as a real account)."""
    return _HASHER.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions live and when failed log-ins lock an account."""

    idle: dt.timedelta = dt.timedelta(minutes=30)
    absolute: dt.timedelta = dt.timedelta(hours=12)
    max_failed_logins: int = 5
    lockout: dt.timedelta = dt.timedelta(minutes=15)
    touch_every: dt.timedelta = dt.timedelta(minutes=1)
    """``last_seen_at`` is written at most this often (idle expiry has this granularity)."""


DEFAULT_POLICY = SessionPolicy()


class StaffError(ValueError):
    """A staff-management request that cannot be done; the message says what to fix."""


class UnknownStaff(StaffError):
    """No account of that name."""


class StaffExists(StaffError):
    """An account of that name exists already."""


class LoginRefused(Exception):
    """Wrong name or password, a locked or a disabled account; the message says what to do."""


class SessionInvalid(Exception):
    """The token names no live session (unknown, ended, expired, or its account disabled);
    the message says to log in again."""


@dataclass(frozen=True)
class StaffMember:
    """Who a live session belongs to."""

    name: str
    role: Role


@dataclass(frozen=True)
class StaffAccount:
    name: str
    role: Role
    created_at: dt.datetime
    disabled_at: dt.datetime | None
    locked_until: dt.datetime | None


@dataclass(frozen=True)
class NewSession:
    """A session just opened: ``token`` is shown to the caller once and stored nowhere."""

    token: str = field(repr=False)
    name: str
    role: Role
    expires_at: dt.datetime
    idle_timeout: dt.timedelta


def check_password(name: str, password: str) -> None:
    """Raises :class:`StaffError` saying what to change if ``password`` is too weak for
    account ``name``: 12 to 128 characters, at least 6 different ones, not containing the
    name, not a well-known password."""
    if len(password) < MIN_PASSWORD:
        raise StaffError(
            f"the password has {len(password)} characters: use at least {MIN_PASSWORD} "
            "(a few unrelated words make a long password easy to remember)"
        )
    if len(password) > MAX_PASSWORD:
        raise StaffError(f"the password is longer than {MAX_PASSWORD} characters: shorten it")
    if len(set(password)) < MIN_DISTINCT:
        raise StaffError(
            f"the password repeats too few characters: use at least {MIN_DISTINCT} different"
        )
    if name.lower() in password.lower():
        raise StaffError("the password contains the account name: choose one that does not")
    if password.lower() in _COMMON:
        raise StaffError("this is a well-known password: choose another")


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or name in _RESERVED:
        raise StaffError(
            f"staff name {name!r}: use 2 to 64 lower-case letters, digits and _ . -, starting "
            f"with a letter (not {', '.join(sorted(_RESERVED))})"
        )


def _check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise StaffError(f"role {role!r}: use one of {', '.join(ROLES)}")


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_account(
    conn: Connection, name: str, role: str, password: str, now: dt.datetime, actor: str
) -> None:
    """Creates account ``name`` with ``role``; audited as ``staff.account_created``.

    Raises:
        StaffError: bad name, role or password (the message says which and why).
        StaffExists: the name is taken.
    """
    _check_name(name)
    checked_role = _check_role(role)
    check_password(name, password)
    if conn.execute(select(staff_accounts.c.name).where(staff_accounts.c.name == name)).first():
        raise StaffExists(f"staff account {name} exists already: choose another name")
    at = as_utc(now)
    conn.execute(
        insert(staff_accounts).values(
            name=name,
            role=checked_role,
            password_hash=_HASHER.hash(password),
            created_at=at,
            created_by=actor,
            password_changed_at=at,
        )
    )
    audit(conn, now, actor, "staff.account_created", staff=name, role=checked_role)


def _end_sessions(conn: Connection, name: str, now: dt.datetime) -> int:
    result = conn.execute(
        update(staff_sessions)
        .where(staff_sessions.c.staff_name == name, staff_sessions.c.ended_at.is_(None))
        .values(ended_at=as_utc(now))
    )
    return int(result.rowcount)


def _change(conn: Connection, name: str, **values: object) -> None:
    result = conn.execute(
        update(staff_accounts).where(staff_accounts.c.name == name).values(**values)
    )
    if result.rowcount != 1:
        raise UnknownStaff(f"no staff account {name}: see 'starcard-issuer staff list'")


def disable_account(conn: Connection, name: str, now: dt.datetime, actor: str) -> None:
    """Disables ``name`` and ends its sessions at once; audited as ``staff.disabled``.

    Raises:
        UnknownStaff: no such account.
    """
    _change(conn, name, disabled_at=as_utc(now))
    ended = _end_sessions(conn, name, now)
    audit(conn, now, actor, "staff.disabled", staff=name, sessions_ended=ended)


def enable_account(conn: Connection, name: str, now: dt.datetime, actor: str) -> None:
    """Enables ``name`` again; audited as ``staff.enabled``. Raises :class:`UnknownStaff`."""
    _change(conn, name, disabled_at=None)
    audit(conn, now, actor, "staff.enabled", staff=name)


def set_password(conn: Connection, name: str, password: str, now: dt.datetime, actor: str) -> None:
    """Sets a new password (which unlocks the account) and ends its sessions; audited as
    ``staff.password_set``.

    Raises:
        StaffError: the password is too weak (see :func:`check_password`).
        UnknownStaff: no such account.
    """
    check_password(name, password)
    at = as_utc(now)
    _change(
        conn,
        name,
        password_hash=_HASHER.hash(password),
        password_changed_at=at,
        failed_logins=0,
        locked_until=None,
    )
    _end_sessions(conn, name, now)
    audit(conn, now, actor, "staff.password_set", staff=name)


def list_accounts(conn: Connection) -> list[StaffAccount]:
    """All accounts by name (never their hashes)."""
    rows = conn.execute(select(staff_accounts).order_by(staff_accounts.c.name))
    return [
        StaffAccount(
            r.name,
            _check_role(r.role),
            as_utc(r.created_at),
            None if r.disabled_at is None else as_utc(r.disabled_at),
            None if r.locked_until is None else as_utc(r.locked_until),
        )
        for r in rows
    ]


def log_in(
    engine: Engine,
    name: str,
    password: str,
    now: dt.datetime,
    policy: SessionPolicy = DEFAULT_POLICY,
) -> NewSession:
    """Checks ``name``/``password`` and opens a session.

    A refusal is recorded (failed-attempt count, lockout, audit event) and committed in its
    own transaction before :class:`LoginRefused` is raised.

    Raises:
        LoginRefused: wrong name or password, account locked or disabled.
    """
    with engine.begin() as conn:
        outcome = _attempt(conn, name, password, now, policy)
    if isinstance(outcome, LoginRefused):
        raise outcome
    return outcome


def _attempt(
    conn: Connection, name: str, password: str, now: dt.datetime, policy: SessionPolicy
) -> NewSession | LoginRefused:
    account = conn.execute(
        select(staff_accounts).where(staff_accounts.c.name == name).with_for_update()
    ).first()
    wrong = LoginRefused("wrong name or password")
    if account is None:
        _verify(_dummy_hash(), password)  # same work as for a real account
        audit(conn, now, "anonymous", "staff.login_failed", reason="unknown_account")
        return wrong
    if account.locked_until is not None and as_utc(account.locked_until) > now:
        audit(conn, now, name, "staff.login_failed", reason="locked")
        until = as_utc(account.locked_until).strftime("%H:%M UTC")
        return LoginRefused(
            f"account {name} is locked after {policy.max_failed_logins} failed log-ins until "
            f"{until}: wait, or ask a supervisor to set a new password"
        )
    if not _verify(account.password_hash, password):
        failures = int(account.failed_logins) + 1
        if failures >= policy.max_failed_logins:
            _change(conn, name, failed_logins=0, locked_until=as_utc(now + policy.lockout))
            audit(conn, now, name, "staff.login_failed", reason="wrong_password")
            minutes = int(policy.lockout.total_seconds() // 60)
            audit(conn, now, name, "staff.locked", minutes=minutes)
            return LoginRefused(
                f"wrong name or password; account {name} is now locked for {minutes} minutes"
            )
        _change(conn, name, failed_logins=failures)
        audit(conn, now, name, "staff.login_failed", reason="wrong_password")
        return wrong
    if account.disabled_at is not None:
        audit(conn, now, name, "staff.login_failed", reason="disabled")
        return LoginRefused(f"account {name} is disabled: ask a supervisor to enable it")
    values: dict[str, object] = {"failed_logins": 0, "locked_until": None}
    if _HASHER.check_needs_rehash(account.password_hash):
        values["password_hash"] = _HASHER.hash(password)
    _change(conn, name, **values)
    token = SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)
    at = as_utc(now)
    expires_at = at + policy.absolute
    conn.execute(
        insert(staff_sessions).values(
            token_hash=_token_hash(token),
            staff_name=name,
            created_at=at,
            last_seen_at=at,
            expires_at=expires_at,
        )
    )
    audit(conn, now, name, "staff.login", role=account.role)
    return NewSession(token, name, _check_role(account.role), expires_at, policy.idle)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def is_session_token(token: str) -> bool:
    """Whether ``token`` looks like a session token (not whether it is live)."""
    return token.startswith(SESSION_TOKEN_PREFIX)


def authenticate(
    conn: Connection, token: str, now: dt.datetime, policy: SessionPolicy = DEFAULT_POLICY
) -> StaffMember:
    """The staff member whose live session ``token`` is; refreshes its idle timer.

    Raises:
        SessionInvalid: unknown or ended token, idle or absolute expiry, disabled account.
    """
    row = conn.execute(
        select(
            staff_sessions.c.token_hash,
            staff_sessions.c.last_seen_at,
            staff_sessions.c.expires_at,
            staff_sessions.c.ended_at,
            staff_accounts.c.name,
            staff_accounts.c.role,
            staff_accounts.c.disabled_at,
        )
        .join(staff_accounts, staff_accounts.c.name == staff_sessions.c.staff_name)
        .where(staff_sessions.c.token_hash == _token_hash(token))
    ).first()
    if row is None or row.ended_at is not None:
        raise SessionInvalid("not logged in (unknown or ended session): log in again")
    if row.disabled_at is not None:
        raise SessionInvalid(f"account {row.name} is disabled: ask a supervisor")
    if now >= as_utc(row.expires_at):
        hours = int(policy.absolute.total_seconds() // 3600)
        raise SessionInvalid(f"your session ended after {hours} hours: log in again")
    last_seen = as_utc(row.last_seen_at)
    if now - last_seen >= policy.idle:
        minutes = int(policy.idle.total_seconds() // 60)
        raise SessionInvalid(
            f"your session expired after {minutes} minutes without activity: log in again"
        )
    if now - last_seen >= policy.touch_every:
        conn.execute(
            update(staff_sessions)
            .where(staff_sessions.c.token_hash == row.token_hash)
            .values(last_seen_at=as_utc(now))
        )
    return StaffMember(row.name, _check_role(row.role))


def log_out(conn: Connection, token: str, now: dt.datetime) -> str:
    """Ends the session of ``token``; returns its staff name. Audited as ``staff.logout``.

    Raises:
        SessionInvalid: the token names no open session.
    """
    digest = _token_hash(token)
    row = conn.execute(
        select(staff_sessions.c.staff_name).where(
            staff_sessions.c.token_hash == digest, staff_sessions.c.ended_at.is_(None)
        )
    ).first()
    if row is None:
        raise SessionInvalid("not logged in (unknown or ended session): nothing to log out")
    conn.execute(
        update(staff_sessions)
        .where(staff_sessions.c.token_hash == digest)
        .values(ended_at=as_utc(now))
    )
    audit(conn, now, row.staff_name, "staff.logout")
    return str(row.staff_name)
