"""BarCursor: streaming one symbol across monthly files with filtering, validation, bounded memory."""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickray.feeds.replay import BarChunk, BarCursor, iter_table_batches
from tickray.feeds.schemas import TS_TYPE, DataError
from tickray.feeds.store import bar_files, bars_path, write_bars, write_parquet_atomic

MIN = 60 * 10**9
JAN_1 = int(np.datetime64("2024-01-01T00:00", "ns").astype(np.int64))
FEB_1 = int(np.datetime64("2024-02-01T00:00", "ns").astype(np.int64))
MAR_1 = int(np.datetime64("2024-03-01T00:00", "ns").astype(np.int64))


def _bars(start_ns: int, n: int, step_ns: int = MIN) -> pa.Table:
    i = np.arange(n, dtype=np.float64)
    ts = start_ns + np.arange(n, dtype=np.int64) * step_ns
    close = 100.0 + 10.0 * np.sin(i / 500.0)
    open_ = np.concatenate(([100.0], close[:-1]))
    return pa.table(
        {
            "ts": pa.array(ts, type=pa.int64()).cast(TS_TYPE),
            "open": open_,
            "high": np.maximum(open_, close) + 0.5,
            "low": np.minimum(open_, close) - 0.5,
            "close": close,
            "volume": i % 17,
        }
    )


def _drain(cursor: BarCursor) -> list[BarChunk]:
    out = []
    while (chunk := cursor.next_chunk()) is not None:
        out.append(chunk)
    return out


@pytest.fixture
def three_months(tmp_path: Path) -> tuple[Path, pa.Table]:
    table = _bars(JAN_1, (31 + 29 + 31) * 24 * 60)  # Jan..Mar 2024, 1m
    write_bars(tmp_path, "ABCUSDT", "1m", table)
    return tmp_path, table


def test_cursor_streams_all_bars_in_order_across_month_files(
    three_months: tuple[Path, pa.Table],
) -> None:
    root, table = three_months
    chunks = _drain(BarCursor(root, "1m", "ABCUSDT", 0, 2**62, batch_rows=10_000))
    ts = np.concatenate([c.ts for c in chunks])
    expected = table.column("ts").cast(pa.int64()).to_numpy()
    np.testing.assert_array_equal(ts, expected)
    close = np.concatenate([c.close for c in chunks])
    np.testing.assert_array_equal(close, table.column("close").to_numpy())
    assert all(0 < c.n_rows <= 10_000 for c in chunks)
    for c in chunks:
        for arr in c:
            assert arr.flags.c_contiguous and arr.flags.writeable
        assert c.ts.dtype == np.int64 and c.volume.dtype == np.float64


def test_cursor_filters_half_open_window_and_skips_files(
    three_months: tuple[Path, pa.Table],
) -> None:
    root, _ = three_months
    start, end = FEB_1 + 5 * MIN, MAR_1 + 7 * MIN
    cursor = BarCursor(root, "1m", "ABCUSDT", start, end, batch_rows=4096)
    assert [f.name for f in cursor.files] == ["2024-02.parquet", "2024-03.parquet"]
    ts = np.concatenate([c.ts for c in _drain(cursor)])
    assert ts[0] == start and ts[-1] == end - MIN
    assert ts.size == (end - start) // MIN
    assert np.all(np.diff(ts) == MIN)
    # Window ends 7 bars into March: far less than March is decoded.
    assert cursor.rows_read < 29 * 24 * 60 + 3 * 4096
    assert cursor.next_chunk() is None


def test_cursor_window_exactly_one_month_opens_one_file(
    three_months: tuple[Path, pa.Table],
) -> None:
    root, _ = three_months
    cursor = BarCursor(root, "1m", "ABCUSDT", FEB_1, MAR_1)
    assert [f.name for f in cursor.files] == ["2024-02.parquet"]
    chunks = _drain(cursor)
    assert sum(c.n_rows for c in chunks) == 29 * 24 * 60


def test_cursor_empty_window_and_window_outside_data(
    three_months: tuple[Path, pa.Table],
) -> None:
    root, _ = three_months
    assert BarCursor(root, "1m", "ABCUSDT", FEB_1, FEB_1).next_chunk() is None
    assert BarCursor(root, "1m", "ABCUSDT", 0, JAN_1).next_chunk() is None
    assert BarCursor(root, "1m", "ABCUSDT", MAR_1 * 2, MAR_1 * 3).next_chunk() is None


