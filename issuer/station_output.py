"""What the office station produces: results and exit codes, the job journal, the printed card
face and holder letter, the clerk's screen (messages, batch table, summary), the batch report.

Invariants:

* Nothing here shows an unmasked ID number: holders appear as the masked name and the masked
  identifier; a typed reference that is an ID number is masked before it is kept.
* The job journal (``OUT/.jobs/<reader>.json``) holds the pseudonymous subject id and the
  card serial only.
* The access code goes only into the holder letter and, once, on the screen of a single
  ``personalize``; never into a report, a result table or a log.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from issuer.card_face import render_card_face, save_card_face
from issuer.identity import InvalidIdentityNumber, parse_identity_number
from issuer.issuance import IssuedCard
from issuer.letters import HolderLetter, save_holder_letter


class Result(StrEnum):
    ISSUED = "issued"
    ALREADY_ISSUED = "already issued"
    NOT_ELIGIBLE = "not eligible"
    INTERRUPTED = "interrupted"
    NO_CARD = "no card"
    OTHER_CARD = "different card"
    CARD_UNUSABLE = "card unusable"
    NOT_ISSUED = "not issued"
    NO_READER = "no reader"


EXIT_CODES = {
    Result.ISSUED: 0,
    Result.ALREADY_ISSUED: 0,
    Result.NOT_ELIGIBLE: 1,
    Result.NOT_ISSUED: 1,
    Result.INTERRUPTED: 2,
    Result.NO_CARD: 2,
    Result.OTHER_CARD: 3,
    Result.CARD_UNUSABLE: 4,
    Result.NO_READER: 5,
}
"""The station's exit codes (documented in docs/station.md)."""


@dataclass(frozen=True)
class Holder:
    """A subject as the station shows them: pseudonymous id and masked data only."""

    subject_id: str
    masked_name: str
    masked_identifier: str

    @property
    def shown(self) -> str:
        return f"{self.masked_name} ({self.masked_identifier})"


@dataclass(frozen=True)
class Outcome:
    """One card job's end. ``reason`` is a sentence the clerk can act on."""

    subject: str
    """How the holder is shown: masked name and identifier, or the masked typed reference."""
    result: Result
    reason: str = ""
    subject_id: str | None = None
    serial: str | None = None
    stars: int | None = None
    apdus: int | None = None
    files: tuple[Path, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.result]

    def report_row(self) -> dict[str, object]:
        return {
            "subject_id": self.subject_id,
            "subject": self.subject,
            "result": self.result.value,
            "reason": self.reason,
            "serial": self.serial,
            "stars": self.stars,
            "files": [p.name for p in self.files],
        }


class Journal:
    """The station's note of the job running in one reader: the subject, the card it replaces
    (the cards table does not keep that before activation), and the serial once known."""

    def __init__(self, out: Path, reader: str) -> None:
        self.path = out / ".jobs" / (re.sub(r"[^A-Za-z0-9]+", "-", reader).strip("-") + ".json")

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def begin(self, subject_id: str, replaces: str | None, reason: str | None) -> None:
        """Starts a job; a job already noted for the same subject keeps its card serial."""
        current = self.read() or {}
        serial = current.get("serial") if current.get("subject_id") == subject_id else None
        job = {"subject_id": subject_id, "serial": serial, "replaces": replaces, "reason": reason}
        self._write(job)

    def card(self, serial: str) -> None:
        current = self.read() or {}
        self._write({**current, "serial": serial})

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data))


def masked_reference(text: str) -> str:
    """A typed subject reference fit for the screen: an ID number is masked."""
    try:
        return parse_identity_number(text).masked()
    except InvalidIdentityNumber:
        return text.strip()


def read_subject_list(path: Path) -> list[str]:
    """Subject references from a batch file: a CSV with a ``subject_id`` column, or one per
    line (blank lines and ``#`` comments skipped). Duplicates keep their first place.

    Raises:
        ValueError: a CSV header without ``subject_id``, or no subject at all.
    """
    text = path.read_text(encoding="utf-8-sig")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if lines and "," in lines[0]:
        rows = csv.DictReader(io.StringIO("\n".join(lines)))
        if rows.fieldnames is None or "subject_id" not in rows.fieldnames:
            raise ValueError(f"{path}: a CSV batch file needs a subject_id column")
        refs = [(row["subject_id"] or "").strip() for row in rows]
    else:
        refs = lines[1:] if lines and lines[0].lower() == "subject_id" else lines
    refs = list(dict.fromkeys(ref for ref in refs if ref))
    if not refs:
        raise ValueError(f"{path} lists no subject")
    return refs


