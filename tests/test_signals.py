"""Event strategies end to end: signals become entries and exits at the bar venue.

Each scenario replays hand-made 1m bars through the real topology (symbol
actor, clock, portfolio, recorder) with a small strategy defined here, and
checks the fills against prices worked out from the venue's documented
intrabar path (open, the nearer extreme, the other, close).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import results_digest, write_bar_rows

from tickray.cluster.runner import run_backtest
from tickray.engine import event_strategies
from tickray.engine.clock import MINUTE, parse_time
from tickray.engine.config import AccountConfig, RunConfig, StrategyConfig
from tickray.engine.events import Fill
from tickray.engine.instruments import SymbolSpec
from tickray.engine.orders import Trail, TrailUnit
from tickray.engine.riskconfig import MonitorConfig
from tickray.engine.signals import (
    Bar,
    Context,
    Direction,
    Entry,
    Signal,
    SignalError,
    SignalStrategy,
    buy,
    flat,
    sell,
)

T0 = parse_time("2024-05-01")
SYM = "AAAUSDT"
FLAT_BAR = (100.0, 100.0, 100.0, 100.0)


class Scripted(SignalStrategy):
    """Emits the signals of ``SCRIPT`` (bar index -> signal) at those bars' closes."""

    name = "scripted"
    params: ClassVar[dict[str, tuple[type, float | int, float | int]]] = {}
    script: ClassVar[dict[int, Signal]] = {}
    seen: ClassVar[list[tuple[str, int, float]]] = []

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        assert bar.ts_close == ctx.now  # a bar is seen at its close, not before
        Scripted.seen.append(("bar", ctx.now, ctx.position))
        return self.script.get(ctx.bars - 1)

    def on_fill(self, fill: Fill, ctx: Context) -> Signal | None:
        Scripted.seen.append(("fill", fill.ts_event, ctx.position))
        return None


@pytest.fixture
def scripted() -> Iterator[type[Scripted]]:
    event_strategies.EVENT_STRATEGIES["scripted"] = Scripted
    Scripted.seen = []
    yield Scripted
    del event_strategies.EVENT_STRATEGIES["scripted"]


def _run(
    tmp_path: Path,
    bars: list[tuple[float, float, float, float]],
    script: dict[int, Signal],
    monitor: MonitorConfig | None = None,
    **acct: Any,
) -> tuple[Any, Any]:
    Scripted.script = script
    root = tmp_path / "data"
    write_bar_rows(root, SYM, T0, bars)
    cfg = RunConfig(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=(SYM,),
        start_ns=T0,
        end_ns=T0 + len(bars) * MINUTE,
        strategy=StrategyConfig("scripted", {}),
        account=AccountConfig(
            initial_cash=10_000.0, taker_fee=0.0, allow_short=True, price_buffer=0.0, **acct
        ),
        specs={SYM: SymbolSpec(SYM, tick_size=0.01, step_size=0.001)},
        position_fraction=1.0,
        monitor=monitor or MonitorConfig(),
    )
    res = run_backtest(cfg, tmp_path / "out")
    fills = pq.read_table(res.out / "fills.parquet").to_pandas()
    orders = pq.read_table(res.out / "orders.parquet").to_pandas()
    return fills, orders


def _final(orders: Any) -> dict[int, tuple[str, str]]:
    """Each order's last status and type."""
    last = orders.groupby("order_id").tail(1)
    return {int(r.order_id): (r.status, r.type) for r in last.itertuples()}


def test_bracket_take_profit_fills_and_cancels_the_stop(
    tmp_path: Path, scripted: type[Scripted]
) -> None:
    bars = [FLAT_BAR] * 3 + [(100.0, 102.0, 99.5, 101.0), (101.0, 105.0, 100.5, 104.5), FLAT_BAR]
    fills, orders = _run(tmp_path, bars, {2: buy(take_profit=104.0, stop_loss=97.0)})
    # the entry at bar 3's open; the take-profit limit trades through 104 in bar 4 (high 105)
    assert fills.side.tolist() == ["BUY", "SELL"]
    assert fills.price.tolist() == [100.0, 104.0]
    assert fills.qty.tolist() == [100.0, 100.0]  # floor(10,000 / 100)
    assert fills.liquidity.tolist() == ["TAKER", "MAKER"]
    assert fills.realized_pnl.tolist() == [0.0, 400.0]
    final = _final(orders)
    assert final[1] == ("FILLED", "MARKET")
    assert final[2] == ("FILLED", "LIMIT")  # the take-profit
    assert final[3] == ("CANCELED", "STOP_MARKET")  # the stop, by the OCO
    stop_cancel = orders[(orders.order_id == 3) & (orders.status == "CANCELED")]
    assert "OCO" in stop_cancel.reason.iloc[0]


