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

Strategies that read each bar's high and low as well as its close (ATR, ADX,
Donchian channels) set ``needs_ohlc`` and are fed through the ``*_ohlc``
methods (:meth:`BarStrategy.targets_ohlc`, :meth:`BarStrategy.on_bar_ohlc`,
:meth:`BarStrategy.leg_targets_ohlc`). Those methods work for every strategy:
a close-only strategy ignores the high and low, so a caller holding whole bars
can always use them. An OHLC strategy's close-only methods raise ``TypeError``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tickray.engine.indicators import ADX, ATR, SMA, Donchian, Lag, RollingStd, ZScore
from tickray.engine.jit import jit
from tickray.engine.signals import SignalStrategy

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

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
    needs_ohlc: ClassVar[bool] = False
    """True when the strategy reads each bar's high and low: feed it through the
    ``*_ohlc`` methods (its close-only ones raise ``TypeError``)."""

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

    def raw_one_ohlc(self, high: float, low: float, close: float) -> int:
        """Signal for one closed bar from its high, low and close.

        The default ignores the high and low (:meth:`raw_one`); strategies with
        ``needs_ohlc`` override it.
        """
        return self.raw_one(close)

    def raw_batch_ohlc(self, high: F64, low: F64, close: F64) -> I8:
        """Signals for a batch of closed bars from their high, low and close.

        The default ignores the high and low (:meth:`raw_batch`); strategies
        with ``needs_ohlc`` override it, giving exactly what
        :meth:`raw_one_ohlc` gives bar by bar.
        """
        return self.raw_batch(close)

    def on_bar(self, close: float) -> int:
        """Feed one closed bar; returns the target direction after it."""
        return self._settle_one(self.raw_one(close))

    def on_bar_ohlc(self, high: float, low: float, close: float) -> int:
        """Feed one closed bar with its high and low; returns the target direction after it."""
        return self._settle_one(self.raw_one_ohlc(float(high), float(low), float(close)))

    def targets(self, close: F64) -> I8:
        """Feed a batch of closed bars; returns the target direction after each."""
        return self._settle_batch(self.raw_batch(close))

    def targets_ohlc(self, high: F64, low: F64, close: F64) -> I8:
        """Feed a batch of closed bars with their highs and lows; returns the target after each.

        Gives exactly what :meth:`on_bar_ohlc` gives bar by bar, however the
        bars are split into batches.
        """
        h, lo, c = _ohlc_columns(self.name, high, low, close)
        return self._settle_batch(self.raw_batch_ohlc(h, lo, c))

    def leg_targets(self, close: F64) -> tuple[I8, I8]:
        """Hedge mode: whether the long and the short position are open after each bar."""
        t = self.targets(close)
        return (t > 0).astype(np.int8), (t < 0).astype(np.int8)

    def leg_targets_ohlc(self, high: F64, low: F64, close: F64) -> tuple[I8, I8]:
        """Hedge mode, from whole bars: as :meth:`leg_targets`, fed like :meth:`targets_ohlc`."""
        t = self.targets_ohlc(high, low, close)
        return (t > 0).astype(np.int8), (t < 0).astype(np.int8)

    def _settle_one(self, raw: int) -> int:
        """Apply the warm-up and ``HOLD`` to one raw signal; returns the target."""
        self._seen += 1
        if self._seen >= self.warmup and raw != HOLD:
            self._target = raw
        return self._target

    def _settle_batch(self, raw: I8) -> I8:
        """Apply the warm-up and ``HOLD`` to a batch of raw signals; returns the targets."""
        n = len(raw)
        seen = self._seen + np.arange(1, n + 1)
        raw = np.where(seen >= self.warmup, raw, HOLD).astype(np.int8)
        out = _carry(raw, self._target)
        self._seen += n
        if n:
            self._target = int(out[-1])
        return out


