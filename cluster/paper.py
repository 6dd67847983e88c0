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

:func:`paper_l2_config` is the order-book session of ``tickray paper-l2``: depth diffs,
trades and book tickers of each symbol, books kept in sync, a tick or event strategy
trading on them; the symbols' trading rules (tick size, lot step, minimum notional)
come from the exchange's exchangeInfo (:func:`exchange_specs`), fetched once at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tickray.actors.backends import make_backend
from tickray.actors.clock import RunInterrupted
from tickray.actors.live import (
    LiveClock,
    LiveSymbolActor,
    check_stop,
    latency_quantiles,
    session_start,
)
from tickray.actors.progress import progress_for
from tickray.cluster.report import write_report
from tickray.cluster.runner import RunResult, recorder_for, results_metrics, run_info
from tickray.cluster.spec import assemble_run
from tickray.engine.clock import format_duration, iso
from tickray.engine.config import (
    AccountConfig,
    ConfigError,
    ExecutionConfig,
    L2Config,
    LiveConfig,
    RunConfig,
)
from tickray.engine.instruments import SymbolSpec
from tickray.engine.spec import RunSpec, SpecError
from tickray.feeds.rest import BinanceHTTPError, BinanceRest, Market
from tickray.feeds.schemas import DataError
from tickray.feeds.universe import specs_from_exchange_info
from tickray.feeds.ws import KLINE_INTERVALS

__all__ = [
    "STOP_SIGNAL",
    "exchange_specs",
    "paper_config",
    "paper_l2_config",
    "restart_at",
    "run_paper",
]

STOP_SIGNAL = signal.SIGUSR1
"""The signal that stops a session on request (the REST service's ``DELETE``): like
SIGTERM, but the session's ``stopped`` reads "stopped on request"."""


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


def restart_at(config: RunConfig, now_ns: int | None = None) -> RunConfig:
    """``config`` (a live session) moved to start at the first step boundary after
    ``now_ns`` (default: now), its duration kept: for a session built earlier than it
    runs (a queued service job)."""
    live = config.live
    if live is None:
        raise ValueError("restart_at: config.live is not set")
    now = time.time_ns() if now_ns is None else now_ns
    t0 = session_start(now, config.sync_ns, config.interval_ns)
    return replace(config, start_ns=t0, end_ns=t0 + (config.end_ns - config.start_ns))


