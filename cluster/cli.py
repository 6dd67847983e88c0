"""The ``tickray`` command line.

``tickray backtest --demo`` replays the embedded synthetic universe (generated
deterministically on first use, no download) through the actor topology on
Ray. ``tickray backtest --data DIR --symbols ... --start ... --end ...``
replays a data folder in the canonical layout; ``tickray import-klines``
builds one from Binance kline CSVs. Bad input ends with one line on stderr
naming the field or file, exit status 2, and no results folder.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickray.cluster.spec import (
    check_document,
    config_from_document,
    load_spec,
    merge,
)
from tickray.engine.clock import duration_ns, format_duration, iso, parse_time
from tickray.engine.config import (
    AccountConfig,
    ConfigError,
    ExecutionConfig,
    RunConfig,
)
from tickray.engine.instruments import SymbolSpec
from tickray.engine.strategies import ParamError, strategy_names

if TYPE_CHECKING:
    from tickray.feeds.recordings import Recording

DEMO_STRATEGY = "momentum"
DEMO_PARAMS: dict[str, Any] = {"window": 60, "threshold": 0.01}


class UsageError(ValueError):
    """Bad command-line input."""


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param: expected NAME=VALUE, got {item!r}")
        params[key.strip()] = value.strip()
    return params


def _symbols(values: list[str]) -> tuple[str, ...]:
    out = sorted({s.strip().upper() for v in values for s in v.split(",") if s.strip()})
    if not out:
        raise UsageError("--symbols: at least one symbol is needed")
    return tuple(out)


def _modules_with(strategy: object, extra: list[str]) -> list[str]:
    """A spec's ``strategy.modules`` (a list or one string) with ``extra`` after them."""
    known = strategy.get("modules") if isinstance(strategy, dict) else None
    known = known or []
    return ([known] if isinstance(known, str) else list(known)) + list(extra)


def _add_strategy_module(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strategy-module",
        action="append",
        metavar="PATH",
        help="a .py file, package folder or module name that registers strategies "
        "(strategy.modules; repeatable)",
    )


def spec_document(args: argparse.Namespace) -> dict[str, Any]:
    """The run's spec document: the spec file (if any) with the flags given on top.

    Each flag is a shortcut for one spec key (``--fee`` is ``account.taker_fee``,
    ``--perp`` is ``account.type = "perp"``, ...); a flag not given leaves the
    file's value or the default. ``--demo`` without a strategy runs the demo's
    momentum settings on Ray.
    """
    doc: dict[str, Any] = load_spec(args.spec) if args.spec else {}
    over: dict[str, dict[str, Any]] = {}

    def put(path: str, value: object) -> None:
        if value is not None:
            section, key = path.split(".")
            over.setdefault(section, {})[key] = value

    if args.demo and args.data:
        raise UsageError("backtest: give --demo or --data, not both")
    if args.demo:
        put("data.source", "demo")
    if args.data:
        put("data.source", "files")
        put("data.path", args.data)
    put("universe.symbols", list(_symbols(args.symbols)) if args.symbols else None)
    for flag, path in _FLAG_KEYS.items():
        put(path, getattr(args, flag))
    if args.no_fuse:
        put("run.fuse", False)
    if args.balance:
        put("account.balances", _balances(args.balance))
    if args.impact:
        put("execution.impact", _impact(args.impact))
    if args.symbol_fee:
        put("execution.symbol_fees", _symbol_fees(args.symbol_fee))
    if args.perp:
        put("account.type", "perp")
    if args.symbol_leverage:
        put("perp.symbol_leverage", _symbol_leverage(args.symbol_leverage))
    if args.funding:
        put("perp.funding", _funding(args.funding))
    merged = merge(doc, over)
    strat = dict(merged.get("strategy") or {})
    if args.strategy and strat.get("name") not in (None, args.strategy) and not args.param:
        strat.pop("params", None)  # the file's parameters belong to another strategy
    if args.strategy:
        strat["name"] = args.strategy
    if getattr(args, "strategy_module", None):
        strat["modules"] = _modules_with(strat, args.strategy_module)
    demo = (merged.get("data") or {}).get("source", "demo") == "demo"
    if demo and "name" not in strat:
        strat = {"name": DEMO_STRATEGY, "params": dict(DEMO_PARAMS) | strat.get("params", {})}
    if args.param:
        strat["params"] = dict(strat.get("params") or {}) | _parse_params(args.param)
    if strat:
        merged["strategy"] = strat
    if args.demo and "backend" not in (merged.get("run") or {}):
        merged = merge(merged, {"run": {"backend": "ray"}})
    return merged


# flags that set one spec key as given
_FLAG_KEYS = {
    "interval": "data.interval",
    "start": "data.start",
    "end": "data.end",
    "backend": "run.backend",
    "address": "run.address",
    "sync": "run.sync",
    "symbols_per_actor": "run.symbols_per_actor",
    "approval": "run.approval",
    "cash": "account.cash",
    "fee": "account.taker_fee",
    "allow_short": "account.allow_short",
    "currency": "account.currency",
    "fee_asset": "account.fee_asset",
    "fraction": "sizing.fraction",
    "spread_bps": "execution.spread_bps",
    "participation": "execution.participation",
    "maker_fee": "execution.maker_fee",
    "rules": "execution.rules",
    "calendar": "execution.calendar",
    "hours": "execution.hours",
    "leverage": "perp.leverage",
    "margin_mode": "perp.margin_mode",
    "position_mode": "perp.position_mode",
    "marks": "perp.marks",
    "liquidation_fee": "perp.liquidation_fee",
}


