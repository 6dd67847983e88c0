"""Position sizers: how many base units a new position takes.

One entry point, :func:`size`, turns a :class:`SizingConfig` (the run spec's
``sizing`` table) and the inputs of the moment into an **unsigned** base
quantity, already a whole number of the symbol's lots and zero when below its
minimums; the caller gives it the side. Every method first computes a raw
quantity with one of the pure functions below, then :func:`order_qty` caps it,
floors it to the lot and applies the minimums. Nothing here reads a clock, a
file or a random source: the same inputs give the same quantity.

Units: prices are quote per base unit, ``equity``, ``allocation`` and
notionals are in the symbol's **quote** asset, quantities in its base asset,
volatilities are standard deviations of log returns (per bar, or annualised
where named so), fractions are plain numbers (0.01 is 1 %).

Raw quantity of each method, before the cap, the lot and the minimums
(``scale`` multiplies every one; ``risk_parity`` is ``inverse_vol``):

* ``fraction``: ``allocation * fraction * leverage * scale / price``
* ``quantity``: ``quantity``
* ``notional``: ``notional / price``
* ``risk``: ``equity * risk / stop_distance``
* ``atr``: ``equity * risk / (atr_mult * ATR)``
* ``vol_target``: ``allocation * target_vol / (volatility * sqrt(periods_per_year)) / price``
* ``kelly``: ``allocation * min(kelly_fraction * f*, kelly_cap) / price``
* ``inverse_vol``: ``equity * weight * fraction * leverage * scale / price``

``allocation`` is the symbol's equal share of the capital, *before*
``fraction``: the per-symbol sleeve, so that methods that deploy a share of
capital (fraction, volatility target, Kelly) do not each bet the whole account
in a many-symbol run. Loss-based methods (``risk``,
``atr``) risk a fraction of the whole ``equity`` per trade, as is the custom.
``inverse_vol`` splits the whole ``equity`` by weights that sum to 1 over the
run's symbols (:func:`inverse_vol_weights`).

The default, ``fraction`` with ``fraction = 0.9``, is the sizing the engine
has always done: ``floor_to_lot(initial_cash / symbols * fraction *
confidence / price)`` (times the leverage on a perpetual account), with the
same floating-point operations in the same order, so quantities are
bit-identical when the caller passes ``allocation = RunConfig.budget_for(symbol)``,
the signal's confidence (or a hedge leg's ``leg_fraction``) as ``scale`` and
the symbol's leverage as ``leverage``.

Missing inputs mean no trade: ``risk`` without a stop distance, ``atr`` while
the ATR is NaN (warm-up), ``vol_target`` while the volatility is NaN, ``kelly``
below ``min_trades`` closed trades, ``inverse_vol`` without a weight, and any
such input that is zero, negative or not finite, all size 0.0. So do a price
or equity that is not a positive finite number.

The incremental helpers the simulation updates per bar or per closed trade,
:class:`RealisedVolatility` and :class:`TradeStats`, are O(1) per update and
pickle with their state (an actor's checkpoint).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tickray.engine.indicators import ATR, RollingStd
from tickray.engine.instruments import SymbolSpec
from tickray.engine.riskconfig import METHOD_KEYS, SizingConfig, SizingMethod

__all__ = [
    "METHOD_KEYS",
    "RealisedVolatility",
    "SizingConfig",
    "SizingMethod",
    "SymbolSizer",
    "TradeStats",
    "atr_qty",
    "bars_per_year",
    "fraction_qty",
    "inverse_vol_qty",
    "inverse_vol_weights",
    "kelly_optimal",
    "kelly_weight",
    "notional_qty",
    "order_qty",
    "risk_qty",
    "size",
    "vol_target_qty",
]

F64 = npt.NDArray[np.float64]


def bars_per_year(interval_ns: int, days_per_year: float = 365.0) -> float:
    """Bars of ``interval_ns`` in a year of ``days_per_year`` full days (24/7 markets).

    ``bars_per_year(3_600 * 10**9)`` is 8760.0. For a market with sessions,
    give ``periods_per_year`` directly (252 for daily stock bars).
    """
    if interval_ns <= 0:
        raise ValueError(f"interval_ns must be positive, got {interval_ns}")
    return days_per_year * 86_400 * 10**9 / interval_ns


# -- incremental inputs ------------------------------------------------------------------------


class RealisedVolatility:
    """Rolling realised volatility: the sample standard deviation (ddof 1) of the last
    ``window`` close-to-close log returns ``ln(close[t] / close[t-1])``, per bar.

    Built on :class:`~tickray.engine.indicators.RollingStd` (O(1) amortised per
    close, its error bound and its exact 0 for a constant window). Annualise
    with ``* sqrt(periods_per_year)`` (:meth:`annualised`). Warm-up:
    ``window + 1`` closes; NaN before. Closes must be positive and finite
    (ValueError otherwise). :meth:`update_batch` takes each log with
    ``math.log``, as :meth:`update` does, so both give identical values.
    """

    __slots__ = ("window", "_std", "_prev", "_value")

    def __init__(self, window: int = 20) -> None:
        if not (isinstance(window, int) and not isinstance(window, bool) and window >= 2):
            raise ValueError(f"RealisedVolatility window must be an integer >= 2, got {window!r}")
        self.window = window
        self._std = RollingStd(window, ddof=1)
        self._prev = math.nan
        self._value = math.nan

    @property
    def warmup(self) -> int:
        """Closes needed: the value for the ``warmup``-th close is the first number."""
        return self.window + 1

    @property
    def ready(self) -> bool:
        return self._std.ready

    @property
    def value(self) -> float:
        """The last per-bar volatility (NaN during warm-up)."""
        return self._value

    def annualised(self, periods_per_year: float) -> float:
        """The last value times ``sqrt(periods_per_year)``."""
        return self._value * math.sqrt(periods_per_year)

    def update(self, close: float) -> float:
        """Take one close; return the per-bar volatility after it (NaN in warm-up)."""
        close = float(close)
        if not (close > 0.0 and math.isfinite(close)):
            raise ValueError(f"RealisedVolatility: closes must be positive, got {close!r}")
        prev, self._prev = self._prev, close
        if math.isnan(prev):
            return math.nan
        self._value = self._std.update(math.log(close / prev))
        return self._value

    def update_batch(self, closes: F64) -> F64:
        """:meth:`update` over a batch of closes, with state carried."""
        cs = np.asarray(closes, dtype=np.float64)
        if cs.size == 0:
            return np.empty(0, dtype=np.float64)
        if not (np.all(cs > 0.0) and np.all(np.isfinite(cs))):
            raise ValueError("RealisedVolatility: closes must be positive and finite")
        prevs = [self._prev, *cs[:-1].tolist()]
        first = 1 if math.isnan(prevs[0]) else 0  # the very first close has no return
        pairs = zip(cs[first:].tolist(), prevs[first:], strict=True)
        logs = np.array([math.log(c / p) for c, p in pairs], dtype=np.float64)
        out = np.full(cs.size, math.nan, dtype=np.float64)
        if logs.size:
            out[first:] = self._std.update_batch(logs)
            self._value = float(out[-1])
        self._prev = float(cs[-1])
        return out


class TradeStats:
    """Rolling record of the last ``window`` closed trades' results, for Kelly sizing.

    :meth:`update` takes one closed trade's result: its PnL, or better, its
    return (PnL / entry notional) so that trades of different sizes weigh alike;
    only signs and ratios matter. A result > 0 is a win, < 0 a loss, 0 a
    scratch (counted in :attr:`count` and in the win rate's denominator, but
    neither a win nor a loss).

    Feed it the strategy's *signal* trades, entry to exit, whether or not a
    position was taken: a Kelly sizer sizes 0 until ``min_trades`` trades have
    closed, so with only its own fills it would never start.

    O(1) per update: a ring buffer and running sums, recomputed exactly from the
    buffer each time it wraps (amortised O(1)) so rounding never accumulates.
    """

    __slots__ = ("window", "_buf", "_pos", "_count", "_n_win", "_n_loss", "_win", "_loss")

    def __init__(self, window: int = 50) -> None:
        if not (isinstance(window, int) and not isinstance(window, bool) and window >= 2):
            raise ValueError(f"TradeStats window must be an integer >= 2, got {window!r}")
        self.window = window
        self._buf = [0.0] * window
        self._pos = 0
        self._count = 0
        self._n_win = 0
        self._n_loss = 0
        self._win = 0.0  # sum of wins in the window
        self._loss = 0.0  # sum of |losses| in the window

    def update(self, result: float) -> None:
        """Record one closed trade's result (finite; ValueError otherwise)."""
        x = float(result)
        if not math.isfinite(x):
            raise ValueError(f"TradeStats: a trade's result must be finite, got {result!r}")
        if self._count >= self.window:
            self._drop(self._buf[self._pos])
        else:
            self._count += 1
        self._buf[self._pos] = x
        self._add(x)
        self._pos = (self._pos + 1) % self.window
        if self._pos == 0:
            self._recompute()

    def _add(self, x: float) -> None:
        if x > 0.0:
            self._n_win += 1
            self._win += x
        elif x < 0.0:
            self._n_loss += 1
            self._loss -= x

    def _drop(self, x: float) -> None:
        if x > 0.0:
            self._n_win -= 1
            self._win -= x
        elif x < 0.0:
            self._n_loss -= 1
            self._loss += x

    def _recompute(self) -> None:
        live = self._buf[: self._count]
        self._win = math.fsum(x for x in live if x > 0.0)
        self._loss = -math.fsum(x for x in live if x < 0.0)

    @property
    def count(self) -> int:
        """Closed trades in the window (at most ``window``)."""
        return self._count

    @property
    def wins(self) -> int:
        return self._n_win

    @property
    def losses(self) -> int:
        return self._n_loss

    @property
    def win_rate(self) -> float:
        """W = wins / count; NaN with no trades."""
        return self._n_win / self._count if self._count else math.nan

    @property
    def avg_win(self) -> float:
        """Mean result of the wins; NaN with none."""
        return self._win / self._n_win if self._n_win else math.nan

    @property
    def avg_loss(self) -> float:
        """Mean magnitude of the losses (a positive number); NaN with none."""
        return self._loss / self._n_loss if self._n_loss else math.nan

    @property
    def payoff(self) -> float:
        """R = avg win / avg loss; inf with wins and no losses, 0 with no wins, NaN if empty."""
        if not self._count:
            return math.nan
        if not self._n_win:
            return 0.0
        if not self._n_loss:
            return math.inf
        return self.avg_win / self.avg_loss

    def kelly(self) -> float:
        """Full Kelly fraction of the window, :func:`kelly_optimal` of W and R (NaN if empty)."""
        if not self._count:
            return math.nan
        return kelly_optimal(self.win_rate, self.payoff)


