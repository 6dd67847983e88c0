"""Event strategies: callbacks over the symbol's state that emit signals.

A :class:`SignalStrategy` sees the market one event at a time, as it would
live: ``on_bar`` at each bar's close, ``on_fill`` for each of its fills (at
the fill's time, before the bar closes), ``on_timer`` every ``timer_ns`` of
simulated time, and ``on_trade`` / ``on_book`` where the feed has trades and
books (order-book replays and live streams). Any callback may return a
:class:`Signal`; the symbol's simulation turns it into orders through the
same portfolio approval and venue as every other order.

A signal says where the position should go and how:

* ``side``: ``BUY`` (be long), ``SELL`` (be short) or ``FLAT``;
* ``entry``: a ``MARKET`` order, a ``LIMIT`` order at ``price`` (a pull-back
  entry), or a ``STOP`` order triggered at ``price`` (a breakout entry);
* exits, placed once the entry fills, reduce-only: a ``take_profit`` limit
  and a ``stop_loss`` stop (one cancels the other), or a ``trail`` trailing
  stop in place of the stop-loss;
* ``confidence`` in (0, 1]: the share of the symbol's allocation the
  position takes;
* ``meta``: free-form labels kept with the strategy (not sent to the venue).

The position's size is ``confidence x allocation / close``, rounded down
to the lot. A new signal replaces what the last one left working (its
unfilled entry and its exits). A signal equal to the position already held
or asked for does nothing. Signals before ``warmup`` bars have closed are
dropped.

Strategies see only the past: a callback gets the event and a read-only
:class:`Context` (time, position, average entry, bars seen); nothing in it
reaches the data ahead of the clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, NamedTuple

from tickray.engine.events import Fill, OrderType, Side
from tickray.engine.instruments import SymbolSpec
from tickray.engine.orders import OrderRequest, Trail


class SignalError(ValueError):
    """A signal that cannot become orders; names the field and the problem."""


class StrategyError(RuntimeError):
    """A strategy raised: names the symbol, the simulated time and the strategy, and
    carries the strategy's own traceback in its message (the cause is chained)."""

    @classmethod
    def wrap(cls, exc: BaseException, symbol: str, strategy: str, when: str) -> StrategyError:
        import traceback

        frames = "".join(traceback.format_exception(exc)).rstrip()
        return cls(
            f"{symbol} at {when}: strategy '{strategy}' raised {type(exc).__name__}: {exc}\n"
            f"{frames}"
        )


class Direction(Enum):
    BUY = 1
    SELL = -1
    FLAT = 0


