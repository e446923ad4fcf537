"""Record ingestion: files (CSV, JSON, JSON Lines) and department batches, one engine.

A row is a delivery by a source department: ``add`` a record, ``correct`` one (the full new
content, same source and document number) or ``withdraw`` one. The format is described in
``docs/ingestion.md``; in short, the columns / keys are :data:`RECORD_FIELDS` plus
``id_number`` (individual, GB 11643) or ``uscc`` (organisation, GB 32100), and optionally
``name``, ``action`` and ``reason``.

Invariants:
- idempotent: (source, document number) names one record; delivering the same content again
  is ``duplicate`` and changes nothing, and so is a correction or withdrawal already applied;
- every row gets a result (``accepted``, ``duplicate``, ``refused`` with a reason a clerk can
  act on, or ``rolled_back``) and every result handed out is final: in ``per_row`` mode
  results are handed out only after their chunk committed; in ``atomic`` mode only after the
  whole batch committed or rolled back (``rolled_back``: the row was fine but a refusal
  elsewhere cancelled the batch);
- nothing accepted is lost: a failure (database down, broken file) mid-way keeps every chunk
  already reported, and the batch can be delivered again as it is;
- bounded memory: files are parsed as a stream, rows are processed in chunks, and results
  waiting for an atomic batch to end are spooled to a temporary file;
- a department token may only touch records whose source is the department's name;
- the result names every subject whose records changed (``affected_subject_ids``) so that
  grading re-grades only those.

Unknown subjects: a row whose identifier is not registered is refused, unless it carries a
``name``: then the subject is registered (an organisation only if its USCC passes the check;
pilot-area codes that fail it need staff registration with an override reason first).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from issuer.audit import audit
from issuer.identity import IdentityNumber, InvalidIdentityNumber, parse_identity_number
from issuer.pii import PiiVault
from issuer.platform import (
    NewRecord,
    PlatformError,
    StoredRecord,
    check_record,
    correct_record,
    insert_records,
    load_records,
    normalise_record,
    register_organisation,
    register_subject,
    subject_ids_by_index,
    subject_index,
    withdraw_record,
)
from issuer.policy import Policy
from issuer.uscc import InvalidUscc, Uscc, parse_uscc

RECORD_FIELDS = (
    "category",
    "direction",
    "severity",
    "legal_basis",
    "authority",
    "document_number",
    "decision_date",
    "source",
)
SUBJECT_FIELDS = ("id_number", "uscc")
OPTIONAL_FIELDS = ("name", "action", "reason")
ALL_FIELDS = RECORD_FIELDS + SUBJECT_FIELDS + OPTIONAL_FIELDS
ACTIONS = ("add", "correct", "withdraw")
CHUNK_SIZE = 500
_MAX_JSON_ELEMENT = 1 << 20
_READ_SIZE = 1 << 16
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Mode(StrEnum):
    ATOMIC = "atomic"
    """All rows or none: one refusal rolls the whole batch back (API default)."""
    PER_ROW = "per_row"
    """Each row stands alone: good rows are stored, refused rows reported (file default)."""


class Status(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REFUSED = "refused"
    ROLLED_BACK = "rolled_back"


class Problem(StrEnum):
    """Why a row was refused, as a class (for HTTP status mapping and statistics)."""

    INVALID = "invalid"
    UNKNOWN_SUBJECT = "unknown_subject"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    FORBIDDEN = "forbidden"


class IngestError(Exception):
    """The batch as a whole cannot be read or stored; the message says what to do."""


class IngestFileError(IngestError):
    """The file cannot be read: encoding, header, syntax. Nothing after it was imported."""


class ConcurrentDelivery(IngestError):
    """The same records were stored by another delivery at the same moment (atomic mode);
    nothing of this batch was stored: deliver it again (re-delivery is idempotent)."""


@dataclass(frozen=True)
class RawRow:
    """One row as read: its number (file line, array position or batch index), its fields
    (stripped text, None when empty), and a problem found while reading, if any."""

    number: int
    fields: Mapping[str, str | None]
    problem: str | None = None


@dataclass(frozen=True)
class RowResult:
    row: int
    action: str
    source: str
    document_number: str
    status: Status
    reason: str = ""
    record_id: int | None = None
    problem: Problem | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["problem"] = None if self.problem is None else str(self.problem)
        return data


@dataclass(frozen=True)
class IngestSummary:
    mode: Mode
    committed: bool
    total: int
    accepted: int
    duplicates: int
    refused: int
    rolled_back: int
    affected_subject_ids: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mode"] = str(self.mode)
        data["affected_subject_ids"] = list(self.affected_subject_ids)
        return data


class _Refusal(Exception):
    def __init__(self, problem: Problem, reason: str) -> None:
        super().__init__(reason)
        self.problem = problem
        self.reason = reason


@dataclass(frozen=True)
class _RecordDelivery:
    """``add`` or ``correct``: the full record for one subject."""

    number: int
    action: str
    identifier: IdentityNumber | Uscc
    name: str | None
    record: NewRecord
    reason: str


@dataclass(frozen=True)
class _Withdrawal:
    number: int
    source: str
    document_number: str
    reason: str

    action = "withdraw"


@dataclass(frozen=True)
class Changes:
    """What one chunk changed, handed to ``on_changes`` inside the chunk's transaction."""

    subject_ids: frozenset[str]
    """Subjects whose records were added, corrected (old and new subject) or withdrawn."""
    withdrawn_record_ids: tuple[int, ...]


