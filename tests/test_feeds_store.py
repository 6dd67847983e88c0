"""Parquet store layout: monthly files, round trip, determinism, merge, ranges and symbol specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickray.feeds.schemas import BARS, TS_TYPE, DataError
from tickray.feeds.store import (
    bar_files,
    bars_path,
    data_range,
    list_symbols,
    read_symbol_specs,
    write_bars,
    write_symbol_specs,
)

MIN = 60 * 10**9
JAN_30 = int(np.datetime64("2024-01-30T00:00", "ns").astype(np.int64))


def _bars(start_ns: int, n: int, step_ns: int = MIN, base: float = 100.0) -> pa.Table:
    ts = start_ns + np.arange(n, dtype=np.int64) * step_ns
    close = base + np.sin(np.arange(n) / 7.0)
    open_ = np.concatenate(([base], close[:-1]))
    return pa.table(
        {
            "ts": pa.array(ts, type=pa.int64()).cast(TS_TYPE),
            "open": open_,
            "high": np.maximum(open_, close) + 0.25,
            "low": np.minimum(open_, close) - 0.25,
            "close": close,
            "volume": np.arange(n, dtype=np.float64),
            "trade_count": np.arange(n, dtype=np.int64),
        }
    )


def test_bars_path_layout_and_validation(tmp_path: Path) -> None:
    assert bars_path(tmp_path, "1m", "BTCUSDT", "2024-03") == (
        tmp_path / "bars" / "1m" / "BTCUSDT" / "2024-03.parquet"
    )
    with pytest.raises(DataError, match="bad symbol 'btcusdt'"):
        bars_path(tmp_path, "1m", "btcusdt", "2024-03")
    with pytest.raises(DataError, match="bad symbol"):
        bars_path(tmp_path, "1m", "../X", "2024-03")
    with pytest.raises(DataError, match="bad month '2024-13'"):
        bars_path(tmp_path, "1m", "BTCUSDT", "2024-13")
    with pytest.raises(DataError, match="bad interval"):
        bars_path(tmp_path, "1min", "BTCUSDT", "2024-03")


def test_write_bars_splits_by_utc_month_and_round_trips(tmp_path: Path) -> None:
    table = _bars(JAN_30, 3 * 24 * 60)  # Jan 30 .. Feb 1 inclusive
    files = write_bars(tmp_path, "ABCUSDT", "1m", table)
    assert [f.name for f in files] == ["2024-01.parquet", "2024-02.parquet"]
    jan = pq.read_table(files[0])
    assert jan.num_rows == 2 * 24 * 60
    assert jan.schema.equals(BARS, check_metadata=True)
    assert jan.schema.pandas_metadata is None
    back = pa.concat_tables([pq.read_table(f) for f in bar_files(tmp_path, "1m", "ABCUSDT")])
    expected = table.append_column("quote_volume", pa.nulls(table.num_rows, pa.float64()))
    assert back.column("ts").equals(expected.column("ts"))
    for name in ("open", "high", "low", "close", "volume", "trade_count"):
        assert back.column(name).to_pylist() == table.column(name).to_pylist()
    assert back.column("taker_buy_volume").null_count == table.num_rows


def test_write_bars_is_byte_identical_for_identical_input(tmp_path: Path) -> None:
    table = _bars(JAN_30, 5000)
    a = write_bars(tmp_path / "a", "ABCUSDT", "1m", table)
    b = write_bars(tmp_path / "b", "ABCUSDT", "1m", table.combine_chunks())
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]
    before = [f.read_bytes() for f in a]
    write_bars(tmp_path / "a", "ABCUSDT", "1m", table)  # identical re-write is a no-op
    assert [f.read_bytes() for f in a] == before
    assert not [p for p in a[0].parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_write_bars_merges_into_existing_month_in_any_order(tmp_path: Path) -> None:
    whole = _bars(JAN_30, 600)
    write_bars(tmp_path / "x", "ABCUSDT", "1m", whole.slice(300))
    write_bars(tmp_path / "x", "ABCUSDT", "1m", whole.slice(0, 300))
    direct = write_bars(tmp_path / "y", "ABCUSDT", "1m", whole)
    merged = bar_files(tmp_path / "x", "1m", "ABCUSDT")
    assert pq.read_table(merged[0]).equals(pq.read_table(direct[0]))
    assert merged[0].read_bytes() == direct[0].read_bytes()


def test_write_bars_rejects_conflicting_overlap(tmp_path: Path) -> None:
    write_bars(tmp_path, "ABCUSDT", "1m", _bars(JAN_30, 100))
    other = _bars(JAN_30 + 50 * MIN, 100, base=200.0)
    with pytest.raises(DataError, match=r"2024-01\.parquet: 50 new bar\(s\) overlap stored bars"):
        write_bars(tmp_path, "ABCUSDT", "1m", other)
    assert pq.read_table(bar_files(tmp_path, "1m", "ABCUSDT")[0]).num_rows == 100


def test_write_bars_conforms_its_input(tmp_path: Path) -> None:
    table = _bars(JAN_30, 10).drop_columns(["close"])
    with pytest.raises(DataError, match="missing column 'close' for bars"):
        write_bars(tmp_path, "ABCUSDT", "1m", table)


def test_list_symbols_and_bar_files(tmp_path: Path) -> None:
    assert list_symbols(tmp_path, "1m") == []
    for sym in ("ZZZ", "AAA_1", "MID-X"):
        write_bars(tmp_path, sym, "1m", _bars(JAN_30, 10))
    (tmp_path / "bars" / "1m" / "EMPTY").mkdir()
    assert list_symbols(tmp_path, "1m") == ["AAA_1", "MID-X", "ZZZ"]
    assert list_symbols(tmp_path, "1h") == []
    with pytest.raises(DataError, match=r"unknown symbol 'XYZ': no data under .*bars/1m/XYZ"):
        bar_files(tmp_path, "1m", "XYZ")


def test_data_range_uses_statistics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _bars(JAN_30, 3 * 24 * 60)
    write_bars(tmp_path, "ABCUSDT", "1m", table)

    def no_full_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("data_range must not read the data")

    monkeypatch.setattr(pq, "read_table", no_full_reads)
    first, last = data_range(tmp_path, "1m", "ABCUSDT")
    assert first == JAN_30
    assert last == JAN_30 + (3 * 24 * 60 - 1) * MIN


def test_symbol_specs_round_trip_and_missing_file(tmp_path: Path) -> None:
    assert read_symbol_specs(tmp_path) == {}
    specs = {
        "BTCUSDT": {"tick_size": 0.1, "step_size": 0.001, "min_qty": 0.001, "min_notional": 100},
        "ADAUSDT": {"tick_size": 1e-4, "step_size": 1.0, "min_qty": 1.0, "min_notional": 5.0},
    }
    path = write_symbol_specs(tmp_path, specs)
    assert path == tmp_path / "symbols.json"
    back = read_symbol_specs(tmp_path)
    assert list(back) == ["ADAUSDT", "BTCUSDT"]
    assert back["BTCUSDT"]["min_notional"] == 100.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"tick_size": 0.1, "step_size": 1.0, "min_qty": 1.0}, "missing field 'min_notional'"),
        (
            {"tick_size": 0.0, "step_size": 1.0, "min_qty": 1.0, "min_notional": 5.0},
            "tick_size must be > 0",
        ),
        (
            {"tick_size": 0.1, "step_size": 1.0, "min_qty": -1.0, "min_notional": 5.0},
            "min_qty must be >= 0",
        ),
        (
            {"tick_size": "0.1", "step_size": 1.0, "min_qty": 1.0, "min_notional": 5.0},
            "tick_size must be a finite number",
        ),
        (
            {"tick_size": 0.1, "step_size": 1, "min_qty": 1, "min_notional": 5, "lot": 1},
            r"unknown field\(s\) \['lot'\]",
        ),
    ],
)
def test_symbol_specs_are_validated(tmp_path: Path, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        write_symbol_specs(tmp_path, {"BTCUSDT": spec})
    (tmp_path / "symbols.json").write_text(json.dumps({"BTCUSDT": spec}))
    with pytest.raises(DataError, match=r"symbols\.json: BTCUSDT: " + message):
        read_symbol_specs(tmp_path)
