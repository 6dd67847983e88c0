"""Local order books kept in sync with Binance's depth diff streams, and the live feed that
drives them from a :class:`~tickray.feeds.ws.BinanceWs`.

The sync procedure is Binance's "How to manage a local order book correctly", per symbol:

1. Buffer the diffs of ``<symbol>@depth[@speed]`` from the first one received.
2. Fetch a REST snapshot (``GET /api/v3/depth`` spot, ``/fapi/v1/depth`` USD-M) through an
   injected async callable (:data:`SnapshotFetcher`; :func:`rest_snapshot_fetcher` wraps
   :class:`~tickray.feeds.rest.BinanceRest`).
3. A snapshot older than the whole buffer (spot ``lastUpdateId + 1 < U``, futures
   ``lastUpdateId < U`` of the first buffered diff) is useless: fetch another
   (``stats.stale_snapshots``).
4. Drop the buffered diffs the snapshot already holds (spot ``u <= lastUpdateId``, futures
   ``u < lastUpdateId``); the first diff kept must bracket it (spot
   ``U <= lastUpdateId + 1 <= u``, futures ``U <= lastUpdateId <= u``); then every diff must
   continue the chain (spot ``U == previous u + 1``, futures ``pu == previous u``). Steps 3-4 on
   the buffer are :func:`tickray.feeds.recordings._sync`, the code that reads recorded files.
5. A diff whose ``u`` is not above the last one seen (a duplicate or a late, out-of-order
   message) holds nothing new: it is dropped and counted (``stats.stale_diffs``), never applied.
6. Any other break is a gap: the book is marked unsynced (its tops read None), the diff is
   buffered and a new snapshot is fetched (a resync). Every gap and every (re)sync is counted
   with its receive time in :class:`LiveBookStats`; ``LiveBook.gaps`` describes each gap.

The book is two ``price -> qty`` dicts with the best prices cached (recomputed only after the
best level is deleted). The levels of applied diffs are written into the dicts when the book
is next read (or a listener is called, or a resync needs the old book, or 1024 diffs are
pending), many diffs at once with numpy, with exactly the outcome of applying them one by one
(levels, quantities and the dicts' order): at 50k messages/s the level-by-level loop was the
largest cost of a depth diff. Every applied message is also kept, until :meth:`LiveBook.drain`, as
canonical DEPTH_UPDATES rows (:mod:`tickray.feeds.schemas`), exactly the rows and ``*_line``
numbering of :class:`~tickray.feeds.recordings.Recording`, with ``line`` = the message's
session ``seq`` (:mod:`tickray.feeds.ws`):

- a sync gives ``is_snapshot`` rows (the snapshot's bids then asks, as sent, ids
  ``first = last = lastUpdateId``, ``prev_last_update_id`` null), followed by the buffered diffs
  it applies at the snapshot's receive time (``ts = max(own receive time, snapshot's)``);
- a *resync* snapshot also carries a qty-0 row for every level of the old book that the new
  snapshot lacks, so a consumer that applies rows as "set level" (engine/book.py L2Book via
  :func:`tickray.feeds.l2events.recording_events`) ends with exactly the new book; and the
  buffered diffs it applies take the snapshot's line, so that merging by line replays them
  after it. (At the *first* sync they keep their own line, as
  :func:`~tickray.feeds.recordings.read_binance_recording` does; ``recording_events`` lifts
  those to the snapshot's line itself.)

All times are int64 ns since the epoch, UTC (local receive times).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from tickray.feeds.recordings import _Diff, _parse_snapshot, _Snapshot, _sync
from tickray.feeds.rest import BinanceRest, parse_depth, request_weight
from tickray.feeds.schemas import TS_TYPE, DataError, conform
from tickray.feeds.ws import (
    DEPTH_SPEEDS,
    BinanceWs,
    DepthDiff,
    Kline,
    Levels,
    Market,
    MarkPrice,
    MessageDecoder,
    StreamKind,
    Top,
    Trade,
    WsMessage,
    backoff_delay,
    depth_stream,
    parse_levels,
    stream_kind,
)

Int64Array = npt.NDArray[np.int64]
#: ``await fetch(symbol)`` -> Binance's depth snapshot payload, as decoded from its JSON:
#: ``{"lastUpdateId": int, "bids": [[price, qty], ...], "asks": [...]}`` (+ ``E``/``T`` USD-M).
SnapshotFetcher = Callable[[str], Awaitable[Mapping[str, Any]]]
#: Called with the book after each (re)sync (``True``) and each applied diff (``False``).
BookListener = Callable[["LiveBook", bool], None]

_UNSYNCED, _AWAIT_FIRST, _SYNCED = range(3)
# One applied message, as kept for drain(): line, ts, U, u, pu, bids, asks, is_snapshot
# (bids/asks flat [price, qty, ...]: float64 arrays from the decoder, lists from snapshots).
_Msg = tuple[int, int, int, int, int | None, Levels, Levels, bool]


@dataclass
class LiveBookStats:
    """What happened to one book. ``syncs`` counts applied snapshots (the first sync and every
    resync), ``resyncs`` those after the first; ``gaps`` counts sequence breaks (each leads to
    a resync). ``stale_diffs`` counts diffs dropped because the book (or the snapshot) already
    held them; ``stale_snapshots`` snapshots older than the buffered diffs; ``bad_snapshots``
    and ``fetch_errors`` snapshots that failed validation or could not be fetched. Times are
    receive times in ns; ``log`` keeps the last 1000 descriptions."""

    snapshots: int = 0
    syncs: int = 0
    resyncs: int = 0
    gaps: int = 0
    stale_diffs: int = 0
    stale_snapshots: int = 0
    bad_snapshots: int = 0
    unused_snapshots: int = 0
    fetch_errors: int = 0
    diffs_applied: int = 0
    buffer_overflows: int = 0
    sync_times_ns: list[int] = field(default_factory=list)
    gap_times_ns: list[int] = field(default_factory=list)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=1000))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        out |= {
            "sync_times_ns": list(self.sync_times_ns),
            "gap_times_ns": list(self.gap_times_ns),
            "log": list(self.log),
        }
        return out


class LiveBook:
    """One symbol's local L2 book, synced from depth diffs and REST snapshots (module doc).

    Feed it :meth:`on_diff` for every diff and :meth:`on_snapshot` for every snapshot, in
    the order they were received; :attr:`wants_snapshot` says when a snapshot is needed.
    ``max_buffer`` bounds the diffs held while unsynced (the oldest are dropped first).
    ``emit=False`` keeps no rows for :meth:`drain`. ``listener`` (see :data:`BookListener`).
    """

    def __init__(
        self,
        symbol: str,
        market: Market,
        *,
        max_buffer: int = 10_000,
        emit: bool = True,
        listener: BookListener | None = None,
    ) -> None:
        self.symbol = symbol.upper()
        self.market: Market = market
        self.futures = market != "spot"
        self.source = f"binance {market} depth {self.symbol}"
        self.max_buffer = max_buffer
        self.emit = emit
        self.listener = listener
        self.stats = LiveBookStats()
        #: Gap descriptions, in order (the ``gaps`` of a replayed Recording).
        self.gaps: list[str] = []
        #: Receive time of the first applied snapshot (None before).
        self.first_snapshot_ts: int | None = None
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._bb: float | None = None  # cached best bid; None: recompute
        self._ba: float | None = None
        # Levels of diffs applied to the book but not yet written into the dicts (module doc:
        # "the book is settled when read"): one flat [price, qty, ...] list per diff and side.
        self._pend_b: list[Levels] = []
        self._pend_a: list[Levels] = []
        self._state = _UNSYNCED
        self._buffer: deque[_Diff] = deque()
        self._seen_u = -1  # highest u buffered since the last gap
        self._snap: _Snapshot | None = None
        self._prev_u = -1
        self._last_ts = -(1 << 63)
        self._msgs: list[_Msg] = []

    # -- reading the book -----------------------------------------------------------------------

    @property
    def bids(self) -> dict[float, float]:
        """The bid levels, ``price -> qty`` (read it, do not change it)."""
        if self._pend_b:
            self._settle()
        return self._bids

    @property
    def asks(self) -> dict[float, float]:
        """The ask levels, ``price -> qty`` (read it, do not change it)."""
        if self._pend_b:
            self._settle()
        return self._asks

    @property
    def synced(self) -> bool:
        """True when the book is exact as of :attr:`last_update_id`."""
        return self._state != _UNSYNCED

    @property
    def wants_snapshot(self) -> bool:
        """True when unsynced with diffs buffered (Binance: buffer first, then fetch)."""
        return self._state == _UNSYNCED and bool(self._buffer)

    @property
    def last_update_id(self) -> int | None:
        """Update id the book is exact at (None while unsynced)."""
        if self._state == _UNSYNCED:
            return None
        if self._state == _AWAIT_FIRST:
            assert self._snap is not None
            snap_id: int = self._snap.last_update_id
            return snap_id
        return self._prev_u

    def best_bid(self) -> tuple[float, float] | None:
        """(price, qty) of the best bid; None while unsynced or empty."""
        if self._state == _UNSYNCED or not self.bids:
            return None
        bb = self._bb
        if bb is None:
            bb = self._bb = max(self._bids)
        return bb, self._bids[bb]

    def best_ask(self) -> tuple[float, float] | None:
        """(price, qty) of the best ask; None while unsynced or empty."""
        if self._state == _UNSYNCED or not self.asks:
            return None
        ba = self._ba
        if ba is None:
            ba = self._ba = min(self._asks)
        return ba, self._asks[ba]

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best ``n`` bid and ask levels, best first, as (price, qty); empty while unsynced."""
        if self._state == _UNSYNCED:
            return [], []
        bids, asks = self.bids, self.asks
        return (
            [(p, bids[p]) for p in heapq.nlargest(n, bids)],
            [(p, asks[p]) for p in heapq.nsmallest(n, asks)],
        )

    # -- feeding it -----------------------------------------------------------------------------

    def on_diff(self, recv_ns: int, seq: int, diff: DepthDiff) -> None:
        """One depth diff received at ``recv_ns`` as session message ``seq``."""
        if self._state == _SYNCED:
            # hot path: the chain check and the level updates, nothing else
            prev = self._prev_u
            u = diff.last_id
            if u <= prev:
                self.stats.stale_diffs += 1
                return
            if (diff.prev_id != prev) if self.futures else (diff.first_id != prev + 1):
                if self.futures:
                    text = (
                        f"line {seq + 1}: depth sequence gap: pu={diff.prev_id} but the previous "
                        f"diff had u={prev} (this diff U={diff.first_id}, u={u})"
                    )
                else:
                    text = (
                        f"line {seq + 1}: depth sequence gap: U={diff.first_id} but the previous "
                        f"diff had u={prev}, so U should be {prev + 1} (this diff u={u})"
                    )
                self._gap(recv_ns, text, self._as_diff(recv_ns, seq, diff))
                return
            ts = recv_ns if recv_ns > self._last_ts else self._last_ts
            pend = self._pend_b
            pend.append(diff.bids)
            self._pend_a.append(diff.asks)
            self._prev_u = u
            self.stats.diffs_applied += 1
            if self.emit:
                self._last_ts = ts
                self._msgs.append(
                    (seq, ts, diff.first_id, u, diff.prev_id, diff.bids, diff.asks, False)
                )
            if self.listener is not None:
                self._settle()
                self.listener(self, False)
            elif len(pend) >= _SETTLE_AT:
                self._settle()
            return
        d = self._as_diff(recv_ns, seq, diff)
        if diff.last_id <= self._seen_u:
            self.stats.stale_diffs += 1  # late or repeated: a diff seen already covers it
            return
        self._seen_u = diff.last_id
        if self._state == _AWAIT_FIRST:
            assert self._snap is not None
            self._first_after_snapshot(d, self._snap)
            return
        if len(self._buffer) >= self.max_buffer:
            self._buffer.popleft()
            self.stats.buffer_overflows += 1
        self._buffer.append(d)

    def on_snapshot(self, recv_ns: int, seq: int, payload: Mapping[str, Any]) -> bool:
        """A REST depth snapshot received at ``recv_ns`` as session message ``seq``.

        Returns True if the book synced from it (possibly hitting a gap again in the buffered
        diffs right after). A snapshot that fails validation, is older than the buffered diffs,
        or cannot be joined to them is counted and logged, and :attr:`wants_snapshot` stays
        true. Never raises for bad data, so that a replay meets the same outcome as live.
        """
        self.stats.snapshots += 1
        try:
            snap = _parse_snapshot(seq, recv_ns, dict(payload), self.source)
            where = f"{self.source} snapshot (message {seq})"
            bids = parse_levels(snap.bids, f"{where}: field 'bids'")
            asks = parse_levels(snap.asks, f"{where}: field 'asks'")
        except DataError as exc:
            self.stats.bad_snapshots += 1
            self.stats.log.append(f"{recv_ns}: bad snapshot: {exc}")
            return False
        if self._state != _UNSYNCED:
            self.stats.unused_snapshots += 1
            self.stats.log.append(f"{recv_ns}: snapshot {snap.last_update_id} while synced: unused")
            return False
        last_id = snap.last_update_id
        target = last_id if self.futures else last_id + 1  # the update the first diff must hold
        buf = list(self._buffer)
        if buf and buf[0][2] > target:
            self.stats.stale_snapshots += 1
            self.stats.log.append(
                f"{recv_ns}: snapshot lastUpdateId {last_id} is older than the first buffered "
                f"diff (U={buf[0][2]}): fetching another"
            )
            return False
        kept, gaps = _sync(buf, snap, self.futures, self.source, False)
        if gaps and not kept:  # updates right after the snapshot are missing from the buffer
            self._gap(recv_ns, _gap_text(gaps[0]), None)
            self._rebuffer([d for d in buf if d[3] >= target])
            self.stats.stale_diffs += len(buf) - len(self._buffer)
            return False
        self.stats.stale_diffs += sum(1 for d in buf if d[3] < target)
        first_sync = self.first_snapshot_ts is None
        self._load_snapshot(recv_ns, seq, last_id, bids, asks)
        for d in kept:
            line = d[0] if first_sync else seq
            self._apply_buffered(d, recv_ns, line)
        self._buffer = deque()
        if gaps:  # synced, but the buffered diffs break further on: unsynced again
            self._prev_u = kept[-1][3]
            self._state = _SYNCED
            self._gap(recv_ns, _gap_text(gaps[0]), None)
            self._rebuffer(buf[buf.index(kept[-1]) + 1 :])
            return True
        if kept:
            self._prev_u = kept[-1][3]
            self._state = _SYNCED
        else:
            self._snap = snap
            self._state = _AWAIT_FIRST
        if self.listener is not None:
            self.listener(self, True)
        return True

    def drain(self) -> tuple[pa.Table, Int64Array]:
        """The DEPTH_UPDATES rows of the messages applied since the last drain, and their lines."""
        return depth_table(self.drain_rows(), self.source)

    def drain_rows(self) -> DepthRows:
        """The messages applied since the last drain, compact (:class:`DepthRows`)."""
        msgs, self._msgs = self._msgs, []
        return compact_depth(msgs)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _as_diff(recv_ns: int, seq: int, diff: DepthDiff) -> _Diff:
        # buffered diffs (while unsynced) go through recordings._sync, which takes lists
        bids, asks = diff.bids, diff.asks
        return (
            seq,
            recv_ns,
            diff.first_id,
            diff.last_id,
            diff.prev_id,
            bids if isinstance(bids, list) else bids.tolist(),
            asks if isinstance(asks, list) else asks.tolist(),
        )

    def _gap(self, recv_ns: int, text: str, diff: _Diff | None) -> None:
        self.stats.gaps += 1
        self.stats.gap_times_ns.append(recv_ns)
        self.stats.log.append(f"{recv_ns}: gap: {text}")
        self.gaps.append(text)
        self._state = _UNSYNCED
        self._snap = None
        self._buffer = deque([diff] if diff is not None else [])
        self._seen_u = diff[3] if diff is not None else self._prev_u

    def _rebuffer(self, diffs: list[_Diff]) -> None:
        self._buffer = deque(diffs)
        if diffs:
            self._seen_u = max(d[3] for d in diffs)

    def _first_after_snapshot(self, d: _Diff, snap: _Snapshot) -> None:
        kept, gaps = _sync([d], snap, self.futures, self.source, False)
        if gaps:
            self._gap(d[1], _gap_text(gaps[0]), d)
        elif kept:
            self._state = _SYNCED
            self._snap = None
            self._apply_buffered(d, d[1], d[0])
        else:
            self.stats.stale_diffs += 1

    def _apply_buffered(self, d: _Diff, not_before: int, line: int) -> None:
        line_, ts, first, last, prev, bids, asks = d
        ts = max(ts, not_before, self._last_ts)
        self._pend_b.append(bids)
        self._pend_a.append(asks)
        self._prev_u = last
        self.stats.diffs_applied += 1
        if self.emit:
            self._last_ts = ts
            self._msgs.append((line, ts, first, last, prev, bids, asks, False))
        if self.listener is not None and self._state == _SYNCED:
            self._settle()
            self.listener(self, False)
        elif len(self._pend_b) >= _SETTLE_AT:
            self._settle()

    def _load_snapshot(
        self, recv_ns: int, seq: int, last_id: int, bids: list[float], asks: list[float]
    ) -> None:
        it = iter(bids)
        new_bids = {p: q for p, q in zip(it, it, strict=True) if q}
        it = iter(asks)
        new_asks = {p: q for p, q in zip(it, it, strict=True) if q}
        if self.first_snapshot_ts is not None:  # a resync: delete what the new book lacks
            bids = bids + [x for p in self.bids if p not in new_bids for x in (p, 0.0)]
            asks = asks + [x for p in self.asks if p not in new_asks for x in (p, 0.0)]
            self.stats.resyncs += 1
        else:
            self.first_snapshot_ts = recv_ns
        self._bids, self._asks = new_bids, new_asks
        self._bb = self._ba = None
        self._prev_u = last_id
        self.stats.syncs += 1
        self.stats.sync_times_ns.append(recv_ns)
        self.stats.log.append(f"{recv_ns}: synced at lastUpdateId {last_id}")
        ts = max(recv_ns, self._last_ts)
        if self.emit:
            self._last_ts = ts
            self._msgs.append((seq, ts, last_id, last_id, None, bids, asks, True))

    def _settle(self) -> None:
        """Write the pending diffs' levels into the dicts, exactly as applying them one by one
        in order would (same levels, same quantities, same dict order)."""
        pb, pa_ = self._pend_b, self._pend_a
        if not pb:
            return
        self._pend_b, self._pend_a = [], []
        if len(pb) < _VECTOR_FROM or any(len(x) & 1 for x in chain(pb, pa_)):
            for bids, asks in zip(pb, pa_, strict=True):
                self._apply(bids, asks)
            return
        self._bb = _settle_side(self._bids, pb, self._bb, True)
        self._ba = _settle_side(self._asks, pa_, self._ba, False)

    def _apply(self, bids: Levels, asks: Levels) -> None:
        # One diff, level by level: one plain loop per side, with the best price kept up to
        # date (a new better level becomes the best; deleting the best forgets it, and it is
        # recomputed when next asked for). The reference for _settle_side.
        if not isinstance(bids, list):
            bids = bids.tolist()  # Python floats, not numpy scalars, as the dicts' keys
        if not isinstance(asks, list):
            asks = asks.tolist()
        book = self._bids
        best = self._bb
        it = iter(bids)
        for p, q in zip(it, it, strict=False):
            if q:
                book[p] = q
                if best is not None and p > best:
                    best = p
            elif book.pop(p, None) is not None and p == best:
                best = None
        self._bb = best
        book = self._asks
        best = self._ba
        it = iter(asks)
        for p, q in zip(it, it, strict=False):
            if q:
                book[p] = q
                if best is not None and p < best:
                    best = p
            elif book.pop(p, None) is not None and p == best:
                best = None
        self._ba = best


