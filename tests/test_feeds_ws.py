"""Live Binance market data on loopback: the websocket client, the synced local book, the recorder.

The network tests run a local Binance on 127.0.0.1: a ``websockets`` server on the combined-stream
path (``/stream?streams=a/b/c``) that replays a real hftbacktest recording
(``../shared/data/crypto/ws_recordings/hftbacktest``) at accelerated speed, and an aiohttp server
answering ``GET /api/v3/depth`` (spot) or ``/fapi/v1/depth`` (USD-M) in Binance's format. The first
snapshot request gets the recording's own snapshot line, verbatim, once the replay has reached it;
later ones (resyncs) get the book as the exchange holds it at that moment: the recorded snapshot
plus every diff the replay has passed (sent or not), top 1000 levels a side, ``lastUpdateId`` = the
last passed diff's ``u``. The server can drop or reorder depth diffs, replace messages with
malformed ones, drop the TCP connection, go silent, and lose messages while a client reconnects.

The exact top-of-book check: Binance pushes a bookTicker for every change of the best levels, with
the update id ``u`` after which it holds, so the book after update ``L`` has the top of the last
bookTicker with ``u <= L``. Keyed by update ids, not by arrival order, it does not depend on
timing; it holds at every diff boundary of the recordings used here (checked for all 3,450 +
6,548 of them by replaying the files), and the resync snapshots are cut at diff boundaries.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import pickle
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tickray.engine.book import DEPTH, L2Book, MarketEvents
from tickray.feeds.l2events import (
    _depth_part,
    _merged,
    _np,
    _top_part,
    _trade_part,
    continued_rows_events,
    recording_events,
)
from tickray.feeds.livebook import (
    LiveBook,
    LiveFeed,
    LiveSymbol,
    SymbolRows,
    rest_snapshot_fetcher,
)
from tickray.feeds.recordings import Recording, read_binance_recording
from tickray.feeds.rest import BinanceRest, WeightLimiter
from tickray.feeds.schemas import DataError, ts_numpy
from tickray.feeds.ws import (
    CONNECTION_LIFETIME_S,
    DEFAULT_MAX_LIFETIME_S,
    TRANSPORTS,
    BinanceWs,
    DepthDiff,
    Kline,
    MarkPrice,
    MessageDecoder,
    StreamKind,
    Subscription,
    Top,
    Trade,
    WsError,
    WsMessage,
    backoff_delay,
    combined_url,
    stream_kind,
)
from tickray.feeds.wsrecord import (
    WsRecorder,
    read_ws_messages,
    read_ws_recording,
    replay_ws_recording,
)

T = TypeVar("T")
HFT = Path("crypto") / "ws_recordings" / "hftbacktest"
FILES = {
    "spot": "binance_spot_BTCUSDT_2024-08-08.ws.gz",
    "usdm": "binance_usdm_BTCUSDT_2024-08-08.ws.gz",
}
TICK = {"spot": 0.01, "usdm": 0.1}
#: Lines of each recording replayed by the network tests (about 87 s / 44 s of market time).
PREFIX = {"spot": 10_000, "usdm": 12_000}
#: Replay speed-up over the recorded receive times: about 12k messages/s, well below what the
#: client takes in on loopback (~25k/s with the server in the same thread), so that the server
#: does not run far ahead of the client (a resync snapshot is the exchange's book "now").
SPEED = {"spot": 100.0, "usdm": 50.0}


def run(coro: Awaitable[T], timeout: float = 15.0) -> T:
    """Run one scenario with a hard bound, so a hang fails instead of stalling the suite."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# ---------------------------------------------------------------------------------------------
# the recordings


@dataclass
class Line:
    ts: int
    text: str
    stream: str | None  # None: the REST snapshot line


@dataclass
class Source:
    market: str
    lines: list[Line]
    rec: Recording  # read_binance_recording of the whole file
    snapshot_line: int


_SOURCES: dict[str, Source] = {}


def load_source(shared_data: Path, market: str) -> Source:
    if market not in _SOURCES:
        path = shared_data / HFT / FILES[market]
        lines = []
        for raw in gzip.decompress(path.read_bytes()).decode().split("\n"):
            if not raw:
                continue
            ts, _, text = raw.partition(" ")
            stream = text[11 : text.index('"', 11)] if text.startswith('{"stream":"') else None
            lines.append(Line(int(ts), text, stream))
        snap = next(i for i, line in enumerate(lines) if line.stream is None)
        _SOURCES[market] = Source(market, lines, read_binance_recording(path), snap)
    return _SOURCES[market]


class TopsOracle:
    """The recorded top of book after any update id (see the module docstring)."""

    def __init__(self, rec: Recording) -> None:
        tops = rec.tops
        uid = tops.column("update_id").to_numpy()
        order = np.argsort(uid, kind="stable")
        self.uid = uid[order]
        self.rows = np.stack(
            [
                tops.column(c).to_numpy()[order]
                for c in ("bid_price", "bid_qty", "ask_price", "ask_qty")
            ],
            axis=1,
        )

    def at(self, update_id: int) -> tuple[float, float, float, float] | None:
        k = int(np.searchsorted(self.uid, update_id, side="right")) - 1
        if k < 0:
            return None
        b, bq, a, aq = (float(x) for x in self.rows[k])
        return b, bq, a, aq


class TopChecker:
    """A LiveBook listener comparing the book with the oracle after every sync and diff."""

    def __init__(self, oracle: TopsOracle) -> None:
        self.oracle = oracle
        self.compared = 0
        self.syncs_compared = 0
        self.mismatches: list[str] = []

    def __call__(self, book: LiveBook, synced: bool) -> None:
        last = book.last_update_id
        bid, ask = book.best_bid(), book.best_ask()
        assert last is not None and bid is not None and ask is not None
        want = self.oracle.at(last)
        if want is None:
            return
        got = (*bid, *ask)
        if got != want and len(self.mismatches) < 5:
            self.mismatches.append(
                f"update {last} ({'sync' if synced else 'diff'}): {got} != {want}"
            )
        self.compared += 1
        self.syncs_compared += synced


def message_runs(depth: pa.Table) -> list[tuple[int, int, int | None, bool]]:
    """(U, u, pu, is_snapshot) of each applied message of a depth table, in order."""
    cols = [
        depth.column(c).to_pylist()
        for c in ("first_update_id", "last_update_id", "prev_last_update_id", "is_snapshot")
    ]
    runs: list[tuple[int, int, int | None, bool]] = []
    for row in zip(*cols, strict=True):
        if not runs or row != runs[-1]:  # the rows of one message share all four
            runs.append(row)
    return runs


def assert_chain(depth: pa.Table, market: str) -> int:
    """Every applied diff continues the book it is applied to: none is stale or out of order.

    Returns the number of snapshots (syncs). A diff's rows are told apart from the next diff's
    by (U, u): two different diffs never share them.
    """
    book_id: int | None = None
    first = False
    syncs = 0
    for first_id, last_id, prev_id, snap in message_runs(depth):
        if snap:
            book_id, first, syncs = last_id, True, syncs + 1
            continue
        assert book_id is not None, "a diff applied before any snapshot"
        if market == "spot":
            assert last_id > book_id, f"stale diff {first_id}..{last_id} on book {book_id}"
            ok = first_id <= book_id + 1 if first else first_id == book_id + 1
        else:
            assert last_id >= book_id and (not first or last_id > book_id or first_id <= book_id)
            ok = first_id <= book_id if first else prev_id == book_id
        assert ok, f"diff {first_id}..{last_id} (pu {prev_id}) does not continue book {book_id}"
        book_id, first = last_id, False
    return syncs


# ---------------------------------------------------------------------------------------------
# the local Binance


@dataclass
class ConnRecord:
    streams: list[str]
    sent: int = 0
    close_code: int | None = None
    subscribe_ids: list[int] = field(default_factory=list)


