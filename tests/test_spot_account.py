"""The spot account: fees in the base asset, cash per quote asset, and their invariants.

Hand-made bars go through the real topology; every expected number is worked
out in the comments. The property test replays random paths and checks the
results files against each other.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import write_bar_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickray.cluster.runner import run_backtest
from tickray.engine.clock import MINUTE, parse_time
from tickray.engine.config import AccountConfig, ConfigError, RunConfig, StrategyConfig
from tickray.engine.instruments import SymbolSpec, base_fee_split, split_symbol

T0 = parse_time("2024-01-01")
# flat, +10% (long at its close), the buy at 111, -10.7% (flat), the sell at 99
BARS = [
    (100.0, 100.0, 100.0, 100.0),
    (100.0, 110.0, 100.0, 110.0),
    (111.0, 113.0, 110.0, 112.0),
    (112.0, 112.0, 100.0, 100.0),
    (99.0, 99.0, 97.0, 98.0),
    (98.0, 98.0, 98.0, 98.0),
]


def _config(root: Path, symbols: tuple[str, ...], n_bars: int, **kw: Any) -> RunConfig:
    acct = {"initial_cash": 10_000.0, "taker_fee": 0.001} | kw.pop("account", {})
    base: dict[str, Any] = dict(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=symbols,
        start_ns=T0,
        end_ns=T0 + n_bars * MINUTE,
        strategy=StrategyConfig("momentum", {"window": 1, "threshold": 0.05}),
        account=AccountConfig(**acct),
        specs={s: SymbolSpec(s, tick_size=0.01, step_size=0.001) for s in symbols},
        position_fraction=0.11,
    )
    base.update(kw)
    return RunConfig(**base)


def _table(folder: Path, name: str) -> Any:
    return pq.read_table(folder / f"{name}.parquet").to_pandas()


def test_symbol_names_give_base_and_quote() -> None:
    assert split_symbol("ETHBTC") == ("ETH", "BTC")
    assert split_symbol("BTCFDUSD") == ("BTC", "FDUSD")
    assert split_symbol("SYN00USDT") == ("SYN00", "USDT")
    assert split_symbol("AAPL") == ("", "")
    spec = SymbolSpec("ETHBTC")
    assert (spec.base_asset, spec.quote_asset) == ("ETH", "BTC")
    assert SymbolSpec("X", base_asset="A", quote_asset="B").quote_asset == "B"


def test_base_fee_split_books_whole_lots_and_keeps_dust() -> None:
    spec = SymbolSpec("XUSDT", step_size=0.001)
    # 10 x 0.00075 = 0.0075 ETH fee; 9.9925 received: 9.992 booked, 0.0005 dust
    booked, fee, dust = base_fee_split(10.0, 111.0, 0.00075, spec)
    assert (booked, dust) == (9.992, 0.0005)
    assert fee == round(0.0075 * 111.0, 8)  # 0.8325 in quote
    # a maker rebate is paid in quote, the whole quantity is booked
    assert base_fee_split(10.0, 111.0, -0.0001, spec) == (10.0, round(-0.111, 8), 0.0)


def test_fees_in_base_reduce_the_holding_not_the_cash(tmp_path: Path) -> None:
    write_bar_rows(tmp_path / "data", "XUSDT", T0, BARS)
    cfg = _config(
        tmp_path / "data",
        ("XUSDT",),
        len(BARS),
        account={"fee_asset": "base", "taker_fee": 0.00075},
    )
    res = run_backtest(cfg, tmp_path / "out")
    fills = _table(res.out, "fills")
    # allocation 10,000 x 0.11 = 1,100 at the close 110: 10.000; bought at 111
    assert list(fills.qty) == [10.0, 9.992]  # the sell closes what was booked
    assert list(fills.price) == [111.0, 99.0]
    # buy: fee 0.0075 base = 0.8325 quote; booked 9.992 (dust 0.0005); cash -1,110
    # sell: 9.992 x 99 = 989.208, fee in quote 0.741906
    assert list(fills.fee) == [0.8325, round(9.992 * 99 * 0.00075, 8)]
    assert list(fills.position_after) == [9.992, 0.0]
    cash = 10_000 - 1_110.0 + 989.208 - round(9.992 * 99 * 0.00075, 8)
    assert list(fills.cash_after) == pytest.approx([8_890.0, cash], abs=1e-9)
    assert fills.realized_pnl.iloc[1] == pytest.approx(9.992 * (99 - 111), abs=1e-9)
    eq = _table(res.out, "equity")
    # the 0.0005 dust stays, valued at the last close 98
    assert eq.equity.iloc[-1] == pytest.approx(cash + 0.0005 * 98.0, abs=1e-9)
    assert res.metrics["symbols"]["XUSDT"]["dust"] == 0.0005
    assert res.metrics["balances"] == {"USDT": pytest.approx(cash, abs=1e-9)}


def test_each_quote_asset_is_its_own_cash(tmp_path: Path) -> None:
    """ETHBTC buys with the account's BTC, BTCUSDT with its USDT; equity is in USDT."""
    root = tmp_path / "data"
    n = len(BARS)
    # ETHBTC follows BARS / 2000 (0.05 -> 0.055 -> ...); BTCUSDT is 50,000, then 52,000 (+4%)
    write_bar_rows(root, "ETHBTC", T0, [tuple(v / 2000 for v in b) for b in BARS])
    btc = [(50_000.0,) * 4] * 3 + [(52_000.0,) * 4] * (n - 3)
    write_bar_rows(root, "BTCUSDT", T0, btc)
    cfg = _config(
        root,
        ("BTCUSDT", "ETHBTC"),
        n,
        account={"balances": {"BTC": 2.0}, "taker_fee": 0.001},
        specs={
            "BTCUSDT": SymbolSpec("BTCUSDT", tick_size=0.01, step_size=0.00001),
            "ETHBTC": SymbolSpec("ETHBTC", tick_size=0.00001, step_size=0.001),
        },
    )
    res = run_backtest(cfg, tmp_path / "out")
    fills = _table(res.out, "fills")
    assert list(fills.symbol) == ["ETHBTC", "ETHBTC"]  # BTCUSDT never moves 5%
    # ETHBTC's allocation: 2 BTC x 0.11 = 0.22 BTC; at the close 0.055: 4.000 ETH
    # bought at 0.0555: 0.222 BTC + fee 0.000222; sold at 0.0495: 0.198 - 0.000198
    assert list(fills.qty) == [4.0, 4.0] and list(fills.price) == [0.0555, 0.0495]
    btc_after = 2.0 - 0.222 - 0.000222 + 0.198 - 0.000198
    assert fills.cash_after.iloc[-1] == pytest.approx(btc_after, abs=1e-12)
    assert res.metrics["balances"] == {
        "USDT": 10_000.0,
        "BTC": pytest.approx(btc_after, abs=1e-12),
    }
    html = (res.out / "report.html").read_text()
    assert '<tr data-asset="BTC"><th>BTC</th>' in html and f"{btc_after:,.8g}" in html
    eq = _table(res.out, "equity")
    # at the end: 10,000 USDT + the BTC at BTCUSDT's 52,000
    assert eq.equity.iloc[-1] == pytest.approx(10_000 + btc_after * 52_000, abs=1e-6)
    # at 00:03, long 4 ETH marked at 0.056 BTC (bar2's close 112 / 2000), BTC at 50,000
    at = 2
    want = 10_000 + (2.0 - 0.222222) * 50_000 + 4.0 * 0.056 * 50_000
    assert eq.equity.iloc[at] == pytest.approx(want, abs=1e-6)
    # the run's start value: 10,000 + 2 BTC at BTCUSDT's first mark (50,000)
    assert res.metrics["portfolio"]["initial"] == pytest.approx(110_000.0)


