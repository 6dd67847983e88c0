"""Hand-computed scenarios for orders matched on an L2 book (engine.l2venue, engine.book).

Book used unless said otherwise (tick 0.1, lot 0.001):

    asks  100.3 x 4   100.2 x 4   100.1 x 1
    bids  100.0 x 2    99.9 x 3    99.8 x 5
"""

from __future__ import annotations

import pytest
from l2util import Tape

from tickray.engine.book import BookError, L2Book, ProbabilisticQueue, validate_events
from tickray.engine.events import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from tickray.engine.impact import SquareRootImpact
from tickray.engine.instruments import SymbolSpec
from tickray.engine.l2venue import L2Venue
from tickray.engine.latency import ConstantLatency, SampledLatency
from tickray.engine.matching import Fees
from tickray.engine.orders import OrderError, OrderRequest, OrderRules, Trail, TrailUnit

SPEC = SymbolSpec("BTCUSDT", tick_size=0.1, step_size=0.001, min_qty=0.001, min_notional=5.0)
BIDS = [(100.0, 2.0), (99.9, 3.0), (99.8, 5.0)]
ASKS = [(100.1, 1.0), (100.2, 4.0), (100.3, 4.0)]
BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET = OrderType.LIMIT, OrderType.MARKET


def venue(latency: int = 0, **kw: object) -> L2Venue:
    v = L2Venue(SPEC, latency=ConstantLatency(submit=latency, cancel=latency, modify=latency), **kw)  # type: ignore[arg-type]
    v.run(Tape().snapshot(0, BIDS, ASKS).events())
    return v


def tape(v: L2Venue) -> Tape:
    t = Tape()
    t.uid = 100
    return t


def statuses(v: L2Venue, oid: int) -> list[str]:
    return [u.status.name for u in v.updates if u.order_id == oid]


def reasons(v: L2Venue, oid: int) -> list[str]:
    return [u.reason for u in v.updates if u.order_id == oid and u.reason]


def fills(v: L2Venue, oid: int) -> list[tuple[float, float, Liquidity]]:
    return [(f.qty, f.price, f.liquidity) for f in v.fills if f.order_id == oid]


def limit(side: Side, qty: float, price: float, **kw: object) -> OrderRequest:
    return OrderRequest(side=side, qty=qty, order_type=LIMIT, price=price, **kw)  # type: ignore[arg-type]


def test_market_buy_walks_the_asks_and_pays_taker_fees() -> None:
    v = venue()
    oid = v.submit(OrderRequest(side=BUY, qty=3.0))
    v.flush(0)
    # 1 @ 100.1 then 2 @ 100.2; taker fee 5 bp: 100.1*0.0005 = 0.05005, 200.4*0.0005 = 0.1002
    assert fills(v, oid) == [(1.0, 100.1, Liquidity.TAKER), (2.0, 100.2, Liquidity.TAKER)]
    assert [f.fee for f in v.fills] == [0.05005, 0.1002]
    assert statuses(v, oid) == ["SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED", "FILLED"]
    assert v.position == 3.0


def test_market_order_larger_than_the_book_expires_the_rest() -> None:
    v = venue()
    oid = v.submit(OrderRequest(side=SELL, qty=12.0))
    v.flush(0)
    assert sum(q for q, _, _ in fills(v, oid)) == 10.0  # 2 + 3 + 5 bids
    assert statuses(v, oid)[-1] == "EXPIRED"
    assert v.orders[oid].filled + v.orders[oid].remaining == 12.0


def test_two_takers_cannot_take_the_same_quantity() -> None:
    v = venue()
    a = v.submit(OrderRequest(side=BUY, qty=1.0))
    b = v.submit(OrderRequest(side=BUY, qty=1.0))
    v.flush(0)
    assert fills(v, a) == [(1.0, 100.1, Liquidity.TAKER)]
    assert fills(v, b) == [(1.0, 100.2, Liquidity.TAKER)]  # 100.1 was taken by a


