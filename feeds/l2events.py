"""Recorded depth, trades and book tops merged into the engine's MarketEvents, in arrival order.

The three canonical tables of a recording (:mod:`tickray.feeds.recordings`)
carry the file line of every row. Merged by line, they replay exactly the order
in which a live client received them. The synced depth starts with the REST
snapshot; diffs that arrived before the snapshot but are newer than it are
replayed right after it (at the snapshot's line). Trades and tops received
before the snapshot are dropped: there is no book to match them against yet.

``depth=False`` leaves the diffs out, for replaying a book built from tops and
trades only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tickray.engine.book import CLEAR, DEPTH, TOP, TRADE, MarketEvents
from tickray.feeds.livebook import SymbolRows
from tickray.feeds.recordings import Recording
from tickray.feeds.schemas import DataError, ts_numpy

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def _np(col: pa.ChunkedArray) -> npt.NDArray[np.generic]:
    return np.asarray(col.to_numpy(zero_copy_only=False))


def recording_events(rec: Recording, *, depth: bool = True, tops: bool = True) -> MarketEvents:
    """The recording as one MarketEvents batch (see the module doc)."""
    d = rec.depth
    snap = _np(d["is_snapshot"]).astype(bool) if d.num_rows else np.zeros(0, dtype=bool)
    if depth and not snap.any():
        raise DataError(f"{rec.source}: no depth snapshot to start the book from")
    start_line = int(rec.depth_line[np.flatnonzero(snap)[0]]) if depth else -1
    parts: list[tuple[npt.NDArray[np.int64], MarketEvents]] = []
    if depth:
        line = np.maximum(rec.depth_line.astype(np.int64), start_line)
        end = np.ones(len(line), dtype=bool)
        end[:-1] = rec.depth_line[:-1] != rec.depth_line[1:]
        uid = _np(d["last_update_id"]).astype(np.int64)
        depth_ts = ts_numpy(d["ts"])
        first = int(np.flatnonzero(snap)[0])
        clear = MarketEvents(
            np.array([depth_ts[first]], dtype=np.int64),
            np.array([CLEAR], dtype=np.int8),
            np.zeros(1, dtype=np.int8),
            np.zeros(1),
            np.zeros(1),
            np.array([uid[first]], dtype=np.int64),
            np.zeros(1, dtype=bool),
        )
        parts.append((np.array([start_line], dtype=np.int64), clear))
        rows = slice(first, None)
        parts.append(
            (
                line[rows],
                MarketEvents(
                    depth_ts[rows],
                    np.full(len(line) - first, DEPTH, dtype=np.int8),
                    _np(d["side"]).astype(np.int8)[rows],
                    _np(d["price"]).astype(np.float64)[rows],
                    _np(d["qty"]).astype(np.float64)[rows],
                    uid[rows],
                    end[rows],
                ),
            )
        )
    parts.append(_trade_part(rec, rec.trades_line > start_line))
    if tops:
        parts.append(_top_part(rec, rec.tops_line > start_line))
    ev = _merged(parts)
    ts = ev.ts
    if len(ts) and (np.diff(ts) < 0).any():
        ts = np.maximum.accumulate(ts)  # pre-snapshot diffs replayed at the snapshot
        ev = ev._replace(ts=ts)
    return ev


def continued_rows_events(rows: SymbolRows, *, tops: bool = True) -> MarketEvents:
    """The events of a live book's later drains (its first drain, with the snapshot, goes
    through :func:`recording_events`), straight from the compact rows
    (:meth:`~tickray.feeds.livebook.LiveSymbol.drain_rows`): every depth row (a resync's
    snapshot rows carry the deletions that make "set level" rebuild the book, so no
    clear), trades and tops, merged by line (the session's ``seq``) exactly as
    :func:`recording_events` merges a whole recording; an empty batch when nothing came.

    No tables are built on the way (a live session takes in a drain every few tens of
    ms): the rows come from the session's own parsers and book, which already checked
    what the tables' schemas would (finite prices and quantities, receive times that
    never go back). The tests check it against the same merge of the drain's tables."""
    parts: list[Part] = []
    d = rows.depth
    per_msg = d.counts.sum(axis=1)
    if per_msg.any():
        parts.append(
            _depth_part(
                np.repeat(d.head[:, 0], per_msg),
                np.repeat(d.head[:, 1], per_msg),
                np.repeat(np.tile(np.array([1, -1], dtype=np.int8), len(d.head)), d.counts.ravel()),
                d.levels[0::2].copy(),
                d.levels[1::2].copy(),
                np.repeat(d.head[:, 3], per_msg),
            )
        )
    t_line, t_ts, t_id, t_price, t_qty, t_maker = rows.trades
    if t_line:
        parts.append(
            _trade_events(
                np.array(t_line, dtype=np.int64),
                np.array(t_ts, dtype=np.int64),
                np.array(t_id, dtype=np.int64),
                np.array(t_price, dtype=np.float64),
                np.array(t_qty, dtype=np.float64),
                np.array(t_maker, dtype=bool),
            )
        )
    p_line, p_ts, p_uid, p_bid, p_bq, p_ask, p_aq = rows.tops
    if tops and p_line:
        parts.append(
            _top_events(
                np.array(p_line, dtype=np.int64),
                np.array(p_ts, dtype=np.int64),
                np.array([-1 if u is None else u for u in p_uid], dtype=np.int64),
                *(np.array(c, dtype=np.float64) for c in (p_bid, p_bq, p_ask, p_aq)),
            )
        )
    return _merged(parts) if parts else _EMPTY


