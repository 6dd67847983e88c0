"""Performance metrics of an equity curve: hand-computed values and a pandas reference."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.clock import DAY, HOUR, MINUTE, YEAR_NS, parse_time
from tickray.engine.metrics import (
    FillColumns,
    Metrics,
    RoundTrips,
    compute_metrics,
    periods_per_year,
    round_trips,
)

T0 = parse_time("2024-01-01")


def metrics(
    equity: list[float],
    initial: float = 100.0,
    step: int = HOUR,
    **options: Any,
) -> Metrics:
    """Metrics of ``equity`` sampled one step apart, the first sample one step after T0."""
    ts = T0 + step * np.arange(1, len(equity) + 1, dtype=np.int64)
    eq = np.array(equity, dtype=np.float64)
    return compute_metrics(T0, ts, eq, initial, step_ns=step, **options)


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
        "periods_per_year": 8760.0,
        "max_drawdown": 0.0,
        "max_drawdown_peak": None,
        "max_drawdown_trough": None,
        "max_drawdown_recovery": None,
        "max_drawdown_duration_ns": 0,
        "longest_drawdown_ns": 0,
        "calmar": None,
        "fills": 0,
        "trades": 0,
        "win_rate": None,
        "profit_factor": None,
        "expectancy": None,
        "avg_win": None,
        "avg_loss": None,
        "exposure": None,
        "traded_notional": None,
        "turnover": None,
        "fees": 0.0,
        "funding": 0.0,
        "liquidations": 0,
        "benchmark_return": None,
        "alpha": None,
        "beta": None,
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
    # drawdown episodes, walked sample by sample: each starts at the sample
    # before equity falls below its running peak and ends back at the peak
    spans: list[int] = []
    began, prev_t = None, times[0]
    for t, value, high in zip(times, s.to_numpy(), running.to_numpy(), strict=True):
        if value < high and began is None:
            began = prev_t
        elif value >= high and began is not None:
            spans.append(t - began)
            began = None
        prev_t = t
    if began is not None:
        spans.append(times[-1] - began)
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
        max_drawdown_duration_ns=0 if peak is None else (recovery or times[-1]) - peak,
        longest_drawdown_ns=max(spans, default=0),
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


# -- round trips by hand ----------------------------------------------------------------
Row = tuple[int, int, int, float, float, float, float, float]


def fill_columns(rows: list[Row]) -> FillColumns:
    """Columns from (symbol, ts, side, qty, price, fee, realized_pnl, position_after) rows."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * 8
    dtypes = [np.int64, np.int64, np.int8] + [np.float64] * 5
    return FillColumns(*(np.array(c, dtype=d) for c, d in zip(cols, dtypes, strict=True)))


def trips_as_rows(rt: RoundTrips) -> list[tuple[int, int, int, int, float, float]]:
    return [
        (int(s), int(o), int(c), int(d), round(float(p), 9), round(float(f), 9))
        for s, o, c, d, p, f in zip(*rt, strict=True)
    ]


def test_a_round_trip_opens_off_zero_and_closes_back_at_zero() -> None:
    # buy 2 @ 100 (fee 0.2), sell 2 @ 110 (fee 0.22) realising 2 x 10 = 20:
    # pnl = 20 - (0.2 + 0.22) = 19.58
    rt = round_trips(
        fill_columns(
            [
                (0, T0 + HOUR, 1, 2.0, 100.0, 0.2, 0.0, 2.0),
                (0, T0 + 2 * HOUR, -1, 2.0, 110.0, 0.22, 20.0, 0.0),
            ]
        )
    )
    assert trips_as_rows(rt) == [(0, T0 + HOUR, T0 + 2 * HOUR, 1, 19.58, 0.42)]
    assert rt.side.dtype == np.int8 and rt.pnl.dtype == np.float64


