"""Orders matched against a replayed L2 book, with queue positions (see :mod:`tickray.engine.book`).

* Taker fills walk the book level by level from the best price, at each
  level's price, for at most its visible quantity (less what our earlier
  takers already took). A market order takes what the book holds and the rest
  expires; a marketable limit takes down to its limit and rests the remainder.
* Resting orders fill as makers at their own price, through the queue model.
* Stop and touch triggers watch the last trade price (``trigger="trade"``) or
  the best quote (``"quote"``: the ask for buys, the bid for sells); trailing
  triggers follow the best such price since the order reached the venue.
* Impact, when a model is set, moves taker fills further, with the traded
  volume of the last ``impact_window`` of market trades as reference volume
  and an EWMA volatility of trade prices sampled at each processed message.

A strategy drives the venue through :class:`TickStrategy` callbacks, at most
once per processed market message that concerns it (a fill, a trigger, a move
of the best price by ``wake_ticks``) or on its timer, never per market event.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

import numpy as np

from tickray.engine.book import (
    OUT_FILL,
    RET_END,
    RET_TIME,
    RET_WAKE,
    SRC_QUOTE,
    SRC_TRADE,
    TRADE,
    TRAIL_NONE,
    TRAIL_PCT,
    TRAIL_TICKS,
    L2Book,
    MarketEvents,
    QueueModel,
    validate_events,
)
from tickray.engine.calendar import Calendar
from tickray.engine.events import Liquidity, OrderStatus, Side
from tickray.engine.impact import EwmaVolatility, ImpactModel, NoImpact
from tickray.engine.instruments import SymbolSpec
from tickray.engine.latency import LatencyModel
from tickray.engine.matching import Fees, Venue
from tickray.engine.orders import OrderRules, SimOrder, TrailUnit, trigger_direction

_NEVER = int(np.iinfo(np.int64).max)


class TickStrategy(Protocol):
    """A strategy on market events. It acts through the venue's commands (``submit``, ...)."""

    def on_start(self, venue: L2Venue) -> None: ...
    def on_wake(self, venue: L2Venue) -> None: ...


