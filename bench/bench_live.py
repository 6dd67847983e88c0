"""Live paper trading throughput: one symbol actor on loopback websocket streams.

A local Binance runs in a separate process: a websockets server that streams the real USD-M
BTCUSDT and ETHUSDT recordings (``../shared/data/crypto/ws_recordings/hftbacktest``; depth
diffs and trades only, in receive order) as fast as the client takes them, and an aiohttp
server that answers the depth snapshot requests with each recording's own snapshot. The
client is a whole paper session (``tickray.cluster.paper.run_paper``, in-process backend):
one symbol actor with both symbols keeps both books synced and runs the quoting strategy
through the L2 venue, stepping every 100 ms on the wall clock, while the portfolio settles
and the recorder writes.

Reported:

- messages/s the actor kept up with: the messages received, over the span of their receive
  times (the server never waits, so this is the client's capacity);
- the same messages through the message path alone (decode, book, rows; no network, no
  strategy), in this process, as the baseline of the ratio;
- decision latency p50/p99: from the receipt of the message an order was decided on to the
  wall time its step's results came back (at most one step, 100 ms, of it is the step);
- the peak RSS of this process.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tickray.actors.live import session_start
from tickray.cluster.paper import run_paper
from tickray.engine.clock import MS, SECOND
from tickray.engine.config import AccountConfig, L2Config, LiveConfig, RunConfig
from tickray.engine.instruments import SymbolSpec
from tickray.feeds.livebook import LiveSymbol
from tickray.feeds.ws import MessageDecoder, stream_kind
from tickray.feeds.wsrecord import read_ws_messages

HFT = Path("crypto") / "ws_recordings" / "hftbacktest"
FILES = {
    "BTCUSDT": "binance_usdm_BTCUSDT_2024-08-08.ws.gz",
    "ETHUSDT": "binance_usdm_ETHUSDT_2024-08-08.ws.gz",
}
TICKS = {"BTCUSDT": 0.1, "ETHUSDT": 0.01}
TARGET = 50_000


def _load(shared: Path) -> tuple[list[tuple[int, str]], dict[str, str]]:
    """(receive time, text) of every depth and trade message of both files, merged in
    receive order, and each symbol's snapshot JSON."""
    lines: list[tuple[int, str]] = []
    snaps: dict[str, str] = {}
    for symbol, name in FILES.items():
        for raw in gzip.decompress((shared / HFT / name).read_bytes()).decode().split("\n"):
            if not raw:
                continue
            ts, _, text = raw.partition(" ")
            if not text.startswith('{"stream":'):
                snaps[symbol] = text
            elif "@depth" in text[:40] or "@trade" in text[:40]:
                lines.append((int(ts), text))
    lines.sort(key=lambda x: x[0])
    return lines, snaps


def _server(shared: str, ports: Any) -> None:
    from aiohttp import web
    from websockets.asyncio.server import serve

    lines, snaps = _load(Path(shared))
    texts = [t for _, t in lines]

    async def depth(request: web.Request) -> web.Response:
        return web.Response(text=snaps[request.query["symbol"].upper()])

    async def stream(ws: Any) -> None:
        for text in texts:
            await ws.send(text)
        await asyncio.sleep(3600)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/fapi/v1/depth", depth)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        rest_port = runner.addresses[0][1]
        async with serve(stream, "127.0.0.1", 0, compression=None, max_queue=None) as ws:
            ports.put((ws.sockets[0].getsockname()[1], rest_port, len(texts)))
            await asyncio.sleep(3600)

    asyncio.run(main())


def _baseline(shared: Path) -> tuple[int, float]:
    """Messages and seconds through decode + book + rows, with no network and no strategy."""
    lines, snaps = _load(shared)
    decoder = MessageDecoder("usdm")
    syms = {s: LiveSymbol(s, "usdm") for s in FILES}
    began = time.perf_counter()
    for s, sym in syms.items():
        sym.book.on_snapshot(0, -1, json.loads(snaps[s]))
    for seq, (ts, text) in enumerate(lines):
        stream, event = decoder.decode(text)
        assert stream is not None
        symbol, kind = stream_kind(stream)
        syms[symbol].handler(kind)(ts, seq, event)
    for sym in syms.values():
        sym.drain()
    return len(lines), time.perf_counter() - began


def bench_live(shared: Path, seconds: int = 4) -> None:
    if not (shared / HFT / FILES["BTCUSDT"]).is_file():
        print(f"live: skipped, no recordings at {shared / HFT}", flush=True)
        return
    n_base, base_s = _baseline(shared)
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_server, args=(str(shared), ports), daemon=True)
    server.start()
    try:
        ws_port, rest_port, sent = ports.get(timeout=60)
        with tempfile.TemporaryDirectory(prefix="tickray-bench-live-") as tmp:
            sync = 100 * MS
            t0 = session_start(time.time_ns() + 200 * MS, sync, 1)
            config = RunConfig(
                data_root="",
                interval_ns=1,
                symbols=tuple(FILES),
                start_ns=t0,
                end_ns=t0 + seconds * SECOND,
                account=AccountConfig(initial_cash=1_000_000.0, allow_short=True),
                l2=L2Config(
                    files=dict.fromkeys(FILES, "live"),
                    strategy="quote",
                    params={"size": 0.01, "offset": 1, "max_position": 0.05},
                    wake_ticks=1,
                    tops=False,
                ),
                specs={s: SymbolSpec(s, tick_size=TICKS[s], step_size=0.001) for s in FILES},
                sync_ns=sync,
                approval="symbol",
                fuse=False,
                symbols_per_actor=len(FILES),
                live=LiveConfig(
                    market="usdm",
                    ws_url=f"ws://127.0.0.1:{ws_port}",
                    rest_url=f"http://127.0.0.1:{rest_port}",
                    duration_s=float(seconds),
                    on_stop="keep",
                    record=str(Path(tmp) / "rec"),
                    grace_s=0.0,
                    depth="0ms",
                    stall_timeout_s=0.0,
                ),
            )
            res = run_paper(config, Path(tmp) / "out", progress=False)
            live = json.loads((res.out / "live.json").read_text())
            msgs, _ = read_ws_messages(Path(tmp) / "rec" / "ws-BTCUSDT")
            ts = msgs.column("ts").cast("int64").to_numpy()
            ws_rows = int((msgs.column("kind").to_numpy() == 0).sum())
            span = (int(ts[-1]) - int(ts[0])) / 1e9
    finally:
        server.kill()
    rate = ws_rows / span if span > 0 else float("nan")
    base = n_base / base_s
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lat = live["decision_latency"]
    print(
        f"live_l2_paper_2sym_usdm: {ws_rows:,} of {sent:,} messages in {span:.2f} s = "
        f"{rate:,.0f} messages/s, peak RSS {peak:.0f} MB = {rate / base:.2f}x message path "
        f"alone ({base:,.0f}/s)",
        flush=True,
    )
    print(
        f"  (one symbol actor, 2 books synced, quoting through the L2 venue, 100 ms steps; "
        f"decision latency p50 {lat['p50_ms']:.1f} ms p99 {lat['p99_ms']:.1f} ms; "
        f"{live['books']}; target {TARGET:,} messages/s "
        f"{'met' if rate >= TARGET else 'NOT met'})",
        flush=True,
    )


if __name__ == "__main__":
    bench_live(Path(__file__).resolve().parents[2] / "shared" / "data")
    sys.exit(0)
