"""Streaming replay of stored market data in record batches, with bounded memory.

:class:`BarCursor` streams one symbol's bars from its monthly Parquet files in time order as
numpy chunks, opening one file at a time and skipping files and row groups outside the window
with Parquet statistics. It validates while streaming (columns, ordering, OHLC values).
:func:`iter_table_batches` does the same for any canonical kind, yielding Arrow record batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from tickray.feeds.schemas import (
    STRICT_TS_KINDS,
    DataError,
    conform,
    format_ts,
    open_parquet,
    schema_for,
    ts_numpy,
)
from tickray.feeds.store import (
    MONTH_RE,
    bar_files,
    month_bounds_ns,
    ts_statistics,
)

BAR_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
_PRICE_COLUMNS = ("open", "high", "low", "close")


class BarChunk(NamedTuple):
    """Consecutive bars of one symbol as C-contiguous, writable numpy arrays (owned copies).

    ``ts`` is the bar open time (int64 ns since the epoch, UTC); prices are in quote currency
    per unit and ``volume`` in base units (float64).
    """

    ts: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]

    @property
    def n_rows(self) -> int:
        """Number of bars in the chunk (``len(chunk)`` is the number of fields, 6)."""
        return int(self.ts.shape[0])


def _ordering_error(path: Path | str, prev: int, cur: int, where: str = "") -> DataError:
    what = "duplicate timestamp" if cur == prev else "non-monotonic timestamp"
    return DataError(f"{path}: {what} {format_ts(cur)} after {format_ts(prev)}{where}")


def _select_row_groups(
    pf: pq.ParquetFile,
    path: Path,
    start_ns: int,
    end_ns: int,
    strict: bool,
    prev_max: int | None,
    month: str | None,
) -> list[int]:
    """Row groups that may hold ts in [start_ns, end_ns), checking ordering via statistics."""
    bounds = month_bounds_ns(month) if month is not None else None
    groups: list[int] = []
    for i, st in enumerate(ts_statistics(pf, path)):
        if pf.metadata.row_group(i).num_rows == 0:
            continue
        if st is None:
            groups.append(i)
            continue
        lo, hi = st
        if bounds is not None and (lo < bounds[0] or hi >= bounds[1]):
            bad = lo if (lo < bounds[0] or lo >= bounds[1]) else hi
            raise DataError(
                f"{path}: ts {format_ts(bad)} lies outside the file's month {month} (row group {i})"
            )
        if prev_max is not None and (lo < prev_max or (strict and lo == prev_max)):
            raise _ordering_error(path, prev_max, lo, f" (row group {i})")
        prev_max = hi
        if hi < start_ns or lo >= end_ns:
            continue
        groups.append(i)
    return groups


class BarCursor:
    """Stream ONE symbol's bars with ``start_ns <= ts_open < end_ns`` in time order.

    Files are ``ROOT/bars/<interval>/<SYMBOL>/<YYYY-MM>.parquet``; only one is open at a time
    and at most one record batch (``batch_rows`` rows) is held, whatever the history length.
    Raises DataError (naming the file) for a missing column, a duplicate or non-monotonic
    timestamp (within or across files) or a non-finite / non-positive price.
    """

    def __init__(
        self,
        root: str | Path,
        interval: str,
        symbol: str,
        start_ns: int,
        end_ns: int,
        batch_rows: int = 65536,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        self.root = Path(root)
        self.interval = interval
        self.symbol = symbol
        self.start_ns = int(start_ns)
        self.end_ns = int(end_ns)
        self.batch_rows = int(batch_rows)
        files = bar_files(root, interval, symbol)
        self.files: list[Path] = [f for f in files if self._month_overlaps(f)]
        self.rows_read = 0  # rows decoded from Parquet (including those outside the window)
        self.rows_emitted = 0
        self._last_ts: int | None = None
        self._last_file: Path | None = None
        self._gen: Iterator[BarChunk] | None = self._chunks()

    def _month_overlaps(self, path: Path) -> bool:
        m0, m1 = month_bounds_ns(path.stem)
        return m1 > self.start_ns and m0 < self.end_ns

    # A cursor is checkpointed by where it stands, not by its open file: unpickled, it
    # reopens the files and goes on with the first bar after the last one it had given
    # (the next chunks may be cut elsewhere; a simulation does not depend on where).
    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_gen"}
        state["_exhausted"] = self._gen is None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        exhausted = state.pop("_exhausted")
        self.__dict__.update(state)
        last = self._last_ts
        if last is not None:
            # the window starts after it; the rows re-read before it are cut, not
            # mistaken for bars out of order
            self.start_ns = max(self.start_ns, last + 1)
            self._last_ts = None
        files = bar_files(self.root, self.interval, self.symbol)
        self.files = [f for f in files if self._month_overlaps(f)]
        self._gen = None if exhausted else self._chunks()

    def next_chunk(self) -> BarChunk | None:
        """Next chunk of at most ``batch_rows`` bars (never empty), or None when exhausted."""
        if self._gen is None:
            return None
        chunk = next(self._gen, None)
        if chunk is None:
            self._gen = None
        return chunk

    def __iter__(self) -> Iterator[BarChunk]:
        while (chunk := self.next_chunk()) is not None:
            yield chunk

    def _chunks(self) -> Iterator[BarChunk]:
        if self.start_ns >= self.end_ns:
            return
        for path in self.files:
            pf = open_parquet(path)
            try:
                names = set(pf.schema_arrow.names)
                for col in BAR_COLUMNS:
                    if col not in names:
                        raise DataError(f"{path}: missing column {col!r} for bars")
                month = path.stem if MONTH_RE.fullmatch(path.stem) else None
                groups = _select_row_groups(
                    pf, path, self.start_ns, self.end_ns, True, self._last_ts, month
                )
                if not groups:
                    continue
                for batch in pf.iter_batches(
                    batch_size=self.batch_rows, row_groups=groups, columns=list(BAR_COLUMNS)
                ):
                    box, done = self._convert(path, batch)
                    del batch
                    if box:
                        self.rows_emitted += box[0].n_rows
                        # Yield via pop() so the suspended generator keeps no reference to it.
                        yield box.pop()
                    if done:
                        return
            finally:
                pf.close()
                # Hand the decoded pages back: allocators keep freed blocks
                # otherwise, and resident memory would grow with the history.
                pa.default_memory_pool().release_unused()

    def _convert(self, path: Path, batch: pa.RecordBatch) -> tuple[list[BarChunk], bool]:
        """Validate one batch and cut it to the window; returns ([chunk] or [], window ended)."""
        n = batch.num_rows
        self.rows_read += n
        if n == 0:
            return [], False
        for name in BAR_COLUMNS:
            col = batch.column(name)
            if col.null_count:
                row = int(np.argmax(np.asarray(col.is_null().to_numpy(zero_copy_only=False))))
                raise DataError(f"{path}: null {name!r} in bars (row {row} of a batch)")
        ts_col = batch.column("ts")
        if not pa.types.is_timestamp(ts_col.type):
            raise DataError(f"{path}: column 'ts' has type {ts_col.type}, expected a timestamp")
        ts = ts_numpy(ts_col)
        if self._last_ts is not None and ts[0] <= self._last_ts:
            where = f" (previous bar in {self._last_file})" if self._last_file != path else ""
            raise _ordering_error(path, self._last_ts, int(ts[0]), where)
        diff = np.diff(ts)
        bad = np.flatnonzero(diff <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise _ordering_error(path, int(ts[i - 1]), int(ts[i]))
        self._last_ts = int(ts[-1])
        self._last_file = path

        lo = int(np.searchsorted(ts, self.start_ns, side="left"))
        hi = int(np.searchsorted(ts, self.end_ns, side="left"))
        done = hi < n
        if hi <= lo:
            return [], done
        arrays: dict[str, np.ndarray] = {"ts": np.array(ts[lo:hi], dtype=np.int64, copy=True)}
        for name in BAR_COLUMNS[1:]:
            col = batch.column(name)
            if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
                raise DataError(f"{path}: column {name!r} has type {col.type}, expected float64")
            values = np.asarray(col.to_numpy(zero_copy_only=False))[lo:hi]
            arr = np.array(values, dtype=np.float64, copy=True)
            ok = np.isfinite(arr) & (arr > 0 if name in _PRICE_COLUMNS else arr >= 0)
            if not ok.all():
                j = int(np.argmin(ok))
                rule = "finite and > 0" if name in _PRICE_COLUMNS else "finite and >= 0"
                raise DataError(
                    f"{path}: bad {name!r} value {arr[j]!r} at ts {format_ts(int(arrays['ts'][j]))} "
                    f"(must be {rule})"
                )
            arrays[name] = arr
        return [BarChunk(**arrays)], done


def iter_table_batches(
    files: Sequence[str | Path],
    kind: str,
    start_ns: int,
    end_ns: int,
    batch_rows: int = 65536,
) -> Iterator[pa.RecordBatch]:
    """Stream canonical record batches of ``kind`` with ``start_ns <= ts < end_ns`` from files.

    ``files`` must be in time order. Each batch is conformed (cast, ordered, validated); ts
    ordering is checked across batches and files (strictly increasing for bars). One file is
    open at a time; row groups outside the window are skipped using statistics.
    """
    schema = schema_for(kind)
    strict = kind in STRICT_TS_KINDS
    last_ts: int | None = None
    if start_ns >= end_ns:
        return
    for file in files:
        path = Path(file)
        pf = open_parquet(path)
        try:
            present = set(pf.schema_arrow.names)
            for field in schema:
                if not field.nullable and field.name not in present:
                    raise DataError(f"{path}: missing column {field.name!r} for {kind}")
            columns = [f.name for f in schema if f.name in present]
            groups = _select_row_groups(pf, path, start_ns, end_ns, strict, last_ts, None)
            offset = 0
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns):
                source = f"{path} (batch starting at selected row {offset})"
                offset += batch.num_rows
                table = conform(pa.Table.from_batches([batch]), kind, source)
                if table.num_rows == 0:
                    continue
                ts = ts_numpy(table.column("ts"))
                if last_ts is not None and (ts[0] < last_ts or (strict and ts[0] == last_ts)):
                    raise _ordering_error(path, last_ts, int(ts[0]))
                last_ts = int(ts[-1])
                lo = int(np.searchsorted(ts, start_ns, side="left"))
                hi = int(np.searchsorted(ts, end_ns, side="left"))
                if hi > lo:
                    yield table.slice(lo, hi - lo).combine_chunks().to_batches()[0]
                if hi < len(ts):
                    return
        finally:
            pf.close()
