"""Performance metrics of an equity curve sampled at step boundaries, and of its fills.

Conventions (stated because every tool differs a little):

* Returns are simple per-step returns; the first step's return is measured
  from the initial capital at the run's start. Returns that are not finite
  (after equity reached zero) are left out.
* ``periods_per_year`` is the number of equity samples in a year: by default
  ``365 days / step length`` (crypto trades 24/7); :func:`periods_per_year`
  also gives a trading-day count for markets with sessions. Volatility is the
  sample standard deviation (ddof=1) times ``sqrt(periods_per_year)``.
* Sharpe is ``mean / std * sqrt(periods_per_year)`` with a zero risk-free rate;
  Sortino divides by the downside deviation ``sqrt(mean(min(r, 0)^2))``.
* The annualised return is compounded, each sample counting as one period:
  ``(final / initial) ** (periods_per_year / samples) - 1``. On a contiguous
  24/7 grid this is ``(final / initial) ** (year / elapsed) - 1``.
* Max drawdown is the largest fall from a running peak, as a positive
  fraction, with the peak, trough and recovery times (recovery is ``None``
  when equity never regained the peak). Calmar is annual return / max drawdown.
  A drawdown lasts from its peak (the last sample at the peak) to its recovery
  (the first sample back at or above it), or to the last sample when it never
  recovered: ``max_drawdown_duration_ns`` is the duration of the deepest one,
  ``longest_drawdown_ns`` the longest of all.
* A round trip (see :func:`round_trips`) is a symbol's position from leaving
  zero to returning to zero; its PnL is net of its fees. A trade is a closed
  round trip: win rate, profit factor, expectancy and the average win and
  loss count closed round trips only, a PnL of exactly zero being neither a
  win nor a loss.
* ``fills`` counts fills and ``trades`` closed round trips. The ``trades``
  keyword of :func:`compute_metrics` is the fill count under its historical
  name: without fill columns it fills both fields (round trips are then
  unknown), with fill columns the counts come from the columns.
* Turnover is traded notional over the mean equity of the samples, for the
  whole run (not annualised). Exposure is the mean over the samples of the
  held flag (or fraction).
* Beta is ``cov(r, r_b) / var(r_b)`` (ddof=1) against the benchmark's returns
  ``r_b``, computed like the strategy's, over the steps where both are finite;
  alpha is ``(mean(r) - beta * mean(r_b)) * periods_per_year`` (zero risk-free
  rate, not compounded).
* Undefined values (no starting capital, no variance, no drawdown, no trades, no input to compute
  them from) are NaN, and an annualised return or profit factor beyond float
  range is infinite; both are written as JSON null.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from tickray.engine.clock import DAY, HOUR, MINUTE, YEAR_NS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TRADING_DAYS: Final = 252
SESSION_NS: Final = 6 * HOUR + 30 * MINUTE  # a regular US equity session, 09:30-16:00


class YearBasis(StrEnum):
    """The time a year counts: all of its 365 days, or its trading sessions only."""

    ALWAYS = "24/7"
    TRADING = "trading"


def periods_per_year(
    step_ns: int,
    calendar: str = "24/7",
    *,
    trading_days: int = TRADING_DAYS,
    session_ns: int = SESSION_NS,
) -> float:
    """Steps of ``step_ns`` in a year of ``calendar`` (``"24/7"`` or ``"trading"``).

    ``"24/7"``: 365-day years, ``YEAR_NS / step_ns``. ``"trading"``: a step
    shorter than a day counts ``trading_days * max(1, session_ns / step_ns)``
    (one session a day, at least one step per session); a step of a day or
    more counts as that many trading days, ``trading_days * DAY / step_ns``
    (so a 1d step gives 252 and a 1w step 36, not 52).
    """
    if step_ns <= 0:
        raise ValueError(f"step_ns must be positive, got {step_ns}")
    try:
        basis = YearBasis(calendar)
    except ValueError:
        choices = ", ".join(repr(b.value) for b in YearBasis)
        raise ValueError(f"unknown calendar {calendar!r}: expected one of {choices}") from None
    if basis is YearBasis.ALWAYS:
        return YEAR_NS / step_ns
    if trading_days <= 0 or session_ns <= 0:
        raise ValueError(
            f"trading_days and session_ns must be positive, got {trading_days}, {session_ns}"
        )
    if step_ns < DAY:
        return trading_days * max(1.0, session_ns / step_ns)
    return trading_days * DAY / step_ns


class FillColumns(NamedTuple):
    """Fills of one symbol or a whole portfolio in booking order, one array per field.

    ``symbol`` is an int64 index (round trips are per symbol), ``ts`` int64 ns,
    ``side`` +1 buy / -1 sell (int8), ``qty`` > 0, ``fee`` in quote currency,
    ``realized_pnl`` the fill's realised PnL against average cost, fees apart,
    and ``position_after`` the symbol's signed position after the fill (flat is
    exactly 0.0, as the engine rounds positions to the lot size).
    ``position_side`` (optional, int8 :class:`~tickray.engine.events.PositionSide`
    values) separates a hedge-mode symbol's long and short positions: then
    ``position_after`` is that side's position and round trips are per side.
    """

    symbol: IntArray
    ts: IntArray
    side: npt.NDArray[np.int8]
    qty: FloatArray
    price: FloatArray
    fee: FloatArray
    realized_pnl: FloatArray
    position_after: FloatArray
    position_side: npt.NDArray[np.int8] | None = None

    def select(self, mask: npt.NDArray[np.bool_]) -> FillColumns:
        """The fills where ``mask`` is true."""
        ps = self.position_side
        return FillColumns(
            self.symbol[mask],
            self.ts[mask],
            self.side[mask],
            self.qty[mask],
            self.price[mask],
            self.fee[mask],
            self.realized_pnl[mask],
            self.position_after[mask],
            None if ps is None else ps[mask],
        )


class RoundTrips(NamedTuple):
    """Closed round trips in the order they closed (booking order of the closing fill).

    ``side`` is +1 for long, -1 for short; ``pnl`` is net of ``fees``.
    """

    symbol: IntArray
    open_ts: IntArray
    close_ts: IntArray
    side: npt.NDArray[np.int8]
    pnl: FloatArray
    fees: FloatArray


def round_trips(fills: FillColumns) -> RoundTrips:
    """The closed round trips of ``fills``, per symbol.

    A round trip opens on the fill that moves a symbol's position off zero and
    closes on the fill that brings it back. A fill that flips the position
    closes one round trip and opens the next: its realised PnL goes to the
    closing one, its fee is split by quantity (``|before|`` closes,
    ``|after|`` opens). A round trip's PnL is the sum of its fills' realised
    PnL minus its fees. Positions are read from ``position_after``: before a
    fill, the symbol's previous one (zero before its first fill).
    """
    n = _check_fills(fills)
    book = fills.symbol.astype(np.int64) * 3  # one book per (symbol, position side)
    if fills.position_side is not None:
        book = book + fills.position_side.astype(np.int64)
    order = np.argsort(book, kind="stable")  # each book's fills together, in order
    sym = book[order]
    ts = fills.ts[order]
    pos = fills.position_after[order].astype(np.float64)
    prev = np.zeros(n)
    prev[1:] = pos[:-1]
    prev[1:][sym[1:] != sym[:-1]] = 0.0
    flip = np.sign(prev) * np.sign(pos) < 0
    opens = (pos != 0) & ((prev == 0) | flip)
    closes = (prev != 0) & ((pos == 0) | flip)
    # trip ids count from 1 in the order round trips open; 0 collects fills
    # that leave a flat position flat (none when every qty is > 0)
    trip = np.cumsum(opens)
    owner = np.where((prev == 0) & (pos == 0), 0, trip - flip)  # a flip's PnL closes the last
    before, after = np.abs(prev), np.abs(pos)
    fee = fills.fee[order].astype(np.float64)
    with np.errstate(invalid="ignore"):
        close_fee = np.where(flip, fee * before / (before + after), fee)
    bins = int(trip[-1]) + 1 if n else 1
    trip_fees = _sums(owner, close_fee, bins) + _sums(trip, fee - close_fee, bins)
    trip_pnl = _sums(owner, fills.realized_pnl[order], bins) - trip_fees
    opened_at = np.flatnonzero(opens)
    closed_at = np.flatnonzero(closes)
    closed_at = closed_at[np.argsort(order[closed_at])]  # back into booking order
    ids = owner[closed_at]
    first = opened_at[ids - 1]
    return RoundTrips(
        symbol=(sym[closed_at] // 3).astype(np.int64),
        open_ts=ts[first].astype(np.int64),
        close_ts=ts[closed_at].astype(np.int64),
        side=np.sign(pos[first]).astype(np.int8),
        pnl=trip_pnl[ids],
        fees=trip_fees[ids],
    )


def _sums(ids: IntArray, weights: FloatArray, bins: int) -> FloatArray:
    """Sum of ``weights`` per id in ``range(bins)``."""
    return np.bincount(ids, weights.astype(np.float64), bins).astype(np.float64, copy=False)


def _check_fills(fills: FillColumns) -> int:
    """The number of fills, once every column is 1-D and as long as ``symbol``."""
    n = len(fills.symbol)
    for name in FillColumns._fields:
        if getattr(fills, name) is None:
            continue
        shape = np.shape(getattr(fills, name))
        if shape != (n,):
            raise ValueError(
                f"fill column {name!r} has shape {shape}, expected ({n},) like 'symbol'"
            )
    return n


@dataclass(frozen=True, slots=True)
class Metrics:
    """Metrics of one run or one symbol; times are int64 ns, money in quote currency.

    Field conventions are in the module docstring; :meth:`as_dict` is JSON-ready.
    """

    initial: float
    final: float
    total_return: float
    annual_return: float
    periods_per_year: float
    volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    max_drawdown_peak: int | None
    max_drawdown_trough: int | None
    max_drawdown_recovery: int | None
    max_drawdown_duration_ns: int
    longest_drawdown_ns: int
    calmar: float
    fills: int
    trades: int
    win_rate: float
    profit_factor: float
    expectancy: float
    avg_win: float
    avg_loss: float
    exposure: float
    traded_notional: float
    turnover: float
    fees: float
    funding: float
    liquidations: int
    benchmark_return: float
    alpha: float
    beta: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN and infinities become None."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def compute_metrics(
    start_ns: int,
    ts: IntArray,
    equity: FloatArray,
    initial: float,
    *,
    step_ns: int,
    periods_per_year: float | None = None,
    trades: int = 0,
    fees: float = 0.0,
    fills: FillColumns | None = None,
    funding: float = 0.0,
    liquidations: int = 0,
    exposure: npt.NDArray[np.bool_] | FloatArray | None = None,
    benchmark: FloatArray | None = None,
    benchmark_start: float | None = None,
) -> Metrics:
    """Metrics of ``equity`` sampled at ``ts`` (one value per step of ``step_ns``).

    ``periods_per_year`` defaults to 24/7 years (``YEAR_NS / step_ns``); pass
    :func:`periods_per_year` for a trading calendar. ``fills`` gives the round
    trips, fill count and traded notional; ``trades`` is the fill count when
    they are not given. ``fees`` and ``funding`` (positive when paid) are the
    run's totals, already in ``equity``. ``exposure`` (held flag or fraction)
    and ``benchmark`` (e.g. the price, with ``benchmark_start`` its value at
    ``start_ns``) are per equity sample.
    """
    n = len(equity)
    for name, values in (("ts", ts), ("exposure", exposure), ("benchmark", benchmark)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} samples, equity {n}")
    if (benchmark is None) != (benchmark_start is None):
        raise ValueError("benchmark and benchmark_start go together")
    ppy = YEAR_NS / step_ns if periods_per_year is None else float(periods_per_year)
    if not (ppy > 0 and math.isfinite(ppy)):
        raise ValueError(f"periods_per_year must be positive and finite, got {ppy}")
    eq = np.concatenate(([initial], equity.astype(np.float64)))
    times = np.concatenate(([start_ns], ts.astype(np.int64)))
    final = float(eq[-1])
    r = _returns(eq)
    vol, sharpe, sortino = _risk(r[np.isfinite(r)], ppy)
    annual = _annual_return(initial, final, ppy, n)
    dd = _drawdown(times, eq)
    fill_count, trade_count, pnl, notional = _fill_stats(fills, trades)
    win_rate, profit_factor, expectancy, avg_win, avg_loss = _trade_stats(pnl)
    bench_return, alpha, beta = _benchmark_stats(r, benchmark, benchmark_start, ppy)
    mean_equity = _mean(equity)
    return Metrics(
        initial=float(initial),
        final=final,
        total_return=final / initial - 1.0 if initial > 0 else math.nan,
        annual_return=annual,
        periods_per_year=ppy,
        volatility=vol,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=dd.depth,
        max_drawdown_peak=dd.peak,
        max_drawdown_trough=dd.trough,
        max_drawdown_recovery=dd.recovery,
        max_drawdown_duration_ns=dd.duration,
        longest_drawdown_ns=dd.longest,
        calmar=annual / dd.depth if dd.depth > 0 and not math.isnan(annual) else math.nan,
        fills=fill_count,
        trades=trade_count,
        win_rate=win_rate,
        profit_factor=profit_factor,
        expectancy=expectancy,
        avg_win=avg_win,
        avg_loss=avg_loss,
        exposure=math.nan if exposure is None else _mean(exposure),
        traded_notional=notional,
        turnover=notional / mean_equity if mean_equity > 0 else math.nan,
        fees=float(fees),
        funding=float(funding),
        liquidations=int(liquidations),
        benchmark_return=bench_return,
        alpha=alpha,
        beta=beta,
    )


def _mean(values: npt.NDArray[np.bool_] | FloatArray) -> float:
    """The mean as a float, NaN for no values."""
    return float(np.mean(values, dtype=np.float64)) if len(values) else math.nan


def _returns(values: FloatArray) -> FloatArray:
    """Simple returns between consecutive values (inf or NaN after a zero)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = values[1:] / values[:-1] - 1.0
    return out