def build_config(args: argparse.Namespace) -> RunConfig:
    """The run configuration of a ``backtest`` command line (spec file and flags)."""
    return config_from_document(spec_document(args))


def default_out() -> Path:
    stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"run-{stamp}-{secrets.token_hex(2)}"


def cmd_backtest(args: argparse.Namespace) -> int:
    from tickray.cluster.runner import format_table, run_backtest

    config = build_config(args)
    out = Path(args.out) if args.out else default_out()
    if out.exists():
        raise UsageError(f"--out: {out} already exists")
    print(
        f"tickray: {len(config.symbols)} symbols, {iso(config.start_ns)} -> {iso(config.end_ns)}, "
        f"strategy {config.strategy.name} {json.dumps(config.strategy.params, sort_keys=True)}, "
        f"backend {config.backend}",
        flush=True,
    )
    result = run_backtest(
        config, out, address=args.address, progress=None if not args.quiet else False
    )
    print(format_table(result.metrics))
    s = result.stats
    print(
        f"\n{s.boundaries} steps in {s.settles} settlements, {s.calls} actor calls, "
        f"{result.wall_seconds:.1f} s wall"
    )
    print(f"results: {result.out}  (report: {result.out / 'report.html'})")
    return _interrupted(result)


def _interrupted(result: Any) -> int:
    """130 (the shell's code for Ctrl-C) after saying where an interrupted run's part is."""
    if not result.interrupted:
        return 0
    reached = result.metrics.get("incomplete", {}).get("reached", "?")
    print(
        f"tickray: {result.interrupted} at {reached}: the results up to it are in {result.out}",
        file=sys.stderr,
    )
    return 130