def run_paper(
    config: RunConfig,
    out: str | Path,
    *,
    address: str | None = None,
    progress: bool | None = None,
    on_status: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run the live session ``config`` (from :func:`paper_config`) and write ``out``.

    It ends after ``live.duration_s`` (0: never), or at Ctrl-C / SIGTERM / SIGUSR1
    (:data:`STOP_SIGNAL`, "stopped on request"): then the result's ``interrupted``
    says why, and the folder is still complete (a paper session's end is its stop).
    See :mod:`tickray.actors.live` for ``on_stop``. ``on_status`` receives the
    session's status (:meth:`~tickray.actors.live.LiveClock.status`) about once a
    second, and its final status when it ends.
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
    clock = LiveClock(config, backend, recorder, config.start_ns, t_end, bar, on_status=on_status)
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
        clock.report_final(stopped or "duration", status)
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
        if live.record:  # what replaying the recording reproduces: the session's steps
            Path(live.record).mkdir(parents=True, exist_ok=True)
            (Path(live.record) / SESSION_FILE).write_text(
                json.dumps(
                    {
                        "start_ns": clock.t0,
                        "end_ns": clock.reached,
                        "sync_ns": config.sync_ns,
                        "results": str(path),
                    },
                    indent=2,
                )
                + "\n",
                encoding="utf-8",
            )
    except BaseException as exc:
        bar.close("stopped")
        with contextlib.suppress(Exception):  # the feeds' threads end with the session
            backend.call("stop_feed")
        recorder.fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        backend.close()
    return RunResult(path, metrics, clock.stats, time.perf_counter() - began, stopped)


@contextlib.contextmanager
def _stop_on_signals(clock: LiveClock) -> Iterator[None]:
    """SIGINT, SIGTERM and :data:`STOP_SIGNAL` ask the session to stop at its next step
    boundary; a second SIGINT raises KeyboardInterrupt at once. The first request
    wins: a repeated signal (a service repeats it until the session reports back)
    does not cut short the step that flattens. Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM, STOP_SIGNAL)
    previous = {sig: signal.getsignal(sig) for sig in sigs}
    asked: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if asked and signum == signal.SIGINT and asked[0] == signal.SIGINT:
            raise KeyboardInterrupt
        if asked:
            return
        asked.append(signum)
        why = (
            "stopped on request"
            if signum == STOP_SIGNAL
            else f"interrupted by {signal.Signals(signum).name}"
        )
        clock.request_stop(why)

    for sig in sigs:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- order-book sessions ----------------------------------------------------------------------


def paper_l2_config(
    symbols: Sequence[str],
    specs: Mapping[str, SymbolSpec],
    l2: L2Config,
    live: LiveConfig,
    *,
    sync_ns: int,
    account: AccountConfig,
    execution: ExecutionConfig | None = None,
    backend: str = "local",
    symbols_per_actor: int = 0,
    now_ns: int | None = None,
) -> RunConfig:
    """The order-book session of ``symbols`` (``l2.files`` naming each as ``"live"``)
    starting at the first ``sync_ns`` boundary after ``now_ns``, with the trading rules
    ``specs`` (:func:`exchange_specs`). A session without ``live.duration_s`` runs
    until stopped. At a stop, ``live.on_stop = "flatten"`` detaches the strategy,
    cancels its orders and closes the positions by market orders through the book in
    one more step (see :mod:`tickray.engine.l2sim`)."""
    if sync_ns <= 0:
        raise ConfigError("run.sync: must be > 0")
    missing = sorted(set(symbols) - set(specs))
    if missing:
        raise ConfigError(f"symbols: no trading rules for {', '.join(missing)}")
    t0 = session_start(time.time_ns() if now_ns is None else now_ns, sync_ns, 1)
    end = t0 + (int(live.duration_s * 1e9) if live.duration_s else sync_ns)
    return RunConfig(
        data_root="",
        interval_ns=1,
        symbols=tuple(sorted(symbols)),
        start_ns=t0,
        end_ns=end,
        account=account,
        execution=execution or ExecutionConfig(),
        l2=l2,
        specs={s: specs[s] for s in symbols},
        sync_ns=sync_ns,
        symbols_per_actor=symbols_per_actor,
        backend=backend,
        approval="symbol",
        fuse=False,
        live=live,
    )


def exchange_specs(
    market: str, symbols: Sequence[str], rest_url: str | None = None
) -> dict[str, SymbolSpec]:
    """The trading rules of ``symbols`` on Binance ``market`` from one exchangeInfo
    request: tick size (PRICE_FILTER ``tickSize``), lot step and minimum quantity
    (LOT_SIZE), minimum notional (spot MIN_NOTIONAL/NOTIONAL ``minNotional``, USD-M
    MIN_NOTIONAL ``notional``), base and quote assets. ConfigError naming the symbol
    when one is unknown or not trading; DataError when the answer is malformed."""
    return asyncio.run(_exchange_specs(market, list(symbols), rest_url))


async def _exchange_specs(
    market: str, symbols: list[str], rest_url: str | None
) -> dict[str, SymbolSpec]:
    name: Market = "spot" if market == "spot" else "usdm"
    where = f"Binance {name}"
    async with BinanceRest(name, base_url=rest_url or None, max_retries=2) as rest:
        try:
            # spot answers for the symbols asked; USD-M always lists every symbol
            info = await rest.exchange_info(symbols=symbols if name == "spot" else None)
        except BinanceHTTPError as e:
            if e.code != -1121:  # "Invalid symbol."
                raise
            info = await _find_unknown(rest, symbols, where)
    rows = {r["symbol"]: r for r in info["symbols"]}
    for sym in symbols:
        row = rows.get(sym)
        if row is None:
            raise ConfigError(f"symbols: {sym} is not a symbol of {where} (exchangeInfo)")
        if row["status"] != "TRADING" or row.get("isSpotTradingAllowed") is False:
            raise ConfigError(
                f"symbols: {sym} is not trading on {where} (exchangeInfo status {row['status']})"
            )
    wanted = info | {"symbols": [rows[s] for s in symbols]}
    rules = specs_from_exchange_info(wanted)
    try:
        return {
            s: SymbolSpec(
                s,
                tick_size=rules[s]["tick_size"],
                step_size=rules[s]["step_size"],
                min_qty=rules[s]["min_qty"],
                min_notional=rules[s]["min_notional"],
                base_asset=str(rows[s]["baseAsset"]),
                quote_asset=str(rows[s]["quoteAsset"]),
            )
            for s in symbols
        }
    except ValueError as e:
        raise DataError(f"exchangeInfo: {e}") from None


async def _find_unknown(rest: BinanceRest, symbols: list[str], where: str) -> dict[str, Any]:
    """After spot refused a list of symbols: ask for each, to name the unknown one."""
    for sym in symbols:
        try:
            await rest.exchange_info(sym)
        except BinanceHTTPError as e:
            if e.code == -1121:
                raise ConfigError(
                    f"symbols: {sym} is not a symbol of {where} (exchangeInfo: invalid symbol)"
                ) from None
            raise
    raise ConfigError(f"symbols: {where} refused {', '.join(symbols)} (exchangeInfo)")


#: In a session's record folder: its first and last step boundary and step length.
SESSION_FILE = "session.json"


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
        "bar_latency": latency_quantiles(lat),
        "step_lag": latency_quantiles(clock.step_lag_ns),
        "decision_latency": latency_quantiles(clock.decision_lag_ns),
        "absorbs": clock.absorbs,
        "gaps": {k: v for s in status for k, v in s["gaps"].items()},
        "duplicates": sum(s["duplicates"] for s in status),
        "books": {k: v for s in status for k, v in s.get("books", {}).items()},
        "messages": sum(int(w.get("messages", 0)) for w in ws),
        "reconnects": sum(int(w.get("reconnects", 0)) for w in ws),
        "errors": sum(int(w.get("errors", 0)) for w in ws),
        "ws": ws,
        "feed_processes": [p for s in status for p in s.get("feed_processes", [])],
    }
