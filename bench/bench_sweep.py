"""Sweep scaling: 64 variants x 10 symbols x 30 days of 1m bars on Ray.

The grid is sma_cross's ``fast`` x ``slow`` (8 x 8), symbol approval, sync 1h; each
variant is one whole in-process replay inside a Ray task (tickray.cluster.sweep). The
same sweep runs on a local Ray with 1 CPU (the baseline), with 2 CPUs, and on a
3-node ``ray.cluster_utils.Cluster`` of 1 CPU per node on this machine. Reported:
variants/s and bar events/s, and each as a ratio to 1 CPU. The Ray start-up is not
timed; the workers' first imports are.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tickray.cluster.spec import check_document
from tickray.cluster.sweep import run_sweep

SYMBOLS = [f"S{i:02d}USDT" for i in range(10)]
DAYS = 30
FAST = [5, 8, 10, 12, 15, 20, 25, 30]
SLOW = [40, 50, 60, 80, 100, 120, 160, 200]
TARGET = 1.7


def _spec(root: Path) -> Any:
    return check_document(
        {
            "data": {"source": "files", "path": str(root)},
            "strategy": {"name": "sma_cross", "params": {"fast": FAST, "slow": SLOW}},
            "run": {"sync": "1h", "approval": "symbol"},
        }
    )


def _timed(spec: Any, address: str | None = None) -> tuple[float, int, int]:
    out = Path(tempfile.mkdtemp(prefix="tickray-bench-sweep-")) / "sweep"
    try:
        began = time.perf_counter()
        res = run_sweep(spec, out, backend="ray", address=address, progress=False)
        seconds = time.perf_counter() - began
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    if res.failed:
        raise AssertionError(f"sweep variants failed: {res.failed}")
    return seconds, len(res.rows), res.workers


def bench_sweep(root: Path, quick: bool = False) -> None:
    import ray

    spec = _spec(root)
    n = spec.runs
    events = n * len(SYMBOLS) * DAYS * 1440
    rows = []
    for label, cpus in (("1 cpu", 1), ("2 cpus", 2)):
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            rows.append((label, *_timed(spec)))
        finally:
            ray.shutdown()
    if not quick:
        from ray.cluster_utils import Cluster

        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "include_dashboard": False},
        )
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        try:
            ray.init(address=cluster.address, log_to_driver=False)
            try:
                rows.append(("3 nodes x 1 cpu", *_timed(spec)))
            finally:
                ray.shutdown()
        finally:
            cluster.shutdown()
    base = rows[0][1]
    for label, seconds, variants, workers in rows:
        print(
            f"sweep_{variants}x{len(SYMBOLS)}sym_{DAYS}d ({label}, {workers} workers): "
            f"{variants} variants in {seconds:.1f} s = {variants / seconds:.2f} variants/s, "
            f"{events / seconds:,.0f} events/s = {base / seconds:.2f}x 1 cpu",
            flush=True,
        )
    two = base / rows[1][1]
    print(
        f"  (2 cpus vs 1: {two:.2f}x, target {TARGET}x {'met' if two >= TARGET else 'NOT met'}; "
        f"machine has {os.cpu_count()} cores)",
        flush=True,
    )


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run_all import dataset

    bench_sweep(dataset(f"{len(SYMBOLS)}x{DAYS}d-sweep", SYMBOLS, DAYS * 1440, seed=5))