def test_a_flip_closes_one_round_trip_and_opens_the_next_splitting_its_fee() -> None:
    # buy 2 @ 10 (fee 0.3); sell 3 @ 12 (fee 0.6) closes the 2 long, realising
    # 2 x 2 = 4, and opens 1 short: the fee splits 2/3 = 0.4 to the long, 1/3 = 0.2
    # to the short; buy 1 @ 11 (fee 0.1) closes the short, realising 1
    # long: pnl 4 - (0.3 + 0.4) = 3.3; short: pnl 1 - (0.2 + 0.1) = 0.7
    rt = round_trips(
        fill_columns(
            [
                (0, 1, 1, 2.0, 10.0, 0.3, 0.0, 2.0),
                (0, 2, -1, 3.0, 12.0, 0.6, 4.0, -1.0),
                (0, 3, 1, 1.0, 11.0, 0.1, 1.0, 0.0),
            ]
        )
    )
    assert trips_as_rows(rt) == [(0, 1, 2, 1, 3.3, 0.7), (0, 2, 3, -1, 0.7, 0.3)]


def test_partial_closes_stay_in_one_round_trip_and_a_still_open_one_is_not_counted() -> None:
    # short 3 (fee 0.3), buy 1 back realising 5 (fee 0.1), sell 1 more (fee 0.1),
    # buy 3 back realising 8 (fee 0.3): one round trip, pnl 13 - 0.8 = 12.2;
    # then buy 1 (fee 0.1) opens a round trip that never closes
    rt = round_trips(
        fill_columns(
            [
                (0, 1, -1, 3.0, 50.0, 0.3, 0.0, -3.0),
                (0, 2, 1, 1.0, 45.0, 0.1, 5.0, -2.0),
                (0, 3, -1, 1.0, 47.0, 0.1, 0.0, -3.0),
                (0, 4, 1, 3.0, 46.0, 0.3, 8.0, 0.0),
                (0, 5, 1, 1.0, 46.0, 0.1, 0.0, 1.0),
            ]
        )
    )
    assert trips_as_rows(rt) == [(0, 1, 4, -1, 12.2, 0.8)]


def test_round_trips_are_per_symbol_and_listed_in_the_order_they_closed() -> None:
    # symbol 7 opens at 1 and closes at 4; symbol 3 opens at 2 (inside 7's round
    # trip, which does not close it) and closes at 3; symbol 3's position before
    # its first fill is zero whatever symbol 7 holds
    rt = round_trips(
        fill_columns(
            [
                (7, 1, 1, 1.0, 10.0, 0.0, 0.0, 1.0),
                (3, 2, -1, 2.0, 20.0, 0.0, 0.0, -2.0),
                (3, 3, 1, 2.0, 19.0, 0.0, 2.0, 0.0),
                (7, 4, -1, 1.0, 9.0, 0.0, -1.0, 0.0),
            ]
        )
    )
    assert trips_as_rows(rt) == [(3, 2, 3, -1, 2.0, 0.0), (7, 1, 4, 1, -1.0, 0.0)]


def test_no_fills_no_round_trips() -> None:
    rt = round_trips(fill_columns([]))
    assert all(len(column) == 0 for column in rt)


def test_fill_columns_of_different_lengths_are_refused() -> None:
    f = fill_columns([(0, 1, 1, 1.0, 10.0, 0.0, 0.0, 1.0)])
    with pytest.raises(ValueError, match="'price' has shape"):
        round_trips(f._replace(price=np.zeros(2)))


# -- trade statistics by hand -----------------------------------------------------------
def trades_of(pnls: list[float]) -> FillColumns:
    """One long round trip per PnL: buy 1 @ 100, sell 1 realising the PnL, no fees."""
    rows: list[Row] = []
    for k, pnl in enumerate(pnls):
        rows.append((0, 2 * k, 1, 1.0, 100.0, 0.0, 0.0, 1.0))
        rows.append((0, 2 * k + 1, -1, 1.0, 100.0 + pnl, 0.0, pnl, 0.0))
    return fill_columns(rows)