@pytest.mark.parametrize("batch_rows", [1, 7, 1000, 65536])
def test_cursor_chunk_sizes_never_exceed_batch_rows(tmp_path: Path, batch_rows: int) -> None:
    n = 3000 if batch_rows > 1 else 200
    write_bars(tmp_path, "ABCUSDT", "1m", _bars(JAN_1, n))
    chunks = _drain(BarCursor(tmp_path, "1m", "ABCUSDT", 0, 2**62, batch_rows=batch_rows))
    assert max(c.n_rows for c in chunks) <= batch_rows
    assert sum(c.n_rows for c in chunks) == n


def test_cursor_skips_row_groups_before_start(tmp_path: Path) -> None:
    n = 31 * 24 * 60  # 44,640 rows in Jan
    table = _bars(JAN_1, n).combine_chunks()
    path = bars_path(tmp_path, "1m", "ABCUSDT", "2024-01")
    path.parent.mkdir(parents=True)
    pq.write_table(table, path, row_group_size=5000)
    cursor = BarCursor(tmp_path, "1m", "ABCUSDT", JAN_1 + 40_000 * MIN, 2**62, batch_rows=5000)
    ts = np.concatenate([c.ts for c in _drain(cursor)])
    assert ts.size == n - 40_000
    assert cursor.rows_read == n - 40_000  # row groups 0..7 (40,000 rows) are never decoded


