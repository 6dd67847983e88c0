"""Resampling bars to coarser intervals, bars from trades, and resampling a stored symbol.

The reference for every aggregate is pandas: ``resample(rule, label="left", closed="left",
origin=...)`` with first/max/min/last and, for the sums, ``math.fsum`` of the non-null values
(null when all are null), keeping only target intervals that hold a source bar. pandas' own
``sum`` is a Kahan sum, which is not always correctly rounded (on these volumes it differs from
the exact sum in the last bit for ~30% of 5m bars); resample.py returns the correctly rounded
sum, so pandas' ``sum`` is checked only to within 1e-12 relative.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tickray.engine.clock import DAY, HOUR, MINUTE, SECOND, parse_time
from tickray.feeds.binance import convert_klines, read_klines_csv
from tickray.feeds.resample import (
    MONDAY_ORIGIN_NS,
    bars_from_trades,
    resample_bars,
    resample_bars_flagged,
    resample_store,
)
from tickray.feeds.schemas import BARS, TRADES, DataError, conform, interval_ns
from tickray.feeds.store import bar_files, write_bars
from tickray.feeds.synthetic import generate_bars

COLUMNS = [f.name for f in BARS][1:]
KLINES_1M = Path("crypto/klines_1m/binance_usdm_futures")
KLINES_1H = Path("crypto/klines_1h/binance_usdm_futures")


def _frame(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas()
    return df.set_index("ts")


def exact_sum(values: pd.Series) -> float:
    """Correctly rounded sum of the non-null values; NaN (null) when every value is null."""
    present = values.dropna()
    return math.fsum(present) if len(present) else math.nan


SUMS = ("volume", "quote_volume", "trade_count", "taker_buy_volume")


def pandas_reference(table: pa.Table, rule: str, origin: pd.Timestamp | str) -> pd.DataFrame:
    """pandas' left-closed, left-labelled resample of a BARS table; empty intervals dropped."""
    r = _frame(table).resample(rule, label="left", closed="left", origin=origin)
    ref = pd.DataFrame(
        {
            "open": r["open"].first(),
            "high": r["high"].max(),
            "low": r["low"].min(),
            "close": r["close"].last(),
            **{name: r[name].agg(exact_sum) for name in SUMS},
        }
    )
    pandas_sums = pd.DataFrame({name: r[name].sum(min_count=1) for name in SUMS})
    keep = r["open"].count() > 0
    ref.attrs["pandas_sums"] = pandas_sums[keep]
    return ref[keep]


def assert_equal_to_reference(out: pa.Table, ref: pd.DataFrame) -> None:
    got = _frame(out)
    assert list(got.index) == list(ref.index)
    for name in COLUMNS:
        a = got[name].to_numpy(dtype=np.float64, na_value=np.nan)
        b = ref[name].to_numpy(dtype=np.float64, na_value=np.nan)
        assert np.array_equal(a, b, equal_nan=True), name
        if name in SUMS and "pandas_sums" in ref.attrs:
            c = ref.attrs["pandas_sums"][name].to_numpy(dtype=np.float64, na_value=np.nan)
            assert np.allclose(a, c, rtol=1e-12, atol=0, equal_nan=True), name


