"""Incremental indicators: O(1) per event, or vectorised over a batch with carried state.

Each indicator has ``update(...)`` for one event and ``update_batch(...)`` for a
step's batch (numpy arrays, one value per event). State carries across calls,
and the two give bit-identical values whichever way the data arrives, so a
replay can compute a step's batch at once and a live run event by event
(DESIGN.md section 4). Two ways keep them identical:

* SMA, Lag, TrueRange and ROC do the same floating-point operations in numpy as
  in scalar code (``np.add.accumulate`` is a sequential left-to-right sum);
  EMA's batch calls its ``update``.
* WMA, RollingStd, ZScore, Bollinger, ATR, RSI, MACD, Donchian, VWAP and ADX
  are sequential by nature (Wilder and EMA smoothing, the sliding variance,
  monotonic deques, running sums with periodic exact recomputation). They keep
  their state in small numpy arrays and have one compiled step function
  (:mod:`tickray.engine.jit`): ``update`` calls it once and ``update_batch``
  calls it in a compiled loop, so there is one implementation. A call of
  ``update`` costs 1-2 microseconds (as the pure-Python SMA's); a batch runs
  at 10-100 million inputs per second. The first use on a machine compiles
  them (about 5 seconds, then cached on disk).

The state is plain attributes and numpy arrays, so an indicator pickles (an
actor's checkpoint) and continues exactly where it stopped.

Conventions:

* ``warmup`` is the number of inputs an indicator needs: every value before the
  ``warmup``-th input is NaN, the value returned for that input is the first
  number, and ``ready`` is true from then on. (This is the convention of
  :attr:`BarStrategy.warmup <tickray.engine.strategies.BarStrategy.warmup>`.)
* Indicators of several outputs return a tuple of floats from ``update`` and a
  tuple of arrays from ``update_batch``, in the order their docstring gives;
  every output is NaN until ``warmup``.
* Inputs are finite floats (prices positive where a ratio is taken); NaN inputs
  are not supported. Bars give high >= low.
* Bad constructor arguments raise ``ValueError`` naming the parameter and value.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tickray.engine.jit import jit

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Triple = tuple[float, float, float]
"""Three values of one event (e.g. MACD's macd, signal, histogram)."""
Triple64 = tuple[F64, F64, F64]
"""Three arrays of a batch, in the same order as :data:`Triple`."""


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
    def warmup(self) -> int:
        return self.window

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

    @property
    def warmup(self) -> int:
        return self.window + 1

    @property
    def ready(self) -> bool:
        return self._count >= self.window + 1

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

    @property
    def warmup(self) -> int:
        return self.span

    @property
    def ready(self) -> bool:
        return self._count >= self.span

    def update(self, x: float) -> float:
        self._count += 1
        if self._count == 1:
            self._value = x
        else:
            self._value = self._value + self.alpha * (x - self._value)
        return self._value if self._count >= self.span else math.nan

    def update_batch(self, xs: F64) -> F64:
        out = np.empty(len(xs), dtype=np.float64)
        state = np.array([self._value])
        count = np.array([self._count], dtype=np.int64)
        _ema_batch(_col(xs), self.alpha, self.span, state, count, out)
        self._value = float(state[0])
        self._count = int(count[0])
        return out


@jit
def _ema_batch(xs: F64, alpha: float, span: int, state: F64, count: I64, out: F64) -> None:
    # the same arithmetic as EMA.update, compiled: value + alpha * (x - value)
    value = state[0]
    c = count[0]
    for i in range(xs.shape[0]):
        x = xs[i]
        c += 1
        value = x if c == 1 else value + alpha * (x - value)
        out[i] = value if c >= span else np.nan
    state[0] = value
    count[0] = c


# -- helpers -----------------------------------------------------------------------------------


def _int_param(owner: str, name: str, value: object, minimum: int | None) -> int:
    if (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool)
        and (minimum is None or value >= minimum)
    ):
        return int(value)
    bound = "" if minimum is None else f" >= {minimum}"
    raise ValueError(f"{owner} {name} must be an integer{bound}, got {value!r}")


def _float_param(owner: str, name: str, value: object, minimum: float) -> float:
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        v = float(value)
        if math.isfinite(v) and v >= minimum:
            return v
    raise ValueError(f"{owner} {name} must be a finite number >= {minimum}, got {value!r}")


