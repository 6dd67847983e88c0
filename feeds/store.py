"""The canonical on-disk layout of bars: ``ROOT/bars/<interval>/<SYMBOL>/<YYYY-MM>.parquet``.

One file per calendar month (UTC) of bar open time, each in the canonical BARS schema, written
atomically (temp file in the same folder, then ``os.replace``) with fixed writer settings so that
identical input gives byte-identical files. ``ROOT/symbols.json`` optionally holds per-symbol
trading rules (tick size, step size, minimum quantity and notional).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tickray.feeds.schemas import (
    DataError,
    conform,
    format_ts,
    interval_ns,
    is_finite_number,
    open_parquet,
    ts_numpy,
)

SYMBOL_RE = re.compile(r"[A-Z0-9_-]+")
MONTH_RE = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
MONTH_FILE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9].parquet"
SPECS_FILE = "symbols.json"
SPEC_FIELDS = ("tick_size", "step_size", "min_qty", "min_notional")

#: Fixed Parquet writer settings: same input table -> same bytes.
WRITER_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 1,
    "row_group_size": 65536,
    "version": "2.6",
    "data_page_size": 1 << 20,
    # float prices rarely repeat: dictionary pages cost time and bytes (measured: 14.9 ->
    # 10.8 MB and 0.31 -> 0.21 s for the real 1m kline months)
    "use_dictionary": False,
    "write_statistics": True,
}


def validate_symbol(symbol: str) -> str:
    """Return ``symbol`` if it is upper-case ``[A-Z0-9_-]+``; DataError otherwise."""
    if not isinstance(symbol, str) or SYMBOL_RE.fullmatch(symbol) is None:
        raise DataError(f"bad symbol {symbol!r}: expected upper-case letters, digits, '_' or '-'")
    return symbol


def _validate_month(month: str) -> str:
    if not isinstance(month, str) or MONTH_RE.fullmatch(month) is None:
        raise DataError(f"bad month {month!r}: expected YYYY-MM")
    return month


def symbol_dir(root: str | Path, interval: str, symbol: str) -> Path:
    """Folder holding one symbol's monthly bar files."""
    interval_ns(interval)
    return Path(root) / "bars" / interval / validate_symbol(symbol)


def bars_path(root: str | Path, interval: str, symbol: str, month: str) -> Path:
    """Path of the bar file for ``month`` ("YYYY-MM", UTC, by bar open time)."""
    return symbol_dir(root, interval, symbol) / f"{_validate_month(month)}.parquet"


def month_bounds_ns(month: str) -> tuple[int, int]:
    """[start, end) of a calendar month "YYYY-MM" in ns since the epoch, UTC."""
    start = np.datetime64(_validate_month(month), "M")
    return (
        int(start.astype("datetime64[ns]").astype(np.int64)),
        int((start + 1).astype("datetime64[ns]").astype(np.int64)),
    )


def _month_keys(ts: np.ndarray) -> np.ndarray:
    return ts.astype("datetime64[ns]").astype("datetime64[M]")