def synthetic_with_gaps(
    n: int, seed: int, interval: str = "1m", start: str = "2024-02-27 13:37"
) -> pa.Table:
    """Synthetic bars with ~10% of rows dropped, a 3-hour hole and scattered null optionals."""
    table = generate_bars(["AAAUSDT"], parse_time(start), n, seed, interval)["AAAUSDT"]
    rng = np.random.default_rng(seed)
    keep = rng.random(n) > 0.1
    keep[n // 3 : n // 3 + 180] = False  # a 3 h hole (1m bars): whole target bars go missing
    table = table.filter(pa.array(keep))
    m = table.num_rows
    for name in ("quote_volume", "trade_count", "taker_buy_volume"):
        null = rng.random(m) < 0.2
        null[m // 2 : m // 2 + 90] = True  # whole 5m/15m/1h groups null only in this column
        col = table.column(name).combine_chunks()
        table = table.set_column(
            table.schema.get_field_index(name),
            name,
            pa.array(col.to_numpy(zero_copy_only=False), type=col.type, mask=null),
        )
    return conform(table, "bars", "synthetic")


# ----------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("to_interval", ["5m", "15m", "1h", "1d"])
def test_resample_equals_pandas_epoch_resample_with_gaps_and_nulls(to_interval: str) -> None:
    src = synthetic_with_gaps(4 * 1440 + 77, seed=5)
    out = resample_bars(src, "1m", to_interval)
    rule = pd.Timedelta(interval_ns(to_interval), unit="ns")
    assert_equal_to_reference(out, pandas_reference(src, rule, "epoch"))


def test_weeks_start_monday_midnight_utc_and_match_pandas() -> None:
    src = synthetic_with_gaps(6 * 7 * 24 + 5, seed=9, interval="1h", start="2024-02-27 13:00")
    out = resample_bars(src, "1h", "1w")
    ts = _frame(out).index
    assert (ts.day_of_week == 0).all() and (ts.hour == 0).all()
    # 1970-01-05 is the first Monday after the (Thursday) epoch.
    assert MONDAY_ORIGIN_NS == 4 * DAY
    origin = pd.Timestamp("1970-01-05", tz="UTC")
    assert_equal_to_reference(out, pandas_reference(src, pd.Timedelta(days=7), origin))


def test_origin_ns_shifts_the_grid() -> None:
    src = synthetic_with_gaps(3 * 1440, seed=2)
    out = resample_bars(src, "1m", "1d", origin_ns=8 * HOUR)  # days from 08:00 UTC
    assert (_frame(out).index.hour == 8).all()
    origin = pd.Timestamp("1970-01-01 08:00", tz="UTC")
    assert_equal_to_reference(out, pandas_reference(src, pd.Timedelta(hours=24), origin))


def test_gaps_aggregate_what_exists_and_all_null_optional_stays_null() -> None:
    # Five 1m bars at 00:00, 00:01, 00:03 (gap at 00:02), 00:05, 00:06 -> two 5m bars.
    t0 = parse_time("2024-01-01")
    table = pa.table(
        {
            "ts": pa.array([t0 + k * MINUTE for k in (0, 1, 3, 5, 6)], pa.timestamp("ns", "UTC")),
            "open": [10.0, 11.0, 12.0, 20.0, 21.0],
            "high": [11.0, 13.0, 12.5, 22.0, 21.5],
            "low": [9.0, 10.5, 11.0, 19.0, 20.5],
            "close": [11.0, 12.0, 12.2, 21.0, 21.2],
            "volume": [1.0, 2.0, 4.0, 8.0, 16.0],
            "quote_volume": pa.array([None, 3.0, None, None, None], pa.float64()),
            "trade_count": pa.array([1, 2, 3, None, None], pa.int64()),
        }
    )
    res = resample_bars_flagged(table, "1m", "5m")
    out = res.bars.to_pydict()
    # 00:00 bar: open 10 (first), high 13, low 9, close 12.2 (last), volume 1+2+4 = 7.
    assert out["open"] == [10.0, 20.0] and out["high"] == [13.0, 22.0]
    assert out["low"] == [9.0, 19.0] and out["close"] == [12.2, 21.2]
    assert out["volume"] == [7.0, 24.0]
    assert out["quote_volume"] == [3.0, None]  # nulls count as nothing; all-null stays null
    assert out["trade_count"] == [6, None]
    assert out["taker_buy_volume"] == [None, None]  # column absent: null everywhere
    assert res.n_source.tolist() == [3, 2]
    # First bar covers 00:00-00:05 from the first source bar on: complete despite the gap.
    # Last bar 00:05-00:10 reaches past the last source bar's end (00:07): partial.
    assert res.complete.tolist() == [True, False]


def test_partial_edge_bars_are_flagged_and_can_be_dropped() -> None:
    # 1m bars from 00:07 to 02:29 -> 1h bars 00:00 (partial), 01:00 (complete), 02:00 (partial).
    start = parse_time("2024-01-01 00:07")
    src = generate_bars(["AAAUSDT"], start, 143, seed=3)["AAAUSDT"]
    res = resample_bars_flagged(src, "1m", "1h")
    assert res.complete.tolist() == [False, True, False]
    assert res.n_source.tolist() == [53, 60, 30]
    kept = resample_bars(src, "1m", "1h", drop_partial=True)
    assert kept.equals(res.bars.slice(1, 1))


def test_exact_hours_are_complete_at_both_edges() -> None:
    src = generate_bars(["AAAUSDT"], parse_time("2024-01-01"), 120, seed=3)["AAAUSDT"]
    assert resample_bars_flagged(src, "1m", "1h").complete.tolist() == [True, True]


def test_same_interval_is_identity() -> None:
    src = synthetic_with_gaps(500, seed=4)
    assert resample_bars(src, "1m", "1m").equals(src)


def test_empty_table_gives_empty_bars() -> None:
    res = resample_bars_flagged(BARS.empty_table(), "1m", "1h")
    assert res.bars.num_rows == 0 and res.bars.schema.equals(BARS)
    assert res.complete.size == 0


# ----------------------------------------------------------------------------------- bad input


def test_non_multiple_target_is_rejected_naming_both() -> None:
    src = generate_bars(["AAAUSDT"], parse_time("2024-01-01"), 10, seed=1)["AAAUSDT"]
    with pytest.raises(DataError, match=r"'7m'.*not a whole multiple of '5m'"):
        resample_bars(src, "5m", "7m")


def test_smaller_target_is_rejected_naming_both() -> None:
    src = generate_bars(["AAAUSDT"], parse_time("2024-01-01"), 10, seed=1)["AAAUSDT"]
    with pytest.raises(DataError, match=r"'1h'.*smaller interval '5m'"):
        resample_bars(src, "1h", "5m")


def test_unsorted_input_is_rejected() -> None:
    src = generate_bars(["AAAUSDT"], parse_time("2024-01-01"), 10, seed=1)["AAAUSDT"]
    shuffled = src.take(pa.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9]))
    with pytest.raises(DataError, match="non-monotonic timestamp"):
        resample_bars(shuffled, "1m", "5m")


