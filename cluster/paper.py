"""Paper trading: a run spec's strategy on live Binance kline streams (``tickray paper``).

:func:`paper_config` turns a spec into a live session's configuration: the symbols come
from ``universe.symbols`` (required), the bar interval from ``data.interval``, the stream
and session settings from the ``[live]`` section; no data folder is read. The session
starts at the next bar close after launch. :func:`run_paper` runs it over the topology of
:mod:`tickray.actors.live` and writes the same results folder as a backtest (fills,
orders, equity, metrics, report), plus ``live.json``: websocket counters, reconnects,
bar latency (receive time minus bar close, p50/p99), steps' lag behind their boundaries,
decision latency (from the receipt of the message an order was decided on to the wall
time its step's results came back, p50/p99), late bars, gaps and book resyncs.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tickray.actors.backends import make_backend
from tickray.actors.clock import RunInterrupted
from tickray.actors.live import LiveClock, LiveSymbolActor, check_stop, session_start
from tickray.actors.progress import progress_for
from tickray.cluster.report import write_report
from tickray.cluster.runner import (
    RunResult,
    _stop_on_signals,
    recorder_for,
    results_metrics,
    run_info,
)
from tickray.cluster.spec import assemble_run
from tickray.engine.clock import format_duration, iso
from tickray.engine.config import LiveConfig, RunConfig
from tickray.engine.spec import RunSpec, SpecError
from tickray.feeds.ws import KLINE_INTERVALS

__all__ = ["paper_config", "run_paper"]


def paper_config(spec: RunSpec, now_ns: int | None = None) -> RunConfig:
    """The live session of ``spec`` starting at the first bar close after ``now_ns``."""
    v = spec.values
    symbols = list(v["universe"]["symbols"] or ())
    if not symbols:
        raise SpecError("universe.symbols: paper trading needs the symbols to stream")
    if spec.grid:
        raise SpecError("strategy.params: a paper session runs one parameter set, not a grid")
    interval = v["data"]["interval"]
    sync = v["run"]["sync"] or interval
    if sync % interval:
        raise SpecError("run.sync: must be a multiple of data.interval for paper trading")
    live = v["live"]
    name = format_duration(interval)
    if name not in KLINE_INTERVALS or (name == "1s" and live["market"] != "spot"):
        raise SpecError(
            f"data.interval: {live['market']} streams no {name} klines "
            f"(intervals: {', '.join(KLINE_INTERVALS)}; 1s on spot only)"
        )
    t0 = session_start(time.time_ns() if now_ns is None else now_ns, sync, interval)
    duration = live["duration"]
    end = t0 + (duration if duration else sync)
    config = assemble_run(spec, None, "", symbols, t0, end, {})
    if v["account"]["allow_short"] is None:  # the demo data's default does not apply here
        short = v["account"]["type"] == "perp"
        config = replace(config, account=replace(config.account, allow_short=short))
    return replace(
        config,
        sync_ns=sync,
        fuse=False,
        live=LiveConfig(
            market=live["market"],
            ws_url=live["ws_url"] or "",
            duration_s=(duration or 0) / 1e9,
            grace_s=live["grace"],
            on_stop=live["on_stop"],
            record=live["record"] or "",
            stall_timeout_s=live["stall_timeout"],
        ),
    )


def run_paper(
    config: RunConfig,
    out: str | Path,
    *,
    address: str | None = None,
    progress: bool | None = None,
) -> RunResult:
    """Run the live session ``config`` (from :func:`paper_config`) and write ``out``.

    It ends after ``live.duration_s`` (0: never), or at Ctrl-C / SIGTERM: then the
    result's ``interrupted`` says why, and the folder is still complete (a paper
    session's end is its stop). See :mod:`tickray.actors.live` for ``on_stop``.
    """
    live = config.live
    if live is None:
        raise ValueError("run_paper: config.live is not set (use paper_config)")
    began = time.perf_counter()
    recorder = recorder_for(config, out)
    backend = make_backend(
        config.backend, address or config.address, config.remote_portfolio, LiveSymbolActor
    )
    t_end = config.end_ns if live.duration_s else None
    bar = progress_for("paper", progress)
    clock = LiveClock(config, backend, recorder, config.start_ns, t_end, bar)
    stopped = ""
    try:
        try:
            with _stop_on_signals(clock):
                summary = clock.run()
                check_stop(clock)
        except RunInterrupted as stop:
            stopped = stop.why
            summary = backend.summary()
        bar.close(stopped)
        status = backend.call("live_status")
        backend.call("stop_feed")
        final = replace(config, end_ns=clock.reached)
        recorder.close_files()
        metrics = results_metrics(recorder.partial, final, summary)
        info = run_info(final, clock) | {"live": _live_info(clock, status, stopped)}
        path = recorder.commit(metrics, info)
        (path / "live.json").write_text(
            json.dumps(info["live"], indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        write_report(path)
    except BaseException as exc:
        bar.close("stopped")
        with contextlib.suppress(Exception):  # the feeds' threads end with the session
            backend.call("stop_feed")
        recorder.fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        backend.close()
    return RunResult(path, metrics, clock.stats, time.perf_counter() - began, stopped)


def _quantiles(ns: list[int]) -> dict[str, float | None]:
    if not ns:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
    }


def _live_info(clock: LiveClock, status: list[dict[str, Any]], stopped: str) -> dict[str, Any]:
    ws = [s["ws"] for s in status]
    lat = [x for s in status for x in s["latency_ns"]]
    return {
        "start": iso(clock.t0),
        "end": iso(clock.reached),
        "interval": format_duration(clock.config.interval_ns),
        "steps": clock.stats.settles,
        "stopped": stopped or "duration",
        "late_bars": clock.late_bars,
        "bar_latency": _quantiles(lat),
        "step_lag": _quantiles(clock.step_lag_ns),
        "decision_latency": _quantiles(clock.decision_lag_ns),
        "gaps": {k: v for s in status for k, v in s["gaps"].items()},
        "duplicates": sum(s["duplicates"] for s in status),
        "books": {k: v for s in status for k, v in s.get("books", {}).items()},
        "messages": sum(int(w.get("messages", 0)) for w in ws),
        "reconnects": sum(int(w.get("reconnects", 0)) for w in ws),
        "errors": sum(int(w.get("errors", 0)) for w in ws),
        "ws": ws,
    }
