"""The portfolio: booking fills, marking equity at every boundary, approving intents.

Every test drives :class:`Portfolio` directly with hand-made outboxes, built the
way ``engine/symbol.py`` builds them: a market order's fill at a bar's open, a
FILLED update for it, the symbol's position after its fills and the realised
PnL of each fill. Times are on a 1h grid (bar interval = step = 1h), so a fill
at the bar opening at ``b - 1h`` is booked at boundary ``b``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.clock import HOUR, MINUTE, parse_time
from tickray.engine.config import AccountConfig, RunConfig
from tickray.engine.events import (
    Fill,
    Liquidity,
    OrderIntent,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Outbox,
    RiskAction,
    Side,
    TimeInForce,
    fill_batch,
    update_batch,
)
from tickray.engine.instruments import SymbolSpec
from tickray.engine.portfolio import Portfolio, SettleResult
from tickray.engine.strategies import make_strategy
from tickray.engine.symbol import SimulationError, SymbolSim

H = HOUR
T0 = parse_time("2024-01-01")  # on the 1h grid
SYMBOLS = ("AAA", "BBB", "CCC")
STEP = 0.001
TICK = 0.01


# -- builders ---------------------------------------------------------------------------
def make_portfolio(
    symbols: Sequence[str] = ("AAA",),
    *,
    initial: float = 1000.0,
    fee: float = 0.001,
    buffer: float = 0.02,
    allow_short: bool = False,
    short_margin: float = 0.5,
    step: float = STEP,
) -> Portfolio:
    config = RunConfig(
        data_root="unused",
        interval_ns=H,
        symbols=tuple(symbols),
        start_ns=T0,
        end_ns=T0 + 1000 * H,
        account=AccountConfig(
            initial_cash=initial,
            taker_fee=fee,
            allow_short=allow_short,
            short_margin=short_margin,
            price_buffer=buffer,
        ),
        specs={s: SymbolSpec(s, tick_size=TICK, step_size=step) for s in symbols},
    )
    return Portfolio(config)


def make_fill(
    symbol: str, order_id: int, bar_open: int, side: Side, qty: float, price: float, fee: float
) -> Fill:
    return Fill(symbol, order_id, order_id, bar_open, side, qty, price, fee, Liquidity.TAKER)


def filled(f: Fill) -> OrderUpdate:
    """The FILLED update symbol.py sends with a market order's fill."""
    return OrderUpdate(
        f.symbol,
        f.order_id,
        f.ts_event,
        OrderStatus.FILLED,
        f.side,
        OrderType.MARKET,
        f.qty,
        f.qty,
        f.price,
        "",
    )


def update(symbol: str, order_id: int, ts: int, status: OrderStatus) -> OrderUpdate:
    return OrderUpdate(symbol, order_id, ts, status, Side.BUY, OrderType.MARKET, 1.0, 0.0, None, "")


def intent(
    symbol: str, intent_id: int, ts: int, side: Side, qty: float, ref: float = 100.0
) -> OrderIntent:
    return OrderIntent(
        symbol,
        intent_id,
        ts,
        side,
        OrderType.MARKET,
        qty,
        None,
        None,
        TimeInForce.GTC,
        False,
        ref,
        "test",
    )


def box(
    symbol: str,
    *,
    fills: Sequence[Fill] = (),
    realized: Sequence[float] | None = None,
    position: float = 0.0,
    intents: Sequence[OrderIntent] = (),
    updates: Sequence[OrderUpdate] | None = None,
) -> Outbox:
    """An outbox; ``reached`` and the marks are filled in by :func:`settle`.

    Each fill's ``position_after`` is worked back from the final ``position``.
    """
    after = [position]
    for f in reversed(list(fills)[1:]):
        after.insert(0, round(after[0] - f.side * f.qty, 12))
    return Outbox(
        symbol,
        0,
        list(intents),
        update_batch([filled(f) for f in fills] if updates is None else list(updates)),
        fill_batch(
            list(fills),
            [0.0] * len(fills) if realized is None else list(realized),
            after[: len(fills)],
        ),
        np.empty(0, dtype=np.int64),
        np.empty(0),
        position,
    )


def settle(
    pf: Portfolio, t: int, marks: Sequence[Sequence[float]], boxes: Sequence[Outbox]
) -> SettleResult:
    """Settle at ``t`` with one marks row per boundary ending at ``t`` (oldest first)."""
    px = np.array(marks, dtype=np.float64).reshape(len(marks), len(pf.symbols))
    mark_ts = t - H * np.arange(len(px) - 1, -1, -1, dtype=np.int64)
    full = [
        ob._replace(reached=t, mark_ts=mark_ts, mark_px=px[:, pf.index[ob.symbol]]) for ob in boxes
    ]
    return pf.settle(t, full, mark_ts, px)


