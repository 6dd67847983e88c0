"""Replays of real Binance klines from ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import results_digest

from tickray.cluster.cli import main
from tickray.cluster.runner import run_backtest
from tickray.engine.clock import HOUR, MINUTE, parse_time
from tickray.engine.config import AccountConfig, RunConfig, StrategyConfig
from tickray.feeds.binance import convert_klines

pytestmark = pytest.mark.realdata

PERPS = ("AVAXUSDT", "DOTUSDT", "FILUSDT", "LINKUSDT", "LTCUSDT", "NEARUSDT")


@pytest.fixture(scope="module")
def perps_2026_02(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("perps")
    folder = shared_data / "crypto" / "klines_1m" / "binance_usdm_futures"
    for sym in PERPS:
        convert_klines([folder / f"{sym}-1m-2026-02.csv.gz"], root, sym)
    return root


def test_multi_symbol_replay_of_real_perpetual_klines(perps_2026_02: Path, tmp_path: Path) -> None:
    start, end = parse_time("2026-02-01"), parse_time("2026-03-01")
    cfg = RunConfig(
        data_root=str(perps_2026_02),
        interval_ns=MINUTE,
        symbols=PERPS,
        start_ns=start,
        end_ns=end,
        strategy=StrategyConfig("momentum", {"window": 60, "threshold": 0.01}),
        account=AccountConfig(initial_cash=60_000.0, allow_short=True),
        sync_ns=HOUR,
    )
    res = run_backtest(cfg, tmp_path / "a")
    eq = pq.read_table(res.out / "equity.parquet")
    assert eq.num_rows == 28 * 24  # one row per hour of February 2026
    m = res.metrics
    assert m["portfolio"]["trades"] > 50
    assert m["portfolio"]["fees"] == pytest.approx(sum(s["fees"] for s in m["symbols"].values()))
    fills = pq.read_table(res.out / "fills.parquet").to_pydict()
    # every fill price is a real 1m open of that symbol, and no fill precedes the start
    assert min(t.value for t in fills["ts"]) > start
    # the same run sharded one symbol per actor, stepping one boundary per round
    again = run_backtest(
        cfg.__class__(**{**_fields(cfg), "symbols_per_actor": 1, "fuse": False}), tmp_path / "b"
    )
    assert results_digest(again.out) == results_digest(res.out)


def _fields(cfg: RunConfig) -> dict[str, object]:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def test_cli_backtest_on_four_months_of_real_klines(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shared_data / "crypto" / "klines_1m" / "binance_usdm_futures"
    files = [str(folder / f"FILUSDT-1m-2023-{m:02d}.csv.gz") for m in (8, 9, 10, 11)]
    data = tmp_path / "data"
    assert main(["import-klines", *files, "--symbol", "FILUSDT", "--out", str(data)]) == 0
    out = tmp_path / "res"
    rc = main(
        [
            "backtest",
            "--data",
            str(data),
            "--symbols",
            "FILUSDT",
            "--strategy",
            "sma_cross",
            "--param",
            "fast=30",
            "--param",
            "slow=240",
            "--sync",
            "1h",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "FILUSDT" in printed and "PORTFOLIO" in printed
    run = json.loads((out / "run.json").read_text())
    assert run["start"] == "2023-08-01T00:00:00Z" and run["end"] == "2023-12-01T00:00:00Z"
    eq = pq.read_table(out / "equity.parquet")
    assert eq.num_rows == 175_680 // 60  # 2,928 hours, Aug-Nov 2023 without a gap
