"""tickray benchmarks: ``make bench`` (or ``python bench/run_all.py [--quick]``).

Each case prints one line::

    NAME: N events in S s = K events/s, peak RSS M MB

where an event is one 1m bar replayed through the whole topology (strategy,
orders, fills, portfolio, recorder) and S is the wall time of ``run_backtest``
(actor start-up included, Ray's own start excluded). Ray cases are run right
after their in-process baseline on the same data in the same process and add
``= R x BASELINE``. The memory case replays 1x and 10x the history in fresh
processes and compares their peak RSS. The L2 cases replay the real Binance
recordings of ../shared/data (an event is one market message: a depth diff, a
trade or a book top) and report the best and the median of several passes,
against the book alone in the same passes. The account cases replay the demo
generator's universe (with mark prices and funding) as spot, spot with fees in
the base asset, and USD-M perpetuals with isolated and cross margin, each
against the spot run. The data cases import the real 1m kline CSVs into the
store and read a cached month of 1m bars for 100 symbols (bench/bench_data.py).
The sweep case runs 64 variants x 10 symbols x 30 days on Ray with 1 CPU, 2 CPUs
and 3 simulated nodes (bench/bench_sweep.py). The live case runs a paper session on loopback websocket streams of the real USD-M
recordings (bench/bench_live.py). The indicator cases time each indicator's batch and
one-value-at-a-time forms (values/s, against SMA's batch form); the strategy
cases replay one symbol through the topology with each strategy, against
sma_cross.

Data is synthetic (seeded) and cached under ``.cache/bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickray.cluster.runner import RunResult, run_backtest
from tickray.engine.clock import HOUR, MINUTE, parse_time
from tickray.engine.config import AccountConfig, RunConfig, StrategyConfig
from tickray.feeds.store import write_bars
from tickray.feeds.synthetic import generate_bars

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
START = parse_time("2020-01-01")
SMA = StrategyConfig("sma_cross", {"fast": 20, "slow": 50})


def dataset(name: str, symbols: list[str], n_bars: int, seed: int) -> Path:
    """Generate (once) ``symbols`` x ``n_bars`` 1m bars in the canonical layout."""
    root = CACHE / name
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for sym, table in generate_bars(symbols, START, n_bars, seed=seed).items():
        write_bars(root, sym, "1m", table)
    (root / ".complete").write_text("ok\n")
    return root


class PeakRss:
    """Samples this process's resident set size every 5 ms (Linux /proc)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(0.005)

    def __enter__(self) -> PeakRss:
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


@dataclass
class Case:
    name: str
    events: int
    seconds: float
    rss_mb: float
    result: RunResult
    run_json: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def line(self, baseline: Case | None = None) -> str:
        text = (
            f"{self.name}: {self.events:,} events in {self.seconds:.2f} s = "
            f"{self.rate:,.0f} events/s, peak RSS {self.rss_mb:.0f} MB"
        )
        if baseline is not None:
            text += f" = {self.rate / baseline.rate:.2f}x {baseline.name}"
        return text


def run_case(name: str, cfg: RunConfig, events: int, baseline: Case | None = None) -> Case:
    out = Path(tempfile.mkdtemp(prefix="tickray-bench-")) / "run"
    try:
        with PeakRss() as rss:
            began = time.perf_counter()
            res = run_backtest(cfg, out)
            seconds = time.perf_counter() - began
        info = json.loads((res.out / "run.json").read_text())
        case = Case(name, events, seconds, rss.peak / 2**20, res, info)
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    print(case.line(baseline), flush=True)
    return case


def config(root: Path, symbols: list[str], n_bars: int, **kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=tuple(symbols),
        start_ns=START,
        end_ns=START + n_bars * MINUTE,
        strategy=SMA,
        account=AccountConfig(initial_cash=1_000_000.0),
    )
    base.update(kw)
    return RunConfig(**base)