def _col(xs: object) -> F64:
    """A batch column as a contiguous, writeable float64 array: the one array type the
    compiled kernels are specialised for (a read-only view would compile another)."""
    return np.require(xs, dtype=np.float64, requirements=["C", "W"])


def _cols(owner: str, *cols: object) -> list[F64]:
    out = [_col(c) for c in cols]
    if len({len(c) for c in out}) > 1:
        raise ValueError(f"{owner}.update_batch: columns differ in length {[len(c) for c in out]}")
    return out


class _Compiled:
    """Base of the indicators run by a compiled step function.

    ``_st`` holds the float state and ``_ix`` the integer state; ``_ix[0]`` is
    always the number of inputs seen.
    """

    __slots__ = ("_st", "_ix", "_warmup")

    _st: F64
    _ix: I64
    _warmup: int

    @property
    def warmup(self) -> int:
        """Inputs needed: the value for the ``warmup``-th input is the first number."""
        return self._warmup

    @property
    def ready(self) -> bool:
        return int(self._ix[0]) >= self._warmup


# -- WMA ---------------------------------------------------------------------------------------


@jit
def _wma_step(st: F64, ix: I64, buf: F64, x: float) -> float:
    # st = [sum, weighted sum, divisor n(n+1)/2]; ix = [count, next slot in buf]
    n = buf.shape[0]
    pos = ix[1]
    old = buf[pos]
    buf[pos] = x
    pos = pos + 1 if pos + 1 < n else 0
    ix[1] = pos
    count = ix[0] + 1
    ix[0] = count
    if count < n:
        return math.nan
    if count % n == 0:
        # Exact recomputation every n inputs (amortised O(1)) bounds the drift of the
        # running sums; buf[pos] is now the oldest value (weight 1).
        s = 0.0
        w = 0.0
        for j in range(n):
            v = buf[(pos + j) % n]
            s += v
            w += (j + 1) * v
        st[0] = s
        st[1] = w
    else:
        # Shifting the window lowers every weight by one (minus the old sum) and adds x at n.
        st[1] = st[1] + (n * x - st[0])
        st[0] = st[0] + (x - old)
    return float(st[1] / st[2])


@jit
def _wma_batch(st: F64, ix: I64, buf: F64, xs: F64, out: F64) -> None:
    for k in range(xs.shape[0]):
        out[k] = _wma_step(st, ix, buf, xs[k])


class WMA(_Compiled):
    """Linearly weighted moving average: ``sum(i * x[t-n+i], i=1..n) / (n(n+1)/2)``.

    The newest value has weight ``n``, the oldest weight 1. Warm-up: ``window``
    inputs. O(1) amortised per input: a running sum and a running weighted sum,
    both recomputed from the window every ``window`` inputs, so rounding cannot
    drift. The error is at most about ``6 * window * u`` (``u = 2**-53``) times
    the largest ``|x|`` of the last ``2 * window`` inputs; measured on random
    walks it stays under ``2 * window * u`` of the window's mean ``|x|``.
    """

    __slots__ = ("window", "_buf")

    def __init__(self, window: int) -> None:
        self.window = _int_param("WMA", "window", window, 1)
        self._warmup = self.window
        self._buf = np.zeros(self.window, dtype=np.float64)
        self._st = np.array([0.0, 0.0, self.window * (self.window + 1) / 2.0])
        self._ix = np.zeros(2, dtype=np.int64)

    def update(self, x: float) -> float:
        return _wma_step(self._st, self._ix, self._buf, float(x))

    def update_batch(self, xs: F64) -> F64:
        xs = _col(xs)
        out = np.empty(len(xs), dtype=np.float64)
        _wma_batch(self._st, self._ix, self._buf, xs, out)
        return out


# -- rolling mean and variance (RollingStd, ZScore, Bollinger) ---------------------------------


