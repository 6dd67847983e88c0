"""Market hours: engine.calendar (sessions, gate) and feeds.calendars (builders, NYSE rules)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.calendar import (
    INT64_MAX,
    INT64_MIN,
    Calendar,
    CalendarError,
    MarketHoursPolicy,
    gate,
)
from tickray.engine.clock import HOUR, MINUTE, parse_time
from tickray.feeds.calendars import (
    calendar_for,
    easter,
    nyse,
    nyse_early_closes,
    nyse_holidays,
    weekly,
)

T = parse_time  # "2024-07-03T17:00Z" -> ns UTC

NYSE = calendar_for("NYSE")


def _closed_weekdays(cal: Calendar, year: int) -> list[str]:
    """Weekdays of ``year`` on which the market never opens between 15:00 and 16:00 UTC.

    That hour is 10:00-11:00 EST or 11:00-12:00 EDT: inside every regular session and every
    13:00 early close, so a weekday without an open instant there has no session at all.
    """
    out = []
    d = date(year, 1, 1)
    while d.year == year:
        if d.weekday() < 5:
            day = T(d.isoformat())
            probes = np.arange(day + 15 * HOUR, day + 16 * HOUR, 5 * MINUTE, dtype=np.int64)
            if not cal.is_open_many(probes).any():
                out.append(d.isoformat())
        d += timedelta(days=1)
    return out


# --- 24/7 --------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_a_24_7_calendar_is_open_at_every_instant(ts: int) -> None:
    cal = Calendar.always_open()
    assert cal.name == "24/7"
    assert cal.covers(ts)
    assert cal.is_open(ts)
    assert cal.next_open(ts) == ts
    assert cal.session_close(ts) == INT64_MAX  # never closes
    assert cal.is_open_many(np.array([ts], dtype=np.int64)).tolist() == [True]
    assert gate(cal, ts, "reject") == (ts, "")


def test_crypto_is_an_alias_of_24_7() -> None:
    assert calendar_for("crypto").is_always_open
    assert calendar_for("24/7").is_always_open
    assert calendar_for("XNYS") is calendar_for("nyse") is NYSE  # built once, case-insensitive


def test_an_unknown_calendar_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown calendar 'LSE'.*24/7.*crypto.*NYSE.*XNYS"):
        calendar_for("LSE")


# --- NYSE holidays, early closes, DST ------------------------------------------------------------

# Full-day closures on weekdays, written out by hand from NYSE's published holiday schedules.
NYSE_CLOSED_2023 = [
    "2023-01-02",  # New Year's Day, observed (Jan 1 is a Sunday)
    "2023-01-16",  # Martin Luther King Jr. Day
    "2023-02-20",  # Washington's Birthday
    "2023-04-07",  # Good Friday
    "2023-05-29",  # Memorial Day
    "2023-06-19",  # Juneteenth
    "2023-07-04",  # Independence Day
    "2023-09-04",  # Labor Day
    "2023-11-23",  # Thanksgiving Day
    "2023-12-25",  # Christmas Day
]
NYSE_CLOSED_2024 = [
    "2024-01-01",
    "2024-01-15",
    "2024-02-19",
    "2024-03-29",
    "2024-05-27",
    "2024-06-19",
    "2024-07-04",
    "2024-09-02",
    "2024-11-28",
    "2024-12-25",
]
NYSE_CLOSED_2025 = [
    "2025-01-01",
    "2025-01-09",  # national day of mourning for President Carter (not in the printed schedule)
    "2025-01-20",
    "2025-02-17",
    "2025-04-18",
    "2025-05-26",
    "2025-06-19",
    "2025-07-04",
    "2025-09-01",
    "2025-11-27",
    "2025-12-25",
]


@pytest.mark.parametrize(
    ("year", "expected"),
    [(2023, NYSE_CLOSED_2023), (2024, NYSE_CLOSED_2024), (2025, NYSE_CLOSED_2025)],
)
def test_nyse_is_closed_on_exactly_the_published_holidays(year: int, expected: list[str]) -> None:
    assert _closed_weekdays(NYSE, year) == expected
    assert [d.isoformat() for d in nyse_holidays(year)] == expected


@pytest.mark.parametrize(
    ("day", "close_utc"),
    [
        ("2024-07-03", "2024-07-03T17:00Z"),  # 13:00 EDT = UTC-4
        ("2024-11-29", "2024-11-29T18:00Z"),  # 13:00 EST = UTC-5
        ("2024-12-24", "2024-12-24T18:00Z"),  # 13:00 EST
    ],
)
def test_nyse_closes_early_at_13_new_york_time(day: str, close_utc: str) -> None:
    close = T(close_utc)
    assert NYSE.session_close(close - HOUR) == close
    assert NYSE.is_open(close - 1)
    assert not NYSE.is_open(close)
    assert nyse_early_closes(int(day[:4]))[date.fromisoformat(day)] == "13:00"


def test_nyse_early_closes_of_2023_to_2025_are_the_published_ones() -> None:
    # 2023: Dec 24 is a Sunday, so no Christmas Eve half day
    assert [str(d) for d in nyse_early_closes(2023)] == ["2023-07-03", "2023-11-24"]
    assert [str(d) for d in nyse_early_closes(2024)] == ["2024-07-03", "2024-11-29", "2024-12-24"]
    assert [str(d) for d in nyse_early_closes(2025)] == ["2025-07-03", "2025-11-28", "2025-12-24"]


def test_nyse_opens_at_09_30_new_york_time_across_dst_changes() -> None:
    # US clocks spring forward on Sunday 2024-03-10 and fall back on Sunday 2024-11-03
    assert NYSE.next_open(T("2024-03-08T00:00Z")) == T("2024-03-08T14:30Z")  # EST, UTC-5
    assert NYSE.next_open(T("2024-03-11T00:00Z")) == T("2024-03-11T13:30Z")  # EDT, UTC-4
    assert NYSE.session_close(T("2024-03-11T13:30Z")) == T("2024-03-11T20:00Z")
    assert NYSE.next_open(T("2024-11-01T00:00Z")) == T("2024-11-01T13:30Z")  # EDT
    assert NYSE.next_open(T("2024-11-04T00:00Z")) == T("2024-11-04T14:30Z")  # EST
    assert not NYSE.is_open(T("2024-03-11T13:29:59Z"))


def test_a_weekly_calendar_follows_its_own_zone_s_dst_dates() -> None:
    # the UK moves its clocks on 2024-03-31, three weeks after the US
    lse = weekly("LSE", "Europe/London", "08:00", "16:30", start="2024-03-01", end="2024-04-30")
    assert lse.next_open(T("2024-03-28T00:00Z")) == T("2024-03-28T08:00Z")  # GMT
    assert lse.next_open(T("2024-04-02T00:00Z")) == T("2024-04-02T07:00Z")  # BST, UTC+1
    assert lse.covers(T("2024-03-01T00:00Z")) and not lse.covers(T("2024-05-01T00:00Z"))


def test_next_open_skips_the_weekend() -> None:
    friday_evening = T("2024-03-08T21:00Z")  # after Friday's 16:00 EST close
    assert not NYSE.is_open(friday_evening)
    assert NYSE.next_open(friday_evening) == T("2024-03-11T13:30Z")  # Monday 09:30 EDT


def test_next_open_skips_a_holiday() -> None:
    # Wednesday 2024-07-03 closes at 13:00 EDT; Thursday is Independence Day
    assert NYSE.next_open(T("2024-07-03T17:00Z")) == T("2024-07-05T13:30Z")
    # Thursday 2024-03-28 closes at 16:00 EDT; Friday is Good Friday, then the weekend
    assert NYSE.next_open(T("2024-03-28T20:00Z")) == T("2024-04-01T13:30Z")


def test_next_open_is_the_time_itself_when_the_market_is_open() -> None:
    ts = T("2024-07-02T15:00Z")
    assert NYSE.next_open(ts) == ts
    assert NYSE.session_close(ts) == T("2024-07-02T20:00Z")
    assert NYSE.session_close(T("2024-07-04T15:00Z")) is None


def test_nyse_observes_saturday_and_sunday_holidays_by_the_nyse_rules() -> None:
    # Saturday New Year's Day is not moved to the Friday before (NYSE Rule 7.2)
    assert NYSE.is_open(T("2021-12-31T15:00Z"))
    assert NYSE.is_open(T("2010-12-31T15:00Z"))
    # Sunday New Year's Day -> Monday
    assert not NYSE.is_open(T("2017-01-02T15:00Z"))
    # Juneteenth: Sunday 2022-06-19 -> Monday; Saturday 2027-06-19 -> Friday; none before 2022
    assert not NYSE.is_open(T("2022-06-20T15:00Z"))
    assert not NYSE.is_open(T("2027-06-18T15:00Z"))
    assert NYSE.is_open(T("2021-06-18T15:00Z"))
    # Independence Day on a Saturday (2026) -> Friday July 3, and no half day on July 2
    assert not NYSE.is_open(T("2026-07-03T15:00Z"))
    assert NYSE.session_close(T("2026-07-02T15:00Z")) == T("2026-07-02T20:00Z")
    # Christmas on a Saturday (2021) -> Friday Dec 24 closed
    assert not NYSE.is_open(T("2021-12-24T15:00Z"))


def test_nyse_special_closures_and_late_opens() -> None:
    for day in ("2001-09-11", "2001-09-14", "2004-06-11", "2007-01-02", "2012-10-30", "2018-12-05"):
        assert not NYSE.is_open(T(day + "T15:00Z")), day
    assert NYSE.next_open(T("2001-09-11T00:00Z")) == T("2001-09-17T13:33Z")  # 09:33 EDT
    assert NYSE.next_open(T("2002-09-11T00:00Z")) == T("2002-09-11T16:00Z")  # noon EDT


def test_martin_luther_king_day_is_a_holiday_from_1998() -> None:
    assert NYSE.is_open(T("1997-01-20T15:00Z"))
    assert not NYSE.is_open(T("1998-01-19T15:00Z"))


@pytest.mark.parametrize(
    ("year", "sunday"),
    [(2000, "2000-04-23"), (2008, "2008-03-23"), (2024, "2024-03-31"), (2038, "2038-04-25")],
)
def test_easter_follows_the_gregorian_computus(year: int, sunday: str) -> None:
    assert easter(year).isoformat() == sunday


def test_nyse_refuses_years_before_its_rules() -> None:
    with pytest.raises(ValueError, match="start"):
        nyse(start="1985-01-01")


def test_a_calendar_covers_only_the_range_it_was_built_for() -> None:
    cal = nyse("2024-01-01", "2024-12-31")
    assert cal.covers(T("2024-01-01T05:00Z"))  # local midnight of the first day
    assert not cal.covers(T("2024-01-01T04:59Z"))
    assert not cal.covers(T("2025-01-01T05:00Z"))
    assert cal.next_open(T("2024-12-31T21:00Z")) is None  # no later session within the range


# --- is_open_many ------------------------------------------------------------------------------

_start, _end = T("1989-12-25"), T("2036-01-10")
_edges = np.concatenate([NYSE.opens, NYSE.closes])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=_start, max_value=_end), max_size=50),
    st.lists(st.tuples(st.integers(0, _edges.size - 1), st.integers(-1, 1)), max_size=20),
)
def test_is_open_many_equals_is_open_elementwise(
    times: list[int], near_edges: list[tuple[int, int]]
) -> None:
    # random instants, plus instants exactly at or one ns around session opens and closes
    ts = np.array(times + [int(_edges[i]) + d for i, d in near_edges], dtype=np.int64)
    assert NYSE.is_open_many(ts).tolist() == [NYSE.is_open(int(t)) for t in ts]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(1, 30)), max_size=10),
    st.lists(st.integers(-10, 400)),
)
def test_is_open_many_equals_is_open_on_any_calendar(
    sessions: list[tuple[int, int]], times: list[int]
) -> None:
    # each session starts ``gap >= 0`` after the previous close (0: they touch) and lasts >= 1
    opens, closes, t = [], [], 0
    for gap, length in sessions:
        opens.append(t + gap)
        closes.append(t + gap + length)
        t = closes[-1]
    cal = Calendar("random", np.array(opens, dtype=np.int64), np.array(closes, dtype=np.int64))
    ts = np.array(times, dtype=np.int64)
    assert cal.is_open_many(ts).tolist() == [cal.is_open(int(t)) for t in ts]
    for x in times:  # and next_open / session_close agree with a scan
        inside = [c for o, c in zip(opens, closes, strict=True) if o <= x < c]
        later = [o for o in opens if o > x]
        assert cal.session_close(x) == (inside[0] if inside else None)
        assert cal.next_open(x) == (x if inside else later[0] if later else None)


# --- gate --------------------------------------------------------------------------------------


def test_gate_passes_an_order_straight_through_while_the_market_is_open() -> None:
    ts = T("2024-07-02T15:00Z")
    assert gate(NYSE, ts, MarketHoursPolicy.WAIT) == (ts, "")
    assert gate(NYSE, ts, "reject") == (ts, "")


def test_gate_wait_holds_an_order_until_the_next_open() -> None:
    at, why = gate(NYSE, T("2024-07-04T14:30Z"), "wait")
    assert at == T("2024-07-05T13:30Z")
    assert why.startswith("market closed (NYSE) at 2024-07-04T14:30:00Z")


def test_gate_reject_refuses_an_order_with_the_venue_and_time() -> None:
    assert gate(NYSE, T("2024-07-04T14:30Z"), MarketHoursPolicy.REJECT) == (
        None,
        "market closed (NYSE) at 2024-07-04T14:30:00Z",
    )


def test_gate_wait_rejects_when_no_session_follows() -> None:
    cal = Calendar("tiny", [10], [20], start=0, end=100)
    at, why = gate(cal, 50, "wait")
    assert at is None and "market closed (tiny)" in why and "no session follows" in why


def test_gate_refuses_times_outside_the_calendar() -> None:
    cal = nyse("2024-01-01", "2024-12-31")
    at, why = gate(cal, T("2025-01-02T15:00Z"), "wait")
    assert at is None and "outside the calendar NYSE" in why


def test_gate_rejects_an_unknown_policy() -> None:
    with pytest.raises(ValueError, match="policy 'later'"):
        gate(NYSE, 0, "later")


# --- construction errors -------------------------------------------------------------------------


def test_a_session_that_does_not_open_before_it_closes_is_named() -> None:
    with pytest.raises(CalendarError, match="session 1 opens .* but closes"):
        Calendar("x", [0, 30, 50], [10, 30, 60])


def test_unsorted_sessions_are_named() -> None:
    with pytest.raises(CalendarError, match="session 2 opens .* before session 1 .* sorted"):
        Calendar("x", [0, 30, 20], [10, 40, 25])


def test_overlapping_sessions_are_named() -> None:
    with pytest.raises(
        CalendarError, match="session 1 opens .* before session 0 closes .* overlap"
    ):
        Calendar("x", [0, 5, 30], [10, 20, 40])


def test_sessions_must_be_integer_nanoseconds_in_pairs() -> None:
    with pytest.raises(CalendarError, match="int64"):
        Calendar("x", [0.0, 1.5], [1.0, 2.0])
    with pytest.raises(CalendarError, match="pair up"):
        Calendar("x", [0, 10], [5])
    with pytest.raises(CalendarError, match="outside the range"):
        Calendar("x", [0], [10], start=5, end=20)


def test_touching_sessions_are_allowed_and_the_close_belongs_to_the_next() -> None:
    cal = Calendar("x", [0, 10], [10, 20])
    assert cal.is_open(10) and cal.session_close(10) == 20
    assert cal.opens.flags.writeable is False  # immutable, safe to share


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"open": "9:30"}, "open"),
        ({"close": "25:00"}, "close"),
        ({"open": "16:00", "close": "09:30"}, "open/close"),
        ({"weekdays": (0, 7)}, "weekdays"),
        ({"weekdays": ()}, "weekdays"),
        ({"holidays": "2024-07-04"}, "holidays"),
        ({"holidays": ["2024-13-01"]}, r"holidays\[0\]"),
        ({"early_closes": {"2024-07-06": "13:00"}}, r"early_closes\[2024-07-06\]"),  # Saturday
        ({"early_closes": {"2024-07-03": "1pm"}}, r"early_closes\[2024-07-03\]"),
        ({"early_closes": {"2024-07-03": "08:00"}}, "early_closes"),  # before the open
        ({"start": "2024-02-30"}, "start"),
        ({"start": "2025-01-01", "end": "2024-01-01"}, "start/end"),
        ({"name": ""}, "name"),
    ],
)
def test_weekly_names_the_argument_at_fault(kwargs: dict[str, object], named: str) -> None:
    args: dict[str, object] = {"name": "X", "tz": "America/New_York", **kwargs}
    with pytest.raises(ValueError, match=rf"^{named}"):
        weekly(**args)


def test_weekly_applies_holidays_early_closes_and_weekdays() -> None:
    cal = weekly(
        "X",
        "America/New_York",
        weekdays=(0, 1, 2),
        holidays=[date(2024, 7, 1), "2024-07-04"],  # Thursday: not a trading day anyway
        early_closes={"2024-07-03": "12:00"},
        start="2024-07-01",
        end="2024-07-07",
    )
    # Mon closed (holiday), Tue normal, Wed until 12:00 EDT, Thu-Sun not trading weekdays
    assert cal.opens.tolist() == [T("2024-07-02T13:30Z"), T("2024-07-03T13:30Z")]
    assert cal.closes.tolist() == [T("2024-07-02T20:00Z"), T("2024-07-03T16:00Z")]
