"""One symbol's L2 replay inside a symbol actor: market events, an L2 venue and a tick strategy.

It answers the clock like :class:`tickray.engine.symbol.SymbolSim` does, so the
same topology (clock, symbol actors on Ray or in-process, portfolio, recorder)
replays order books. Step ``(t0, t1]`` replays the market events stamped
``< t1`` (a message at exactly ``t1`` belongs to the next step, as a bar
closing at ``t1`` would), carries out the actions and timers due before
``t1``, then marks the position at the mid price (the last trade while the
book is one-sided or empty; 0 before any price, when nothing can be held).

Tick strategies place their own orders with the venue (they approve
themselves): the outbox carries fills, order updates and marks, never intents.
Runs use ``interval_ns = 1`` so that the portfolio and the recorder book each
fill at the first step boundary after it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from tickray.engine.book import MarketEvents
from tickray.engine.clock import ceil_to
from tickray.engine.events import (
    EMPTY_FILLS,
    EMPTY_UPDATES,
    OrderUpdate,
    Outbox,
    RiskDecision,
    Side,
    fill_batch,
    update_batch,
)
from tickray.engine.l2venue import L2Venue, TickStrategy
from tickray.engine.orders import OrderRequest

I64 = npt.NDArray[np.int64]


class L2SymbolSim:
    """Market events of one symbol through an :class:`L2Venue` driven by a tick strategy."""

    def __init__(
        self,
        venue: L2Venue,
        strategy: TickStrategy,
        batches: Iterator[MarketEvents],
        *,
        sync_ns: int,
        t0: int,
        timer_ns: int = 0,
        wake_ticks: int = 0,
        wake_on_fill: bool = True,
        wake_on_trade: bool = False,
    ) -> None:
        self.venue = venue
        self.symbol = venue.symbol
        self.sync = sync_ns
        self.time = t0
        self._batches = batches
        self._ev: MarketEvents | None = None
        self._i = 0
        self._last_mark = 0.0
        # set by a FLATTEN control (a live session's stop): close everything at the next step
        self.flatten_reason = ""
        venue.attach(
            strategy,
            timer_ns=timer_ns,
            wake_ticks=wake_ticks,
            wake_on_fill=wake_on_fill,
            wake_on_trade=wake_on_trade,
        )

    @property
    def position(self) -> float:
        return self.venue.position

    def _next(self) -> MarketEvents | None:
        while self._ev is None or self._i >= len(self._ev.ts):
            nxt = next(self._batches, None)
            if nxt is None or len(nxt.ts) == 0:  # the end, or (a live feed) none yet
                return None
            self._ev, self._i = nxt, 0
        return self._ev

    def reads_next_batch(self, until: int) -> bool:
        """True when :meth:`advance` to ``until`` will take a new batch of events before
        anything else (the current one is used up and there is a boundary to reach):
        a live feed may then build that batch ahead of the call."""
        used_up = self._ev is None or self._i >= len(self._ev.ts)
        return used_up and ceil_to(self.time + 1, self.sync) <= until

    def _absorb_bound(self, until: int) -> int:
        return min(until, ceil_to(self.time + 1, self.sync))

    def absorb_reads(self, until: int) -> bool:
        """True when :meth:`absorb` to ``until`` will read a new batch (nothing at hand is
        stamped at or after the bound): a live feed may then build it ahead of the call."""
        ev = self._ev
        return ev is None or self._i >= len(ev.ts) or int(ev.ts[-1]) < self._absorb_bound(until)

    def absorb(self, until: int) -> None:
        """Replay, ahead of the next :meth:`advance`, the events at hand and those of one
        more batch (when nothing at hand reaches the bound) stamped before ``until``, or
        before the next step boundary if that comes first; the actions and timers due
        after the last of them wait, as they do between two batches.

        A live session calls it while it waits for a boundary, so that the step after it
        has only the tail of its messages left to replay. The venue replays a sequence of
        batches as it replays their concatenation (actions due between two events are
        carried out either way; those due after a batch's last event wait for the next
        batch or for the step's flush), so what ``advance`` then gives is the same as
        without it: the same fills at the same times, only decided earlier.
        """
        b = self._absorb_bound(until)
        ev = self._ev
        if ev is not None and self._i < len(ev.ts):
            self._replay_before(ev, b)
            if self._i < len(ev.ts):  # an event at or after the bound is at hand already
                return
        nxt = next(self._batches, None)
        if nxt is None or len(nxt.ts) == 0:
            return
        self._ev, self._i = nxt, 0
        self._replay_before(nxt, b)

    def _replay_before(self, ev: MarketEvents, b: int) -> None:
        """The events of ``ev`` from the cursor on stamped before ``b``."""
        j = int(ev.ts.searchsorted(b, side="left"))
        if j > self._i:
            self.venue.run(ev.slice(self._i, j), b - 1)
            self._i = j

    def _run_before(self, b: int) -> None:
        """Replay every event stamped before ``b``, then the actions due before it."""
        while (ev := self._next()) is not None:
            i = self._i
            self._replay_before(ev, b)
            if self._i == i:
                break
        self.venue.flush(b - 1)

    def _mark(self) -> float:
        book = self.venue.book
        bb, ba = book.best_bid_tick(), book.best_ask_tick()
        if bb is not None and ba is not None:
            self._last_mark = (bb + ba) * self.venue.spec.tick_size / 2
        elif (t := book.last_trade_tick) is not None:
            self._last_mark = t * self.venue.spec.tick_size
        return self._last_mark

    def advance(self, until: int, decisions: Sequence[RiskDecision]) -> Outbox:
        """Replay to the step boundary ``until``; marks at every boundary on the way."""
        if decisions:
            raise ValueError(f"{self.symbol}: an L2 replay sends no intents, got decisions")
        t = self.time
        if self.flatten_reason:
            self._flatten(t, self.flatten_reason)
            self.flatten_reason = ""
        bounds = np.arange(ceil_to(t + 1, self.sync), until + 1, self.sync, dtype=np.int64)
        marks = np.empty(len(bounds))
        for k, b in enumerate(bounds.tolist()):
            self._run_before(b)
            marks[k] = self._mark()
        self.time = until
        fills, realized, positions, ups = self.venue.take_events()
        fb = fill_batch(fills, realized, positions) if fills else EMPTY_FILLS
        ub = update_batch(ups) if ups else EMPTY_UPDATES
        return Outbox(self.symbol, until, [], ub, fb, bounds, marks, self.venue.position)

    def _flatten(self, t: int, reason: str) -> None:
        """Close everything from ``t`` on: the strategy is detached (it is woken no more),
        its open orders are cancelled at once, and the position is closed by a reduce-only
        market order, which reaches the book after the venue's submit latency and fills
        against it with the venue's impact, like any other order."""
        v = self.venue
        v.strategy = None
        v.now = max(v.now, t)
        for o in v.open_orders():
            v.cancel_now(o.order_id, v.now, reason)
        pos = v.position
        if pos:
            side = Side.SELL if pos > 0 else Side.BUY
            v.submit(
                OrderRequest(side=side, qty=abs(pos), reduce_only=True, tag="flatten"), note=reason
            )

    def finish(self, t: int, decisions: Sequence[RiskDecision], reason: str) -> list[OrderUpdate]:
        """End of run at ``t``: cancel every open order at once."""
        for o in self.venue.open_orders():
            self.venue.cancel_now(o.order_id, t, reason)
        _, _, _, ups = self.venue.take_events()
        return ups