_EMPTY = MarketEvents(
    np.empty(0, dtype=np.int64),
    np.empty(0, dtype=np.int8),
    np.empty(0, dtype=np.int8),
    np.empty(0),
    np.empty(0),
    np.empty(0, dtype=np.int64),
    np.empty(0, dtype=bool),
)

Part = tuple[npt.NDArray[np.int64], MarketEvents]


def _depth_part(
    line: I64, ts: I64, side: npt.NDArray[np.int8], price: F64, qty: F64, uid: I64
) -> Part:
    """Depth rows by line; a message's last row (the last of its line) ends it."""
    end = np.ones(len(line), dtype=bool)
    end[:-1] = line[:-1] != line[1:]
    return line, MarketEvents(
        ts, np.full(len(line), DEPTH, dtype=np.int8), side, price, qty, uid, end
    )


def _trade_part(rec: Recording, keep: npt.NDArray[np.bool_]) -> Part:
    """The ``keep`` rows of the trades, by line."""
    tr = rec.trades
    return _trade_events(
        rec.trades_line[keep].astype(np.int64),
        ts_numpy(tr["ts"])[keep],
        _np(tr["trade_id"]).astype(np.int64)[keep],
        _np(tr["price"]).astype(np.float64)[keep],
        _np(tr["qty"]).astype(np.float64)[keep],
        _np(tr["is_buyer_maker"]).astype(bool)[keep],
    )


def _trade_events(
    line: I64, ts: I64, trade_id: I64, price: F64, qty: F64, buyer_maker: npt.NDArray[np.bool_]
) -> Part:
    """Trades by line, one row each (the aggressor sells when the buyer made the price)."""
    n = len(line)
    side = np.where(buyer_maker, -1, 1).astype(np.int8)
    ones = np.ones(n, dtype=bool)
    return line, MarketEvents(
        ts, np.full(n, TRADE, dtype=np.int8), side, price, qty, trade_id, ones
    )


def _top_part(rec: Recording, keep: npt.NDArray[np.bool_]) -> Part:
    """The ``keep`` book tops, by line."""
    tp = rec.tops
    ids = _np(tp["update_id"])[keep]
    return _top_events(
        rec.tops_line[keep].astype(np.int64),
        ts_numpy(tp["ts"])[keep],
        np.where(np.isnan(ids.astype(np.float64)), -1, ids).astype(np.int64),
        *(
            _np(tp[c]).astype(np.float64)[keep]
            for c in ("bid_price", "bid_qty", "ask_price", "ask_qty")
        ),
    )


def _top_events(
    line: I64, ts: I64, uid: I64, bid: F64, bid_qty: F64, ask: F64, ask_qty: F64
) -> Part:
    """Book tops by line, two rows each (bid, then ask ending the message)."""
    n = len(line)
    price = np.empty(2 * n)
    qty = np.empty(2 * n)
    price[0::2], price[1::2] = bid, ask
    qty[0::2], qty[1::2] = bid_qty, ask_qty
    return (
        np.repeat(line, 2),
        MarketEvents(
            np.repeat(ts, 2),
            np.full(2 * n, TOP, dtype=np.int8),
            np.tile(np.array([1, -1], dtype=np.int8), n),
            price,
            qty,
            np.repeat(uid, 2),
            np.tile(np.array([False, True]), n),
        ),
    )


def _merged(parts: list[Part]) -> MarketEvents:
    """The parts in line order; within a line, in part order, then row order."""
    lines = np.concatenate([p[0] for p in parts])
    group = np.concatenate([np.full(len(p[0]), k, dtype=np.int64) for k, p in enumerate(parts)])
    within = np.concatenate([np.arange(len(p[0]), dtype=np.int64) for p in parts])
    order = np.lexsort((within, group, lines))
    cols = [np.concatenate([getattr(p[1], f) for p in parts])[order] for f in MarketEvents._fields]
    return MarketEvents(*cols)


def recording_span(rec: Recording) -> tuple[int, int]:
    """First and last ``ts`` of ``recording_events(rec)``, without merging the streams:
    the snapshot, and the latest row received after it."""
    start_line = int(rec.depth_line[np.flatnonzero(_np(rec.depth["is_snapshot"]).astype(bool))[0]])
    last = rec.snapshot_ts
    for table, line in (
        (rec.depth, rec.depth_line),
        (rec.trades, rec.trades_line),
        (rec.tops, rec.tops_line),
    ):
        if table.num_rows and int(line[-1]) >= start_line:
            last = max(last, int(ts_numpy(table["ts"])[-1]))
    return rec.snapshot_ts, last


def infer_grid(rec: Recording) -> tuple[float, float]:
    """The tick and lot sizes the recording's snapshot shows: the smallest gap between
    its distinct prices, and between its distinct quantities (to six significant digits)."""
    d = rec.depth
    snap = _np(d["is_snapshot"]).astype(bool)
    prices = np.unique(_np(d["price"]).astype(np.float64)[snap])
    qtys = np.unique(_np(d["qty"]).astype(np.float64)[snap])
    if len(prices) < 2 or len(qtys) < 2:
        raise DataError(f"{rec.source}: the snapshot is too small to infer tick and lot sizes")
    # the gaps of decimal prices held as floats are off in the last digits
    # (0.099999999999 for a 0.1 tick): six significant digits give the decimal back
    tick = float(f"{np.diff(prices).min():.6g}")
    lot = float(f"{np.diff(qtys).min():.6g}")
    return tick, lot
