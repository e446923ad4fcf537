"""Working days in mainland China: weekends, public holidays and make-up working days (调休).

Deadlines for objections, withdrawals and list notices are set in *working days* (DOMAIN.md,
Objections). A period starts on the day after the triggering event (民法典 Art. 201: the
first day is not counted), so ``add_working_days(d, n)`` is the ``n``-th working day after
``d``; the deadline is the end of that day, Beijing time. Counting whole working days means a
deadline never falls on a weekend or a holiday (民法典 Art. 203).

The holiday table is data: :data:`CN_HOLIDAYS` holds the State Council's notice for each year
it covers. For a date in a year the table does not cover, only weekends are days off; such a
deadline can only come earlier than the legal one, never later (the citizen never waits
longer), and :meth:`WorkCalendar.covers` lets a job warn that next year's notice is missing.

Invariants: :class:`WorkCalendar` is immutable; a day is either a holiday, a make-up working
day or neither, never both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

BEIJING = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
"""China has one time zone and no daylight saving: a fixed offset needs no tz database."""

# 国务院办公厅关于2026年部分节假日安排的通知 (2025-11-04).
# Each entry: (first day off, last day off, make-up working days).
CN_HOLIDAYS: dict[int, tuple[tuple[dt.date, dt.date, tuple[dt.date, ...]], ...]] = {
    2026: (
        # 元旦: 1月1日至3日放假调休, 1月4日(周日)上班
        (dt.date(2026, 1, 1), dt.date(2026, 1, 3), (dt.date(2026, 1, 4),)),
        # 春节: 2月15日至23日放假调休, 2月14日(周六)、2月28日(周六)上班
        (
            dt.date(2026, 2, 15),
            dt.date(2026, 2, 23),
            (dt.date(2026, 2, 14), dt.date(2026, 2, 28)),
        ),
        # 清明节: 4月4日至6日放假
        (dt.date(2026, 4, 4), dt.date(2026, 4, 6), ()),
        # 劳动节: 5月1日至5日放假调休, 5月9日(周六)上班
        (dt.date(2026, 5, 1), dt.date(2026, 5, 5), (dt.date(2026, 5, 9),)),
        # 端午节: 6月19日至21日放假
        (dt.date(2026, 6, 19), dt.date(2026, 6, 21), ()),
        # 中秋节: 9月25日至27日放假
        (dt.date(2026, 9, 25), dt.date(2026, 9, 27), ()),
        # 国庆节: 10月1日至7日放假调休, 9月20日(周日)、10月10日(周六)上班
        (
            dt.date(2026, 10, 1),
            dt.date(2026, 10, 7),
            (dt.date(2026, 9, 20), dt.date(2026, 10, 10)),
        ),
    ),
}


class CalendarError(ValueError):
    """The holiday data is inconsistent, or a time has no time zone."""


def local_date(now: dt.datetime) -> dt.date:
    """The date in Beijing at ``now``; the day on which deadlines are counted.

    Raises:
        CalendarError: ``now`` is naive (a time without a zone cannot be placed on a day).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise CalendarError("the time must carry a time zone (use an aware datetime)")
    return now.astimezone(BEIJING).date()


@dataclass(frozen=True)
class WorkCalendar:
    """Days off and make-up working days for the years in ``years``."""

    holidays: frozenset[dt.date]
    make_up_days: frozenset[dt.date]
    years: frozenset[int]

    def __post_init__(self) -> None:
        both = self.holidays & self.make_up_days
        if both:
            raise CalendarError(f"{min(both)} is listed both as a holiday and as a working day")
        outside = {d for d in self.holidays | self.make_up_days if d.year not in self.years}
        if outside:
            raise CalendarError(f"{min(outside)} lies outside the years {sorted(self.years)}")

    @classmethod
    def from_table(
        cls, table: dict[int, tuple[tuple[dt.date, dt.date, tuple[dt.date, ...]], ...]]
    ) -> WorkCalendar:
        """Builds a calendar from per-year (first day off, last day off, make-up days) rows.

        Raises:
            CalendarError: a range ends before it starts, or a day is both off and on.
        """
        holidays: set[dt.date] = set()
        make_up: set[dt.date] = set()
        for first, last, extra in (row for rows in table.values() for row in rows):
            if last < first:
                raise CalendarError(f"holiday range {first}..{last} ends before it starts")
            holidays.update(_days(first, last))
            make_up.update(extra)
        return cls(frozenset(holidays), frozenset(make_up), frozenset(table))

    def covers(self, day: dt.date) -> bool:
        """True when the holiday notice for ``day``'s year is in the table."""
        return day.year in self.years

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.make_up_days:
            return True
        if day in self.holidays:
            return False
        return day.weekday() < 5

    def add_working_days(self, start: dt.date, n: int) -> dt.date:
        """The ``n``-th working day after ``start`` (``start`` itself is not counted).

        Raises:
            CalendarError: ``n`` is below 1 (a deadline of zero days is not a deadline).
        """
        if n < 1:
            raise CalendarError(f"a period in working days must be at least 1, got {n}")
        day, left = start, n
        while left:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        return day

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Working days in ``(start, end]``: 0 when ``end`` is not after ``start``."""
        return sum(1 for d in _days(start + dt.timedelta(days=1), end) if self.is_working_day(d))


def _days(first: dt.date, last: dt.date) -> Iterable[dt.date]:
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def china_calendar() -> WorkCalendar:
    """The calendar from :data:`CN_HOLIDAYS`."""
    return WorkCalendar.from_table(CN_HOLIDAYS)