def _ohlc_columns(name: str, high: object, low: object, close: object) -> tuple[F64, F64, F64]:
    """High, low and close as contiguous, writeable float64 arrays of one length."""
    cols = [np.require(x, dtype=np.float64, requirements=["C", "W"]) for x in (high, low, close)]
    if len({len(c) for c in cols}) > 1:
        raise ValueError(
            f"strategy '{name}': high, low and close differ in length {[len(c) for c in cols]}"
        )
    return cols[0], cols[1], cols[2]


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

    # A leg strategy reads closes only: whole bars feed it through its close-only methods.
    def on_bar_ohlc(self, high: float, low: float, close: float) -> int:
        return self.on_bar(close)

    def targets_ohlc(self, high: F64, low: F64, close: F64) -> I8:
        return self.targets(_ohlc_columns(self.name, high, low, close)[2])

    def leg_targets_ohlc(self, high: F64, low: F64, close: F64) -> tuple[I8, I8]:
        return self.leg_targets(_ohlc_columns(self.name, high, low, close)[2])


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
        _require_less("fast", self.fast, "slow", self.slow)
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


# -- helpers of the strategies below ------------------------------------------------------------


def _require_less(key: str, value: float, other: str, bound: float) -> None:
    """Raise :class:`ParamError` naming ``strategy.params.<key>`` unless ``value < bound``."""
    if not value < bound:
        raise ParamError(
            f"strategy.params.{key}: {key} ({value}) must be smaller than {other} ({bound})"
        )


def _latch(enter: I8, exit_long: B, exit_short: B, carried: int) -> I8:
    """Positions after each bar of a strategy that enters and exits on events.

    ``enter`` per bar is +1 or -1 (take that position, also from the other
    side), 0 (go flat whatever the position) or ``HOLD`` (no entry); on a
    ``HOLD`` bar a long position goes flat where ``exit_long`` is true and a
    short one where ``exit_short`` is. ``carried`` is the position before the
    batch. Vectorised: the position after a bar is that of the last entry up
    to it (or ``carried``), unless an exit of its side came after that entry,
    which is what applying the rule bar by bar gives.
    """
    idx = np.arange(len(enter))
    last = np.maximum.accumulate(np.where(enter != HOLD, idx, -1))
    value = np.where(last >= 0, enter[np.maximum(last, 0)], carried).astype(np.int8)
    out_long = np.maximum.accumulate(np.where(exit_long, idx, -1)) > last
    out_short = np.maximum.accumulate(np.where(exit_short, idx, -1)) > last
    value[((value == 1) & out_long) | ((value == -1) & out_short)] = 0
    return value


def _one(x: float) -> F64:
    return np.array([x], dtype=np.float64)


class OhlcStrategy(BarStrategy):
    """Base of the strategies that read each bar's high and low as well as its close.

    Subclasses implement :meth:`raw_batch_ohlc` (vectorised, carried state);
    one bar is a batch of one, so :meth:`raw_one_ohlc` agrees with it by
    construction. Feed them with :meth:`targets_ohlc` / :meth:`on_bar_ohlc`.
    """

    needs_ohlc: ClassVar[bool] = True

    @abstractmethod
    def raw_batch_ohlc(self, high: F64, low: F64, close: F64) -> I8:
        """Signals for a batch of closed bars from their high, low and close."""

    def raw_one_ohlc(self, high: float, low: float, close: float) -> int:
        return int(self.raw_batch_ohlc(_one(high), _one(low), _one(close))[0])

    def raw_one(self, close: float) -> int:
        raise TypeError(self._ohlc_only())

    def raw_batch(self, close: F64) -> I8:
        raise TypeError(self._ohlc_only())

    def _ohlc_only(self) -> str:
        return (
            f"strategy '{self.name}' reads each bar's high and low: feed it with "
            "targets_ohlc(high, low, close) or on_bar_ohlc(high, low, close)"
        )


# -- mean reversion ----------------------------------------------------------------------------