def test_bracket_stop_loss(tmp_path: Path, scripted: type[Scripted]) -> None:
    bars = [FLAT_BAR] * 3 + [(100.0, 102.0, 99.5, 101.0), (99.0, 99.5, 96.0, 96.5), FLAT_BAR]
    fills, orders = _run(tmp_path, bars, {2: buy(take_profit=104.0, stop_loss=97.0)})
    # bar 4: 99 -> 99.5 (nearer) -> 96 passes the stop at 97: filled there
    assert fills.price.tolist() == [100.0, 97.0]
    assert fills.realized_pnl.tolist() == [0.0, -300.0]
    assert _final(orders)[2] == ("CANCELED", "LIMIT")


def test_trailing_stop_follows_the_best_price(tmp_path: Path, scripted: type[Scripted]) -> None:
    bars = [FLAT_BAR] * 3 + [
        (100.0, 102.0, 99.5, 101.0),  # best 102 -> stop 100
        (101.0, 103.0, 100.5, 102.0),  # 101 -> 100.5 -> 103: best 103 -> stop 101
        (102.0, 102.0, 98.0, 98.5),  # 102 -> 98 passes 101: filled at 101
        FLAT_BAR,
    ]
    fills, orders = _run(tmp_path, bars, {2: buy(trail=Trail(2.0, TrailUnit.PRICE))})
    assert fills.price.tolist() == [100.0, 101.0]
    assert _final(orders)[2] == ("FILLED", "TRAILING_STOP")


def test_break_even_and_trailing_stop_management(tmp_path: Path, scripted: type[Scripted]) -> None:
    bars = [FLAT_BAR] * 3 + [
        (100.0, 106.0, 100.0, 106.0),  # entry at 100; close 106 >= 100 + 1 R (R = 5): stop -> 100
        (106.0, 112.0, 106.0, 112.0),  # close 112 >= 100 + 2 R: the stop trails at 112 - 10 = 102
        (112.0, 112.0, 101.0, 101.0),  # 112 -> 101 passes 102: stopped out there
        FLAT_BAR,
    ]
    script = {2: buy(take_profit=130.0, stop_loss=95.0)}
    fills, orders = _run(tmp_path, bars, script, MonitorConfig(break_even_r=1.0, trail_r=2.0))
    assert fills.price.tolist() == [100.0, 102.0]
    assert fills.realized_pnl.tolist() == [0.0, 200.0]
    stop = orders[orders.order_id == 3]
    assert stop.status.tolist().count("AMENDED") == 2
    assert stop.status.iloc[-1] == "FILLED"
    # without the management the stop stays at 95 and nothing exits
    fills, _ = _run(tmp_path / "plain", bars, script)
    assert fills.price.tolist() == [100.0]


def test_stop_and_limit_entries_wait_for_their_price(
    tmp_path: Path, scripted: type[Scripted]
) -> None:
    bars = [FLAT_BAR] * 3 + [(100.0, 100.5, 97.0, 97.5), (97.5, 98.0, 96.0, 97.0), FLAT_BAR]
    fills, _ = _run(tmp_path / "a", bars, {2: sell(entry=Entry.STOP, price=98.0)})
    # bar 3: 100 -> 100.5 -> 97 passes the sell stop at 98
    assert fills.side.tolist() == ["SELL"] and fills.price.tolist() == [98.0]
    assert fills.position_after.tolist() == [-100.0]
    bars = [FLAT_BAR] * 3 + [(100.0, 100.5, 99.0, 99.5), (99.5, 99.8, 98.9, 99.2), FLAT_BAR]
    fills, _ = _run(tmp_path / "b", bars, {2: buy(entry=Entry.LIMIT, price=99.0)})
    # bar 3 only touches 99 (not through); bar 4 trades through it: a maker fill at 99
    assert fills.price.tolist() == [99.0] and fills.liquidity.tolist() == ["MAKER"]
    assert fills.ts.iloc[0].value >= T0 + 4 * MINUTE


def test_flat_cancels_the_exits_and_closes(tmp_path: Path, scripted: type[Scripted]) -> None:
    bars = (
        [FLAT_BAR] * 3
        + [(100.0, 101.0, 99.0, 100.5), (100.5, 101.0, 100.0, 100.8)]
        + [(101.0, 101.0, 101.0, 101.0)] * 2
    )
    script = {2: buy(take_profit=110.0, stop_loss=90.0, confidence=0.25), 4: flat()}
    fills, orders = _run(tmp_path, bars, script)
    assert fills.qty.tolist() == [25.0, 25.0]  # a quarter of floor(10,000 / 100)
    assert fills.price.tolist() == [100.0, 101.0]
    final = _final(orders)
    assert final[2] == ("CANCELED", "LIMIT") and final[3] == ("CANCELED", "STOP_MARKET")
    cancels = orders[orders.status == "CANCELED"]
    # the take-profit is replaced; the stop goes with it (one cancels the other)
    assert dict(zip(cancels.order_id, cancels.reason, strict=True)) == {
        2: "replaced by a new signal",
        3: "OCO: order 2 canceled",
    }
    assert final[4] == ("FILLED", "MARKET")


