"""Order-book paper trading: a quoting strategy on a live book synced from a local Binance.

The local Binance (tests/test_feeds_ws.py's FakeBinance) replays the real spot BTCUSDT
recording on 127.0.0.1 at 20x and serves its REST depth snapshot; the session steps on
the wall clock every 100 ms, fills come from the live book through the L2 venue, and the
recorder's Parquet, replayed through ``tickray``'s order-book backtest, gives the same fills.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from loopthread import ServerThread, start_app
from test_feeds_ws import FakeBinance, load_source
from test_paper_exchange import add_exchange_info, spot_row
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import tickray
from tickray.actors.live import session_start
from tickray.actors.progress import Progress
from tickray.cluster.paper import run_paper
from tickray.cluster.runner import run_backtest
from tickray.engine.clock import MS, SECOND
from tickray.engine.config import AccountConfig, L2Config, LiveConfig, RunConfig
from tickray.engine.instruments import SymbolSpec

pytestmark = [pytest.mark.network, pytest.mark.realdata]


class LocalBinance(ServerThread):
    """FakeBinance's websocket and REST servers on 127.0.0.1, in their own thread; the REST
    server answers exchangeInfo too (BTCUSDT: tick 0.01, lot 0.00001, min notional 5)."""

    def __init__(self, server: FakeBinance) -> None:
        self.server = server
        self.ws_url = self.rest_url = ""
        super().__init__()

    async def serve(self) -> None:
        app = self.server.rest_app()
        btc = spot_row("BTCUSDT", "BTC", "USDT", "0.01000000", "0.00001000", "5.00000000")
        add_exchange_info(app, [btc], [])
        runner, self.rest_url = await start_app(app)
        try:
            async with serve(self.server.handler, "127.0.0.1", 0, compression=None) as ws:
                self.ws_url = f"ws://127.0.0.1:{ws.sockets[0].getsockname()[1]}"
                await self.running()
        finally:
            await runner.cleanup()


@pytest.fixture()
def binance(shared_data: Path) -> Iterator[LocalBinance]:
    source = load_source(shared_data, "spot")
    local = LocalBinance(FakeBinance(source, 10_000, speed=20.0))
    yield local
    local.close()


def quote_config(
    binance: LocalBinance,
    record: Path,
    seconds: int,
    feed: str = "process",
    transport: str = "websockets",
    absorb_ms: float = 25.0,
) -> RunConfig:
    sync = 100 * MS
    t0 = session_start(time.time_ns() + 300 * MS, sync, 1)
    return RunConfig(
        data_root="",
        interval_ns=1,
        symbols=("BTCUSDT",),
        start_ns=t0,
        end_ns=t0 + seconds * SECOND,
        account=AccountConfig(initial_cash=100_000.0, taker_fee=0.001, allow_short=True),
        l2=L2Config(
            files={"BTCUSDT": "live"},
            strategy="quote",
            params={"size": 0.01, "offset": 1, "max_position": 0.05},
            timer_ns=200 * MS,
        ),
        specs={"BTCUSDT": SymbolSpec("BTCUSDT", tick_size=0.01, step_size=0.00001)},
        sync_ns=sync,
        approval="symbol",
        fuse=False,
        live=LiveConfig(
            market="spot",
            ws_url=binance.ws_url,
            rest_url=binance.rest_url,
            duration_s=float(seconds),
            on_stop="keep",
            record=str(record),
            grace_s=0.0,
            feed=feed,
            transport=transport,
            absorb_ms=absorb_ms,
        ),
    )


@pytest.mark.parametrize(
    ("feed", "transport", "absorb_ms"), [("process", "websockets", 25.0), ("thread", "aiohttp", 0)]
)
def test_a_quoting_session_on_a_live_book_replays_to_the_same_fills(
    binance: LocalBinance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    feed: str,
    transport: str,
    absorb_ms: float,
) -> None:
    from tickray.cluster import paper as paper_module

    lines: list[str] = []

    class Sink:
        def draw(self, text: str, frac: float) -> None:
            lines.append(text)

        def done(self, text: str, frac: float) -> None:
            lines.append(text)

        def line(self, text: str) -> None:
            lines.append(text)

    monkeypatch.setattr(
        paper_module, "progress_for", lambda label, on=None: Progress(label, Sink(), fps=0)
    )
    rec = tmp_path / "rec"
    config = quote_config(binance, rec, 3, feed=feed, transport=transport, absorb_ms=absorb_ms)
    res = run_paper(config, tmp_path / "paper")
    live = json.loads((res.out / "live.json").read_text())
    assert live["steps"] == 30, live
    # between boundaries the actor took in what had arrived (or, with 0, only at them):
    # the replay below gives the same fills either way
    assert (live["absorbs"] >= 30) if absorb_ms else (live["absorbs"] == 0), live["absorbs"]
    # the feed ran in a child process of the actor (its CPU time is reported), or on a thread
    procs = live["feed_processes"]
    if feed == "process":
        assert len(procs) == 1 and procs[0]["pid"] != os.getpid() and procs[0]["cpu_s"] > 0
    else:
        assert procs == []
    assert live["messages"] > 1000 and live["reconnects"] == 0
    assert live["books"]["BTCUSDT"] == {"gaps": 0, "resyncs": 0}
    lat = live["decision_latency"]
    assert lat["p50_ms"] is not None and 0 <= lat["p50_ms"] <= lat["p99_ms"] < 5000
    # the status line: time, equity, positions, message rate, resyncs, reconnects
    shown = [x for x in lines if x.startswith("paper ")]
    assert len(shown) >= 25 and "msg/s | resyncs 0 | reconnects 0 | late 0" in shown[-1]
    paper = tickray.load(res.out)
    fills = paper.fills()
    assert len(fills) >= 3, paper.orders().tail()
    # the recorder's Parquet through the order-book backtest: the same decisions
    assert config.l2 is not None
    replay_cfg = replace(
        config, live=None, l2=replace(config.l2, files={"BTCUSDT": str(rec / "ws-BTCUSDT")})
    )
    replay = run_backtest(replay_cfg, tmp_path / "replay")
    again = tickray.load(replay.out)
    assert fills.equals(again.fills())
    assert paper.orders().drop(columns=["reason"]).equals(again.orders().drop(columns=["reason"]))
    # the same recording from the command line: the session's record folder, which says
    # which steps the session ran (the recorder holds some messages after its end too)
    session = json.loads((rec / "session.json").read_text())
    assert (session["start_ns"], session["end_ns"]) == (config.start_ns, config.end_ns)
    from tickray.cluster.cli import main

    argv = [
        "replay-l2", str(rec), "--sync", "100ms", "--size", "0.01", "--offset", "1",
        "--max-position", "0.05", "--timer", "200ms", "--fee", "0.001", "--maker-fee", "0.001",
        "--quiet", "--out", str(tmp_path / "cli"),
    ]  # fmt: skip
    assert main(argv) == 0
    cli = tickray.load(tmp_path / "cli")
    assert fills.equals(cli.fills())


def test_the_paper_l2_command_trades_a_live_book_with_the_exchange_s_rules_until_sigterm(
    binance: LocalBinance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tickray.cluster.cli import main

    out = tmp_path / "out"
    argv = [
        "paper-l2", "--symbols", "btcusdt", "--ws-url", binance.ws_url,
        "--rest-url", binance.rest_url, "--sync", "100ms", "--size", "0.01", "--offset", "1",
        "--max-position", "0.05", "--timer", "200ms", "--quiet", "--out", str(out),
        "--on-stop", "flatten", "--transport", "aiohttp", "--symbols-per-feed", "2",
    ]  # fmt: skip
    # no --duration: the session runs until SIGTERM, then flattens in one more step and
    # writes a complete folder
    timer = threading.Timer(2.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        rc = main(argv)
    finally:
        timer.cancel()
    assert rc == 0
    text = capsys.readouterr().out
    assert "order-book paper trading on spot: BTCUSDT tick 0.01 lot 1e-05 min notional 5" in text
    assert "stopped: interrupted by SIGTERM" in text
    live = json.loads((out / "live.json").read_text())
    assert live["stopped"] == "interrupted by SIGTERM" and live["steps"] >= 15, live
    assert live["books"]["BTCUSDT"]["gaps"] == 0 and live["messages"] > 500
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["specs"]["BTCUSDT"]["min_notional"] == 5.0  # from exchangeInfo
    cfg = run["config"]["live"]
    assert (cfg["transport"], cfg["feed"], cfg["symbols_per_feed"]) == ("aiohttp", "process", 2)
    assert not _feed_children()  # the feed's process ended with the session
    fills = tickray.load(out).fills()
    assert len(fills) >= 1
    assert (fills["position_after"] != 0).any()  # it held a position ...
    assert fills["position_after"].iloc[-1] == 0  # ... and ended flat


def _feed_children() -> list[int]:
    """Pids of this process's children that run a live feed."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if ppid == os.getpid() and b"tickray.actors.feedproc" in cmd:
            found.append(int(stat.parent.name))
    return found