def cmd_paper(args: argparse.Namespace) -> int:
    """Paper trading: the spec's strategy on live kline streams until its duration ends
    or Ctrl-C / SIGTERM (see tickray.cluster.paper)."""
    from tickray.cluster.paper import paper_config, run_paper
    from tickray.cluster.runner import format_table

    doc = load_spec(args.spec)
    live: dict[str, Any] = {}
    for flag, key in (
        ("duration", "duration"),
        ("ws_url", "ws_url"),
        ("record", "record"),
        ("on_stop", "on_stop"),
        ("market", "market"),
    ):
        if getattr(args, flag) is not None:
            live[key] = getattr(args, flag)
    over: dict[str, Any] = {"live": live} if live else {}
    if args.symbols:
        over["universe"] = {"symbols": args.symbols}
    if args.strategy_module:
        over["strategy"] = {"modules": _modules_with(doc.get("strategy"), args.strategy_module)}
    config = paper_config(check_document(merge(doc, over) if over else doc))
    out = Path(args.out) if args.out else default_out()
    if out.exists():
        raise UsageError(f"--out: {out} already exists")
    assert config.live is not None
    print(
        f"tickray: paper trading {', '.join(config.symbols)} on {config.live.market} "
        f"{format_duration(config.interval_ns)} bars from {iso(config.start_ns)}, strategy "
        f"{config.strategy.name}; Ctrl-C stops ({config.live.on_stop})",
        flush=True,
    )
    result = run_paper(config, out, address=args.address, progress=False if args.quiet else None)
    print(format_table(result.metrics))
    live_info = json.loads((result.out / "live.json").read_text())
    lat = live_info["bar_latency"]
    print(
        f"\n{live_info['steps']} steps, {live_info['messages']} messages, "
        f"{live_info['reconnects']} reconnects, {live_info['late_bars']} late bars; "
        f"bar latency p50 {lat['p50_ms']} ms p99 {lat['p99_ms']} ms"
    )
    print(f"results: {result.out}  (report: {result.out / 'report.html'})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Every point of a spec's parameter grid (or a random sample of them), in parallel on
    Ray or one after another in this process, into OUT/<k>/ (see tickray.cluster.sweep)."""
    from tickray.cluster.sweep import format_leaderboard, run_sweep

    doc = load_spec(args.spec)
    if args.backend:
        doc = merge(doc, {"run": {"backend": args.backend}})
    if args.strategy_module:
        modules = _modules_with(doc.get("strategy"), args.strategy_module)
        doc = merge(doc, {"strategy": {"modules": modules}})
    spec = check_document(doc)
    out = Path(args.out) if args.out else default_out()
    if out.exists():
        raise UsageError(f"--out: {out} already exists")
    backend = spec.get("run.backend")
    print(
        f"tickray: sweep of {args.samples if args.search == 'random' else spec.runs} runs of "
        f"{spec.get('strategy.name')} ({args.search} search, backend {backend})",
        flush=True,
    )
    result = run_sweep(
        spec,
        out,
        backend=backend,
        address=args.address or spec.get("run.address"),
        workers=args.workers,
        search=args.search,
        samples=args.samples,
        seed=args.seed,
        metric=args.metric,
        progress=False if args.quiet else None,
        echo=True,
        pool=args.pool,
    )
    print(format_leaderboard(result, args.metric))
    print(
        f"\n{len(result.rows)} runs in {result.wall_seconds:.1f} s on {result.workers} "
        f"workers, {len(result.failed)} failed"
    )
    print(f"results: {out}  (leaderboard: {out / 'leaderboard.parquet'})")
    if result.interrupted:
        print("tickray: sweep interrupted; the finished runs are kept", file=sys.stderr)
        return 130
    return 1 if result.failed and len(result.failed) == len(result.rows) else 0


def _recorded_session(path: Path) -> dict[str, Any] | None:
    """The session file of a paper session's record folder (``path`` or, for one of its
    ``ws-*`` folders, its parent), or None."""
    from tickray.cluster.paper import SESSION_FILE

    for folder in (path, path.parent) if path.is_dir() else ():
        file = folder / SESSION_FILE
        if file.is_file():
            try:
                found: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
                int(found["start_ns"]), int(found["end_ns"])
            except (ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"files: {file} is not a session file: {exc}") from None
            return found
    return None


def _l2_recordings(path: Path) -> Iterator[tuple[Recording, str]]:
    """The recordings a ``replay-l2`` argument names, each with what ``l2.files`` takes: a
    Binance recording file (``.ws.gz``), one folder of a paper session's recorder
    (``ws-<SYMBOL>``, every symbol it holds), or the session's record folder (each of its
    ``ws-*`` folders)."""
    from tickray.feeds.recordings import read_binance_recording
    from tickray.feeds.wsrecord import PART_GLOB, read_ws_recording, recorded_symbols

    if not path.is_dir():
        yield read_binance_recording(path), str(path)
        return
    if any(path.glob(PART_GLOB)):
        leaves = [path]
    else:
        leaves = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith("ws-"))
    if not leaves:
        raise UsageError(f"files: {path} holds no recording (no {PART_GLOB}, no ws-* folders)")
    for leaf in leaves:
        for symbol in recorded_symbols(leaf):
            yield read_ws_recording(leaf, symbol), str(leaf)


def build_l2_config(args: argparse.Namespace) -> RunConfig:
    """An order-book replay of recordings (one per symbol) with a tick strategy."""
    from tickray.engine.clock import ceil_to, floor_to
    from tickray.engine.config import L2Config
    from tickray.feeds.l2events import infer_grid, recording_span

    sync = duration_ns(args.sync)
    files: dict[str, str] = {}
    specs: dict[str, SymbolSpec] = {}
    first, last = [], []
    for rec, where in (r for path in args.files for r in _l2_recordings(Path(path))):
        if rec.symbol in files:
            raise UsageError(f"files: two recordings of {rec.symbol}; give one per symbol")
        files[rec.symbol] = where
        tick, lot = infer_grid(rec)
        specs[rec.symbol] = SymbolSpec(rec.symbol, tick_size=tick, step_size=lot)
        span = recording_span(rec)
        first.append(span[0])
        last.append(span[1])
    # a paper session's record folder says which steps the session ran: the replay runs
    # those (the recorder also holds what came before the first and after the last)
    sessions = [s for path in args.files if (s := _recorded_session(Path(path))) is not None]
    if sessions:
        first = [min(s["start_ns"] for s in sessions)]
        last = [max(s["end_ns"] for s in sessions) - 1]
    symbols = tuple(sorted(files))
    return RunConfig(
        data_root=str(Path(args.files[0]).parent),
        interval_ns=1,
        symbols=symbols,
        start_ns=floor_to(min(first), sync),
        end_ns=ceil_to(max(last) + 1, sync),
        account=AccountConfig(initial_cash=args.cash, taker_fee=args.fee, allow_short=True),
        execution=ExecutionConfig(maker_fee=args.maker_fee),
        l2=L2Config(files=files, **_l2_strategy(args)),
        specs=specs,
        sync_ns=sync,
        symbols_per_actor=args.symbols_per_actor,
        backend=args.backend,
        approval="symbol",
    )


def _l2_strategy(args: argparse.Namespace) -> dict[str, Any]:
    """The strategy settings of an order-book run (``replay-l2``, ``paper-l2``): the
    keyword arguments of :class:`~tickray.engine.config.L2Config` but ``files``."""
    latency = None
    if args.latency:
        try:
            latency = json.loads(args.latency)
        except json.JSONDecodeError as e:
            raise UsageError(f"--latency: not JSON ({e.msg}): {args.latency!r}") from None
    params: dict[str, object] = {"size": args.size, "offset": args.offset}
    if args.max_position is not None:
        params["max_position"] = args.max_position
    strategy = getattr(args, "strategy", "quote")
    if strategy != "quote":
        params = dict(_parse_params(getattr(args, "param", None) or []))
    elif getattr(args, "param", None):
        raise UsageError("--param: the quote strategy takes --size, --offset, --max-position")
    return {
        "strategy": strategy,
        "params": params,
        "bar_ns": duration_ns(args.bar) if getattr(args, "bar", None) else 0,
        "timer_ns": duration_ns(args.timer) if args.timer else 0,
        "wake_ticks": args.wake_ticks,
        "wake_on_fill": args.wake_on_fill,
        "latency": latency,
        "queue": args.queue,
        "tops": not args.no_tops,
        "seed": args.seed,
    }


def build_paper_l2_config(args: argparse.Namespace) -> RunConfig:
    """An order-book paper session of ``--symbols`` on live streams; their trading rules
    from the exchange's exchangeInfo (one request, at start)."""
    from tickray.cluster.paper import exchange_specs, paper_l2_config
    from tickray.engine.config import L2Config, LiveConfig

    symbols = _symbols(args.symbols)
    strategy = _l2_strategy(args)  # checked before the exchange is asked
    duration = duration_ns(args.duration) if args.duration else 0
    live = LiveConfig(
        market=args.market,
        ws_url=args.ws_url or "",
        rest_url=args.rest_url or "",
        duration_s=duration / 1e9,
        on_stop=args.on_stop,
        record=args.record or "",
        stall_timeout_s=args.stall_timeout,
        depth=args.depth,
        feed=args.feed,
        transport=args.transport,
        symbols_per_feed=args.symbols_per_feed,
        absorb_ms=args.absorb_ms,
    )
    from tickray.feeds.ws import DEPTH_SPEEDS

    if args.depth not in DEPTH_SPEEDS[args.market]:
        speeds = ", ".join(DEPTH_SPEEDS[args.market])
        raise UsageError(f"--depth: {args.market} streams depth at {speeds}, not {args.depth}")
    l2 = L2Config(files={s: "live" for s in symbols}, **strategy)
    specs = exchange_specs(args.market, symbols, args.rest_url)
    return paper_l2_config(
        symbols,
        specs,
        l2,
        live,
        sync_ns=duration_ns(args.sync),
        account=AccountConfig(initial_cash=args.cash, taker_fee=args.fee, allow_short=True),
        execution=ExecutionConfig(maker_fee=args.maker_fee),
        backend=args.backend,
        symbols_per_actor=args.symbols_per_actor,
    )


