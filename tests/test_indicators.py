"""Indicators and strategies: hand-computed values, references, and batch == event by event."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.indicators import (
    ADX,
    ATR,
    EMA,
    MACD,
    ROC,
    RSI,
    SMA,
    VWAP,
    WMA,
    Bollinger,
    Donchian,
    Lag,
    RollingStd,
    TrueRange,
    ZScore,
)
from tickray.engine.strategies import (
    MomentumStrategy,
    ParamError,
    SmaCrossStrategy,
    make_strategy,
)


def test_sma_hand_computed() -> None:
    sma = SMA(3)
    out = [sma.update(x) for x in [1.0, 2.0, 3.0, 4.0, 10.0]]
    assert math.isnan(out[0]) and math.isnan(out[1])
    assert out[2:] == [2.0, 3.0, (3 + 4 + 10) / 3]


def test_momentum_hand_computed_signals() -> None:
    # window 2, threshold 5%: momentum at bar i is close[i] / close[i-2] - 1
    s = MomentumStrategy(window=2, threshold=0.05)
    closes = [100.0, 100.0, 106.0, 104.0, 100.0, 98.0, 99.0]
    # bar2: 106/100-1 = +6% -> long; bar3: 104/100-1 = +4% -> hold long;
    # bar4: 100/106-1 = -5.7% -> short; bar5: 98/104-1 = -5.8% -> short;
    # bar6: 99/100-1 = -1% -> hold short
    assert [s.on_bar(c) for c in closes] == [0, 0, 1, 1, -1, -1, -1]
    assert s.warmup == 3


def test_sma_cross_needs_slow_bars_before_any_signal() -> None:
    s = SmaCrossStrategy(fast=2, slow=3)
    # bar2: fast=(2+3)/2=2.5 > slow=(1+2+3)/3=2 -> long
    # bar3: fast=(3+1)/2=2 == slow=(2+3+1)/3=2 -> hold long
    # bar4: fast=(1+0.5)/2=0.75 < slow=(3+1+0.5)/3=1.5 -> short
    assert [s.on_bar(c) for c in [1.0, 2.0, 3.0, 1.0, 0.5]] == [0, 0, 1, 1, -1]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(1.0, 1000.0), min_size=1, max_size=300),
    st.lists(st.integers(1, 40), min_size=1, max_size=10),
    st.integers(1, 30),
)
def test_batch_updates_equal_event_by_event(xs: list[float], cuts: list[int], w: int) -> None:
    arr = np.array(xs)
    for make in (lambda: SMA(w), lambda: Lag(w), lambda: EMA(w)):
        one, batched = make(), make()
        expect = np.array([one.update(x) for x in xs])
        got, i = [], 0
        for c in cuts * 50:
            if i >= len(arr):
                break
            got.append(batched.update_batch(arr[i : i + c]))
            i += c
        got.append(batched.update_batch(arr[i:]))
        assert np.concatenate(got).tobytes() == expect.tobytes()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(50.0, 150.0), min_size=1, max_size=400), st.integers(1, 64))
def test_strategy_targets_batch_equal_on_bar(xs: list[float], chunk: int) -> None:
    for name, params in (
        ("momentum", {"window": 5, "threshold": 0.01}),
        ("sma_cross", {"fast": 3, "slow": 8}),
    ):
        one, batched = make_strategy(name, params), make_strategy(name, params)
        expect = [one.on_bar(x) for x in xs]
        arr = np.array(xs)
        got = np.concatenate(
            [batched.targets(arr[i : i + chunk]) for i in range(0, len(arr), chunk)]
        )
        assert got.tolist() == expect


def test_unknown_strategy_and_bad_params_name_the_problem() -> None:
    with pytest.raises(
        ParamError, match="unknown strategy 'nope' \\(known: breakout, breakout_trail,"
    ):
        make_strategy("nope")
    with pytest.raises(ParamError, match="has no parameter 'windw' \\(known: threshold, window\\)"):
        make_strategy("momentum", {"windw": 3})
    with pytest.raises(
        ParamError, match="strategy.params.window: must be an integer >= 1, got 'x'"
    ):
        make_strategy("momentum", {"window": "x"})
    with pytest.raises(ParamError, match="strategy.params.window: must be an integer >= 1"):
        make_strategy("momentum", {"window": 0})
    with pytest.raises(ParamError, match="fast \\(50\\) must be smaller than slow \\(20\\)"):
        make_strategy("sma_cross", {"fast": 50, "slow": 20})
    assert make_strategy("momentum", {"window": "7", "threshold": "0.5"}).warmup == 8


# -- the incremental indicator library (issue 5, item 3) -----------------------------------------
#
# Every indicator is checked against a reference written independently in this file: pandas
# (rolling, ewm, shift, groupby) or a loop of the textbook definition (Wilder's ATR, RSI, ADX).
# The tolerance is 1e-9 relative after warm-up. The two outputs that cross zero as a difference
# of nearly equal numbers (MACD's lines and the z-score) also get an absolute 1e-12 of their
# scale (the price, and 1), since a relative error means nothing at zero.

MINUTE = 60_000_000_000
FIL = Path(__file__).parent.parent / "../shared/data/crypto/klines_1m/binance_usdm_futures"
FIL_CSV = FIL / "FILUSDT-1m-2026-02.csv.gz"
UNIT = 2.0**-53  # unit roundoff of float64


class Bars(NamedTuple):
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    ts: np.ndarray


def random_bars(n: int, seed: int, tick: float | None = None, vol: float = 0.002) -> Bars:
    """A geometric random walk of minute bars around 100 (optionally on a tick grid)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    wick = np.abs(rng.normal(0.0, vol, (2, n))) * close
    high = np.maximum(open_, close) + wick[0]
    low = np.minimum(open_, close) - wick[1]
    if tick is not None:
        high, low, close = (np.round(a / tick) * tick for a in (high, low, close))
    volume = rng.gamma(2.0, 50.0, n)
    ts = 1_767_225_600_000_000_000 + np.arange(n, dtype=np.int64) * MINUTE
    return Bars(high, low, close, volume, ts)


