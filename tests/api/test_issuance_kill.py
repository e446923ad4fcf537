"""The issuer process killed at every commit boundary of issuance and revocation, then restart.

For every fault point (``issuance.FAULT_POINTS``: right before each commit, inside the
transaction, and right after it), a child process (this module run as ``python -m``) builds
the issuer on the test's database (a SQLite file, or a PostgreSQL database) and HSM key file,
personalizes a virtual card (state in a file) that *replaces* the person's active card, then
revokes it; ``STARCARD_FAULT_AT`` makes it die at that point. Then, in the parent:

* the database is at the before or after state of that step: the new card's row state, the
  old card's state, the status list entries of both and the audit rows agree with each other
  and with the point (``before_commit`` loses the step, ``after_commit`` keeps it); never two
  valid cards on the list;
* a job left mid-way is found by reconciliation (``issuer.reconcile.find_orphans``);
* a re-run (personalize on the same card, or revoke) completes: exactly one active card.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import VirtualStarCard
from issuer import faults
from issuer.db import audit_events, cards
from issuer.faults import FAULT_ENV, FAULT_EXIT
from issuer.issuance import FAULT_POINTS, JOB_STATES, IssuanceError
from issuer.publisher import INVALID, SUSPENDED, VALID, current_token
from issuer.reconcile import find_orphans
from issuer.wiring import IssuerContext, build_issuer
from tests.conftest import NOW, make_settings, trust_clock
from tests.helpers import factory_card, factory_session, graded_subject, id_number
from tests.pcsc_harness import REPO_ROOT
from verifier.core.status_list import parse_status_list_token

REVOKED_AT = NOW + dt.timedelta(minutes=1)
CHECKED_AT = NOW + dt.timedelta(hours=1)
STALE_AFTER = dt.timedelta(minutes=30)
STATE_AFTER = {
    "start_job": "requested",
    "card_key_generated": "card_key_generated",
    "credential_signed": "credential_signed",
    "written": "written",
    "verified": "verified",
    "activated": "active",
    "revoke": "revoked",
}
"""The new card's state once each step committed (the order of ``FAULT_POINTS``)."""
STATUS = {"credential_signed": SUSPENDED, "written": SUSPENDED, "verified": SUSPENDED}
STATUS |= {"active": VALID, "revoked": INVALID}


def expected_state(point: str) -> str | None:
    """The new card's state after a kill at ``point``: the step's, or the one before it."""
    _, step, when = point.split(".")
    steps = list(STATE_AFTER)
    if when == "after_commit":
        return STATE_AFTER[step]
    index = steps.index(step)
    return None if index == 0 else STATE_AFTER[steps[index - 1]]


class Child:
    """The issuer side, as its own process: ``python -m tests.api.test_issuance_kill`` imports
    the issuer once, then forks one process per request read from stdin (a fresh process as
    far as the database, the HSM file and the card are concerned) that sets ``FAULT_ENV``,
    reloads :mod:`issuer.faults` (which reads it at import, as at a real start) and runs
    :func:`run`. It answers each request with the exit status of that process."""

    def __init__(self, ctx: IssuerContext, folder: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
        env |= {
            "KILL_TEST_DB": ctx.settings.database_url,
            "KILL_TEST_FOLDER": str(folder),
            "KILL_TEST_HSM_PASSPHRASE": ctx.settings.hsm_passphrase.hex(),
            "KILL_TEST_PII_KEY": ctx.settings.pii_key.hex(),
        }
        self.log = folder / "child.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.api.test_issuance_kill"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )

    def run(self, point: str | None, **request: str) -> int:
        """Exit status of one run (``FAULT_EXIT`` if it died at ``point``)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"point": point, **request}) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"the child process died: {self.log.read_text()[-2000:]}"
        return int(answer)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture
def child(issuer_ctx: IssuerContext, tmp_path: Path) -> Iterator[Child]:
    process = Child(issuer_ctx, tmp_path)
    try:
        yield process
    finally:
        process.close()


def main() -> None:
    """The child's loop: one forked process per request line."""
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                if request["point"] is not None:
                    os.environ[FAULT_ENV] = request["point"]
                importlib.reload(faults)
                run(request)
            except BaseException:
                traceback.print_exc()
                status = 1
            finally:
                sys.stderr.flush()
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(wait_status), flush=True)


def run(request: dict[str, str]) -> None:
    """Replaces the person's card by the card in the state file, then revokes the new card."""
    settings = dataclasses.replace(
        make_settings(os.environ["KILL_TEST_DB"], Path(os.environ["KILL_TEST_FOLDER"])),
        hsm_passphrase=bytes.fromhex(os.environ["KILL_TEST_HSM_PASSPHRASE"]),
        pii_key=bytes.fromhex(os.environ["KILL_TEST_PII_KEY"]),
    )
    ctx = build_issuer(settings, migrate=False, clock=trust_clock)
    card = VirtualStarCard(Path(request["card"]))
    issued = ctx.issuance.personalize(
        StarCardSession(InProcessTransport(card)),
        request["subject"],
        NOW,
        "child",
        replaces=request["replaces"],
        replace_reason="damaged",
    )
    ctx.issuance.revoke(issued.serial, "lost", REVOKED_AT, "child")


