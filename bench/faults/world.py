"""The real components a scenario runs against: an issuer on SQLite or PostgreSQL, cards,
a verifier fed with the issuer's current status list, and the invariants checked after a
fault (at most one active card, and at most one card listed valid, per person)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select

from card_profiles.errors import CardError
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import VirtualStarCard
from issuer.db import cards
from issuer.publisher import VALID, current_token
from issuer.wiring import IssuerContext, build_issuer
from tests.conftest import NOW, PG_ADMIN_DSN, make_settings, trust_clock
from verifier.core.status_list import parse_status_list_token
from verifier.service import VerifierService
from verifier.tap import read_tap

from .core import Probe

TS = int(NOW.timestamp())


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards), as the tests' ``postgres_url``."""
    import psycopg

    admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    name = "starcard_faults_" + secrets.token_hex(6)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def issuer(work: Path, database: str = "sqlite", **overrides: object) -> Iterator[IssuerContext]:
    """An issuer (HSM file, database) in ``work``, as the tests' ``issuer_ctx``."""
    import dataclasses

    with database_url(work, database) as url:
        settings = dataclasses.replace(make_settings(url, work), **overrides)  # type: ignore[arg-type]
        ctx = build_issuer(settings, clock=trust_clock)
        try:
            yield ctx
        finally:
            ctx.engine.dispose()


@contextmanager
def database_url(work: Path, database: str = "sqlite") -> Iterator[str]:
    """A new empty database: a SQLite file in ``work``, or a PostgreSQL database."""
    work.mkdir(parents=True, exist_ok=True)
    if database == "postgres":
        with postgres_database() as url:
            yield url
    else:
        yield f"sqlite:///{work / f'issuer-{secrets.token_hex(4)}.db'}"


def verifier(ctx: IssuerContext, **options: object) -> VerifierService:
    """A verifier trusting the issuer's keys, holding its current status list."""
    service = VerifierService(trust=ctx.keys.trust_store(), **options)  # type: ignore[arg-type]
    with ctx.engine.connect() as conn:
        token = current_token(conn, ctx.settings.status_list_id)
    if token is not None:
        service.accept_status_list(token, TS)
    return service


def tap_state(
    ctx: IssuerContext, card: VirtualStarCard, service: VerifierService | None = None
) -> str:
    """The verdict of one in-process tap of ``card`` (``"card error"`` if the card fails)."""
    service = service or verifier(ctx)
    card.reset()
    handle, challenge = service.begin("t-1", b"faults", TS)
    try:
        data = read_tap(StarCardSession(InProcessTransport(card)), challenge)
    except CardError:
        return "card error"
    return service.complete(handle, "t-1", data.credential, data.card_signature, TS).state


def states(ctx: IssuerContext, subject: str) -> dict[str, str]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(cards.c.serial, cards.c.state).where(cards.c.subject_id == subject)
        )
        return {serial: state for serial, state in rows}


def check_one_card(probe: Probe, ctx: IssuerContext, subject: str) -> None:
    """At most one active card, and at most one card listed valid, for ``subject``."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(cards).where(cards.c.subject_id == subject)).all()
        token = current_token(conn, ctx.settings.status_list_id)
    active = [r.serial for r in rows if r.state == "active"]
    probe.expect(len(active) <= 1, "double_active_cards", f"{len(active)} active cards")
    if token is None:
        return
    listed = parse_status_list_token(token, ctx.keys.trust_store(), TS).statuses
    valid = [
        r.serial
        for r in rows
        if r.credential and r.status_idx is not None and listed.get(int(r.status_idx)) == VALID
    ]
    probe.expect(len(valid) <= 1, "double_active_cards", f"{len(valid)} cards listed valid")
    for r in rows:
        if r.serial in valid and r.state != "active":
            probe.bad("inconsistent_states", f"card in state {r.state} is listed valid")