def sliding(x: np.ndarray, n: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, n)


def pad(values: np.ndarray, n: int) -> np.ndarray:
    """Window results (one per full window) aligned with the inputs: n - 1 NaN first."""
    return np.concatenate((np.full(n - 1, math.nan), values))


def assert_matches(got: np.ndarray, ref: np.ndarray, warmup: int, atol: float = 0.0) -> None:
    """NaN before ``warmup`` inputs, then numbers equal to ``ref`` to 1e-9 relative."""
    assert np.isnan(got[: warmup - 1]).all()
    assert not np.isnan(got[warmup - 1 :]).any()
    np.testing.assert_allclose(got[warmup - 1 :], ref[warmup - 1 :], rtol=1e-9, atol=atol)


# -- references ---------------------------------------------------------------------------------


def ref_wma(x: np.ndarray, n: int) -> np.ndarray:
    weights = np.arange(1.0, n + 1.0)  # oldest 1 ... newest n
    return pad(sliding(x, n) @ weights / weights.sum(), n)


def ref_std_two_pass(x: np.ndarray, n: int, ddof: int) -> np.ndarray:
    """Two-pass std of each window (accurate), 0 for windows of equal values; chunked."""
    parts = []
    for start in range(0, len(x) - n + 1, 100_000):
        w = sliding(x[start : start + 100_000 + n - 1], n)
        std = w.std(axis=1, ddof=ddof)
        std[w.max(axis=1) == w.min(axis=1)] = 0.0
        parts.append(std)
    return pad(np.concatenate(parts), n)


