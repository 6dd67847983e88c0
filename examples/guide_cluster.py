"""A Ray cluster of two nodes on this machine, and a replay on it (docs/cluster.md).

``ray.cluster_utils.Cluster`` starts a head node and a second node as separate Ray
nodes on this machine, the way ``ray start --head`` and ``ray start --address`` would
on two machines. The replay joins it with ``address=`` and runs four symbol actors,
one symbol each, placed round robin on the two nodes. Two strategies ship to the
workers the two ways user code can: ``rsi_revert`` from ``examples/my_strategies.py``
(named in ``strategy.modules``, uploaded as the job's ``py_modules``) and a class
defined in this script (``__main__``, sent by value). Each result is compared with
the same spec run in this process.

Run: ``python examples/guide_cluster.py`` (about 30 to 60 s: two nodes start, then
two replays). ``TICKRAY_EXAMPLE_FAST=1`` replays one day instead of two; results go
to ``$TICKRAY_EXAMPLE_OUT`` or a new temporary folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ray.cluster_utils import Cluster

import tickray
from tickray import SignalStrategy
from tickray.engine.signals import Bar, Context, Signal, buy, flat

FAST = os.environ.get("TICKRAY_EXAMPLE_FAST") == "1"
OUT = Path(os.environ.get("TICKRAY_EXAMPLE_OUT") or tempfile.mkdtemp(prefix="tickray-cluster-"))
MODULE = Path(__file__).with_name("my_strategies.py")

SPEC: dict[str, Any] = {
    "data": {
        "source": "demo",
        "start": "2024-01-01",
        "end": "2024-01-02" if FAST else "2024-01-03",
    },
    "universe": {"symbols": ["SYN00USDT", "SYN01USDT", "SYN02USDT", "SYN03USDT"]},
    "strategy": {"name": "rsi_revert", "modules": [str(MODULE)], "params": {"window": 14}},
    "run": {"symbols_per_actor": 1},
}


class EveryHour(SignalStrategy):
    """Long on the hours when the close is above the last hour's close, flat on the
    others (a class of this script: it reaches the workers by value)."""

    name = "every_hour"
    params = {"minutes": (int, 60, 2)}
    minutes: int

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last = 0.0

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        if ctx.bars % self.minutes:
            return None
        rising = 0.0 < self.last < bar.close
        self.last = bar.close
        if rising:
            return buy()
        return flat() if ctx.position else None


def replay_both_ways(name: str, **kw: Any) -> None:
    """The spec on the cluster and in this process; both give the same bytes."""
    remote = tickray.run(SPEC, backend="ray", address=address, out=OUT / f"{name}-ray", **kw)
    local = tickray.run(SPEC, backend="local", out=OUT / f"{name}-local", **kw)
    print(f"{name}: {remote}")
    print(f"  actors (one symbol each): {remote.run_info['actors']}")
    print(f"  byte-identical to the in-process run: {remote == local}")
    assert remote == local, name


cluster = Cluster(
    initialize_head=True,
    head_node_args={
        "num_cpus": 1,
        "include_dashboard": False,
        "object_store_memory": 100 * 2**20,  # 100 MiB per node keeps this small
    },
)
cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
cluster.wait_for_nodes()
address = cluster.address
print(f"cluster at {address}: {len(cluster.list_all_nodes())} nodes")
try:
    replay_both_ways("rsi_revert", progress=False)
    replay_both_ways("every_hour", strategy=EveryHour, progress=False)
finally:
    cluster.shutdown()
print(f"results in {OUT}")
