"""Live mode of the step protocol: paper trading bar strategies on Binance kline streams.

The topology is the replay's: symbol actors own their feeds and simulations, the portfolio
settles each step, the recorder writes the results. Only time differs:

- Each :class:`LiveSymbolActor` subscribes to its symbols' ``kline_<interval>`` streams
  (:class:`~tickray.feeds.ws.BinanceWs`, on a background thread of the actor's process,
  so market data never leaves the actor; an order-book session's feeds run in child
  processes of the actor, see :mod:`tickray.actors.feedproc`) and turns every *closed*
  kline into a bar of its :class:`LiveBars` source. The simulation reads that source
  exactly as it reads a Parquet cursor in replay: same strategy code, same fills at the
  next bar's open, same execution and risk models.
- The :class:`LiveClock` steps on the wall clock: a step ``(T - sync, T]`` is advanced
  once the wall clock passed ``T`` and every symbol has its bar closing at ``T`` (or
  ``grace`` seconds later at most: a bar that misses it counts as *late* and is used at
  the next step). One call per actor per step, as in replay.
- With ``record`` set, each actor's raw messages go to Parquet
  (:class:`~tickray.feeds.wsrecord.WsRecorder`); :func:`recorded_bars` turns them back
  into bars, and a backtest of those bars over the session's range makes the same
  decisions as the live session did (a test checks fills are identical) whenever no bar
  was late.

Stopping (Ctrl-C, SIGTERM, or the session's duration) happens at a step boundary. With
``on_stop = "flatten"`` every position is closed by a market order at the next bar's
open (one more step; an order-book session cancels its orders and closes through the
book), else positions are kept and marked at the last close.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from tickray.actors.backends import Backend, Call, cpu_count
from tickray.actors.clock import ClockStats, RunInterrupted, shard
from tickray.actors.feedproc import BookFeedProcess
from tickray.actors.progress import Progress
from tickray.actors.recorder import Recorder
from tickray.actors.symbol import SymbolActor
from tickray.engine.book import MarketEvents
from tickray.engine.clock import ceil_to, format_duration, iso
from tickray.engine.config import LiveConfig, RunConfig
from tickray.engine.events import Control, ControlKind, Inbox, OrderStatus, Outbox
from tickray.engine.l2sim import L2SymbolSim
from tickray.engine.portfolio import SettleResult, concat_updates
from tickray.feeds.l2events import continued_rows_events, recording_events
from tickray.feeds.livebook import (
    LiveFeed,
    SymbolBatch,
    SymbolRows,
    rest_snapshot_fetcher,
    warm_up,
)
from tickray.feeds.recordings import Recording
from tickray.feeds.rest import BinanceRest
from tickray.feeds.ws import BinanceWs, Kline, Market, Subscription, stream_kind
from tickray.feeds.wsrecord import WsRecorder

__all__ = [
    "LiveBars",
    "LiveClock",
    "LiveSymbolActor",
    "STOP_REASON",
    "latency_quantiles",
    "status_line",
]

STOP_REASON = "end of paper session"
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class BarRows(NamedTuple):
    """Closed bars handed to the simulation (``ts`` is the open time, ns UTC)."""

    ts: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64


_NONE = np.empty(0, dtype=np.float64)
_NO_EVENTS = MarketEvents(
    np.empty(0, dtype=np.int64),
    np.empty(0, dtype=np.int8),
    np.empty(0, dtype=np.int8),
    _NONE,
    _NONE,
    np.empty(0, dtype=np.int64),
    np.empty(0, dtype=bool),
)
_EMPTY = BarRows(np.empty(0, dtype=np.int64), _NONE, _NONE, _NONE, _NONE, _NONE)


class LiveBars:
    """One symbol's closed klines, pushed by the feed thread and drained by the simulation.

    Only bars opening at or after ``t0`` are kept, each once, in time order; a bar the
    exchange never closed (a gap in the stream) is counted in ``gaps``. Thread-safe.
    """

    def __init__(self, symbol: str, interval_ns: int, t0: int) -> None:
        self.symbol = symbol
        self.interval_ns = interval_ns
        self.next_open = t0
        self.last_close = t0  # close time of the newest bar received
        self.gaps = 0
        self.duplicates = 0
        self.latency_ns: list[int] = []  # receive time - close time, per bar
        self._rows: list[tuple[int, float, float, float, float, float]] = []
        self._lock = threading.Lock()

    def push(self, recv_ns: int, k: Kline) -> None:
        if not k.closed:
            return
        open_ns = k.open_ms * 1_000_000
        with self._lock:
            if open_ns < self.next_open:
                self.duplicates += 1
                return
            if open_ns > self.next_open and self._rows_seen():
                self.gaps += (open_ns - self.next_open) // self.interval_ns
            self._rows.append((open_ns, k.open, k.high, k.low, k.close, k.volume))
            self.next_open = open_ns + self.interval_ns
            self.last_close = self.next_open
            self.latency_ns.append(recv_ns - self.next_open)

    def _rows_seen(self) -> bool:
        return bool(self.latency_ns)

    def next_chunk(self) -> BarRows:
        """Every bar received since the last call (an empty batch when none)."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return _EMPTY
        cols = list(zip(*rows, strict=True))
        return BarRows(
            np.array(cols[0], dtype=np.int64),
            *(np.array(c, dtype=np.float64) for c in cols[1:]),
        )

    def has(self, t: int) -> bool:
        """True once the bar closing at ``t`` (or a later one) has arrived."""
        return self.last_close >= t