class _NoBars:
    def next_chunk(self) -> None:
        return None


def symbol_books(symbol: str, step: float = STEP) -> SymbolSim:
    """The symbol-side books (average cost, realised PnL) that fill outboxes in a run."""
    return SymbolSim(
        SymbolSpec(symbol, tick_size=TICK, step_size=step),
        make_strategy("momentum"),
        _NoBars(),
        interval_ns=H,
        sync_ns=H,
        t0=T0,
        account=AccountConfig(),
        allocation=1.0,
    )


def book_on_symbol(sim: SymbolSim, side: Side, qty: float, price: float) -> float:
    """Book a fill on the symbol side and return its realised PnL (as the outbox carries it)."""
    return sim.book_fill(side * qty, price)


# -- 1. accounting properties -----------------------------------------------------------
price_cents = st.integers(1_000, 100_000)  # 10.00 .. 1000.00, whole ticks


@st.composite
def fill_plans(draw: st.DrawFn) -> tuple[int, float, list]:
    """1-3 symbols, fee rate, and settlements of 1-3 boundaries with marks and fills."""
    n = draw(st.integers(1, 3))
    rate = draw(st.sampled_from([0.0, 0.00075, 0.001]))
    plan = []
    for _ in range(draw(st.integers(1, 5))):
        rows = draw(st.integers(1, 3))
        marks = [[draw(price_cents) / 100 for _ in range(n)] for _ in range(rows)]
        one = st.tuples(
            st.integers(0, n - 1),  # symbol
            st.integers(0, rows - 1),  # boundary row it is booked at
            st.sampled_from([Side.BUY, Side.SELL]),
            st.integers(1, 5_000),  # quantity in steps (0.001 .. 5.0)
            price_cents,
        )
        # a few fills, or more than the portfolio books one by one (16)
        fills = draw(st.lists(one, max_size=5) | st.lists(one, min_size=17, max_size=24))
        order = draw(st.permutations(range(n)))
        send_empty = draw(st.booleans())
        plan.append((rows, marks, fills, order, send_empty))
    return n, rate, plan


class Ledger:
    """The test's own books of one symbol: position in whole steps and average cost."""

    def __init__(self) -> None:
        self.steps = 0
        self.avg = 0.0

    def book(self, side: Side, steps: int, price: float) -> None:
        q = int(side) * steps
        if self.steps == 0 or (self.steps > 0) == (q > 0):
            self.avg = (self.avg * abs(self.steps) + price * abs(q)) / abs(self.steps + q)
        elif abs(q) > abs(self.steps):
            self.avg = price  # the position flipped: the rest opened at this price
        self.steps += q
        if self.steps == 0:
            self.avg = 0.0

    @property
    def position(self) -> float:
        return round(self.steps * STEP, 3)


class Row(NamedTuple):
    """What one boundary row must show, from the test's own books."""

    pos: list[float]
    cash: float
    equity: float
    gross: float
    pnl: float
    symbol: list[float]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(fill_plans())