ChangeHook = Callable[[Connection, Changes], None]


@dataclass(frozen=True)
class _Batch:
    """What the engine needs besides the rows (one per ingest call)."""

    vault: PiiVault
    policy: Policy
    actor: str
    now: dt.datetime
    department: str | None
    default_source: str | None
    on_changes: ChangeHook | None


@dataclass
class _ChunkChanges:
    subjects: set[str] = field(default_factory=set)
    withdrawn: list[int] = field(default_factory=list)


@dataclass
class _PendingAdds:
    """New records of a chunk, inserted together (:meth:`flush`) instead of one by one.

    Until flushed their ``known`` entries carry id 0 and their results no record id.
    """

    keys: dict[tuple[str, str], int] = field(default_factory=dict)  # key -> position
    items: list[tuple[str, NewRecord]] = field(default_factory=list)

    def add(self, subject_id: str, record: NewRecord) -> None:
        self.keys[(record.source, record.document_number)] = len(self.items)
        self.items.append((subject_id, record))

    def flush(
        self,
        conn: Connection,
        batch: _Batch,
        known: dict[tuple[str, str], StoredRecord],
        results: list[RowResult],
    ) -> None:
        if not self.items:
            return
        ids = insert_records(conn, self.items, batch.now, batch.actor)
        new = {key: ids[position] for key, position in self.keys.items()}
        for key, record_id in new.items():
            known[key] = replace(known[key], id=record_id)
        for n, result in enumerate(results):
            key = (result.source, result.document_number)
            if result.record_id is None and result.status is not Status.REFUSED and key in new:
                results[n] = replace(result, record_id=new[key])
        self.keys.clear()
        self.items.clear()


# --- the engine -----------------------------------------------------------------------------