def test_bars_off_the_source_grid_are_rejected() -> None:
    src = generate_bars(["AAAUSDT"], parse_time("2024-01-01 00:00:30"), 10, seed=1)["AAAUSDT"]
    with pytest.raises(DataError, match="not on the 1m grid"):
        resample_bars(src, "1m", "5m")
    with pytest.raises(DataError, match="not on the 1h grid"):
        resample_bars(
            generate_bars(["AAAUSDT"], parse_time("2024-01-01"), 5, 1, "1h")["AAAUSDT"],
            "1h",
            "1d",
            origin_ns=30 * MINUTE,
        )


def test_bad_interval_text_is_rejected() -> None:
    src = generate_bars(["AAAUSDT"], parse_time("2024-01-01"), 10, seed=1)["AAAUSDT"]
    with pytest.raises(DataError, match="bad interval"):
        resample_bars(src, "1m", "fortnight")


# ------------------------------------------------------------------------------- bars from trades


def trades_reference(trades: pa.Table, rule: str) -> pd.DataFrame:
    df = trades.to_pandas()
    df["quote"] = df["price"] * df["qty"]
    df["taker_buy"] = np.where(df["is_buyer_maker"], 0.0, df["qty"])
    g = df.groupby(df["ts"].dt.floor(rule), sort=True)
    return pd.DataFrame(
        {
            "open": g["price"].first(),
            "high": g["price"].max(),
            "low": g["price"].min(),
            "close": g["price"].last(),
            "volume": g["qty"].agg(exact_sum),
            "quote_volume": g["quote"].agg(exact_sum),
            "trade_count": g["price"].count(),
            "taker_buy_volume": g["taker_buy"].agg(exact_sum),
        }
    )


def real_trades(shared_data: Path) -> pa.Table:
    path = shared_data / "crypto/ticks/nautilus_binance_spot_BTCUSDT_trades_2021-01-08.parquet"
    if not path.exists():
        pytest.skip(f"{path} not found")
    raw = pq.read_table(path)
    return conform(
        pa.table(
            {
                "ts": raw.column("timestamp"),
                "trade_id": raw.column("trade_id"),
                "price": raw.column("price"),
                "qty": raw.column("quantity"),
                "is_buyer_maker": pc.equal(raw.column("buyer_maker"), "True"),
            }
        ),
        "trades",
        str(path),
    )


