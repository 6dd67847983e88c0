"""Run specs from files, and a checked spec turned into the run's configuration.

``load_spec(path)`` reads a TOML (``.toml``) or JSON (``.json``) document;
:func:`tickray.engine.spec.parse_spec` checks it; :func:`build_run` resolves
what needs the disk (the demo data, the universe filters over stored bars,
the symbols' trading rules and the data's time range) and gives one
:class:`~tickray.engine.config.RunConfig` per grid point.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from tickray.actors.usercode import load_modules
from tickray.engine.clock import format_duration
from tickray.engine.config import (
    AccountConfig,
    ConfigError,
    ExecutionConfig,
    PerpConfig,
    RunConfig,
    StrategyConfig,
)
from tickray.engine.instruments import SymbolSpec
from tickray.engine.spec import RunSpec, SpecError, expand_grid, parse_spec

DEMO_SYMBOLS = 8
DEMO_DAYS = 30
DEMO_SEED = 7
DEMO_START = "2024-01-01"


def cache_base() -> Path:
    """tickray's cache folder: ``$TICKRAY_CACHE``, else ``$XDG_CACHE_HOME/tickray``, else
    ``~/.cache/tickray``."""
    base = os.environ.get("TICKRAY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"), "tickray"
    )
    return Path(base)


def demo_data_dir() -> Path:
    return cache_base() / f"demo-v2-{DEMO_SYMBOLS}x{DEMO_DAYS}d-seed{DEMO_SEED}"


def ensure_demo_data() -> Path:
    """Generate the demo universe once (deterministic); later runs reuse it."""
    from tickray.feeds.synthetic import write_demo_dataset

    root = demo_data_dir()
    done = root / ".complete"
    if not done.exists():
        tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
        write_demo_dataset(
            tmp, n_symbols=DEMO_SYMBOLS, days=DEMO_DAYS, seed=DEMO_SEED, start=DEMO_START
        )
        (tmp / ".complete").write_text("ok\n")
        if root.exists():
            import shutil

            shutil.rmtree(root)
        os.replace(tmp, root)
    return root


def load_spec(path: str | Path) -> dict[str, Any]:
    """The spec document in ``path`` (TOML or JSON), unchecked. SpecError naming the file
    when it cannot be read or parsed."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec: {p} is not a file")
    text = p.read_bytes()
    try:
        if p.suffix.lower() == ".json":
            doc = json.loads(text)
        elif p.suffix.lower() == ".toml":
            doc = tomllib.loads(text.decode("utf-8"))
        else:
            raise SpecError(f"spec: {p} must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"spec: {p} does not parse: {e}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"spec: {p} must hold a table of sections")
    return doc


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s sections merged in key by key (override wins)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for section, keys in override.items():
        if isinstance(keys, Mapping) and isinstance(out.get(section), dict):
            out[section].update(keys)
        else:
            out[section] = dict(keys) if isinstance(keys, Mapping) else keys
    return out


def check_document(doc: Mapping[str, Any]) -> RunSpec:
    """:func:`~tickray.engine.spec.parse_spec` after importing the user modules the
    document names in ``strategy.modules`` (their strategies must be registered before
    the strategy's name is checked)."""
    section = doc.get("strategy") if isinstance(doc, Mapping) else None
    raw = section.get("modules") if isinstance(section, Mapping) else None
    if raw is not None:
        refs = [raw] if isinstance(raw, str) else raw
        if not isinstance(refs, list | tuple) or not all(
            isinstance(r, str) and r.strip() for r in refs
        ):
            raise SpecError(
                f"strategy.modules: must be a list of strings (or one string), got {raw!r}"
            )
        load_modules(refs)
    return parse_spec(doc)


def build_run(spec: RunSpec, params: Mapping[str, Any] | None = None) -> RunConfig:
    """The run configuration of ``spec`` (with the grid point's strategy ``params``)."""
    from tickray.feeds.store import data_range, list_symbols, read_symbol_specs
    from tickray.feeds.universe import select_from_data

    v = spec.values
    data, uni = v["data"], v["universe"]
    if data["source"] == "demo":
        root = ensure_demo_data()
    elif data["source"] in ("cache", "exchange"):
        root = cached_store(spec)
    else:
        root = Path(data["path"])
    if not root.is_dir():
        raise SpecError(f"data.path: {root} is not a folder")
    interval = format_duration(data["interval"])
    available = list_symbols(root, interval)
    if not available:
        raise SpecError(f"data.interval: no {interval} bars in {root}")
    symbols = list(uni["symbols"] or available)
    missing = [s for s in symbols if s not in available]
    if missing:
        raise SpecError(
            f"universe.symbols: unknown symbol {missing[0]!r} (no {interval} bars in {root})"
        )
    if uni["quote"]:
        symbols = [s for s in symbols if s.endswith(uni["quote"].upper())]
    ranges = {s: data_range(root, interval, s) for s in symbols}
    start = data["start"]
    if start is None:
        start = min(r[0] for r in ranges.values()) if ranges else 0
    end = data["end"]
    if end is None:
        end = max(r[1] for r in ranges.values()) + data["interval"] if ranges else 1
    if uni["min_volume"] > 0 or uni["min_history"] is not None:
        symbols = select_from_data(
            root,
            interval,
            symbols,
            start_ns=start,
            end_ns=end,
            min_quote_volume=uni["min_volume"] or None,
            min_history_ns=uni["min_history"],
        )
    if not symbols:
        raise SpecError("universe: no symbol passes the filters")
    raw_specs = read_symbol_specs(root)
    specs = {
        s: SymbolSpec(s, **cast(dict[str, Any], raw_specs[s])) for s in symbols if s in raw_specs
    }
    return assemble_run(spec, params, str(root), symbols, start, end, specs)


