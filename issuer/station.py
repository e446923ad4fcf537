"""``starcard-station``: the office station that issues cards in a PC/SC reader.

The station runs the issuance service in-process against the configured database and HSM
(``STARCARD_*`` variables; tests pass a :class:`Station` as the Click context object). One
card job is: eligibility (reasons a clerk can read aloud), the persisted personalization
state machine of :mod:`issuer.issuance` (write, read back, ``verify_card`` and a
challenge-response, lock, activate), then the card face and the holder letter.

Resuming: the cards table knows every job that reached the database; the station's job
journal (``OUT/.jobs/<reader>.json``) also knows a job interrupted before that (while the
card was being identified). ``resume`` reads the serial of the card in the reader and goes on
with its job; a card that is not the interrupted one is refused before anything is written.
Commands and exit codes: ``docs/station.md``.
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy import select

from card_profiles.errors import CardError, CardTimeout, NoReader
from card_profiles.pcsc import PcscTransport, list_readers, wait_for_card, wait_for_card_absent
from card_profiles.starcard import StarCardSession
from issuer.db import cards, subjects
from issuer.eligibility import LIVE_STATES, check_eligibility
from issuer.identity import InvalidIdentityNumber, parse_identity_number
from issuer.issuance import (
    JOB_STATES,
    REPLACE_REASONS,
    CardCheckFailed,
    CardRejected,
    CardSwapped,
    HsmUnreachable,
    IssuanceError,
    NotEligible,
    ReplaceReason,
    Superseded,
)
from issuer.platform import read_subject, subject_ids_by_index, subject_index
from issuer.settings import IssuerSettings
from issuer.station_output import (
    Holder,
    Journal,
    Outcome,
    Result,
    masked_reference,
    print_access_code,
    print_outcome,
    read_subject_list,
    result_table,
    summary,
    write_holder_files,
    write_report,
)
from issuer.wiring import IssuerContext, build_issuer

app = typer.Typer(help="StarCard office station", no_args_is_help=True)
console = Console()
CARD_IO_TIMEOUT_S = 10.0

Reader = Annotated[str, typer.Option("--reader", help="PC/SC reader name (see `readers`)")]
Out = Annotated[Path, typer.Option("--out", help="folder for faces, letters and the journal")]
CardWait = Annotated[float, typer.Option(help="seconds to wait for a card to arrive or leave")]


@dataclass(frozen=True)
class Station:
    """What the commands run with: the issuer, its clock and the clerk (audit actor)."""

    issuer: IssuerContext
    now: Callable[[], dt.datetime]
    clerk: str


def _station(ctx: typer.Context) -> Station:
    if isinstance(ctx.obj, Station):
        return ctx.obj
    station = Station(
        build_issuer(IssuerSettings.from_env()),
        lambda: dt.datetime.now(dt.UTC),
        "station:" + getpass.getuser(),
    )
    ctx.obj = station
    return station


def _find_subject(station: Station, ref: str) -> Holder | None:
    """The holder for a pseudonymous subject id or an ID number; logs the read of their data."""
    with station.issuer.engine.begin() as conn:
        try:
            number = parse_identity_number(ref)
        except InvalidIdentityNumber:
            subject_id = conn.execute(
                select(subjects.c.id).where(subjects.c.id == ref.strip())
            ).scalar()
        else:
            index = subject_index(station.issuer.vault, number)
            subject_id = subject_ids_by_index(conn, [index]).get(index)
        if subject_id is None:
            return None
        view = read_subject(
            conn, station.issuer.vault, subject_id, station.now(), station.clerk,
            "card issuance", "station",
        )  # fmt: skip
    return Holder(subject_id, view.name_shown, view.identifier_masked)


def _card_states(station: Station, subject_id: str) -> dict[str, str]:
    with station.issuer.engine.connect() as conn:
        rows = conn.execute(
            select(cards.c.serial, cards.c.state).where(cards.c.subject_id == subject_id)
        )
        return {str(row.serial): str(row.state) for row in rows}


def _interrupted(reader: str, what: str) -> str:
    return f"{what}: put the card back and run `starcard-station resume --reader '{reader}'`"


def issue(
    station: Station,
    reader: str,
    ref: str,
    out: Path,
    *,
    card_wait_s: float,
    replaces: str | None = None,
    reason: ReplaceReason | None = None,
    new_card: bool = False,
    show_code: bool = True,
    ask_for_card: Callable[[str, str | None], None] | None = None,
) -> Outcome:
    """One card job for the subject ``ref``, on the card in ``reader``; never raises for a
    card, reader or eligibility problem (the :class:`Outcome` says what to do).

    ``ask_for_card(shown, serial)`` is called once the subject is eligible, before waiting for
    the card: ``serial`` names the card of an interrupted job, None asks for a blank card.
    """
    holder = _find_subject(station, ref)
    if holder is None:
        return Outcome(masked_reference(ref), Result.NOT_ELIGIBLE, "no such person is registered")
    shown, subject_id = holder.shown, holder.subject_id
    states = _card_states(station, subject_id)
    live = [(serial, state) for serial, state in states.items() if state in LIVE_STATES]
    if live and replaces is None:
        why = f"has {live[0][1]} card {live[0][0]} (to replace it: --replaces SERIAL --reason)"
        return Outcome(shown, Result.ALREADY_ISSUED, why, subject_id, live[0][0])
    with station.issuer.engine.connect() as conn:
        eligibility = check_eligibility(
            conn, station.issuer.policy, subject_id, station.now().date(), replaces=replaces
        )
    if not eligibility.eligible:
        return Outcome(shown, Result.NOT_ELIGIBLE, "; ".join(eligibility.reasons), subject_id)
    unfinished = [serial for serial, state in states.items() if state in JOB_STATES]
    journal = Journal(out, reader)
    journal.begin(subject_id, replaces, reason)

    def ended(result: Result, why: str, serial: str | None = None) -> Outcome:
        if result not in (Result.INTERRUPTED, Result.OTHER_CARD, Result.NO_CARD):
            journal.clear()
        return Outcome(shown, result, why, subject_id, serial)

    if ask_for_card is not None:
        ask_for_card(shown, unfinished[0] if unfinished and not new_card else None)
    try:
        wait_for_card(reader, card_wait_s)
    except NoReader as exc:
        return ended(Result.NO_READER, f"{exc}: check the reader name (`starcard-station readers`)")
    except CardTimeout:
        return ended(Result.NO_CARD, f"no card was put in the reader within {card_wait_s:g} s")
    serial: str | None = None
    try:
        with PcscTransport.connect(reader, CARD_IO_TIMEOUT_S, exclusive=True) as transport:
            session = StarCardSession(transport)
            session.select()
            serial = session.serial().hex()
            if unfinished and serial not in unfinished and not new_card:
                return ended(
                    Result.OTHER_CARD,
                    f"card {serial} is in the reader, but card {unfinished[0]} of this person "
                    "was interrupted while being personalized; nothing was written: put card "
                    f"{unfinished[0]} back and run `starcard-station resume --reader '{reader}'` "
                    "(if that card is lost or broken, run personalize again with --new-card)",
                    serial,
                )
            journal.card(serial)
            issued = station.issuer.issuance.personalize(
                session, subject_id, station.now(), station.clerk,
                replaces=replaces, replace_reason=reason,
            )  # fmt: skip
            apdus = session.apdu_count
    except NoReader as exc:
        return ended(Result.NO_READER, f"{exc}: check the reader name (`starcard-station readers`)")
    except CardTimeout as exc:
        return ended(Result.INTERRUPTED, _interrupted(reader, f"no answer from the card ({exc})"))
    except CardError as exc:
        what = f"the card left the reader or lost power ({type(exc).__name__})"
        return ended(Result.INTERRUPTED, _interrupted(reader, what), serial)
    except NotEligible as exc:
        return ended(Result.NOT_ELIGIBLE, "; ".join(exc.reasons))
    except CardSwapped as exc:
        return ended(Result.OTHER_CARD, str(exc), serial)
    except HsmUnreachable as exc:
        why = f"{exc}; the job is kept: when the HSM is back, run `starcard-station resume`"
        return ended(Result.INTERRUPTED, why, serial)
    except Superseded as exc:
        return ended(Result.NOT_ISSUED, f"{exc}: this card was not activated", serial)
    except CardRejected as exc:
        return ended(Result.CARD_UNUSABLE, f"{exc}: use another blank card", serial)
    except CardCheckFailed as exc:
        why = f"{exc}; the card stays inactive: set it aside and use another blank card"
        return ended(Result.CARD_UNUSABLE, why, serial)
    except IssuanceError as exc:
        return ended(Result.NOT_ISSUED, str(exc), serial)
    journal.clear()
    now = station.now()
    files = write_holder_files(
        out, issued, holder, station.issuer.settings.citizen_url(issued.qr_token), now.date()
    )
    if show_code:
        print_access_code(console, issued.access_code)
    return Outcome(shown, Result.ISSUED, "", subject_id, issued.serial, issued.stars, apdus, files)


def _read_serial(reader: str, card_wait_s: float) -> str:
    """The serial of the card in ``reader``. Raises CardError (NoReader, CardTimeout...)."""
    wait_for_card(reader, card_wait_s)
    with PcscTransport.connect(reader, CARD_IO_TIMEOUT_S, exclusive=True) as transport:
        session = StarCardSession(transport)
        session.select()
        return session.serial().hex()


def resume_job(station: Station, reader: str, out: Path, card_wait_s: float) -> Outcome:
    """Goes on with the interrupted job of the card in ``reader``."""
    journal = Journal(out, reader)
    noted = journal.read() or {}
    try:
        serial = _read_serial(reader, card_wait_s)
    except NoReader as exc:
        return Outcome("-", Result.NO_READER, f"{exc}: check the reader name")
    except CardError as exc:
        what = f"the card could not be read ({type(exc).__name__})"
        return Outcome("-", Result.INTERRUPTED, _interrupted(reader, what))
    with station.issuer.engine.connect() as conn:
        row = conn.execute(select(cards).where(cards.c.serial == serial)).first()
    subject_id = noted.get("subject_id")
    replaces, reason = noted.get("replaces"), noted.get("reason")
    if row is not None and row.state in JOB_STATES:
        if row.subject_id != subject_id:
            replaces = reason = None  # the journal is about another job
        return issue(
            station, reader, str(row.subject_id), out,
            card_wait_s=card_wait_s, replaces=replaces, reason=reason,
        )  # fmt: skip
    if row is not None and row.state in LIVE_STATES:
        if noted.get("serial") == serial:
            journal.clear()
        why = f"card {serial} is {row.state}: nothing to resume"
        return Outcome("-", Result.ALREADY_ISSUED, why, serial=serial)
    if row is not None and row.state != "abandoned":  # an abandoned job's card may be reused
        why = f"card {serial} is {row.state} and cannot be issued again: use another blank card"
        return Outcome("-", Result.CARD_UNUSABLE, why, serial=serial)
    if isinstance(subject_id, str) and noted.get("serial") in (None, serial):
        return issue(
            station, reader, subject_id, out,
            card_wait_s=card_wait_s, replaces=replaces, reason=reason,
        )  # fmt: skip
    if isinstance(subject_id, str):
        why = (
            f"card {serial} is not card {noted['serial']}, whose personalization was "
            f"interrupted; nothing was written: put card {noted['serial']} back and resume"
        )
    else:
        why = (
            f"card {serial} has no interrupted personalization: put back the card that was "
            "interrupted, or start a new card with `starcard-station personalize`"
        )
    return Outcome("-", Result.OTHER_CARD, why, serial=serial)


def _finish(outcome: Outcome) -> None:
    print_outcome(console, outcome)
    raise typer.Exit(outcome.exit_code)


@app.command()
def personalize(
    ctx: typer.Context,
    reader: Reader,
    subject: Annotated[str, typer.Option(help="pseudonymous subject id (or the ID number)")],
    out: Out = Path("station-out"),
    replaces: Annotated[str | None, typer.Option(help="serial of the card replaced")] = None,
    reason: Annotated[
        str | None, typer.Option(help="why the card is replaced: " + "|".join(REPLACE_REASONS))
    ] = None,
    new_card: Annotated[
        bool, typer.Option(help="give up an interrupted card that is lost or broken")
    ] = False,
    card_wait: CardWait = 30.0,
) -> None:
    """Issue a card for SUBJECT on the card in READER; re-run or `resume` after any interruption."""
    if (replaces is None) != (reason is None) or reason not in (None, *REPLACE_REASONS):
        reasons = "|".join(REPLACE_REASONS)
        console.print(f"--replaces SERIAL goes with --reason {reasons}", highlight=False)
        raise typer.Exit(1)
    station = _station(ctx)
    outcome = issue(
        station, reader, subject, out,
        card_wait_s=card_wait, replaces=replaces, reason=cast(ReplaceReason | None, reason),
        new_card=new_card,
    )  # fmt: skip
    _finish(outcome)


@app.command()
def resume(
    ctx: typer.Context, reader: Reader, out: Out = Path("station-out"), card_wait: CardWait = 30.0
) -> None:
    """Continue the interrupted personalization of the card in READER (same --out)."""
    _finish(resume_job(_station(ctx), reader, out, card_wait))


@app.command()
def batch(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="subject ids, one a line or CSV with subject_id")],
    reader: Reader,
    out: Out = Path("station-out"),
    report: Annotated[Path | None, typer.Option(help="JSON report [OUT/batch-report.json]")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask before starting")] = False,
    card_wait: CardWait = 300.0,
) -> None:
    """Issue cards for every subject in FILE, one card after another; re-runnable."""
    try:
        refs = read_subject_list(file)
    except (OSError, ValueError) as exc:
        console.print(f"[bold red]cannot read the batch file:[/] {exc}")
        raise typer.Exit(1) from None
    station = _station(ctx)
    if not yes:
        typer.confirm(f"issue cards for {len(refs)} people in {reader!r}?", abort=True)
    outcomes = _run_batch(station, reader, refs, out, card_wait)
    console.print(result_table(outcomes))
    console.print(summary(outcomes, len(refs)))
    write_report(report or out / "batch-report.json", outcomes, len(refs), reader, station.now())
    bad = [o.exit_code for o in outcomes if o.exit_code] or (
        [2] if len(outcomes) < len(refs) else []
    )
    raise typer.Exit(max(bad, default=0))


def _ask_for_card(shown: str, serial: str | None) -> None:
    if serial is None:
        console.print(f"insert a blank card for [bold]{shown}[/]", highlight=False)
    else:
        console.print(f"put back card {serial} (interrupted) for [bold]{shown}[/]", highlight=False)


def _run_batch(
    station: Station, reader: str, refs: list[str], out: Path, card_wait_s: float
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("cards", total=len(refs))
        for ref in refs:
            holder = _find_subject(station, ref)
            shown = holder.shown if holder else masked_reference(ref)
            progress.update(task, description=shown)
            asked: list[str | None] = []

            def ask(shown: str, serial: str | None, asked: list[str | None] = asked) -> None:
                asked.append(serial)
                _ask_for_card(shown, serial)

            outcome = issue(
                station,
                reader,
                ref,
                out,
                card_wait_s=card_wait_s,
                show_code=False,
                ask_for_card=ask,
            )
            outcomes.append(outcome)
            if outcome.result is Result.NO_CARD:
                break  # the clerk is away: stop here, a re-run goes on
            print_outcome(console, outcome)
            progress.advance(task)
            if asked:
                console.print("remove the card")
                try:
                    wait_for_card_absent(reader, card_wait_s)
                except CardError:
                    break
    return outcomes


@app.command()
def readers() -> None:
    """List the PC/SC readers."""
    try:
        names = list_readers()
    except NoReader as exc:
        console.print(f"[bold red]{exc}[/]: is pcscd running?")
        raise typer.Exit(5) from None
    for name in names:
        console.print(name, highlight=False)