def test_a_session_whose_feed_process_dies_fails_naming_it_and_keeps_what_it_recorded(
    binance: LocalBinance, tmp_path: Path
) -> None:
    config = quote_config(binance, tmp_path / "rec", seconds=6)
    killed: list[int] = []

    def kill_feed() -> None:
        for pid in _feed_children():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    timer = threading.Timer(2.0, kill_feed)
    timer.start()
    try:
        with pytest.raises(RuntimeError, match=r"live feed failed: .*the feed process \(pid \d+\)"):
            run_paper(config, tmp_path / "paper")
    finally:
        timer.cancel()
    assert len(killed) == 1
    partial = tmp_path / "paper.partial"
    assert "exit code -9" in (partial / "error.txt").read_text()
    assert any(p.suffix == ".parquet" for p in partial.iterdir())  # the steps that settled
    assert not (tmp_path / "paper").exists()


class TwoBooks(ServerThread):
    """A local Binance of two spot symbols, BTCUSDT and ETHUSDT, on 127.0.0.1: each
    connection gets the recorded messages of the symbols its URL asks for (the first
    ``n`` of each recording, merged in receive order, at ``speed`` times their pace), and
    the REST depth endpoint answers each symbol's recorded snapshot."""

    def __init__(self, shared: Path, n: int = 6000, speed: float = 20.0) -> None:
        hft = shared / "crypto" / "ws_recordings" / "hftbacktest"
        self.lines: list[tuple[int, str, str]] = []  # (receive ns, symbol, text)
        self.snaps: dict[str, str] = {}
        for symbol in ("BTCUSDT", "ETHUSDT"):
            path = hft / f"binance_spot_{symbol}_2024-08-08.ws.gz"
            raw = [x for x in gzip.decompress(path.read_bytes()).decode().split("\n") if x]
            for line in raw[:n]:
                ts, _, text = line.partition(" ")
                if text.startswith('{"stream":'):
                    self.lines.append((int(ts), symbol, text))
                else:
                    self.snaps[symbol] = text
        self.lines.sort(key=lambda x: x[0])
        self.speed = speed
        self.connections: list[frozenset[str]] = []
        self.ws_url = self.rest_url = ""
        super().__init__()

    async def _stream(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        asked = ws.request.path.partition("streams=")[2].split("/")
        symbols = frozenset(x.split("@")[0].upper() for x in asked)
        self.connections.append(symbols)
        mine = [(ts, text) for ts, sym, text in self.lines if sym in symbols]
        t0, w0 = mine[0][0], time.monotonic()
        try:
            for ts, text in mine:
                wait = (ts - t0) / 1e9 / self.speed - (time.monotonic() - w0)
                if wait > 0:
                    await asyncio.sleep(wait)
                await ws.send(text)
        except ConnectionClosed:  # the session ended first
            return
        await ws.wait_closed()

    async def serve(self) -> None:
        async def depth(request: web.Request) -> web.Response:
            return web.Response(text=self.snaps[request.query["symbol"].upper()])

        app = web.Application()
        app.router.add_get("/api/v3/depth", depth)
        runner, self.rest_url = await start_app(app)
        try:
            async with serve(self._stream, "127.0.0.1", 0, compression=None) as ws:
                self.ws_url = f"ws://127.0.0.1:{ws.sockets[0].getsockname()[1]}"
                await self.running()
        finally:
            await runner.cleanup()


@pytest.mark.parametrize(("per_feed", "backend"), [(1, "local"), (2, "local"), (1, "ray")])
def test_an_actor_s_symbols_stream_in_a_feed_process_each_and_replay_to_the_same_fills(
    shared_data: Path, tmp_path: Path, per_feed: int, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "ray":  # the actor, and so its feeds' processes, on a Ray worker
        request.getfixturevalue("ray_session")
    books = TwoBooks(shared_data)
    try:
        sync = 100 * MS
        t0 = session_start(time.time_ns() + 300 * MS, sync, 1)
        symbols = ("BTCUSDT", "ETHUSDT")
        rec = tmp_path / "rec"
        config = RunConfig(
            data_root="",
            interval_ns=1,
            symbols=symbols,
            start_ns=t0,
            end_ns=t0 + 3 * SECOND,
            account=AccountConfig(initial_cash=100_000.0, taker_fee=0.001, allow_short=True),
            l2=L2Config(
                files=dict.fromkeys(symbols, "live"),
                strategy="quote",
                params={"size": 0.01, "offset": 1, "max_position": 0.05},
                timer_ns=200 * MS,
            ),
            specs={s: SymbolSpec(s, tick_size=0.01, step_size=0.0001) for s in symbols},
            sync_ns=sync,
            approval="symbol",
            fuse=False,
            symbols_per_actor=2,
            backend=backend,
            live=LiveConfig(
                market="spot",
                ws_url=books.ws_url,
                rest_url=books.rest_url,
                duration_s=3.0,
                on_stop="keep",
                record=str(rec),
                grace_s=0.0,
                symbols_per_feed=per_feed,
            ),
        )
        res = run_paper(config, tmp_path / "paper")
    finally:
        books.close()
    live = json.loads((res.out / "live.json").read_text())
    # one actor; one connection and one feed process per symbol, or one for both
    assert sorted(map(sorted, books.connections)) == (
        [["BTCUSDT"], ["ETHUSDT"]] if per_feed == 1 else [["BTCUSDT", "ETHUSDT"]]
    )
    assert len(live["feed_processes"]) == 2 // per_feed
    assert all(p["pid"] != os.getpid() for p in live["feed_processes"])
    assert sorted(p.name for p in rec.iterdir()) == (
        ["session.json", "ws-BTCUSDT", "ws-ETHUSDT"]
        if per_feed == 1
        else ["session.json", "ws-BTCUSDT"]
    )
    assert live["books"] == dict.fromkeys(symbols, {"gaps": 0, "resyncs": 0})
    # the connections' counters, summed: every message of both recordings that came
    per_stream = live["ws"][0]["per_stream"]
    assert {s.split("@")[0] for s in per_stream} == {"btcusdt", "ethusdt"}
    assert live["ws"][0]["messages"] == sum(per_stream.values()) == live["messages"]
    fills = tickray.load(res.out).fills()
    assert set(fills["symbol"]) == set(symbols), fills.tail()
    # the recordings, replayed through the order-book backtest: the same fills
    assert config.l2 is not None
    files = {s: str(rec / f"ws-{s if per_feed == 1 else 'BTCUSDT'}") for s in symbols}
    replay_cfg = replace(config, live=None, l2=replace(config.l2, files=files))
    replay = run_backtest(replay_cfg, tmp_path / "replay")
    assert fills.equals(tickray.load(replay.out).fills())


def test_replay_l2_refuses_a_folder_without_a_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tickray.cluster.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["replay-l2", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "holds no recording (no" in capsys.readouterr().err