class FakeBinance:
    """Replays ``source.lines[:n]`` on combined streams and serves depth snapshots (module doc).

    Faults are keyed by line index: ``drop`` lines are passed but not sent; a ``swap`` depth
    line is sent after the next depth line; ``replace[i]`` is sent instead of line i; at a
    ``disconnect`` line the TCP connection is aborted, at a ``stall`` line the server goes
    silent (keeping the connection open and answering pings); each reconnection after the
    first loses ``lose_on_reconnect`` lines. ``speed``: replay speed-up (None: no pacing).
    """

    def __init__(
        self,
        source: Source,
        n: int,
        *,
        speed: float | None = 0.0,
        drop: frozenset[int] = frozenset(),
        swap: frozenset[int] = frozenset(),
        replace: dict[int, str] | None = None,
        disconnect: frozenset[int] = frozenset(),
        stall: frozenset[int] = frozenset(),
        lose_on_reconnect: int = 0,
    ) -> None:
        self.source = source
        self.market = source.market
        self.lines = source.lines[:n]
        self.speed = SPEED[self.market] if speed == 0.0 else speed
        self.drop, self.swap = drop, swap
        self.replace = replace or {}
        self.disconnect, self.stall = set(disconnect), set(stall)
        self.lose_on_reconnect = lose_on_reconnect
        #: ``received(conn)``: messages the client took in on its connection ``conn`` (1-based);
        #: when set, the replay stays at most ``max_lead`` messages ahead of the client.
        self.received: Callable[[int], int] | None = None
        self.max_lead = 200
        self.cursor = 0
        self.conns: list[ConnRecord] = []
        self.rest_calls: list[int] = []  # lastUpdateId served
        self.snapshot_reached = asyncio.Event()
        self.first_served = False
        self._t0: tuple[float, int] | None = None
        # the exchange's book: the recorded snapshot plus every diff the replay has passed
        rec = source.rec
        self._side = rec.depth.column("side").to_numpy()
        self._price = rec.depth.column("price").to_numpy()
        self._qty = rec.depth.column("qty").to_numpy()
        self._uid = rec.depth.column("last_update_id").to_numpy()
        line = np.maximum(rec.depth_line, source.snapshot_line)
        starts = np.flatnonzero(np.r_[True, line[1:] != line[:-1]])
        self._updates = {
            int(line[s]): (int(s), int(e))
            for s, e in zip(starts, np.r_[starts[1:], len(line)], strict=True)
        }
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.book_id = 0
        self.event_ms = 0
        snap_text = self.lines[source.snapshot_line].text
        self.decimals = len(json.loads(snap_text)["bids"][0][0].partition(".")[2])

    # -- the exchange's side ------------------------------------------------------------------

    def _pass(self, i: int) -> None:
        """The market moves past line i, whoever receives it."""
        if i == self.source.snapshot_line:
            self.snapshot_reached.set()
        span = self._updates.get(i)
        if span is not None:
            for k in range(*span):
                book = self.bids if self._side[k] == 1 else self.asks
                if self._qty[k]:
                    book[float(self._price[k])] = float(self._qty[k])
                else:
                    book.pop(float(self._price[k]), None)
            self.book_id = int(self._uid[span[1] - 1])
        text = self.lines[i].text
        if '"E":' in text[:200]:
            found = re.search(r'"E":([0-9]+)', text)
            if found:
                self.event_ms = int(found.group(1))

    def snapshot_payload(self, limit: int) -> dict[str, Any]:
        fmt = f"{{:.{self.decimals}f}}"

        def levels(book: dict[float, float], best_first: list[float]) -> list[list[str]]:
            return [[fmt.format(p), repr(book[p])] for p in best_first]

        payload: dict[str, Any] = {"lastUpdateId": self.book_id}
        if self.market == "usdm":
            payload |= {"E": self.event_ms, "T": self.event_ms}
        payload["bids"] = levels(self.bids, sorted(self.bids, reverse=True)[:limit])
        payload["asks"] = levels(self.asks, sorted(self.asks)[:limit])
        return payload

    async def depth(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "100"))
        if request.query.get("symbol") != "BTCUSDT":
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        headers = {"X-MBX-USED-WEIGHT-1M": str(10 * (len(self.rest_calls) + 1))}
        if not self.first_served:
            await asyncio.wait_for(self.snapshot_reached.wait(), 10.0)
            self.first_served = True
            text = self.lines[self.source.snapshot_line].text
            self.rest_calls.append(json.loads(text)["lastUpdateId"])
            return web.Response(text=text, content_type="application/json", headers=headers)
        payload = self.snapshot_payload(limit)
        self.rest_calls.append(payload["lastUpdateId"])
        return web.json_response(payload, headers=headers)

    def rest_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(
            "/api/v3/depth" if self.market == "spot" else "/fapi/v1/depth", self.depth
        )
        return app

    # -- the websocket side -------------------------------------------------------------------

    async def handler(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        path, _, query = conn.request.path.partition("?")
        assert path == "/stream" and query.startswith("streams=")
        record = ConnRecord(query.removeprefix("streams=").split("/"))
        self.conns.append(record)
        if len(self.conns) > 1:
            for _ in range(min(self.lose_on_reconnect, len(self.lines) - self.cursor)):
                self._pass(self.cursor)
                self.cursor += 1
        control = asyncio.create_task(self._control(conn, record))
        try:
            await self._replay(conn, record)
        except ConnectionClosed:
            pass
        finally:
            control.cancel()
            await conn.wait_closed()
            record.close_code = conn.close_code

    async def _control(self, conn: ServerConnection, record: ConnRecord) -> None:
        """SUBSCRIBE / UNSUBSCRIBE as Binance answers them."""
        async for text in conn:
            msg = json.loads(text)
            record.subscribe_ids.append(msg["id"])
            params = msg.get("params", [])
            bad = [s for s in params if s.endswith("@depth@0ms") and self.market == "spot"]
            if bad:
                reply: dict[str, Any] = {
                    "error": {"code": 2, "msg": f"Invalid request: unknown stream {bad[0]}"},
                    "id": msg["id"],
                }
            else:
                if msg["method"] == "SUBSCRIBE":
                    record.streams += [s for s in params if s not in record.streams]
                elif msg["method"] == "UNSUBSCRIBE":
                    record.streams = [s for s in record.streams if s not in params]
                reply = {"result": None, "id": msg["id"]}
            await conn.send(json.dumps(reply))

    async def _replay(self, conn: ServerConnection, record: ConnRecord) -> None:
        loop = asyncio.get_running_loop()
        held: str | None = None
        while self.cursor < len(self.lines):
            if record is not self.conns[-1]:
                # a newer connection replays the market from here: this one is the old one
                # of a reconnection, which its client is closing (what it would still send
                # is lost to the client anyway; the newer one takes every line from now on)
                break
            i = self.cursor
            if i in self.disconnect:
                self.disconnect.discard(i)
                conn.transport.abort()
                return
            if i in self.stall:
                self.stall.discard(i)
                await conn.wait_closed()  # silent; the client's watchdog has to notice
                return
            line = self.lines[i]
            if self.received is not None:
                # Flow control of the harness, not of Binance: the socket buffers would let the
                # replay run thousands of messages ahead of a slow (loaded) client, and a
                # resync snapshot is the book of the replay's position. Bounding the lead keeps
                # the faults of a test apart whatever the machine's load.
                while (
                    record.sent - self.received(len(self.conns)) > self.max_lead
                    and record is self.conns[-1]
                ):
                    await asyncio.sleep(0.0005)
                if record is not self.conns[-1]:
                    continue
            if self.speed is not None:
                if self._t0 is None:
                    self._t0 = (loop.time(), line.ts)
                due = self._t0[0] + (line.ts - self._t0[1]) / 1e9 / self.speed
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
            self.cursor += 1
            self._pass(i)
            if line.stream is None or line.stream not in record.streams or i in self.drop:
                continue
            text = self.replace.get(i, line.text)
            if i in self.swap:
                held = text
                continue
            await conn.send(text)
            record.sent += 1
            if held is not None and "@depth" in line.stream:
                await conn.send(held)
                held = None
        await conn.wait_closed()  # end of the recording: silent until the client leaves

    def depth_lines(self) -> list[int]:
        """Line indexes of the depth diffs after the snapshot."""
        return [
            i
            for i, line in enumerate(self.lines)
            if i > self.source.snapshot_line and line.stream is not None and "@depth" in line.stream
        ]


@asynccontextmanager
async def local_binance(server: FakeBinance) -> AsyncIterator[tuple[str, BinanceRest]]:
    """(ws base URL, REST client) of ``server`` on 127.0.0.1."""
    runner = web.AppRunner(server.rest_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rest = BinanceRest(
        "spot" if server.market == "spot" else "usdm",
        base_url=f"http://{host}:{port}",
        limiter=WeightLimiter(6000),
        rng=random.Random(3),
        backoff_base=0.01,
    )
    try:
        async with serve(server.handler, "127.0.0.1", 0, compression=None) as ws_server:
            ws_port = ws_server.sockets[0].getsockname()[1]
            async with rest:
                yield f"ws://127.0.0.1:{ws_port}", rest
    finally:
        await runner.cleanup()


def final_event(server: FakeBinance, streams: tuple[str, ...]) -> tuple[str, Any]:
    """(stream, parsed data) of the last replayed line the client subscribes to."""
    decoder = MessageDecoder("spot" if server.market == "spot" else "usdm")
    for line in reversed(server.lines):
        if line.stream in streams:
            stream, data = decoder.decode(line.text)
            assert stream is not None
            return stream, data
    raise AssertionError("no line of the subscribed streams")


async def consume_until(
    feed: LiveFeed, last: tuple[str, Any], replayed: Callable[[], bool] | None = None
) -> list[WsMessage]:
    """Iterate ``feed`` until the message equal to ``last`` has been applied, or, with
    ``replayed``, until that says the server has sent everything and nothing more came for
    a second (a session that renews its connection may lose the last message with the
    connection it closes, as on Binance)."""
    got = []
    messages = aiter(feed)
    while True:
        try:
            msg = await asyncio.wait_for(anext(messages), 1.0 if replayed else None)
        except StopAsyncIteration:
            raise AssertionError("the feed ended early") from None
        except TimeoutError:
            assert replayed is not None
            if replayed():
                return got
            continue
        got.append(msg)
        if (msg.stream, msg.data) == last:
            return got


def ws_client(market: str, url: str, **kwargs: Any) -> BinanceWs:
    options: dict[str, Any] = {
        "base_url": url,
        "rng": random.Random(7),
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "stall_timeout": 2.0,
        "proxy": None,
    }
    options |= kwargs
    return BinanceWs(
        "spot" if market == "spot" else "usdm",
        [Subscription("BTCUSDT", depth="100ms" if market == "spot" else "0ms")],
        **options,
    )


# ---------------------------------------------------------------------------------------------
# stream names, URLs, parsing (no network)


def test_subscription_names_binance_streams_for_each_market() -> None:
    spot = Subscription("BTCUSDT", depth="100ms", agg_trades=True, klines=("1s", "1m"))
    assert spot.streams("spot") == (
        "btcusdt@depth@100ms",
        "btcusdt@trade",
        "btcusdt@aggTrade",
        "btcusdt@bookTicker",
        "btcusdt@kline_1s",
        "btcusdt@kline_1m",
    )
    assert Subscription("ETHUSDT", depth="1000ms", trades=False, book_ticker=False).streams(
        "spot"
    ) == ("ethusdt@depth",)
    usdm = Subscription("BTCUSDT", depth="0ms", trades=False, mark_price="1s")
    assert usdm.streams("usdm") == (
        "btcusdt@depth@0ms",
        "btcusdt@bookTicker",
        "btcusdt@markPrice@1s",
    )
    assert Subscription("BTCUSDT", depth="500ms", mark_price="3s").streams("usdm")[::3] == (
        "btcusdt@depth@500ms",
        "btcusdt@markPrice",
    )
    assert Subscription("BTCUSDT", depth="250ms").streams("usdm")[0] == "btcusdt@depth"
    with pytest.raises(ValueError, match=r"spot depth speed must be one of \('1000ms', '100ms'\)"):
        Subscription("BTCUSDT", depth="0ms").streams("spot")
    with pytest.raises(ValueError, match="markPrice streams exist on USD-M only"):
        Subscription("BTCUSDT", mark_price="1s").streams("spot")
    with pytest.raises(ValueError, match="no usdm kline interval '1s'"):
        Subscription("BTCUSDT", klines=("1s",)).streams("usdm")


def test_combined_url_joins_streams_on_the_market_base() -> None:
    streams = Subscription("BTCUSDT").streams("spot")
    assert combined_url("spot", streams) == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade/btcusdt@bookTicker"
    )
    assert (
        combined_url("usdm", ["btcusdt@aggTrade"])
        == "wss://fstream.binance.com/stream?streams=btcusdt@aggTrade"
    )
    assert (
        combined_url("spot", ["a@trade"], "ws://127.0.0.1:9/")
        == "ws://127.0.0.1:9/stream?streams=a@trade"
    )
    with pytest.raises(ValueError, match="at least one stream"):
        combined_url("spot", [])
    with pytest.raises(ValueError, match="201 streams on one usdm connection: Binance allows 200"):
        combined_url("usdm", [f"s{i}usdt@trade" for i in range(201)])
    with pytest.raises(DataError, match=r"unknown stream 'BTCUSDT@trade'"):
        combined_url("spot", ["BTCUSDT@trade"])
    assert stream_kind("btcusdt@depth@0ms")[0] == "BTCUSDT"


def test_scheduled_reconnect_defaults_to_before_binance_24h_limit() -> None:
    assert CONNECTION_LIFETIME_S == 86_400
    assert 0 < CONNECTION_LIFETIME_S - DEFAULT_MAX_LIFETIME_S <= 3600


SPOT_TRADE = '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"61837.63000000","q":"0.02000000","T":2,"m":true,"M":true}}'
SPOT_TOP = '{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63","B":"3.7","a":"61837.64","A":"1.5"}}'
FUT_DEPTH = '{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":5,"T":4,"s":"BTCUSDT","U":10,"u":12,"pu":9,"b":[["61800.20","0.014"]],"a":[["61800.30","0.000"]]}}'


def test_decoder_parses_binance_messages_into_typed_events() -> None:
    spot = MessageDecoder("spot")
    assert spot.decode(SPOT_TRADE) == ("btcusdt@trade", Trade(7, 61837.63, 0.02, True, 2))
    assert spot.decode(SPOT_TOP) == (
        "btcusdt@bookTicker",
        Top(50093239212, 61837.63, 3.7, 61837.64, 1.5, None),
    )
    stream, diff = MessageDecoder("usdm").decode(FUT_DEPTH)
    assert stream == "btcusdt@depth@0ms" and isinstance(diff, DepthDiff)
    assert isinstance(diff.bids, np.ndarray) and diff.bids.dtype == np.float64  # levels: numpy
    assert as_lists(diff) == DepthDiff(10, 12, 9, [61800.2, 0.014], [61800.3, 0.0], 5)
    stream, reply = spot.decode('{"result":null,"id":3}')
    assert stream is None and reply == (3, None, None)
    _, err = spot.decode('{"error":{"code":2,"msg":"Invalid request"},"id":4}')
    assert err == (4, None, (2, "Invalid request"))
    mark = '{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":9,"s":"BTCUSDT","p":"61800.1","i":"61790.5","P":"61801","r":"-0.00010000","T":28800000}}'
    assert MessageDecoder("usdm").decode(mark)[1] == (61800.1, 61790.5, -0.0001, 28800000, 9)
    kline = (
        '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":2,"s":"BTCUSDT","k":{"t":60000,"T":119999,'
        '"s":"BTCUSDT","i":"1m","f":1,"L":9,"o":"1","c":"2","h":"3","l":"0.5","v":"10","n":9,"x":true,'
        '"q":"15","V":"4","Q":"6","B":"0"}}}'
    )
    bar = spot.decode(kline)[1]
    assert bar == ("1m", 60000, 119999, 1.0, 3.0, 0.5, 2.0, 10.0, 15.0, 9, 4.0, True)


def as_lists(diff: DepthDiff) -> DepthDiff:
    """``diff`` with its levels as lists (decoded diffs hold float64 arrays)."""
    return diff._replace(bids=list(map(float, diff.bids)), asks=list(map(float, diff.asks)))


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("market", "text", "message"),
    [
        ("spot", '{"stream":"btcusdt@trade","data":{', r"invalid JSON \(Expecting property name"),
        (
            "spot",
            _edit(SPOT_TRADE, '"p":"61837.63000000",', ""),
            r"^btcusdt@trade: missing field 'p'$",
        ),
        (
            "spot",
            _edit(SPOT_TRADE, '"q":"0.02000000"', '"q":"-0.02"'),
            r"btcusdt@trade: field 'q' is '-0.02': expected a finite, non-negative",
        ),
        (
            "spot",
            _edit(SPOT_TRADE, '"m":true', '"m":"yes"'),
            r"btcusdt@trade: field 'm' is 'yes': expected true or false",
        ),
        (
            "spot",
            _edit(SPOT_TRADE, '"t":7', '"t":"7"'),
            r"btcusdt@trade: field 't' is '7': expected an integer",
        ),
        (
            "spot",
            _edit(SPOT_TRADE, '"s":"BTCUSDT"', '"s":"ETHUSDT"'),
            r"btcusdt@trade: field 's' is 'ETHUSDT', expected 'BTCUSDT'",
        ),
        (
            "spot",
            _edit(SPOT_TOP, '"A":"1.5"', '"A":"NaN"'),
            r"btcusdt@bookTicker: field 'A' is 'NaN'",
        ),
        ("spot", _edit(SPOT_TOP, '"u":50093239212,', ""), r"btcusdt@bookTicker: missing field 'u'"),
        ("usdm", _edit(FUT_DEPTH, '"pu":9,', ""), r"btcusdt@depth@0ms: missing field 'pu'"),
        (
            "usdm",
            _edit(FUT_DEPTH, '["61800.20","0.014"]', '["61800.20"]'),
            r"btcusdt@depth@0ms: field 'b' level 0 is \['61800.20'\]: expected \[price, qty\]",
        ),
        (
            "usdm",
            _edit(FUT_DEPTH, '"0.000"', '"abc"'),
            r"btcusdt@depth@0ms: field 'a' level 0 qty is 'abc'",
        ),
        (
            "usdm",
            _edit(FUT_DEPTH, '"U":10', '"U":13'),
            r"btcusdt@depth@0ms: depth diff U 13 > u 12",
        ),
        ("spot", '{"stream":"btcusdt@depth5","data":{}}', r"unknown stream 'btcusdt@depth5'"),
        ("spot", '{"stream":"btcusdt@trade"}', r"'btcusdt@trade': missing field 'data'"),
        ("spot", '{"id":1}', r"neither a stream message .* nor a reply"),
        ("spot", "[1,2]", r"expected a JSON object"),
    ],
)
def test_decoder_errors_name_the_stream_and_the_field(market: str, text: str, message: str) -> None:
    decoder = MessageDecoder("spot" if market == "spot" else "usdm")
    with pytest.raises(DataError, match=message):
        decoder.decode(text)


