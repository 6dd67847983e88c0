"""The L2 order book of one symbol, and the queue positions of our resting orders in it.

The book is rebuilt from the market's own messages: a depth snapshot followed
by diffs (each diff sets a level's absolute quantity; 0 deletes it), trades,
and book tops (best bid and ask). Our simulated orders are never inserted in
the market's levels: the feed does not know them. Instead each resting order
carries its **queue position**, the quantity ahead of it at its price:

* When it arrives, the quantity ahead is the level's visible quantity.
* A trade at its price by the other side moves it forward by the trade's
  quantity; the part of a trade beyond the quantity ahead fills the order
  (floored to whole lots). A trade *through* its price (a sell at a lower
  price than our bid) fills it in full: the whole level was taken.
* A decrease of its level that trades do not explain is a cancellation. The
  queue model decides how much of it was ahead of us:
  :class:`ConservativeQueue` says none (cancels come from behind; the
  quantity ahead only shrinks when the level shrinks below it);
  :class:`ProbabilisticQueue` gives the front the share
  ``f(ahead) / (f(ahead) + f(behind))`` with ``f(x) = x ** power`` (or
  ``log(1 + x)``), an expected value, so no randomness is involved.
* When the other side of the book reaches its price (the best ask falls to or
  below our bid), it is filled in full at its own price.

Liquidity our own taker orders consume is remembered per level ("taken")
until the feed next reports that level, so two orders cannot take the same
quantity; the next report of the level is the market's answer to it.

A book top newer than the last depth update (by update id) is applied too:
it sets the quantity at its price and removes the levels it shows are gone
(bids above the best bid, asks below the best ask). With no depth stream,
tops alone build a one-level book. A diff that leaves the book crossed is
repaired at the end of its message by deleting the crossed levels of the side
the message did not touch (asks when it touched both), and counted.

Prices are held as integer ticks of the symbol's tick size on a dense grid
that grows as prices move; levels farther than ``window_ticks`` from the
market are dropped and counted (they cannot matter for matching).

The per-event loop is compiled with numba (:mod:`tickray.engine.jit`); the
same functions run as plain Python with ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from tickray.engine.jit import jit

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


class BookError(ValueError):
    """Market data the book cannot apply (out of sequence, bad values); says which and why."""


# -- market event kinds (column ``kind`` of MarketEvents) ------------------------------------
DEPTH = 1  # set one level: side (+1 bid, -1 ask), price, qty (0 deletes)
TRADE = 2  # a market trade: side is the aggressor (+1 buyer took asks, -1 seller hit bids)
TOP = 3  # one side of a book top: side, best price, its qty
CLEAR = 4  # a snapshot begins: the book is emptied, the DEPTH rows that follow rebuild it


class MarketEvents(NamedTuple):
    """Market data of one symbol as columns, in the order it happened.

    ``end`` marks the last row of each message (a depth diff or a snapshot spans
    several rows; a trade is one row, a book top two). The book is consistent
    only at message ends, where fills by crossing and quote triggers are checked.
    ``uid`` is the exchange's update id (depth, tops) or trade id, -1 if unknown.
    """

    ts: I64
    kind: I8
    side: I8
    price: F64
    qty: F64
    uid: I64
    end: B

    def slice(self, start: int, stop: int) -> MarketEvents:
        return MarketEvents(
            self.ts[start:stop],
            self.kind[start:stop],
            self.side[start:stop],
            self.price[start:stop],
            self.qty[start:stop],
            self.uid[start:stop],
            self.end[start:stop],
        )

    @property
    def messages(self) -> int:
        """Number of messages (rows with ``end``)."""
        return int(np.count_nonzero(self.end))


def validate_events(ev: MarketEvents) -> None:
    """BookError naming the first bad row: lengths, kinds, sides, finiteness, order of time."""
    n = len(ev.ts)
    cols: tuple[npt.NDArray[np.generic], ...] = tuple(ev)
    for name, col in zip(MarketEvents._fields, cols, strict=True):
        if len(col) != n:
            raise BookError(f"market events: column {name} has {len(col)} rows, ts has {n}")
    if n == 0:
        return
    bad = np.flatnonzero((ev.kind < DEPTH) | (ev.kind > CLEAR))
    if len(bad):
        raise BookError(f"market events row {bad[0]}: unknown kind {ev.kind[bad[0]]}")
    bad = np.flatnonzero((ev.kind != CLEAR) & (ev.side != 1) & (ev.side != -1))
    if len(bad):
        raise BookError(f"market events row {bad[0]}: side must be 1 or -1, got {ev.side[bad[0]]}")
    live = ev.kind != CLEAR
    bad = np.flatnonzero(live & ~(np.isfinite(ev.price) & (ev.price > 0)))
    if len(bad):
        raise BookError(f"market events row {bad[0]}: price must be > 0, got {ev.price[bad[0]]}")
    bad = np.flatnonzero(live & ~(np.isfinite(ev.qty) & (ev.qty >= 0)))
    if len(bad):
        raise BookError(f"market events row {bad[0]}: qty must be >= 0, got {ev.qty[bad[0]]}")
    bad = np.flatnonzero(np.diff(ev.ts) < 0)
    if len(bad):
        i = bad[0] + 1
        raise BookError(f"market events row {i}: ts {ev.ts[i]} is before {ev.ts[i - 1]}")
    if not ev.end[-1]:
        raise BookError("market events: the last row does not end a message")


# -- queue models ---------------------------------------------------------------------------
_Q_CONSERVATIVE, _Q_POWER, _Q_LOG = 0, 1, 2


class ConservativeQueue:
    """Level decreases that trades do not explain are cancels behind our order."""

    code = _Q_CONSERVATIVE
    param = 0.0

    def describe(self) -> dict[str, object]:
        return {"model": "conservative"}


class ProbabilisticQueue:
    """A cancel comes from ahead of our order with share ``f(ahead)/(f(ahead)+f(behind))``.

    ``f(x) = x ** power`` (``power`` > 0; 1 is proportional, larger values put
    cancels where most of the queue is), or ``f(x) = log(1 + x)`` with
    ``log=True``. The share is applied as an expected value: deterministic.
    """

    def __init__(self, power: float = 2.0, *, log: bool = False) -> None:
        if not (math.isfinite(power) and power > 0):
            raise ValueError(f"queue.power must be > 0, got {power!r}")
        self.code = _Q_LOG if log else _Q_POWER
        self.param = float(power)

    def describe(self) -> dict[str, object]:
        if self.code == _Q_LOG:
            return {"model": "probabilistic", "function": "log"}
        return {"model": "probabilistic", "power": self.param}


QueueModel = ConservativeQueue | ProbabilisticQueue


def queue_from_spec(spec: object) -> QueueModel:
    """``"conservative"``, ``"probabilistic"`` or ``{"model": ..., "power": 2, "function": "log"}``."""
    if spec is None or spec == "conservative":
        return ConservativeQueue()
    if spec == "probabilistic":
        return ProbabilisticQueue()
    if isinstance(spec, dict):
        unknown = set(spec) - {"model", "power", "function"}
        if unknown:
            raise ValueError(f"queue: unknown keys {sorted(unknown)}")
        model = spec.get("model", "conservative")
        if model == "conservative":
            return ConservativeQueue()
        if model == "probabilistic":
            fn = spec.get("function", "power")
            if fn not in ("power", "log"):
                raise ValueError(f"queue.function must be 'power' or 'log', got {fn!r}")
            power = spec.get("power", 2.0)
            if not isinstance(power, int | float):
                raise ValueError(f"queue.power must be a number, got {power!r}")
            return ProbabilisticQueue(float(power), log=fn == "log")
        raise ValueError(f"queue.model must be 'conservative' or 'probabilistic', got {model!r}")
    raise ValueError(f"queue: expected a model name or a mapping, got {spec!r}")


# -- kernel state layout --------------------------------------------------------------------
# st (int64)
_BASE, _BB, _BA, _LAST_UID, _LAST_TRADE, _HAS_TRADE, _N_CROSSED, _TOPS = 0, 1, 2, 3, 4, 5, 6, 7
_QMODEL, _IN_SNAP, _WAKE_TICKS, _WAKE_BB, _WAKE_BA, _N_MSGS, _N_ROWS, _TOUCH = (
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
)
_N_ORD, _N_DROPPED, _WAKE_TRADE = 16, 17, 18
_ST_SIZE = 19
# qp (float64): queue parameter, lot step
_QPARAM, _STEP = 0, 1

# our orders: oi (int64 columns), of (float64 columns)
_OST, _OSIDE, _OTICK, _OSRC, _ODIR, _OTRAIL = 0, 1, 2, 3, 4, 5
_OI_COLS = 6
_LEFT, _AHEAD, _TRADED, _TRAIL, _PEAK = 0, 1, 2, 3, 4
_OF_COLS = 5
# order slot states
FREE, RESTING, ARMED, DONE = 0, 1, 2, 3
# trigger sources and trailing kinds
SRC_TRADE, SRC_QUOTE = 0, 1
TRAIL_NONE, TRAIL_TICKS, TRAIL_PCT = 0, 1, 2
# kernel outputs: kind of each output row, and why the kernel returned
OUT_FILL, OUT_TRIGGER = 0, 1
RET_END, RET_TIME, RET_OUTPUT, RET_WAKE = 0, 1, 2, 3


@jit
def _scan_bid(bid: F64, start: int) -> int:
    j = start
    while j >= 0 and bid[j] <= 0.0:
        j -= 1
    return j


@jit
def _scan_ask(ask: F64, start: int) -> int:
    n = len(ask)
    j = start
    while j < n and ask[j] <= 0.0:
        j += 1
    return j if j < n else -1


@jit
def _queue_f(x: float, model: int, p: float) -> float:
    if model == 2:
        return math.log1p(x)
    return float(x**p)


@jit
def _set_level(
    st: I64,
    lv: F64,
    tk: F64,
    x: int,
    q: float,
    side: int,
    oi: I64,
    of: F64,
    order: I64,
    qp: F64,
) -> None:
    """Set level ``x`` of one side to ``q``, move queue positions, keep the best index."""
    old = lv[x]
    lv[x] = q
    tk[x] = 0.0
    if side == 1:
        bb = st[_BB]
        if q > 0.0:
            if x > bb:
                st[_BB] = x
        elif x == bb:
            st[_BB] = _scan_bid(lv, x - 1)
        st[_TOUCH] |= 1
    else:
        ba = st[_BA]
        if q > 0.0:
            if ba < 0 or x < ba:
                st[_BA] = x
        elif x == ba:
            st[_BA] = _scan_ask(lv, x + 1)
        st[_TOUCH] |= 2
    nord = st[_N_ORD]
    if nord == 0 or q >= old or st[_IN_SNAP] != 0:
        return
    t = x + st[_BASE]
    model = st[_QMODEL]
    for j in range(nord):
        o = order[j]
        if oi[o, _OST] != RESTING or oi[o, _OSIDE] != side or oi[o, _OTICK] != t:
            continue
        dec = old - q
        traded = of[o, _TRADED]
        cancel = dec - traded if dec > traded else 0.0
        of[o, _TRADED] = traded - dec if traded > dec else 0.0
        a = of[o, _AHEAD]
        if model != 0 and cancel > 0.0 and a > 0.0:
            behind = old - a if old > a else 0.0
            fa = _queue_f(a, model, qp[_QPARAM])
            fb = _queue_f(behind, model, qp[_QPARAM])
            if fa + fb > 0.0:
                a -= cancel * fa / (fa + fb)
        if a > q:
            a = q
        if a < 0.0:
            a = 0.0
        of[o, _AHEAD] = a


@jit
def _floor_lots(q: float, step: float) -> float:
    return math.floor(q / step + 1e-9) * step


@jit
def _emit(out: I64, outq: F64, n: int, slot: int, kind: int, tick: int, qty: float) -> int:
    out[n, 0] = slot
    out[n, 1] = kind
    out[n, 2] = tick
    outq[n] = qty
    return n + 1


@jit
def _fire(oi: I64, of: F64, o: int, price: int) -> bool:
    """Move a trailing trigger with ``price`` (ticks), then test the trigger."""
    d = oi[o, _ODIR]
    kind = oi[o, _OTRAIL]
    if kind != TRAIL_NONE:
        peak = of[o, _PEAK]
        dist = of[o, _TRAIL]
        if d == -1:
            if price > peak:
                peak = float(price)
            trig = peak - dist if kind == TRAIL_TICKS else math.floor(peak * (1.0 - dist) + 1e-9)
        else:
            if price < peak:
                peak = float(price)
            trig = peak + dist if kind == TRAIL_TICKS else math.ceil(peak * (1.0 + dist) - 1e-9)
        of[o, _PEAK] = peak
        oi[o, _OTICK] = int(trig)
    trigger = int(oi[o, _OTICK])
    if d == 1:
        return price >= trigger
    return price <= trigger


@jit
def _visible_ask_upto(ask: F64, atk: F64, ba: int, x: int) -> bool:
    """Is there ask quantity we did not take ourselves at indexes ``ba..x``?"""
    j = ba
    while j <= x:
        if ask[j] - atk[j] > 0.0:
            return True
        j += 1
    return False


@jit
def _visible_bid_downto(bid: F64, btk: F64, bb: int, x: int) -> bool:
    j = bb
    while j >= x:
        if bid[j] - btk[j] > 0.0:
            return True
        j -= 1
    return False


@jit
def _message_end(
    st: I64,
    bid: F64,
    ask: F64,
    btk: F64,
    atk: F64,
    oi: I64,
    of: F64,
    order: I64,
    qp: F64,
    out: I64,
    outq: F64,
    nout: int,
) -> int:
    st[_N_MSGS] += 1
    bb, ba = st[_BB], st[_BA]
    if bb >= 0 and ba >= 0 and bb >= ba:
        st[_N_CROSSED] += 1
        touch = st[_TOUCH]
        if touch == 2:  # only asks touched: the stale bids at or above the best ask go
            while st[_BB] >= 0 and st[_BB] >= st[_BA]:
                _set_level(st, bid, btk, st[_BB], 0.0, 1, oi, of, order, qp)
        else:
            while st[_BA] >= 0 and st[_BA] <= st[_BB]:
                _set_level(st, ask, atk, st[_BA], 0.0, -1, oi, of, order, qp)
        bb, ba = st[_BB], st[_BA]
    st[_TOUCH] = 0
    base = st[_BASE]
    nord = st[_N_ORD]
    if st[_IN_SNAP] != 0:
        st[_IN_SNAP] = 0
        for j in range(nord):
            o = order[j]
            if oi[o, _OST] == RESTING:
                x = oi[o, _OTICK] - base
                lv = bid[x] if oi[o, _OSIDE] == 1 else ask[x]
                if of[o, _AHEAD] > lv:
                    of[o, _AHEAD] = lv
    for j in range(nord):
        o = order[j]
        s = oi[o, _OST]
        if s == RESTING:
            t = oi[o, _OTICK]
            if oi[o, _OSIDE] == 1:
                crossed = ba >= 0 and _visible_ask_upto(ask, atk, ba, t - base)
            else:
                crossed = bb >= 0 and _visible_bid_downto(bid, btk, bb, t - base)
            if crossed:
                nout = _emit(out, outq, nout, o, OUT_FILL, t, of[o, _LEFT])
                of[o, _LEFT] = 0.0
                oi[o, _OST] = DONE
        elif s == ARMED and oi[o, _OSRC] == SRC_QUOTE:
            ref = ba if oi[o, _OSIDE] == 1 else bb
            if ref >= 0 and _fire(oi, of, o, ref + base):
                nout = _emit(out, outq, nout, o, OUT_TRIGGER, ref + base, 0.0)
                oi[o, _OST] = DONE
    return nout


@jit
def _trade(
    st: I64, t: int, s: int, q: float, oi: I64, of: F64, order: I64, qp: F64, out: I64, outq: F64
) -> int:
    """A market trade at tick ``t`` of ``q`` by aggressor side ``s``: queues, fills, triggers."""
    st[_LAST_TRADE] = t
    st[_HAS_TRADE] = 1
    nout = 0
    used = 0.0
    step = qp[_STEP]
    for j in range(st[_N_ORD]):
        o = order[j]
        state = oi[o, _OST]
        if state == RESTING and oi[o, _OSIDE] == -s:
            ot = oi[o, _OTICK]
            left = of[o, _LEFT]
            fill = 0.0
            if (s == -1 and t < ot) or (s == 1 and t > ot):
                fill = left
            elif t == ot:
                a = of[o, _AHEAD]
                of[o, _TRADED] += q
                excess = q - a - used
                of[o, _AHEAD] = a - q if a > q else 0.0
                if excess > 0.0:
                    fill = _floor_lots(min(left, excess), step)
                    used += fill
            if fill > 0.0:
                nout = _emit(out, outq, nout, o, OUT_FILL, ot, fill)
                left -= fill
                if left <= step * 1e-6:
                    left = 0.0
                    oi[o, _OST] = DONE
                of[o, _LEFT] = left
        elif state == ARMED and oi[o, _OSRC] == SRC_TRADE and _fire(oi, of, o, t):
            nout = _emit(out, outq, nout, o, OUT_TRIGGER, t, 0.0)
            oi[o, _OST] = DONE
    return nout


@jit
def _run(
    ts: I64,
    kind: I8,
    side: I8,
    tick: I64,
    qty: F64,
    uid: I64,
    end: B,
    i: int,
    stop_ts: int,
    st: I64,
    bid: F64,
    ask: F64,
    btk: F64,
    atk: F64,
    oi: I64,
    of: F64,
    order: I64,
    qp: F64,
    out: I64,
    outq: F64,
) -> tuple[int, int, int]:
    """Apply events from row ``i`` while ``ts <= stop_ts``; stop after a row with output.

    Returns ``(next row, number of outputs, why)``. Outputs are fills of our
    resting orders and fired triggers; the caller settles them and calls again.
    """
    n = len(ts)
    base = st[_BASE]
    size = len(bid)
    first = i
    while i < n:
        if ts[i] > stop_ts:
            st[_N_ROWS] += i - first
            return i, 0, RET_TIME
        k = kind[i]
        s = side[i]
        x = tick[i] - base
        nout = 0
        if k == DEPTH:
            if x < 0 or x >= size:
                st[_N_DROPPED] += 1
            else:
                if s == 1:
                    _set_level(st, bid, btk, x, qty[i], 1, oi, of, order, qp)
                else:
                    _set_level(st, ask, atk, x, qty[i], -1, oi, of, order, qp)
                if uid[i] > st[_LAST_UID]:
                    st[_LAST_UID] = uid[i]
        elif k == TRADE:
            nout = _trade(st, tick[i], s, qty[i], oi, of, order, qp, out, outq)
        elif k == TOP:
            if st[_TOPS] != 0 and uid[i] > st[_LAST_UID] and 0 <= x < size:
                if s == 1:
                    while st[_BB] > x:
                        _set_level(st, bid, btk, st[_BB], 0.0, 1, oi, of, order, qp)
                    _set_level(st, bid, btk, x, qty[i], 1, oi, of, order, qp)
                    while st[_BA] >= 0 and st[_BA] <= x:
                        _set_level(st, ask, atk, st[_BA], 0.0, -1, oi, of, order, qp)
                else:
                    while st[_BA] >= 0 and st[_BA] < x:
                        _set_level(st, ask, atk, st[_BA], 0.0, -1, oi, of, order, qp)
                    _set_level(st, ask, atk, x, qty[i], -1, oi, of, order, qp)
                    while st[_BB] >= 0 and st[_BB] >= x:
                        _set_level(st, bid, btk, st[_BB], 0.0, 1, oi, of, order, qp)
        else:  # CLEAR: a snapshot follows
            bid[:] = 0.0
            ask[:] = 0.0
            btk[:] = 0.0
            atk[:] = 0.0
            st[_BB] = -1
            st[_BA] = -1
            st[_IN_SNAP] = 1
            if uid[i] >= 0:
                st[_LAST_UID] = uid[i]
        if end[i]:
            nout = _message_end(st, bid, ask, btk, atk, oi, of, order, qp, out, outq, nout)
        i += 1
        if nout > 0:
            st[_N_ROWS] += i - first
            return i, nout, RET_OUTPUT
        if k == TRADE and st[_WAKE_TRADE] != 0:
            st[_N_ROWS] += i - first
            return i, 0, RET_WAKE
        wt = st[_WAKE_TICKS]
        if wt > 0 and end[i - 1] and st[_BB] >= 0 and st[_BA] >= 0:
            bb, ba = st[_BB] + base, st[_BA] + base
            if abs(bb - st[_WAKE_BB]) >= wt or abs(ba - st[_WAKE_BA]) >= wt:
                st[_N_ROWS] += i - first
                return i, 0, RET_WAKE
    st[_N_ROWS] += i - first
    return i, 0, RET_END


@jit
def _take(lv: F64, tk: F64, best: int, side: int, limit: int, qty: float, out: F64) -> int:
    """Walk one side of the book from ``best`` for up to ``qty``, not beyond ``limit`` (index).

    ``side`` is the side of the book walked (-1 asks for a buyer, +1 bids for a
    seller). Writes (index, quantity) pairs into ``out``; marks them taken.
    Returns the number of pairs. ``limit < 0`` means no limit for asks.
    """
    n = 0
    j = best
    size = len(lv)
    left = qty
    while left > 0.0 and 0 <= j < size and n < len(out) // 2:
        if side == -1 and limit >= 0 and j > limit:
            break
        if side == 1 and j < limit:
            break
        avail = lv[j] - tk[j]
        if avail > 0.0:
            q = avail if avail < left else left
            tk[j] += q
            out[2 * n] = j
            out[2 * n + 1] = q
            n += 1
            left -= q
        j += 1 if side == -1 else -1
    return n


@jit
def _available(lv: F64, tk: F64, best: int, side: int, limit: int, qty: float) -> float:
    """Visible quantity from ``best`` to ``limit`` (index), stopping once ``qty`` is reached."""
    total = 0.0
    j = best
    size = len(lv)
    while total < qty and 0 <= j < size:
        if side == -1 and limit >= 0 and j > limit:
            break
        if side == 1 and j < limit:
            break
        avail = lv[j] - tk[j]
        if avail > 0.0:
            total += avail
        j += 1 if side == -1 else -1
    return total


@jit
def _place(
    st: I64,
    bid: F64,
    ask: F64,
    btk: F64,
    atk: F64,
    oi: I64,
    of: F64,
    s: int,
    side: int,
    tick: int,
    qty: float,
    ahead: float,
) -> None:
    """Fill slot ``s`` as a resting order; ``ahead < 0`` means the level's visible quantity."""
    for c in range(_OI_COLS):
        oi[s, c] = 0
    for c in range(_OF_COLS):
        of[s, c] = 0.0
    oi[s, _OST] = RESTING
    oi[s, _OSIDE] = side
    oi[s, _OTICK] = tick
    of[s, _LEFT] = qty
    if ahead < 0.0:
        x = tick - st[_BASE]
        ahead = 0.0
        if 0 <= x < len(bid):
            ahead = bid[x] - btk[x] if side == 1 else ask[x] - atk[x]
            ahead = max(ahead, 0.0)
    of[s, _AHEAD] = ahead


