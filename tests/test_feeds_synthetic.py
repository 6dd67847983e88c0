"""Synthetic universe: determinism, chunking invariance, OHLC and tick consistency, correlation;
perpetual marks and funding (Binance's formula recomputed from the stored rows)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.feeds.replay import BarCursor
from tickray.feeds.schemas import BARS, FUNDING, DataError, format_ts
from tickray.feeds.store import data_range, list_symbols, read_symbol_specs, read_ticks
from tickray.feeds.synthetic import (
    MarkFundingStream,
    demo_symbols,
    generate_bars,
    generate_marks_funding,
    iter_generate,
    synthetic_params,
    tick_counts,
    write_demo_dataset,
)

T0 = int(np.datetime64("2024-01-01T00:00", "ns").astype(np.int64))
DAY = 1440
SYMBOLS = demo_symbols(6)
MINUTE_NS = 60 * 10**9
HOUR_NS = 60 * MINUTE_NS


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
    # The budget is for the bars and specs; the perpetual's funding ticks (one Parquet file
    # per symbol and day, about as much time again) are checked below on a smaller universe.
    started = time.perf_counter()
    symbols = write_demo_dataset(
        tmp_path, n_symbols=8, days=30, seed=7, start="2024-01-20", perp=False
    )
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


# --------------------------------------------------------------------------------------------
# Perpetual marks and funding.


def _ts(table: pa.Table) -> np.ndarray:
    return _col(table, "ts").view(np.int64)


def _rates(table: pa.Table) -> np.ndarray:
    """funding_rate with NaN for null."""
    return np.asarray(table.column("funding_rate").to_numpy(zero_copy_only=False), dtype=float)


def _binance_funding(
    rows: pa.Table, interest: float = 0.0001, cap: float = 0.0075, hours: int = 8
) -> dict[int, float]:
    """Binance's USD-M rate at every funding time among ``rows``, recomputed from the stored
    columns alone: premium ``p = mark / index - 1`` of each row; for the interval (T - 8h, T],
    ``P = sum(w p) / sum(w)`` with ``w`` = minutes from the interval start (1 .. 480);
    ``F = round(clamp(P + clamp(I - P, -0.0005, 0.0005), -cap, cap), 8)``."""
    ts = _ts(rows)
    premium = _col(rows, "mark_price") / _col(rows, "index_price") - 1.0
    fi = hours * HOUR_NS
    out = {}
    for t_end in ts[ts % fi == 0]:
        inside = (ts > t_end - fi) & (ts <= t_end)
        w = (ts[inside] - (t_end - fi)) / MINUTE_NS
        p = np.sum(w * premium[inside]) / np.sum(w)
        f = p + min(max(interest - p, -0.0005), 0.0005)
        out[int(t_end)] = round(min(max(f, -cap), cap), 8)
    return out


def _assert_funding_matches(rows: pa.Table, interest: float = 0.0001, cap: float = 0.0075) -> None:
    expected = _binance_funding(rows, interest, cap)
    ts, rates = _ts(rows), _rates(rows)
    assert sorted(expected) == ts[~np.isnan(rates)].tolist()
    got = {int(t): float(r) for t, r in zip(ts, rates, strict=True) if not np.isnan(r)}
    for t_end, f in expected.items():
        assert abs(got[t_end] - f) <= 1e-12, (format_ts(t_end), got[t_end], f)


@pytest.fixture(scope="module")
def perp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 symbols x 3 days across a month end: bars and funding ticks."""
    root = tmp_path_factory.mktemp("perp-demo")
    write_demo_dataset(root, n_symbols=3, days=3, seed=5, start="2024-01-30")
    return root


def test_marks_funding_have_one_row_per_bar_at_its_close(ten_days: dict[str, pa.Table]) -> None:
    p = synthetic_params(SYMBOLS, seed=11)[4]
    bars = ten_days[p.symbol]
    rows = generate_marks_funding(bars, seed=11, symbol_index=4, tick_exp=p.tick_exp)
    assert rows.schema.equals(FUNDING, check_metadata=True)
    assert rows.num_rows == bars.num_rows == 10 * DAY
    # Bar i opens at T0 + i min and closes a minute later: that is the row's ts.
    assert np.array_equal(_ts(rows), _ts(bars) + MINUTE_NS)
    np.testing.assert_array_equal(_col(rows, "index_price"), _col(bars, "close"))
    assert rows.column("mark_price").null_count == 0
    assert rows.column("index_price").null_count == 0