def _client(
    live: LiveConfig, market: Market, subs: list[Subscription], recorder: WsRecorder | None
) -> BinanceWs:
    """The websocket client of a session's feed, as ``live`` configures it."""
    return BinanceWs(
        market,
        subs,
        base_url=live.ws_url or None,
        stall_timeout=live.stall_timeout_s or None,
        sink=recorder,
        transport="aiohttp" if live.transport == "aiohttp" else "websockets",
    )


class _Session:
    """A websocket session on its own thread and event loop (the feeds below): stopping
    closes the connection from outside the loop, joins the thread and closes the
    recorder."""

    ws: BinanceWs
    recorder: WsRecorder | None
    loop: asyncio.AbstractEventLoop | None
    thread: threading.Thread

    def stop(self) -> None:
        loop = self.loop
        if loop is not None and self.thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self.ws.close(), loop)
            with contextlib.suppress(Exception):  # the session is ending anyway
                fut.result(timeout=5.0)
        self.thread.join(timeout=5.0)
        if self.recorder is not None:
            self.recorder.close()


class _Feed(_Session):
    """The websocket session of one actor, on its own thread and event loop."""

    def __init__(
        self, live: LiveConfig, interval: str, bars: Mapping[str, LiveBars], record: Path | None
    ) -> None:
        self.live = live
        self.bars = bars
        market: Market = "usdm" if live.market == "usdm" else "spot"
        self.recorder = (
            WsRecorder(record, market, metadata={"interval": interval})
            if record is not None
            else None
        )
        subs = [
            Subscription(s, depth=None, trades=False, book_ticker=False, klines=(interval,))
            for s in sorted(bars)
        ]
        self.ws = _client(live, market, subs, self.recorder)
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._main, name="tickray-live-feed", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the actor's next status
            self.error = exc

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        async with self.ws:
            async for recv_ns, stream, data in self.ws:
                if isinstance(data, Kline):
                    bars = self.bars.get(stream_kind(stream)[0])
                    if bars is not None:
                        bars.push(recv_ns, data)


