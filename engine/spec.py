"""The run spec: one declarative document describing a whole run, checked at the edge.

A spec is a mapping of sections to keys (a TOML file, or JSON through the
API). Every key has a default, so ``{"data": {"source": "demo"},
"strategy": {"name": "momentum"}}`` is a complete spec. Unknown sections and
keys are errors, and every error names the key path and the problem
(``strategy.params.window: must be an integer >= 1, got 'x'``).

:data:`SCHEMA` is the single definition of the sections, keys, types,
defaults and constraints: validation reads it, and the reference
documentation is generated from it (:func:`reference_markdown`).

**Parameter grids.** A strategy parameter given as a list (``window = [10,
20, 40]``) or as a range table (``threshold = {start = 0.01, stop = 0.03,
step = 0.01}``, ``stop`` included when the steps land on it) makes the spec
a sweep: :func:`expand_grid` gives one parameter set per point of the
cartesian product, in a fixed order (keys sorted, values as given), each
checked like a single run's.

Nothing here reads files or data: :mod:`tickray.cluster.spec` loads the
document and resolves the data source and the universe.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tickray.engine.clock import duration_ns, parse_time
from tickray.engine.config import ConfigError
from tickray.engine.riskconfig import MonitorConfig, RiskLimits, SizingConfig
from tickray.engine.strategies import (
    ParamError,
    builtin_strategies,
    make_strategy,
    strategy_names,
)

MAX_GRID = 100_000
"""The most runs a spec's parameter grid may expand into."""


