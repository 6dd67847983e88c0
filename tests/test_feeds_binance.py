"""Binance kline CSV loader: every layout, time units, errors, and the real files in shared/data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tickray.feeds.binance import convert_klines, infer_interval_ns, read_klines_csv
from tickray.feeds.replay import BarCursor
from tickray.feeds.schemas import BARS, DataError, format_ts
from tickray.feeds.store import bar_files, data_range, list_symbols

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KLINES_1M = DATA / "crypto" / "klines_1m"
MS = 10**6
T0_MS = 1_769_904_000_000  # 2026-02-01T00:00:00Z
HEADER_12 = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


UNIT_PER_MS = {"s": (1, 1000), "ms": (1, 1), "us": (1000, 1), "ns": (10**6, 1)}


def _rows_12(start_ms: int, n: int, unit: str = "ms") -> list[str]:
    """data.binance.vision rows, one minute apart, times written in ``unit``."""
    mul, div = UNIT_PER_MS[unit]
    rows = []
    for i in range(n):
        t = (start_ms + i * 60_000) * mul // div
        close_t = (start_ms + i * 60_000 + 59_999) * mul // div
        o = 1.0 + i / 1000
        rows.append(
            f"{t},{o:.4f},{o + 0.01:.4f},{o - 0.01:.4f},{o + 0.001:.4f},{100 + i}.5,"
            f"{close_t},{(100 + i) * o:.4f},{10 + i},{50 + i}.25,{(50 + i) * o:.4f},0"
        )
    return rows


def _write(path: Path, lines: list[str]) -> Path:
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path.write_text(text)
    return path


def test_12_column_layout_with_header_in_milliseconds(tmp_path: Path) -> None:
    path = _write(tmp_path / "X-1m-2026-02.csv", [HEADER_12, *_rows_12(T0_MS, 5)])
    table = read_klines_csv(path)
    assert table.schema.equals(BARS, check_metadata=True)
    assert table.num_rows == 5
    assert table.column("ts")[0].value == T0_MS * MS
    assert table.column("ts")[4].value == (T0_MS + 4 * 60_000) * MS
    assert table.column("open").to_pylist()[:2] == [1.0, 1.001]
    assert table.column("trade_count").to_pylist() == [10, 11, 12, 13, 14]
    assert table.column("taker_buy_volume")[0].as_py() == 50.25
    assert table.column("quote_volume")[0].as_py() == 100.0


@pytest.mark.parametrize(
    ("unit", "suffix"), [("s", ".csv"), ("ms", ".csv"), ("us", ".csv.gz"), ("ns", ".csv")]
)
def test_12_column_layout_without_header_detects_time_unit(
    tmp_path: Path, unit: str, suffix: str
) -> None:
    rows = _rows_12(T0_MS, 3, unit)
    path = _write(tmp_path / f"X{suffix}", rows)
    table = read_klines_csv(path)
    assert [v.value for v in table.column("ts")] == [(T0_MS + i * 60_000) * MS for i in range(3)]


def test_6_column_layout_with_naive_utc_strings(tmp_path: Path) -> None:
    lines = [
        "timestamp,open,high,low,close,volume",
        "2022-06-15 03:00:00,21985.85,22003.2,21961.5,21964.38,52.9939",
        "2022-06-15 03:01:00,21964.38,21992.27,21954.0,21992.27,55.9682",
    ]
    for name, content in (("h.csv", lines), ("n.csv.gz", lines[1:])):
        table = read_klines_csv(_write(tmp_path / name, content))
        assert table.num_rows == 2
        assert format_ts(table.column("ts")[0].value) == "2022-06-15T03:00:00Z"
        assert table.column("close").to_pylist() == [21964.38, 21992.27]
        assert table.column("quote_volume").null_count == 2


def test_9_column_layout(tmp_path: Path) -> None:
    lines = [
        "timestamp,open,high,low,close,volume,quote_volume,trades,close_time",
        "1757750400000,115715.50,116011.00,115715.50,115913.30,1844.202,213658733.84120,39746,1757753999999",
        "1757754000000,115913.30,115988.20,115811.00,115969.70,1859.139,215437442.49230,37806,1757757599999",
    ]
    table = read_klines_csv(_write(tmp_path / "b.csv", lines))
    assert format_ts(table.column("ts")[1].value) == "2025-09-13T09:00:00Z"
    assert table.column("trade_count").to_pylist() == [39746, 37806]
    assert table.column("quote_volume")[0].as_py() == 213658733.8412
    assert infer_interval_ns(table) == 3600 * 10**9


def test_unknown_layout_names_file_and_column_count(tmp_path: Path) -> None:
    path = _write(tmp_path / "seven.csv", ["1,2,3,4,5,6,7"])
    with pytest.raises(DataError, match=r"seven\.csv: unknown kline layout with 7 columns"):
        read_klines_csv(path)


def test_unparsable_value_names_file_and_line(tmp_path: Path) -> None:
    rows = _rows_12(T0_MS, 4)
    rows[2] = rows[2].replace(",1.0020,", ",abc,", 1)
    path = _write(tmp_path / "bad.csv", [HEADER_12, *rows])
    with pytest.raises(DataError, match=r"bad\.csv: line 4: cannot parse open 'abc'"):
        read_klines_csv(path)


def test_short_row_names_file_and_line(tmp_path: Path) -> None:
    rows = _rows_12(T0_MS, 4)
    rows[3] = rows[3].rsplit(",", 1)[0]
    path = _write(tmp_path / "short.csv.gz", rows)
    with pytest.raises(DataError, match=r"short\.csv\.gz: line 4: expected 12 columns, got 11"):
        read_klines_csv(path)


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: empty file"):
        read_klines_csv(empty)
    header_only = _write(tmp_path / "h.csv", [HEADER_12])
    with pytest.raises(DataError, match=r"h\.csv: empty file \(header only"):
        read_klines_csv(header_only)


def test_mixed_time_units_in_one_file_are_rejected(tmp_path: Path) -> None:
    rows = _rows_12(T0_MS, 2) + _rows_12(T0_MS + 120_000, 1, "us")
    path = _write(tmp_path / "mixed.csv", rows)
    with pytest.raises(DataError, match=r"mixed\.csv: line 3: open_time .* is not in ms"):
        read_klines_csv(path)


def test_duplicate_bar_in_csv_is_reported(tmp_path: Path) -> None:
    rows = _rows_12(T0_MS, 3)
    path = _write(tmp_path / "dup.csv", [rows[0], rows[1], rows[1], rows[2]])
    with pytest.raises(
        DataError, match=r"dup\.csv: bars row 2: duplicate timestamp 2026-02-01T00:01:00Z"
    ):
        read_klines_csv(path)


def test_convert_klines_joins_files_in_time_order_and_infers_interval(tmp_path: Path) -> None:
    jan_end_ms = T0_MS - 3 * 60_000  # 2026-01-31T23:57
    a = _write(tmp_path / "a.csv", [HEADER_12, *_rows_12(jan_end_ms, 3)])
    b = _write(tmp_path / "b.csv", [HEADER_12, *_rows_12(T0_MS, 4)])
    files = convert_klines([b, a], tmp_path / "store", "XUSDT")
    assert [f.name for f in files] == ["2026-01.parquet", "2026-02.parquet"]
    assert files[0].parent == tmp_path / "store" / "bars" / "1m" / "XUSDT"
    assert [pq.read_metadata(f).num_rows for f in files] == [3, 4]
    with pytest.raises(DataError, match=r"interval '5m' given but the data .* is spaced 1m"):
        convert_klines([a], tmp_path / "other", "XUSDT", interval="5m")


def test_convert_klines_rejects_overlapping_files(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.csv", _rows_12(T0_MS, 5))
    b = _write(tmp_path / "b.csv", _rows_12(T0_MS + 4 * 60_000, 5))
    with pytest.raises(
        DataError, match=r"b\.csv: first bar 2026-02-01T00:04:00Z overlaps .*a\.csv"
    ):
        convert_klines([a, b], tmp_path / "store", "XUSDT")


# --- real data in ../shared/data (README sections 1-3) ---------------------------------------


def _real(rel: str) -> Path:
    path = KLINES_1M / rel
    if not path.exists():
        pytest.skip(f"real data not available: {path} (shared/data is absent)")
    return path


@pytest.mark.realdata
def test_real_usdm_12_column_file() -> None:
    table = read_klines_csv(_real("binance_usdm_futures/FILUSDT-1m-2026-02.csv.gz"))
    assert table.num_rows == 40_320
    assert format_ts(table.column("ts")[0].value) == "2026-02-01T00:00:00Z"
    assert format_ts(table.column("ts")[-1].value) == "2026-02-28T23:59:00Z"
    assert infer_interval_ns(table) == 60 * 10**9
    close = table.column("close").to_numpy()
    assert close.min() >= 0.778 and close.max() <= 1.111
    assert table.column("trade_count").null_count == 0


@pytest.mark.realdata
def test_real_spot_6_column_file() -> None:
    table = read_klines_csv(_real("binance_spot/BTCUSDT-1m-2022-06-15_2022-07-19.csv.gz"))
    assert table.num_rows == 50_000
    assert format_ts(table.column("ts")[0].value) == "2022-06-15T03:00:00Z"
    assert format_ts(table.column("ts")[-1].value) == "2022-07-19T20:19:00Z"
    assert table.column("trade_count").null_count == 50_000


@pytest.mark.realdata
def test_real_1h_9_column_file() -> None:
    path = DATA / "crypto" / "klines_1h" / "binance_usdm_futures" / "BTCUSDT-1h.csv.gz"
    if not path.exists():
        pytest.skip(f"real data not available: {path} (shared/data is absent)")
    table = read_klines_csv(path)
    assert table.num_rows == 4_500
    assert format_ts(table.column("ts")[0].value) == "2025-09-13T08:00:00Z"
    assert infer_interval_ns(table) == 3600 * 10**9


@pytest.mark.realdata
def test_real_fil_months_convert_and_replay_without_gaps(tmp_path: Path) -> None:
    paths = [
        _real(f"binance_usdm_futures/FILUSDT-1m-2023-{m}.csv.gz") for m in ("08", "09", "10", "11")
    ]
    files = convert_klines(paths, tmp_path, "FILUSDT")
    assert [f.name for f in files] == [
        "2023-08.parquet",
        "2023-09.parquet",
        "2023-10.parquet",
        "2023-11.parquet",
    ]
    assert list_symbols(tmp_path, "1m") == ["FILUSDT"]
    assert bar_files(tmp_path, "1m", "FILUSDT") == files
    first, last = data_range(tmp_path, "1m", "FILUSDT")
    assert (format_ts(first), format_ts(last)) == ("2023-08-01T00:00:00Z", "2023-11-30T23:59:00Z")
    cursor = BarCursor(tmp_path, "1m", "FILUSDT", first, last + 1, batch_rows=50_000)
    ts = np.concatenate([c.ts for c in cursor])
    assert ts.size == 175_680
    assert np.all(np.diff(ts) == 60 * 10**9)