def ref_true_range(b: Bars) -> np.ndarray:
    h, lo, prev = pd.Series(b.high), pd.Series(b.low), pd.Series(b.close).shift()
    # max skips the NaN of the first bar, whose true range is high - low
    return pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1).to_numpy()


def ref_atr(b: Bars, n: int) -> np.ndarray:
    tr = ref_true_range(b).tolist()
    out = [math.nan] * len(tr)
    atr = 0.0
    for t in range(n - 1, len(tr)):
        atr = sum(tr[:n]) / n if t == n - 1 else (atr * (n - 1) + tr[t]) / n
        out[t] = atr
    return np.array(out)


def ref_rsi(x: np.ndarray, n: int) -> np.ndarray:
    closes = x.tolist()
    out = [math.nan] * len(closes)
    gains = [max(closes[t] - closes[t - 1], 0.0) for t in range(1, len(closes))]
    losses = [max(closes[t - 1] - closes[t], 0.0) for t in range(1, len(closes))]
    avg_gain = avg_loss = 0.0
    for t in range(n, len(closes)):
        if t == n:
            avg_gain, avg_loss = sum(gains[:n]) / n, sum(losses[:n]) / n
        else:
            avg_gain = (avg_gain * (n - 1) + gains[t - 1]) / n
            avg_loss = (avg_loss * (n - 1) + losses[t - 1]) / n
        if avg_loss == 0.0:
            out[t] = 100.0 if avg_gain > 0.0 else 50.0
        else:
            out[t] = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    return np.array(out)


def ref_macd(x: np.ndarray, fast: int, slow: int, signal: int) -> list[np.ndarray]:
    s = pd.Series(x)
    macd = s.ewm(span=fast, adjust=False).mean() - s.ewm(span=slow, adjust=False).mean()
    sig = macd.ewm(span=signal, adjust=False).mean()
    return [macd.to_numpy(), sig.to_numpy(), (macd - sig).to_numpy()]


def ref_adx(b: Bars, n: int) -> list[np.ndarray]:
    """Wilder's original recipe: running sums TR14 = TR14 - TR14 / 14 + TR, and so on."""
    h, lo, c = b.high.tolist(), b.low.tolist(), b.close.tolist()
    out = np.full((3, len(h)), math.nan)
    tr_s = pdm_s = mdm_s = adx = 0.0
    dxs: list[float] = []
    for t in range(1, len(h)):
        up, down = h[t] - h[t - 1], lo[t - 1] - lo[t]
        pdm = up if up > down and up > 0 else 0.0
        mdm = down if down > up and down > 0 else 0.0
        tr = max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1]))
        if t <= n:
            tr_s, pdm_s, mdm_s = tr_s + tr, pdm_s + pdm, mdm_s + mdm
        else:
            tr_s = tr_s - tr_s / n + tr
            pdm_s = pdm_s - pdm_s / n + pdm
            mdm_s = mdm_s - mdm_s / n + mdm
        if t < n:
            continue
        pdi, mdi = 100.0 * pdm_s / tr_s, 100.0 * mdm_s / tr_s
        dxs.append(100.0 * abs(pdi - mdi) / (pdi + mdi) if pdi + mdi > 0 else 0.0)
        if len(dxs) == n:
            adx = sum(dxs) / n
        elif len(dxs) > n:
            adx = (adx * (n - 1) + dxs[-1]) / n
        if len(dxs) >= n:
            out[:, t] = adx, pdi, mdi
    return list(out)


