"""Red and black lists (守信红名单 / 失信黑名单) and the catalogue of their measures.

Rules (DOMAIN.md, Red and black lists; 国办发〔2020〕49号 (七)(八); 国发〔2016〕33号):

- an entry needs a legal basis, the legally effective document, a **prior written notice**
  with its reasons and the subject's rights, and **published exit conditions** that the code
  can check (an exit date, and/or "ends when the basis record no longer has effect").
  :meth:`ListDesk.add_entry` refuses an entry missing any of them and names what is missing;
- the notice precedes the entry by at least ``notice_working_days`` (default: the policy's
  objection decision period, so an objection filed on notice is decided before listing);
- a basis record under objection cannot found an entry, and the measures of an entry whose
  basis record is under objection are not executed meanwhile (五(二)2⑧; see
  :meth:`ListDesk.measures_in_force`); a repaired, withdrawn or expired basis record stops
  them at once;
- measures come only from the catalogue (:func:`load_catalogue`, ``policy/measures/``): a
  unit can apply only a measure listed for its list, its kind of subject and that very unit.
  Mandatory (强制性) measures are applied on entry; recommended (推荐性) ones on request;
- an entry leaves the list when :meth:`ListDesk.exit_check` finds a condition met **and**
  staff confirm it (:meth:`ListDesk.remove_entry`); its measures are lifted with it.

Every change is audited. Entries are never deleted (``removed_at``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from issuer.audit import audit
from issuer.db import records, subjects
from issuer.db_rights import list_entries, list_entry_measures
from issuer.events import RightsConflict, RightsError, RightsNotFound, lock_subjects, new_id
from issuer.measures import DEFAULT_CATALOGUE as DEFAULT_CATALOGUE
from issuer.measures import LIST_KINDS, Measure, MeasureCatalogue
from issuer.measures import CatalogueError as CatalogueError
from issuer.measures import load_catalogue as load_catalogue
from issuer.policy import Policy, PolicyRegistry, policy_in_force
from issuer.repair import effect_until
from issuer.workdays import WorkCalendar, china_calendar, local_date


class ListEntryRefused(RightsError):
    """An entry lacks what the law requires; ``missing`` names each item."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__("a list entry needs " + "; ".join(missing))
        self.missing = tuple(missing)


