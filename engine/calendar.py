"""Market hours: the trading sessions of one venue, and the gate orders pass through.

A :class:`Calendar` is a sorted list of non-overlapping half-open sessions
``[open, close)`` in int64 nanoseconds UTC, plus the range ``[start, end)``
they were built for. Every lookup is a binary search (``numpy.searchsorted``),
so a calendar of fifty years of daily sessions answers in microseconds and
:meth:`Calendar.is_open_many` checks a whole batch of timestamps at once.

Nothing here knows about time zones, holidays or the tz database: the
builders in ``tickray.feeds.calendars`` compute sessions in local time and
hand this module plain UTC nanoseconds, so the engine stays pure.

:func:`gate` decides what happens to an order sent while the market is
closed: under ``"wait"`` it reaches the market at the next open, under
``"reject"`` it is refused with a reason naming the venue and the time.

Example::

    >>> cal = Calendar("demo", [10, 30], [20, 40])
    >>> cal.is_open(15), cal.is_open(20), cal.next_open(25), cal.session_close(35)
    (True, False, 30, 40)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from tickray.engine.clock import iso

INT64_MIN: Final = int(np.iinfo(np.int64).min)
INT64_MAX: Final = int(np.iinfo(np.int64).max)

_EMPTY: Final = np.zeros(0, dtype=np.int64)
_EMPTY.setflags(write=False)


def _fmt(ts: int) -> str:
    """ISO-8601 for messages; the raw count for times no calendar date can hold."""
    try:
        return iso(ts)
    except (OverflowError, ValueError, OSError):
        return f"{ts} ns"


class CalendarError(ValueError):
    """Sessions that cannot form a calendar (open not before close, unsorted, overlapping, not int ns)."""


class MarketHoursPolicy(StrEnum):
    """What happens to an order that reaches a closed market.

    ``WAIT``: it is held and reaches the market at the next session's open.
    ``REJECT``: it is refused, with a reason naming the venue and the time.
    """

    WAIT = "wait"
    REJECT = "reject"


def _as_ns_array(values: npt.ArrayLike, what: str) -> npt.NDArray[np.int64]:
    """A read-only 1-D int64 copy of ``values``; integers only (no floats, no bools)."""
    arr = np.asarray(values)
    if arr.size == 0:
        return _EMPTY
    if arr.ndim != 1:
        raise CalendarError(f"{what} must be a 1-D array of int64 ns, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise CalendarError(f"{what} must be int64 nanoseconds UTC, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and int(arr.max()) > INT64_MAX:
        raise CalendarError(f"{what} holds values beyond the int64 range")
    out = arr.astype(np.int64, copy=True)
    out.setflags(write=False)
    return out


class Calendar:
    """Trading sessions of one venue as sorted, non-overlapping [open, close) intervals in ns UTC.

    ``opens[i] < closes[i] <= opens[i + 1]`` for every session ``i``: sessions
    may touch but never overlap. ``start`` and ``end`` bound the range the
    sessions were built for (by default, the first open and the last close):
    outside it the calendar knows nothing, so :meth:`covers` is False there
    and :func:`gate` refuses to guess. Instances are immutable (the arrays are
    read-only) and safe to share between symbols and threads.

    Raises :class:`CalendarError` naming the first offending session.
    """

    __slots__ = ("name", "opens", "closes", "start", "end", "_always")

    name: str
    opens: npt.NDArray[np.int64]
    closes: npt.NDArray[np.int64]
    start: int
    end: int

    def __init__(
        self,
        name: str,
        opens: npt.ArrayLike,
        closes: npt.ArrayLike,
        *,
        start: int | None = None,
        end: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise CalendarError(f"calendar name must be a non-empty string, got {name!r}")
        o = _as_ns_array(opens, f"calendar {name}: opens")
        c = _as_ns_array(closes, f"calendar {name}: closes")
        if o.shape != c.shape:
            raise CalendarError(
                f"calendar {name}: {o.size} opens but {c.size} closes; they must pair up"
            )
        _check_sessions(name, o, c)
        first = int(o[0]) if o.size else 0
        lo = first if start is None else int(start)
        last = int(c[-1]) if c.size else lo
        hi = last if end is None else int(end)
        if lo > hi:
            raise CalendarError(f"calendar {name}: start {_fmt(lo)} is after end {_fmt(hi)}")
        if o.size and (int(o[0]) < lo or int(c[-1]) > hi):
            raise CalendarError(
                f"calendar {name}: sessions run from {_fmt(int(o[0]))} to {_fmt(int(c[-1]))}, "
                f"outside the range [{_fmt(lo)}, {_fmt(hi)}) they were built for"
            )
        self.name = name
        self.opens = o
        self.closes = c
        self.start = lo
        self.end = hi
        self._always = (
            o.size == 1
            and lo == INT64_MIN
            and hi == INT64_MAX
            and (int(o[0]) == INT64_MIN and int(c[0]) == INT64_MAX)
        )

    @classmethod
    def always_open(cls, name: str = "24/7") -> Calendar:
        """A venue that never closes (crypto): one session spanning the whole int64 range."""
        return cls(name, [INT64_MIN], [INT64_MAX], start=INT64_MIN, end=INT64_MAX)

    @property
    def is_always_open(self) -> bool:
        """True for a calendar built by :meth:`always_open` (one session over all of int64)."""
        return self._always

    def __len__(self) -> int:
        """Number of sessions."""
        return int(self.opens.size)

    def __repr__(self) -> str:
        if self.is_always_open:
            return f"Calendar({self.name!r}, always open)"
        return (
            f"Calendar({self.name!r}, {len(self)} sessions, {_fmt(self.start)} .. {_fmt(self.end)})"
        )

    def covers(self, ts: int) -> bool:
        """True when ``ts`` lies in the range the sessions were built for (always for 24/7)."""
        return self._always or self.start <= ts < self.end

    def _index(self, ts: int) -> int:
        """Index of the last session opening at or before ``ts`` (-1 when none)."""
        return int(np.searchsorted(self.opens, ts, side="right")) - 1

    def is_open(self, ts: int) -> bool:
        """True when ``ts`` falls inside a session ``[open, close)``."""
        if self._always:
            return True
        i = self._index(ts)
        return i >= 0 and ts < int(self.closes[i])

    def is_open_many(self, ts: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Elementwise :meth:`is_open` over an int64 array (one ``searchsorted``, no loop)."""
        t = np.asarray(ts, dtype=np.int64)
        if self._always:
            return np.ones(t.shape, dtype=np.bool_)
        if self.opens.size == 0:
            return np.zeros(t.shape, dtype=np.bool_)
        idx = np.searchsorted(self.opens, t, side="right") - 1
        inside = idx >= 0
        close = self.closes[np.clip(idx, 0, None)]
        result: npt.NDArray[np.bool_] = inside & (t < close)
        return result

    def next_open(self, ts: int) -> int | None:
        """``ts`` itself when open, else the next session's open; None when no session follows."""
        if self._always:
            return ts
        i = self._index(ts)
        if i >= 0 and ts < int(self.closes[i]):
            return ts
        if i + 1 < self.opens.size:
            return int(self.opens[i + 1])
        return None

    def session_close(self, ts: int) -> int | None:
        """Close of the session holding ``ts``; None when the market is closed at ``ts``.

        A 24/7 calendar never closes: its one session ends at the int64 maximum.
        """
        if self._always:
            return INT64_MAX
        i = self._index(ts)
        if i >= 0 and ts < int(self.closes[i]):
            return int(self.closes[i])
        return None


