"""Typed run configuration handed down from the edge (CLI, spec file) to the actors.

Everything is validated when built, with errors naming the field. Times are
ns UTC; durations are ns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from tickray.engine.book import queue_from_spec
from tickray.engine.errors import ConfigError as ConfigError
from tickray.engine.impact import impact_from_spec
from tickray.engine.instruments import SymbolSpec
from tickray.engine.latency import latency_from_spec
from tickray.engine.perpetual import BracketTable, MarginError, bracket_table
from tickray.engine.quoting import make_tick_strategy
from tickray.engine.riskconfig import MonitorConfig, RiskLimits, SizingConfig
from tickray.engine.strategies import make_strategy


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """A spot cash account.

    ``initial_cash`` in ``currency``, the asset results are valued in (the
    quote asset of most symbols). ``balances``: starting holdings of other
    quote assets (``{"BTC": 0.5}`` for symbols quoted in BTC); each quote
    asset is its own cash, shared by the symbols quoted in it and valued in
    ``currency`` at the mark of the run's ``<asset><currency>`` symbol.
    ``fee_asset``: ``"quote"`` charges fees in the quote asset; ``"base"``
    takes a buy's fee from the base asset received (Binance spot without BNB),
    leaving the part below one lot as dust (see
    :func:`~tickray.engine.instruments.base_fee_split`). ``taker_fee`` is a fraction of each
    fill's notional, charged in the quote asset. ``allow_short`` lets sells go
    below zero holdings (a margin account); short positions then lock
    ``short_margin`` times their marked notional on top of the sale proceeds.
    ``price_buffer`` is the adverse move allowed for between approval (priced at
    the last close) and the fill (at the next open) when checking cash.
    """

    initial_cash: float = 100_000.0
    taker_fee: float = 0.001
    allow_short: bool = False
    short_margin: float = 0.5
    price_buffer: float = 0.02
    currency: str = "USDT"
    balances: dict[str, float] = field(default_factory=dict)
    fee_asset: str = "quote"

    def __post_init__(self) -> None:
        _positive("account.initial_cash", self.initial_cash)
        _fraction("account.taker_fee", self.taker_fee)
        _nonneg("account.short_margin", self.short_margin)
        _fraction("account.price_buffer", self.price_buffer)
        if not (isinstance(self.currency, str) and self.currency.isalnum()):
            raise ConfigError(f"account.currency: must be an asset name, got {self.currency!r}")
        for asset, v in self.balances.items():
            if not (isinstance(asset, str) and asset.isalnum()):
                raise ConfigError(f"account.balances: {asset!r} is not an asset name")
            if asset == self.currency:
                raise ConfigError(
                    f"account.balances.{asset}: the currency's balance is account.initial_cash"
                )
            _nonneg(f"account.balances.{asset}", v)
        if self.fee_asset not in ("quote", "base"):
            raise ConfigError(
                f"account.fee_asset: must be 'quote' or 'base', got {self.fee_asset!r}"
            )


@dataclass(frozen=True, slots=True)
class ExecutionConfig:
    """How orders fill on bars (see :mod:`tickray.engine.barvenue` for the rules).

    ``spread_bps``: the assumed bid-ask spread as basis points of the price;
    market orders pay half of it (at least ``spread_ticks`` / 2 ticks).
    ``participation``: the largest share of a bar's volume our fills may take
    (None: no cap); the rest fills in later bars. ``maker_fee``: the rate for
    fills that add liquidity (None: the account's taker fee). ``impact``: an
    impact model spec (``{"model": "sqrt", "coef": 1.0, "decay": "60s"}``,
    ``{"model": "linear", "bps": 2}``; None: none). ``rules``: ``"round"``
    prices and quantities to the symbol's tick and lot, or ``"reject"`` orders
    off the grid. ``calendar``: the venue's trading hours (``"24/7"``,
    ``"NYSE"``); ``hours``: orders outside them ``"wait"`` for the open or are
    ``"reject"``-ed. ``symbol_fees``: per-symbol (maker, taker) rates that
    replace the run's for that symbol, in fills and in the cash check.
    ``latency``: a latency spec (tickray.engine.latency.latency_from_spec):
    an order decided at a step's end reaches the venue that much later and
    works from the first bar opening at or after it; sampled latencies draw
    from ``seed`` and the symbol.
    """

    spread_bps: float = 0.0
    spread_ticks: int = 0
    participation: float | None = None
    maker_fee: float | None = None
    impact: dict[str, Any] | None = None
    rules: str = "round"
    calendar: str = "24/7"
    hours: str = "wait"
    symbol_fees: dict[str, tuple[float, float]] = field(default_factory=dict)
    latency: dict[str, Any] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _nonneg("execution.spread_bps", self.spread_bps)
        try:
            latency_from_spec(self.latency, seed=self.seed)
        except ValueError as e:
            raise ConfigError(f"execution.latency: {e}") from None
        for sym, pair in self.symbol_fees.items():
            if not (isinstance(pair, tuple | list) and len(pair) == 2):
                raise ConfigError(
                    f"execution.symbol_fees.{sym}: expected (maker, taker), got {pair!r}"
                )
            maker, taker = pair
            if not (isinstance(maker, int | float) and -0.01 <= maker < 0.1):
                raise ConfigError(
                    f"execution.symbol_fees.{sym}: maker must be in [-0.01, 0.1), got {maker!r}"
                )
            _fraction(f"execution.symbol_fees.{sym}.taker", taker)
        if not isinstance(self.spread_ticks, int) or self.spread_ticks < 0:
            raise ConfigError(
                f"execution.spread_ticks: must be an integer >= 0, got {self.spread_ticks!r}"
            )
        if self.participation is not None and not (
            isinstance(self.participation, int | float) and 0 < self.participation <= 1
        ):
            raise ConfigError(
                f"execution.participation: must be in (0, 1] or none, got {self.participation!r}"
            )
        if self.maker_fee is not None and not (
            isinstance(self.maker_fee, int | float) and -0.01 <= self.maker_fee < 0.1
        ):
            raise ConfigError(
                f"execution.maker_fee: must be in [-0.01, 0.1), got {self.maker_fee!r}"
            )
        try:
            impact_from_spec(self.impact)
        except ValueError as e:
            raise ConfigError(f"execution.{e}") from None
        if self.rules not in ("round", "reject"):
            raise ConfigError(f"execution.rules: must be 'round' or 'reject', got {self.rules!r}")
        if self.hours not in ("wait", "reject"):
            raise ConfigError(f"execution.hours: must be 'wait' or 'reject', got {self.hours!r}")
        if not isinstance(self.calendar, str) or not self.calendar:
            raise ConfigError(f"execution.calendar: must be a calendar name, got {self.calendar!r}")


@dataclass(frozen=True, slots=True)
class PerpConfig:
    """A USD-M perpetual futures account (see :mod:`tickray.engine.perpetual`).

    ``leverage``: every symbol's leverage unless ``symbol_leverage`` names it.
    ``margin_mode``: ``"cross"`` (one wallet backs every position) or
    ``"isolated"`` (each position has its own margin). ``position_mode``:
    ``"one-way"`` (one net position per symbol) or ``"hedge"`` (a long and a
    short position per symbol, opened and closed separately by the strategy's
    leg targets, each with its own entry, margin and liquidation; see
    :mod:`tickray.engine.perpetual`). ``brackets``: per-symbol notional
    brackets ``[[floor, cap, max_leverage, mmr, cum], ...]`` (others get
    BTCUSDT's published table or a generic one). ``liquidation_fee``: the
    clearance fee, a fraction of the liquidated notional, capped at the margin
    left. ``funding``: where funding rates come from: ``"store"`` (the data
    root's ``funding`` ticks, as the demo writes them), ``"none"`` (no
    funding), or a mapping of symbol to a funding-rate CSV file.
    ``marks``: use mark prices from the store's funding ticks when present
    (``"store"``), or derive them from the last price (``"last"``).
    """

    leverage: float = 1.0
    symbol_leverage: dict[str, float] = field(default_factory=dict)
    margin_mode: str = "cross"
    position_mode: str = "one-way"
    brackets: dict[str, Any] = field(default_factory=dict)
    liquidation_fee: float = 0.0125
    funding: Any = "store"
    marks: str = "store"

    def __post_init__(self) -> None:
        for name, lev in [("perp.leverage", self.leverage)] + [
            (f"perp.symbol_leverage.{s}", v) for s, v in self.symbol_leverage.items()
        ]:
            if not (isinstance(lev, int | float) and math.isfinite(lev) and lev >= 1):
                raise ConfigError(f"{name}: must be a number >= 1, got {lev!r}")
        if self.margin_mode not in ("cross", "isolated"):
            raise ConfigError(
                f"perp.margin_mode: must be 'cross' or 'isolated', got {self.margin_mode!r}"
            )
        if self.position_mode not in ("one-way", "hedge"):
            raise ConfigError(
                f"perp.position_mode: must be 'one-way' or 'hedge', got {self.position_mode!r}"
            )
        _fraction("perp.liquidation_fee", self.liquidation_fee)
        if not (self.funding in ("store", "none") or isinstance(self.funding, dict)):
            raise ConfigError(
                f"perp.funding: must be 'store', 'none' or symbol -> file, got {self.funding!r}"
            )
        if self.marks not in ("store", "last"):
            raise ConfigError(f"perp.marks: must be 'store' or 'last', got {self.marks!r}")
        for sym, rows in self.brackets.items():
            try:
                bracket_table(sym, rows)
            except MarginError as e:
                raise ConfigError(f"perp.brackets.{e}") from None

    def leverage_for(self, symbol: str) -> float:
        return float(self.symbol_leverage.get(symbol, self.leverage))

    def table(self, symbol: str) -> BracketTable:
        return bracket_table(symbol, self.brackets.get(symbol))


@dataclass(frozen=True, slots=True)
class L2Config:
    """An order-book replay: recordings per symbol and the tick strategy that trades them.

    ``files``: symbol -> recording path (Binance websocket captures with a
    REST snapshot; see tickray.feeds.recordings). ``strategy``/``params``: a
    tick strategy (``quote``: size, offset, max_position), or any registered
    event strategy (tickray.engine.signals), run by
    :class:`~tickray.engine.l2signals.SignalDriver` with bars of ``bar_ns``
    built from the trades (0: no bars). The strategy wakes
    every ``timer_ns``, when the best price moves ``wake_ticks``, and after its
    fills when ``wake_on_fill``. ``latency``: a latency spec
    (engine.latency.latency_from_spec; sampled latencies draw from ``seed``
    and the symbol). ``queue``: ``"conservative"`` or ``"probabilistic"`` (or
    a mapping). ``tops``: apply book tops newer than the depth.
    """

    files: dict[str, str]
    strategy: str = "quote"
    params: dict[str, Any] = field(default_factory=dict)
    timer_ns: int = 1_000_000_000
    bar_ns: int = 0
    wake_ticks: int = 0
    wake_on_fill: bool = False
    latency: dict[str, Any] | None = None
    queue: Any = "conservative"
    tops: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.files:
            raise ConfigError("l2.files: at least one recording is needed")
        for name, fn in (
            ("strategy", lambda: l2_strategy(self.strategy, self.params)),
            ("latency", lambda: latency_from_spec(self.latency, seed=self.seed)),
            ("queue", lambda: queue_from_spec(self.queue)),
        ):
            try:
                fn()
            except ValueError as e:
                raise ConfigError(f"l2.{name}: {e}") from None
        if self.timer_ns < 0 or self.wake_ticks < 0 or self.bar_ns < 0:
            raise ConfigError("l2.timer, l2.bar and l2.wake_ticks: must be >= 0")


def l2_strategy(name: str, params: dict[str, Any]) -> Any:
    """The strategy of an order-book replay: a tick strategy, or a registered event
    strategy (a bar strategy cannot run there). ValueError naming the problem."""
    from tickray.engine.quoting import TICK_STRATEGIES
    from tickray.engine.signals import SignalStrategy

    if name in TICK_STRATEGIES:
        return make_tick_strategy(name, params)
    built = make_strategy(name, params)
    if not isinstance(built, SignalStrategy):
        raise ValueError(
            f"strategy {name!r} works on bar batches; an order-book replay runs tick strategies "
            f"({', '.join(sorted(TICK_STRATEGIES))}) or event strategies"
        )
    return built


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """A paper-trading session on live exchange streams (see tickray.actors.live).

    ``market``: ``"spot"`` or ``"usdm"``. ``ws_url``: the combined-stream base URL
    ("" for Binance's). ``duration_s``: the session's length (0: until stopped).
    ``grace_s``: how long a step waits past its boundary for its bars. ``on_stop``:
    ``"flatten"`` closes every position at the next bar's open, ``"keep"`` leaves them.
    ``record``: a folder for the raw messages ("" for none). ``stall_timeout_s``:
    seconds of silence before the feed reconnects (0: no watchdog). Order-book
    sessions (``l2`` set, its ``files`` naming the symbols) also use ``rest_url``
    (the REST base URL of the depth snapshots, "" for Binance's) and ``depth``
    (the diff stream's speed, e.g. ``"100ms"``) and ``feed``: ``"process"`` (default)
    runs each actor's websocket, books and recorder in a child process of the actor, on
    a core of its own; ``"thread"`` on a thread of the actor's process, sharing its
    interpreter lock with the simulation (about 0.6x the message rate).
    ``transport``: the websocket library, ``"websockets"`` (default) or ``"aiohttp"``,
    which receives about 4x cheaper (see tickray.feeds.ws.BinanceWs).
    ``symbols_per_feed``: how many of an actor's symbols share one feed (one connection,
    one process); default 1, each symbol's streams on their own core. ``absorb_ms``:
    while an order-book session waits for a step boundary, its actors take in what has
    arrived every this many ms (0: only at the boundary), so that a step has only its
    last messages left and an order is decided soon after its message arrives; the
    results are the same either way.
    """

    market: str = "spot"
    ws_url: str = ""
    duration_s: float = 0.0
    grace_s: float = 2.0
    on_stop: str = "flatten"
    record: str = ""
    stall_timeout_s: float = 30.0
    rest_url: str = ""
    depth: str = "100ms"
    feed: str = "process"
    transport: str = "websockets"
    symbols_per_feed: int = 1
    absorb_ms: float = 25.0

    def __post_init__(self) -> None:
        n = self.symbols_per_feed
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            raise ConfigError(f"live.symbols_per_feed: must be an integer >= 1, got {n!r}")
        if self.transport not in ("websockets", "aiohttp"):
            raise ConfigError(
                f"live.transport: must be 'websockets' or 'aiohttp', got {self.transport!r}"
            )
        if self.feed not in ("process", "thread"):
            raise ConfigError(f"live.feed: must be 'process' or 'thread', got {self.feed!r}")
        if self.market not in ("spot", "usdm"):
            raise ConfigError(f"live.market: must be 'spot' or 'usdm', got {self.market!r}")
        if self.on_stop not in ("flatten", "keep"):
            raise ConfigError(f"live.on_stop: must be 'flatten' or 'keep', got {self.on_stop!r}")
        for name in ("duration_s", "grace_s", "stall_timeout_s", "absorb_ms"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and not isinstance(v, bool) and v >= 0):
                raise ConfigError(f"live.{name}: must be a number >= 0, got {v!r}")


@dataclass(frozen=True, slots=True)
class UserModule:
    """A user's Python module that registers strategies (see tickray.actors.usercode).

    ``name`` is what workers import; ``path`` the ``.py`` file or package folder it
    was loaded from ("" for a module installed on every machine); ``sha256`` the
    digest of its source, recorded with the run's results.
    """

    name: str
    path: str = ""
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """The strategy by registered name, its parameters, and the user modules to import
    (in every worker, before the name is looked up) for a user strategy."""

    name: str = "momentum"
    params: dict[str, Any] = field(default_factory=dict)
    modules: tuple[UserModule, ...] = ()

    def __post_init__(self) -> None:
        built = make_strategy(self.name, self.params)  # raises ParamError naming the key
        # the given parameters as the strategy reads them ("3" from a command line is 3)
        given = {k: getattr(built, k, v) for k, v in self.params.items()}
        if given != self.params or any(
            type(v) is not type(self.params[k]) for k, v in given.items()
        ):
            object.__setattr__(self, "params", given)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One backtest.

    ``sync_ns``: step length (the portfolio's reaction time), a multiple of the
    bar interval is typical. ``position_fraction``: share of a symbol's equal
    allocation (initial cash / number of symbols) a full target position uses.
    ``symbols_per_actor``: 0 spreads the symbols over min(symbols, cpus) actors.
    ``fuse``: let symbols with nothing to report run several steps in one call
    (results are identical with it on or off; it only saves calls).
    ``approval``: who runs the pre-trade cash check. ``"portfolio"``: intents
    wait for the portfolio at the step's end (one shared cash account; the
    step length is the order latency). ``"symbol"``: each symbol checks its
    own sub-account (its equal share of the initial cash plus its own cash
    flows) at the signal and its market order fills at the next bar's open
    whatever ``sync`` is; symbols then need no round trip per step, and
    ``sync`` only sets where the equity curve is sampled.
    ``chunk_rows``: bars each symbol holds decoded at a time (memory per symbol
    is about 60 bytes x chunk_rows, whatever the length of the history).
    ``remote_portfolio``: on the Ray backend, run the portfolio as its own Ray
    actor instead of beside the clock in the driver (same results, slower).
    ``checkpoint_every_ns``: on the Ray backend, each symbol actor (and a remote
    portfolio) checkpoints its state at a step boundary at most this often in wall
    time; an actor process that dies is restarted (at most ``max_restarts`` times
    per actor; 0: no recovery and no checkpoints), restored from its last
    checkpoint and given the calls since again, so the run ends byte-identical.
    ``sizing``: how a target becomes a quantity (tickray.risk.sizing; its
    ``fraction`` method is ``position_fraction``). ``risk``: the portfolio's
    pre-trade limits (tickray.risk.limits). ``monitor``: drawdown, daily loss
    and kill-switch rules (tickray.risk.monitor); a kill switch makes every
    symbol step every step, so that its flatten order reaches them all at the
    same boundary.
    """

    data_root: str
    interval_ns: int
    symbols: tuple[str, ...]
    start_ns: int
    end_ns: int
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    account: AccountConfig = field(default_factory=AccountConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    l2: L2Config | None = None
    live: LiveConfig | None = None
    perp: PerpConfig | None = None
    specs: dict[str, SymbolSpec] = field(default_factory=dict)
    sync_ns: int = 0
    position_fraction: float = 0.9
    symbols_per_actor: int = 0
    fuse: bool = True
    backend: str = "local"
    address: str | None = None
    remote_portfolio: bool = False
    checkpoint_every_ns: int = 60_000_000_000
    max_restarts: int = 3
    approval: str = "portfolio"
    chunk_rows: int = 16384
    sizing: SizingConfig = field(default_factory=SizingConfig)
    risk: RiskLimits = field(default_factory=RiskLimits)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ConfigError("data.symbols: at least one symbol is needed")
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError("data.symbols: a symbol is listed twice")
        if list(self.symbols) != sorted(self.symbols):
            raise ConfigError("data.symbols: must be sorted (the deterministic order)")
        if self.interval_ns <= 0:
            raise ConfigError("data.interval: must be positive")
        if self.end_ns <= self.start_ns:
            raise ConfigError("data.end: must be after data.start")
        sync = self.sync_ns or self.interval_ns
        object.__setattr__(self, "sync_ns", sync)
        if sync <= 0:
            raise ConfigError("execution.sync: must be positive")
        if not 0 < self.position_fraction <= 1:
            raise ConfigError(f"sizing.fraction: must be in (0, 1], got {self.position_fraction!r}")
        self.risk.check_universe(self.symbols)
        if self.monitor.kill_drawdown is not None:
            object.__setattr__(self, "fuse", False)
        if self.symbols_per_actor < 0:
            raise ConfigError("execution.symbols_per_actor: must be >= 0")
        if self.backend not in ("local", "ray"):
            raise ConfigError(f"execution.backend: must be 'local' or 'ray', got {self.backend!r}")
        if self.approval not in ("portfolio", "symbol"):
            raise ConfigError(
                f"execution.approval: must be 'portfolio' or 'symbol', got {self.approval!r}"
            )
        if self.chunk_rows < 1:
            raise ConfigError("execution.chunk_rows: must be >= 1")
        if self.checkpoint_every_ns <= 0:
            raise ConfigError("run.checkpoint_every: must be positive")
        if self.max_restarts < 0:
            raise ConfigError("run.max_restarts: must be >= 0")
        unknown = set(self.execution.symbol_fees) - set(self.symbols)
        if unknown:
            raise ConfigError(f"execution.symbol_fees: not in the run's symbols: {sorted(unknown)}")
        if self.perp is not None:
            self._check_perp(self.perp)
        self._check_assets()
        if self.l2 is not None:
            if set(self.l2.files) != set(self.symbols):
                raise ConfigError("l2.files: must name exactly the run's symbols")
            if self.approval != "symbol":
                raise ConfigError(
                    "execution.approval: an L2 replay's strategies approve themselves"
                )

    def _check_assets(self) -> None:
        """Every cash asset other than the currency needs a symbol that values it."""
        acct = self.account
        assets = {self.quote_of(s) for s in self.symbols} | set(acct.balances)
        for a in sorted(assets - {acct.currency}):
            if self.perp is not None:
                raise ConfigError(
                    f"data.symbols: a USD-M perpetual account settles in {acct.currency}; "
                    f"{a} is not it"
                )
            conv = a + acct.currency
            if conv not in self.symbols:
                users = [s for s in self.symbols if self.quote_of(s) == a] or ["account.balances"]
                raise ConfigError(
                    f"data.symbols: {users[0]} needs {a}, which is valued in {acct.currency} "
                    f"through {conv}: add {conv} to the symbols"
                )
        if self.multi_asset and self.approval != "portfolio":
            raise ConfigError(
                "execution.approval: several cash assets or fees in base need 'portfolio' approval"
            )
        if self.perp is not None and acct.fee_asset != "quote":
            raise ConfigError("account.fee_asset: a perpetual account pays fees in its currency")
        if self.l2 is not None and self.multi_asset:
            raise ConfigError("account: L2 replays run on one cash asset with fees in quote")

    def _check_perp(self, perp: PerpConfig) -> None:
        """A perpetual run: portfolio approval, its symbols' leverage within their brackets."""
        if self.approval != "portfolio":
            raise ConfigError("execution.approval: a perpetual account needs 'portfolio' approval")
        if self.l2 is not None:
            raise ConfigError("perp: perpetual accounts run on bars (l2 replays are spot)")
        for part, names in (
            ("symbol_leverage", perp.symbol_leverage),
            ("brackets", perp.brackets),
            ("funding", perp.funding if isinstance(perp.funding, dict) else {}),
        ):
            unknown = set(names) - set(self.symbols)
            if unknown:
                raise ConfigError(f"perp.{part}: not in the run's symbols: {sorted(unknown)}")
        if isinstance(perp.funding, dict) and set(perp.funding) != set(self.symbols):
            missing = sorted(set(self.symbols) - set(perp.funding))
            raise ConfigError(f"perp.funding: no funding file for {missing}")
        for s in self.symbols:
            lev, table = perp.leverage_for(s), perp.table(s)
            top = max(b.max_leverage for b in table.brackets)
            if lev > top:
                raise ConfigError(
                    f"perp.leverage: {lev:g}x for {s} is above its brackets' maximum {top:g}x"
                )
        # Cross margin ties every symbol's liquidation price to the others' marks,
        # which the portfolio sends at each step: no symbol may run ahead.
        if perp.margin_mode == "cross":
            object.__setattr__(self, "fuse", False)

    @property
    def is_perp(self) -> bool:
        return self.perp is not None

    def spec(self, symbol: str) -> SymbolSpec:
        return self.specs.get(symbol) or SymbolSpec(symbol)

    def fees_for(self, symbol: str) -> tuple[float, float]:
        """(maker, taker) rates of ``symbol``: its own, else the run's."""
        own = self.execution.symbol_fees.get(symbol)
        if own is not None:
            return float(own[0]), float(own[1])
        maker = self.execution.maker_fee
        taker = self.account.taker_fee
        return (taker if maker is None else maker), taker

    def account_for(self, symbol: str) -> AccountConfig:
        """The account as ``symbol``'s cash check sees it (its own taker fee)."""
        taker = self.fees_for(symbol)[1]
        if taker == self.account.taker_fee:
            return self.account
        return replace(self.account, taker_fee=taker)

    @property
    def budget(self) -> float:
        """Each symbol's equal share of the initial cash (its sub-account's start)."""
        return self.account.initial_cash / len(self.symbols)

    def quote_of(self, symbol: str) -> str:
        """The asset ``symbol`` is quoted (and settles its cash) in."""
        return self.spec(symbol).quote_asset or self.account.currency

    def pool(self, asset: str) -> float:
        """The starting cash of quote asset ``asset``."""
        acct = self.account
        return acct.initial_cash if asset == acct.currency else acct.balances.get(asset, 0.0)

    @property
    def multi_asset(self) -> bool:
        """A spot account with more than the currency as cash, or with fees in base."""
        acct = self.account
        return (
            bool(acct.balances)
            or acct.fee_asset == "base"
            or any(self.quote_of(s) != acct.currency for s in self.symbols)
        )

    def budget_for(self, symbol: str) -> float:
        """``symbol``'s equal share of its quote asset's starting cash."""
        q = self.quote_of(symbol)
        peers = sum(1 for s in self.symbols if self.quote_of(s) == q)
        return self.pool(q) / peers

    def allocation_for(self, symbol: str) -> float:
        """Notional of ``symbol``'s full target position, in its quote asset: its share
        of that asset's cash times ``position_fraction``, times its leverage on a
        perpetual account (the margin it uses stays the share)."""
        if not self.multi_asset and self.perp is None:
            return self.allocation
        alloc = self.budget_for(symbol) * self.position_fraction
        if self.perp is None:
            return alloc
        return alloc * self.perp.leverage_for(symbol)

    @property
    def allocation(self) -> float:
        """Quote amount each symbol's full target position is sized from."""
        return self.account.initial_cash / len(self.symbols) * self.position_fraction


def _positive(name: str, v: float) -> None:
    if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
        raise ConfigError(f"{name}: must be a positive number, got {v!r}")


def _nonneg(name: str, v: float) -> None:
    if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
        raise ConfigError(f"{name}: must be a number >= 0, got {v!r}")


def _fraction(name: str, v: float) -> None:
    if not (isinstance(v, int | float) and math.isfinite(v) and 0 <= v < 1):
        raise ConfigError(f"{name}: must be a number in [0, 1), got {v!r}")