def write_parquet_atomic(
    table: pa.Table, path: Path, options: Mapping[str, object] | None = None
) -> None:
    """Write ``table`` to ``path`` with ``options`` (default :data:`WRITER_OPTIONS`) via a
    temp file, fsync and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(table, fh, **(WRITER_OPTIONS if options is None else options))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _merge_existing(path: Path, new: pa.Table) -> pa.Table:
    """Merge ``new`` bars into the bars stored at ``path``.

    Rows whose ts is already stored must be identical to the stored row (a re-write is a no-op);
    a different row at an existing ts is rejected.
    """
    old = conform(open_parquet(path).read(), "bars", str(path))
    old_ts, new_ts = ts_numpy(old.column("ts")), ts_numpy(new.column("ts"))
    common, i_old, i_new = np.intersect1d(old_ts, new_ts, assume_unique=True, return_indices=True)
    if common.size:
        same = old.take(pa.array(i_old)).equals(new.take(pa.array(i_new)))
        if not same:
            raise DataError(
                f"{path}: {common.size} new bar(s) overlap stored bars with different values "
                f"(first at ts {format_ts(int(common[0]))}); refusing to overwrite"
            )
        keep = np.ones(new.num_rows, dtype=bool)
        keep[i_new] = False
        new = new.filter(pa.array(keep))
        if new.num_rows == 0:
            return old
    merged = pa.concat_tables([old, new])
    order = pc.sort_indices(merged, sort_keys=[("ts", "ascending")])
    return merged.take(order).combine_chunks()


def write_bars(root: str | Path, symbol: str, interval: str, table: pa.Table) -> list[Path]:
    """Conform ``table`` to BARS and write it as monthly files; returns the files written.

    An existing month file is merged with the new bars (identical overlapping bars are accepted,
    conflicting ones raise DataError). Files are written atomically and deterministically.
    """
    sdir = symbol_dir(root, interval, symbol)
    bars = conform(table, "bars", f"write_bars({symbol}, {interval})").combine_chunks()
    if bars.num_rows == 0:
        return []
    ts = ts_numpy(bars.column("ts"))
    months = _month_keys(ts)
    cuts = [0, *(np.flatnonzero(months[1:] != months[:-1]) + 1).tolist(), len(ts)]

    def write(lo: int, hi: int) -> Path:
        path = sdir / f"{months[lo]}.parquet"
        part = bars.slice(lo, hi - lo)
        if path.exists():
            part = _merge_existing(path, part)
        write_parquet_atomic(part, path)
        return path

    spans = list(zip(cuts[:-1], cuts[1:], strict=True))
    if len(spans) == 1:
        return [write(*spans[0])]
    # one file per month, written side by side (Parquet encoding releases the GIL)
    with ThreadPoolExecutor(max_workers=min(4, len(spans))) as pool:
        return list(pool.map(lambda span: write(*span), spans))


def list_symbols(root: str | Path, interval: str) -> list[str]:
    """Symbols with at least one bar file for ``interval``, sorted."""
    base = Path(root) / "bars" / interval
    interval_ns(interval)
    if not base.is_dir():
        return []
    return sorted(
        d.name
        for d in base.iterdir()
        if d.is_dir() and SYMBOL_RE.fullmatch(d.name) and any(d.glob(MONTH_FILE_GLOB))
    )


def bar_files(root: str | Path, interval: str, symbol: str) -> list[Path]:
    """One symbol's monthly bar files, sorted by month; DataError if there are none."""
    sdir = symbol_dir(root, interval, symbol)
    files = sorted(sdir.glob(MONTH_FILE_GLOB)) if sdir.is_dir() else []
    files = [f for f in files if MONTH_RE.fullmatch(f.stem)]
    if not files:
        raise DataError(f"unknown symbol {symbol!r}: no data under {sdir}")
    return files


def ts_statistics(pf: pq.ParquetFile, path: Path) -> list[tuple[int, int] | None]:
    """Per row group (min, max) of the ``ts`` column in ns from Parquet statistics (None if absent)."""
    meta = pf.metadata
    idx = pf.schema_arrow.get_field_index("ts")
    if idx < 0:
        raise DataError(f"{path}: missing column 'ts'")
    unit = pf.schema_arrow.field(idx).type
    scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit.unit]
    out: list[tuple[int, int] | None] = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        stats = rg.column(idx).statistics
        if rg.num_rows == 0 or stats is None or not stats.has_min_max:
            out.append(None)
        else:
            out.append((int(stats.min_raw) * scale, int(stats.max_raw) * scale))
    return out


def _file_range(path: Path, first: bool) -> int | None:
    pf = open_parquet(path)
    try:
        stats = ts_statistics(pf, path)
        groups = range(len(stats)) if first else range(len(stats) - 1, -1, -1)
        for i in groups:
            if pf.metadata.row_group(i).num_rows == 0:
                continue
            st = stats[i]
            if st is None:  # no statistics: read just this row group's ts column
                ts = ts_numpy(pf.read_row_group(i, columns=["ts"]).column("ts"))
                st = (int(ts.min()), int(ts.max()))
            return st[0] if first else st[1]
        return None
    finally:
        pf.close()


