"""Sweeps: grid and random search, in parallel on Ray, with failed variants reported."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tickray.cluster.cli import main
from tickray.cluster.spec import check_document
from tickray.cluster.sweep import choose_points, run_sweep
from tickray.engine.spec import SpecError
from tickray.engine.strategies import unregister_strategy, user_strategies

FRAGILE = '''
from tickray import SignalStrategy, Signal, register_strategy
from tickray.engine.signals import Direction


@register_strategy
class Fragile(SignalStrategy):
    """Buys every `every` bars; raises at its 100th bar when `boom` is 1."""

    name = "t_fragile"
    params = {"every": (int, 30, 2), "boom": (int, 0, 0)}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.n = 0

    def on_bar(self, bar, ctx):
        self.n += 1
        if self.boom and self.n == 100:
            raise ValueError("boom")
        if self.n % self.every == 0:
            return Signal(Direction.BUY)
        if self.n % self.every == self.every // 2:
            return Signal(Direction.FLAT)
        return None
'''


def grid_doc(root: Path, **params: Any) -> dict[str, Any]:
    return {
        "data": {"source": "files", "path": str(root)},
        "strategy": {"name": "momentum", "params": params},
        "run": {"sync": "1h"},
    }


def test_a_ray_sweep_equals_the_same_sweep_in_process(
    ray_session: Any, small_universe: Path, tmp_path: Path
) -> None:
    spec = check_document(grid_doc(small_universe, window=[10, 20, 40], threshold=[0.0, 0.002]))
    local = run_sweep(spec, tmp_path / "local", backend="local", progress=False)
    remote = run_sweep(spec, tmp_path / "ray", backend="ray", workers=2, progress=False)
    assert remote.workers == 2 and not remote.failed and len(remote.rows) == 6
    assert [r["params"] for r in remote.rows] == [r["params"] for r in local.rows]
    for k in range(6):
        a = (tmp_path / "local" / f"{k:04d}" / "fills.parquet").read_bytes()
        b = (tmp_path / "ray" / f"{k:04d}" / "fills.parquet").read_bytes()
        assert a == b, k
    assert [r["metrics"] for r in remote.rows] == [r["metrics"] for r in local.rows]
    # a shared pool of long-lived actors instead of a task per variant: same results
    pooled = run_sweep(spec, tmp_path / "pool", backend="ray", workers=2, pool=True, progress=False)
    assert pooled.workers == 2 and not pooled.failed
    assert [r["metrics"] for r in pooled.rows] == [r["metrics"] for r in local.rows]
    for k in range(6):
        for name in ("fills.parquet", "equity.parquet", "orders.parquet"):
            a = (tmp_path / "local" / f"{k:04d}" / name).read_bytes()
            assert (tmp_path / "pool" / f"{k:04d}" / name).read_bytes() == a, (k, name)
    board = pq.read_table(tmp_path / "ray" / "leaderboard.parquet").to_pylist()
    sharpes = [r["sharpe"] for r in board]
    assert [r["rank"] for r in board] == list(range(1, 7))
    assert sharpes == sorted(sharpes, reverse=True)
    assert {r["param_window"] for r in board} == {10, 20, 40}


def test_random_search_is_seeded_and_failures_are_reported(
    ray_session: Any, small_universe: Path, tmp_path: Path
) -> None:
    module = tmp_path / "code" / "fragile_t.py"
    module.parent.mkdir()
    module.write_text(textwrap.dedent(FRAGILE))
    doc = grid_doc(small_universe, every=[20, 30, 40, 50], boom=[0, 1])
    doc["strategy"]["name"] = "t_fragile"
    doc["strategy"]["modules"] = [str(module)]
    try:
        spec = check_document(doc)
        picks = choose_points(spec, "random", samples=5, seed=7)
        assert picks == choose_points(spec, "random", samples=5, seed=7)
        assert len(picks) == 5 and [k for k, _ in picks] == sorted(k for k, _ in picks)
        assert choose_points(spec, "random", samples=50, seed=1) == list(
            enumerate(p for _, p in choose_points(spec))
        )
        res = run_sweep(
            spec, tmp_path / "s", backend="ray", search="random", samples=5, seed=7, progress=False
        )
        booms = [r["run"] for r in res.rows if r["params"]["boom"] == 1]
        assert booms and res.failed == booms
        for r in res.rows:
            if r["params"]["boom"]:
                assert r["status"] == "failed" and "boom" in r["error"]
            else:
                assert r["status"] == "done" and r["metrics"]["trades"] > 0
        ranked = json.loads((tmp_path / "s" / "sweep.json").read_text())["rows"]
        assert [r["status"] for r in ranked][-len(booms) :] == ["failed"] * len(booms)
        with pytest.raises(SpecError, match="samples: a random search needs samples >= 1"):
            choose_points(spec, "random")
    finally:
        if "t_fragile" in user_strategies():
            unregister_strategy("t_fragile")


def test_the_sweep_command_on_ray(
    ray_session: Any, small_universe: Path, tmp_path: Path, capsys: Any
) -> None:
    spec = tmp_path / "grid.json"
    spec.write_text(json.dumps(grid_doc(small_universe, window=[10, 30])))
    rc = main(
        [
            "sweep",
            str(spec),
            "--backend",
            "ray",
            "--workers",
            "2",
            "--pool",
            "--metric",
            "total_return",
            "--quiet",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "sweep of 2 runs of momentum (grid search, backend ray)" in text
    assert "2 runs in" in text and "on 2 workers, 0 failed" in text
    assert (tmp_path / "out" / "0001" / "metrics.json").is_file()