# -- pure sizing functions (raw base quantities, before cap, lot and minimums) -----------------


def kelly_optimal(win_rate: float, payoff: float) -> float:
    """Full Kelly fraction ``f* = W - (1 - W) / R`` of capital to bet.

    ``W`` (``win_rate``) in [0, 1]; ``R`` (``payoff``, avg win / avg loss) in
    [0, inf]. ``R = inf`` (no losses) gives ``f* = W``; ``R = 0`` (no wins)
    gives ``-inf`` unless ``W = 1``. Negative means no edge: do not bet.
    """
    if win_rate >= 1.0:
        return 1.0
    if payoff <= 0.0:
        return -math.inf
    return win_rate - (1.0 - win_rate) / payoff


def kelly_weight(
    stats: TradeStats, *, kelly_fraction: float, kelly_cap: float, min_trades: int
) -> float:
    """Share of the capital Kelly bets: ``min(kelly_fraction * f*, kelly_cap)``.

    0.0 below ``min_trades`` closed trades in ``stats`` or when ``f* <= 0``.
    """
    if stats.count < min_trades:
        return 0.0
    f = stats.kelly()
    if not f > 0.0:
        return 0.0
    return min(kelly_fraction * f, kelly_cap)


def fraction_qty(
    allocation: float, fraction: float, price: float, *, scale: float = 1.0, leverage: float = 1.0
) -> float:
    """Fixed fraction of the allocation: ``allocation * fraction * leverage * scale / price``.

    quote * 1 / (quote per base) = base. Evaluated left to right in this order,
    the engine's own, so that results are bit-identical to its sizing.
    """
    return allocation * fraction * leverage * scale / price