def assemble_run(
    spec: RunSpec,
    params: Mapping[str, Any] | None,
    root: str,
    symbols: list[str],
    start: int,
    end: int,
    specs: dict[str, SymbolSpec],
) -> RunConfig:
    """The run configuration of ``spec`` once its data is resolved (the folder, the
    symbols, the time range and their trading rules): :func:`build_run` for replays,
    :mod:`tickray.cluster.paper` for live sessions."""
    v = spec.values
    data, acct, run = v["data"], v["account"], v["run"]
    perp = None
    if acct["type"] == "perp":
        p = v["perp"]
        perp = PerpConfig(
            leverage=p["leverage"],
            symbol_leverage=p["symbol_leverage"],
            margin_mode=p["margin_mode"],
            position_mode=p["position_mode"],
            brackets=p["brackets"],
            liquidation_fee=p["liquidation_fee"],
            funding=p["funding"],
            marks=p["marks"],
        )
    allow_short = acct["allow_short"]
    if allow_short is None:
        allow_short = acct["type"] == "perp" or data["source"] == "demo"
    ex = v["execution"]
    strategy = v["strategy"]
    return RunConfig(
        data_root=root,
        interval_ns=data["interval"],
        symbols=tuple(sorted(symbols)),
        start_ns=start,
        end_ns=end,
        strategy=StrategyConfig(
            strategy["name"],
            dict(params if params is not None else spec.params),
            load_modules(strategy["modules"]),
        ),
        account=AccountConfig(
            initial_cash=acct["cash"],
            taker_fee=acct["taker_fee"],
            allow_short=allow_short,
            short_margin=acct["short_margin"],
            price_buffer=acct["price_buffer"],
            currency=acct["currency"].upper(),
            balances=acct["balances"],
            fee_asset=acct["fee_asset"],
        ),
        execution=ExecutionConfig(
            spread_bps=ex["spread_bps"],
            spread_ticks=ex["spread_ticks"],
            participation=ex["participation"],
            maker_fee=ex["maker_fee"],
            impact=ex["impact"],
            rules=ex["rules"],
            calendar=ex["calendar"],
            hours=ex["hours"],
            symbol_fees={k.upper(): tuple(val) for k, val in ex["symbol_fees"].items()},
            latency=ex["latency"],
            seed=ex["seed"],
        ),
        perp=perp,
        specs=specs,
        sync_ns=run["sync"] or 0,
        position_fraction=v["sizing"]["fraction"],
        symbols_per_actor=run["symbols_per_actor"],
        fuse=run["fuse"],
        backend=run["backend"],
        address=run["address"],
        approval=run["approval"],
        chunk_rows=run["chunk_rows"],
        checkpoint_every_ns=run["checkpoint_every"],
        max_restarts=run["max_restarts"],
        sizing=spec.sizing,
        risk=spec.limits,
        monitor=spec.monitor,
    )


def default_cache_dir() -> Path:
    return cache_base() / "klines"


def cached_store(spec: RunSpec) -> Path:
    """The replay store of a run on the kline cache: with ``exchange``, the run's range
    is fetched into the cache first (only what the cache lacks); the cached bars are
    then written into ``<cache>/replay`` in the canonical layout the replay reads."""
    import asyncio

    from tickray.feeds.cache import KlineCache, export_to_store

    data = spec.values["data"]
    symbols = list(spec.values["universe"]["symbols"])
    interval = format_duration(data["interval"])
    cache_root = Path(data["path"]) if data["path"] else default_cache_dir()
    cache = KlineCache(cache_root)
    venue = data["venue"]
    if data["source"] == "exchange":
        from tickray.feeds.rest import BinanceRest

        async def fetch() -> None:
            async with BinanceRest(venue, base_url=data["base_url"]) as rest:
                for sym in symbols:
                    await cache.bars(rest, venue, sym, interval, data["start"], data["end"])

        asyncio.run(fetch())
    store = cache_root / "replay" / venue
    export_to_store(cache, venue, symbols, interval, store)
    return store


def build_runs(spec: RunSpec) -> list[RunConfig]:
    """One configuration per grid point (one without a grid)."""
    return [build_run(spec, params) for params in expand_grid(spec)]


def config_from_document(doc: Mapping[str, Any]) -> RunConfig:
    """A single run's configuration from a spec document; a grid is an error here."""
    spec = check_document(doc)
    if spec.grid:
        raise SpecError(
            f"strategy.params: {', '.join(sorted(spec.grid))} form a grid of {spec.runs} "
            "runs; run it as a sweep"
        )
    try:
        return build_run(spec)
    except ConfigError:
        raise
    except ValueError as e:
        raise SpecError(str(e)) from None


if __name__ == "__main__":  # python -m tickray.cluster.spec > docs/spec.md
    from tickray.engine.spec import reference_markdown

    print(reference_markdown())