def cmd_paper_l2(args: argparse.Namespace) -> int:
    """Order-book paper trading: a tick or event strategy on live books until
    ``--duration`` ends or Ctrl-C / SIGTERM (see tickray.cluster.paper)."""
    from tickray.cluster.paper import run_paper
    from tickray.cluster.runner import format_table

    out = Path(args.out) if args.out else default_out()
    if out.exists():
        raise UsageError(f"--out: {out} already exists")
    config = build_paper_l2_config(args)
    assert config.live is not None and config.l2 is not None
    rules = ", ".join(
        f"{s} tick {config.specs[s].tick_size:g} lot {config.specs[s].step_size:g} "
        f"min notional {config.specs[s].min_notional:g}"
        for s in config.symbols
    )
    print(
        f"tickray: order-book paper trading on {config.live.market}: {rules}; strategy "
        f"{config.l2.strategy}, steps of {format_duration(config.sync_ns)} from "
        f"{iso(config.start_ns)}; Ctrl-C stops (positions kept)",
        flush=True,
    )
    result = run_paper(config, out, address=args.address, progress=False if args.quiet else None)
    print(format_table(result.metrics))
    live = json.loads((result.out / "live.json").read_text())
    lat = live["decision_latency"]
    resyncs = sum(int(b.get("resyncs", 0)) for b in live["books"].values())
    gaps = sum(int(b.get("gaps", 0)) for b in live["books"].values())
    print(
        f"\n{live['steps']} steps, {live['messages']} messages, {live['reconnects']} "
        f"reconnects, {resyncs} resyncs, {gaps} gaps; decision latency p50 {lat['p50_ms']} ms "
        f"p99 {lat['p99_ms']} ms; stopped: {live['stopped']}"
    )
    print(f"results: {result.out}  (report: {result.out / 'report.html'})")
    return 0


def cmd_replay_l2(args: argparse.Namespace) -> int:
    from tickray.cluster.runner import format_table, run_backtest

    config = build_l2_config(args)
    out = Path(args.out) if args.out else default_out()
    if out.exists():
        raise UsageError(f"--out: {out} already exists")
    specs = ", ".join(
        f"{s} tick {config.specs[s].tick_size:g} lot {config.specs[s].step_size:g}"
        for s in config.symbols
    )
    print(f"tickray: L2 replay of {specs}, backend {config.backend}", flush=True)
    result = run_backtest(
        config, out, address=args.address, progress=None if not args.quiet else False
    )
    print(format_table(result.metrics))
    print(f"\n{result.wall_seconds:.1f} s wall\nresults: {result.out}")
    return _interrupted(result)


def cmd_import_dumps(args: argparse.Namespace) -> int:
    from tickray.feeds.dumps import import_dumps

    for p in import_dumps([Path(f) for f in args.files], Path(args.out), verify=not args.no_verify):
        print(p)
    return 0


def cmd_import_klines(args: argparse.Namespace) -> int:
    from tickray.feeds.binance import convert_klines

    written = convert_klines(
        [Path(p) for p in args.files], Path(args.out), args.symbol.upper(), args.interval
    )
    for p in written:
        print(p)
    return 0


def _impact(text: str) -> dict[str, Any]:
    try:
        impact = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--impact: not JSON ({e.msg}): {text!r}") from None
    if not isinstance(impact, dict):
        raise UsageError(f"--impact: expected a JSON object, got {text!r}")
    return impact