class L2Venue(Venue):
    """One symbol's venue on an L2 book."""

    def __init__(
        self,
        spec: SymbolSpec,
        *,
        fees: Fees | None = None,
        latency: LatencyModel | None = None,
        impact: ImpactModel | None = None,
        rules: OrderRules | None = None,
        calendar: Calendar | None = None,
        hours: str = "wait",
        queue: QueueModel | None = None,
        tops: bool = True,
        impact_window_ns: int = 60_000_000_000,
    ) -> None:
        super().__init__(
            spec,
            fees=fees,
            latency=latency,
            impact=impact,
            rules=rules,
            calendar=calendar,
            hours=hours,
        )
        self.book = L2Book(spec.tick_size, spec.step_size, queue=queue, tops=tops)
        self._slots: dict[int, int] = {}  # book slot -> order id
        self.strategy: TickStrategy | None = None
        self.timer_ns = 0
        self.wake_ticks = 0
        self.wake_on_fill = True
        self._next_timer = _NEVER
        self._started = False
        self._window = impact_window_ns
        self._trades: deque[tuple[int, float]] = deque()
        self._window_volume = 0.0
        self._vol = EwmaVolatility(100)
        self._uses_impact = not isinstance(self.impact, NoImpact)
        # the market trade that woke the strategy: (ts, price, qty, aggressor side)
        self.last_trade: tuple[int, float, float, int] | None = None
        self.book.wake_on_move(1)  # stop at the first message that leaves a two-sided book

    # -- the strategy ---------------------------------------------------------------------
    def attach(
        self,
        strategy: TickStrategy,
        *,
        timer_ns: int = 0,
        wake_ticks: int = 0,
        wake_on_fill: bool = True,
        wake_on_trade: bool = False,
    ) -> None:
        """Call ``strategy.on_wake`` every ``timer_ns``, when the best price moves
        ``wake_ticks``, (``wake_on_fill``) after fills and triggers of its orders,
        and (``wake_on_trade``) after every market trade, which ``last_trade``
        then holds."""
        if timer_ns < 0 or wake_ticks < 0:
            raise ValueError("timer_ns and wake_ticks must be >= 0")
        self.strategy = strategy
        self.timer_ns = timer_ns
        self.wake_ticks = wake_ticks
        self.wake_on_fill = wake_on_fill
        self.book.wake_on_trade(wake_on_trade)

    # -- replay -------------------------------------------------------------------------
    def run(self, ev: MarketEvents, until: int = _NEVER) -> int:
        """Replay ``ev`` (one batch, in order) up to ``until``; returns the rows processed.

        Actions due after the batch's last event wait for the next batch, or
        for :meth:`flush` at the end of the data.
        """
        validate_events(ev)
        book = self.book
        ticks = book.prepare(ev)
        n = len(ev.ts)
        i = 0
        while i < n:
            nxt = self.next_action_ts()
            stop = min(until, _NEVER if nxt is None else nxt, self._next_timer)
            j, why, outs = book.run(ev, ticks, i, stop)
            if j > i:
                self.now = max(self.now, int(ev.ts[j - 1]))
                if self._uses_impact:
                    self._observe(ev, i, j)
            i = j
            started = False
            if not self._started and None not in (book.best_bid_tick(), book.best_ask_tick()):
                self._start()
                started = True  # that stop was the start: on_start has run, no extra wake
            if outs:
                # name each output's order now: settling one may free a slot another reuses
                owners = [self._slots.get(slot) for slot, _, _, _ in outs]
                for oid, (slot, kind, tick, qty) in zip(owners, outs, strict=True):
                    self._settle(oid, slot, kind, tick, qty)
            woke = (why == RET_WAKE and not started) or (bool(outs) and self.wake_on_fill)
            self.last_trade = None
            if why == RET_WAKE and j > 0 and ev.kind[j - 1] == TRADE:
                self.last_trade = (
                    int(ev.ts[j - 1]),
                    float(ev.price[j - 1]),
                    float(ev.qty[j - 1]),
                    int(ev.side[j - 1]),
                )
            if why == RET_TIME:
                if stop == until and (nxt is None or nxt > until) and self._next_timer > until:
                    break
                woke = self._advance_to(stop) or woke
            if woke:
                self._wake()
                nxt = self.next_action_ts()
                # zero latency: no need to re-enter the loop; but at the batch's end they
                # wait, as the next batch may open with events at this very time, which
                # come first (the same order as in one batch: a replay is the same however
                # its events are split into batches)
                if nxt is not None and nxt <= self.now and i < n and ev.ts[i] > self.now:
                    self.run_actions(self.now)
            if why == RET_END:
                break
        return i

    def _advance_to(self, t: int) -> bool:
        """Carry out actions due by ``t``; True when the strategy's timer fired."""
        self.now = max(self.now, t)
        self.run_actions(t)
        if self._next_timer <= t:
            self._next_timer += self.timer_ns
            return True
        return False

    def flush(self, until: int) -> None:
        """No more market data up to ``until``: carry out the actions and timers due by then."""
        while True:
            nxt = self.next_action_ts()
            t = min(_NEVER if nxt is None else nxt, self._next_timer)
            if t > until:
                break
            if self._advance_to(t):
                self._wake()
        self.now = max(self.now, until)

    def _start(self) -> None:
        """The book has both sides for the first time: the strategy may start."""
        self._started = True
        if self.strategy is None:
            self.book.wake_on_move(0)
            return
        if self.timer_ns:
            self._next_timer = self.now + self.timer_ns
        self.strategy.on_start(self)
        self.book.wake_on_move(self.wake_ticks)

    def _wake(self) -> None:
        if self.strategy is None or not self._started:
            return
        self.strategy.on_wake(self)
        self.book.wake_on_move(self.wake_ticks)

    def _observe(self, ev: MarketEvents, i: int, j: int) -> None:
        """Feed the impact model's inputs: trailing traded volume and trade-price volatility."""
        trades = np.flatnonzero(ev.kind[i:j] == TRADE)
        if not len(trades):
            return
        rows = trades + i
        for k in rows:
            q = float(ev.qty[k])
            self._trades.append((int(ev.ts[k]), q))
            self._window_volume += q
        self._vol.update_many(ev.price[rows])
        horizon = self.now - self._window
        while self._trades and self._trades[0][0] < horizon:
            self._window_volume -= self._trades.popleft()[1]

    def _impact_inputs(self) -> tuple[float, float]:
        return max(self._window_volume, 0.0), self._vol.value

    # -- kernel outputs -----------------------------------------------------------------
    def _settle(self, oid: int | None, slot: int, kind: int, tick: int, qty: float) -> None:
        """Book one kernel output for order ``oid``, unless it ended meanwhile (an OCO sibling
        filled by the same market event: at most one member of a group fills)."""
        if oid is None:
            return
        o = self.orders[oid]
        if not o.is_open or o.slot != slot:
            return
        ts = self.now
        if kind == OUT_FILL:
            left = self.book.slot_left(slot)
            if left <= 0:
                self._drop_slot(o)
            self._fill(
                o, qty, self.spec.round_price(tick * self.spec.tick_size), Liquidity.MAKER, ts
            )
            if o.is_open and o.slot < 0 and o.req.display_qty is not None:
                self._rest_slice(o)  # the next iceberg slice joins the back of the queue
        else:
            self._drop_slot(o)
            self._on_trigger(o, ts, self.spec.round_price(tick * self.spec.tick_size))

    def _drop_slot(self, o: SimOrder) -> None:
        if o.slot >= 0:
            self._slots.pop(o.slot, None)
            self.book.release(o.slot)
            o.slot = -1

    # -- the market model hooks -----------------------------------------------------------
    def _take_liquidity(
        self, side: Side, qty: float, limit: float | None
    ) -> list[tuple[float, float]]:
        lim = None if limit is None else self.book.tick_of(limit)
        ts = self.spec.tick_size
        return [(self.spec.round_price(t * ts), q) for t, q in self.book.take(int(side), qty, lim)]

    def _available(self, side: Side, qty: float, limit: float) -> float:
        return self.book.available(int(side), qty, self.book.tick_of(limit))

    def _would_take(self, side: Side, price: float) -> bool:
        return self.book.crosses(int(side), self.book.tick_of(price))

    def _rest(self, o: SimOrder, qty: float) -> None:
        assert o.price is not None
        o.slot = self.book.place(int(o.side), self.book.tick_of(o.price), qty)
        self._slots[o.slot] = o.order_id

    def _arm(self, o: SimOrder, ts: int) -> None:
        book = self.book
        req = o.req
        direction = trigger_direction(o.side, req.order_type)
        source = SRC_QUOTE if req.trigger == "quote" else SRC_TRADE
        ref = self._reference(o.side, source)
        trail, distance, peak = TRAIL_NONE, 0.0, 0.0
        if req.trailing:
            assert req.trail is not None
            if ref is None:
                self._close(o, OrderStatus.REJECTED, ts, "trailing stop: no price to trail yet")
                return
            peak = float(ref)
            if req.trail.unit is TrailUnit.PERCENT:
                trail, distance = TRAIL_PCT, o.trail_distance
                frac = (1.0 - distance) if direction == -1 else (1.0 + distance)
                tick = math.floor(peak * frac + 1e-9) if direction == -1 else math.ceil(peak * frac)
            else:
                trail = TRAIL_TICKS
                distance = float(round(o.trail_distance / self.spec.tick_size))
                tick = int(peak - distance) if direction == -1 else int(peak + distance)
        else:
            assert o.stop is not None
            tick = book.tick_of(o.stop)
        if ref is not None and (ref >= tick if direction == 1 else ref <= tick):
            self._on_trigger(o, ts, self.spec.round_price(ref * self.spec.tick_size))
            return
        o.slot = book.arm(
            int(o.side), tick, direction, source=source, trail=trail, distance=distance, peak=peak
        )
        self._slots[o.slot] = o.order_id

    def _reference(self, side: Side, source: int) -> int | None:
        book = self.book
        if source == SRC_TRADE:
            t = book.last_trade_tick
            if t is not None:
                return t
        return book.best_ask_tick() if side == Side.BUY else book.best_bid_tick()

    def _unrest(self, o: SimOrder) -> None:
        self._drop_slot(o)

    def _is_resting(self, o: SimOrder) -> bool:
        return o.slot >= 0 and not (o.req.triggered_type and not o.triggered)

    def _reduce_resting(self, o: SimOrder) -> None:
        if self._is_resting(o):
            left = o.remaining
            if o.req.display_qty is not None:
                left = min(left, self.book.slot_left(o.slot))
            self.book.reduce(o.slot, left)
