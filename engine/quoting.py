"""A resting-order strategy for L2 replays: quote both sides, follow the best prices.

:class:`QuotingStrategy` keeps one bid ``offset`` ticks below the best bid and
one ask ``offset`` ticks above the best ask, each of ``size``. When the best
price moves, it moves its quote with a modify (which loses queue priority, as
on a real venue); when a quote is done (filled, canceled, expired) it places a
new one. It stops quoting the side that would take the position beyond
``max_position``. It is the benchmark's workload and a template for tick
strategies: everything it does goes through the venue's commands, so latency
and the queue apply to it like to any order.
"""

from __future__ import annotations

from tickray.engine.events import OrderType, Side
from tickray.engine.l2venue import L2Venue
from tickray.engine.orders import OrderRequest


class QuotingStrategy:
    """Quote ``size`` on both sides, ``offset`` ticks behind the best prices."""

    def __init__(self, size: float, *, offset: int = 0, max_position: float = 0.0) -> None:
        if size <= 0:
            raise ValueError(f"size must be > 0, got {size!r}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset!r}")
        self.size = size
        self.offset = offset
        self.max_position = max_position or 10 * size
        self.quotes: dict[Side, int] = {}
        self._asked: dict[Side, float] = {}  # price of a modify still on its way
        self.wakes = 0

    def on_start(self, venue: L2Venue) -> None:
        self.on_wake(venue)

    def on_wake(self, venue: L2Venue) -> None:
        self.wakes += 1
        bb, ba = venue.book.best_bid_tick(), venue.book.best_ask_tick()
        if bb is None or ba is None:
            return
        tick = venue.spec.tick_size
        self._quote(venue, Side.BUY, (bb - self.offset) * tick)
        self._quote(venue, Side.SELL, (ba + self.offset) * tick)

    def _quote(self, venue: L2Venue, side: Side, price: float) -> None:
        price = venue.spec.round_price(price)
        oid = self.quotes.get(side)
        o = venue.orders.get(oid) if oid is not None else None
        room = self.max_position - side * venue.position
        if o is not None and o.is_open:
            if room < self.size:
                venue.cancel(o.order_id)
                del self.quotes[side]
            elif o.price != price and self._asked.get(side) != price and o.slot >= 0:
                venue.modify(o.order_id, price=price)
                self._asked[side] = price
            return
        self._asked.pop(side, None)
        if room >= self.size:
            self.quotes[side] = venue.submit(
                OrderRequest(side=side, qty=self.size, order_type=OrderType.LIMIT, price=price)
            )


TICK_STRATEGIES = {"quote": QuotingStrategy}


def make_tick_strategy(name: str, params: dict[str, object]) -> QuotingStrategy:
    """A tick strategy by name; ValueError naming the parameter for bad params."""
    if name not in TICK_STRATEGIES:
        raise ValueError(
            f"unknown tick strategy {name!r}: expected one of {sorted(TICK_STRATEGIES)}"
        )
    known = {"size", "offset", "max_position"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"tick strategy {name}: unknown parameters {sorted(unknown)}")
    size = params.get("size", 0.01)
    offset = params.get("offset", 0)
    max_position = params.get("max_position", 0.0)
    if not isinstance(size, int | float) or size <= 0:
        raise ValueError(f"tick strategy {name}: size must be > 0, got {size!r}")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"tick strategy {name}: offset must be an integer >= 0, got {offset!r}")
    if not isinstance(max_position, int | float) or max_position < 0:
        raise ValueError(f"tick strategy {name}: max_position must be >= 0, got {max_position!r}")
    return QuotingStrategy(float(size), offset=offset, max_position=float(max_position))