def bench_inprocess(n_bars: int) -> None:
    root = dataset(f"1x{n_bars}", ["BENCHUSDT"], n_bars, seed=3)
    for approval in ("portfolio", "symbol"):
        cfg = config(root, ["BENCHUSDT"], n_bars, sync_ns=HOUR, approval=approval)
        c = run_case(f"inproc_sma_1sym_{n_bars // 1000}k_sync1h_{approval}", cfg, n_bars)
        fills = c.result.metrics["portfolio"]["fills"]
        print(f"  ({fills:,} fills, {c.result.stats.settles:,} settlements)")


def bench_ray(n_symbols: int, days: int, quick: bool) -> None:
    import ray

    n_bars = days * 1440
    symbols = [f"B{i:03d}USDT" for i in range(n_symbols)]
    root = dataset(f"{n_symbols}x{n_bars}", symbols, n_bars, seed=5)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        events = n_symbols * n_bars
        per_actor = (n_symbols + 1) // 2
        for approval in ("symbol", "portfolio"):
            kw = dict(sync_ns=HOUR, symbols_per_actor=per_actor, approval=approval)
            base = run_case(
                f"inproc_{n_symbols}sym_{days}d_sync1h_{approval}",
                config(root, symbols, n_bars, **kw),
                events,
            )
            ray_case = run_case(
                f"ray_{n_symbols}sym_{days}d_sync1h_2actors_{approval}",
                config(root, symbols, n_bars, backend="ray", **kw),
                events,
                baseline=base,
            )
            if approval == "portfolio":
                # the cost of recovery: a checkpoint of every actor after each call that
                # ends at least 1 s after its last one (the default is 60 s)
                cfg = config(root, symbols, n_bars, backend="ray", checkpoint_every_ns=10**9, **kw)
                c = run_case(
                    f"ray_{n_symbols}sym_{days}d_sync1h_2actors_{approval}_checkpoint1s",
                    cfg,
                    events,
                    baseline=ray_case,
                )
                took = c.run_json["checkpoints"]
                print(
                    f"  ({took} checkpoints in {c.seconds:.1f} s; the ratio is against "
                    "the same run with the default 60 s)"
                )
        if not quick:
            cfg = config(
                root, symbols, n_bars, backend="ray", sync_ns=MINUTE, symbols_per_actor=per_actor
            )
            c = run_case(f"ray_{n_symbols}sym_{days}d_sync1m_2actors_portfolio", cfg, events)
            print(f"  ({c.result.stats.settles:,} settlements in {c.seconds:.1f} s)")
    finally:
        ray.shutdown()


def bench_accounts(n_symbols: int, days: int) -> None:
    """Spot against the other accounts on the demo generator's universe (with its mark
    prices and funding), in-process, portfolio approval, 1h steps."""
    from tickray.engine.config import PerpConfig
    from tickray.engine.instruments import SymbolSpec
    from tickray.feeds.store import read_symbol_specs
    from tickray.feeds.synthetic import write_demo_dataset

    root = CACHE / f"accounts-{n_symbols}x{days}d"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        write_demo_dataset(root, n_symbols=n_symbols, days=days, seed=9, start="2024-01-01")
        (root / ".complete").write_text("ok\n")
    specs = {s: SymbolSpec(s, **v) for s, v in read_symbol_specs(root).items()}
    symbols = sorted(specs)
    start = parse_time("2024-01-01")
    n_bars = days * 1440
    events = n_symbols * n_bars
    mom = StrategyConfig("momentum", {"window": 60, "threshold": 0.01})

    def cfg(**kw: Any) -> RunConfig:
        acct = kw.pop("account", {})
        return config(
            root,
            symbols,
            n_bars,
            start_ns=start,
            end_ns=start + n_bars * MINUTE,
            strategy=mom,
            specs=specs,
            sync_ns=HOUR,
            account=AccountConfig(initial_cash=1_000_000.0, allow_short=True, **acct),
            **kw,
        )

    base = run_case(f"accounts_spot_{n_symbols}sym_{days}d_sync1h", cfg(), events)
    for name, kw in (
        ("spot_fees_in_base", {"account": {"fee_asset": "base"}}),
        ("perp_isolated_5x", {"perp": PerpConfig(leverage=5, margin_mode="isolated")}),
        ("perp_cross_5x", {"perp": PerpConfig(leverage=5, margin_mode="cross")}),
    ):
        c = run_case(f"accounts_{name}_{n_symbols}sym_{days}d_sync1h", cfg(**kw), events, base)
        m = c.result.metrics["portfolio"]
        print(
            f"  ({m['fills']:,} fills, funding {m['funding']:,.2f}, "
            f"{m['liquidations']} liquidations, {c.result.stats.settles:,} settlements)"
        )