def notional_qty(notional: float, price: float) -> float:
    """Fixed notional: ``notional / price`` (quote / (quote per base) = base)."""
    return notional / price


def risk_qty(equity: float, risk: float, stop_distance: float | None) -> float:
    """Risk per trade: ``equity * risk / stop_distance``.

    ``equity * risk`` is the quote amount lost if the price moves
    ``stop_distance`` (quote per base, e.g. ``|entry - stop|``) against the
    position: quote / (quote per base) = base. 0.0 when the stop distance is
    missing, not positive or not finite.
    """
    if stop_distance is None or not (stop_distance > 0.0 and math.isfinite(stop_distance)):
        return 0.0
    return equity * risk / stop_distance


def atr_qty(equity: float, risk: float, atr: float | None, atr_mult: float) -> float:
    """Risk per trade with an ATR stop: :func:`risk_qty` with ``stop_distance = atr_mult * ATR``.

    ATR is Wilder's (:class:`~tickray.engine.indicators.ATR`, true ranges
    ``max(high - low, |high - prev close|, |low - prev close|)`` smoothed with
    ``(ATR * (n - 1) + TR) / n``), in quote per base. 0.0 while it is NaN
    (warm-up), zero or missing. (The report's sizer took ``max(high) - min(low)``
    over the window for an ATR: the window's whole range, several ATRs wide in a
    trend, so it sized positions too small; its ``min(size, 10 % of equity)``
    also compared a quantity with an amount of money.)
    """
    if atr is None or not (atr > 0.0 and math.isfinite(atr)):
        return 0.0
    return risk_qty(equity, risk, atr_mult * atr)


