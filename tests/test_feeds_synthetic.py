"""Synthetic universe: determinism, chunking invariance, OHLC and tick consistency, correlation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tickray.feeds.replay import BarCursor
from tickray.feeds.schemas import BARS, DataError, format_ts
from tickray.feeds.store import data_range, list_symbols, read_symbol_specs
from tickray.feeds.synthetic import (
    demo_symbols,
    generate_bars,
    iter_generate,
    synthetic_params,
    tick_counts,
    write_demo_dataset,
)

T0 = int(np.datetime64("2024-01-01T00:00", "ns").astype(np.int64))
DAY = 1440
SYMBOLS = demo_symbols(6)


@pytest.fixture(scope="module")
def ten_days() -> dict[str, pa.Table]:
    return generate_bars(SYMBOLS, T0, 10 * DAY, seed=11)


def _col(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy())


def test_same_seed_gives_identical_tables_and_other_seed_differs(
    ten_days: dict[str, pa.Table],
) -> None:
    again = generate_bars(SYMBOLS, T0, 10 * DAY, seed=11)
    other = generate_bars(SYMBOLS, T0, 10 * DAY, seed=12)
    for sym in SYMBOLS:
        assert again[sym].equals(ten_days[sym])
        assert not np.array_equal(_col(other[sym], "close"), _col(ten_days[sym], "close"))


def test_output_is_independent_of_chunking_and_length(ten_days: dict[str, pa.Table]) -> None:
    chunks = list(iter_generate(SYMBOLS, T0, 10 * DAY, seed=11))
    assert [c[SYMBOLS[0]].num_rows for c in chunks] == [DAY] * 10
    shorter = generate_bars(SYMBOLS, T0, 3 * DAY + 17, seed=11)  # not a whole day
    for sym in SYMBOLS:
        joined = pa.concat_tables([c[sym] for c in chunks])
        assert joined.equals(ten_days[sym])
        assert shorter[sym].equals(ten_days[sym].slice(0, 3 * DAY + 17))


def test_schema_timestamps_and_global_random_state_untouched(ten_days: dict[str, pa.Table]) -> None:
    state = np.random.get_state()[1].copy()  # type: ignore[index]
    generate_bars(SYMBOLS[:2], T0, 100, seed=1)
    assert np.array_equal(np.random.get_state()[1], state)  # type: ignore[index]
    table = ten_days[SYMBOLS[0]]
    assert table.schema.equals(BARS, check_metadata=True)
    ts = _col(table, "ts").view(np.int64)
    assert ts[0] == T0 and np.all(np.diff(ts) == 60 * 10**9)


def test_bars_are_ohlc_consistent_and_open_is_previous_close(
    ten_days: dict[str, pa.Table],
) -> None:
    for table in ten_days.values():
        o, h, lo, c = (_col(table, k) for k in ("open", "high", "low", "close"))
        assert np.all(lo > 0)
        assert np.all(h >= np.maximum(o, c)) and np.all(lo <= np.minimum(o, c))
        assert np.array_equal(o[1:], c[:-1])
        assert np.mean(h > np.maximum(o, c)) > 0.5  # wicks exist
        v, tb = _col(table, "volume"), _col(table, "taker_buy_volume")
        assert np.all(v >= 0) and np.all(tb >= 0) and np.all(tb <= v)
        vwap = _col(table, "quote_volume")[v > 0] / v[v > 0]
        assert np.all(vwap <= h[v > 0] * (1 + 1e-12)) and np.all(vwap >= lo[v > 0] * (1 - 1e-12))


def test_prices_are_exact_tick_multiples_with_4_to_6_significant_digits(
    ten_days: dict[str, pa.Table],
) -> None:
    params = synthetic_params(SYMBOLS, seed=11)
    levels = []
    for p in params:
        table = ten_days[p.symbol]
        for name in ("open", "high", "low", "close"):
            px = _col(table, name)
            ticks = tick_counts(px, p.tick_exp)
            np.testing.assert_allclose(ticks * p.tick_size, px, rtol=1e-12, atol=0)
            # Each price is the double nearest to the decimal ticks * 10**tick_exp.
            decimal = [float(f"{t}e{p.tick_exp}") for t in ticks[::97]]
            assert px[::97].tolist() == decimal
            digits = np.floor(np.log10(ticks)) + 1
            assert digits.min() >= 4 and digits.max() <= 6, (p.symbol, name)
        step_ticks = _col(table, "volume") / p.step_size
        assert np.allclose(step_ticks, np.rint(step_ticks), rtol=0, atol=1e-6)
        levels.append(_col(table, "close")[0])
    assert min(levels) < 0.2 and max(levels) > 10_000


def test_pairwise_return_correlations_are_moderate(ten_days: dict[str, pa.Table]) -> None:
    rets = np.array([np.diff(np.log(_col(t, "close"))) for t in ten_days.values()])
    corr = np.corrcoef(rets)
    off = corr[~np.eye(len(SYMBOLS), dtype=bool)]
    assert off.min() > 0.2 and off.max() < 0.8, off
    assert 0.3 < off.mean() < 0.7


def test_returns_are_fat_tailed_and_volatility_clusters(ten_days: dict[str, pa.Table]) -> None:
    r = np.diff(np.log(_col(ten_days[SYMBOLS[-1]], "close")))
    z = (r - r.mean()) / r.std()
    assert np.mean(z**4) > 4.0  # excess kurtosis well above the normal's 3
    a = np.abs(z)
    assert np.corrcoef(a[:-1], a[1:])[0, 1] > 0.05


def test_volume_is_u_shaped_over_the_utc_day(ten_days: dict[str, pa.Table]) -> None:
    table = ten_days[SYMBOLS[2]]
    notional = (_col(table, "quote_volume")).reshape(10, DAY).mean(axis=0)
    edges = np.r_[notional[:120], notional[-120:]].mean()
    middle = notional[600:840].mean()
    assert edges > 1.5 * middle


def test_write_demo_dataset_layout_specs_and_speed(tmp_path: Path) -> None:
    started = time.perf_counter()
    symbols = write_demo_dataset(tmp_path, n_symbols=8, days=30, seed=7, start="2024-01-20")
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"write_demo_dataset took {elapsed:.2f} s"
    assert symbols == [f"SYN{i:02d}USDT" for i in range(8)]
    assert list_symbols(tmp_path, "1m") == symbols
    specs = read_symbol_specs(tmp_path)
    assert set(specs) == set(symbols)
    assert all(s["tick_size"] > 0 and s["min_notional"] > 0 for s in specs.values())
    first, last = data_range(tmp_path, "1m", "SYN03USDT")
    assert (format_ts(first), format_ts(last)) == ("2024-01-20T00:00:00Z", "2024-02-18T23:59:00Z")
    files = sorted((tmp_path / "bars" / "1m" / "SYN03USDT").iterdir())
    assert [f.name for f in files] == ["2024-01.parquet", "2024-02.parquet"]
    stored = np.concatenate(
        [c.close for c in BarCursor(tmp_path, "1m", "SYN03USDT", first, last + 1)]
    )
    direct = generate_bars(symbols, first, 30 * DAY, seed=7)["SYN03USDT"]
    np.testing.assert_array_equal(stored, _col(direct, "close"))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(DataError, match="bad symbol"):
        generate_bars(["btc"], T0, 10, seed=1)
    with pytest.raises(DataError, match="duplicate symbols"):
        generate_bars(["A", "A"], T0, 10, seed=1)
    with pytest.raises(DataError, match="bad interval"):
        generate_bars(["A"], T0, 10, seed=1, interval="1x")


def test_other_intervals_keep_one_day_blocks() -> None:
    bars = generate_bars(["A", "B"], T0, 30, seed=3, interval="1h")
    ts = _col(bars["A"], "ts").view(np.int64)
    assert np.all(np.diff(ts) == 3600 * 10**9)
    blocks = list(iter_generate(["A", "B"], T0, 30, seed=3, interval="1h"))
    assert [b["A"].num_rows for b in blocks] == [24, 6]