def test_equity_cash_and_pnl_reconcile_at_every_boundary(plan: tuple[int, float, list]) -> None:
    n, rate, settles = plan
    symbols = SYMBOLS[:n]
    initial = 100_000.0
    pf = make_portfolio(symbols, initial=initial, fee=rate, allow_short=True)
    books = [symbol_books(s) for s in symbols]  # the symbol side: realised PnL per fill
    ledgers = [Ledger() for _ in symbols]  # the test's own average cost
    flows: list[list[float]] = [[] for _ in symbols]  # -signed qty * price per fill
    sym_fees: list[list[float]] = [[] for _ in symbols]
    fees: list[float] = []
    realized: list[float] = []
    t = T0
    oid = 0
    for rows, marks, plan_fills, order, send_empty in settles:
        t += rows * H
        mark_ts = [t - (rows - 1 - j) * H for j in range(rows)]
        # Book the plan in the test's books boundary row by boundary row (then by
        # symbol, as the portfolio does) and write down what every row must show.
        fills: list[list[Fill]] = [[] for _ in symbols]
        pnls: list[list[float]] = [[] for _ in symbols]
        booked = []
        expect: list[Row] = []
        for j in range(rows):
            for i, _row, side, steps, cents in sorted(
                (f for f in plan_fills if f[1] == j), key=lambda f: f[0]
            ):
                oid += 1
                qty, price = round(steps * STEP, 3), cents / 100
                fee = round(qty * price * rate, 8)
                f = make_fill(symbols[i], oid, mark_ts[j] - H, side, qty, price, fee)
                pnl = book_on_symbol(books[i], side, qty, price)
                ledgers[i].book(side, steps, price)
                assert books[i].position == ledgers[i].position
                assert books[i].avg_price == pytest.approx(ledgers[i].avg, rel=1e-12)
                fills[i].append(f)
                pnls[i].append(pnl)
                flows[i].append(-side * qty * price)
                sym_fees[i].append(fee)
                fees.append(fee)
                realized.append(pnl)
                booked.append((f, pnl, ledgers[i].position))
            pos = [lg.position for lg in ledgers]
            value = [p * m for p, m in zip(pos, marks[j], strict=True)]
            # cash = initial - sum(signed qty * price) - sum(fees)
            cash = initial + math.fsum(x for fl in flows for x in fl) - math.fsum(fees)
            expect.append(
                Row(
                    pos=pos,
                    cash=cash,
                    equity=cash + math.fsum(value),
                    gross=math.fsum(abs(v) for v in value),
                    # equity - initial = realised + unrealised at average cost - fees
                    pnl=math.fsum(realized)
                    + math.fsum(
                        p * (m - lg.avg) for p, m, lg in zip(pos, marks[j], ledgers, strict=True)
                    )
                    - math.fsum(fees),
                    # a symbol's equity: its allocation + its cash flows + its position
                    symbol=[
                        initial / n + math.fsum(flows[i]) - math.fsum(sym_fees[i]) + value[i]
                        for i in range(n)
                    ],
                )
            )
        boxes = [
            box(symbols[i], fills=fills[i], realized=pnls[i], position=ledgers[i].position)
            for i in order
            if fills[i] or send_empty
        ]
        res = settle(pf, t, marks, boxes)

        assert res.equity_ts.tolist() == mark_ts
        assert [(b.fill, b.realized_pnl, b.position_after) for b in res.fills.rows()] == booked
        for j, exp in enumerate(expect):
            assert res.cash[j] == pytest.approx(exp.cash, rel=1e-12, abs=1e-6)
            assert res.equity[j] == pytest.approx(exp.equity, rel=1e-12, abs=1e-6)
            assert res.gross[j] == pytest.approx(exp.gross, rel=1e-12, abs=1e-6)
            # equity is exactly cash plus the marked positions, summed in symbol order
            total = float(res.cash[j])
            for p, m in zip(exp.pos, marks[j], strict=True):
                total += p * m if p != 0.0 else 0.0
            assert res.equity[j] == total
            assert res.symbol_equity[j].sum() == pytest.approx(res.equity[j], rel=1e-12)
            assert res.symbol_equity[j].tolist() == pytest.approx(exp.symbol, rel=1e-12, abs=1e-6)
            assert res.equity[j] - initial == pytest.approx(exp.pnl, abs=1e-6)
    assert pf.realized.sum() == pytest.approx(math.fsum(realized), abs=1e-9)
    assert pf.fees.sum() == pytest.approx(math.fsum(fees), abs=1e-9)
    assert pf.fill_count.sum() == len(fees)


@st.composite
def open_then_close(draw: st.DrawFn) -> tuple[list[Side], list]:
    """Per symbol a direction; settlements that add to the positions, with marks."""
    n = draw(st.integers(1, 3))
    sides = [draw(st.sampled_from([Side.BUY, Side.SELL])) for _ in range(n)]
    steps = draw(
        st.lists(
            st.tuples(
                st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 5_000), price_cents)),
                st.lists(price_cents, min_size=n, max_size=n),  # marks
            ),
            min_size=1,
            max_size=5,
        )
    )
    return sides, steps


@settings(max_examples=100, deadline=None, derandomize=True)
@given(open_then_close())
def test_closing_out_at_average_cost_without_fees_creates_no_money(
    plan: tuple[list[Side], list],
) -> None:
    sides, steps = plan
    n = len(sides)
    symbols = SYMBOLS[:n]
    pf = make_portfolio(symbols, initial=100_000.0, fee=0.0, allow_short=True)
    books = [symbol_books(s) for s in symbols]
    t, oid = T0, 0
    for opens, marks in steps:
        t += H
        fills: list[list[Fill]] = [[] for _ in symbols]
        for i, qty_steps, cents in sorted(opens, key=lambda f: f[0]):
            oid += 1
            f = make_fill(symbols[i], oid, t - H, sides[i], qty_steps * STEP, cents / 100, 0.0)
            assert book_on_symbol(books[i], f.side, f.qty, f.price) == 0.0  # only adding
            fills[i].append(f)
        boxes = [box(s, fills=fills[i], position=books[i].position) for i, s in enumerate(symbols)]
        settle(pf, t, [[c / 100 for c in marks]], boxes)
    # close every position at its average cost, at some unrelated marks
    t += H
    boxes = []
    for i, s in enumerate(symbols):
        qty, avg = abs(books[i].position), books[i].avg_price
        closing = []
        if qty:
            oid += 1
            closing = [make_fill(s, oid, t - H, Side(-sides[i]), qty, avg, 0.0)]
        pnls = [book_on_symbol(books[i], f.side, f.qty, f.price) for f in closing]
        assert pnls == pytest.approx([0.0] * len(pnls), abs=1e-6)
        boxes.append(box(s, fills=closing, realized=pnls, position=0.0))
    res = settle(pf, t, [[123.45] * n], boxes)
    assert pf.pos.tolist() == [0.0] * n
    assert res.gross[-1] == 0.0
    assert res.cash[-1] == pytest.approx(100_000.0, rel=1e-12)
    assert res.equity[-1] == pytest.approx(100_000.0, rel=1e-12)
    assert res.symbol_equity[-1] == pytest.approx(np.full(n, 100_000.0 / n), rel=1e-12)
    assert pf.realized.sum() == pytest.approx(0.0, abs=1e-6)


