"""Perpetual edge cases found in review, each pinned by a run on hand-made bars:
gaps through the liquidation price, symbols falling together under cross margin,
missing bars around funding, late funding timestamps, intents overtaken by a
liquidation, margin reserved for fees, and notional beyond the last bracket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import results_digest, write_bar_rows, write_funding_rows

from tickray.cluster.runner import run_backtest
from tickray.engine.approval import check_margin
from tickray.engine.clock import MINUTE, parse_time
from tickray.engine.config import AccountConfig, PerpConfig, RunConfig, StrategyConfig
from tickray.engine.events import RiskAction, Side
from tickray.engine.instruments import SymbolSpec
from tickray.engine.perpetual import bracket_table, liquidation_price
from tickray.feeds.store import write_bars

T0 = parse_time("2024-05-01")
UP = [(100.0, 100.0, 100.0, 100.0), (100.0, 102.0, 100.0, 102.0), (102.0, 102.0, 102.0, 102.0)]


def flat(p: float) -> tuple[float, float, float, float]:
    return (p, p, p, p)


def _config(
    root: Path, symbols: tuple[str, ...], n: int, *, frac: float = 1.0, **kw: Any
) -> RunConfig:
    run = {k: kw.pop(k) for k in ("fuse", "sync_ns", "symbols_per_actor") if k in kw}
    return RunConfig(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=symbols,
        start_ns=T0,
        end_ns=T0 + n * MINUTE,
        strategy=StrategyConfig("momentum", {"window": 1, "threshold": 0.01}),
        account=AccountConfig(
            initial_cash=10_000.0, taker_fee=kw.pop("fee", 0.0), allow_short=True, price_buffer=0.0
        ),
        perp=PerpConfig(**kw),
        specs={s: SymbolSpec(s, tick_size=0.01, step_size=0.001) for s in symbols},
        position_fraction=frac,
        **run,
    )


def _t(out: Path, name: str) -> Any:
    return pq.read_table(out / f"{name}.parquet").to_pandas()


@pytest.mark.parametrize("mode", ["isolated", "cross"])
def test_a_gap_through_the_liquidation_price_liquidates_before_the_open_fills(
    tmp_path: Path, mode: str
) -> None:
    # long 980.392 at 102 (10x, LP 93.37); 00:03 closes -2% (flip intent); 00:04 opens at 80
    bars = UP + [(102.0, 102.0, 99.9, 99.9), flat(80.0)] + [flat(80.0)] * 3
    write_bar_rows(tmp_path / "d", "AAAUSDT", T0, bars)
    cfg = _config(
        tmp_path / "d", ("AAAUSDT",), len(bars), leverage=10, margin_mode=mode, funding="none"
    )
    out = run_backtest(cfg, tmp_path / "o").out
    liq = _t(out, "liquidations")
    assert list(liq.price) == [93.36]  # at its price, not at the 80 open
    fills = _t(out, "fills")
    assert list(fills.liquidity) == ["TAKER", "LIQUIDATION"]  # the flip order was cancelled
    orders = _t(out, "orders")
    assert "liquidation at mark" in orders[orders.status == "CANCELED"].reason.iloc[0]
    assert (_t(out, "equity").equity >= 0).all()


def test_cross_margin_liquidates_symbols_falling_together(tmp_path: Path) -> None:
    # two longs of 490.196 at 102 (10x, 5,000 each) on a 10,000 cross wallet; both dip to 88
    bars = UP + [(102.0, 102.0, 88.0, 88.0)] + [flat(88.0)] * 4
    for s in ("AAAUSDT", "BBBUSDT"):
        write_bar_rows(tmp_path / "d", s, T0, bars)
    cfg = _config(tmp_path / "d", ("AAAUSDT", "BBBUSDT"), len(bars), leverage=10, funding="none")
    out = run_backtest(cfg, tmp_path / "o").out
    liq = _t(out, "liquidations")
    # the account reaches maintenance when both marks are at 92.73: margin balance
    # 10,000 + 2 x 490.196 x (m - 102) = 2 x 0.01 x 490.196 x m
    m = (10_000 - 2 * 490.196 * 102) / (2 * 0.01 * 490.196 - 2 * 490.196)
    assert list(liq.symbol) == ["AAAUSDT", "BBBUSDT"]
    assert list(liq.price) == [round(m - 0.005, 2)] * 2  # rounded down: sells
    assert (_t(out, "equity").equity >= -1e-9).all()
    # one symbol falling alone: with a single position cross is the exchange's formula
    alone = tmp_path / "alone"
    write_bar_rows(alone, "AAAUSDT", T0, bars)
    write_bar_rows(alone, "BBBUSDT", T0, [flat(50.0)] * len(bars))
    liq = _t(
        run_backtest(
            _config(alone, ("AAAUSDT", "BBBUSDT"), len(bars), leverage=10, funding="none"),
            tmp_path / "o2",
        ).out,
        "liquidations",
    )
    lp = liquidation_price(bracket_table("AAAUSDT"), 1, 490.196, 102.0, 10_000.0)
    assert 82 < lp < 83 and len(liq) == 0  # 88 does not reach it


def test_funding_over_missing_bars_books_where_it_settled(tmp_path: Path) -> None:
    # long from 00:02; no bars open 00:04-00:07; a funding record at 00:05 settles at 00:09
    rows = [flat(100.0), (100.0, 102.0, 100.0, 102.0)] + [flat(102.0)] * 8
    idx = [0, 1, 2, 3, *range(8, 14)]
    table = pa.table(
        {
            "ts": pa.array([T0 + i * MINUTE for i in idx], type=pa.timestamp("ns", tz="UTC")),
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
            "volume": [1.0] * len(rows),
        }
    )
    write_bars(tmp_path / "d", "AAAUSDT", "1m", table)
    write_funding_rows(tmp_path / "d", "AAAUSDT", [(T0 + 5 * MINUTE, 0.001, None)])
    digests = []
    for fuse in (True, False):
        cfg = _config(
            tmp_path / "d", ("AAAUSDT",), 14, leverage=2, margin_mode="isolated", fuse=fuse
        )
        out = run_backtest(cfg, tmp_path / f"o{fuse}").out
        digests.append(results_digest(out))
        f = _t(out, "funding")
        assert f.settled.iloc[0].value == T0 + 9 * MINUTE  # the close of the 00:08 bar
        eq = _t(out, "equity")
        before = eq[eq.ts.astype("int64") < T0 + 9 * MINUTE]
        assert before.cash.iloc[-1] == pytest.approx(10_000 - 196.078 * 102.0)
    assert digests[0] == digests[1]


def test_a_funding_time_a_few_ms_late_charges_the_position_held_at_the_hour(
    tmp_path: Path,
) -> None:
    # long 98.039 from 00:02; flipped short at the 00:03 open; funding stamped 00:03:00.005
    bars = UP + [(102.0, 102.0, 99.9, 99.9)] + [flat(99.9)] * 3
    pays = []
    for k, late in enumerate((0, 5_000_000)):
        root = tmp_path / f"d{k}"
        write_bar_rows(root, "AAAUSDT", T0, bars)
        write_funding_rows(root, "AAAUSDT", [(T0 + 3 * MINUTE + late, 0.001, None)])
        cfg = _config(root, ("AAAUSDT",), len(bars), leverage=1, margin_mode="isolated")
        f = _t(run_backtest(cfg, tmp_path / f"o{k}").out, "funding")
        pays.append((list(f.position), list(f.payment)))
    assert pays[0] == pays[1] and pays[0][0][0] > 0  # the long paid, both times


def test_an_intent_overtaken_by_a_liquidation_is_cut_to_the_target(tmp_path: Path) -> None:
    # 5m steps, 30% of 10,000 at 10x: long 294.117 at 102; 00:06 closes -2.1% (flip intent
    # of 594.417 = close 294.117 + open 300.3); 00:07 liquidates the long; the flip is cut
    bars = [flat(100.0)] * 3 + [(100.0, 102.0, 100.0, 102.0), flat(102.0), flat(102.0)]
    bars += [(102.0, 102.0, 99.9, 99.9), (99.9, 99.9, 92.0, 99.5)] + [flat(99.5)] * 8
    write_bar_rows(tmp_path / "d", "AAAUSDT", T0, bars)
    cfg = _config(
        tmp_path / "d",
        ("AAAUSDT",),
        len(bars),
        frac=0.3,
        sync_ns=5 * MINUTE,
        leverage=10,
        margin_mode="isolated",
        funding="none",
    )
    res = run_backtest(cfg, tmp_path / "o")
    orders = _t(res.out, "orders")
    cut = orders[(orders.order_id == 2) & (orders.status == "ACCEPTED")].iloc[0]
    assert cut.qty == 300.3 and cut.reason.startswith("cut: the position it was to close")
    assert res.metrics["symbols"]["AAAUSDT"]["final_position"] == -300.3


def test_margin_reserved_covers_what_the_check_counted() -> None:
    acct = AccountConfig(taker_fee=0.001, price_buffer=0.02)
    spec = SymbolSpec("AAAUSDT", step_size=0.001)
    table = bracket_table("AAAUSDT")
    chk = check_margin(acct, spec, table, 10.0, Side.BUY, 10.0, 0.0, 100.0, 1e6, 10.0)
    unit = 102.0 / 10 + 102.0 * 0.001  # margin and fee at the buffered price
    assert chk.action == RiskAction.APPROVE and chk.cash_estimate == pytest.approx(-10 * unit)


def test_notional_beyond_the_last_bracket(tmp_path: Path) -> None:
    one = {"AAAUSDT": [[0, 100_000, 20, 0.01, 0]]}
    table = bracket_table("AAAUSDT", one["AAAUSDT"])
    assert table.maintenance_margin(150_000) == pytest.approx(1_500.0)  # the last bracket's rate
    # a short whose liquidation price puts it above the last cap is still liquidated
    lp = liquidation_price(table, -1, 1_000.0, 98.0, 9_800.0)
    assert lp == pytest.approx((9_800 + 98_000) / (1_000 * 0.01 + 1_000))
    bars = UP + [(102.0, 110.0, 102.0, 108.0)] + [flat(108.0)] * 3
    write_bar_rows(tmp_path / "d", "AAAUSDT", T0, bars)
    cfg = _config(
        tmp_path / "d", ("AAAUSDT",), len(bars), leverage=10, funding="none", brackets=one
    )
    res = run_backtest(cfg, tmp_path / "o")  # the position grows past 100,000: no crash
    assert res.metrics["symbols"]["AAAUSDT"]["final_position"] > 0
