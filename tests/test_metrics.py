"""Performance metrics of an equity curve: hand-computed values and a pandas reference."""

from __future__ import annotations

import json
import math
import statistics
from typing import cast

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.clock import DAY, HOUR, MINUTE, YEAR_NS, parse_time
from tickray.engine.metrics import Metrics, compute_metrics

T0 = parse_time("2024-01-01")


def metrics(
    equity: list[float],
    initial: float = 100.0,
    step: int = HOUR,
    *,
    trades: int = 0,
    fees: float = 0.0,
) -> Metrics:
    """Metrics of ``equity`` sampled one step apart, the first sample one step after T0."""
    ts = T0 + step * np.arange(1, len(equity) + 1, dtype=np.int64)
    eq = np.array(equity, dtype=np.float64)
    return compute_metrics(T0, ts, eq, initial, step_ns=step, trades=trades, fees=fees)


def json_ready(m: Metrics) -> dict[str, object]:
    d = m.as_dict()
    json.dumps(d, allow_nan=False)  # raises on NaN, inf and numpy scalars that json rejects
    return d


# -- a hand-computed curve --------------------------------------------------------------
# initial 100, then 110, 99, 121 at T0 + 1h, 2h, 3h
# returns: 110/100 - 1 = 0.10, 99/110 - 1 = -0.10, 121/99 - 1 = 22/99 = 0.2222...
RETURNS = [0.10, -0.10, 22 / 99]
PPY = 8760  # 1h steps in a 365-day year
MEAN = sum(RETURNS) / 3  # 0.0740740...
SD = statistics.stdev(RETURNS)  # sample standard deviation (ddof=1)
DOWN = math.sqrt((0.0 + 0.01 + 0.0) / 3)  # only -0.10 is below zero


def test_hand_computed_curve() -> None:
    m = metrics([110.0, 99.0, 121.0], fees=1.5, trades=4)
    assert (m.initial, m.final, m.trades, m.fees) == (100.0, 121.0, 4, 1.5)
    assert m.total_return == pytest.approx(0.21, rel=1e-12)  # 121 / 100 - 1
    assert m.volatility == pytest.approx(SD * math.sqrt(PPY), rel=1e-12)
    assert m.sharpe == pytest.approx(MEAN / SD * math.sqrt(PPY), rel=1e-12)
    assert m.sortino == pytest.approx(MEAN / DOWN * math.sqrt(PPY), rel=1e-12)
    # 3h is 1/2920 of a year: compounded 1.21 ** 2920 - 1 (about 1e241, still a float)
    assert m.annual_return == pytest.approx(1.21**2920 - 1, rel=1e-9)
    # the worst fall: from the 110 peak (T0+1h) to 99 (T0+2h), 1 - 99/110 = 10%,
    # regained at 121 (T0+3h)
    assert m.max_drawdown == pytest.approx(0.10, rel=1e-12)
    assert (m.max_drawdown_peak, m.max_drawdown_trough, m.max_drawdown_recovery) == (
        T0 + HOUR,
        T0 + 2 * HOUR,
        T0 + 3 * HOUR,
    )
    assert m.calmar == pytest.approx((1.21**2920 - 1) / 0.10, rel=1e-9)
    d = json_ready(m)
    assert d["max_drawdown_recovery"] == T0 + 3 * HOUR


def test_hand_computed_sharpe_and_sortino_values() -> None:
    # the same numbers written out: mean = (0.1 - 0.1 + 0.22222) / 3 = 0.0740741;
    # deviations 0.0259259, -0.1740741, 0.1481481, squares summing to 0.0529218,
    # / (3 - 1) = 0.0264609, sd = 0.1626681; downside sqrt(0.01 / 3) = 0.0577350;
    # sqrt(8760) = 93.594872
    m = metrics([110.0, 99.0, 121.0])
    assert m.volatility == pytest.approx(0.1626681 * 93.594872, rel=1e-6)  # 15.2249
    assert m.sharpe == pytest.approx(0.0740741 / 0.1626681 * 93.594872, rel=1e-6)  # 42.620
    assert m.sortino == pytest.approx(0.0740741 / 0.0577350 * 93.594872, rel=1e-6)  # 120.082


def test_annual_return_beyond_float_range_is_infinite_and_written_as_null() -> None:
    # the same curve at 1m steps: 3 minutes is 1/175200 of a year, and
    # 1.21 ** 175200 overflows a float
    m = metrics([110.0, 99.0, 121.0], step=MINUTE)
    assert m.annual_return == math.inf
    assert m.calmar == math.inf  # inf / 10%
    d = json_ready(m)
    assert d["annual_return"] is None and d["calmar"] is None
    assert d["total_return"] == pytest.approx(0.21, rel=1e-12)


def test_a_drawdown_never_regained_has_no_recovery() -> None:
    # peak 110 at T0+1h, trough 88 at T0+2h (20%), 105 at T0+3h is still below 110
    m = metrics([110.0, 88.0, 105.0])
    assert m.max_drawdown == pytest.approx(0.20, rel=1e-12)
    assert (m.max_drawdown_peak, m.max_drawdown_trough) == (T0 + HOUR, T0 + 2 * HOUR)
    assert m.max_drawdown_recovery is None
    assert json_ready(m)["max_drawdown_recovery"] is None


def test_a_drawdown_from_the_initial_capital_peaks_at_the_start() -> None:
    # 100 at the start is the peak: 90 (10%) then 80 (20%) then back to exactly 100
    m = metrics([90.0, 80.0, 100.0])
    assert m.max_drawdown == pytest.approx(0.20, rel=1e-12)
    assert (m.max_drawdown_peak, m.max_drawdown_trough, m.max_drawdown_recovery) == (
        T0,
        T0 + 2 * HOUR,
        T0 + 3 * HOUR,  # regaining the peak exactly counts as recovered
    )