@jit
def _mv_step(st: F64, ix: I64, buf: F64, ddof: int, x: float) -> tuple[float, float]:
    # st = [shift K, mean - K, M2 = sum of squared deviations, previous input]
    # ix = [count, next slot in buf, length of the run of equal inputs ending here]
    n = buf.shape[0]
    pos = ix[1]
    old = buf[pos]
    buf[pos] = x
    ix[1] = pos + 1 if pos + 1 < n else 0
    count = ix[0] + 1
    ix[0] = count
    ix[2] = ix[2] + 1 if count > 1 and x == st[3] else 1
    st[3] = x
    if count < n:
        return math.nan, math.nan
    if count % n == 0:
        # Corrected two-pass recomputation every n inputs (amortised O(1)): it resets
        # the rounding error of the sliding updates, and moves the shift K to the mean.
        s = 0.0
        for j in range(n):
            s += buf[j]
        shift = s / n
        dev = 0.0
        m2 = 0.0
        for j in range(n):
            d = buf[j] - shift
            dev += d
            m2 += d * d
        st[0] = shift
        st[1] = dev / n
        st[2] = m2 - dev * dev / n
    else:
        # Welford's update for replacing ``old`` by ``x`` in a window of fixed size, on
        # values shifted by K (a recent mean): the rounding then scales with the
        # spread of the values, not with their level.
        dx = x - st[0]
        dold = old - st[0]
        prev = st[1]
        st[1] = prev + (dx - dold) / n
        st[2] = st[2] + (dx - dold) * ((dx - st[1]) + (dold - prev))
    if ix[2] >= n:
        return x, 0.0  # a constant window: exactly its value and no spread
    return st[0] + st[1], max(st[2], 0.0) / (n - ddof)


@jit
def _mv_batch(st: F64, ix: I64, buf: F64, ddof: int, xs: F64, out: F64) -> None:
    for k in range(xs.shape[0]):
        out[0, k], out[1, k] = _mv_step(st, ix, buf, ddof, xs[k])


class _MeanVar(_Compiled):
    """Rolling mean and variance over ``window`` inputs (see :class:`RollingStd`)."""

    __slots__ = ("window", "ddof", "_buf")

    def __init__(self, owner: str, window: int, ddof: int) -> None:
        self.window = _int_param(owner, "window", window, 1)
        self.ddof = _int_param(owner, "ddof", ddof, 0)
        if self.ddof >= self.window:
            raise ValueError(f"{owner} ddof ({ddof}) must be smaller than window ({window})")
        self._warmup = self.window
        self._buf = np.zeros(self.window, dtype=np.float64)
        self._st = np.zeros(4, dtype=np.float64)
        self._ix = np.zeros(3, dtype=np.int64)

    def _one(self, x: float) -> tuple[float, float]:
        return _mv_step(self._st, self._ix, self._buf, self.ddof, x)

    def _many(self, xs: F64) -> tuple[F64, F64]:
        out = np.empty((2, len(xs)), dtype=np.float64)
        _mv_batch(self._st, self._ix, self._buf, self.ddof, xs, out)
        return out[0], out[1]


class RollingStd(_MeanVar):
    """Standard deviation of the last ``window`` inputs with ``ddof`` (1: sample, 0: population).

    ``sqrt(sum((x - mean)**2) / (window - ddof))``, as pandas'
    ``rolling(window).std(ddof)``. Warm-up: ``window`` inputs.

    Numerical scheme, O(1) amortised per input: every ``window`` inputs the
    mean and M2 (the sum of squared deviations) are recomputed from the window
    by the corrected two-pass algorithm, and a shift K is set to that mean; in
    between, each input replaces the oldest by Welford's update for a window of
    fixed size, done on the values minus K. Rounding errors so live for at most
    one window, and scale with the spread of the values, not their level.

    Error bound (``u = 2**-53``, ``n = window``, D the range of the last ``2n``
    inputs): ``|error of M2| <= ~6 * n**2 * u * D**2``, so the variance's
    relative error is at most about ``6 * n**2 * u * D**2 / M2`` (the tests
    check the bound; measured errors stay under ``n * u * D**2``). For
    ``n = 20`` and ``D = 4 std``: below 2e-12, measured ~1e-14. A window of
    ``n`` equal inputs gives exactly 0 (a run of equal inputs is counted).
    """

    __slots__ = ()

    def __init__(self, window: int, ddof: int = 1) -> None:
        super().__init__("RollingStd", window, ddof)

    def update(self, x: float) -> float:
        return math.sqrt(self._one(float(x))[1])

    def update_batch(self, xs: F64) -> F64:
        return np.sqrt(self._many(_col(xs))[1])


