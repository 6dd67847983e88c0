"""Orders filled against OHLCV bars, when no finer data exists.

A bar says where the price went, not in which order. The venue assumes one
documented **intrabar path**: the open, then the nearer of the high and the
low (the high on a tie), then the other, then the close, moving in straight
lines. Every price on that path traded. Path points are stamped at the bar's
open, one third and two thirds of the interval, and its last nanosecond;
a fill on a segment gets the time interpolated along it.

Rules, for a buy (a sell mirrors them):

* An order reaching the venue at ``t`` works from the first bar opening at or
  after ``t`` (a bar already under way is not re-lived).
* **Market**: fills at the open plus half the spread (``spread_bps`` of the
  open, at least ``spread_ticks`` ticks), then impact, as a taker.
* **Limit** at ``L``: marketable at the open when ``open + half spread <= L``
  (a taker fill there). Otherwise it fills at ``L`` as a maker only if the
  path trades *through* it (``low < L``); touching ``L`` is not enough.
* **Stop** at ``S`` (fires at prices ``>= S``): if the bar opens at or beyond
  ``S`` the stop gapped and fills at the open (the worse price); else it fires
  where the path reaches ``S`` and fills at ``S`` plus half the spread.
  A stop-limit then works as a limit on the rest of the path.
* **Touch** orders (market/limit-if-touched) fire the other way, likewise.
* **Trailing** stops follow the highest (for sells) or lowest (for buys)
  price of the path since they reached the venue, segment by segment.
* **Participation**: with ``participation`` set, our fills in one bar take at
  most that fraction of the bar's volume (floored to lots); what is left
  waits for the next bar (a market order at the next open). Bars with no
  volume fill nothing then.
* IOC and FOK orders work at their first bar's open only; post-only limits
  are rejected when marketable at that open. Icebergs fill like plain limits
  (bars have no queue). GTD orders expire at their time, before any bar
  opening at or after it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tickray.engine.calendar import Calendar
from tickray.engine.events import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from tickray.engine.impact import EwmaVolatility, ImpactModel
from tickray.engine.instruments import SymbolSpec
from tickray.engine.latency import LatencyModel
from tickray.engine.matching import Fees, Venue
from tickray.engine.orders import OrderError, OrderRules, SimOrder, TrailUnit, trigger_direction


class BarVenue(Venue):
    """One symbol's venue on OHLCV bars (see the module doc for the fill rules)."""

    def __init__(
        self,
        spec: SymbolSpec,
        interval_ns: int,
        *,
        spread_bps: float = 0.0,
        spread_ticks: int = 0,
        participation: float | None = None,
        fees: Fees | None = None,
        latency: LatencyModel | None = None,
        impact: ImpactModel | None = None,
        rules: OrderRules | None = None,
        calendar: Calendar | None = None,
        hours: str = "wait",
        vol_halflife: int = 60,
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
        if interval_ns <= 0:
            raise OrderError(f"interval_ns must be > 0, got {interval_ns!r}")
        if not (math.isfinite(spread_bps) and spread_bps >= 0):
            raise OrderError(f"spread_bps must be >= 0, got {spread_bps!r}")
        if spread_ticks < 0:
            raise OrderError(f"spread_ticks must be >= 0, got {spread_ticks!r}")
        if participation is not None and not (0 < participation <= 1):
            raise OrderError(f"participation must be in (0, 1], got {participation!r}")
        self.interval = interval_ns
        self.spread_bps = spread_bps
        self.spread_ticks = spread_ticks
        self.participation = participation
        self._plain = (
            spread_bps == 0 and spread_ticks == 0 and participation is None and self._no_impact
        )
        self.working: list[SimOrder] = []  # orders at the venue, in arrival order
        self._first_bar: dict[int, bool] = {}  # order id -> still before its first bar
        self._peak: dict[int, float] = {}  # trailing orders: best price since arrival
        self._vol = EwmaVolatility(vol_halflife)
        self._volume = 0.0
        self._budget = math.inf
        self.last_close = math.nan
        self._here: _Path | None = None  # the rest of the bar's path from the fill being booked
        self._released: list[tuple[SimOrder, _Path]] | None = None

    # -- replay -------------------------------------------------------------------------
    def on_bar(self, ts: int, o: float, h: float, low: float, c: float, v: float) -> None:
        """Process the bar opening at ``ts``: actions due by then, then every working order.

        Orders released during the bar (a bracket's exits once its entry
        fills) work on the rest of the path from the point of that fill.
        """
        self.run_actions(ts)
        self.now = max(self.now, ts)
        if self.calendar is not None and not self.calendar.is_open(ts):
            self.last_close = c  # a bar outside trading hours fills nothing
            return
        self._volume = v
        if self.participation is None:
            self._budget = math.inf
        else:
            self._budget = self.spec.floor_qty(self.participation * v)
        if self.working and self._plain:
            self._plain_market_orders(ts, o)
        if self.working:
            x1, x2 = (h, low) if h - o <= o - low else (low, h)
            third = self.interval // 3
            path: _Path = [
                (ts, o),
                (ts + third, x1),
                (ts + 2 * third, x2),
                (ts + self.interval - 1, c),
            ]
            todo = [(w, path) for w in self.working if w.is_open and not w.held]
            while todo:
                self._released = []
                for order, pts in todo:
                    if order.is_open and not order.held:
                        self._process(order, pts)
                todo = self._released
            self._released = None
        self.working = [w for w in self.working if w.is_open]
        if not self._no_impact:
            self._vol.update(c)
        self.last_close = c

    def _plain_market_orders(self, ts: int, o: float) -> None:
        """With no spread, cap or impact a market order without exits fills whole at the open:
        what :meth:`_process` would do, without walking the path (the common bar-backtest case)."""
        for order in self.working:
            if (
                order.is_open
                and not order.held
                and not order.children
                and order.current_type() is OrderType.MARKET
            ):
                self._first_bar.pop(order.order_id, None)
                self._fill(order, order.remaining, o, Liquidity.TAKER, ts)
        self.working = [w for w in self.working if w.is_open]

    def observe(self, closes: npt.NDArray[np.float64]) -> None:
        """Bars this venue was not asked to process (no working orders): their closes
        still feed the volatility the impact model uses."""
        if len(closes):
            self._vol.update_many(closes)
            self.last_close = float(closes[-1])

    def _impact_inputs(self) -> tuple[float, float]:
        return self._volume, self._vol.value

    # -- one order on one bar -----------------------------------------------------------
    def _half_spread(self, price: float) -> float:
        return max(price * self.spread_bps / 2e4, self.spread_ticks * self.spec.tick_size / 2)

    def _process(self, o: SimOrder, pts: _Path) -> None:
        first = self._first_bar.pop(o.order_id, False)
        seg, frac, price = 0, 0.0, pts[0][1]
        if o.req.triggered_type and not o.triggered:
            hit = self._trigger_point(o, pts)
            if hit is None:
                return
            seg, frac, price = hit
            at = _time(pts, seg, frac)
            self._set(o, OrderStatus.TRIGGERED, at, f"trigger at {price:.10g}")
            o.triggered = True
            if o.req.trailing and o.req.limit_after_trigger:
                off = o.req.limit_offset
                o.price = self.spec.round_price(price - off if o.side == Side.SELL else price + off)
        at = _time(pts, seg, frac)
        rest = _rest_of(pts, seg, frac, price)
        if o.current_type() is OrderType.MARKET:
            self._taker(o, price, at, rest)
            return
        assert o.price is not None
        hs = self._half_spread(price)
        buy = o.side == Side.BUY
        taker_px = price + hs if buy else price - hs
        marketable = taker_px <= o.price if buy else taker_px >= o.price
        tif = o.req.tif
        if first and o.req.post_only and marketable:
            self._close(o, OrderStatus.REJECTED, at, "post-only order would take liquidity")
            return
        if first and tif is TimeInForce.FOK and (not marketable or self._budget < o.remaining):
            self._close(o, OrderStatus.EXPIRED, at, "FOK: the bar cannot fill it in full")
            return
        if marketable:
            self._taker(o, price, at, rest)
        elif (cross := _through(rest, o.price, buy)) is not None:
            k, f = cross
            self._fill_capped(
                o, o.price, Liquidity.MAKER, _time(rest, k, f), _rest_of(rest, k, f, o.price)
            )
        if o.is_open and first and tif in (TimeInForce.IOC, TimeInForce.FOK):
            self._close(o, OrderStatus.EXPIRED, at, f"{tif.name}: unfilled remainder")

    def _trigger_point(self, o: SimOrder, pts: _Path) -> tuple[int, float, float] | None:
        """Where on the path the order's trigger fires: (segment, fraction, price)."""
        d = trigger_direction(o.side, o.req.order_type)
        if o.req.trailing:
            return self._trail_point(o, pts, d)
        assert o.stop is not None
        s = o.stop
        p0 = pts[0][1]
        if (p0 >= s) if d == 1 else (p0 <= s):
            return 0, 0.0, p0  # gapped through: the open, the worse price
        for k in range(len(pts) - 1):
            a, b = pts[k][1], pts[k + 1][1]
            if (a < s <= b) if d == 1 else (b <= s < a):
                return k, (s - a) / (b - a), s
        return None

    def _trail_point(self, o: SimOrder, pts: _Path, d: int) -> tuple[int, float, float] | None:
        p0 = pts[0][1]
        peak = self._peak.get(o.order_id, p0)
        pct = o.req.trail is not None and o.req.trail.unit is TrailUnit.PERCENT
        dist = o.trail_distance

        def trigger(p: float) -> float:
            if pct:
                raw = p * (1.0 - dist) if d == -1 else p * (1.0 + dist)
            else:
                raw = p - dist if d == -1 else p + dist
            return self.spec.round_price(raw)

        if (p0 <= trigger(peak)) if d == -1 else (p0 >= trigger(peak)):
            return 0, 0.0, p0
        for k in range(len(pts) - 1):
            a, b = pts[k][1], pts[k + 1][1]
            if (b > a) == (d == -1):  # moving the favourable way: the peak follows
                peak = max(peak, b) if d == -1 else min(peak, b)
                continue
            s = trigger(peak)
            if (b <= s < a) if d == -1 else (a < s <= b):
                return k, (s - a) / (b - a), s
        self._peak[o.order_id] = peak
        return None

    def _taker(self, o: SimOrder, price: float, ts: int, rest: _Path) -> None:
        hs = self._half_spread(price)
        px = price
        if hs:  # a price we made up goes to the tick, against us; the market's own stays
            px = self.spec.round_price_against(
                price + hs if o.side == Side.BUY else price - hs, o.side
            )
        if o.current_type() is not OrderType.MARKET and o.price is not None:
            px = min(px, o.price) if o.side == Side.BUY else max(px, o.price)
        self._fill_capped(o, px, Liquidity.TAKER, ts, rest)

    def _fill_capped(self, o: SimOrder, price: float, liq: Liquidity, ts: int, rest: _Path) -> None:
        qty = o.remaining
        if qty > self._budget:
            qty = self.spec.floor_qty(self._budget)
        if qty <= 0:
            return
        if self._budget != math.inf:
            self._budget = self.spec.round_qty(self._budget - qty)
        self._here = rest
        self._fill(o, qty, price, liq, ts)
        self._here = None

    # -- the venue hooks ------------------------------------------------------------------
    def _activate(self, o: SimOrder, ts: int) -> None:
        self._first_bar[o.order_id] = True
        here = self._here
        ref = here[0][1] if here is not None else self.last_close
        if o.req.trailing and not math.isnan(ref):
            self._peak[o.order_id] = ref
        if o not in self.working:
            self.working.append(o)
        if here is not None and self._released is not None:
            self._released.append((o, here))  # works on the rest of this bar's path

    def _would_take(self, side: Side, price: float) -> bool:
        ref = self.last_close
        if math.isnan(ref):
            return False
        hs = self._half_spread(ref)
        return ref + hs <= price if side == Side.BUY else ref - hs >= price

    def _unrest(self, o: SimOrder) -> None:
        self._first_bar.pop(o.order_id, None)
        self._peak.pop(o.order_id, None)

    def _is_resting(self, o: SimOrder) -> bool:
        return o in self.working and o.is_open

    def _reduce_resting(self, o: SimOrder) -> None:
        return None


_Path = list[tuple[int, float]]  # (time, price) points of a path, in order


def _time(pts: _Path, k: int, f: float) -> int:
    """Time at fraction ``f`` of segment ``k`` (a point's own time when ``f`` is 0)."""
    if f == 0.0 or k + 1 >= len(pts):
        return pts[k][0]
    t0, t1 = pts[k][0], pts[k + 1][0]
    return t0 + int(f * (t1 - t0))


def _rest_of(pts: _Path, k: int, f: float, price: float) -> _Path:
    """The path from fraction ``f`` of segment ``k`` on, starting at ``price``."""
    return [(_time(pts, k, f), price), *pts[k + 1 :]]


def _through(pts: _Path, limit: float, buy: bool) -> tuple[int, float] | None:
    """Where the path first trades strictly through ``limit``: (segment, fraction)."""
    for k in range(len(pts) - 1):
        a, b = pts[k][1], pts[k + 1][1]
        if (b < limit <= a) if buy else (a <= limit < b):
            return k, (limit - a) / (b - a)
    return None
