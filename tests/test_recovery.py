"""Fault tolerance: actor checkpoints at step boundaries, and a replay whose actor process
is killed mid-run restores and ends byte-identical to an undisturbed run."""

from __future__ import annotations

import json
import os
import pickle
import signal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import SMALL_END, SMALL_START, SMALL_SYMBOLS, results_digest

from tickray.actors.backends import LocalBackend
from tickray.actors.clock import Clock
from tickray.actors.portfolio import PortfolioActor
from tickray.actors.progress import NullProgress
from tickray.actors.supervise import ActorLost
from tickray.actors.symbol import SymbolActor
from tickray.cluster.runner import recorder_for, run_backtest
from tickray.engine.clock import HOUR, MINUTE
from tickray.engine.config import (
    AccountConfig,
    ExecutionConfig,
    PerpConfig,
    RunConfig,
    StrategyConfig,
)
from tickray.engine.events import Outbox

MID = SMALL_START + (SMALL_END - SMALL_START) // 2


def _config(root: Path, **kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        data_root=str(root),
        interval_ns=MINUTE,
        symbols=SMALL_SYMBOLS,
        start_ns=SMALL_START,
        end_ns=SMALL_END,
        strategy=StrategyConfig("sma_cross", {"fast": 5, "slow": 20}),
        account=AccountConfig(initial_cash=50_000.0, allow_short=True),
        chunk_rows=700,  # several chunks per symbol: a checkpoint falls inside one
    )
    base.update(kw)
    return RunConfig(**base)


def _drive(actor: SymbolActor, start: int, end: int, step: int) -> list[bytes]:
    """Advance every symbol of ``actor`` boundary by boundary; each outbox pickled."""
    out = []
    for until in range(start + step, end + 1, step):
        boxes: list[Outbox] = actor.step(until, [], list(SMALL_SYMBOLS))
        out.extend(pickle.dumps(b) for b in boxes)
    return out


STRATEGIES = [
    ("sma_cross", {"fast": 5, "slow": 20}),
    ("enhanced_momentum_close", {}),
    ("regime", {}),
    ("breakout", {}),
    ("enhanced_momentum", {"threshold": 0.002}),  # an event strategy (orders of every type)
    ("breakout_trail", {"window": 10, "trend": 20}),  # stops and targets at the venue
]


@pytest.mark.parametrize(("name", "params"), STRATEGIES)
def test_a_symbol_actor_restored_from_a_checkpoint_continues_identically(
    small_universe: Path, name: str, params: dict[str, Any]
) -> None:
    """Checkpoint mid-run, restore into a new actor (as a restarted process would),
    continue: every later outbox equals the undisturbed actor's."""
    cfg = _config(
        small_universe,
        strategy=StrategyConfig(name, params),
        approval="symbol",
        sync_ns=HOUR,
        execution=ExecutionConfig(spread_bps=2.0, participation=0.05),
    )
    whole = SymbolActor(cfg, SMALL_SYMBOLS, SMALL_START)
    want = _drive(whole, SMALL_START, SMALL_END, HOUR)

    first = SymbolActor(cfg, SMALL_SYMBOLS, SMALL_START)
    head = _drive(first, SMALL_START, MID, HOUR)
    state = first.checkpoint()
    assert state is not None
    _drive(first, MID, MID + 5 * HOUR, HOUR)  # the dead process got further: lost work

    second = SymbolActor(cfg, SMALL_SYMBOLS, SMALL_START)
    assert second.restore(state)
    tail = _drive(second, MID, SMALL_END, HOUR)
    assert head + tail == want
    fills = sum(pickle.loads(b).fills.size for b in want)
    assert fills > 0  # the strategy really trades on both sides of the checkpoint