class ZScore(_MeanVar):
    """How many standard deviations the input is from its window's mean.

    ``(x - mean) / std`` over the last ``window`` inputs including ``x``, with
    the std's ``ddof`` (default 1, as pandas), computed as :class:`RollingStd`.
    A window of equal values (std 0) gives 0: the input is at the mean.
    Warm-up: ``window`` inputs (``window >= 2`` for ddof 1).
    """

    __slots__ = ()

    def __init__(self, window: int, ddof: int = 1) -> None:
        super().__init__("ZScore", window, ddof)

    def update(self, x: float) -> float:
        x = float(x)
        mean, var = self._one(x)
        std = math.sqrt(var)
        return 0.0 if std == 0.0 else (x - mean) / std

    def update_batch(self, xs: F64) -> F64:
        xs = _col(xs)
        mean, var = self._many(xs)
        std = np.sqrt(var)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (xs - mean) / std
        z[std == 0.0] = 0.0
        return z


class Bollinger(_MeanVar):
    """Bollinger bands: ``(middle, upper, lower) = (mean, mean + k*std, mean - k*std)``.

    Mean and std of the last ``window`` inputs, computed as :class:`RollingStd`
    (the mean's error is within a few ``u`` of the level). The std is the population one
    (``ddof=0``) by default, as John Bollinger defines the bands; pass ``ddof=1``
    for the sample std (pandas' ``rolling().std()`` default). Warm-up:
    ``window`` inputs.
    """

    __slots__ = ("k",)

    def __init__(self, window: int = 20, k: float = 2.0, ddof: int = 0) -> None:
        super().__init__("Bollinger", window, ddof)
        self.k = _float_param("Bollinger", "k", k, 0.0)

    def update(self, x: float) -> Triple:
        mean, var = self._one(float(x))
        width = self.k * math.sqrt(var)
        return mean, mean + width, mean - width

    def update_batch(self, xs: F64) -> Triple64:
        mean, var = self._many(_col(xs))
        width = self.k * np.sqrt(var)
        return mean, mean + width, mean - width


# -- true range and ATR ------------------------------------------------------------------------


class TrueRange:
    """True range of a bar: ``max(high - low, |high - prev_close|, |low - prev_close|)``.

    The first bar has no previous close: its true range is ``high - low``.
    Warm-up: 1 bar. Vectorised over a batch.
    """

    __slots__ = ("_prev", "_count")

    def __init__(self) -> None:
        self._prev = math.nan
        self._count = 0

    @property
    def warmup(self) -> int:
        return 1

    @property
    def ready(self) -> bool:
        return self._count >= 1

    def update(self, high: float, low: float, close: float) -> float:
        hl = high - low
        tr = hl if self._count == 0 else max(hl, abs(high - self._prev), abs(low - self._prev))
        self._prev = float(close)
        self._count += 1
        return float(tr)

    def update_batch(self, high: F64, low: F64, close: F64) -> F64:
        h, lo, c = _cols("TrueRange", high, low, close)
        n = len(h)
        if n == 0:
            return np.empty(0, dtype=np.float64)
        prev = np.concatenate(([self._prev], c[:-1]))
        hl = h - lo
        tr = np.maximum(hl, np.maximum(np.abs(h - prev), np.abs(lo - prev)))
        if self._count == 0:
            tr[0] = hl[0]
        self._prev = float(c[-1])
        self._count += n
        return tr


@jit
def _atr_step(st: F64, ix: I64, high: float, low: float, close: float) -> float:
    # st = [previous close, ATR (the sum of TRs during warm-up)]; ix = [count, window]
    n = ix[1]
    count = ix[0] + 1
    ix[0] = count
    hl = high - low
    tr = hl if count == 1 else max(hl, abs(high - st[0]), abs(low - st[0]))
    st[0] = close
    if count < n:
        st[1] += tr
        return math.nan
    if count == n:
        st[1] = (st[1] + tr) / n
    else:
        st[1] = (st[1] * (n - 1) + tr) / n
    return float(st[1])


@jit
def _atr_batch(st: F64, ix: I64, high: F64, low: F64, close: F64, out: F64) -> None:
    for k in range(high.shape[0]):
        out[k] = _atr_step(st, ix, high[k], low[k], close[k])


