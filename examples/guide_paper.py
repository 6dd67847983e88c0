"""Paper trading on live streams, recorded and replayed (docs/paper.md).

A stand-in for Binance runs on 127.0.0.1: a websockets server that streams 1-second klines
of two symbols in Binance's combined-stream format, on the wall clock. The script runs a
6-second paper session of the momentum strategy on it, recording every raw message, then
turns the recording into bars and backtests them over the same range: the fills are the
same, because the live session made its decisions from exactly those bars.

Run it with ``.venv/bin/python examples/guide_paper.py``. Against the real exchange the
only change is the spec: no ``live.ws_url`` (``tickray paper spec.toml`` streams from
Binance's public endpoint; no API key is needed for market data).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import websockets

import tickray
from tickray.cluster.paper import paper_config, run_paper
from tickray.cluster.spec import check_document
from tickray.engine.clock import iso
from tickray.feeds.livebars import store_recorded_bars

OUT = Path(os.environ.get("TICKRAY_EXAMPLE_OUT") or tempfile.mkdtemp(prefix="guide-paper-"))
SYMBOLS = ["AAAUSDT", "BBBUSDT"]


def kline(symbol: str, open_s: int) -> str:
    """The closed 1 s kline opened at ``open_s``, prices a fixed function of time."""
    base = 100.0 + (open_s % 7) * 0.5 + (1.5 if (open_s + len(symbol)) % 3 == 2 else 0.0)
    o, c = base - 0.2, base
    k = {"t": open_s * 1000, "T": open_s * 1000 + 999, "s": symbol, "i": "1s", "f": 1,
         "L": 2, "o": f"{o:.2f}", "c": f"{c:.2f}", "h": f"{c + 0.1:.2f}",
         "l": f"{o - 0.1:.2f}", "v": "10", "n": 5, "x": True, "q": "1000", "V": "5",
         "Q": "500", "B": "0"}  # fmt: skip
    data = {"e": "kline", "E": open_s * 1000 + 1000, "s": symbol, "k": k}
    return json.dumps({"stream": f"{symbol.lower()}@kline_1s", "data": data})


async def stream(ws: Any) -> None:
    """Each second, the bars that just closed (as Binance sends a kline with x = true)."""
    query = parse_qs(urlsplit(ws.request.path).query)
    symbols = [s.split("@")[0].upper() for s in query["streams"][0].split("/")]
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            second = math.floor(time.time()) + 1
            await asyncio.sleep(second + 0.03 - time.time())
            for s in symbols:
                await ws.send(kline(s, second - 1))


def serve_in_background() -> int:
    ready: list[int] = []
    started = threading.Event()

    async def main() -> None:
        async with websockets.serve(stream, "127.0.0.1", 0) as server:
            ready.append(server.sockets[0].getsockname()[1])
            started.set()
            await asyncio.Future()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    started.wait(10)
    return ready[0]


port = serve_in_background()
spec = {
    "data": {"interval": "1s"},
    "universe": {"symbols": SYMBOLS},
    "strategy": {"name": "momentum", "params": {"window": 2, "threshold": 0.0}},
    "account": {"allow_short": True},
    "live": {
        "ws_url": f"ws://127.0.0.1:{port}",
        "duration": "6s",
        "record": str(OUT / "recording"),
        "on_stop": "keep",
    },
}
config = paper_config(check_document(spec))
print(f"paper session from {iso(config.start_ns)} for 6 s on port {port} ...")
result = run_paper(config, OUT / "paper", progress=False)
live = json.loads((result.out / "live.json").read_text())
print(
    f"{live['steps']} steps, {live['messages']} messages, late bars {live['late_bars']}, "
    f"bar latency p50 {live['bar_latency']['p50_ms']:.1f} ms"
)
paper = tickray.load(result.out)
print(paper.summary())

# The recording, as bars, through an ordinary backtest of the same range.
store_recorded_bars(OUT / "recording", OUT / "bars", "1s")
replay = tickray.run(
    {
        "data": {
            "source": "files",
            "path": str(OUT / "bars"),
            "interval": "1s",
            "start": live["start"],
            "end": live["end"],
        },  # fmt: skip
        "universe": {"symbols": SYMBOLS},
        "strategy": spec["strategy"],
        "account": spec["account"],
    },
    backend="local",
    out=OUT / "replay",
    progress=False,
)
same = paper.fills().equals(replay.fills())
print(f"fills: {len(paper.fills())} live, the replay of the recording gives the same: {same}")
if live["late_bars"] == 0:  # a bar past the grace period is used a step late live
    assert same and len(paper.fills()) > 0
