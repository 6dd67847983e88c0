"""Risk rules through the whole topology: sizers, limits, the monitor, the risk report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import write_bar_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickray.cluster.runner import run_backtest
from tickray.engine.clock import HOUR, MINUTE, parse_time
from tickray.engine.config import AccountConfig, RunConfig, StrategyConfig
from tickray.engine.instruments import SymbolSpec
from tickray.engine.riskconfig import MonitorConfig, RiskLimits, SizingConfig
from tickray.engine.spec import SpecError, parse_spec
from tickray.feeds.binance import convert_klines
from tickray.risk import portfolio as risk_portfolio

T0 = parse_time("2024-05-01")


def _table(folder: Path, name: str) -> Any:
    return pq.read_table(folder / f"{name}.parquet").to_pandas()


def _hand_config(root: Path, n: int, **kw: Any) -> RunConfig:
    return RunConfig(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=("AAAUSDT",),
        start_ns=T0,
        end_ns=T0 + n * MINUTE,
        strategy=StrategyConfig("momentum", {"window": 1, "threshold": 0.01}),
        account=AccountConfig(initial_cash=10_000.0, taker_fee=0.0, price_buffer=0.0),
        specs={"AAAUSDT": SymbolSpec("AAAUSDT", tick_size=0.01, step_size=0.001)},
        position_fraction=1.0,
        **kw,
    )


# flat at 100, a +2% bar (momentum 1 bar > 1% -> long at its close), the fill at 102
UP = [(100.0, 100.0, 100.0, 100.0), (100.0, 102.0, 100.0, 102.0), (102.0, 102.0, 102.0, 102.0)]


def test_notional_sizer(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_bar_rows(root, "AAAUSDT", T0, UP + [(102.0, 102.0, 102.0, 102.0)] * 2)
    cfg = _hand_config(root, 5, sizing=SizingConfig(method="notional", notional=1_000.0))
    fills = _table(run_backtest(cfg, tmp_path / "o").out, "fills")
    # 1,000 / 102 (the deciding close) = 9.8039... -> 9.803 lots of 0.001
    assert fills.qty.tolist() == [9.803]


def test_atr_sizer_uses_wilder_true_range(tmp_path: Path) -> None:
    root = tmp_path / "data"
    # TR: bar 0 high-low = 2; bar 1 max(103-99, |103-100|, |99-100|) = 4 -> ATR(2) = 3 at bar 1
    bars = [(100.0, 101.0, 99.0, 100.0), (100.0, 103.0, 99.0, 102.0)] + [(102.0,) * 4] * 3
    write_bar_rows(root, "AAAUSDT", T0, bars)
    sizing = SizingConfig(method="atr", risk=0.01, atr_window=2, atr_mult=2.0)
    fills = _table(run_backtest(_hand_config(root, 5, sizing=sizing), tmp_path / "o").out, "fills")
    # the sleeve 10,000 x 1% = 100 at risk over a 2 x 3 = 6 stop: 16.666 lots
    assert fills.qty.tolist() == [16.666]


def test_kill_switch_flattens_and_blocks(tmp_path: Path) -> None:
    root = tmp_path / "data"
    crash = UP + [(102.0, 102.0, 70.0, 70.0)] + [(70.0, 80.0, 70.0, 79.0)] + [(79.0,) * 4] * 4
    write_bar_rows(root, "AAAUSDT", T0, crash)
    cfg = _hand_config(
        root,
        len(crash),
        monitor=MonitorConfig(max_drawdown=0.1, kill_drawdown=0.2),
    )
    assert not cfg.fuse  # a kill switch steps every symbol every step
    res = run_backtest(cfg, tmp_path / "o")
    fills = _table(res.out, "fills")
    events = _table(res.out, "risk_events")
    # long 98.039 at 102; the bar closing at 70 puts equity at 10,000 - 98.039 x 32 = 6,862.7
    # (drawdown 31% > 20%): halt and kill at that boundary; the flatten sells at the next open
    assert events.kind.tolist() == ["halt", "kill"]
    assert fills.side.tolist() == ["BUY", "SELL"]
    assert fills.price.tolist() == [102.0, 70.0]
    orders = _table(res.out, "orders")
    assert "kill switch" in " ".join(orders.reason)
    # the momentum up-bar after it (70 -> 79: +12.9%) asks to buy again: refused
    rejected = orders[orders.status == "REJECTED"]
    assert len(rejected) >= 1 and rejected.reason.str.contains("kill switch").all()
    risk = _table(res.out, "risk")
    assert risk.blocked.iloc[-1] and risk.drawdown.max() > 0.2
    assert res.metrics["risk"]["kill_switch"] is True
    html = (res.out / "report.html").read_text()
    assert "the kill switch fired" in html and "<td>kill</td>" in html


@pytest.fixture(scope="module")
def perps(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("risk-perps")
    folder = shared_data / "crypto" / "klines_1m" / "binance_usdm_futures"
    for sym in ("AVAXUSDT", "DOTUSDT", "LINKUSDT"):
        convert_klines([folder / f"{sym}-1m-2026-02.csv.gz"], root, sym)
    return root


@pytest.mark.realdata
def test_drawdown_halt_on_real_klines_blocks_every_entry(perps: Path, tmp_path: Path) -> None:
    symbols = ("AVAXUSDT", "DOTUSDT", "LINKUSDT")
    cfg = RunConfig(
        data_root=str(perps),
        interval_ns=MINUTE,
        symbols=symbols,
        start_ns=parse_time("2026-02-01"),
        end_ns=parse_time("2026-02-08"),
        strategy=StrategyConfig("momentum", {"window": 30, "threshold": 0.004}),
        account=AccountConfig(taker_fee=0.001, allow_short=True),
        monitor=MonitorConfig(max_drawdown=0.03, resume_drawdown=0.02),
        sync_ns=5 * MINUTE,
    )
    res = run_backtest(cfg, tmp_path / "o")
    events = _table(res.out, "risk_events")
    assert "halt" in set(events.kind), "the drawdown limit was reached"
    fills = _table(res.out, "fills")
    orders = _table(res.out, "orders")
    assert orders.reason.str.contains("halted: drawdown").any()
    # every fill while halted only reduced its symbol's position
    spans = []
    start = None
    for e in events.itertuples():
        if e.kind == "halt":
            start = e.ts.value
        elif e.kind == "resume" and start is not None:
            spans.append((start, e.ts.value))
            start = None
    if start is not None:
        spans.append((start, cfg.end_ns + 1))
    entries_in_halt = 0
    for s in symbols:
        mine = fills[fills.symbol == s]
        before = np.concatenate(([0.0], mine.position_after.to_numpy()[:-1]))
        after = mine.position_after.to_numpy()
        # an order decided at a boundary inside the span fills at the next open: the
        # decision time is the fill's step start (sync 5m: fills within 5m of the halt)
        ts = mine.ts.astype("int64").to_numpy()
        for t, b, a in zip(ts, before, after, strict=True):
            decided = t - MINUTE  # the bar before the fill closed at most at the fill
            if any(lo < decided < hi - 5 * MINUTE for lo, hi in spans):
                entries_in_halt += int(abs(a) > abs(b) + 1e-12)
    assert entries_in_halt == 0
    risk = _table(res.out, "risk")
    assert risk.blocked.any() and res.metrics["risk"]["time_blocked_s"] > 0


@pytest.mark.realdata
def test_correlation_limit_on_btc_and_eth(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = shared_data / "crypto" / "klines_1h" / "binance_usdm_futures"
    for sym in ("BTCUSDT", "ETHUSDT"):
        convert_klines([folder / f"{sym}-1h.csv.gz"], root, sym, "1h")
    from tickray.feeds.store import data_range

    first = max(data_range(root, "1h", s)[0] for s in ("BTCUSDT", "ETHUSDT"))
    base: dict[str, Any] = dict(
        data_root=str(root),
        interval_ns=HOUR,
        symbols=("BTCUSDT", "ETHUSDT"),
        start_ns=first,
        end_ns=first + 120 * 24 * HOUR,
        strategy=StrategyConfig("momentum", {"window": 24, "threshold": 0.02}),
        account=AccountConfig(taker_fee=0.0004, allow_short=True),
    )
    free = run_backtest(RunConfig(**base), tmp_path / "free")
    limited = run_backtest(
        RunConfig(**base, risk=RiskLimits(max_correlation=0.5, correlation_window=72)),
        tmp_path / "limited",
    )
    orders = _table(limited.out, "orders")
    cut = orders[orders.reason.str.contains("correlation")]
    assert len(cut) > 0, "BTC and ETH move together: some second legs were refused"

    # with the limit the two symbols hold same-direction positions at fewer boundaries
    def together(folder: Path) -> int:
        pos = _table(folder, "positions")
        return int(((np.sign(pos.BTCUSDT) * np.sign(pos.ETHUSDT)) > 0).sum())

    assert together(limited.out) < together(free.out)


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 10_000), gross=st.sampled_from([0.5, 1.0, 1.5]))
def test_no_approval_passes_the_caps(
    tmp_path_factory: pytest.TempPathFactory, seed: int, gross: float
) -> None:
    """Every approval, at the moment it is made, leaves gross leverage and each
    position's share of equity within their caps (at the decision's prices)."""
    from tickray.feeds.store import write_bars
    from tickray.feeds.synthetic import generate_bars

    tmp = tmp_path_factory.mktemp("caps")
    symbols = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    for sym, table in generate_bars(symbols, T0, 600, seed=seed).items():
        write_bars(tmp / "data", sym, "1m", table)
    limits = RiskLimits(max_gross_leverage=gross, max_position_fraction=min(0.4, gross))
    seen: list[float] = []
    original = risk_portfolio.PortfolioRisk.review

    def checked(self: Any, pf: Any, t: int, it: Any, chk: Any, price: float, *a: Any) -> Any:
        out = original(self, pf, t, it, chk, price, *a)
        if out.qty > 0:
            i = pf.index[it.symbol]
            proj = (pf.pos + pf.pending_pos).copy()
            proj[i] += int(it.side) * out.qty
            px = np.nan_to_num(pf.mark, nan=price)
            px[i] = price
            eq = pf.equity_now()
            lev = float(np.abs(proj * px).sum()) / eq
            frac = abs(proj[i] * price) / eq
            before = pf.pos + pf.pending_pos
            lev_before = float(np.abs(before * px).sum()) / eq
            grew = abs(proj[i]) > abs(before[i]) + 1e-12
            if grew:
                seen.append(lev)
                assert lev <= max(gross, lev_before) * (1 + 1e-9) + 1e-9
                assert frac <= min(0.4, gross) * (1 + 1e-9) + 1e-9
        return out

    risk_portfolio.PortfolioRisk.review = checked  # type: ignore[method-assign]
    try:
        cfg = RunConfig(
            data_root=str(tmp / "data"),
            interval_ns=MINUTE,
            symbols=tuple(symbols),
            start_ns=T0,
            end_ns=T0 + 600 * MINUTE,
            strategy=StrategyConfig("momentum", {"window": 5, "threshold": 0.001}),
            account=AccountConfig(allow_short=True, taker_fee=0.0005),
            position_fraction=1.0,
            risk=limits,
        )
        run_backtest(cfg, tmp / "out")
    finally:
        risk_portfolio.PortfolioRisk.review = original  # type: ignore[method-assign]
    assert seen, "some approvals opened exposure"


def test_risk_and_sizing_in_the_spec() -> None:
    spec = parse_spec(
        {
            "sizing": {"method": "atr", "risk": 0.02, "atr_window": 20},
            "risk": {"max_gross_leverage": 2.0, "max_drawdown": 0.2, "drawdown_lookback": "30d"},
        }
    )
    assert spec.sizing.method == "atr" and spec.sizing.risk == 0.02
    assert spec.limits.max_gross_leverage == 2.0
    assert spec.monitor.max_drawdown == 0.2
    assert spec.monitor.drawdown_lookback_ns == 30 * 24 * HOUR
    for doc, message in [
        ({"risk": {"var_confidence": -0.5}}, "risk.var_confidence: must be a number > 0"),
        ({"sizing": {"method": "kelly", "kelly_fraction": 1.5}}, "sizing.kelly_fraction"),
        ({"sizing": {"method": "fraction", "risk": 0.1}}, "sizing.risk: not read by method"),
        (
            {"risk": {"max_gross_leverage": 1.0, "max_net_leverage": 2.0}},
            "risk.max_net_leverage: 2.0 is above risk.max_gross_leverage",
        ),
        ({"risk": {"kill_drawdown": 0.1, "max_drawdown": 0.2}}, "risk.kill_drawdown: must be"),
        ({"risk": {"max_leverage": 2}}, "risk.max_leverage: unknown key"),
    ]:
        with pytest.raises(SpecError) as info:
            parse_spec(doc)
        assert message in str(info.value), (doc, str(info.value))
    assert not math.isnan(0.0)


def test_inverse_volatility_gives_the_calm_symbol_more(tmp_path: Path) -> None:
    root = tmp_path / "data"
    n = 200
    for sym, amp in (("CALMUSDT", 0.001), ("WILDUSDT", 0.01)):
        rows = []
        prev = 100.0
        for k in range(n):
            # an alternating path: moves of +-amp, with a +2% jump every 20 bars (an entry)
            c = 100.0 * (1 + amp * (1 if k % 2 else -1)) * (1.02 if k % 20 == 19 else 1.0)
            rows.append((prev, max(prev, c), min(prev, c), c))
            prev = c
        write_bar_rows(root, sym, T0, rows)
    cfg = RunConfig(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=("CALMUSDT", "WILDUSDT"),
        start_ns=T0,
        end_ns=T0 + n * MINUTE,
        strategy=StrategyConfig("momentum", {"window": 1, "threshold": 0.015}),
        account=AccountConfig(initial_cash=100_000.0, taker_fee=0.0, price_buffer=0.0),
        specs={
            s: SymbolSpec(s, tick_size=0.0001, step_size=0.001) for s in ("CALMUSDT", "WILDUSDT")
        },
        sizing=SizingConfig(method="inverse_vol", fraction=1.0, vol_window=20),
    )
    res = run_backtest(cfg, tmp_path / "o")
    fills = _table(res.out, "fills")
    orders = _table(res.out, "orders")
    assert orders.reason.str.contains("inverse-volatility weight").any()
    late = fills[fills.ts.astype("int64") > T0 + 30 * MINUTE]
    buys = late[late.side == "BUY"]
    notional = (buys.qty * buys.price).groupby(buys.symbol).mean()
    # about ten times calmer: a much larger share of the capital
    assert notional["CALMUSDT"] > 3 * notional["WILDUSDT"]


def test_kelly_waits_for_its_minimum_sample(tmp_path: Path) -> None:
    root = tmp_path / "data"
    # returns +3%, +3%, +3%, -3% repeated: momentum(1) goes long on the first +3% and flat
    # (no shorting) on the -3%; each of those long signal trades wins about 2.9%
    rows = [(100.0, 100.0, 100.0, 100.0)]
    prev = 100.0
    for k in range(1, 40):
        c = prev * (0.97 if k % 4 == 0 else 1.03)
        rows.append((prev, max(prev, c), min(prev, c), c))
        prev = c
    write_bar_rows(root, "AAAUSDT", T0, rows)
    sizing = SizingConfig(method="kelly", window=10, min_trades=3, kelly_fraction=0.5)
    res = run_backtest(_hand_config(root, 40, sizing=sizing), tmp_path / "o")
    fills = _table(res.out, "fills")
    from tickray.engine.strategies import make_strategy

    closes = np.array([r[3] for r in rows])
    targets = np.maximum(
        make_strategy("momentum", {"window": 1, "threshold": 0.01}).targets(closes), 0
    )
    exits = np.flatnonzero(np.diff(targets) < 0) + 1  # bars whose close ends a signal trade
    third = int(exits[2])
    # nothing traded before three signal trades had closed, then it did
    assert len(fills) > 0
    assert fills.ts.astype("int64").min() > T0 + (third + 1) * MINUTE - 1
    # all wins: f* = W = 1, half Kelly of the 10,000 sleeve at the deciding close
    first = fills.iloc[0]
    decided = closes[int((first.ts.value - T0) // MINUTE) - 1]
    assert first.qty == pytest.approx(math.floor(5_000.0 / decided * 1000) / 1000, abs=1e-9)
