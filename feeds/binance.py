"""Load Binance kline (candlestick) CSV files into the canonical BARS schema.

Supported layouts (``.csv`` or ``.csv.gz``, header row optional):

- 12 columns, data.binance.vision: ``open_time,open,high,low,close,volume,close_time,
  quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore``; ``open_time`` is an
  epoch number whose unit (s, ms, us or ns) is detected per file from its magnitude
  (data.binance.vision switched spot files from ms to us in 2025);
- 9 columns, fapi REST dumps: ``timestamp,open,high,low,close,volume,quote_volume,trades,
  close_time`` with an epoch ``timestamp``;
- 6 columns: ``timestamp,open,high,low,close,volume`` where ``timestamp`` is a naive
  ``YYYY-MM-DD HH:MM:SS`` string in UTC (or an epoch number).

``ts`` is always the bar OPEN time.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from tickray.feeds.schemas import (
    TS_TYPE,
    DataError,
    conform,
    format_ts,
    interval_ns,
    interval_text,
    ts_numpy,
)
from tickray.feeds.store import validate_symbol, write_bars

#: The 12 columns of Binance's kline rows (REST responses and data.binance.vision files).
KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)

#: Column names per layout (by column count) and the canonical name each one maps to.
_LAYOUTS: dict[int, tuple[str, ...]] = {
    12: KLINE_COLUMNS,
    9: (
        "timestamp",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trades",
        "close_time",
    ),
    6: ("timestamp", "open", "high", "low", "close", "volume"),
}
_CANONICAL = {
    "open_time": "ts",
    "timestamp": "ts",
    "count": "trade_count",
    "trades": "trade_count",
}
_USED = {
    "open_time",
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "count",
    "trades",
    "taker_buy_volume",
}
_INT_COLUMNS = {"count", "trades"}
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z?")
# Epoch magnitude bands: value < bound -> unit, with the ns multiplier.
_EPOCH_BANDS: tuple[tuple[float, str, int], ...] = (
    (1e11, "s", 10**9),
    (1e14, "ms", 10**6),
    (1e17, "us", 10**3),
    (float("inf"), "ns", 1),
)


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115


def _rows(path: Path) -> Generator[tuple[int, list[str]], None, None]:
    """(1-based line number, fields) of each non-blank line."""
    with _open_text(path) as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if row and any(f.strip() for f in row):
                yield lineno, row


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _epoch_unit(value: float) -> tuple[str, int]:
    for bound, unit, mult in _EPOCH_BANDS:
        if abs(value) < bound:
            return unit, mult
    raise AssertionError("unreachable")  # pragma: no cover


def _find_bad_line(
    path: Path, names: tuple[str, ...], header: bool, epoch: bool
) -> tuple[int, str] | None:
    """Slow path after a pyarrow parse error: the first bad line and what is wrong with it."""
    rows = _rows(path)
    if header:
        next(rows, None)
    for lineno, row in rows:
        if len(row) != len(names):
            return lineno, f"expected {len(names)} columns, got {len(row)}"
        for name, value in zip(names, row, strict=True):
            value = value.strip()
            if name not in _USED or value == "":
                continue
            try:
                if name in _INT_COLUMNS or (name in ("open_time", "timestamp") and epoch):
                    int(value)
                elif name in ("open_time", "timestamp"):
                    if not _DATETIME_RE.fullmatch(value):
                        raise ValueError
                else:
                    float(value)
            except ValueError:
                return lineno, f"cannot parse {name} {value!r}"
    return None


def read_klines_csv(path: str | Path) -> pa.Table:
    """Read one Binance kline CSV (plain or gzip) into a conformed BARS table (ts = open time).

    Raises DataError naming the file for an empty file, an unknown layout (column count),
    an unparsable line (with its line number) or bad bar data (see :func:`conform`).
    """
    path = Path(path)
    rows = _rows(path)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: empty file")
    n_cols = len(first[1])
    names = _LAYOUTS.get(n_cols)
    if names is None:
        raise DataError(
            f"{path}: unknown kline layout with {n_cols} columns on line {first[0]} "
            f"(expected 12 = data.binance.vision, 9 = timestamp..close_time, or 6 = timestamp,OHLCV)"
        )
    lead = first[1][0].strip()
    header = not (_is_number(lead) or _DATETIME_RE.fullmatch(lead))
    if header:
        got = [f.strip().lower() for f in first[1][1:6]]
        if got != list(names[1:6]):
            raise DataError(
                f"{path}: unexpected header {first[1]!r}: columns 2-6 should be "
                f"open,high,low,close,volume"
            )
        data = next(rows, None)
        if data is None:
            raise DataError(f"{path}: empty file (header only, no data rows)")
        lead = data[1][0].strip()
    rows.close()
    epoch = _is_number(lead)

    ts_name = names[0]
    column_types: dict[str, pa.DataType] = {
        name: (pa.int64() if name in _INT_COLUMNS else pa.float64())
        for name in names
        if name in _USED
    }
    column_types[ts_name] = pa.int64() if epoch else pa.timestamp("ns")
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=list(names), skip_rows=int(header)),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types=column_types,
                include_columns=[n for n in names if n in _USED],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        bad = _find_bad_line(path, names, header, epoch)
        if bad is not None:
            raise DataError(f"{path}: line {bad[0]}: {bad[1]}") from None
        msg = str(exc).splitlines()[0]
        raise DataError(f"{path}: cannot parse CSV: {msg}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: empty file (no data rows)")

    ts_col = table.column(ts_name)
    if epoch:
        if ts_col.null_count:
            raise DataError(f"{path}: empty {ts_name} on data row {_first_null_row(ts_col)}")
        raw = np.asarray(ts_col.to_numpy())
        unit, mult = _epoch_unit(float(raw[0]))
        units = np.searchsorted(
            np.array([b for b, _, _ in _EPOCH_BANDS[:-1]]), np.abs(raw).astype(np.float64), "right"
        )
        mixed = np.flatnonzero(units != units[0])
        if mixed.size:
            i = int(mixed[0])
            line = _data_line(path, header, i)
            raise DataError(
                f"{path}: line {line}: {ts_name} {int(raw[i])} is not in {unit} like the first row"
            )
        ts_arr = pa.array(raw * mult, type=pa.int64()).cast(TS_TYPE)
    else:
        ts_arr = ts_col.combine_chunks()

    out = {"ts": ts_arr}
    for name in table.column_names:
        if name != ts_name:
            out[_CANONICAL.get(name, name)] = table.column(name)
    return conform(pa.table(out), "bars", str(path))


def _first_null_row(col: pa.ChunkedArray) -> int:
    return int(np.argmax(np.asarray(col.is_null().to_numpy(zero_copy_only=False))))


def _data_line(path: Path, header: bool, row: int) -> int:
    """1-based line number of data row ``row`` (blank lines counted)."""
    rows = _rows(path)
    if header:
        next(rows, None)
    for i, (lineno, _) in enumerate(rows):
        if i == row:
            rows.close()
            return lineno
    return -1


def infer_interval_ns(table: pa.Table) -> int:
    """Bar interval in ns: the most common positive difference between consecutive ``ts``."""
    ts = ts_numpy(table.column("ts"))
    diff = np.diff(ts)
    diff = diff[diff > 0]
    if diff.size == 0:
        raise DataError("cannot infer the bar interval from fewer than 2 distinct timestamps")
    values, counts = np.unique(diff, return_counts=True)
    return int(values[int(np.argmax(counts))])


def convert_klines(
    paths: Sequence[str | Path],
    root: str | Path,
    symbol: str,
    interval: str | None = None,
) -> list[Path]:
    """Read kline CSVs (e.g. consecutive months), join them in time order and store them.

    ``interval`` (e.g. "1m") is inferred from the data when None; when given it must match
    the data. Files must not overlap. Returns the monthly Parquet files written.
    """
    validate_symbol(symbol)
    if not paths:
        raise DataError(f"convert_klines({symbol}): no input files")
    if len(paths) == 1:
        loaded = [(read_klines_csv(paths[0]), Path(paths[0]))]
    else:
        # CSV parsing and gzip release the GIL: files are read side by side
        with ThreadPoolExecutor(max_workers=min(4, len(paths))) as pool:
            tables = list(pool.map(read_klines_csv, paths))
        loaded = [(t, Path(p)) for t, p in zip(tables, paths, strict=True)]
    loaded.sort(key=lambda tp: int(_ts_bounds(tp[0])[0]))
    for (prev, prev_path), (cur, cur_path) in zip(loaded[:-1], loaded[1:], strict=True):
        prev_last = int(_ts_bounds(prev)[1])
        cur_first = int(_ts_bounds(cur)[0])
        if cur_first <= prev_last:
            raise DataError(
                f"{cur_path}: first bar {format_ts(cur_first)} overlaps {prev_path} "
                f"(its last bar is {format_ts(prev_last)})"
            )
    table = pa.concat_tables([t for t, _ in loaded])
    if interval is None:
        interval = interval_text(infer_interval_ns(table))
    else:
        expected = interval_ns(interval)
        if table.num_rows >= 2:
            found = infer_interval_ns(table)
            if found != expected:
                raise DataError(
                    f"convert_klines({symbol}): interval {interval!r} given but the data in "
                    f"{[str(p) for _, p in loaded]} is spaced {interval_text(found)}"
                )
    return write_bars(root, symbol, interval, table)


def import_klines(
    groups: Mapping[str, Sequence[str | Path]], root: str | Path, interval: str | None = None
) -> list[Path]:
    """:func:`convert_klines` for several symbols (``symbol -> its CSV files``), side by side
    on threads (CSV parsing, gzip and Parquet encoding release the GIL). Returns the files
    written, symbol by symbol in sorted order."""
    names = sorted(groups)
    if len(names) <= 1:
        return [p for s in names for p in convert_klines(groups[s], root, s, interval)]
    with ThreadPoolExecutor(max_workers=min(4, len(names))) as pool:
        parts = list(pool.map(lambda s: convert_klines(groups[s], root, s, interval), names))
    return [p for part in parts for p in part]


def _ts_bounds(table: pa.Table) -> npt.NDArray[np.int64]:
    ts = ts_numpy(table.column("ts"))
    return np.array([ts[0], ts[-1]], dtype=np.int64)
