"""The USD-M perpetual account end to end: margin checks, funding, liquidation, determinism.

Hand-made bars and funding records go through the real topology (symbol
actors, clock, portfolio, recorder) and the results files are checked against
numbers worked out by hand in the comments.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import results_digest, write_bar_rows, write_funding_rows

from tickray.cluster.runner import run_backtest
from tickray.engine.clock import MINUTE, parse_time
from tickray.engine.config import (
    AccountConfig,
    ConfigError,
    PerpConfig,
    RunConfig,
    StrategyConfig,
)
from tickray.engine.instruments import SymbolSpec
from tickray.engine.perpetual import bracket_table, liquidation_price
from tickray.feeds.schemas import DataError

T0 = parse_time("2024-05-01")
SPEC = SymbolSpec("AAAUSDT", tick_size=0.01, step_size=0.001)

# Flat at 100, a +2% bar (momentum window 1, threshold 1% -> long at its close),
# the fill at the next open (102), then the path of the scenario.
UP = [(100.0, 100.0, 100.0, 100.0), (100.0, 102.0, 100.0, 102.0), (102.0, 102.0, 102.0, 102.0)]
CRASH = UP + [(102.0, 102.0, 93.0, 95.0)] + [(95.0, 95.0, 95.0, 95.0)] * 3
CALM = UP + [(102.0, 102.5, 101.5, 102.0)] * 4


def _config(root: Path, symbols: tuple[str, ...], n_bars: int, **perp: Any) -> RunConfig:
    acct = perp.pop("account", {})
    return RunConfig(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=symbols,
        start_ns=T0,
        end_ns=T0 + n_bars * MINUTE,
        strategy=StrategyConfig("momentum", {"window": 1, "threshold": 0.01}),
        account=AccountConfig(
            initial_cash=acct.get("cash", 10_000.0),
            taker_fee=acct.get("fee", 0.0),
            allow_short=True,
            price_buffer=acct.get("buffer", 0.0),
        ),
        perp=PerpConfig(**perp),
        specs={s: SymbolSpec(s, tick_size=0.01, step_size=0.001) for s in symbols},
        position_fraction=1.0,
    )


def _table(folder: Path, name: str) -> Any:
    return pq.read_table(folder / f"{name}.parquet").to_pandas()


def test_isolated_long_is_liquidated_at_its_liquidation_price(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_bar_rows(root, "AAAUSDT", T0, CRASH)
    cfg = _config(
        root, ("AAAUSDT",), len(CRASH), leverage=10, margin_mode="isolated", funding="none"
    )
    res = run_backtest(cfg, tmp_path / "out")
    fills = _table(res.out, "fills")
    # target notional 10,000 x 10 = 100,000 at the close 102: floor(980.3921) = 980.392;
    # the margin check (no buffer, no fee) needs 980.392 x 102 / 10 = 9,999.9984 <= 10,000
    assert list(fills.qty)[:2] == [980.392, 980.392]
    assert fills.price.iloc[0] == 102.0
    assert list(fills.liquidity) == ["TAKER", "LIQUIDATION", "TAKER"]
    # isolated margin 9,999.9984 in the 50k-250k bracket (mmr 2.5%, cum 750):
    # LP = (9999.9984 + 750 - 980.392 * 102) / (980.392 * 0.025 - 980.392) = 93.36944...
    margin = 980.392 * 102.0 / 10
    lp = (margin + 750 - 980.392 * 102.0) / (980.392 * 0.025 - 980.392)
    assert lp == pytest.approx(
        liquidation_price(bracket_table("AAAUSDT"), 1, 980.392, 102.0, margin)
    )
    assert 93.36 < lp < 93.37
    liq = _table(res.out, "liquidations")
    assert len(liq) == 1
    row = liq.iloc[0]
    # the bar's low 93 reaches it: closed at LP rounded down to the tick (a sell)
    assert row.side == "SELL" and row.price == 93.36 and row.qty == 980.392
    realized = 980.392 * (93.36 - 102.0)
    assert row.realized_pnl == pytest.approx(realized, abs=1e-6)
    # clearance fee 1.25% of 980.392 x 93.36 = 1,144.10, below the 1,529.41 margin left
    fee = round(min(0.0125 * 980.392 * 93.36, margin + realized), 8)
    assert row.fee == pytest.approx(fee, abs=1e-8)
    assert pd_ts(row.ts) == T0 + 3 * MINUTE  # the crash bar
    eq = _table(res.out, "equity")
    assert eq.equity.iloc[-1] == pytest.approx(10_000 + realized - fee, abs=1e-6)
    metrics = res.metrics["portfolio"]
    assert metrics["liquidations"] == 1
    # the crash bar's close (-6.9%) turns the target short: what is left (385.30) backs
    # floor(385.2957 / (95 / 10)) = 40.557 at 10x, resized with its reason
    assert fills.side.iloc[2] == "SELL" and fills.qty.iloc[2] == 40.557
    assert res.metrics["symbols"]["AAAUSDT"]["final_position"] == -40.557
    # the run went on to its end after the liquidation
    assert pd_ts(eq.ts.iloc[-1]) == T0 + len(CRASH) * MINUTE


def pd_ts(v: Any) -> int:
    return int(np.datetime64(v.to_datetime64(), "ns").astype(np.int64))


def test_cross_margin_backs_the_position_with_the_whole_wallet(tmp_path: Path) -> None:
    """Two symbols, 10x, cross: AAA's position has the whole 10,000 wallet behind it
    (BBB holds nothing), where isolated margin would give it only its 5,000."""
    root = tmp_path / "data"
    fall = UP + [(102.0, 102.0, 92.5, 95.0)] + [(95.0, 95.0, 95.0, 95.0)] * 3
    write_bar_rows(root, "AAAUSDT", T0, fall)
    write_bar_rows(root, "BBBUSDT", T0, [(50.0, 50.0, 50.0, 50.0)] * len(fall))
    out = {}
    for mode in ("cross", "isolated"):
        cfg = _config(
            root, ("AAAUSDT", "BBBUSDT"), len(fall), leverage=10, margin_mode=mode, funding="none"
        )
        out[mode] = run_backtest(cfg, tmp_path / mode).out
    # 5,000 x 10 = 50,000 at 102: 490.196; margin 490.196 x 102 / 10 = 4,999.9992
    q, e = 490.196, 102.0
    table = bracket_table("AAAUSDT")  # 0-50k: mmr 1%, cum 0
    iso_lp = liquidation_price(table, 1, q, e, q * e / 10)
    cross_lp = liquidation_price(table, 1, q, e, 10_000.0)
    # (4999.9992 - 50000) / (490.196 * 0.01 - 490.196) = 92.727; with 10,000: 82.42
    assert iso_lp == pytest.approx(92.727, abs=1e-3) and cross_lp == pytest.approx(82.42, abs=1e-2)
    # the 92.5 low liquidates only the isolated position
    assert len(_table(out["isolated"], "liquidations")) == 1
    assert _table(out["isolated"], "liquidations").price.iloc[0] == pytest.approx(
        math.floor(iso_lp * 100) / 100
    )
    assert len(_table(out["cross"], "liquidations")) == 0
    # a deeper fall (to 80) reaches the cross price too
    deep = UP + [(102.0, 102.0, 80.0, 85.0)] + [(85.0, 85.0, 85.0, 85.0)] * 3
    root2 = tmp_path / "deep"
    write_bar_rows(root2, "AAAUSDT", T0, deep)
    write_bar_rows(root2, "BBBUSDT", T0, [(50.0, 50.0, 50.0, 50.0)] * len(deep))
    cfg = _config(root2, ("AAAUSDT", "BBBUSDT"), len(deep), leverage=10, funding="none")
    liq = _table(run_backtest(cfg, tmp_path / "deep-out").out, "liquidations")
    assert len(liq) == 1 and liq.price.iloc[0] == math.floor(cross_lp * 100) / 100


def test_funding_is_paid_at_each_funding_time_on_the_position_then(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_bar_rows(root, "AAAUSDT", T0, CALM)
    # before the position (no payment), at the 00:03 close with its own mark, at 00:05
    # with no mark (the bar's mark, its close 102, is used) and a negative rate
    write_funding_rows(
        root,
        "AAAUSDT",
        [
            (T0 + 1 * MINUTE, 0.01, None),
            (T0 + 3 * MINUTE, 0.001, 102.5),
            (T0 + 5 * MINUTE, -0.0005, None),
        ],
    )
    cfg = _config(root, ("AAAUSDT",), len(CALM), leverage=2, margin_mode="isolated")
    res = run_backtest(cfg, tmp_path / "out")
    f = _table(res.out, "funding")
    # long from the 00:02 open: 10,000 x 2 = 20,000 notional at 102, floor(196.0784) = 196.078
    qty = _table(res.out, "fills").qty.iloc[0]
    assert qty == 196.078
    assert list(f.position) == [qty, qty]
    assert list(f.payment) == [round(qty * 102.5 * 0.001, 8), round(qty * 102.0 * -0.0005, 8)]
    assert list(f.mark_price) == [102.5, 102.0]
    paid = float(f.payment.sum())
    assert res.metrics["portfolio"]["funding"] == pytest.approx(paid, abs=1e-9)
    eq = _table(res.out, "equity")
    # flat prices, no fees: only funding moves cash; equity = cash + position x mark
    assert eq.cash.iloc[-1] == pytest.approx(10_000 - qty * 102.0 - paid, abs=1e-9)
    # the mark at 00:03 is the stored 102.5 (position valued at the mark price)
    marks = _table(res.out, "marks")
    assert marks.AAAUSDT.iloc[2] == 102.5


def test_orders_beyond_available_margin_are_resized_with_the_reason_recorded(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    write_bar_rows(root, "AAAUSDT", T0, CALM)
    # 1x with a 0.1% fee and a 2% buffer: 10,000 notional does not fit in 10,000
    cfg = _config(
        root,
        ("AAAUSDT",),
        len(CALM),
        leverage=1,
        funding="none",
        account={"fee": 0.001, "buffer": 0.02},
    )
    res = run_backtest(cfg, tmp_path / "out")
    orders = _table(res.out, "orders")
    accepted = orders[orders.status == "ACCEPTED"].iloc[0]
    # unit = 102 x 1.02 / 1 + 102 x 1.02 x 0.001 = 104.14404; 10,000 / 104.14404 = 96.020...
    assert accepted.qty == 96.02
    assert accepted.reason.startswith("insufficient margin: 96.02 of 98.039 fit")


def test_leverage_is_checked_against_the_brackets() -> None:
    with pytest.raises(ConfigError, match="perp.leverage: must be a number >= 1, got 0"):
        PerpConfig(leverage=0)
    with pytest.raises(ConfigError, match="perp.symbol_leverage.AAAUSDT: must be a number >= 1"):
        PerpConfig(symbol_leverage={"AAAUSDT": -2.0})
    with pytest.raises(ConfigError, match=r"60x for AAAUSDT is above its brackets' maximum 50x"):
        _config(Path("/nonexistent"), ("AAAUSDT",), 5, leverage=60)
    with pytest.raises(ConfigError, match="perp.position_mode: must be 'one-way' or 'hedge'"):
        PerpConfig(position_mode="both")
    with pytest.raises(ConfigError, match="perp.margin_mode: must be 'cross' or 'isolated'"):
        PerpConfig(margin_mode="portfolio")
    with pytest.raises(ConfigError, match="perp.brackets.AAAUSDT bracket 2: floor"):
        PerpConfig(brackets={"AAAUSDT": [[0, 100, 10, 0.01, 0], [200, 300, 5, 0.02, 1]]})
    with pytest.raises(ConfigError, match="needs 'portfolio' approval"):
        RunConfig(
            data_root=".",
            interval_ns=MINUTE,
            symbols=("AAAUSDT",),
            start_ns=T0,
            end_ns=T0 + MINUTE,
            perp=PerpConfig(),
            approval="symbol",
        )


def test_funding_that_does_not_cover_the_run_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "data"
    n = 9 * 60
    write_bar_rows(root, "AAAUSDT", T0, [(100.0, 100.0, 100.0, 100.0)] * n)
    write_funding_rows(
        root, "AAAUSDT", [(T0, 0.0001, None)]
    )  # one record, then nothing for 9 hours
    cfg = _config(root, ("AAAUSDT",), n, leverage=2)
    with pytest.raises(DataError, match="AAAUSDT funding: funding data does not cover the run"):
        run_backtest(cfg, tmp_path / "out")
    assert (tmp_path / "out.partial" / "error.txt").exists() or not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    write_bar_rows(empty, "AAAUSDT", T0, [(100.0, 100.0, 100.0, 100.0)] * 5)
    with pytest.raises(DataError, match="no funding records for AAAUSDT"):
        run_backtest(_config(empty, ("AAAUSDT",), 5), tmp_path / "out2")


@pytest.fixture(scope="module")
def perp_universe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tickray.feeds.synthetic import write_demo_dataset

    root = tmp_path_factory.mktemp("perp-universe")
    write_demo_dataset(root, n_symbols=3, days=2, seed=5)
    return root


def _demo_config(root: Path, **kw: Any) -> RunConfig:
    from tickray.feeds.store import read_symbol_specs

    specs = {s: SymbolSpec(s, **v) for s, v in read_symbol_specs(root).items()}
    symbols = tuple(sorted(specs))
    perp = {
        "leverage": 20,
        "margin_mode": kw.pop("margin_mode", "isolated"),
        "funding": "store",
    }
    return RunConfig(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=symbols,
        start_ns=parse_time("2024-01-01"),
        end_ns=parse_time("2024-01-03"),
        strategy=StrategyConfig("momentum", {"window": 30, "threshold": 0.004}),
        account=AccountConfig(allow_short=True),
        perp=PerpConfig(**perp),
        specs=specs,
        sync_ns=kw.pop("sync_ns", 0),
        **kw,
    )


def test_perp_runs_do_not_depend_on_fusing_or_sharding(perp_universe: Path, tmp_path: Path) -> None:
    base = run_backtest(_demo_config(perp_universe), tmp_path / "a")
    want = results_digest(base.out)
    assert {"funding.parquet", "liquidations.parquet", "marks.parquet"} <= set(want)
    assert len(_table(base.out, "funding")) > 0
    for k, kw in enumerate(
        [{"fuse": False}, {"symbols_per_actor": 1}, {"symbols_per_actor": 2, "fuse": False}]
    ):
        again = run_backtest(_demo_config(perp_universe, **kw), tmp_path / f"b{k}")
        assert results_digest(again.out) == want, kw


@pytest.mark.ray
def test_perp_cross_on_ray_is_byte_identical_to_in_process(
    ray_session: object, perp_universe: Path, tmp_path: Path
) -> None:
    local = run_backtest(_demo_config(perp_universe, margin_mode="cross"), tmp_path / "local")
    ray = run_backtest(
        _demo_config(perp_universe, margin_mode="cross", backend="ray", symbols_per_actor=2),
        tmp_path / "ray",
    )
    assert results_digest(ray.out) == results_digest(local.out)
