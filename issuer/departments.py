"""Departments that deliver records, and their delivery tokens.

A department is named by the same short name it writes as a record's ``source``. It gets one
bearer token, created by an operator (``starcard-issuer departments add NAME``) and shown
once; the database keeps only its SHA-256. Tokens carry 256 random bits, so a plain hash is
enough (no password stretching) and the token can be looked up by its hash.

A department may deliver, correct and withdraw only records whose source is its own name
(enforced by :mod:`issuer.ingest` with the name returned by :func:`authenticate`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from issuer.audit import audit
from issuer.db_platform import departments

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
TOKEN_PREFIX = "scd_"  # noqa: S105 (a marker that makes leaked tokens recognisable, not a secret)


class DepartmentError(ValueError):
    """An operator request about departments that cannot be done; the message says why."""


class NotAuthenticated(Exception):
    """No enabled department holds the presented token (unknown, rotated or disabled)."""


@dataclass(frozen=True)
class Department:
    name: str
    created_at: dt.datetime
    disabled_at: dt.datetime | None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def add_department(conn: Connection, name: str, now: dt.datetime, actor: str) -> str:
    """Creates department ``name`` and returns its token (the only time it is available).

    Raises:
        DepartmentError: the name is not a short lower-case name (letters, digits, ``_.-``,
            at most 64) or the department exists already.
    """
    if not _NAME.fullmatch(name):
        raise DepartmentError(
            f"department name {name!r}: use the record source name, lower-case letters, "
            "digits and _ . - (at most 64 characters)"
        )
    if conn.execute(select(departments.c.name).where(departments.c.name == name)).first():
        raise DepartmentError(
            f"department {name} exists already: use 'departments rotate-token {name}' for a "
            "new token"
        )
    token = _new_token()
    conn.execute(
        insert(departments).values(
            name=name, token_hash=_hash(token), created_at=now, created_by=actor
        )
    )
    audit(conn, now, actor, "department.added", department=name)
    return token


def rotate_token(conn: Connection, name: str, now: dt.datetime, actor: str) -> str:
    """Replaces the token of ``name`` (the old one stops working) and re-enables it.

    Raises:
        DepartmentError: no such department.
    """
    token = _new_token()
    result = conn.execute(
        update(departments)
        .where(departments.c.name == name)
        .values(token_hash=_hash(token), token_rotated_at=now, disabled_at=None)
    )
    if result.rowcount != 1:
        raise DepartmentError(f"no department {name}: add it with 'departments add {name}'")
    audit(conn, now, actor, "department.token_rotated", department=name)
    return token


def disable_department(conn: Connection, name: str, now: dt.datetime, actor: str) -> None:
    """Stops ``name``'s token from working (records it delivered stay).

    Raises:
        DepartmentError: no such department.
    """
    result = conn.execute(
        update(departments).where(departments.c.name == name).values(disabled_at=now)
    )
    if result.rowcount != 1:
        raise DepartmentError(f"no department {name}")
    audit(conn, now, actor, "department.disabled", department=name)


def list_departments(conn: Connection) -> list[Department]:
    rows = conn.execute(select(departments).order_by(departments.c.name))
    return [Department(r.name, r.created_at, r.disabled_at) for r in rows]


def authenticate(conn: Connection, token: str) -> str:
    """Returns the name of the enabled department holding ``token``.

    Raises:
        NotAuthenticated: the token is unknown, was rotated, or its department is disabled.
    """
    digest = _hash(token)
    row = conn.execute(
        select(departments.c.name, departments.c.token_hash).where(
            departments.c.token_hash == digest, departments.c.disabled_at.is_(None)
        )
    ).first()
    if row is None or not hmac.compare_digest(bytes(row.token_hash), digest):
        raise NotAuthenticated("unknown or disabled department token")
    return str(row.name)