class ATR(_Compiled):
    """Average true range with Wilder's smoothing.

    ``ATR = mean(TR[0..n-1])`` at bar ``n - 1``, then
    ``ATR[t] = (ATR[t-1] * (n - 1) + TR[t]) / n``, with TR as in
    :class:`TrueRange` (the first bar's TR is ``high - low``). Warm-up:
    ``window`` bars.
    """

    __slots__ = ("window",)

    def __init__(self, window: int = 14) -> None:
        self.window = _int_param("ATR", "window", window, 1)
        self._warmup = self.window
        self._st = np.zeros(2, dtype=np.float64)
        self._ix = np.array([0, self.window], dtype=np.int64)

    def update(self, high: float, low: float, close: float) -> float:
        return _atr_step(self._st, self._ix, float(high), float(low), float(close))

    def update_batch(self, high: F64, low: F64, close: F64) -> F64:
        h, lo, c = _cols("ATR", high, low, close)
        out = np.empty(len(h), dtype=np.float64)
        _atr_batch(self._st, self._ix, h, lo, c, out)
        return out


# -- RSI ---------------------------------------------------------------------------------------


@jit
def _rsi_step(st: F64, ix: I64, x: float) -> float:
    # st = [previous input, average gain, average loss (sums during warm-up)]; ix = [count, window]
    n = ix[1]
    count = ix[0] + 1
    ix[0] = count
    prev = st[0]
    st[0] = x
    if count == 1:
        return math.nan
    d = x - prev
    gain = d if d > 0.0 else 0.0
    loss = -d if d < 0.0 else 0.0
    k = count - 1  # changes seen
    if k < n:
        st[1] += gain
        st[2] += loss
        return math.nan
    if k == n:
        st[1] = (st[1] + gain) / n
        st[2] = (st[2] + loss) / n
    else:
        st[1] = (st[1] * (n - 1) + gain) / n
        st[2] = (st[2] * (n - 1) + loss) / n
    total = st[1] + st[2]
    if total == 0.0:
        return 50.0  # no change at all over the window: neutral
    return float(100.0 * st[1] / total)


@jit
def _rsi_batch(st: F64, ix: I64, xs: F64, out: F64) -> None:
    for k in range(xs.shape[0]):
        out[k] = _rsi_step(st, ix, xs[k])


class RSI(_Compiled):
    """Wilder's relative strength index, in [0, 100].

    Changes ``d = x[t] - x[t-1]`` split into gains ``max(d, 0)`` and losses
    ``max(-d, 0)``; their averages are seeded by the simple means of the first
    ``n`` changes and then smoothed as ``avg = (avg * (n - 1) + new) / n``.
    ``RSI = 100 - 100 / (1 + avg_gain / avg_loss)``, computed as the equal
    ``100 * avg_gain / (avg_gain + avg_loss)``: 100 when the average loss is 0
    and the gain is not, and **50** when both are 0 (0/0: no change, neutral).
    Warm-up: ``window + 1`` inputs.
    """

    __slots__ = ("window",)

    def __init__(self, window: int = 14) -> None:
        self.window = _int_param("RSI", "window", window, 1)
        self._warmup = self.window + 1
        self._st = np.zeros(3, dtype=np.float64)
        self._ix = np.array([0, self.window], dtype=np.int64)

    def update(self, x: float) -> float:
        return _rsi_step(self._st, self._ix, float(x))

    def update_batch(self, xs: F64) -> F64:
        xs = _col(xs)
        out = np.empty(len(xs), dtype=np.float64)
        _rsi_batch(self._st, self._ix, xs, out)
        return out


# -- MACD --------------------------------------------------------------------------------------


@jit
def _macd_step(st: F64, ix: I64, x: float) -> tuple[float, float, float]:
    # st = [fast EMA, slow EMA, signal EMA, fast alpha, slow alpha, signal alpha]
    # ix = [count, warmup]
    count = ix[0] + 1
    ix[0] = count
    if count == 1:
        st[0] = x
        st[1] = x
        st[2] = 0.0  # the first MACD value, fast - slow = 0
    else:
        st[0] = st[0] + st[3] * (x - st[0])
        st[1] = st[1] + st[4] * (x - st[1])
        st[2] = st[2] + st[5] * ((st[0] - st[1]) - st[2])
    if count < ix[1]:
        return math.nan, math.nan, math.nan
    macd = st[0] - st[1]
    return macd, st[2], macd - st[2]