def test_cash_assets_need_a_symbol_that_values_them() -> None:
    with pytest.raises(ConfigError, match="ETHBTC needs BTC.*add BTCUSDT to the symbols"):
        _config(Path("."), ("ETHBTC", "XUSDT"), 5)
    with pytest.raises(ConfigError, match="account.balances needs EUR.*add EURUSDT"):
        _config(Path("."), ("XUSDT",), 5, account={"balances": {"EUR": 100.0}})
    with pytest.raises(ConfigError, match="account.fee_asset: must be 'quote' or 'base'"):
        AccountConfig(fee_asset="bnb")
    with pytest.raises(ConfigError, match="account.balances.BTC: must be a number >= 0"):
        AccountConfig(balances={"BTC": -1.0})
    with pytest.raises(ConfigError, match="fees in base need 'portfolio' approval"):
        _config(Path("."), ("XUSDT",), 5, account={"fee_asset": "base"}, approval="symbol")


def _walk(rng: np.random.Generator, start: float, n: int) -> list[tuple[float, ...]]:
    rows, close = [], start
    for _ in range(n):
        o = close
        close = round(max(o * float(np.exp(rng.normal(0, 0.01))), 0.01), 2)
        rows.append((o, max(o, close), min(o, close), close))
    return rows


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 2**31),
    fee=st.sampled_from([0.0, 0.00075, 0.001]),
    base=st.booleans(),
    btc=st.sampled_from([0.0, 0.5, 3.0]),
)
def test_spot_accounts_reconcile(seed: int, fee: float, base: bool, btc: float) -> None:
    rng = np.random.Generator(np.random.PCG64(seed))
    n = 200
    symbols = ("BTCUSDT", "ETHBTC", "XUSDT")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_bar_rows(root, "BTCUSDT", T0, _walk(rng, 500.0, n))
        write_bar_rows(root, "ETHBTC", T0, _walk(rng, 5.0, n))
        write_bar_rows(root, "XUSDT", T0, _walk(rng, 100.0, n))
        balances = {"BTC": btc} if btc else {}
        cfg = _config(
            root,
            symbols,
            n,
            strategy=StrategyConfig("momentum", {"window": 2, "threshold": 0.005}),
            account={
                "taker_fee": fee,
                "fee_asset": "base" if base else "quote",
                "balances": balances,
            },
            position_fraction=0.8,
        )
        out = run_backtest(cfg, Path(tmp) / "out").out
        eq = _table(out, "equity")
        fills = _table(out, "fills")
        marks = _table(out, "marks")
        pos = _table(out, "positions")
        m = __import__("json").loads((out / "metrics.json").read_text())
    # cash per asset from the fills alone
    cash = {"USDT": 10_000.0, "BTC": btc}
    dust = dict.fromkeys(symbols, 0.0)
    for f in fills.itertuples():
        quote = "BTC" if f.symbol == "ETHBTC" else "USDT"
        if f.side == "BUY":
            cash[quote] -= f.qty * f.price
            if base:
                booked, value, dust[f.symbol] = base_fee_split(
                    f.qty, f.price, fee, cfg.spec(f.symbol), dust[f.symbol]
                )
                assert value == f.fee
            else:
                cash[quote] -= f.fee
        else:
            cash[quote] += f.qty * f.price - f.fee
        assert f.fee >= 0
    assert m["balances"]["USDT"] == pytest.approx(cash["USDT"], abs=1e-6)
    assert m["balances"].get("BTC", 0.0) == pytest.approx(cash["BTC"], abs=1e-9)
    assert all(v >= -1e-9 for v in m["balances"].values())  # spot: no cash below zero
    # equity = cash of each asset + holdings, valued in USDT, at every boundary
    ts = eq.ts.astype("int64").to_numpy()
    at = np.searchsorted(pos.ts.astype("int64").to_numpy(), ts, side="right") - 1
    held = {
        s: np.where(at >= 0, pos[s].to_numpy()[np.maximum(at, 0)], 0.0) if len(pos) else 0.0
        for s in symbols
    }
    btc_rate = marks.BTCUSDT.to_numpy()
    final = (
        cash["USDT"]
        + cash["BTC"] * btc_rate[-1]
        + (held["BTCUSDT"][-1] + dust["BTCUSDT"]) * marks.BTCUSDT.iloc[-1]
        + (held["XUSDT"][-1] + dust["XUSDT"]) * marks.XUSDT.iloc[-1]
        + (held["ETHBTC"][-1] + dust["ETHBTC"]) * marks.ETHBTC.iloc[-1] * btc_rate[-1]
    )
    assert eq.equity.iloc[-1] == pytest.approx(final, rel=1e-9)
    for s in symbols:  # long-only spot: no position below zero
        assert (np.asarray(held[s]) >= 0).all()


