"""Run one backtest end to end: check the inputs, drive the clock, record, compute metrics."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tickray.actors.backends import make_backend
from tickray.actors.clock import Clock, ClockStats, stderr_progress
from tickray.actors.recorder import Recorder, read_column
from tickray.engine.clock import floor_to, format_duration, iso
from tickray.engine.config import ConfigError, RunConfig
from tickray.engine.metrics import compute_metrics
from tickray.feeds.calendars import calendar_for
from tickray.feeds.schemas import DataError
from tickray.feeds.store import bar_files, data_range


@dataclass
class RunResult:
    """Where the results are and the headline numbers."""

    out: Path
    metrics: dict[str, Any]
    stats: ClockStats
    wall_seconds: float


def check_inputs(config: RunConfig) -> None:
    """Fail before anything is written when a symbol has no data in the run's window.

    Reads only file statistics; the message names the symbol, the folder or the window.
    """
    if config.l2 is not None:
        for s, path in config.l2.files.items():
            if not Path(path).is_file():
                raise DataError(f"l2.files: no recording for {s} at {path}")
        return
    interval = format_duration(config.interval_ns)
    try:
        calendar_for(config.execution.calendar)
    except ValueError as e:
        raise ConfigError(f"execution.calendar: {e}") from None
    for s in config.symbols:
        bar_files(config.data_root, interval, s)
        first, last = data_range(config.data_root, interval, s)
        if last < config.start_ns or first >= config.end_ns:
            raise DataError(
                f"symbol {s!r}: no {interval} bars between {iso(config.start_ns)} and "
                f"{iso(config.end_ns)} (its data spans {iso(first)} to {iso(last)})"
            )


def run_backtest(
    config: RunConfig,
    out: str | Path,
    *,
    address: str | None = None,
    progress: bool = False,
) -> RunResult:
    """Replay ``config`` on its backend and write the results folder ``out``.

    On failure the partial results stay in ``<out>.partial`` with ``error.txt``
    and the exception propagates.
    """
    check_inputs(config)
    began = time.perf_counter()
    recorder = Recorder(
        out,
        config.symbols,
        config.interval_ns,
        config.sync_ns,
        self_approval=config.approval == "symbol",
    )
    backend = make_backend(config.backend, address, config.remote_portfolio)
    clock = Clock(config, backend, recorder, stderr_progress("replay") if progress else None)
    try:
        summary = clock.run()
        recorder.close_files()
        metrics = results_metrics(recorder.partial, config, summary)
        info = run_info(config, clock)
        path = recorder.commit(metrics, info)
    except BaseException as exc:
        recorder.fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        backend.close()
    return RunResult(path, metrics, clock.stats, time.perf_counter() - began)


def results_metrics(folder: Path, config: RunConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """Portfolio and per-symbol metrics, computed from the recorded equity files."""
    start = floor_to(config.start_ns, config.sync_ns)
    ts = read_column(folder / "equity.parquet", "ts").astype(np.int64)
    equity = read_column(folder / "equity.parquet", "equity").astype(np.float64)
    fills = summary["fills"]
    fees = summary["fees"]
    portfolio = compute_metrics(
        start,
        ts,
        equity,
        config.account.initial_cash,
        step_ns=config.sync_ns,
        trades=int(sum(fills.values())),
        fees=float(sum(fees.values())),
    )
    alloc = config.account.initial_cash / len(config.symbols)
    per_symbol = {}
    # one read, not one per symbol; single-threaded to keep the peak memory small
    table = pq.read_table(folder / "symbol_equity.parquet", use_threads=False)
    for s in config.symbols:
        eq = table.column(s).to_numpy().astype(np.float64)
        m = compute_metrics(
            start, ts, eq, alloc, step_ns=config.sync_ns, trades=fills[s], fees=fees[s]
        )
        per_symbol[s] = m.as_dict() | {"final_position": summary["positions"][s]}
    return {"portfolio": portfolio.as_dict(), "symbols": per_symbol}


def run_info(config: RunConfig, clock: Clock) -> dict[str, Any]:
    cfg = asdict(config)
    cfg["specs"] = {k: asdict(v) for k, v in config.specs.items()}
    cfg["symbols"] = list(config.symbols)
    return {
        "config": cfg,
        "start": iso(config.start_ns),
        "end": iso(config.end_ns),
        "sync": format_duration(config.sync_ns),
        "interval": format_duration(config.interval_ns),
        "actors": [list(s) for s in clock.shards],
    }


def format_table(metrics: dict[str, Any]) -> str:
    """The per-symbol and portfolio results table printed by the CLI."""

    def pct(v: float | None) -> str:
        return (
            "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 100:8.2f}%"
        )

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:7.2f}"

    head = f"{'symbol':<14} {'return':>9} {'sharpe':>7} {'max dd':>9} {'trades':>7} {'fees':>11}"
    lines = [head, "-" * len(head)]
    rows = list(metrics["symbols"].items()) + [("PORTFOLIO", metrics["portfolio"])]
    for name, m in rows:
        if name == "PORTFOLIO":
            lines.append("-" * len(head))
        lines.append(
            f"{name:<14} {pct(m['total_return']):>9} {num(m['sharpe']):>7} "
            f"{pct(m['max_drawdown']):>9} {m['trades']:>7d} {m['fees']:>11.2f}"
        )
    return "\n".join(lines)