def ref_vwap(price: np.ndarray, volume: np.ndarray, ts: np.ndarray, reset_ns: int) -> np.ndarray:
    df = pd.DataFrame({"pv": price * volume, "v": volume, "session": ts // reset_ns})
    sums = df.groupby("session")[["pv", "v"]].cumsum()
    return (sums["pv"] / sums["v"]).to_numpy()


def all_references(
    b: Bars,
) -> list[tuple[str, Any, tuple[np.ndarray, ...], list[np.ndarray], float]]:
    """(name, indicator, inputs, reference outputs, atol) for every indicator on ``b``."""
    x = b.close
    s = pd.Series(x)
    scale = float(np.mean(np.abs(x)))
    typical = (b.high + b.low + b.close) / 3.0
    day = 86_400_000_000_000
    mean20 = s.rolling(20).mean().to_numpy()
    std20 = ref_std_two_pass(x, 20, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std20 == 0.0, 0.0, (x - mean20) / std20)
    std20_pop = ref_std_two_pass(x, 20, 0)
    hlc = (b.high, b.low, b.close)
    return [
        ("SMA", SMA(10), (x,), [s.rolling(10).mean().to_numpy()], 0.0),
        ("EMA", EMA(10), (x,), [s.ewm(span=10, adjust=False).mean().to_numpy()], 0.0),
        ("Lag", Lag(10), (x,), [s.shift(10).to_numpy()], 0.0),
        ("WMA", WMA(10), (x,), [ref_wma(x, 10)], 0.0),
        ("RollingStd", RollingStd(20), (x,), [std20], 0.0),
        ("RollingStd ddof=0", RollingStd(20, ddof=0), (x,), [std20_pop], 0.0),
        ("ZScore", ZScore(20), (x,), [z], 1e-12),
        (
            "Bollinger",
            Bollinger(20, 2.0),
            (x,),
            [mean20, mean20 + 2.0 * std20_pop, mean20 - 2.0 * std20_pop],
            0.0,
        ),
        ("TrueRange", TrueRange(), hlc, [ref_true_range(b)], 0.0),
        ("ATR", ATR(14), hlc, [ref_atr(b, 14)], 0.0),
        ("RSI", RSI(14), (x,), [ref_rsi(x, 14)], 0.0),
        ("MACD", MACD(12, 26, 9), (x,), ref_macd(x, 12, 26, 9), 1e-12 * scale),
        (
            "Donchian",
            Donchian(20),
            (b.high, b.low),
            [
                pd.Series(b.high).rolling(20).max().to_numpy(),
                pd.Series(b.low).rolling(20).min().to_numpy(),
                (
                    pd.Series(b.high).rolling(20).max() + pd.Series(b.low).rolling(20).min()
                ).to_numpy()
                / 2.0,
            ],
            0.0,
        ),
        (
            "VWAP daily",
            VWAP(reset_ns=day),
            (typical, b.volume, b.ts),
            [ref_vwap(typical, b.volume, b.ts, day)],
            0.0,
        ),
        ("ROC", ROC(10), (x,), [(s / s.shift(10) - 1.0).to_numpy()], 0.0),
        ("ADX", ADX(14), hlc, ref_adx(b, 14), 0.0),
    ]


def check_against_references(b: Bars) -> None:
    for name, ind, inputs, refs, atol in all_references(b):
        outs = ind.update_batch(*inputs)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        assert len(outs) == len(refs), name
        for got, ref in zip(outs, refs, strict=True):
            try:
                assert_matches(got, ref, ind.warmup, atol)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None


def test_indicators_match_references_on_a_random_walk() -> None:
    check_against_references(random_bars(5_000, seed=11))


def test_indicators_match_references_on_a_tick_grid_with_flat_stretches() -> None:
    # a 0.05 tick on a price of 100 and small moves: many equal closes, flat windows, zero losses
    check_against_references(random_bars(5_000, seed=12, tick=0.05, vol=0.0003))


def test_indicators_match_references_on_real_fil_minutes() -> None:
    if not FIL_CSV.exists():
        pytest.skip(f"recording {FIL_CSV} is not present (shared data not mounted)")
    df = pd.read_csv(FIL_CSV)
    ts = df["open_time"].to_numpy(np.int64) * 1_000_000
    cols = [df[c].to_numpy(np.float64) for c in ("high", "low", "close", "volume")]
    check_against_references(Bars(*cols, ts))


def test_rolling_std_matches_two_pass_to_1e_9_on_a_million_prices() -> None:
    x = random_bars(1_000_000, seed=5, vol=0.001).close
    for ddof in (0, 1):
        got = RollingStd(20, ddof).update_batch(x)
        assert_matches(got, ref_std_two_pass(x, 20, ddof), 20)


def test_rolling_std_matches_pandas_where_pandas_is_accurate() -> None:
    # pandas 3.1's rolling var never recomputes, so its own error grows with the series
    # (measured against a two-pass std: ~1e-10 after 3,000 points, ~1e-6 after 1e6 on this
    # kind of walk); on a short series it is a 1e-9 reference.
    x = random_bars(2_000, seed=6).close
    for ddof in (0, 1):
        ref = pd.Series(x).rolling(20).std(ddof=ddof).to_numpy()
        assert_matches(RollingStd(20, ddof).update_batch(x), ref, 20)


@pytest.mark.skipif(np.finfo(np.longdouble).eps > 1e-17, reason="needs an extended long double")
def test_rolling_std_error_stays_within_the_documented_bound() -> None:
    # |error of M2| <= 6 * n**2 * u * D**2, D the range of the last 2n inputs; the values
    # have jumps (sudden spread changes) and sit on a tick grid (flat windows, exact zeros).
    rng = np.random.default_rng(3)
    moves = rng.normal(0.0, 1e-3, 20_000)
    moves[rng.random(20_000) < 0.002] *= 50.0
    x = np.round(100.0 * np.exp(np.cumsum(moves)), 2)
    for n in (2, 5, 20):
        m2 = RollingStd(n, ddof=0).update_batch(x)[n - 1 :] ** 2 * n
        win = sliding(x, n)
        d = (win - win[:, :1]).astype(np.longdouble)  # exact shifts (Sterbenz), then extended
        exact = ((d - d.mean(axis=1, keepdims=True)) ** 2).sum(axis=1).astype(np.float64)
        last2n = sliding(np.concatenate((np.full(n, x[0]), x)), 2 * n)[-len(exact) :]
        spread = last2n.max(axis=1) - last2n.min(axis=1)
        assert (np.abs(m2 - exact) <= 6 * n * n * UNIT * spread**2).all()


def test_wma_hand_computed() -> None:
    wma = WMA(3)
    out = [wma.update(x) for x in [1.0, 2.0, 3.0, 4.0]]
    # (1*1 + 2*2 + 3*3) / 6 and (1*2 + 2*3 + 3*4) / 6
    assert math.isnan(out[0]) and math.isnan(out[1])
    assert out[2:] == pytest.approx([14 / 6, 20 / 6], rel=1e-15)


def test_std_zscore_bollinger_hand_computed_and_flat_windows_exact() -> None:
    # window [1, 3]: mean 2, population std 1, sample std sqrt(2)
    assert RollingStd(2).update_batch(np.array([1.0, 3.0]))[1] == pytest.approx(math.sqrt(2))
    mid, up, lo = Bollinger(2, k=2.0).update_batch(np.array([1.0, 3.0]))
    assert (mid[1], up[1], lo[1]) == (2.0, 4.0, 0.0)
    assert ZScore(2, ddof=0).update_batch(np.array([1.0, 3.0]))[1] == 1.0
    # a window of equal values: exactly no spread, and the input is at the mean
    flat = np.array([5.0, 1.1, 1.1, 1.1, 1.1])
    assert RollingStd(3).update_batch(flat)[-2:].tolist() == [0.0, 0.0]
    assert ZScore(3).update_batch(flat)[-2:].tolist() == [0.0, 0.0]
    assert Bollinger(3).update_batch(flat)[0][-1] == 1.1


def test_true_range_and_atr_hand_computed() -> None:
    high, low, close = (
        np.array([10.0, 12.0, 11.0]),
        np.array([8.0, 9.0, 10.0]),
        np.array([9.0, 11.0, 10.5]),
    )
    # TR: first bar 10 - 8 = 2; then max(3, |12 - 9|, |9 - 9|) = 3; then max(1, 0, |10 - 11|) = 1
    assert TrueRange().update_batch(high, low, close).tolist() == [2.0, 3.0, 1.0]
    # ATR(2): seeded by (2 + 3) / 2 = 2.5, then (2.5 * 1 + 1) / 2 = 1.75
    out = ATR(2).update_batch(high, low, close)
    assert math.isnan(out[0]) and out[1:].tolist() == [2.5, 1.75]


def test_rsi_hand_computed_and_its_edge_cases() -> None:
    # changes +1, -1, +1; seed over 2: gain 0.5, loss 0.5 -> 50; then gain (0.5 + 1) / 2 = 0.75,
    # loss (0.5 + 0) / 2 = 0.25 -> 100 * 0.75 / 1.0 = 75
    out = RSI(2).update_batch(np.array([1.0, 2.0, 1.0, 2.0]))
    assert np.isnan(out[:2]).all() and out[2:].tolist() == [50.0, 75.0]
    assert RSI(3).update_batch(np.arange(1.0, 8.0))[3:].tolist() == [100.0] * 4  # no loss
    assert RSI(3).update_batch(np.arange(8.0, 1.0, -1))[3:].tolist() == [0.0] * 4  # no gain
    assert RSI(3).update_batch(np.full(7, 4.2))[3:].tolist() == [50.0] * 4  # 0/0: neutral


def test_macd_lines_are_the_project_emas() -> None:
    x = random_bars(300, seed=2).close
    macd, signal, hist = MACD(3, 6, 4).update_batch(x)
    fast, slow = EMA(3), EMA(6)
    lines = np.array([fast.update(v) - slow.update(v) for v in x])
    warm = 6 + 4 - 1
    assert np.isnan(macd[: warm - 1]).all() and np.isnan(signal[: warm - 1]).all()
    assert macd[warm - 1 :].tolist() == lines[warm - 1 :].tolist()
    assert hist[warm - 1 :].tolist() == (macd - signal)[warm - 1 :].tolist()


def test_donchian_hand_computed() -> None:
    high = np.array([5.0, 7.0, 6.0, 4.0, 4.5])
    low = np.array([4.0, 5.0, 3.0, 3.5, 4.0])
    upper, lower, middle = Donchian(3).update_batch(high, low)
    # windows of 3: highs max 7, 7, 6; lows min 3, 3, 3
    assert upper[2:].tolist() == [7.0, 7.0, 6.0]
    assert lower[2:].tolist() == [3.0, 3.0, 3.0]
    assert middle[2:].tolist() == [5.0, 5.0, 4.5]


def test_vwap_resets_when_a_timestamp_crosses_a_multiple_of_the_period() -> None:
    vwap = VWAP(reset_ns=10)
    price = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    volume = np.array([1.0, 3.0, 1.0, 1.0, 2.0])
    ts = np.array([0, 5, 10, 12, 25])
    # session 0: 10, (10 + 60) / 4 = 17.5; session 1 (ts 10, 12): 30, (30 + 40) / 2 = 35;
    # session 2 (ts 25): 50
    assert vwap.update_batch(price, volume, ts).tolist() == [10.0, 17.5, 30.0, 35.0, 50.0]
    # an offset of 3 moves the boundaries to 3, 13, 23: sessions {0}, {5, 10, 12}, {25}
    shifted = VWAP(reset_ns=10, offset_ns=3).update_batch(price, volume, ts)
    # 10; then 20, (60 + 30) / 4 = 22.5, (60 + 30 + 40) / 5 = 26; then 50
    assert shifted.tolist() == [10.0, 20.0, 22.5, 26.0, 50.0]
    # without a period the VWAP is cumulative; no volume yet gives NaN
    cumulative = VWAP().update_batch(np.array([10.0, 20.0, 30.0]), np.array([0.0, 1.0, 1.0]))
    assert math.isnan(cumulative[0]) and cumulative[1:].tolist() == [20.0, 25.0]


def test_roc_is_a_fraction_and_nan_over_a_zero_past() -> None:
    roc = ROC(2)
    out = [roc.update(x) for x in [100.0, 0.0, 121.0, 5.0]]
    # 121 / 100 - 1 = 0.21; 5 / 0 is undefined
    assert math.isnan(out[0]) and math.isnan(out[1])
    assert out[2] == pytest.approx(0.21, rel=1e-15) and math.isnan(out[3])
    assert np.isnan(ROC(2).update_batch(np.array([100.0, 0.0, 121.0, 5.0]))[3])


# -- batch == event by event, and warm-up ----------------------------------------------------

# name -> (factory of a window w >= 1, input columns of Bars)
INDICATORS: dict[str, tuple[Callable[[int], Any], tuple[str, ...]]] = {
    "SMA": (SMA, ("close",)),
    "EMA": (EMA, ("close",)),
    "Lag": (Lag, ("close",)),
    "WMA": (WMA, ("close",)),
    "RollingStd": (lambda w: RollingStd(w + 1), ("close",)),
    "RollingStd ddof=0": (lambda w: RollingStd(w, ddof=0), ("close",)),
    "ZScore": (lambda w: ZScore(w + 1), ("close",)),
    "Bollinger": (lambda w: Bollinger(w, k=1.5), ("close",)),
    "TrueRange": (lambda w: TrueRange(), ("high", "low", "close")),
    "ATR": (ATR, ("high", "low", "close")),
    "RSI": (RSI, ("close",)),
    "MACD": (lambda w: MACD(w, w + 3, w), ("close",)),
    "Donchian": (Donchian, ("high", "low")),
    "VWAP": (lambda w: VWAP(reset_ns=w * MINUTE), ("close", "volume", "ts")),
    "VWAP cumulative": (lambda w: VWAP(), ("close", "volume")),
    "ROC": (ROC, ("close",)),
    "ADX": (ADX, ("high", "low", "close")),
}


def rows(value: Any) -> list[np.ndarray]:
    """An indicator's output as rows, one per component."""
    if isinstance(value, tuple):
        return [np.asarray(v, dtype=np.float64) for v in value]
    return [np.asarray(value, dtype=np.float64)]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    nan = np.isnan(a)
    return bool(np.array_equal(a, b, equal_nan=True) and a[~nan].tobytes() == b[~nan].tobytes())


@pytest.mark.parametrize("name", list(INDICATORS))
@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 250),
    seed=st.integers(0, 2**32 - 1),
    tick=st.sampled_from([None, 0.01, 0.5]),
    window=st.integers(1, 25),
    cuts=st.lists(st.integers(0, 40), min_size=1, max_size=8),
)
def test_update_batch_equals_update_bit_for_bit(
    name: str, n: int, seed: int, tick: float | None, window: int, cuts: list[int]
) -> None:
    make, columns = INDICATORS[name]
    bars = random_bars(n, seed, tick)
    cols = [getattr(bars, c) for c in columns]
    one, batched = make(window), make(window)
    outputs = len(rows(make(window).update_batch(*(c[:0] for c in cols))))
    events = [rows(one.update(*(c[i] for c in cols))) for i in range(n)]
    expect = np.array(events, dtype=np.float64).reshape(n, outputs)
    parts, i, k = [], 0, 0
    while i < n:  # batches of the drawn sizes in turn (empty batches included), then the rest
        size = cuts[k % len(cuts)] if k < 50 else n - i
        parts.append(rows(batched.update_batch(*(c[i : i + size] for c in cols))))
        i, k = i + size, k + 1
    for j in range(outputs):
        got = np.concatenate([np.empty(0)] + [p[j] for p in parts])
        assert same_bits(got, expect[:, j]), f"{name} output {j}"
    assert one.ready == batched.ready == (n >= one.warmup)


