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


I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
F64 = npt.NDArray[np.float64]


class FillBatch(NamedTuple):
    """One symbol's fills as columns (enums as their int values), oldest first.

    ``realized_pnl`` is each fill's realised PnL against the average cost of
    the open position (fees apart); ``position_after`` the position after it.
    Batches are how fills cross actors and reach the recorder: an advance over
    a long history can carry tens of thousands of them.
    """

    order_id: I64
    fill_id: I64
    ts: I64
    side: I8
    qty: F64
    price: F64
    fee: F64
    liquidity: I8
    realized_pnl: F64
    position_after: F64

    @property
    def size(self) -> int:
        return len(self.ts)

    def events(self, symbol: str) -> list[Fill]:
        """The batch as typed :class:`Fill` events."""
        return [
            Fill(symbol, o, f, t, Side(s), q, p, fee, Liquidity(liq))
            for o, f, t, s, q, p, fee, liq in zip(
                self.order_id.tolist(),
                self.fill_id.tolist(),
                self.ts.tolist(),
                self.side.tolist(),
                self.qty.tolist(),
                self.price.tolist(),
                self.fee.tolist(),
                self.liquidity.tolist(),
                strict=True,
            )
        ]


class UpdateBatch(NamedTuple):
    """One symbol's order updates as columns; ``price`` is NaN where none is set."""

    order_id: I64
    ts: I64
    status: I8
    side: I8
    order_type: I8
    qty: F64
    filled_qty: F64
    price: F64
    reason: list[str]

    @property
    def size(self) -> int:
        return len(self.ts)

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
            )
            for o, t, st, s, ty, q, fq, p, r in zip(
                self.order_id.tolist(),
                self.ts.tolist(),
                self.status.tolist(),
                self.side.tolist(),
                self.order_type.tolist(),
                self.qty.tolist(),
                self.filled_qty.tolist(),
                self.price.tolist(),
                self.reason,
                strict=True,
            )
        ]


def fill_batch(fills: list[Fill], realized: list[float], positions: list[float]) -> FillBatch:
    """Columns of ``fills`` (all of one symbol) with their realised PnL and positions."""
    if not fills:
        return EMPTY_FILLS
    _, oid, fid, ts, side, qty, px, fee, liq = zip(*fills, strict=True)
    return FillBatch(
        np.array(oid, dtype=np.int64),
        np.array(fid, dtype=np.int64),
        np.array(ts, dtype=np.int64),
        np.array(side, dtype=np.int8),
        np.array(qty, dtype=np.float64),
        np.array(px, dtype=np.float64),
        np.array(fee, dtype=np.float64),
        np.array(liq, dtype=np.int8),
        np.array(realized, dtype=np.float64),
        np.array(positions, dtype=np.float64),
    )


def update_batch(updates: list[OrderUpdate]) -> UpdateBatch:
    """Columns of ``updates`` (all of one symbol)."""
    if not updates:
        return EMPTY_UPDATES
    _, oid, ts, st, side, typ, qty, fq, px, reason = zip(*updates, strict=True)
    return UpdateBatch(
        np.array(oid, dtype=np.int64),
        np.array(ts, dtype=np.int64),
        np.array(st, dtype=np.int8),
        np.array(side, dtype=np.int8),
        np.array(typ, dtype=np.int8),
        np.array(qty, dtype=np.float64),
        np.array(fq, dtype=np.float64),
        np.array([np.nan if p is None else p for p in px], dtype=np.float64),
        list(reason),
    )


_NO_I64 = np.empty(0, dtype=np.int64)
_NO_I8 = np.empty(0, dtype=np.int8)
_NO_F64 = np.empty(0, dtype=np.float64)
EMPTY_FILLS = FillBatch(
    _NO_I64, _NO_I64, _NO_I64, _NO_I8, _NO_F64, _NO_F64, _NO_F64, _NO_I8, _NO_F64, _NO_F64
)
EMPTY_UPDATES = UpdateBatch(_NO_I64, _NO_I64, _NO_I8, _NO_I8, _NO_I8, _NO_F64, _NO_F64, _NO_F64, [])


class Outbox(NamedTuple):
    """What one symbol returns from ``advance``.

    ``reached`` is the step boundary the symbol has processed up to. ``mark_ts``
    and ``mark_px`` are the symbol's marks at every step boundary it passed in
    this call (last close at or before the boundary), oldest first.
    ``intents`` wait for the portfolio's decision; ``updates`` and ``fills``
    are what happened, as columns. ``position`` is the symbol's position after
    all fills in this outbox.
    """

    symbol: str
    reached: int
    intents: list[OrderIntent]
    updates: UpdateBatch
    fills: FillBatch
    mark_ts: I64
    mark_px: F64
    position: float


class Inbox(NamedTuple):
    """What the portfolio sends one symbol for the next step."""

    symbol: str
    ts_event: int
    decisions: list[RiskDecision]
    controls: list[Control]