@jit
def _macd_batch(st: F64, ix: I64, xs: F64, out: F64) -> None:
    for k in range(xs.shape[0]):
        out[0, k], out[1, k], out[2, k] = _macd_step(st, ix, xs[k])


class MACD(_Compiled):
    """Moving average convergence/divergence: ``(macd, signal, histogram)``.

    ``macd = EMA_fast(x) - EMA_slow(x)``, ``signal = EMA_signal(macd)``,
    ``histogram = macd - signal``. Each EMA is :class:`EMA`'s (``alpha = 2 /
    (span + 1)``, seeded by its first input, as pandas' ``ewm(span,
    adjust=False)``), all run from the first input. Warm-up: ``slow + signal - 1``
    inputs (the slow EMA has seen ``slow`` inputs and the signal EMA ``signal``
    MACD values since then); all three outputs are NaN before.
    """

    __slots__ = ("fast", "slow", "signal")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self.fast = _int_param("MACD", "fast", fast, 1)
        self.slow = _int_param("MACD", "slow", slow, 1)
        self.signal = _int_param("MACD", "signal", signal, 1)
        if self.fast >= self.slow:
            raise ValueError(f"MACD fast ({fast}) must be smaller than slow ({slow})")
        self._warmup = self.slow + self.signal - 1
        alphas = [2.0 / (span + 1.0) for span in (self.fast, self.slow, self.signal)]
        self._st = np.array([0.0, 0.0, 0.0, *alphas], dtype=np.float64)
        self._ix = np.array([0, self._warmup], dtype=np.int64)

    def update(self, x: float) -> Triple:
        return _macd_step(self._st, self._ix, float(x))

    def update_batch(self, xs: F64) -> Triple64:
        xs = _col(xs)
        out = np.empty((3, len(xs)), dtype=np.float64)
        _macd_batch(self._st, self._ix, xs, out)
        return out[0], out[1], out[2]


# -- Donchian ----------------------------------------------------------------------------------


@jit
def _deque_push(idx: I64, val: F64, ix: I64, row: int, t: int, x: float) -> float:
    """Push input ``t`` of value ``x`` on the monotonic max-deque ``row``; return the window max.

    The deque (a ring of capacity n) holds the inputs of the last n that no later
    input is at least as large as, oldest (largest) first: each input enters and
    leaves it once, so the cost is O(1) amortised.
    """
    n = idx.shape[1]
    head = ix[1 + 2 * row]
    size = ix[2 + 2 * row]
    if size > 0 and idx[row, head] <= t - n:  # the oldest fell out of the window
        head = head + 1 if head + 1 < n else 0
        size -= 1
    while size > 0 and val[row, (head + size - 1) % n] <= x:
        size -= 1
    slot = (head + size) % n
    idx[row, slot] = t
    val[row, slot] = x
    ix[1 + 2 * row] = head
    ix[2 + 2 * row] = size + 1
    return float(val[row, head])


@jit
def _donchian_step(
    idx: I64, val: F64, ix: I64, high: float, low: float
) -> tuple[float, float, float]:
    # ix = [count, head and size of the highs' deque, head and size of the lows' deque]
    t = ix[0]
    ix[0] = t + 1
    upper = _deque_push(idx, val, ix, 0, t, high)
    lower = -_deque_push(idx, val, ix, 1, t, -low)  # a min is the max of the negated values
    if t + 1 < idx.shape[1]:
        return math.nan, math.nan, math.nan
    return upper, lower, (upper + lower) / 2.0


@jit
def _donchian_batch(idx: I64, val: F64, ix: I64, high: F64, low: F64, out: F64) -> None:
    for k in range(high.shape[0]):
        out[0, k], out[1, k], out[2, k] = _donchian_step(idx, val, ix, high[k], low[k])


