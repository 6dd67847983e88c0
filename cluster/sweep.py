"""Parameter sweeps: many independent replays of one spec, in parallel on Ray.

A spec whose ``strategy.params`` give lists or ``{start, stop, step}`` ranges expands
into a grid (:func:`tickray.engine.spec.expand_grid`, a fixed order). :func:`run_sweep`
runs every point (``search="grid"``) or a seeded random sample of them
(``search="random"``, ``samples`` points drawn without replacement), each as its own
in-process replay (the whole topology of one run inside one worker), so variants share
nothing and a pool of workers runs as many at once as there are CPUs:

- ``backend="ray"``: one Ray task per variant (1 CPU each) on the local Ray or the
  cluster at ``address``; user strategy modules reach the workers through the runtime
  environment, as for a single run. Every worker reads the data folder itself, so on
  several machines the folder must be at the same path on each.
- ``backend="ray", pool=True``: a shared pool instead of a task per variant: one
  long-lived Ray actor per worker slot (1 CPU each), pinned to the nodes in turn
  (node affinity, alive nodes in node-id order), and each free actor takes the next
  variant. An actor runs its variants one after another in the same process, so its
  imports, compiled kernels and the node's file cache serve them all, and the spread
  over nodes is explicit. A pool actor that dies is restarted by Ray (its variant is
  reported failed, the others go on).
- ``backend="local"``: one variant after another in this process.

A variant's results are byte-identical whichever worker runs it. Each one writes
``<out>/<k>/`` (``k`` its 0-based index in the grid's order). A variant that fails is
reported with its error, never lost; the others go on. The sweep writes
``<out>/sweep.json`` and ``<out>/leaderboard.parquet``: one row per variant with its
parameters, status, headline metrics and error, ranked by ``metric`` (descending;
``max_drawdown`` ascending), failures last.
"""

from __future__ import annotations

import json
import random
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tickray.actors.progress import progress_for
from tickray.actors.usercode import (
    ensure_loaded,
    main_classes,
    runtime_env,
    shipped_modules,
    uploaded_env,
)
from tickray.cluster.runner import run_backtest
from tickray.cluster.spec import build_run
from tickray.engine.config import RunConfig
from tickray.engine.spec import RunSpec, SpecError, expand_grid

__all__ = ["METRICS", "SweepResult", "choose_points", "run_sweep"]

METRICS = ("total_return", "sharpe", "max_drawdown", "trades", "fees")
"""The portfolio metrics each leaderboard row holds."""


@dataclass
class SweepResult:
    """Where a sweep's results are, its rows (in grid order) and its wall time."""

    out: Path
    rows: list[dict[str, Any]]
    wall_seconds: float
    workers: int
    failed: list[int] = field(default_factory=list)
    interrupted: bool = False
    """Stopped by Ctrl-C: the rows hold the variants that ended before it."""

    def leaderboard(self, metric: str = "sharpe") -> list[dict[str, Any]]:
        """The rows ranked by ``metric`` (see the module doc), failures last."""
        return _ranked(self.rows, metric)


def choose_points(
    spec: RunSpec, search: str = "grid", samples: int | None = None, seed: int = 0
) -> list[tuple[int, dict[str, Any]]]:
    """``(index in the grid, params)`` of the variants to run: every grid point, or
    ``samples`` of them drawn at random (seeded, without replacement, in grid order)."""
    points = expand_grid(spec)
    if search == "grid":
        return list(enumerate(points))
    if search != "random":
        raise SpecError(f"search: must be 'grid' or 'random', got {search!r}")
    if samples is None or samples < 1:
        raise SpecError(f"samples: a random search needs samples >= 1, got {samples!r}")
    chosen = sorted(random.Random(seed).sample(range(len(points)), min(samples, len(points))))
    return [(k, points[k]) for k in chosen]


def _variant(
    config: RunConfig, out: str, classes: Mapping[str, type] | None = None
) -> dict[str, Any]:
    """One variant in this process (a Ray task's body): its metrics, or its error."""
    began = time.perf_counter()
    try:
        ensure_loaded(config.strategy.modules, classes)
        res = run_backtest(config, Path(out), progress=False)
    except Exception as exc:
        return {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)),
            "seconds": time.perf_counter() - began,
        }
    m = res.metrics["portfolio"]
    return {
        "status": "done" if not res.interrupted else "interrupted",
        "metrics": {k: m.get(k) for k in METRICS},
        "seconds": time.perf_counter() - began,
    }


