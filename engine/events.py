"""Typed messages that cross actors, and the enums they use.

Every message is a ``NamedTuple`` so that it is cheap to build, compares by
value and encodes to a msgpack array without a per-field dict. Times are int64
nanoseconds since the epoch, UTC. Prices and quantities are floats already
rounded to the symbol's tick and step sizes. ``None`` means "not set" (a market
order has no limit price).

Naming follows the usual convention: commands and intents are imperatives
(``OrderIntent`` asks for an order), events state facts in the past tense via
their status (``OrderUpdate`` with ``OrderStatus.FILLED``), and every event has
``ts_event`` (when it happened at the simulated venue).
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt


class Side(IntEnum):
    """Order or fill direction; the value is the sign applied to quantities."""

    BUY = 1
    SELL = -1


class OrderType(IntEnum):
    MARKET = 1
    LIMIT = 2
    STOP_MARKET = 3
    STOP_LIMIT = 4
    TRAILING_STOP = 5
    MARKET_IF_TOUCHED = 6


class TimeInForce(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3
    GTD = 4


class OrderStatus(IntEnum):
    SUBMITTED = 1
    ACCEPTED = 2
    REJECTED = 3
    PARTIALLY_FILLED = 4
    FILLED = 5
    CANCELED = 6
    EXPIRED = 7


class RiskAction(IntEnum):
    """What the portfolio decided about an intent."""

    APPROVE = 1
    RESIZE = 2
    REJECT = 3


class Liquidity(IntEnum):
    MAKER = 1
    TAKER = 2


class ControlKind(IntEnum):
    """Control messages from the clock or the portfolio to symbol actors."""

    STOP = 1
    CHECKPOINT = 2
    FLATTEN = 3
    HALT = 4
    RESUME = 5


class OrderIntent(NamedTuple):
    """A strategy's request for an order; the portfolio approves, resizes or rejects it.

    ``ref_price`` is the price the strategy saw when it decided (the bar close),
    used by the portfolio to estimate cost before the order reaches the market.
    """

    symbol: str
    intent_id: int
    ts_event: int
    side: Side
    order_type: OrderType
    qty: float
    price: float | None
    stop_price: float | None
    tif: TimeInForce
    reduce_only: bool
    ref_price: float
    tag: str


class Order(NamedTuple):
    """An order's state as the symbol actor's order manager holds it."""

    symbol: str
    order_id: int
    ts_init: int
    side: Side
    order_type: OrderType
    qty: float
    price: float | None
    stop_price: float | None
    tif: TimeInForce
    status: OrderStatus
    filled_qty: float
    active_from: int


class OrderUpdate(NamedTuple):
    """A change of an order's status, with a reason for rejections and cancels."""

    symbol: str
    order_id: int
    ts_event: int
    status: OrderStatus
    side: Side
    order_type: OrderType
    qty: float
    filled_qty: float
    price: float | None
    reason: str


class Fill(NamedTuple):
    """One execution. ``fee`` is in the quote asset and is always >= 0 here."""

    symbol: str
    order_id: int
    fill_id: int
    ts_event: int
    side: Side
    qty: float
    price: float
    fee: float
    liquidity: Liquidity


class Mark(NamedTuple):
    """The price a position is valued at, at ``ts_event``."""

    symbol: str
    ts_event: int
    price: float


class RiskDecision(NamedTuple):
    """The portfolio's answer to one intent. ``qty`` is the approved quantity."""

    symbol: str
    intent_id: int
    ts_event: int
    action: RiskAction
    qty: float
    reason: str


class Control(NamedTuple):
    kind: ControlKind
    ts_event: int
    symbol: str
    reason: str


class Outbox(NamedTuple):
    """What one symbol returns from ``advance``.

    ``reached`` is the step boundary the symbol has processed up to. ``mark_ts``
    and ``mark_px`` are the symbol's marks at every step boundary it passed in
    this call (last close at or before the boundary), oldest first; they
    cross actors as raw little-endian numpy bytes.
    ``realized`` is the realised PnL of each fill (average cost of the open
    position, fees apart), aligned with ``fills``.
    ``position`` is the symbol's position after all fills in this outbox.
    """

    symbol: str
    reached: int
    intents: list[OrderIntent]
    updates: list[OrderUpdate]
    fills: list[Fill]
    mark_ts: npt.NDArray[np.int64]
    mark_px: npt.NDArray[np.float64]
    position: float
    realized: npt.NDArray[np.float64]


class Inbox(NamedTuple):
    """What the portfolio sends one symbol for the next step."""

    symbol: str
    ts_event: int
    decisions: list[RiskDecision]
    controls: list[Control]