class SpecError(ConfigError):
    """A spec that cannot run; the message names the key path and the problem."""


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a section: its kind, default, meaning and constraints.

    Kinds: ``str``, ``int``, ``float``, ``bool``, ``duration`` (``"1m"``,
    ``"4h"``), ``time`` (ISO-8601 UTC), ``symbols`` (a list of names, or one
    comma-separated string), ``strings`` (a list of strings, or one),
    ``table`` (a mapping checked by the section's consumer), ``assets``
    (asset -> amount). ``optional`` keys may be absent (their default is None).
    """

    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is excluded
    optional: bool = False

    def describe(self) -> str:
        """The constraint in words, as errors and the reference state it."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        noun = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "duration": "a duration like '1m' or '4h'",
            "time": "an ISO-8601 UTC time like '2024-01-01' or '2024-01-01T12:00:00Z'",
            "symbols": "a list of symbol names",
            "strings": "a list of strings (or one string)",
            "table": "a table",
            "assets": "a table of asset -> amount",
        }[self.kind]
        bounds = []
        if self.minimum is not None:
            bounds.append(f"{'>' if self.above else '>='} {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        return noun + (" " + " and ".join(bounds) if bounds else "")


SCHEMA: dict[str, dict[str, Key]] = {
    "data": {
        "source": Key(
            "str",
            "demo",
            "Where bars come from: the embedded synthetic universe (generated on first "
            "use, no download), a data folder in the canonical layout, the layered kline "
            "cache, or the exchange (fetched into the cache first).",
            choices=("demo", "files", "cache", "exchange"),
        ),
        "path": Key(
            "str",
            None,
            "The data folder (files), or the cache folder (cache, exchange; default: "
            "~/.cache/tickray/klines).",
            optional=True,
        ),
        "venue": Key(
            "str",
            "usdm",
            "The exchange market of the cache and of fetches: Binance spot or USD-M futures.",
            choices=("spot", "usdm"),
        ),
        "base_url": Key(
            "str", None, "The exchange's REST address (default: Binance's).", optional=True
        ),
        "interval": Key("duration", "1m", "Bar interval to replay."),
        "start": Key("time", None, "First bar open time (default: the first bar).", optional=True),
        "end": Key(
            "time", None, "End time, exclusive (default: after the last bar).", optional=True
        ),
    },
    "universe": {
        "symbols": Key(
            "symbols", None, "Symbols to trade (default: every symbol in the data).", optional=True
        ),
        "quote": Key(
            "str", None, "Keep only symbols quoted in this asset (e.g. USDT).", optional=True
        ),
        "min_volume": Key(
            "float",
            0.0,
            "Keep symbols whose average daily quote volume over the run is at least this.",
            minimum=0.0,
        ),
        "min_history": Key(
            "duration",
            None,
            "Keep symbols with at least this much history up to the run's end.",
            optional=True,
        ),
    },
    "account": {
        "type": Key(
            "str", "spot", "Spot cash account or USD-M perpetual futures.", choices=("spot", "perp")
        ),
        "cash": Key("float", 100_000.0, "Initial cash in the currency.", minimum=0.0, above=True),
        "currency": Key("str", "USDT", "The asset cash is in and results are valued in."),
        "balances": Key(
            "assets", {}, "Starting balances of other quote assets (e.g. {BTC = 0.5})."
        ),
        "taker_fee": Key(
            "float", 0.001, "Taker fee, a fraction of notional.", minimum=0.0, maximum=0.1
        ),
        "fee_asset": Key(
            "str",
            "quote",
            "Spot fees in the quote asset, or a buy's fee from the base received.",
            choices=("quote", "base"),
        ),
        "allow_short": Key(
            "bool",
            None,
            "Allow short positions (default: true for perpetuals and the demo, else false).",
            optional=True,
        ),
        "short_margin": Key(
            "float", 0.5, "Spot shorts lock this times their notional.", minimum=0.0
        ),
        "price_buffer": Key(
            "float",
            0.02,
            "Adverse move allowed for between approval and fill in cash and margin checks.",
            minimum=0.0,
            maximum=1.0,
        ),
    },
    "perp": {
        "leverage": Key("float", 1.0, "Every symbol's leverage.", minimum=1.0),
        "symbol_leverage": Key("assets", {}, "Leverage of named symbols."),
        "margin_mode": Key("str", "cross", "Margin mode.", choices=("cross", "isolated")),
        "position_mode": Key(
            "str",
            "one-way",
            "One net position, or a long and a short one per symbol.",
            choices=("one-way", "hedge"),
        ),
        "brackets": Key(
            "table", {}, "Notional brackets per symbol: [[floor, cap, max_leverage, mmr, cum]]."
        ),
        "liquidation_fee": Key(
            "float",
            0.0125,
            "Clearance fee, a fraction of the liquidated notional.",
            minimum=0.0,
            maximum=1.0,
        ),
        "funding": Key(
            "table",
            "store",
            "Funding rates: 'store' (the data folder's), 'none', or symbol -> CSV file.",
        ),
        "marks": Key(
            "str",
            "store",
            "Mark prices from the data, or the last price.",
            choices=("store", "last"),
        ),
    },
    "strategy": {
        "name": Key(
            "str",
            "momentum",
            "A built-in strategy ("
            + ", ".join(sorted(builtin_strategies()))
            + ") or one a module of `strategy.modules` registers.",
        ),
        "modules": Key(
            "strings",
            (),
            "Python files (`.py`), package folders or importable module names to import "
            "before the strategy is looked up, so that their `@register_strategy` classes "
            "can be named. Relative paths are from the working directory. On Ray they "
            "reach the workers through the runtime environment.",
        ),
        "params": Key(
            "table",
            {},
            "The strategy's parameters; a list or {start, stop, step} makes a grid.",
        ),
    },
    "sizing": {
        "method": Key(
            "str",
            "fraction",
            "How a target becomes a quantity (tickray.risk.sizing).",
            choices=(
                "fraction",
                "quantity",
                "notional",
                "risk",
                "atr",
                "vol_target",
                "kelly",
                "inverse_vol",
                "risk_parity",
            ),
        ),
        "fraction": Key(
            "float",
            0.9,
            "Share of each symbol's equal allocation a full position takes (fraction, "
            "inverse_vol, risk_parity).",
            minimum=0.0,
            maximum=1.0,
            above=True,
        ),
        "quantity": Key(
            "float",
            None,
            "Base quantity of every position (quantity).",
            minimum=0.0,
            above=True,
            optional=True,
        ),
        "notional": Key(
            "float",
            None,
            "Quote notional of every position (notional).",
            minimum=0.0,
            above=True,
            optional=True,
        ),
        "risk": Key(
            "float",
            0.01,
            "Fraction of the symbol's sleeve lost if the stop is hit "
            "(risk: the signal's stop; atr: atr_mult ATRs).",
            minimum=0.0,
            maximum=1.0,
            above=True,
        ),
        "atr_window": Key("int", 14, "Bars of Wilder's ATR (atr).", minimum=1),
        "atr_mult": Key("float", 2.0, "Stop distance in ATRs (atr).", minimum=0.0, above=True),
        "target_vol": Key(
            "float",
            0.2,
            "Annualised volatility a position targets (vol_target).",
            minimum=0.0,
            maximum=5.0,
            above=True,
        ),
        "vol_window": Key(
            "int",
            20,
            "Returns in the volatility estimate (vol_target, inverse_vol, risk_parity).",
            minimum=2,
        ),
        "periods_per_year": Key(
            "float",
            None,
            "Bars per year to annualise volatility "
            "(vol_target; 525600 for 1m bars around the clock).",
            minimum=0.0,
            above=True,
            optional=True,
        ),
        "kelly_fraction": Key(
            "float",
            0.5,
            "Share of the full Kelly bet (kelly).",
            minimum=0.0,
            maximum=1.0,
            above=True,
        ),
        "kelly_cap": Key(
            "float",
            1.0,
            "Largest share of the sleeve Kelly may take (kelly).",
            minimum=0.0,
            maximum=1.0,
            above=True,
        ),
        "window": Key("int", 50, "Signal trades in Kelly's edge estimate (kelly).", minimum=2),
        "min_trades": Key(
            "int", 20, "Signal trades before Kelly sizes anything (kelly).", minimum=1
        ),
        "max_position_fraction": Key(
            "float",
            1.0,
            "Cap of one position's notional, as a fraction of its sleeve (times the leverage).",
            minimum=0.0,
            maximum=1.0,
            above=True,
        ),
    },
    "risk": {
        "max_position_notional": Key(
            "float",
            None,
            "Largest |position| x price of a symbol.",
            minimum=0.0,
            above=True,
            optional=True,
        ),
        "max_position_fraction": Key(
            "float",
            None,
            "The same as a fraction of equity.",
            minimum=0.0,
            above=True,
            optional=True,
        ),
        "max_gross_leverage": Key(
            "float", None, "Cap of sum |notional| / equity.", minimum=0.0, above=True, optional=True
        ),
        "max_net_leverage": Key(
            "float", None, "Cap of |sum notional| / equity.", minimum=0.0, above=True, optional=True
        ),
        "max_open_positions": Key(
            "int", None, "Most symbols holding a position at once.", minimum=1, optional=True
        ),
        "max_correlation": Key(
            "float",
            None,
            "Most an opening order's returns may correlate with the P&L of the other positions.",
            minimum=0.0,
            maximum=1.0,
            above=True,
            optional=True,
        ),
        "correlation_window": Key("int", 30, "Step returns in the correlation.", minimum=2),
        "correlation_action": Key(
            "str",
            "reject",
            "Past max_correlation: reject the opening part, or resize it.",
            choices=("reject", "resize"),
        ),
        "groups": Key("table", {}, "Symbol -> group name, for max_group_fraction."),
        "max_group_fraction": Key(
            "float",
            None,
            "Most gross notional a group may hold, as a fraction of equity.",
            minimum=0.0,
            above=True,
            optional=True,
        ),
        "var_limit": Key(
            "float",
            None,
            "Most one step's value at risk may be, as a fraction of equity.",
            minimum=0.0,
            above=True,
            optional=True,
        ),
        "cvar_limit": Key(
            "float",
            None,
            "The same for the expected shortfall.",
            minimum=0.0,
            above=True,
            optional=True,
        ),
        "var_confidence": Key(
            "float", 0.99, "Confidence of VaR and CVaR.", minimum=0.0, maximum=1.0, above=True
        ),
        "var_method": Key(
            "str", "historical", "VaR estimate.", choices=("historical", "parametric")
        ),
        "var_window": Key("int", 250, "Step returns in the VaR estimate.", minimum=2),
        "max_orders_per_step": Key(
            "int", None, "Intents approved per symbol per step.", minimum=1, optional=True
        ),
        "max_orders_per_day": Key(
            "int", None, "Intents approved per symbol per UTC day.", minimum=1, optional=True
        ),
        "max_drawdown": Key(
            "float",
            None,
            "Drawdown past which new entries halt; below it "
            "new exposure scales by 1 - drawdown / max_drawdown.",
            minimum=0.0,
            maximum=1.0,
            above=True,
            optional=True,
        ),
        "drawdown_lookback": Key(
            "duration",
            None,
            "Window of the drawdown's peak (default: the whole run).",
            optional=True,
        ),
        "resume_drawdown": Key(
            "float",
            None,
            "Drawdown below which entries resume (default: half of max_drawdown).",
            minimum=0.0,
            optional=True,
        ),
        "min_scale": Key("float", 0.2, "Smallest scale in a drawdown.", minimum=0.0, maximum=1.0),
        "scale_with_drawdown": Key("bool", True, "Scale new exposure down as drawdown deepens."),
        "daily_loss_limit": Key(
            "float",
            None,
            "Loss since the UTC day's start past which entries halt until the next day.",
            minimum=0.0,
            maximum=1.0,
            above=True,
            optional=True,
        ),
        "break_even_r": Key(
            "float",
            None,
            "Move an event strategy's stop-loss to the entry once the best close is this many "
            "R (the initial risk) in favour.",
            minimum=0.0,
            above=True,
            optional=True,
        ),
        "trail_r": Key(
            "float",
            None,
            "Once this many R in favour, the stop trails the best close at this many R.",
            minimum=0.0,
            above=True,
            optional=True,
        ),
        "kill_drawdown": Key(
            "float",
            None,
            "Drawdown past which every position is closed and no entry follows.",
            minimum=0.0,
            maximum=1.0,
            above=True,
            optional=True,
        ),
    },
    "execution": {
        "spread_bps": Key(
            "float", 0.0, "Assumed spread in basis points; market orders pay half.", minimum=0.0
        ),
        "spread_ticks": Key("int", 0, "Minimum assumed spread in ticks.", minimum=0),
        "participation": Key(
            "float",
            None,
            "Largest share of a bar's volume our fills take.",
            minimum=0.0,
            maximum=1.0,
            above=True,
            optional=True,
        ),
        "maker_fee": Key(
            "float",
            None,
            "Maker fee (default: the taker fee).",
            minimum=-0.01,
            maximum=0.1,
            optional=True,
        ),
        "symbol_fees": Key("table", {}, "Per-symbol [maker, taker] fee rates."),
        "impact": Key(
            "table",
            None,
            "Impact model, e.g. {model = 'sqrt', coef = 1, decay = '60s'}.",
            optional=True,
        ),
        "rules": Key(
            "str",
            "round",
            "Off-grid prices and sizes are rounded or rejected.",
            choices=("round", "reject"),
        ),
        "calendar": Key("str", "24/7", "Trading hours: '24/7' or 'NYSE'."),
        "hours": Key(
            "str",
            "wait",
            "Orders outside the hours wait for the open or are rejected.",
            choices=("wait", "reject"),
        ),
        "latency": Key(
            "table",
            None,
            "Order latency, e.g. {submit = '250ms'} or {submit = {dist = 'lognormal', "
            "median = '200ms', sigma = 0.5}}: an order reaches the venue that much after "
            "its decision.",
            optional=True,
        ),
        "seed": Key("int", 0, "Seed of sampled latencies (with the symbol's name).", minimum=0),
    },
    "run": {
        "sync": Key("duration", None, "Step length (default: the bar interval).", optional=True),
        "backend": Key("str", "local", "In-process actors or Ray.", choices=("local", "ray")),
        "address": Key("str", None, "Ray cluster address to join.", optional=True),
        "symbols_per_actor": Key(
            "int", 0, "Symbols per actor (0: spread over the CPUs).", minimum=0
        ),
        "fuse": Key("bool", True, "Let quiet symbols run several steps per call."),
        "approval": Key(
            "str",
            "portfolio",
            "Who runs the pre-trade cash check.",
            choices=("portfolio", "symbol"),
        ),
        "chunk_rows": Key("int", 16384, "Bars each symbol holds decoded at a time.", minimum=1),
        "checkpoint_every": Key(
            "duration",
            "60s",
            "Ray: wall time between an actor's checkpoints (taken at step boundaries).",
        ),
        "max_restarts": Key(
            "int",
            3,
            "Ray: times a dead actor is restarted from its checkpoint (0: no recovery).",
            minimum=0,
        ),
    },
    "live": {
        "market": Key(
            "str", "spot", "Paper trading: the exchange market streamed.", choices=("spot", "usdm")
        ),
        "ws_url": Key(
            "str",
            None,
            "Paper trading: the combined-stream base URL (default: Binance's).",
            optional=True,
        ),
        "duration": Key(
            "duration",
            None,
            "Paper trading: the session's length (default: until Ctrl-C or SIGTERM).",
            optional=True,
        ),
        "grace": Key(
            "float",
            2.0,
            "Paper trading: seconds a step waits past its boundary for its bars.",
            minimum=0,
        ),
        "on_stop": Key(
            "str",
            "flatten",
            "Paper trading: at the end, close every position at the next bar's open "
            "(flatten) or keep them.",
            choices=("flatten", "keep"),
        ),
        "record": Key(
            "str",
            None,
            "Paper trading: a folder for every raw stream message (to replay the session).",
            optional=True,
        ),
        "stall_timeout": Key(
            "float",
            30.0,
            "Paper trading: seconds without a message before the feed reconnects (0: never).",
            minimum=0,
        ),
    },
}


@dataclass(frozen=True, slots=True)
class RunSpec:
    """A checked spec: every section with every key (defaults filled), and its grid.

    ``values[section][key]`` holds normalised values (durations in ns, times
    in ns, symbols as a sorted tuple). ``grid`` maps each strategy parameter
    given as a list or range to its values; ``params`` holds the others.
    """

    values: dict[str, dict[str, Any]]
    params: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]
    sizing: SizingConfig = field(default_factory=SizingConfig)
    limits: RiskLimits = field(default_factory=RiskLimits)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def get(self, path: str) -> Any:
        section, key = path.split(".")
        return self.values[section][key]

    @property
    def runs(self) -> int:
        """How many runs the spec expands into."""
        return math.prod(len(v) for v in self.grid.values()) if self.grid else 1