def test_funding_is_set_exactly_at_00_08_16_utc_closes(ten_days: dict[str, pa.Table]) -> None:
    p = synthetic_params(SYMBOLS, seed=11)[0]
    rows = generate_marks_funding(ten_days[p.symbol], seed=11, symbol_index=0, tick_exp=p.tick_exp)
    ts = _ts(rows)[~np.isnan(_rates(rows))]
    # Closes run from 00:01 on day 1 to 00:00 on day 11: 08:00 and 16:00 of days 1-10, and
    # 00:00 of days 2-11, so 30 funding rows.
    assert ts.size == 30
    assert {format_ts(int(t))[11:] for t in ts} == {"00:00:00Z", "08:00:00Z", "16:00:00Z"}
    assert np.all(np.diff(ts) == 8 * HOUR_NS)
    assert format_ts(int(ts[0])) == "2024-01-01T08:00:00Z"


def test_stored_funding_equals_binance_formula_recomputed_from_stored_marks(
    perp_root: Path,
) -> None:
    for sym in demo_symbols(3):
        rows = read_ticks(perp_root, "funding", sym)
        _assert_funding_matches(rows)
        rates = _rates(rows)
        rates = rates[~np.isnan(rates)]
        assert rates.size == 9 and np.all(np.abs(rates) <= 0.0075)


def test_funding_formula_holds_where_both_clamps_bite(ten_days: dict[str, pa.Table]) -> None:
    # With I = 0 and cap = 0.03%: F = 0 while |P| <= 0.05%, F = P -+ 0.05% beyond, then the
    # cap. The 10 days x 6 symbols exercise every branch.
    params = synthetic_params(SYMBOLS, seed=11)
    seen: list[np.ndarray] = []
    for j, p in enumerate(params):
        rows = generate_marks_funding(
            ten_days[p.symbol],
            seed=11,
            symbol_index=j,
            tick_exp=p.tick_exp,
            interest_rate=0.0,
            cap=0.0003,
        )
        _assert_funding_matches(rows, interest=0.0, cap=0.0003)
        rates = _rates(rows)
        seen.append(rates[~np.isnan(rates)])
    rates = np.concatenate(seen)
    assert np.all(np.abs(rates) <= 0.0003)
    assert np.mean(rates == 0.0) > 0.5  # mostly within the dampener
    assert np.any(rates != 0.0) and np.any(np.abs(rates) == 0.0003)


def test_default_funding_is_mostly_the_interest_rate_and_sometimes_not(
    ten_days: dict[str, pa.Table],
) -> None:
    # F = I = 0.01% whenever the 8 h average premium is within 0.05% of I.
    params = synthetic_params(SYMBOLS, seed=11)
    rates = np.concatenate(
        [
            _rates(
                generate_marks_funding(
                    ten_days[p.symbol], seed=11, symbol_index=j, tick_exp=p.tick_exp
                )
            )
            for j, p in enumerate(params)
        ]
    )
    rates = rates[~np.isnan(rates)]
    assert rates.size == 6 * 30
    assert 0.6 < np.mean(rates == 0.0001) < 0.99
    assert np.all(np.abs(rates) <= 0.0075)


