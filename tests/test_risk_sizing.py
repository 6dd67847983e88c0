"""Position sizers: hand-computed sizes, the engine's sizing reproduced, and invariants."""

from __future__ import annotations

import math
import pickle
import statistics
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.config import ConfigError, PerpConfig, RunConfig
from tickray.engine.indicators import ATR
from tickray.engine.instruments import SymbolSpec
from tickray.risk.sizing import (
    METHOD_KEYS,
    RealisedVolatility,
    SizingConfig,
    SizingMethod,
    TradeStats,
    atr_qty,
    bars_per_year,
    inverse_vol_weights,
    kelly_optimal,
    kelly_weight,
    order_qty,
    size,
)

BTC = SymbolSpec("BTCUSDT", tick_size=0.01, step_size=0.001)
LOT1 = SymbolSpec("AAAUSDT", tick_size=0.01, step_size=1.0)


def stats_of(results: list[float], window: int) -> TradeStats:
    s = TradeStats(window)
    for r in results:
        s.update(r)
    return s


# -- fraction (the default) --------------------------------------------------------------------


def test_fraction_default_takes_ninety_percent_of_the_equal_allocation_floored_to_the_lot() -> None:
    # equity 100,000 over 4 symbols: allocation 25,000; fraction 0.9 -> 22,500 quote;
    # / 30,123.45 = 0.746926... BTC; lot 0.001 -> 0.746
    qty = size(SizingConfig(), equity=100_000.0, allocation=25_000.0, price=30_123.45, spec=BTC)
    assert qty == 0.746
    # a signal's confidence 0.5 scales it before the floor: 11,250 / 30,123.45 = 0.37346 -> 0.373
    assert (
        size(
            SizingConfig(),
            equity=100_000.0,
            allocation=25_000.0,
            price=30_123.45,
            spec=BTC,
            scale=0.5,
        )
        == 0.373
    )


def test_fraction_reproduces_the_run_configs_allocation_spot_and_perpetual() -> None:
    # the engine sizes floor_qty(RunConfig.allocation_for(s) * confidence / price)
    spot = RunConfig(
        data_root="/nonexistent",
        interval_ns=60_000_000_000,
        symbols=("AAAUSDT", "BBBUSDT", "CCCUSDT"),
        start_ns=0,
        end_ns=10**12,
    )
    perp = RunConfig(
        data_root="/nonexistent",
        interval_ns=60_000_000_000,
        symbols=("BTCUSDT", "ETHUSDT"),
        start_ns=0,
        end_ns=10**12,
        perp=PerpConfig(leverage=3.0),
    )
    for cfg, sym, lev in ((spot, "AAAUSDT", 1.0), (perp, "BTCUSDT", 3.0)):
        sizing = SizingConfig(fraction=cfg.position_fraction)
        for price in (0.0123, 1.7, 99.99, 30_123.45):
            for conf in (1.0, 0.5, 0.37):
                today = BTC.floor_qty(cfg.allocation_for(sym) * conf / price)
                new = size(
                    sizing,
                    equity=cfg.account.initial_cash,
                    allocation=cfg.budget_for(sym),
                    price=price,
                    spec=BTC,
                    scale=conf,
                    leverage=lev,
                )
                assert new == today


@settings(max_examples=300, deadline=None)
@given(
    cash=st.floats(100.0, 1e9),
    n=st.integers(1, 64),
    pf=st.floats(0.01, 1.0),
    conf=st.floats(0.01, 1.0),
    lev=st.sampled_from([1.0, 2.0, 3.0, 7.5, 20.0]),
    price=st.floats(1e-4, 1e6),
    step=st.sampled_from([1e-8, 1e-5, 0.001, 0.1, 1.0, 10.0]),
)
def test_fraction_is_bit_identical_to_the_engines_formula(
    cash: float, n: int, pf: float, conf: float, lev: float, price: float, step: float
) -> None:
    # engine: allocation_for = (budget * fraction) * leverage (budget = cash / n), then
    # floor_qty(allocation_for * confidence / price): the same float operations in order
    spec = SymbolSpec("XUSDT", step_size=step)
    budget = cash / n
    today = spec.floor_qty(budget * pf * lev * conf / price)
    cfg = SizingConfig(fraction=pf)
    new = size(
        cfg, equity=cash, allocation=budget, price=price, spec=spec, scale=conf, leverage=lev
    )
    assert new == today


