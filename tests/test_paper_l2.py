"""Order-book paper trading: a quoting strategy on a live book synced from a local Binance.

The local Binance (tests/test_feeds_ws.py's FakeBinance) replays the real spot BTCUSDT
recording on 127.0.0.1 at 20x and serves its REST depth snapshot; the session steps on
the wall clock every 100 ms, fills come from the live book through the L2 venue, and the
recorder's Parquet, replayed through ``tickray``'s order-book backtest, gives the same fills.
"""

from __future__ import annotations

import asyncio
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
from test_feeds_ws import FakeBinance, load_source
from test_paper_exchange import add_exchange_info, spot_row
from websockets.asyncio.server import serve

import tickray
from tickray.actors.live import session_start
from tickray.actors.progress import Progress
from tickray.cluster.paper import run_paper
from tickray.cluster.runner import run_backtest
from tickray.engine.clock import MS, SECOND
from tickray.engine.config import AccountConfig, L2Config, LiveConfig, RunConfig
from tickray.engine.instruments import SymbolSpec

pytestmark = [pytest.mark.network, pytest.mark.realdata]


class LocalBinance:
    """FakeBinance's websocket and REST servers on 127.0.0.1, in their own thread; the REST
    server answers exchangeInfo too (BTCUSDT: tick 0.01, lot 0.00001, min notional 5)."""

    def __init__(self, server: FakeBinance) -> None:
        self.server = server
        self.ws_url = self.rest_url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        assert self._ready.wait(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        app = self.server.rest_app()
        btc = spot_row("BTCUSDT", "BTC", "USDT", "0.01000000", "0.00001000", "5.00000000")
        add_exchange_info(app, [btc], [])
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.rest_url = f"http://{host}:{port}"
        try:
            async with serve(self.server.handler, "127.0.0.1", 0, compression=None) as ws:
                self.ws_url = f"ws://127.0.0.1:{ws.sockets[0].getsockname()[1]}"
                self._ready.set()
                await self._stop
        finally:
            await runner.cleanup()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self.thread.join(10)


@pytest.fixture()
def binance(shared_data: Path) -> Iterator[LocalBinance]:
    source = load_source(shared_data, "spot")
    local = LocalBinance(FakeBinance(source, 10_000, speed=20.0))
    yield local
    local.close()


def quote_config(binance: LocalBinance, record: Path, seconds: int) -> RunConfig:
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
        ),
    )


def test_a_quoting_session_on_a_live_book_replays_to_the_same_fills(
    binance: LocalBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
    config = quote_config(binance, rec, seconds=3)
    res = run_paper(config, tmp_path / "paper")
    live = json.loads((res.out / "live.json").read_text())
    assert live["steps"] == 30, live
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
    # the same recording from the command line: the session's record folder
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
        "--on-stop", "flatten",
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
    fills = tickray.load(out).fills()
    assert len(fills) >= 1
    assert (fills["position_after"] != 0).any()  # it held a position ...
    assert fills["position_after"].iloc[-1] == 0  # ... and ended flat


def test_replay_l2_refuses_a_folder_without_a_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tickray.cluster.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["replay-l2", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "holds no recording (no" in capsys.readouterr().err