class Donchian(_Compiled):
    """Donchian channel: ``(upper, lower, middle)`` over the last ``window`` bars.

    ``upper = max(high)``, ``lower = min(low)``, ``middle = (upper + lower) / 2``.
    Monotonic deques make it O(1) amortised per bar. Warm-up: ``window`` bars.
    """

    __slots__ = ("window", "_idx", "_val")

    def __init__(self, window: int = 20) -> None:
        self.window = _int_param("Donchian", "window", window, 1)
        self._warmup = self.window
        self._idx = np.zeros((2, self.window), dtype=np.int64)
        self._val = np.zeros((2, self.window), dtype=np.float64)
        self._ix = np.zeros(5, dtype=np.int64)

    def update(self, high: float, low: float) -> Triple:
        return _donchian_step(self._idx, self._val, self._ix, float(high), float(low))

    def update_batch(self, high: F64, low: F64) -> Triple64:
        h, lo = _cols("Donchian", high, low)
        out = np.empty((3, len(h)), dtype=np.float64)
        _donchian_batch(self._idx, self._val, self._ix, h, lo, out)
        return out[0], out[1], out[2]


# -- VWAP --------------------------------------------------------------------------------------


@jit
def _vwap_step(st: F64, ix: I64, price: float, volume: float, ts: int) -> float:
    # st = [sum of price * volume, sum of volume]
    # ix = [count, current session number, reset period (0: never), session offset]
    count = ix[0] + 1
    ix[0] = count
    if ix[2] > 0:
        session = (ts - ix[3]) // ix[2]
        if count == 1 or session != ix[1]:
            ix[1] = session
            st[0] = 0.0
            st[1] = 0.0
    st[0] += price * volume
    st[1] += volume
    if st[1] == 0.0:
        return math.nan
    return float(st[0] / st[1])


@jit
def _vwap_batch(st: F64, ix: I64, price: F64, volume: F64, ts: I64, out: F64) -> None:
    for k in range(price.shape[0]):
        out[k] = _vwap_step(st, ix, price[k], volume[k], ts[k])


class VWAP(_Compiled):
    """Volume-weighted average price: ``sum(price * volume) / sum(volume)`` since the reset.

    ``price`` is what the caller weighs (the close, or the typical price
    ``(high + low + close) / 3``); volumes are >= 0. With ``reset_ns`` the sums
    restart at the first input of each session, the session of a timestamp
    being ``(ts - offset_ns) // reset_ns`` (so with ``reset_ns`` of a day and
    ``offset_ns = 0`` the VWAP restarts at each UTC midnight); without it the
    VWAP is cumulative and ``ts`` is ignored. NaN while the session's volume is
    0. Warm-up: 1 input.
    """

    __slots__ = ("reset_ns", "offset_ns")

    def __init__(self, reset_ns: int | None = None, offset_ns: int = 0) -> None:
        self.reset_ns = None if reset_ns is None else _int_param("VWAP", "reset_ns", reset_ns, 1)
        self.offset_ns = _int_param("VWAP", "offset_ns", offset_ns, None)
        self._warmup = 1
        self._st = np.zeros(2, dtype=np.float64)
        self._ix = np.array([0, 0, self.reset_ns or 0, self.offset_ns], dtype=np.int64)

    def update(self, price: float, volume: float, ts: int = 0) -> float:
        return _vwap_step(self._st, self._ix, float(price), float(volume), int(ts))

    def update_batch(self, price: F64, volume: F64, ts: I64 | None = None) -> F64:
        p, v = _cols("VWAP", price, volume)
        t = np.zeros(len(p), np.int64) if ts is None else np.require(ts, np.int64, ["C", "W"])
        if len(t) != len(p):
            raise ValueError(f"VWAP.update_batch: ts has {len(t)} values, price {len(p)}")
        out = np.empty(len(p), dtype=np.float64)
        _vwap_batch(self._st, self._ix, p, v, t, out)
        return out


# -- ROC ---------------------------------------------------------------------------------------


class ROC:
    """Rate of change as a fraction: ``x[t] / x[t - window] - 1`` (0.05 is +5 %).

    NaN where the past value is 0. Warm-up: ``window + 1`` inputs. Vectorised
    over a batch.
    """

    __slots__ = ("window", "_lag")

    def __init__(self, window: int) -> None:
        self.window = _int_param("ROC", "window", window, 1)
        self._lag = Lag(self.window)

    @property
    def warmup(self) -> int:
        return self.window + 1

    @property
    def ready(self) -> bool:
        return self._lag.ready

    def update(self, x: float) -> float:
        x = float(x)
        past = self._lag.update(x)
        return math.nan if past == 0.0 else x / past - 1.0

    def update_batch(self, xs: F64) -> F64:
        xs = _col(xs)
        past = self._lag.update_batch(xs)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = xs / past - 1.0
        out[past == 0.0] = math.nan
        return out