# -- fixed quantity and notional ---------------------------------------------------------------


def test_quantity_is_floored_to_the_lot_and_zero_below_the_minimum_quantity() -> None:
    cfg = SizingConfig(method="quantity", quantity=0.0375)
    lot = SymbolSpec("ETHUSDT", step_size=0.01)
    # 0.0375 ETH on a 0.01 lot -> 0.03 (3 lots)
    assert size(cfg, equity=10_000.0, allocation=5_000.0, price=2_000.0, spec=lot) == 0.03
    # with min_qty 0.05 the 0.03 is below the minimum -> no trade
    lot_min = SymbolSpec("ETHUSDT", step_size=0.01, min_qty=0.05)
    assert size(cfg, equity=10_000.0, allocation=5_000.0, price=2_000.0, spec=lot_min) == 0.0


def test_notional_is_floored_and_zero_below_the_minimum_notional() -> None:
    cfg = SizingConfig(method="notional", notional=1_000.0)
    lot = SymbolSpec("XUSDT", step_size=0.1)
    # 1,000 / 123.4 = 8.1037 -> 8.1 (notional 999.54)
    assert size(cfg, equity=50_000.0, allocation=10_000.0, price=123.4, spec=lot) == 8.1
    # min_notional 1,000: 8.1 x 123.4 = 999.54 < 1,000 -> no trade
    lot_min = SymbolSpec("XUSDT", step_size=0.1, min_notional=1_000.0)
    assert size(cfg, equity=50_000.0, allocation=10_000.0, price=123.4, spec=lot_min) == 0.0


# -- risk per trade ----------------------------------------------------------------------------


def test_risk_sizes_the_loss_at_the_stop_to_a_fraction_of_equity() -> None:
    cfg = SizingConfig(method="risk", risk=0.01)
    # equity 50,000 x 1 % = 500 at risk; stop 25 below the entry -> 500 / 25 = 20 units
    # (notional 20 x 100 = 2,000, well under the cap 50,000)
    kw: dict[str, Any] = dict(equity=50_000.0, allocation=10_000.0, price=100.0, spec=LOT1)
    assert size(cfg, stop_distance=25.0, **kw) == 20.0
    # stop 3 -> 166.67 units -> lot 1 -> 166
    assert size(cfg, stop_distance=3.0, **kw) == 166.0


def test_risk_is_capped_at_max_position_fraction_of_equity() -> None:
    cfg = SizingConfig(method="risk", risk=0.01, max_position_fraction=0.2)
    # 500 at risk with a stop 2 away -> 250 units = 25,000 notional; the cap is
    # 0.2 x 50,000 = 10,000 notional = 100 units
    assert (
        size(cfg, equity=50_000.0, allocation=0.0, price=100.0, spec=LOT1, stop_distance=2.0)
        == 100.0
    )


@pytest.mark.parametrize("stop", [None, 0.0, -1.0, math.nan, math.inf])
def test_risk_without_a_usable_stop_distance_does_not_trade(stop: float | None) -> None:
    cfg = SizingConfig(method="risk")
    q = size(cfg, equity=50_000.0, allocation=0.0, price=100.0, spec=LOT1, stop_distance=stop)
    assert q == 0.0


# -- ATR ---------------------------------------------------------------------------------------

# five bars; Wilder's ATR over 3 bars, by hand:
#   bar  high  low   close  prev  TR = max(H-L, |H-prev|, |L-prev|)
#   0    10.0  9.0   9.5    -     1.0  (first bar: H-L)
#   1    11.0  10.0  10.8   9.5   max(1.0, 1.5, 0.5) = 1.5
#   2    12.5  11.0  12.2   10.8  max(1.5, 1.7, 0.2) = 1.7   ATR = (1.0+1.5+1.7)/3 = 1.4
#   3    12.0  10.5  11.0   12.2  max(1.5, 0.2, 1.7) = 1.7   ATR = (1.4*2 + 1.7)/3 = 1.5
#   4    13.0  11.5  12.8   11.0  max(1.5, 2.0, 0.5) = 2.0   ATR = (1.5*2 + 2.0)/3 = 5/3
HIGH = [10.0, 11.0, 12.5, 12.0, 13.0]
LOW = [9.0, 10.0, 11.0, 10.5, 11.5]
CLOSE = [9.5, 10.8, 12.2, 11.0, 12.8]