class MeanReversionStrategy(BarStrategy):
    """Mean reversion on the z-score of the close (Bollinger bands).

    ``z = (close - mean) / std`` over the last ``window`` closes, the current
    bar's included, with the *population* std (``ddof=0``, as Bollinger bands
    are defined: ``mean ± entry_z * std`` is ``Bollinger(window, k=entry_z)``).
    A window of equal closes has ``z = 0``. At each bar's close, in this order:

    * ``|z| > stop_z``: flat (the stop: the move is too far to bet on its return);
    * ``z < -entry_z``: long (also from short); ``z > +entry_z``: short (also from long);
    * otherwise a long exits (flat) when the close is at or above the middle
      band (``z >= 0``), a short when it is at or below it (``z <= 0``); else
      the position is kept.

    So an entry needs ``entry_z < |z| <= stop_z``, and a stopped-out position
    re-enters at a later bar whose ``|z|`` is back inside that zone. The target
    applies from the signal bar's close. Needs ``window`` bars; ``stop_z`` must
    exceed ``entry_z``. The position is the strategy's state and carries across
    batches.
    """

    name = "mean_reversion"
    params = {"window": (int, 20, 2), "entry_z": (float, 2.0, 0.0), "stop_z": (float, 3.5, 0.0)}
    window: int
    entry_z: float
    stop_z: float

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.stop_z > self.entry_z:
            raise ParamError(
                f"strategy.params.stop_z: stop_z ({self.stop_z}) must be greater than "
                f"entry_z ({self.entry_z})"
            )
        self._z = ZScore(self.window, ddof=0)
        self._pos = 0

    @property
    def warmup(self) -> int:
        return self.window

    def raw_one(self, close: float) -> int:
        return int(self.raw_batch(_one(close))[0])

    def raw_batch(self, close: F64) -> I8:
        z = self._z.update_batch(close)  # NaN in warm-up: every comparison below is false
        enter = np.where(
            np.abs(z) > self.stop_z,
            0,
            np.where(z < -self.entry_z, 1, np.where(z > self.entry_z, -1, HOLD)),
        ).astype(np.int8)
        out = _latch(enter, z >= 0.0, z <= 0.0, self._pos)
        if len(out):
            self._pos = int(out[-1])
        return out


# -- breakout ----------------------------------------------------------------------------------


class BreakoutStrategy(OhlcStrategy):
    """Donchian channel breakout with the turtles' shorter exit channel.

    The entry channel is the highest high and the lowest low of the ``window``
    bars *before* the current one (the current bar excluded); the exit channel
    the same over the ``exit_window`` bars before it. At each bar's close:

    * close above the entry channel's high: long (also from short); close
      below its low: short (also from long);
    * otherwise a long exits (flat) on a close below the exit channel's low,
      a short on a close above the exit channel's high; else the position is kept.

    Needs ``window + 1`` bars; ``exit_window`` must be smaller than ``window``.
    The position carries across batches.
    """

    name = "breakout"
    params = {"window": (int, 20, 2), "exit_window": (int, 10, 1)}
    window: int
    exit_window: int

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _require_less("exit_window", self.exit_window, "window", self.window)
        self._entry = Donchian(self.window)
        self._exit = Donchian(self.exit_window)
        # the channels up to the previous bar: entry high, entry low, exit high, exit low
        self._prior = np.full(4, math.nan)
        self._pos = 0

    @property
    def warmup(self) -> int:
        return self.window + 1

    def raw_batch_ohlc(self, high: F64, low: F64, close: F64) -> I8:
        up, lo, _ = self._entry.update_batch(high, low)
        xup, xlo, _ = self._exit.update_batch(high, low)
        now = np.stack((up, lo, xup, xlo))
        prior = np.concatenate((self._prior[:, None], now[:, :-1]), axis=1)
        if len(close):
            self._prior = now[:, -1].copy()
        enter = np.where(close > prior[0], 1, np.where(close < prior[1], -1, HOLD))
        out = _latch(enter.astype(np.int8), close < prior[3], close > prior[2], self._pos)
        if len(out):
            self._pos = int(out[-1])
        return out


