"""A strategy module of your own: two strategies that specs and the CLI can name.

Nothing here is imported by tickray itself. Name the file in a spec
(``strategy.modules = ["examples/my_strategies.py"]``) or on the command line::

    tickray backtest --demo --backend local --strategy-module examples/my_strategies.py \\
        --strategy rsi_revert --param window=14

tickray imports the file under its stem (``my_strategies``) before it looks up
the strategy's name; on Ray the file reaches every worker through the runtime
environment. See docs/strategies.md.

Run as a script, it checks that ``rsi_revert``'s vectorised code gives what
its bar-by-bar code gives, which every bar strategy must::

    python examples/my_strategies.py
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tickray import BarStrategy, SignalStrategy, register_strategy
from tickray.engine.indicators import RSI
from tickray.engine.signals import Bar, Context, Signal, buy, flat
from tickray.engine.strategies import HOLD


@register_strategy
class RsiRevert(BarStrategy):
    """Long while Wilder's RSI is below ``low``, short while above ``100 - low``;
    between them the previous target is kept (``HOLD``)."""

    name = "rsi_revert"
    params = {"window": (int, 14, 2), "low": (float, 30.0, 0.0)}
    window: int
    low: float

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # checks the parameters and sets self.window, self.low
        self._rsi = RSI(self.window)

    @property
    def warmup(self) -> int:
        return self.window + 1  # RSI's own warm-up: the first value needs window + 1 closes

    def raw_one(self, close: float) -> int:
        r = self._rsi.update(close)
        if r != r:  # NaN during the warm-up
            return HOLD
        return 1 if r < self.low else -1 if r > 100.0 - self.low else HOLD

    def raw_batch(self, close: npt.NDArray[np.float64]) -> npt.NDArray[np.int8]:
        r = self._rsi.update_batch(close)  # NaN compares false: HOLD during the warm-up
        out = np.where(r < self.low, 1, np.where(r > 100.0 - self.low, -1, HOLD))
        return out.astype(np.int8)


@register_strategy
class GapFade(SignalStrategy):
    """Buys at market after a bar closes more than ``drop`` (a fraction) below its
    open, with a take-profit at that bar's open and a stop-loss ``2 x drop`` below
    its close; goes flat after ``hold`` bars if neither exit has filled."""

    name = "gap_fade"
    params = {"drop": (float, 0.004, 0.0), "hold": (int, 30, 1)}
    drop: float
    hold: int

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entered_at = -1  # ctx.bars when the last entry was signalled

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        if ctx.position == 0 and not ctx.working:
            if bar.close < bar.open * (1.0 - self.drop):
                self.entered_at = ctx.bars
                return buy(
                    take_profit=bar.open,
                    stop_loss=bar.close * (1.0 - 2.0 * self.drop),
                    meta={"gap": bar.close / bar.open - 1.0},
                )
            return None
        if ctx.position > 0 and ctx.bars - self.entered_at >= self.hold:
            return flat()
        return None


def _check_rsi_revert(bars: int = 5_000, seed: int = 1) -> None:
    """Feed the same closes bar by bar and in uneven batches: the targets must agree."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, bars)))
    one = RsiRevert(window=14)
    by_bar = np.array([one.on_bar(float(c)) for c in close], dtype=np.int8)
    batched = RsiRevert(window=14)
    cuts = np.sort(rng.choice(np.arange(1, bars), size=40, replace=False))
    parts = [batched.targets(chunk) for chunk in np.split(close, cuts)]
    assert np.array_equal(by_bar, np.concatenate(parts)), "raw_batch and raw_one disagree"
    longs, shorts = int((by_bar == 1).sum()), int((by_bar == -1).sum())
    print(f"rsi_revert: {bars} bars, {len(cuts) + 1} batches, targets equal bar by bar")
    print(f"  long after {longs} bars, short after {shorts}, flat after {bars - longs - shorts}")


if __name__ == "__main__":
    _check_rsi_revert()
