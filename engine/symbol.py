"""One symbol's simulation inside a symbol actor: strategy, order manager, bar fills.

Time model (all times ns UTC, steps on the epoch-aligned grid of ``sync``):

* A bar with open time ``o`` closes at ``o + interval``; the strategy sees it
  then. A step ``(t0, t1]`` processes the bars whose close is in it.
* A change of the strategy's target at a bar's close becomes an
  :class:`OrderIntent` stamped with that close time. Intents leave in the
  step's outbox and the portfolio decides at the step's end ``t1``.
* An approved market order reaches the symbol's :class:`~tickray.engine.barvenue.BarVenue`
  at ``t1`` and fills at the open of the first bar opening at or after ``t1``,
  paying the taker fee on the fill's notional. With ``sync`` equal to the bar
  interval this is "signal at bar close, fill at the next bar's open". The
  run's :class:`~tickray.engine.config.ExecutionConfig` adds a spread, an
  impact model, a volume participation cap (partial fills over several bars)
  and trading hours; with its defaults the fill is the bare open.
* The mark at a step boundary is the close of the last bar closed at or before it.

``advance`` may run several steps in one call ("fusing"): it stops at the end
of the first step with an intent for the portfolio, or at ``until``. Fills and
order updates of the steps it ran through are cut off by the clock at each
settlement (``engine.steps.split_outbox``), so the portfolio books them at the
same boundaries as when stepping one boundary at a time.

Hedge position mode (perpetual futures) keeps a long and a short position
(legs 0 and 1), each with its own order book at the venue (its own average
entry, realised PnL and, for isolated margin, its own margin). The strategy's
:meth:`~tickray.engine.strategies.BarStrategy.leg_targets` opens and closes
each; a leg closing sends a reduce-only intent on that leg before a leg
opening sends its own. Fills carry their position side and the leg's
position after them. ``position`` is the net of the legs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from tickray.engine.approval import check_cash
from tickray.engine.barvenue import BarVenue
from tickray.engine.calendar import Calendar
from tickray.engine.clock import ceil_to, iso
from tickray.engine.config import AccountConfig, ExecutionConfig
from tickray.engine.events import (
    EMPTY_FILLS,
    EMPTY_FUNDING,
    EMPTY_UPDATES,
    FUNDING_DTYPE,
    Fill,
    Liquidity,
    OrderIntent,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Outbox,
    PositionSide,
    RiskAction,
    RiskDecision,
    Side,
    TimeInForce,
    fill_batch,
    update_batch,
)
from tickray.engine.impact import NoImpact, impact_from_spec
from tickray.engine.instruments import SymbolSpec, book_fill, fill_fee, held_to_sell
from tickray.engine.latency import latency_from_spec, symbol_seed
from tickray.engine.matching import SPOT_CUT, SPOT_NOTHING_HELD, Fees
from tickray.engine.orders import OrderRequest, OrderRules
from tickray.engine.perpetual import liquidation_fee
from tickray.engine.perpstate import PerpSymbolState
from tickray.engine.signals import (
    Bar,
    Context,
    ContextState,
    Direction,
    Entry,
    Signal,
    SignalError,
    SignalStrategy,
    StrategyError,
    exit_requests,
)
from tickray.engine.strategies import BarStrategy

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class BarBatch(Protocol):
    """Columns of consecutive bars of one symbol (``ts`` is the open time)."""

    @property
    def ts(self) -> I64: ...
    @property
    def open(self) -> F64: ...
    @property
    def high(self) -> F64: ...
    @property
    def low(self) -> F64: ...
    @property
    def close(self) -> F64: ...
    @property
    def volume(self) -> F64: ...


class BarSource(Protocol):
    """Where a symbol's bars come from, in time order, batch by batch.

    ``next_chunk`` gives None when no bar will ever come again (the end of a
    history), and an empty batch when none has come yet (a live feed between
    bars): the simulation asks again at its next step.
    """

    def next_chunk(self) -> BarBatch | None: ...


class Sizer(Protocol):
    """How a symbol sizes a new position (tickray.risk.sizing.SymbolSizer); without
    one the full position is ``allocation / price`` floored to the lot."""

    def prepare(self, high: F64, low: F64, close: F64) -> None: ...

    def quantity(
        self, j: int, price: float, scale: float, equity: float, stop: float | None
    ) -> float: ...

    def on_signal(self, side: int, price: float) -> None: ...


class SimulationError(RuntimeError):
    """An inconsistency between the portfolio's messages and this symbol's state."""


class SymbolSim:
    """Strategy, order manager and bar venue of one symbol (pure, no I/O).

    With the default execution settings (no spread, cap, impact or calendar) a
    market order fills whole at the next open, and a lean path does exactly
    what the venue would (:class:`_OpenFills`) without its per-order
    machinery. ``fast_path = False`` sends every order through the venue; a
    test checks that both give the same bytes.
    """

    fast_path: ClassVar[bool] = True

    def __init__(
        self,
        spec: SymbolSpec,
        strategy: BarStrategy | SignalStrategy,
        source: BarSource,
        *,
        interval_ns: int,
        sync_ns: int,
        t0: int,
        account: AccountConfig,
        allocation: float,
        budget: float = 0.0,
        self_approve: bool = False,
        execution: ExecutionConfig | None = None,
        calendar: Calendar | None = None,
        maker_fee: float | None = None,
        perp: PerpSymbolState | None = None,
        sizer: Sizer | None = None,
        stops: tuple[float | None, float | None] = (None, None),
    ) -> None:
        self.spec = spec
        self.sizer = sizer
        # stop management of event strategies' positions: (break-even R, trail R)
        self.break_even_r, self.trail_r = stops
        self._stop: tuple[int, float] | None = None  # (stop-loss order id, initial stop)
        self._best = math.nan  # best close since the managed stop's entry
        self.perp = perp
        self._funding_rows: list[tuple[int, int, float, float, float, float]] = []
        self.symbol = spec.symbol
        self.strategy = strategy
        self.source = source
        self.interval = interval_ns
        self.sync = sync_ns
        self.time = t0
        self.account = account
        self.allocation = allocation
        self.allow_short = account.allow_short
        self.self_approve = self_approve
        self.budget = budget  # sub-account cash at the start (self-approval)
        self.flow = 0.0  # cash flow of this symbol's fills, fees included
        self.pending_cash = 0.0  # cash estimates of self-approved unfilled orders
        self._estimates: dict[int, float] = {}
        self._realized: list[float] = []  # per fill of the current advance
        self._positions: list[float] = []
        self.committed = 0.0  # position + approved-unfilled + undecided intents
        self.last_close = math.nan
        self.open_intents: dict[int, OrderIntent] = {}
        self._next_id = 1
        ex = execution or ExecutionConfig()
        maker = maker_fee if maker_fee is not None else ex.maker_fee
        maker = account.taker_fee if maker is None else maker

        def new_venue() -> BarVenue:
            return BarVenue(
                spec,
                interval_ns,
                spread_bps=ex.spread_bps,
                spread_ticks=ex.spread_ticks,
                participation=ex.participation,
                fees=Fees(maker=maker, taker=account.taker_fee),
                impact=impact_from_spec(ex.impact),
                rules=OrderRules(ex.rules),
                calendar=calendar,
                hours=ex.hours,
                latency=latency_from_spec(ex.latency, seed=symbol_seed(ex.seed, spec.symbol)),
            )

        self.venue = new_venue()
        self._observe = not isinstance(self.venue.impact, NoImpact)
        plain = (
            not ex.spread_bps
            and not ex.spread_ticks
            and ex.participation is None
            and not self._observe
            and calendar is None
            and not ex.latency
        )
        self.base_fee = account.fee_asset == "base"
        self.venue.base_fee = self.base_fee
        long_only = perp is None and not account.allow_short
        self.venue.long_only = long_only
        # event strategies: orders of every type through the venue (signals module)
        self.signals = isinstance(strategy, SignalStrategy)
        if self.signals and perp is not None and perp.hedge:
            raise SignalError(
                f"{spec.symbol}: strategy '{strategy.name}' emits signals for one position; "
                "hedge mode needs a leg strategy"
            )
        lean = plain and self.fast_path and not self.signals
        self._exits: dict[int, tuple[Signal, float]] = {}  # intent id -> (signal, target qty)
        self._children: set[int] = set()  # exit orders placed for filled entries
        # bound methods, not lambdas: a checkpoint pickles the whole simulation
        self._ctx_state = ContextState(spec, self._position_now, self._avg_now, self._working)
        self._ctx = Context(self._ctx_state)
        self._started = False
        self._next_timer = 0
        self.flatten_reason = ""  # set by a FLATTEN control: close everything at the next step
        self._fast = _OpenFills(spec, account.taker_fee, self.base_fee, long_only) if lean else None
        # hedge mode: the leg not in use (see _use); leg 0 is the long, 1 the short
        self.hedge = perp is not None and perp.hedge
        self._leg = 0
        self._pside = PositionSide.LONG if self.hedge else PositionSide.BOTH
        self._next_fill = 1
        self._leg_code = 0  # the legs' last target (bit 0 long open, bit 1 short open)
        self._other: _Leg | None = None
        if self.hedge:
            other = new_venue()
            other.long_only = long_only
            fast = _OpenFills(spec, account.taker_fee, self.base_fee, long_only) if lean else None
            self._other = _Leg(other, fast)
        self._since = 0  # arrival time of the orders the venue is working
        self._vj = 0  # next bar of the chunk the venue has not seen
        self._obs = 0  # next close of the chunk not yet observed by the venue
        self._prev_target = 0
        self._exhausted = False
        empty_i = np.empty(0, dtype=np.int64)
        empty_f = np.empty(0, dtype=np.float64)
        self._open_ts: I64 = empty_i
        self._close_ts: I64 = empty_i
        self._open: F64 = empty_f
        self._high: F64 = empty_f
        self._low: F64 = empty_f
        self._close: F64 = empty_f
        self._volume: F64 = empty_f
        self._mark: F64 = empty_f
        self._mlow: F64 = empty_f
        self._mhigh: F64 = empty_f
        self._fund_bars: I64 = empty_i
        self._fund_recs: I64 = empty_i
        self._fk = 0
        self._targets = np.empty(0, dtype=np.int8)
        self._changes: I64 = empty_i
        self._ci = 0
        self._i = 0
        self._n = 0

    @property
    def _book_of(self) -> _OpenFills | BarVenue:
        return self._fast if self._fast is not None else self.venue

    @property
    def position(self) -> float:
        """The position after every fill so far (hedge mode: the net of both legs)."""
        if self._other is None:
            return self._book_of.position
        o = self._other
        other = o.fast.position if o.fast is not None else o.venue.position
        return self.spec.round_qty(self._book_of.position + other)

    @property
    def leg_position(self) -> float:
        """The position of the leg in use (one-way mode: the position)."""
        return self._book_of.position

    @property
    def avg_price(self) -> float:
        return self._book_of.avg_price

    @property
    def realized(self) -> float:
        return self._book_of.realized

    def book_fill(self, q: float, price: float) -> float:
        """Book a signed fill on this symbol's position (average cost); its realised PnL."""
        book = self._book_of
        book._book(q, price)
        book._positions.pop()
        return book._realized.pop()

    def _has_orders(self) -> bool:
        own = bool(self._fast.pending) if self._fast is not None else _busy(self.venue)
        if own or self._other is None:
            return own
        o = self._other
        return bool(o.fast.pending) if o.fast is not None else _busy(o.venue)

    def _use(self, leg: int) -> None:
        """Hedge mode: work on leg ``leg`` (its book, committed size, venue cursor, margin)."""
        if leg == self._leg:
            return
        o = self._other
        assert o is not None and self.perp is not None
        self.venue, o.venue = o.venue, self.venue
        self._fast, o.fast = o.fast, self._fast
        self.committed, o.committed = o.committed, self.committed
        self._since, o.since = o.since, self._since
        self._vj, o.vj = o.vj, self._vj
        self._obs, o.obs = o.obs, self._obs
        self._leg = leg
        self.perp.leg = leg
        self._pside = PositionSide.SHORT if leg else PositionSide.LONG

    def _tag(self, fills: list[Fill], n0: int) -> None:
        """Hedge mode: number the leg's new fills in the symbol's sequence and mark their side."""
        if self._other is None:
            return
        for m in range(n0, len(fills)):
            f = fills[m]
            if f.fill_id > 0:
                fills[m] = f._replace(fill_id=self._next_fill, position_side=self._pside)
                self._next_fill += 1

    # -- data ---------------------------------------------------------------------------
    def _load(self) -> bool:
        if self._exhausted:
            return False
        chunk = self.source.next_chunk()
        if chunk is None or len(chunk.ts) == 0:
            # None: the history ended; an empty batch: none yet (a live feed), ask again
            # at the next step
            self._exhausted = chunk is None
            return False
        close = np.ascontiguousarray(chunk.close, dtype=np.float64)
        high = np.ascontiguousarray(chunk.high, dtype=np.float64)
        low = np.ascontiguousarray(chunk.low, dtype=np.float64)
        strategy = self.strategy
        if self.sizer is not None:
            self.sizer.prepare(high, low, close)
        try:
            targets = self._targets_of(strategy, high, low, close)
        except (SimulationError, SignalError):
            raise
        except Exception as exc:
            when = iso(int(chunk.ts[0]) + self.interval)
            raise StrategyError.wrap(
                exc, self.symbol, strategy.name, f"the bars from {when}"
            ) from exc
        prev = np.empty_like(targets)
        prev[0] = self._prev_target
        prev[1:] = targets[:-1]
        self._prev_target = int(targets[-1])
        if self._observe:
            self.venue.observe(self._close[self._obs :])
            if self._other is not None:
                self._other.venue.observe(self._close[self._other.obs :])
        if self._other is not None:
            self._other.vj = self._other.obs = 0
        self._open_ts = np.ascontiguousarray(chunk.ts, dtype=np.int64)
        self._close_ts = self._open_ts + self.interval
        self._open = np.ascontiguousarray(chunk.open, dtype=np.float64)
        self._high = high
        self._low = low
        self._close = close
        self._volume = np.ascontiguousarray(chunk.volume, dtype=np.float64)
        self._vj = 0
        self._obs = 0
        self._targets = targets
        self._changes = (
            np.flatnonzero(targets != prev).astype(np.int64)
            if not self.signals
            else np.empty(0, dtype=np.int64)
        )
        if self.perp is not None:
            self._mark, self._mlow, self._mhigh = self.perp.bar_marks(
                self._open_ts, self._close_ts, self._low, self._high, self._close
            )
            self._fund_bars, self._fund_recs = self.perp.funding_in(self._close_ts)
            self._fk = 0
        else:
            self._mark = self._close
        self._ci = 0
        self._i = 0
        self._n = len(targets)
        return True

    def _targets_of(
        self, strategy: BarStrategy | SignalStrategy, high: F64, low: F64, close: F64
    ) -> npt.NDArray[np.int8]:
        """The chunk's per-bar targets (hedge mode: one code per bar, bit 0 the long
        leg open, bit 1 the short leg open; an event strategy has none)."""
        if isinstance(strategy, SignalStrategy):
            return np.zeros(len(close), dtype=np.int8)
        if self.hedge:
            if strategy.needs_ohlc:
                longs, shorts = strategy.leg_targets_ohlc(high, low, close)
            else:
                longs, shorts = strategy.leg_targets(close)
            if not self.allow_short:
                shorts = np.zeros_like(shorts)
            out: npt.NDArray[np.int8] = (longs | (shorts << 1)).astype(np.int8)
            return out
        if strategy.needs_ohlc:
            targets = strategy.targets_ohlc(high, low, close)
        else:
            targets = strategy.targets(close)
        if not self.allow_short:
            targets = np.maximum(targets, 0).astype(np.int8)
        return targets

    # -- the step -----------------------------------------------------------------------
    def advance(self, until: int, decisions: Sequence[RiskDecision]) -> Outbox:
        """Apply the portfolio's decisions, then run to the first step with news or ``until``."""
        t = self.time
        if until <= t:
            raise SimulationError(f"{self.symbol}: advance to {until} but already at {t}")
        updates: list[OrderUpdate] = []
        fills: list[Fill] = []
        intents: list[OrderIntent] = []
        self._apply(decisions, t, updates)
        if self.flatten_reason:
            self._flatten(t, self.flatten_reason, updates)
            self.flatten_reason = ""
        stop = until
        fixed = False
        segments: list[tuple[I64, F64]] = []
        if self.signals:
            stop = self._advance_signals(until, fills, updates, intents, segments)
        while not self.signals:
            if self._i >= self._n and not self._load():
                break
            i, n = self._i, self._n
            if not fixed:
                event = self._first_event(i, n)
                if event < n:
                    stop = min(until, ceil_to(int(self._close_ts[event]), self.sync))
                    fixed = True
            k = i + int(self._close_ts[i:n].searchsorted(stop, side="right"))
            if k > i:
                if self.perp is None:
                    self._process(i, k, fills, updates, intents)
                elif self.hedge:
                    self._process_hedge(i, k, fills, updates, intents)
                else:
                    self._process_perp(i, k, fills, updates, intents)
                segments.append((self._close_ts[i:k], self._mark[i:k]))
                self._i = k
            if k < n:
                break
        mark_ts, mark_px = self._marks(t, stop, segments)
        if len(segments):
            self.last_close = float(segments[-1][1][-1])
        self.time = stop
        batch = fill_batch(fills, self._realized, self._positions) if fills else EMPTY_FILLS
        self._realized, self._positions = [], []
        ups = update_batch(updates) if updates else EMPTY_UPDATES
        funding = EMPTY_FUNDING
        if self._funding_rows:
            funding = np.array(self._funding_rows, dtype=FUNDING_DTYPE)
            self._funding_rows = []
        return Outbox(
            self.symbol, stop, intents, ups, batch, mark_ts, mark_px, self.position, funding
        )

    def finish(self, t: int, decisions: Sequence[RiskDecision], reason: str) -> list[OrderUpdate]:
        """End of run at ``t``: apply last decisions, then cancel every open order."""
        updates: list[OrderUpdate] = []
        self._apply(decisions, t, updates)
        for leg in (0, 1) if self.hedge else (0,):
            self._use(leg)
            self._cancel_all(t, reason, [], updates)
        return updates

    def _flatten(self, t: int, reason: str, updates: list[OrderUpdate]) -> None:
        """Cancel every open order and close every position at market (the portfolio's
        kill switch). The closing orders need no approval: they only reduce."""
        for leg in (0, 1) if self.hedge else (0,):
            self._use(leg)
            self._cancel_all(t, reason, [], updates)
            pos = self.leg_position
            if pos == 0.0:
                continue
            side = Side.SELL if pos > 0 else Side.BUY
            intent = self._new_intent(t, side, abs(pos), self.last_close, "flatten", True)
            updates.append(_update(intent, OrderStatus.SUBMITTED, t, intent.qty, reason))
            decision = RiskDecision(
                self.symbol, intent.intent_id, t, RiskAction.APPROVE, intent.qty, reason
            )
            self._apply([decision], t, updates)

    def _cancel_all(
        self, t: int, reason: str, fills: list[Fill], updates: list[OrderUpdate]
    ) -> None:
        """Cancel every open order of the leg in use."""
        if self._fast is not None:
            for p in self._fast.cancel_all(t, reason, updates):
                self.committed = self.spec.round_qty(self.committed - p.side * p.qty)
                self.pending_cash -= self._estimates.pop(p.order_id, 0.0)
            return
        for o in self.venue.open_orders():
            self.venue.cancel_now(o.order_id, t, reason)
        self._collect(fills, updates)

    # -- event strategies -----------------------------------------------------------------
    def _advance_signals(
        self,
        until: int,
        fills: list[Fill],
        updates: list[OrderUpdate],
        intents: list[OrderIntent],
        segments: list[tuple[I64, F64]],
    ) -> int:
        """Bars one at a time up to ``until``, each event through the strategy's callbacks;
        stops at the end of the first step where a signal asks the portfolio."""
        stop = until
        lo = self._i
        while True:
            if self._i >= self._n:
                if self._i > lo:
                    segments.append((self._close_ts[lo : self._i], self._mark[lo : self._i]))
                if not self._load():
                    return stop
                lo = self._i
            j = self._i
            if self._close_ts[j] > stop:
                break
            self._bar_events(j, fills, updates, intents)
            self._i = j + 1
            if intents and stop == until and not self.self_approve:
                stop = min(until, ceil_to(int(self._close_ts[j]), self.sync))
        if self._i > lo:
            segments.append((self._close_ts[lo : self._i], self._mark[lo : self._i]))
        return stop

    def _bar_events(
        self, j: int, fills: list[Fill], updates: list[OrderUpdate], intents: list[OrderIntent]
    ) -> None:
        """Bar ``j``: fills at its open (and a perpetual's margin events), each fill to
        ``on_fill``, the timers due, then ``on_bar`` at its close."""
        strategy = self.strategy
        assert isinstance(strategy, SignalStrategy)
        state = self._ctx_state
        close_ts = int(self._close_ts[j])
        if not self._started:
            self._started = True
            state.now = int(self._open_ts[j])
            self._signal(self._call(strategy.on_start, self._ctx), j, state.now, intents, updates)
            if strategy.timer_ns:
                self._next_timer = ceil_to(state.now, strategy.timer_ns)
        n0 = len(fills)
        if self.perp is None:
            if self._has_orders():
                self._fill_pending(j, j + 1, fills, updates)
        else:
            self._process_perp(j, j + 1, fills, updates, intents)
        for f in fills[n0:]:
            state.now = f.ts_event
            sig = self._call(strategy.on_fill, f, self._ctx)
            self._signal(sig, j, f.ts_event, intents, updates, f.price)
        if self._stop is not None:
            self._manage_stop(j, close_ts, updates)
        step = strategy.timer_ns
        while step and self._next_timer <= close_ts:
            state.now = self._next_timer
            self._signal(
                self._call(strategy.on_timer, self._next_timer, self._ctx),
                j,
                state.now,
                intents,
                updates,
            )
            self._next_timer += step
        state.now = close_ts
        state.bars += 1
        bar = Bar(
            int(self._open_ts[j]),
            close_ts,
            float(self._open[j]),
            float(self._high[j]),
            float(self._low[j]),
            float(self._close[j]),
            float(self._volume[j]),
        )
        self._signal(self._call(strategy.on_bar, bar, self._ctx), j, close_ts, intents, updates)

    def _call(self, callback: Callable[..., Signal | None], *args: object) -> Signal | None:
        """One strategy callback; what it raises comes back naming the symbol and the time."""
        try:
            return callback(*args)
        except Exception as exc:
            when = iso(self._ctx_state.now)
            raise StrategyError.wrap(exc, self.symbol, self.strategy.name, when) from exc

    def _sleeve(self, price: float) -> float:
        """This symbol's sleeve of the capital now: its share plus its own PnL."""
        return self.budget + self.flow + self.position * price

    def _manage_stop(self, j: int, ts: int, updates: list[OrderUpdate]) -> None:
        """Break-even and trailing adjustment of the position's stop-loss at bar ``j``'s
        close (tickray.engine.riskconfig.MonitorConfig)."""
        assert self._stop is not None
        oid, initial = self._stop
        o = self.venue.orders.get(oid)
        pos = self.position
        if o is None or not o.is_open or o.held or pos == 0.0 or o.stop is None:
            if o is None or not o.is_open:
                self._stop = None
            return
        side = 1 if pos > 0 else -1
        close = float(self._close[j])
        best = self._best
        self._best = close if math.isnan(best) else (max if side > 0 else min)(best, close)
        entry = self.avg_price
        risk = abs(entry - initial)
        if risk <= 0.0:
            return
        gain = (self._best - entry) * side
        want = o.stop
        if self.break_even_r is not None and gain >= self.break_even_r * risk:
            want = max(want, entry) if side > 0 else min(want, entry)
        if self.trail_r is not None and gain >= self.trail_r * risk:
            level = self._best - side * self.trail_r * risk
            want = max(want, level) if side > 0 else min(want, level)
        want = self.spec.round_price_against(want, Side.SELL if side > 0 else Side.BUY)
        if (want - o.stop) * side > 0:
            v = self.venue
            v.now = max(v.now, ts)
            v.modify(oid, stop_price=want)
            v.run_actions(ts)
            self._collect([], updates)

    def _position_now(self) -> float:
        return self.position

    def _avg_now(self) -> float:
        return self.avg_price

    def _working(self) -> bool:
        """Whether an order of the strategy is still on its way: an intent the portfolio
        has not decided, or an order open at the venue."""
        return bool(self.open_intents) or bool(self.venue.open_orders())

    def _signal(
        self,
        sig: Signal | None,
        c: int,
        ts: int,
        intents: list[OrderIntent],
        updates: list[OrderUpdate],
        ref: float | None = None,
    ) -> None:
        """Turn a signal into an intent (see tickray.engine.signals)."""
        if sig is None:
            return
        strategy = self.strategy
        assert isinstance(strategy, SignalStrategy)
        if not isinstance(sig, Signal):
            raise SignalError(
                f"{self.symbol}: strategy '{strategy.name}' returned {sig!r}, not a Signal"
            )
        if self._ctx_state.bars < strategy.warmup:
            return
        price = float(self._close[c]) if ref is None else ref
        s = sig.side.value
        for name, level, want in (
            ("take_profit", sig.take_profit, 1),
            ("stop_loss", sig.stop_loss, -1),
        ):
            if level is not None and sig.entry is Entry.MARKET and want * s * (level - price) <= 0:
                raise SignalError(
                    f"{self.symbol} at {ts}: signal.{name} {level} is on the wrong side of the "
                    f"{sig.side.name} entry near {price}"
                )
        # what the last signal left working (an unfilled entry, exits) is replaced
        v = self.venue
        v.now = max(v.now, ts)
        for o in v.open_orders():
            v.cancel_now(o.order_id, ts, "replaced by a new signal")
        self._collect([], updates)  # cancels fill nothing
        for oid in sorted(self.open_intents):
            # undecided intents of earlier signals stay; their exits follow the latest signal
            self._exits.pop(oid, None)
        if self.sizer is None:
            size = self.spec.floor_qty(self.allocation * sig.confidence / price)
        else:
            self.sizer.on_signal(s, price)
            stop = abs(price - sig.stop_loss) if sig.stop_loss is not None else None
            if stop is None and sig.trail is not None and sig.trail.unit.value == "price":
                stop = sig.trail.distance
            size = self.sizer.quantity(c, price, sig.confidence, self._sleeve(price), stop)
        desired = s * size
        if desired < 0 and not self.allow_short:
            desired = 0.0  # a spot account without shorting: a sell signal means flat
            sig = Signal(Direction.FLAT)
        delta = self.spec.round_qty(desired - self.committed)
        if delta == 0:
            if sig.has_exits and desired != 0:
                if self.open_intents:  # the position is still on its way: exits follow it
                    self._exits[max(self.open_intents)] = (sig, abs(desired))
                elif self.spec.round_qty(self.position - desired) == 0:
                    self._place_exits(sig, abs(desired), 0, ts)
                    self._collect([], updates)
            return
        qty = abs(delta)
        if not self.spec.tradable(qty, price):
            return
        side = Side.BUY if delta > 0 else Side.SELL
        order_type, limit, stop = OrderType.MARKET, None, None
        if sig.entry is Entry.LIMIT:
            order_type, limit = OrderType.LIMIT, self.spec.round_price(float(sig.price or 0))
        elif sig.entry is Entry.STOP:
            order_type, stop = OrderType.STOP_MARKET, self.spec.round_price(float(sig.price or 0))
        intent = self._new_intent(
            ts, side, qty, price, strategy.name, desired == 0, order_type, limit, stop
        )
        if sig.has_exits and desired != 0:
            self._exits[intent.intent_id] = (sig, abs(desired))
        self._send(intent, intents, updates)

    def _place_exits(self, sig: Signal, qty: float, parent: int, ts: int) -> None:
        """The signal's exits for a position of ``qty``: reduce-only, one cancels the
        others, held until ``parent`` fills (0: placed now)."""
        reqs = exit_requests(sig, qty, self.spec)
        v = self.venue
        ids = []
        self._stop, self._best = None, math.nan
        for req in reqs:
            oid = self._next_id
            self._next_id += 1
            v.submit(req, parent=parent, order_id=oid)
            self._children.add(oid)
            ids.append(oid)
            if req.tag == "stop_loss" and req.stop_price is not None:
                self._stop = (oid, req.stop_price)
        if len(ids) > 1:
            v.link_oco(ids)
        v.run_actions(ts)

    def _first_event(self, i: int, n: int) -> int:
        """Index of the first bar in ``[i, n)`` whose target change needs the portfolio.

        Fills need no answer: the clock hands them to the portfolio at the
        boundary of their step even while this symbol runs ahead. A
        self-approving symbol needs nothing from the portfolio, so nothing
        stops it before ``until``.
        """
        event = n
        if self.self_approve:
            return event
        ch = self._changes
        while self._ci < len(ch) and ch[self._ci] < i:
            self._ci += 1
        if self._ci < len(ch):
            event = min(event, int(ch[self._ci]))
        return event

    def _process(
        self,
        i: int,
        k: int,
        fills: list[Fill],
        updates: list[OrderUpdate],
        intents: list[OrderIntent],
    ) -> None:
        """Bars ``[i, k)`` in order: each bar's fills at its open, then its target at its close."""
        ch = self._changes
        while self._ci < len(ch) and ch[self._ci] < k:
            c = int(ch[self._ci])
            self._ci += 1
            if self._has_orders():
                self._fill_pending(i, c + 1, fills, updates)
            if self._fast is not None:  # what it sends at c's close is active from c + 1
                self._fast._hint = c + 1
            self._on_target(int(self._targets[c]), c, intents, updates)
        if self._has_orders():
            self._fill_pending(i, k, fills, updates)

    def _cash_of(self, f: Fill) -> float:
        """The quote cash a fill moves (a buy's fee in base takes no quote)."""
        if self.base_fee and f.side == Side.BUY and f.fee >= 0:
            return -f.qty * f.price
        return -f.side * f.qty * f.price - f.fee

    def _take_shortfall(self, book: _OpenFills | BarVenue) -> None:
        """Buys that booked less than they traded (fees in base) leave less committed."""
        if book.base_shortfall:
            self.committed = self.spec.round_qty(self.committed - book.base_shortfall)
            book.base_shortfall = 0.0

    def _process_perp(
        self,
        i: int,
        k: int,
        fills: list[Fill],
        updates: list[OrderUpdate],
        intents: list[OrderIntent],
    ) -> None:
        """Bars ``[i, k)`` of a perpetual: fills at opens, then the liquidation check on
        each bar's mark extremes, funding at its close, then the target change.

        Bars are taken in runs over which the position cannot change (no working
        order, no target change, no funding inside), so the liquidation check
        is one vectorised comparison per run.
        """
        perp = self.perp
        assert perp is not None
        ch = self._changes
        fb = self._fund_bars
        lo = i
        while lo < k:
            if self._has_orders():
                # A bar that opens beyond the liquidation price liquidates before any
                # order can fill at that open (the exchange was first).
                pos = self.leg_position
                if pos != 0.0:
                    lp = perp.liquidation_price(pos, self.avg_price)
                    m_open = float(self._open[lo]) * float(self._mark[lo] / self._close[lo])
                    if lp > 0.0 and (m_open <= lp if pos > 0 else m_open >= lp):
                        self._liquidate(lo, lp, fills, updates)
                n0 = len(fills)
                self._fill_pending(lo, lo + 1, fills, updates)
                self._margin_fills(fills, n0)
            hi = self._run_end(lo, k)
            pos = self.leg_position
            if pos != 0.0:
                lp = perp.liquidation_price(pos, self.avg_price)
                if lp > 0.0:
                    hit = self._mlow[lo:hi] <= lp if pos > 0 else self._mhigh[lo:hi] >= lp
                    if hit.any():
                        j = lo + int(np.argmax(hit))
                        self._liquidate(j, lp, fills, updates)
                        hi = j + 1
            last = hi - 1
            while self._fk < len(fb) and fb[self._fk] == last:
                self._settle_funding(last, int(self._fund_recs[self._fk]))
                self._fk += 1
            if self._ci < len(ch) and ch[self._ci] == last:
                self._ci += 1
                self._on_target(int(self._targets[last]), last, intents, updates)
            lo = hi

    def liquidation_fill_price(self, lp: float, side: Side) -> float:
        """A liquidation's fill price: ``lp`` rounded to the tick against the trader."""
        price = self.spec.round_price_against(lp, side)
        return price if price > 0.0 else self.spec.tick_size

    def _process_hedge(
        self,
        i: int,
        k: int,
        fills: list[Fill],
        updates: list[OrderUpdate],
        intents: list[OrderIntent],
    ) -> None:
        """Bars ``[i, k)`` of a perpetual in hedge mode: as :meth:`_process_perp`, with
        each leg's orders filled in turn (long first) and the legs liquidated one by
        one (isolated margin) or together (cross margin)."""
        perp = self.perp
        assert perp is not None
        ch = self._changes
        fb = self._fund_bars
        lo = i
        while lo < k:
            if self._has_orders():
                ratio = float(self._mark[lo] / self._close[lo])
                m_open = np.array([float(self._open[lo]) * ratio])
                self._hedge_liquidations(lo, lo + 1, m_open, m_open, fills, updates)
                for leg in (0, 1):
                    self._use(leg)
                    n0 = len(fills)
                    self._fill_pending(lo, lo + 1, fills, updates)
                    self._tag(fills, n0)
                    self._margin_fills(fills, n0)
            hi = self._run_end(lo, k)
            j = self._hedge_liquidations(
                lo, hi, self._mlow[lo:hi], self._mhigh[lo:hi], fills, updates
            )
            if j >= 0:
                hi = j + 1
            last = hi - 1
            while self._fk < len(fb) and fb[self._fk] == last:
                for leg in (0, 1):
                    self._use(leg)
                    self._settle_funding(last, int(self._fund_recs[self._fk]))
                self._fk += 1
            if self._ci < len(ch) and ch[self._ci] == last:
                self._ci += 1
                self._on_legs(int(self._targets[last]), last, intents, updates)
            lo = hi

    def _hedge_liquidations(
        self,
        lo: int,
        hi: int,
        low: F64,
        high: F64,
        fills: list[Fill],
        updates: list[OrderUpdate],
    ) -> int:
        """Liquidate the legs whose mark in bars ``[lo, hi)`` (adverse extremes ``low``
        and ``high``) reaches their liquidation price, at the first bar one does;
        returns that bar, or -1."""
        perp = self.perp
        assert perp is not None
        legs: list[tuple[float, float]] = []  # (position, entry) per leg
        for leg in (0, 1):
            self._use(leg)
            legs.append((self.leg_position, self.avg_price))
        if perp.isolated:
            hits: list[tuple[int, int, float]] = []
            for leg, (pos, entry) in enumerate(legs):
                if pos == 0.0:
                    continue
                self._use(leg)
                lp = perp.liquidation_price(pos, entry)
                if lp <= 0.0:
                    continue
                hit = low <= lp if pos > 0 else high >= lp
                if hit.any():
                    hits.append((lo + int(np.argmax(hit)), leg, lp))
            if not hits:
                return -1
            first = min(h[0] for h in hits)
            for j, leg, lp in hits:
                if j == first:
                    self._use(leg)
                    self._liquidate(j, lp, fills, updates)
            return first
        (lpos, lentry), (spos, sentry) = legs
        lower, upper = perp.hedge_liquidation(lpos, lentry, spos, sentry)
        if lower <= 0.0 and upper == math.inf:
            return -1
        hit = (low <= lower) | (high >= upper)
        if not hit.any():
            return -1
        j = lo + int(np.argmax(hit))
        lp = upper
        if low[j - lo] <= lower:
            # (lower is inf when below maintenance at any price: closed at the bar's mark)
            lp = lower if lower != math.inf else float(self._mark[j])
        # the fee of both closes is capped at what the symbol's margin has left after them
        left = perp.wallet()
        notional = 0.0
        for pos, entry in legs:
            if pos != 0.0:
                side = Side.SELL if pos > 0 else Side.BUY
                price = self.liquidation_fill_price(lp, side)
                left += pos * (price - entry)
                notional += abs(pos) * price
        total = liquidation_fee(perp.liquidation_fee, 1.0, notional, left)
        for leg, (pos, _) in enumerate(legs):
            if pos != 0.0:
                self._use(leg)
                side = Side.SELL if pos > 0 else Side.BUY
                share = abs(pos) * self.liquidation_fill_price(lp, side) / notional
                self._liquidate(j, lp, fills, updates, fee_cap=total * share)
        return j

    def _run_end(self, lo: int, k: int) -> int:
        """The end of the run of bars from ``lo`` (before ``k``) over which a perpetual's
        position cannot change: one bar while orders work, else up to the next target
        change or funding settlement, that bar included."""
        ch, fb = self._changes, self._fund_bars
        hi = lo + 1 if self._has_orders() else k
        while self._ci < len(ch) and ch[self._ci] < lo:
            self._ci += 1
        if self._ci < len(ch):
            hi = min(hi, int(ch[self._ci]) + 1)
        while self._fk < len(fb) and fb[self._fk] < lo:
            self._fk += 1  # pragma: no cover - settled in an earlier run
        if self._fk < len(fb):
            hi = min(hi, int(fb[self._fk]) + 1)
        return hi

    def _margin_fills(self, fills: list[Fill], n0: int) -> None:
        """Feed this advance's fills from index ``n0`` to the margin state."""
        perp = self.perp
        assert perp is not None
        base = len(self._positions) - (len(fills) - n0)
        for m, f in enumerate(fills[n0:]):
            after = self._positions[base + m]
            before = after - f.side * f.qty
            perp.on_fill(before, after, f.price, self._realized[base + m], f.fee)

    def _settle_funding(self, bar: int, record: int) -> None:
        perp = self.perp
        assert perp is not None
        perp.next_funding = record + 1
        pos = self.leg_position
        if pos == 0.0:
            return
        mark = perp.funding_mark(record, float(self._mark[bar]))
        rate = float(perp.funding.rate[record])
        payment = round(pos * mark * rate, 8)
        perp.on_funding(payment)
        self.flow -= payment
        settled = int(self._close_ts[bar])
        self._funding_rows.append((int(perp.funding.ts[record]), settled, rate, mark, pos, payment))

    def _liquidate(
        self,
        j: int,
        lp: float,
        fills: list[Fill],
        updates: list[OrderUpdate],
        fee_cap: float | None = None,
    ) -> None:
        """Close the whole position (of the leg in use) at its liquidation price in bar
        ``j`` and cancel its open orders, as the exchange's liquidation engine does.
        ``fee_cap`` replaces the margin left after the close as the fee's cap."""
        perp = self.perp
        assert perp is not None
        pos = self.leg_position
        side = Side.SELL if pos > 0 else Side.BUY
        price = self.liquidation_fill_price(lp, side)
        ts = int(self._open_ts[j])
        n0 = len(fills)
        self._cancel_all(ts, f"liquidation at mark {lp:.8g}", fills, updates)
        self._tag(fills, n0)
        wallet = perp.wallet()
        realized = self.book_fill(-pos, price)
        qty = abs(pos)
        left = wallet + realized if fee_cap is None else fee_cap
        fee = liquidation_fee(perp.liquidation_fee, qty, price, left)
        perp.liquidations += 1
        fill = Fill(
            self.symbol,
            0,
            -perp.liquidations,
            ts,
            side,
            qty,
            price,
            fee,
            Liquidity.LIQUIDATION,
            self._pside,
        )
        fills.append(fill)
        self._realized.append(realized)
        self._positions.append(self.leg_position)
        self.flow += pos * price - fee
        self.committed = self.spec.round_qty(self.committed - pos)
        perp.on_fill(pos, 0.0, price, realized, fee)
        # Intents still waiting for the portfolio were sized to close the position
        # first: that part no longer exists.
        left = qty
        for oid, it in sorted(self.open_intents.items()):
            if left <= 0.0 or it.side * pos > 0 or it.position_side != self._pside:
                continue
            cut = min(it.qty, left)
            left = self.spec.round_qty(left - cut)
            self.open_intents[oid] = it._replace(qty=self.spec.round_qty(it.qty - cut))
            self.committed = self.spec.round_qty(self.committed - it.side * cut)

    def _fill_pending(
        self, lo: int, hi: int, fills: list[Fill], updates: list[OrderUpdate]
    ) -> None:
        """Let the venue work its orders on bars ``[lo, hi)`` opening at or after their arrival.

        Each bar is shown to the venue once; bars it skips (no working orders)
        still feed its volatility estimate when an impact model needs it.
        """
        if self._fast is not None:
            fast = self._fast
            for o, f in fast.fill(self._open_ts, self._open, lo, hi, fills, updates):
                self.flow += (
                    self._cash_of(f) if self.base_fee else -f.side * f.qty * f.price - f.fee
                )
                self.pending_cash -= self._estimates.pop(o.order_id, 0.0)
            if fast.ended:
                for o, filled in fast.ended:  # the unfilled rest is no longer committed
                    self.committed = self.spec.round_qty(self.committed - o.side * (o.qty - filled))
                    self.pending_cash -= self._estimates.pop(o.order_id, 0.0)
                fast.ended = []
            if fast.base_shortfall:
                self._take_shortfall(fast)
            self._realized.extend(self._fast.take_realized())
            self._positions.extend(self._fast.take_positions())
            return
        v = self.venue
        if not _busy(v):
            return
        j = max(self._vj, lo + int(self._open_ts[lo:hi].searchsorted(self._since, side="left")))
        while j < hi and _busy(v):
            if self._observe and self._obs < j:
                v.observe(self._close[self._obs : j])
            v.on_bar(
                int(self._open_ts[j]),
                float(self._open[j]),
                float(self._high[j]),
                float(self._low[j]),
                float(self._close[j]),
                float(self._volume[j]),
            )
            j += 1
            self._obs = j
        self._vj = max(self._vj, j)
        self._collect(fills, updates)

    def _collect(self, fills: list[Fill], updates: list[OrderUpdate]) -> None:
        """Move the venue's fills and updates into this advance's outbox, and account them."""
        new_fills, realized, positions, ups = self.venue.take_events()
        if new_fills:
            for f in new_fills:
                self.flow += self._cash_of(f)
                if f.order_id in self._children:  # an exit moved the position unasked
                    self.committed = self.spec.round_qty(self.committed + f.side * f.qty)
            self._take_shortfall(self.venue)
            fills.extend(new_fills)
            self._realized.extend(realized)
            self._positions.extend(positions)
        if self._other is not None and ups:
            ups = [u._replace(position_side=self._pside) for u in ups]
        for u in ups:
            if u.order_id in self._children:
                if u.status in _ENDED:
                    self._children.discard(u.order_id)
                continue
            if u.status in _ENDED:
                self.pending_cash -= self._estimates.pop(u.order_id, 0.0)
                if u.status is not OrderStatus.FILLED:
                    self.committed = self.spec.round_qty(
                        self.committed - u.side * (u.qty - u.filled_qty)
                    )
        updates.extend(ups)

    def _on_target(
        self, target: int, c: int, intents: list[OrderIntent], updates: list[OrderUpdate]
    ) -> None:
        price = float(self._close[c])
        if self.sizer is None:
            desired = target * self.spec.floor_qty(self.allocation / price)
        else:
            self.sizer.on_signal(target, price)
            desired = target * self.sizer.quantity(c, price, 1.0, self._sleeve(price), None)
        self._intent(desired, target == 0, c, intents, updates)

    def _on_legs(
        self, code: int, c: int, intents: list[OrderIntent], updates: list[OrderUpdate]
    ) -> None:
        """Hedge mode: the legs' new targets (bit 0 long open, bit 1 short open). Only
        a leg whose target changed trades, the closing one first; each open leg is
        sized at the strategy's ``leg_fraction`` of the allocation."""
        changed = code ^ self._leg_code
        self._leg_code = code
        assert isinstance(self.strategy, BarStrategy)  # hedge mode runs leg strategies
        alloc = self.allocation * self.strategy.leg_fraction
        price = float(self._close[c])
        if self.sizer is None:
            size = self.spec.floor_qty(alloc / price)
        else:
            scale = self.strategy.leg_fraction
            size = self.sizer.quantity(c, price, scale, self._sleeve(price), None)
        wants = []
        for leg, sign in ((0, 1.0), (1, -1.0)):
            if not changed >> leg & 1:
                continue
            self._use(leg)
            desired = sign * size if code >> leg & 1 else 0.0
            wants.append((abs(desired) >= abs(self.committed), leg, desired))
        for _, leg, desired in sorted(wants):
            self._use(leg)
            self._intent(desired, desired == 0.0, c, intents, updates)

    def _intent(
        self,
        desired: float,
        reduce_only: bool,
        c: int,
        intents: list[OrderIntent],
        updates: list[OrderUpdate],
    ) -> None:
        """An intent moving the (leg's) committed position to ``desired``."""
        price = float(self._close[c])
        delta = self.spec.round_qty(desired - self.committed)
        qty = abs(delta)
        if qty == 0 or not self.spec.tradable(qty, price):
            return
        side = Side.BUY if delta > 0 else Side.SELL
        intent = self._new_intent(
            int(self._close_ts[c]), side, qty, price, self.strategy.name, reduce_only
        )
        self._send(intent, intents, updates)

    def _new_intent(
        self,
        ts: int,
        side: Side,
        qty: float,
        ref_price: float,
        tag: str,
        reduce_only: bool,
        order_type: OrderType = OrderType.MARKET,
        price: float | None = None,
        stop: float | None = None,
    ) -> OrderIntent:
        """An intent of the leg in use, numbered and counted in its committed position."""
        intent = OrderIntent(
            self.symbol,
            self._next_id,
            ts,
            side,
            order_type,
            qty,
            price,
            stop,
            TimeInForce.GTC,
            reduce_only,
            ref_price,
            tag,
            self._pside,
        )
        self._next_id += 1
        self.committed = self.spec.round_qty(self.committed + side * qty)
        self.open_intents[intent.intent_id] = intent
        return intent

    def _send(
        self, intent: OrderIntent, intents: list[OrderIntent], updates: list[OrderUpdate]
    ) -> None:
        """To the portfolio with the step's outbox, or decided here (symbol approval)."""
        if not self.self_approve:
            intents.append(intent)
            return
        ts = intent.ts_event
        updates.append(_update(intent, OrderStatus.SUBMITTED, ts, intent.qty, ""))
        self._apply([self._self_decide(intent)], ts, updates)

    def _self_decide(self, it: OrderIntent) -> RiskDecision:
        """The cash check against this symbol's own sub-account (see engine.approval)."""
        if self._fast is not None:
            working = sum(o.side * o.qty for o in self._fast.pending)
        else:
            working = sum(o.side * o.remaining for o in self.venue.open_orders())
        proj = self.spec.round_qty(self.position + working)
        locked = -proj * it.ref_price * (1.0 + self.account.short_margin) if proj < 0 else 0.0
        free = self.budget + self.flow + self.pending_cash - locked
        chk = check_cash(self.account, self.spec, it.side, it.qty, proj, it.ref_price, free)
        if chk.action != RiskAction.REJECT:
            self._estimates[it.intent_id] = chk.cash_estimate
            self.pending_cash += chk.cash_estimate
        return RiskDecision(it.symbol, it.intent_id, it.ts_event, chk.action, chk.qty, chk.reason)

    def _apply(self, decisions: Sequence[RiskDecision], t: int, updates: list[OrderUpdate]) -> None:
        """Approved intents become market orders at the venue at ``t``; rejected ones end."""
        for d in sorted(decisions, key=lambda d: d.intent_id):
            intent = self.open_intents.pop(d.intent_id, None)
            if intent is None:
                raise SimulationError(f"{self.symbol}: decision for unknown intent {d.intent_id}")
            if self.hedge:
                self._use(1 if intent.position_side == PositionSide.SHORT else 0)
            if self.perp is not None and d.action != RiskAction.REJECT:
                if intent.reduce_only:
                    d = self._reduce_only(intent, d)
                elif d.qty > intent.qty:  # cut by a liquidation since it was sent
                    why = "cut: the position it was to close was liquidated"
                    d = d._replace(
                        action=RiskAction.RESIZE if intent.qty > 0 else RiskAction.REJECT,
                        qty=intent.qty,
                        reason=why,
                    )
            if d.action == RiskAction.REJECT:
                self._exits.pop(intent.intent_id, None)
                self.committed = self.spec.round_qty(self.committed - intent.side * intent.qty)
                updates.append(_update(intent, OrderStatus.REJECTED, t, intent.qty, d.reason))
                continue
            qty = d.qty
            if not 0 < qty <= intent.qty:
                raise SimulationError(
                    f"{self.symbol}: approved qty {qty} outside (0, {intent.qty}]"
                )
            self.committed = self.spec.round_qty(self.committed - intent.side * (intent.qty - qty))
            if self._fast is not None:
                self._fast.pending.append(_Pending(intent, qty, t))
                updates.append(_update(intent, OrderStatus.ACCEPTED, t, qty, d.reason))
                continue
            v = self.venue
            v.now = max(v.now, t)
            self._since = t
            v.submit(
                OrderRequest(
                    side=intent.side,
                    qty=qty,
                    order_type=intent.order_type,
                    price=intent.price,
                    stop_price=intent.stop_price,
                    tag=intent.tag,
                ),
                order_id=intent.intent_id,
                announce=False,
                note=d.reason,
            )
            exits = self._exits.pop(intent.intent_id, None)
            if exits is not None:
                self._place_exits(exits[0], exits[1], intent.intent_id, t)
            v.run_actions(t)
            self._collect([], updates)

    def _reduce_only(self, it: OrderIntent, d: RiskDecision) -> RiskDecision:
        """A reduce-only order meets a position a liquidation may have closed since its
        intent: it is cut to what it can still reduce, or rejected."""
        pos = self.leg_position
        room = abs(pos) if pos * it.side < 0 else 0.0
        if room <= 0.0:
            why = "reduce-only: no position left to reduce"
            return d._replace(action=RiskAction.REJECT, qty=0.0, reason=why)
        if d.qty > room:
            return d._replace(action=RiskAction.RESIZE, qty=room, reason="reduce-only: cut")
        return d

    def _marks(self, t: int, stop: int, segments: list[tuple[I64, F64]]) -> tuple[I64, F64]:
        if stop - t == self.sync and t % self.sync == 0:
            # One boundary (the common case): its mark is the last close processed.
            last = float(segments[-1][1][-1]) if segments else self.last_close
            return np.array([stop], dtype=np.int64), np.array([last])
        first = ceil_to(t + 1, self.sync)
        bounds = np.arange(first, stop + 1, self.sync, dtype=np.int64)
        marks = np.full(len(bounds), self.last_close, dtype=np.float64)
        for close_ts, close in segments:
            idx = close_ts.searchsorted(bounds, side="right") - 1
            hit = idx >= 0
            marks[hit] = close[idx[hit]]
        return bounds, marks