# -- enhanced momentum -------------------------------------------------------------------------


@jit
def _em_step(
    st: F64, ix: I64, close: float, fast: float, slow: float, mom: float, atr: float
) -> int:
    # st = [threshold, risk_factor, take-profit level, stop-loss level]; ix = [position]
    pos = ix[0]
    if (pos == 1 and (close >= st[2] or close <= st[3])) or (
        pos == -1 and (close <= st[2] or close >= st[3])
    ):
        ix[0] = 0
        return 0  # an exit bar ends flat: no entry on the same close
    if math.isnan(atr):
        return int(pos)
    if pos != 1 and fast > slow and mom > st[0]:
        pos = 1
        st[2] = close + 2.0 * atr * st[1]
        st[3] = close - atr * st[1]
    elif pos != -1 and fast < slow and mom < -st[0]:
        pos = -1
        st[2] = close - 2.0 * atr * st[1]
        st[3] = close + atr * st[1]
    ix[0] = pos
    return int(pos)


@jit
def _em_batch(
    st: F64, ix: I64, close: F64, fast: F64, slow: F64, mom: F64, atr: F64, out: I8
) -> None:
    for k in range(close.shape[0]):
        out[k] = _em_step(st, ix, close[k], fast[k], slow[k], mom[k], atr[k])


class EnhancedMomentumCloseStrategy(OhlcStrategy):
    """Moving-average cross filtered by momentum, with ATR take-profit and stop-loss
    checked on closes: a vectorised variant of REPORT.md section 8 A for fast sweeps.

    The faithful form, whose take-profit and stop-loss are orders at the venue
    filled inside the bar that reaches them, is the event strategy
    ``enhanced_momentum`` (tickray.engine.event_strategies). At each bar's close, with ``SMA(fast)``,
    ``SMA(slow)``, ``momentum = close / close[window bars ago] - 1`` and Wilder's
    ``ATR(atr_window)``:

    1. An open long exits (flat) when the close is at or above its take-profit
       or at or below its stop-loss; a short mirrored. The exit bar ends flat.
    2. Otherwise the long signal is ``SMA(fast) > SMA(slow)`` and
       ``momentum > threshold``, the short signal ``SMA(fast) < SMA(slow)`` and
       ``momentum < -threshold``. A signal opens that position when flat and
       reverses the opposite one; a signal in the held direction changes nothing.
    3. An entry at close ``c`` with ``ATR`` ``a`` fixes its levels:
       long ``take = c + 2 * a * risk_factor``, ``stop = c - a * risk_factor``;
       short ``take = c - 2 * a * risk_factor``, ``stop = c + a * risk_factor``.
       They are checked from the next bar's close on.

    The signal is level-triggered, as in the report: after an exit, the next
    bar re-enters if its signal still holds. :meth:`last_confidence` gives each
    bar's confidence, ``min(1, |momentum| / (confidence_scale * threshold))``
    (0 while the momentum is undefined; with ``threshold = 0``, 1 for any
    non-zero momentum): ``1 / confidence_scale`` at the entry threshold, 1 at
    ``confidence_scale`` times it. Needs ``max(slow, window + 1, atr_window)``
    bars; ``fast`` must be smaller than ``slow``.
    """

    name = "enhanced_momentum_close"
    params = {
        "fast": (int, 10, 1),
        "slow": (int, 30, 2),
        "window": (int, 20, 1),
        "threshold": (float, 0.02, 0.0),
        "atr_window": (int, 14, 1),
        "risk_factor": (float, 2.0, 0.0),
        "confidence_scale": (float, 2.0, 1.0),
    }
    fast: int
    slow: int
    window: int
    threshold: float
    atr_window: int
    risk_factor: float
    confidence_scale: float

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _require_less("fast", self.fast, "slow", self.slow)
        self._fast = SMA(self.fast)
        self._slow = SMA(self.slow)
        self._lag = Lag(self.window)
        self._atr = ATR(self.atr_window)
        self._st = np.array([self.threshold, self.risk_factor, math.nan, math.nan])
        self._ix = np.zeros(1, dtype=np.int64)
        self._confidence = np.empty(0, dtype=np.float64)

    @property
    def warmup(self) -> int:
        return max(self.slow, self.window + 1, self.atr_window)

    @property
    def exit_levels(self) -> tuple[float, float]:
        """``(take_profit, stop_loss)`` of the open position; NaN when flat."""
        if self._ix[0] == 0:
            return math.nan, math.nan
        return float(self._st[2]), float(self._st[3])

    def confidence_from_momentum(self, momentum: F64) -> F64:
        """Confidence in [0, 1] of signals with these momenta (NaN momentum: 0)."""
        scale = self.confidence_scale * self.threshold
        with np.errstate(divide="ignore", invalid="ignore"):  # scale 0: x/0 is inf, 0/0 NaN
            conf = np.minimum(np.abs(momentum) / scale, 1.0)
        out: F64 = np.where(np.isnan(conf), 0.0, conf)
        return out

    def last_confidence(self) -> F64:
        """The confidence of each bar of the last batch fed (one value after one bar)."""
        return self._confidence.copy()

    def raw_batch_ohlc(self, high: F64, low: F64, close: F64) -> I8:
        fast = self._fast.update_batch(close)
        slow = self._slow.update_batch(close)
        past = self._lag.update_batch(close)
        atr = self._atr.update_batch(high, low, close)
        with np.errstate(invalid="ignore"):
            mom = close / past - 1.0
        out = np.empty(len(close), dtype=np.int8)
        _em_batch(self._st, self._ix, close, fast, slow, mom, atr, out)
        self._confidence = self.confidence_from_momentum(mom)
        return out


