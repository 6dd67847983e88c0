"""Live paper trading throughput: one symbol actor on loopback websocket streams.

A local Binance runs in a separate process: a websockets server that streams the real USD-M
BTCUSDT and ETHUSDT recordings (``../shared/data/crypto/ws_recordings/hftbacktest``; depth
diffs and trades only, in receive order; each connection gets the symbols it asked for)
from the session's first step boundary on, as ready-made frames written straight to the
socket (the server is never the bottleneck), and an aiohttp server that answers the depth
snapshot requests with each recording's own snapshot. The client is a whole paper session
(``tickray.cluster.paper.run_paper``, in-process backend): one symbol actor with both
symbols, a feed process per symbol keeping its book synced, the quoting strategy trading
through the L2 venue, stepping every 100 ms on the wall clock, while the portfolio settles
and the recorder writes. Both websocket transports, two ways, three sessions each
(interleaved; the median is reported):

- capacity: the server sends as fast as the client reads; the messages/s the session took
  in (over the span of their receive times) is what it keeps up with;
- paced: the server sends 50,000 messages/s (all connections together, in the recordings'
  merged order). The session keeps up when the last message is taken within a step of
  when it was sent and the decision latency p99 is under two steps (one waiting for the
  boundary, one running).

Reported besides: the same messages through the message path alone (decode, book, rows;
no network, no strategy), in this process, as the baseline of the ratio; decision latency
p50/p99 (from the receipt of the message an order was decided on to the end of the step,
or of the absorb between two boundaries, that decided it: the actor takes in what arrived
every 25 ms, ``live.absorb_ms``); the CPU time per message of the feed processes (after
their start-up) and of the actor's process; the message path's stages (us per message).
"""

from __future__ import annotations

import asyncio
import bisect
import gzip
import itertools
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tickray.actors.live import session_start
from tickray.cluster.paper import run_paper
from tickray.engine.clock import MS, SECOND
from tickray.engine.config import AccountConfig, L2Config, LiveConfig, RunConfig
from tickray.engine.instruments import SymbolSpec
from tickray.feeds.livebook import Handler, LiveSymbol
from tickray.feeds.ws import MessageDecoder, stream_kind
from tickray.feeds.wsrecord import WsRecorder, read_ws_messages

HFT = Path("crypto") / "ws_recordings" / "hftbacktest"
FILES = {
    "BTCUSDT": "binance_usdm_BTCUSDT_2024-08-08.ws.gz",
    "ETHUSDT": "binance_usdm_ETHUSDT_2024-08-08.ws.gz",
}
TICKS = {"BTCUSDT": 0.1, "ETHUSDT": 0.01}
TARGET = 50_000
REPEATS = 3
STEP_MS = 100


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