def test_atr_sizer_uses_wilders_true_range_average() -> None:
    atr = ATR(3)
    values = [atr.update(h, lo, c) for h, lo, c in zip(HIGH, LOW, CLOSE, strict=True)]
    assert math.isnan(values[0]) and math.isnan(values[1])
    assert values[2:] == pytest.approx([1.4, 1.5, 5.0 / 3.0], rel=1e-12)
    cfg = SizingConfig(method="atr", risk=0.01, atr_window=3, atr_mult=2.0)
    lot = SymbolSpec("XUSDT", step_size=0.1)
    kw: dict[str, Any] = dict(equity=100_000.0, allocation=0.0, price=12.8, spec=lot)
    # 1 % of 100,000 = 1,000 at risk; stop 2 ATR = 10/3 -> 1,000 / (10/3) = 300 units
    # (notional 300 x 12.8 = 3,840, under the cap 100,000)
    assert size(cfg, atr=values[-1], **kw) == 300.0
    # during warm-up the ATR is NaN: no trade
    assert size(cfg, atr=values[1], **kw) == 0.0


def test_the_reports_range_for_an_atr_would_size_differently() -> None:
    # the report's "ATR": rolling max(high) - rolling min(low) over 3 bars at bar 4 =
    # max(12.5, 12.0, 13.0) - min(11.0, 10.5, 11.5) = 13.0 - 10.5 = 2.5, not 5/3
    report_atr = max(HIGH[-3:]) - min(LOW[-3:])
    assert report_atr == 2.5
    atr = ATR(3)
    wilder = [atr.update(h, lo, c) for h, lo, c in zip(HIGH, LOW, CLOSE, strict=True)][-1]
    # 1,000 / (2 x 2.5) = 200 units against Wilder's 300
    assert atr_qty(100_000.0, 0.01, report_atr, 2.0) == pytest.approx(200.0)
    assert atr_qty(100_000.0, 0.01, wilder, 2.0) == pytest.approx(300.0)


# -- volatility target -------------------------------------------------------------------------


def test_realised_volatility_is_the_sample_std_of_log_returns() -> None:
    rv = RealisedVolatility(3)
    closes = [100.0, 101.0, 99.99, 101.9898]
    out = [rv.update(c) for c in closes]
    # returns ln(1.01) = 0.0099503, ln(0.99) = -0.0100503, ln(1.02) = 0.0198026;
    # mean 0.0065675, squared deviations sum 4.6276e-4, / (3 - 1), sqrt -> 0.0152113
    rets = [math.log(b / a) for a, b in pairwise(closes)]
    assert all(math.isnan(v) for v in out[:3]) and rv.warmup == 4
    assert out[3] == pytest.approx(statistics.stdev(rets), rel=1e-12)
    assert out[3] == pytest.approx(0.0152113, rel=1e-5)
    assert rv.annualised(365.0) == pytest.approx(out[3] * math.sqrt(365.0))


def test_realised_volatility_batch_equals_event_by_event_and_pickles() -> None:
    rng = np.random.default_rng(7)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 500)))
    one = RealisedVolatility(20)
    seq = np.array([one.update(c) for c in closes])
    many = RealisedVolatility(20)
    first = many.update_batch(closes[:1])
    rest = pickle.loads(pickle.dumps(many)).update_batch(closes[1:])
    both = np.concatenate([first, rest])
    assert np.array_equal(np.isnan(seq), np.isnan(both))
    assert np.array_equal(seq[~np.isnan(seq)], both[~np.isnan(both)])


def test_vol_target_scales_notional_by_target_over_annualised_vol() -> None:
    cfg = SizingConfig(method="vol_target", target_vol=0.2, periods_per_year=365.0)
    # per-bar vol 1 %, annualised 0.01 x sqrt(365) = 0.19105; 0.2 / 0.19105 = 1.04685;
    # x allocation 10,000 = 10,468.5 quote; / 50 = 209.37 units -> lot 1 -> 209
    kw: dict[str, Any] = dict(allocation=10_000.0, price=50.0, spec=LOT1, volatility=0.01)
    assert size(cfg, equity=40_000.0, **kw) == 209.0
    # equity 10,000: the cap 1.0 x 10,000 / 50 = 200 units binds
    assert size(cfg, equity=10_000.0, **kw) == 200.0
    for vol in (math.nan, 0.0, None):
        assert size(cfg, equity=40_000.0, **{**kw, "volatility": vol}) == 0.0