class _SwappingBackend(LocalBackend):
    """In-process, but every ``every``-th call an actor is replaced by a new one restored
    from its checkpoint (the portfolio too, at every ``every``-th settlement): what a
    restart does, at many boundaries of one run."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.swaps = 0
        self._calls = 0
        self._settles = 0

    def start(self, config: RunConfig, shards: Any, t0: int) -> None:
        super().start(config, shards, t0)
        self._args = (config, shards, t0)

    def collect(self, pending: Any) -> list[Outbox]:
        config, shards, t0 = self._args
        for a, _until, _boxes, _syms in pending:
            self._calls += 1
            if self._calls % self.every == 0:
                fresh = SymbolActor(config, shards[a], t0)
                fresh.restore(self.actors[a].checkpoint())
                self.actors[a] = fresh
                self.swaps += 1
        return super().collect(pending)

    def settle(self, t: int, outboxes: list[Outbox], mark_ts: Any, marks: Any) -> Any:
        self._settles += 1
        if self._settles % self.every == 0:
            fresh = PortfolioActor(self._args[0])
            fresh.restore(self.portfolio.checkpoint())
            self.portfolio = fresh
            self.swaps += 1
        return super().settle(t, outboxes, mark_ts, marks)


@pytest.mark.parametrize(
    "perp",
    [
        None,
        {"leverage": 3.0, "funding": "none", "marks": "last"},
        {"leverage": 5.0, "funding": "none", "marks": "last", "margin_mode": "isolated"},
        {"leverage": 2.0, "funding": "none", "marks": "last", "position_mode": "hedge"},
    ],
    ids=["spot", "perp-cross", "perp-isolated", "perp-hedge"],
)
def test_restoring_actors_at_many_boundaries_changes_no_result(
    small_universe: Path, tmp_path: Path, perp: dict[str, Any] | None
) -> None:
    """Portfolio approval: intents, decisions and settlements cross every swap."""
    strategy = (
        StrategyConfig("hedged_trend", {"slow": 30, "window": 10, "threshold": 0.002})
        if perp and perp.get("position_mode") == "hedge"
        else StrategyConfig("sma_cross", {"fast": 5, "slow": 20})
    )
    cfg = _config(
        small_universe,
        strategy=strategy,
        perp=PerpConfig(**perp) if perp else None,
        symbols_per_actor=2,
    )
    plain = run_backtest(cfg, tmp_path / "plain")
    swapping = _SwappingBackend(every=7)
    recorder = recorder_for(cfg, tmp_path / "swapped")
    Clock(cfg, swapping, recorder).run()
    recorder.close_files()
    assert swapping.swaps > 20
    assert plain.metrics["portfolio"]["trades"] > 10
    for name in ("fills", "orders", "equity", "positions", "marks"):
        want = pq.read_table(plain.out / f"{name}.parquet")
        got = pq.read_table(recorder.partial / f"{name}.parquet")
        assert got.equals(want), name


def test_a_portfolio_restored_from_a_checkpoint_has_the_same_books(small_universe: Path) -> None:
    cfg = _config(small_universe)
    a = PortfolioActor(cfg)
    a.portfolio.cash -= 123.0  # any state
    b = PortfolioActor(cfg)
    b.restore(a.checkpoint())
    assert b.summary() == a.summary()
    assert b.portfolio is not a.portfolio


class _KillOnce(NullProgress):
    """Sends SIGKILL to one actor's process the first time the clock settles past ``at``
    (from the driver, between two rounds, while other calls may be in flight)."""

    def __init__(self, at: int, target: str = "symbol", actor: int = 0) -> None:
        super().__init__()
        self.kill_at = at
        self.target = target
        self.actor = actor
        self.sim_clock: Clock | None = None
        self.killed: int | None = None

    def at(self, t: int, *, force: bool = False) -> None:
        if self.killed is None and t >= self.kill_at and self.sim_clock is not None:
            backend: Any = self.sim_clock.backend
            if self.target == "symbol":
                pid = backend.pids()[self.actor]
            else:
                ray = backend._ray
                pid = ray.get(backend.portfolio_watch.handle.pid.remote())
            os.kill(pid, signal.SIGKILL)
            self.killed = pid


_BASELINES: dict[tuple[str, int], dict[str, str]] = {}


def _local_digest(
    root: Path, tmp: Path, approval: str = "portfolio", sync: int = 0
) -> dict[str, str]:
    """The in-process run's results digest (computed once per configuration)."""
    key = (approval, sync)
    if key not in _BASELINES:
        res = run_backtest(_config(root, approval=approval, sync_ns=sync), tmp / "local")
        assert res.metrics["portfolio"]["trades"] > 10
        _BASELINES[key] = results_digest(res.out)
    return _BASELINES[key]


def _run_killing(cfg: RunConfig, out: Path, kill: _KillOnce) -> Any:
    def hook(clock: Clock) -> None:
        kill.sim_clock = clock

    return run_backtest(cfg, out, progress=kill, on_clock=hook)


@pytest.mark.ray
@pytest.mark.parametrize("approval", ["portfolio", "symbol"])
def test_a_killed_symbol_actor_is_restored_and_the_results_are_byte_identical(
    ray_session: Any, small_universe: Path, tmp_path: Path, approval: str
) -> None:
    want = _local_digest(small_universe, tmp_path, approval, HOUR if approval == "symbol" else 0)
    ray_cfg = _config(
        small_universe,
        approval=approval,
        sync_ns=HOUR if approval == "symbol" else 0,
        backend="ray",
        symbols_per_actor=1,
        checkpoint_every_ns=1,  # a checkpoint after every call
    )
    kill = _KillOnce(MID, actor=1)
    res = _run_killing(ray_cfg, tmp_path / "ray", kill)
    assert kill.killed is not None
    assert results_digest(res.out) == want
    info = json.loads((res.out / "run.json").read_text())
    assert info["checkpoints"] >= 3
    (rec,) = info["recoveries"]
    assert rec["actor"] == "symbol actor 1 (BBBUSDT)"
    assert rec["restored_from"] == "checkpoint"
    assert rec["checkpoints_before"] >= 1
    assert rec["restart"] == 1
    assert not rec["new_actor"]
    assert "Error" in rec["error"]


