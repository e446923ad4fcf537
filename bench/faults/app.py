"""The issuer process killed at every commit boundary of issuance and revocation (the forked
child and the before/after checks of tests/api/test_issuance_kill.py), then restarted; and
the HSM lost between the card's key generation and the credential signing (the scenarios of
tests/api/test_issuance_hsm_lost.py, run against an ``hsm_sim`` server process)."""

from __future__ import annotations

import dataclasses
import functools
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import select

from issuer.db import cards
from issuer.faults import FAULT_EXIT
from issuer.issuance import FAULT_POINTS, JOB_STATES
from issuer.reconcile import find_orphans
from issuer.wiring import IssuerContext, build_issuer
from tests.api import test_issuance_hsm_lost as hsm_lost
from tests.api.test_issuance_kill import (
    CHECKED_AT,
    REVOKED_AT,
    STALE_AFTER,
    Child,
    check_database,
    expected_state,
    rerun,
)
from tests.conftest import NOW, make_settings, trust_clock
from tests.helpers import factory_card, factory_session, graded_subject, id_number
from tests.hsm.conftest import ServerProcess

from .core import Category, Probe
from .world import check_one_card, database_url, issuer


def killed_at(
    ctx: IssuerContext, child: Child, work: Path, n: int, point: str, probe: Probe
) -> None:
    subject = graded_subject(ctx, NOW, id_number=id_number(n))
    old = ctx.issuance.personalize(factory_session(ctx), subject, NOW, "c").serial
    card_path = work / f"card-{n}.json"
    new = factory_card(ctx, card_path).serial.hex()
    probe.fault()
    status = child.run(point, card=str(card_path), subject=subject, replaces=old)
    probe.expect(status == FAULT_EXIT, "errors", f"child exited {status}, not at the point")
    with ctx.engine.connect() as conn:
        row = conn.execute(select(cards.c.state).where(cards.c.serial == new)).scalar()
    if point.endswith(".after_commit") and row != expected_state(point):
        probe.bad("lost_commits", f"committed step left the card at {row}")
    check_one_card(probe, ctx, subject)
    check_database(ctx, subject, old, new, point)
    with ctx.engine.connect() as conn:
        orphans = {o.serial: o for o in find_orphans(conn, CHECKED_AT, STALE_AFTER)}
    found = new in orphans
    probe.expect(found == (expected_state(point) in JOB_STATES), "inconsistent_states",
                 f"reconciliation {'found' if found else 'missed'} the job")  # fmt: skip
    rerun(ctx, subject, old, card_path, point)
    check_one_card(probe, ctx, subject)
    with ctx.engine.connect() as conn:
        still = conn.execute(
            select(cards.c.serial).where(cards.c.subject_id == subject, cards.c.state == "active")
        ).scalars()
        for serial in list(still):
            ctx.issuance.revoke(serial, "other", REVOKED_AT, "c")


def run_app(work: Path, quick: bool, databases: tuple[str, ...]) -> Category:
    category = Category("app")
    for database in databases:
        folder = work / f"app-{database}"
        with issuer(folder, database) as ctx:
            child = Child(ctx, folder)
            try:
                points = FAULT_POINTS[::3] if quick else FAULT_POINTS
                for n, point in enumerate(points):
                    scenario = functools.partial(killed_at, ctx, child, folder, n, point)
                    category.run(f"{database}_killed_at_{point}", scenario)
            finally:
                child.close()
    return category


def run_hsm(work: Path, databases: tuple[str, ...]) -> Category:
    category = Category("hsm")
    for database in databases:
        for name, scenario in (
            ("lost_after_key_generation",
             hsm_lost.test_hsm_lost_after_key_generation_job_waits_then_resumes),
            ("down_at_revocation", hsm_lost.test_hsm_down_at_revocation_changes_nothing),
        ):  # fmt: skip

            def lost(
                probe: Probe,
                scenario: object = scenario,
                database: str = database,
                name: str = name,
            ) -> None:
                directory = Path(tempfile.mkdtemp(prefix="hsm-", dir="/tmp"))  # short socket
                server = ServerProcess(directory)
                server.start()
                try:
                    folder = work / f"hsm-{database}-{name}"
                    with database_url(folder, database) as url:
                        settings = dataclasses.replace(
                            make_settings(url, folder),
                            hsm_backend="remote",
                            hsm_socket=server.socket_path,
                        )
                        ctx = build_issuer(settings, clock=trust_clock)
                        probe.fault()
                        try:
                            scenario(ctx, server)  # type: ignore[operator]
                        finally:
                            ctx.engine.dispose()
                finally:
                    server.stop()
                    shutil.rmtree(directory, ignore_errors=True)

            category.run(f"{database}_{name}", lost)
    return category