def check_database(ctx: IssuerContext, subject: str, old: str, new: str, point: str) -> None:
    """The before-or-after state of the point's step, consistent across rows, list, audit."""
    state = expected_state(point)
    with ctx.engine.connect() as conn:
        rows = {
            r.serial: r for r in conn.execute(select(cards).where(cards.c.subject_id == subject))
        }
        actions = {
            (a.card_serial, a.action)
            for a in conn.execute(select(audit_events).where(audit_events.c.subject_id == subject))
        }
        token = current_token(conn, ctx.settings.status_list_id)
    assert token is not None
    at = int(CHECKED_AT.timestamp())
    listed = parse_status_list_token(token, ctx.keys.trust_store(), at).statuses
    row = rows.get(new)
    assert (None if row is None else row.state) == state, point
    assert ((new, "card.requested") in actions) == (row is not None), point
    assert ((new, "card.activated") in actions) == (state in ("active", "revoked")), point
    assert ((new, "card.revoked") in actions) == (state == "revoked"), point
    if row is not None and state in STATUS:
        assert listed.get(int(row.status_idx)) == STATUS[state], point
    replaced = state in ("active", "revoked")
    assert rows[old].state == ("revoked" if replaced else "active"), point
    assert ((old, "card.revoked") in actions) == replaced, point
    assert listed.get(int(rows[old].status_idx)) == (INVALID if replaced else VALID), point
    valid = [r for r in rows.values() if listed.get(int(r.status_idx)) == VALID and r.credential]
    assert len(valid) <= 1, point


def rerun(ctx: IssuerContext, subject: str, old: str, card_path: Path, point: str) -> None:
    """Restart: finish the personalization on the same card, or the revocation."""
    session = StarCardSession(InProcessTransport(VirtualStarCard(card_path)))
    state = expected_state(point)
    if state in ("active", "revoked"):
        with pytest.raises(IssuanceError, match=f"already issued \\({state}\\)"):
            ctx.issuance.personalize(
                session, subject, NOW, "c", replaces=old, replace_reason="damaged"
            )
    else:
        issued = ctx.issuance.personalize(
            session, subject, NOW, "c", replaces=old, replace_reason="damaged"
        )
        assert issued.serial == session.serial().hex()
    new = VirtualStarCard(card_path).serial.hex()
    if point.startswith("issuance.revoke."):
        ctx.issuance.revoke(new, "lost", REVOKED_AT, "c")
    with ctx.engine.connect() as conn:
        live = conn.execute(
            select(cards.c.serial, cards.c.state).where(
                cards.c.subject_id == subject, cards.c.state.in_(("active", "revoked"))
            )
        ).all()
        active = conn.execute(
            select(func.count()).select_from(cards).where(cards.c.state == "active")
        ).scalar_one()
    final = "revoked" if point.startswith("issuance.revoke.") else "active"
    assert sorted(live) == sorted([(old, "revoked"), (new, final)]), point
    assert active == (0 if final == "revoked" else 1) + 0, point


def test_killed_at_every_commit_boundary_then_restart(
    issuer_ctx: IssuerContext, child: Child, tmp_path: Path
) -> None:
    ctx = issuer_ctx
    assert len(FAULT_POINTS) == 2 * len(STATE_AFTER)
    for n, point in enumerate(FAULT_POINTS):
        subject = graded_subject(ctx, NOW, id_number=id_number(n))
        old = ctx.issuance.personalize(factory_session(ctx), subject, NOW, "c").serial
        card_path = tmp_path / f"card-{n}.json"
        new = factory_card(ctx, card_path).serial.hex()
        status = child.run(point, card=str(card_path), subject=subject, replaces=old)
        assert status == FAULT_EXIT, (point, child.log.read_text()[-2000:])
        assert f"fault point {point}: exiting" in child.log.read_text()
        check_database(ctx, subject, old, new, point)
        with ctx.engine.connect() as conn:
            orphans = {o.serial: o for o in find_orphans(conn, CHECKED_AT, STALE_AFTER)}
        if expected_state(point) in JOB_STATES:
            assert orphans[new].state == expected_state(point), point
            assert orphans[new].subject_id == subject
        else:
            assert new not in orphans, point
        rerun(ctx, subject, old, card_path, point)
        # deactivate this person's card so the next point's count of active cards is its own
        with ctx.engine.connect() as conn:
            still = (
                conn.execute(
                    select(cards.c.serial).where(
                        cards.c.subject_id == subject, cards.c.state == "active"
                    )
                )
                .scalars()
                .all()
            )
        for serial in still:
            ctx.issuance.revoke(serial, "other", REVOKED_AT, "c")


def test_without_a_fault_the_child_completes(
    issuer_ctx: IssuerContext, child: Child, tmp_path: Path
) -> None:
    """The child itself works: unkilled, it replaces the card and revokes the new one."""
    ctx = issuer_ctx
    subject = graded_subject(ctx, NOW)
    old = ctx.issuance.personalize(factory_session(ctx), subject, NOW, "c").serial
    card_path = tmp_path / "card.json"
    new = factory_card(ctx, card_path).serial.hex()
    status = child.run(None, card=str(card_path), subject=subject, replaces=old)
    assert status == 0, child.log.read_text()[-2000:]
    with ctx.engine.connect() as conn:
        states = dict(conn.execute(select(cards.c.serial, cards.c.state)).all())
    assert states == {old: "revoked", new: "revoked"}


if __name__ == "__main__":
    main()
