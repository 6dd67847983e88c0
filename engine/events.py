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

import math
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
    TRAILING_STOP_LIMIT = 7
    LIMIT_IF_TOUCHED = 8


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
    TRIGGERED = 8  # a stop or touch order's trigger fired; it now works as market or limit
    AMENDED = 9  # a modify reached the venue and took effect
    CANCEL_REJECTED = 10  # a cancel reached the venue too late (order already done)
    MODIFY_REJECTED = 11


class RiskAction(IntEnum):
    """What the portfolio decided about an intent."""

    APPROVE = 1
    RESIZE = 2
    REJECT = 3


class Liquidity(IntEnum):
    MAKER = 1
    TAKER = 2
    LIQUIDATION = 3  # the exchange closed the position at its liquidation price


class PositionSide(IntEnum):
    """Which position an order or fill belongs to (Binance ``positionSide``).

    ``BOTH`` is one-way mode's single net position. In hedge mode a symbol holds
    a ``LONG`` and a ``SHORT`` position side by side: a buy opens or adds to the
    long one and a sell closes it; a sell opens or adds to the short one and a
    buy closes it.
    """

    BOTH = 0
    LONG = 1
    SHORT = 2


class ControlKind(IntEnum):
    """Control messages from the clock or the portfolio to symbol actors."""

    STOP = 1
    CHECKPOINT = 2
    FLATTEN = 3
    HALT = 4
    RESUME = 5
    MARGIN = 6  # cross margin: ``value`` is the wallet backing this symbol's position


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
    position_side: PositionSide = PositionSide.BOTH


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
    position_side: PositionSide = PositionSide.BOTH


class Fill(NamedTuple):
    """One execution. ``fee`` is in the quote asset and is always >= 0 here.

    ``position_side`` is the position it traded (hedge mode), ``BOTH`` otherwise.
    """

    symbol: str
    order_id: int
    fill_id: int
    ts_event: int
    side: Side
    qty: float
    price: float
    fee: float
    liquidity: Liquidity
    position_side: PositionSide = PositionSide.BOTH


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
    value: float = 0.0


I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def join_records(arrays: list[npt.NDArray[np.void]]) -> npt.NDArray[np.void]:
    """Concatenate record arrays of one dtype by their bytes (np.concatenate re-derives
    the common dtype of every record array, which is slow for many small ones)."""
    if len(arrays) == 1:
        return arrays[0]
    return np.frombuffer(b"".join(a.tobytes() for a in arrays), dtype=arrays[0].dtype)


FILL_DTYPE = np.dtype(
    [
        ("order_id", "<i8"),
        ("fill_id", "<i8"),
        ("ts", "<i8"),
        ("side", "i1"),
        ("qty", "<f8"),
        ("price", "<f8"),
        ("fee", "<f8"),
        ("liquidity", "i1"),
        ("realized_pnl", "<f8"),
        ("position_after", "<f8"),
        ("position_side", "i1"),
    ]
)
UPDATE_DTYPE = np.dtype(
    [
        ("order_id", "<i8"),
        ("ts", "<i8"),
        ("status", "i1"),
        ("side", "i1"),
        ("order_type", "i1"),
        ("qty", "<f8"),
        ("filled_qty", "<f8"),
        ("price", "<f8"),
        ("position_side", "i1"),
    ]
)


class FillBatch:
    """One symbol's fills as one structured array (enums as their int values), oldest first.

    Fields follow :class:`Fill`, plus ``realized_pnl`` (each fill's realised PnL
    against the average cost of the open position, fees apart) and
    ``position_after`` (of the fill's position side: in hedge mode the long or
    the short position, else the net one). Batches are how fills cross actors and reach the
    recorder: an advance over a long history can carry tens of thousands, and
    one array costs one allocation and one buffer on the wire.
    """

    __slots__ = ("data",)

    def __init__(self, data: npt.NDArray[np.void]) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    order_id = property(lambda self: self.data["order_id"])
    fill_id = property(lambda self: self.data["fill_id"])
    ts = property(lambda self: self.data["ts"])
    side = property(lambda self: self.data["side"])
    qty = property(lambda self: self.data["qty"])
    price = property(lambda self: self.data["price"])
    fee = property(lambda self: self.data["fee"])
    liquidity = property(lambda self: self.data["liquidity"])
    realized_pnl = property(lambda self: self.data["realized_pnl"])
    position_after = property(lambda self: self.data["position_after"])
    position_side = property(lambda self: self.data["position_side"])

    def take(self, index: npt.NDArray[np.int64]) -> FillBatch:
        return FillBatch(self.data[index])

    @staticmethod
    def concat(batches: list[FillBatch]) -> FillBatch:
        return FillBatch(join_records([b.data for b in batches]))

    def events(self, symbol: str) -> list[Fill]:
        """The batch as typed :class:`Fill` events."""
        return [
            Fill(symbol, o, f, t, Side(s), q, p, fee, Liquidity(liq), PositionSide(ps))
            for o, f, t, s, q, p, fee, liq, _, _, ps in self.data.tolist()
        ]