class ExitConditionsNotMet(RightsConflict):
    """Removal was asked for while no published exit condition is met; ``reasons`` says why."""

    def __init__(self, entry_id: int, reasons: tuple[str, ...]) -> None:
        super().__init__(f"entry {entry_id} cannot leave the list yet: " + "; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class NewListEntry:
    """A proposed entry. ``notice_served_at`` is when the prior written notice reached the
    subject; ``exit_conditions`` is the published text, ``exit_on`` and
    ``exit_when_record_cleared`` its checkable form (at least one is required)."""

    subject_id: str
    list_kind: str
    legal_basis: str
    document_number: str
    notice_document: str
    notice_served_at: dt.datetime | None
    notice_reasons: str
    notice_rights: str
    exit_conditions: str
    exit_on: dt.date | None = None
    record_id: int | None = None
    exit_when_record_cleared: bool = False


@dataclass(frozen=True)
class ExitCheck:
    entry_id: int
    subject_id: str
    met: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ListEntry:
    """An entry as staff see it, with the keys of its measures (lifted ones too)."""

    id: int
    subject_id: str
    list_kind: str
    legal_basis: str
    document_number: str
    record_id: int | None
    notice_document: str
    notice_served_at: dt.datetime
    exit_conditions: str
    exit_on: dt.date | None
    exit_when_record_cleared: bool
    added_at: dt.datetime
    removed_at: dt.datetime | None
    measures: tuple[str, ...]
    lifted_measures: tuple[str, ...]


@dataclass(frozen=True)
class MeasureInForce:
    entry_id: int
    list_kind: str
    measure_key: str
    implementing_unit: str
    mandatory: bool


class ListDesk:
    """List entries and their measures under one catalogue and calendar, and the policy in
    force on the day of each step (``policies``: a registry, or one fixed version)."""

    def __init__(
        self,
        policies: Policy | PolicyRegistry,
        catalogue: MeasureCatalogue,
        calendar: WorkCalendar | None = None,
        *,
        notice_working_days: int | None = None,
    ) -> None:
        self._policies = policies
        self._catalogue = catalogue
        self._calendar = calendar or china_calendar()
        self._fixed_notice_days = notice_working_days

    @property
    def catalogue(self) -> MeasureCatalogue:
        return self._catalogue

    def notice_days(self, day: dt.date) -> int:
        """Working days between the prior notice and the entry, for an entry made on ``day``
        (default: the objection decision period of the policy in force)."""
        if self._fixed_notice_days is not None:
            return self._fixed_notice_days
        return policy_in_force(self._policies, day).objection.decide_working_days

    def add_entry(self, conn: Connection, entry: NewListEntry, actor: str, now: dt.datetime) -> int:
        """Adds an entry and applies the catalogue's mandatory measures for it.

        Raises:
            ListEntryRefused: basis, document, prior notice (document, time, reasons, rights)
                or exit conditions missing.
            RightsError: unknown list; notice too recent; exit date not ahead; the basis
                record of the wrong direction, under objection or without effect.
            RightsNotFound: no such subject, or the record is not the subject's.
            RightsConflict: the same document already lists the subject on this list.
        """
        self._refuse_incomplete(entry)
        if entry.list_kind not in LIST_KINDS:
            raise RightsError("the list must be 'red' or 'black'")
        today = local_date(now)
        assert entry.notice_served_at is not None  # checked by _refuse_incomplete
        noticed = local_date(entry.notice_served_at)
        notice_days = self.notice_days(today)
        earliest = self._calendar.add_working_days(noticed, notice_days)
        if today < earliest:
            raise RightsError(
                f"the prior notice was served on {noticed}; the entry can be made from "
                f"{earliest} ({notice_days} working days for the subject to object)"
            )
        if entry.exit_on is not None and entry.exit_on <= today:
            raise RightsError(f"the exit date {entry.exit_on} is not after today")
        lock_subjects(conn, [entry.subject_id])
        if entry.record_id is not None:
            self._check_basis_record(conn, entry, today)
        duplicate = conn.execute(
            select(list_entries.c.id).where(
                list_entries.c.list_kind == entry.list_kind,
                list_entries.c.subject_id == entry.subject_id,
                list_entries.c.document_number == entry.document_number.strip(),
            )
        ).scalar_one_or_none()
        if duplicate is not None:
            raise RightsConflict(f"entry {duplicate} already rests on {entry.document_number}")
        entry_id = new_id(
            conn.execute(
                insert(list_entries).values(
                    subject_id=entry.subject_id,
                    list_kind=entry.list_kind,
                    legal_basis=entry.legal_basis.strip(),
                    document_number=entry.document_number.strip(),
                    record_id=entry.record_id,
                    notice_document=entry.notice_document.strip(),
                    notice_served_at=entry.notice_served_at,
                    notice_reasons=entry.notice_reasons.strip(),
                    notice_rights=entry.notice_rights.strip(),
                    exit_conditions=entry.exit_conditions.strip(),
                    exit_on=entry.exit_on,
                    exit_when_record_cleared=entry.exit_when_record_cleared,
                    added_at=now,
                    added_by=actor,
                )
            ).inserted_primary_key
        )
        target = self._target(conn, entry.subject_id)
        mandatory = self._catalogue.mandatory(entry.list_kind, target)
        audit(
            conn,
            now,
            actor,
            "list.entry_added",
            subject_id=entry.subject_id,
            entry_id=entry_id,
            list_kind=entry.list_kind,
            document_number=entry.document_number.strip(),
            mandatory_measures=[m.key for m in mandatory],
        )
        for measure in mandatory:
            self._apply(conn, entry_id, entry.subject_id, measure, actor, now)
        return entry_id

    def apply_measure(
        self,
        conn: Connection,
        entry_id: int,
        measure_key: str,
        unit: str,
        actor: str,
        now: dt.datetime,
    ) -> int:
        """A unit applies a catalogue measure to an active entry.

        Raises:
            RightsNotFound: no such entry.
            RightsError: the measure is not in the catalogue, belongs to the other list or
                another kind of subject, or is assigned to another unit.
            RightsConflict: the entry was removed, or the measure is applied already.
        """
        entry = self._active_entry(conn, entry_id)
        measure = self._catalogue.measures.get(measure_key)
        if measure is None:
            raise RightsError(
                f"measure {measure_key!r} is not in the catalogue ({self._catalogue.version}): "
                "no unit may add measures of its own"
            )
        if measure.list_kind != entry.list_kind:
            raise RightsError(f"measure {measure_key!r} belongs to the {measure.list_kind} list")
        if self._target(conn, entry.subject_id) not in measure.targets:
            raise RightsError(f"measure {measure_key!r} does not apply to this kind of subject")
        if unit.strip() != measure.implementing_unit:
            raise RightsError(
                f"{unit.strip() or 'an unnamed unit'} may not apply {measure_key!r}: the "
                f"catalogue assigns it to {measure.implementing_unit}"
            )
        return self._apply(conn, entry_id, entry.subject_id, measure, actor, now)

    def exit_check(self, conn: Connection, entry_id: int, now: dt.datetime) -> ExitCheck:
        """Whether a published exit condition of an active entry is met today, and why.

        Raises:
            RightsNotFound: no such entry.
            RightsConflict: the entry was removed already.
        """
        entry = self._active_entry(conn, entry_id)
        return self._check(conn, entry, local_date(now))

    def due_for_removal(self, conn: Connection, now: dt.datetime) -> list[ExitCheck]:
        """Active entries whose exit conditions are met: the staff's confirmation queue."""
        today = local_date(now)
        entries = conn.execute(
            select(list_entries)
            .where(list_entries.c.removed_at.is_(None))
            .order_by(list_entries.c.id)
        ).all()
        checks = (self._check(conn, entry, today) for entry in entries)
        return [check for check in checks if check.met]

    def remove_entry(
        self, conn: Connection, entry_id: int, confirmed_by: str, note: str, now: dt.datetime
    ) -> ExitCheck:
        """Removes an entry whose exit condition is met, on staff confirmation, and lifts its
        measures. Returns the check that allowed it.

        Raises:
            RightsError: no confirming staff member named.
            RightsNotFound: no such entry.
            RightsConflict: removed already.
            ExitConditionsNotMet: no exit condition is met.
        """
        if not confirmed_by.strip():
            raise RightsError("removal needs the confirming staff member")
        entry = self._active_entry(conn, entry_id)
        lock_subjects(conn, [entry.subject_id])
        check = self._check(conn, entry, local_date(now))
        if not check.met:
            raise ExitConditionsNotMet(entry_id, check.reasons)
        conn.execute(
            update(list_entries)
            .where(list_entries.c.id == entry_id)
            .values(removed_at=now, removed_by=confirmed_by.strip(), removal_note=note.strip())
        )
        lifted = conn.execute(
            update(list_entry_measures)
            .where(
                list_entry_measures.c.entry_id == entry_id,
                list_entry_measures.c.lifted_at.is_(None),
            )
            .values(lifted_at=now)
        ).rowcount
        audit(
            conn,
            now,
            confirmed_by.strip(),
            "list.entry_removed",
            subject_id=entry.subject_id,
            entry_id=entry_id,
            reasons=list(check.reasons),
            measures_lifted=lifted,
            note=note.strip(),
        )
        return check

    def measures_in_force(
        self, conn: Connection, subject_id: str, now: dt.datetime
    ) -> list[MeasureInForce]:
        """The measures to execute against or for the subject today. Left out: lifted
        measures, removed entries, and entries whose basis record is under objection (not
        executed while verified) or no longer has effect (repaired, withdrawn, expired)."""
        today = local_date(now)
        rows = conn.execute(
            select(list_entry_measures, list_entries.c.list_kind, list_entries.c.record_id)
            .join(list_entries, list_entries.c.id == list_entry_measures.c.entry_id)
            .where(
                list_entries.c.subject_id == subject_id,
                list_entries.c.removed_at.is_(None),
                list_entry_measures.c.lifted_at.is_(None),
            )
            .order_by(list_entry_measures.c.id)
        ).all()
        in_force = []
        for row in rows:
            if row.record_id is not None:
                record = self._record(conn, row.record_id)
                if record.objection_open or self._cleared(record, today) is not None:
                    continue
            in_force.append(
                MeasureInForce(
                    int(row.entry_id),
                    row.list_kind,
                    row.measure_key,
                    row.implementing_unit,
                    bool(row.mandatory),
                )
            )
        return in_force

    def _refuse_incomplete(self, entry: NewListEntry) -> None:
        missing = []
        if not entry.legal_basis.strip():
            missing.append("its legal basis (法律、法规或中央政策文件依据)")
        if not entry.document_number.strip():
            missing.append("the number of the legally effective document (具有法律效力的文书)")
        if not entry.notice_document.strip() or entry.notice_served_at is None:
            missing.append("a prior written notice: its document number and when it was served")
        if not entry.notice_reasons.strip():
            missing.append("the reasons given in the prior notice")
        if not entry.notice_rights.strip():
            missing.append("the rights stated in the prior notice (objection, review, lawsuit)")
        if not entry.exit_conditions.strip():
            missing.append("the published exit conditions")
        if entry.exit_on is None and not entry.exit_when_record_cleared:
            missing.append(
                "a checkable exit condition: an exit date, or exit when the basis record "
                "no longer has effect"
            )
        if entry.exit_when_record_cleared and entry.record_id is None:
            missing.append("the basis record (exit depends on it)")
        if missing:
            raise ListEntryRefused(missing)

    def _check_basis_record(self, conn: Connection, entry: NewListEntry, today: dt.date) -> None:
        record = self._record(conn, entry.record_id)
        if record.subject_id != entry.subject_id:
            raise RightsNotFound(f"subject {entry.subject_id} has no record {entry.record_id}")
        wanted = "-" if entry.list_kind == "black" else "+"
        if record.direction != wanted:
            raise RightsError(
                f"a {entry.list_kind} list entry rests on a "
                f"{'negative' if wanted == '-' else 'positive'} record"
            )
        if record.objection_open:
            raise RightsError(
                f"record {record.id} is under objection: it has no effect while verified and "
                "cannot found a list entry (五(二)2⑧)"
            )
        cleared = self._cleared(record, today)
        if cleared is not None:
            raise RightsError(f"record {record.id} no longer has effect: {cleared}")

    def _check(self, conn: Connection, entry: Any, today: dt.date) -> ExitCheck:
        met = []
        unmet = []
        if entry.exit_on is not None:
            if entry.exit_on <= today:
                met.append(f"the listing period ended on {entry.exit_on}")
            else:
                unmet.append(f"listed until {entry.exit_on}")
        if entry.exit_when_record_cleared and entry.record_id is not None:
            cleared = self._cleared(self._record(conn, entry.record_id), today)
            if cleared is not None:
                met.append(f"the basis record {cleared}")
            else:
                unmet.append(f"the basis record {entry.record_id} still has effect")
        return ExitCheck(int(entry.id), entry.subject_id, bool(met), tuple(met or unmet))

    def _cleared(self, record: Any, today: dt.date) -> str | None:
        """Why the record no longer has effect, or None if it has."""
        if record.withdrawn_at is not None:
            return "was withdrawn by its source"
        if record.repaired_at is not None:
            return "was repaired (信用修复)"
        until = effect_until(policy_in_force(self._policies, today), record)
        if record.archived_at is not None or (until is not None and until <= today):
            return f"reached the end of its effect period ({until})"
        return None

    def _apply(
        self,
        conn: Connection,
        entry_id: int,
        subject_id: str,
        measure: Measure,
        actor: str,
        now: dt.datetime,
    ) -> int:
        applied = conn.execute(
            select(list_entry_measures.c.id).where(
                list_entry_measures.c.entry_id == entry_id,
                list_entry_measures.c.measure_key == measure.key,
            )
        ).scalar_one_or_none()
        if applied is not None:
            raise RightsConflict(f"measure {measure.key!r} is applied to entry {entry_id} already")
        measure_id = new_id(
            conn.execute(
                insert(list_entry_measures).values(
                    entry_id=entry_id,
                    measure_key=measure.key,
                    implementing_unit=measure.implementing_unit,
                    mandatory=measure.mandatory,
                    catalogue_version=self._catalogue.version,
                    applied_at=now,
                    applied_by=actor,
                )
            ).inserted_primary_key
        )
        audit(
            conn,
            now,
            actor,
            "list.measure_applied",
            subject_id=subject_id,
            entry_id=entry_id,
            measure_key=measure.key,
            implementing_unit=measure.implementing_unit,
            mandatory=measure.mandatory,
            catalogue_version=self._catalogue.version,
        )
        return measure_id

    def _active_entry(self, conn: Connection, entry_id: int) -> Any:
        entry = conn.execute(select(list_entries).where(list_entries.c.id == entry_id)).first()
        if entry is None:
            raise RightsNotFound(f"no list entry {entry_id}")
        if entry.removed_at is not None:
            raise RightsConflict(f"list entry {entry_id} was removed already")
        return entry

    @staticmethod
    def _record(conn: Connection, record_id: int | None) -> Any:
        row = conn.execute(select(records).where(records.c.id == record_id)).first()
        if row is None:
            raise RightsNotFound(f"no record {record_id}")
        return row

    @staticmethod
    def _target(conn: Connection, subject_id: str) -> str:
        kind = conn.execute(
            select(subjects.c.kind).where(subjects.c.id == subject_id)
        ).scalar_one_or_none()
        if kind is None:
            raise RightsNotFound(f"no subject {subject_id}")
        return str(kind)


def entries_of(conn: Connection, subject_id: str) -> list[ListEntry]:
    """The subject's list entries (removed ones too), oldest first."""
    measures: dict[int, list[Any]] = {}
    for m in conn.execute(
        select(list_entry_measures)
        .join(list_entries, list_entries.c.id == list_entry_measures.c.entry_id)
        .where(list_entries.c.subject_id == subject_id)
        .order_by(list_entry_measures.c.id)
    ):
        measures.setdefault(m.entry_id, []).append(m)
    rows = conn.execute(
        select(list_entries)
        .where(list_entries.c.subject_id == subject_id)
        .order_by(list_entries.c.id)
    )
    return [
        ListEntry(
            int(e.id),
            e.subject_id,
            e.list_kind,
            e.legal_basis,
            e.document_number,
            e.record_id,
            e.notice_document,
            e.notice_served_at,
            e.exit_conditions,
            e.exit_on,
            bool(e.exit_when_record_cleared),
            e.added_at,
            e.removed_at,
            tuple(m.measure_key for m in measures.get(e.id, []) if m.lifted_at is None),
            tuple(m.measure_key for m in measures.get(e.id, []) if m.lifted_at is not None),
        )
        for e in rows
    ]