def _symbol_fees(items: list[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for item in items:
        name, _, rates = item.partition("=")
        try:
            maker, taker = (float(x) for x in rates.split(","))
        except ValueError:
            raise UsageError(f"--symbol-fee: expected SYMBOL=MAKER,TAKER, got {item!r}") from None
        out[name.strip().upper()] = [maker, taker]
    return out


def _balances(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name.strip().upper()] = float(value)
        except ValueError:
            raise UsageError(f"--balance: expected ASSET=AMOUNT, got {item!r}") from None
    return out


def _symbol_leverage(items: list[str]) -> dict[str, float]:
    lev: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            lev[name.strip().upper()] = float(value)
        except ValueError:
            raise UsageError(f"--symbol-leverage: expected SYMBOL=X, got {item!r}") from None
    return lev


def _funding(items: list[str]) -> object:
    if items == ["none"] or items == ["store"]:
        return items[0]
    files: dict[str, str] = {}
    for item in items:
        name, _, path = item.partition("=")
        if not path:
            raise UsageError(f"--funding: expected store, none or SYMBOL=FILE, got {item!r}")
        files[name.strip().upper()] = path
    return files


def _event_names() -> set[str]:
    from tickray.engine.event_strategies import EVENT_STRATEGIES

    return set(EVENT_STRATEGIES)


def _add_l2_strategy_args(r: argparse.ArgumentParser) -> None:
    """The strategy, execution and account flags of ``replay-l2`` and ``paper-l2``."""
    r.add_argument(
        "--strategy",
        default="quote",
        help="quote (a tick strategy), or an event strategy: "
        + " | ".join(n for n in strategy_names() if n in _event_names()),
    )
    r.add_argument("--param", action="append", metavar="NAME=VALUE", help="strategy parameter")
    r.add_argument(
        "--bar", help="bars built from the trades for on_bar, e.g. 1m (event strategies)"
    )
    r.add_argument("--size", type=float, default=0.01, help="quote size in base units")
    r.add_argument("--offset", type=int, default=0, help="ticks behind the best prices")
    r.add_argument("--max-position", type=float, help="default: 10 x size")
    r.add_argument("--timer", default="1s", help="requote every ... (0 or '' for never)")
    r.add_argument("--wake-ticks", type=int, default=0, help="requote when the best moves N ticks")
    r.add_argument("--wake-on-fill", action="store_true", help="requote after each fill")
    r.add_argument("--latency", help='JSON, e.g. \'{"submit": "2ms", "market_data": "1ms"}\'')
    r.add_argument("--queue", choices=("conservative", "probabilistic"), default="conservative")
    r.add_argument("--no-tops", action="store_true", help="build the book from depth only")
    r.add_argument("--seed", type=int, default=0, help="seed of sampled latencies")
    r.add_argument("--cash", type=float, default=100_000.0)
    r.add_argument("--fee", type=float, default=0.0005, help="taker fee rate")
    r.add_argument("--maker-fee", type=float, default=0.0002, help="maker fee rate")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tickray", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "backtest",
        help="replay history through the actor topology",
        description="Run a spec file (TOML or JSON, see docs/spec.md); each flag sets one "
        "spec key on top of it (defaults: the spec reference).",
    )
    b.add_argument("spec", nargs="?", help="run spec file (.toml or .json)")
    b.add_argument("--demo", action="store_true", help="replay the embedded synthetic universe")
    b.add_argument("--data", help="data folder in the canonical layout (bars/<interval>/<SYMBOL>/)")
    b.add_argument("--symbols", nargs="+", help="symbols (space or comma separated)")
    b.add_argument("--interval", help="bar interval (default 1m)")
    b.add_argument("--start", help="first bar open time, ISO-8601 UTC (default: first bar)")
    b.add_argument("--end", help="end time, exclusive, ISO-8601 UTC (default: after the last bar)")
    b.add_argument("--strategy", help=" | ".join(strategy_names()) + " | a user strategy")
    _add_strategy_module(b)
    b.add_argument("--param", action="append", metavar="NAME=VALUE", help="strategy parameter")
    b.add_argument(
        "--backend", choices=["local", "ray"], help="default: ray for --demo, else local"
    )
    b.add_argument("--address", help="Ray cluster address to join (ray backend)")
    b.add_argument("--sync", help="step length, e.g. 1m, 1h (default: the bar interval)")
    b.add_argument("--symbols-per-actor", type=int, help="0: spread over the CPUs")
    b.add_argument(
        "--approval",
        choices=["portfolio", "symbol"],
        help="cash check by the portfolio at each step's end, or by each symbol's sub-account",
    )
    b.add_argument("--no-fuse", action="store_true", help="one round per step (same results)")
    b.add_argument("--cash", type=float, help="initial cash in quote asset")
    b.add_argument("--fee", type=float, help="taker fee rate (0.001 = 0.1%%)")
    b.add_argument("--fraction", type=float, help="share of each symbol's allocation")
    b.add_argument(
        "--allow-short", action=argparse.BooleanOptionalAction, default=None, help="margin shorts"
    )
    b.add_argument("--currency", help="the asset --cash is in and results are valued in")
    b.add_argument(
        "--balance",
        action="append",
        metavar="ASSET=AMOUNT",
        help="a starting balance of another quote asset (e.g. BTC=0.5 for symbols quoted in BTC)",
    )
    b.add_argument(
        "--fee-asset",
        choices=("quote", "base"),
        help="spot fees in the quote asset, or a buy's fee from the base asset received",
    )
    b.add_argument("--spread-bps", type=float, help="assumed spread; market orders pay half")
    b.add_argument(
        "--participation", type=float, help="max share of a bar's volume our fills take (0-1]"
    )
    b.add_argument("--maker-fee", type=float, help="maker fee rate (default: the taker fee)")
    b.add_argument(
        "--symbol-fee",
        action="append",
        metavar="SYMBOL=MAKER,TAKER",
        help="fee rates of one symbol, instead of --maker-fee/--fee",
    )
    b.add_argument(
        "--impact",
        help='impact model as JSON, e.g. \'{"model": "sqrt", "coef": 1, "decay": "60s"}\'',
    )
    b.add_argument("--rules", choices=("round", "reject"), help="off-grid orders")
    b.add_argument("--calendar", help="trading hours: 24/7 | NYSE")
    b.add_argument("--hours", choices=("wait", "reject"), help="orders outside the hours")
    g = b.add_argument_group("perpetual futures (USD-M)")
    g.add_argument("--perp", action="store_true", help="a USD-M perpetual account, not spot")
    g.add_argument("--leverage", type=float, help="every symbol's leverage")
    g.add_argument(
        "--symbol-leverage", action="append", metavar="SYMBOL=X", help="one symbol's leverage"
    )
    g.add_argument("--margin-mode", choices=("cross", "isolated"))
    g.add_argument(
        "--position-mode",
        choices=("one-way", "hedge"),
        help="one net position per symbol, or a long and a short one (hedge)",
    )
    g.add_argument(
        "--funding",
        action="append",
        metavar="store|none|SYMBOL=FILE",
        help="funding rates: the data folder's (store, the default), none, or a CSV per symbol",
    )
    g.add_argument("--marks", choices=("store", "last"), help="mark prices (or last price)")
    g.add_argument("--liquidation-fee", type=float, help="clearance fee rate of notional")
    b.add_argument("--out", help="results folder (default: results/run-<time>-<id>)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_backtest)
    pp = sub.add_parser("paper", help="paper trade a spec on live Binance kline streams")
    pp.add_argument("spec", help="run spec file (.toml or .json); universe.symbols is required")
    pp.add_argument("--symbols", help="override universe.symbols (comma-separated)")
    pp.add_argument("--duration", help="session length, e.g. 30m (default: until Ctrl-C)")
    pp.add_argument("--market", choices=("spot", "usdm"), help="override live.market")
    pp.add_argument("--ws-url", dest="ws_url", help="combined-stream base URL (live.ws_url)")
    pp.add_argument("--record", help="folder for the raw stream messages (live.record)")
    pp.add_argument(
        "--on-stop", dest="on_stop", choices=("flatten", "keep"), help="override live.on_stop"
    )
    _add_strategy_module(pp)
    pp.add_argument("--address", help="Ray cluster address to join (ray backend)")
    pp.add_argument("--out", help="results folder (default: results/run-<time>-<id>)")
    pp.add_argument("--quiet", action="store_true", help="no progress line")
    pp.set_defaults(func=cmd_paper)

    w = sub.add_parser("sweep", help="run every point of a spec's parameter grid")
    w.add_argument("spec", help="run spec file (.toml or .json) with list or range parameters")
    w.add_argument("--backend", choices=("local", "ray"), help="override run.backend")
    _add_strategy_module(w)
    w.add_argument("--out", help="results folder (default: results/run-<time>-<id>)")
    w.add_argument("--address", help="Ray cluster address to join (ray backend)")
    w.add_argument("--workers", type=int, help="variants at once on Ray (default: the CPUs)")
    w.add_argument(
        "--pool",
        action="store_true",
        help="Ray: run the variants on a shared pool of long-lived actors, one per worker "
        "slot pinned to the nodes in turn (default: a Ray task per variant)",
    )
    w.add_argument(
        "--search", choices=("grid", "random"), default="grid", help="every point, or a sample"
    )
    w.add_argument("--samples", type=int, help="random search: how many points to run")
    w.add_argument("--seed", type=int, default=0, help="random search: the sampling seed")
    w.add_argument(
        "--metric",
        choices=("total_return", "sharpe", "max_drawdown", "trades", "fees"),
        default="sharpe",
        help="what the leaderboard ranks by (default sharpe)",
    )
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.set_defaults(func=cmd_sweep)
    k = sub.add_parser("import-klines", help="convert Binance kline CSVs to the canonical layout")
    k.add_argument("files", nargs="+", help="kline CSV files (.csv or .csv.gz)")
    k.add_argument("--symbol", required=True)
    k.add_argument("--out", required=True, help="data folder to write into")
    k.add_argument("--interval", help="default: inferred from the timestamps")
    k.set_defaults(func=cmd_import_klines)
    z = sub.add_parser(
        "import-dumps",
        help="import data.binance.vision archives (klines, trades, aggTrades zips, checksums checked)",
    )
    z.add_argument("files", nargs="+", help="dump .zip files (their .CHECKSUM files beside them)")
    z.add_argument("--out", required=True, help="data folder to write into")
    z.add_argument("--no-verify", action="store_true", help="skip the sha256 checksum check")
    z.set_defaults(func=cmd_import_dumps)
    r = sub.add_parser(
        "replay-l2", help="replay recorded order books with a quoting strategy, fills on the book"
    )
    r.add_argument(
        "files",
        nargs="+",
        help="Binance websocket recordings (.ws.gz), one per symbol, or the folders a paper "
        "session's recorder wrote (--record)",
    )
    r.add_argument("--sync", default="1s", help="step length: marks and equity (default 1s)")
    _add_l2_strategy_args(r)
    r.add_argument("--backend", choices=("local", "ray"), default="local")
    r.add_argument("--address", help="Ray cluster address to join (ray backend)")
    r.add_argument("--symbols-per-actor", type=int, default=0)
    r.add_argument("--out", help="results folder (default: results/run-<time>-<id>)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_replay_l2)
    pl = sub.add_parser(
        "paper-l2",
        help="paper trade a quoting or event strategy on live Binance order books",
        description="An order-book paper session: depth diffs, trades and book tickers of "
        "each symbol streamed, books kept in sync, the strategy trading on them with queue "
        "positions, latency and fees as in replay-l2. Trading rules come from the "
        "exchange's exchangeInfo at start. Ends after --duration, or at Ctrl-C / SIGTERM, "
        "keeping or flattening the positions (--on-stop; see docs/paper.md).",
    )
    pl.add_argument(
        "--symbols", nargs="+", required=True, help="symbols (space or comma separated)"
    )
    pl.add_argument("--market", choices=("spot", "usdm"), default="spot", help="default spot")
    pl.add_argument("--duration", help="session length, e.g. 30m (default: until Ctrl-C)")
    pl.add_argument("--sync", default="1s", help="step length: marks and equity (default 1s)")
    pl.add_argument(
        "--depth",
        default="100ms",
        help="depth diff speed (spot 100ms|1000ms, usdm 0ms|100ms|250ms|500ms)",
    )
    pl.add_argument(
        "--record", help="folder for the raw stream messages (an order-book backtest replays it)"
    )
    pl.add_argument("--ws-url", help="combined-stream base URL (default: Binance's)")
    pl.add_argument(
        "--rest-url", help="REST base URL: exchangeInfo, snapshots (default: Binance's)"
    )
    pl.add_argument(
        "--stall-timeout",
        type=float,
        default=30.0,
        help="seconds without a message before reconnecting (0: never; default 30)",
    )
    pl.add_argument(
        "--on-stop",
        choices=("keep", "flatten"),
        default="keep",
        help="at a stop (Ctrl-C, SIGTERM): keep the positions, or cancel the strategy's "
        "orders and close them by market orders through the book in one more step, "
        "at a stop or at the end of --duration (default keep)",
    )
    pl.add_argument(
        "--transport",
        choices=("websockets", "aiohttp"),
        default="websockets",
        help="websocket library: aiohttp parses frames in compiled code, about 4x cheaper "
        "per message (default websockets)",
    )
    pl.add_argument(
        "--feed",
        choices=("process", "thread"),
        default="process",
        help="where each actor's websocket, books and recorder run: a child process of "
        "the actor, on a core of its own, or a thread sharing the actor's interpreter "
        "lock (default process)",
    )
    pl.add_argument(
        "--symbols-per-feed",
        type=int,
        default=1,
        help="symbols that share one connection and feed process (default 1: each "
        "symbol's streams have their own)",
    )
    pl.add_argument(
        "--absorb-ms",
        type=float,
        default=25.0,
        help="while waiting for a step boundary, take in what arrived every this many ms, "
        "so that orders are decided soon after their messages (0: at the boundary only; "
        "the results are the same; default 25)",
    )
    _add_l2_strategy_args(pl)
    pl.add_argument("--backend", choices=("local", "ray"), default="local")
    pl.add_argument("--address", help="Ray cluster address to join (ray backend)")
    pl.add_argument("--symbols-per-actor", type=int, default=0)
    pl.add_argument("--out", help="results folder (default: results/run-<time>-<id>)")
    pl.add_argument("--quiet", action="store_true", help="no status line")
    pl.set_defaults(func=cmd_paper_l2)
    d = sub.add_parser("data", help="data folder tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("check", help="validate stored bars and print a quality report")
    dc.add_argument("--data", required=True, help="data folder in the canonical layout")
    dc.add_argument("--symbols", nargs="+", help="symbols (default: every stored symbol)")
    dc.add_argument("--interval", default="1m")
    dc.add_argument(
        "--save", action="store_true", help="write DATA/quality/<interval>/<SYMBOL>.json"
    )
    dc.add_argument("--min-score", type=float, help="exit 1 when a symbol scores below this (0-1)")
    dc.set_defaults(func=cmd_data_check)
    df = dsub.add_parser(
        "fetch", help="download klines from Binance into the layered cache (and a store)"
    )
    df.add_argument(
        "--symbols", nargs="+", required=True, help="symbols (space or comma separated)"
    )
    df.add_argument("--interval", default="1m")
    df.add_argument("--start", required=True, help="first bar open time, ISO-8601 UTC")
    df.add_argument("--end", required=True, help="end time, exclusive, ISO-8601 UTC")
    df.add_argument("--market", choices=("spot", "usdm"), default="usdm")
    df.add_argument("--cache", required=True, help="cache folder (venue/symbol/interval/date)")
    df.add_argument(
        "--refresh",
        choices=("never", "stale", "always"),
        default="stale",
        help="re-fetch days not yet complete (stale), every day (always), or none (never)",
    )
    df.add_argument("--store", help="also write the bars into this data folder for replays")
    df.add_argument("--base-url", help="the exchange's REST address (default: Binance's)")
    df.add_argument("--quiet", action="store_true", help="no progress bar")
    df.set_defaults(func=cmd_data_fetch)
    di = dsub.add_parser(
        "import",
        help="import dump archives (.zip), kline CSVs or recorded paper sessions into a store",
    )
    di.add_argument(
        "files",
        nargs="+",
        help=".zip dumps (checksums beside them), .csv[.gz], or a paper session's "
        "live.record folder (its closed klines; needs --interval)",
    )
    di.add_argument("--out", required=True, help="data folder to write into")
    di.add_argument("--symbol", help="CSV files: the symbol (default: from the file name)")
    di.add_argument("--interval", help="CSV files: default inferred from the timestamps")
    di.add_argument("--no-verify", action="store_true", help="skip the dumps' sha256 check")
    di.set_defaults(func=cmd_data_import)
    h = sub.add_parser("report", help="write a results folder's offline HTML report")
    h.add_argument("folder", help="a results folder written by `tickray backtest`")
    h.add_argument("--out", help="the HTML file (default: FOLDER/report.html)")
    h.set_defaults(func=cmd_report)

    from tickray.cluster.service import add_serve_parser  # aiohttp only when parsing

    add_serve_parser(sub)
    return p


def cmd_data_check(args: argparse.Namespace) -> int:
    from tickray.feeds.quality import check_symbol, format_report
    from tickray.feeds.store import list_symbols

    root = Path(args.data)
    if not root.is_dir():
        raise UsageError(f"--data: {root} is not a folder")
    symbols = _symbols(args.symbols) if args.symbols else tuple(list_symbols(root, args.interval))
    if not symbols:
        raise UsageError(f"--data: no {args.interval} bars under {root}")
    low = []
    for sym in symbols:
        report = check_symbol(root, args.interval, sym)
        print(format_report(report), end="\n\n")
        if args.save:
            print(f"saved {report.save(root, args.interval)}\n")
        if args.min_score is not None and report.score < args.min_score:
            low.append(f"{sym} ({report.score:.4f})")
    if low:
        print(f"below --min-score {args.min_score}: {', '.join(low)}", file=sys.stderr)
        return 1
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    """Fill the cache with ``--symbols`` x ``--interval`` over ``[--start, --end)``."""
    import asyncio

    from tickray.actors.clock import stderr_progress
    from tickray.feeds.cache import KlineCache, export_to_store
    from tickray.feeds.rest import BinanceRest

    symbols = _symbols(args.symbols)
    start, end = parse_time(args.start), parse_time(args.end)
    if end <= start:
        raise UsageError("--end: must be after --start")
    cache = KlineCache(args.cache)
    show = (lambda _f: None) if args.quiet else stderr_progress("fetch")

    async def fetch() -> dict[str, int]:
        rows: dict[str, int] = {}
        async with BinanceRest(args.market, base_url=args.base_url) as rest:
            for k, sym in enumerate(symbols):
                table = await cache.bars(
                    rest, args.market, sym, args.interval, start, end, refresh=args.refresh
                )
                rows[sym] = table.num_rows
                show((k + 1) / len(symbols))
        return rows

    rows = asyncio.run(fetch())
    for sym, n in rows.items():
        print(f"{sym}: {n} {args.interval} bars")
    if args.store:
        for p in export_to_store(cache, args.market, symbols, args.interval, Path(args.store)):
            print(p)
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    """Dump archives through the dumps reader, CSVs through the kline converter."""
    from tickray.feeds.binance import import_klines
    from tickray.feeds.dumps import import_dumps

    files = [Path(f) for f in args.files]
    for f in files:
        if not f.exists():
            raise UsageError(f"files: {f} does not exist")
    recordings = [f for f in files if f.is_dir()]
    zips = [f for f in files if f.suffix == ".zip" and not f.is_dir()]
    csvs = [f for f in files if f.suffix != ".zip" and not f.is_dir()]
    out = Path(args.out)
    if recordings:
        from tickray.feeds.livebars import store_recorded_bars

        if not args.interval:
            raise UsageError("--interval: required to import a recorded live session's bars")
        for rec in recordings:
            for sym in store_recorded_bars(rec, out, args.interval):
                print(f"{rec}: {sym} {args.interval} bars")
    written = list(import_dumps(zips, out, verify=not args.no_verify)) if zips else []
    by_symbol: dict[str, list[Path]] = {}
    for f in csvs:
        if not (f.name.endswith(".csv") or f.name.endswith(".csv.gz")):
            raise UsageError(f"files: {f.name} is neither a .zip dump nor a .csv[.gz] file")
        sym = (args.symbol or f.name.split("-")[0]).upper()
        by_symbol.setdefault(sym, []).append(f)
    written += import_klines(by_symbol, out, args.interval)
    for p in written:
        print(p)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tickray.cluster.report import write_report

    try:
        print(write_report(args.folder, Path(args.out) if args.out else None))
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    from tickray.engine.codec import CodecError
    from tickray.feeds.schemas import DataError

    args = parser().parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except (UsageError, ConfigError, ParamError, DataError, CodecError, FileExistsError) as exc:
        print(f"tickray: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"tickray: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        cause = _root_cause(exc)
        if cause is not exc and isinstance(cause, ValueError):
            print(f"tickray: error: {cause}", file=sys.stderr)
            return 2
        raise


def _root_cause(exc: BaseException) -> BaseException:
    """Unwrap Ray's task errors to the exception the actor raised."""
    seen = exc
    for _ in range(5):
        nxt = getattr(seen, "cause", None) or seen.__cause__
        if nxt is None or nxt is seen:
            break
        seen = nxt
    return seen