@st.composite
def boundary_plans(draw: st.DrawFn) -> tuple[int, list, list]:
    """Marks and fills for 2-8 consecutive boundaries, and a grouping into settlements."""
    n = draw(st.integers(1, 3))
    bounds = []
    for _ in range(draw(st.integers(2, 8))):
        marks = [draw(price_cents) / 100 for _ in range(n)]
        one = st.tuples(
            st.integers(0, n - 1),
            st.sampled_from([Side.BUY, Side.SELL]),
            st.integers(1, 5_000),
            price_cents,
        )
        fills = draw(st.lists(one, max_size=3) | st.lists(one, min_size=17, max_size=20))
        bounds.append((marks, sorted(fills, key=lambda f: f[0])))
    sizes = []
    left = len(bounds)
    while left:
        sizes.append(draw(st.integers(1, left)))
        left -= sizes[-1]
    return n, bounds, sizes


def _replay(n: int, bounds: list, sizes: list[int]) -> list[np.ndarray]:
    """Settle ``bounds`` in groups of ``sizes`` boundaries; the rows, concatenated."""
    symbols = SYMBOLS[:n]
    pf = make_portfolio(symbols, initial=100_000.0, allow_short=True)
    pos = [0] * n
    out: list[list[np.ndarray]] = [[], [], [], []]
    b = oid = 0
    for size in sizes:
        fills: list[list[Fill]] = [[] for _ in symbols]
        for j in range(size):
            end = T0 + (b + j + 1) * H
            for i, side, steps, cents in bounds[b + j][1]:
                qty, price = steps * STEP, cents / 100
                oid += 1
                fee = round(qty * price * 0.001, 8)
                fills[i].append(make_fill(symbols[i], oid, end - H, side, qty, price, fee))
                pos[i] += side * steps
        t = T0 + (b + size) * H
        marks = [m for m, _ in bounds[b : b + size]]
        boxes = [
            box(s, fills=fills[i], position=round(pos[i] * STEP, 3)) for i, s in enumerate(symbols)
        ]
        res = settle(pf, t, marks, boxes)
        for k, arr in enumerate((res.equity, res.cash, res.gross, res.symbol_equity)):
            out[k].append(arr)
        b += size
    return [np.concatenate(parts) for parts in out]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(boundary_plans())
def test_a_boundary_value_does_not_depend_on_how_boundaries_are_grouped(
    plan: tuple[int, list, list],
) -> None:
    n, bounds, sizes = plan
    one_by_one = _replay(n, bounds, [1] * len(bounds))
    grouped = _replay(n, bounds, sizes)
    for a, b in zip(one_by_one, grouped, strict=True):
        assert np.array_equal(a, b)  # bit for bit


# -- 2. average-cost realised PnL -------------------------------------------------------
def test_average_cost_realised_pnl_by_hand() -> None:
    sim = symbol_books("AAA")
    pf = make_portfolio(("AAA",), initial=1000.0, fee=0.0, allow_short=True)
    steps = [
        # side, qty, price -> realised, position after, average cost after
        (Side.BUY, 2.0, 100.0, 0.0, 2.0, 100.0),
        (Side.BUY, 2.0, 110.0, 0.0, 4.0, 105.0),  # avg (2*100 + 2*110) / 4 = 105
        (Side.SELL, 3.0, 120.0, 45.0, 1.0, 105.0),  # 3 * (120 - 105) = 45, avg unchanged
        # sells 3: closes the 1 held, (100 - 105) * 1 = -5, and opens a 2 short at 100
        (Side.SELL, 3.0, 100.0, -5.0, -2.0, 100.0),
    ]
    t = T0
    for k, (side, qty, price, pnl, after, avg) in enumerate(steps, start=1):
        t += H
        got = book_on_symbol(sim, side, qty, price)
        assert (got, sim.position, sim.avg_price) == (pnl, after, avg)
        f = make_fill("AAA", k, t - H, side, qty, price, 0.0)
        res = settle(pf, t, [[price]], [box("AAA", fills=[f], realized=[got], position=after)])
        assert res.fills.rows()[0].realized_pnl == pnl
        assert res.fills.rows()[0].position_after == after
    # cash 1000 - 200 - 220 + 360 + 300 = 1240; equity 1240 + (-2 * 100) = 1040
    # = initial + realised 40 + unrealised -2 * (100 - 100) = 0
    assert pf.cash == 1240.0
    assert pf.realized.sum() == 40.0
    assert res.equity[-1] == 1040.0


