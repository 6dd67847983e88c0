"""Building market events by hand for the L2 venue tests."""

from __future__ import annotations

import numpy as np

from tickray.engine.book import CLEAR, DEPTH, TOP, TRADE, MarketEvents


class Tape:
    """Messages appended in time order, turned into MarketEvents columns."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, float, float, int, bool]] = []
        self.uid = 0

    def snapshot(
        self, ts: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]]
    ) -> Tape:
        self.uid += 1
        self.rows.append((ts, CLEAR, 0, 0.0, 0.0, self.uid, False))
        levels = [(1, p, q) for p, q in bids] + [(-1, p, q) for p, q in asks]
        for k, (s, p, q) in enumerate(levels):
            self.rows.append((ts, DEPTH, s, p, q, self.uid, k == len(levels) - 1))
        return self

    def depth(self, ts: int, *levels: tuple[int, float, float]) -> Tape:
        self.uid += 1
        for k, (s, p, q) in enumerate(levels):
            self.rows.append((ts, DEPTH, s, p, q, self.uid, k == len(levels) - 1))
        return self

    def trade(self, ts: int, aggressor: int, price: float, qty: float) -> Tape:
        self.rows.append((ts, TRADE, aggressor, price, qty, -1, True))
        return self

    def top(self, ts: int, bid: tuple[float, float], ask: tuple[float, float]) -> Tape:
        self.uid += 1
        self.rows.append((ts, TOP, 1, bid[0], bid[1], self.uid, False))
        self.rows.append((ts, TOP, -1, ask[0], ask[1], self.uid, True))
        return self

    def events(self) -> MarketEvents:
        ts, kind, side, price, qty, uid, end = zip(*self.rows, strict=True)
        return MarketEvents(
            np.array(ts, dtype=np.int64),
            np.array(kind, dtype=np.int8),
            np.array(side, dtype=np.int8),
            np.array(price, dtype=np.float64),
            np.array(qty, dtype=np.float64),
            np.array(uid, dtype=np.int64),
            np.array(end, dtype=bool),
        )