_FILES = ("face.png", "face.pdf", "letter.pdf")


def write_holder_files(
    out: Path, issued: IssuedCard, holder: Holder, citizen_url: str, today: dt.date
) -> tuple[Path, ...]:
    """Writes ``<serial>-face.png``, ``<serial>-face.pdf`` and ``<serial>-letter.pdf``."""
    out.mkdir(parents=True, exist_ok=True)
    valid_until = issued.expires_at.date()
    face = render_card_face(
        stars=issued.stars,
        masked_name=holder.masked_name,
        valid_until=valid_until,
        serial=issued.serial,
        citizen_url=citizen_url,
    )
    png, pdf, letter = (out / f"{issued.serial}-{name}" for name in _FILES)
    save_card_face(face, png, pdf)
    save_holder_letter(
        HolderLetter(
            masked_name=holder.masked_name,
            stars=issued.stars,
            valid_until=valid_until,
            serial=issued.serial,
            citizen_url=citizen_url,
            access_code=issued.access_code,
            issued_on=today,
        ),
        letter,
    )
    return png, pdf, letter


_STYLE = {
    Result.ISSUED: "bold green",
    Result.ALREADY_ISSUED: "green",
    Result.NOT_ELIGIBLE: "bold red",
    Result.NOT_ISSUED: "bold red",
    Result.INTERRUPTED: "bold yellow",
    Result.NO_CARD: "bold yellow",
    Result.OTHER_CARD: "bold yellow",
    Result.CARD_UNUSABLE: "bold red",
    Result.NO_READER: "bold red",
}


def print_outcome(console: Console, outcome: Outcome) -> None:
    """The clerk's message for one job (never the access code: see :func:`print_access_code`)."""
    style = _STYLE[outcome.result]
    if outcome.result is Result.ISSUED:
        stars = "★" * (outcome.stars or 0)
        console.print(
            f"[{style}]card {outcome.serial} active[/] {stars} for {outcome.subject} "
            f"({outcome.apdus} APDUs)"
        )
        for path in outcome.files:
            console.print(f"  wrote {path}")
        return
    console.print(f"[{style}]{outcome.result.value}:[/] {outcome.subject}", highlight=False)
    console.print(f"  {outcome.reason}", highlight=False, soft_wrap=True)


def print_access_code(console: Console, access_code: str) -> None:
    console.print(
        f"access code (also in the holder letter; shown only now): [bold]{access_code}[/]",
        highlight=False,
    )


def result_table(outcomes: list[Outcome]) -> Table:
    table = Table("#", "holder", "card", "stars", "result", title="batch results")
    for number, outcome in enumerate(outcomes, 1):
        result = outcome.result.value + (f": {outcome.reason}" if outcome.reason else "")
        table.add_row(
            str(number),
            outcome.subject,
            outcome.serial or "",
            "★" * outcome.stars if outcome.stars else "",
            f"[{_STYLE[outcome.result]}]{result}[/]",
        )
    return table


def summary(outcomes: list[Outcome], planned: int) -> str:
    counts = {result: 0 for result in Result}
    for outcome in outcomes:
        counts[outcome.result] += 1
    done = ", ".join(f"{n} {result.value}" for result, n in counts.items() if n)
    left = planned - len(outcomes)
    return f"{len(outcomes)} of {planned} handled: {done or 'nothing'}" + (
        f"; {left} not started (re-run the batch to continue)" if left else ""
    )


def write_report(
    path: Path, outcomes: list[Outcome], planned: int, reader: str, now: dt.datetime
) -> None:
    """The batch report (JSON): one row per handled subject, no access code, masked data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "at": now.isoformat(),
        "reader": reader,
        "planned": planned,
        "summary": summary(outcomes, planned),
        "results": [outcome.report_row() for outcome in outcomes],
    }
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