def run_sweep(
    spec: RunSpec,
    out: str | Path,
    *,
    backend: str = "ray",
    address: str | None = None,
    workers: int | None = None,
    search: str = "grid",
    samples: int | None = None,
    seed: int = 0,
    metric: str = "sharpe",
    progress: bool | None = None,
    echo: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    pool: bool = False,
) -> SweepResult:
    """Run the sweep of ``spec`` into ``out`` (see the module doc).

    ``echo`` prints one line per variant as it ends (above the progress bar, if any).
    ``workers``: variants at once on Ray (default: the cluster's CPUs). Every variant's
    configuration is built and checked before any runs. ``on_result`` gets each row as
    its variant ends (in completion order). ``pool``: on Ray, run the variants on a
    shared pool of long-lived actors instead of a task each (same results).
    """
    if metric not in METRICS:
        raise SpecError(f"metric: must be one of {', '.join(METRICS)}, got {metric!r}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"sweep: {out} already exists")
    chosen = choose_points(spec, search, samples, seed)
    configs = [replace(build_run(spec, params), backend="local") for _, params in chosen]
    out.mkdir(parents=True)
    bar = progress_for("sweep", progress)
    bar.start_count(len(chosen), "runs")
    began = time.perf_counter()
    rows: dict[int, dict[str, Any]] = {}

    def done(k: int, params: Mapping[str, Any], result: dict[str, Any]) -> None:
        row = {"run": k, "params": dict(params)} | result
        rows[k] = row
        bar.count(len(rows))
        if echo:
            bar.write(_line(row, metric))
        if on_result is not None:
            on_result(row)

    n_workers = 1
    stopped = False
    try:
        if backend == "local":
            for (k, params), config in zip(chosen, configs, strict=True):
                done(k, params, _variant(config, str(out / f"{k:04d}")))
                if rows[k]["status"] == "interrupted":  # Ctrl-C inside the run
                    stopped = True
                    break
        elif backend == "ray":
            try:
                n_workers = _on_ray(chosen, configs, out, address, workers, done, pool)
            except KeyboardInterrupt:
                stopped = True
        else:
            raise SpecError(f"run.backend: must be 'local' or 'ray', got {backend!r}")
    finally:
        bar.close("interrupted" if stopped else "")
        ordered = [rows[k] for k, _ in chosen if k in rows]
        _write(out, ordered, metric)
    wall = time.perf_counter() - began
    failed = [r["run"] for r in ordered if r["status"] == "failed"]
    return SweepResult(out, ordered, wall, n_workers, failed, stopped)


def _on_ray(
    chosen: Sequence[tuple[int, dict[str, Any]]],
    configs: Sequence[RunConfig],
    out: Path,
    address: str | None,
    workers: int | None,
    done: Callable[[int, Mapping[str, Any], dict[str, Any]], None],
    pool: bool = False,
) -> int:
    import ray

    mods = shipped_modules(configs[0]) if configs else ()
    env = runtime_env(mods)
    started = False
    opts: dict[str, Any] = {}
    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env=env,
        )
        started = True
    elif env:
        opts["runtime_env"] = uploaded_env(env)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        limit = max(1, min(workers or cpus, cpus, len(configs) or 1))
        classes = main_classes(configs[0]) if configs else {}
        run = _Runner(ray, limit, opts) if pool else None
        task = ray.remote(num_cpus=1)(_variant).options(**opts)
        pending: dict[Any, int] = {}
        queue = list(range(len(configs)))
        while queue or pending:
            while queue and len(pending) < limit:
                i = queue.pop(0)
                k = chosen[i][0]
                cfg = replace(configs[i], strategy=replace(configs[i].strategy, modules=mods))
                args = (cfg, str(out / f"{k:04d}"), classes or None)
                ref = run.submit(*args) if run is not None else task.remote(*args)
                pending[ref] = i
            try:
                ready, _ = ray.wait(list(pending), num_returns=1)
            except KeyboardInterrupt:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
            for ref in ready:
                i = pending.pop(ref)
                if run is not None:
                    run.release(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the worker died: the variant is reported
                    result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                done(chosen[i][0], chosen[i][1], result)
        return limit
    finally:
        if started:
            ray.shutdown()


class _PoolWorker:
    """A shared-pool actor of a sweep: runs the variants it is given, one at a time."""

    def run(
        self, config: RunConfig, out: str, classes: Mapping[str, type] | None = None
    ) -> dict[str, Any]:
        return _variant(config, out, classes)


class _Runner:
    """The shared pool: ``size`` actors pinned to the alive nodes with CPUs in turn (in
    node-id order); :meth:`submit` gives a variant to a free actor."""

    def __init__(self, ray: Any, size: int, opts: Mapping[str, Any]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = sorted(
            n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")
        )
        cls: Any = ray.remote(num_cpus=1, max_restarts=1, max_task_retries=0)(_PoolWorker)
        self.actors = [
            cls.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    node_id=nodes[i % len(nodes)], soft=True
                ),
                **opts,
            ).remote()
            for i in range(size)
        ]
        self.nodes = [nodes[i % len(nodes)] for i in range(size)]
        self.free = list(range(size))
        self.busy: dict[Any, int] = {}
        self.runs = [0] * size

    def submit(self, *args: Any) -> Any:
        a = self.free.pop(0)
        ref = self.actors[a].run.remote(*args)
        self.busy[ref] = a
        self.runs[a] += 1
        return ref

    def release(self, ref: Any) -> None:
        self.free.append(self.busy.pop(ref))


