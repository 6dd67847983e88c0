"""engine.steps: which step an event belongs to, and cutting an outbox at a boundary."""

from __future__ import annotations

import numpy as np

from tickray.engine.clock import MINUTE
from tickray.engine.events import (
    EMPTY_UPDATES,
    Fill,
    Liquidity,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Outbox,
    Side,
    fill_batch,
    update_batch,
)
from tickray.engine.steps import fill_steps, split_outbox, update_steps

H = 60 * MINUTE


def _update(oid: int, ts: int, status: OrderStatus) -> OrderUpdate:
    return OrderUpdate("X", oid, ts, status, Side.BUY, OrderType.MARKET, 1.0, 0.0, None, "")


def test_a_fill_at_a_bar_open_belongs_to_the_step_of_the_bar_close() -> None:
    # 1m bars, 1h steps: the bar opening at 00:59 closes at 01:00 -> step 01:00;
    # the bar opening at 01:00 closes at 01:01 -> step 02:00
    ts = np.array([59 * MINUTE, H], dtype=np.int64)
    assert fill_steps(ts, MINUTE, H).tolist() == [H, 2 * H]


def test_decisions_and_cancels_at_a_boundary_belong_to_the_next_step() -> None:
    ts = np.array([H, H, H, 30 * MINUTE], dtype=np.int64)
    status = np.array(
        [OrderStatus.ACCEPTED, OrderStatus.CANCELED, OrderStatus.SUBMITTED, OrderStatus.ACCEPTED],
        dtype=np.int8,
    )
    # portfolio approval: ACCEPTED at 01:00 reaches the symbol in the step ending 02:00
    assert update_steps(ts, status, MINUTE, H, False).tolist() == [2 * H, 2 * H, H, H]
    # self-approval: an ACCEPTED happens at the signal, in its own step
    assert update_steps(ts, status, MINUTE, H, True).tolist() == [H, 2 * H, H, H]


def test_split_outbox_hands_over_early_steps_and_keeps_the_rest() -> None:
    fills = [
        Fill("X", 1, 1, 10 * MINUTE, Side.BUY, 2.0, 100.0, 0.2, Liquidity.TAKER),  # step 01:00
        Fill("X", 2, 2, 70 * MINUTE, Side.SELL, 1.0, 101.0, 0.1, Liquidity.TAKER),  # step 02:00
    ]
    updates = [
        _update(1, 10 * MINUTE, OrderStatus.FILLED),
        _update(2, 70 * MINUTE, OrderStatus.FILLED),
    ]
    ob = Outbox(
        "X",
        3 * H,
        [],
        update_batch(updates),
        fill_batch(fills, [0.0, 1.0], [2.0, 1.0]),
        np.array([H, 2 * H, 3 * H]),
        np.array([100.0, 101.0, 102.0]),
        1.0,
    )
    head, tail = split_outbox(ob, H, MINUTE, H, False, position_before=0.0)
    assert head is not None
    assert head.reached == H and head.position == 2.0 and head.intents == []
    assert head.fills.order_id.tolist() == [1] and head.updates.order_id.tolist() == [1]
    assert tail.fills.order_id.tolist() == [2] and tail.updates.order_id.tolist() == [2]
    assert tail.position == 1.0 and tail.reached == 3 * H and len(tail.mark_px) == 3
    # nothing that early: no head, the outbox untouched
    none, same = split_outbox(tail, H, MINUTE, H, False, position_before=2.0)
    assert none is None and same is tail


def test_a_head_without_fills_keeps_the_position_before() -> None:
    ob = Outbox(
        "X",
        2 * H,
        [],
        update_batch([_update(1, 0, OrderStatus.ACCEPTED)]),
        fill_batch([], [], []),
        np.empty(0, dtype=np.int64),
        np.empty(0),
        5.0,
    )
    head, tail = split_outbox(ob, H, MINUTE, H, False, position_before=3.0)
    assert head is not None and head.position == 3.0 and head.fills.size == 0
    assert tail.updates.size == 0 and tail.updates.reason == EMPTY_UPDATES.reason