def test_mark_stays_near_index_on_the_tick_grid(ten_days: dict[str, pa.Table]) -> None:
    for j, p in enumerate(synthetic_params(SYMBOLS, seed=11)):
        rows = generate_marks_funding(
            ten_days[p.symbol], seed=11, symbol_index=j, tick_exp=p.tick_exp
        )
        mark, index = _col(rows, "mark_price"), _col(rows, "index_price")
        basis = mark / index - 1.0
        assert np.all(np.abs(basis) < 0.005)  # never more than 0.5% apart
        assert np.mean(np.abs(basis) <= 0.001) > 0.95  # nearly always within 0.1%
        assert 0.0001 < np.std(basis) < 0.001  # a few basis points (1 bp = 0.0001)
        ticks = tick_counts(mark, p.tick_exp)
        assert mark[::97].tolist() == [float(f"{t}e{p.tick_exp}") for t in ticks[::97]]


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=2 * DAY - 1), max_size=6, unique=True))
def test_marks_funding_do_not_depend_on_how_the_bars_are_split(cuts: list[int]) -> None:
    # Splits inside funding intervals must carry the open window over exactly.
    bars = generate_bars(["AUSDT"], T0 + 3 * HOUR_NS + 17 * MINUTE_NS, 2 * DAY, seed=3)["AUSDT"]
    p = synthetic_params(["AUSDT"], seed=3)[0]
    whole = generate_marks_funding(bars, seed=3, symbol_index=0, tick_exp=p.tick_exp)
    stream = MarkFundingStream(3, 0, p.tick_exp)
    edges = [0, *sorted(cuts), bars.num_rows]
    parts = [
        stream.next_rows(bars.slice(a, b - a)) for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    assert pa.concat_tables(parts).equals(whole)


def test_first_funding_averages_only_the_bars_present() -> None:
    # Bars start at 03:17, so the 08:00 funding averages the closes 03:18 .. 08:00 (weights
    # 198 .. 480, minutes since 00:00), as the recomputation does.
    bars = generate_bars(["AUSDT"], T0 + 3 * HOUR_NS + 17 * MINUTE_NS, DAY, seed=3)["AUSDT"]
    p = synthetic_params(["AUSDT"], seed=3)[0]
    rows = generate_marks_funding(
        bars, seed=3, symbol_index=0, tick_exp=p.tick_exp, interest_rate=0.0, cap=0.0003
    )
    _assert_funding_matches(rows, interest=0.0, cap=0.0003)
    assert format_ts(int(_ts(rows)[~np.isnan(_rates(rows))][0])) == "2024-01-01T08:00:00Z"


def test_symbols_get_their_own_streams_and_seeds_repeat(ten_days: dict[str, pa.Table]) -> None:
    bars = ten_days[SYMBOLS[0]].slice(0, DAY)
    p = synthetic_params(SYMBOLS, seed=11)[0]

    def marks(seed: int, index: int) -> np.ndarray:
        rows = generate_marks_funding(bars, seed=seed, symbol_index=index, tick_exp=p.tick_exp)
        return _col(rows, "mark_price")

    assert np.array_equal(marks(11, 0), marks(11, 0))
    assert not np.array_equal(marks(11, 0), marks(11, 1))
    assert not np.array_equal(marks(11, 0), marks(12, 0))


def test_read_ticks_covers_the_whole_span(perp_root: Path) -> None:
    for sym in demo_symbols(3):
        rows = read_ticks(perp_root, "funding", sym)
        ts = _ts(rows)
        # Bars open 2024-01-30 00:00 .. 2024-02-01 23:59; their closes run one minute later.
        assert rows.num_rows == 3 * DAY
        assert format_ts(int(ts[0])) == "2024-01-30T00:01:00Z"
        assert format_ts(int(ts[-1])) == "2024-02-02T00:00:00Z"
        assert np.all(np.diff(ts) == MINUTE_NS)
    days = sorted(f.name for f in (perp_root / "funding" / "SYN01USDT").iterdir())
    assert days == [f"2024-{d}.parquet" for d in ("01-30", "01-31", "02-01", "02-02")]


def _parquet_bytes(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*.parquet"))}


def test_demo_dataset_writes_are_byte_identical_and_rewrites_are_no_ops(
    perp_root: Path, tmp_path: Path
) -> None:
    write_demo_dataset(tmp_path, n_symbols=3, days=3, seed=5, start="2024-01-30")
    first = _parquet_bytes(tmp_path)
    assert first == _parquet_bytes(perp_root)
    assert any(name.startswith("funding/") for name in first)
    # Every day file is written whole, once per run, so writing again changes nothing.
    write_demo_dataset(tmp_path, n_symbols=3, days=3, seed=5, start="2024-01-30")
    assert _parquet_bytes(tmp_path) == first


def test_perp_off_writes_the_same_bars_and_no_funding(perp_root: Path, tmp_path: Path) -> None:
    write_demo_dataset(tmp_path, n_symbols=3, days=3, seed=5, start="2024-01-30", perp=False)
    assert not (tmp_path / "funding").exists()
    bars_on = {k: v for k, v in _parquet_bytes(perp_root).items() if k.startswith("bars/")}
    assert bars_on and _parquet_bytes(tmp_path) == bars_on


def test_bad_perp_arguments_are_rejected(ten_days: dict[str, pa.Table]) -> None:
    bars = ten_days[SYMBOLS[0]].slice(0, 100)
    with pytest.raises(DataError, match="symbol_index"):
        generate_marks_funding(bars, seed=1, symbol_index=-1, tick_exp=-2)
    with pytest.raises(DataError, match="cap"):
        generate_marks_funding(bars, seed=1, symbol_index=0, tick_exp=-2, cap=-0.1)
    stream = MarkFundingStream(1, 0, -2)
    stream.next_rows(bars.slice(50))
    with pytest.raises(DataError, match="time order"):
        stream.next_rows(bars.slice(0, 50))