def test_win_rate_profit_factor_expectancy_and_average_win_and_loss() -> None:
    # wins 30, 20 (sum 50), losses -10, -5 (sum -15), and one trade at exactly 0
    m = metrics([100.0, 135.0], fills=trades_of([30.0, -10.0, 0.0, 20.0, -5.0]))
    assert (m.fills, m.trades) == (10, 5)
    assert m.win_rate == pytest.approx(2 / 5)  # the zero trade is not a win
    assert m.profit_factor == pytest.approx(50 / 15)  # 3.333...
    assert m.expectancy == pytest.approx(35 / 5)  # 7.0
    assert (m.avg_win, m.avg_loss) == (pytest.approx(25.0), pytest.approx(-7.5))
    json_ready(m)


def test_profit_factor_without_losses_is_infinite_and_written_as_null() -> None:
    m = metrics([100.0, 102.0], fills=trades_of([1.0, 1.0]))
    assert m.profit_factor == math.inf and math.isnan(m.avg_loss) and m.win_rate == 1.0
    assert json_ready(m)["profit_factor"] is None
    m = metrics([100.0, 100.0], fills=trades_of([0.0]))  # 0 / 0
    assert math.isnan(m.profit_factor) and m.win_rate == 0.0 and m.expectancy == 0.0


def test_without_closed_round_trips_trade_statistics_are_undefined() -> None:
    # one open round trip: a fill, no trade
    m = metrics([100.0], fills=fill_columns([(0, 1, 1, 1.0, 100.0, 0.1, 0.0, 1.0)]))
    assert (m.fills, m.trades) == (1, 0)
    assert all(math.isnan(x) for x in (m.win_rate, m.profit_factor, m.expectancy, m.avg_win))
    assert m.traded_notional == 100.0


def test_the_trades_keyword_is_the_fill_count_when_no_fill_columns_are_given() -> None:
    # callers that count fills keep working: both counts are that number
    m = metrics([101.0], trades=7)
    assert (m.fills, m.trades) == (7, 7)
    assert math.isnan(m.win_rate) and math.isnan(m.traded_notional) and math.isnan(m.turnover)
    # with fill columns the counts come from them; a disagreeing count is an error
    assert metrics([101.0], trades=10, fills=trades_of([1.0] * 5)).trades == 5
    with pytest.raises(ValueError, match="trades=3"):
        metrics([101.0], trades=3, fills=trades_of([1.0] * 5))


def test_turnover_is_traded_notional_over_mean_equity() -> None:
    # buy 2 @ 100 (200) and sell 2 @ 110 (220): notional 420; mean equity of the
    # samples (100 + 120) / 2 = 110; turnover 420 / 110 = 3.8181...
    f = fill_columns([(0, 1, 1, 2.0, 100.0, 0.0, 0.0, 2.0), (0, 2, -1, 2.0, 110.0, 0.0, 20.0, 0.0)])
    m = metrics([100.0, 120.0], fills=f)
    assert m.traded_notional == 420.0
    assert m.turnover == pytest.approx(420 / 110, rel=1e-12)


def test_exposure_is_the_mean_held_flag_or_fraction() -> None:
    held = np.array([True, False, True, True])
    assert metrics([100.0] * 4, exposure=held).exposure == 0.75
    part = np.array([0.5, 1.0, 0.0, 0.5])
    assert metrics([100.0] * 4, exposure=part).exposure == 0.5
    assert math.isnan(metrics([100.0] * 4).exposure)
    with pytest.raises(ValueError, match="exposure has 3 samples, equity 4"):
        metrics([100.0] * 4, exposure=held[:3])


def test_fees_funding_and_liquidations_are_reported_as_given() -> None:
    m = metrics([99.0], fees=0.5, funding=-0.25, liquidations=2)
    assert (m.fees, m.funding, m.liquidations) == (0.5, -0.25, 2)


