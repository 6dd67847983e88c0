"""Incremental indicators: O(1) per event, or vectorised over a batch with carried state.

Each indicator has ``update(x)`` for one event and ``update_batch(xs)`` for a
step's batch. Both do the same floating-point operations in the same order
(``np.add.accumulate`` is a sequential left-to-right sum), so the values are
bit-identical whichever way the data arrives. Before an indicator has seen
enough data its value is NaN.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


class SMA:
    """Simple moving average over the last ``window`` values (running sum)."""

    __slots__ = ("window", "_buf", "_pos", "_count", "_sum")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"SMA window must be >= 1, got {window}")
        self.window = window
        self._buf = np.zeros(window, dtype=np.float64)
        self._pos = 0
        self._count = 0
        self._sum = 0.0

    @property
    def ready(self) -> bool:
        return self._count >= self.window

    def update(self, x: float) -> float:
        old = float(self._buf[self._pos])
        self._buf[self._pos] = x
        self._pos = (self._pos + 1) % self.window
        self._count += 1
        self._sum = self._sum + (x - old)
        return self._sum / self.window if self._count >= self.window else math.nan

    def update_batch(self, xs: F64) -> F64:
        n = len(xs)
        if n == 0:
            return np.empty(0, dtype=np.float64)
        w = self.window
        # The values leaving the window: the carried buffer (oldest first), then xs.
        hist = np.concatenate((np.roll(self._buf, -self._pos), xs))
        diffs = xs - hist[:n]
        sums = np.add.accumulate(np.concatenate(([self._sum], diffs)))[1:]
        out = sums / w
        first_ready = w - self._count - 1  # index in xs at which count reaches w
        if first_ready > 0:
            out[: min(first_ready, n)] = math.nan
        self._sum = float(sums[-1])
        self._buf = hist[-w:].copy()
        self._pos = 0
        self._count += n
        return out


class Lag:
    """The value ``window`` events ago (NaN until that many events were seen)."""

    __slots__ = ("window", "_buf", "_pos", "_count")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"lag must be >= 1, got {window}")
        self.window = window
        self._buf = np.full(window, math.nan)
        self._pos = 0
        self._count = 0

    def update(self, x: float) -> float:
        old = float(self._buf[self._pos])
        self._buf[self._pos] = x
        self._pos = (self._pos + 1) % self.window
        self._count += 1
        return old

    def update_batch(self, xs: F64) -> F64:
        n = len(xs)
        hist = np.concatenate((np.roll(self._buf, -self._pos), xs))
        out = hist[:n].copy()
        self._buf = hist[-self.window :].copy()
        self._pos = 0
        self._count += n
        return out


class EMA:
    """Exponential moving average with ``alpha = 2 / (span + 1)``, seeded by the first value.

    The recurrence is sequential by nature, so the batch form loops; it still
    returns exactly what per-event updates return.
    """

    __slots__ = ("span", "alpha", "_value", "_count")

    def __init__(self, span: int) -> None:
        if span < 1:
            raise ValueError(f"EMA span must be >= 1, got {span}")
        self.span = span
        self.alpha = 2.0 / (span + 1.0)
        self._value = math.nan
        self._count = 0

    def update(self, x: float) -> float:
        self._count += 1
        if self._count == 1:
            self._value = x
        else:
            self._value = self._value + self.alpha * (x - self._value)
        return self._value if self._count >= self.span else math.nan

    def update_batch(self, xs: F64) -> F64:
        out = np.empty(len(xs), dtype=np.float64)
        for i, x in enumerate(xs.tolist()):
            out[i] = self.update(x)
        return out