@pytest.mark.parametrize("name", list(INDICATORS))
def test_a_pickled_indicator_continues_exactly(name: str) -> None:
    # an actor's checkpoint: stop mid-stream, pickle, restore, go on
    make, columns = INDICATORS[name]
    cols = [getattr(random_bars(400, seed=9, tick=0.01), c) for c in columns]
    whole = rows(make(7).update_batch(*cols))
    first = make(7)
    head = rows(first.update_batch(*(c[:150] for c in cols)))
    restored = pickle.loads(pickle.dumps(first))
    tail = rows(restored.update_batch(*(c[150:] for c in cols)))
    for j, row in enumerate(whole):
        assert same_bits(np.concatenate((head[j], tail[j])), row), f"{name} output {j}"


@pytest.mark.parametrize("name", list(INDICATORS))
@pytest.mark.parametrize("window", [1, 2, 5, 14])
def test_nan_before_warmup_and_a_number_at_exactly_warmup(name: str, window: int) -> None:
    make, columns = INDICATORS[name]
    ind = make(window)
    bars = random_bars(ind.warmup, seed=window)
    for i in range(ind.warmup):
        assert not ind.ready
        values = rows(ind.update(*(getattr(bars, c)[i] for c in columns)))
        if i < ind.warmup - 1:
            assert all(np.isnan(v) for v in values), (i, values)
        else:
            assert all(np.isfinite(v) for v in values), (i, values)
    assert ind.ready


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WMA(0), "WMA window must be an integer >= 1, got 0"),
        (lambda: WMA(2.5), "WMA window must be an integer >= 1, got 2.5"),
        (lambda: RollingStd(True), "RollingStd window must be an integer >= 1, got True"),
        (lambda: RollingStd(5, ddof=-1), "RollingStd ddof must be an integer >= 0, got -1"),
        (lambda: RollingStd(1), r"RollingStd ddof \(1\) must be smaller than window \(1\)"),
        (lambda: ZScore(0), "ZScore window must be an integer >= 1, got 0"),
        (lambda: Bollinger(0), "Bollinger window must be an integer >= 1, got 0"),
        (lambda: Bollinger(20, k=-1.0), "Bollinger k must be a finite number >= 0.0, got -1.0"),
        (lambda: Bollinger(20, k=math.inf), "Bollinger k must be a finite number >= 0.0, got inf"),
        (lambda: ATR(0), "ATR window must be an integer >= 1, got 0"),
        (lambda: RSI(-3), "RSI window must be an integer >= 1, got -3"),
        (lambda: MACD(26, 12), r"MACD fast \(26\) must be smaller than slow \(12\)"),
        (lambda: MACD(signal=0), "MACD signal must be an integer >= 1, got 0"),
        (lambda: MACD(fast="12"), "MACD fast must be an integer >= 1, got '12'"),
        (lambda: Donchian(0), "Donchian window must be an integer >= 1, got 0"),
        (lambda: VWAP(reset_ns=0), "VWAP reset_ns must be an integer >= 1, got 0"),
        (lambda: VWAP(reset_ns=1.5), "VWAP reset_ns must be an integer >= 1, got 1.5"),
        (lambda: VWAP(offset_ns=0.5), "VWAP offset_ns must be an integer, got 0.5"),
        (lambda: ROC(0), "ROC window must be an integer >= 1, got 0"),
        (lambda: ADX(0), "ADX window must be an integer >= 1, got 0"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        make()


def test_batch_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match=r"ATR.update_batch: columns differ in length \[2, 1, 2\]"):
        ATR(3).update_batch(np.ones(2), np.ones(1), np.ones(2))
    with pytest.raises(ValueError, match="VWAP.update_batch: ts has 1 values, price 2"):
        VWAP(reset_ns=5).update_batch(np.ones(2), np.ones(2), np.zeros(1, dtype=np.int64))