def _risk(r: FloatArray, ppy: float) -> tuple[float, float, float]:
    """Annualised volatility, Sharpe and Sortino of finite returns ``r``."""
    vol = sharpe = sortino = math.nan
    if len(r) >= 2:
        sd = float(np.std(r, ddof=1))
        mean = float(np.mean(r))
        vol = sd * math.sqrt(ppy)
        if sd > 0:
            sharpe = mean / sd * math.sqrt(ppy)
        down = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
        if down > 0:
            sortino = mean / down * math.sqrt(ppy)
    return vol, sharpe, sortino


def _annual_return(initial: float, final: float, ppy: float, samples: int) -> float:
    if samples == 0:
        return 0.0
    if initial <= 0:
        return math.nan
    if final <= 0:
        return -1.0
    try:
        return float((final / initial) ** (ppy / samples) - 1.0)
    except OverflowError:  # a short, strong run compounds past float range
        return math.inf


class _Drawdown(NamedTuple):
    depth: float
    peak: int | None
    trough: int | None
    recovery: int | None
    duration: int
    longest: int


def _drawdown(times: IntArray, eq: FloatArray) -> _Drawdown:
    """The deepest drawdown of ``eq`` (whose first value is the initial capital) and the longest."""
    peak = np.maximum.accumulate(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - eq / peak, 0.0)
    # episodes below the running peak: eq[0] is its own peak, so each episode
    # starts after a sample at its peak and ends at the first sample back at
    # or above it (index len(eq) when it never gets back)
    edges = np.diff(np.concatenate((eq < peak, [False])).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) + 1
    last = len(eq) - 1
    spans = times[np.minimum(ends, last)] - times[starts]
    longest = int(np.max(spans)) if len(spans) else 0
    trough = int(np.argmax(dd))
    depth = float(dd[trough])
    if depth <= 0:
        return _Drawdown(0.0, None, None, None, 0, longest)
    k = int(np.searchsorted(starts, trough)) - 1  # the episode holding the trough
    recovery = int(times[ends[k]]) if ends[k] <= last else None
    return _Drawdown(
        depth, int(times[starts[k]]), int(times[trough]), recovery, int(spans[k]), longest
    )