def test_backoff_delays_grow_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(k, 0.5, 4.0, rng) for k in range(8)]
    ref = random.Random(1)
    assert delays == [min(4.0, 0.5 * 2**k) * (0.5 + 0.5 * ref.random()) for k in range(8)]
    assert all(0.25 <= d < 0.5 for d in delays[:1]) and all(2.0 <= d < 4.0 for d in delays[3:])


# ---------------------------------------------------------------------------------------------
# the local book on hand-made diffs (no network)


def spot_diff(first: int, last: int, bids: Any = (), asks: Any = ()) -> DepthDiff:
    return DepthDiff(
        first, last, None, [x for lv in bids for x in lv], [x for lv in asks for x in lv], 0
    )


def snap(last_id: int, bids: Any, asks: Any) -> dict[str, Any]:
    return {
        "lastUpdateId": last_id,
        "bids": [[str(p), str(q)] for p, q in bids],
        "asks": [[str(p), str(q)] for p, q in asks],
    }


def test_resync_snapshot_deletes_levels_it_lacks_and_replays_after_its_line() -> None:
    book = LiveBook("BTCUSDT", "spot")
    book.on_diff(1_000, 0, spot_diff(99, 101, bids=[(9.8, 1.0)]))
    assert book.wants_snapshot and book.best_bid() is None
    assert book.on_snapshot(2_000, 1, snap(100, [(10.0, 1.5), (9.9, 2.0)], [(10.1, 3.0)]))
    assert book.last_update_id == 101 and book.best_bid() == (10.0, 1.5)
    book.on_diff(3_000, 2, spot_diff(102, 103, asks=[(10.2, 1.0)]))
    book.on_diff(4_000, 3, spot_diff(105, 106, bids=[(9.7, 4.0)]))  # 104 missing: a gap
    assert (book.stats.gaps, book.stats.gap_times_ns, book.synced) == (1, [4_000], False)
    assert book.best_bid() is None and book.top(5) == ([], [])
    assert "line 4: depth sequence gap: U=105 but the previous diff had u=103" in book.gaps[0]
    book.on_diff(5_000, 4, spot_diff(107, 108, bids=[(9.5, 1.0)]))
    assert book.on_snapshot(6_000, 5, snap(106, [(10.0, 1.0), (9.6, 1.0)], [(10.2, 1.0)]))
    assert (book.stats.syncs, book.stats.resyncs, book.stats.sync_times_ns) == (
        2,
        1,
        [2_000, 6_000],
    )
    assert book.stats.stale_diffs == 1  # 105..106 was in the second snapshot
    assert book.top(2) == ([(10.0, 1.0), (9.6, 1.0)], [(10.2, 1.0)])
    depth, lines = book.drain()
    rows = list(
        zip(
            *(
                depth.column(c).to_pylist()
                for c in ("side", "price", "qty", "is_snapshot", "last_update_id")
            ),
            strict=True,
        )
    )
    assert rows == [
        (1, 10.0, 1.5, True, 100),  # first snapshot (line 1)
        (1, 9.9, 2.0, True, 100),
        (-1, 10.1, 3.0, True, 100),
        (1, 9.8, 1.0, False, 101),  # buffered diff: its own line 0, at the snapshot's time
        (-1, 10.2, 1.0, False, 103),
        (1, 10.0, 1.0, True, 106),  # resync snapshot (line 5) ...
        (1, 9.6, 1.0, True, 106),
        (1, 9.9, 0.0, True, 106),  # ... deleting the old levels it lacks
        (1, 9.8, 0.0, True, 106),
        (-1, 10.2, 1.0, True, 106),
        (-1, 10.1, 0.0, True, 106),
        (1, 9.5, 1.0, False, 108),  # buffered diff applied at the resync: the snapshot's line
    ]
    assert lines.tolist() == [1, 1, 1, 0, 2, 5, 5, 5, 5, 5, 5, 5]
    assert ts_numpy(depth.column("ts")).tolist() == [2_000] * 4 + [3_000] + [6_000] * 7
    # the engine's L2 book, fed these rows through l2events, ends with the same book
    rec = Recording("BTCUSDT", "spot", depth, lines, *empty_trades_and_tops(), 2_000, "hand")
    ev = recording_events(rec)
    l2 = L2Book(0.1, 0.001, tops=False)
    l2.run(ev, l2.prepare(ev), 0, 2**62)
    assert l2.depth(1, 5) == [(10.0, 1.0), (9.6, 1.0), (9.5, 1.0)]
    assert l2.depth(-1, 5) == [(10.2, 1.0)]