class Entry(Enum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Signal:
    """Where the position should go, and the orders that take it there (see module doc)."""

    side: Direction
    entry: Entry = Entry.MARKET
    price: float | None = None
    take_profit: float | None = None
    stop_loss: float | None = None
    trail: Trail | None = None
    confidence: float = 1.0
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.side, Direction):
            raise SignalError(f"signal.side: must be a Direction, got {self.side!r}")
        if not isinstance(self.entry, Entry):
            raise SignalError(f"signal.entry: must be an Entry, got {self.entry!r}")
        if not (
            isinstance(self.confidence, int | float)
            and math.isfinite(self.confidence)
            and 0 < self.confidence <= 1
        ):
            raise SignalError(f"signal.confidence: must be in (0, 1], got {self.confidence!r}")
        for name in ("price", "take_profit", "stop_loss"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise SignalError(f"signal.{name}: must be a price > 0, got {v!r}")
        if self.entry is Entry.MARKET and self.price is not None:
            raise SignalError("signal.price: a market entry takes no price")
        if self.entry is not Entry.MARKET and self.price is None:
            raise SignalError(f"signal.price: a {self.entry.value} entry needs a price")
        if self.side is Direction.FLAT:
            if self.entry is not Entry.MARKET or self.has_exits:
                raise SignalError("signal: a FLAT signal closes at market and takes no exits")
            return
        s = self.side.value
        ref = self.price
        if self.take_profit is not None and ref is not None and s * (self.take_profit - ref) <= 0:
            raise SignalError(
                f"signal.take_profit: {self.take_profit} is not beyond the {self.side.name} "
                f"entry {ref}"
            )
        if self.stop_loss is not None and ref is not None and s * (ref - self.stop_loss) <= 0:
            raise SignalError(
                f"signal.stop_loss: {self.stop_loss} is not behind the {self.side.name} entry {ref}"
            )
        if (
            self.take_profit is not None
            and self.stop_loss is not None
            and s * (self.take_profit - self.stop_loss) <= 0
        ):
            raise SignalError(
                f"signal: take_profit {self.take_profit} and stop_loss {self.stop_loss} are on "
                f"the wrong sides for a {self.side.name}"
            )

    @property
    def has_exits(self) -> bool:
        return self.take_profit is not None or self.stop_loss is not None or self.trail is not None


def exit_requests(sig: Signal, qty: float, spec: SymbolSpec) -> list[OrderRequest]:
    """The reduce-only exit orders of ``sig`` for a position of ``qty``: a take-profit
    limit, a stop-loss stop, a trailing stop (those the signal has, in that order)."""
    exit_side = Side.SELL if sig.side is Direction.BUY else Side.BUY
    reqs = []
    if sig.take_profit is not None:
        price = spec.round_price(sig.take_profit)
        reqs.append(
            OrderRequest(
                side=exit_side,
                qty=qty,
                order_type=OrderType.LIMIT,
                price=price,
                reduce_only=True,
                tag="take_profit",
            )
        )
    if sig.stop_loss is not None:
        stop = spec.round_price(sig.stop_loss)
        reqs.append(
            OrderRequest(
                side=exit_side,
                qty=qty,
                order_type=OrderType.STOP_MARKET,
                stop_price=stop,
                reduce_only=True,
                tag="stop_loss",
            )
        )
    if sig.trail is not None:
        reqs.append(
            OrderRequest(
                side=exit_side,
                qty=qty,
                order_type=OrderType.TRAILING_STOP,
                trail=sig.trail,
                reduce_only=True,
                tag="trailing_stop",
            )
        )
    return reqs


def buy(**kw: Any) -> Signal:
    return Signal(Direction.BUY, **kw)


def sell(**kw: Any) -> Signal:
    return Signal(Direction.SELL, **kw)


def flat(**kw: Any) -> Signal:
    return Signal(Direction.FLAT, **kw)


class Bar(NamedTuple):
    """One closed bar: open time, close time (ns UTC), prices and volume."""

    ts_open: int
    ts_close: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class Trade(NamedTuple):
    """One market trade (order-book replays and live streams)."""

    ts: int
    price: float
    qty: float
    buyer_is_maker: bool


class BookTop(NamedTuple):
    """The best prices and sizes of the book (order-book replays and live streams)."""

    ts: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


class Context:
    """What a strategy may know about its symbol at the time of the event (read-only)."""

    __slots__ = ("_state",)

    def __init__(self, state: ContextState) -> None:
        self._state = state

    @property
    def symbol(self) -> str:
        return self._state.spec.symbol

    @property
    def spec(self) -> SymbolSpec:
        """Tick and lot sizes (to place prices on the grid)."""
        return self._state.spec

    @property
    def now(self) -> int:
        """The event's time, ns UTC."""
        return self._state.now

    @property
    def position(self) -> float:
        """The position after every fill so far (signed, base units)."""
        return self._state.position()

    @property
    def avg_price(self) -> float:
        """The average entry price of the position (0.0 when flat)."""
        return self._state.avg_price()

    @property
    def bars(self) -> int:
        """Bars closed so far."""
        return self._state.bars

    @property
    def working(self) -> bool:
        """Whether an order is still on its way: a signal's entry waiting for the
        portfolio's approval or for its price, or its exits open at the venue."""
        return self._state.working()


class ContextState:
    """The simulation's side of a :class:`Context` (updated by the simulation only)."""

    __slots__ = ("avg_price", "bars", "now", "position", "spec", "working")

    def __init__(
        self,
        spec: SymbolSpec,
        position: Callable[[], float],
        avg_price: Callable[[], float],
        working: Callable[[], bool],
    ) -> None:
        self.spec = spec
        self.now = 0
        self.bars = 0
        self.position = position
        self.avg_price = avg_price
        self.working = working


class SignalStrategy:
    """Base class of event strategies (see the module doc).

    Subclasses declare ``name`` and ``params`` like bar strategies
    (parameter name -> (type, default, minimum)), set ``warmup`` (bars) and
    ``timer_ns`` (0: no timer), and override the callbacks they need.
    """

    name: ClassVar[str]
    params: ClassVar[dict[str, tuple[type, float | int, float | int]]] = {}
    timer_ns: ClassVar[int] = 0

    def __init__(self, **kwargs: Any) -> None:
        from tickray.engine.strategies import validate_params

        for key, value in validate_params(self.name, self.params, kwargs).items():
            setattr(self, key, value)

    @property
    def warmup(self) -> int:
        """Bars that must close before a signal counts."""
        return 0

    def on_start(self, ctx: Context) -> Signal | None:
        """Once, before the first event."""
        return None

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        """A bar closed (``ctx.now`` is its close time)."""
        return None

    def on_fill(self, fill: Fill, ctx: Context) -> Signal | None:
        """One of this strategy's orders filled (``ctx.position`` includes it)."""
        return None

    def on_timer(self, ts: int, ctx: Context) -> Signal | None:
        """Every ``timer_ns`` of simulated time (at the first event at or after it)."""
        return None

    def on_trade(self, trade: Trade, ctx: Context) -> Signal | None:
        """A market trade (feeds with trades only)."""
        return None

    def on_book(self, book: BookTop, ctx: Context) -> Signal | None:
        """The top of the book changed (feeds with books only)."""
        return None
