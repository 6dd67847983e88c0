"""The portfolio's risk rules in one hook: pre-trade limits and the risk monitor.

:class:`PortfolioRisk` plugs into :class:`~tickray.engine.portfolio.Portfolio`
(its ``risk`` hook). At each settlement it sees every step boundary since the
last one (equity, cash, marks) and keeps:

* a window of each symbol's simple returns from boundary to boundary (marks
  carried over boundaries without one), read by the correlation and VaR
  limits (:func:`~tickray.risk.limits.check_limits`);
* the risk monitor (:class:`~tickray.risk.monitor.Monitor`): drawdown
  scaling and halt, daily loss limit, kill switch.

Each intent the account check approved then passes the limits (the opening
part only), and the monitor's scale: the opening part is multiplied by it and
floored to the lot, or refused while halted. The account check runs again
for the smaller quantity, so what is reserved matches what is approved.
Reasons are joined with ``"; "`` and recorded with the decision.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tickray.engine.approval import CashCheck
from tickray.engine.config import RunConfig
from tickray.engine.events import Control, ControlKind, OrderIntent, RiskAction
from tickray.engine.portfolio import Portfolio
from tickray.engine.riskconfig import MonitorConfig, RiskLimits, SizingConfig
from tickray.risk.limits import check_limits
from tickray.risk.monitor import DAY_NS, Monitor
from tickray.risk.sizing import inverse_vol_weights

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class PortfolioRisk:
    """Limits and monitor of one run (see the module doc)."""

    def __init__(
        self,
        symbols: list[str],
        limits: RiskLimits,
        monitor: MonitorConfig,
        sizing: SizingConfig | None = None,
        leverage: list[float] | None = None,
    ) -> None:
        limits.check_universe(symbols)
        self.symbols = symbols
        self.limits = limits
        self.monitor = Monitor(monitor)
        self.sizing = sizing
        self.weighted = sizing is not None and sizing.method in ("inverse_vol", "risk_parity")
        self.leverage = leverage or [1.0] * len(symbols)
        self.window = limits.returns_window
        if self.weighted:
            assert sizing is not None
            self.window = max(self.window, sizing.vol_window)
        n = len(symbols)
        self._returns = np.full((max(self.window, 1), n), np.nan)
        self._filled = 0
        self._last = np.full(n, np.nan)
        self._step = -1
        self._per_step = np.zeros(n, dtype=np.int64)
        self._day = -1
        self._per_day = np.zeros(n, dtype=np.int64)

    # -- the hook --------------------------------------------------------------------------
    def observe(self, pf: Portfolio, mark_ts: I64, equity: F64, cash: F64, marks: F64) -> None:
        if self.monitor.config.active:
            for ts, eq in zip(mark_ts.tolist(), equity.tolist(), strict=True):
                self.monitor.observe(ts, eq)
        if self.window:
            for row in marks:
                now = np.where(np.isnan(row), self._last, row)
                with np.errstate(invalid="ignore", divide="ignore"):
                    ret = now / self._last - 1.0
                # a ring buffer: row ``filled % window`` is the oldest once it is full
                self._returns[self._filled % len(self._returns)] = ret
                self._filled += 1
                self._last = now

    def review(
        self,
        pf: Portfolio,
        t: int,
        it: OrderIntent,
        chk: CashCheck,
        price: float,
        projected: float,
        check: Callable[[float], CashCheck],
    ) -> CashCheck:
        i = pf.index[it.symbol]
        if t != self._step:
            self._step = t
            self._per_step[:] = 0
        day = (t - 1) // DAY_NS
        if day != self._day:
            self._day = day
            self._per_day[:] = 0
        spec = pf.specs[i]
        sign = int(it.side)
        closing = min(chk.qty, abs(projected)) if projected * sign < 0 else 0.0
        qty, reasons = chk.qty, [chk.reason] if chk.reason else []
        if self.limits.enabled:
            positions = pf.pos + pf.pending_pos
            prices = np.nan_to_num(pf.mark, nan=price)
            returns = None
            if self.window and self._filled >= self.window:
                returns = self._window()
            lim = check_limits(
                self.limits,
                spec=spec,
                symbol=it.symbol,
                side=it.side,
                qty=qty,
                price=price,
                positions=positions,
                prices=prices,
                equity=pf.equity_now(),
                symbols=self.symbols,
                returns=returns,
                orders_this_step=int(self._per_step[i]),
                orders_today=int(self._per_day[i]),
            )
            if lim.reason:
                reasons.append(lim.reason)
            qty = lim.qty if lim.action != RiskAction.REJECT else closing
        if self.weighted and qty > closing:
            qty, why = self._weight_cut(pf, i, it, qty, closing, price, projected)
            if why:
                reasons.append(why)
        verdict = self.monitor.verdict()
        if verdict.scale < 1.0:
            opening = spec.round_qty(qty - closing)
            if opening > 0:
                kept = spec.floor_qty(opening * verdict.scale)
                if kept > 0 and not spec.tradable(kept, price):
                    kept = 0.0
                if kept < opening:
                    qty = spec.round_qty(closing + kept)
                    reasons.append(verdict.reason)
        reason = "; ".join(reasons)
        if qty <= 0:
            return CashCheck(RiskAction.REJECT, 0.0, reason, 0.0)
        self._per_step[i] += 1
        self._per_day[i] += 1
        if qty >= chk.qty:
            return chk
        again = check(qty)
        action = RiskAction.RESIZE if again.qty < it.qty else again.action
        return CashCheck(action, again.qty, reason, again.cash_estimate)

    def _window(self) -> F64:
        """The returns window, oldest row first (read at decisions, not per boundary)."""
        out: F64 = np.roll(self._returns, -(self._filled % len(self._returns)), axis=0)
        return out

    def _weight_cut(
        self,
        pf: Portfolio,
        i: int,
        it: OrderIntent,
        qty: float,
        closing: float,
        price: float,
        projected: float,
    ) -> tuple[float, str]:
        """Inverse-volatility sizing: the position may hold at most its weight of the
        capital, ``w_i x equity x fraction x leverage``, with weights ``1 / vol``
        over the last ``vol_window`` boundaries (equal until that much history)."""
        sizing = self.sizing
        assert sizing is not None
        n = len(self.symbols)
        weights = np.full(n, 1.0 / n)
        if self._filled >= sizing.vol_window:
            rets = self._window()[-sizing.vol_window :]
            with np.errstate(invalid="ignore"):
                vols = np.nanstd(np.log1p(rets), axis=0, ddof=1)
            weights = inverse_vol_weights(vols)
        cap = float(weights[i]) * pf.equity_now() * sizing.fraction * self.leverage[i] / price
        spec = pf.specs[i]
        # the opening part builds on the position held in its direction (none after a flip)
        base = 0.0 if projected * int(it.side) < 0 else abs(projected)
        room = spec.floor_qty(max(cap - base, 0.0))
        opening = spec.round_qty(qty - closing)
        if room >= opening:
            return qty, ""
        why = f"inverse-volatility weight {weights[i]:.1%}: {room} of {opening} fit"
        return spec.round_qty(closing + room), why

    def controls(self, pf: Portfolio, t: int) -> list[Control]:
        """The kill switch's FLATTEN, once, to every symbol."""
        v = self.monitor
        if not v.killed or getattr(self, "_flattened", False):
            return []
        self._flattened = True
        why = v.verdict().reason
        return [Control(ControlKind.FLATTEN, t, s, why) for s in self.symbols]


def risk_events(pf: Portfolio) -> list[tuple[int, str, float]]:
    """The risk monitor's state changes over the run: (time, kind, value)."""
    hook = pf.risk
    if not isinstance(hook, PortfolioRisk):
        return []
    return [(e.ts, e.kind, e.value) for e in hook.monitor.events]


def attach_risk(pf: Portfolio, config: RunConfig) -> None:
    """Give ``pf`` the run's risk rules when any is on."""
    sizing = config.sizing
    weighted = sizing.method in ("inverse_vol", "risk_parity")
    if config.risk.enabled or config.monitor.active or weighted:
        lev = [config.perp.leverage_for(s) if config.perp else 1.0 for s in config.symbols]
        pf.risk = PortfolioRisk(list(pf.symbols), config.risk, config.monitor, sizing, lev)
