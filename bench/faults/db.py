"""The database connection dropped in the middle of a transaction: on PostgreSQL, the
issuer's backend is ended with ``pg_terminate_backend`` right before its k-th statement of
a personalization, for every k. Afterwards the database must be at a before/after state
(no active card, no card listed valid, for a job that did not finish), and a re-run on the
same card must finish it: one active card that taps valid."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from card_profiles.errors import CardError
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from issuer.issuance import IssuanceError
from issuer.wiring import IssuerContext
from tests.conftest import NOW, PG_ADMIN_DSN
from tests.helpers import factory_card, graded_subject, id_number

from .card import rerun_completes
from .core import Category, Probe
from .world import check_one_card, issuer, states, tap_state


class Terminator:
    """Ends the issuer's PostgreSQL backend right before its ``at``-th statement."""

    def __init__(self, ctx: IssuerContext, at: int | None) -> None:
        self.ctx = ctx
        self.at = at
        self.seen = 0
        self.fired = False
        self.admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)

    def __enter__(self) -> Terminator:
        event.listen(self.ctx.engine, "before_cursor_execute", self.before)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.ctx.engine, "before_cursor_execute", self.before)
        self.admin.close()

    def before(self, conn: Any, *args: object) -> None:
        self.seen += 1
        if self.seen == self.at:
            pid = conn.connection.dbapi_connection.info.backend_pid
            self.admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            self.fired = True


def personalize_statements(ctx: IssuerContext, work: Path) -> int:
    """How many statements one undisturbed personalization runs."""
    card = factory_card(ctx, work / "count.json")
    subject = graded_subject(ctx, NOW, id_number=id_number(900))
    with Terminator(ctx, None) as counter:
        ctx.issuance.personalize(StarCardSession(InProcessTransport(card)), subject, NOW, "f")
    return counter.seen


def dropped_at(ctx: IssuerContext, work: Path, k: int, probe: Probe) -> None:
    card = factory_card(ctx, work / f"card-{k}.json")
    subject = graded_subject(ctx, NOW, id_number=id_number(k))
    with Terminator(ctx, k) as terminator:
        try:
            ctx.issuance.personalize(StarCardSession(InProcessTransport(card)), subject, NOW, "f")
            outcome = "ok"
        except (DBAPIError, IssuanceError, CardError) as exc:
            outcome = type(exc).__name__
    if not terminator.fired:
        return
    probe.fault()
    ctx.engine.dispose()  # the pool's other connections may be dead too
    check_one_card(probe, ctx, subject)
    held = states(ctx, subject)
    if outcome != "ok":
        probe.expect("active" not in held.values(), "inconsistent_states",
                     f"personalization failed ({outcome}) but the card is active")  # fmt: skip
    probe.verdict(tap_state(ctx, card), f"the card after a drop at statement {k}",
                  may_be_valid="active" in held.values())  # fmt: skip
    rerun_completes(probe, ctx, card, subject)


def run(work: Path, quick: bool) -> Category:
    category = Category("db")
    folder = work / "db"
    with issuer(folder, "postgres") as ctx:
        total = personalize_statements(ctx, folder)
        for k in range(1, total + 1, 5 if quick else 1):
            scenario = functools.partial(dropped_at, ctx, folder, k)
            category.run(f"postgres_backend_terminated_before_statement_{k}_of_{total}", scenario)
    return category