class _Leg:
    """Hedge mode: the state of the leg not in use (see ``SymbolSim._use``)."""

    __slots__ = ("venue", "fast", "committed", "since", "vj", "obs")

    def __init__(self, venue: BarVenue, fast: _OpenFills | None) -> None:
        self.venue = venue
        self.fast = fast
        self.committed = 0.0
        self.since = 0
        self.vj = 0
        self.obs = 0


class _Pending(NamedTuple):
    intent: OrderIntent
    qty: float
    active_from: int

    @property
    def order_id(self) -> int:
        return self.intent.intent_id

    @property
    def side(self) -> Side:
        return self.intent.side


class _OpenFills:
    """The bar venue's rule for plain market orders, without its per-order machinery:
    each fills whole at the open of the first bar opening at or after its arrival, as a
    taker, with the venue's fee rounding and average-cost book."""

    def __init__(
        self, spec: SymbolSpec, taker_fee: float, base_fee: bool = False, long_only: bool = False
    ) -> None:
        self.spec = spec
        self.taker_fee = taker_fee
        self.base_fee = base_fee
        self.base_shortfall = 0.0
        self.dust = 0.0
        self.long_only = long_only
        # orders ended without filling in full (spot sells cut to what is held), with
        # the quantity they filled
        self.ended: list[tuple[_Pending, float]] = []
        self.pending: list[_Pending] = []
        self.position = 0.0
        self.avg_price = 0.0
        self.realized = 0.0
        self._realized: list[float] = []
        self._positions: list[float] = []
        self._next_fill = 1
        # the index the last search ended at: an order sent at a bar's close usually
        # becomes active at the bar the previous call stopped before
        self._hint = 0

    def _first_open(self, open_ts: I64, lo: int, hi: int, t: int) -> int:
        """Index in ``[lo, hi]`` of the first bar opening at or after ``t``."""
        h = self._hint
        if lo <= h < hi and open_ts[h] >= t and (h == lo or open_ts[h - 1] < t):
            return h
        return lo + int(open_ts[lo:hi].searchsorted(t, side="left"))

    def fill(
        self,
        open_ts: I64,
        open_px: F64,
        lo: int,
        hi: int,
        fills: list[Fill],
        updates: list[OrderUpdate],
    ) -> list[tuple[_Pending, Fill]]:
        done: list[tuple[_Pending, Fill]] = []
        still: list[_Pending] = []
        for o in self.pending:
            j = self._first_open(open_ts, lo, hi, o.active_from)
            if j >= hi:
                still.append(o)
                continue
            price, ts, qty = float(open_px[j]), int(open_ts[j]), o.qty
            it = o.intent
            cut = False
            if self.long_only and o.side == Side.SELL:
                held = held_to_sell(self.position, self.spec)
                if qty > held:  # as the venue does: what is held, the rest canceled
                    if held <= 0:
                        updates.append(
                            OrderUpdate(
                                it.symbol,
                                it.intent_id,
                                ts,
                                OrderStatus.CANCELED,
                                it.side,
                                it.order_type,
                                o.qty,
                                0.0,
                                None,
                                SPOT_NOTHING_HELD,
                                it.position_side,
                            )
                        )
                        self.ended.append((o, 0.0))
                        continue
                    qty, cut = held, True
            booked, fee, self.dust = fill_fee(
                o.side, qty, price, self.taker_fee, self.spec, self.dust, self.base_fee
            )
            self.base_shortfall += qty - booked
            f = Fill(
                self.spec.symbol, o.order_id, self._next_fill, ts, o.side, qty, price, fee, _TAKER
            )
            self._next_fill += 1
            fills.append(f)
            self._book(o.side * booked, price)
            if cut:
                for status, px, why in (
                    (OrderStatus.PARTIALLY_FILLED, price, ""),
                    (OrderStatus.CANCELED, None, SPOT_CUT),
                ):
                    updates.append(
                        OrderUpdate(
                            it.symbol,
                            it.intent_id,
                            ts,
                            status,
                            it.side,
                            it.order_type,
                            o.qty,
                            qty,
                            px,
                            why,
                            it.position_side,
                        )
                    )
                self.ended.append((o, qty))
            else:
                updates.append(
                    OrderUpdate(
                        it.symbol,
                        it.intent_id,
                        ts,
                        OrderStatus.FILLED,
                        it.side,
                        it.order_type,
                        qty,
                        qty,
                        price,
                        "",
                        it.position_side,
                    )
                )
                done.append((o, f))
        self.pending = still
        self._hint = hi
        return done

    def _book(self, q: float, price: float) -> None:
        self.position, self.avg_price, realized = book_fill(
            self.position, self.avg_price, q, price, self.spec
        )
        self.realized += realized
        self._realized.append(realized)
        self._positions.append(self.position)

    def take_realized(self) -> list[float]:
        out, self._realized = self._realized, []
        return out

    def take_positions(self) -> list[float]:
        out, self._positions = self._positions, []
        return out

    def cancel_all(self, t: int, reason: str, updates: list[OrderUpdate]) -> list[_Pending]:
        for o in self.pending:
            updates.append(_update(o.intent, OrderStatus.CANCELED, t, o.qty, reason))
        out, self.pending = self.pending, []
        return out


_TAKER = Liquidity.TAKER


def _busy(v: BarVenue) -> bool:
    """Orders at the venue, or on their way to it (latency)."""
    return bool(v.working) or v.next_action_ts() is not None


_ENDED = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
)


def _update(it: OrderIntent, status: OrderStatus, ts: int, qty: float, reason: str) -> OrderUpdate:
    return OrderUpdate(
        it.symbol,
        it.intent_id,
        ts,
        status,
        it.side,
        it.order_type,
        qty,
        0.0,
        it.price,
        reason,
        it.position_side,
    )
