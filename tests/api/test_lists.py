"""Red and black lists and the measures catalogue (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from issuer.db import audit_events, records
from issuer.db_rights import list_entry_measures
from issuer.events import RightsConflict, RightsError, RightsNotFound
from issuer.lists import (
    CatalogueError,
    ExitConditionsNotMet,
    ListDesk,
    ListEntryRefused,
    NewListEntry,
    load_catalogue,
)
from issuer.objections import ObjectionDesk
from issuer.repair import RepairApplication, RepairDesk
from issuer.wiring import IssuerContext
from tests.api.test_events import person_with
from tests.conftest import NOW

NOTICED = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)  # Friday; 5 working days before NOW
JAN_1 = dt.datetime(2027, 1, 1, 2, 0, tzinfo=dt.UTC)


def desk(ctx: IssuerContext) -> ListDesk:
    return ListDesk(ctx.policy, load_catalogue())


def with_penalty(ctx: IssuerContext) -> tuple[str, int]:
    """The demo person with a tax penalty decided 2026-06-01 (effect until 2027-06-01)."""
    subject, (record,) = person_with(ctx, ("tax_arrears", "-", "一般", dt.date(2026, 6, 1)))
    return subject, record


def black_entry(subject: str, record_id: int | None) -> NewListEntry:
    return NewListEntry(
        subject_id=subject,
        list_kind="black",
        legal_basis="《最高人民法院关于公布失信被执行人名单信息的若干规定》第一条",
        document_number="(2026)黔0113执123号",
        notice_document="白云信用告〔2026〕5号",
        notice_served_at=NOTICED,
        notice_reasons="有履行能力而拒不履行生效法律文书确定的义务",
        notice_rights="可在五个工作日内提出异议；可依法申请行政复议或者提起行政诉讼",
        exit_conditions="履行义务或基础信息失效（修复、撤销、期满）后移出",
        record_id=record_id,
        exit_when_record_cleared=record_id is not None,
    )


def in_force(ctx: IssuerContext, subject: str, now: dt.datetime = NOW) -> list[str]:
    with ctx.engine.connect() as conn:
        return [m.measure_key for m in desk(ctx).measures_in_force(conn, subject, now)]


def test_the_catalogue_states_target_basis_unit_and_kind() -> None:
    catalogue = load_catalogue()
    assert catalogue.version == "measures-2026.1"
    assert all(m.basis and m.implementing_unit and m.targets for m in catalogue.measures.values())
    assert [m.key for m in catalogue.mandatory("black", "individual")] == ["high_consumption"]
    assert [m.key for m in catalogue.mandatory("red", "individual")] == ["publish_commendation"]
    assert {m.mandatory for m in catalogue.measures.values()} == {True, False}


def test_a_catalogue_without_basis_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "measures.toml"
    path.write_text(
        'version = "x"\n[measures.a]\nlist = "black"\ntargets = ["individual"]\n'
        'measure = "m"\nbasis = " "\nimplementing_unit = "u"\nmandatory = true\n',
        encoding="utf-8",
    )
    with pytest.raises(CatalogueError, match="basis"):
        load_catalogue(path)
    path.write_text(path.read_text(encoding="utf-8").replace('"black"', '"grey"'), "utf-8")
    with pytest.raises(CatalogueError, match="'red' or 'black'"):
        load_catalogue(path)


def test_an_entry_without_basis_notice_or_exit_is_refused(issuer_ctx: IssuerContext) -> None:
    subject, _ = with_penalty(issuer_ctx)
    empty = NewListEntry(subject, "black", " ", "", "", None, "", "", "")
    with issuer_ctx.engine.begin() as conn, pytest.raises(ListEntryRefused) as refused:
        desk(issuer_ctx).add_entry(conn, empty, "clerk", NOW)
    missing = " | ".join(refused.value.missing)
    for needed in (
        "legal basis",
        "legally effective document",
        "prior written notice",
        "reasons",
        "rights",
        "published exit conditions",
        "checkable exit condition",
    ):
        assert needed in missing
    assert len(refused.value.missing) == 7


def test_the_notice_must_leave_time_to_object(issuer_ctx: IssuerContext) -> None:
    subject, record = with_penalty(issuer_ctx)
    recent = dataclasses.replace(
        black_entry(subject, record), notice_served_at=dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    )
    with (
        issuer_ctx.engine.begin() as conn,
        pytest.raises(RightsError, match="can be made from 2026-11-30"),
    ):
        desk(issuer_ctx).add_entry(conn, recent, "clerk", NOW)


def test_mandatory_measures_apply_on_entry(issuer_ctx: IssuerContext) -> None:
    subject, record = with_penalty(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        entry = desk(issuer_ctx).add_entry(conn, black_entry(subject, record), "clerk", NOW)
        with pytest.raises(RightsConflict, match="already rests on"):
            desk(issuer_ctx).add_entry(conn, black_entry(subject, record), "clerk", NOW)
        unit = conn.execute(
            select(list_entry_measures.c.implementing_unit).where(
                list_entry_measures.c.entry_id == entry
            )
        ).scalar_one()
        assert unit == "区人民法院"
        actions = list(
            conn.execute(
                select(audit_events.c.action).where(
                    audit_events.c.action.in_(["list.entry_added", "list.measure_applied"])
                )
            ).scalars()
        )
        assert actions == ["list.entry_added", "list.measure_applied"]
    assert in_force(issuer_ctx, subject) == ["high_consumption"]


def test_no_unit_applies_a_measure_outside_the_catalogue(issuer_ctx: IssuerContext) -> None:
    subject, record = with_penalty(issuer_ctx)
    lists = desk(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        entry = lists.add_entry(conn, black_entry(subject, record), "clerk", NOW)
        with pytest.raises(RightsError, match="not in the catalogue"):
            lists.apply_measure(conn, entry, "travel_ban", "区公安分局", "clerk", NOW)
        with pytest.raises(RightsError, match="assigns it to 区精神文明建设办公室"):
            lists.apply_measure(conn, entry, "honours", "区财政局", "clerk", NOW)
        with pytest.raises(RightsError, match="kind of subject"):
            lists.apply_measure(conn, entry, "key_supervision", "区市场监督管理局", "c", NOW)
        with pytest.raises(RightsError, match="red list"):
            lists.apply_measure(conn, entry, "green_channel", "区政务服务中心", "c", NOW)
        lists.apply_measure(conn, entry, "honours", "区精神文明建设办公室", "clerk", NOW)
        with pytest.raises(RightsConflict, match="already"):
            lists.apply_measure(conn, entry, "honours", "区精神文明建设办公室", "clerk", NOW)
        with pytest.raises(RightsNotFound):
            lists.apply_measure(conn, 999_999, "honours", "区精神文明建设办公室", "c", NOW)
    assert in_force(issuer_ctx, subject) == ["high_consumption", "honours"]


def test_measures_are_not_executed_while_the_basis_is_verified(issuer_ctx: IssuerContext) -> None:
    subject, record = with_penalty(issuer_ctx)
    objections = ObjectionDesk(issuer_ctx.policy)
    with issuer_ctx.engine.begin() as conn:
        desk(issuer_ctx).add_entry(conn, black_entry(subject, record), "clerk", NOW)
        objection = objections.file(
            conn, subject, record_id=record, grounds="paid", filed_by="subject", actor="c", now=NOW
        )
    assert in_force(issuer_ctx, subject) == []
    with issuer_ctx.engine.begin() as conn:
        objections.decide(conn, objection, "rejected", "not paid", "clerk", NOW)
    assert in_force(issuer_ctx, subject) == ["high_consumption"]


def test_a_record_under_objection_cannot_found_an_entry(issuer_ctx: IssuerContext) -> None:
    subject, record = with_penalty(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        ObjectionDesk(issuer_ctx.policy).file(
            conn, subject, record_id=record, grounds="x", filed_by="subject", actor="c", now=NOW
        )
        with pytest.raises(RightsError, match="under objection"):
            desk(issuer_ctx).add_entry(conn, black_entry(subject, record), "clerk", NOW)


def test_the_basis_must_fit_the_list(issuer_ctx: IssuerContext) -> None:
    subject, record = with_penalty(issuer_ctx)
    red = dataclasses.replace(black_entry(subject, record), list_kind="red")
    late = dataclasses.replace(black_entry(subject, None), exit_on=dt.date(2026, 11, 1))
    with issuer_ctx.engine.begin() as conn:
        with pytest.raises(RightsError, match="red list entry rests on a positive record"):
            desk(issuer_ctx).add_entry(conn, red, "clerk", NOW)
        with pytest.raises(RightsError, match="not after today"):
            desk(issuer_ctx).add_entry(conn, late, "clerk", NOW)
        honour = conn.execute(
            select(records.c.id).where(
                records.c.subject_id == subject, records.c.category == "honour"
            )
        ).scalar_one()
        red_ok = dataclasses.replace(red, record_id=honour, document_number="区政发〔2026〕31号")
        entry = desk(issuer_ctx).add_entry(conn, red_ok, "clerk", NOW)
        assert entry > 0
    assert in_force(issuer_ctx, subject) == ["publish_commendation"]


def test_exit_after_repair_needs_staff_confirmation(issuer_ctx: IssuerContext) -> None:
    subject, record = with_penalty(issuer_ctx)
    lists = desk(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        entry = lists.add_entry(conn, black_entry(subject, record), "clerk", NOW)
        with pytest.raises(ExitConditionsNotMet, match=f"record {record} still has effect"):
            lists.remove_entry(conn, entry, "clerk", "asked", NOW)
        assert lists.due_for_removal(conn, NOW) == []
    with issuer_ctx.engine.begin() as conn:
        repair = RepairDesk(issuer_ctx.policy)
        request = repair.request(
            conn, RepairApplication(record, True, "完税证明", "信用承诺书"), "citizen", NOW
        )
        repair.decide(conn, request, True, "", "clerk", NOW)
    assert in_force(issuer_ctx, subject) == []  # lifted at once, removal awaits confirmation
    with issuer_ctx.engine.begin() as conn:
        (due,) = lists.due_for_removal(conn, NOW)
        assert (due.entry_id, due.met) == (entry, True)
        assert "repaired" in due.reasons[0]
        with pytest.raises(RightsError, match="confirming staff"):
            lists.remove_entry(conn, entry, " ", "ok", NOW)
        check = lists.remove_entry(conn, entry, "section chief", "conditions checked", NOW)
        assert check.met
        lifted = conn.execute(
            select(list_entry_measures.c.lifted_at).where(list_entry_measures.c.entry_id == entry)
        ).scalar_one()
        assert lifted is not None
        assert lists.due_for_removal(conn, NOW) == []
        with pytest.raises(RightsConflict, match="removed already"):
            lists.remove_entry(conn, entry, "section chief", "again", NOW)
        removed = conn.execute(
            select(audit_events.c.actor).where(audit_events.c.action == "list.entry_removed")
        ).scalar_one()
        assert removed == "section chief"


def test_exit_on_a_date(issuer_ctx: IssuerContext) -> None:
    subject, _ = with_penalty(issuer_ctx)
    dated = dataclasses.replace(black_entry(subject, None), exit_on=dt.date(2026, 12, 31))
    lists = desk(issuer_ctx)
    with issuer_ctx.engine.begin() as conn:
        entry = lists.add_entry(conn, dated, "clerk", NOW)
        check = lists.exit_check(conn, entry, NOW)
        assert (check.met, check.reasons) == (False, ("listed until 2026-12-31",))
        assert lists.exit_check(conn, entry, JAN_1).met
        lists.remove_entry(conn, entry, "section chief", "period over", JAN_1)
    assert in_force(issuer_ctx, subject, JAN_1) == []
