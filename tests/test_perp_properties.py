"""Accounting invariants of perpetual runs, over random price paths, leverage and funding.

Each example replays random bars with wicks (so that liquidations happen)
through the real topology, then checks the results files against each other
and against an independent replay of the fills:

* equity = cash + sum(position x mark) at every boundary;
* cash = initial - sum(signed qty x price) - fees - funding (no money is created);
* each fill's realised PnL is the average-cost PnL of the fills before it;
* with isolated margin, each liquidation happened at the exchange formula's price
  for the position's entry and isolated margin (rounded against the trader), and
  its fee is the clearance rate capped at the margin left.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import results_digest, write_funding_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickray.cluster.runner import run_backtest
from tickray.engine.clock import MINUTE, parse_time
from tickray.engine.config import AccountConfig, PerpConfig, RunConfig, StrategyConfig
from tickray.engine.instruments import SymbolSpec
from tickray.engine.perpetual import (
    bracket_table,
    isolated_margin_after,
    liquidation_fee,
    liquidation_price,
)
from tickray.feeds.store import write_bars

T0 = parse_time("2024-05-01")
SYMBOLS = ("AAAUSDT", "BBBUSDT")
N_BARS = 150


def _write_bars(
    root: Path, symbol: str, rows: list[tuple[float, ...]], gaps: bool, rng: Any
) -> None:
    """The bars, with about one in ten left out when ``gaps`` (a feed with holes)."""
    keep = [k for k in range(len(rows)) if not gaps or k < 3 or rng.random() > 0.1]
    write_bars(
        root,
        symbol,
        "1m",
        pa.table(
            {
                "ts": pa.array([T0 + k * MINUTE for k in keep], type=pa.timestamp("ns", tz="UTC")),
                "open": [rows[k][0] for k in keep],
                "high": [rows[k][1] for k in keep],
                "low": [rows[k][2] for k in keep],
                "close": [rows[k][3] for k in keep],
                "volume": [1.0] * len(keep),
            }
        ),
    )


def _bars(rng: np.random.Generator, start: float) -> list[tuple[float, float, float, float]]:
    rows = []
    close = start
    for _ in range(N_BARS):
        o = close
        close = round(max(o * float(np.exp(rng.normal(0, 0.006))), 1.0), 2)
        hi = max(o, close) * (1 + abs(rng.normal(0, 0.002)))
        lo = min(o, close) * (1 - abs(rng.normal(0, 0.002)))
        if rng.random() < 0.05:  # a wick
            lo *= 1 - rng.uniform(0.02, 0.15)
        if rng.random() < 0.05:
            hi *= 1 + rng.uniform(0.02, 0.15)
        rows.append((o, round(hi, 2), round(lo, 2), close))
    return rows


def _avg_cost(fills: list[tuple[int, float, float]]) -> list[float]:
    """Realised PnL of each (side, qty, price) fill against the average entry."""
    pos = entry = 0.0
    out = []
    for side, qty, price in fills:
        q = side * qty
        pnl = 0.0
        if pos != 0.0 and (pos > 0) != (q > 0):
            closed = min(abs(q), abs(pos))
            pnl = closed * (price - entry) * (1 if pos > 0 else -1)
        new = round(pos + q, 9)
        if new == 0.0:
            entry = 0.0
        elif pos == 0.0 or (pos > 0) != (new > 0):
            entry = price
        elif abs(new) > abs(pos):
            entry = (abs(pos) * entry + abs(q) * price) / abs(new)
        pos = new
        out.append(pnl)
    return out


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    seed=st.integers(0, 2**31),
    leverage=st.sampled_from([1.0, 3.0, 10.0, 25.0, 50.0]),
    isolated=st.booleans(),
    fee=st.sampled_from([0.0, 0.0004, 0.001]),
    rates=st.lists(st.floats(-0.003, 0.003), min_size=14, max_size=14),
    gaps=st.booleans(),
    sync=st.sampled_from([1, 1, 5]),
    hedge=st.booleans(),
)
def test_perp_accounts_reconcile(
    seed: int,
    leverage: float,
    isolated: bool,
    fee: float,
    rates: list[float],
    gaps: bool,
    sync: int,
    hedge: bool,
) -> None:
    _run_and_check(seed, leverage, isolated, fee, rates, gaps=gaps, sync=sync, hedge=hedge)


@pytest.mark.parametrize(("seed", "leverage"), [(3, 50.0), (8, 25.0), (21, 50.0)])
def test_isolated_liquidations_follow_the_formula(seed: int, leverage: float) -> None:
    """High leverage on wicky paths: liquidations do happen, and each one checks out."""
    n = _run_and_check(seed, leverage, True, 0.0004, [0.0001, -0.0002] * 7)
    assert n >= 1


@pytest.mark.parametrize(("seed", "leverage"), [(3, 50.0), (8, 25.0)])
def test_isolated_hedge_liquidations_follow_the_formula(seed: int, leverage: float) -> None:
    """Hedge mode: each leg is liquidated on its own margin, by the one-leg formula."""
    n = _run_and_check(seed, leverage, True, 0.0004, [0.0001, -0.0002] * 7, hedge=True)
    assert n >= 1


def _run_and_check(
    seed: int,
    leverage: float,
    isolated: bool,
    fee: float,
    rates: list[float],
    *,
    gaps: bool = False,
    sync: int = 1,
    hedge: bool = False,
) -> int:
    """One random run, checked (and, with isolated margin, rerun without fusing for the
    same bytes); returns its number of liquidations."""
    rng = np.random.Generator(np.random.PCG64(seed))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        for k, s in enumerate(SYMBOLS):
            _write_bars(root, s, _bars(rng, 100.0 * (k + 1)), gaps, rng)
            # funding every 10 minutes; every other record carries its own mark
            write_funding_rows(
                root,
                s,
                [
                    # exchange timestamps land a few ms past the minute
                    (
                        T0 + (j + 1) * 10 * MINUTE + 7_000_000 * (j % 3),
                        round(r, 6),
                        100.0 * (k + 1) if j % 2 else None,
                    )
                    for j, r in enumerate(rates)
                ],
            )
        cfg = RunConfig(
            data_root=str(root),
            interval_ns=MINUTE,
            symbols=SYMBOLS,
            start_ns=T0,
            end_ns=T0 + N_BARS * MINUTE,
            strategy=StrategyConfig("hedged_trend", {"slow": 4, "window": 2, "threshold": 0.003})
            if hedge
            else StrategyConfig("momentum", {"window": 2, "threshold": 0.003}),
            account=AccountConfig(initial_cash=10_000.0, taker_fee=fee, allow_short=True),
            perp=PerpConfig(
                leverage=leverage,
                margin_mode="isolated" if isolated else "cross",
                position_mode="hedge" if hedge else "one-way",
                marks="last",
            ),
            specs={s: SymbolSpec(s, tick_size=0.01, step_size=0.001) for s in SYMBOLS},
            position_fraction=1.0,
            sync_ns=sync * MINUTE,
        )
        out = run_backtest(cfg, Path(tmp) / "out").out
        _check(out, cfg, isolated)
        if isolated:
            again = run_backtest(replace(cfg, fuse=False), Path(tmp) / "again").out
            assert results_digest(again) == results_digest(out)
        return int(pq.read_table(out / "liquidations.parquet").num_rows)


def _check(out: Path, cfg: RunConfig, isolated: bool) -> None:
    eq = pq.read_table(out / "equity.parquet").to_pandas()
    fills = pq.read_table(out / "fills.parquet").to_pandas()
    funding = pq.read_table(out / "funding.parquet").to_pandas()
    marks = pq.read_table(out / "marks.parquet").to_pandas()
    pos = pq.read_table(out / "positions.parquet").to_pandas()
    initial = cfg.account.initial_cash
    ts = eq.ts.astype("int64").to_numpy()
    # positions at each boundary from the snapshots of changes
    at = np.searchsorted(pos.ts.astype("int64").to_numpy(), ts, side="right") - 1
    value = np.zeros(len(ts))
    for s in SYMBOLS:
        held = np.where(at >= 0, pos[s].to_numpy()[np.maximum(at, 0)], 0.0)
        value += np.where(held != 0.0, held * marks[s].to_numpy(), 0.0)
    assert np.allclose(eq.equity.to_numpy(), eq.cash.to_numpy() + value, rtol=0, atol=1e-6)
    signed = np.where(fills.side == "BUY", 1.0, -1.0) * fills.qty
    cash = initial - float((signed * fills.price).sum()) - fills.fee.sum() - funding.payment.sum()
    assert eq.cash.iloc[-1] == pytest.approx(cash, abs=1e-6)
    assert (fills.fee >= 0).all()
    for s in SYMBOLS:
        # one book per position side (hedge mode: LONG and SHORT; else BOTH)
        for side_name in sorted(set(fills.position_side[fills.symbol == s])):
            mine = fills[(fills.symbol == s) & (fills.position_side == side_name)]
            sides = np.where(mine.side == "BUY", 1, -1)
            want = _avg_cost(list(zip(sides, mine.qty, mine.price, strict=True)))
            assert np.allclose(mine.realized_pnl.to_numpy(), want, atol=1e-6)
            if side_name == "LONG":
                assert (mine.position_after >= 0).all()
            elif side_name == "SHORT":
                assert (mine.position_after <= 0).all()
            if isolated:
                paid = funding[funding.symbol == s]
                if side_name != "BOTH":  # each side's funding, by the sign of its position
                    paid = paid[(paid.position > 0) == (side_name == "LONG")]
                _check_liquidations(cfg, s, mine, paid)


def _check_liquidations(cfg: RunConfig, s: str, fills: object, funding: object) -> None:
    """Replay one symbol's isolated margin through its fills and funding."""
    import pandas as pd

    assert isinstance(fills, pd.DataFrame) and isinstance(funding, pd.DataFrame)
    assert cfg.perp is not None
    table, lev = bracket_table(s), cfg.perp.leverage
    spec = cfg.spec(s)
    # a fill happens at its bar's open, a funding settlement at the close of the bar that
    # settled it: before a fill at the next bar's open (the same time)
    events = [(int(t.value), 1, k) for k, t in enumerate(fills.ts)]
    events += [(int(t.value), 0, k) for k, t in enumerate(funding.settled)]
    pos = entry = margin = 0.0
    for _, kind, k in sorted(events):
        if kind == 0:
            margin -= float(funding.payment.iloc[k])
            continue
        f = fills.iloc[k]
        side = 1 if f.side == "BUY" else -1
        if f.liquidity == "LIQUIDATION":
            lp = liquidation_price(table, 1 if pos > 0 else -1, abs(pos), entry, margin)
            assert f.price == spec.round_price_against(lp, side)
            assert f.qty == pytest.approx(abs(pos), abs=1e-9)
            left = margin + float(f.realized_pnl)
            assert f.fee == pytest.approx(
                liquidation_fee(cfg.perp.liquidation_fee, f.qty, f.price, left), abs=1e-7
            )
        new = round(pos + side * f.qty, 9)
        margin = isolated_margin_after(margin, pos, new, float(f.price), lev)
        if new == 0.0:
            entry = 0.0
        elif pos == 0.0 or (pos > 0) != (new > 0):
            entry = float(f.price)
        elif abs(new) > abs(pos):
            entry = (abs(pos) * entry + f.qty * float(f.price)) / abs(new)
        pos = new