# -- regime ------------------------------------------------------------------------------------

REGIME_WARMUP = -1
"""Regime label: an indicator of the classification is still warming up (target flat)."""
REGIME_RANGING = 0
"""Regime label: neither trending nor highly volatile (mean reversion trades)."""
REGIME_TRENDING = 1
"""Regime label: ADX at or above ``adx_trend`` (breakout trades)."""
REGIME_HIGH_VOL = 2
"""Regime label: volatility above its rolling percentile (flat); wins over trending."""


@jit
def _logret_step(st: F64, ix: I64, close: float) -> float:
    # st = [previous close]; ix = [count]. The log is computed here, in compiled code,
    # for a bar and for a batch alike, so both get the very same libm result.
    prev = st[0]
    st[0] = close
    ix[0] += 1
    if ix[0] == 1:
        return math.nan
    return math.log(close / prev)


@jit
def _logret_batch(st: F64, ix: I64, close: F64, out: F64) -> None:
    for k in range(close.shape[0]):
        out[k] = _logret_step(st, ix, close[k])


@jit
def _above_pct_step(buf: F64, ix: I64, x: float) -> int:
    # buf: ring of the last len(buf) values; ix = [values seen, next slot, rank k].
    # 1 when at least k of the previous len(buf) values are below x (x above their
    # nearest-rank percentile), 0 when not, -1 while fewer were seen or x is NaN.
    # O(len(buf)) per value: counting needs no sorted window.
    n = buf.shape[0]
    if math.isnan(x):
        return -1
    res = -1
    if ix[0] >= n:
        below = 0
        for j in range(n):
            if buf[j] < x:
                below += 1
        res = 1 if below >= ix[2] else 0
    pos = ix[1]
    buf[pos] = x
    ix[1] = pos + 1 if pos + 1 < n else 0
    ix[0] += 1
    return res


