"""Hand-computed fills on OHLCV bars (engine.barvenue).

Tick 0.01, lot 0.001, 1-minute bars (BAR = 60 s, a path segment lasts BAR/3 = 20 s).
Bar A opens at 0: O 100, H 103, L 98, C 101. The low is nearer the open
(2 < 3), so the path is 100 -> 98 -> 103 -> 101.
"""

from __future__ import annotations

import numpy as np
import pytest

from tickray.engine.barvenue import BarVenue
from tickray.engine.calendar import Calendar
from tickray.engine.events import Liquidity, OrderType, Side, TimeInForce
from tickray.engine.instruments import SymbolSpec
from tickray.engine.orders import OrderRequest, Trail

SPEC = SymbolSpec("X", tick_size=0.01, step_size=0.001)
BAR = 60_000_000_000
SEG = BAR // 3
BUY, SELL = Side.BUY, Side.SELL
BAR_A = (100.0, 103.0, 98.0, 101.0, 1000.0)


def venue(**kw: object) -> BarVenue:
    return BarVenue(SPEC, BAR, **kw)  # type: ignore[arg-type]


def fills(v: BarVenue) -> list[tuple[int, float, float, Liquidity]]:
    return [(f.ts_event, f.qty, f.price, f.liquidity) for f in v.fills]


def statuses(v: BarVenue, oid: int) -> list[str]:
    return [u.status.name for u in v.updates if u.order_id == oid]


def req(side: Side, qty: float, kind: OrderType = OrderType.MARKET, **kw: object) -> OrderRequest:
    return OrderRequest(side=side, qty=qty, order_type=kind, **kw)  # type: ignore[arg-type]


def test_market_order_fills_at_the_open_plus_half_the_spread() -> None:
    v = venue(spread_bps=10.0)
    v.submit(req(BUY, 1.0))
    v.on_bar(0, *BAR_A)
    # half spread = 100 * 10 bp / 2 = 0.05
    assert fills(v) == [(0, 1.0, 100.05, Liquidity.TAKER)]


def test_order_reaching_the_venue_inside_a_bar_works_from_the_next_bar() -> None:
    v = venue()
    v.now = 1
    v.submit(req(BUY, 1.0))
    v.on_bar(0, *BAR_A)  # the bar at 0 was already under way at 1
    assert v.fills == []
    v.on_bar(BAR, 101.0, 102.0, 100.0, 101.5, 1000.0)
    assert fills(v) == [(BAR, 1.0, 101.0, Liquidity.TAKER)]