class BookStats(NamedTuple):
    messages: int
    rows: int
    crossed_repairs: int
    dropped_levels: int


class L2Book:
    """One symbol's L2 book on a tick grid, with our orders' queue positions and triggers.

    Our orders live in numbered slots (:meth:`place` for resting limit orders,
    :meth:`arm` for stop and touch triggers); :meth:`run` applies market events
    and returns the fills and triggers they cause, slot by slot.
    """

    def __init__(
        self,
        tick_size: float,
        step_size: float,
        *,
        queue: QueueModel | None = None,
        tops: bool = True,
        window_ticks: int = 1 << 18,
    ) -> None:
        if not (math.isfinite(tick_size) and tick_size > 0):
            raise BookError(f"tick_size must be > 0, got {tick_size!r}")
        if not (math.isfinite(step_size) and step_size > 0):
            raise BookError(f"step_size must be > 0, got {step_size!r}")
        if window_ticks < 16:
            raise BookError(f"window_ticks must be >= 16, got {window_ticks}")
        self.tick_size = tick_size
        self.step_size = step_size
        self.window = window_ticks
        model = queue or ConservativeQueue()
        self.queue = model
        self.st = np.zeros(_ST_SIZE, dtype=np.int64)
        self.st[_BB] = self.st[_BA] = -1
        self.st[_LAST_UID] = -1
        self.st[_TOPS] = 1 if tops else 0
        self.st[_QMODEL] = model.code
        self.qp = np.array([model.param, step_size], dtype=np.float64)
        self._size = 0
        self.bid = np.zeros(0)
        self.ask = np.zeros(0)
        self.btk = np.zeros(0)
        self.atk = np.zeros(0)
        cap = 8
        self.oi = np.zeros((cap, _OI_COLS), dtype=np.int64)
        self.of = np.zeros((cap, _OF_COLS), dtype=np.float64)
        self.order = np.zeros(cap, dtype=np.int64)
        self.out = np.zeros((2 * cap, 3), dtype=np.int64)
        self.outq = np.zeros(2 * cap, dtype=np.float64)
        self._free = list(range(cap - 1, -1, -1))
        self._prio: list[int] = []  # slots in priority order (arrival sequence)
        self._take_buf = np.zeros(512, dtype=np.float64)

    # -- prices and the grid ------------------------------------------------------------
    def to_ticks(self, price: F64) -> I64:
        """Prices to integer ticks (nearest; prices off the grid are the data's error)."""
        return np.rint(np.asarray(price) / self.tick_size).astype(np.int64)

    def tick_of(self, price: float) -> int:
        return int(round(price / self.tick_size))

    def price_of(self, tick: int) -> float:
        decimals = max(0, -math.floor(math.log10(self.tick_size)) + 1)
        return round(tick * self.tick_size, decimals + 6)

    def _ensure(self, lo: int, hi: int) -> None:
        """Grow the grid to hold ticks ``[lo, hi]``."""
        st = self.st
        base = int(st[_BASE])
        if self._size and base <= lo and hi < base + self._size:
            return
        if self._size:
            lo, hi = min(lo, base), max(hi, base + self._size - 1)
        span = hi - lo + 1
        size = max(1024, 1 << (span + span // 2 - 1).bit_length())
        new_base = lo - (size - span) // 2
        arrays = []
        for old in (self.bid, self.ask, self.btk, self.atk):
            arr = np.zeros(size, dtype=np.float64)
            if self._size:
                off = base - new_base
                arr[off : off + self._size] = old
            arrays.append(arr)
        self.bid, self.ask, self.btk, self.atk = arrays
        if self._size:
            shift = base - new_base
            for k in (_BB, _BA):
                if st[k] >= 0:
                    st[k] += shift
        st[_BASE] = new_base
        self._size = size

    def _window(self, ticks: I64, kind: I8) -> tuple[int, int]:
        """The tick range to hold for these rows: all of them, or a window around the market."""
        live = ticks[kind != CLEAR]
        if not len(live):
            return 0, 0
        lo, hi = int(live.min()), int(live.max())
        if hi - lo < self.window:
            return lo, hi
        ref = self._ref_tick(ticks, kind)
        half = self.window // 2
        return ref - half, ref + half

    def _ref_tick(self, ticks: I64, kind: I8) -> int:
        bb, ba = self.best_bid_tick(), self.best_ask_tick()
        if bb is not None and ba is not None:
            return (bb + ba) // 2
        trades = ticks[kind == TRADE]
        if len(trades):
            return int(trades[0])
        return int(np.median(ticks[kind != CLEAR]))

    # -- reading the book ---------------------------------------------------------------
    def best_bid_tick(self) -> int | None:
        b = int(self.st[_BB])
        return None if b < 0 else b + int(self.st[_BASE])

    def best_ask_tick(self) -> int | None:
        a = int(self.st[_BA])
        return None if a < 0 else a + int(self.st[_BASE])

    def best_bid(self) -> tuple[float, float] | None:
        """Best bid price and quantity (the feed's; our own takes not deducted)."""
        b = int(self.st[_BB])
        return None if b < 0 else (self.price_of(b + int(self.st[_BASE])), float(self.bid[b]))

    def best_ask(self) -> tuple[float, float] | None:
        a = int(self.st[_BA])
        return None if a < 0 else (self.price_of(a + int(self.st[_BASE])), float(self.ask[a]))

    def level(self, side: int, tick: int) -> float:
        """Visible quantity at ``tick`` on ``side`` (+1 bids, -1 asks), after our takes."""
        x = tick - int(self.st[_BASE])
        if not 0 <= x < self._size:
            return 0.0
        if side == 1:
            return max(0.0, float(self.bid[x] - self.btk[x]))
        return max(0.0, float(self.ask[x] - self.atk[x]))

    def depth(self, side: int, levels: int) -> list[tuple[float, float]]:
        """The best ``levels`` (price, qty) of one side, best first."""
        base = int(self.st[_BASE])
        lv = self.bid if side == 1 else self.ask
        idx = np.flatnonzero(lv > 0)
        idx = idx[::-1][:levels] if side == 1 else idx[:levels]
        return [(self.price_of(int(j) + base), float(lv[j])) for j in idx]

    @property
    def last_trade_tick(self) -> int | None:
        return int(self.st[_LAST_TRADE]) if self.st[_HAS_TRADE] else None

    @property
    def last_update_id(self) -> int:
        return int(self.st[_LAST_UID])

    @property
    def stats(self) -> BookStats:
        st = self.st
        return BookStats(
            int(st[_N_MSGS]), int(st[_N_ROWS]), int(st[_N_CROSSED]), int(st[_N_DROPPED])
        )

    # -- our orders ---------------------------------------------------------------------
    def _slot(self) -> int:
        if not self._free:
            cap = len(self.order)
            self.oi = np.vstack([self.oi, np.zeros((cap, _OI_COLS), dtype=np.int64)])
            self.of = np.vstack([self.of, np.zeros((cap, _OF_COLS), dtype=np.float64)])
            self.order = np.zeros(2 * cap, dtype=np.int64)
            self.out = np.zeros((4 * cap, 3), dtype=np.int64)
            self.outq = np.zeros(4 * cap, dtype=np.float64)
            self._free = list(range(2 * cap - 1, cap - 1, -1))
        return self._free.pop()

    def _sync_order(self) -> None:
        n = len(self._prio)
        self.order[:n] = self._prio
        self.st[_N_ORD] = n

    def place(self, side: int, tick: int, qty: float, *, ahead: float | None = None) -> int:
        """Rest a limit order of ``qty`` at ``tick``; returns its slot.

        The quantity ahead is the level's visible quantity now, unless given.
        The order must not cross the book (the caller takes first).
        """
        self._ensure(tick, tick)
        s = self._slot()
        _place(
            self.st,
            self.bid,
            self.ask,
            self.btk,
            self.atk,
            self.oi,
            self.of,
            s,
            side,
            tick,
            qty,
            -1.0 if ahead is None else ahead,
        )
        self._prio.append(s)
        self._sync_order()
        return s

    def arm(
        self,
        side: int,
        tick: int,
        direction: int,
        *,
        source: int = SRC_TRADE,
        trail: int = TRAIL_NONE,
        distance: float = 0.0,
        peak: float = 0.0,
    ) -> int:
        """Watch a trigger: fires when the price is >= ``tick`` (direction 1) or <= (-1).

        ``side`` is the order's side (quote triggers read the ask for buys and
        the bid for sells). Trailing triggers follow the best price seen since
        ``peak`` at ``distance`` ticks (TRAIL_TICKS) or fraction (TRAIL_PCT).
        """
        s = self._slot()
        self.oi[s] = 0
        self.of[s] = 0.0
        self.oi[s, _OST] = ARMED
        self.oi[s, _OSIDE] = side
        self.oi[s, _OTICK] = tick
        self.oi[s, _OSRC] = source
        self.oi[s, _ODIR] = direction
        self.oi[s, _OTRAIL] = trail
        self.of[s, _TRAIL] = distance
        self.of[s, _PEAK] = peak
        self._prio.append(s)
        self._sync_order()
        return s

    def release(self, slot: int) -> None:
        """Free a slot (the order left the book)."""
        self.oi[slot, _OST] = FREE
        self._prio.remove(slot)
        self._free.append(slot)
        self._sync_order()

    def slot_left(self, slot: int) -> float:
        return float(self.of[slot, _LEFT])

    def slot_ahead(self, slot: int) -> float:
        return float(self.of[slot, _AHEAD])

    def slot_tick(self, slot: int) -> int:
        return int(self.oi[slot, _OTICK])

    def reduce(self, slot: int, qty: float) -> None:
        """Lower a resting order's quantity, keeping its queue position."""
        self.of[slot, _LEFT] = qty

    # -- taking liquidity ---------------------------------------------------------------
    def take(self, side: int, qty: float, limit_tick: int | None) -> list[tuple[int, float]]:
        """Our taker order of ``side`` takes up to ``qty``, at prices no worse than ``limit_tick``.

        Returns (tick, qty) per level taken, best first. The quantities are
        deducted from what later takers see until the feed reports the level again.
        """
        base = int(self.st[_BASE])
        if side == 1:
            best = int(self.st[_BA])
            lim = -1 if limit_tick is None else limit_tick - base
            if best < 0 or (limit_tick is not None and lim < best):
                return []
            lv, tk, walk = self.ask, self.atk, -1
        else:
            best = int(self.st[_BB])
            lim = 0 if limit_tick is None else limit_tick - base
            if best < 0 or lim > best:
                return []
            lim = max(lim, 0)
            lv, tk, walk = self.bid, self.btk, 1
        buf = self._take_buf
        cap = len(buf) // 2
        taken: list[tuple[int, float]] = []
        left = qty
        while left > 0.0:
            start = int(self.st[_BA] if side == 1 else self.st[_BB])
            n = _take(lv, tk, start, walk, lim, left, buf)
            for k in range(n):
                q = float(buf[2 * k + 1])
                taken.append((int(buf[2 * k]) + base, q))
                left -= q
            if n < cap:
                break
        return taken

    def available(self, side: int, qty: float, limit_tick: int | None) -> float:
        """What a taker of ``side`` could take now up to ``limit_tick`` (capped near ``qty``)."""
        base = int(self.st[_BASE])
        if side == 1:
            best = int(self.st[_BA])
            if best < 0 or (limit_tick is not None and limit_tick - base < best):
                return 0.0
            lim = -1 if limit_tick is None else limit_tick - base
            return float(_available(self.ask, self.atk, best, -1, lim, qty))
        best = int(self.st[_BB])
        if best < 0 or (limit_tick is not None and limit_tick - base > best):
            return 0.0
        lim = 0 if limit_tick is None else max(limit_tick - base, 0)
        return float(_available(self.bid, self.btk, best, 1, lim, qty))

    def crosses(self, side: int, tick: int) -> bool:
        """Would a limit order of ``side`` at ``tick`` take liquidity now?"""
        if side == 1:
            a = self.best_ask_tick()
            return a is not None and tick >= a
        b = self.best_bid_tick()
        return b is not None and tick <= b

    # -- applying market data -----------------------------------------------------------
    def prepare(self, ev: MarketEvents) -> I64:
        """Ticks of a batch, after growing the grid to hold it (call once per batch)."""
        ticks = self.to_ticks(ev.price)
        lo, hi = self._window(ticks, ev.kind)
        if hi >= lo:
            self._ensure(lo, hi)
        return ticks

    def wake_on_move(self, ticks: int) -> None:
        """Make :meth:`run` return when the best bid or ask moves ``ticks`` from now (0: never)."""
        self.st[_WAKE_TICKS] = ticks
        bb, ba = self.best_bid_tick(), self.best_ask_tick()
        self.st[_WAKE_BB] = -(1 << 40) if bb is None else bb
        self.st[_WAKE_BA] = -(1 << 40) if ba is None else ba

    def wake_on_trade(self, on: bool) -> None:
        """Make :meth:`run` return after every market trade (a strategy that reads trades)."""
        self.st[_WAKE_TRADE] = 1 if on else 0

    def run(
        self, ev: MarketEvents, ticks: I64, start: int, stop_ts: int
    ) -> tuple[int, int, list[tuple[int, int, int, float]]]:
        """Apply rows from ``start`` while ``ts <= stop_ts``, until one causes fills or triggers.

        Returns ``(next row, why, outputs)`` with outputs as ``(slot, kind, tick,
        qty)``: OUT_FILL (a fill of ``qty`` at ``tick``) or OUT_TRIGGER (fired
        at price ``tick``). ``why`` is RET_END, RET_TIME, RET_OUTPUT or RET_WAKE.
        """
        i, nout, why = _run(
            ev.ts,
            ev.kind,
            ev.side,
            ticks,
            ev.qty,
            ev.uid,
            ev.end,
            start,
            stop_ts,
            self.st,
            self.bid,
            self.ask,
            self.btk,
            self.atk,
            self.oi,
            self.of,
            self.order,
            self.qp,
            self.out,
            self.outq,
        )
        if not nout:
            return i, why, []
        rows = self.out[:nout].tolist()
        qty = self.outq[:nout].tolist()
        return i, why, [(r[0], r[1], r[2], q) for r, q in zip(rows, qty, strict=True)]

    def apply(self, ev: MarketEvents) -> None:
        """Apply a whole batch with no orders of ours (rebuilding a book, tests, warm-up)."""
        ticks = self.prepare(ev)
        i = 0
        while i < len(ev.ts):
            i, _, _ = self.run(ev, ticks, i, np.iinfo(np.int64).max)