# -- ADX ---------------------------------------------------------------------------------------


@jit
def _adx_step(
    st: F64, ix: I64, high: float, low: float, close: float
) -> tuple[float, float, float]:
    # st = [previous high, low, close, average TR, average +DM, average -DM, ADX]
    #      (the averages and ADX hold sums during their warm-up)
    # ix = [count, window]
    n = ix[1]
    count = ix[0] + 1
    ix[0] = count
    ph, pl, pc = st[0], st[1], st[2]
    st[0] = high
    st[1] = low
    st[2] = close
    if count == 1:
        return math.nan, math.nan, math.nan
    up = high - ph
    down = pl - low
    plus_dm = up if up > down and up > 0.0 else 0.0
    minus_dm = down if down > up and down > 0.0 else 0.0
    tr = max(high - low, abs(high - pc), abs(low - pc))
    k = count - 1  # bars with a previous bar
    if k < n:
        st[3] += tr
        st[4] += plus_dm
        st[5] += minus_dm
        return math.nan, math.nan, math.nan
    if k == n:
        st[3] = (st[3] + tr) / n
        st[4] = (st[4] + plus_dm) / n
        st[5] = (st[5] + minus_dm) / n
    else:
        st[3] = (st[3] * (n - 1) + tr) / n
        st[4] = (st[4] * (n - 1) + plus_dm) / n
        st[5] = (st[5] * (n - 1) + minus_dm) / n
    plus_di = 100.0 * st[4] / st[3] if st[3] > 0.0 else 0.0
    minus_di = 100.0 * st[5] / st[3] if st[3] > 0.0 else 0.0
    di_sum = plus_di + minus_di
    dx = 100.0 * abs(plus_di - minus_di) / di_sum if di_sum > 0.0 else 0.0
    j = k - n + 1  # DX values seen
    if j < n:
        st[6] += dx
        return math.nan, math.nan, math.nan
    if j == n:
        st[6] = (st[6] + dx) / n
    else:
        st[6] = (st[6] * (n - 1) + dx) / n
    return st[6], plus_di, minus_di


@jit
def _adx_batch(st: F64, ix: I64, high: F64, low: F64, close: F64, out: F64) -> None:
    for k in range(high.shape[0]):
        out[0, k], out[1, k], out[2, k] = _adx_step(st, ix, high[k], low[k], close[k])


class ADX(_Compiled):
    """Wilder's directional movement: ``(adx, plus_di, minus_di)``.

    From the second bar on: ``up = high - prev_high``, ``down = prev_low - low``;
    ``+DM = up`` if ``up > down`` and ``up > 0`` else 0, ``-DM = down`` if
    ``down > up`` and ``down > 0`` else 0; TR as in :class:`TrueRange`. TR, +DM
    and -DM are smoothed as Wilder does (seeded by the mean of the first ``n``,
    then ``avg = (avg * (n - 1) + new) / n``; his running sums are ``n`` times
    these, so the ratios are the same). ``±DI = 100 * avg(±DM) / avg(TR)`` (0
    when avg TR is 0), ``DX = 100 * |+DI - -DI| / (+DI + -DI)`` (0 when both are
    0), and ADX is DX smoothed the same way, seeded by the mean of the first
    ``n`` DX. Warm-up: ``2 * window`` bars (``n + 1`` for the first DI, ``n - 1``
    more DX for the first ADX); all three outputs are NaN before.
    """

    __slots__ = ("window",)

    def __init__(self, window: int = 14) -> None:
        self.window = _int_param("ADX", "window", window, 1)
        self._warmup = 2 * self.window
        self._st = np.zeros(7, dtype=np.float64)
        self._ix = np.array([0, self.window], dtype=np.int64)

    def update(self, high: float, low: float, close: float) -> Triple:
        return _adx_step(self._st, self._ix, float(high), float(low), float(close))

    def update_batch(self, high: F64, low: F64, close: F64) -> Triple64:
        h, lo, c = _cols("ADX", high, low, close)
        out = np.empty((3, len(h)), dtype=np.float64)
        _adx_batch(self._st, self._ix, h, lo, c, out)
        return out[0], out[1], out[2]
