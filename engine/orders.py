"""Order requests, the symbol rules applied to them, and the simulated orders a venue holds.

A strategy asks for an order with an :class:`OrderRequest` (an imperative: a
command). The venue checks it against the symbol's rules, stamps it
``SUBMITTED`` at once, and it reaches the venue after the submit latency. From
then on every change of its state is an :class:`~tickray.engine.events.OrderUpdate`
with a status and, for rejections and cancels, a reason.

Order types (``OrderType``):

* ``MARKET``: takes liquidity at once; what the book cannot fill is canceled.
* ``LIMIT``: takes what is marketable, then rests at ``price`` (unless IOC/FOK).
* ``STOP_MARKET`` / ``STOP_LIMIT``: wait until the trigger price trades at or
  through ``stop_price`` (buy: price >= stop, sell: price <= stop), then work
  as a market order / a limit order at ``price``.
* ``MARKET_IF_TOUCHED`` / ``LIMIT_IF_TOUCHED``: the opposite trigger (buy:
  price <= stop, sell: price >= stop), for entries on pullbacks and take-profits.
* ``TRAILING_STOP`` / ``TRAILING_STOP_LIMIT``: a stop whose trigger follows the
  best price since the order reached the venue at ``trail`` distance (a price
  amount, a fraction, or a multiple of the ATR at submission); the limit
  version's limit is the trigger price minus ``limit_offset`` for sells (plus,
  for buys).

Time in force: ``GTC``; ``IOC`` (what is not filled on arrival is canceled);
``FOK`` (filled in full on arrival or canceled, nothing partial); ``GTD``
(canceled as ``EXPIRED`` at ``expire_ts``). Flags: ``post_only`` (rejected if
it would take liquidity on arrival); ``reduce_only`` (never increases the
position: cut to the position, or rejected when it would only increase it);
``display_qty`` (an iceberg: only that much rests visibly; when it is filled
the next slice joins the back of the queue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from tickray.engine.events import OrderStatus, OrderType, Side, TimeInForce
from tickray.engine.instruments import SymbolSpec


class OrderError(ValueError):
    """An order request that cannot be built (a programming error in the strategy)."""


class TrailUnit(Enum):
    PRICE = "price"  # distance in quote currency
    PERCENT = "percent"  # distance as a fraction of the best price (0.01 = 1%)
    ATR = "atr"  # distance as a multiple of the ATR the venue knows at submission


@dataclass(frozen=True, slots=True)
class Trail:
    """A trailing distance. ATR distances are fixed to a price amount on submission."""

    distance: float
    unit: TrailUnit = TrailUnit.PRICE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.distance) and self.distance > 0):
            raise OrderError(f"trail.distance must be > 0, got {self.distance!r}")
        if self.unit is TrailUnit.PERCENT and self.distance >= 1:
            raise OrderError(f"trail.distance as percent must be < 1, got {self.distance!r}")


_TRIGGERED_TYPES = frozenset(
    {
        OrderType.STOP_MARKET,
        OrderType.STOP_LIMIT,
        OrderType.MARKET_IF_TOUCHED,
        OrderType.LIMIT_IF_TOUCHED,
        OrderType.TRAILING_STOP,
        OrderType.TRAILING_STOP_LIMIT,
    }
)
_LIMIT_AFTER_TRIGGER = frozenset(
    {OrderType.STOP_LIMIT, OrderType.LIMIT_IF_TOUCHED, OrderType.TRAILING_STOP_LIMIT}
)
_TRAILING = frozenset({OrderType.TRAILING_STOP, OrderType.TRAILING_STOP_LIMIT})


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRequest:
    """A strategy's command to place one order. Prices in quote currency, qty in base units."""

    side: Side
    qty: float
    order_type: OrderType = OrderType.MARKET
    price: float | None = None
    stop_price: float | None = None
    tif: TimeInForce = TimeInForce.GTC
    expire_ts: int | None = None
    post_only: bool = False
    reduce_only: bool = False
    display_qty: float | None = None
    trail: Trail | None = None
    limit_offset: float = 0.0
    trigger: str = "trade"  # "trade": last trade price; "quote": best ask for buys, bid for sells
    tag: str = ""

    def __post_init__(self) -> None:
        t = self.order_type
        if self.side not in (Side.BUY, Side.SELL):
            raise OrderError(f"side must be BUY or SELL, got {self.side!r}")
        if not (isinstance(self.qty, int | float) and math.isfinite(self.qty) and self.qty > 0):
            raise OrderError(f"qty must be a finite number > 0, got {self.qty!r}")
        needs_price = t in (OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.LIMIT_IF_TOUCHED)
        if needs_price and self.price is None:
            raise OrderError(f"{t.name} needs a price")
        if not needs_price and self.price is not None:
            raise OrderError(f"{t.name} takes no price (got {self.price})")
        if self.price is not None and not (math.isfinite(self.price) and self.price > 0):
            raise OrderError(f"price must be a finite number > 0, got {self.price!r}")
        if t in _TRAILING:
            if self.trail is None:
                raise OrderError(f"{t.name} needs a trail")
            if self.stop_price is not None:
                raise OrderError(f"{t.name} takes no stop_price: its trigger follows the price")
        elif t in _TRIGGERED_TYPES:
            if self.stop_price is None or not (
                math.isfinite(self.stop_price) and self.stop_price > 0
            ):
                raise OrderError(f"{t.name} needs a stop_price > 0, got {self.stop_price!r}")
        elif self.stop_price is not None:
            raise OrderError(f"{t.name} takes no stop_price")
        if self.trail is not None and t not in _TRAILING:
            raise OrderError(f"{t.name} takes no trail")
        if not (math.isfinite(self.limit_offset) and self.limit_offset >= 0):
            raise OrderError(f"limit_offset must be >= 0, got {self.limit_offset!r}")
        if self.tif is TimeInForce.GTD:
            if self.expire_ts is None:
                raise OrderError("GTD needs expire_ts")
        elif self.expire_ts is not None:
            raise OrderError(f"expire_ts is only for GTD, not {self.tif.name}")
        if self.post_only and (t is not OrderType.LIMIT or self.tif in _TAKING_TIF):
            raise OrderError("post_only is for GTC or GTD LIMIT orders")
        if self.display_qty is not None:
            if t is not OrderType.LIMIT:
                raise OrderError("display_qty (iceberg) is for LIMIT orders")
            if not (math.isfinite(self.display_qty) and 0 < self.display_qty < self.qty):
                raise OrderError(
                    f"display_qty must be > 0 and below qty {self.qty}, got {self.display_qty!r}"
                )
        if self.trigger not in ("trade", "quote"):
            raise OrderError(f"trigger must be 'trade' or 'quote', got {self.trigger!r}")

    @property
    def triggered_type(self) -> bool:
        return self.order_type in _TRIGGERED_TYPES

    @property
    def limit_after_trigger(self) -> bool:
        return self.order_type in _LIMIT_AFTER_TRIGGER

    @property
    def trailing(self) -> bool:
        return self.order_type in _TRAILING


