"""Status-list publisher: the signed list is derived from the cards table, never edited.

Card state → status: ``active`` VALID, ``suspended`` and every not-yet-active personalization
state SUSPENDED, ``revoked`` and ``abandoned`` (a personalization given up by reconciliation)
INVALID. Entries no card uses stay VALID (0) and are indistinguishable from unused space.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import Connection, insert, select, update

from issuer.db import cards, status_lists
from issuer.keys import IssuerKeys
from issuer.settings import IssuerSettings
from verifier.core.status_list import MIN_ENTRIES, StatusList, issue_status_list

VALID, INVALID, SUSPENDED = 0, 1, 2

_STATUS_BY_STATE = {"active": VALID, "revoked": INVALID, "abandoned": INVALID}


def status_for_state(state: str) -> int:
    return _STATUS_BY_STATE.get(state, SUSPENDED)


def publish_list(
    conn: Connection,
    keys: IssuerKeys,
    settings: IssuerSettings,
    now: dt.datetime,
    list_id: int | None = None,
) -> bytes:
    """:func:`publish` with the settings' URI, validity and ttl, for list ``list_id`` (default:
    the settings' current list; a card keeps the list it was issued on)."""
    if list_id is not None and list_id != settings.status_list_id:
        settings = dataclasses.replace(settings, status_list_id=list_id)
    return publish(
        conn,
        keys,
        settings.status_list_id,
        settings.status_list_uri,
        int(now.timestamp()),
        settings.status_list_valid_s,
        settings.status_list_ttl_s,
    )


def publish(
    conn: Connection,
    keys: IssuerKeys,
    list_id: int,
    uri: str,
    now: int,
    valid_s: int,
    ttl_s: int,
) -> bytes:
    """Builds, signs and stores the next version of list ``list_id``; returns the token.

    The list's ``iat`` never goes backwards: if the clock is behind the last issued list, the
    new one is stamped one second after it, so verifiers never see a rollback from us.
    """
    lst = StatusList(MIN_ENTRIES, bits=2)
    rows = conn.execute(
        select(cards.c.status_idx, cards.c.state).where(cards.c.status_list_id == list_id)
    )
    for idx, state in rows:
        lst.set(idx, status_for_state(state))
    previous = conn.execute(
        select(status_lists.c.sequence, status_lists.c.issued_at).where(
            status_lists.c.list_id == list_id
        )
    ).first()
    iat = now if previous is None else max(now, previous.issued_at + 1)
    token = issue_status_list(
        lst.encode(),
        uri=uri,
        iat=iat,
        exp=iat + valid_s,
        ttl=ttl_s,
        signer=keys.status,
        kid=keys.status_kid,
    )
    values = {"token": token, "issued_at": iat, "expires_at": iat + valid_s}
    if previous is None:
        conn.execute(insert(status_lists).values(list_id=list_id, sequence=1, **values))
    else:
        conn.execute(
            update(status_lists)
            .where(status_lists.c.list_id == list_id)
            .values(sequence=previous.sequence + 1, **values)
        )
    return token


def current_token(conn: Connection, list_id: int) -> bytes | None:
    token = conn.execute(
        select(status_lists.c.token).where(status_lists.c.list_id == list_id)
    ).scalar_one_or_none()
    return None if token is None else bytes(token)
