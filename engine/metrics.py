"""Performance metrics of an equity curve sampled at step boundaries.

Conventions (stated because every tool differs a little):

* Returns are simple per-step returns; the first step's return is measured
  from the initial capital at the run's start.
* Annualisation uses 365-day years (crypto trades 24/7): ``periods_per_year``
  is ``365 days / step length``. Volatility is the sample standard deviation
  (ddof=1) times ``sqrt(periods_per_year)``.
* Sharpe is ``mean / std * sqrt(periods_per_year)`` with a zero risk-free rate;
  Sortino divides by the downside deviation ``sqrt(mean(min(r, 0)^2))``.
* The annualised return is compounded: ``(final / initial) ** (year / elapsed) - 1``.
* Max drawdown is the largest fall from a running peak, as a positive
  fraction, with the peak, trough and recovery times (recovery is ``None``
  when equity never regained the peak). Calmar is annual return / max drawdown.
* Undefined ratios (no variance, no drawdown) are NaN, and an annualised
  return beyond float range is infinite; both are written as JSON null.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tickray.engine.clock import YEAR_NS


@dataclass(frozen=True, slots=True)
class Metrics:
    initial: float
    final: float
    total_return: float
    annual_return: float
    volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    max_drawdown_peak: int | None
    max_drawdown_trough: int | None
    max_drawdown_recovery: int | None
    calmar: float
    trades: int
    fees: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN and infinities become None."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def compute_metrics(
    start_ns: int,
    ts: npt.NDArray[np.int64],
    equity: npt.NDArray[np.float64],
    initial: float,
    *,
    step_ns: int,
    trades: int = 0,
    fees: float = 0.0,
) -> Metrics:
    """Metrics of ``equity`` sampled at ``ts`` (one value per step of ``step_ns``)."""
    nan = math.nan
    if len(ts) == 0:
        return Metrics(
            initial, initial, 0.0, 0.0, nan, nan, nan, 0.0, None, None, None, nan, trades, fees
        )
    eq = np.concatenate(([initial], equity.astype(np.float64)))
    times = np.concatenate(([start_ns], ts.astype(np.int64)))
    final = float(eq[-1])
    total = final / initial - 1.0
    elapsed = int(times[-1] - times[0])
    if final <= 0:
        annual = -1.0
    elif elapsed > 0:
        try:
            annual = (final / initial) ** (YEAR_NS / elapsed) - 1.0
        except OverflowError:  # a short, strong run compounds past float range
            annual = math.inf
    else:
        annual = nan
    ppy = YEAR_NS / step_ns
    with np.errstate(divide="ignore", invalid="ignore"):
        r = eq[1:] / eq[:-1] - 1.0
    r = r[np.isfinite(r)]
    vol = sharpe = sortino = nan
    if len(r) >= 2:
        sd = float(np.std(r, ddof=1))
        mean = float(np.mean(r))
        vol = sd * math.sqrt(ppy)
        if sd > 0:
            sharpe = mean / sd * math.sqrt(ppy)
        down = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
        if down > 0:
            sortino = mean / down * math.sqrt(ppy)
    peak = np.maximum.accumulate(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - eq / peak, 0.0)
    trough = int(np.argmax(dd))
    mdd = float(dd[trough])
    peak_t = trough_t = recovery_t = None
    if mdd > 0:
        peak_i = int(np.flatnonzero(eq[: trough + 1] == peak[trough])[-1])
        after = np.flatnonzero(eq[trough:] >= peak[trough])
        peak_t, trough_t = int(times[peak_i]), int(times[trough])
        recovery_t = int(times[trough + after[0]]) if len(after) else None
    calmar = annual / mdd if mdd > 0 and not math.isnan(annual) else nan
    return Metrics(
        initial,
        final,
        total,
        annual,
        vol,
        sharpe,
        sortino,
        mdd,
        peak_t,
        trough_t,
        recovery_t,
        calmar,
        trades,
        fees,
    )