def _memory_child(n_bars: int) -> None:
    root = dataset(f"1x{n_bars}", ["BENCHUSDT"], n_bars, seed=3)
    cfg = config(root, ["BENCHUSDT"], n_bars, sync_ns=HOUR)
    out = Path(tempfile.mkdtemp(prefix="tickray-bench-")) / "run"
    began = time.perf_counter()
    run_backtest(cfg, out)
    seconds = time.perf_counter() - began
    shutil.rmtree(out.parent, ignore_errors=True)
    print(json.dumps({"bars": n_bars, "seconds": seconds, "peak_mb": _vm_hwm_mb()}))


def _vm_hwm_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over from the parent
    across fork and exec, so a child started by a big parent reports the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_memory(small: int) -> None:
    big = small * 10
    for n in (small, big):  # generate outside the measured processes
        dataset(f"1x{n}", ["BENCHUSDT"], n, seed=3)
    peaks = []
    for n in (small, big):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n)],
            check=True,
            capture_output=True,
            text=True,
        )
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        peaks.append(rec["peak_mb"])
        print(
            f"memory_history_{n // 1000}k: {n:,} events in {rec['seconds']:.2f} s = "
            f"{n / rec['seconds']:,.0f} events/s, peak RSS {rec['peak_mb']:.0f} MB",
            flush=True,
        )
    print(f"  10x history: peak RSS x{peaks[1] / peaks[0]:.3f} ({peaks[1] - peaks[0]:+.0f} MB)")


L2_DATA = ROOT.parent / "shared" / "data" / "crypto" / "ws_recordings" / "hftbacktest"
L2_TICKS = {"BTCUSDT": 0.1, "ETHUSDT": 0.01, "BTCUSD_PERP": 0.1}