def _check_sessions(name: str, opens: npt.NDArray[np.int64], closes: npt.NDArray[np.int64]) -> None:
    """Raise :class:`CalendarError` at the first session that breaks open < close <= next open."""
    bad = np.flatnonzero(opens >= closes)
    if bad.size:
        i = int(bad[0])
        raise CalendarError(
            f"calendar {name}: session {i} opens at {_fmt(int(opens[i]))} but closes at "
            f"{_fmt(int(closes[i]))}; open must be before close"
        )
    if opens.size < 2:
        return
    unsorted = np.flatnonzero(opens[1:] < opens[:-1])
    overlap = np.flatnonzero(opens[1:] < closes[:-1])
    first_unsorted = int(unsorted[0]) + 1 if unsorted.size else None
    first_overlap = int(overlap[0]) + 1 if overlap.size else None
    if first_unsorted is not None and (first_overlap is None or first_unsorted <= first_overlap):
        i = first_unsorted
        raise CalendarError(
            f"calendar {name}: session {i} opens at {_fmt(int(opens[i]))}, before session "
            f"{i - 1} at {_fmt(int(opens[i - 1]))}; sessions must be sorted by open"
        )
    if first_overlap is not None:
        i = first_overlap
        raise CalendarError(
            f"calendar {name}: session {i} opens at {_fmt(int(opens[i]))}, before session "
            f"{i - 1} closes at {_fmt(int(closes[i - 1]))}; sessions must not overlap"
        )


def gate(calendar: Calendar, ts: int, policy: MarketHoursPolicy | str) -> tuple[int | None, str]:
    """The time an order sent at ``ts`` may reach the market, and why when it differs.

    Returns ``(ts, "")`` when the market is open; under ``"wait"`` the next
    session's open and a note saying the order waits; otherwise ``None`` and
    the reason: the market is closed (``"reject"``), no session follows within
    the calendar, or ``ts`` lies outside the range the calendar was built for.
    """
    try:
        mode = MarketHoursPolicy(policy)
    except ValueError:
        raise ValueError(
            f"unknown market-hours policy {policy!r}: expected 'wait' or 'reject'"
        ) from None
    if not calendar.covers(ts):
        return None, (
            f"time {_fmt(ts)} is outside the calendar {calendar.name} "
            f"({_fmt(calendar.start)} .. {_fmt(calendar.end)})"
        )
    if calendar.is_open(ts):
        return ts, ""
    closed = f"market closed ({calendar.name}) at {_fmt(ts)}"
    if mode is MarketHoursPolicy.REJECT:
        return None, closed
    nxt = calendar.next_open(ts)
    if nxt is None:
        return None, f"{closed}; no session follows before {_fmt(calendar.end)}"
    return nxt, f"{closed}; waits for the open at {_fmt(nxt)}"