def test_short_average_cost_profits_when_price_falls() -> None:
    sim = symbol_books("AAA")
    # short 4: 1 @ 100, 3 @ 120 -> avg (100 + 360) / 4 = 115
    assert book_on_symbol(sim, Side.SELL, 1.0, 100.0) == 0.0
    assert book_on_symbol(sim, Side.SELL, 3.0, 120.0) == 0.0
    assert (sim.position, sim.avg_price) == (-4.0, 115.0)
    # buy back 4 @ 110: (115 - 110) * 4 = 20, flat, average reset
    assert book_on_symbol(sim, Side.BUY, 4.0, 110.0) == 20.0
    assert (sim.position, sim.avg_price) == (0.0, 0.0)


# -- 5. boundary rows before and after a fill -------------------------------------------
def test_rows_before_a_fill_show_the_account_without_it() -> None:
    pf = make_portfolio(("AAA", "BBB"), initial=1000.0, fee=0.001)
    t = T0 + 2 * H  # one settlement covering the boundaries T0+1h and T0+2h
    a = make_fill("AAA", 1, T0, Side.BUY, 2.0, 100.0, 0.2)  # bar T0..T0+1h -> row 0
    b = make_fill("AAA", 2, T0 + H, Side.BUY, 3.0, 110.0, 0.33)  # bar T0+1h..t -> row 1
    res = settle(
        pf,
        t,
        [[105.0, 50.0], [120.0, 60.0]],  # AAA marks 105, 120; BBB (never held) 50, 60
        [box("AAA", fills=[a, b], position=5.0), box("BBB")],
    )
    assert res.equity_ts.tolist() == [T0 + H, t]
    # row 0 (T0+1h), after fill a only: cash 1000 - 200 - 0.2 = 799.8, 2 held at 105
    # row 1 (t), after both: cash 799.8 - 330 - 0.33 = 469.47, 5 held at 120
    assert res.cash.tolist() == pytest.approx([799.8, 469.47], rel=1e-12)
    assert res.gross.tolist() == pytest.approx([210.0, 600.0], rel=1e-12)
    # equity: 799.8 + 2 * 105 = 1009.8; 469.47 + 5 * 120 = 1069.47
    assert res.equity.tolist() == pytest.approx([1009.8, 1069.47], rel=1e-12)
    # AAA's sub-account: allocation 500 + flows + position; BBB keeps its 500
    # row 0: 500 - 200.2 + 210 = 509.8; row 1: 500 - 530.53 + 600 = 569.47
    assert res.symbol_equity == pytest.approx(np.array([[509.8, 500.0], [569.47, 500.0]]))
    assert [f.cash_after for f in res.fills.rows()] == pytest.approx([799.8, 469.47], rel=1e-12)


def test_a_fill_in_the_first_row_is_in_every_row() -> None:
    pf = make_portfolio(("AAA",), initial=1000.0, fee=0.0)
    t = T0 + 3 * H
    f = make_fill("AAA", 1, T0, Side.BUY, 1.0, 100.0, 0.0)  # bar closes at T0+1h: row 0
    res = settle(pf, t, [[100.0], [90.0], [80.0]], [box("AAA", fills=[f], position=1.0)])
    # cash 900 in every row, plus the unit at 100, 90, 80
    assert res.cash.tolist() == [900.0, 900.0, 900.0]
    assert res.equity.tolist() == [1000.0, 990.0, 980.0]


# -- 3. approval ------------------------------------------------------------------------
# The account below: cash 1000, fee 0.1%, price buffer 2%, steps of 0.1, mark 100.
# A bought unit is estimated at 100 * 1.02 * 1.001 = 102.102 of free cash.
UNIT = 100 * 1.02 * 1.001


def _approval_portfolio(initial: float = 1000.0) -> Portfolio:
    return make_portfolio(("AAA", "BBB"), initial=initial, step=0.1)