@pytest.mark.ray
def test_without_checkpoints_a_killed_actor_replays_from_the_start(
    ray_session: Any, small_universe: Path, tmp_path: Path
) -> None:
    """A checkpoint every hour of wall time: none is taken in this run, so the
    restarted actor starts from its constructor's state and gets every call again."""
    want = _local_digest(small_universe, tmp_path)
    cfg = _config(small_universe, backend="ray", checkpoint_every_ns=3600 * 10**9)
    kill = _KillOnce(MID, actor=0)
    res = _run_killing(cfg, tmp_path / "ray", kill)
    assert results_digest(res.out) == want
    (rec,) = json.loads((res.out / "run.json").read_text())["recoveries"]
    assert rec["restored_from"] == "start"
    assert rec["checkpoints_before"] == 0
    assert rec["calls_replayed"] > 10


@pytest.mark.ray
def test_a_killed_remote_portfolio_is_restored(
    ray_session: Any, small_universe: Path, tmp_path: Path
) -> None:
    want = _local_digest(small_universe, tmp_path)
    cfg = _config(small_universe, backend="ray", remote_portfolio=True, checkpoint_every_ns=1)
    kill = _KillOnce(MID, target="portfolio")
    res = _run_killing(cfg, tmp_path / "ray", kill)
    assert kill.killed is not None
    assert results_digest(res.out) == want
    (rec,) = json.loads((res.out / "run.json").read_text())["recoveries"]
    assert rec["actor"] == "portfolio actor"
    assert rec["restored_from"] == "checkpoint"


@pytest.mark.ray
def test_with_recovery_off_a_killed_actor_fails_the_run_and_keeps_what_settled(
    ray_session: Any, small_universe: Path, tmp_path: Path
) -> None:
    cfg = _config(small_universe, backend="ray", max_restarts=0)
    kill = _KillOnce(MID, actor=0)
    with pytest.raises(Exception) as err:
        _run_killing(cfg, tmp_path / "ray", kill)
    assert "Actor" in type(err.value).__name__ or "actor" in str(err.value).lower()
    partial = tmp_path / "ray.partial"
    assert (partial / "error.txt").is_file()
    assert (partial / "equity.parquet").is_file() or any(partial.iterdir())


@pytest.mark.ray
def test_an_actor_that_keeps_dying_gives_up_after_max_restarts(
    ray_session: Any, small_universe: Path, tmp_path: Path
) -> None:
    class KillAlways(_KillOnce):
        """Kills actor 0 again as soon as it is back (after each recovery)."""

        kills = 0

        def at(self, t: int, *, force: bool = False) -> None:
            if t < self.kill_at or self.sim_clock is None:
                return
            backend: Any = self.sim_clock.backend
            if len(backend.recoveries) == self.kills:
                os.kill(backend.pids()[0], signal.SIGKILL)
                self.kills += 1

    cfg = _config(small_universe, backend="ray", max_restarts=2, checkpoint_every_ns=1)
    with pytest.raises(ActorLost, match=r"symbol actor 0 .* died 3 times \(run.max_restarts = 2\)"):
        _run_killing(cfg, tmp_path / "ray", KillAlways(MID))


