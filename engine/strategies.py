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


STRATEGIES: dict[str, type[BarStrategy]] = {
    MomentumStrategy.name: MomentumStrategy,
    SmaCrossStrategy.name: SmaCrossStrategy,
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