def vol_target_qty(
    allocation: float,
    target_vol: float,
    volatility: float | None,
    periods_per_year: float,
    price: float,
) -> float:
    """Volatility target: notional ``allocation * target_vol / (volatility * sqrt(ppy))``.

    ``volatility`` is the per-bar standard deviation of log returns
    (:class:`RealisedVolatility`), annualised by ``sqrt(periods_per_year)``; a
    position of that notional moves its allocation by ``target_vol`` a year (one
    standard deviation). Divided by ``price`` for base units. 0.0 while the
    volatility is NaN, zero or missing (a window of equal closes tells nothing).
    """
    if volatility is None or not (volatility > 0.0 and math.isfinite(volatility)):
        return 0.0
    return allocation * target_vol / (volatility * math.sqrt(periods_per_year)) / price


def inverse_vol_weights(vols: F64) -> F64:
    """Weights ``(1 / vol_i) / sum_j (1 / vol_j)`` over the run's symbols; they sum to 1.

    A low-volatility symbol gets more of the capital. A vol that is NaN, zero,
    negative or infinite gets weight 0 and the others share the whole; when no
    vol is usable (all NaN during warm-up, all zero) every symbol gets ``1 / n``.
    Naive risk parity: each symbol's volatility contribution is equal only when
    the symbols are uncorrelated. An empty array gives an empty array.
    """
    v = np.asarray(vols, dtype=np.float64)
    ok = np.isfinite(v) & (v > 0.0)
    if not ok.any():
        return np.full(v.shape, 1.0 / v.size if v.size else 0.0, dtype=np.float64)
    inv = np.zeros(v.shape, dtype=np.float64)
    inv[ok] = 1.0 / v[ok]
    out: F64 = inv / float(inv.sum())
    return out


def inverse_vol_qty(
    equity: float,
    weight: float | None,
    fraction: float,
    price: float,
    *,
    scale: float = 1.0,
    leverage: float = 1.0,
) -> float:
    """Inverse-volatility weight: ``equity * weight * fraction * leverage * scale / price``.

    ``weight`` is the symbol's entry of :func:`inverse_vol_weights` (summing to
    1 over the run's symbols). With equal volatilities it is ``1 / n`` and the
    size is the ``fraction`` method's with ``allocation = equity / n``. 0.0
    when the weight is missing, not positive or not finite.
    """
    if weight is None or not (weight > 0.0 and math.isfinite(weight)):
        return 0.0
    return equity * weight * fraction * leverage * scale / price