def _ranked(rows: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    sign = 1.0 if metric == "max_drawdown" else -1.0

    def key(r: dict[str, Any]) -> tuple[int, float, int]:
        v = (r.get("metrics") or {}).get(metric)
        if r["status"] == "done" and isinstance(v, int | float) and v == v:
            return (0, sign * float(v), int(r["run"]))
        return (1, 0.0, int(r["run"]))

    return sorted(rows, key=key)


def _line(row: dict[str, Any], metric: str) -> str:
    shown = " ".join(f"{n}={v}" for n, v in sorted(row["params"].items()))
    if row["status"] != "done":
        return f"{row['run']:4d}  {shown:<40} {row['status'].upper()}: {row.get('error', '')}"
    m = row["metrics"]
    return (
        f"{row['run']:4d}  {shown:<40} return {m['total_return'] * 100:8.2f}%  "
        f"sharpe {_num(m['sharpe'])}  trades {m['trades']:6d}"
    )


def _num(v: Any) -> str:
    return f"{v:7.2f}" if isinstance(v, int | float) else f"{'n/a':>7}"


def _write(out: Path, rows: Sequence[dict[str, Any]], metric: str) -> None:
    ranked = _ranked(rows, metric)
    (out / "sweep.json").write_text(
        json.dumps({"metric": metric, "rows": ranked}, indent=1, sort_keys=True, default=str)
        + "\n",
        encoding="utf-8",
    )
    names = sorted({p for r in rows for p in r["params"]})
    cols: dict[str, list[Any]] = {"rank": [], "run": [], "status": []}
    cols |= {f"param_{p}": [] for p in names}
    cols |= {m: [] for m in METRICS}
    cols |= {"seconds": [], "error": []}
    for rank, r in enumerate(ranked, start=1):
        cols["rank"].append(rank)
        cols["run"].append(r["run"])
        cols["status"].append(r["status"])
        for p in names:
            cols[f"param_{p}"].append(r["params"].get(p))
        for m in METRICS:
            cols[m].append((r.get("metrics") or {}).get(m))
        cols["seconds"].append(r.get("seconds"))
        cols["error"].append(r.get("error", ""))
    pq.write_table(pa.table(cols), out / "leaderboard.parquet")


def format_leaderboard(result: SweepResult, metric: str = "sharpe", top: int = 10) -> str:
    """The best ``top`` variants as a table, and the failed ones."""
    lines = [f"{'rank':>4}  {'run':>4}  {'params':<40} {metric:>12}  return     trades"]
    for rank, r in enumerate(result.leaderboard(metric)[:top], start=1):
        if r["status"] != "done":
            break
        m = r["metrics"]
        shown = " ".join(f"{n}={v}" for n, v in sorted(r["params"].items()))
        lines.append(
            f"{rank:4d}  {r['run']:4d}  {shown:<40} {_num(m[metric]):>12}  "
            f"{m['total_return'] * 100:7.2f}%  {m['trades']:6d}"
        )
    for r in result.rows:
        if r["status"] != "done":
            lines.append(f"failed: run {r['run']} {r['params']}: {r.get('error', '')}")
    return "\n".join(lines)