def test_bars_per_year_for_hourly_bars() -> None:
    assert bars_per_year(3_600 * 10**9) == 8_760.0


# -- Kelly -------------------------------------------------------------------------------------


def test_trade_stats_and_kelly_of_a_hand_made_trade_list() -> None:
    # +2, -1, +2, -1, +2: W = 3/5 = 0.6, avg win 2, avg loss 1, R = 2
    s = stats_of([2.0, -1.0, 2.0, -1.0, 2.0], window=5)
    assert (s.count, s.wins, s.losses) == (5, 3, 2)
    assert (s.win_rate, s.avg_win, s.avg_loss, s.payoff) == (0.6, 2.0, 1.0, 2.0)
    # f* = W - (1 - W) / R = 0.6 - 0.4 / 2 = 0.4
    assert s.kelly() == pytest.approx(0.4)
    cfg = SizingConfig(method="kelly", kelly_fraction=0.5, window=5, min_trades=5)
    # half Kelly 0.2 of allocation 10,000 = 2,000 quote; / 100 = 20 units
    kw: dict[str, Any] = dict(equity=50_000.0, allocation=10_000.0, price=100.0, spec=LOT1)
    assert size(cfg, trade_stats=s, **kw) == 20.0
    # kelly_cap 0.1: min(0.2, 0.1) x 10,000 = 1,000 quote -> 10 units
    capped = SizingConfig(method="kelly", kelly_fraction=0.5, kelly_cap=0.1, window=5, min_trades=5)
    assert size(capped, trade_stats=s, **kw) == 10.0


def test_kelly_does_not_trade_below_min_trades_or_without_edge() -> None:
    kw: dict[str, Any] = dict(equity=50_000.0, allocation=10_000.0, price=100.0, spec=LOT1)
    cfg = SizingConfig(method="kelly", window=10, min_trades=6)
    # 5 closed trades < min_trades 6 -> 0
    assert size(cfg, trade_stats=stats_of([2.0, -1.0, 2.0, -1.0, 2.0], 10), **kw) == 0.0
    assert size(cfg, trade_stats=None, **kw) == 0.0
    # +1, -2 three times: W = 0.5, R = 0.5 -> f* = 0.5 - 0.5 / 0.5 = -0.5 -> 0
    losing = stats_of([1.0, -2.0] * 3, 10)
    assert losing.kelly() == pytest.approx(-0.5)
    assert size(cfg, trade_stats=losing, **kw) == 0.0
    # no wins at all: R = 0, f* = -inf -> 0
    assert stats_of([-1.0] * 6, 10).kelly() == -math.inf
    assert size(cfg, trade_stats=stats_of([-1.0] * 6, 10), **kw) == 0.0


def test_kelly_window_rolls_and_all_wins_hit_the_cap() -> None:
    # window 3 after five trades keeps +2, -1, +2: W = 2/3, R = 2, f* = 2/3 - (1/3)/2 = 0.5
    s = stats_of([-5.0, -5.0, 2.0, -1.0, 2.0], window=3)
    assert (s.count, s.win_rate, s.payoff) == (3, 2 / 3, 2.0)
    assert s.kelly() == pytest.approx(0.5)
    # only wins: R = inf, f* = W = 1; x kelly_fraction 0.5 = 0.5, capped at 0.25
    wins = stats_of([1.0, 3.0, 2.0], window=3)
    assert wins.payoff == math.inf and wins.kelly() == 1.0
    assert kelly_weight(wins, kelly_fraction=0.5, kelly_cap=0.25, min_trades=3) == 0.25
    # a scratch (0) counts as a trade but is neither a win nor a loss: W = 1/3
    scratch = stats_of([0.0, 2.0, -1.0], window=3)
    assert (scratch.wins, scratch.losses, scratch.win_rate) == (1, 1, 1 / 3)
    assert kelly_optimal(1 / 3, 2.0) == pytest.approx(1 / 3 - (2 / 3) / 2)