def test_taken_liquidity_returns_when_the_feed_reports_the_level_again() -> None:
    v = venue()
    v.submit(OrderRequest(side=BUY, qty=1.0))
    v.flush(0)
    v.run(tape(v).depth(5, (-1, 100.1, 1.5)).events())
    b = v.submit(OrderRequest(side=BUY, qty=1.0))
    v.flush(5)
    assert fills(v, b) == [(1.0, 100.1, Liquidity.TAKER)]


def test_marketable_limit_takes_to_its_limit_and_rests_the_rest() -> None:
    v = venue()
    oid = v.submit(limit(BUY, 3.0, 100.2))
    v.flush(0)
    # takes 1 @ 100.1 and 2 of the 4 @ 100.2; nothing left (3 in all)
    assert fills(v, oid) == [(1.0, 100.1, Liquidity.TAKER), (2.0, 100.2, Liquidity.TAKER)]
    oid2 = v.submit(limit(BUY, 3.0, 100.2))
    v.flush(0)
    # 2 left at 100.2, then 1 rests at 100.2 as the new best bid
    assert fills(v, oid2) == [(2.0, 100.2, Liquidity.TAKER)]
    assert v.orders[oid2].status is OrderStatus.PARTIALLY_FILLED
    assert v.orders[oid2].slot >= 0


def test_post_only_that_would_take_is_rejected() -> None:
    v = venue()
    oid = v.submit(limit(BUY, 1.0, 100.1, post_only=True))
    v.flush(0)
    assert statuses(v, oid) == ["SUBMITTED", "REJECTED"]
    assert reasons(v, oid) == ["post-only order would take liquidity"]
    assert v.fills == []


def test_ioc_fills_what_it_can_and_expires_the_rest() -> None:
    v = venue()
    oid = v.submit(limit(BUY, 2.0, 100.1, tif=TimeInForce.IOC))
    v.flush(0)
    assert fills(v, oid) == [(1.0, 100.1, Liquidity.TAKER)]
    assert statuses(v, oid)[-1] == "EXPIRED"
    assert reasons(v, oid) == ["IOC: unfilled remainder"]


def test_fok_is_all_or_nothing() -> None:
    v = venue()
    a = v.submit(limit(BUY, 5.5, 100.2, tif=TimeInForce.FOK))  # only 5 up to 100.2
    v.flush(0)
    assert fills(v, a) == [] and statuses(v, a)[-1] == "EXPIRED"
    b = v.submit(limit(BUY, 5.0, 100.2, tif=TimeInForce.FOK))
    v.flush(0)
    assert sum(q for q, _, _ in fills(v, b)) == 5.0 and statuses(v, b)[-1] == "FILLED"


def test_gtd_expires_at_its_time() -> None:
    v = venue()
    oid = v.submit(limit(BUY, 1.0, 99.0, tif=TimeInForce.GTD, expire_ts=50))
    v.run(tape(v).trade(40, SELL, 99.9, 1.0).trade(60, SELL, 99.9, 1.0).events())
    assert statuses(v, oid) == ["SUBMITTED", "ACCEPTED", "EXPIRED"]
    assert [u.ts_event for u in v.updates if u.order_id == oid][-1] == 50


def test_queue_position_advances_with_trades_and_fills_the_excess() -> None:
    v = venue()
    oid = v.submit(limit(BUY, 1.0, 100.0))  # 2.0 ahead at 100.0
    v.flush(0)
    v.run(tape(v).trade(10, SELL, 100.0, 1.5).trade(11, SELL, 100.0, 1.0).events())
    # ahead 2.0 -> 0.5 after the first trade; the second trade's 1.0 - 0.5 = 0.5 fills us
    assert fills(v, oid) == [(0.5, 100.0, Liquidity.MAKER)]
    assert v.fills[0].fee == 0.01  # 50 notional * 2 bp maker


def test_trade_through_our_price_fills_in_full() -> None:
    v = venue()
    oid = v.submit(limit(BUY, 1.0, 100.0))
    v.flush(0)
    v.run(tape(v).trade(10, SELL, 99.9, 0.001).events())
    assert fills(v, oid) == [(1.0, 100.0, Liquidity.MAKER)]