def empty_trades_and_tops() -> tuple[pa.Table, np.ndarray, pa.Table, np.ndarray]:
    from tickray.feeds.schemas import BOOK_TOPS, TRADES

    none = np.zeros(0, dtype=np.int64)
    return TRADES.empty_table(), none, BOOK_TOPS.empty_table(), none


def test_stale_snapshot_late_and_duplicate_diffs_are_dropped_never_applied() -> None:
    book = LiveBook("BTCUSDT", "usdm")
    fut = [DepthDiff(10 * k + 1, 10 * k + 10, 10 * k, [100.0 - k, 1.0], [], 0) for k in range(6)]
    book.on_diff(1, 0, fut[1])  # 11..20
    assert not book.on_snapshot(2, 1, snap(5, [(99.0, 1.0)], [(101.0, 1.0)]))  # older than U=11
    assert (book.stats.stale_snapshots, book.wants_snapshot) == (1, True)
    book.on_diff(3, 2, fut[0])  # late: 1..10 arrives after 11..20: dropped
    book.on_diff(4, 3, fut[2])  # 21..30
    assert book.on_snapshot(5, 4, snap(25, [(99.5, 1.0)], [(101.0, 1.0)]) | {"E": 1, "T": 1})
    assert book.last_update_id == 30 and book.stats.stale_diffs == 2  # 1..10 and 11..20
    book.on_diff(6, 5, fut[2])  # a duplicate
    book.on_diff(7, 6, fut[3])  # pu == 30
    assert (book.last_update_id, book.stats.stale_diffs, book.stats.gaps) == (40, 3, 0)
    depth, _ = book.drain()
    assert [r[:2] for r in message_runs(depth)] == [(25, 25), (21, 30), (31, 40)]
    assert assert_chain(depth, "usdm") == 1
    with pytest.raises(AssertionError):  # the checker itself catches a stale diff
        assert_chain(pa.concat_tables([depth, depth.slice(2, 1)]), "usdm")  # 21..30 again