def test_trade_stats_stay_exact_over_a_long_run_and_pickle() -> None:
    rng = np.random.default_rng(11)
    results = rng.normal(0.1, 1.0, 2_000).round(6).tolist()
    s = TradeStats(37)
    for k, r in enumerate(results):
        s.update(r)
        if k == 1_000:
            s = pickle.loads(pickle.dumps(s))
    last = results[-37:]
    wins = [x for x in last if x > 0]
    losses = [-x for x in last if x < 0]
    assert (s.count, s.wins, s.losses) == (37, len(wins), len(losses))
    assert s.avg_win == pytest.approx(statistics.fmean(wins), rel=1e-12)
    assert s.avg_loss == pytest.approx(statistics.fmean(losses), rel=1e-12)


def test_kelly_trade_stats_must_hold_the_configured_window() -> None:
    cfg = SizingConfig(method="kelly", window=50, min_trades=5)
    with pytest.raises(ValueError, match="trade_stats holds 10 trades"):
        size(
            cfg,
            equity=1.0,
            allocation=1.0,
            price=1.0,
            spec=LOT1,
            trade_stats=stats_of([1.0] * 10, 10),
        )


# -- inverse volatility ------------------------------------------------------------------------


def test_inverse_vol_weights_by_hand() -> None:
    # 1/vol = 100, 50, 25; sum 175 -> 4/7, 2/7, 1/7: the calmest symbol gets the most
    w = inverse_vol_weights(np.array([0.01, 0.02, 0.04]))
    assert w == pytest.approx([4 / 7, 2 / 7, 1 / 7], rel=1e-12)
    # NaN and zero vols get 0; the others share the whole: 1/0.02 = 50, 1/0.04 = 25 -> 2/3, 1/3
    w = inverse_vol_weights(np.array([math.nan, 0.02, 0.0, 0.04]))
    assert w == pytest.approx([0.0, 2 / 3, 0.0, 1 / 3], rel=1e-12)
    # nothing usable (all zero, all NaN in warm-up): equal weights
    assert inverse_vol_weights(np.zeros(4)).tolist() == [0.25] * 4
    assert inverse_vol_weights(np.full(2, math.nan)).tolist() == [0.5, 0.5]
    assert inverse_vol_weights(np.array([])).size == 0


@given(
    st.lists(
        st.one_of(st.floats(1e-6, 10.0), st.just(0.0), st.just(math.nan)), min_size=1, max_size=50
    )
)
def test_inverse_vol_weights_sum_to_one(vols: list[float]) -> None:
    w = inverse_vol_weights(np.array(vols))
    assert np.all(w >= 0.0)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("method", ["inverse_vol", "risk_parity"])
def test_inverse_vol_sizes_a_weighted_share_of_equity(method: str) -> None:
    cfg = SizingConfig(method=method, fraction=0.9)
    # equity 70,000 x weight 4/7 = 40,000; x fraction 0.9 = 36,000 quote; / 100 = 360 units
    w = float(inverse_vol_weights(np.array([0.01, 0.02, 0.04]))[0])
    kw: dict[str, Any] = dict(equity=70_000.0, allocation=0.0, price=100.0, spec=LOT1)
    assert size(cfg, weight=w, **kw) == 360.0
    assert size(cfg, weight=None, **kw) == 0.0
    # equal vols: weight 1/3 of 90,000 x 0.9 = 27,000 quote / 100 = 270, the fraction method's
    eq = float(inverse_vol_weights(np.full(3, 0.02))[0])
    inv = size(cfg, equity=90_000.0, allocation=0.0, price=100.0, spec=LOT1, weight=eq)
    frac = size(SizingConfig(), equity=90_000.0, allocation=30_000.0, price=100.0, spec=LOT1)
    assert inv == frac == 270.0


# -- the common rules --------------------------------------------------------------------------


def test_order_qty_caps_floors_and_applies_minimums() -> None:
    spec = SymbolSpec("XUSDT", step_size=0.01, min_notional=10.0)
    # cap 0.5 x 1,000 / 20 = 25 units; 40 -> 25
    assert order_qty(40.0, equity=1_000.0, price=20.0, spec=spec, max_position_fraction=0.5) == 25.0
    # 0.499 -> 0.49 (notional 9.80 < 10 minimum) -> 0
    assert order_qty(0.499, equity=1_000.0, price=20.0, spec=spec) == 0.0
    # 0.509 -> 0.50 (notional 10.00, meets the minimum)
    assert order_qty(0.509, equity=1_000.0, price=20.0, spec=spec) == 0.5
    # under leverage 5 the cap is on margin: 0.5 x 1,000 x 5 / 20 = 125 units
    assert (
        order_qty(
            400.0, equity=1_000.0, price=20.0, spec=spec, max_position_fraction=0.5, leverage=5.0
        )
        == 125.0
    )
    for raw in (0.0, -3.0, math.nan):
        assert order_qty(raw, equity=1_000.0, price=20.0, spec=spec) == 0.0