class BookFeed(_Session):
    """The depth, trade and book-ticker streams of one actor's symbols, with books kept in
    sync (:class:`~tickray.feeds.livebook.LiveFeed`), on its own thread and event loop.

    :meth:`drain` runs on that loop, between two messages: every message stamped before
    the call has been applied, so a step that drains after its boundary sees everything
    received before it, as a replay of the recording does.
    """

    def __init__(self, live: LiveConfig, symbols: Sequence[str], tops: bool, record: Path | None):
        market: Market = "usdm" if live.market == "usdm" else "spot"
        self.market = market
        self.live = live
        self.recorder = WsRecorder(record, market) if record is not None else None
        subs = [Subscription(s, depth=live.depth, trades=True, book_ticker=tops) for s in symbols]
        self.ws = _client(live, market, subs, self.recorder)
        self.feed: LiveFeed | None = None
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="tickray-live-book", daemon=True)
        self.thread.start()

    def wait_ready(self) -> None:
        """Wait (10 s at most) until the feed's books exist: it is connecting then."""
        self._ready.wait(10.0)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the actor's next call
            self.error = exc
        finally:
            self._ready.set()

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        warm_up(self.market)  # before connecting: nothing waits on the socket meanwhile
        async with BinanceRest(self.market, base_url=self.live.rest_url or None) as rest:
            self.feed = LiveFeed(self.ws, rest_snapshot_fetcher(rest))
            self._ready.set()
            try:
                await self.feed.run()
            finally:
                await self.feed.close()

    async def _drain(self, symbol: str) -> SymbolRows:
        assert self.feed is not None
        return self.feed.drain_rows(symbol)

    def drain_rows(self, symbol: str) -> SymbolRows:
        """``symbol``'s rows since the last drain (compact; ``.batch()`` makes tables)."""
        if self.error is not None:
            raise RuntimeError(f"live feed failed: {self.error!r}") from self.error
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(self._drain(symbol), self.loop).result(30.0)

    def drain(self, symbol: str) -> SymbolBatch:
        return self.drain_rows(symbol).batch()

    def status(self) -> dict[str, Any]:
        books = {}
        if self.feed is not None:
            for name, sym in self.feed.symbols.items():
                st = sym.book.stats
                books[name] = {"gaps": len(sym.book.gaps), "resyncs": getattr(st, "resyncs", 0)}
        return {"ws": self.ws.stats.as_dict(), "books": books}


class _LiveEvents:
    """A symbol's market events for :class:`~tickray.engine.l2sim.L2SymbolSim`: each
    ``next`` drains what the book applied since the last one (an empty batch when
    nothing came, or before the first sync)."""

    def __init__(self, feed: BookFeed | BookFeedProcess, symbol: str, tops: bool) -> None:
        self.feed = feed
        self.symbol = symbol
        self.tops = tops
        self.started = False

    def __iter__(self) -> _LiveEvents:
        return self

    def __next__(self) -> MarketEvents:
        rows = self.feed.drain_rows(self.symbol)
        if self.started:  # straight from the rows: no tables (a drain every few tens of ms)
            return continued_rows_events(rows, tops=self.tops)
        d = rows.depth
        if not (d.is_snapshot & (d.counts.sum(axis=1) > 0)).any():
            return _NO_EVENTS  # not synced yet: what came before the snapshot is dropped
        b = rows.batch()
        rec = Recording(
            self.symbol,
            self.feed.market,
            b.depth,
            b.depth_line,
            b.trades,
            b.trades_line,
            b.tops,
            b.tops_line,
            0,
            f"live {self.symbol}",
        )
        self.started = True
        return recording_events(rec, tops=self.tops)


