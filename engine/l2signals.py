"""Event strategies on order-book replays: the same callbacks and signals as on bars.

:class:`SignalDriver` is a tick strategy for :class:`~tickray.engine.l2venue.L2Venue`
that runs a :class:`~tickray.engine.signals.SignalStrategy`. At each wake of
the venue it delivers, in this order:

* ``on_fill`` for each fill of its orders since the last wake;
* ``on_trade`` for the market trade that woke it (the venue wakes it after
  every trade when the strategy reads trades or bars);
* ``on_bar`` for each bar of ``bar_ns`` built from the trades that closed by
  then (open, high, low, close and volume of the trades in ``[open, open +
  bar_ns)``; an interval without trades makes no bar);
* ``on_book`` when the best bid or ask (price or size) changed;
* ``on_timer`` for each multiple of ``timer_ns`` passed.

Signals become orders at the venue at once, with its latencies and queue:
the orders the last signal left open are cancelled, then an entry of
``desired - position`` (market, limit or stop) goes in with its exits as
reduce-only children, one cancelling the others. The size is ``confidence x
allocation / reference`` (the mid price, else the last trade), floored to the
lot. A replay has no portfolio approval (as for every tick strategy).
"""

from __future__ import annotations

import math

from tickray.engine.events import OrderType, Side
from tickray.engine.instruments import SymbolSpec
from tickray.engine.l2venue import L2Venue
from tickray.engine.orders import OrderRequest
from tickray.engine.signals import (
    Bar,
    BookTop,
    Context,
    ContextState,
    Direction,
    Entry,
    Signal,
    SignalError,
    SignalStrategy,
    Trade,
    exit_requests,
)


