"""Bar strategies: a small base class, the built-in strategies and their registry.

A bar strategy turns each closed bar into a *target direction*: +1 (long),
-1 (short) or 0 (flat). The symbol simulation compares each bar's target with
the previous one and, on a change, sizes an order intent towards the new
target; the intent reaches the portfolio at the step's end, and an approved
market order fills at the open of the first bar after that.

Strategies see a bar only once it has closed, and only the bars before it:
``on_bar`` gets one bar; ``targets`` gets a batch and must give exactly what
calling ``on_bar`` bar by bar would (indicators carry their state across
batches). Nothing is emitted before ``warmup`` bars have been seen.

In hedge position mode (perpetual futures) a strategy decides its long and
its short position separately: :meth:`BarStrategy.leg_targets` gives, after
each bar, whether each should be open (1) or closed (0). A net strategy's
legs follow its target (+1: long open, -1: short open); a
:class:`LegStrategy` may hold both at once.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tickray.engine.indicators import SMA, Lag

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]

HOLD = 2
"""Raw signal value meaning 'keep the previous target'."""


class ParamError(ValueError):
    """A strategy name or parameter is unknown or invalid."""


class BarStrategy(ABC):
    """Base class of strategies that decide on closed bars.

    Subclasses declare ``name`` and ``params`` (parameter name -> (type,
    default, minimum)), implement :meth:`raw_batch` (vectorised, with carried
    state) and :meth:`raw_one` (one bar), returning +1, -1, 0 or ``HOLD``.
    """

    name: ClassVar[str]
    params: ClassVar[dict[str, tuple[type, float | int, float | int]]]
    leg_fraction: ClassVar[float] = 1.0
    """Hedge mode: the share of the symbol's allocation each open position gets."""

    def __init__(self, **kwargs: Any) -> None:
        values = validate_params(self.name, self.params, kwargs)
        for key, value in values.items():
            setattr(self, key, value)
        self._seen = 0
        self._target = 0

    @property
    @abstractmethod
    def warmup(self) -> int:
        """Bars needed before the first signal."""

    @abstractmethod
    def raw_one(self, close: float) -> int:
        """Signal for one closed bar: +1, -1, 0 or ``HOLD``."""

    @abstractmethod
    def raw_batch(self, close: F64) -> I8:
        """Signals for a batch of closed bars, exactly as ``raw_one`` would give."""

    def on_bar(self, close: float) -> int:
        """Feed one closed bar; returns the target direction after it."""
        raw = self.raw_one(close)
        self._seen += 1
        if self._seen >= self.warmup and raw != HOLD:
            self._target = raw
        return self._target

    def targets(self, close: F64) -> I8:
        """Feed a batch of closed bars; returns the target direction after each."""
        n = len(close)
        raw = self.raw_batch(close)
        seen = self._seen + np.arange(1, n + 1)
        raw = np.where(seen >= self.warmup, raw, HOLD).astype(np.int8)
        # Forward-fill HOLD from the carried target.
        filled = np.concatenate((np.array([self._target], dtype=np.int8), raw))
        idx = np.where(filled != HOLD, np.arange(n + 1), 0)
        np.maximum.accumulate(idx, out=idx)
        out = filled[idx][1:]
        self._seen += n
        if n:
            self._target = int(out[-1])
        return out

    def leg_targets(self, close: F64) -> tuple[I8, I8]:
        """Hedge mode: whether the long and the short position are open after each bar."""
        t = self.targets(close)
        return (t > 0).astype(np.int8), (t < 0).astype(np.int8)


def _carry(raw: I8, carried: int) -> I8:
    """Forward-fill ``HOLD`` in ``raw`` from ``carried``."""
    n = len(raw)
    filled = np.concatenate((np.array([carried], dtype=np.int8), raw))
    idx = np.where(filled != HOLD, np.arange(n + 1), 0)
    np.maximum.accumulate(idx, out=idx)
    out: I8 = filled[idx][1:]
    return out


