"""The simulated venue of one symbol: order lifecycle, latency, links, fees and impact.

:class:`Venue` holds everything every market model shares: the rules applied
to requests, the latencies, the order lifecycle and its events, OCO/OTO links,
reduce-only and iceberg handling, fees, impact and the position. Two market
models fill orders: :class:`tickray.engine.l2venue.L2Venue` (an L2 book with
queue positions) and :class:`tickray.engine.barvenue.BarVenue` (OHLCV bars
with a documented intrabar path).

Time: ``now`` is the venue's clock (ns UTC, set by the market model as it
replays events). A command issued at ``now`` reaches the venue at ``now +
market_data + submit`` (or ``modify``, ``cancel``) latency: the strategy saw
the market ``market_data`` late and its message travels ``submit`` more. An
action due at ``t`` happens after every market event stamped ``<= t``.

Links: an OCO group cancels its other members at the first fill of one, and
when one is canceled, expires or is rejected (as Binance does). An OTO child
(and a bracket's take-profit and stop-loss) waits, accepted but inactive,
until its parent is filled in full (a parent canceled or expired after a
partial fill releases its children for the filled quantity; one canceled with
nothing filled cancels them).

Fees: ``maker`` or ``taker`` rate times the fill's notional, in the quote
asset, rounded to 8 decimals. Impact applies to taker fills only.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from tickray.engine.calendar import Calendar, gate
from tickray.engine.clock import iso
from tickray.engine.events import (
    Fill,
    FillBatch,
    Liquidity,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
    TimeInForce,
    UpdateBatch,
    fill_batch,
    update_batch,
)
from tickray.engine.impact import ImpactModel, NoImpact
from tickray.engine.instruments import SymbolSpec, book_fill, fill_fee, held_to_sell
from tickray.engine.latency import ConstantLatency, LatencyKind, LatencyModel
from tickray.engine.orders import (
    OrderError,
    OrderRequest,
    OrderRules,
    SimOrder,
    Trail,
    TrailUnit,
)

SPOT_NOTHING_HELD = "spot: nothing held to sell"
SPOT_CUT = "spot: cut to what is held"


@dataclass(frozen=True, slots=True)
class Fees:
    """Maker and taker rates, fractions of notional (0.0002 = 2 bp). Negative maker = rebate."""

    maker: float = 0.0002
    taker: float = 0.0005

    def __post_init__(self) -> None:
        for name in ("maker", "taker"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and -0.01 <= v < 0.1):
                raise OrderError(f"fees.{name} must be a fraction in [-0.01, 0.1), got {v!r}")


class _Act(IntEnum):
    ARRIVE = 0
    MODIFY = 1
    CANCEL = 2
    EXPIRE = 3


class Venue:
    """Order lifecycle of one symbol; subclasses supply the market (book or bars)."""

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
    ) -> None:
        if hours not in ("wait", "reject"):
            raise OrderError(f"hours must be 'wait' or 'reject', got {hours!r}")
        self.spec = spec
        self.symbol = spec.symbol
        self.fees = fees or Fees()
        self.latency: LatencyModel = latency or ConstantLatency()
        self.impact: ImpactModel = impact or NoImpact()
        self._no_impact = isinstance(self.impact, NoImpact)
        self._zero_latency = isinstance(self.latency, ConstantLatency) and not any(
            self.latency.draw(k) for k in LatencyKind
        )
        self.rules = rules or OrderRules()
        self.calendar = calendar
        self.hours = hours
        self.now = 0
        self.orders: dict[int, SimOrder] = {}
        self._reducing: dict[int, SimOrder] = {}  # open reduce-only orders
        self._open: dict[int, SimOrder] = {}  # orders not yet ended
        self._notes: dict[int, str] = {}  # reasons for ACCEPTED updates, by order id
        self._next_id = 1
        self._next_fill = 1
        self._seq = 0
        self._actions: list[tuple[int, int, _Act, int, Any]] = []
        self.position = 0.0
        self.avg_price = 0.0
        self.realized = 0.0
        self.fees_paid = 0.0
        # Spot fees in base (engine.instruments.base_fee_split): a buy books what it
        # received in whole lots; ``base_shortfall`` sums what it traded but did not book.
        self.base_fee = False
        self.base_shortfall = 0.0
        self.dust = 0.0
        # Spot without shorting: a sell fills at most what is held; the rest is canceled.
        self.long_only = False
        self.atr = math.nan  # set by the caller for ATR trailing distances
        self.fills: list[Fill] = []
        self.updates: list[OrderUpdate] = []
        self._realized: list[float] = []
        self._positions: list[float] = []

    # -- commands (issued at ``now``) ---------------------------------------------------
    def submit(
        self,
        req: OrderRequest,
        *,
        parent: int = 0,
        order_id: int | None = None,
        announce: bool = True,
        note: str = "",
    ) -> int:
        """Place an order; returns its id. Rule violations are rejected with a reason.

        ``order_id`` keeps an id given upstream (an approved intent's);
        ``announce=False`` skips the SUBMITTED update when upstream already sent one;
        ``note`` is the reason its ACCEPTED update carries (a resize by the risk check).
        """
        if order_id is None:
            oid = self._next_id
        elif order_id in self.orders:
            raise OrderError(f"order id {order_id} is already in use")
        else:
            oid = order_id
        self._next_id = max(self._next_id, oid) + 1
        o = SimOrder(oid, req, req.qty, req.price, req.stop_price, self.now)
        self.orders[oid] = o
        reason = self._apply_rules(o)
        if reason:
            self._set(o, OrderStatus.REJECTED, self.now, reason)
            return oid
        if req.trailing and req.trail is not None:
            reason = self._trail(o, req.trail)
            if reason:
                self._set(o, OrderStatus.REJECTED, self.now, reason)
                return oid
        if parent:
            p = self.orders.get(parent)
            if p is None:
                raise OrderError(f"parent order {parent} is unknown")
            if not p.is_open and p.filled == 0:
                self._set(o, OrderStatus.REJECTED, self.now, f"parent {parent} is {p.status.name}")
                return oid
            o.parent = parent
            o.held = True
            p.children.append(oid)
        if note:
            self._notes[oid] = note
        if announce:
            self._set(o, OrderStatus.SUBMITTED, self.now, "")
        self._schedule(LatencyKind.SUBMIT, _Act.ARRIVE, oid, None)
        return oid

    def submit_oco(self, a: OrderRequest, b: OrderRequest, *, parent: int = 0) -> tuple[int, int]:
        """Two orders where the first fill of one cancels the other."""
        ia = self.submit(a, parent=parent)
        ib = self.submit(b, parent=parent)
        self.orders[ia].oco.append(ib)
        self.orders[ib].oco.append(ia)
        return ia, ib

    def link_oco(self, ids: list[int]) -> None:
        """Make the orders ``ids`` one-cancels-the-others: the first fill of one cancels the rest."""
        for a in ids:
            self.orders[a].oco.extend(b for b in ids if b != a)

    def submit_oto(self, parent: OrderRequest, child: OrderRequest) -> tuple[int, int]:
        """An order, and a child placed once the parent is filled."""
        ip = self.submit(parent)
        return ip, self.submit(child, parent=ip)

    def submit_bracket(
        self,
        entry: OrderRequest,
        *,
        take_profit: float,
        stop_loss: float,
        stop_limit: float | None = None,
    ) -> tuple[int, int, int]:
        """Entry, then a take-profit limit and a stop-loss (OCO, reduce-only) once it is filled.

        The stop-loss is a stop-market order, or a stop-limit at ``stop_limit``.
        """
        exit_side = Side.SELL if entry.side == Side.BUY else Side.BUY
        sign = 1 if entry.side == Side.BUY else -1
        if sign * (take_profit - stop_loss) <= 0:
            raise OrderError(
                f"bracket: take_profit {take_profit} and stop_loss {stop_loss} are on the wrong "
                f"sides for a {entry.side.name} entry"
            )
        tp = OrderRequest(
            side=exit_side,
            qty=entry.qty,
            order_type=OrderType.LIMIT,
            price=take_profit,
            reduce_only=True,
            tag=entry.tag,
        )
        sl = OrderRequest(
            side=exit_side,
            qty=entry.qty,
            order_type=OrderType.STOP_MARKET if stop_limit is None else OrderType.STOP_LIMIT,
            price=stop_limit,
            stop_price=stop_loss,
            reduce_only=True,
            tag=entry.tag,
        )
        ie = self.submit(entry)
        itp, isl = self.submit_oco(tp, sl, parent=ie)
        return ie, itp, isl

    def cancel(self, order_id: int) -> None:
        """Ask to cancel; it takes effect after the cancel latency, if the order is still open."""
        self._schedule(LatencyKind.CANCEL, _Act.CANCEL, order_id, None)

    def modify(
        self,
        order_id: int,
        *,
        price: float | None = None,
        qty: float | None = None,
        stop_price: float | None = None,
    ) -> None:
        """Ask to change price, quantity or stop; effective after the modify latency.

        A new price or a larger quantity loses the queue position; a smaller
        quantity keeps it.
        """
        if price is None and qty is None and stop_price is None:
            raise OrderError("modify needs a price, a qty or a stop_price")
        self._schedule(LatencyKind.MODIFY, _Act.MODIFY, order_id, (price, qty, stop_price))

    def cancel_now(self, order_id: int, ts: int, reason: str) -> None:
        """Cancel at once, with no latency (the end of a run, a risk flatten)."""
        o = self.orders.get(order_id)
        if o is not None and o.is_open:
            self._close(o, OrderStatus.CANCELED, ts, reason)

    def open_orders(self) -> list[SimOrder]:
        """Orders not yet ended, in submission order."""
        return list(self._open.values())

    # -- outputs ------------------------------------------------------------------------
    def take_events(self) -> tuple[list[Fill], list[float], list[float], list[OrderUpdate]]:
        """Fills (with their realised PnL and position after) and updates since the last take."""
        out = (self.fills, self._realized, self._positions, self.updates)
        self.fills, self.updates, self._realized, self._positions = [], [], [], []
        return out

    def drain(self) -> tuple[FillBatch, UpdateBatch]:
        """Fills and order updates since the last drain, as batches."""
        fills = fill_batch(self.fills, self._realized, self._positions)
        ups = update_batch(self.updates)
        self.fills, self.updates, self._realized, self._positions = [], [], [], []
        return fills, ups

    # -- time ---------------------------------------------------------------------------
    def _schedule(self, kind: LatencyKind, act: _Act, oid: int, payload: Any) -> None:
        if self._zero_latency:
            self._push(self.now, act, oid, payload)
            return
        lat = self.latency.draw(LatencyKind.MARKET_DATA) + self.latency.draw(kind)
        self._push(self.now + lat, act, oid, payload)

    def _push(self, ts: int, act: _Act, oid: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._actions, (ts, self._seq, act, oid, payload))

    def next_action_ts(self) -> int | None:
        return self._actions[0][0] if self._actions else None

    def run_actions(self, upto: int) -> None:
        """Carry out every action due at or before ``upto``, in time then issue order."""
        while self._actions and self._actions[0][0] <= upto:
            ts, _, act, oid, payload = heapq.heappop(self._actions)
            self.now = max(self.now, ts)
            o = self.orders.get(oid)
            if act == _Act.ARRIVE and o is not None:
                self._arrive(o, ts)
            elif act == _Act.CANCEL:
                self._cancel(o, oid, ts)
            elif act == _Act.MODIFY:
                self._modify(o, oid, ts, payload)
            elif act == _Act.EXPIRE and o is not None and o.is_open:
                self._close(o, OrderStatus.EXPIRED, ts, f"GTD expired at {iso(ts)}")

    # -- lifecycle ----------------------------------------------------------------------
    def _apply_rules(self, o: SimOrder) -> str:
        spec, rules = self.spec, self.rules
        q, why = rules.qty(spec, o.qty)
        if why:
            return why
        o.qty = q
        if o.price is not None:
            o.price, why = rules.price(spec, o.price, "price")
            if why:
                return why
        if o.stop is not None:
            o.stop, why = rules.price(spec, o.stop, "stop_price")
            if why:
                return why
        ref = o.price if o.price is not None else o.stop
        if ref is not None and spec.min_notional and q * ref < spec.min_notional:
            return f"notional {q * ref:.8g} is below the minimum notional {spec.min_notional}"
        if o.req.display_qty is not None:
            d, why = rules.qty(spec, o.req.display_qty, "display_qty")
            if why:
                return why
            o.visible = d
        return ""

    def _trail(self, o: SimOrder, trail: Trail) -> str:
        if trail.unit is TrailUnit.PERCENT:
            o.trail_distance = trail.distance
            return ""
        dist = trail.distance
        if trail.unit is TrailUnit.ATR:
            if not (math.isfinite(self.atr) and self.atr > 0):
                return "trailing distance in ATR but no ATR is known yet"
            dist = trail.distance * self.atr
        o.trail_distance = max(self.spec.tick_size, self.spec.round_price(dist))
        return ""

    def _set(
        self, o: SimOrder, status: OrderStatus, ts: int, reason: str, price: float | None = None
    ) -> None:
        o.status = status
        if o.is_open:
            self._open[o.order_id] = o
        else:
            self._open.pop(o.order_id, None)
        if o.req.reduce_only:
            if o.is_open:
                self._reducing[o.order_id] = o
            else:
                self._reducing.pop(o.order_id, None)
        self._emit(o, status, ts, reason, price)

    def _emit(
        self, o: SimOrder, status: OrderStatus, ts: int, reason: str, price: float | None = None
    ) -> None:
        self.updates.append(
            OrderUpdate(
                self.symbol,
                o.order_id,
                ts,
                status,
                o.side,
                o.req.order_type,
                o.qty,
                o.filled,
                o.price if price is None else price,
                reason,
            )
        )

    def _arrive(self, o: SimOrder, ts: int) -> None:
        if not o.is_open:
            return
        o.arrived = True
        if self.calendar is not None:
            when, why = gate(self.calendar, ts, self.hours)
            if when is None:
                self._close(o, OrderStatus.REJECTED, ts, why)
                return
            if when > ts:
                self._push(when, _Act.ARRIVE, o.order_id, None)
                return
        if o.req.tif is TimeInForce.GTD and o.req.expire_ts is not None:
            if o.req.expire_ts <= ts:
                self._close(o, OrderStatus.EXPIRED, ts, f"GTD expired at {iso(o.req.expire_ts)}")
                return
            self._push(o.req.expire_ts, _Act.EXPIRE, o.order_id, None)
        if not o.held:
            why = self._reduce_only_check(o)
            if (
                not why
                and o.req.post_only
                and o.price is not None
                and self._would_take(o.side, o.price)
            ):
                why = "post-only order would take liquidity"
            if why:
                self._close(o, OrderStatus.REJECTED, ts, why)
                return
        self._set(o, OrderStatus.ACCEPTED, ts, self._notes.pop(o.order_id, ""))
        if not o.held:
            self._activate(o, ts)

    def _reduce_only_check(self, o: SimOrder) -> str:
        """Cut a reduce-only order to the position; a reason when it can only increase it."""
        if not o.req.reduce_only:
            return ""
        pos = self.position
        if pos == 0 or (pos > 0) == (o.side == Side.BUY):
            return "reduce-only order would increase the position"
        if o.remaining > abs(pos):
            o.qty = self.spec.round_qty(o.filled + abs(pos))
        return ""

    def _activate(self, o: SimOrder, ts: int) -> None:
        if o.req.triggered_type and not o.triggered:
            self._arm(o, ts)
        else:
            self._work(o, ts)

    def _work(self, o: SimOrder, ts: int) -> None:
        """An order working as market or limit now: take what it may, then rest or end."""
        kind = o.current_type()
        tif = o.req.tif
        if kind is OrderType.MARKET:
            self._take(o, ts, None)
            if o.is_open:
                self._close(o, OrderStatus.EXPIRED, ts, "market order: no more liquidity")
            return
        assert o.price is not None
        marketable = self._would_take(o.side, o.price)
        if o.req.post_only and marketable:
            self._close(o, OrderStatus.REJECTED, ts, "post-only order would take liquidity")
            return
        if tif is TimeInForce.FOK and self._available(o.side, o.remaining, o.price) < (
            o.remaining - self.spec.step_size * 1e-6
        ):
            self._close(o, OrderStatus.EXPIRED, ts, "FOK: the book cannot fill it in full")
            return
        if marketable:
            self._take(o, ts, o.price)
        if not o.is_open:
            return
        if tif in (TimeInForce.IOC, TimeInForce.FOK):
            self._close(o, OrderStatus.EXPIRED, ts, f"{tif.name}: unfilled remainder")
            return
        self._rest_slice(o)

    def _rest_slice(self, o: SimOrder) -> None:
        """Rest the order (or its next iceberg slice) at the back of its price level."""
        qty = o.remaining
        if o.req.display_qty is not None:
            qty = min(o.visible, qty)
        self._rest(o, qty)

    def _take(self, o: SimOrder, ts: int, limit: float | None) -> None:
        for price, qty in self._take_liquidity(o.side, o.remaining, limit):
            if not o.is_open:
                break  # ended by a link while filling: nothing more fills
            self._fill(o, qty, price, Liquidity.TAKER, ts)

    def _on_trigger(self, o: SimOrder, ts: int, price: float) -> None:
        """A stop or touch trigger fired at ``price``: the order works as market or limit."""
        o.triggered = True
        o.slot = -1
        if o.req.trailing and o.req.limit_after_trigger:
            off = o.req.limit_offset
            o.price = self.spec.round_price(price - off if o.side == Side.SELL else price + off)
        self._set(o, OrderStatus.TRIGGERED, ts, f"trigger at {price:.10g}")
        self._work(o, ts)

    def _fill(self, o: SimOrder, qty: float, price: float, liq: Liquidity, ts: int) -> None:
        spec = self.spec
        qty = spec.round_qty(min(qty, o.remaining))
        if qty <= 0:
            return
        cut = False
        if self.long_only and o.side == Side.SELL:
            held = held_to_sell(self.position, spec)
            if qty > held:
                if held <= 0:
                    self._close(o, OrderStatus.CANCELED, ts, SPOT_NOTHING_HELD)
                    return
                qty, cut = held, True
        if liq == Liquidity.TAKER and not self._no_impact:
            price = self._impacted(o.side, qty, price, ts)
        rate = self.fees.taker if liq == Liquidity.TAKER else self.fees.maker
        booked, fee, self.dust = fill_fee(o.side, qty, price, rate, spec, self.dust, self.base_fee)
        self.base_shortfall += qty - booked
        self.fills.append(
            Fill(self.symbol, o.order_id, self._next_fill, ts, o.side, qty, price, fee, liq)
        )
        self._next_fill += 1
        self.fees_paid += fee
        self._book(o.side * booked, price)
        o.filled = spec.round_qty(o.filled + qty)
        o.notional += qty * price
        done = o.remaining <= spec.step_size * 1e-6
        if done:
            o.filled = o.qty
        # a fill's update carries that fill's price (the order's limit stays on the order)
        self._set(o, OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED, ts, "", price)
        siblings, o.oco = o.oco, []
        for sib in siblings:
            s = self.orders[sib]
            s.oco = [x for x in s.oco if x != o.order_id]  # it must not end us in turn
            if s.is_open:
                self._close(s, OrderStatus.CANCELED, ts, f"OCO: order {o.order_id} filled")
        if done:
            self._unrest(o)
            self._release_children(o, ts)
        elif cut:
            self._close(o, OrderStatus.CANCELED, ts, SPOT_CUT)
        self._trim_reduce_only(ts, o.order_id)

    def _impacted(self, side: Side, qty: float, price: float, ts: int) -> float:
        vol, sigma = self._impact_inputs()
        p = self.impact.price(ts, int(side), qty, price, vol, sigma)
        self.impact.record(ts, int(side), qty, price, vol, sigma)
        return price if p == price else self.spec.round_price_against(p, side)

    def _book(self, q: float, price: float) -> None:
        """Position and realised PnL of a signed fill (average cost), fees apart."""
        self.position, self.avg_price, realized = book_fill(
            self.position, self.avg_price, q, price, self.spec
        )
        self.realized += realized
        self._realized.append(realized)
        self._positions.append(self.position)

    def _trim_reduce_only(self, ts: int, skip: int) -> None:
        if not self._reducing:
            return
        for o in list(self._reducing.values()):
            if o.order_id == skip or not o.is_open or o.held:
                continue
            pos = self.position
            if pos == 0 or (pos > 0) == (o.side == Side.BUY):
                self._close(o, OrderStatus.CANCELED, ts, "reduce-only: the position is closed")
            elif o.remaining > abs(pos) + self.spec.step_size * 1e-6:
                o.qty = self.spec.round_qty(o.filled + abs(pos))
                self._reduce_resting(o)
                self._set(o, OrderStatus.AMENDED, ts, "reduce-only: cut to the position")

    def _release_children(self, o: SimOrder, ts: int) -> None:
        for cid in o.children:
            c = self.orders[cid]
            if not c.is_open or not c.held:
                continue
            c.held = False
            if o.filled < o.qty:
                c.qty = self.spec.round_qty(min(c.qty, o.filled))
            why = self._reduce_only_check(c)
            if why:
                self._close(c, OrderStatus.CANCELED, ts, why)
                continue
            if not c.arrived or c.status is OrderStatus.SUBMITTED:
                continue  # not yet accepted at the venue: it activates on arrival
            self._activate(c, ts)

    def _close(self, o: SimOrder, status: OrderStatus, ts: int, reason: str) -> None:
        """End an open order (canceled, expired or rejected), with its links."""
        self._unrest(o)
        self._set(o, status, ts, reason)
        siblings, o.oco = o.oco, []
        for sib in siblings:  # as on Binance: ending one leg of an OCO ends the other
            s = self.orders[sib]
            if s.is_open:
                why = f"OCO: order {o.order_id} {status.name.lower()}"
                self._close(s, OrderStatus.CANCELED, ts, why)
        if o.children:
            if o.filled > 0:
                self._release_children(o, ts)
            else:
                for cid in o.children:
                    c = self.orders[cid]
                    if c.is_open:
                        self._close(c, OrderStatus.CANCELED, ts, f"parent {o.order_id} ended")

    def _cancel(self, o: SimOrder | None, oid: int, ts: int) -> None:
        if o is not None and not o.is_open:
            self._emit(o, OrderStatus.CANCEL_REJECTED, ts, f"order is already {o.status.name}")
            return
        if o is None or not o.arrived:
            self.updates.append(_unknown(self.symbol, oid, ts, OrderStatus.CANCEL_REJECTED, o))
            return
        self._close(o, OrderStatus.CANCELED, ts, "canceled")

    def _modify(
        self, o: SimOrder | None, oid: int, ts: int, payload: tuple[float | None, ...]
    ) -> None:
        if o is not None and not o.is_open:
            self._emit(o, OrderStatus.MODIFY_REJECTED, ts, f"order is already {o.status.name}")
            return
        if o is None or not o.arrived:
            self.updates.append(_unknown(self.symbol, oid, ts, OrderStatus.MODIFY_REJECTED, o))
            return
        price, qty, stop = payload
        spec, rules = self.spec, self.rules
        new_price, new_qty, new_stop = o.price, o.qty, o.stop
        if price is not None:
            if o.price is None:
                self._emit(o, OrderStatus.MODIFY_REJECTED, ts, "order has no limit price")
                return
            new_price, why = rules.price(spec, price, "price")
            if why:
                self._emit(o, OrderStatus.MODIFY_REJECTED, ts, why)
                return
        if stop is not None:
            if o.stop is None or o.triggered:
                self._emit(o, OrderStatus.MODIFY_REJECTED, ts, "order has no pending stop")
                return
            new_stop, why = rules.price(spec, stop, "stop_price")
            if why:
                self._emit(o, OrderStatus.MODIFY_REJECTED, ts, why)
                return
        if qty is not None:
            new_qty, why = rules.qty(spec, qty)
            if why or new_qty <= o.filled:
                why = why or f"new qty {new_qty} is not above the filled {o.filled}"
                self._emit(o, OrderStatus.MODIFY_REJECTED, ts, why)
                return
            parent = self.orders.get(o.parent) if o.parent else None
            if parent is not None and not parent.is_open and new_qty > parent.filled + 1e-12:
                # a child released by a partly filled parent covers only what it filled
                why = f"new qty {new_qty} is above its parent's filled {parent.filled}"
                self._emit(o, OrderStatus.MODIFY_REJECTED, ts, why)
                return
        resting = self._is_resting(o)
        if (
            o.req.post_only
            and new_price is not None
            and new_price != o.price
            and self._would_take(o.side, new_price)
        ):
            self._emit(o, OrderStatus.MODIFY_REJECTED, ts, "post-only order would take liquidity")
            return
        keeps_queue = new_price == o.price and new_qty <= o.qty
        o.price, o.stop = new_price, new_stop
        old_qty, o.qty = o.qty, new_qty
        self._set(o, OrderStatus.AMENDED, ts, "")
        if o.held:
            return
        if resting and keeps_queue:
            if new_qty < old_qty:
                self._reduce_resting(o)
            return
        if resting or (o.req.triggered_type and not o.triggered):
            self._unrest(o)
            self._activate(o, ts)

    # -- the market model -----------------------------------------------------------------
    def _impact_inputs(self) -> tuple[float, float]:
        """Reference volume and volatility for the impact model."""
        return 0.0, 0.0

    def _take_liquidity(
        self, side: Side, qty: float, limit: float | None
    ) -> list[tuple[float, float]]:
        raise NotImplementedError

    def _available(self, side: Side, qty: float, limit: float) -> float:
        raise NotImplementedError

    def _would_take(self, side: Side, price: float) -> bool:
        raise NotImplementedError

    def _rest(self, o: SimOrder, qty: float) -> None:
        raise NotImplementedError

    def _arm(self, o: SimOrder, ts: int) -> None:
        raise NotImplementedError

    def _unrest(self, o: SimOrder) -> None:
        raise NotImplementedError

    def _is_resting(self, o: SimOrder) -> bool:
        raise NotImplementedError

    def _reduce_resting(self, o: SimOrder) -> None:
        raise NotImplementedError


def _unknown(
    symbol: str, oid: int, ts: int, status: OrderStatus, o: SimOrder | None
) -> OrderUpdate:
    side = o.side if o is not None else Side.BUY
    otype = o.req.order_type if o is not None else OrderType.MARKET
    return OrderUpdate(
        symbol, oid, ts, status, side, otype, 0.0, 0.0, None, f"order {oid} is not at the venue"
    )