def data_range(root: str | Path, interval: str, symbol: str) -> tuple[int, int]:
    """(first, last) bar open time in ns, from Parquet column statistics (no full read)."""
    files = bar_files(root, interval, symbol)
    first = next((v for f in files if (v := _file_range(f, True)) is not None), None)
    last = next((v for f in reversed(files) if (v := _file_range(f, False)) is not None), None)
    if first is None or last is None:
        raise DataError(f"{symbol_dir(root, interval, symbol)}: bar files hold no rows")
    return first, last


def _validate_spec(symbol: str, spec: object, source: str) -> dict[str, float]:
    if not isinstance(symbol, str) or SYMBOL_RE.fullmatch(symbol) is None:
        raise DataError(f"{source}: bad symbol {symbol!r}: expected upper-case [A-Z0-9_-]+")
    if not isinstance(spec, Mapping):
        raise DataError(f"{source}: spec of {symbol} must be an object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    if unknown:
        raise DataError(
            f"{source}: {symbol}: unknown field(s) {unknown}; allowed {list(SPEC_FIELDS)}"
        )
    out: dict[str, float] = {}
    for name in SPEC_FIELDS:
        if name not in spec:
            raise DataError(f"{source}: {symbol}: missing field {name!r}")
        value = spec[name]
        if not is_finite_number(value):
            raise DataError(f"{source}: {symbol}: {name} must be a finite number, got {value!r}")
        value = float(value)
        positive = name in ("tick_size", "step_size")
        if value < 0 or (positive and value == 0):
            rule = "> 0" if positive else ">= 0"
            raise DataError(f"{source}: {symbol}: {name} must be {rule}, got {value!r}")
        out[name] = value
    return out


def write_symbol_specs(root: str | Path, specs: Mapping[str, Mapping[str, float]]) -> Path:
    """Validate and write ``ROOT/symbols.json`` (replacing it); returns its path.

    Each spec holds ``tick_size`` and ``step_size`` (> 0), ``min_qty`` and ``min_notional``
    (>= 0), in quote currency per unit / base units / base units / quote currency.
    """
    path = Path(root) / SPECS_FILE
    clean = {sym: _validate_spec(sym, spec, str(path)) for sym, spec in sorted(specs.items())}
    text = json.dumps(clean, indent=2, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_symbol_specs(root: str | Path) -> dict[str, dict[str, float]]:
    """Read and validate ``ROOT/symbols.json``; {} when the file does not exist."""
    path = Path(root) / SPECS_FILE
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object mapping symbol -> spec")
    return {sym: _validate_spec(sym, spec, str(path)) for sym, spec in sorted(raw.items())}


# --------------------------------------------------------------------------------------------
# Tick data: ROOT/<kind>/<SYMBOL>/<YYYY-MM-DD>.parquet, one file per UTC day of ts.

TICK_KINDS = ("depth_updates", "trades", "book_tops", "funding")
DAY_RE = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")
DAY_FILE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9].parquet"


def tick_dir(root: str | Path, kind: str, symbol: str) -> Path:
    """Folder holding one symbol's daily files of tick ``kind`` (depth_updates, trades, book_tops, funding)."""
    if kind not in TICK_KINDS:
        raise DataError(f"unknown tick kind {kind!r}: expected one of {list(TICK_KINDS)}")
    return Path(root) / kind / validate_symbol(symbol)


def _merge_ticks(path: Path, kind: str, new: pa.Table) -> pa.Table:
    """Merge ``new`` ticks into the day file at ``path``.

    Ticks have no key (many rows share a ts), so rows cannot be matched one by one as bars are.
    Rewriting the same rows is a no-op; rows whose ts range lies wholly before or after the
    stored range are merged in (stable sort by ts, so rows of equal ts keep their order); any
    other overlap is refused rather than guessed at.
    """
    old = conform(open_parquet(path).read(), kind, str(path))
    if old.equals(new):
        return old
    if old.num_rows and new.num_rows:
        old_ts, new_ts = ts_numpy(old.column("ts")), ts_numpy(new.column("ts"))
        if not (new_ts[-1] < old_ts[0] or new_ts[0] > old_ts[-1]):
            raise DataError(
                f"{path}: new {kind} rows ({format_ts(int(new_ts[0]))} .. "
                f"{format_ts(int(new_ts[-1]))}) overlap the stored rows "
                f"({format_ts(int(old_ts[0]))} .. {format_ts(int(old_ts[-1]))}) and differ from "
                f"them; refusing to overwrite"
            )
    merged = pa.concat_tables([old, new])
    order = np.argsort(ts_numpy(merged.column("ts")), kind="stable")
    return merged.take(pa.array(order)).combine_chunks()


def write_ticks(root: str | Path, kind: str, symbol: str, table: pa.Table) -> list[Path]:
    """Conform ``table`` to ``kind`` and write it as one file per UTC day of ts; returns the files.

    Rows keep their order (ts must already be non-decreasing, as :func:`conform` requires).
    An existing day file is merged with the new rows: the same rows again are a no-op, rows
    wholly before or after the stored ones are added, and any other overlap raises DataError.
    Files are written atomically and deterministically (:data:`WRITER_OPTIONS`).

    A day file of ``depth_updates`` is only a slice of the update stream: rebuilding a book
    needs the day holding the snapshot rows and every day after it.
    """
    tdir = tick_dir(root, kind, symbol)
    ticks = conform(table, kind, f"write_ticks({kind}, {symbol})").combine_chunks()
    if ticks.num_rows == 0:
        return []
    days = ts_numpy(ticks.column("ts")).astype("datetime64[ns]").astype("datetime64[D]")
    cuts = [0, *(np.flatnonzero(days[1:] != days[:-1]) + 1).tolist(), len(days)]
    written: list[Path] = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        path = tdir / f"{days[lo]}.parquet"
        part = ticks.slice(lo, hi - lo)
        if path.exists():
            part = _merge_ticks(path, kind, part)
        write_parquet_atomic(part, path)
        written.append(path)
    return written


def tick_files(root: str | Path, kind: str, symbol: str) -> list[Path]:
    """One symbol's daily files of tick ``kind``, sorted by day; [] when there are none."""
    tdir = tick_dir(root, kind, symbol)
    if not tdir.is_dir():
        return []
    return sorted(f for f in tdir.glob(DAY_FILE_GLOB) if DAY_RE.fullmatch(f.stem))


def read_ticks(
    root: str | Path,
    kind: str,
    symbol: str,
    start: int | None = None,
    end: int | None = None,
) -> pa.Table:
    """One symbol's ticks of ``kind``, day files joined in order and conformed.

    With ``start``/``end`` (ns), only the day files that can hold ticks in
    ``[start, end)`` are read, and only those ticks are returned, so a short
    run over a long history reads a few days. DataError when there is no file
    (in the window), or when a file is unreadable or breaks the schema or the
    time order (also across files).
    """
    files = tick_files(root, kind, symbol)
    if start is not None or end is not None:
        lo = "" if start is None else str(np.datetime64(start, "ns").astype("datetime64[D]"))
        hi = "~" if end is None else str(np.datetime64(end - 1, "ns").astype("datetime64[D]"))
        files = [f for f in files if lo <= f.stem <= hi]
    if not files:
        raise DataError(
            f"no {kind} for {symbol!r}: no day files under {tick_dir(root, kind, symbol)}"
        )
    table = _read_days(files, kind, str(tick_dir(root, kind, symbol)))
    if start is None and end is None:
        return table
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    a = 0 if start is None else int(np.searchsorted(ts, start, side="left"))
    b = len(ts) if end is None else int(np.searchsorted(ts, end, side="left"))
    return table.slice(a, b - a)


def _read_days(files: list[Path], kind: str, where: str) -> pa.Table:
    try:  # one read and one check of the joined days (the common case: good files)
        joined = pq.read_table([str(f) for f in files], use_threads=False)
        return conform(joined, kind, where).combine_chunks()
    except (DataError, pa.ArrowException, OSError):
        pass  # find the file at fault, and say which
    parts = [conform(open_parquet(f).read(), kind, str(f)) for f in files]
    return conform(pa.concat_tables(parts), kind, where).combine_chunks()
