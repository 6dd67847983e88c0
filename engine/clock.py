"""Simulation time: int64 nanoseconds since the epoch, UTC, and the step grid.

The step grid is the set of times ``k * sync`` (k an integer), aligned to the
epoch, so that every actor and every run agrees on where steps end whatever
the start time. A step is the half-open interval ``(t0, t1]`` between two
consecutive boundaries. Nothing here reads the wall clock.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

NS: Final = 1
US: Final = 1_000
MS: Final = 1_000_000
SECOND: Final = 1_000_000_000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
WEEK: Final = 7 * DAY
YEAR_NS: Final = 365 * DAY  # crypto markets trade 24/7/365

_UNITS: Final = {
    "ns": NS,
    "us": US,
    "ms": MS,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
    "d": DAY,
    "w": WEEK,
}
_DURATION = re.compile(r"^([1-9][0-9]*)(ns|us|ms|s|m|h|d|w)$")


def duration_ns(text: str) -> int:
    """Parse ``"1m"``, ``"15m"``, ``"1h"``, ``"1d"``, ``"500ms"``, ``"250us"`` ... into nanoseconds.

    Months are not accepted: they have no fixed length.
    """
    m = _DURATION.match(text) if isinstance(text, str) else None
    if m is None or int(m.group(1)) <= 0:
        raise ValueError(
            f"invalid duration {text!r}: expected a positive count and a unit "
            "(ns, us, ms, s, m, h, d, w), like '1m' or '4h'"
        )
    return int(m.group(1)) * _UNITS[m.group(2)]


def format_duration(ns: int) -> str:
    """The shortest exact text for a duration, the inverse of :func:`duration_ns`."""
    for unit, size in (("w", WEEK), ("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    for unit, size in (("ms", MS), ("us", US)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    if ns > 0:
        return f"{ns}ns"
    raise ValueError(f"duration must be positive, got {ns} ns")


def parse_time(text: str) -> int:
    """Parse an ISO-8601 date or time into ns UTC; a time without offset is UTC."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise ValueError(
            f"invalid time {text!r}: expected ISO-8601 like '2024-01-31' or '2024-01-31T12:00Z'"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * SECOND + delta.microseconds * US


def iso(ts: int) -> str:
    """Format ns UTC as ISO-8601 with a ``Z`` (sub-second digits only when present)."""
    sec, ns = divmod(int(ts), SECOND)
    base = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if ns:
        return f"{base}.{ns:09d}".rstrip("0") + "Z"
    return base + "Z"


def ceil_to(ts: int, step: int) -> int:
    """The first grid time ``k * step`` at or after ``ts``."""
    return -((-ts) // step) * step


def floor_to(ts: int, step: int) -> int:
    """The last grid time ``k * step`` at or before ``ts``."""
    return (ts // step) * step