def _frame(payload: bytes) -> bytes:
    """One unmasked server-to-client text frame (RFC 6455 5.2) holding ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 1 << 16:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return head + payload


def _server(shared: str, ports: Any) -> None:
    from aiohttp import web
    from websockets.asyncio.server import serve

    lines, snaps = _load(Path(shared))
    # The messages as ready-made websocket frames, written straight to the socket in large
    # chunks once the handshake is done: framing each message with ``ws.send`` costs the
    # server ~15 us of Python per message, which capped what this benchmark could see of the
    # client at ~60k messages/s; now the server sends at memory speed and never waits but on
    # the socket's flow control.
    # One stream of frames per set of symbols a connection asks for, in receive order, with
    # where each message ends in it and its place in the merged order of all of them (for a
    # paced stream).
    frames: dict[frozenset[str], tuple[bytes, list[int], list[int]]] = {}
    for n in range(1, len(FILES) + 1):
        for combo in itertools.combinations(sorted(FILES), n):
            lower = tuple(s.lower() + "@" for s in combo)
            mine = [(i, _frame(t.encode())) for i, (_, t) in enumerate(lines)]
            mine = [(i, f) for i, f in mine if lines[i][1][11:40].startswith(lower)]
            ends = list(itertools.accumulate(len(f) for _, f in mine))
            frames[frozenset(combo)] = (b"".join(f for _, f in mine), ends, [i for i, _ in mine])
    chunk = 1 << 16
    epochs: dict[int, int] = {}

    async def depth(request: web.Request) -> web.Response:
        return web.Response(text=snaps[request.query["symbol"].upper()])

    async def stream(ws: Any) -> None:
        # the path is /at<ns>/r<rate>/stream?streams=...: the session's first step boundary,
        # when streaming begins (what came before it would all land in the first step, and
        # its latency count the wait for the session to start), and the pace in messages a
        # second of all the connections together (0: as fast as the client reads)
        at, rate = ws.request.path.split("/")[1:3]
        start, pace = int(at.removeprefix("at")), int(rate.removeprefix("r"))
        asked = ws.request.path.partition("streams=")[2].split("/")
        blob, ends, order = frames[frozenset(s.split("@")[0].upper() for s in asked)]
        if pace:  # the session's connections share one start, 0.5 s after the first came
            start = epochs.setdefault(start, max(start, time.time_ns() + 500_000_000))
        await asyncio.sleep(max(0.0, (start - time.time_ns()) / 1e9))
        view = memoryview(blob)
        try:
            if not pace:
                for i in range(0, len(view), chunk):
                    ws.transport.write(view[i : i + chunk])
                    await ws.drain()
            else:  # every ms, what is due by then: message k of the merged order at k / pace
                sent = done = 0
                while done < len(ends):
                    due = (time.time_ns() - start) * pace // 1_000_000_000
                    upto = bisect.bisect_right(order, due - 1, lo=done)
                    if upto > done:
                        ws.transport.write(view[sent : ends[upto - 1]])
                        sent, done = ends[upto - 1], upto
                        await ws.drain()
                    await asyncio.sleep(0.001)
        except Exception:  # the client went away: nothing more to send
            return
        await ws.wait_closed()

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/fapi/v1/depth", depth)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        rest_port = runner.addresses[0][1]
        async with serve(stream, "127.0.0.1", 0, compression=None, max_queue=None) as ws:
            ports.put((ws.sockets[0].getsockname()[1], rest_port, len(lines)))
            await asyncio.sleep(3600)

    asyncio.run(main())


def _baseline(shared: Path, record: Path, reps: int = 3) -> tuple[int, dict[str, float]]:
    """Messages, and seconds per stage of the message path with no network and no strategy
    (the best of ``reps`` runs, each stage on its own: this machine is shared): decode alone;
    the whole path (decode, book and trade rows, a drain's tables every 2,000 messages); the
    recorder's ``write_message`` and flushes."""
    lines, snaps = _load(shared)
    LiveSymbol("BTCUSDT", "usdm").drain()  # imports what building tables needs, once
    best: dict[str, float] = {}
    for rep in range(reps):
        for stage, secs in _stages(lines, snaps, record / str(rep)).items():
            best[stage] = min(secs, best.get(stage, secs))
    return len(lines), best


def _stages(lines: list[tuple[int, str]], snaps: dict[str, str], record: Path) -> dict[str, float]:
    secs = dict.fromkeys(("decode", "book", "rows"), 0.0)
    clock = time.perf_counter
    decoder = MessageDecoder("usdm")
    syms = {s: LiveSymbol(s, "usdm") for s in FILES}
    routes: dict[str, Handler] = {}
    for s, sym in syms.items():
        sym.book.on_snapshot(0, -1, json.loads(snaps[s]))
        for stream in (f"{s.lower()}@depth@0ms", f"{s.lower()}@trade"):
            decoder.parser(stream)  # learned before the first message, as LiveFeed does
            routes[stream] = sym.handler(stream_kind(stream)[1])
    began = clock()
    for seq, (ts, text) in enumerate(lines):
        t0 = clock()
        stream, event = decoder.decode(text)
        t1 = clock()
        routes[stream or ""](ts, seq, event)
        t2 = clock()
        secs["decode"] += t1 - t0
        secs["book"] += t2 - t1
        if seq % 2000 == 1999:  # a 100 ms step's worth at 20k messages/s
            for sym in syms.values():
                sym.drain()
            secs["rows"] += clock() - t2
    t = clock()
    for sym in syms.values():
        sym.drain()
    secs["rows"] += clock() - t
    secs["path"] = clock() - began
    began = clock()
    with WsRecorder(record, "usdm") as rec:
        for seq, (ts, text) in enumerate(lines):
            rec.write_message(seq, ts, 1, "x@trade", text)
    secs["recorder"] = clock() - began
    return secs


def _session(
    ws_port: int,
    rest_port: int,
    seconds: int,
    record: str,
    out: Path,
    transport: str = "websockets",
    pace: int = 0,
) -> tuple[dict[str, Any], float]:
    """Run one paper session against the local Binance; its live.json and wall seconds."""
    sync = STEP_MS * MS
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
            ws_url=f"ws://127.0.0.1:{ws_port}/at{t0}/r{pace}",
            rest_url=f"http://127.0.0.1:{rest_port}",
            duration_s=float(seconds),
            on_stop="keep",
            record=record,
            grace_s=0.0,
            depth="0ms",
            stall_timeout_s=0.0,
            transport=transport,
        ),
    )
    began = time.perf_counter()
    cpu = _cpu()
    res = run_paper(config, out, progress=False)
    live: dict[str, Any] = json.loads((res.out / "live.json").read_text())
    live["client_cpu_s"] = _cpu() - cpu
    return live, time.perf_counter() - began


