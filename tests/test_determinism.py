"""Same config and data give byte-identical results whatever the backend, sharding or fusing."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import SMALL_END, SMALL_START, SMALL_SYMBOLS, results_digest

from tickray.cluster.runner import run_backtest
from tickray.engine.clock import HOUR
from tickray.engine.config import (
    AccountConfig,
    ConfigError,
    ExecutionConfig,
    RunConfig,
    StrategyConfig,
)
from tickray.engine.symbol import SymbolSim


def _config(root: Path, **kw: object) -> RunConfig:
    base: dict[str, object] = dict(
        data_root=str(root),
        interval_ns=60_000_000_000,
        symbols=SMALL_SYMBOLS,
        start_ns=SMALL_START,
        end_ns=SMALL_END,
        strategy=StrategyConfig("sma_cross", {"fast": 5, "slow": 20}),
        account=AccountConfig(initial_cash=50_000.0, allow_short=True),
        chunk_rows=700,  # several chunks per symbol, not aligned with steps
    )
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sync", "approval"), [(0, "portfolio"), (HOUR, "portfolio"), (0, "symbol"), (HOUR, "symbol")]
)
def test_local_results_do_not_depend_on_sharding_or_fusing(
    small_universe: Path, tmp_path: Path, sync: int, approval: str
) -> None:
    digests = []
    for i, (per_actor, fuse) in enumerate([(0, True), (1, True), (2, False), (3, True)]):
        cfg = _config(
            small_universe, sync_ns=sync, symbols_per_actor=per_actor, fuse=fuse, approval=approval
        )
        res = run_backtest(cfg, tmp_path / f"run{i}")
        assert res.metrics["portfolio"]["trades"] > 10  # the strategy really trades
        digests.append(results_digest(res.out))
    assert all(d == digests[0] for d in digests)


@pytest.mark.ray
def test_ray_backend_is_byte_identical_to_in_process(
    ray_session: object, small_universe: Path, tmp_path: Path
) -> None:
    local = run_backtest(_config(small_universe), tmp_path / "local")
    ray1 = run_backtest(
        _config(small_universe, backend="ray", symbols_per_actor=1), tmp_path / "ray1"
    )
    ray2 = run_backtest(
        _config(small_universe, backend="ray", symbols_per_actor=2), tmp_path / "ray2"
    )
    want = results_digest(local.out)
    assert set(want) == {
        "equity.parquet",
        "fills.parquet",
        "marks.parquet",
        "metrics.json",
        "orders.parquet",
        "positions.parquet",
        "risk.parquet",
        "risk_events.parquet",
        "symbol_equity.parquet",
    }
    assert results_digest(ray1.out) == want
    assert results_digest(ray2.out) == want
    assert ray1.stats.settles == local.stats.settles
    local_s = run_backtest(_config(small_universe, approval="symbol"), tmp_path / "local_s")
    ray_s = run_backtest(
        _config(small_universe, approval="symbol", backend="ray", symbols_per_actor=1),
        tmp_path / "ray_s",
    )
    assert results_digest(ray_s.out) == results_digest(local_s.out) != want


REALISTIC = ExecutionConfig(
    spread_bps=4.0,
    participation=0.02,
    maker_fee=0.0002,
    impact={"model": "sqrt", "coef": 0.7, "decay": "5m"},
)


@pytest.mark.parametrize("approval", ["portfolio", "symbol"])
def test_spread_participation_and_impact_are_deterministic_across_sharding(
    small_universe: Path, tmp_path: Path, approval: str
) -> None:
    """Partial fills across bars and a stateful impact model: still independent of the layout."""
    digests = []
    fills = []
    for i, (per_actor, fuse) in enumerate([(0, True), (1, False), (3, True)]):
        cfg = _config(
            small_universe,
            execution=REALISTIC,
            symbols_per_actor=per_actor,
            fuse=fuse,
            approval=approval,
        )
        res = run_backtest(cfg, tmp_path / f"run{i}")
        digests.append(results_digest(res.out))
        fills.append(pq.read_table(res.out / "fills.parquet"))
    assert all(d == digests[0] for d in digests)
    plain = run_backtest(_config(small_universe, approval=approval), tmp_path / "plain")
    plain_fills = pq.read_table(plain.out / "fills.parquet")
    # the cap splits orders into several fills, and taker fills pay spread and impact
    assert fills[0].num_rows > plain_fills.num_rows
    orders = pq.read_table(plain.out / "orders.parquet")
    assert "PARTIALLY_FILLED" not in orders.column("status").to_pylist()
    statuses = pq.read_table(tmp_path / "run0" / "orders.parquet").column("status").to_pylist()
    assert "PARTIALLY_FILLED" in statuses


@pytest.mark.parametrize("approval", ["portfolio", "symbol"])
def test_lean_open_fill_path_equals_the_venue_path(
    small_universe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, approval: str
) -> None:
    """Default execution takes a lean path for plain market orders; the venue must agree."""
    lean = run_backtest(_config(small_universe, approval=approval), tmp_path / "lean")
    monkeypatch.setattr(SymbolSim, "fast_path", False)
    venue = run_backtest(_config(small_universe, approval=approval), tmp_path / "venue")
    assert lean.metrics["portfolio"]["trades"] > 10
    assert results_digest(venue.out) == results_digest(lean.out)


@pytest.mark.parametrize("approval", ["portfolio", "symbol"])
def test_per_symbol_fees_apply_to_that_symbol_only(
    small_universe: Path, tmp_path: Path, approval: str
) -> None:
    special = SMALL_SYMBOLS[0]
    execution = ExecutionConfig(symbol_fees={special: (0.0, 0.004)})
    res = run_backtest(
        _config(small_universe, execution=execution, approval=approval), tmp_path / "run"
    )
    fills = pq.read_table(res.out / "fills.parquet").to_pylist()
    assert {f["symbol"] for f in fills} >= {special, SMALL_SYMBOLS[1]}
    for f in fills:
        rate = 0.004 if f["symbol"] == special else AccountConfig().taker_fee
        assert f["fee"] == round(f["qty"] * f["price"] * rate, 8)
    with pytest.raises(ConfigError, match="symbol_fees: not in the run's symbols"):
        _config(small_universe, execution=ExecutionConfig(symbol_fees={"NOPEUSDT": (0.0, 0.001)}))