def test_gaps_inside_the_buffer_are_found_when_the_snapshot_arrives() -> None:
    def buffered() -> LiveBook:
        book = LiveBook("BTCUSDT", "spot")
        book.on_diff(1, 0, spot_diff(101, 103, bids=[(9.0, 1.0)]))
        book.on_diff(2, 1, spot_diff(106, 107, bids=[(8.0, 1.0)]))  # 104..105 never came
        return book

    # the snapshot joins the first diff, and the book breaks at the second: synced at 103,
    # then a gap, with 106..107 kept for the next snapshot
    book = buffered()
    assert book.on_snapshot(3, 2, snap(102, [(10.0, 1.0)], [(11.0, 1.0)]))
    assert (book.stats.syncs, book.stats.gaps, book.wants_snapshot) == (1, 1, True)
    assert "line 2: depth sequence gap: U=106 but the previous diff had u=103" in book.gaps[0]
    assert book.on_snapshot(4, 3, snap(107, [(10.0, 2.0)], [(11.0, 1.0)]))
    assert (book.last_update_id, book.stats.stale_diffs, book.best_bid()) == (107, 1, (10.0, 2.0))
    # the snapshot is newer than the first diff, but the second does not join it
    book = buffered()
    assert not book.on_snapshot(3, 2, snap(104, [(10.0, 1.0)], [(11.0, 1.0)]))
    assert (book.stats.syncs, book.stats.gaps, book.stats.stale_diffs) == (0, 1, 1)
    assert "U=106, u=107: expected U <= 105 <= u; updates 105..105 are missing" in book.gaps[0]
    book.on_diff(5, 4, spot_diff(106, 107))  # repeated: stale, not buffered twice
    assert book.stats.stale_diffs == 2 and book.wants_snapshot
    assert book.on_snapshot(6, 5, snap(106, [(10.0, 1.0)], [(11.0, 1.0)]))
    assert book.last_update_id == 107 and book.best_bid() == (10.0, 1.0)


def test_bad_snapshot_is_counted_and_another_is_wanted() -> None:
    book = LiveBook("BTCUSDT", "spot")
    book.on_diff(1, 0, spot_diff(1, 5))
    assert not book.on_snapshot(2, 1, {"lastUpdateId": 3, "bids": [["10", "-1"]], "asks": []})
    assert book.stats.bad_snapshots == 1 and book.wants_snapshot
    assert "field 'bids' level 0 qty is '-1'" in book.stats.log[-1]
    assert not book.on_snapshot(3, 2, {"bids": [], "asks": []})
    assert "without field 'lastUpdateId'" in book.stats.log[-1]


def test_live_symbol_keeps_closed_bars_once_and_marks_as_funding_rows() -> None:
    live = LiveSymbol("BTCUSDT", "usdm")
    on_kline, on_mark = live.handler(StreamKind.KLINE), live.handler(StreamKind.MARK_PRICE)
    bar = Kline("1m", 60_000, 119_999, 1.0, 3.0, 0.5, 2.0, 10.0, 15.0, 9, 4.0, False)
    on_kline(1, 0, bar)  # still open: not a bar yet
    on_kline(2, 1, bar._replace(closed=True))
    on_kline(3, 2, bar._replace(closed=True))  # repeated (e.g. after a reconnect): kept once
    on_mark(4, 3, MarkPrice(61800.1, 61790.5, -0.0001, 28_800_000, 9))
    on_mark(5, 4, MarkPrice(61800.2, None, None, 28_800_000, 10))
    batch = live.drain()
    assert list(batch.bars) == ["1m"]
    assert batch.bars["1m"].column("ts").cast(pa.int64()).to_pylist() == [60_000 * 1_000_000]
    assert batch.bars["1m"].column("trade_count").to_pylist() == [9]
    assert batch.marks.to_pydict() | {"ts": None} == {
        "ts": None,
        "funding_rate": [-0.0001, None],
        "mark_price": [61800.1, 61800.2],
        "index_price": [61790.5, None],
    }
    assert live.drain().marks.num_rows == 0 and live.drain().bars == {}


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_compact_rows_cross_a_pickle_and_make_the_tables_a_drain_makes(market: str) -> None:
    # what a feed process hands its actor (drain_rows, pickled) gives exactly drain()'s tables
    def fed() -> LiveSymbol:
        live = LiveSymbol("BTCUSDT", market)
        futures = market == "usdm"
        diff = {
            k: DepthDiff(k, k + 1, k - 1 if futures else None, [9.0 + k / 100, 1.0], [], 0)
            for k in range(100, 110, 2)
        }
        on_diff, on_trade = live.handler(StreamKind.DEPTH), live.handler(StreamKind.TRADE)
        on_top, on_mark = live.handler(StreamKind.BOOK_TICKER), live.handler(StreamKind.MARK_PRICE)
        on_diff(1, 0, diff[100])
        live.book.on_snapshot(2, 1, snap(100, [(10.0, 1.5), (9.9, 2.0)], [(10.1, 3.0)]))
        on_trade(3, 2, Trade(7, 10.05, 0.5, True, 1))
        on_diff(4, 3, DepthDiff(102, 103, 101 if futures else None, [9.5, 0.0, 9.4], [10.2, 1], 0))
        on_diff(5, 4, diff[106])  # 104..105 missing: a gap, then a resync deleting levels
        assert live.book.on_snapshot(6, 5, snap(105 + futures, [(10.0, 1.0)], [(10.3, 2.0)]))
        on_top(7, 6, Top(108, 10.0, 1.0, 10.3, 2.0, None))
        on_mark(8, 7, MarkPrice(10.1, None, None, 0, 8))
        on_kline = live.handler(StreamKind.KLINE)
        on_kline(9, 8, Kline("1m", 60_000, 119_999, 1.0, 3.0, 0.5, 2.0, 10.0, 15.0, 9, 4.0, True))
        return live

    direct, handed = fed(), fed()
    want = direct.drain()
    got = pickle.loads(pickle.dumps(handed.drain_rows())).batch()
    assert want.depth.num_rows == 12 and want.depth["prev_last_update_id"].null_count == (
        8 if market == "usdm" else 12
    )
    prev = [None] * 3 + [99, 101, 101] + [None] * 5 + [105]
    assert got.depth["prev_last_update_id"].to_pylist() == (
        prev if market == "usdm" else [None] * 12
    )
    assert got.depth_line.tolist() == [1, 1, 1, 0, 3, 3] + [5] * 6
    assert got.depth["side"].to_pylist() == [1, 1, -1, 1, 1, -1, 1, 1, -1, -1, -1, 1]
    for name in ("depth", "trades", "agg_trades", "tops", "marks"):
        assert getattr(got, name).equals(getattr(want, name), check_metadata=True), name
    for name in ("depth_line", "trades_line", "agg_trades_line", "tops_line"):
        assert getattr(got, name).tolist() == getattr(want, name).tolist(), name
    assert got.bars.keys() == want.bars.keys() == {"1m"}
    assert got.bars["1m"].equals(want.bars["1m"])
    # both drained: the next drain is empty either way
    for live in (direct, handed):
        empty = pickle.loads(pickle.dumps(live.drain_rows())).batch()
        assert (empty.depth.num_rows, empty.trades.num_rows, empty.bars) == (0, 0, {})


def table_events(rec: Recording, tops: bool) -> MarketEvents:
    """The reference for continued_rows_events: a later drain's tables (depth, trades,
    tops) read back as columns and merged by line, as recording_events merges a file."""
    d, tr, tp = rec.depth, rec.trades, rec.tops
    parts = []
    if d.num_rows:
        parts.append(
            _depth_part(
                rec.depth_line.astype(np.int64),
                ts_numpy(d["ts"]),
                _np(d["side"]).astype(np.int8),
                _np(d["price"]).astype(np.float64),
                _np(d["qty"]).astype(np.float64),
                _np(d["last_update_id"]).astype(np.int64),
            )
        )
    if tr.num_rows:
        parts.append(_trade_part(rec, np.ones(tr.num_rows, dtype=bool)))
    if tops and tp.num_rows:
        parts.append(_top_part(rec, np.ones(tp.num_rows, dtype=bool)))
    if not parts:
        return MarketEvents(*(np.empty(0, dtype=t) for t in (np.int64, np.int8, np.int8, np.float64, np.float64, np.int64, bool)))  # fmt: skip
    return _merged(parts)


