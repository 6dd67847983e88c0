"""Paper trading against a local websockets server that speaks Binance's kline streams.

The server streams 1 s klines for the symbols in its URL, on the wall clock, as Binance's
combined stream does (``{"stream": ..., "data": {"e": "kline", ...}}``): an in-progress
update inside each second and the closed (``x: true``) bar just after it ends. Prices are
a deterministic function of the symbol and the bar's open time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import websockets
from loopthread import ServerThread

import tickray
from tickray.cluster.paper import paper_config, run_paper
from tickray.cluster.spec import check_document
from tickray.feeds.livebars import recorded_bars, store_recorded_bars

pytestmark = pytest.mark.network


def price(symbol: str, open_s: int) -> float:
    """Up two seconds, down one (shifted per symbol): a 2-bar momentum flips often."""
    phase = (open_s + zlib.crc32(symbol.encode())) % 3
    return round(100.0 + 0.5 * (open_s % 7) + (1.5 if phase == 2 else 0.0), 2)


def kline(symbol: str, open_s: int, closed: bool) -> str:
    o, c = price(symbol, open_s - 1), price(symbol, open_s)
    k = {
        "t": open_s * 1000,
        "T": open_s * 1000 + 999,
        "s": symbol,
        "i": "1s",
        "f": 1,
        "L": 2,
        "o": f"{o:.2f}",
        "c": f"{c:.2f}",
        "h": f"{max(o, c) + 0.05:.2f}",
        "l": f"{min(o, c) - 0.05:.2f}",
        "v": "12.5",
        "n": 7,
        "x": closed,
        "q": "1250.0",
        "V": "6.0",
        "Q": "600.0",
        "B": "0",
    }
    data = {"e": "kline", "E": open_s * 1000 + (1000 if closed else 500), "s": symbol, "k": k}
    return json.dumps({"stream": f"{symbol.lower()}@kline_1s", "data": data})


class KlineServer(ServerThread):
    """A websockets server on 127.0.0.1 in its own thread."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        super().__init__()

    async def _handler(self, ws: Any) -> None:
        self.connections += 1
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._stream(ws)

    async def _stream(self, ws: Any) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)
        symbols = [s.split("@")[0].upper() for s in query["streams"][0].split("/")]
        while True:
            now = time.time()
            second = math.floor(now) + 1
            await asyncio.sleep(second - now - 0.5 if second - now > 0.5 else 0)
            for s in symbols:  # the bar opened at second - 1, half way
                await ws.send(kline(s, second - 1, closed=False))
            await asyncio.sleep(max(0.0, second + 0.03 - time.time()))
            for s in symbols:
                await ws.send(kline(s, second - 1, closed=True))

    async def serve(self) -> None:
        async with websockets.serve(self._handler, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            await self.running()


@pytest.fixture()
def server() -> Iterator[KlineServer]:
    srv = KlineServer()
    yield srv
    srv.close()


def paper_spec(port: int, **live: Any) -> dict[str, Any]:
    return {
        "data": {"interval": "1s"},
        "universe": {"symbols": ["AAAUSDT", "BBBUSDT"]},
        "strategy": {"name": "momentum", "params": {"window": 2, "threshold": 0.0}},
        "account": {"allow_short": True},
        "live": {"ws_url": f"ws://127.0.0.1:{port}", "grace": 1.0} | live,
    }


def test_a_recorded_paper_session_replays_to_the_same_fills(
    server: KlineServer, tmp_path: Path
) -> None:
    rec = tmp_path / "rec"
    spec = paper_spec(server.port, duration="6s", record=str(rec), on_stop="keep")
    config = paper_config(check_document(spec))
    res = run_paper(config, tmp_path / "paper", progress=False)
    assert not res.interrupted
    live = json.loads((res.out / "live.json").read_text())
    assert live["steps"] == 6 and live["late_bars"] == 0, live
    assert live["messages"] >= 2 * 6 * 2 and live["reconnects"] == 0
    assert live["bar_latency"]["p50_ms"] is not None and live["bar_latency"]["p50_ms"] >= 0
    paper = tickray.load(res.out)
    assert len(paper.fills()) >= 3
    # the recording holds the session's bars; a backtest of them decides the same
    bars = recorded_bars(rec, "1s")
    assert sorted(bars) == ["AAAUSDT", "BBBUSDT"]
    store_recorded_bars(rec, tmp_path / "bars", "1s")
    from tickray.cluster.cli import main

    assert (
        main(["data", "import", str(rec), "--out", str(tmp_path / "cli"), "--interval", "1s"]) == 0
    )
    for sym in ("AAAUSDT", "BBBUSDT"):
        got = sorted((tmp_path / "cli").rglob(f"{sym}/*.parquet"))
        assert got and [p.read_bytes() for p in got] == [
            p.read_bytes() for p in sorted((tmp_path / "bars").rglob(f"{sym}/*.parquet"))
        ]
    replay = tickray.run(
        {
            "data": {
                "source": "files",
                "path": str(tmp_path / "bars"),
                "interval": "1s",
                "start": live["start"],
                "end": live["end"],
            },
            "universe": {"symbols": ["AAAUSDT", "BBBUSDT"]},
            "strategy": spec["strategy"],
            "account": spec["account"],
        },
        backend="local",
        out=tmp_path / "replay",
        progress=False,
    )
    assert paper.fills().equals(replay.fills())
    assert paper.equity().equals(replay.equity())


def test_sigterm_stops_the_session_and_flattens(server: KlineServer, tmp_path: Path) -> None:
    spec = paper_spec(server.port, on_stop="flatten")
    config = paper_config(check_document(spec))
    timer = threading.Timer(4.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        res = run_paper(config, tmp_path / "paper", progress=False)
    finally:
        timer.cancel()
    assert res.interrupted == "interrupted by SIGTERM"
    paper = tickray.load(res.out)  # a stopped session is a complete results folder
    live = json.loads((res.out / "live.json").read_text())
    assert live["stopped"] == "interrupted by SIGTERM"
    pos = paper.positions()  # one column per symbol, a row per step
    assert not pos.empty and (pos[["AAAUSDT", "BBBUSDT"]].iloc[-1] == 0).all(), pos.tail()
    fills = paper.fills()
    assert len(fills) >= 1 and fills.ts.max() == pos.ts.iloc[-1] - pd.Timedelta(seconds=1)


def test_the_paper_command(server: KlineServer, tmp_path: Path, capsys: Any) -> None:
    from tickray.cluster.cli import main

    spec = tmp_path / "paper.json"
    spec.write_text(json.dumps(paper_spec(server.port)))
    rc = main(
        [
            "paper",
            str(spec),
            "--duration",
            "5s",
            "--on-stop",
            "flatten",
            "--quiet",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "paper trading AAAUSDT, BBBUSDT on spot 1s bars" in text
    # the end of the duration flattens too: one more step, whose market orders fill
    assert "6 steps" in text and "0 late bars" in text
    fills = tickray.load(tmp_path / "out").fills()
    assert len(fills) >= 2  # it traded (a window-2 momentum on bars that always move) ...
    last = fills.groupby("symbol")["position_after"].last()
    assert (last == 0).all(), last  # ... and ended flat
    bad = tmp_path / "bad.json"
    doc = paper_spec(server.port)
    del doc["universe"]
    bad.write_text(json.dumps(doc))
    rc = main(["paper", str(bad), "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "universe.symbols: paper trading needs the symbols" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_session_the_exchange_cannot_stream_is_refused() -> None:
    from tickray.engine.spec import SpecError

    doc = paper_spec(1, market="usdm")
    with pytest.raises(SpecError, match="data.interval: usdm streams no 1s klines"):
        paper_config(check_document(doc))
    doc["data"]["interval"] = "7m"
    doc["live"]["market"] = "spot"
    with pytest.raises(SpecError, match="data.interval: spot streams no 7m klines"):
        paper_config(check_document(doc))