def parse_spec(raw: object) -> RunSpec:
    """Check a spec document (a mapping) and fill its defaults. Raises :class:`SpecError`."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"spec: must be a table of sections, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise SpecError(f"{unknown[0]}: unknown section (known: {', '.join(SCHEMA)})")
    values: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, Mapping):
            raise SpecError(f"{section}: must be a table, got {_show(given)}")
        extra = sorted(set(given) - set(keys))
        if extra:
            raise SpecError(f"{section}.{extra[0]}: unknown key (known: {', '.join(keys)})")
        values[section] = {
            name: _check(f"{section}.{name}", key, given.get(name, key.default))
            for name, key in keys.items()
        }
    data = values["data"]
    if data["source"] == "files" and not data["path"]:
        raise SpecError("data.path: required when data.source is 'files'")
    if data["source"] == "demo" and data["path"]:
        raise SpecError("data.path: not with data.source 'demo' (the demo needs no folder)")
    if data["source"] in ("cache", "exchange") and values["universe"]["symbols"] is None:
        raise SpecError(f"universe.symbols: required with data.source {data['source']!r}")
    if data["source"] == "exchange" and (data["start"] is None or data["end"] is None):
        raise SpecError("data.start and data.end: required with data.source 'exchange'")
    if data["start"] is not None and data["end"] is not None and data["end"] <= data["start"]:
        raise SpecError("data.end: must be after data.start")
    if values["account"]["type"] != "perp" and "perp" in raw:
        raise SpecError("perp: only with account.type 'perp'")
    name = values["strategy"]["name"]
    if name not in strategy_names():
        raise SpecError(
            f"strategy.name: unknown strategy {name!r} (known: {', '.join(strategy_names())})"
        )
    params, grid = _split_grid(values["strategy"]["params"])
    risk_given = raw.get("risk", {})
    pre_trade = sorted(k for k in risk_given if k not in _MONITOR_KEYS and k != "drawdown_lookback")
    if pre_trade and values["run"]["approval"] == "symbol":
        raise SpecError(
            f"risk.{pre_trade[0]}: pre-trade limits are checked by the portfolio, so they "
            "need run.approval = 'portfolio' (with 'symbol' each symbol approves its own "
            "orders and the limits would not apply)"
        )
    try:
        sizing, limits, monitor = _risk_objects(raw, values)
    except SpecError:
        raise
    except ConfigError as e:
        raise SpecError(str(e)) from None
    spec = RunSpec(values, params, grid, sizing, limits, monitor)
    if spec.runs > MAX_GRID:
        raise SpecError(f"strategy.params: the grid has {spec.runs} points, more than {MAX_GRID}")
    expand_grid(spec)  # every point must be a valid parameter set
    return spec


_MONITOR_KEYS = (
    "max_drawdown",
    "resume_drawdown",
    "min_scale",
    "scale_with_drawdown",
    "daily_loss_limit",
    "kill_drawdown",
    "break_even_r",
    "trail_r",
)


def _risk_objects(
    raw: Mapping[str, Any], values: dict[str, dict[str, Any]]
) -> tuple[SizingConfig, RiskLimits, MonitorConfig]:
    """The sizing, limits and monitor settings from the keys the spec gives (their
    own checks name the key and catch contradictions)."""
    sizing_keys = set(raw.get("sizing", {})) | {"method"}
    if values["sizing"]["method"] in ("fraction", "inverse_vol", "risk_parity"):
        sizing_keys.add("fraction")
    sizing = SizingConfig.from_spec({k: values["sizing"][k] for k in sorted(sizing_keys)})
    given = set(raw.get("risk", {}))
    monitor = {k: values["risk"][k] for k in sorted(given) if k in _MONITOR_KEYS}
    if "drawdown_lookback" in given:
        monitor["drawdown_lookback_ns"] = values["risk"]["drawdown_lookback"] or 0
    limits = {
        k: values["risk"][k]
        for k in sorted(given)
        if k not in _MONITOR_KEYS and k != "drawdown_lookback"
    }
    return sizing, RiskLimits.from_mapping(limits), MonitorConfig(**monitor)


def expand_grid(spec: RunSpec) -> list[dict[str, Any]]:
    """One strategy parameter set per grid point (just ``params`` without a grid),
    each checked by the strategy."""
    names = sorted(spec.grid)
    out = []
    for point in itertools.product(*(spec.grid[n] for n in names)):
        params = dict(spec.params) | dict(zip(names, point, strict=True))
        try:
            make_strategy(spec.values["strategy"]["name"], params)
        except ParamError as e:
            where = f" (grid point {dict(zip(names, point, strict=True))})" if names else ""
            raise SpecError(f"{e}{where}") from None
        out.append(params)
    return out


def _split_grid(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[Any, ...]]]:
    fixed: dict[str, Any] = {}
    grid: dict[str, tuple[Any, ...]] = {}
    for name, value in params.items():
        where = f"strategy.params.{name}"
        if isinstance(value, list):
            if not value:
                raise SpecError(f"{where}: a grid needs at least one value")
            grid[name] = tuple(value)
        elif isinstance(value, Mapping):
            grid[name] = _range(where, value)
        else:
            fixed[name] = value
    return fixed, grid


def _range(where: str, table: Mapping[str, Any]) -> tuple[Any, ...]:
    """The values of a ``{start, stop, step}`` range; ``stop`` is included when reached."""
    if set(table) != {"start", "stop", "step"}:
        raise SpecError(f"{where}: a range needs exactly start, stop and step, got {sorted(table)}")
    start, stop, step = table["start"], table["stop"], table["step"]
    nums = (start, stop, step)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in nums):
        raise SpecError(f"{where}: start, stop and step must be numbers, got {dict(table)}")
    if not all(math.isfinite(v) for v in nums) or step <= 0 or stop < start:
        raise SpecError(f"{where}: needs step > 0 and stop >= start, got {dict(table)}")
    if all(isinstance(v, int) for v in nums):
        return tuple(range(start, stop + 1, step))
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_GRID:
        raise SpecError(f"{where}: the range has {count} values, more than {MAX_GRID}")
    # values rounded to the step's decimals, so 0.1 + 0.2 reads as 0.3
    decimals = max(0, -math.floor(math.log10(step)) + 6)
    return tuple(round(start + k * step, decimals) for k in range(count))


def _show(value: object) -> str:
    return repr(value) if not isinstance(value, Mapping | list) else type(value).__name__


def _check(where: str, key: Key, value: Any) -> Any:
    """``value`` checked and normalised for ``key``; SpecError naming ``where`` if bad."""
    if value is None and (key.optional or key.default is None):
        return None
    bad = SpecError(f"{where}: must be {key.describe()}, got {_show(value)}")
    kind = key.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if kind == "int" and not isinstance(value, int):
            raise bad
        if not math.isfinite(value):
            raise bad
        if key.minimum is not None and (value <= key.minimum if key.above else value < key.minimum):
            raise bad
        if key.maximum is not None and value > key.maximum:
            raise bad
        return value if kind == "int" else float(value)
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise bad
        if key.choices and value not in key.choices:
            raise bad
        return value
    if kind == "duration":
        if not isinstance(value, str):
            raise bad
        try:
            ns = duration_ns(value)
        except ValueError:
            raise bad from None
        if ns <= 0:
            raise bad
        return ns
    if kind == "time":
        if not isinstance(value, str):
            raise bad
        try:
            return parse_time(value)
        except ValueError:
            raise bad from None
    if kind == "symbols":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise bad
        names = sorted({s.strip().upper() for s in items if s.strip()})
        if not names:
            raise SpecError(f"{where}: at least one symbol is needed")
        return tuple(names)
    if kind == "strings":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(
            isinstance(v, str) and v.strip() for v in items
        ):
            raise bad
        return tuple(v.strip() for v in items)
    if kind == "assets":
        if not isinstance(value, Mapping):
            raise bad
        out = {}
        for name, amount in value.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float):
                raise SpecError(f"{where}.{name}: must be a number, got {_show(amount)}")
            out[str(name).upper()] = float(amount)
        return out
    # "table": a mapping, or for perp.funding one of its words
    if key.default == "store" and isinstance(value, str):
        if value not in ("store", "none"):
            raise SpecError(f"{where}: must be 'store', 'none' or a table, got {value!r}")
        return value
    if not isinstance(value, Mapping):
        raise bad
    return dict(value)


def reference_markdown() -> str:
    """The spec reference (every section and key, its type, default and meaning) as
    Markdown, generated from :data:`SCHEMA`."""
    lines = [
        "# Run spec reference",
        "",
        "Generated from `tickray.engine.spec.SCHEMA`; every key is optional.",
        "",
    ]
    for section, keys in SCHEMA.items():
        lines += [f"## [{section}]", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, key in keys.items():
            default = (
                "(none)"
                if key.default is None
                else "[]"
                if key.default == ()
                else repr(key.default)
            )
            lines.append(f"| `{name}` | {key.describe()} | `{default}` | {key.doc} |")
        lines.append("")
    return "\n".join(lines)
