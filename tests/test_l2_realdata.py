"""The L2 book on real Binance recordings (../shared/data/crypto/ws_recordings/hftbacktest/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tickray.engine.book import DEPTH, ConservativeQueue, L2Book, ProbabilisticQueue
from tickray.engine.events import Liquidity, OrderType, Side
from tickray.engine.instruments import SymbolSpec
from tickray.engine.l2venue import L2Venue
from tickray.engine.orders import OrderRequest
from tickray.engine.quoting import QuotingStrategy
from tickray.feeds.l2events import recording_events, recording_span
from tickray.feeds.recordings import read_binance_recording

pytestmark = pytest.mark.realdata

FILES = [
    ("binance_spot_BTCUSDT_2024-08-08.ws.gz", 0.01),
    ("binance_spot_ETHUSDT_2024-08-08.ws.gz", 0.01),
    ("binance_usdm_BTCUSDT_2024-08-08.ws.gz", 0.1),
    ("binance_usdm_ETHUSDT_2024-08-08.ws.gz", 0.01),
    ("binance_coinm_BTCUSD_PERP_2024-08-08.ws.gz", 0.1),
]


def _path(shared_data: Path, name: str) -> Path:
    return shared_data / "crypto" / "ws_recordings" / "hftbacktest" / name


@pytest.mark.parametrize(("name", "tick"), FILES)
def test_book_from_snapshot_and_diffs_matches_the_recorded_tops(
    shared_data: Path, name: str, tick: float
) -> None:
    """After each diff, the rebuilt best bid/ask equal the bookTicker carrying the same update id."""
    rec = read_binance_recording(_path(shared_data, name))
    ev = recording_events(rec, tops=False)
    book = L2Book(tick, 0.001, tops=False)
    ticks = book.prepare(ev)
    tops = rec.tops
    by_uid = {int(u): k for k, u in enumerate(tops["update_id"].to_numpy())}
    bid_px, bid_q = tops["bid_price"].to_numpy(), tops["bid_qty"].to_numpy()
    ask_px, ask_q = tops["ask_price"].to_numpy(), tops["ask_qty"].to_numpy()
    compared = 0
    i = 0
    for e in np.flatnonzero(ev.end):
        i, _, _ = book.run(ev.slice(0, e + 1), ticks[: e + 1], i, 2**62)
        if ev.kind[e] != DEPTH:
            continue
        bb, ba = book.best_bid_tick(), book.best_ask_tick()
        assert bb is not None and ba is not None and bb < ba, f"crossed after row {e}"
        k = by_uid.get(int(ev.uid[e]))
        if k is None:
            continue
        assert (bb, ba) == (book.tick_of(bid_px[k]), book.tick_of(ask_px[k])), f"row {e}"
        assert book.level(1, bb) == pytest.approx(bid_q[k], abs=1e-12)
        assert book.level(-1, ba) == pytest.approx(ask_q[k], abs=1e-12)
        compared += 1
    assert compared > 500  # every file has hundreds of diffs whose id a bookTicker repeats
    assert book.stats.crossed_repairs == 0


@pytest.mark.parametrize(("name", "tick"), FILES[2:4])
def test_quoting_on_real_depth_keeps_the_accounts_straight(
    shared_data: Path, name: str, tick: float
) -> None:
    rec = read_binance_recording(_path(shared_data, name))
    ev = recording_events(rec)
    v = L2Venue(SymbolSpec(rec.symbol, tick_size=tick, step_size=0.001))
    strat = QuotingStrategy(0.01, max_position=0.05)
    v.attach(strat, wake_ticks=1)
    v.run(ev)
    assert strat.wakes > 100 and len(v.fills) > 100
    assert all(f.liquidity == Liquidity.MAKER for f in v.fills)
    signed = sum(f.side * f.qty for f in v.fills)
    assert v.position == pytest.approx(signed, abs=1e-9)
    assert abs(v.position) <= 0.05 + 1e-9
    # maker fills happen at the order's limit price of that moment (its fill update carries it)
    fill_updates = [u for u in v.updates if u.status.name in ("PARTIALLY_FILLED", "FILLED")]
    assert len(fill_updates) == len(v.fills)
    for f, u in zip(v.fills, fill_updates, strict=True):
        assert (f.order_id, f.ts_event, f.price) == (u.order_id, u.ts_event, u.price)
    for o in v.orders.values():
        got = sum(f.qty for f in v.fills if f.order_id == o.order_id)
        assert got == pytest.approx(o.filled, abs=1e-9) and o.filled <= o.qty + 1e-12


class _OneBid:
    """After ``delay_s``, rests one bid at the ``level``-th bid price; samples its queue."""

    def __init__(self, level: int, delay_s: int) -> None:
        self.level, self.delay = level, delay_s * 1_000_000_000
        self.oid = 0
        self.start = 0
        self.samples: list[tuple[int, float]] = []

    def on_start(self, venue: L2Venue) -> None:
        self.start = venue.now

    def on_wake(self, venue: L2Venue) -> None:
        if not self.oid:
            levels = venue.book.depth(1, self.level)
            if venue.now >= self.start + self.delay and len(levels) == self.level:
                self.oid = venue.submit(
                    OrderRequest(
                        side=Side.BUY, qty=0.05, order_type=OrderType.LIMIT, price=levels[-1][0]
                    )
                )
            return
        o = venue.orders[self.oid]
        if o.slot >= 0:
            self.samples.append((venue.now, venue.book.slot_ahead(o.slot)))


def _queue_run(
    shared_data: Path, queue: object, level: int, delay_s: int
) -> tuple[_OneBid, L2Venue]:
    rec = read_binance_recording(_path(shared_data, "binance_usdm_ETHUSDT_2024-08-08.ws.gz"))
    v = L2Venue(SymbolSpec("ETHUSDT", tick_size=0.01, step_size=0.001), queue=queue)  # type: ignore[arg-type]
    s = _OneBid(level, delay_s)
    v.attach(s, timer_ns=100_000_000, wake_ticks=1)
    v.run(recording_events(rec))
    return s, v


@pytest.mark.parametrize(("level", "delay_s"), [(2, 120), (3, 200)])
def test_queue_position_on_real_depth_only_moves_forward(
    shared_data: Path, level: int, delay_s: int
) -> None:
    """A bid waiting in a real queue: the quantity ahead never grows, it fills once at the front
    (or when the price trades through it), and cancels ahead (probabilistic) only help."""
    cons, v1 = _queue_run(shared_data, ConservativeQueue(), level, delay_s)
    prob, v2 = _queue_run(shared_data, ProbabilisticQueue(power=2.0), level, delay_s)
    for s, v in ((cons, v1), (prob, v2)):
        aheads = [a for _, a in s.samples]
        assert len(aheads) > 30 and aheads[0] > 0.5  # it really waited behind others
        assert all(b <= a + 1e-12 for a, b in zip(aheads, aheads[1:], strict=False))
        assert v.fills and v.fills[0].ts_event > s.samples[0][0]
    by_ts = dict(cons.samples)
    assert all(a <= by_ts[ts] + 1e-12 for ts, a in prob.samples if ts in by_ts)
    assert min(f.ts_event for f in v2.fills) <= min(f.ts_event for f in v1.fills)


@pytest.mark.parametrize(("name", "tick"), FILES)
def test_recording_span_is_the_span_of_its_events(
    shared_data: Path, name: str, tick: float
) -> None:
    rec = read_binance_recording(_path(shared_data, name))
    ts = recording_events(rec).ts
    assert recording_span(rec) == (int(ts[0]), int(ts[-1]))