def test_cancels_behind_us_do_not_move_a_conservative_queue() -> None:
    v = venue()
    oid = v.submit(limit(BUY, 1.0, 99.9))  # 3.0 ahead
    v.flush(0)
    slot = v.orders[oid].slot
    v.run(tape(v).depth(10, (1, 99.9, 2.0)).events())
    assert v.book.slot_ahead(slot) == 2.0  # clipped to the level only
    v.run(tape(v).depth(11, (1, 99.9, 5.0)).depth(12, (1, 99.9, 4.0)).events())
    assert v.book.slot_ahead(slot) == 2.0  # additions join behind; that cancel was behind us


def test_probabilistic_queue_moves_forward_on_cancels() -> None:
    v = venue(queue=ProbabilisticQueue(power=1.0))
    oid = v.submit(limit(BUY, 1.0, 99.8))  # 5.0 ahead
    v.flush(0)
    v.run(tape(v).depth(10, (1, 99.8, 10.0)).depth(11, (1, 99.8, 8.0)).events())
    # level 10, 5 ahead and 5 behind; 2 canceled, share ahead 5/(5+5) -> ahead 5 - 1 = 4
    assert v.book.slot_ahead(v.orders[oid].slot) == pytest.approx(4.0)


def test_trades_at_our_level_are_not_counted_again_when_the_level_shrinks() -> None:
    v = venue(queue=ProbabilisticQueue(power=1.0))
    oid = v.submit(limit(BUY, 1.0, 99.8))
    v.flush(0)
    v.run(tape(v).trade(10, SELL, 99.8, 1.0).depth(11, (1, 99.8, 4.0)).events())
    # the trade moved us 5 -> 4; the level's drop 5 -> 4 is that trade, not a cancel
    assert v.book.slot_ahead(v.orders[oid].slot) == pytest.approx(4.0)


def test_resting_order_fills_when_the_other_side_reaches_its_price() -> None:
    v = venue()
    oid = v.submit(limit(SELL, 1.0, 100.3))
    v.flush(0)
    v.run(tape(v).depth(10, (1, 100.3, 2.0), (-1, 100.1, 0.0), (-1, 100.2, 0.0)).events())
    assert fills(v, oid) == [(1.0, 100.3, Liquidity.MAKER)]


def test_stop_market_triggers_on_a_trade_and_walks_the_book() -> None:
    v = venue()
    oid = v.submit(
        OrderRequest(side=BUY, qty=2.0, order_type=OrderType.STOP_MARKET, stop_price=100.1)
    )
    v.flush(0)
    v.run(tape(v).trade(10, BUY, 100.1, 0.5).events())
    # triggered at 100.1; the asks left: 1 @ 100.1, then 1 @ 100.2 (stops never fill at the stop for free)
    assert statuses(v, oid) == ["SUBMITTED", "ACCEPTED", "TRIGGERED", "PARTIALLY_FILLED", "FILLED"]
    assert fills(v, oid) == [(1.0, 100.1, Liquidity.TAKER), (1.0, 100.2, Liquidity.TAKER)]


def test_stop_that_gaps_fills_at_the_worse_price() -> None:
    v = venue()
    oid = v.submit(
        OrderRequest(side=SELL, qty=1.0, order_type=OrderType.STOP_MARKET, stop_price=99.9)
    )
    v.flush(0)
    # the bids vanish down to 99.5 before any trade prints; the next trade is at 99.5
    v.run(
        tape(v)
        .depth(10, (1, 100.0, 0.0), (1, 99.9, 0.0), (1, 99.8, 0.0), (1, 99.5, 3.0))
        .trade(11, SELL, 99.5, 0.1)
        .events()
    )
    assert fills(v, oid) == [(1.0, 99.5, Liquidity.TAKER)]