def test_callbacks_see_only_the_past(tmp_path: Path, scripted: type[Scripted]) -> None:
    bars = [FLAT_BAR] * 3 + [(100.0, 101.0, 99.0, 100.0)] * 3
    _run(tmp_path, bars, {2: buy()})
    seen = Scripted.seen
    times = [t for _, t, _ in seen]
    assert times == sorted(times)  # events in time order
    bar_times = [t for k, t, _ in seen if k == "bar"]
    assert bar_times == [T0 + (k + 1) * MINUTE for k in range(len(bars))]
    fill = [(t, pos) for k, t, pos in seen if k == "fill"]
    # the order decided at bar 2's close fills at bar 3's open, which on_fill sees with it
    assert fill == [(T0 + 3 * MINUTE, 100.0)]
    # the bar seen right after the fill (bar 3, closing at T0 + 4m) already holds it
    assert ("bar", T0 + 4 * MINUTE, 100.0) in seen


class Warm(SignalStrategy):
    name = "warm"
    timer_ns = 2 * MINUTE
    log: ClassVar[list[tuple[str, int]]] = []

    @property
    def warmup(self) -> int:
        return 5

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        return buy()

    def on_timer(self, ts: int, ctx: Context) -> Signal | None:
        Warm.log.append(("timer", ts))
        return None


def test_warmup_and_timers(tmp_path: Path) -> None:
    event_strategies.EVENT_STRATEGIES["warm"] = Warm
    Warm.log = []
    try:
        root = tmp_path / "data"
        write_bar_rows(root, SYM, T0, [FLAT_BAR] * 8)
        cfg = RunConfig(
            data_root=str(root),
            interval_ns=MINUTE,
            symbols=(SYM,),
            start_ns=T0,
            end_ns=T0 + 8 * MINUTE,
            strategy=StrategyConfig("warm", {}),
            account=AccountConfig(taker_fee=0.0, price_buffer=0.0),
            specs={SYM: SymbolSpec(SYM, tick_size=0.01, step_size=0.001)},
        )
        res = run_backtest(cfg, tmp_path / "out")
    finally:
        del event_strategies.EVENT_STRATEGIES["warm"]
    fills = pq.read_table(res.out / "fills.parquet").to_pandas()
    # 5 bars must close first: the first signal counts at bar 4's close, fills at bar 5's open
    assert [t.value for t in fills.ts] == [T0 + 5 * MINUTE]
    assert Warm.log == [("timer", T0 + k * 2 * MINUTE) for k in range(5)]


def test_bad_signals_name_the_problem(tmp_path: Path, scripted: type[Scripted]) -> None:
    with pytest.raises(SignalError, match="signal.confidence: must be in \\(0, 1\\], got 2"):
        buy(confidence=2)
    with pytest.raises(SignalError, match="signal.price: a limit entry needs a price"):
        buy(entry=Entry.LIMIT)
    with pytest.raises(SignalError, match="signal.stop_loss: 101.0 is not behind the BUY entry"):
        buy(entry=Entry.LIMIT, price=100.0, stop_loss=101.0)
    with pytest.raises(SignalError, match="a FLAT signal closes at market"):
        Signal(Direction.FLAT, take_profit=5.0)
    with pytest.raises(
        SignalError, match=r"AAAUSDT at \d+: signal.take_profit 99.0 is on the wrong"
    ):
        _run(tmp_path, [FLAT_BAR] * 5, {2: buy(take_profit=99.0)})


def _demo_config(root: Path, name: str, params: dict[str, Any], **kw: Any) -> RunConfig:
    from tickray.feeds.store import read_symbol_specs

    specs = {s: SymbolSpec(s, **v) for s, v in read_symbol_specs(root).items()}
    return RunConfig(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=tuple(sorted(specs)),
        start_ns=parse_time("2024-01-01"),
        end_ns=parse_time("2024-01-03"),
        strategy=StrategyConfig(name, params),
        account=AccountConfig(allow_short=True, taker_fee=0.0004),
        specs=specs,
        **kw,
    )