def order_qty(
    raw: float,
    *,
    equity: float,
    price: float,
    spec: SymbolSpec,
    max_position_fraction: float = 1.0,
    leverage: float = 1.0,
) -> float:
    """A raw base quantity made an order's: capped, floored to the lot, minimums applied.

    ``min(raw, max_position_fraction * equity * leverage / price)`` floored
    with ``spec.floor_qty``, then 0.0 unless ``spec.tradable`` (minimum
    quantity and notional). The cap bounds the position's notional by
    ``max_position_fraction * equity`` (its margin, under leverage). The
    result exceeds the cap only by ``floor_qty``'s float tolerance (a count of
    steps within ``1e-9 + 1e-15 * count`` of a whole number snaps to it). A raw
    quantity that is NaN or not positive gives 0.0.
    """
    if not raw > 0.0:
        return 0.0
    cap = max_position_fraction * equity * leverage / price
    qty = spec.floor_qty(min(raw, cap))
    return qty if spec.tradable(qty, price) else 0.0


def size(
    config: SizingConfig,
    *,
    equity: float,
    allocation: float,
    price: float,
    spec: SymbolSpec,
    stop_distance: float | None = None,
    atr: float | None = None,
    volatility: float | None = None,
    trade_stats: TradeStats | None = None,
    weight: float | None = None,
    scale: float = 1.0,
    leverage: float = 1.0,
) -> float:
    """Unsigned base quantity of a new full position under ``config``'s method.

    ``equity``: the account's equity now, valued in the symbol's quote asset.
    ``allocation``: the symbol's equal share of the capital, before ``fraction``
    (the engine's ``RunConfig.budget_for(symbol)``). ``price``: the reference
    price (the last close). ``stop_distance`` (risk), ``atr`` (atr),
    ``volatility`` (vol_target: per bar, from :class:`RealisedVolatility`),
    ``trade_stats`` (kelly: a :class:`TradeStats` of ``config.window`` trades)
    and ``weight`` (inverse_vol, risk_parity) are each read only by the method
    named. ``scale`` (>= 0) multiplies the raw quantity: a signal's confidence,
    a hedge leg's share. ``leverage`` (> 0; 1 on spot): a perpetual symbol's
    leverage; the ``fraction`` and ``inverse_vol`` methods size the margin, so
    it multiplies their notional, and the cap is on margin for every method.

    Returns a whole number of lots, at most ``max_position_fraction * equity *
    leverage / price``, and 0.0 below the symbol's minimums, with missing or
    degenerate inputs (see the module's docstring) and for a price or equity
    that is not a positive finite number.
    """
    if not (scale >= 0.0 and math.isfinite(scale)):
        raise ValueError(f"size: scale must be a finite number >= 0, got {scale!r}")
    if not (leverage > 0.0 and math.isfinite(leverage)):
        raise ValueError(f"size: leverage must be a positive number, got {leverage!r}")
    if not (price > 0.0 and math.isfinite(price) and equity > 0.0 and math.isfinite(equity)):
        return 0.0
    m = config.method_enum
    if m is SizingMethod.FRACTION:
        raw = fraction_qty(allocation, config.fraction, price, scale=scale, leverage=leverage)
    elif m in (SizingMethod.INVERSE_VOL, SizingMethod.RISK_PARITY):
        raw = inverse_vol_qty(
            equity, weight, config.fraction, price, scale=scale, leverage=leverage
        )
    else:
        raw = scale * _unscaled_qty(
            config,
            equity=equity,
            allocation=allocation,
            price=price,
            stop_distance=stop_distance,
            atr=atr,
            volatility=volatility,
            trade_stats=trade_stats,
        )
    return order_qty(
        raw,
        equity=equity,
        price=price,
        spec=spec,
        max_position_fraction=config.max_position_fraction,
        leverage=leverage,
    )