def test_stop_limit_rests_at_its_limit_after_the_trigger() -> None:
    v = venue()
    oid = v.submit(
        OrderRequest(
            side=BUY, qty=2.0, order_type=OrderType.STOP_LIMIT, stop_price=100.1, price=100.1
        )
    )
    v.flush(0)
    v.run(tape(v).trade(10, BUY, 100.1, 0.5).events())
    assert fills(v, oid) == [(1.0, 100.1, Liquidity.TAKER)]
    assert v.orders[oid].status is OrderStatus.PARTIALLY_FILLED and v.orders[oid].slot >= 0


def test_market_if_touched_buys_on_a_dip() -> None:
    v = venue()
    oid = v.submit(
        OrderRequest(side=BUY, qty=1.0, order_type=OrderType.MARKET_IF_TOUCHED, stop_price=99.9)
    )
    v.flush(0)
    v.run(tape(v).trade(10, BUY, 100.1, 0.5).events())
    assert fills(v, oid) == []
    v.run(tape(v).trade(11, SELL, 99.9, 0.5).events())
    assert fills(v, oid) == [(1.0, 100.1, Liquidity.TAKER)]


def test_trailing_stop_in_ticks_follows_the_high() -> None:
    v = venue()
    v.run(tape(v).trade(1, BUY, 100.1, 0.1).events())
    oid = v.submit(
        OrderRequest(side=SELL, qty=1.0, order_type=OrderType.TRAILING_STOP, trail=Trail(0.3))
    )
    v.flush(1)
    # peak 100.1 -> trigger 99.8; the price runs to 100.6 -> trigger 100.3
    t = tape(v).trade(5, BUY, 100.6, 0.1).trade(6, SELL, 100.4, 0.1)
    t.depth(7, (1, 100.3, 1.0)).trade(8, SELL, 100.3, 0.1)
    v.run(t.events())
    assert statuses(v, oid)[-3:] == ["TRIGGERED", "PARTIALLY_FILLED", "FILLED"] or statuses(v, oid)[
        -2:
    ] == [
        "TRIGGERED",
        "FILLED",
    ]
    assert [u.reason for u in v.updates if u.status is OrderStatus.TRIGGERED] == [
        "trigger at 100.3"
    ]
    assert fills(v, oid) == [
        (1.0, 100.3, Liquidity.TAKER)
    ]  # trades do not change levels; depth does


def test_trailing_stop_in_percent() -> None:
    v = venue()
    v.run(tape(v).trade(1, BUY, 100.0, 0.1).events())
    oid = v.submit(
        OrderRequest(
            side=SELL,
            qty=1.0,
            order_type=OrderType.TRAILING_STOP,
            trail=Trail(0.01, TrailUnit.PERCENT),
        )
    )
    v.flush(1)
    v.run(tape(v).trade(5, BUY, 101.0, 0.1).trade(6, SELL, 100.0, 0.1).events())
    # peak 101.0 -> trigger floor(1010 * 0.99) = 999.9 ticks -> 99.9; 100.0 is above: no trigger
    assert "TRIGGERED" not in statuses(v, oid)
    v.run(tape(v).trade(7, SELL, 99.9, 0.1).events())
    assert "TRIGGERED" in statuses(v, oid)


def test_iceberg_refills_at_the_back_of_the_queue() -> None:
    v = venue()
    oid = v.submit(limit(BUY, 3.0, 100.0, display_qty=1.0))
    v.flush(0)
    slot = v.orders[oid].slot
    assert v.book.slot_left(slot) == 1.0 and v.book.slot_ahead(slot) == 2.0
    v.run(tape(v).trade(10, SELL, 100.0, 3.0).events())  # 2 ahead, then our 1 visible
    assert fills(v, oid) == [(1.0, 100.0, Liquidity.MAKER)]
    new = v.orders[oid].slot
    assert v.book.slot_left(new) == 1.0
    assert v.book.slot_ahead(new) == 2.0  # the level's visible quantity: the back of the queue