@pytest.fixture(scope="module")
def universe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tickray.feeds.synthetic import write_demo_dataset

    root = tmp_path_factory.mktemp("signal-universe")
    write_demo_dataset(root, n_symbols=3, days=2, seed=5)
    return root


STRATS: list[tuple[str, dict[str, Any]]] = [
    ("enhanced_momentum", {"fast": 10, "slow": 40, "threshold": 0.001, "risk_factor": 1.0}),
    ("breakout_trail", {"window": 30, "trend": 60, "atr_mult": 3.0, "target": 6.0}),
]


@pytest.mark.parametrize(("name", "params"), STRATS, ids=[s for s, _ in STRATS])
def test_builtin_event_strategies_exit_through_their_orders(
    universe: Path, tmp_path: Path, name: str, params: dict[str, Any]
) -> None:
    res = run_backtest(_demo_config(universe, name, params), tmp_path / "a")
    fills = pq.read_table(res.out / "fills.parquet").to_pandas()
    orders = pq.read_table(res.out / "orders.parquet").to_pandas()
    kinds = orders.groupby("order_id").tail(1)
    filled = kinds[kinds.status == "FILLED"]
    exits = {"LIMIT", "STOP_MARKET", "TRAILING_STOP"}
    assert len(fills) > 10
    assert exits & set(filled.type), "some exits filled at their levels"
    # an exit's fill is never at a worse price than its level allows on a bar path:
    # inside the bar's range
    bars = {
        s: pq.read_table(next((universe / "bars" / "1m" / s).rglob("*.parquet"))).to_pandas()
        for s in sorted(set(fills.symbol))
    }
    for f in fills.itertuples():
        b = bars[f.symbol]
        row = b[b.ts <= f.ts].iloc[-1]
        assert row.low - 1e-9 <= f.price <= row.high + 1e-9
    again = run_backtest(
        _demo_config(universe, name, params, sync_ns=MINUTE, fuse=False, symbols_per_actor=1),
        tmp_path / "b",
    )
    assert results_digest(again.out) == results_digest(res.out)


@pytest.mark.ray
def test_event_strategies_on_ray_match_in_process(
    ray_session: object, universe: Path, tmp_path: Path
) -> None:
    name, params = STRATS[0]
    local = run_backtest(_demo_config(universe, name, params), tmp_path / "local")
    ray = run_backtest(
        _demo_config(universe, name, params, backend="ray", symbols_per_actor=2), tmp_path / "ray"
    )
    assert results_digest(ray.out) == results_digest(local.out)


def test_signal_helpers_build_signals() -> None:
    s = sell(take_profit=90.0, stop_loss=105.0, confidence=0.5, meta={"why": "test"})
    assert s.side is Direction.SELL and s.has_exits and s.meta == {"why": "test"}
    assert not flat().has_exits
    make: Callable[..., Signal] = buy
    assert make().entry is Entry.MARKET
    assert np.isclose(buy(confidence=1e-9).confidence, 1e-9)


class Faulty(SignalStrategy):
    name = "faulty"

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        if ctx.bars == 4:
            return {"oops": 1}["missing"]  # type: ignore[return-value]  # a KeyError
        return buy() if ctx.bars == 2 else None


def test_a_strategy_that_raises_is_reported_and_the_results_kept(tmp_path: Path) -> None:
    from tickray.engine.signals import StrategyError

    event_strategies.EVENT_STRATEGIES["faulty"] = Faulty
    try:
        root = tmp_path / "data"
        write_bar_rows(root, SYM, T0, [FLAT_BAR] * 8)
        cfg = RunConfig(
            data_root=str(root),
            interval_ns=MINUTE,
            symbols=(SYM,),
            start_ns=T0,
            end_ns=T0 + 8 * MINUTE,
            strategy=StrategyConfig("faulty", {}),
            account=AccountConfig(taker_fee=0.0, price_buffer=0.0),
            specs={SYM: SymbolSpec(SYM, tick_size=0.01, step_size=0.001)},
            fuse=False,  # one step per call: the steps before the error are all settled
        )
        with pytest.raises(StrategyError) as info:
            run_backtest(cfg, tmp_path / "out")
    finally:
        del event_strategies.EVENT_STRATEGIES["faulty"]
    text = str(info.value)
    # the symbol, the simulated time of the 4th bar's close, the strategy and its traceback
    assert text.startswith("AAAUSDT at 2024-05-01T00:04:00Z: strategy 'faulty' raised KeyError")
    assert "Traceback" in text and "on_bar" in text
    partial = tmp_path / "out.partial"
    assert "strategy 'faulty' raised KeyError" in (partial / "error.txt").read_text()
    # what was settled before the error is kept: the entry decided at bar 1 filled
    assert pq.read_table(partial / "fills.parquet").num_rows == 1