# -- drawdown durations by hand ---------------------------------------------------------
def test_drawdown_durations_of_the_deepest_and_the_longest_drawdown() -> None:
    # 100 at T0, then 110, 99, 105, 110, 120, 100, 108 at 1h ... 7h
    # first: peak 110 at 1h, below at 2h and 3h, back to 110 at 4h: 3h, 10% deep
    # second: peak 120 at 5h, 100 at 6h (1 - 100/120 = 16.7%), 108 at 7h still
    # below: the deepest, lasting from 5h to the last sample, 2h
    m = metrics([110.0, 99.0, 105.0, 110.0, 120.0, 100.0, 108.0])
    assert m.max_drawdown == pytest.approx(1 / 6, rel=1e-12)
    assert (m.max_drawdown_peak, m.max_drawdown_trough, m.max_drawdown_recovery) == (
        T0 + 5 * HOUR,
        T0 + 6 * HOUR,
        None,
    )
    assert m.max_drawdown_duration_ns == 2 * HOUR
    assert m.longest_drawdown_ns == 3 * HOUR


def test_a_recovered_drawdown_lasts_from_peak_to_recovery() -> None:
    # peak 100 at T0 (the initial capital), 90 at 1h, 95 at 2h, 100 at 3h: 3h
    m = metrics([90.0, 95.0, 100.0, 101.0])
    assert m.max_drawdown_recovery == T0 + 3 * HOUR
    assert m.max_drawdown_duration_ns == m.longest_drawdown_ns == 3 * HOUR


def test_no_drawdown_lasts_zero() -> None:
    m = metrics([101.0, 102.0, 102.0])
    assert m.max_drawdown_duration_ns == m.longest_drawdown_ns == 0


# -- benchmark, alpha and beta by hand --------------------------------------------------
def test_alpha_and_beta_against_a_benchmark() -> None:
    # benchmark 50 -> 50.5, 49.995, 50.9949: returns x = 0.01, -0.01, 0.02
    # strategy 100 -> 102, 99.96, 104.958: returns y = 0.02, -0.02, 0.05
    # in units of 1/300: x = 3, -3, 6 (mean 2), y = 6, -6, 15 (mean 5);
    # deviations dx = 1, -5, 4 and dy = 1, -11, 10
    # beta = sum(dx dy) / sum(dx^2) = (1 + 55 + 40) / (1 + 25 + 16) = 96 / 42 = 16/7
    # alpha per step = 5/300 - 16/7 * 2/300 = 3/2100 = 1/700; daily 24/7 steps: x 365
    m = metrics(
        [102.0, 99.96, 104.958],
        step=DAY,
        benchmark=np.array([50.5, 49.995, 50.9949]),
        benchmark_start=50.0,
    )
    assert m.beta == pytest.approx(16 / 7, rel=1e-9)
    assert m.alpha == pytest.approx(365 / 700, rel=1e-9)
    assert m.benchmark_return == pytest.approx(50.9949 / 50 - 1, rel=1e-12)  # 1.9898%


def test_a_flat_benchmark_has_no_beta() -> None:
    m = metrics([101.0, 99.0], benchmark=np.array([10.0, 10.0]), benchmark_start=10.0)
    assert m.benchmark_return == 0.0 and math.isnan(m.beta) and math.isnan(m.alpha)
    assert json_ready(m)["beta"] is None


def test_a_benchmark_needs_its_start_value() -> None:
    with pytest.raises(ValueError, match="benchmark_start"):
        metrics([101.0], benchmark=np.array([10.0]))


# -- annualisation calendars ------------------------------------------------------------
def test_periods_per_year_on_a_24_7_and_a_trading_calendar() -> None:
    assert periods_per_year(HOUR) == periods_per_year(HOUR, "24/7") == 8760  # 365 x 24
    assert periods_per_year(DAY) == 365
    assert periods_per_year(HOUR, "trading") == 252 * 6.5  # 1638 hours of sessions
    assert periods_per_year(MINUTE, "trading") == 252 * 390  # 98280
    assert periods_per_year(8 * HOUR, "trading") == 252  # one step per 6.5h session at least
    assert periods_per_year(DAY, "trading") == 252
    assert periods_per_year(2 * DAY, "trading") == 126  # a step of n days is n trading days
    assert periods_per_year(HOUR, "trading", trading_days=250, session_ns=8 * HOUR) == 2000


def test_an_unknown_calendar_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"unknown calendar 'nyse'.*'24/7', 'trading'"):
        periods_per_year(DAY, "nyse")
    with pytest.raises(ValueError, match="step_ns must be positive"):
        periods_per_year(0)