def test_bracket_take_profit_cancels_the_stop_loss() -> None:
    v = venue()
    entry, tp, sl = v.submit_bracket(
        OrderRequest(side=BUY, qty=1.0), take_profit=100.5, stop_loss=99.5
    )
    v.flush(0)
    assert fills(v, entry) == [(1.0, 100.1, Liquidity.TAKER)]
    assert v.orders[tp].slot >= 0 and v.orders[sl].slot >= 0
    v.run(tape(v).trade(10, BUY, 100.6, 0.1).events())  # through the take-profit
    assert fills(v, tp) == [(1.0, 100.5, Liquidity.MAKER)]
    assert statuses(v, sl)[-1] == "CANCELED" and reasons(v, sl) == [f"OCO: order {tp} filled"]
    assert v.position == 0.0


def test_bracket_children_wait_for_the_entry() -> None:
    v = venue()
    entry, tp, sl = v.submit_bracket(limit(BUY, 1.0, 99.0), take_profit=100.5, stop_loss=98.5)
    v.flush(0)
    assert v.orders[tp].held and v.orders[tp].slot < 0
    v.cancel(entry)
    v.flush(0)
    assert statuses(v, tp)[-1] == "CANCELED" and statuses(v, sl)[-1] == "CANCELED"


def test_modify_price_loses_queue_priority_and_smaller_qty_keeps_it() -> None:
    v = venue()
    oid = v.submit(limit(BUY, 1.0, 99.9))
    v.flush(0)
    v.run(tape(v).trade(10, SELL, 99.9, 2.0).events())  # ahead 3 -> 1
    v.modify(oid, qty=0.5)
    v.flush(10)
    assert v.book.slot_ahead(v.orders[oid].slot) == 1.0
    v.modify(oid, price=99.8)
    v.flush(10)
    assert v.book.slot_ahead(v.orders[oid].slot) == 5.0
    assert statuses(v, oid) == ["SUBMITTED", "ACCEPTED", "AMENDED", "AMENDED"]


def test_cancel_and_modify_of_unknown_or_finished_orders_are_rejected() -> None:
    v = venue()
    oid = v.submit(OrderRequest(side=BUY, qty=1.0))
    v.flush(0)
    v.cancel(oid)
    v.modify(999, price=99.0)
    v.flush(0)
    assert statuses(v, oid)[-1] == "CANCEL_REJECTED"
    assert reasons(v, oid) == ["order is already FILLED"]
    bad = [u for u in v.updates if u.order_id == 999]
    assert [u.status for u in bad] == [OrderStatus.MODIFY_REJECTED]
    assert bad[0].reason == "order 999 is not at the venue"


def test_latency_delays_arrival_and_a_late_cancel_loses_the_race() -> None:
    v = venue(latency=10)
    oid = v.submit(limit(BUY, 1.0, 100.0))
    v.run(tape(v).trade(5, SELL, 100.0, 5.0).events())  # before arrival: no effect on us
    assert statuses(v, oid) == ["SUBMITTED"]
    v.run(tape(v).trade(12, SELL, 99.9, 1.0).events())  # arrived at 10, filled through at 12
    v.now = 12
    v.cancel(oid)  # reaches the venue at 22, too late
    v.flush(30)
    assert statuses(v, oid) == ["SUBMITTED", "ACCEPTED", "FILLED", "CANCEL_REJECTED"]


def test_reduce_only_is_cut_to_the_position_and_rejected_when_flat() -> None:
    v = venue()
    flat = v.submit(OrderRequest(side=SELL, qty=1.0, reduce_only=True))
    v.flush(0)
    assert reasons(v, flat) == ["reduce-only order would increase the position"]
    v.submit(OrderRequest(side=BUY, qty=1.0))
    v.flush(0)
    cut = v.submit(OrderRequest(side=SELL, qty=3.0, reduce_only=True))
    v.flush(0)
    assert sum(q for q, _, _ in fills(v, cut)) == 1.0 and v.position == 0.0


