"""The strategy library: mean reversion, breakout, enhanced momentum and the regime switch.

Each strategy first runs on hand-made bars whose targets are worked out bar by
bar in the comments, fed both one bar at a time and as one batch. Hypothesis
then checks, on random price paths cut into random batches, that batches give
exactly what bar-by-bar feeding gives (the carried state), that each strategy
follows its documented rule (a plain loop written here, on the engine's own
indicators), and that nothing but flat comes out before ``warmup`` bars.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.indicators import ADX, ATR, SMA, Lag, RollingStd, ZScore
from tickray.engine.strategies import (
    REGIME_HIGH_VOL,
    REGIME_RANGING,
    REGIME_TRENDING,
    REGIME_WARMUP,
    BarStrategy,
    BreakoutStrategy,
    EnhancedMomentumCloseStrategy,
    MeanReversionStrategy,
    ParamError,
    RegimeStrategy,
    make_strategy,
)

Bar = tuple[float, float, float]  # high, low, close


def _columns(bars: list[Bar]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, lo, c = zip(*bars, strict=True)
    return np.array(h, dtype=float), np.array(lo, dtype=float), np.array(c, dtype=float)


def _both_ways(name: str, params: dict[str, Any], bars: list[Bar]) -> list[int]:
    """Targets bar by bar; asserts that one batch of all the bars gives the same."""
    one = make_strategy(name, params)
    by_bar = [one.on_bar_ohlc(*b) for b in bars]
    batch = make_strategy(name, params).targets_ohlc(*_columns(bars))
    assert batch.tolist() == by_bar
    return by_bar


# -- mean reversion ----------------------------------------------------------------------------


def test_mean_reversion_enters_beyond_entry_z_exits_at_the_middle_band_or_the_stop() -> None:
    # window 4, population std, entry_z 1.0, stop_z 1.6; z of each bar's close in its window:
    # bar  close  window           mean     var      z        target
    #  0-2                                                    0 warm-up
    #  3   12    10 12 10 12       11       1        +1.0     0: |z| = entry_z is not beyond it
    #  4    8    12 10 12 8        10.5     2.75     -1.508   +1: z < -1, inside the stop
    #  5    9.5  10 12 8 9.5       9.875    2.047    -0.262   +1: below the middle band, held
    #  6   11    12 8 9.5 11       10.125   2.297    +0.577   0: the close crossed the mean
    #  7   12    8 9.5 11 12       10.125   2.297    +1.237   -1: z > +1
    #  8   14    9.5 11 12 14      11.625   2.672    +1.453   -1: still in the entry zone
    #  9   20    11 12 14 20       14.25    12.19    +1.647   0: |z| > 1.6, stopped out
    # 10   22    12 14 20 22       17       17       +1.213   -1: back in the zone, re-entered
    # 11   13    14 20 22 13       17.25    14.69    -1.109   +1: reversed from short
    # 12   16    20 22 13 16       17.75    12.19    -0.501   +1: held
    # 13   19    22 13 16 19       17.5     11.25    +0.447   0: above the middle band
    closes = [10, 12, 10, 12, 8, 9.5, 11, 12, 14, 20, 22, 13, 16, 19]
    params = {"window": 4, "entry_z": 1.0, "stop_z": 1.6}
    expect = [0, 0, 0, 0, 1, 1, 0, -1, -1, 0, -1, 1, 1, 0]
    assert _both_ways("mean_reversion", params, [(c, c, c) for c in closes]) == expect
    # a close-only strategy: the close-only methods give the same
    s = make_strategy("mean_reversion", params)
    assert [s.on_bar(c) for c in closes] == expect
    assert make_strategy("mean_reversion", params).targets(np.array(closes, float)).tolist() == (
        expect
    )
    assert not MeanReversionStrategy.needs_ohlc


def test_mean_reversion_close_on_the_mean_exits_and_a_flat_window_has_z_zero() -> None:
    # window 3, entry 1.0, stop 1.5: bar 2 [10, 10, 8]: mean 9.33, std 0.943, z = -1.414 -> long;
    # bar 3 [10, 8, 9]: mean 9, z = 0 exactly: the close is on the middle band -> flat;
    # bars 4-6 [9, 9, 9]...: a flat window has std 0 and z = 0 -> stays flat.
    closes = [10, 10, 8, 9, 9, 9, 9]
    params = {"window": 3, "entry_z": 1.0, "stop_z": 1.5}
    assert _both_ways("mean_reversion", params, [(c, c, c) for c in closes]) == [
        0,
        0,
        1,
        0,
        0,
        0,
        0,
    ]


# -- breakout ----------------------------------------------------------------------------------

# window 3 (entry channel: the 3 bars before), exit_window 2 (the 2 bars before)
BREAKOUT_BARS: list[Bar] = [
    (11, 9, 10),  # 0  warm-up
    (12, 10, 11),  # 1  warm-up
    (11, 9, 10),  # 2  warm-up
    (12.5, 11, 12),  # 3  entry channel (bars 0-2) 9..12: a close at 12 is no breakout -> 0
    (13.5, 12, 13),  # 4  channel (1-3) 9..12.5: 13 > 12.5 -> long
    (13, 11.5, 12),  # 5  exit channel (3-4) low 11: 12 holds -> long
    (12, 11, 11.2),  # 6  exit channel (4-5) low 11.5: 11.2 < 11.5 -> flat;
    #                     entry channel (3-5) low 11: not below -> no short
    (11, 9, 9.5),  # 7  entry channel (4-6) low 11: 9.5 < 11 -> short
    (10, 8.5, 9.8),  # 8  exit channel (6-7) high 12: 9.8 holds -> short
    (10.5, 9, 10.2),  # 9  exit channel (7-8) high 11: holds -> short
    (10.8, 9.6, 10.6),  # 10 exit channel (8-9) high 10.5: 10.6 > 10.5 -> flat;
    #                       entry channel (7-9) high 11: no long
    (12, 10.5, 11.5),  # 11 entry channel (8-10) high 10.8: 11.5 > 10.8 -> long
    (11.6, 8, 8.2),  # 12 entry channel (9-11) low 9: 8.2 < 9 -> short, reversed from long
]


def test_breakout_enters_beyond_the_prior_channel_and_exits_through_the_shorter_one() -> None:
    params = {"window": 3, "exit_window": 2}
    expect = [0, 0, 0, 0, 1, 1, 0, -1, -1, -1, 0, 1, -1]
    assert _both_ways("breakout", params, BREAKOUT_BARS) == expect
    assert make_strategy("breakout", params).warmup == 4


# -- enhanced momentum -------------------------------------------------------------------------


def _em_bars(closes: Sequence[float]) -> list[Bar]:
    # high = close + 1, low = close - 1: TR = max(2, |close - previous close| + 1)
    return [(c + 1.0, c - 1.0, c) for c in closes]


def test_enhanced_momentum_takes_profit_stops_out_and_reenters_on_the_signal() -> None:
    # fast 2, slow 3, momentum over 2 bars > 5%, ATR(2) (Wilder), risk_factor 1:
    # bar close SMA2   SMA3    mom      TR  ATR        position, levels (take, stop)
    #  0  100                            2            warm-up
    #  1  100  100                       2   2        warm-up
    #  2  106  103  > 102     +6%       7   4.5      long: take 106 + 2*4.5 = 115, stop 101.5
    #  3  110                            5   4.75     110 inside (101.5, 115): long
    #  4  115  112.5 > 110.3  +8.5%     6   5.375    115 >= take -> flat (no same-bar re-entry)
    #  5  118  116.5 > 114.3  +7.3%     4   4.6875   long again: take 127.375, stop 113.3125
    #  6  113                            6   5.34375  113 <= stop -> flat
    #  7  104  108.5 < 111.7  -11.9%    10  7.671875 short: take 88.65625, stop 111.671875
    #  8  100  102 < 105.7    -11.5%    5            short signal while short: levels unchanged
    #  9  108  104 = 104                9            no signal; 108 < stop: short
    # 10  112                            5            112 >= stop 111.67 -> flat
    # 11  113  112.5 > 111    +4.6%                   momentum below 5%: no entry -> flat
    closes = [100, 100, 106, 110, 115, 118, 113, 104, 100, 108, 112, 113]
    params = {
        "fast": 2,
        "slow": 3,
        "window": 2,
        "threshold": 0.05,
        "atr_window": 2,
        "risk_factor": 1.0,
    }
    expect = [0, 0, 1, 1, 0, 1, 0, -1, -1, -1, 0, 0]
    assert _both_ways("enhanced_momentum_close", params, _em_bars(closes)) == expect

    s = make_strategy("enhanced_momentum_close", params)
    assert isinstance(s, EnhancedMomentumCloseStrategy)
    s.targets_ohlc(*_columns(_em_bars(closes[:3])))
    assert s.exit_levels == (115.0, 101.5)
    # confidence = min(1, |mom| / (2 * 5%)): bar 2: 6% / 10% = 0.6; nothing before bar 2
    assert s.last_confidence().tolist() == [0.0, 0.0, pytest.approx(0.6)]
    s.on_bar_ohlc(111.0, 109.0, 110.0)  # bar 3: +10% -> 1.0
    assert s.last_confidence().tolist() == [1.0]


def test_enhanced_momentum_reverses_on_the_opposite_signal() -> None:
    # risk_factor 10 puts the levels far away. bar 2: long (as above; stop 106 - 45 = 61);
    # bar 3 at 100: momentum 0, no signal; bar 4 at 95: SMA2 97.5 < SMA3 100.3, momentum
    # 95 / 106 - 1 = -10.4% -> short, straight from long.
    params = {
        "fast": 2,
        "slow": 3,
        "window": 2,
        "threshold": 0.05,
        "atr_window": 2,
        "risk_factor": 10.0,
    }
    assert _both_ways("enhanced_momentum_close", params, _em_bars([100, 100, 106, 100, 95])) == [
        0,
        0,
        1,
        1,
        -1,
    ]


# -- regime ------------------------------------------------------------------------------------

REGIME_PARAMS: dict[str, Any] = {
    "adx_window": 2,
    "adx_trend": 80.0,
    "vol_window": 2,
    "vol_pct": 100.0,  # k = 3 of 3: high volatility when vol beats all of the previous 3
    "lookback": 3,
    "trend_window": 3,
    "trend_exit_window": 2,
    "range_window": 3,
    "range_entry_z": 1.0,
    "range_stop_z": 1.5,
}

# vol = population std of the last 2 log returns = |r - previous r| / 2.
# ADX(2): a constant high and low has no directional movement (ADX 0); rising bars have only
# +DM, DX = 100 and ADX = (previous ADX + 100) / 2. mr / bo: the sub-strategies' targets.
# bar  high  low   close  r        vol     ADX    regime             mr  bo  target
#  0   11    9     10                             warm-up            0   0   0
#  1   11    9     10.4   +0.0392                 warm-up            0   0   0
#  2   11    9     9.8    -0.0594  0.0493         warm-up            +1  0   0
#  3   11    9     10.2   +0.0400  0.0497  0      warm-up            0   0   0
#  4   11    9     10.1   -0.0099  0.0249  0      warm-up (2 vols)   0   0   0
#  5   11    9     9.4    -0.0718  0.0310  0      ranging            +1  0   +1  (z -1.40)
#  6   11    9     9.9    +0.0518  0.0618  0      high vol (> .0497) 0   0   0
#  7   11    9     10.0   +0.0101  0.0209  0      ranging            0   0   0
#  8   11.5  10.5  11     +0.0953  0.0426  50     ranging            -1  0   -1  (z +1.41)
#  9   12.5  11.5  12     +0.0870  0.0042  75     ranging            -1  +1  -1
# 10   13.5  12.5  13     +0.0800  0.0035  87.5   trending           -1  +1  +1
# 11   14.5  13.5  14     +0.0741  0.0030  93.75  trending           -1  +1  +1
# 12   15.5  14.5  15     +0.0690  0.0026  96.88  trending           -1  +1  +1
# 13   16.5  12    12.5   -0.1823  0.1257  70.8   high vol           +1  0   0   (z -1.30)
# 14   13    11.5  12     -0.0408  0.0707  64.0   ranging            +1  0   +1  (mr's long)
# 15   12.6  11.4  12.2   +0.0165  0.0287  62.4   ranging            +1  0   +1
# 16   12.5  11.5  12.1   -0.0082  0.0124  61.5   ranging            0   0   0   (z = 0)
# Bar 13: the mean reversion went long in a high-volatility bar (target flat), and the
# regime strategy takes that long at bar 14, when the regime turns to ranging.
REGIME_BARS: list[Bar] = [
    (11, 9, 10),
    (11, 9, 10.4),
    (11, 9, 9.8),
    (11, 9, 10.2),
    (11, 9, 10.1),
    (11, 9, 9.4),
    (11, 9, 9.9),
    (11, 9, 10.0),
    (11.5, 10.5, 11),
    (12.5, 11.5, 12),
    (13.5, 12.5, 13),
    (14.5, 13.5, 14),
    (15.5, 14.5, 15),
    (16.5, 12, 12.5),
    (13, 11.5, 12),
    (12.6, 11.4, 12.2),
    (12.5, 11.5, 12.1),
]


def test_regime_follows_breakout_in_trends_mean_reversion_in_ranges_and_is_flat_in_turmoil() -> (
    None
):
    w, r, t, v = REGIME_WARMUP, REGIME_RANGING, REGIME_TRENDING, REGIME_HIGH_VOL
    regimes = [w, w, w, w, w, r, v, r, r, r, t, t, t, v, r, r, r]
    expect = [0, 0, 0, 0, 0, 1, 0, 0, -1, -1, 1, 1, 1, 0, 1, 1, 0]
    assert _both_ways("regime", REGIME_PARAMS, REGIME_BARS) == expect

    batch = make_strategy("regime", REGIME_PARAMS)
    assert isinstance(batch, RegimeStrategy)
    h, lo, c = _columns(REGIME_BARS)
    batch.targets_ohlc(h, lo, c)
    assert batch.last_regimes().tolist() == regimes
    assert batch.warmup == 6  # vol_window + lookback + 1
    # the sub-strategies saw every bar
    assert make_strategy("mean_reversion", {"window": 3, "entry_z": 1.0, "stop_z": 1.5}).targets(
        c
    ).tolist() == [0, 0, 1, 0, 0, 1, 0, 0, -1, -1, -1, -1, -1, 1, 1, 1, 0]
    assert batch.mean_reversion._pos == 0 and batch.breakout._pos == 0


# -- the base class's OHLC hook ----------------------------------------------------------------


def test_close_only_strategies_take_whole_bars_and_ohlc_ones_refuse_closes() -> None:
    rng = np.random.default_rng(7)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 200)))
    h, lo = c * 1.01, c * 0.99
    for name, params in (
        ("momentum", {"window": 5, "threshold": 0.01}),
        ("sma_cross", {"fast": 3, "slow": 8}),
        ("hedged_trend", {"slow": 8, "window": 3, "threshold": 0.01}),
        ("mean_reversion", {"window": 5, "entry_z": 1.0, "stop_z": 1.8}),
    ):
        expect = make_strategy(name, params).targets(c).tolist()
        a, b = make_strategy(name, params), make_strategy(name, params)
        assert not a.needs_ohlc
        assert a.targets_ohlc(h, lo, c).tolist() == expect
        assert [b.on_bar_ohlc(*x) for x in zip(h, lo, c, strict=True)] == expect
        legs_a = make_strategy(name, params).leg_targets_ohlc(h, lo, c)
        legs_b = make_strategy(name, params).leg_targets(c)
        assert [x.tolist() for x in legs_a] == [x.tolist() for x in legs_b]
    for name in ("breakout", "enhanced_momentum_close", "regime"):
        s = make_strategy(name)
        assert s.needs_ohlc
        with pytest.raises(TypeError, match=f"strategy '{name}' reads each bar's high and low"):
            s.targets(c)
        with pytest.raises(TypeError, match="targets_ohlc"):
            s.on_bar(100.0)
    with pytest.raises(ValueError, match="high, low and close differ in length"):
        make_strategy("breakout").targets_ohlc(h, lo[:-1], c)


def test_strategies_pickle_mid_run_and_continue_exactly() -> None:
    rng = np.random.default_rng(3)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 400)))
    h, lo = c * 1.01, c * 0.985
    for name, params in LIBRARY:
        whole = make_strategy(name, params).targets_ohlc(h, lo, c)
        s = make_strategy(name, params)
        first = s.targets_ohlc(h[:150], lo[:150], c[:150])
        s = pickle.loads(pickle.dumps(s))
        rest = s.targets_ohlc(h[150:], lo[150:], c[150:])
        assert np.concatenate((first, rest)).tolist() == whole.tolist(), name


# -- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("breakout", {"window": 10, "exit_window": 10}, r"strategy\.params\.exit_window: "),
        ("breakout", {"window": 1}, r"strategy\.params\.window: must be an integer >= 2"),
        ("enhanced_momentum_close", {"fast": 30, "slow": 30}, r"strategy\.params\.fast: "),
        (
            "enhanced_momentum_close",
            {"risk_factor": -1},
            r"strategy\.params\.risk_factor: must be a number >= ",
        ),
        (
            "enhanced_momentum_close",
            {"confidence_scale": 0.5},
            r"strategy\.params\.confidence_scale",
        ),
        ("sma_cross", {"fast": 50, "slow": 20}, r"strategy\.params\.fast: fast \(50\) must be"),
        ("mean_reversion", {"entry_z": 2.0, "stop_z": 2.0}, r"strategy\.params\.stop_z: "),
        ("mean_reversion", {"window": 1}, r"strategy\.params\.window: must be an integer >= 2"),
        ("mean_reversion", {"entry_z": "x"}, r"strategy\.params\.entry_z: must be a number"),
        ("regime", {"vol_pct": 101}, r"strategy\.params\.vol_pct: must be <= 100"),
        ("regime", {"lookback": 0}, r"strategy\.params\.lookback: must be an integer >= 1"),
        (
            "regime",
            {"trend_window": 5, "trend_exit_window": 5},
            r"strategy\.params\.trend_exit_window: trend_exit_window \(5\) must be smaller than "
            r"trend_window \(5\)",
        ),
        (
            "regime",
            {"range_entry_z": 3.0, "range_stop_z": 2.0},
            r"strategy\.params\.range_stop_z: ",
        ),
        ("regime", {"window": 5}, r"strategy 'regime' has no parameter 'window'"),
    ],
)
def test_bad_parameters_name_the_key(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamError, match=message):
        make_strategy(name, params)


def test_defaults_are_valid_and_registered() -> None:
    for cls in (
        MeanReversionStrategy,
        BreakoutStrategy,
        EnhancedMomentumCloseStrategy,
        RegimeStrategy,
    ):
        s = make_strategy(cls.name)
        assert type(s) is cls
    assert make_strategy("regime").warmup == 20 + 250 + 1
    assert make_strategy("enhanced_momentum_close").warmup == 30


# -- properties on random paths ----------------------------------------------------------------

LIBRARY: list[tuple[str, dict[str, Any]]] = [
    ("mean_reversion", {"window": 5, "entry_z": 1.0, "stop_z": 1.7}),
    ("breakout", {"window": 6, "exit_window": 3}),
    (
        "enhanced_momentum_close",
        {"fast": 3, "slow": 7, "window": 4, "threshold": 0.01, "atr_window": 5, "risk_factor": 1.5},
    ),
    (
        "regime",
        {
            "adx_window": 4,
            "adx_trend": 30.0,
            "vol_window": 4,
            "vol_pct": 70.0,
            "lookback": 12,
            "trend_window": 6,
            "trend_exit_window": 3,
            "range_window": 5,
            "range_entry_z": 1.0,
            "range_stop_z": 1.7,
        },
    ),
]

# a bar: log return of the close (often exactly 0: flat stretches), and the high's and the
# low's distance from the close
_bar = st.tuples(
    st.one_of(st.just(0.0), st.floats(-0.06, 0.06)),
    st.floats(0.0, 0.03),
    st.floats(0.0, 0.03),
)
_paths = st.lists(_bar, min_size=40, max_size=160)
_cuts = st.lists(st.integers(0, 40), min_size=1, max_size=8)


def _path(bars: list[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, up, down = (np.array(x, dtype=float) for x in zip(*bars, strict=True))
    c = 100.0 * np.exp(np.cumsum(r))
    return c * (1.0 + up), c * (1.0 - down), c


def _split(n: int, cuts: list[int]) -> list[slice]:
    out, i = [], 0
    for k in cuts * 20:
        if i >= n:
            break
        out.append(slice(i, i + k))
        i += k
    out.append(slice(i, n))
    return out


def _extras(s: BarStrategy) -> np.ndarray:
    """What a strategy reports per bar besides its target (confidence, regime), if anything."""
    if isinstance(s, EnhancedMomentumCloseStrategy):
        return s.last_confidence()
    if isinstance(s, RegimeStrategy):
        return s.last_regimes().astype(float)
    return np.empty(0)


@settings(max_examples=40, deadline=None)
@given(_paths, _cuts)
def test_batches_give_exactly_the_bar_by_bar_targets(
    bars: list[tuple[float, float, float]], cuts: list[int]
) -> None:
    h, lo, c = _path(bars)
    for name, params in LIBRARY:
        one = make_strategy(name, params)
        by_bar, extra_by_bar = [], []
        for x in zip(h, lo, c, strict=True):
            by_bar.append(one.on_bar_ohlc(*x))
            extra_by_bar.append(_extras(one))
        batched = make_strategy(name, params)
        got, extra_got = [], []
        for part in _split(len(c), cuts):
            got.append(batched.targets_ohlc(h[part], lo[part], c[part]))
            extra_got.append(_extras(batched))
        assert np.concatenate(got).tolist() == by_bar, name
        assert np.concatenate(extra_got).tobytes() == np.concatenate(extra_by_bar).tobytes()
        # warm-up: flat before ``warmup`` bars
        assert not any(by_bar[: one.warmup - 1]), name


def _latch_rule(enter: int | None, exit_long: bool, exit_short: bool, pos: int) -> int:
    if enter is not None:
        return enter
    if (pos == 1 and exit_long) or (pos == -1 and exit_short):
        return 0
    return pos


def _mean_reversion_reference(c: np.ndarray, window: int, entry: float, stop: float) -> list[int]:
    z = ZScore(window, ddof=0)
    pos, out = 0, []
    for x in c:
        v = z.update(x)
        enter = None
        if math.isnan(v):
            pass
        elif abs(v) > stop:
            enter = 0
        elif v < -entry:
            enter = 1
        elif v > entry:
            enter = -1
        pos = _latch_rule(enter, v >= 0, v <= 0, pos)
        out.append(pos)
    return out


def _breakout_reference(h: np.ndarray, lo: np.ndarray, c: np.ndarray, n: int, x: int) -> list[int]:
    pos, out = 0, []
    for i in range(len(c)):
        enter = None
        if i >= n:
            if c[i] > h[i - n : i].max():
                enter = 1
            elif c[i] < lo[i - n : i].min():
                enter = -1
        exit_long = i >= x and c[i] < lo[i - x : i].min()
        exit_short = i >= x and c[i] > h[i - x : i].max()
        pos = _latch_rule(enter, exit_long, exit_short, pos)
        out.append(pos)
    return out


def _enhanced_momentum_reference(
    h: np.ndarray, lo: np.ndarray, c: np.ndarray, p: dict[str, Any]
) -> list[int]:
    fast, slow, lag, atr = SMA(p["fast"]), SMA(p["slow"]), Lag(p["window"]), ATR(p["atr_window"])
    th, rf = p["threshold"], p["risk_factor"]
    pos, take, stop, out = 0, 0.0, 0.0, []
    for hi, low, x in zip(h, lo, c, strict=True):
        f, s, past, a = fast.update(x), slow.update(x), lag.update(x), atr.update(hi, low, x)
        mom = x / past - 1.0
        hit = pos == 1 and (x >= take or x <= stop) or pos == -1 and (x <= take or x >= stop)
        if hit:
            pos = 0
        elif not math.isnan(a) and pos != 1 and f > s and mom > th:
            pos, take, stop = 1, x + 2.0 * a * rf, x - a * rf
        elif not math.isnan(a) and pos != -1 and f < s and mom < -th:
            pos, take, stop = -1, x - 2.0 * a * rf, x + a * rf
        out.append(pos)
    return out


def _regime_reference(
    h: np.ndarray, lo: np.ndarray, c: np.ndarray, p: dict[str, Any]
) -> tuple[list[int], list[int]]:
    adx = ADX(p["adx_window"]).update_batch(h, lo, c)[0]
    std = RollingStd(p["vol_window"], ddof=0)
    vols = [math.nan] + [std.update(math.log(c[i] / c[i - 1])) for i in range(1, len(c))]
    k = max(1, math.ceil(p["vol_pct"] * p["lookback"] / 100))
    mr = _mean_reversion_reference(c, p["range_window"], p["range_entry_z"], p["range_stop_z"])
    bo = _breakout_reference(h, lo, c, p["trend_window"], p["trend_exit_window"])
    warm = max(
        2 * p["adx_window"],
        p["vol_window"] + p["lookback"] + 1,
        p["trend_window"] + 1,
        p["range_window"],
    )
    regimes, out = [], []
    for i in range(len(c)):
        prior = vols[max(0, i - p["lookback"]) : i]
        known = len(prior) == p["lookback"] and not any(map(math.isnan, prior + [vols[i]]))
        if known and vols[i] > sorted(prior)[k - 1]:
            regime = REGIME_HIGH_VOL
        elif not known or math.isnan(adx[i]):
            regime = REGIME_WARMUP
        else:
            regime = REGIME_TRENDING if adx[i] >= p["adx_trend"] else REGIME_RANGING
        regimes.append(regime)
        target = bo[i] if regime == REGIME_TRENDING else mr[i] if regime == REGIME_RANGING else 0
        out.append(target if i + 1 >= warm else 0)
    return out, regimes


@settings(max_examples=30, deadline=None)
@given(_paths)
def test_each_strategy_follows_its_documented_rule(bars: list[tuple[float, float, float]]) -> None:
    h, lo, c = _path(bars)
    p = dict(LIBRARY)
    mr = p["mean_reversion"]
    assert make_strategy("mean_reversion", mr).targets(c).tolist() == _mean_reversion_reference(
        c, mr["window"], mr["entry_z"], mr["stop_z"]
    )
    bo = p["breakout"]
    assert make_strategy("breakout", bo).targets_ohlc(h, lo, c).tolist() == _breakout_reference(
        h, lo, c, bo["window"], bo["exit_window"]
    )
    em = p["enhanced_momentum_close"]
    got = make_strategy("enhanced_momentum_close", em).targets_ohlc(h, lo, c)
    assert got.tolist() == _enhanced_momentum_reference(h, lo, c, em)
    rg = make_strategy("regime", p["regime"])
    assert isinstance(rg, RegimeStrategy)
    expect, regimes = _regime_reference(h, lo, c, p["regime"])
    assert rg.targets_ohlc(h, lo, c).tolist() == expect
    assert rg.last_regimes().tolist() == regimes