def test_the_peak_is_the_last_time_at_the_peak_before_the_trough() -> None:
    # 110 at 1h and again at 3h, then 99 at 4h: the fall starts at 3h
    m = metrics([110.0, 105.0, 110.0, 99.0])
    assert (m.max_drawdown_peak, m.max_drawdown_trough) == (T0 + 3 * HOUR, T0 + 4 * HOUR)


def test_a_flat_curve_has_undefined_ratios_written_as_null() -> None:
    m = metrics([100.0, 100.0, 100.0])
    assert (m.total_return, m.annual_return, m.volatility, m.max_drawdown) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(m.sharpe) and math.isnan(m.sortino) and math.isnan(m.calmar)
    assert (m.max_drawdown_peak, m.max_drawdown_trough, m.max_drawdown_recovery) == (
        None,
        None,
        None,
    )
    d = json_ready(m)
    assert d["sharpe"] is None and d["sortino"] is None and d["calmar"] is None
    assert d["volatility"] == 0.0


def test_a_curve_that_never_falls_has_no_sortino_and_no_drawdown() -> None:
    m = metrics([101.0, 103.0, 106.0])
    assert m.sharpe > 0
    assert math.isnan(m.sortino)  # no downside deviation
    assert m.max_drawdown == 0.0 and math.isnan(m.calmar)
    json_ready(m)


def test_one_step_has_no_volatility() -> None:
    m = metrics([105.0])
    assert m.total_return == pytest.approx(0.05, rel=1e-12)
    assert math.isnan(m.volatility) and math.isnan(m.sharpe) and math.isnan(m.sortino)
    json_ready(m)


def test_an_empty_curve_is_the_initial_capital() -> None:
    m = metrics([], initial=250.0, trades=0, fees=0.0)
    assert (m.initial, m.final, m.total_return, m.annual_return, m.max_drawdown) == (
        250.0,
        250.0,
        0.0,
        0.0,
        0.0,
    )
    assert math.isnan(m.volatility) and math.isnan(m.sharpe) and math.isnan(m.calmar)
    assert m.max_drawdown_peak is None and m.max_drawdown_recovery is None
    assert json_ready(m) == {
        "initial": 250.0,
        "final": 250.0,
        "total_return": 0.0,
        "annual_return": 0.0,
        "volatility": None,
        "sharpe": None,
        "sortino": None,
        "max_drawdown": 0.0,
        "max_drawdown_peak": None,
        "max_drawdown_trough": None,
        "max_drawdown_recovery": None,
        "calmar": None,
        "trades": 0,
        "fees": 0.0,
    }


def test_a_wiped_out_account_loses_everything_per_year() -> None:
    m = metrics([50.0, 0.0])
    assert m.total_return == -1.0 and m.annual_return == -1.0
    assert m.max_drawdown == 1.0
    json_ready(m)


# -- a pandas reference on random curves ------------------------------------------------
def reference(start: int, step: int, equity: list[float], initial: float) -> dict[str, object]:
    """The documented conventions, written independently with pandas."""
    times = [start + k * step for k in range(len(equity) + 1)]
    s = pd.Series([initial, *equity], index=times, dtype="float64")
    r = s.pct_change().iloc[1:]
    ppy = YEAR_NS / step
    sd, mean = r.std(ddof=1), r.mean()  # NaN below two returns
    down = math.sqrt(float((r.clip(upper=0.0) ** 2).mean()))
    final = float(s.iloc[-1])
    x = math.log(final / initial) * YEAR_NS / (times[-1] - times[0])
    annual = math.inf if x > math.log(np.finfo(np.float64).max) else math.expm1(x)
    running = s.cummax()
    dd = 1.0 - s / running
    mdd = float(dd.max())
    peak = trough = recovery = None
    if mdd > 0:
        trough = int(cast(int, dd.idxmax()))
        top = running[trough]
        before = s.loc[:trough]
        peak = int(before[before == top].index[-1])
        after = s.loc[trough:]
        back = after[after >= top]
        recovery = int(back.index[0]) if len(back) else None
    return dict(
        final=final,
        total_return=final / initial - 1.0,
        annual_return=annual,
        volatility=sd * math.sqrt(ppy),
        sharpe=mean / sd * math.sqrt(ppy) if sd > 0 else math.nan,
        # like Sharpe, Sortino needs two returns (the mean of one is no estimate)
        sortino=mean / down * math.sqrt(ppy) if down > 0 and len(r) >= 2 else math.nan,
        max_drawdown=mdd,
        max_drawdown_peak=peak,
        max_drawdown_trough=trough,
        max_drawdown_recovery=recovery,
        calmar=annual / mdd if mdd > 0 else math.nan,
    )


def same(got: object, want: object) -> bool:
    if want is None or got is None or isinstance(want, int):
        return got == want
    assert isinstance(got, float) and isinstance(want, float)
    if math.isnan(want) or math.isinf(want):
        return got == want or (math.isnan(got) and math.isnan(want))
    return got == pytest.approx(want, rel=1e-9, abs=1e-12)


equity_values = st.floats(1.0, 10_000.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(equity_values, min_size=1, max_size=60),
    equity_values,
    st.sampled_from([MINUTE, HOUR, DAY]),
)
def test_metrics_agree_with_a_pandas_reference(
    equity: list[float], initial: float, step: int
) -> None:
    m = metrics(equity, initial=initial, step=step)
    want = reference(T0, step, equity, initial)
    got = m.as_dict() | {k: getattr(m, k) for k in want}
    for key, value in want.items():
        assert same(got[key], value), (key, got[key], value)
    json_ready(m)