class SignalDriver:
    """Runs ``strategy`` on an L2 venue (see the module doc)."""

    def __init__(
        self,
        strategy: SignalStrategy,
        spec: SymbolSpec,
        allocation: float,
        *,
        allow_short: bool = True,
        bar_ns: int = 0,
    ) -> None:
        if bar_ns < 0:
            raise ValueError(f"bar_ns must be >= 0, got {bar_ns}")
        self.strategy = strategy
        self.spec = spec
        self.allocation = allocation
        self.allow_short = allow_short
        self.bar_ns = bar_ns
        self.venue: L2Venue | None = None
        self._state = ContextState(spec, self._position, self._avg, self._working)
        self.ctx = Context(self._state)
        self._last_fill = 0
        self._top: tuple[float, float, float, float] | None = None
        self._next_timer = 0
        self._bar: list[float] | None = None  # open, high, low, close, volume
        self._bar_open = 0
        self.signals = 0

    # what a strategy sees ------------------------------------------------------------------
    def _position(self) -> float:
        return self.venue.position if self.venue is not None else 0.0

    def _avg(self) -> float:
        return self.venue.avg_price if self.venue is not None else 0.0

    def _working(self) -> bool:
        return self.venue is not None and bool(self.venue.open_orders())

    @property
    def wants_trades(self) -> bool:
        """Whether the venue must wake it after every trade (it reads trades or bars)."""
        reads = type(self.strategy).on_trade is not SignalStrategy.on_trade
        return reads or self.bar_ns > 0

    # tick strategy protocol ----------------------------------------------------------------
    def on_start(self, venue: L2Venue) -> None:
        self.venue = venue
        self._state.now = venue.now
        step = self.strategy.timer_ns
        if step:
            self._next_timer = -(-venue.now // step) * step
        self._act(self.strategy.on_start(self.ctx))
        self.on_wake(venue)

    def on_wake(self, venue: L2Venue) -> None:
        self.venue = venue
        now = venue.now
        strategy, ctx, state = self.strategy, self.ctx, self._state
        for f in venue.fills:
            if f.fill_id > self._last_fill:
                self._last_fill = f.fill_id
                state.now = f.ts_event
                self._act(strategy.on_fill(f, ctx), f.price)
        trade = venue.last_trade
        if trade is not None:
            venue.last_trade = None
            ts, price, qty, side = trade
            if self.bar_ns:
                self._close_bars(ts)
                self._add_trade(ts, price, qty)
            state.now = ts
            self._act(strategy.on_trade(Trade(ts, price, qty, side < 0), ctx), price)
        elif self.bar_ns:
            self._close_bars(now)
        bid, ask = venue.book.best_bid(), venue.book.best_ask()
        if bid is not None and ask is not None:
            top = (bid[0], bid[1], ask[0], ask[1])
            if top != self._top:
                self._top = top
                state.now = now
                self._act(strategy.on_book(BookTop(now, *top), ctx))
        step = strategy.timer_ns
        while step and self._next_timer <= now:
            state.now = self._next_timer
            self._act(strategy.on_timer(self._next_timer, ctx))
            self._next_timer += step
        state.now = now

    # bars from trades -----------------------------------------------------------------------
    def _add_trade(self, ts: int, price: float, qty: float) -> None:
        if self._bar is None:
            self._bar_open = ts - ts % self.bar_ns
            self._bar = [price, price, price, price, qty]
            return
        b = self._bar
        b[1] = max(b[1], price)
        b[2] = min(b[2], price)
        b[3] = price
        b[4] += qty

    def _close_bars(self, now: int) -> None:
        if self._bar is None or now < self._bar_open + self.bar_ns:
            return
        o, h, lo, c, v = self._bar
        close = self._bar_open + self.bar_ns
        self._bar = None
        self._state.now = close
        self._state.bars += 1
        bar = Bar(self._bar_open, close, o, h, lo, c, v)
        self._act(self.strategy.on_bar(bar, self.ctx), c)

    # signals to orders ------------------------------------------------------------------------
    def _reference(self) -> float:
        venue = self.venue
        assert venue is not None
        bid, ask = venue.book.best_bid(), venue.book.best_ask()
        if bid is not None and ask is not None:
            return (bid[0] + ask[0]) / 2
        t = venue.book.last_trade_tick
        return math.nan if t is None else t * self.spec.tick_size

    def _act(self, sig: Signal | None, ref: float | None = None) -> None:
        if sig is None:
            return
        if not isinstance(sig, Signal):
            raise SignalError(
                f"{self.spec.symbol}: strategy '{self.strategy.name}' returned {sig!r}, "
                "not a Signal"
            )
        if self._state.bars < self.strategy.warmup:
            return
        venue = self.venue
        assert venue is not None
        price = self._reference() if ref is None else ref
        if not (price > 0):
            return  # no price yet to size against
        self.signals += 1
        for o in venue.open_orders():
            venue.cancel(o.order_id)
        size = self.spec.floor_qty(self.allocation * sig.confidence / price)
        desired = sig.side.value * size
        if desired < 0 and not self.allow_short:
            desired, sig = 0.0, Signal(Direction.FLAT)
        delta = self.spec.round_qty(desired - venue.position)
        if delta == 0:
            if sig.has_exits and desired != 0:
                self._exits(sig, abs(desired), 0)
            return
        qty = abs(delta)
        if not self.spec.tradable(qty, price):
            return
        side = Side.BUY if delta > 0 else Side.SELL
        if sig.entry is Entry.LIMIT:
            req = OrderRequest(
                side=side,
                qty=qty,
                order_type=OrderType.LIMIT,
                price=self.spec.round_price(float(sig.price or 0)),
                tag=self.strategy.name,
            )
        elif sig.entry is Entry.STOP:
            req = OrderRequest(
                side=side,
                qty=qty,
                order_type=OrderType.STOP_MARKET,
                stop_price=self.spec.round_price(float(sig.price or 0)),
                tag=self.strategy.name,
            )
        else:
            req = OrderRequest(side=side, qty=qty, tag=self.strategy.name)
        oid = venue.submit(req)
        if sig.has_exits and desired != 0:
            self._exits(sig, abs(desired), oid)

    def _exits(self, sig: Signal, qty: float, parent: int) -> None:
        venue = self.venue
        assert venue is not None
        reqs = exit_requests(sig, qty, self.spec)
        ids = [venue.submit(r, parent=parent) for r in reqs]
        if len(ids) > 1:
            venue.link_oco(ids)
