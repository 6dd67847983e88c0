"""The L2 book on real Binance recordings (../shared/data/crypto/ws_recordings/hftbacktest/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tickray.engine.book import DEPTH, L2Book
from tickray.engine.events import Liquidity
from tickray.engine.instruments import SymbolSpec
from tickray.engine.l2venue import L2Venue
from tickray.engine.quoting import QuotingStrategy
from tickray.feeds.l2events import recording_events
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