class LegStrategy(BarStrategy):
    """A strategy that opens and closes its long and short positions independently.

    Subclasses implement :meth:`raw_legs` (vectorised, carried state) and
    :meth:`raw_legs_one`, each giving per bar 1 (open), 0 (close) or ``HOLD``
    for the long and for the short position. In hedge mode both may be open at
    once; in one-way mode the target is their net (long open and short open
    net to flat). In hedge mode each position is sized at half the symbol's
    allocation (``leg_fraction``), so both fit its margin together.
    """

    leg_fraction: ClassVar[float] = 0.5

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._legs = (0, 0)

    @abstractmethod
    def raw_legs(self, close: F64) -> tuple[I8, I8]:
        """Long and short signals for a batch of closed bars."""

    @abstractmethod
    def raw_legs_one(self, close: float) -> tuple[int, int]:
        """Long and short signals for one closed bar."""

    def raw_one(self, close: float) -> int:  # pragma: no cover - legs replace it
        raise NotImplementedError("a LegStrategy works through its legs")

    def raw_batch(self, close: F64) -> I8:  # pragma: no cover - legs replace it
        raise NotImplementedError("a LegStrategy works through its legs")

    def on_bar(self, close: float) -> int:
        lg, sh = self.raw_legs_one(close)
        self._seen += 1
        if self._seen >= self.warmup:
            self._legs = (
                self._legs[0] if lg == HOLD else lg,
                self._legs[1] if sh == HOLD else sh,
            )
        self._target = self._legs[0] - self._legs[1]
        return self._target

    def leg_targets(self, close: F64) -> tuple[I8, I8]:
        n = len(close)
        lg, sh = self.raw_legs(close)
        early = (self._seen + np.arange(1, n + 1)) < self.warmup
        lg = np.where(early, HOLD, lg).astype(np.int8)
        sh = np.where(early, HOLD, sh).astype(np.int8)
        out_l, out_s = _carry(lg, self._legs[0]), _carry(sh, self._legs[1])
        self._seen += n
        if n:
            self._legs = (int(out_l[-1]), int(out_s[-1]))
            self._target = self._legs[0] - self._legs[1]
        return out_l, out_s

    def targets(self, close: F64) -> I8:
        lg, sh = self.leg_targets(close)
        out: I8 = (lg - sh).astype(np.int8)
        return out


class MomentumStrategy(BarStrategy):
    """Momentum over ``window`` bars (REPORT.md section 5.1).

    ``momentum = close / close[window bars ago] - 1``. Above ``+threshold`` the
    target is long, below ``-threshold`` short; in between the previous target
    is kept. Needs ``window + 1`` bars.
    """

    name = "momentum"
    params = {"window": (int, 20, 1), "threshold": (float, 0.02, 0.0)}
    window: int
    threshold: float

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lag = Lag(self.window)

    @property
    def warmup(self) -> int:
        return self.window + 1

    def raw_one(self, close: float) -> int:
        past = self._lag.update(close)
        if math.isnan(past):
            return HOLD
        mom = close / past - 1.0
        return 1 if mom > self.threshold else -1 if mom < -self.threshold else HOLD

    def raw_batch(self, close: F64) -> I8:
        past = self._lag.update_batch(close)
        with np.errstate(invalid="ignore"):
            mom = close / past - 1.0
        up = mom > self.threshold
        down = mom < -self.threshold
        return np.where(up, 1, np.where(down, -1, HOLD)).astype(np.int8)