class LiveSymbolActor(SymbolActor):
    """A :class:`SymbolActor` on live streams (module doc): bars from closed klines, or,
    for an order-book run (``config.l2``), events from books kept in sync."""

    def __init__(
        self,
        config: RunConfig,
        symbols: Sequence[str],
        t0: int,
        strategies: Mapping[str, type] | None = None,
    ) -> None:
        live = config.live
        if live is None:
            raise ValueError("a live symbol actor needs config.live")
        self._live_bars = {s: LiveBars(s, config.interval_ns, t0) for s in symbols}
        #: Order-book feeds, each of ``live.symbols_per_feed`` symbols, and each symbol's.
        self._book_feeds: list[BookFeed | BookFeedProcess] = []
        self._book_feed: dict[str, BookFeed | BookFeedProcess] = {}
        self._feed: _Feed | None = None
        #: Decision latencies (ns) not yet reported by live_status, and how many of each
        #: order-book venue's updates (since its last step) absorb has noted already.
        self._decision_lag_ns: list[int] = []
        self._noted: dict[str, int] = {}
        if config.l2 is not None:
            make = BookFeedProcess if live.feed == "process" else BookFeed
            names = sorted(symbols)
            for i in range(0, len(names), live.symbols_per_feed):
                group = names[i : i + live.symbols_per_feed]
                feed = make(live, group, config.l2.tops, _record_folder(live, group))
                self._book_feeds.append(feed)
                self._book_feed |= dict.fromkeys(group, feed)
            for feed in self._book_feeds:  # started together, then waited for
                feed.wait_ready()
        super().__init__(config, symbols, t0, strategies)
        if config.l2 is None:
            interval = format_duration(config.interval_ns)
            self._feed = _Feed(live, interval, self._live_bars, _record_folder(live, symbols))

    def _bar_source(self, config: RunConfig, symbol: str, interval: str) -> Any:
        return self._live_bars[symbol]

    def step(self, until: int, inboxes: Sequence[Inbox], symbols: Sequence[str]) -> list[Outbox]:
        # every feed process builds its symbols' tables at once, in parallel, for the
        # symbols whose step starts by reading them (so that a reply is never read a step
        # late: what it holds would then stop short of that step's boundary)
        for s in symbols:
            feed, sim = self._book_feed.get(s), self.sims[s]
            if (
                isinstance(feed, BookFeedProcess)
                and isinstance(sim, L2SymbolSim)
                and sim.reads_next_batch(until)
            ):
                feed.request_drain(s)
        outs = super().step(until, inboxes, symbols)
        # the orders decided in this step (those absorb noted already, it counted then):
        # from the receipt of the message each was decided on to now
        now = time.time_ns()
        for ob in outs:
            u = ob.updates.data[self._noted.pop(ob.symbol, 0) :]
            sent = u["ts"][u["status"] == int(OrderStatus.SUBMITTED)]
            self._decision_lag_ns.extend((now - sent).tolist())
        return outs

    def absorb(self, until: int) -> None:
        """While the clock waits for the boundary ``until``: each order-book symbol takes
        in what its feed received so far (:meth:`L2SymbolSim.absorb
        <tickray.engine.l2sim.L2SymbolSim.absorb>`), so that the step after the boundary
        has only the tail left, and the orders decided now count as decided now. The
        results are what the step alone would give. Bar sessions have nothing to do."""
        sims = {s: sim for s, sim in self.sims.items() if isinstance(sim, L2SymbolSim)}
        for s, sim in sims.items():  # the feed processes build their tables in parallel
            feed = self._book_feed.get(s)
            if isinstance(feed, BookFeedProcess) and sim.absorb_reads(until):
                feed.request_drain(s)
        for sim in sims.values():
            sim.absorb(until)
        now = time.time_ns()
        for s, sim in sims.items():
            ups = sim.venue.updates
            seen = self._noted.get(s, 0)
            self._decision_lag_ns.extend(
                now - u.ts_event for u in ups[seen:] if u.status == OrderStatus.SUBMITTED
            )
            self._noted[s] = len(ups)

    def _l2_events(self, config: RunConfig, symbol: str) -> Iterator[MarketEvents]:
        assert config.l2 is not None
        return _LiveEvents(self._book_feed[symbol], symbol, config.l2.tops)

    def have(self, t: int) -> list[str]:
        """The symbols whose bar closing at ``t`` has not arrived yet (none for books)."""
        for feed in (self._feed, *self._book_feeds):
            if feed is not None and feed.error is not None:
                raise RuntimeError(f"live feed failed: {feed.error!r}") from feed.error
        if self._feed is None:
            return []
        return [s for s, b in self._live_bars.items() if not b.has(t)]

    def live_status(self) -> dict[str, Any]:
        """The feeds' counters, and the decision latencies (ns) since the last call
        (``decision_lag_ns``: from the receipt of the message an order was decided on to
        the end of the step or absorb that decided it)."""
        lags, self._decision_lag_ns = self._decision_lag_ns, []
        if self._book_feeds:
            sts = [feed.status() for feed in self._book_feeds]
            return {
                "decision_lag_ns": lags,
                "ws": merge_ws_stats([st["ws"] for st in sts]),
                "books": {k: v for st in sts for k, v in st["books"].items()},
                "latency_ns": [],
                "gaps": {},
                "duplicates": 0,
                "feed_processes": [st["feed_process"] for st in sts if "feed_process" in st],
            }
        assert self._feed is not None
        lat = [x for b in self._live_bars.values() for x in b.latency_ns]
        return {
            "decision_lag_ns": lags,
            "ws": self._feed.ws.stats.as_dict(),
            "latency_ns": lat,
            "gaps": {s: b.gaps for s, b in self._live_bars.items()},
            "duplicates": sum(b.duplicates for b in self._live_bars.values()),
        }

    def stop_feed(self) -> bool:
        for feed in (self._feed, *self._book_feeds):
            if feed is not None:
                feed.stop()
        return True


def _record_folder(live: LiveConfig, symbols: Sequence[str]) -> Path | None:
    """Where a feed of ``symbols`` records its raw messages (None: not recording)."""
    return Path(live.record) / f"ws-{min(symbols)}" if live.record else None