def rows_and_table_events(rows: SymbolRows, tops: bool) -> tuple[MarketEvents, MarketEvents]:
    """A later drain's events straight from its rows, and through its tables."""
    b = rows.batch()
    rec = Recording("BTCUSDT", "usdm", b.depth, b.depth_line, b.trades, b.trades_line, b.tops, b.tops_line, 0, "t")  # fmt: skip
    return continued_rows_events(rows, tops=tops), table_events(rec, tops)


def same_events(a: MarketEvents, b: MarketEvents) -> None:
    for name in MarketEvents._fields:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


@pytest.mark.parametrize("tops", [True, False])
def test_a_live_drain_s_events_from_its_rows_are_those_of_its_tables(tops: bool) -> None:
    live = LiveSymbol("BTCUSDT", "spot")
    on_diff, on_trade = live.handler(StreamKind.DEPTH), live.handler(StreamKind.TRADE)
    on_top = live.handler(StreamKind.BOOK_TICKER)
    live.book.on_snapshot(1, 0, snap(100, [(10.0, 1.5)], [(10.1, 3.0)]))
    live.drain_rows()  # the first drain goes through the tables (recording_events)
    on_diff(2, 1, spot_diff(101, 101, bids=[(10.0, 2.0), (9.9, 1.0)], asks=[(10.2, 1.0)]))
    on_top(3, 2, Top(101, 10.0, 2.0, 10.1, 3.0, None))
    on_trade(4, 3, Trade(7, 10.1, 0.5, False, 1))
    on_diff(5, 4, spot_diff(102, 102))  # no levels: no rows
    on_diff(6, 5, spot_diff(104, 104, bids=[(9.8, 1.0)]))  # a gap, then a resync
    assert live.book.on_snapshot(7, 6, snap(104, [(10.0, 1.0)], [(10.3, 2.0)]))
    on_trade(8, 7, Trade(8, 10.0, 0.25, True, 2))
    on_top(9, 8, Top(105, 10.0, 1.0, 10.3, 2.0, None))
    got, want = rows_and_table_events(live.drain_rows(), tops)
    assert len(want.ts) == (14 if tops else 10)
    same_events(got, want)
    same_events(*rows_and_table_events(live.drain_rows(), tops))  # an empty drain


@pytest.mark.realdata
@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_live_drains_of_a_real_recording_give_the_same_events_from_rows_and_tables(
    shared_data: Path, market: str
) -> None:
    source = load_source(shared_data, market)
    decoder = MessageDecoder("spot" if market == "spot" else "usdm")
    live = LiveSymbol("BTCUSDT", decoder.market)
    rng = random.Random(7)
    due, drains = rng.randrange(1, 3000), 0
    for seq, line in enumerate(source.lines):
        if line.stream is None:
            live.book.on_snapshot(line.ts, seq, json.loads(line.text))
        else:
            stream, event = decoder.decode(line.text)
            assert stream is not None
            live.handler(stream_kind(stream)[1])(line.ts, seq, event)
        if seq == due or seq == len(source.lines) - 1:
            rows = live.drain_rows()
            if live.book.first_snapshot_ts is not None and not rows.depth.is_snapshot.any():
                same_events(*rows_and_table_events(rows, True))
                drains += 1
            due += rng.randrange(1, 3000)
    assert drains >= 5


def test_recorder_flushes_a_row_group_by_count_or_by_time(tmp_path: Path) -> None:
    now = [0.0]
    rec = WsRecorder(tmp_path, "spot", batch_rows=3, batch_seconds=5.0, monotonic=lambda: now[0])
    for k in range(4):  # rows 0-2 flush by count, row 3 waits
        rec.write_message(k, 1_000 + k, 1, "btcusdt@trade", SPOT_TRADE)
    now[0] = 5.0
    rec.write_message(
        4, 2_000, 1, "ethusdt@trade", SPOT_TRADE.replace("btc", "eth").replace("BTC", "ETH")
    )
    rec.write_snapshot(5, 3_000, 2, "BTCUSDT", json.dumps(snap(100, [(1.0, 1.0)], [(2.0, 1.0)])))
    assert rec.close() == [tmp_path / "part-000000.parquet"]
    meta = pq.ParquetFile(tmp_path / "part-000000.parquet").metadata
    assert [meta.row_group(k).num_rows for k in range(meta.num_row_groups)] == [3, 2, 1]
    table, info = read_ws_messages(tmp_path)
    assert info == {"kind": "ws_messages", "schema_version": "1", "market": "spot"}
    assert table.column("kind").to_pylist() == [0] * 5 + [1]
    assert table.column("conn").to_pylist() == [1] * 5 + [2]
    assert table.column("symbol").to_pylist() == [None] * 5 + ["BTCUSDT"]
    with pytest.raises(DataError, match=r"holds symbols \['BTCUSDT', 'ETHUSDT'\]: pass symbol="):
        read_ws_recording(tmp_path)
    assert replay_ws_recording(tmp_path, "ethusdt").batch.trades.num_rows == 1
    assert read_ws_recording(tmp_path, "BTCUSDT").trades.num_rows == 4


# ---------------------------------------------------------------------------------------------
# the recorder (real files, no network)


def hftbacktest_into(recorder: WsRecorder, source: Source, symbol: str) -> None:
    """Feed a recorder what a live session that received this file would have given it."""
    for i, line in enumerate(source.lines):
        if line.stream is None:
            recorder.write_snapshot(i, line.ts, 1, symbol, line.text)
        else:
            recorder.write_message(i, line.ts, 1, line.stream, line.text)


def assert_same_recording(got: Recording, want: Recording) -> None:
    assert (got.symbol, got.market, got.snapshot_ts, got.gaps) == (
        want.symbol,
        want.market,
        want.snapshot_ts,
        want.gaps,
    )
    for name in ("depth", "trades", "tops"):
        assert getattr(got, name).equals(getattr(want, name), check_metadata=True), name
        np.testing.assert_array_equal(getattr(got, f"{name}_line"), getattr(want, f"{name}_line"))


@pytest.mark.realdata
@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_recorder_round_trip_equals_reading_the_hftbacktest_file(
    shared_data: Path, tmp_path: Path, market: str
) -> None:
    source = load_source(shared_data, market)
    with WsRecorder(
        tmp_path / "rec",
        "spot" if market == "spot" else "usdm",
        batch_rows=4000,
        batch_seconds=1e9,
        part_rows=20_000,
    ) as rec:
        hftbacktest_into(rec, source, "BTCUSDT")
        rec.wait()  # the batch on the writer thread
        assert rec.parts  # full parts are finished (renamed) while recording goes on
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    n_parts = -(-len(source.lines) // 20_000)
    assert files == [f"part-{k:06d}.parquet" for k in range(n_parts)]  # no .tmp left
    # row groups of at most batch_rows, parts of part_rows
    meta = pq.ParquetFile(tmp_path / "rec" / files[0]).metadata
    assert (meta.num_rows, meta.num_row_groups) == (20_000, 5)
    table, info = read_ws_messages(tmp_path / "rec")
    assert table.num_rows == len(source.lines) and info["market"] == market
    assert_same_recording(read_ws_recording(tmp_path / "rec"), source.rec)


@pytest.mark.realdata
def test_recorder_parts_are_complete_files_even_when_a_session_dies(
    shared_data: Path, tmp_path: Path
) -> None:
    source = load_source(shared_data, "spot")
    rec = WsRecorder(tmp_path, "spot", batch_rows=1000, batch_seconds=1e9, part_rows=3000)
    hftbacktest_into(
        rec, Source("spot", source.lines[:7500], source.rec, source.snapshot_line), "BTCUSDT"
    )
    rec.wait()  # the writer thread is done with the batch it was given, then...
    # no close(): the process "died" with one part unfinished
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".part-000002.parquet.tmp", "part-000000.parquet", "part-000001.parquet"]
    table, _ = read_ws_messages(tmp_path)
    assert table.column("seq").to_pylist() == list(range(6000))
    with pytest.raises(DataError, match="already holds a recording"):
        WsRecorder(tmp_path, "spot")


# ---------------------------------------------------------------------------------------------
# live sessions against the local Binance