def bench_l2(repeat: int) -> None:
    """Real Binance L2 recordings (depth diffs, trades, book tops) through the book.

    An event is one market message (a depth diff of any size, a trade, a book
    top). Baseline: the same messages through the book with no orders of ours.
    The measured case runs QuotingStrategy (a bid and an ask at the best prices,
    moved with every 1-tick move of the best price), so queue positions, fills,
    modifies and the strategy's callbacks are all in the loop.
    """
    from tickray.engine.book import L2Book
    from tickray.engine.instruments import SymbolSpec
    from tickray.engine.l2venue import L2Venue
    from tickray.engine.quoting import QuotingStrategy
    from tickray.feeds.l2events import recording_events
    from tickray.feeds.recordings import read_binance_recording

    files = sorted(L2_DATA.glob("*.ws.gz"))
    if not files:
        print(f"l2: skipped, no recordings at {L2_DATA}")
        return
    batches = []
    for path in files:
        rec = read_binance_recording(path)
        spot = "_spot_" in path.name
        tick = 0.01 if spot and rec.symbol == "BTCUSDT" else L2_TICKS[rec.symbol]
        batches.append((rec.symbol, tick, recording_events(rec)))
    began = time.perf_counter()
    warm = L2Venue(SymbolSpec("X", tick_size=0.1, step_size=0.001))
    warm.attach(QuotingStrategy(0.001), wake_ticks=1)
    first = batches[0][2]
    warm.run(first.slice(0, int(first.end[:5000].nonzero()[0][-1]) + 1))
    print(f"l2: numba compile or cache load {time.perf_counter() - began:.2f} s (not timed below)")
    messages = sum(ev.messages for _, _, ev in batches)
    # Each pass replays every recording once; passes alternate baseline and cases so
    # that a slow spell of the machine hits them alike. Best and median pass are shown.
    cases = (
        ("book only", None),
        ("quoting, requote every 1 s", (1_000_000_000, 0, False)),
        ("quoting, requote on every 1-tick move and fill", (0, 1, True)),
    )
    times: dict[str, list[float]] = {label: [] for label, _ in cases}
    counts: dict[str, tuple[int, int]] = {}
    with PeakRss() as rss:
        for _ in range(repeat):
            for label, how in cases:
                took = 0.0
                fills = wakes = 0
                for sym, tick, ev in batches:
                    if how is None:
                        book = L2Book(tick, 0.001)
                        t0 = time.perf_counter()
                        book.apply(ev)
                        took += time.perf_counter() - t0
                        continue
                    timer, move, on_fill = how
                    v = L2Venue(SymbolSpec(sym, tick_size=tick, step_size=0.001))
                    strat = QuotingStrategy(0.01, max_position=0.05)
                    v.attach(strat, timer_ns=timer, wake_ticks=move, wake_on_fill=on_fill)
                    t0 = time.perf_counter()
                    v.run(ev)
                    took += time.perf_counter() - t0
                    fills += len(v.fills)
                    wakes += strat.wakes
                times[label].append(took)
                counts[label] = (fills, wakes)
    base_best = messages / min(times["book only"])
    for label, how in cases:
        best, median = min(times[label]), sorted(times[label])[len(times[label]) // 2]
        rate = messages / best
        line = (
            f"l2 {label}: {messages:,} events in {best:.3f} s = {rate:,.0f} events/s "
            f"(best of {repeat}; median {messages / median:,.0f})"
        )
        if how is not None:
            line += f" = {rate / base_best:.2f}x book only"
        print(line)
        if how is not None:
            fills, wakes = counts[label]
            print(f"  ({fills:,} fills, {wakes:,} strategy wake-ups per pass)")
    print(
        f"  {len(batches)} recordings, {sum(len(ev.ts) for _, _, ev in batches):,} rows; "
        f"peak RSS {rss.peak / 2**20:.0f} MB"
    )


def bench_indicators(n: int) -> None:
    """Every indicator in batch form over ``n`` values and one value at a time over
    ``n // 10``, against SMA's batch form in the same process."""
    import numpy as np

    from tickray.engine import indicators as ind

    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    high = close * (1 + rng.uniform(0, 0.002, n))
    low = close * (1 - rng.uniform(0, 0.002, n))
    volume = rng.uniform(1, 10, n)
    ts = START + np.arange(n, dtype=np.int64) * MINUTE
    cases: list[tuple[str, Any, str]] = [
        ("SMA", lambda: ind.SMA(20), "c"),
        ("EMA", lambda: ind.EMA(20), "c"),
        ("WMA", lambda: ind.WMA(20), "c"),
        ("RollingStd", lambda: ind.RollingStd(20), "c"),
        ("ZScore", lambda: ind.ZScore(20), "c"),
        ("Bollinger", lambda: ind.Bollinger(20), "c"),
        ("TrueRange", lambda: ind.TrueRange(), "hlc"),
        ("ATR", lambda: ind.ATR(14), "hlc"),
        ("RSI", lambda: ind.RSI(14), "c"),
        ("MACD", lambda: ind.MACD(), "c"),
        ("Donchian", lambda: ind.Donchian(20), "hl"),
        ("VWAP", lambda: ind.VWAP(), "pvt"),
        ("ROC", lambda: ind.ROC(10), "c"),
        ("ADX", lambda: ind.ADX(14), "hlc"),
    ]
    cols = {"c": (close,), "hlc": (high, low, close), "hl": (high, low), "pvt": (close, volume, ts)}
    base = 0.0
    m = n // 10
    for name, make, kind in cases:
        args = cols[kind]
        make().update_batch(*(a[:1000] for a in args))  # compile outside the timing
        best = min(_timed(make, args) for _ in range(3))
        rate = n / best
        base = base or rate
        one = make()
        one.update(*(float(a[0]) if a.dtype.kind == "f" else int(a[0]) for a in args))
        rows = list(zip(*(a[:m].tolist() for a in args), strict=True))
        upd = one.update
        began = time.perf_counter()
        for r in rows:
            upd(*r)
        inc = m / (time.perf_counter() - began)
        ok = "ok" if rate >= 5e6 and inc >= 1e6 else "BELOW TARGET"
        print(
            f"indicator_{name}: batch {rate:,.0f} values/s = {rate / base:.2f}x SMA batch, "
            f"incremental {inc:,.0f} values/s [{ok}: >= 5M batch, >= 1M incremental]",
            flush=True,
        )


def _timed(make: Any, args: tuple[Any, ...]) -> float:
    """Seconds of one batch update of a fresh indicator over ``args``."""
    one = make()
    began = time.perf_counter()
    one.update_batch(*args)
    return time.perf_counter() - began


def bench_strategies(n_bars: int) -> None:
    """Strategies through the whole in-process topology on one symbol (symbol-level
    approval, as the foundation's 500,000 bars/s target is measured), against sma_cross."""
    root = dataset(f"1x{n_bars}", ["BENCHUSDT"], n_bars, seed=3)
    base = run_case(
        f"strategy_sma_cross_1sym_{n_bars // 1000}k_sync1h",
        config(root, ["BENCHUSDT"], n_bars, sync_ns=HOUR, approval="symbol"),
        n_bars,
    )
    print(f"  ({base.result.metrics['portfolio']['fills']:,} fills)", flush=True)
    cases = [
        ("mean_reversion", {"window": 60, "entry_z": 2.5, "stop_z": 4.0}),
        ("breakout", {"window": 120, "exit_window": 60}),
        ("enhanced_momentum_close", {"fast": 20, "slow": 60, "window": 30, "threshold": 0.005}),
        ("regime", {}),
    ]
    for name, params in cases:
        cfg = config(
            root,
            ["BENCHUSDT"],
            n_bars,
            sync_ns=HOUR,
            approval="symbol",
            strategy=StrategyConfig(name, params),
        )
        c = run_case(f"strategy_{name}_1sym_{n_bars // 1000}k_sync1h", cfg, n_bars, baseline=base)
        print(f"  ({c.result.metrics['portfolio']['fills']:,} fills)", flush=True)
    small = n_bars // 5
    cfg = config(
        root,
        ["BENCHUSDT"],
        small,
        sync_ns=HOUR,
        approval="symbol",
        strategy=StrategyConfig("enhanced_momentum", {"fast": 20, "slow": 60, "threshold": 0.005}),
    )
    ev = run_case(f"strategy_enhanced_momentum_events_1sym_{small // 1000}k_sync1h", cfg, small)
    print(f"  = {ev.rate / base.rate:.2f}x {base.name} (bar-by-bar callbacks, bracket exits)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller cases (a smoke run)")
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child)
        return 0
    print(f"tickray bench on {os.cpu_count()} cores, Python {sys.version.split()[0]}", flush=True)
    from bench_data import bench_cached_read, bench_import
    from bench_live import bench_live
    from bench_sweep import DAYS, SYMBOLS, bench_sweep

    shared = ROOT.parent / "shared" / "data"
    if args.quick:
        bench_cached_read(10, 3)
        bench_indicators(200_000)
        bench_strategies(100_000)
        bench_l2(1)
        bench_live(shared, seconds=3)
        bench_inprocess(100_000)
        bench_ray(10, 3, quick=True)
        bench_accounts(4, 3)
        bench_memory(20_000)
    else:
        if shared.is_dir():
            bench_import(shared)
        else:
            print(f"import bench skipped: no real data at {shared}", flush=True)
        bench_cached_read(100, 30)
        bench_indicators(2_000_000)
        bench_strategies(1_000_000)
        bench_l2(5)
        bench_live(shared)
        bench_inprocess(1_000_000)
        bench_ray(100, 30, quick=False)
        bench_accounts(20, 30)
        bench_sweep(dataset(f"{len(SYMBOLS)}x{DAYS}d-sweep", SYMBOLS, DAYS * 1440, seed=5))
        bench_memory(100_000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