#: Pending diffs that make the book settle by itself (bounds what they hold on to).
_SETTLE_AT = 1024
#: From this many pending diffs on, a settle is vectorised (_settle_side); below, a loop.
_VECTOR_FROM = 8


def _settle_side(
    book: dict[float, float], levels: list[Levels], best: float | None, bids: bool
) -> float | None:
    """Apply many diffs' levels of one side (flat ``[price, qty, ...]`` lists, in order) to
    ``book`` at once; returns the new cached best price (None: recompute).

    Applying them one by one, a level's last update decides its quantity (qty 0: gone), and
    a price goes to the end of the dict's order when it is inserted while absent: at its
    first update, or at the first one after its last deletion. Here the updates are grouped
    by price (in their order within each group), each group's last quantity is its outcome,
    the prices deleted in the batch are popped, and the ones set are written in the order
    of those insertion points, so that the dict ends exactly as the loop leaves it (its
    order matters: a resync lists the levels it removes in it). The per-level work is numpy;
    Python touches each distinct price once.
    """
    vals = np.concatenate(levels, dtype=np.float64)
    if not len(vals):
        return best
    # grouped by price: a hash of the prices numbers them in order of first appearance,
    # and a stable sort of those numbers (a radix sort while they fit 16 bits) gathers
    # each price's updates in order; sorting the prices themselves cost 3x more
    codes = pd.factorize(vals[0::2])[0]
    order = np.argsort(codes.astype(np.int16) if len(codes) < 32768 else codes, kind="stable")
    ps = vals[0::2][order]
    qs = vals[1::2][order]
    m = len(ps)
    cs = codes[order]
    head = np.empty(m, dtype=np.bool_)
    head[0] = True
    np.not_equal(cs[1:], cs[:-1], out=head[1:])
    start = np.flatnonzero(head)
    last = np.empty_like(start)
    last[:-1] = start[1:] - 1
    last[-1] = m - 1
    final = qs[last]
    last_del = np.maximum.reduceat(np.where(qs == 0.0, np.arange(m), -1), start)
    kept = final != 0.0
    for p in ps[start[(last_del >= 0) | ~kept]].tolist():
        book.pop(p, None)
    at = np.where(last_del >= 0, last_del + 1, start)[kept]
    by_time = np.argsort(order[at])
    prices = ps[at][by_time]
    book.update(zip(prices.tolist(), final[kept][by_time].tolist(), strict=True))
    if best is not None:
        if best not in book:
            return None
        if len(prices):
            top = float(prices.max()) if bids else float(prices.min())
            return max(best, top) if bids else min(best, top)
    return best