class CountingSink:
    """Counts the messages of each connection, and passes everything on to a recorder."""

    def __init__(self, recorder: WsRecorder | None) -> None:
        self.recorder = recorder
        self.per_conn: Counter[int] = Counter()

    def write_message(
        self, seq: int, recv_ns: int, conn: int, stream: str | None, text: str
    ) -> None:
        self.per_conn[conn] += 1
        if self.recorder is not None:
            self.recorder.write_message(seq, recv_ns, conn, stream, text)

    def write_snapshot(self, seq: int, recv_ns: int, conn: int, symbol: str, text: str) -> None:
        if self.recorder is not None:
            self.recorder.write_snapshot(seq, recv_ns, conn, symbol, text)


async def live_session(
    server: FakeBinance,
    *,
    record: Path | None = None,
    ws_options: dict[str, Any] | None = None,
    checker: TopChecker | None = None,
    may_lose_the_end: bool = False,
) -> tuple[LiveFeed, BinanceWs, WsRecorder | None]:
    market = server.market
    async with local_binance(server) as (url, rest):
        recorder = WsRecorder(record, "spot" if market == "spot" else "usdm") if record else None
        sink = CountingSink(recorder)
        server.received = sink.per_conn.__getitem__
        ws = ws_client(market, url, sink=sink, **(ws_options or {}))
        feed = LiveFeed(ws, rest_snapshot_fetcher(rest), listener=checker, rng=random.Random(5))
        try:
            replayed = (lambda: server.cursor >= len(server.lines)) if may_lose_the_end else None
            await consume_until(feed, final_event(server, ws.streams), replayed)
        finally:
            await feed.close()
            if recorder is not None:
                recorder.close()
    return feed, ws, recorder


@pytest.mark.network
@pytest.mark.realdata
@pytest.mark.parametrize(
    ("market", "transport"),
    [("spot", "websockets"), ("usdm", "websockets"), ("spot", "aiohttp"), ("usdm", "aiohttp")],
)
def test_live_book_syncs_like_the_recording_and_matches_every_book_ticker(
    shared_data: Path, tmp_path: Path, market: str, transport: str
) -> None:
    source = load_source(shared_data, market)
    server = FakeBinance(source, PREFIX[market])
    checker = TopChecker(TopsOracle(source.rec))
    feed, ws, _ = run(live_session(server, checker=checker, ws_options={"transport": transport}))
    book = feed.book("BTCUSDT")
    assert checker.mismatches == [] and checker.compared > 300 and checker.syncs_compared == 1
    assert (book.stats.syncs, book.stats.gaps, book.stats.resyncs, book.stats.fetch_errors) == (
        1,
        0,
        0,
        0,
    )
    assert (ws.stats.connects, ws.stats.errors, ws.stats.messages) == (1, 0, PREFIX[market] - 1)
    assert server.rest_calls == [source.rec.depth.column("last_update_id")[0].as_py()]
    # the rows the live book applied are the rows read from the file (the same prefix), ids,
    # sides, prices and quantities alike; only the receive times and message numbers differ
    batch = feed.drain("BTCUSDT")
    prefix = tmp_path / "prefix.ws.gz"
    prefix.write_bytes(gzip.compress("".join(f"{x.ts} {x.text}\n" for x in server.lines).encode()))
    want = read_binance_recording(prefix)
    cols = [
        "first_update_id",
        "last_update_id",
        "prev_last_update_id",
        "side",
        "price",
        "qty",
        "is_snapshot",
    ]
    assert batch.depth.select(cols).equals(want.depth.select(cols))
    assert batch.trades.drop_columns("ts").equals(want.trades.drop_columns("ts"))
    assert batch.tops.drop_columns("ts").equals(want.tops.drop_columns("ts"))
    assert book.stats.stale_diffs == {"spot": 2, "usdm": 4}[market]  # pre-snapshot diffs it held