def test_cursor_unknown_symbol(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown symbol 'XYZ': no data under"):
        BarCursor(tmp_path, "1m", "XYZ", 0, 1)


def _write_raw(root: Path, month: str, table: pa.Table) -> Path:
    path = bars_path(root, "1m", "ABCUSDT", month)
    write_parquet_atomic(table, path)
    return path


def test_cursor_reports_missing_column_with_file(tmp_path: Path) -> None:
    path = _write_raw(tmp_path, "2024-01", _bars(JAN_1, 10).drop_columns(["low"]))
    with pytest.raises(DataError, match=f"{path}: missing column 'low' for bars"):
        _drain(BarCursor(tmp_path, "1m", "ABCUSDT", 0, 2**62))


def test_cursor_reports_duplicate_timestamp_within_a_file(tmp_path: Path) -> None:
    table = _bars(JAN_1, 10)
    table = pa.concat_tables([table.slice(0, 5), table.slice(4)])  # row 4 twice
    path = _write_raw(tmp_path, "2024-01", table)
    with pytest.raises(
        DataError,
        match=f"{path}: duplicate timestamp 2024-01-01T00:04:00Z after 2024-01-01T00:04:00Z",
    ):
        _drain(BarCursor(tmp_path, "1m", "ABCUSDT", 0, 2**62, batch_rows=3))


def test_cursor_reports_non_monotonic_timestamp_across_batches(tmp_path: Path) -> None:
    table = _bars(JAN_1, 10)
    table = pa.concat_tables([table.slice(0, 6), table.slice(3, 1), table.slice(6)])
    path = _write_raw(tmp_path, "2024-01", table)
    with pytest.raises(DataError, match=f"{path}: non-monotonic timestamp 2024-01-01T00:03:00Z"):
        _drain(BarCursor(tmp_path, "1m", "ABCUSDT", 0, 2**62, batch_rows=6))


def test_cursor_reports_ordering_errors_across_files(tmp_path: Path) -> None:
    _write_raw(tmp_path, "2024-01", _bars(FEB_1 - 10 * MIN, 10))
    # A February file whose first bar repeats January's last bar.
    feb = _write_raw(tmp_path, "2024-02", _bars(FEB_1 - MIN, 10))
    with pytest.raises(DataError, match=f"{feb}: .*2024-01-31T23:59:00Z"):
        _drain(BarCursor(tmp_path, "1m", "ABCUSDT", 0, 2**62))


def test_cursor_reports_file_holding_another_month(tmp_path: Path) -> None:
    path = _write_raw(tmp_path, "2024-01", _bars(FEB_1, 10))
    with pytest.raises(DataError, match=f"{path}: ts 2024-02-01T00:00:00Z lies outside"):
        _drain(BarCursor(tmp_path, "1m", "ABCUSDT", 0, 2**62))


@pytest.mark.parametrize(("column", "value"), [("close", np.nan), ("low", 0.0), ("high", -1.0)])
def test_cursor_rejects_non_finite_or_non_positive_prices(
    tmp_path: Path, column: str, value: float
) -> None:
    table = _bars(JAN_1, 10)
    values = table.column(column).to_numpy().copy()
    values[6] = value
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
    path = _write_raw(tmp_path, "2024-01", table)
    with pytest.raises(
        DataError, match=f"{path}: bad '{column}' value .* at ts 2024-01-01T00:06:00Z"
    ):
        _drain(BarCursor(tmp_path, "1m", "ABCUSDT", 0, 2**62))


def test_cursor_keeps_no_reference_to_returned_chunks(three_months: tuple[Path, pa.Table]) -> None:
    root, _ = three_months
    cursor = BarCursor(root, "1m", "ABCUSDT", 0, 2**62, batch_rows=8192)
    chunk = cursor.next_chunk()
    assert chunk is not None
    refs = [weakref.ref(arr) for arr in chunk]
    del chunk
    gc.collect()
    assert all(r() is None for r in refs)
    assert cursor.next_chunk() is not None


def _stream_peak(root: Path, batch_rows: int) -> tuple[int, int, int, int]:
    """(rows, max chunk rows, tracemalloc peak bytes, max Arrow pool bytes) while streaming."""
    cursor = BarCursor(root, "5m", "ABCUSDT", 0, 2**62, batch_rows=batch_rows)
    gc.collect()
    arrow_base = pa.total_allocated_bytes()
    arrow_max = 0
    rows = max_rows = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        while (chunk := cursor.next_chunk()) is not None:
            rows += chunk.n_rows
            max_rows = max(max_rows, chunk.n_rows)
            arrow_max = max(arrow_max, pa.total_allocated_bytes() - arrow_base)
            del chunk
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return rows, max_rows, peak, arrow_max


def test_cursor_memory_does_not_grow_with_history_length(tmp_path: Path) -> None:
    step = 5 * MIN
    per_month = 30 * 24 * 12
    short, long_ = tmp_path / "short", tmp_path / "long"
    write_bars(short, "ABCUSDT", "5m", _bars(JAN_1, 2 * per_month, step))
    write_bars(long_, "ABCUSDT", "5m", _bars(JAN_1, 20 * per_month, step))
    batch_rows = 2048
    _stream_peak(short, batch_rows)  # warm-up: imports and one-time caches
    rows1, max1, peak1, arrow1 = _stream_peak(short, batch_rows)
    rows10, max10, peak10, arrow10 = _stream_peak(long_, batch_rows)
    assert rows10 == 10 * rows1
    assert max1 <= batch_rows and max10 <= batch_rows
    # One batch (6 columns x 2048 rows x 8 bytes ~ 100 kB) plus constant overhead.
    assert peak10 <= 1.2 * peak1 + 32_768, (peak1, peak10)
    assert arrow10 <= 1.2 * arrow1 + 65_536, (arrow1, arrow10)


def test_iter_table_batches_streams_canonical_batches(three_months: tuple[Path, pa.Table]) -> None:
    root, _ = three_months
    files = bar_files(root, "1m", "ABCUSDT")
    batches = list(iter_table_batches(files, "bars", FEB_1, FEB_1 + 100 * MIN, batch_rows=64))
    assert sum(b.num_rows for b in batches) == 100
    assert all(b.num_rows <= 64 for b in batches)
    assert batches[0].schema.names[:6] == ["ts", "open", "high", "low", "close", "volume"]
    assert batches[0].column(0)[0].value == FEB_1


def test_a_cursor_checkpoint_goes_on_after_the_last_bar_it_gave(small_universe: Path) -> None:
    """Pickled mid-stream (as an actor's checkpoint would be), a cursor reopens its files
    and gives exactly the bars it had not given yet; a finished one stays finished."""
    import pickle

    from conftest import SMALL_END, SMALL_START

    def bars(cursor: BarCursor) -> list[int]:
        return [int(t) for chunk in cursor for t in chunk.ts]

    whole = bars(BarCursor(small_universe, "1m", "AAAUSDT", SMALL_START, SMALL_END, 700))
    cur = BarCursor(small_universe, "1m", "AAAUSDT", SMALL_START, SMALL_END, 700)
    first = [int(t) for t in cur.next_chunk().ts] + [int(t) for t in cur.next_chunk().ts]
    copy = pickle.loads(pickle.dumps(cur))
    assert first + bars(copy) == whole
    assert first + bars(cur) == whole  # the original goes on too
    done = pickle.loads(pickle.dumps(cur))
    assert done.next_chunk() is None
