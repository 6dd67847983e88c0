"""Canonical Arrow schemas for market data, and the one function that conforms a table to them.

Every source (exchange CSV dumps, REST, websocket recordings, synthetic data) is normalised
into one of these schemas before it is stored or replayed. All times are int64 nanoseconds
since the epoch, UTC, held in a ``timestamp("ns", tz="UTC")`` column named ``ts``.

Kinds: ``bars`` (ts = bar OPEN time), ``trades``, ``book_tops`` (best bid/ask),
``depth_updates`` (one row per changed price level) and ``funding`` (rate, mark and index).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from tickray.engine.clock import SECOND, duration_ns, format_duration, iso

SCHEMA_VERSION = b"1"
TS_TYPE = pa.timestamp("ns", tz="UTC")


class DataError(ValueError):
    """Bad market data: the message names the file (or source), the field or row, and the problem."""


def _schema(kind: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(
        fields, metadata={b"tickray.kind": kind.encode(), b"tickray.schema_version": SCHEMA_VERSION}
    )


def _ts() -> pa.Field:
    return pa.field("ts", TS_TYPE, nullable=False)


BARS = _schema(
    "bars",
    [
        _ts(),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("quote_volume", pa.float64(), nullable=True),
        pa.field("trade_count", pa.int64(), nullable=True),
        pa.field("taker_buy_volume", pa.float64(), nullable=True),
    ],
)

TRADES = _schema(
    "trades",
    [
        _ts(),
        pa.field("trade_id", pa.int64(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("qty", pa.float64(), nullable=False),
        pa.field("is_buyer_maker", pa.bool_(), nullable=False),
    ],
)

BOOK_TOPS = _schema(
    "book_tops",
    [
        _ts(),
        pa.field("update_id", pa.int64(), nullable=True),
        pa.field("bid_price", pa.float64(), nullable=False),
        pa.field("bid_qty", pa.float64(), nullable=False),
        pa.field("ask_price", pa.float64(), nullable=False),
        pa.field("ask_qty", pa.float64(), nullable=False),
    ],
)

DEPTH_UPDATES = _schema(
    "depth_updates",
    [
        _ts(),
        pa.field("first_update_id", pa.int64(), nullable=False),
        pa.field("last_update_id", pa.int64(), nullable=False),
        pa.field("prev_last_update_id", pa.int64(), nullable=True),
        pa.field("side", pa.int8(), nullable=False),  # 1 bid, -1 ask
        pa.field("price", pa.float64(), nullable=False),
        pa.field("qty", pa.float64(), nullable=False),  # 0 deletes the level
        pa.field("is_snapshot", pa.bool_(), nullable=False),
    ],
)

FUNDING = _schema(
    "funding",
    [
        _ts(),
        pa.field("funding_rate", pa.float64(), nullable=True),
        pa.field("mark_price", pa.float64(), nullable=True),
        pa.field("index_price", pa.float64(), nullable=True),
    ],
)

SCHEMAS: dict[str, pa.Schema] = {
    "bars": BARS,
    "trades": TRADES,
    "book_tops": BOOK_TOPS,
    "depth_updates": DEPTH_UPDATES,
    "funding": FUNDING,
}

#: Kinds whose ``ts`` must be strictly increasing (the others only non-decreasing).
STRICT_TS_KINDS = frozenset({"bars"})


def schema_for(kind: str) -> pa.Schema:
    """The canonical schema of ``kind``; DataError for an unknown kind."""
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise DataError(f"unknown data kind {kind!r}: expected one of {sorted(SCHEMAS)}") from None


def format_ts(ts_ns: int) -> str:
    """ISO 8601 UTC text of a nanosecond timestamp, e.g. ``2024-01-01T00:05:00Z``."""
    return iso(ts_ns)


def interval_ns(text: str) -> int:
    """Length in ns of an interval written ``<n><s|m|h|d|w>`` ("1m" = one minute, "1w" = 7 days)."""
    try:
        ns = duration_ns(text)
    except ValueError:
        ns = 0
    if ns <= 0 or ns % SECOND:
        raise DataError(
            f"bad interval {text!r}: expected <n><s|m|h|d|w> such as '1s', '1m', '15m', '1h', '1d', '1w'"
        )
    return ns


def interval_text(ns: int) -> str:
    """Shortest ``<n><unit>`` text for an interval in ns (inverse of :func:`interval_ns`)."""
    if ns <= 0 or ns % SECOND:
        raise DataError(f"interval of {ns} ns is not a positive whole number of seconds")
    return format_duration(ns)


def ts_numpy(col: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.int64]:
    """int64 ns view of a timestamp column without nulls (copies only if chunked)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if col.type != TS_TYPE:
        col = col.cast(TS_TYPE)
    # Reinterpret as int64 in Arrow: to_numpy on a tz-aware timestamp goes through
    # datetime conversion, which is ~100x slower.
    return np.asarray(col.view(pa.int64()).to_numpy(zero_copy_only=False))