def ingest(
    engine: Engine,
    vault: PiiVault,
    policy: Policy,
    rows: Iterable[RawRow],
    *,
    mode: Mode,
    actor: str,
    now: dt.datetime,
    department: str | None = None,
    default_source: str | None = None,
    on_result: Callable[[RowResult], None] | None = None,
    on_changes: ChangeHook | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> IngestSummary:
    """Applies ``rows`` in ``mode``; hands every final :class:`RowResult` to ``on_result``.

    ``department`` (a department token's name) restricts rows to that source and is used
    when a row names none; ``default_source`` only fills in rows without a source.
    ``on_changes`` runs after each chunk inside its transaction (re-grading, applying
    withdrawals): if it raises, the chunk (atomic: the batch) rolls back and the error
    propagates.

    Raises:
        IngestFileError: the row source (a file reader) hit an unreadable file; in
            ``per_row`` mode the chunks reported before stay stored.
        ConcurrentDelivery: atomic mode only, see the class.
        sqlalchemy.exc.SQLAlchemyError: the database failed (retryable; see above).
    """
    batch = _Batch(vault, policy, actor, now, department, department or default_source, on_changes)
    sink = on_result or (lambda _: None)
    if mode is Mode.ATOMIC:
        summary = _ingest_atomic(engine, batch, rows, sink, chunk_size)
    else:
        summary = _ingest_per_row(engine, batch, rows, sink, chunk_size)
    with engine.begin() as conn:
        audit(
            conn,
            now,
            actor,
            "records.batch",
            **{k: v for k, v in summary.as_dict().items() if k != "affected_subject_ids"},
            department=department,
            affected_subjects=len(summary.affected_subject_ids),
        )
    return summary


def _chunks(rows: Iterable[RawRow], size: int) -> Iterator[list[RawRow]]:
    """Groups rows; the rows read before a file error are still handed out, then it raises."""
    chunk: list[RawRow] = []
    try:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    except IngestFileError:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk


def _ingest_per_row(
    engine: Engine,
    batch: _Batch,
    rows: Iterable[RawRow],
    sink: Callable[[RowResult], None],
    chunk_size: int,
) -> IngestSummary:
    counts = dict.fromkeys(Status, 0)
    affected: set[str] = set()
    for chunk in _chunks(rows, chunk_size):
        for attempt in range(3):
            changes = _ChunkChanges()
            try:
                with engine.begin() as conn:
                    results = _apply_chunk(conn, batch, chunk, changes)
                break
            except IntegrityError:
                # Another delivery stored one of these records (or subjects) meanwhile: the
                # chunk was rolled back whole; running it again sees them as existing.
                if attempt == 2:
                    raise
        affected |= changes.subjects
        for result in results:
            counts[result.status] += 1
            sink(result)
    return _summary(Mode.PER_ROW, True, counts, affected)


def _ingest_atomic(
    engine: Engine,
    batch: _Batch,
    rows: Iterable[RawRow],
    sink: Callable[[RowResult], None],
    chunk_size: int,
) -> IngestSummary:
    counts = dict.fromkeys(Status, 0)
    first_refused: int | None = None
    affected: set[str] = set()
    with tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+", encoding="utf-8") as spool:
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                for chunk in _chunks(rows, chunk_size):
                    changes = _ChunkChanges()
                    chunk_results = _apply_chunk(conn, batch, chunk, changes)
                    affected |= changes.subjects
                    for result in chunk_results:
                        counts[result.status] += 1
                        if result.status is Status.REFUSED and first_refused is None:
                            first_refused = result.row
                        spool.write(json.dumps(result.as_dict(), ensure_ascii=False) + "\n")
            except IntegrityError as exc:
                transaction.rollback()
                raise ConcurrentDelivery(
                    "another delivery stored some of these records at the same moment; nothing "
                    "of this batch was stored: deliver it again (re-delivery is idempotent)"
                ) from exc
            except BaseException:
                transaction.rollback()
                raise
            committed = counts[Status.REFUSED] == 0
            if committed:
                transaction.commit()
            else:
                transaction.rollback()
        spool.seek(0)
        for line in spool:
            result = _result_from_dict(json.loads(line))
            if not committed and result.status is not Status.REFUSED:
                result = replace(
                    result,
                    status=Status.ROLLED_BACK,
                    record_id=None,
                    reason=(
                        f"not stored: the batch is all-or-nothing and {counts[Status.REFUSED]} "
                        f"row(s) were refused (first: row {first_refused})"
                    ),
                )
            sink(result)
    if not committed:
        refused, total = counts[Status.REFUSED], sum(counts.values())
        counts = dict.fromkeys(Status, 0)
        counts[Status.REFUSED] = refused
        counts[Status.ROLLED_BACK] = total - refused
        return _summary(Mode.ATOMIC, False, counts, set())
    return _summary(Mode.ATOMIC, True, counts, affected)


def _summary(
    mode: Mode, committed: bool, counts: dict[Status, int], affected: set[str]
) -> IngestSummary:
    return IngestSummary(
        mode=mode,
        committed=committed,
        total=sum(counts.values()),
        accepted=counts[Status.ACCEPTED],
        duplicates=counts[Status.DUPLICATE],
        refused=counts[Status.REFUSED],
        rolled_back=counts[Status.ROLLED_BACK],
        affected_subject_ids=tuple(sorted(affected)),
    )


def _result_from_dict(data: dict[str, Any]) -> RowResult:
    problem = data.pop("problem")
    status = data.pop("status")
    return RowResult(
        **data, status=Status(status), problem=None if problem is None else Problem(problem)
    )


def _apply_chunk(
    conn: Connection, batch: _Batch, chunk: list[RawRow], changes: _ChunkChanges
) -> list[RowResult]:
    """Applies the rows of one chunk in order, in ``conn``'s transaction; then the hook.

    Subjects and existing records are looked up once per chunk; ``known`` is then kept up to
    date row by row, so rows of one chunk see each other (add then correct, repeated rows).
    """
    parsed: list[_RecordDelivery | _Withdrawal | RowResult] = [_parse(row, batch) for row in chunk]
    deliveries = [d for d in parsed if not isinstance(d, RowResult)]
    indexes = {
        position: subject_index(batch.vault, d.identifier)
        for position, d in enumerate(parsed)
        if isinstance(d, _RecordDelivery)
    }
    subject_ids = subject_ids_by_index(conn, indexes.values())
    known = load_records(conn, [_key(d) for d in deliveries])
    pending = _PendingAdds()
    results: list[RowResult] = []
    for position, item in enumerate(parsed):
        if isinstance(item, RowResult):
            results.append(item)
            continue
        if item.action != "add" and _key(item) in pending.keys:
            pending.flush(conn, batch, known, results)  # it needs the record's id
        try:
            if isinstance(item, _Withdrawal):
                results.append(_withdraw(conn, batch, item, known, changes))
            else:
                index = indexes[position]
                results.append(
                    _deliver(conn, batch, item, known, subject_ids, index, changes, pending)
                )
        except _Refusal as refusal:
            results.append(_refused(item, refusal.problem, refusal.reason))
    pending.flush(conn, batch, known, results)
    if batch.on_changes is not None and changes.subjects:
        batch.on_changes(conn, Changes(frozenset(changes.subjects), tuple(changes.withdrawn)))
    return results


def _key(item: _RecordDelivery | _Withdrawal) -> tuple[str, str]:
    if isinstance(item, _Withdrawal):
        return (item.source, item.document_number)
    return (item.record.source, item.record.document_number)


def _deliver(
    conn: Connection,
    batch: _Batch,
    item: _RecordDelivery,
    known: dict[tuple[str, str], StoredRecord],
    subject_ids: dict[bytes, str],
    index: bytes,
    changes: _ChunkChanges,
    pending: _PendingAdds,
) -> RowResult:
    key = _key(item)
    stored = known.get(key)
    subject_id = subject_ids.get(index)
    if item.action == "add" and stored is not None:
        if subject_id is not None and stored.same_as(subject_id, item.record):
            return _result(
                item, Status.DUPLICATE, "delivered before: nothing changed", stored.id or None
            )
        raise _Refusal(
            Problem.CONFLICT,
            f"{key[1]} from {key[0]} was delivered before with other content: send it as a "
            "correction (action correct) with a reason",
        )
    if item.action == "correct":
        if stored is None:
            raise _Refusal(
                Problem.NOT_FOUND,
                f"no record {key[1]} from {key[0]} to correct: deliver it first (action add)",
            )
        if stored.withdrawn_at is not None:
            raise _Refusal(
                Problem.CONFLICT,
                f"{key[1]} was withdrawn: a withdrawn record is not corrected; deliver a new "
                "record with its own document number",
            )
        if subject_id is not None and stored.same_as(subject_id, item.record):
            return _result(
                item,
                Status.DUPLICATE,
                "this correction was applied before: nothing changed",
                stored.id,
            )
    registered = ""
    if subject_id is None:
        subject_id = _register(conn, batch, item)
        subject_ids[index] = subject_id
        registered = "; subject registered from the name in the row"
    record_id: int | None
    try:
        if stored is None:
            pending.add(subject_id, item.record)
            known[key] = StoredRecord(0, subject_id, item.record, None)
            record_id = None  # set when the pending records are inserted
        else:
            correct_record(
                conn, stored, subject_id, item.record, item.reason, batch.now, batch.actor
            )
            changes.subjects.add(stored.subject_id)
            known[key] = replace(stored, subject_id=subject_id, content=item.record)
            record_id = stored.id
    except PlatformError as exc:
        raise _Refusal(Problem.INVALID, str(exc)) from None
    changes.subjects.add(subject_id)
    return _result(item, Status.ACCEPTED, registered.removeprefix("; "), record_id)


def _register(conn: Connection, batch: _Batch, item: _RecordDelivery) -> str:
    shown = item.identifier.masked()
    if item.name is None:
        what = "person" if isinstance(item.identifier, IdentityNumber) else "organisation"
        raise _Refusal(
            Problem.UNKNOWN_SUBJECT,
            f"{shown} is not registered: register the {what} first, or give their name in "
            "the row's name field so that the import registers them",
        )
    if isinstance(item.identifier, Uscc):
        if not item.identifier.check_ok:
            raise _Refusal(
                Problem.UNKNOWN_SUBJECT,
                f"USCC {shown} fails its check and is not registered: if it is an early "
                "pilot-area code, staff must register the organisation with an override "
                "reason first (POST /v1/organisations), then deliver again",
            )
        return register_organisation(
            conn, batch.vault, item.identifier.value, item.name, batch.now, batch.actor
        )
    return register_subject(
        conn, batch.vault, item.identifier.value, item.name, batch.now, batch.actor
    )


def _withdraw(
    conn: Connection,
    batch: _Batch,
    item: _Withdrawal,
    known: dict[tuple[str, str], StoredRecord],
    changes: _ChunkChanges,
) -> RowResult:
    stored = known.get(_key(item))
    if stored is None:
        raise _Refusal(
            Problem.NOT_FOUND,
            f"no record {item.document_number} from {item.source}: nothing to withdraw",
        )
    if stored.withdrawn_at is not None:
        return _result(item, Status.DUPLICATE, "withdrawn before: nothing changed", stored.id)
    withdraw_record(conn, stored, item.reason, batch.now, batch.actor)
    known[stored.key] = replace(stored, withdrawn_at=batch.now)
    changes.subjects.add(stored.subject_id)
    changes.withdrawn.append(stored.id)
    return _result(item, Status.ACCEPTED, "", stored.id)


def _result(
    item: _RecordDelivery | _Withdrawal, status: Status, reason: str, record_id: int | None
) -> RowResult:
    source, document = _key(item)
    return RowResult(item.number, item.action, source, document, status, reason, record_id)


def _refused(item: _RecordDelivery | _Withdrawal, problem: Problem, reason: str) -> RowResult:
    source, document = _key(item)
    return RowResult(
        item.number, item.action, source, document, Status.REFUSED, reason, None, problem
    )


# --- one row: from text fields to a delivery ------------------------------------------------


def _parse(row: RawRow, batch: _Batch) -> _RecordDelivery | _Withdrawal | RowResult:
    """Turns a raw row into a delivery, or a refused result saying what to fix."""
    fields = row.fields
    action = fields.get("action") or "add"
    source = fields.get("source") or batch.default_source or ""
    document = fields.get("document_number") or ""

    def refuse(problem: Problem, reason: str) -> RowResult:
        return RowResult(
            row.number, action, source, document, Status.REFUSED, reason, None, problem
        )

    if row.problem is not None:
        return refuse(Problem.INVALID, row.problem)
    unknown = sorted(set(fields) - set(ALL_FIELDS))
    if unknown:
        return refuse(Problem.INVALID, f"unknown field(s) {', '.join(unknown)}")
    if action not in ACTIONS:
        return refuse(Problem.INVALID, f"action must be one of {', '.join(ACTIONS)}")
    if batch.department is not None and source != batch.department:
        return refuse(
            Problem.FORBIDDEN,
            f"department {batch.department} may only deliver its own records, not source "
            f"{source!r}",
        )
    reason = fields.get("reason") or ""
    needed = ["source", "document_number"] if action == "withdraw" else list(RECORD_FIELDS)
    if action != "add":
        needed.append("reason")
    values = dict(fields, source=source)
    missing = [name for name in needed if not values.get(name)]
    if missing:
        return refuse(Problem.INVALID, _missing_message(missing))
    if action == "withdraw":
        return _Withdrawal(row.number, source, document, reason)
    try:
        identifier = _identifier(fields)
        record = normalise_record(
            NewRecord(
                category=values["category"] or "",
                direction=values["direction"] or "",
                severity=values["severity"] or "",
                legal_basis=values["legal_basis"] or "",
                authority=values["authority"] or "",
                document_number=document,
                decision_date=_decision_date(values["decision_date"] or "", batch.now),
                source=source,
            )
        )
        check_record(batch.policy, record)
    except (InvalidIdentityNumber, InvalidUscc, PlatformError) as exc:
        return refuse(Problem.INVALID, str(exc))
    name = fields.get("name")
    if name is not None and len(name) > 64:
        return refuse(Problem.INVALID, "name: at most 64 characters")
    return _RecordDelivery(row.number, action, identifier, name, record, reason)


def _missing_message(missing: list[str]) -> str:
    if "legal_basis" in missing or "document_number" in missing:
        lead = "a record needs its legal basis and document number; "
    else:
        lead = ""
    return f"{lead}missing: {', '.join(missing)}"


def _identifier(fields: Mapping[str, str | None]) -> IdentityNumber | Uscc:
    id_number, uscc = fields.get("id_number"), fields.get("uscc")
    if id_number and uscc:
        raise PlatformError("give either id_number (a person) or uscc (an organisation), not both")
    if id_number:
        try:
            return parse_identity_number(id_number)
        except InvalidIdentityNumber as exc:
            raise InvalidIdentityNumber(f"id_number: {exc}") from None
    if uscc:
        try:
            return parse_uscc(uscc, accept_check_mismatch=True)
        except InvalidUscc as exc:
            raise InvalidUscc(f"uscc: {exc}") from None
    raise PlatformError("missing: id_number (a person) or uscc (an organisation)")


def _decision_date(text: str, now: dt.datetime) -> dt.date:
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise PlatformError(
            f"decision_date must be a real date as YYYY-MM-DD, got {text!r}"
        ) from None
    if day > now.date():
        raise PlatformError(f"decision_date {text} is in the future: check the decision")
    return day


# --- files ----------------------------------------------------------------------------------


def read_file(
    path: Path,
    *,
    encoding: str = "utf-8",
    default_source: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[RawRow]:
    """Rows of a ``.csv``, ``.json`` (one array of objects) or ``.jsonl`` file, streamed.

    The file's encoding is checked in a first streaming pass, so a badly encoded file is
    refused before any row is imported. ``on_progress`` receives the bytes read so far.

    Raises (when iterated):
        IngestFileError: unknown extension or encoding, undecodable bytes (with the line),
            a CSV header without the needed columns (named), broken JSON (with the line).
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json", ".jsonl", ".ndjson"):
        raise IngestFileError(f"{path.name}: use a .csv, .json or .jsonl file")
    _check_encoding(path, encoding)
    binary = path.open("rb")
    progress = on_progress or (lambda _: None)
    text = io.TextIOWrapper(binary, encoding=_python_encoding(encoding), newline="")
    try:
        if suffix == ".csv":
            rows = _csv_rows(text, path.name, default_source)
        elif suffix == ".json":
            rows = _json_array_rows(text, path.name)
        else:
            rows = _json_lines_rows(text, path.name)
        for count, row in enumerate(rows):
            if count % 256 == 0:
                progress(binary.tell())
            yield row
        progress(binary.tell())
    finally:
        text.close()


def _python_encoding(encoding: str) -> str:
    # Excel's "CSV UTF-8" starts with a byte order mark: read it as part of the encoding.
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _check_encoding(path: Path, encoding: str) -> None:
    try:
        decoder = codecs.getincrementaldecoder(_python_encoding(encoding))("strict")
    except LookupError:
        raise IngestFileError(f"unknown encoding {encoding!r} (try utf-8 or gb18030)") from None
    offset, line = 0, 1
    with path.open("rb") as stream:
        while True:
            chunk = stream.read(_READ_SIZE)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                start = max(exc.start - len(exc.object) + len(chunk), 0)
                line += chunk[:start].count(b"\n")
                raise IngestFileError(
                    f"{path.name} is not {encoding} text: undecodable byte at line {line} "
                    f"(byte {offset + start}). Save the file as UTF-8 (Excel: 'CSV UTF-8'), "
                    "or name its encoding (e.g. --encoding gb18030)"
                ) from None
            if not chunk:
                return
            line += chunk.count(b"\n")
            offset += len(chunk)


def _csv_rows(text: IO[str], name: str, default_source: str | None) -> Iterator[RawRow]:
    reader = csv.reader(text)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise IngestFileError(f"{name} line 1: {exc}") from None
    if header is None or not any(h.strip() for h in header):
        raise IngestFileError(f"{name} is empty: its first line must name the columns")
    columns = [h.strip().lower() for h in header]
    _check_header(name, columns, default_source)
    while True:
        first_line = reader.line_num + 1
        try:
            values = next(reader, None)
        except csv.Error as exc:
            raise IngestFileError(f"{name} line {reader.line_num}: {exc}") from None
        if values is None:
            return
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(columns):
            yield RawRow(
                first_line,
                {},
                f"has {len(values)} values but the header names {len(columns)} columns",
            )
            continue
        yield RawRow(
            first_line, {c: v.strip() or None for c, v in zip(columns, values, strict=True)}
        )


def _check_header(name: str, columns: list[str], default_source: str | None) -> None:
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise IngestFileError(f"{name}: column(s) named twice: {', '.join(duplicated)}")
    unknown = [c for c in columns if c not in ALL_FIELDS]
    needed = [f for f in RECORD_FIELDS if not (f == "source" and default_source)]
    missing = [f for f in needed if f not in columns]
    if not set(SUBJECT_FIELDS) & set(columns):
        missing.append("id_number or uscc")
    if unknown or missing:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        raise IngestFileError(
            f"{name}: {'; '.join(problems)}. The first line must name the columns "
            f"{', '.join(RECORD_FIELDS)}, id_number and/or uscc, optionally "
            f"{', '.join(OPTIONAL_FIELDS)}"
        )


def raw_row(number: int, element: Any) -> RawRow:
    """A row from a decoded JSON value (file element or API record): an object of text."""
    if not isinstance(element, dict):
        return RawRow(number, {}, "is not an object with the record's fields")
    fields: dict[str, str | None] = {}
    for key, value in element.items():
        if value is None or isinstance(value, str):
            fields[str(key)] = (value or "").strip() or None
        else:
            return RawRow(number, {}, f"field {key} must be text (in quotes), got {value!r}")
    return RawRow(number, fields)


def _json_lines_rows(text: IO[str], name: str) -> Iterator[RawRow]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            element = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestFileError(f"{name} line {number}: not valid JSON: {exc.msg}") from None
        yield raw_row(number, element)


def _json_array_rows(text: IO[str], name: str) -> Iterator[RawRow]:
    """Decodes the elements of a top-level JSON array one at a time (bounded memory)."""
    reader = _JsonStream(text, name)
    reader.expect("[")
    if reader.peek() == "]":
        reader.expect("]")
        reader.expect_end()
        return
    number = 0
    while True:
        number += 1
        yield raw_row(number, reader.value(number))
        if reader.peek() == ",":
            reader.expect(",")
            continue
        reader.expect("]")
        reader.expect_end()
        return


class _JsonStream:
    """Just enough of a streaming JSON reader for ``[value, value, ...]``."""

    def __init__(self, text: IO[str], name: str) -> None:
        self._text = text
        self._name = name
        self._buf = ""
        self._pos = 0
        self._line = 1  # line number of self._buf[0]
        self._eof = False
        self._decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        if self._eof:
            return False
        self._line += self._buf.count("\n", 0, self._pos)
        more = self._text.read(_READ_SIZE)
        self._buf = self._buf[self._pos :] + more
        self._pos = 0
        self._eof = not more
        return bool(more)

    def _where(self) -> str:
        return f"{self._name} line {self._line + self._buf.count(chr(10), 0, self._pos)}"

    def peek(self) -> str:
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n":
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def expect(self, char: str) -> None:
        found = self.peek()
        if found != char:
            shown = repr(found) if found else "the end of the file"
            raise IngestFileError(
                f"{self._where()}: expected {char!r}, found {shown} (a .json file is one array "
                "of record objects: [{...}, {...}])"
            )
        self._pos += 1

    def expect_end(self) -> None:
        if self.peek():
            raise IngestFileError(f"{self._where()}: unexpected text after the closing ]")

    def value(self, number: int) -> Any:
        self.peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                # Either the element is cut by the end of the buffer (read on) or it is
                # broken; elements over 1 MiB are refused so that memory stays bounded.
                line = self._line + exc.lineno - 1  # before _fill moves the buffer
                if len(self._buf) - self._pos <= _MAX_JSON_ELEMENT and self._fill():
                    continue
                raise IngestFileError(
                    f"{self._name} line {line}: element {number} is not valid JSON "
                    f"({exc.msg}) or is larger than 1 MiB"
                ) from None
            if end == len(self._buf) and self._fill():
                continue  # a number or literal may go on in the next read
            self._pos = end
            return value


# --- reports --------------------------------------------------------------------------------

REPORT_COLUMNS = ("row", "action", "source", "document_number", "status", "reason", "record_id")


class ReportWriter:
    """Writes a per-row report while rows are processed: ``.csv`` (one line per row) or
    ``.json`` (``{"rows": [...], "summary": {...}}``). Holds no rows in memory."""

    def __init__(self, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise IngestFileError(f"report {path.name}: use a .csv or .json file name")
        self._json = suffix == ".json"
        self._stream = path.open("w", encoding="utf-8", newline="")
        self._first = True
        if self._json:
            self._stream.write('{"rows": [\n')
        else:
            self._csv = csv.writer(self._stream)
            self._csv.writerow(REPORT_COLUMNS)

    def add(self, result: RowResult) -> None:
        if self._json:
            data = {k: v for k, v in result.as_dict().items() if k in REPORT_COLUMNS}
            self._stream.write(
                ("" if self._first else ",\n") + json.dumps(data, ensure_ascii=False)
            )
            self._first = False
        else:
            data = result.as_dict()
            self._csv.writerow(["" if data[c] is None else data[c] for c in REPORT_COLUMNS])

    def close(self, summary: IngestSummary | None) -> None:
        """Ends the report; ``summary`` None marks a batch that stopped with an error."""
        if self._json:
            tail = {"summary": None if summary is None else summary.as_dict()}
            self._stream.write("\n], " + json.dumps(tail, ensure_ascii=False)[1:] + "\n")
        self._stream.close()