class SmaCrossStrategy(BarStrategy):
    """Moving-average crossover: long while SMA(fast) > SMA(slow), short while below."""

    name = "sma_cross"
    params = {"fast": (int, 20, 1), "slow": (int, 50, 2)}
    fast: int
    slow: int

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.fast >= self.slow:
            raise ParamError(
                f"strategy 'sma_cross': fast ({self.fast}) must be smaller than slow ({self.slow})"
            )
        self._fast = SMA(self.fast)
        self._slow = SMA(self.slow)

    @property
    def warmup(self) -> int:
        return self.slow

    def raw_one(self, close: float) -> int:
        f = self._fast.update(close)
        s = self._slow.update(close)
        if math.isnan(f) or math.isnan(s):
            return HOLD
        return 1 if f > s else -1 if f < s else HOLD

    def raw_batch(self, close: F64) -> I8:
        f = self._fast.update_batch(close)
        s = self._slow.update_batch(close)
        return np.where(f > s, 1, np.where(f < s, -1, HOLD)).astype(np.int8)


class HedgedTrendStrategy(LegStrategy):
    """A core long position with a tactical short hedge (meant for hedge mode).

    The long position is open while the close is above SMA(``slow``) and
    closed while below it. The short position opens when momentum over
    ``window`` bars falls below ``-threshold`` and closes when it rises above
    ``+threshold``. Both may be open at once: the long keeps its entry (and
    its funding and margin) through a pull-back the short hedges. In one-way
    mode the target is their net. Needs ``max(slow, window + 1)`` bars.
    """

    name = "hedged_trend"
    params = {"slow": (int, 100, 2), "window": (int, 20, 1), "threshold": (float, 0.02, 0.0)}
    slow: int
    window: int
    threshold: float

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sma = SMA(self.slow)
        self._lag = Lag(self.window)

    @property
    def warmup(self) -> int:
        return max(self.slow, self.window + 1)

    def raw_legs_one(self, close: float) -> tuple[int, int]:
        avg = self._sma.update(close)
        past = self._lag.update(close)
        lg = HOLD if math.isnan(avg) or close == avg else 1 if close > avg else 0
        if math.isnan(past):
            return lg, HOLD
        mom = close / past - 1.0
        sh = 1 if mom < -self.threshold else 0 if mom > self.threshold else HOLD
        return lg, sh

    def raw_legs(self, close: F64) -> tuple[I8, I8]:
        avg = self._sma.update_batch(close)
        past = self._lag.update_batch(close)
        lg = np.where(close > avg, 1, np.where(close < avg, 0, HOLD)).astype(np.int8)
        with np.errstate(invalid="ignore"):
            mom = close / past - 1.0
        sh = np.where(mom < -self.threshold, 1, np.where(mom > self.threshold, 0, HOLD))
        return lg, sh.astype(np.int8)


STRATEGIES: dict[str, type[BarStrategy]] = {
    MomentumStrategy.name: MomentumStrategy,
    SmaCrossStrategy.name: SmaCrossStrategy,
    HedgedTrendStrategy.name: HedgedTrendStrategy,
}


def validate_params(
    strategy: str,
    spec: Mapping[str, tuple[type, float | int, float | int]],
    given: Mapping[str, Any],
) -> dict[str, Any]:
    """Check parameter names, types and minimums; fill defaults. Raises :class:`ParamError`."""
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ParamError(
            f"strategy '{strategy}' has no parameter '{unknown[0]}' "
            f"(known: {', '.join(sorted(spec))})"
        )
    out: dict[str, Any] = {}
    for key, (typ, default, minimum) in spec.items():
        value = given.get(key, default)
        if typ is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok and isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value, ok = int(value), True
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok and isinstance(value, str):
                try:
                    value, ok = float(value), True
                except ValueError:
                    ok = False
            if ok:
                value = float(value)
                ok = math.isfinite(value)
        if not ok:
            kind = "an integer" if typ is int else "a number"
            raise ParamError(f"strategy.params.{key}: must be {kind}, got {given.get(key)!r}")
        if value < minimum:
            raise ParamError(f"strategy.params.{key}: must be >= {minimum}, got {value!r}")
        out[key] = value
    return out


def make_strategy(name: str, params: Mapping[str, Any] | None = None) -> BarStrategy:
    """Build a registered strategy by name with validated parameters."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ParamError(f"unknown strategy '{name}' (known: {', '.join(sorted(STRATEGIES))})")
    return cls(**dict(params or {}))