def test_a_buy_that_fits_is_approved_in_full() -> None:
    pf = _approval_portfolio()
    t = T0 + H
    res = settle(pf, t, [[100.0, 100.0]], [box("AAA", intents=[intent("AAA", 1, t, Side.BUY, 5)])])
    (d,) = res.decisions
    # 5 * 102.102 = 510.51 <= 1000
    assert (d.symbol, d.intent_id, d.ts_event, d.action, d.qty, d.reason) == (
        "AAA",
        1,
        t,
        RiskAction.APPROVE,
        5.0,
        "",
    )
    assert [(b.symbol, b.ts_event, b.decisions) for b in res.inboxes] == [("AAA", t, [d])]
    assert pf.free_cash() == pytest.approx(1000 - 5 * UNIT, rel=1e-12)


def test_a_buy_that_does_not_fit_is_resized_to_whole_steps_that_fit() -> None:
    pf = _approval_portfolio()
    t = T0 + H
    res = settle(pf, t, [[100.0, 100.0]], [box("AAA", intents=[intent("AAA", 1, t, Side.BUY, 20)])])
    (d,) = res.decisions
    # 1000 / 102.102 = 9.794 units -> 9.7 in steps of 0.1 (9.8 would cost 1000.60)
    assert (d.action, d.qty) == (RiskAction.RESIZE, 9.7)
    assert 9.7 * UNIT <= 1000.0 < 9.8 * UNIT
    assert "insufficient free cash" in d.reason
    assert "9.7 of 20.0" in d.reason  # names the approved and the asked quantity
    # 20 * 102.102 = 2042.04 needed
    assert "1000.00 free" in d.reason and "2042.04 needed" in d.reason


def test_a_buy_of_which_no_step_fits_is_rejected() -> None:
    pf = _approval_portfolio(initial=10.0)
    t = T0 + H
    res = settle(pf, t, [[100.0, 100.0]], [box("AAA", intents=[intent("AAA", 1, t, Side.BUY, 1)])])
    (d,) = res.decisions
    # 10 / 102.102 = 0.098 units: not one step of 0.1
    assert (d.action, d.qty) == (RiskAction.REJECT, 0.0)
    assert "insufficient free cash: 0.0 of 1.0 fit" in d.reason


def test_a_sell_without_holdings_is_rejected_on_a_spot_account() -> None:
    pf = _approval_portfolio()
    t = T0 + H
    res = settle(pf, t, [[100.0, 100.0]], [box("AAA", intents=[intent("AAA", 1, t, Side.SELL, 1)])])
    (d,) = res.decisions
    assert (d.action, d.qty) == (RiskAction.REJECT, 0.0)
    assert "short selling disabled" in d.reason


def _holding_ten_with_negative_cash() -> Portfolio:
    """Bought 10 @ 100 with a fee of 1 on 1000 cash: cash is -1, nothing is free."""
    pf = _approval_portfolio()
    f = make_fill("AAA", 1, T0, Side.BUY, 10.0, 100.0, 1.0)
    settle(pf, T0 + H, [[100.0, 100.0]], [box("AAA", fills=[f], position=10.0)])
    assert pf.cash == -1.0 and pf.free_cash() == -1.0
    return pf


def test_reducing_orders_are_approved_even_without_cash() -> None:
    pf = _holding_ten_with_negative_cash()
    t = T0 + 2 * H
    sell = intent("AAA", 2, t, Side.SELL, 10)
    res = settle(pf, t, [[100.0, 100.0]], [box("AAA", intents=[sell], position=10.0)])
    assert [(d.action, d.qty, d.reason) for d in res.decisions] == [(RiskAction.APPROVE, 10.0, "")]


def test_a_sell_beyond_holdings_is_cut_to_the_holdings_on_a_spot_account() -> None:
    pf = _holding_ten_with_negative_cash()
    t = T0 + 2 * H
    sell = intent("AAA", 2, t, Side.SELL, 15)
    res = settle(pf, t, [[100.0, 100.0]], [box("AAA", intents=[sell], position=10.0)])
    (d,) = res.decisions
    assert (d.action, d.qty) == (RiskAction.RESIZE, 10.0)
    assert "short selling disabled" in d.reason


def test_approved_unfilled_sells_count_towards_the_projected_position() -> None:
    pf = _holding_ten_with_negative_cash()
    t = T0 + 2 * H
    sells = [intent("AAA", 2, t, Side.SELL, 10), intent("AAA", 3, t, Side.SELL, 5)]
    res = settle(pf, t, [[100.0, 100.0]], [box("AAA", intents=sells, position=10.0)])
    # the first sell takes the position to 0 (projected); the second would open a short
    assert [(d.intent_id, d.action, d.qty) for d in res.decisions] == [
        (2, RiskAction.APPROVE, 10.0),
        (3, RiskAction.REJECT, 0.0),
    ]
    assert "short selling disabled" in res.decisions[1].reason