def test_no_price_or_no_equity_means_no_trade_and_bad_scale_is_an_error() -> None:
    for price, equity in ((math.nan, 1_000.0), (0.0, 1_000.0), (10.0, 0.0), (10.0, -5.0)):
        assert size(SizingConfig(), equity=equity, allocation=500.0, price=price, spec=LOT1) == 0.0
    with pytest.raises(ValueError, match="scale"):
        size(SizingConfig(), equity=1.0, allocation=1.0, price=1.0, spec=LOT1, scale=-0.5)
    with pytest.raises(ValueError, match="leverage"):
        size(SizingConfig(), equity=1.0, allocation=1.0, price=1.0, spec=LOT1, leverage=0.0)


def _config_for(method: str, mpf: float) -> SizingConfig:
    extra: dict[str, Any] = {
        "quantity": {"quantity": 3.7},
        "notional": {"notional": 25_000.0},
        "vol_target": {"periods_per_year": 8_760.0, "target_vol": 0.5},
        "kelly": {"window": 10, "min_trades": 3, "kelly_fraction": 1.0},
        "risk": {"risk": 0.05},
        "atr": {"risk": 0.05, "atr_mult": 1.0},
    }.get(method, {})
    return SizingConfig(method=method, max_position_fraction=mpf, **extra)


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from([m.value for m in SizingMethod]),
    mpf=st.floats(0.01, 1.0),
    equity=st.floats(1.0, 1e8),
    alloc_share=st.floats(0.0, 5.0),
    price=st.floats(1e-3, 1e5),
    step=st.sampled_from([1e-8, 1e-5, 0.001, 0.01, 1.0, 100.0]),
    min_notional=st.sampled_from([0.0, 5.0, 100.0]),
    aux=st.floats(1e-6, 1e4),
    weight=st.floats(0.0, 1.0),
    scale=st.floats(0.0, 3.0),
    lev=st.sampled_from([1.0, 2.0, 10.0]),
)
def test_no_sizer_exceeds_the_position_cap_or_leaves_the_lot_grid(
    method: str,
    mpf: float,
    equity: float,
    alloc_share: float,
    price: float,
    step: float,
    min_notional: float,
    aux: float,
    weight: float,
    scale: float,
    lev: float,
) -> None:
    cfg = _config_for(method, mpf)
    spec = SymbolSpec("XUSDT", step_size=step, min_notional=min_notional)
    qty = size(
        cfg,
        equity=equity,
        allocation=equity * alloc_share,  # even an allocation above equity is capped
        price=price,
        spec=spec,
        stop_distance=aux * price / 1e4,
        atr=aux * price / 1e4,
        volatility=aux / 1e5,
        trade_stats=stats_of([3.0, -1.0, 2.0, 5.0], 10),
        weight=weight,
        scale=scale,
        leverage=lev,
    )
    cap_qty = mpf * equity * lev / price
    assert qty >= 0.0
    # a whole number of lots: flooring it again changes nothing
    assert spec.floor_qty(qty) == qty
    assert qty == 0.0 or spec.tradable(qty, price)
    # the cap holds up to floor_qty's snap tolerance (a count of steps within
    # 1e-9 + 1e-15 x count of a whole number is taken as that number), so by far
    # less than one lot: qty <= cap_qty x (1 + 1e-12) + 1e-9 lots
    assert qty <= cap_qty * (1.0 + 1e-12) + 1e-9 * step
    # in notional (one more float product, a few ulps, in the 1e-12 relative term):
    # qty x price <= max_position_fraction x equity x leverage x (1 + 1e-12) + 1e-9 lot x price,
    # well inside the brief's "cap plus one lot of rounding"
    assert qty * price <= mpf * equity * lev * (1.0 + 1e-12) + 1e-9 * step * price


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "martingale"}, "sizing.method: must be one of 'fraction', "),
        ({"fraction": 0.0}, r"sizing.fraction: must be in \(0, 1\], got 0.0"),
        ({"fraction": 1.2}, r"sizing.fraction: must be in \(0, 1\], got 1.2"),
        ({"method": "risk", "risk": -0.01}, r"sizing.risk: must be in \(0, 1\), got -0.01"),
        ({"method": "risk", "risk": 1.0}, r"sizing.risk: must be in \(0, 1\), got 1.0"),
        ({"method": "atr", "atr_mult": 0}, r"sizing.atr_mult: must be a number > 0, got 0"),
        ({"method": "atr", "atr_window": 0}, "sizing.atr_window: must be an integer >= 1, got 0"),
        ({"method": "atr", "atr_window": 2.5}, "sizing.atr_window: must be an integer >= 1"),
        (
            {"method": "kelly", "kelly_fraction": 1.5},
            r"^sizing.kelly_fraction: must be in \(0, 1\], got 1.5$",
        ),
        ({"method": "kelly", "kelly_cap": 0.0}, r"sizing.kelly_cap: must be in \(0, 1\]"),
        ({"method": "kelly", "window": 1}, "sizing.window: must be an integer >= 2, got 1"),
        (
            {"method": "kelly", "window": 10, "min_trades": 11},
            r"sizing.min_trades: must be <= sizing.window \(10\), got 11",
        ),
        ({"method": "kelly", "min_trades": 0}, "sizing.min_trades: must be an integer >= 1"),
        ({"method": "kelly", "window": True}, "sizing.window: must be an integer >= 2, got True"),
        ({"method": "vol_target"}, "sizing.periods_per_year: required by method 'vol_target'"),
        (
            {"method": "vol_target", "periods_per_year": 365, "target_vol": 20},
            r"sizing.target_vol: must be in \(0, 5\], got 20",
        ),
        (
            {"method": "vol_target", "periods_per_year": -1.0},
            "sizing.periods_per_year: must be a number > 0, got -1.0",
        ),
        ({"method": "inverse_vol", "vol_window": 1}, "sizing.vol_window: must be an integer >= 2"),
        ({"method": "quantity"}, "sizing.quantity: required by method 'quantity'"),
        ({"method": "quantity", "quantity": -2.0}, "sizing.quantity: must be a number > 0"),
        ({"method": "notional", "notional": math.nan}, "sizing.notional: must be a number > 0"),
        (
            {"method": "quantity", "quantity": 1.0, "notional": 100.0},
            "sizing.notional: not read by method 'quantity'",
        ),
        (
            {"max_position_fraction": 1.5},
            r"sizing.max_position_fraction: must be in \(0, 1\], got 1.5",
        ),
        ({"risk": "1%"}, r"sizing.risk: must be in \(0, 1\), got '1%'"),
    ],
)
def test_bad_configs_raise_config_error_naming_the_key(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SizingConfig(**kwargs)


def test_from_spec_rejects_unknown_keys_and_keys_the_method_does_not_read() -> None:
    cfg = SizingConfig.from_spec({"method": "kelly", "window": 40, "min_trades": 10})
    assert cfg.method is SizingMethod.KELLY and cfg.window == 40
    assert SizingConfig.from_spec({}) == SizingConfig()
    with pytest.raises(ConfigError, match=r"^sizing.kelly_fraction: must be in \(0, 1\], got 1.5$"):
        SizingConfig.from_spec({"method": "kelly", "kelly_fraction": 1.5})
    with pytest.raises(ConfigError, match="sizing.windw: unknown key"):
        SizingConfig.from_spec({"method": "kelly", "windw": 40})
    with pytest.raises(
        ConfigError, match=r"sizing.risk: not read by method 'fraction' \(read by 'risk', 'atr'\)"
    ):
        SizingConfig.from_spec({"method": "fraction", "risk": 0.01})
    with pytest.raises(ConfigError, match="sizing.method: must be one of"):
        SizingConfig.from_spec({"method": "yolo", "risk": 0.01})


def test_every_method_lists_the_keys_it_reads() -> None:
    assert set(METHOD_KEYS) == set(SizingMethod)
    known = {f for f in SizingConfig.__dataclass_fields__}
    for keys in METHOD_KEYS.values():
        assert set(keys) <= known