def check_monotonic(
    ts: npt.NDArray[np.int64], strict: bool, source: str, kind: str, row_offset: int = 0
) -> None:
    """Raise DataError at the first row whose ts goes back (or repeats, when ``strict``)."""
    if ts.size < 2:
        return
    diff = np.diff(ts)
    bad = np.flatnonzero(diff <= 0) if strict else np.flatnonzero(diff < 0)
    if bad.size == 0:
        return
    i = int(bad[0]) + 1
    what = "duplicate timestamp" if diff[i - 1] == 0 else "non-monotonic timestamp"
    raise DataError(
        f"{source}: {kind} row {row_offset + i}: {what} {format_ts(int(ts[i]))} "
        f"after {format_ts(int(ts[i - 1]))}"
    )


def _cast(col: pa.ChunkedArray, field: pa.Field, source: str, kind: str) -> pa.ChunkedArray:
    target = field.type
    if col.type == target:
        return col
    try:
        if field.name == "ts" and pa.types.is_integer(col.type):
            # Bare integers in a ts column are taken as ns since the epoch, UTC.
            return col.cast(pa.int64()).cast(TS_TYPE)
        if field.name == "ts" and pa.types.is_timestamp(col.type) and col.type.tz is None:
            return col.cast(pa.timestamp(col.type.unit, tz="UTC")).cast(TS_TYPE)
        return col.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{source}: column {field.name!r} of type {col.type} cannot be cast to {target} "
            f"for {kind}: {first}"
        ) from None


def conform(table: pa.Table, kind: str, source: str) -> pa.Table:
    """Return ``table`` in the canonical schema of ``kind`` (cast, ordered, missing nullables added).

    Raises DataError (message starts with ``source``) for a missing required column, a failed
    cast, a null or non-finite value in a required column, or a ``ts`` that is not increasing
    (strictly for bars: a repeat is a "duplicate timestamp"; going back is "non-monotonic").
    A naive timestamp ``ts`` is read as UTC; an integer ``ts`` as ns since the epoch.
    """
    schema = schema_for(kind)
    n = table.num_rows
    present = set(table.column_names)
    for field in schema:
        if not field.nullable and field.name not in present:
            raise DataError(f"{source}: missing column {field.name!r} for {kind}")

    columns: list[pa.ChunkedArray] = []
    for field in schema:
        if field.name in present:
            columns.append(_cast(table.column(field.name), field, source, kind))
        else:
            columns.append(pa.chunked_array([pa.nulls(n, field.type)], type=field.type))

    ts_col = columns[0]
    if ts_col.null_count:
        first = _first_null(ts_col)
        raise DataError(f"{source}: null ts at {kind} row {first}")
    ts = ts_numpy(ts_col)

    for field, col in zip(schema, columns, strict=True):
        if field.nullable or field.name == "ts":
            continue
        if col.null_count:
            row = _first_null(col)
            raise DataError(
                f"{source}: null {field.name!r} at {kind} row {row} (ts {format_ts(int(ts[row]))})"
            )
        if pa.types.is_floating(field.type):
            values = np.asarray(col.to_numpy())
            finite = np.isfinite(values)
            if not finite.all():
                row = int(np.argmin(finite))
                raise DataError(
                    f"{source}: non-finite {field.name!r} ({values[row]}) at {kind} row {row} "
                    f"(ts {format_ts(int(ts[row]))})"
                )

    check_monotonic(ts, kind in STRICT_TS_KINDS, source, kind)
    return pa.Table.from_arrays(columns, schema=schema)


def _first_null(col: pa.ChunkedArray) -> int:
    mask = np.asarray(col.is_null().to_numpy(zero_copy_only=False))
    return int(np.argmax(mask))


def is_finite_number(value: object) -> bool:
    """True for an int or float (not bool) that is finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def open_parquet(path: str | Path) -> pq.ParquetFile:
    """Open a Parquet file, turning unreadable bytes into a DataError that names the file."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