_TAKING_TIF = (TimeInForce.IOC, TimeInForce.FOK)


def trigger_direction(side: Side, order_type: OrderType) -> int:
    """+1 when the trigger fires at prices >= the stop, -1 at prices <= the stop."""
    touch = order_type in (OrderType.MARKET_IF_TOUCHED, OrderType.LIMIT_IF_TOUCHED)
    up = side == Side.BUY
    return (1 if up else -1) * (-1 if touch else 1)


@dataclass(frozen=True, slots=True)
class OrderRules:
    """How the symbol's rules apply to every order.

    ``mode="round"``: prices go to the nearest tick, quantities down to whole
    lots; then an order below the minimum quantity or notional is rejected.
    ``mode="reject"``: an off-grid price or quantity is rejected as well.
    """

    mode: str = "round"

    def __post_init__(self) -> None:
        if self.mode not in ("round", "reject"):
            raise OrderError(f"rules.mode must be 'round' or 'reject', got {self.mode!r}")

    def price(self, spec: SymbolSpec, price: float, name: str) -> tuple[float, str]:
        p = spec.round_price(price)
        if self.mode == "reject" and abs(p - price) > spec.tick_size * 1e-6:
            return p, f"{name} {price} is not a multiple of the tick size {spec.tick_size}"
        return p, ""

    def qty(self, spec: SymbolSpec, qty: float, name: str = "qty") -> tuple[float, str]:
        q = spec.floor_qty(qty)
        if self.mode == "reject" and abs(q - qty) > spec.step_size * 1e-6:
            return q, f"{name} {qty} is not a multiple of the lot step {spec.step_size}"
        if q <= 0:
            return q, f"{name} {qty} is below one lot step {spec.step_size}"
        if q < spec.min_qty:
            return q, f"{name} {q} is below the minimum quantity {spec.min_qty}"
        return q, ""


@dataclass(slots=True, eq=False)
class SimOrder:
    """A venue's working state of one order (mutable; never crosses actors)."""

    order_id: int
    req: OrderRequest
    qty: float  # after the rules, possibly modified
    price: float | None  # limit price after the rules (None for market)
    stop: float | None  # trigger price after the rules
    ts_init: int
    status: OrderStatus = OrderStatus.SUBMITTED
    filled: float = 0.0
    notional: float = 0.0  # sum of fill price * qty
    slot: int = -1  # book slot while resting or armed
    triggered: bool = False
    visible: float = 0.0  # iceberg: the slice now resting
    trail_distance: float = 0.0  # price units, or fraction for percent trails
    oco: list[int] = field(default_factory=list)  # siblings canceled on our first fill
    children: list[int] = field(default_factory=list)  # OTO: released when we are filled
    parent: int = 0  # held until this order is filled (0: none)
    held: bool = False
    arrived: bool = False  # reached the venue (modifies and cancels can find it)

    @property
    def side(self) -> Side:
        return self.req.side

    @property
    def remaining(self) -> float:
        return self.qty - self.filled

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN

    @property
    def avg_price(self) -> float:
        return self.notional / self.filled if self.filled > 0 else math.nan

    def current_type(self) -> OrderType:
        """The type it works as now: a fired stop works as market or limit."""
        if self.triggered:
            return OrderType.LIMIT if self.req.limit_after_trigger else OrderType.MARKET
        return self.req.order_type


_OPEN = frozenset(
    {
        OrderStatus.SUBMITTED,
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.TRIGGERED,
        OrderStatus.AMENDED,
    }
)
