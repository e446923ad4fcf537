from __future__ import annotations

import datetime as dt

import pytest

from issuer.workdays import CN_HOLIDAYS, CalendarError, WorkCalendar, china_calendar, local_date

D = dt.date
CAL = china_calendar()


def test_weekends_are_not_counted_and_the_first_day_is_not_either() -> None:
    friday = D(2026, 11, 27)
    assert CAL.add_working_days(friday, 1) == D(2026, 11, 30)  # Monday
    assert CAL.add_working_days(D(2026, 11, 28), 5) == D(2026, 12, 4)  # filed on a Saturday


def test_spring_festival_2026_with_its_make_up_saturdays() -> None:
    # 2月15日至23日放假; 2月14日(周六)、2月28日(周六)上班
    assert CAL.is_working_day(D(2026, 2, 14))
    assert CAL.is_working_day(D(2026, 2, 28))
    assert not any(CAL.is_working_day(D(2026, 2, d)) for d in range(15, 24))
    assert CAL.add_working_days(D(2026, 2, 13), 1) == D(2026, 2, 14)
    assert CAL.add_working_days(D(2026, 2, 13), 2) == D(2026, 2, 24)


def test_national_day_and_mid_autumn_2026() -> None:
    # 9月25日至27日, 10月1日至7日放假; 9月20日(周日)、10月10日(周六)上班
    assert CAL.add_working_days(D(2026, 9, 14), 5) == D(2026, 9, 20)
    assert CAL.add_working_days(D(2026, 9, 30), 1) == D(2026, 10, 8)
    assert CAL.add_working_days(D(2026, 9, 30), 3) == D(2026, 10, 10)
    assert CAL.add_working_days(D(2026, 9, 14), 20) == D(2026, 10, 16)


def test_the_table_matches_the_notice_day_counts() -> None:
    lengths = [(last - first).days + 1 for first, last, _ in CN_HOLIDAYS[2026]]
    assert lengths == [3, 9, 3, 5, 3, 3, 7]
    assert all(d.weekday() >= 5 for _, _, extra in CN_HOLIDAYS[2026] for d in extra)
    assert len(CAL.holidays) == sum(lengths)


def test_a_year_without_a_notice_counts_weekends_only() -> None:
    assert CAL.covers(D(2026, 12, 31))
    assert not CAL.covers(D(2027, 1, 1))
    assert CAL.is_working_day(D(2027, 1, 1))  # a Friday; its holiday notice is not loaded
    assert CAL.add_working_days(D(2026, 12, 31), 1) == D(2027, 1, 1)


def test_working_days_between() -> None:
    assert CAL.working_days_between(D(2026, 9, 30), D(2026, 10, 10)) == 3
    assert CAL.working_days_between(D(2026, 10, 10), D(2026, 10, 10)) == 0
    assert CAL.working_days_between(D(2026, 10, 10), D(2026, 10, 1)) == 0


def test_deadlines_are_counted_on_the_beijing_date() -> None:
    assert local_date(dt.datetime(2026, 11, 27, 16, 30, tzinfo=dt.UTC)) == D(2026, 11, 28)
    assert local_date(dt.datetime(2026, 11, 27, 15, 59, tzinfo=dt.UTC)) == D(2026, 11, 27)
    with pytest.raises(CalendarError, match="time zone"):
        local_date(dt.datetime(2026, 11, 27, 12, 0))


def test_a_period_must_be_at_least_one_day() -> None:
    with pytest.raises(CalendarError, match="at least 1"):
        CAL.add_working_days(D(2026, 1, 5), 0)


def test_inconsistent_holiday_data_is_refused() -> None:
    with pytest.raises(CalendarError, match="both"):
        WorkCalendar.from_table({2026: ((D(2026, 5, 1), D(2026, 5, 5), (D(2026, 5, 2),)),)})
    with pytest.raises(CalendarError, match="ends before"):
        WorkCalendar.from_table({2026: ((D(2026, 5, 5), D(2026, 5, 1), ()),)})
    with pytest.raises(CalendarError, match="outside"):
        WorkCalendar.from_table({2026: ((D(2027, 1, 1), D(2027, 1, 1), ()),)})
