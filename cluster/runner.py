"""Run one backtest end to end: check the inputs, drive the clock, record, compute metrics."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from tickray.actors.backends import Backend, make_backend
from tickray.actors.clock import Clock, ClockStats, RunInterrupted
from tickray.actors.progress import Progress, progress_for

if TYPE_CHECKING:
    from tickray.actors.live import LiveClock
from tickray.actors.recorder import Recorder, read_column
from tickray.cluster.report import write_report
from tickray.engine.clock import floor_to, format_duration, iso
from tickray.engine.config import ConfigError, RunConfig
from tickray.engine.events import PositionSide
from tickray.engine.metrics import FillColumns, compute_metrics, periods_per_year
from tickray.engine.steps import fill_steps
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
    interrupted: str = ""
    """Why the run stopped early (Ctrl-C, SIGTERM); "" for a complete run. An
    interrupted run's folder is ``<out>.partial`` and holds every step settled."""


def check_inputs(config: RunConfig) -> None:
    """Fail before anything is written when a symbol has no data in the run's window.

    Reads only file statistics; the message names the symbol, the folder or the window.
    """
    if config.l2 is not None:
        for s, path in config.l2.files.items():
            if not Path(path).exists():
                raise DataError(f"l2.files: no recording for {s} at {path}")
        return
    interval = format_duration(config.interval_ns)
    try:
        calendar_for(config.execution.calendar)
    except ValueError as e:
        raise ConfigError(f"execution.calendar: {e}") from None
    first_bar = {}
    for s in config.symbols:
        bar_files(config.data_root, interval, s)
        first, last = data_range(config.data_root, interval, s)
        first_bar[s] = first
        if last < config.start_ns or first >= config.end_ns:
            raise DataError(
                f"symbol {s!r}: no {interval} bars between {iso(config.start_ns)} and "
                f"{iso(config.end_ns)} (its data spans {iso(first)} to {iso(last)})"
            )
    acct = config.account
    for a, amount in sorted(acct.balances.items()):
        conv = a + acct.currency
        if amount and conv in first_bar and first_bar[conv] > config.start_ns:
            raise DataError(
                f"account.balances.{a}: {conv}, which values it, has no bar before "
                f"{iso(first_bar[conv])}; start the run there or later"
            )


def run_backtest(
    config: RunConfig,
    out: str | Path,
    *,
    address: str | None = None,
    progress: bool | Progress | None = False,
    on_clock: Callable[[Clock], None] | None = None,
) -> RunResult:
    """Replay ``config`` on its backend and write the results folder ``out``.

    ``progress``: a progress bar (:func:`~tickray.actors.progress.progress_for`:
    None or True where one can be seen, False never), or a :class:`Progress` to
    report to (a service's pipe). ``on_clock`` is called with the run's clock before
    it starts, so that another thread can stop the run at its next step with
    ``clock.request_stop(why)``, as SIGINT and SIGTERM do in the main thread.

    Ctrl-C (SIGINT) or SIGTERM, when this runs in the main thread, stops the run at
    the next settlement: every settled step is recorded, the metrics and report of
    that part are written into ``<out>.partial`` (with ``error.txt`` saying why), and
    the returned :class:`RunResult` has ``interrupted`` set. A second Ctrl-C stops at
    once. On a failure the partial results stay in ``<out>.partial`` with
    ``error.txt`` and the exception propagates.
    """
    check_inputs(config)
    began = time.perf_counter()
    recorder = recorder_for(config, out)
    backend = make_backend(config.backend, address or config.address, config.remote_portfolio)
    bar = progress if isinstance(progress, Progress) else progress_for("replay", progress)
    clock = Clock(config, backend, recorder, bar)
    if on_clock is not None:
        on_clock(clock)
    try:
        try:
            with _stop_on_signals(clock):
                summary = clock.run()
        except RunInterrupted as stop:
            bar.close(f"{stop.why}, results kept")
            return _keep_interrupted(config, clock, recorder, backend, stop, began)
        bar.close()
        recorder.close_files()
        metrics = results_metrics(recorder.partial, config, summary)
        metrics["risk"] = write_risk(recorder.partial, config, summary)
        info = run_info(config, clock)
        path = recorder.commit(metrics, info)
        write_report(path)
    except BaseException as exc:
        bar.close("stopped")
        recorder.fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        backend.close()
    return RunResult(path, metrics, clock.stats, time.perf_counter() - began)


