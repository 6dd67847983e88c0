"""Whole replays on hand-made bars, with every number computed by hand in the comments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import write_bar_rows

from tickray.cluster.runner import run_backtest
from tickray.engine.clock import HOUR, MINUTE, parse_time
from tickray.engine.config import AccountConfig, RunConfig, StrategyConfig
from tickray.engine.instruments import SymbolSpec

T0 = parse_time("2024-01-01")


def _config(root: Path, n_bars: int, **kw: object) -> RunConfig:
    base: dict[str, object] = dict(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=("XUSDT",),
        start_ns=T0,
        end_ns=T0 + n_bars * MINUTE,
        strategy=StrategyConfig("momentum", {"window": 1, "threshold": 0.05}),
        account=AccountConfig(initial_cash=10_000.0, taker_fee=0.001),
        specs={"XUSDT": SymbolSpec("XUSDT", tick_size=0.01, step_size=0.001)},
        position_fraction=0.11,
    )
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


BARS = [
    (100.0, 100.0, 100.0, 100.0),  # bar0 00:00
    (100.0, 110.0, 100.0, 110.0),  # bar1 00:01, closes 00:02: +10% -> long
    (111.0, 113.0, 110.0, 112.0),  # bar2 00:02: buy fills at its open 111
    (
        112.0,
        112.0,
        100.0,
        100.0,
    ),  # bar3 00:03, closes 00:04: 100/112-1 = -10.7% -> flat (no shorts)
    (99.0, 99.0, 97.0, 98.0),  # bar4 00:04: sell fills at its open 99
    (98.0, 98.0, 98.0, 98.0),  # bar5
]


def test_signal_at_close_fills_at_next_open_with_taker_fee(tmp_path: Path) -> None:
    write_bar_rows(tmp_path / "data", "XUSDT", T0, BARS)
    res = run_backtest(_config(tmp_path / "data", len(BARS)), tmp_path / "out")
    fills = pq.read_table(res.out / "fills.parquet").to_pylist()
    # allocation = 10,000 / 1 symbol * 0.11 = 1,100; at the signal close 110 -> 10.000 units
    assert [(f["side"], f["qty"], f["price"]) for f in fills] == [
        ("BUY", 10.0, 111.0),
        ("SELL", 10.0, 99.0),
    ]
    assert [f["ts"].value for f in fills] == [T0 + 2 * MINUTE, T0 + 4 * MINUTE]
    # fees: 10 * 111 * 0.001 = 1.11 and 10 * 99 * 0.001 = 0.99
    assert [f["fee"] for f in fills] == [1.11, 0.99]
    # realised on the sell: 10 * (99 - 111) = -120
    assert fills[1]["realized_pnl"] == pytest.approx(-120.0)
    # cash: 10,000 - 1,110 - 1.11 + 990 - 0.99 = 9,877.90, flat at the end
    eq = pq.read_table(res.out / "equity.parquet").to_pydict()
    assert eq["equity"][-1] == pytest.approx(9877.90, abs=1e-9)
    assert eq["cash"][-1] == pytest.approx(9877.90, abs=1e-9)
    # while long (boundary 00:03, mark = bar2 close 112): 10,000 - 1,111.11 + 10 * 112
    at = [t.value for t in eq["ts"]].index(T0 + 3 * MINUTE)
    assert eq["equity"][at] == pytest.approx(10_000 - 1_111.11 + 1_120)
    m = res.metrics["portfolio"]
    # two fills, one round trip (flat -> long -> flat), net -120 - 2.10
    assert m["fills"] == 2 and m["trades"] == 1 and m["fees"] == pytest.approx(2.10)
    assert m["expectancy"] == pytest.approx(-122.10) and m["win_rate"] == 0.0
    assert m["total_return"] == pytest.approx(9877.90 / 10_000 - 1)
    orders = pq.read_table(res.out / "orders.parquet").to_pylist()
    assert [(o["order_id"], o["status"]) for o in orders] == [
        (1, "SUBMITTED"),
        (1, "ACCEPTED"),
        (1, "FILLED"),
        (2, "SUBMITTED"),
        (2, "ACCEPTED"),
        (2, "FILLED"),
    ]


def test_long_sync_delays_the_fill_to_the_first_open_after_the_step(tmp_path: Path) -> None:
    # 3 hours of flat bars with a +10% jump closing at 00:30: the intent waits for the
    # portfolio at the 01:00 step end and fills at the 01:00 bar's open.
    rows = [(100.0, 100.0, 100.0, 100.0)] * 180
    rows[29] = (100.0, 110.0, 100.0, 110.0)
    rows[30:] = [(110.0 + 0.01 * i, 111.0, 109.0, 110.0) for i in range(150)]
    write_bar_rows(tmp_path / "data", "XUSDT", T0, rows)
    res = run_backtest(_config(tmp_path / "data", 180, sync_ns=HOUR), tmp_path / "out")
    fills = pq.read_table(res.out / "fills.parquet").to_pylist()
    assert len(fills) == 1
    assert fills[0]["ts"].value == T0 + HOUR
    assert fills[0]["price"] == pytest.approx(110.0 + 0.01 * 30)  # bar 60's open
    eq = (
        pq.read_table(res.out / "equity.parquet", columns=["ts"])
        .column(0)
        .cast("int64")
        .to_pylist()
    )
    assert eq == [T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR]


def test_cash_check_resizes_an_order_that_does_not_fit(tmp_path: Path) -> None:
    write_bar_rows(tmp_path / "data", "XUSDT", T0, BARS)
    cfg = _config(
        tmp_path / "data",
        len(BARS),
        position_fraction=1.0,
        account=AccountConfig(initial_cash=1_000.0, taker_fee=0.001, price_buffer=0.02),
    )
    res = run_backtest(cfg, tmp_path / "out")
    orders = pq.read_table(res.out / "orders.parquet").to_pylist()
    # wanted floor(1000 / 110) = 9.090; one unit needs 110 * 1.02 * 1.001 = 112.3122 of cash,
    # so floor_to_step(1000 / 112.3122) = 8.903 fits
    accepted = [o for o in orders if o["status"] == "ACCEPTED"][0]
    assert accepted["qty"] == 8.903
    assert "insufficient free cash: 8.903 of 9.09 fit" in accepted["reason"]
    fills = pq.read_table(res.out / "fills.parquet").to_pylist()
    assert fills[0]["qty"] == 8.903
    assert min(pq.read_table(res.out / "equity.parquet").column("cash").to_pylist()) >= 0


def test_short_requires_margin_and_is_booked_when_allowed(tmp_path: Path) -> None:
    rows = [
        (100.0, 100.0, 100.0, 100.0),
        (100.0, 100.0, 90.0, 90.0),
        (89.0, 89.0, 89.0, 89.0),
        (80.0, 80.0, 80.0, 80.0),
    ]
    write_bar_rows(tmp_path / "data", "XUSDT", T0, rows)
    no = run_backtest(_config(tmp_path / "data", 4), tmp_path / "no")
    assert pq.read_table(no.out / "fills.parquet").num_rows == 0
    yes = run_backtest(
        _config(
            tmp_path / "data", 4, account=AccountConfig(initial_cash=10_000.0, allow_short=True)
        ),
        tmp_path / "yes",
    )
    fills = pq.read_table(yes.out / "fills.parquet").to_pylist()
    # -10% at bar1 close -> short floor(1100 / 90) = 12.222 units, sold at bar2 open 89
    assert [(f["side"], f["qty"], f["price"]) for f in fills] == [("SELL", 12.222, 89.0)]
    eq = pq.read_table(yes.out / "equity.parquet").to_pydict()
    cash = 10_000 + 12.222 * 89 - 12.222 * 89 * 0.001
    # last boundary: mark = bar3 close 80 -> equity = cash - 12.222 * 80
    assert eq["equity"][-1] == pytest.approx(cash - 12.222 * 80)
    assert yes.metrics["symbols"]["XUSDT"]["final_position"] == -12.222


def test_open_orders_are_cancelled_at_the_end(tmp_path: Path) -> None:
    # The signal comes at the very last bar: the order is approved but no bar is left.
    rows = [(100.0, 100.0, 100.0, 100.0), (100.0, 110.0, 100.0, 110.0)]
    write_bar_rows(tmp_path / "data", "XUSDT", T0, rows)
    res = run_backtest(_config(tmp_path / "data", 2), tmp_path / "out")
    orders = pq.read_table(res.out / "orders.parquet").to_pylist()
    assert [o["status"] for o in orders] == ["SUBMITTED", "ACCEPTED", "CANCELED"]
    assert orders[-1]["reason"] == "end of backtest"
    assert np.isclose(res.metrics["portfolio"]["final"], 10_000.0)


def test_symbol_approval_fills_at_the_next_open_whatever_the_step(tmp_path: Path) -> None:
    # Same bars as the long-sync test, but the symbol checks its own sub-account at the
    # signal (00:30 close), so the order fills at the 00:30 bar's open, not after the step.
    rows = [(100.0, 100.0, 100.0, 100.0)] * 180
    rows[29] = (100.0, 110.0, 100.0, 110.0)
    rows[30:] = [(110.0 + 0.01 * i, 111.0, 109.0, 110.0) for i in range(150)]
    write_bar_rows(tmp_path / "data", "XUSDT", T0, rows)
    cfg = _config(tmp_path / "data", 180, sync_ns=HOUR, approval="symbol")
    res = run_backtest(cfg, tmp_path / "out")
    fills = pq.read_table(res.out / "fills.parquet").to_pylist()
    assert [(f["ts"].value, f["price"], f["qty"]) for f in fills] == [
        (T0 + 30 * MINUTE, 110.0, 10.0)
    ]
    orders = pq.read_table(res.out / "orders.parquet").to_pylist()
    assert [(o["status"], o["ts"].value) for o in orders] == [
        ("SUBMITTED", T0 + 30 * MINUTE),
        ("ACCEPTED", T0 + 30 * MINUTE),
        ("FILLED", T0 + 30 * MINUTE),
    ]
    # equity at 01:00 (mark = bar 59 close 110): 10,000 - 1,100 - 1.10 fee + 10 * 110
    eq = pq.read_table(res.out / "equity.parquet").to_pydict()
    assert eq["equity"][0] == pytest.approx(10_000 - 1.10)
    assert res.stats.settles == 1  # nothing needed the portfolio before the end


def test_symbol_approval_checks_the_sub_account(tmp_path: Path) -> None:
    # Two symbols share 2,000 of cash: each sub-account holds 1,000. At fraction 1.0 each
    # wants floor(1000 / 110) = 9.09 units; one unit needs 110 * 1.02 * 1.001 of cash, so
    # each is resized to floor(1000 / 112.3122) = 8.903 on its own sub-account.
    write_bar_rows(tmp_path / "data", "XUSDT", T0, BARS)
    write_bar_rows(tmp_path / "data", "YUSDT", T0, BARS)
    spec = {s: SymbolSpec(s, tick_size=0.01, step_size=0.001) for s in ("XUSDT", "YUSDT")}
    cfg = _config(
        tmp_path / "data",
        len(BARS),
        symbols=("XUSDT", "YUSDT"),
        specs=spec,
        approval="symbol",
        position_fraction=1.0,
        account=AccountConfig(initial_cash=2_000.0, taker_fee=0.001),
    )
    res = run_backtest(cfg, tmp_path / "out")
    accepted = [
        o
        for o in pq.read_table(res.out / "orders.parquet").to_pylist()
        if o["status"] == "ACCEPTED"
    ]
    assert [(o["symbol"], o["qty"]) for o in accepted[:2]] == [("XUSDT", 8.903), ("YUSDT", 8.903)]
    assert all("insufficient free cash: 8.903 of 9.09 fit" in o["reason"] for o in accepted[:2])
