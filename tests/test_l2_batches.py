"""An order-book replay is the same however its events are split into batches.

A live session reads its books in drains of whatever arrived, and takes in what arrived
while it waits for a step boundary (``L2SymbolSim.absorb``); a replay of its recording
reads the same events in one batch. Both must give the same fills, updates and marks.
The tapes here are random but valid, with many messages sharing a timestamp (so that
batches often split between two messages of the same time), a quoting strategy that
reacts to every move and fills, and a latency of 0 (its orders are due at the very time
of the message that decided them) or a few ns.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from l2util import Tape

from tickray.engine.book import MarketEvents
from tickray.engine.events import Outbox
from tickray.engine.instruments import SymbolSpec
from tickray.engine.l2sim import L2SymbolSim
from tickray.engine.l2venue import L2Venue
from tickray.engine.latency import ConstantLatency
from tickray.engine.quoting import QuotingStrategy

SPEC = SymbolSpec("BTCUSDT", tick_size=0.1, step_size=0.001, min_qty=0.001, min_notional=1.0)
SYNC = 40


def random_tape(rng: random.Random, n: int) -> MarketEvents:
    """A snapshot, then ``n`` depth moves and trades at the best prices, 0 or 1 ns apart."""
    bid, ask = 1000, 1001  # in ticks
    t = Tape().snapshot(1, [(bid / 10, 5.0), ((bid - 1) / 10, 5.0)], [(ask / 10, 5.0)])
    ts = 1
    for _ in range(n):
        ts += rng.choice((0, 0, 1))
        r = rng.random()
        if r < 0.4:  # a trade at a best price, taking part of it
            side = rng.choice((1, -1))
            t.trade(ts, side, (ask if side == 1 else bid) / 10, rng.choice((0.5, 1.0, 3.0)))
        elif r < 0.7:  # the best prices move by a tick
            if rng.random() < 0.5 and ask - bid > 1:
                bid += 1
                t.depth(ts, (1, bid / 10, rng.choice((1.0, 2.0))))
            elif rng.random() < 0.5:
                t.depth(ts, (1, bid / 10, 0.0), (1, (bid - 1) / 10, 4.0))
                bid -= 1
            else:
                ask += rng.choice((-1, 1)) if ask - bid > 1 else 1
                t.depth(ts, (-1, ask / 10, rng.choice((1.0, 2.0))))
        else:  # the queue at the best bid changes
            t.depth(ts, (1, bid / 10, rng.choice((0.5, 3.0, 6.0))))
    return t.events()


def sim(batches: list[MarketEvents], latency: int) -> L2SymbolSim:
    venue = L2Venue(SPEC, latency=ConstantLatency(submit=latency, cancel=latency, modify=latency))
    quoting = QuotingStrategy(0.5, offset=0, max_position=2.0)
    return L2SymbolSim(venue, quoting, iter(batches), sync_ns=SYNC, t0=0, wake_ticks=1)


def chunks(ev: MarketEvents, rng: random.Random) -> list[MarketEvents]:
    """``ev`` cut after random messages (often between two of the same time)."""
    n = len(ev.ts)
    ends = [int(i) + 1 for i in np.flatnonzero(ev.end[:-1])]
    cuts = sorted(rng.sample(ends, len(ends) // 5))
    return [ev.slice(a, b) for a, b in zip([0, *cuts], [*cuts, n], strict=True)]


def replay(s: L2SymbolSim, end: int, absorb: random.Random | None = None) -> list[Outbox]:
    """Step to ``end``; with ``absorb``, take in events at random times between steps."""
    out = []
    for until in range(SYNC, end + 1, SYNC):
        while absorb is not None and absorb.random() < 0.7:
            s.absorb(until - absorb.randrange(SYNC))
        out.append(s.advance(until, []))
    return out


def same(a: list[Outbox], b: list[Outbox]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.reached == y.reached and x.position == y.position
        assert np.array_equal(x.fills.data, y.fills.data), x.reached
        assert np.array_equal(x.updates.data, y.updates.data), x.reached
        assert x.updates.reason == y.updates.reason
        assert np.array_equal(x.mark_px, y.mark_px)


@pytest.mark.parametrize("latency", [0, 3])
@pytest.mark.parametrize("seed", range(12))
def test_fills_are_the_same_however_the_events_are_batched_or_absorbed(
    seed: int, latency: int
) -> None:
    rng = random.Random(seed)
    ev = random_tape(rng, 400)
    end = int(ev.ts[-1]) + 2 * SYNC
    whole = replay(sim([ev], latency), end)
    assert sum(len(o.fills.data) for o in whole) >= 5  # the strategy trades
    parts = chunks(ev, rng)
    same(whole, replay(sim(parts, latency), end))
    same(whole, replay(sim(parts, latency), end, absorb=random.Random(seed)))
    # absorbing with the whole tape at hand (a replay has it all) changes nothing either
    same(whole, replay(sim([ev], latency), end, absorb=random.Random(seed + 100)))
