"""Trading calendars: sessions computed in the venue's local time, handed to the engine in ns UTC.

The engine's :class:`~tickray.engine.calendar.Calendar` knows only UTC
nanoseconds. The builders here work in the venue's own time zone (read from
the tz database through :mod:`zoneinfo`), one calendar day at a time, so a
session that opens at 09:30 New York time opens at 14:30 UTC in winter and at
13:30 UTC in summer, whatever day the clocks change.

- :func:`weekly`: a generic builder (open and close times, trading weekdays,
  holidays, early closes and late opens).
- :func:`nyse`: the New York Stock Exchange's regular sessions from 1990,
  holidays computed by rule (see :func:`nyse_holidays`).
- :func:`calendar_for`: calendars by name, as a run spec names them
  (``"24/7"``/``"crypto"``, ``"NYSE"``/``"XNYS"``).

Local times that do not exist (inside a spring-forward gap) follow the usual
``fold=0`` reading and land after the gap; ambiguous ones (the repeated hour
in autumn) take their first occurrence. Exchange hours never fall there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from tickray.engine.calendar import Calendar
from tickray.engine.clock import SECOND

DateLike = str | date
# date -> "HH:MM"; keys as "YYYY-MM-DD" strings or datetime.date
TimesByDate = Mapping[str, str] | Mapping[date, str] | Mapping[str | date, str]

_ONE_DAY: Final = timedelta(days=1)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HHMM = re.compile(r"^(\d{2}):(\d{2})$")

NYSE_TZ: Final = "America/New_York"
NYSE_FIRST_DATE: Final = date(1990, 1, 1)


# --- argument parsing -------------------------------------------------------------------------


def _parse_date(value: object, what: str) -> date:
    """A calendar date from ``"YYYY-MM-DD"`` or a ``datetime.date`` (not a datetime)."""
    if isinstance(value, datetime):
        raise ValueError(f"{what}: expected a date, got the datetime {value!r}; pass value.date()")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{what}: expected a date 'YYYY-MM-DD' or datetime.date, got {value!r}")


def _parse_hhmm(value: object, what: str) -> time:
    """A time of day from ``"HH:MM"`` (00:00 .. 23:59)."""
    m = _HHMM.match(value.strip()) if isinstance(value, str) else None
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"{what}: expected a time of day 'HH:MM' (00:00 to 23:59), got {value!r}")
    return time(int(m.group(1)), int(m.group(2)))


def _parse_zone(value: object) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"tz: expected an IANA time zone name like 'America/New_York', got {value!r}"
        )
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"tz: unknown time zone {value!r}; expected an IANA name like 'America/New_York'"
        ) from None


def _parse_weekdays(value: object) -> frozenset[int]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(
            f"weekdays: expected a sequence of ints 0 (Monday) .. 6 (Sunday), got {value!r}"
        )
    days = list(value)
    for d in days:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 6:
            raise ValueError(f"weekdays: {d!r} is not a weekday number 0 (Monday) .. 6 (Sunday)")
    if not days:
        raise ValueError("weekdays: at least one trading weekday is needed")
    return frozenset(days)


def _parse_dates(value: object, what: str) -> frozenset[date]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"{what}: expected a sequence of dates, got {value!r}")
    return frozenset(_parse_date(v, f"{what}[{i}]") for i, v in enumerate(value))


def _parse_times(value: TimesByDate | None, what: str) -> dict[date, time]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}: expected a mapping of date -> 'HH:MM', got {value!r}")
    out: dict[date, time] = {}
    for k, v in value.items():
        d = _parse_date(k, f"{what} key")
        if d in out:
            raise ValueError(f"{what}[{d}]: given twice")
        out[d] = _parse_hhmm(v, f"{what}[{d}]")
    return out


def _local_ns(day: date, at: time, zone: ZoneInfo) -> int:
    """Nanoseconds UTC of the wall-clock time ``at`` on ``day`` in ``zone`` (that day's offset)."""
    offset = datetime.combine(day, at, tzinfo=zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    local = (
        (day.toordinal() - _EPOCH_ORDINAL) * 86_400 + at.hour * 3600 + at.minute * 60 + at.second
    )
    return (local - int(offset.total_seconds())) * SECOND


# --- the generic builder ----------------------------------------------------------------------


def weekly(
    name: str,
    tz: str | ZoneInfo,
    open: str = "09:30",
    close: str = "16:00",
    weekdays: Iterable[int] = (0, 1, 2, 3, 4),
    holidays: Iterable[DateLike] = (),
    early_closes: TimesByDate | None = None,
    start: DateLike = "2020-01-01",
    end: DateLike = "2030-12-31",
    *,
    late_opens: TimesByDate | None = None,
) -> Calendar:
    """One session per trading day, ``open`` to ``close`` local time in ``tz``, from ``start`` to ``end``.

    ``weekdays`` are the trading days of the week (0 = Monday). ``holidays``
    are dates with no session (dates on non-trading weekdays or outside the
    range are ignored, so one list can serve many ranges). ``early_closes`` and
    ``late_opens`` map a date to its own close or open time ``"HH:MM"``; they
    must name trading days, and dates outside the range are ignored. ``start``
    and ``end`` are inclusive dates; the calendar covers local midnight of
    ``start`` to local midnight after ``end``. Sessions within one local day
    only (``open < close``); overnight sessions (futures) are not modelled.

    Every argument is checked and a ValueError names the one at fault.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    zone = _parse_zone(tz)
    open_t = _parse_hhmm(open, "open")
    close_t = _parse_hhmm(close, "close")
    if open_t >= close_t:
        raise ValueError(
            f"open/close: the open {open} must be before the close {close} "
            "(sessions crossing midnight are not supported)"
        )
    days = _parse_weekdays(weekdays)
    closed = _parse_dates(holidays, "holidays")
    early = _parse_times(early_closes, "early_closes")
    late = _parse_times(late_opens, "late_opens")
    first = _parse_date(start, "start")
    last = _parse_date(end, "end")
    if first > last:
        raise ValueError(f"start/end: start {first} is after end {last}")
    for what, special in (("early_closes", early), ("late_opens", late)):
        for d in special:
            if first <= d <= last and (d.weekday() not in days or d in closed):
                why = "a holiday" if d in closed else "not a trading weekday"
                raise ValueError(f"{what}[{d}]: {d} is {why}, so it has no session to change")
    opens: list[int] = []
    closes: list[int] = []
    d = first
    while d <= last:
        if d.weekday() in days and d not in closed:
            o, c = late.get(d, open_t), early.get(d, close_t)
            if o >= c:
                raise ValueError(
                    f"early_closes/late_opens[{d}]: the session would open at {o:%H:%M} "
                    f"and close at {c:%H:%M}; the open must be before the close"
                )
            opens.append(_local_ns(d, o, zone))
            closes.append(_local_ns(d, c, zone))
        d += _ONE_DAY
    return Calendar(
        name,
        np.array(opens, dtype=np.int64),
        np.array(closes, dtype=np.int64),
        start=_local_ns(first, time(0), zone),
        end=_local_ns(last + _ONE_DAY, time(0), zone),
    )


# --- NYSE ---------------------------------------------------------------------------------------
#
# Rules as the NYSE applies them since 1990, checked against exchange_calendars (XNYS) and
# pandas_market_calendars (NYSE), which both follow the NYSE's historical closings list.


def easter(year: int) -> date:
    """Western Easter Sunday (the anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The ``n``-th ``weekday`` (0 = Monday) of a month."""
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    """The last ``weekday`` (0 = Monday) of a month."""
    last = date(year + month // 12, month % 12 + 1, 1) - _ONE_DAY
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _nearest_weekday(d: date) -> date:
    """Saturday -> the Friday before, Sunday -> the Monday after (US federal observance)."""
    wd = d.weekday()
    return d - _ONE_DAY if wd == 5 else d + _ONE_DAY if wd == 6 else d


# Full-day closures outside the rules (1990 on): national days of mourning, 9/11, Hurricane Sandy.
_NYSE_SPECIAL_CLOSURES: Final[Mapping[date, str]] = {
    date(1994, 4, 27): "Day of mourning (Richard Nixon)",
    date(2001, 9, 11): "September 11 attacks",
    date(2001, 9, 12): "September 11 attacks",
    date(2001, 9, 13): "September 11 attacks",
    date(2001, 9, 14): "September 11 attacks",
    date(2004, 6, 11): "Day of mourning (Ronald Reagan)",
    date(2007, 1, 2): "Day of mourning (Gerald Ford)",
    date(2012, 10, 29): "Hurricane Sandy",
    date(2012, 10, 30): "Hurricane Sandy",
    date(2018, 12, 5): "Day of mourning (George H. W. Bush)",
    date(2025, 1, 9): "Day of mourning (Jimmy Carter)",
}

# Early closes outside the rules (1990 on): the two Fridays after Christmas that closed at
# 13:00, and one-off closes (snow, the 1997 circuit breaker, a 2005 systems problem) as listed
# in the NYSE closings history that pandas_market_calendars transcribes.
_NYSE_SPECIAL_CLOSES: Final[Mapping[date, str]] = {
    date(1994, 2, 11): "14:30",  # snowstorm
    date(1996, 1, 8): "14:00",  # snowstorm
    date(1997, 10, 27): "15:30",  # second circuit-breaker halt
    date(1997, 12, 26): "13:00",  # Friday after Christmas
    date(2003, 12, 26): "13:00",  # Friday after Christmas
    date(2005, 6, 1): "15:56",  # systems communication problem
}

# Late opens (1990 on), from the same history: moments of silence, a transformer explosion,
# snow, computer troubles, and the first anniversary of 9/11.
_NYSE_LATE_OPENS: Final[Mapping[date, str]] = {
    date(1990, 12, 27): "11:00",
    date(1991, 1, 17): "09:31",
    date(1991, 2, 25): "09:31",
    date(1995, 12, 18): "10:30",
    date(1996, 1, 8): "11:00",
    date(2001, 9, 17): "09:33",
    date(2001, 10, 8): "09:31",
    date(2002, 9, 11): "12:00",
    date(2003, 3, 20): "09:32",
    date(2004, 6, 7): "09:32",
    date(2006, 12, 27): "09:32",
}


def _check_nyse_year(year: int) -> None:
    if isinstance(year, bool) or not isinstance(year, int) or year < NYSE_FIRST_DATE.year:
        raise ValueError(
            f"year: NYSE rules are modelled from {NYSE_FIRST_DATE.year} on, got {year!r}"
        )


def nyse_holidays(year: int) -> dict[date, str]:
    """Weekdays of ``year`` on which the NYSE is closed all day, with their names.

    Rules: New Year's Day (Sunday -> Monday; Saturday -> not observed), Martin
    Luther King Jr. Day (3rd Monday of January, from 1998), Washington's
    Birthday (3rd Monday of February), Good Friday, Memorial Day (last Monday
    of May), Juneteenth (June 19, from 2022), Independence Day, Labor Day (1st
    Monday of September), Thanksgiving (4th Thursday of November) and
    Christmas; fixed-date holidays falling on a Saturday are observed on the
    Friday before and on a Sunday on the Monday after. Plus the one-off
    closures listed in ``_NYSE_SPECIAL_CLOSURES``. Years from 1990.
    """
    _check_nyse_year(year)
    out: dict[date, str] = {}
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:  # NYSE Rule 7.2: no Friday closure at year end
        out[_nearest_weekday(new_year)] = "New Year's Day"
    if year >= 1998:
        out[_nth_weekday(year, 1, 0, 3)] = "Martin Luther King Jr. Day"
    out[_nth_weekday(year, 2, 0, 3)] = "Washington's Birthday"
    out[easter(year) - timedelta(days=2)] = "Good Friday"
    out[_last_weekday(year, 5, 0)] = "Memorial Day"
    if year >= 2022:
        out[_nearest_weekday(date(year, 6, 19))] = "Juneteenth"
    out[_nearest_weekday(date(year, 7, 4))] = "Independence Day"
    out[_nth_weekday(year, 9, 0, 1)] = "Labor Day"
    out[_nth_weekday(year, 11, 3, 4)] = "Thanksgiving Day"
    out[_nearest_weekday(date(year, 12, 25))] = "Christmas Day"
    for d, why in _NYSE_SPECIAL_CLOSURES.items():
        if d.year == year:
            out[d] = why
    return dict(sorted(out.items()))


def nyse_early_closes(year: int) -> dict[date, str]:
    """Days of ``year`` on which the NYSE closes before 16:00, with the close time ``"HH:MM"``.

    Rules: the day before Independence Day at 13:00 when July 3 is a Monday,
    Tuesday or Thursday (from 1995) or a Wednesday (from 2013); before 2013 a
    Thursday July 4 moved the early close to Friday July 5 (1996-2012). The day
    after Thanksgiving (from 1992) and Christmas Eve on a Monday to Thursday,
    at 14:00 before 1993 and 13:00 since. Plus the one-off early closes in
    ``_NYSE_SPECIAL_CLOSES``. Years from 1990.
    """
    _check_nyse_year(year)
    out: dict[date, str] = {}
    regular = "14:00" if year < 1993 else "13:00"
    july3 = date(year, 7, 3)
    if year >= 1995 and (july3.weekday() in (0, 1, 3) or (july3.weekday() == 2 and year >= 2013)):
        out[july3] = "13:00"
    july5 = date(year, 7, 5)
    if 1996 <= year <= 2012 and july5.weekday() == 4:
        out[july5] = "13:00"
    if year >= 1992:
        out[_nth_weekday(year, 11, 3, 4) + _ONE_DAY] = regular
    christmas_eve = date(year, 12, 24)
    if christmas_eve.weekday() <= 3:
        out[christmas_eve] = regular
    for d, at in _NYSE_SPECIAL_CLOSES.items():
        if d.year == year:
            out[d] = at
    return dict(sorted(out.items()))


def nyse_late_opens(year: int) -> dict[date, str]:
    """Days of ``year`` on which the NYSE opened after 09:30, with the open time ``"HH:MM"``."""
    _check_nyse_year(year)
    return {d: at for d, at in sorted(_NYSE_LATE_OPENS.items()) if d.year == year}


@lru_cache(maxsize=16)
def nyse(start: DateLike = "1990-01-01", end: DateLike = "2035-12-31") -> Calendar:
    """NYSE regular sessions, 09:30-16:00 America/New_York, Monday to Friday, ``start`` to ``end``.

    Holidays and early closes by rule (:func:`nyse_holidays`,
    :func:`nyse_early_closes`), plus the known one-off closures, early closes
    and late opens. Years ahead are projected by the rules: closures the
    exchange decides on short notice (a national day of mourning) cannot be
    known in advance. Pre- and post-market sessions are not included.
    """
    first = _parse_date(start, "start")
    last = _parse_date(end, "end")
    if first < NYSE_FIRST_DATE:
        raise ValueError(f"start: NYSE rules are modelled from {NYSE_FIRST_DATE} on, got {first}")
    if first > last:
        raise ValueError(f"start/end: start {first} is after end {last}")
    holidays: list[date] = []
    early: dict[date, str] = {}
    late: dict[date, str] = {}
    for year in range(first.year, last.year + 1):
        holidays.extend(nyse_holidays(year))
        early.update(nyse_early_closes(year))
        late.update(nyse_late_opens(year))
    return weekly(
        "NYSE",
        NYSE_TZ,
        open="09:30",
        close="16:00",
        weekdays=(0, 1, 2, 3, 4),
        holidays=holidays,
        early_closes=early,
        start=first,
        end=last,
        late_opens=late,
    )


# --- registry -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _always_open() -> Calendar:
    return Calendar.always_open("24/7")


def _nyse_default() -> Calendar:
    return nyse()


# canonical name -> (aliases, builder); names are matched case-insensitively
_REGISTRY: Final[Mapping[str, tuple[tuple[str, ...], Callable[[], Calendar]]]] = {
    "24/7": (("crypto",), _always_open),
    "NYSE": (("XNYS",), _nyse_default),
}


def known_calendars() -> list[str]:
    """The names :func:`calendar_for` accepts, aliases in parentheses."""
    return [
        f"{name} (alias {', '.join(aliases)})" if aliases else name
        for name, (aliases, _) in _REGISTRY.items()
    ]


def calendar_for(name: str) -> Calendar:
    """The calendar a run spec names: ``"24/7"`` or ``"crypto"``, ``"NYSE"`` or ``"XNYS"``.

    Names are case-insensitive; calendars are built once and shared (they are
    immutable). An unknown name raises a ValueError listing the known ones.
    """
    key = name.strip().casefold() if isinstance(name, str) else None
    for canonical, (aliases, build) in _REGISTRY.items():
        if key in {canonical.casefold(), *(a.casefold() for a in aliases)}:
            return build()
    raise ValueError(
        f"unknown calendar {name!r}: known calendars are {'; '.join(known_calendars())}"
    )