def test_a_trading_calendar_annualises_per_sample() -> None:
    # the hand-computed curve (returns 0.1, -0.1, 22/99) on daily bars of a
    # 252-day year: 3 samples compound to 1.21 ** (252 / 3) - 1 = 1.21 ** 84 - 1
    ppy = periods_per_year(DAY, "trading")
    m = metrics([110.0, 99.0, 121.0], step=DAY, periods_per_year=ppy)
    assert m.periods_per_year == 252
    assert m.annual_return == pytest.approx(1.21**84 - 1, rel=1e-9)
    assert m.volatility == pytest.approx(SD * math.sqrt(252), rel=1e-12)
    assert m.sharpe == pytest.approx(MEAN / SD * math.sqrt(252), rel=1e-12)
    # the same curve on a 24/7 calendar: 3 days are 3/365 of a year
    m = metrics([110.0, 99.0, 121.0], step=DAY)
    assert m.periods_per_year == 365
    assert m.annual_return == pytest.approx(1.21 ** (365 / 3) - 1, rel=1e-9)


# -- JSON -------------------------------------------------------------------------------
def test_as_dict_survives_a_json_round_trip() -> None:
    m = metrics(
        [110.0, 99.0, 121.0],
        fills=trades_of([5.0, -2.0]),
        fees=1.5,
        funding=0.3,
        liquidations=1,
        exposure=np.array([True, True, False]),
        benchmark=np.array([10.0, 11.0, 10.5]),
        benchmark_start=10.0,
    )
    d = m.as_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert set(d) == set(Metrics.__dataclass_fields__)
    assert all(type(v) in (int, float, type(None)) for v in d.values())


# -- a pandas reference on random fills, benchmarks and exposure --------------------------
def random_fills(rng: np.random.Generator, n: int, symbols: int, t0: int) -> FillColumns:
    """``n`` fills over ``symbols`` symbols with exact closes, flips and partial closes.

    Quantities are multiples of 0.5, so positions add up exactly.
    """
    held = [0.0] * symbols
    rows: list[Row] = []
    t = t0
    for _ in range(n):
        s = int(rng.integers(symbols))
        t += int(rng.integers(0, 3)) * MINUTE  # equal times happen
        before = held[s]
        lots = 0.5 * int(rng.integers(1, 6))
        u = rng.random()
        if before != 0 and u < 0.3:
            q = -before  # close exactly
        elif before != 0 and u < 0.45:
            q = -before - math.copysign(lots, before)  # flip through zero
        else:
            q = lots if rng.random() < 0.5 else -lots
        price = 100.0 + float(rng.normal())
        reducing = before != 0 and (q > 0) != (before > 0)
        realized = float(rng.normal()) * min(abs(q), abs(before)) if reducing else 0.0
        held[s] = before + q
        rows.append(
            (s, t, 1 if q > 0 else -1, abs(q), price, 4e-4 * abs(q) * price, realized, held[s])
        )
    return fill_columns(rows)


def reference_round_trips(f: FillColumns) -> pd.DataFrame:
    """Round trips with pandas: a flip becomes a closing and an opening leg."""
    df = pd.DataFrame({name: getattr(f, name) for name in FillColumns._fields})
    df["seq"] = np.arange(len(df))
    df["before"] = df.groupby("symbol")["position_after"].shift(fill_value=0.0)
    flip = np.sign(df["before"]) * np.sign(df["position_after"]) < 0
    share = df["before"].abs() / (df["before"].abs() + df["position_after"].abs())
    closing = df[flip].assign(position_after=0.0, fee=df["fee"] * share, part=0)
    opening = df[flip].assign(before=0.0, fee=df["fee"] * (1 - share), realized_pnl=0.0, part=1)
    legs = pd.concat([df[~flip].assign(part=0), closing, opening]).sort_values(["seq", "part"])
    opens = legs["before"].eq(0) & legs["position_after"].ne(0)
    legs["trip"] = opens.groupby(legs["symbol"]).cumsum()
    legs["closes"] = legs["before"].ne(0) & legs["position_after"].eq(0)
    g = legs[legs["trip"] > 0].groupby(["symbol", "trip"])
    trips = pd.DataFrame(
        {
            "open_ts": g["ts"].first(),
            "side": np.sign(g["position_after"].first()).astype(int),
            "fees": g["fee"].sum(),
            "pnl": g["realized_pnl"].sum() - g["fee"].sum(),
        }
    )
    closes = legs[legs["closes"]].set_index(["symbol", "trip"])[["ts", "seq"]]
    trips = trips.join(closes.rename(columns={"ts": "close_ts"}), how="inner")
    return trips.sort_values("seq").reset_index()