def _unscaled_qty(
    config: SizingConfig,
    *,
    equity: float,
    allocation: float,
    price: float,
    stop_distance: float | None,
    atr: float | None,
    volatility: float | None,
    trade_stats: TradeStats | None,
) -> float:
    """The raw quantity of the methods ``scale`` multiplies afterwards."""
    m = config.method_enum
    if m is SizingMethod.QUANTITY:
        assert config.quantity is not None  # required by the method (checked when built)
        return config.quantity
    if m is SizingMethod.NOTIONAL:
        assert config.notional is not None
        return notional_qty(config.notional, price)
    if m is SizingMethod.RISK:
        return risk_qty(equity, config.risk, stop_distance)
    if m is SizingMethod.ATR:
        return atr_qty(equity, config.risk, atr, config.atr_mult)
    if m is SizingMethod.VOL_TARGET:
        assert config.periods_per_year is not None
        return vol_target_qty(
            allocation, config.target_vol, volatility, config.periods_per_year, price
        )
    if m is SizingMethod.KELLY:
        if trade_stats is None:
            return 0.0
        if trade_stats.window != config.window:
            raise ValueError(
                f"size: trade_stats holds {trade_stats.window} trades, "
                f"sizing.window is {config.window}"
            )
        w = kelly_weight(
            trade_stats,
            kelly_fraction=config.kelly_fraction,
            kelly_cap=config.kelly_cap,
            min_trades=config.min_trades,
        )
        return allocation * w / price
    raise AssertionError(f"unhandled sizing method {m!r}")  # pragma: no cover


class SymbolSizer:
    """Sizes one symbol's new positions inside its simulation (the engine's ``Sizer``).

    Each symbol sizes from its own **sleeve**: ``allocation`` is its equal
    share of the starting capital and ``equity`` (given by the simulation at
    each decision) the sleeve's value now, its share plus its own realised and
    unrealised PnL. Sizes then never depend on how the other symbols' steps
    are grouped, and a run gives the same quantities in-process or on Ray.
    Per-bar inputs come from the bars the strategy has seen, the decision
    bar's included: Wilder's ATR (``atr``), the realised volatility of log
    returns (``vol_target``). Kelly learns from the strategy's own signal
    trades, entry to exit at the deciding closes, whether or not a position
    was taken (:meth:`on_signal`). ``inverse_vol`` and ``risk_parity`` propose
    the whole capital's share (``fraction`` of ``allocation x symbols``) and
    the portfolio cuts each to its weight (tickray.risk.portfolio).
    """

    def __init__(
        self,
        config: SizingConfig,
        spec: SymbolSpec,
        *,
        allocation: float,
        leverage: float = 1.0,
        symbols: int = 1,
    ) -> None:
        self.config = config
        self.spec = spec
        self.allocation = allocation
        self.leverage = leverage
        self.symbols = symbols
        m = config.method_enum
        self._atr = ATR(config.atr_window) if m is SizingMethod.ATR else None
        self._vol = RealisedVolatility(config.vol_window) if m is SizingMethod.VOL_TARGET else None
        self.stats = TradeStats(config.window) if m is SizingMethod.KELLY else None
        self._atr_at: F64 = np.empty(0)
        self._vol_at: F64 = np.empty(0)
        self._side = 0
        self._entry = math.nan

    def prepare(self, high: F64, low: F64, close: F64) -> None:
        """A new chunk of bars: the per-bar inputs of its decisions."""
        if self._atr is not None:
            self._atr_at = self._atr.update_batch(high, low, close)
        if self._vol is not None:
            self._vol_at = self._vol.update_batch(close)

    def quantity(
        self, j: int, price: float, scale: float, equity: float, stop: float | None
    ) -> float:
        """The unsigned size of a full position decided at bar ``j`` of the chunk."""
        m = self.config.method_enum
        weight = None
        allocation = self.allocation
        if m in (SizingMethod.INVERSE_VOL, SizingMethod.RISK_PARITY):
            weight = 1.0  # the whole capital's share; the portfolio cuts it to its weight
            equity = max(equity, 0.0) * self.symbols
        return size(
            self.config,
            equity=equity,
            allocation=allocation,
            price=price,
            spec=self.spec,
            stop_distance=stop,
            atr=float(self._atr_at[j]) if self._atr is not None else None,
            volatility=float(self._vol_at[j]) if self._vol is not None else None,
            trade_stats=self.stats,
            weight=weight,
            scale=scale,
            leverage=self.leverage,
        )

    def on_signal(self, side: int, price: float) -> None:
        """The strategy's direction became ``side`` at ``price``: a signal trade in the
        old direction (if any) closed there, with return ``old * (price / entry - 1)``."""
        if self.stats is None or side == self._side:
            return
        if self._side != 0 and self._entry > 0:
            self.stats.update(self._side * (price / self._entry - 1.0))
        self._side = side
        self._entry = price if side != 0 else math.nan