class UpdateBatch:
    """One symbol's order updates as one structured array plus their reasons.

    Fields follow :class:`OrderUpdate`; ``price`` is NaN where none is set.
    """

    __slots__ = ("data", "reason")

    def __init__(self, data: npt.NDArray[np.void], reason: list[str]) -> None:
        self.data = data
        self.reason = reason

    @property
    def size(self) -> int:
        return len(self.data)

    order_id = property(lambda self: self.data["order_id"])
    ts = property(lambda self: self.data["ts"])
    status = property(lambda self: self.data["status"])
    side = property(lambda self: self.data["side"])
    order_type = property(lambda self: self.data["order_type"])
    qty = property(lambda self: self.data["qty"])
    filled_qty = property(lambda self: self.data["filled_qty"])
    price = property(lambda self: self.data["price"])
    position_side = property(lambda self: self.data["position_side"])

    @staticmethod
    def concat(batches: list[UpdateBatch]) -> UpdateBatch:
        return UpdateBatch(
            join_records([b.data for b in batches]), [r for b in batches for r in b.reason]
        )

    def events(self, symbol: str) -> list[OrderUpdate]:
        """The batch as typed :class:`OrderUpdate` events."""
        return [
            OrderUpdate(
                symbol,
                o,
                t,
                OrderStatus(st),
                Side(s),
                OrderType(ty),
                q,
                fq,
                None if p != p else p,
                r,
                PositionSide(ps),
            )
            for (o, t, st, s, ty, q, fq, p, ps), r in zip(
                self.data.tolist(), self.reason, strict=True
            )
        ]


def fill_batch(fills: list[Fill], realized: list[float], positions: list[float]) -> FillBatch:
    """The batch of ``fills`` (all of one symbol) with their realised PnL and positions."""
    if not fills:
        return EMPTY_FILLS
    rows = [
        (f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], r, p, f[9])
        for f, r, p in zip(fills, realized, positions, strict=True)
    ]
    return FillBatch(np.array(rows, dtype=FILL_DTYPE))


def update_batch(updates: list[OrderUpdate]) -> UpdateBatch:
    """The batch of ``updates`` (all of one symbol)."""
    if not updates:
        return EMPTY_UPDATES
    nan = math.nan
    rows = [
        (u[1], u[2], u[3], u[4], u[5], u[6], u[7], nan if u[8] is None else u[8], u[10])
        for u in updates
    ]
    return UpdateBatch(np.array(rows, dtype=UPDATE_DTYPE), [u[9] for u in updates])


EMPTY_FILLS = FillBatch(np.empty(0, dtype=FILL_DTYPE))

#: One funding settlement of a perpetual position: the record's funding time, the close
#: of the bar that settled it (the first closing at or after it), the rate, the mark
#: price it was computed at, the position then and what it paid
#: (``position * mark * rate``; negative: received).
FUNDING_DTYPE = np.dtype(
    [
        ("ts", "<i8"),
        ("settled", "<i8"),
        ("rate", "<f8"),
        ("mark", "<f8"),
        ("position", "<f8"),
        ("payment", "<f8"),
    ]
)
EMPTY_FUNDING: npt.NDArray[np.void] = np.empty(0, dtype=FUNDING_DTYPE)
EMPTY_UPDATES = UpdateBatch(np.empty(0, dtype=UPDATE_DTYPE), [])


class Outbox(NamedTuple):
    """What one symbol returns from ``advance``.

    ``reached`` is the step boundary the symbol has processed up to. ``mark_ts``
    and ``mark_px`` are the symbol's marks at every step boundary it passed in
    this call (last close at or before the boundary), oldest first.
    ``intents`` wait for the portfolio's decision; ``updates`` and ``fills``
    are what happened, as columns. ``position`` is the symbol's position after
    all fills in this outbox. ``funding`` holds the funding settlements of a
    perpetual position (:data:`FUNDING_DTYPE` records, oldest first).
    """

    symbol: str
    reached: int
    intents: list[OrderIntent]
    updates: UpdateBatch
    fills: FillBatch
    mark_ts: I64
    mark_px: F64
    position: float
    funding: npt.NDArray[np.void] = EMPTY_FUNDING


class Inbox(NamedTuple):
    """What the portfolio sends one symbol for the next step."""

    symbol: str
    ts_event: int
    decisions: list[RiskDecision]
    controls: list[Control]