@pytest.mark.network
@pytest.mark.realdata
@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_dropped_and_reordered_diffs_are_gaps_that_resync_from_a_new_snapshot(
    shared_data: Path, market: str
) -> None:
    source = load_source(shared_data, market)
    server = FakeBinance(source, PREFIX[market])
    depth = server.depth_lines()
    n = len(depth)
    server.drop = frozenset({depth[n // 4]})
    server.swap = frozenset({depth[n // 2]})  # sent after the next diff
    checker = TopChecker(TopsOracle(source.rec))
    feed, ws, _ = run(live_session(server, checker=checker))
    stats = feed.book("BTCUSDT").stats
    assert (stats.gaps, stats.resyncs, stats.syncs, len(server.rest_calls)) == (2, 2, 3, 3)
    assert checker.mismatches == [] and checker.syncs_compared == 3
    assert stats.gap_times_ns == sorted(stats.gap_times_ns) and len(stats.sync_times_ns) == 3
    assert (
        stats.gap_times_ns[0]
        < stats.sync_times_ns[1]
        < stats.gap_times_ns[1]
        < stats.sync_times_ns[2]
    )
    # the late diff of the swapped pair, and the buffered diffs the snapshots held, were
    # dropped; every diff applied continues the book it was applied to
    batch = feed.drain("BTCUSDT")
    assert assert_chain(batch.depth, market) == 3
    assert stats.stale_diffs >= 1 + {"spot": 2, "usdm": 4}[market]
    assert ws.stats.connects == 1


@pytest.mark.network
@pytest.mark.realdata
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_dropped_connection_reconnects_with_seeded_backoff_and_resyncs(
    shared_data: Path, transport: str
) -> None:
    source = load_source(shared_data, "spot")
    server = FakeBinance(source, PREFIX["spot"], lose_on_reconnect=150)
    server.disconnect = {server.depth_lines()[200]}
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    checker = TopChecker(TopsOracle(source.rec))
    options = {"sleep": fake_sleep, "transport": transport}
    feed, ws, _ = run(live_session(server, checker=checker, ws_options=options))
    assert (ws.stats.connects, ws.stats.reconnects, ws.stats.drops, ws.stats.stalls) == (2, 1, 1, 0)
    assert slept == [backoff_delay(0, 0.01, 0.05, random.Random(7))]
    assert len(ws.stats.reconnect_times_ns) == 1
    stats = feed.book("BTCUSDT").stats
    # 150 lines lost while away (depth diffs among them): the first diff after the
    # reconnect does not chain, so the book resyncs
    assert (stats.gaps, stats.resyncs) == (1, 1)
    assert checker.mismatches == [] and checker.syncs_compared == 2
    assert [c.close_code for c in server.conns] == [1006, 1000]


@pytest.mark.network
@pytest.mark.realdata
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_watchdog_reconnects_a_silent_connection_and_nothing_lost_needs_no_resync(
    shared_data: Path, transport: str
) -> None:
    source = load_source(shared_data, "usdm")
    server = FakeBinance(source, PREFIX["usdm"])
    server.stall = {server.depth_lines()[300]}
    checker = TopChecker(TopsOracle(source.rec))
    options = {"stall_timeout": 0.3, "transport": transport}
    feed, ws, _ = run(live_session(server, checker=checker, ws_options=options))
    assert (ws.stats.stalls, ws.stats.reconnects, ws.stats.drops) == (1, 1, 0)
    # the replay resumes where it stopped: the diff sequence goes on unbroken
    stats = feed.book("BTCUSDT").stats
    assert (stats.gaps, stats.syncs) == (0, 1) and checker.mismatches == []
    assert server.conns[0].close_code == 1006  # aborted: no closing handshake with a mute peer


@pytest.mark.network
@pytest.mark.realdata
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connection_is_renewed_before_its_scheduled_end(shared_data: Path, transport: str) -> None:
    source = load_source(shared_data, "spot")
    server = FakeBinance(source, PREFIX["spot"])  # about 0.9 s
    checker = TopChecker(TopsOracle(source.rec))
    options = {"max_lifetime": 0.25, "transport": transport}
    feed, ws, _ = run(
        live_session(server, checker=checker, ws_options=options, may_lose_the_end=True)
    )
    # about 3 renewals in a 0.9 s session; fewer when the machine is slow and the first
    # connection drains a backlog at its close (what was sent on it is still read)
    assert ws.stats.scheduled >= 1 and ws.stats.reconnects == ws.stats.scheduled
    assert (ws.stats.drops, ws.stats.stalls) == (0, 0)
    assert [c.close_code for c in server.conns[:-1]] == [1000] * ws.stats.scheduled
    stats = feed.book("BTCUSDT").stats
    assert stats.resyncs == stats.gaps and checker.mismatches == []  # any loss was resynced


@pytest.mark.network
@pytest.mark.realdata
def test_malformed_messages_are_counted_named_and_skipped(shared_data: Path) -> None:
    source = load_source(shared_data, "spot")
    server = FakeBinance(source, PREFIX["spot"])
    lines = server.lines
    trade = next(i for i in range(3000, 4000) if lines[i].stream == "btcusdt@trade")
    top = next(i for i in range(3000, 4000) if lines[i].stream == "btcusdt@bookTicker")
    top2 = next(i for i in range(5000, 6000) if lines[i].stream == "btcusdt@bookTicker")
    diff = next(i for i in server.depth_lines()[100:] if '"a":[[' in lines[i].text)
    server.replace = {
        trade: re.sub(r'"p":"[0-9.]+",', "", lines[trade].text),
        top: re.sub(r'"A":"[0-9.]+"', '"A":"-1"', lines[top].text),
        diff: lines[diff].text.replace('"a":[[', '"a":[["x",'),
        top2: lines[top2].text[:50],
    }
    checker = TopChecker(TopsOracle(source.rec))
    feed, ws, _ = run(live_session(server, checker=checker))
    assert ws.stats.errors == 4 and len(ws.stats.error_log) == 4
    log = "\n".join(ws.stats.error_log)
    assert re.search(r"message \d+ \(connection 1\): btcusdt@trade: missing field 'p'", log)
    assert "btcusdt@bookTicker: field 'A' is '-1': expected a finite, non-negative decimal" in log
    assert "btcusdt@depth@100ms: field 'a' level 0 is ['x'," in log
    assert "invalid JSON" in log
    # the skipped diff breaks the sequence: one gap, one resync
    stats = feed.book("BTCUSDT").stats
    assert (stats.gaps, stats.resyncs) == (1, 1) and checker.mismatches == []

    async def strict() -> None:
        server2 = FakeBinance(source, PREFIX["spot"], replace={trade: server.replace[trade]})
        async with local_binance(server2) as (url, _):
            async for _msg in ws_client("spot", url, strict=True):
                pass

    with pytest.raises(DataError, match=r"btcusdt@trade: missing field 'p'"):
        run(strict())


@pytest.mark.network
@pytest.mark.realdata
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_subscribe_and_unsubscribe_on_an_open_connection(shared_data: Path, transport: str) -> None:
    source = load_source(shared_data, "spot")
    server = FakeBinance(source, PREFIX["spot"])

    async def scenario() -> tuple[BinanceWs, list[WsMessage]]:
        async with local_binance(server) as (url, _):
            ws = BinanceWs(
                "spot",
                ["btcusdt@trade"],
                base_url=url,
                proxy=None,
                stall_timeout=None,
                transport="aiohttp" if transport == "aiohttp" else "websockets",
            )
            got: list[WsMessage] = []
            async with ws:
                it = aiter(ws)
                got.append(await anext(it))
                task = asyncio.create_task(ws.subscribe(["btcusdt@bookTicker"]))
                while not task.done() or not any(m.stream == "btcusdt@bookTicker" for m in got):
                    got.append(await anext(it))
                await task
                # Binance pings; either library answers by itself while the consumer is busy
                server_conn = next(iter(ws_server_conns))
                pong = await server_conn.ping()
                while not pong.done():
                    got.append(await anext(it))
                refused = asyncio.create_task(ws.subscribe(["btcusdt@depth@0ms"]))
                gone = asyncio.create_task(ws.unsubscribe(["btcusdt@bookTicker"]))
                while not (refused.done() and gone.done()):
                    got.append(await anext(it))
                with pytest.raises(
                    WsError, match=r"SUBSCRIBE \['btcusdt@depth@0ms'\]: Binance error 2"
                ):
                    await refused
                await gone
                mark = len(got)
                for _ in range(300):
                    got.append(await anext(it))
                assert all(m.stream == "btcusdt@trade" for m in got[mark + 5 :])
            return ws, got

    ws_server_conns: set[ServerConnection] = set()
    handler = server.handler

    async def tracking(conn: ServerConnection) -> None:
        ws_server_conns.add(conn)
        await handler(conn)

    server.handler = tracking  # type: ignore[method-assign]
    ws, got = run(scenario())
    assert ws.streams == ("btcusdt@trade",)
    assert server.conns[0].subscribe_ids == [1, 2, 3]
    assert ws.stats.control_replies == 3 and ws.stats.errors == 0
    assert ws.stats.per_stream["btcusdt@bookTicker"] > 0


@pytest.mark.network
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unreachable_server_retries_with_backoff_then_gives_up(transport: str) -> None:
    async def scenario() -> tuple[BinanceWs, list[float]]:
        # a port that was just free: nothing listens there
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        slept: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            slept.append(seconds)

        ws = BinanceWs(
            "usdm",
            ["btcusdt@aggTrade"],
            base_url=f"ws://127.0.0.1:{port}",
            rng=random.Random(11),
            max_retries=3,
            sleep=fake_sleep,
            proxy=None,
            transport="aiohttp" if transport == "aiohttp" else "websockets",
        )
        with pytest.raises(WsError, match="gave up after 4 failed connection attempts"):
            async for _ in ws:
                pass
        return ws, slept

    ws, slept = run(scenario())
    rng = random.Random(11)
    assert slept == [backoff_delay(k, 0.5, 30.0, rng) for k in range(3)]
    assert ws.stats.connect_failures == 4 and ws.stats.connects == 0
    assert "connect to ws://127.0.0.1" in ws.stats.error_log[-1]


@pytest.mark.network
@pytest.mark.realdata
@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_recorded_live_session_replays_exactly_with_its_resyncs(
    shared_data: Path, tmp_path: Path, market: str
) -> None:
    source = load_source(shared_data, market)
    server = FakeBinance(source, PREFIX[market], lose_on_reconnect=100)
    depth = server.depth_lines()
    server.drop = frozenset({depth[len(depth) // 5]})
    server.disconnect = {depth[len(depth) // 2]}
    bad = depth[len(depth) // 3]
    server.replace = {bad: server.lines[bad].text[:40]}
    feed, ws, recorder = run(live_session(server, record=tmp_path / "rec"))
    assert recorder is not None and recorder.rows == ws.seq
    live = feed.drain("BTCUSDT")
    live_stats = feed.book("BTCUSDT").stats
    assert live_stats.gaps >= 3 and live_stats.resyncs == live_stats.gaps
    assert ws.stats.reconnects == 1 and ws.stats.errors == 1
    rep = replay_ws_recording(tmp_path / "rec")
    for name in ("depth", "trades", "tops"):
        assert getattr(rep.batch, name).equals(getattr(live, name), check_metadata=True), name
        np.testing.assert_array_equal(
            getattr(rep.batch, f"{name}_line"), getattr(live, f"{name}_line")
        )
    assert rep.errors == list(ws.stats.error_log)
    for name in ("syncs", "resyncs", "gaps", "stale_diffs", "sync_times_ns", "gap_times_ns"):
        assert getattr(rep.book.stats, name) == getattr(live_stats, name), name
    assert rep.book.gaps == feed.book("BTCUSDT").gaps
    messages, _ = read_ws_messages(tmp_path / "rec")
    assert set(messages.column("conn").to_pylist()) == {1, 2}
    assert messages.column("kind").to_pylist().count(1) == live_stats.snapshots
    # the engine's L2 book, replaying the recording through l2events, meets every bookTicker
    rec = read_ws_recording(tmp_path / "rec")
    assert rec.gaps == feed.book("BTCUSDT").gaps
    ev = recording_events(rec, tops=False)
    l2 = L2Book(TICK[market], 0.001, tops=False)
    ticks = l2.prepare(ev)
    oracle = TopsOracle(source.rec)
    i = compared = 0
    for e in np.flatnonzero(ev.end):
        i, _, _ = l2.run(ev.slice(0, e + 1), ticks[: e + 1], i, 2**62)
        if ev.kind[e] != DEPTH:
            continue
        want = oracle.at(int(ev.uid[e]))
        bb, ba = l2.best_bid_tick(), l2.best_ask_tick()
        assert want is not None and bb is not None and ba is not None
        assert (bb, ba) == (l2.tick_of(want[0]), l2.tick_of(want[2])), f"row {e}"
        compared += 1
    assert compared > 300