def _fill_stats(fills: FillColumns | None, trades: int) -> tuple[int, int, FloatArray, float]:
    """Fill count, closed round trips, their PnL and the traded notional."""
    if fills is None:
        return int(trades), int(trades), np.zeros(0), math.nan
    n = _check_fills(fills)
    if trades not in (0, n):
        raise ValueError(f"trades={trades} (the fill count) disagrees with the {n} fills given")
    pnl = round_trips(fills).pnl
    notional = float(np.sum(np.abs(fills.qty * fills.price)))
    return n, len(pnl), pnl, notional


def _trade_stats(pnl: FloatArray) -> tuple[float, float, float, float, float]:
    """Win rate, profit factor, expectancy, average win and average loss of round-trip PnL."""
    nan = math.nan
    if len(pnl) == 0:
        return nan, nan, nan, nan, nan
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    gross_win, gross_loss = float(np.sum(wins)), -float(np.sum(losses))
    # without a losing trade: infinite if anything was won, 0 / 0 otherwise
    no_loss = math.inf if gross_win > 0 else nan
    profit_factor = gross_win / gross_loss if gross_loss > 0 else no_loss
    return (
        len(wins) / len(pnl),
        profit_factor,
        float(np.mean(pnl)),
        float(np.mean(wins)) if len(wins) else nan,
        float(np.mean(losses)) if len(losses) else nan,
    )


def _benchmark_stats(
    r: FloatArray, benchmark: FloatArray | None, start: float | None, ppy: float
) -> tuple[float, float, float]:
    """The benchmark's total return, and alpha and beta against it; NaN without one."""
    if benchmark is None or start is None:
        return math.nan, math.nan, math.nan
    b = np.concatenate(([start], benchmark.astype(np.float64)))
    with np.errstate(divide="ignore", invalid="ignore"):
        total = float(b[-1] / b[0] - 1.0)
    return (total, *_alpha_beta(r, _returns(b), ppy))


def _alpha_beta(r: FloatArray, rb: FloatArray, ppy: float) -> tuple[float, float]:
    """Annualised alpha and beta of returns ``r`` against ``rb``, over steps where both are finite."""
    both = np.isfinite(r) & np.isfinite(rb)
    y, x = r[both], rb[both]
    if len(x) < 2:
        return math.nan, math.nan
    var = float(np.var(x, ddof=1))
    if not var > 0:
        return math.nan, math.nan
    cov = float(np.sum((x - np.mean(x)) * (y - np.mean(y)))) / (len(x) - 1)
    beta = cov / var
    return (float(np.mean(y)) - beta * float(np.mean(x))) * ppy, beta