class Stoppable(Protocol):
    """A clock that can be asked to stop at its next step (replay or live)."""

    stop_requested: str

    def request_stop(self, why: str = ...) -> None: ...


def recorder_for(config: RunConfig, out: str | Path) -> Recorder:
    """The recorder of ``config``'s results into ``out`` (a replay's or a live session's)."""
    return Recorder(
        out,
        config.symbols,
        config.interval_ns,
        config.sync_ns,
        self_approval=config.approval == "symbol",
        perp=config.perp is not None,
    )


@contextmanager
def _stop_on_signals(clock: Stoppable) -> Iterator[None]:
    """SIGINT and SIGTERM ask the clock to stop at the next settlement; a second
    SIGINT raises KeyboardInterrupt at once. Only in the main thread (elsewhere
    Python delivers no signals, and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: object) -> None:
        if clock.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        clock.request_stop(f"interrupted by {signal.Signals(signum).name}")

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _keep_interrupted(
    config: RunConfig,
    clock: Clock,
    recorder: Recorder,
    backend: Backend,
    stop: RunInterrupted,
    began: float,
) -> RunResult:
    """Metrics, risk and report of the settled part of a stopped run, in its ``.partial``
    folder, marked incomplete (``run.json["incomplete"]`` and ``error.txt``)."""
    summary = backend.summary()
    recorder.close_files()
    folder = recorder.partial
    metrics = results_metrics(folder, config, summary)
    metrics["risk"] = write_risk(folder, config, summary)
    metrics["incomplete"] = {"reason": stop.why, "reached": iso(stop.reached)}
    info = run_info(config, clock) | {"incomplete": metrics["incomplete"]}
    for name, data in (("run.json", info), ("metrics.json", metrics)):
        (folder / name).write_text(
            json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8"
        )
    (folder / "error.txt").write_text(
        f"{stop.why} at simulated time {iso(stop.reached)}; every step settled up to it "
        "is recorded here\n",
        encoding="utf-8",
    )
    write_report(folder)
    return RunResult(folder, metrics, clock.stats, time.perf_counter() - began, stop.why)


def write_risk(folder: Path, config: RunConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """``risk_events.parquet`` (the monitor's halts, resumes and kill) and
    ``risk.parquet``, one row per step boundary: drawdown from the running peak,
    whether new entries were blocked, gross and net leverage, the portfolio's
    rolling one-step historical VaR and CVaR (``risk.var_confidence`` over
    ``risk.var_window`` steps; NaN until that much history), and the mean
    correlation of each symbol's step returns with the equal-weighted average of
    the others' over ``risk.correlation_window`` steps. Returns the risk summary
    for metrics.json.
    """
    import warnings

    events = summary.get("risk_events", [])
    ev = pa.table(
        {
            "ts": pa.array([e[0] for e in events], type=pa.timestamp("ns", tz="UTC")),
            "kind": pa.array([e[1] for e in events], type=pa.string()),
            "value": pa.array([e[2] for e in events], type=pa.float64()),
        }
    )
    pq.write_table(ev, folder / "risk_events.parquet")
    eq_t = pq.read_table(folder / "equity.parquet", use_threads=False)
    ts = eq_t.column("ts").cast(pa.int64()).to_numpy()
    equity = eq_t.column("equity").to_numpy().astype(np.float64)
    cash = eq_t.column("cash").to_numpy().astype(np.float64)
    gross = eq_t.column("gross_exposure").to_numpy().astype(np.float64)
    peak = np.maximum.accumulate(equity) if len(equity) else equity
    with np.errstate(invalid="ignore", divide="ignore"):
        drawdown = np.where(peak > 0, (peak - equity) / peak, 0.0)
        gross_lev = np.where(equity > 0, gross / equity, np.nan)
        net_lev = np.where(equity > 0, (equity - cash) / equity, np.nan)
    blocked = np.zeros(len(ts), dtype=bool)
    on = False
    k = 0
    for t, kind, _ in sorted(events):
        while k < len(ts) and ts[k] < t:
            blocked[k] = on
            k += 1
        on = kind in ("halt", "daily_halt", "kill") or (
            on and kind not in ("resume", "daily_resume")
        )
    blocked[k:] = on
    limits = config.risk
    conf, window = limits.var_confidence, limits.var_window
    losses = -np.diff(equity, prepend=equity[:1]) if len(equity) else equity
    var = np.full(len(losses), np.nan)
    cvar = np.full(len(losses), np.nan)
    if len(losses) >= window:
        w = np.sort(np.lib.stride_tricks.sliding_window_view(losses, window), axis=1)
        k = int(np.ceil(window * conf)) - 1  # the inverted-CDF order statistic
        var[window - 1 :] = w[:, k]
        cvar[window - 1 :] = w[:, k:].mean(axis=1)
    marks = pq.read_table(folder / "marks.parquet", use_threads=False).to_pandas()
    rets = marks[list(config.symbols)].astype(float).pct_change()
    n = len(config.symbols)
    avg_corr = np.full(len(marks), np.nan)
    if n > 1:
        total = rets.sum(axis=1, min_count=n)
        cols = []
        for s in config.symbols:
            others = (total - rets[s]) / (n - 1)
            cols.append(rets[s].rolling(limits.correlation_window).corr(others).to_numpy())
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            avg_corr = np.nanmean(np.vstack(cols), axis=0)
    table = pa.table(
        {
            "ts": pa.array(ts, type=pa.timestamp("ns", tz="UTC")),
            "drawdown": drawdown,
            "blocked": blocked,
            "gross_leverage": gross_lev,
            "net_leverage": net_lev,
            "var": var,
            "cvar": cvar,
            "avg_correlation": np.asarray(avg_corr, dtype=np.float64)[: len(ts)],
        }
    )
    pq.write_table(table, folder / "risk.parquet")
    step = config.sync_ns
    return {
        "halts": sum(1 for e in events if e[1] in ("halt", "daily_halt")),
        "kill_switch": any(e[1] == "kill" for e in events),
        "time_blocked_s": float(blocked.sum() * step / 1e9),
        "max_gross_leverage": float(np.nanmax(gross_lev)) if len(ts) else 0.0,
    }


def results_metrics(folder: Path, config: RunConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """Portfolio and per-symbol metrics, computed from the recorded results files.

    Round trips come from the fills, exposure from the positions, funding and
    liquidations from their files, and the benchmark is buy-and-hold of the
    symbol's marks (for the portfolio: each symbol's equal allocation held from
    its first mark, never rebalanced). Annualisation is 24/7 unless the run has
    trading hours.
    """
    start = floor_to(config.start_ns, config.sync_ns)
    ts = read_column(folder / "equity.parquet", "ts").astype(np.int64)
    equity = read_column(folder / "equity.parquet", "equity").astype(np.float64)
    gross = read_column(folder / "equity.parquet", "gross_exposure").astype(np.float64)
    basis = "24/7" if calendar_for(config.execution.calendar).is_always_open else "trading"
    ppy = periods_per_year(config.sync_ns, basis)
    symbols = list(config.symbols)
    fills = _fill_columns(folder / "fills.parquet", symbols)
    paid, liq = _perp_totals(folder, symbols)
    positions = _positions_at(folder / "positions.parquet", symbols, ts)
    marks = pq.read_table(folder / "marks.parquet", use_threads=False)
    initial, starts = _initial_values(config, marks)
    rates = _asset_rates(config, marks)
    fees = dict(summary["fees"])
    if rates:  # several cash assets: fills of symbols quoted in another asset, in currency
        fills, fees = _fills_in_currency(config, fills, fees, rates, ts)
    bench_total = np.zeros(len(ts))
    for a, r in rates.items():  # balances no symbol trades are held as they are
        if not any(config.quote_of(s) == a for s in symbols):
            bench_total += config.pool(a) * r
    per_symbol = {}
    # one read, not one per symbol; single-threaded to keep the peak memory small
    table = pq.read_table(folder / "symbol_equity.parquet", use_threads=False)
    for k, s in enumerate(symbols):
        eq = table.column(s).to_numpy().astype(np.float64)
        alloc = starts[k]
        px = marks.column(s).to_numpy().astype(np.float64)
        quote = config.quote_of(s)
        if quote in rates:  # valued like its equity: in the currency
            px = px * rates[quote]
        bench, b0 = _buy_and_hold(px)
        bench_total += alloc * bench / b0 if b0 else alloc
        mine = fills.symbol == k
        m = compute_metrics(
            start,
            ts,
            eq,
            alloc,
            step_ns=config.sync_ns,
            periods_per_year=ppy,
            fees=fees[s],
            fills=fills.select(mine),
            funding=paid[k],
            liquidations=int(liq[k]),
            exposure=positions[:, k] != 0.0,
            benchmark=bench if b0 else None,
            benchmark_start=b0 if b0 else None,
        )
        per_symbol[s] = m.as_dict() | {
            "final_position": summary["positions"][s],
            "dust": summary["dust"][s],
        }
    portfolio = compute_metrics(
        start,
        ts,
        equity,
        initial,
        step_ns=config.sync_ns,
        periods_per_year=ppy,
        fees=float(sum(fees.values())),
        fills=fills,
        funding=float(paid.sum()),
        liquidations=int(liq.sum()),
        exposure=gross > 0.0,
        benchmark=bench_total,
        benchmark_start=initial,
    )
    return {
        "portfolio": portfolio.as_dict(),
        "symbols": per_symbol,
        "balances": summary["balances"],
    }


def _asset_rates(config: RunConfig, marks: pa.Table) -> dict[str, npt.NDArray[np.float64]]:
    """Each cash asset other than the currency, valued in the currency at every boundary
    (its conversion symbol's mark, carried forward; its first mark before that); {} for
    a one-asset account."""
    if not config.multi_asset or config.perp is not None:
        return {}
    acct = config.account
    assets = {config.quote_of(s) for s in config.symbols} | set(acct.balances)
    out = {}
    for a in sorted(assets - {acct.currency}):
        r, first = _buy_and_hold(marks.column(a + acct.currency).to_numpy().astype(np.float64))
        out[a] = r if first else np.zeros(len(r))
    return out


def _fills_in_currency(
    config: RunConfig,
    fills: FillColumns,
    fees: dict[str, float],
    rates: dict[str, npt.NDArray[np.float64]],
    ts: npt.NDArray[np.int64],
) -> tuple[FillColumns, dict[str, float]]:
    """Prices, fees and realised PnL of fills quoted in another asset, converted at the
    rate of the boundary that booked them (quantities and positions stay in base)."""
    price, fee, pnl = fills.price.copy(), fills.fee.copy(), fills.realized_pnl.copy()
    at = np.searchsorted(ts, fill_steps(fills.ts, config.interval_ns, config.sync_ns))
    at = np.minimum(at, len(ts) - 1)
    fees = dict(fees)
    for k, s in enumerate(config.symbols):
        quote = config.quote_of(s)
        if quote not in rates:
            continue
        mine = fills.symbol == k
        r = rates[quote][at[mine]]
        price[mine] *= r
        fee[mine] *= r
        pnl[mine] *= r
        fees[s] = float(fee[mine].sum())
    return fills._replace(price=price, fee=fee, realized_pnl=pnl), fees


def _initial_values(config: RunConfig, marks: pa.Table) -> tuple[float, list[float]]:
    """The account's and each symbol's starting value in the currency: cash of other
    assets is valued at its conversion symbol's first mark."""
    acct = config.account
    if not config.multi_asset or config.perp is not None:
        n = len(config.symbols)
        return acct.initial_cash, [acct.initial_cash / n] * n

    def rate(asset: str) -> float:
        if asset == acct.currency:
            return 1.0
        col = marks.column(asset + acct.currency).to_numpy().astype(np.float64)
        ok = col[np.isfinite(col)]
        return float(ok[0]) if len(ok) else 0.0

    assets = {config.quote_of(s) for s in config.symbols} | set(acct.balances)
    total = sum(config.pool(a) * rate(a) for a in sorted(assets))
    return total, [config.budget_for(s) * rate(config.quote_of(s)) for s in config.symbols]


def _fill_columns(path: Path, symbols: list[str]) -> FillColumns:
    cols = ["symbol", "ts", "side", "qty", "price", "fee", "realized_pnl", "position_after"]
    hedge = "position_side" in pq.read_schema(path).names  # absent in older results
    t = pq.read_table(path, columns=[*cols, "position_side"] if hedge else cols, use_threads=False)
    sym = t.column("symbol").to_numpy(zero_copy_only=False)
    index = np.searchsorted(np.array(symbols, dtype=object), sym) if len(sym) else sym
    side = np.where(t.column("side").to_numpy(zero_copy_only=False) == "BUY", 1, -1)
    qty, price, fee, pnl, after = (t.column(c).to_numpy().astype(np.float64) for c in cols[3:])
    return FillColumns(
        np.asarray(index, dtype=np.int64),
        t.column("ts").cast(pa.int64()).to_numpy(),
        side.astype(np.int8),
        qty,
        price,
        fee,
        pnl,
        after,
        _position_sides(t.column("position_side").to_numpy(zero_copy_only=False))
        if hedge
        else None,
    )


def _position_sides(names: Any) -> npt.NDArray[np.int8]:
    """The fills' position side names as :class:`PositionSide` values."""
    out = np.zeros(len(names), dtype=np.int8)
    for side in (PositionSide.LONG, PositionSide.SHORT):
        out[names == side.name] = side.value
    return out


def _perp_totals(folder: Path, symbols: list[str]) -> tuple[npt.NDArray[np.float64], Any]:
    """Funding paid and liquidations per symbol (zeros for a spot run)."""
    paid = np.zeros(len(symbols))
    liq = np.zeros(len(symbols), dtype=np.int64)
    col = {s: i for i, s in enumerate(symbols)}
    if (folder / "funding.parquet").exists():
        t = pq.read_table(folder / "funding.parquet", columns=["symbol", "payment"])
        for s, v in zip(
            t.column("symbol").to_pylist(), t.column("payment").to_pylist(), strict=True
        ):
            paid[col[s]] += v
    if (folder / "liquidations.parquet").exists():
        for s in pq.read_table(folder / "liquidations.parquet", columns=["symbol"]).column(0):
            liq[col[s.as_py()]] += 1
    return paid, liq


def _positions_at(path: Path, symbols: list[str], ts: npt.NDArray[np.int64]) -> Any:
    """Each symbol's position at each boundary ``ts`` from the snapshots of changes."""
    t = pq.read_table(path, use_threads=False)
    out = np.zeros((len(ts), len(symbols)))
    if t.num_rows == 0:
        return out
    at = t.column("ts").cast(pa.int64()).to_numpy()
    row = np.searchsorted(at, ts, side="right") - 1
    held = row >= 0
    for k, s in enumerate(symbols):
        out[held, k] = t.column(s).to_numpy()[row[held]]
    return out


def _buy_and_hold(marks: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], float]:
    """The marks with leading gaps filled by the first mark, and that first mark
    (0.0 when the symbol has none)."""
    ok = np.flatnonzero(np.isfinite(marks))
    if not len(ok):
        return np.zeros(len(marks)), 0.0
    first = float(marks[ok[0]])
    out = marks.copy()
    out[: ok[0]] = first
    bad = ~np.isfinite(out)
    if bad.any():  # forward fill later gaps
        idx = np.where(bad, 0, np.arange(len(out)))
        np.maximum.accumulate(idx, out=idx)
        out = out[idx]
    return out, first


def run_info(config: RunConfig, clock: Clock | LiveClock) -> dict[str, Any]:
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
        # the node of each symbol actor (Ray; after any replacement)
        "placement": list(getattr(clock.backend, "placement", [])),
        # actor processes that died and were restored (tickray.actors.supervise)
        "recoveries": list(getattr(clock.backend, "recoveries", [])),
        "checkpoints": int(getattr(clock.backend, "checkpoints", 0)),
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