def _gap_text(text: str) -> str:
    return text.removesuffix("; depth rows stop here")


class DepthRows(NamedTuple):
    """Applied depth messages in a compact form, one entry per message and no per-row
    repeats: what a feed in another process hands over (:meth:`LiveBook.drain_rows`), a
    third of the bytes of the DEPTH_UPDATES rows it stands for (:func:`depth_table`)."""

    #: (n, 4) int64: line (session ``seq``), ts, first and last update id of each message.
    head: Int64Array
    #: (n,) int64: ``pu`` where ``has_prev``, else 0 (a spot diff or a snapshot has none).
    prev: Int64Array
    has_prev: npt.NDArray[np.bool_]
    is_snapshot: npt.NDArray[np.bool_]
    #: (n, 2) int64: the bid and ask levels of each message.
    counts: Int64Array
    #: float64 ``[price, qty, ...]``: each message's bids, then its asks, in message order.
    levels: npt.NDArray[np.float64]


def compact_depth(msgs: list[_Msg]) -> DepthRows:
    """Applied messages (as :class:`LiveBook` keeps them) -> :class:`DepthRows`."""
    n = len(msgs)
    sides: list[Levels] = [x for m in msgs for x in (m[5], m[6])]
    sizes = np.fromiter(map(len, sides), dtype=np.int64, count=2 * n)
    if (sizes & 1).any():  # by hand only: a trailing lone price is not a level
        sides = [x[: len(x) - (len(x) & 1)] for x in sides]
    levels = np.concatenate(sides, dtype=np.float64) if n else np.empty(0, dtype=np.float64)
    prev = [m[4] for m in msgs]
    return DepthRows(
        np.array([m[:4] for m in msgs], dtype=np.int64).reshape(n, 4),
        np.array([0 if p is None else p for p in prev], dtype=np.int64),
        np.array([p is not None for p in prev], dtype=np.bool_),
        np.array([m[7] for m in msgs], dtype=np.bool_),
        (sizes // 2).reshape(n, 2),
        levels,
    )


def depth_table(rows: DepthRows, source: str) -> tuple[pa.Table, Int64Array]:
    """:class:`DepthRows` -> (DEPTH_UPDATES table, line of each row), vectorised."""
    n = len(rows.head)
    per_msg = rows.counts.sum(axis=1)
    pq = rows.levels.reshape(-1, 2).T.copy()  # price row, qty row (contiguous for Arrow)
    side = np.repeat(np.tile(np.array([1, -1], dtype=np.int8), n), rows.counts.reshape(-1))
    # line, ts, U, u: one row per message, repeated for its levels (np.repeat on each column;
    # gathering rows of the transposed array was the slowest step)
    lines, ts, first, last = (np.repeat(rows.head[:, k], per_msg) for k in range(4))
    prev = pa.array(
        np.repeat(rows.prev, per_msg), type=pa.int64(), mask=np.repeat(~rows.has_prev, per_msg)
    )
    table = pa.table(
        {
            "ts": pa.array(ts, type=TS_TYPE),
            "first_update_id": first,
            "last_update_id": last,
            "prev_last_update_id": prev,
            "side": side,
            "price": pq[0],
            "qty": pq[1],
            "is_snapshot": np.repeat(rows.is_snapshot, per_msg),
        }
    )
    return conform(table, "depth_updates", source), lines


# ---------------------------------------------------------------------------------------------
# one symbol's streams


class SymbolBatch(NamedTuple):
    """One symbol's rows since the last drain, in the canonical schemas, with each row's
    session ``seq`` (``*_line``). ``trades`` come from ``@trade`` (trade_id = t) and
    ``agg_trades`` from ``@aggTrade`` (trade_id = a). ``marks`` is a FUNDING table of the
    ``markPrice`` stream (``ts`` = receive time; ``funding_rate`` is Binance's current
    estimate, not a settlement). ``bars`` holds, per interval, the closed klines (BARS,
    ``ts`` = open time)."""

    depth: pa.Table
    depth_line: Int64Array
    trades: pa.Table
    trades_line: Int64Array
    agg_trades: pa.Table
    agg_trades_line: Int64Array
    tops: pa.Table
    tops_line: Int64Array
    marks: pa.Table
    bars: dict[str, pa.Table]


Handler = Callable[[int, int, Any], None]


class LiveSymbol:
    """One symbol's live state: its :class:`LiveBook` and its trades, tops, marks and bars
    since the last :meth:`drain`. :meth:`handler` gives the ``(recv_ns, seq, event)``
    callable for each stream kind; the live feed and the recording reader both use them."""

    def __init__(
        self,
        symbol: str,
        market: Market,
        *,
        max_buffer: int = 10_000,
        emit: bool = True,
        listener: BookListener | None = None,
    ) -> None:
        self.symbol = symbol.upper()
        self.market: Market = market
        self.book = LiveBook(symbol, market, max_buffer=max_buffer, emit=emit, listener=listener)
        self._trades: tuple[list[Any], ...] = tuple([] for _ in range(6))
        self._aggs: tuple[list[Any], ...] = tuple([] for _ in range(6))
        self._tops: tuple[list[Any], ...] = tuple([] for _ in range(7))
        self._marks: tuple[list[Any], ...] = tuple([] for _ in range(4))
        self._bars: dict[str, list[Kline]] = {}
        self._last_bar: dict[str, int] = {}

    def handler(self, kind: StreamKind) -> Handler:
        """The ``(recv_ns, seq, event)`` callable for a stream of ``kind``."""
        if kind is StreamKind.DEPTH:
            return self.book.on_diff
        if kind is StreamKind.TRADE:
            return self._trade_handler(self._trades)
        if kind is StreamKind.AGG_TRADE:
            return self._trade_handler(self._aggs)
        if kind is StreamKind.BOOK_TICKER:
            return self._top_handler()
        if kind is StreamKind.MARK_PRICE:
            return self._on_mark
        return self._on_kline

    @staticmethod
    def _trade_handler(cols: tuple[list[Any], ...]) -> Handler:
        a_line, a_ts, a_id, a_p, a_q, a_m = (c.append for c in cols)

        def on_trade(recv_ns: int, seq: int, t: Trade) -> None:
            a_line(seq)
            a_ts(recv_ns)
            a_id(t.trade_id)
            a_p(t.price)
            a_q(t.qty)
            a_m(t.is_buyer_maker)

        return on_trade

    def _top_handler(self) -> Handler:
        a_line, a_ts, a_u, a_b, a_bq, a_a, a_aq = (c.append for c in self._tops)

        def on_top(recv_ns: int, seq: int, t: Top) -> None:
            a_line(seq)
            a_ts(recv_ns)
            a_u(t.update_id)
            a_b(t.bid_price)
            a_bq(t.bid_qty)
            a_a(t.ask_price)
            a_aq(t.ask_qty)

        return on_top

    def _on_mark(self, recv_ns: int, seq: int, m: MarkPrice) -> None:
        for col, value in zip(
            self._marks, (recv_ns, m.funding_rate, m.mark_price, m.index_price), strict=True
        ):
            col.append(value)

    def _on_kline(self, recv_ns: int, seq: int, k: Kline) -> None:
        if k.closed and k.open_ms > self._last_bar.get(k.interval, -1):
            self._bars.setdefault(k.interval, []).append(k)
            self._last_bar[k.interval] = k.open_ms

    def drain(self) -> SymbolBatch:
        """Rows since the last drain, as canonical tables (and the book's depth rows)."""
        return self.drain_rows().batch()

    def drain_rows(self) -> SymbolRows:
        """Rows since the last drain, compact (:class:`SymbolRows`): what a feed in another
        process hands over; ``.batch()`` makes the tables :meth:`drain` gives."""
        rows = SymbolRows(
            self.symbol,
            self.book.source,
            self.book.drain_rows(),
            _taken(self._trades),
            _taken(self._aggs),
            _taken(self._tops),
            _taken(self._marks),
            self._bars,
        )
        self._bars = {}
        return rows


def _taken(cols: tuple[list[Any], ...]) -> tuple[list[Any], ...]:
    """A copy of the columns, which are emptied (their ``append`` stays bound in handlers)."""
    out = tuple(col[:] for col in cols)
    for col in cols:
        col.clear()
    return out


class SymbolRows(NamedTuple):
    """One symbol's rows since the last drain before they become tables (picklable, and a
    third of the bytes for the depth): the book's :class:`DepthRows` and the trades',
    aggTrades', tops' and marks' columns as the handlers collected them, the closed
    klines by interval. :meth:`batch` makes the :class:`SymbolBatch`."""

    symbol: str
    depth_source: str
    depth: DepthRows
    trades: tuple[list[Any], ...]
    aggs: tuple[list[Any], ...]
    tops: tuple[list[Any], ...]
    marks: tuple[list[Any], ...]
    bars: dict[str, list[Kline]]

    def batch(self) -> SymbolBatch:
        depth, depth_line = depth_table(self.depth, self.depth_source)
        trades, trades_line = _trade_table(self.trades, f"{self.symbol} trades")
        aggs, aggs_line = _trade_table(self.aggs, f"{self.symbol} aggTrades")
        tops, tops_line = _top_table(self.tops, f"{self.symbol} bookTicker")
        marks = conform(
            pa.table(
                {
                    "ts": pa.array(self.marks[0], type=pa.int64()),
                    "funding_rate": pa.array(self.marks[1], type=pa.float64()),
                    "mark_price": pa.array(self.marks[2], type=pa.float64()),
                    "index_price": pa.array(self.marks[3], type=pa.float64()),
                }
            ),
            "funding",
            f"{self.symbol} markPrice",
        )
        bars = {iv: kline_bars(ks, f"{self.symbol} kline_{iv}") for iv, ks in self.bars.items()}
        return SymbolBatch(
            depth, depth_line, trades, trades_line, aggs, aggs_line, tops, tops_line, marks, bars
        )


def _trade_table(cols: tuple[list[Any], ...], source: str) -> tuple[pa.Table, Int64Array]:
    lines = np.array(cols[0], dtype=np.int64)
    table = pa.table(
        {
            "ts": pa.array(np.array(cols[1], dtype=np.int64), type=TS_TYPE),
            "trade_id": pa.array(cols[2], type=pa.int64()),
            "price": pa.array(cols[3], type=pa.float64()),
            "qty": pa.array(cols[4], type=pa.float64()),
            "is_buyer_maker": pa.array(cols[5], type=pa.bool_()),
        }
    )
    return conform(table, "trades", source), lines


def _top_table(cols: tuple[list[Any], ...], source: str) -> tuple[pa.Table, Int64Array]:
    lines = np.array(cols[0], dtype=np.int64)
    table = pa.table(
        {
            "ts": pa.array(np.array(cols[1], dtype=np.int64), type=TS_TYPE),
            "update_id": pa.array(cols[2], type=pa.int64()),
            "bid_price": pa.array(cols[3], type=pa.float64()),
            "bid_qty": pa.array(cols[4], type=pa.float64()),
            "ask_price": pa.array(cols[5], type=pa.float64()),
            "ask_qty": pa.array(cols[6], type=pa.float64()),
        }
    )
    return conform(table, "book_tops", source), lines


def kline_bars(klines: list[Kline], source: str) -> pa.Table:
    """Closed klines as a conformed BARS table (``ts`` = open time); ``source`` names them
    in errors."""
    ms = 1_000_000
    table = pa.table(
        {
            "ts": pa.array([k.open_ms * ms for k in klines], type=pa.int64()),
            "open": [k.open for k in klines],
            "high": [k.high for k in klines],
            "low": [k.low for k in klines],
            "close": [k.close for k in klines],
            "volume": [k.volume for k in klines],
            "quote_volume": [k.quote_volume for k in klines],
            "trade_count": pa.array([k.trade_count for k in klines], type=pa.int64()),
            "taker_buy_volume": [k.taker_buy_volume for k in klines],
        }
    )
    return conform(table, "bars", source)


# ---------------------------------------------------------------------------------------------
# the live feed


def rest_snapshot_fetcher(rest: BinanceRest, limit: int = 1000) -> SnapshotFetcher:
    """A :data:`SnapshotFetcher` on ``rest`` (its market's depth endpoint, ``limit`` levels a
    side; spot allows up to 5000, USD-M 1000). The payload is validated with
    :func:`~tickray.feeds.rest.parse_depth` and returned as decoded (prices stay strings)."""
    weight = request_weight(rest.market, "depth", limit)

    async def fetch(symbol: str) -> Mapping[str, Any]:
        payload = await rest.get("depth", {"symbol": symbol, "limit": limit}, weight)
        parse_depth(payload, f"{rest.market} depth {symbol}")
        assert isinstance(payload, dict)
        return payload

    return fetch


class LiveFeed:
    """Routes a :class:`BinanceWs`'s messages to one :class:`LiveSymbol` per symbol and keeps
    their books synced, fetching a snapshot (``fetch``) whenever a book wants one::

        async with BinanceRest("spot") as rest:
            ws = BinanceWs("spot", [Subscription("BTCUSDT")])
            feed = LiveFeed(ws, rest_snapshot_fetcher(rest))
            async for msg in feed:          # books are up to date with msg when it is yielded
                ...
            batch = feed.drain("BTCUSDT")   # canonical tables since the last drain

    A snapshot gets its receive time and session ``seq`` when it arrives (via
    :meth:`BinanceWs.note_snapshot`, which also hands it to the ws sink, i.e. the recorder),
    and is applied at once, between two messages: the order of application is the ``seq``
    order, which is what makes a recorded session replay exactly. A failed fetch, or a
    snapshot that does not sync, is retried after a jittered backoff from ``refetch_base`` s
    (capped at ``refetch_cap``, jitter from ``rng``); fetch failures are counted in the book's
    stats.
    """

    def __init__(
        self,
        ws: BinanceWs,
        fetch: SnapshotFetcher | None,
        *,
        max_buffer: int = 10_000,
        emit: bool = True,
        listener: BookListener | None = None,
        refetch_base: float = 0.05,
        refetch_cap: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.ws = ws
        self.fetch = fetch
        self.max_buffer = max_buffer
        self.emit = emit
        self.listener = listener
        self.refetch_base = refetch_base
        self.refetch_cap = refetch_cap
        self.symbols: dict[str, LiveSymbol] = {}
        self._routes: dict[str, Handler] = {}
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._rng = rng if rng is not None else random.Random()
        for stream in ws.streams:
            self._route(stream)

    def symbol(self, name: str) -> LiveSymbol:
        """The LiveSymbol of ``name`` (created on first use)."""
        name = name.upper()
        found = self.symbols.get(name)
        if found is None:
            found = self.symbols[name] = LiveSymbol(
                name,
                self.ws.market,
                max_buffer=self.max_buffer,
                emit=self.emit,
                listener=self.listener,
            )
        return found

    def book(self, name: str) -> LiveBook:
        return self.symbol(name).book

    def drain(self, name: str) -> SymbolBatch:
        return self.symbol(name).drain()

    def drain_rows(self, name: str) -> SymbolRows:
        return self.symbol(name).drain_rows()

    def _route(self, stream: str) -> Handler:
        symbol, kind = stream_kind(stream)
        self.ws.decoder.parser(stream)  # learned now (and compiled, for depth), not at message 1
        sym = self.symbol(symbol)
        handler = sym.handler(kind)
        if kind is StreamKind.DEPTH:
            book = sym.book
            on_diff = handler

            def on_depth(recv_ns: int, seq: int, diff: Any) -> None:
                on_diff(recv_ns, seq, diff)
                if book._state == _UNSYNCED and symbol not in self._fetching:
                    self._start_fetch(symbol, book)

            handler = on_depth
        self._routes[stream] = handler
        return handler

    def _start_fetch(self, symbol: str, book: LiveBook) -> None:
        if self.fetch is None or not book.wants_snapshot:
            return
        self._fetching[symbol] = asyncio.get_running_loop().create_task(
            self._fetch_loop(symbol, book, self.fetch)
        )

    async def _fetch_loop(self, symbol: str, book: LiveBook, fetch: SnapshotFetcher) -> None:
        attempt = 0
        try:
            while book.wants_snapshot:
                try:
                    payload = await fetch(symbol)
                except Exception as exc:  # any failure of the injected fetch: count and retry
                    book.stats.fetch_errors += 1
                    book.stats.log.append(f"snapshot fetch failed: {type(exc).__name__}: {exc}")
                else:
                    # stamp, number, record and apply with no await in between
                    ts = self.ws.stamp()
                    text = json.dumps(dict(payload), separators=(",", ":"))
                    seq = self.ws.note_snapshot(ts, symbol, text)
                    book.on_snapshot(ts, seq, payload)
                    if not book.wants_snapshot:
                        return
                await asyncio.sleep(
                    backoff_delay(attempt, self.refetch_base, self.refetch_cap, self._rng)
                )
                attempt += 1
        finally:
            self._fetching.pop(symbol, None)

    def __aiter__(self) -> AsyncIterator[WsMessage]:
        return self.messages()

    async def messages(self) -> AsyncIterator[WsMessage]:
        """The ws messages, each yielded after it has been applied to its symbol."""
        routes = self._routes
        ws = self.ws
        async for msg in ws:
            handler = routes.get(msg.stream) or self._route(msg.stream)
            handler(msg.recv_ns, ws.last_seq, msg.data)
            yield msg

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume messages until ``stop`` is set (checked after each message) or the ws ends.

        The loop of :meth:`messages`, inlined: one async generator less per message.
        """
        routes = self._routes
        ws = self.ws
        async for msg in ws:
            handler = routes.get(msg.stream) or self._route(msg.stream)
            handler(msg.recv_ns, ws.last_seq, msg.data)
            if stop is not None and stop.is_set():
                return

    async def close(self) -> None:
        """Cancel snapshot fetches and close the websocket."""
        for task in list(self._fetching.values()):
            task.cancel()
        self._fetching.clear()
        await self.ws.close()


def warm_up(market: Market) -> None:
    """Load (or compile) the numba code that decoding, a synced book and its drain use,
    on made-up messages of a made-up symbol, so that a session's first real messages do
    not wait for it (a fresh process takes a few hundred ms here, during which its
    socket backs up)."""
    decoder = MessageDecoder(market)
    sym = LiveSymbol("WARMUPUSDT", market)
    depth, trade = depth_stream("warmupusdt", DEPTH_SPEEDS[market][0], market), "warmupusdt@trade"
    routes = {s: sym.handler(stream_kind(s)[1]) for s in (depth, trade)}
    sym.book.on_snapshot(
        0, 0, {"lastUpdateId": 100, "bids": [["1.5", "2"]], "asks": [["2.5", "1"]]}
    )
    head = {"e": "depthUpdate", "E": 1, "T": 1, "s": "WARMUPUSDT"}
    msgs = [
        (
            depth,
            head
            | {
                "U": 100,
                "u": 101,
                "pu": 99,
                "b": [["1.5", "3"], ["1.4", "1"]],
                "a": [["2.5", "0"], ["2.6", "1"]],
            },
        ),
        (depth, head | {"U": 102, "u": 102, "pu": 101, "b": [], "a": [["2.7", "4"]]}),
        (
            trade,
            {
                "e": "trade",
                "E": 1,
                "s": "WARMUPUSDT",
                "t": 7,
                "p": "2.6",
                "q": "0.5",
                "T": 2,
                "m": True,
                "M": True,
            },
        ),
    ]
    texts = [json.dumps({"stream": s, "data": d}, separators=(",", ":")) for s, d in msgs]
    for seq, text in enumerate(texts, 1):
        stream, event = decoder.decode(text)
        routes[stream or ""](seq, seq, event)
    batch = sym.drain()
    if batch.depth.num_rows != 7 or batch.trades.num_rows != 1:  # pragma: no cover
        raise AssertionError(f"live book warm-up: {batch.depth.num_rows} depth rows, not 7")
