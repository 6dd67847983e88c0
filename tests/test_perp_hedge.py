"""Hedge position mode: a long and a short position per symbol, end to end.

Hand-made bars go through the real topology with the ``hedged_trend``
strategy (slow=3, window=1, threshold 1%), whose legs are worked out bar by
bar in the comments, then the results files are checked against hand-computed
numbers. The margin formula for two legs is checked against the definition
of liquidation (margin balance equals maintenance margin) by hypothesis.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import results_digest, write_bar_rows, write_funding_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.cluster.runner import run_backtest
from tickray.engine.approval import check_margin
from tickray.engine.clock import MINUTE, parse_time
from tickray.engine.config import AccountConfig, PerpConfig, RunConfig, StrategyConfig
from tickray.engine.events import Side
from tickray.engine.instruments import SymbolSpec
from tickray.engine.perpetual import (
    BTCUSDT_BRACKETS,
    bracket_table,
    hedge_liquidation_band,
    liquidation_price,
)
from tickray.engine.strategies import make_strategy

T0 = parse_time("2024-05-01")
SYM = "AAAUSDT"


def _flat(*closes: float) -> list[tuple[float, float, float, float]]:
    """Bars opening at the previous close (the first at its own) and closing at ``closes``."""
    out = []
    prev = closes[0]
    for c in closes:
        out.append((prev, max(prev, c), min(prev, c), c))
        prev = c
    return out


# bar  close  SMA(3)   1-bar momentum  legs after the bar (long, short)
#  0    100     -         -            warm-up
#  2    100    100        0%           (0, 0): close == SMA holds, momentum holds
#  3    110   103.33    +10%           (1, 0): long opens at bar 4's open, 110
#  5    118   116       -1.67%         (1, 1): short opens at bar 6's open, 118
#  6    119   119       +0.85%         (1, 1): both held
#  7    125   120.67    +5.04%         (1, 0): short closes at bar 8's open, 125
BARS = _flat(100, 100, 100, 110, 120, 118, 119, 125, 125, 125)


def _config(root: Path, n_bars: int, **perp: Any) -> RunConfig:
    return RunConfig(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=(SYM,),
        start_ns=T0,
        end_ns=T0 + n_bars * MINUTE,
        strategy=StrategyConfig("hedged_trend", {"slow": 3, "window": 1, "threshold": 0.01}),
        account=AccountConfig(
            initial_cash=10_000.0, taker_fee=0.0, allow_short=True, price_buffer=0.0
        ),
        perp=PerpConfig(**({"leverage": 2, "funding": "none"} | perp)),
        specs={SYM: SymbolSpec(SYM, tick_size=0.01, step_size=0.001)},
        position_fraction=1.0,
    )


def _table(folder: Path, name: str) -> Any:
    return pq.read_table(folder / f"{name}.parquet").to_pandas()


def test_the_strategy_holds_both_legs_and_nets_them_in_one_way_mode() -> None:
    closes = np.array([c for *_, c in BARS])
    longs, shorts = make_strategy(
        "hedged_trend", {"slow": 3, "window": 1, "threshold": 0.01}
    ).leg_targets(closes)
    assert longs.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert shorts.tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    net = make_strategy("hedged_trend", {"slow": 3, "window": 1, "threshold": 0.01})
    assert net.targets(closes).tolist() == [0, 0, 0, 1, 1, 0, 0, 1, 1, 1]
    one = make_strategy("hedged_trend", {"slow": 3, "window": 1, "threshold": 0.01})
    assert [one.on_bar(float(c)) for c in closes] == [0, 0, 0, 1, 1, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("margin_mode", ["isolated", "cross"])
def test_both_legs_open_and_close_separately(tmp_path: Path, margin_mode: str) -> None:
    root = tmp_path / "data"
    write_bar_rows(root, SYM, T0, BARS)
    res = run_backtest(
        _config(root, len(BARS), position_mode="hedge", margin_mode=margin_mode), tmp_path / "o"
    )
    fills = _table(res.out, "fills")
    # allocation 10,000 x 2 = 20,000, each leg half of it: 10,000 / 110 -> 90.909 long,
    # 10,000 / 118 -> 84.745 short (both fit: 4,999.995 + 4,999.955 of margin <= 10,000)
    assert fills.side.tolist() == ["BUY", "SELL", "BUY"]
    assert fills.position_side.tolist() == ["LONG", "SHORT", "SHORT"]
    assert fills.qty.tolist() == [90.909, 84.745, 84.745]
    assert fills.price.tolist() == [110.0, 118.0, 125.0]
    assert fills.position_after.tolist() == [90.909, -84.745, 0.0]
    assert fills.fill_id.tolist() == [1, 2, 3]
    # the short closes at a loss of 84.745 x 7; the long keeps its entry at 110
    assert fills.realized_pnl.tolist() == pytest.approx([0.0, 0.0, -593.215], abs=1e-9)
    positions = _table(res.out, "positions")
    assert positions[SYM].tolist() == pytest.approx([90.909, 6.164, 90.909], abs=1e-9)
    equity = _table(res.out, "equity")
    # 10,000 + 90.909 x (125 - 110) - 593.215
    assert equity.equity.iloc[-1] == pytest.approx(10_770.42, abs=1e-6)
    orders = _table(res.out, "orders")
    assert set(orders.status) == {"SUBMITTED", "ACCEPTED", "FILLED"}
    # every row of an order names its position; the short's close is a reduce-only BUY
    sides = orders.groupby("order_id").position_side.agg(set).tolist()
    assert sides == [{"LONG"}, {"SHORT"}, {"SHORT"}]
    metrics = res.metrics["portfolio"]
    assert metrics["fills"] == 3 and metrics["trades"] == 1  # the short's round trip


def test_one_way_mode_nets_the_same_strategy(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_bar_rows(root, SYM, T0, BARS)
    res = run_backtest(_config(root, len(BARS), margin_mode="isolated"), tmp_path / "o")
    fills = _table(res.out, "fills")
    # long at 110 (20,000 x 0.5... no: one-way sizes the net target at the whole
    # allocation), flat at 118 when the short leg nets it out, long again at 125
    assert fills.side.tolist() == ["BUY", "SELL", "BUY"]
    assert fills.position_side.tolist() == ["BOTH"] * 3
    assert fills.price.tolist() == [110.0, 118.0, 125.0]
    assert fills.position_after.tolist()[1] == 0.0


def test_funding_is_paid_and_received_by_each_leg(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_bar_rows(root, SYM, T0, BARS)
    # one record settled at the close of bar 6 (both legs open), mark 119, rate 0.1%
    write_funding_rows(root, SYM, [(T0 - 60 * MINUTE, 0.0, 100.0), (T0 + 7 * MINUTE, 0.001, 119.0)])
    res = run_backtest(
        _config(root, len(BARS), position_mode="hedge", margin_mode="isolated", funding="store"),
        tmp_path / "o",
    )
    funding = _table(res.out, "funding")
    assert funding.position.tolist() == [90.909, -84.745]
    # the long pays 90.909 x 119 x 0.001; the short receives 84.745 x 119 x 0.001
    assert funding.payment.tolist() == [10.818171, -10.084655]
    equity = _table(res.out, "equity")
    assert equity.equity.iloc[-1] == pytest.approx(10_770.42 - 10.818171 + 10.084655, abs=1e-6)
    assert res.metrics["portfolio"]["funding"] == pytest.approx(0.733516, abs=1e-9)


def test_isolated_short_is_liquidated_alone(tmp_path: Path) -> None:
    root = tmp_path / "data"
    bars = BARS[:6] + [(118.0, 180.0, 118.0, 119.0)] + BARS[7:]
    write_bar_rows(root, SYM, T0, bars)
    res = run_backtest(
        _config(root, len(bars), position_mode="hedge", margin_mode="isolated"), tmp_path / "o"
    )
    fills = _table(res.out, "fills")
    # the short's isolated margin 84.745 x 118 / 2 = 4,999.955 (bracket mmr 1%, cum 0):
    # LP = (4,999.955 + 84.745 x 118) / (84.745 x 1.01), reached by bar 6's high 180
    lp = liquidation_price(bracket_table(SYM), -1, 84.745, 118.0, 84.745 * 118.0 / 2)
    assert lp == pytest.approx((4_999.955 + 84.745 * 118) / (84.745 * 1.01), rel=1e-12)
    assert fills.liquidity.tolist() == ["TAKER", "TAKER", "LIQUIDATION"]
    assert fills.position_side.tolist() == ["LONG", "SHORT", "SHORT"]
    liq = fills.iloc[2]
    assert liq.side == "BUY" and liq.qty == 84.745
    assert liq.price == math.ceil(lp * 100) / 100  # rounded against the trader
    # the long is untouched and still open at the end
    assert _table(res.out, "positions")[SYM].iloc[-1] == 90.909
    liqs = _table(res.out, "liquidations")
    assert liqs.position_side.tolist() == ["SHORT"]
    assert res.metrics["portfolio"]["liquidations"] == 1


def test_cross_hedged_pair_is_liquidated_together(tmp_path: Path) -> None:
    root = tmp_path / "data"
    bars = BARS[:6] + [(118.0, 400.0, 118.0, 119.0)] + BARS[7:]
    write_bar_rows(root, SYM, T0, bars)
    table = [[0, 1e9, 50, 0.2, 0]]  # one bracket, 20% maintenance
    res = run_backtest(
        _config(
            root,
            len(bars),
            position_mode="hedge",
            margin_mode="cross",
            brackets={SYM: table},
            liquidation_fee=0.0125,
        ),
        tmp_path / "o",
    )
    fills = _table(res.out, "fills")
    assert fills.liquidity.tolist() == ["TAKER", "TAKER", "LIQUIDATION", "LIQUIDATION"]
    # the symbol's wallet is the account's 10,000; more short than long once maintenance is
    # counted (90.909 x 0.8 < 84.745 x 1.2), so a rise liquidates both at
    # LP = (10,000 - 90.909 x 110 + 84.745 x 118) / (84.745 x 1.2 - 90.909 x 0.8)
    lower, lp = hedge_liquidation_band(
        bracket_table(SYM, table), 90.909, 110.0, 84.745, 118.0, 10_000.0
    )
    want = (10_000 - 90.909 * 110 + 84.745 * 118) / (84.745 * 1.2 - 90.909 * 0.8)
    assert lower == 0.0 and lp == pytest.approx(want, rel=1e-12)
    long_liq, short_liq = fills.iloc[2], fills.iloc[3]
    assert (long_liq.side, long_liq.position_side, long_liq.qty) == ("SELL", "LONG", 90.909)
    assert (short_liq.side, short_liq.position_side, short_liq.qty) == ("BUY", "SHORT", 84.745)
    assert long_liq.price == math.floor(lp * 100) / 100
    assert short_liq.price == math.ceil(lp * 100) / 100
    # what is left after both closes pays the clearance fee, never more: equity >= 0
    left = 10_000.0 + 90.909 * (long_liq.price - 110.0) - 84.745 * (short_liq.price - 118.0)
    fee = min(0.0125 * (90.909 * long_liq.price + 84.745 * short_liq.price), left)
    assert long_liq.fee + short_liq.fee == pytest.approx(max(fee, 0.0), abs=1e-7)
    equity = _table(res.out, "equity").equity
    assert equity.iloc[-1] == pytest.approx(max(left - fee, 0.0), abs=1e-6)
    assert _table(res.out, "positions")[SYM].iloc[-1] == 0.0


def test_a_legs_closing_order_never_opens_the_other_side() -> None:
    spec = SymbolSpec(SYM, tick_size=0.01, step_size=0.001)
    acct = AccountConfig(taker_fee=0.0)
    table = bracket_table(SYM)
    # a SELL of 5 on a LONG position of 3: 3 close, the rest is cut
    chk = check_margin(acct, spec, table, 2.0, Side.SELL, 5.0, 3.0, 100.0, 1e6, 50.0, leg_sign=1)
    assert chk.qty == 3.0 and "only closes it" in chk.reason
    chk = check_margin(acct, spec, table, 2.0, Side.BUY, 5.0, 0.0, 100.0, 1e6, 50.0, leg_sign=-1)
    assert chk.qty == 0.0
    # the same SELL in one-way mode opens a short of 2
    chk = check_margin(acct, spec, table, 2.0, Side.SELL, 5.0, 3.0, 100.0, 1e6, 50.0)
    assert chk.qty == 5.0


@settings(max_examples=400, deadline=None)
@given(
    ql=st.floats(0.001, 50.0),
    qs=st.floats(0.001, 50.0),
    el=st.floats(1_000.0, 100_000.0),
    es=st.floats(1_000.0, 100_000.0),
    wallet=st.floats(-50_000.0, 2_000_000.0),
)
def test_hedge_band_meets_maintenance_exactly(
    ql: float, qs: float, el: float, es: float, wallet: float
) -> None:
    table = BTCUSDT_BRACKETS
    lower, upper = hedge_liquidation_band(table, ql, el, qs, es, wallet)

    def excess(p: float) -> float:
        balance = wallet + ql * (p - el) - qs * (p - es)
        return balance - table.maintenance_margin(ql * p) - table.maintenance_margin(qs * p)

    grid = np.geomspace(1e-3, 1e8, 400)
    if lower == math.inf:  # below maintenance at every price
        assert all(excess(p) < 1e-9 * max(1.0, abs(wallet)) for p in grid)
        return
    assert lower < upper
    for bound in (lower, upper):
        if 0.0 < bound < math.inf:
            scale = max(abs(wallet), ql * bound, qs * bound, 1.0)
            assert abs(excess(bound)) <= 1e-7 * scale
    # strictly inside the band the pair is above maintenance, outside below it
    for p in grid:
        scale = max(abs(wallet), ql * p, qs * p, 1.0)
        if lower * (1 + 1e-6) < p < upper * (1 - 1e-6):
            assert excess(p) > -1e-7 * scale, p
        elif p < lower * (1 - 1e-6) or p > upper * (1 + 1e-6):
            assert excess(p) < 1e-7 * scale, p


def test_one_leg_reduces_to_the_one_way_formula() -> None:
    t = BTCUSDT_BRACKETS
    assert hedge_liquidation_band(t, 2.0, 60_000.0, 0.0, 0.0, 15_000.0) == (
        liquidation_price(t, 1, 2.0, 60_000.0, 15_000.0),
        math.inf,
    )
    assert hedge_liquidation_band(t, 0.0, 0.0, 2.0, 60_000.0, 15_000.0) == (
        0.0,
        liquidation_price(t, -1, 2.0, 60_000.0, 15_000.0),
    )
    assert hedge_liquidation_band(t, 0.0, 0.0, 0.0, 0.0, 1.0) == (0.0, math.inf)
    # an exact hedge keeps its balance: a wallet already under maintenance stays there
    assert hedge_liquidation_band(t, 1.0, 1_010.0, 1.0, 1_000.0, 5.0) == (math.inf, math.inf)


def _demo(root: Path, **kw: Any) -> RunConfig:
    from tickray.feeds.store import read_symbol_specs

    specs = {s: SymbolSpec(s, **v) for s, v in read_symbol_specs(root).items()}
    return RunConfig(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=tuple(sorted(specs)),
        start_ns=parse_time("2024-01-01"),
        end_ns=parse_time("2024-01-03"),
        strategy=StrategyConfig("hedged_trend", {"slow": 120, "window": 30, "threshold": 0.004}),
        account=AccountConfig(allow_short=True, taker_fee=0.0004),
        perp=PerpConfig(
            leverage=10,
            margin_mode=kw.pop("margin_mode", "isolated"),
            position_mode="hedge",
            funding="store",
        ),
        specs=specs,
        sync_ns=kw.pop("sync_ns", 0),
        **kw,
    )


@pytest.fixture(scope="module")
def hedge_universe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tickray.feeds.synthetic import write_demo_dataset

    root = tmp_path_factory.mktemp("hedge-universe")
    write_demo_dataset(root, n_symbols=3, days=2, seed=5)
    return root


@pytest.mark.parametrize("margin_mode", ["isolated", "cross"])
def test_hedge_runs_do_not_depend_on_fusing_or_sharding(
    hedge_universe: Path, tmp_path: Path, margin_mode: str
) -> None:
    base = run_backtest(_demo(hedge_universe, margin_mode=margin_mode), tmp_path / "a")
    fills = _table(base.out, "fills")
    both = fills.groupby("symbol").position_side.nunique()
    assert (both == 2).all(), "every symbol traded both legs"
    want = results_digest(base.out)
    for k, kw in enumerate([{"fuse": False}, {"symbols_per_actor": 1}, {"sync_ns": 5 * MINUTE}]):
        again = run_backtest(
            _demo(hedge_universe, margin_mode=margin_mode, **kw), tmp_path / f"{k}"
        )
        if "sync_ns" in kw:
            assert len(_table(again.out, "fills")) > 0
            continue
        assert results_digest(again.out) == want, kw


@pytest.mark.ray
def test_hedge_on_ray_is_byte_identical_to_in_process(
    ray_session: object, hedge_universe: Path, tmp_path: Path
) -> None:
    local = run_backtest(_demo(hedge_universe, margin_mode="cross"), tmp_path / "local")
    ray = run_backtest(
        _demo(hedge_universe, margin_mode="cross", backend="ray", symbols_per_actor=2),
        tmp_path / "ray",
    )
    assert results_digest(ray.out) == results_digest(local.out)