@jit
def _above_pct_batch(buf: F64, ix: I64, xs: F64, out: I8) -> None:
    for k in range(xs.shape[0]):
        out[k] = _above_pct_step(buf, ix, xs[k])


class RegimeStrategy(OhlcStrategy):
    """Regime switch: breakout in trends, mean reversion in ranges, flat in turmoil.

    Each bar is labelled, from data up to its close only:

    * ``REGIME_HIGH_VOL`` (2): the volatility ``vol`` (population std of the
      last ``vol_window`` log returns ``log(close / previous close)``) is above
      the ``vol_pct`` percentile of the ``lookback`` *previous* bars' ``vol``:
      the nearest-rank percentile, ``v_(k)`` with ``k = max(1, ceil(vol_pct *
      lookback / 100))`` in ascending order, so at least ``k`` of them are
      below the current ``vol``. It takes precedence over the others.
    * ``REGIME_TRENDING`` (1): otherwise, ``ADX(adx_window) >= adx_trend``.
    * ``REGIME_RANGING`` (0): otherwise.
    * ``REGIME_WARMUP`` (-1): an input of the above is not defined yet.

    The target is the ``breakout`` sub-strategy's (``window = trend_window``,
    ``exit_window = trend_exit_window``) in a trending bar, the
    ``mean_reversion`` one's (``window = range_window``, ``entry_z =
    range_entry_z``, ``stop_z = range_stop_z``) in a ranging bar, and flat
    otherwise. Both sub-strategies see every bar, so at a switch the wrapper
    takes the position the new regime's strategy holds then (possibly entered
    earlier); they are the attributes ``breakout`` and ``mean_reversion``.
    :meth:`last_regimes` gives the labels of the last batch. Needs
    ``max(2 * adx_window, vol_window + lookback + 1, trend_window + 1,
    range_window)`` bars.
    """

    name = "regime"
    params = {
        "adx_window": (int, 14, 1),
        "adx_trend": (float, 25.0, 0.0),
        "vol_window": (int, 20, 2),
        "vol_pct": (float, 80.0, 0.0),
        "lookback": (int, 250, 1),
        "trend_window": (int, 20, 2),
        "trend_exit_window": (int, 10, 1),
        "range_window": (int, 20, 2),
        "range_entry_z": (float, 2.0, 0.0),
        "range_stop_z": (float, 3.5, 0.0),
    }
    adx_window: int
    adx_trend: float
    vol_window: int
    vol_pct: float
    lookback: int
    trend_window: int
    trend_exit_window: int
    range_window: int
    range_entry_z: float
    range_stop_z: float

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.vol_pct > 100.0:
            raise ParamError(f"strategy.params.vol_pct: must be <= 100, got {self.vol_pct!r}")
        _require_less(
            "trend_exit_window", self.trend_exit_window, "trend_window", self.trend_window
        )
        if not self.range_stop_z > self.range_entry_z:
            raise ParamError(
                f"strategy.params.range_stop_z: range_stop_z ({self.range_stop_z}) must be "
                f"greater than range_entry_z ({self.range_entry_z})"
            )
        self.breakout = BreakoutStrategy(
            window=self.trend_window, exit_window=self.trend_exit_window
        )
        self.mean_reversion = MeanReversionStrategy(
            window=self.range_window, entry_z=self.range_entry_z, stop_z=self.range_stop_z
        )
        self._adx = ADX(self.adx_window)
        self._ret_st = np.zeros(1, dtype=np.float64)
        self._ret_ix = np.zeros(1, dtype=np.int64)
        self._vol = RollingStd(self.vol_window, ddof=0)
        rank = max(1, math.ceil(self.vol_pct * self.lookback / 100.0))
        self._pct_buf = np.zeros(self.lookback, dtype=np.float64)
        self._pct_ix = np.array([0, 0, rank], dtype=np.int64)
        self._regimes = np.empty(0, dtype=np.int8)

    @property
    def warmup(self) -> int:
        return max(
            2 * self.adx_window,
            self.vol_window + self.lookback + 1,
            self.breakout.warmup,
            self.mean_reversion.warmup,
        )

    def last_regimes(self) -> I8:
        """The regime label of each bar of the last batch fed (one value after one bar)."""
        return self._regimes.copy()

    def raw_batch_ohlc(self, high: F64, low: F64, close: F64) -> I8:
        n = len(close)
        trend = self.breakout.targets_ohlc(high, low, close)
        range_ = self.mean_reversion.targets(close)
        adx = self._adx.update_batch(high, low, close)[0]
        ret = np.empty(n, dtype=np.float64)
        _logret_batch(self._ret_st, self._ret_ix, close, ret)
        # Only the very first bar has no return; the volatility starts after it.
        vol = np.full(n, math.nan)
        defined = ~np.isnan(ret)
        vol[defined] = self._vol.update_batch(ret[defined])
        high_vol = np.empty(n, dtype=np.int8)
        _above_pct_batch(self._pct_buf, self._pct_ix, vol, high_vol)
        regime = np.where(
            high_vol == 1,
            REGIME_HIGH_VOL,
            np.where(
                (high_vol < 0) | np.isnan(adx),
                REGIME_WARMUP,
                np.where(adx >= self.adx_trend, REGIME_TRENDING, REGIME_RANGING),
            ),
        ).astype(np.int8)
        self._regimes = regime
        out = np.where(
            regime == REGIME_TRENDING, trend, np.where(regime == REGIME_RANGING, range_, 0)
        )
        return out.astype(np.int8)