def test_symbol_rules_round_or_reject() -> None:
    v = venue()
    oid = v.submit(limit(BUY, 1.0004, 99.04))
    v.flush(0)
    assert v.orders[oid].qty == 1.0 and v.orders[oid].price == 99.0
    small = v.submit(limit(BUY, 0.01, 99.0))  # 0.99 notional < 5
    strict = L2Venue(SPEC, rules=OrderRules("reject"))
    off = strict.submit(limit(BUY, 1.0, 99.04))
    v.flush(0)
    assert reasons(v, small) == ["notional 0.99 is below the minimum notional 5.0"]
    assert reasons(strict, off) == ["price 99.04 is not a multiple of the tick size 0.1"]


def test_bad_requests_raise_naming_the_field() -> None:
    with pytest.raises(OrderError, match="qty must be"):
        OrderRequest(side=BUY, qty=-1.0)
    with pytest.raises(OrderError, match="LIMIT needs a price"):
        OrderRequest(side=BUY, qty=1.0, order_type=LIMIT)
    with pytest.raises(OrderError, match="GTD needs expire_ts"):
        limit(BUY, 1.0, 99.0, tif=TimeInForce.GTD)
    with pytest.raises(OrderError, match="display_qty"):
        limit(BUY, 1.0, 99.0, display_qty=2.0)
    with pytest.raises(OrderError, match="fees.maker"):
        Fees(maker=0.5)


def test_square_root_impact_moves_taker_fills_only() -> None:
    v = venue(impact=SquareRootImpact(coef=1.0, decay_ns=10**9))
    v.run(tape(v).trade(1, BUY, 100.1, 10.0).trade(2, SELL, 100.0, 10.0).events())
    oid = v.submit(OrderRequest(side=BUY, qty=1.0))
    v.flush(2)
    ((q, price, _),) = fills(v, oid)
    assert price > 100.1  # impact: volatility of 100.1 -> 100.0 and 1/20 of the traded volume


def test_sampled_latency_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[int]:
        v = L2Venue(
            SPEC,
            latency=SampledLatency(
                seed,
                submit=__import__("tickray.engine.latency", fromlist=["x"]).UniformDelay(1, 1000),
            ),
        )
        v.run(Tape().snapshot(0, BIDS, ASKS).events())
        for _ in range(5):
            v.submit(limit(BUY, 1.0, 99.0))
        v.flush(10_000)
        return [u.ts_event for u in v.updates if u.status is OrderStatus.ACCEPTED]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_book_never_exceeds_its_levels_for_takers() -> None:
    b = L2Book(0.1, 0.001)
    b.apply(Tape().snapshot(0, BIDS, ASKS).events())
    assert b.available(1, 100.0, None) == 9.0
    assert b.take(1, 100.0, None) == [(1001, 1.0), (1002, 4.0), (1003, 4.0)]
    assert b.take(1, 1.0, None) == []


def test_book_from_tops_and_trades_only() -> None:
    """No depth stream: tops build a one-level book and trades move the queue."""
    v = L2Venue(SPEC)
    t = Tape().top(0, (100.0, 2.0), (100.1, 1.0))
    v.run(t.events())
    assert v.book.best_bid() == (100.0, 2.0) and v.book.best_ask() == (100.1, 1.0)
    oid = v.submit(limit(BUY, 1.0, 100.0))
    v.flush(0)
    assert v.book.slot_ahead(v.orders[oid].slot) == 2.0
    # the bid top moves down to 99.9: 100.0 is gone (below the best, removed by the top);
    # a sell trade of 2.5 at 100.0 printed just before fills the 0.5 beyond the queue
    t2 = Tape().trade(5, SELL, 100.0, 2.5).top(6, (99.9, 4.0), (100.1, 1.0))
    t2.uid = 10
    v.run(t2.events())
    assert fills(v, oid) == [(0.5, 100.0, Liquidity.MAKER)]
    assert v.book.best_bid() == (99.9, 4.0)


def test_older_top_than_the_depth_is_ignored() -> None:
    b = L2Book(0.1, 0.001)
    t = Tape().snapshot(0, BIDS, ASKS)
    t.uid = 50
    t.depth(1, (1, 100.0, 7.0))  # update id 51
    ev = t.events()
    b.apply(ev)
    stale = Tape()
    stale.uid = 10  # a top with id 11, older than the depth's 51
    stale.top(2, (99.9, 1.0), (100.1, 1.0))
    b.apply(stale.events())
    assert b.best_bid() == (100.0, 7.0)


