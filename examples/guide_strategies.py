"""Writing strategies (docs/strategies.md): a bar strategy, an event strategy, a module
file, and what happens when a strategy raises.

Run: ``python examples/guide_strategies.py`` (a few seconds, in-process backend).
``TICKRAY_EXAMPLE_FAST=1`` replays one day instead of three; results go to
``$TICKRAY_EXAMPLE_OUT`` or a new temporary folder.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import tickray
from tickray import BarStrategy, SignalStrategy, register_strategy
from tickray.engine.events import Fill
from tickray.engine.indicators import ATR, SMA, ZScore
from tickray.engine.signals import Bar, Context, Entry, Signal, StrategyError, buy, flat
from tickray.engine.spec import SpecError
from tickray.engine.strategies import HOLD

FAST = os.environ.get("TICKRAY_EXAMPLE_FAST") == "1"
OUT = Path(os.environ.get("TICKRAY_EXAMPLE_OUT") or tempfile.mkdtemp(prefix="tickray-strategies-"))

SPEC: dict[str, Any] = {
    "data": {
        "source": "demo",
        "start": "2024-01-01",
        "end": "2024-01-02" if FAST else "2024-01-04",
    },
    "universe": {"symbols": ["SYN00USDT", "SYN01USDT", "SYN02USDT"]},
    "run": {"backend": "local"},
}


# -- a bar strategy: vectorised, with state carried across batches ----------------------------
@register_strategy
class ZRevert(BarStrategy):
    """Short above ``+entry`` z-scores of the close over ``window`` bars, long below
    ``-entry``, flat once the z-score is back inside ``+-exit``; else keep the target."""

    name = "z_revert"
    params = {
        "window": (int, 120, 2),  # (type, default, minimum)
        "entry": (float, 2.0, 0.0),
        "exit": (float, 0.5, 0.0),
    }
    window: int
    entry: float
    exit: float

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # validates the parameters, sets self.window, ...
        self._z = ZScore(self.window)

    @property
    def warmup(self) -> int:
        return self.window  # ZScore's first value comes with the window-th close

    def raw_one(self, close: float) -> int:
        z = self._z.update(close)
        if math.isnan(z):
            return HOLD
        if z > self.entry:
            return -1
        if z < -self.entry:
            return 1
        return 0 if abs(z) < self.exit else HOLD

    def raw_batch(self, close: npt.NDArray[np.float64]) -> npt.NDArray[np.int8]:
        z = self._z.update_batch(close)  # the same numbers update() gives, one by one
        out = np.full(len(z), HOLD, dtype=np.int8)
        out[np.abs(z) < self.exit] = 0
        out[z > self.entry] = -1
        out[z < -self.entry] = 1
        return out  # NaN (warm-up) compares false everywhere: HOLD


def check_batches_equal_bars(cls: type[BarStrategy], bars: int = 3000) -> None:
    """The requirement every bar strategy meets: batches of any size give what the
    strategy gives bar by bar (the engine feeds batches; a live feed feeds bars)."""
    close = 100.0 * np.exp(np.cumsum(np.random.default_rng(3).normal(0.0, 0.003, bars)))
    one, many = cls(), cls()
    by_bar = np.array([one.on_bar(float(c)) for c in close], dtype=np.int8)
    batched = np.concatenate([many.targets(c) for c in np.array_split(close, 17)])
    assert np.array_equal(by_bar, batched), f"{cls.name}: raw_batch and raw_one disagree"
    print(f"{cls.name}: {bars} bars in 17 batches give the bar-by-bar targets")


check_batches_equal_bars(ZRevert)


# -- an event strategy: callbacks that return signals ------------------------------------------
@register_strategy
class Pullback(SignalStrategy):
    """In an uptrend (close above SMA(``trend``)), bid a limit ``pull`` ATRs below the
    close; once it fills, a take-profit ``2 x pull`` ATRs above the entry level and a
    stop-loss ``pull`` ATRs below it work at the venue, one cancelling the other. A
    position still open ``max_hold`` bars after its entry filled is closed at market."""

    name = "pullback"
    params = {
        "trend": (int, 240, 2),
        "atr_window": (int, 14, 1),
        "pull": (float, 1.0, 0.0),
        "max_hold": (int, 120, 1),
    }
    trend: int
    atr_window: int
    pull: float
    max_hold: int

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sma = SMA(self.trend)
        self._atr = ATR(self.atr_window)
        self.filled_at = 0  # ctx.bars when the entry filled

    @property
    def warmup(self) -> int:
        return max(self.trend, self.atr_window + 1)

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        avg = self._sma.update(bar.close)  # indicators see every bar, also while holding
        atr = self._atr.update(bar.high, bar.low, bar.close)
        if math.isnan(avg) or math.isnan(atr) or atr <= 0:
            return None
        if ctx.position != 0:
            return flat() if ctx.bars - self.filled_at >= self.max_hold else None
        if ctx.working or bar.close <= avg:
            return None  # an entry on its way, or no uptrend
        level = ctx.spec.round_price(bar.close - self.pull * atr)  # on the tick grid
        return buy(
            entry=Entry.LIMIT,
            price=level,
            take_profit=level + 2 * self.pull * atr,
            stop_loss=level - self.pull * atr,
            meta={"atr": atr},
        )

    def on_fill(self, fill: Fill, ctx: Context) -> Signal | None:
        if ctx.position != 0:  # the entry filled (ctx.position includes this fill)
            self.filled_at = ctx.bars
        return None


for cls, params in ((ZRevert, {"window": 60}), (Pullback, {"pull": 1.5})):
    res = tickray.run(SPEC, strategy=cls, params=params, out=OUT / cls.name, progress=False)
    print(f"\n{cls.name} {params}: {res}")
    print(res.summary().to_string(float_format=lambda x: f"{x:.4f}"))
    fills = res.fills()
    counts = {str(k): int(v) for k, v in fills.liquidity.value_counts().items()}
    print(f"fills by liquidity: {counts}")

# -- a module file: what `strategy.modules` and `--strategy-module` load ----------------------
module = Path(__file__).with_name("my_strategies.py")
spec = SPEC | {"strategy": {"name": "rsi_revert", "modules": [str(module)], "params": {"low": 25}}}
res = tickray.run(spec, out=OUT / "rsi_revert", progress=False)
print(f"\nrsi_revert from {module.name}: {res}")
print("  recorded module:", res.run_info["config"]["strategy"]["modules"][0]["name"])

# -- bad parameters are refused before anything runs ------------------------------------------
try:
    tickray.run(SPEC, strategy="z_revert", params={"window": 1}, out=OUT / "bad")
except SpecError as err:
    print(f"\nrefused: {err}")


# -- a strategy that raises: StrategyError, and the steps before it are kept ------------------
@register_strategy
class Fragile(SignalStrategy):
    name = "fragile"
    params = {"at": (int, 300, 1)}
    at: int

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        if ctx.bars == self.at and ctx.symbol == "SYN01USDT":
            raise ZeroDivisionError("a bug at this bar")
        return buy() if ctx.bars % 100 == 0 and ctx.position == 0 else None


try:
    tickray.run(SPEC, strategy=Fragile, out=OUT / "fragile", progress=False)
except StrategyError as err:
    print(f"\nStrategyError: {str(err).splitlines()[0]}")
    partial = OUT / "fragile.partial"
    print(f"  kept in {partial.name}: {', '.join(sorted(p.name for p in partial.iterdir()))}")
print(f"\nresults in {OUT}")