def test_approved_unfilled_orders_reserve_cash_until_filled_or_canceled() -> None:
    pf = _approval_portfolio()
    t1, t2, t3, t4 = (T0 + k * H for k in (1, 2, 3, 4))
    # t1: two buys of 6 in one settlement cannot both spend the same cash.
    # #1: 6 * 102.102 = 612.612 fits; then 387.388 free -> 3.794 units -> #2 resized to 3.7
    res = settle(
        pf,
        t1,
        [[100.0, 100.0]],
        [
            box(
                "AAA",
                intents=[intent("AAA", 1, t1, Side.BUY, 6), intent("AAA", 2, t1, Side.BUY, 6)],
            )
        ],
    )
    assert [(d.action, d.qty) for d in res.decisions] == [
        (RiskAction.APPROVE, 6.0),
        (RiskAction.RESIZE, 3.7),
    ]
    assert "3.7 of 6.0" in res.decisions[1].reason
    # free: 1000 - 612.612 - 3.7 * 102.102 (377.7774) = 9.6106
    assert pf.free_cash() == pytest.approx(1000 - 9.7 * UNIT, rel=1e-12)
    # t2: nothing filled yet, so still only 9.6106 free: 0.094 units -> rejected
    res = settle(
        pf, t2, [[100.0, 100.0]], [box("AAA", intents=[intent("AAA", 3, t2, Side.BUY, 1)])]
    )
    assert [(d.action, d.qty) for d in res.decisions] == [(RiskAction.REJECT, 0.0)]
    # t3: #1 fills 6 @ 101 (fee 0.606): cash 1000 - 606 - 0.606 = 393.394 and its
    # reservation is released; #2 still holds 377.7774 -> 15.6166 free -> 0.1 units
    f = make_fill("AAA", 1, t2, Side.BUY, 6.0, 101.0, 0.606)
    res = settle(
        pf,
        t3,
        [[100.0, 100.0]],
        [box("AAA", fills=[f], position=6.0, intents=[intent("AAA", 4, t3, Side.BUY, 1)])],
    )
    assert pf.cash == pytest.approx(393.394, rel=1e-12)
    assert [(d.action, d.qty) for d in res.decisions] == [(RiskAction.RESIZE, 0.1)]
    # t4: #2 is canceled and frees its 377.7774: 393.394 - 10.2102 (#4) = 383.1838 free,
    # so a buy of 3 (306.306) fits in full
    res = settle(
        pf,
        t4,
        [[100.0, 100.0]],
        [
            box(
                "AAA",
                position=6.0,
                updates=[update("AAA", 2, t4, OrderStatus.CANCELED)],
                intents=[intent("AAA", 5, t4, Side.BUY, 3)],
            )
        ],
    )
    assert [(d.action, d.qty) for d in res.decisions] == [(RiskAction.APPROVE, 3.0)]
    assert pf.free_cash() == pytest.approx(393.394 - 3.1 * UNIT, rel=1e-12)


@pytest.mark.parametrize("boxes_reversed", [False, True])
def test_intents_are_decided_by_time_then_symbol_then_id(boxes_reversed: bool) -> None:
    pf = _approval_portfolio()
    t = T0 + H
    early, late = t - 50 * MINUTE, t - 10 * MINUTE
    # each asks 4 units (408.408): the first two fit (183.184 left), the third gets 1.7
    aaa = box(
        "AAA", intents=[intent("AAA", 2, late, Side.BUY, 4), intent("AAA", 1, late, Side.BUY, 4)]
    )
    bbb = box("BBB", intents=[intent("BBB", 7, early, Side.BUY, 4)])
    boxes = [bbb, aaa] if boxes_reversed else [aaa, bbb]
    res = settle(pf, t, [[100.0, 100.0]], boxes)
    assert [(d.symbol, d.intent_id, d.action, d.qty) for d in res.decisions] == [
        ("BBB", 7, RiskAction.APPROVE, 4.0),  # earliest intent
        ("AAA", 1, RiskAction.APPROVE, 4.0),  # same time as AAA #2: lower id first
        ("AAA", 2, RiskAction.RESIZE, 1.7),  # 183.184 / 102.102 = 1.794 -> 1.7
    ]
    assert [b.symbol for b in res.inboxes] == ["AAA", "BBB"]