def test_crossed_diff_is_repaired_and_counted() -> None:
    b = L2Book(0.1, 0.001)
    b.apply(Tape().snapshot(0, BIDS, ASKS).events())
    t = Tape()
    t.uid = 5
    t.depth(1, (-1, 99.9, 1.0))  # a new ask below the best bid: the stale bids go
    b.apply(t.events())
    assert b.stats.crossed_repairs == 1
    assert b.best_ask() == (99.9, 1.0) and b.best_bid() == (99.8, 5.0)


def test_bad_market_events_raise_naming_the_row() -> None:
    ev = Tape().snapshot(0, BIDS, ASKS).events()
    bad_qty = ev._replace(qty=ev.qty.copy())
    bad_qty.qty[2] = -1.0
    with pytest.raises(BookError, match="row 2: qty must be >= 0"):
        validate_events(bad_qty)
    back = ev._replace(ts=ev.ts.copy())
    back.ts[3] = -5
    with pytest.raises(BookError, match="row 3: ts -5 is before 0"):
        validate_events(back)
    cut = ev.slice(0, 3)
    with pytest.raises(BookError, match="last row does not end a message"):
        validate_events(cut)
    v = venue()
    before = (v.book.best_bid(), v.book.best_ask())
    with pytest.raises(BookError):
        v.run(bad_qty)
    assert (v.book.best_bid(), v.book.best_ask()) == before  # nothing applied


def test_trailing_stop_with_an_atr_distance_and_a_limit() -> None:
    v = venue()
    v.atr = 0.25  # the ATR the caller's indicator reports; 2 x ATR = 0.5 = 5 ticks
    v.run(tape(v).trade(1, BUY, 100.1, 0.1).events())
    oid = v.submit(
        OrderRequest(
            side=SELL,
            qty=1.0,
            order_type=OrderType.TRAILING_STOP_LIMIT,
            trail=Trail(2.0, TrailUnit.ATR),
            limit_offset=0.1,
        )
    )
    v.flush(1)
    assert v.orders[oid].trail_distance == 0.5
    v.run(tape(v).trade(5, BUY, 100.5, 0.1).trade(6, SELL, 100.0, 0.1).events())
    # peak 100.5 -> trigger 100.0; the limit is 100.0 - 0.1 = 99.9: sells into the 100.0 bid
    assert [u.reason for u in v.updates if u.status is OrderStatus.TRIGGERED] == ["trigger at 100"]
    assert v.orders[oid].price == 99.9
    assert fills(v, oid) == [(1.0, 100.0, Liquidity.TAKER)]


def test_atr_trailing_stop_without_an_atr_is_rejected() -> None:
    v = venue()
    oid = v.submit(
        OrderRequest(
            side=SELL, qty=1.0, order_type=OrderType.TRAILING_STOP, trail=Trail(2.0, TrailUnit.ATR)
        )
    )
    assert reasons(v, oid) == ["trailing distance in ATR but no ATR is known yet"]


def test_limit_if_touched_rests_its_limit_after_the_touch() -> None:
    v = venue()
    oid = v.submit(
        OrderRequest(
            side=BUY, qty=1.0, order_type=OrderType.LIMIT_IF_TOUCHED, stop_price=99.9, price=99.8
        )
    )
    v.flush(0)
    v.run(tape(v).trade(5, SELL, 99.9, 0.5).events())
    o = v.orders[oid]
    assert o.triggered and o.slot >= 0 and v.book.slot_tick(o.slot) == 998
    assert v.book.slot_ahead(o.slot) == 5.0  # joins the back of the 99.8 level