def synthetic_trades(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    # Bursty arrivals with repeated timestamps and quiet seconds (no bar for those).
    steps = rng.choice([0, 1_000_000, 50_000_000, 3 * SECOND], size=n, p=[0.2, 0.5, 0.28, 0.02])
    ts = parse_time("2024-01-01") + np.cumsum(steps)
    price = 100 + np.cumsum(rng.normal(0, 0.01, n)).round(2)
    return conform(
        pa.table(
            {
                "ts": pa.array(ts, pa.timestamp("ns", "UTC")),
                "trade_id": np.arange(n),
                "price": price,
                "qty": rng.integers(1, 5000, n) / 1000,
                "is_buyer_maker": rng.random(n) < 0.5,
            }
        ),
        "trades",
        "synthetic trades",
    )


@pytest.mark.parametrize("interval", ["1s", "5s"])
def test_bars_from_real_trades_equal_pandas_groupby(shared_data: Path, interval: str) -> None:
    trades = real_trades(shared_data)
    out = bars_from_trades(trades, interval)
    assert_equal_to_reference(out, trades_reference(trades, interval))
    assert pc.sum(out.column("trade_count")).as_py() == trades.num_rows


def test_bars_from_synthetic_trades_equal_pandas_groupby_and_skip_empty_seconds() -> None:
    trades = synthetic_trades(20_000, seed=8)
    out = bars_from_trades(trades, "1s")
    ref = trades_reference(trades, "1s")
    assert_equal_to_reference(out, ref)
    span = (ref.index[-1] - ref.index[0]) // pd.Timedelta("1s") + 1
    assert out.num_rows < span  # quiet seconds produce no bar


def test_bars_from_trades_take_ohlc_in_row_order_within_a_timestamp() -> None:
    t0 = parse_time("2024-01-01")
    trades = pa.table(
        {
            "ts": pa.array([t0, t0, t0, t0 + MINUTE], pa.timestamp("ns", "UTC")),
            "trade_id": [1, 2, 3, 4],
            "price": [5.0, 7.0, 6.0, 8.0],
            "qty": [1.0, 2.0, 3.0, 4.0],
            "is_buyer_maker": [True, False, False, True],
        },
        schema=TRADES,
    )
    out = bars_from_trades(trades, "1m").to_pydict()
    # Minute 0: open 5 (row 1), close 6 (row 3), volume 6, quote 5+14+18 = 37, taker buy 2+3.
    assert out["open"] == [5.0, 8.0] and out["close"] == [6.0, 8.0]
    assert out["volume"] == [6.0, 4.0] and out["quote_volume"] == [37.0, 32.0]
    assert out["trade_count"] == [3, 1] and out["taker_buy_volume"] == [5.0, 0.0]


def test_bars_from_unsorted_trades_are_rejected() -> None:
    trades = synthetic_trades(100, seed=1)
    with pytest.raises(DataError, match="non-monotonic"):
        bars_from_trades(trades.take(pa.array(np.arange(100)[::-1])), "1s")


# --------------------------------------------------------------------------------- resample_store


@pytest.mark.parametrize("to_interval", ["1h", "1d", "1w"])
def test_resample_store_across_month_boundaries_equals_whole_series(
    tmp_path: Path, to_interval: str
) -> None:
    # 1m bars from 2024-01-29 10:13 to 2024-03-02, with gaps: weeks and days straddle months.
    src = synthetic_with_gaps(33 * 1440, seed=12, start="2024-01-29 10:13")
    write_bars(tmp_path, "AAAUSDT", "1m", src)
    assert len(bar_files(tmp_path, "1m", "AAAUSDT")) == 3
    written = resample_store(tmp_path, "AAAUSDT", "1m", to_interval)
    assert written == bar_files(tmp_path, to_interval, "AAAUSDT")
    stored = pa.concat_tables([pq.read_table(p) for p in written]).combine_chunks()
    assert stored.equals(resample_bars(src, "1m", to_interval))


def test_resample_store_drop_partial_equals_whole_series(tmp_path: Path) -> None:
    src = synthetic_with_gaps(33 * 1440, seed=13, start="2024-01-29 10:13")
    write_bars(tmp_path, "AAAUSDT", "1m", src)
    written = resample_store(tmp_path, "AAAUSDT", "1m", "1w", drop_partial=True)
    stored = pa.concat_tables([pq.read_table(p) for p in written]).combine_chunks()
    expected = resample_bars(src, "1m", "1w", drop_partial=True)
    assert expected.num_rows >= 3
    assert stored.equals(expected)


def test_resample_store_rejects_non_multiple_before_reading(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a whole multiple"):
        resample_store(tmp_path, "AAAUSDT", "1h", "90m")


# ------------------------------------------------------------------------------------ real data


def test_real_1m_to_1h_matches_pandas_on_every_2026_02_usdm_file(shared_data: Path) -> None:
    files = sorted((shared_data / KLINES_1M).glob("*-1m-2026-02.csv.gz"))
    if not files:
        pytest.skip(f"no 2026-02 1m files under {shared_data / KLINES_1M}")
    for path in files:
        src = read_klines_csv(path)
        res = resample_bars_flagged(src, "1m", "1h")
        assert res.bars.num_rows == 672 and res.complete.all(), path.name  # 28 days x 24 h
        assert_equal_to_reference(res.bars, pandas_reference(src, "1h", "epoch"))


def test_real_1m_aggregates_reproduce_rest_1h_klines(shared_data: Path) -> None:
    """README: aggregating 2026-02 USD-M 1m files to 1h reproduces the REST 1h klines exactly."""
    pairs = []
    for one_h in sorted((shared_data / KLINES_1H).glob("*-1h.csv.gz")):
        symbol = one_h.name.split("-")[0]
        one_m = sorted((shared_data / KLINES_1M).glob(f"{symbol}-1m-*.csv.gz"))
        if one_m:
            pairs.append((one_h, one_m))
    if not pairs:
        pytest.skip(
            "no symbol has both 1m and 1h USD-M klines in ../shared/data: the 1h files are "
            "BTCUSDT/ETHUSDT only and their 1m files were too large to bring (README section 1); "
            "the 1h files of the seven 1m symbols were not copied"
        )
    for one_h, one_m in pairs:
        hourly = read_klines_csv(one_h)
        agg = resample_bars(pa.concat_tables([read_klines_csv(p) for p in one_m]), "1m", "1h")
        common, i, j = np.intersect1d(
            agg.column("ts").cast(pa.int64()).to_numpy(),
            hourly.column("ts").cast(pa.int64()).to_numpy(),
            return_indices=True,
        )
        assert common.size, one_h.name
        for name in ("open", "high", "low", "close", "volume"):
            a = agg.column(name).to_numpy()[i]
            b = hourly.column(name).to_numpy()[j]
            assert np.array_equal(a, b), (one_h.name, name)


def test_real_filusdt_four_months_store_resample_equals_whole_series(
    shared_data: Path, tmp_path: Path
) -> None:
    files = [shared_data / KLINES_1M / f"FILUSDT-1m-2023-{m:02d}.csv.gz" for m in (8, 9, 10, 11)]
    if not all(f.exists() for f in files):
        pytest.skip("FILUSDT 2023-08..11 1m files not found in ../shared/data")
    convert_klines(files, tmp_path, "FILUSDT", "1m")
    whole = pa.concat_tables([read_klines_csv(f) for f in files]).combine_chunks()
    for to_interval in ("4h", "1w"):
        written = resample_store(tmp_path, "FILUSDT", "1m", to_interval)
        stored = pa.concat_tables([pq.read_table(p) for p in written]).combine_chunks()
        assert stored.equals(resample_bars(whole, "1m", to_interval)), to_interval
    weekly = resample_bars_flagged(whole, "1m", "1w")
    # 2023-08-01 is a Tuesday and 2023-11-30 a Thursday: first and last weeks are partial.
    assert weekly.complete.tolist() == [False] + [True] * (weekly.bars.num_rows - 2) + [False]