# -- found in review ----------------------------------------------------------------------
DIP = [(100.0,) * 4, (100.0, 110.0, 100.0, 110.0), (110.0, 110.0, 99.0, 99.0)] + [(99.0,) * 4] * 3


@pytest.mark.parametrize("fast", [True, False])
def test_a_sell_never_exceeds_what_is_held_without_shorting(
    tmp_path: Path, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3m steps: the buy (10, booking 9.992 after its base fee) and the sell that closes
    it are decided together; the sell is sized from the 10 ordered, and is cut to the
    9.992 held when it fills, the rest canceled with its reason."""
    from tickray.engine.symbol import SymbolSim

    monkeypatch.setattr(SymbolSim, "fast_path", fast)
    write_bar_rows(tmp_path / "d", "XUSDT", T0, DIP)
    cfg = _config(
        tmp_path / "d",
        ("XUSDT",),
        len(DIP),
        sync_ns=3 * MINUTE,
        account={"fee_asset": "base", "taker_fee": 0.00075},
    )
    res = run_backtest(cfg, tmp_path / "o")
    fills = _table(res.out, "fills")
    assert list(fills.side) == ["BUY", "SELL"] and list(fills.qty) == [10.0, 9.992]
    assert list(fills.position_after) == [9.992, 0.0]
    orders = _table(res.out, "orders")
    cut = orders[(orders.side == "SELL") & (orders.status == "CANCELED")]
    assert list(cut.reason) == ["spot: cut to what is held"]
    assert res.metrics["symbols"]["XUSDT"]["final_position"] == 0.0


def test_the_fast_and_the_venue_path_agree_on_cut_sells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import results_digest

    from tickray.engine.symbol import SymbolSim

    write_bar_rows(tmp_path / "d", "XUSDT", T0, DIP)
    cfg = _config(
        tmp_path / "d",
        ("XUSDT",),
        len(DIP),
        sync_ns=3 * MINUTE,
        account={"fee_asset": "base", "taker_fee": 0.00075},
    )
    digests = []
    for fast in (True, False):
        monkeypatch.setattr(SymbolSim, "fast_path", fast)
        digests.append(results_digest(run_backtest(cfg, tmp_path / f"o{fast}").out))
    assert digests[0] == digests[1]


def test_a_buy_that_books_no_whole_lot_keeps_it_as_dust_until_it_makes_one(
    tmp_path: Path,
) -> None:
    # step 1: a 1-lot buy with a 0.1% base fee receives 0.999, all dust; the run goes on
    bars = [(100.0,) * 4, (100.0, 110.0, 100.0, 110.0), (111.0, 113.0, 110.0, 112.0)]
    bars += [(112.0,) * 4]
    write_bar_rows(tmp_path / "d", "XUSDT", T0, bars)
    cfg = _config(
        tmp_path / "d",
        ("XUSDT",),
        len(bars),
        position_fraction=0.011,
        account={"fee_asset": "base"},
        specs={"XUSDT": SymbolSpec("XUSDT", tick_size=0.01, step_size=1.0)},
    )
    res = run_backtest(cfg, tmp_path / "o")
    assert res.metrics["symbols"]["XUSDT"]["dust"] == 0.999
    assert res.metrics["symbols"]["XUSDT"]["final_position"] == 0.0
    # dust that reaches a lot moves into the position
    spec = SymbolSpec("XUSDT", step_size=1.0)
    assert base_fee_split(1.0, 100.0, 0.001, spec, 0.999) == (1.0, 0.1, 0.998)


def test_three_cash_assets_give_the_same_bytes_fused_or_not(tmp_path: Path) -> None:
    from conftest import results_digest

    root = tmp_path / "d"
    rng = np.random.Generator(np.random.PCG64(4))
    for sym, p0 in (("BTCUSDT", 500.0), ("ETHUSDT", 50.0), ("XBTC", 0.5), ("YETH", 2.0)):
        write_bar_rows(root, sym, T0, _walk(rng, p0, 300))
    cfg = _config(
        root,
        ("BTCUSDT", "ETHUSDT", "XBTC", "YETH"),
        300,
        strategy=StrategyConfig("momentum", {"window": 2, "threshold": 0.005}),
        account={"balances": {"BTC": 2.0, "ETH": 30.0}, "fee_asset": "base"},
        specs={
            s: SymbolSpec(s, tick_size=0.0001, step_size=0.001, base_asset=s[0], quote_asset=q)
            for s, q in (("BTCUSDT", "USDT"), ("ETHUSDT", "USDT"), ("XBTC", "BTC"), ("YETH", "ETH"))
        },
        position_fraction=0.8,
    )
    a = results_digest(run_backtest(cfg, tmp_path / "a").out)
    from dataclasses import replace

    b = results_digest(run_backtest(replace(cfg, fuse=False), tmp_path / "b").out)
    assert a == b


def test_a_late_conversion_symbol(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_bar_rows(root, "XUSDT", T0, BARS)
    write_bar_rows(root, "BNBUSDT", T0 + MINUTE, [(300.0,) * 4] * (len(BARS) - 1))
    write_bar_rows(root, "ABCBNB", T0, [tuple(v / 300 for v in b) for b in BARS])
    syms = ("ABCBNB", "BNBUSDT", "XUSDT")
    specs = {s: SymbolSpec(s, tick_size=0.0001, step_size=0.001) for s in syms}
    # no BNB held: nothing to value before BNBUSDT's first bar
    res = run_backtest(_config(root, syms, len(BARS), specs=specs), tmp_path / "a")
    assert res.metrics["balances"]["BNB"] == 0.0
    # BNB held from the start: refused before anything is written
    cfg = _config(root, syms, len(BARS), specs=specs, account={"balances": {"BNB": 10.0}})
    with pytest.raises(Exception, match=r"account.balances.BNB: BNBUSDT, which values it"):
        run_backtest(cfg, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_metrics_of_a_symbol_quoted_in_another_asset_are_in_the_currency(tmp_path: Path) -> None:
    root = tmp_path / "d"
    n = len(BARS)
    write_bar_rows(root, "ETHBTC", T0, [tuple(v / 2000 for v in b) for b in BARS])
    write_bar_rows(root, "BTCUSDT", T0, [(50_000.0,) * 4] * 3 + [(52_000.0,) * 4] * (n - 3))
    cfg = _config(
        root,
        ("BTCUSDT", "ETHBTC"),
        n,
        account={"balances": {"BTC": 2.0}},
        specs={
            "BTCUSDT": SymbolSpec("BTCUSDT", tick_size=0.01, step_size=0.00001),
            "ETHBTC": SymbolSpec("ETHBTC", tick_size=0.00001, step_size=0.001),
        },
    )
    m = run_backtest(cfg, tmp_path / "o").metrics
    # fees 0.000222 BTC (booked at 00:03, BTC 50,000) + 0.000198 BTC (00:05, 52,000)
    want = 0.000222 * 50_000 + 0.000198 * 52_000
    assert m["symbols"]["ETHBTC"]["fees"] == pytest.approx(want)
    assert m["portfolio"]["fees"] == pytest.approx(want)
    # buy 4 x 0.0555 BTC at 50,000, sell 4 x 0.0495 at 52,000: notional in USDT
    notional = 4 * 0.0555 * 50_000 + 4 * 0.0495 * 52_000
    assert m["portfolio"]["traded_notional"] == pytest.approx(notional)
    # GBTC and FETH are stock tickers, not pairs
    assert split_symbol("GBTC") == ("", "") and split_symbol("FETH") == ("", "")