def test_market_data_latency_adds_to_every_command() -> None:
    v = L2Venue(SPEC, latency=ConstantLatency(submit=3, cancel=1, market_data=2))
    v.run(Tape().snapshot(0, BIDS, ASKS).events())
    oid = v.submit(limit(BUY, 1.0, 99.0))
    v.cancel(oid)
    v.flush(100)
    # the order reaches the venue at 0 + 2 + 3 = 5, the cancel at 0 + 2 + 1 = 3: too early
    got = [(u.status.name, u.ts_event) for u in v.updates]
    assert got == [("SUBMITTED", 0), ("CANCEL_REJECTED", 3), ("ACCEPTED", 5)]


def test_timer_and_book_moves_wake_the_strategy() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.times: list[int] = []

        def on_start(self, venue: L2Venue) -> None:
            self.times.append(venue.now)

        def on_wake(self, venue: L2Venue) -> None:
            self.times.append(venue.now)

    v = L2Venue(SPEC)
    rec = Recorder()
    v.attach(rec, timer_ns=100, wake_ticks=2)
    t = Tape().snapshot(0, BIDS, ASKS)
    t.depth(50, (1, 100.1, 1.0), (-1, 100.1, 0.0))  # best bid +1 tick: not enough
    t.depth(60, (1, 100.2, 1.0), (-1, 100.2, 0.0))  # +2 ticks from the start: wake
    t.trade(250, BUY, 100.3, 0.1)
    v.run(t.events())
    v.flush(300)
    assert rec.times == [0, 60, 100, 200, 300]


def test_canceling_one_oco_leg_cancels_the_other() -> None:
    v = venue()
    a, b = v.submit_oco(limit(BUY, 1.0, 99.0), limit(SELL, 1.0, 101.0))
    v.flush(0)
    v.cancel(a)
    v.flush(0)
    assert statuses(v, a)[-1] == "CANCELED" and statuses(v, b)[-1] == "CANCELED"
    assert reasons(v, b) == [f"OCO: order {a} canceled"]


class _BuyAndQuote:
    """Buys 0.005 at market on start, then keeps a bid resting far below; counts wakes."""

    def __init__(self) -> None:
        self.wakes = 0

    def on_start(self, venue: L2Venue) -> None:
        venue.submit(OrderRequest(side=Side.BUY, qty=0.005))
        venue.submit(OrderRequest(side=Side.BUY, qty=0.1, order_type=OrderType.LIMIT, price=90.0))

    def on_wake(self, venue: L2Venue) -> None:
        self.wakes += 1


def test_a_flatten_control_detaches_the_strategy_cancels_and_closes_by_market_order() -> None:
    """A live order-book session stopping with on_stop = "flatten": at the next step the
    strategy is woken no more, its open orders are cancelled, and the position is sold
    at market through the book after the submit latency."""
    from tickray.engine.l2sim import L2SymbolSim

    tape = Tape().snapshot(10, [(100.0, 1.0), (99.9, 2.0)], [(100.1, 1.0), (100.2, 2.0)])
    for k in range(1, 40):
        tape.depth(10 + 100 * k, (1, 100.0, 1.0 + k / 100))
    strategy = _BuyAndQuote()
    v = L2Venue(SPEC, latency=ConstantLatency(submit=5, cancel=5, modify=5))
    sim = L2SymbolSim(v, strategy, iter([tape.events()]), sync_ns=1000, t0=0, timer_ns=50)
    first = sim.advance(2000, [])
    assert sim.position == pytest.approx(0.005)
    assert first.fills.size == 1
    wakes = strategy.wakes
    assert wakes > 0
    sim.flatten_reason = "end of paper session"
    out = sim.advance(3000, [])
    assert sim.position == 0.0
    assert strategy.wakes == wakes  # detached
    assert not sim.venue.open_orders()
    (fill,) = out.fills.data
    codes = [int(x) for x in out.updates.data["status"]]
    assert int(OrderStatus.CANCELED) in codes  # the resting bid
    assert int(fill["side"]) == int(Side.SELL) and float(fill["price"]) == 100.0
    assert int(fill["ts"]) >= 2000 + 5  # after the submit latency
    sim.advance(4000, [])
    assert sim.position == 0.0 and strategy.wakes == wakes