def reference_trade_stats(pnl: pd.Series, notional: float, equity: pd.Series) -> dict[str, object]:
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    if len(pnl) == 0:
        factor = math.nan
    elif losses.sum() < 0:
        factor = float(wins.sum() / -losses.sum())
    else:
        factor = math.inf if wins.sum() > 0 else math.nan
    return dict(
        trades=len(pnl),
        win_rate=float((pnl > 0).mean()) if len(pnl) else math.nan,
        profit_factor=factor,
        expectancy=float(pnl.mean()) if len(pnl) else math.nan,
        avg_win=float(wins.mean()) if len(wins) else math.nan,
        avg_loss=float(losses.mean()) if len(losses) else math.nan,
        traded_notional=notional,
        turnover=notional / float(equity.mean()),
    )


def reference_benchmark(
    equity: pd.Series, bench: pd.Series, initial: float, start: float, ppy: float
) -> dict[str, object]:
    r = pd.concat([pd.Series([initial]), equity], ignore_index=True).pct_change()
    rb = pd.concat([pd.Series([start]), bench], ignore_index=True).pct_change()
    beta = r.cov(rb) / rb.var(ddof=1)
    return dict(
        benchmark_return=float(bench.iloc[-1] / start - 1),
        beta=float(beta),
        alpha=float((r.mean() - beta * rb.mean()) * ppy),
    )


def test_round_trips_agree_with_a_pandas_reference() -> None:
    rng = np.random.default_rng(20240101)
    for case in range(20):
        f = random_fills(rng, int(rng.integers(1, 120)), int(rng.integers(1, 4)), T0)
        got = round_trips(f)
        want = reference_round_trips(f)
        assert len(got.pnl) == len(want), case
        for name in ("symbol", "open_ts", "close_ts", "side"):
            assert getattr(got, name).tolist() == want[name].tolist(), (case, name)
        for name in ("pnl", "fees"):
            np.testing.assert_allclose(getattr(got, name), want[name], rtol=1e-9, atol=1e-12)


def test_trade_benchmark_and_exposure_metrics_agree_with_a_pandas_reference() -> None:
    rng = np.random.default_rng(7)
    for case in range(20):
        n = int(rng.integers(2, 200))
        step = [MINUTE, HOUR, DAY][case % 3]
        initial = float(rng.uniform(100, 10_000))
        equity = initial * np.cumprod(1 + rng.normal(0, 0.01, n))
        start = float(rng.uniform(1, 1000))
        bench = start * np.cumprod(1 + rng.normal(0, 0.02, n))
        held = rng.random(n) < 0.6
        f = random_fills(rng, int(rng.integers(0, 150)), int(rng.integers(1, 4)), T0)
        m = metrics(
            list(equity),
            initial=initial,
            step=step,
            fills=f,
            exposure=held,
            benchmark=bench,
            benchmark_start=start,
        )
        trips = reference_round_trips(f)
        notional = float((pd.Series(f.qty) * pd.Series(f.price)).abs().sum())
        want = (
            reference(T0, step, list(equity), initial)
            | reference_trade_stats(trips["pnl"], notional, pd.Series(equity))
            | reference_benchmark(
                pd.Series(equity), pd.Series(bench), initial, start, YEAR_NS / step
            )
            | dict(fills=len(f.qty), exposure=float(pd.Series(held).mean()))
        )
        for key, value in want.items():
            assert same(getattr(m, key), value), (case, key, getattr(m, key), value)
        json_ready(m)