def merge_ws_stats(stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The counters of several connections (:meth:`WsStats.as_dict`) as one: numbers
    summed, per-stream counts joined, logs and times one after the other."""
    out: dict[str, Any] = {}
    for st in stats:
        for key, value in st.items():
            if isinstance(value, dict):
                into = out.setdefault(key, {})
                for k, v in value.items():
                    into[k] = into.get(k, 0) + v
            elif isinstance(value, list):
                out[key] = out.get(key, []) + value
            else:
                out[key] = out.get(key, 0) + value
    return out


class LiveClock:
    """Steps a live session on the wall clock over a backend of :class:`LiveSymbolActor`.

    ``now`` (ns) and ``sleep`` (s) are the wall clock, injectable for tests. The session
    starts at ``t0`` (a step boundary) and ends at ``t_end`` (or at a stop request).
    ``on_status`` receives :meth:`status` about once a wall-clock second while the
    session runs (between steps too), for a service to show; ``progress`` shows the
    same numbers as a status line.
    """

    def __init__(
        self,
        config: RunConfig,
        backend: Backend,
        recorder: Recorder,
        t0: int,
        t_end: int | None,
        progress: Progress | None = None,
        now: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
        on_status: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.recorder = recorder
        self.t0 = t0
        self.t_end = t_end
        self.progress = progress
        self.now = now
        self.sleep = sleep
        self.stats = ClockStats()
        self.shards = shard(config.symbols, config.symbols_per_actor, cpu_count())
        self.stop_requested = ""
        self.stop_reason = ""  # why the session stopped early ("" at its planned end)
        self.reached = t0
        self.late_bars = 0
        self.step_lag_ns: list[int] = []  # wall time of each step's start - its boundary
        # the path from a message's receipt to a paper order decision: the wall time when
        # the step or absorb that decided an order ended - the receive time of the message
        # it was decided on (measured by the actors, on the feeds' clock; see _refresh)
        self.decision_lag_ns: list[int] = []
        live = config.live
        #: Absorb every this many ns while waiting for a boundary (0: never).
        self.absorb_ns = (
            int(live.absorb_ms * 1e6) if live is not None and config.l2 is not None else 0
        )
        self.absorbs = 0
        self._absorb_at = 0
        self.on_status = on_status
        self._status: list[dict[str, Any]] = []
        self._status_at = 0
        self._began = now()
        self._last_positions: dict[str, float] = {s: 0.0 for s in config.symbols}
        self._equity = float("nan")
        self._shown: dict[str, Any] | None = None  # the last status shown
        self._rate = (self._began, 0)  # (wall ns, messages) at the previous status
        self._msg_rate = 0.0

    def request_stop(self, why: str = "interrupted") -> None:
        self.stop_requested = why

    def _wait_until(self, t: int, absorb: bool = False) -> None:
        """Wait for the wall clock to pass ``t``, showing the status; with ``absorb``, the
        actors take in what arrived every :attr:`absorb_ns` while at least that much is
        left (:meth:`LiveSymbolActor.absorb`)."""
        every = self.absorb_ns if absorb else 0
        while not self.stop_requested:
            now = self.now()
            left = t - now
            if left <= 0:
                return
            self._report()
            wake = t
            if every and left > every:
                if now >= self._absorb_at:
                    self.backend.call("absorb", t)
                    self.absorbs += 1
                    self._absorb_at = now + every
                    continue
                wake = min(t, self._absorb_at)
            self.sleep(min((wake - now) / 1e9, 0.2))

    def _wait_for_bars(self, t: int, deadline: int) -> None:
        while True:
            missing = [s for got in self.backend.call("have", t) for s in got]
            if not missing:
                return
            if self.now() >= deadline:
                self.late_bars += len(missing)
                return
            self._report()
            self.sleep(0.01)

    def run(self) -> dict[str, Any]:
        cfg = self.config
        live = cfg.live
        assert live is not None
        sync = cfg.sync_ns
        symbols = list(cfg.symbols)
        self.backend.prepare(cfg)
        self.shards = shard(cfg.symbols, cfg.symbols_per_actor, self.backend.cpus())
        self.backend.start(cfg, self.shards, self.t0)
        if self.progress is not None:
            self.progress.start_span(self.t0, self.t_end or self.t0 + sync, len(symbols), 0)
        inboxes: dict[str, Inbox] = {}
        t = self.t0
        flatten_at: int | None = None
        grace = int(live.grace_s * 1e9)
        while True:
            target = t + sync
            ending = self.t_end is not None and t >= self.t_end  # the duration is over
            if ending and (live.on_stop != "flatten" or flatten_at is not None):
                break
            self._wait_until(target, absorb=flatten_at is None and not ending)
            if (self.stop_requested or ending) and flatten_at is None:
                self.stop_reason = self.stop_requested
                if live.on_stop != "flatten" or t == self.t0:
                    break
                flatten_at = target
                for s in symbols:
                    box = inboxes.get(s) or Inbox(s, t, [], [])
                    ctl = Control(ControlKind.FLATTEN, t, s, STOP_REASON)
                    inboxes[s] = box._replace(controls=[*box.controls, ctl])
                self.stop_requested = ""  # one more step: the flattening orders fill
                self._wait_until(target)
            self._wait_for_bars(target, target + grace)
            self.step_lag_ns.append(self.now() - target)
            res = self._step(symbols, target, inboxes)
            self.recorder.record(res)
            inboxes = {b.symbol: b for b in res.inboxes}
            t = self.reached = target
            if len(res.equity):
                self._equity = float(res.equity[-1])
            self._report(step=True)
            if flatten_at is not None:
                break
        last = [[inboxes[s] for s in sh if s in inboxes] for sh in self.shards]
        closing = self.backend.finish(t, last, STOP_REASON)
        closing.sort(key=lambda o: o.symbol)
        self.recorder.record_orders([], concat_updates(closing))
        return self.backend.summary()

    def _report(self, *, step: bool = False) -> None:
        """Refresh the status (the feeds' counters read, and the latency quantiles
        computed, at most once a second) and show it: the status line (after each
        ``step`` too, with its time, equity and positions), and :attr:`on_status`."""
        if self.progress is None and self.on_status is None:
            return
        now = self.now()
        fresh = self._shown is None or now - self._status_at >= 1_000_000_000
        if fresh:
            self._refresh(self.backend.call("live_status"), now)
            self._shown = self.status(now)
            if self.on_status is not None:
                self.on_status(self._shown)
        elif step and self._shown is not None:
            self._shown |= self._step_fields()
        else:
            return
        if self.progress is not None and self._shown is not None:
            self.progress.status(status_line(self._shown), self._shown["progress"] or 0.0)

    def _step_fields(self) -> dict[str, Any]:
        """The part of :meth:`status` that changes with each step (cheap to read)."""
        equity = self._equity
        ok = bool(np.isfinite(equity))
        span = (self.t_end - self.t0) if self.t_end else 0
        return {
            "reached": iso(self.reached),
            "steps": self.stats.settles,
            "equity": equity if ok else None,
            "pnl": equity - self.config.account.initial_cash if ok else None,
            "positions": dict(sorted(self._last_positions.items())),
            "late_bars": self.late_bars,
            "progress": min(1.0, (self.reached - self.t0) / span) if span > 0 else None,
        }

    def _refresh(self, feeds: list[dict[str, Any]], now: int) -> None:
        """New counters of the feeds; the message rate since the previous ones."""
        self._status, self._status_at = feeds, now
        for st in feeds:  # each actor's since its previous status
            self.decision_lag_ns.extend(st.get("decision_lag_ns", ()))
        msgs = sum(int(s["ws"].get("messages", 0)) for s in feeds)
        then, before = self._rate
        if now > then:
            self._msg_rate = (msgs - before) * 1e9 / (now - then)
        self._rate = (now, msgs)

    def status(self, now: int | None = None, stopped: str = "") -> dict[str, Any]:
        """The session as it stands, JSON-ready: simulated time ``reached`` (ISO-8601 UTC),
        ``steps``, ``equity`` and ``pnl`` (equity minus the account's initial cash, in the
        account's currency) at the last step, ``positions`` (symbol -> quantity),
        websocket ``messages``, ``message_rate`` (per second since the previous status),
        ``reconnects``, ``errors``, book ``resyncs``, ``gaps`` (bars the stream skipped
        and book sequence gaps), ``late_bars``, ``bar_latency``, ``decision_latency`` and
        ``step_lag`` (``p50_ms``, ``p99_ms``, ``max_ms``), ``progress`` (share of the
        planned duration, None without one), ``updated`` (wall time, ISO-8601 UTC) and
        ``stopped`` (why it ended; None while it runs). The feeds' counters are those
        of the last refresh (at most a second old)."""
        now = self.now() if now is None else now
        st = self._status
        msgs = sum(int(s["ws"].get("messages", 0)) for s in st)
        books = [b for s in st for b in s.get("books", {}).values()]
        return self._step_fields() | {
            "messages": msgs,
            "message_rate": round(self._msg_rate, 3),
            "reconnects": sum(int(s["ws"].get("reconnects", 0)) for s in st),
            "errors": sum(int(s["ws"].get("errors", 0)) for s in st),
            "resyncs": sum(int(b.get("resyncs", 0)) for b in books),
            "gaps": sum(int(g) for s in st for g in s["gaps"].values())
            + sum(int(b.get("gaps", 0)) for b in books),
            "bar_latency": latency_quantiles([x for s in st for x in s["latency_ns"]]),
            "decision_latency": latency_quantiles(self.decision_lag_ns),
            "step_lag": latency_quantiles(self.step_lag_ns),
            "updated": iso(now // 1_000_000 * 1_000_000),
            "stopped": stopped or None,
        }

    def report_final(
        self, stopped: str, feeds: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The last status, ``stopped`` saying why the session ended, with the feeds'
        counters ``feeds`` (the actors' ``live_status``; read now when None); handed
        to :attr:`on_status` too."""
        now = self.now()
        self._refresh(self.backend.call("live_status") if feeds is None else feeds, now)
        st = self.status(now, stopped=stopped)
        if self.on_status is not None:
            self.on_status(st)
        return st

    def _step(self, symbols: list[str], target: int, inboxes: dict[str, Inbox]) -> SettleResult:
        calls: list[Call] = []
        for a, sh in enumerate(self.shards):
            boxes = [inboxes[s] for s in sh if s in inboxes]
            calls.append((a, target, boxes, list(sh)))
        self.stats.rounds += 1
        self.stats.calls += len(calls)
        outs: list[Outbox] = self.backend.collect(self.backend.submit(calls))
        outs.sort(key=lambda o: o.symbol)
        for ob in outs:
            self._last_positions[ob.symbol] = ob.position
        for ob in outs:
            if ob.reached != target:
                raise RuntimeError(f"{ob.symbol}: reached {iso(ob.reached)}, not {iso(target)}")
        marks = np.empty((1, len(symbols)))
        col = {s: i for i, s in enumerate(symbols)}
        for ob in outs:
            marks[0, col[ob.symbol]] = ob.mark_px[0] if len(ob.mark_px) else np.nan
        res = self.backend.settle(target, outs, np.array([target], dtype=np.int64), marks)
        self.stats.settles += 1
        self.stats.boundaries += 1
        return res

    def stop_feeds(self) -> None:
        self.backend.call("stop_feed")


def latency_quantiles(ns: Sequence[int]) -> dict[str, float | None]:
    """``p50_ms``, ``p99_ms`` and ``max_ms`` of latencies in ns (None when there are none)."""
    if not len(ns):
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
    }


def status_line(st: Mapping[str, Any]) -> str:
    """The terminal's status line of a :meth:`LiveClock.status`: simulated time, equity,
    positions, message rate, bar latency, resyncs, reconnects and late bars."""
    held = ", ".join(f"{k} {v:g}" for k, v in st["positions"].items() if v)
    equity = st["equity"] if st["equity"] is not None else float("nan")
    parts = [
        f"paper {st['reached'][11:19]}",
        f"equity {equity:,.2f}",
        f"pos {held or 'flat'}",
        f"{st['message_rate']:,.0f} msg/s",
    ]
    p50 = st["bar_latency"]["p50_ms"]
    if p50 is not None:
        parts.append(f"bar latency p50 {p50:.0f} ms")
    parts += [f"resyncs {st['resyncs']}", f"reconnects {st['reconnects']}"]
    parts.append(f"late {st['late_bars']}")
    return " | ".join(parts)


def session_start(now_ns: int, sync_ns: int, interval_ns: int) -> int:
    """The first step boundary of a session started at ``now_ns``: the next boundary that
    is also a bar close, so the first step holds whole bars only."""
    step = max(sync_ns, interval_ns)
    return ceil_to(now_ns + 1, step)


def check_stop(clock: LiveClock) -> None:
    """Raise :class:`RunInterrupted` if the session stopped on a request (not its end)."""
    if clock.stop_reason:
        raise RunInterrupted(clock.reached, clock.stop_reason)