THREE_NODES = """
import json, os, signal, sys, time
from dataclasses import replace
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from tickray.actors.progress import NullProgress
from tickray.cluster.runner import run_backtest
from tickray.engine.config import AccountConfig, RunConfig, StrategyConfig

args = json.loads(sys.argv[1])
out = Path(args["out"])
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 2**20})
workers = [cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20) for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
         configure_logging=False)
config = RunConfig(
    data_root=args["root"], interval_ns=60 * 10**9, symbols=tuple(args["symbols"]),
    start_ns=args["start"], end_ns=args["end"],
    strategy=StrategyConfig("sma_cross", {"fast": 5, "slow": 20}),
    account=AccountConfig(initial_cash=50_000.0, allow_short=True), chunk_rows=700,
    backend="ray", symbols_per_actor=1, checkpoint_every_ns=1)


class Fault(NullProgress):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.done, self.sim = kind, False, None

    def at(self, t, *, force=False):
        if self.done or t < args["mid"] or self.sim is None:
            return
        self.done = True
        backend = self.sim.backend
        # the last actor placed on a worker node (not the head, where the driver is)
        ids = [w.node_id for w in workers]
        i = max(k for k, node in enumerate(backend.placement) if node in ids)
        report[self.kind + "_actor"] = i
        pid = backend.pids()[i]
        if self.kind == "kill":  # SIGKILL the actor's process
            os.kill(pid, signal.SIGKILL)
        else:  # a whole worker node is lost, with the actor placed on it
            victim = workers[ids.index(backend.placement[i])]
            cluster.remove_node(victim, allow_graceful=False)
        # the run goes on once the actor's process is gone (its workers outlive a removed
        # raylet for a moment, and a short run could end before they notice)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.05)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def hook(fault):
    def put(clock):
        fault.sim = clock
    return put


report = {"nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
          "head": cluster.head_node.node_id,
          "workers": [w.node_id for w in workers]}
try:
    calm = run_backtest(config, out / "calm")
    report["calm"] = json.loads((calm.out / "run.json").read_text())
    for kind in ("kill", "node"):
        fault = Fault(kind)
        res = run_backtest(config, out / kind, progress=fault, on_clock=hook(fault))
        report[kind] = json.loads((res.out / "run.json").read_text())
    (out / "report.json").write_text(json.dumps(report))  # Ray logs to stdout too
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.mark.ray
def test_three_node_replay_is_byte_identical_even_when_an_actor_or_a_node_dies(
    small_universe: Path, tmp_path: Path
) -> None:
    """A 3-node Ray cluster on this machine (ray.cluster_utils.Cluster, in a child process
    since this one holds the suite's Ray): one symbol actor per node. An undisturbed
    replay, one whose actor process on a worker node is SIGKILLed, and one whose worker
    node is removed mid-run all equal the in-process run byte for byte."""
    import subprocess
    import sys

    local = run_backtest(_config(small_universe), tmp_path / "local")
    script = tmp_path / "three_nodes.py"
    script.write_text(THREE_NODES)
    args = {
        "out": str(tmp_path),
        "root": str(small_universe),
        "symbols": list(SMALL_SYMBOLS),
        "start": SMALL_START,
        "end": SMALL_END,
        "mid": MID,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    want = results_digest(local.out)
    assert local.metrics["portfolio"]["trades"] > 10
    # one actor per node, each on a different node of the three
    calm = report["calm"]
    assert calm["actors"] == [[s] for s in SMALL_SYMBOLS]
    assert sorted(calm["placement"]) == sorted(report["nodes"])
    assert calm["recoveries"] == []
    for kind in ("calm", "kill", "node"):
        assert results_digest(tmp_path / kind) == want, kind
    (killed,) = report["kill"]["recoveries"]
    i = report["kill_actor"]
    assert killed["actor"] == f"symbol actor {i} ({SMALL_SYMBOLS[i]})"
    assert killed["restored_from"] == "checkpoint" and not killed["new_actor"]
    assert report["kill"]["placement"] == calm["placement"]
    (moved,) = report["node"]["recoveries"]
    i = report["node_actor"]
    assert moved["actor"] == f"symbol actor {i} ({SMALL_SYMBOLS[i]})"
    assert moved["new_actor"]
    assert calm["placement"][i] in report["workers"]
    # the replacement runs on another node, and the others stayed where they were
    assert moved["node"] == report["node"]["placement"][i] != calm["placement"][i]
    assert [p for k, p in enumerate(report["node"]["placement"]) if k != i] == [
        p for k, p in enumerate(calm["placement"]) if k != i
    ]


LOCKED = """
import threading

import numpy as np

from tickray import BarStrategy, register_strategy


@register_strategy
class {name}(BarStrategy):
    name = "{name}"
    params = {{}}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._guard = threading.Lock()  # does not pickle

    @property
    def warmup(self):
        return 1

    def raw_one(self, close):
        return 1

    def raw_batch(self, close):
        return np.ones(len(close), dtype=np.int8)
"""


@pytest.mark.ray
def test_a_strategy_whose_state_does_not_pickle_fails_at_its_first_checkpoint(
    ray_session: Any, small_universe: Path, tmp_path: Path
) -> None:
    import sys

    import tickray
    from tickray.engine.strategies import unregister_strategy

    name = f"locked_{os.getpid()}"
    path = tmp_path / "code" / f"{name}_mod.py"
    path.parent.mkdir()
    path.write_text(LOCKED.format(name=name))
    spec = {
        "data": {"source": "files", "path": str(small_universe)},
        "strategy": {"name": name, "modules": [str(path)]},
        "run": {"sync": "1h", "checkpoint_every": "1ms"},
    }
    try:
        with pytest.raises(ActorLost, match=r"symbol actor 0 .*could not be checkpointed"):
            tickray.run(spec, backend="ray", out=tmp_path / "ray", progress=False)
        # without recovery it runs
        spec["run"]["max_restarts"] = 0
        res = tickray.run(spec, backend="ray", out=tmp_path / "plain", progress=False)
        assert res.complete
    finally:
        unregister_strategy(name)
        sys.modules.pop(path.stem, None)