def test_limit_fills_only_when_the_path_trades_through() -> None:
    v = venue()
    touch = v.submit(req(BUY, 1.0, OrderType.LIMIT, price=98.0))  # the low only touches 98
    through = v.submit(req(BUY, 1.0, OrderType.LIMIT, price=99.0))
    v.on_bar(0, *BAR_A)
    # 100 -> 98 crosses 99 halfway along the first segment: t = 0.5 * 20 s
    assert fills(v) == [(SEG // 2, 1.0, 99.0, Liquidity.MAKER)]
    assert v.orders[touch].filled == 0 and v.orders[through].filled == 1.0


def test_marketable_limit_takes_at_the_open() -> None:
    v = venue(spread_bps=10.0)
    v.submit(req(BUY, 1.0, OrderType.LIMIT, price=100.5))
    v.on_bar(0, *BAR_A)
    assert fills(v) == [(0, 1.0, 100.05, Liquidity.TAKER)]


def test_stop_fires_where_the_path_reaches_it() -> None:
    v = venue(spread_bps=10.0)
    oid = v.submit(req(BUY, 1.0, OrderType.STOP_MARKET, stop_price=102.0))
    v.on_bar(0, *BAR_A)
    # 98 -> 103 reaches 102 at 4/5 of the second segment: t = 20 s * 1.8 = 36 s
    # fill at 102 + 102 * 10 bp / 2 = 102.051 -> rounded up to the tick: 102.06
    assert fills(v) == [(36_000_000_000, 1.0, 102.06, Liquidity.TAKER)]
    assert statuses(v, oid) == ["SUBMITTED", "ACCEPTED", "TRIGGERED", "FILLED"]


def test_stop_that_gaps_fills_at_the_worse_open() -> None:
    v = venue()
    v.submit(req(SELL, 1.0, OrderType.STOP_MARKET, stop_price=99.0))
    v.on_bar(0, 97.0, 97.5, 95.0, 96.0, 1000.0)  # opens below the stop
    assert fills(v) == [(0, 1.0, 97.0, Liquidity.TAKER)]


def test_stop_limit_marketable_after_the_trigger() -> None:
    v = venue(spread_bps=10.0)
    v.submit(req(BUY, 1.0, OrderType.STOP_LIMIT, stop_price=102.0, price=102.5))
    v.on_bar(0, *BAR_A)
    assert fills(v) == [(36_000_000_000, 1.0, 102.06, Liquidity.TAKER)]


def test_stop_limit_rests_and_fills_on_the_rest_of_the_path() -> None:
    v = venue(spread_bps=10.0)
    v.submit(req(BUY, 1.0, OrderType.STOP_LIMIT, stop_price=102.0, price=101.5))
    v.on_bar(0, *BAR_A)
    # fires at 102 (36 s), 102.06 > 101.5; then 103 -> 101 passes 101.5 at 3/4 of the
    # third segment, which runs from 40 s to 60 s - 1 ns: 40e9 + 0.75 * (20e9 - 1) -> 54_999_999_999
    assert fills(v) == [(54_999_999_999, 1.0, 101.5, Liquidity.MAKER)]


def test_market_if_touched_buys_the_dip() -> None:
    v = venue()
    v.submit(req(BUY, 1.0, OrderType.MARKET_IF_TOUCHED, stop_price=99.0))
    v.on_bar(0, *BAR_A)
    assert fills(v) == [(SEG // 2, 1.0, 99.0, Liquidity.TAKER)]


def test_trailing_stop_follows_the_path_high() -> None:
    v = venue()
    v.on_bar(-BAR, 100.0, 100.0, 100.0, 100.0, 1.0)  # last close 100 before the order
    v.submit(req(SELL, 1.0, OrderType.TRAILING_STOP, trail=Trail(2.0)))
    # path 100 -> 99 -> 104 -> 103: trigger 98, then the high 104 moves it to 102
    v.on_bar(0, 100.0, 104.0, 99.0, 103.0, 1000.0)
    assert v.fills == []
    # path 103 -> 103.5 -> 101 -> 101.5: falls through 102 on the second segment
    v.on_bar(BAR, 103.0, 103.5, 101.0, 101.5, 1000.0)
    ((ts, qty, price, liq),) = fills(v)
    assert (qty, price, liq) == (1.0, 102.0, Liquidity.TAKER)
    assert ts == BAR + int((1 + 1.5 / 2.5) * SEG)


def test_participation_cap_spreads_a_large_order_over_bars() -> None:
    v = venue(participation=0.1)
    oid = v.submit(req(BUY, 250.0))
    for k in range(3):
        v.on_bar(k * BAR, 100.0 + k, 101.0 + k, 99.0 + k, 100.0 + k, 1000.0)
    # 10% of 1000 per bar: 100, 100, then the last 50, each at its bar's open
    assert [(q, p) for _, q, p, _ in fills(v)] == [(100.0, 100.0), (100.0, 101.0), (50.0, 102.0)]
    assert statuses(v, oid)[-1] == "FILLED"


def test_zero_volume_bar_fills_nothing_under_a_participation_cap() -> None:
    v = venue(participation=0.5)
    v.submit(req(BUY, 1.0))
    v.on_bar(0, 100.0, 100.0, 100.0, 100.0, 0.0)
    assert v.fills == []


def test_ioc_and_fok_work_at_their_first_open_only() -> None:
    v = venue(participation=0.1)
    ioc = v.submit(req(BUY, 150.0, OrderType.LIMIT, price=101.0, tif=TimeInForce.IOC))
    fok = v.submit(req(BUY, 150.0, OrderType.LIMIT, price=101.0, tif=TimeInForce.FOK))
    v.on_bar(0, *BAR_A)
    assert v.orders[ioc].filled == 100.0 and statuses(v, ioc)[-1] == "EXPIRED"
    assert v.orders[fok].filled == 0.0 and statuses(v, fok)[-1] == "EXPIRED"


def test_post_only_marketable_at_the_open_is_rejected() -> None:
    v = venue()
    oid = v.submit(req(BUY, 1.0, OrderType.LIMIT, price=100.5, post_only=True))
    v.on_bar(0, *BAR_A)
    assert statuses(v, oid)[-1] == "REJECTED" and v.fills == []


def test_gtd_expires_before_a_bar_opening_after_it() -> None:
    v = venue()
    oid = v.submit(req(BUY, 1.0, OrderType.LIMIT, price=90.0, tif=TimeInForce.GTD, expire_ts=BAR))
    v.on_bar(0, *BAR_A)
    v.on_bar(BAR, *BAR_A)
    assert statuses(v, oid) == ["SUBMITTED", "ACCEPTED", "EXPIRED"]


def test_bracket_on_bars_takes_profit_and_cancels_the_stop() -> None:
    v = venue()
    entry, tp, sl = v.submit_bracket(req(BUY, 1.0), take_profit=102.5, stop_loss=97.0)
    v.on_bar(0, *BAR_A)
    # entry at the open 100; then 98 (stop 97 not reached), 103 passes through 102.5
    assert [(q, p) for _, q, p, _ in fills(v)] == [(1.0, 100.0), (1.0, 102.5)]
    assert statuses(v, sl)[-1] == "CANCELED" and v.position == 0.0


@pytest.mark.parametrize(
    "bad", [{"participation": 0.0}, {"spread_bps": -1.0}, {"spread_ticks": -1}]
)
def test_bad_bar_venue_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        venue(**bad)


def _hours() -> Calendar:
    # one session from the second bar's open to the fourth's: [BAR, 3 * BAR)
    return Calendar(
        "test",
        np.array([BAR], dtype=np.int64),
        np.array([3 * BAR], dtype=np.int64),
        start=0,
        end=10 * BAR,
    )


def test_orders_outside_hours_wait_for_the_open() -> None:
    v = venue(calendar=_hours(), hours="wait")
    oid = v.submit(req(BUY, 1.0))  # at 0, before the session
    v.on_bar(0, *BAR_A)
    assert v.fills == [] and statuses(v, oid) == ["SUBMITTED"]
    v.on_bar(BAR, 101.0, 102.0, 100.0, 101.0, 1000.0)
    assert fills(v) == [(BAR, 1.0, 101.0, Liquidity.TAKER)]
    assert [u.ts_event for u in v.updates if u.status.name == "ACCEPTED"] == [BAR]


def test_orders_outside_hours_are_rejected_when_so_configured() -> None:
    v = venue(calendar=_hours(), hours="reject")
    oid = v.submit(req(BUY, 1.0))
    v.on_bar(0, *BAR_A)
    assert statuses(v, oid) == ["SUBMITTED", "REJECTED"]
    assert "market closed (test)" in [u.reason for u in v.updates if u.order_id == oid][-1]


def test_bars_outside_the_session_fill_nothing() -> None:
    v = venue(calendar=_hours())
    v.on_bar(BAR, *BAR_A)
    v.submit(req(BUY, 1.0, OrderType.LIMIT, price=90.0))  # accepted in the session
    v.on_bar(2 * BAR, *BAR_A)  # no: the bar stays above 90
    v.on_bar(3 * BAR, 80.0, 95.0, 79.0, 90.0, 1000.0)  # closed: no fill though it crosses
    assert v.fills == []