STRATEGIES: dict[str, type[BarStrategy]] = {
    MomentumStrategy.name: MomentumStrategy,
    SmaCrossStrategy.name: SmaCrossStrategy,
    HedgedTrendStrategy.name: HedgedTrendStrategy,
    MeanReversionStrategy.name: MeanReversionStrategy,
    BreakoutStrategy.name: BreakoutStrategy,
    EnhancedMomentumCloseStrategy.name: EnhancedMomentumCloseStrategy,
    RegimeStrategy.name: RegimeStrategy,
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
        if not ok or value < minimum:
            kind = "an integer" if typ is int else "a number"
            raise ParamError(
                f"strategy.params.{key}: must be {kind} >= {minimum}, got {given.get(key, value)!r}"
            )
        out[key] = value
    return out


StrategyClass = type[BarStrategy] | type[SignalStrategy]

_USER: dict[str, StrategyClass] = {}
"""Strategies registered by users (:func:`register_strategy`), by name."""

_SIGNAL_CALLBACKS = ("on_bar", "on_trade", "on_book", "on_fill", "on_timer", "on_start")


def builtin_strategies() -> dict[str, StrategyClass]:
    """The strategies that ship with tickray, by name: the bar strategies here and the
    event strategies of :mod:`tickray.engine.event_strategies`."""
    from tickray.engine.event_strategies import EVENT_STRATEGIES

    out: dict[str, StrategyClass] = dict(STRATEGIES)
    out.update(EVENT_STRATEGIES)
    return out


def registry() -> dict[str, StrategyClass]:
    """Every strategy by name: the built-in ones, then those users registered."""
    out = builtin_strategies()
    out.update(_USER)
    return out


def user_strategies() -> dict[str, StrategyClass]:
    """The strategies users registered in this process, by name."""
    return dict(_USER)


def _where(cls: object) -> str:
    module = getattr(cls, "__module__", None) or "?"
    return f"{module}.{getattr(cls, '__qualname__', repr(cls))}"


def check_strategy_class(cls: object, name: str | None = None) -> tuple[str, StrategyClass]:
    """``(name, cls)`` when ``cls`` can run as a strategy; ParamError naming it when not.

    A strategy is a subclass of :class:`BarStrategy` (it must implement
    ``raw_batch`` and ``raw_one``, or ``raw_legs`` and ``raw_legs_one`` for a
    :class:`LegStrategy`) or of :class:`SignalStrategy` (it must override at least
    one callback). Its ``params`` map each parameter to ``(type, default,
    minimum)`` with type ``int`` or ``float``. ``name`` (default: the class's
    ``name`` attribute) is a non-empty identifier-like string.
    """
    where = _where(cls)
    if not isinstance(cls, type):
        raise ParamError(f"strategy {where}: expected a class, got {type(cls).__name__}")
    if not issubclass(cls, BarStrategy | SignalStrategy):
        raise ParamError(
            f"strategy {where}: must subclass tickray.engine.strategies.BarStrategy "
            "or tickray.engine.signals.SignalStrategy"
        )
    if name is None:
        name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise ParamError(f"strategy {where}: needs a name (a class attribute 'name' or name=)")
    if not all(c.isalnum() or c in "_-." for c in name):
        raise ParamError(
            f"strategy {where}: name {name!r} may hold only letters, digits, '_', '-' and '.'"
        )
    params = getattr(cls, "params", None)
    if not isinstance(params, Mapping):
        raise ParamError(
            f"strategy {where}: 'params' must be a dict of name -> (type, default, min)"
        )
    for key, entry in params.items():
        ok = (
            isinstance(key, str)
            and isinstance(entry, tuple)
            and len(entry) == 3
            and entry[0] in (int, float)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in entry[1:])
        )
        if not ok:
            raise ParamError(
                f"strategy {where}: params[{key!r}] must be (int or float, default, minimum), "
                f"got {entry!r}"
            )
    if issubclass(cls, BarStrategy):
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            raise ParamError(f"strategy {where}: missing method(s) {', '.join(missing)}")
    elif not any(getattr(cls, cb) is not getattr(SignalStrategy, cb) for cb in _SIGNAL_CALLBACKS):
        raise ParamError(
            f"strategy {where}: overrides none of the callbacks ({', '.join(_SIGNAL_CALLBACKS)})"
        )
    return name, cls