def _cpu() -> float:
    """CPU seconds of this process so far, all threads (user + system)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _timed(
    ws_port: int, rest_port: int, seconds: int, tmp: Path, transport: str, pace: int = 0
) -> dict[str, Any]:
    """One timed session: its message rate (from the recorder's receive times), decision
    latency and CPU time per message of the actor's process and of its feed process
    (after the feed's start-up)."""
    rec = tmp / f"rec-{transport}"
    live, _ = _session(
        ws_port, rest_port, seconds, str(rec), tmp / f"out-{transport}", transport, pace
    )
    # every feed's recording (one per symbol by default), merged in receive order
    ts = np.sort(
        np.concatenate(
            [
                msgs.column("ts").cast("int64").to_numpy()[msgs.column("kind").to_numpy() == 0]
                for msgs, _ in map(read_ws_messages, sorted(rec.glob("ws-*")))
            ]
        )
    )
    n = len(ts)
    span = (int(ts[-1]) - int(ts[0])) / 1e9
    feeds = live["feed_processes"]
    shutil.rmtree(rec)
    shutil.rmtree(tmp / f"out-{transport}")
    return {
        "n": n,
        "rate": n / span if span > 0 else float("nan"),
        "p50": live["decision_latency"]["p50_ms"],
        "p99": live["decision_latency"]["p99_ms"],
        "books": live["books"],
        "actor_us": live["client_cpu_s"] / n * 1e6,
        "feeds": len(feeds),
        "feed_us": sum(f["cpu_s"] - f["startup_cpu_s"] for f in feeds) / n * 1e6,
    }


def bench_live(shared: Path, seconds: int = 4) -> None:
    if not (shared / HFT / FILES["BTCUSDT"]).is_file():
        print(f"live: skipped, no recordings at {shared / HFT}", flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="tickray-bench-live-") as tmp:
        n_base, stage = _baseline(shared, Path(tmp) / "base-rec")
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_server, args=(str(shared), ports), daemon=True)
    server.start()
    cases = [(t, pace) for t in ("websockets", "aiohttp") for pace in (0, TARGET)]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in cases}
    try:
        ws_port, rest_port, sent = ports.get(timeout=60)
        with tempfile.TemporaryDirectory(prefix="tickray-bench-live-") as tmp:
            # a first session loads the numba-compiled book and venue code (from numba's
            # disk cache, or compiling it) in this process: kept out of the timed sessions
            _, warm_s = _session(ws_port, rest_port, 3, "", Path(tmp) / "warm")
            for _ in range(REPEATS):  # interleaved, so that a slow spell hits all alike
                for (transport, pace), got in runs.items():
                    got.append(_timed(ws_port, rest_port, seconds, Path(tmp), transport, pace))
    finally:
        server.kill()
    base = n_base / stage["path"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    us = {k: v / n_base * 1e6 for k, v in stage.items()}
    for (transport, pace), got in runs.items():
        mid = sorted(got, key=lambda r: r["rate"])[len(got) // 2]
        rates = ", ".join(f"{r['rate']:,.0f}" for r in got)
        if pace:
            # keeping up: the last message is taken within a step of when it was sent (no
            # backlog builds: the span of the receive times is at most the span of the send
            # times plus a step), and a decision comes within two steps of its message (one
            # waiting for the boundary, one running)
            behind_s = mid["n"] / mid["rate"] - (mid["n"] - 1) / pace
            kept = behind_s <= STEP_MS / 1000 and mid["p99"] < 2 * STEP_MS
            what = f"sent at {pace:,}/s ({behind_s * 1000:+.0f} ms behind at the end): received at"
            verdict = f"keeps up {'yes' if kept else 'NO'}"
        else:
            what = "as fast as it takes them:"
            verdict = f"target {TARGET:,}/s {'met' if mid['rate'] >= TARGET else 'NOT met'}"
        print(
            f"live_l2_paper_2sym_usdm_{transport}_{'paced' if pace else 'capacity'}: "
            f"{mid['n']:,} of {sent:,} messages {what} {mid['rate']:,.0f} messages/s "
            f"(median of {len(got)}: {rates}) = {mid['rate'] / base:.2f}x message path alone "
            f"({base:,.0f}/s); decision latency p50 {mid['p50']:.0f} ms p99 {mid['p99']:.0f} "
            f"ms; {verdict}",
            flush=True,
        )
        print(
            f"  (that session: CPU per message {mid['feed_us']:.1f} us in its "
            f"{mid['feeds']} feed processes, after their start-up, and {mid['actor_us']:.1f} "
            f"us in the actor's; books {mid['books']})",
            flush=True,
        )
    print(
        f"  (one symbol actor of 2 USD-M symbols, a feed process per symbol, books synced, "
        f"quoting through the L2 venue, {STEP_MS} ms steps, recorder on; peak RSS of this "
        f"process {peak:.0f} MB) message path alone, us per message: decode "
        f"{us['decode']:.2f}, book and trade rows {us['book']:.2f}, drains' tables "
        f"{us['rows']:.2f} (total {us['path']:.2f}); recorder {us['recorder']:.2f}; warm-up "
        f"session (numba code loaded) {warm_s:.1f} s",
        flush=True,
    )


if __name__ == "__main__":
    bench_live(Path(__file__).resolve().parents[2] / "shared" / "data")
    sys.exit(0)
