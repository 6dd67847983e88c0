"""Built-in event strategies: signals with entries, take-profits, stops and trailing stops.

Each works bar by bar through :class:`~tickray.engine.signals.SignalStrategy`
callbacks with incremental indicators, so the same code runs in replay and
live. Their exits are real orders at the venue: a take-profit limit and a
stop (or trailing stop) placed once the entry fills, filled inside a later
bar when its path reaches them.
"""

from __future__ import annotations

import math
from typing import Any

from tickray.engine.indicators import ATR, SMA, Donchian
from tickray.engine.orders import Trail, TrailUnit
from tickray.engine.signals import (
    Bar,
    Context,
    Entry,
    Signal,
    SignalStrategy,
    buy,
    sell,
)
from tickray.engine.strategies import ParamError


class EnhancedMomentumStrategy(SignalStrategy):
    """EnhancedMomentum (REPORT.md section 8 A), its exits as bracket orders at the venue.

    At each bar's close, with ``momentum = (SMA(fast) - SMA(slow)) / SMA(slow)``
    and Wilder's ATR over ``atr_window`` bars: momentum above ``threshold``
    goes long at market, below ``-threshold`` short, unless the strategy
    already holds (or is entering) that side; the opposite signal reverses.
    With the entry go a take-profit limit at ``close + 2 x ATR x
    risk_factor`` and a stop-loss at ``close - ATR x risk_factor`` (a short
    mirrored), one cancelling the other, working from the entry's fill; once
    one fills the strategy is flat and enters again on the next signal.
    Confidence, the share of the allocation taken, is ``min(1, |momentum| /
    (confidence_scale x threshold))``: with the default scale 1 every entry is
    whole, as in the report (``min(momentum x 50, 1)`` with the 2% threshold).
    The report's ``meta`` (ATR, momentum, the averages) rides along. Needs
    ``slow + atr_window`` bars, as the report does.
    """

    name = "enhanced_momentum"
    params = {
        "fast": (int, 10, 1),
        "slow": (int, 30, 2),
        "threshold": (float, 0.02, 0.0),
        "atr_window": (int, 14, 1),
        "risk_factor": (float, 2.0, 0.0),
        "confidence_scale": (float, 1.0, 1.0),
    }
    fast: int
    slow: int
    threshold: float
    atr_window: int
    risk_factor: float
    confidence_scale: float

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.fast >= self.slow:
            raise ParamError(
                f"strategy.params.fast: must be smaller than slow ({self.slow}), got {self.fast}"
            )
        self._fast = SMA(self.fast)
        self._slow = SMA(self.slow)
        self._atr = ATR(self.atr_window)
        self._side = 0

    @property
    def warmup(self) -> int:
        return self.slow + self.atr_window

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        f = self._fast.update(bar.close)
        s = self._slow.update(bar.close)
        atr = self._atr.update(bar.high, bar.low, bar.close)
        if math.isnan(s) or math.isnan(atr) or ctx.bars < self.warmup:
            return None
        if ctx.position == 0 and not ctx.working:
            self._side = 0  # an exit closed the last position
        mom = (f - s) / s
        trend = 1 if mom > self.threshold else -1 if mom < -self.threshold else 0
        if trend == 0 or trend == self._side:
            return None
        self._side = trend
        risk = atr * self.risk_factor
        scale = self.confidence_scale * self.threshold
        conf = min(1.0, abs(mom) / scale) if scale > 0 else 1.0
        meta = {"atr": atr, "momentum": mom, "fast_ma": f, "slow_ma": s}
        make = buy if trend > 0 else sell
        sl = bar.close - trend * risk
        if risk <= 0 or sl <= 0:
            return make(confidence=conf, meta=meta)
        return make(
            take_profit=bar.close + trend * 2 * risk,
            stop_loss=sl,
            confidence=conf,
            meta=meta,
        )


class BreakoutTrailStrategy(SignalStrategy):
    """Donchian breakout entered with stop orders, managed by an ATR trailing stop.

    At each close it places a buy stop one tick above the highest high of the
    last ``window`` bars (long) when flat and the close is above SMA(``trend``),
    or a sell stop one tick below the lowest low when below it; the order
    waits at the venue and fills inside a later bar that trades through it.
    Once filled, a trailing stop ``atr_mult`` x ATR(``atr_window``) behind
    the best price since the fill protects it, with a take-profit limit at
    ``target`` x ATR from the entry level. Nothing new is placed while a
    position or its exits are working. Needs ``max(window, trend, atr_window)``
    bars.
    """

    name = "breakout_trail"
    params = {
        "window": (int, 20, 2),
        "trend": (int, 50, 2),
        "atr_window": (int, 14, 1),
        "atr_mult": (float, 3.0, 0.0),
        "target": (float, 6.0, 0.0),
    }
    window: int
    trend: int
    atr_window: int
    atr_mult: float
    target: float

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.atr_mult <= 0 or self.target <= 0:
            raise ParamError("strategy.params.atr_mult and target: must be > 0")
        self._channel = Donchian(self.window)
        self._sma = SMA(self.trend)
        self._atr = ATR(self.atr_window)

    @property
    def warmup(self) -> int:
        return max(self.window, self.trend, self.atr_window)

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        upper, lower, _ = self._channel.update(bar.high, bar.low)
        avg = self._sma.update(bar.close)
        atr = self._atr.update(bar.high, bar.low, bar.close)
        if math.isnan(upper) or math.isnan(avg) or math.isnan(atr) or atr <= 0:
            return None
        if ctx.position != 0:
            return None  # the trailing stop and the target manage it
        tick = ctx.spec.tick_size
        trail = Trail(self.atr_mult * atr, TrailUnit.PRICE)
        if bar.close > avg:
            level = ctx.spec.round_price(upper + tick)
            return buy(
                entry=Entry.STOP, price=level, trail=trail, take_profit=level + self.target * atr
            )
        if bar.close < avg:
            level = ctx.spec.round_price(lower - tick)
            tp = level - self.target * atr
            if tp <= 0:
                return sell(entry=Entry.STOP, price=level, trail=trail)
            return sell(entry=Entry.STOP, price=level, trail=trail, take_profit=tp)
        return None


EVENT_STRATEGIES: dict[str, type[SignalStrategy]] = {
    EnhancedMomentumStrategy.name: EnhancedMomentumStrategy,
    BreakoutTrailStrategy.name: BreakoutTrailStrategy,
}