def register_strategy(cls: Any = None, *, name: str | None = None) -> Any:
    """Register a user strategy class so that specs, the CLI and :func:`tickray.run` can
    name it. Use it as a decorator (``@register_strategy`` or
    ``@register_strategy(name="mine")``) or call it with the class; it returns the class.

    The class is checked first (:func:`check_strategy_class`). A built-in name is
    refused; registering again under the same name replaces the entry only for a
    class of the same module and qualified name (the module was re-imported, as
    in a notebook or a Ray worker), and is refused for another class.
    """

    def apply(c: Any) -> Any:
        key, checked = check_strategy_class(c, name)
        if key in builtin_strategies():
            raise ParamError(f"strategy {_where(c)}: {key!r} is a built-in strategy's name")
        known = _USER.get(key)
        if known is not None and _where(known) != _where(checked):
            raise ParamError(
                f"strategy {_where(c)}: name {key!r} is already registered by {_where(known)}"
            )
        if name is not None and getattr(checked, "name", None) != key:
            checked.name = key  # the name its parameter errors and results carry
        _USER[key] = checked
        return c

    return apply if cls is None else apply(cls)


def unregister_strategy(name: str) -> None:
    """Forget a user strategy (KeyError when none has that name)."""
    del _USER[name]


def strategy_names() -> list[str]:
    """The registered strategy names (built-in and user), sorted."""
    return sorted(registry())


def make_strategy(
    name: str, params: Mapping[str, Any] | None = None
) -> BarStrategy | SignalStrategy:
    """Build a registered strategy by name with validated parameters."""
    known = registry()
    cls = known.get(name)
    if cls is None:
        raise ParamError(f"unknown strategy '{name}' (known: {', '.join(sorted(known))})")
    return cls(**dict(params or {}))