def test_intents_at_the_same_time_are_decided_in_symbol_order() -> None:
    pf = _approval_portfolio()
    t = T0 + H
    res = settle(
        pf,
        t,
        [[100.0, 100.0]],
        [
            box("BBB", intents=[intent("BBB", 1, t, Side.BUY, 6)]),
            box("AAA", intents=[intent("AAA", 1, t, Side.BUY, 6)]),
        ],
    )
    assert [(d.symbol, d.action, d.qty) for d in res.decisions] == [
        ("AAA", RiskAction.APPROVE, 6.0),
        ("BBB", RiskAction.RESIZE, 3.7),
    ]


def test_estimates_use_the_last_mark_not_the_intent_reference_price() -> None:
    pf = _approval_portfolio()
    t = T0 + H
    # the strategy saw 50, but the mark at t is 100: 10 units need 1021.02 > 1000
    buy = intent("AAA", 1, t, Side.BUY, 10, ref=50.0)
    res = settle(pf, t, [[100.0, 100.0]], [box("AAA", intents=[buy])])
    assert [(d.action, d.qty) for d in res.decisions] == [(RiskAction.RESIZE, 9.7)]


def test_a_short_that_locks_no_cash_is_approved_on_a_margin_account() -> None:
    # allowed settings: short_margin 0 (>= 0), price_buffer 0 and taker_fee 0 (in [0, 1))
    pf = make_portfolio(("AAA",), allow_short=True, short_margin=0.0, buffer=0.0, fee=0.0)
    t = T0 + H
    sell = intent("AAA", 1, t, Side.SELL, 5)
    res = settle(pf, t, [[100.0]], [box("AAA", intents=[sell])])
    # selling 5 short brings in 500 and locks (1 + 0) * 500: free cash is unchanged,
    # so the whole order fits
    assert [(d.action, d.qty) for d in res.decisions] == [(RiskAction.APPROVE, 5.0)]


# -- 4. inconsistent input --------------------------------------------------------------
def test_settling_twice_at_the_same_time_is_an_error() -> None:
    pf = make_portfolio()
    settle(pf, T0 + 2 * H, [[100.0]], [])
    with pytest.raises(SimulationError, match=r"settle at .* is not after the previous one"):
        settle(pf, T0 + 2 * H, [[100.0]], [])
    with pytest.raises(SimulationError, match="not after the previous one"):
        settle(pf, T0 + H, [[100.0]], [])


@pytest.mark.parametrize(
    "mark_ts, marks",
    [
        pytest.param([T0 + H], [[100.0]], id="marks-end-before-t"),
        pytest.param([], np.empty((0, 1)), id="no-marks"),
        pytest.param([T0 + H, T0 + 2 * H], [[100.0]], id="rows-do-not-match-boundaries"),
        pytest.param([T0 + 2 * H], [[100.0, 1.0]], id="columns-do-not-match-symbols"),
    ],
)
def test_marks_must_cover_the_boundaries_up_to_t(mark_ts: list[int], marks: object) -> None:
    pf = make_portfolio()
    with pytest.raises(SimulationError, match="marks must cover the boundaries up to"):
        pf.settle(T0 + 2 * H, [], np.array(mark_ts, dtype=np.int64), np.array(marks))


def test_a_symbol_position_that_disagrees_with_the_account_is_an_error() -> None:
    pf = make_portfolio(("AAA", "BBB"))
    f = make_fill("BBB", 1, T0, Side.BUY, 2.0, 100.0, 0.2)
    with pytest.raises(
        SimulationError, match=r"^BBB: symbol reports position 1\.5, account has 2\.0$"
    ):
        settle(pf, T0 + H, [[100.0, 100.0]], [box("AAA"), box("BBB", fills=[f], position=1.5)])


def test_a_fill_of_an_unknown_symbol_is_an_error_before_anything_is_booked() -> None:
    pf = make_portfolio(("AAA",))
    f = make_fill("ZZZ", 1, T0, Side.BUY, 2.0, 100.0, 0.2)
    mark_ts = np.array([T0 + H], dtype=np.int64)
    stray = box("ZZZ", fills=[f], position=2.0)._replace(reached=T0 + H)
    with pytest.raises(SimulationError, match="outbox of 'ZZZ', which is not one of the run's"):
        pf.settle(T0 + H, [stray], mark_ts, np.array([[100.0]]))
    assert pf.cash == pf.config.account.initial_cash and pf.fill_count.sum() == 0


def test_positions_agree_up_to_float_noise_below_a_step() -> None:
    pf = make_portfolio(("AAA",))
    fills = [
        make_fill("AAA", 1, T0, Side.BUY, 0.1, 100.0, 0.0),
        make_fill("AAA", 2, T0, Side.BUY, 0.2, 100.0, 0.0),
    ]
    settle(pf, T0 + H, [[100.0]], [box("AAA", fills=fills, position=0.1 + 0.2)])
    assert pf.pos.tolist() == [0.3]
