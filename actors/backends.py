"""Where the actors run: in this process, or as Ray actors placed explicitly on nodes.

Both backends drive the same plain classes (:class:`SymbolActor`,
:class:`PortfolioActor`). Across processes every message travels as a
msgpack frame (:mod:`tickray.engine.codec`); in-process the typed objects are
handed over directly, which the codec's lossless round trip makes equivalent
(a test checks that both backends write byte-identical results). The Ray
backend makes one call per actor per round, never one per event, and pins each
actor to a node with a ``NodeAffinitySchedulingStrategy`` (round-robin over
alive nodes in node-id order), so placement is explicit and repeatable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tickray.actors.portfolio import PortfolioActor
from tickray.actors.supervise import Supervisor, Watched
from tickray.actors.symbol import SymbolActor
from tickray.actors.usercode import main_classes, runtime_env, shipped_modules, uploaded_env
from tickray.engine.codec import decode_outboxes, encode_inboxes, encode_outboxes
from tickray.engine.config import RunConfig
from tickray.engine.events import Inbox, Outbox
from tickray.engine.portfolio import SettleResult

Call = tuple[int, int, list[Inbox], list[str]]
"""(actor index, until, inboxes, symbols to move)."""

Pending = Any
"""What :meth:`Backend.submit` returns and :meth:`Backend.collect` takes."""


class Backend(Protocol):
    name: str

    def start(self, config: RunConfig, shards: Sequence[Sequence[str]], t0: int) -> None: ...
    def submit(self, calls: Sequence[Call]) -> Pending:
        """Start the calls (all at once where the backend can); results via ``collect``."""
        ...

    def collect(self, pending: Pending) -> list[Outbox]: ...
    def settle(
        self,
        t: int,
        outboxes: list[Outbox],
        mark_ts: npt.NDArray[np.int64],
        marks: npt.NDArray[np.float64],
    ) -> SettleResult: ...
    def finish(self, t: int, inboxes: Sequence[list[Inbox]], reason: str) -> list[Outbox]: ...
    def summary(self) -> dict[str, Any]: ...
    def call(self, method: str, *args: Any) -> list[Any]:
        """``method(*args)`` on every symbol actor, in shard order (live sessions)."""
        ...

    def prepare(self, config: RunConfig) -> None:
        """Join or start what the run needs before its symbols are sharded (Ray)."""
        ...

    def cpus(self) -> int:
        """The CPUs the symbol actors can spread over (what ``symbols_per_actor = 0``
        shards for): this machine's, or the Ray cluster's."""
        ...

    def close(self) -> None: ...


class LocalBackend:
    """Everything in this process: the baseline the Ray backend is measured against.

    ``actor_cls``: the symbol actor class (a live session's streams them).
    """

    name = "local"

    def __init__(self, actor_cls: type[SymbolActor] = SymbolActor) -> None:
        self.actor_cls = actor_cls

    def start(self, config: RunConfig, shards: Sequence[Sequence[str]], t0: int) -> None:
        self.actors = [self.actor_cls(config, shard, t0) for shard in shards]
        self.portfolio = PortfolioActor(config)

    def call(self, method: str, *args: Any) -> list[Any]:
        return [getattr(a, method)(*args) for a in self.actors]

    def prepare(self, config: RunConfig) -> None:
        return None

    def cpus(self) -> int:
        return cpu_count()

    def submit(self, calls: Sequence[Call]) -> Pending:
        # run at collect, as on Ray: the clock settles and records the step it holds
        # before an error of the work it sent ahead comes back
        return list(calls)

    def collect(self, pending: Pending) -> list[Outbox]:
        out: list[Outbox] = []
        for a, until, inboxes, syms in pending:
            out.extend(self.actors[a].step(until, inboxes, syms))
        return out

    def settle(
        self,
        t: int,
        outboxes: list[Outbox],
        mark_ts: npt.NDArray[np.int64],
        marks: npt.NDArray[np.float64],
    ) -> SettleResult:
        return self.portfolio.portfolio.settle(t, outboxes, mark_ts, marks)

    def finish(self, t: int, inboxes: Sequence[list[Inbox]], reason: str) -> list[Outbox]:
        return [
            ob
            for a, boxes in zip(self.actors, inboxes, strict=True)
            for ob in a.close_out(t, boxes, reason)
        ]

    def summary(self) -> dict[str, Any]:
        return self.portfolio.summary()

    def close(self) -> None:
        self.actors = []


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class RayBackend:
    """Symbol actors as Ray actors; the portfolio beside the clock or as a Ray actor.

    Joins the Ray instance already initialised in this process, or the cluster
    at ``address`` (``None``: start a local one without a dashboard).

    Every round ends in a barrier between the clock and the portfolio, so by
    default the portfolio runs in the driver process with the clock: a
    separate actor would only add a hop and two serialisations per round
    (measured: settlement 6x slower on 100 symbols). ``remote_portfolio=True``
    makes it a Ray actor, with identical results.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        remote_portfolio: bool = False,
        actor_cls: type[SymbolActor] = SymbolActor,
    ) -> None:
        self.address = address
        self.remote_portfolio = remote_portfolio
        self.actor_cls = actor_cls
        self._started_ray = False

    def call(self, method: str, *args: Any) -> list[Any]:
        return list(self._ray.get([getattr(a, method).remote(*args) for a in self.actors]))

    def pids(self) -> list[int]:
        """The process id of each symbol actor (where to send a signal, in tests)."""
        return list(self._ray.get([a.pid.remote() for a in self.actors]))

    def cpus(self) -> int:
        """The CPUs of the alive nodes of the Ray cluster (joined or started here): the
        symbols spread over the cluster, not over the driver's machine."""
        import ray

        if not ray.is_initialized():
            return cpu_count()  # start() joins or starts Ray; until then, this machine
        total = sum(
            int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")
        )
        return max(1, total)

    def prepare(self, config: RunConfig) -> None:
        """Join the cluster at ``address``, or start a local Ray, unless this process is
        connected already. User strategy code reaches the workers through Ray: module
        files and folders as the runtime environment's ``py_modules`` (for the whole job
        when tickray starts Ray, else uploaded for these actors)."""
        import ray

        mods = shipped_modules(config)
        env = runtime_env(mods)
        self._extra: dict[str, Any] = {}
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env=env,
            )
            self._started_ray = True
        elif env:
            self._extra["runtime_env"] = uploaded_env(env)
        self._ray = ray
        self._mods = mods

    def start(self, config: RunConfig, shards: Sequence[Sequence[str]], t0: int) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if getattr(self, "_ray", None) is None:
            self.prepare(config)
        mods = self._mods
        if mods != config.strategy.modules:
            config = replace(config, strategy=replace(config.strategy, modules=mods))
        nodes = sorted(
            n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")
        )
        if not nodes:
            raise RuntimeError("the Ray cluster has no alive node with CPUs")
        # a live session's streams cannot be sent again: it runs without recovery
        self.supervisor = Supervisor(
            ray, config.checkpoint_every_ns, config.max_restarts, enabled=config.live is None
        )
        restarts = config.max_restarts if self.supervisor.enabled else 0

        def on(i: int, soft: bool = False) -> NodeAffinitySchedulingStrategy:
            return NodeAffinitySchedulingStrategy(node_id=nodes[i % len(nodes)], soft=soft)

        def alive(i: int) -> Any:
            """Where a replacement goes: the first alive node with CPUs from actor ``i``'s
            (the original placement when it is still alive)."""
            now = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            for k in range(len(nodes)):
                if nodes[(i + k) % len(nodes)] in now:
                    return on(i + k)
            return on(i, soft=True)

        # Zero CPU reservations: placement is explicit, and the number of symbol
        # actors is already chosen from the CPU count.
        classes = main_classes(config) or None
        opts: dict[str, Any] = {"max_restarts": restarts, "max_task_retries": 0, **self._extra}
        sym_cls: Any = ray.remote(num_cpus=0)(self.actor_cls)
        port_cls: Any = ray.remote(num_cpus=0)(PortfolioActor)

        def symbol_actor(i: int, shard: Sequence[str], where: Any) -> Any:
            return sym_cls.options(scheduling_strategy=where, **opts).remote(
                config, list(shard), t0, classes
            )

        def replacement(i: int, shard: Sequence[str]) -> tuple[Any, str]:
            where = alive(i)
            return symbol_actor(i, shard, where), where.node_id

        def portfolio_replacement() -> tuple[Any, str]:
            where = alive(0)
            return port_cls.options(scheduling_strategy=where, **opts).remote(config), where.node_id

        self.watched = [
            Watched(
                f"symbol actor {i} ({', '.join(shard)})",
                symbol_actor(i, shard, on(i)),
                make=partial(replacement, i, shard),
                node=on(i).node_id,
            )
            for i, shard in enumerate(shards)
        ]
        if self.remote_portfolio:
            self.portfolio_watch: Watched | None = Watched(
                "portfolio actor",
                port_cls.options(scheduling_strategy=on(0), **opts).remote(config),
                make=portfolio_replacement,
                node=on(0).node_id,
            )
            ray.get(self.portfolio_watch.handle.summary.remote())
        else:
            self.portfolio_watch = None
            self.local_portfolio = PortfolioActor(config)
        ray.get([w.handle.ping.remote() for w in self.watched])

    @property
    def actors(self) -> list[Any]:
        """The symbol actors' current handles (a recovered actor's replacement included)."""
        return [w.handle for w in getattr(self, "watched", [])]

    @property
    def placement(self) -> list[str]:
        """The node id of each symbol actor (where it runs now, after any replacement)."""
        return [w.node for w in getattr(self, "watched", [])]

    @property
    def checkpoints(self) -> int:
        """Checkpoints taken (all actors): what recovery cost this run."""
        port = getattr(self, "portfolio_watch", None)
        ws = [*getattr(self, "watched", []), *([port] if port is not None else [])]
        return sum(w.checkpoints for w in ws)

    @property
    def recoveries(self) -> list[dict[str, Any]]:
        sup = getattr(self, "supervisor", None)
        return list(sup.recoveries) if sup is not None else []

    def submit(self, calls: Sequence[Call]) -> Pending:
        sup = self.supervisor
        return [
            sup.send(self.watched[a], "advance", until, encode_inboxes(inboxes), syms)
            for a, until, inboxes, syms in calls
        ]

    def collect(self, pending: Pending) -> list[Outbox]:
        frames = self.supervisor.get_many(pending)
        return [ob for frame in frames for ob in decode_outboxes(frame)]

    def settle(
        self,
        t: int,
        outboxes: list[Outbox],
        mark_ts: npt.NDArray[np.int64],
        marks: npt.NDArray[np.float64],
    ) -> SettleResult:
        if self.portfolio_watch is None:
            return self.local_portfolio.portfolio.settle(t, outboxes, mark_ts, marks)
        sup = self.supervisor
        seq = sup.send(self.portfolio_watch, "settle", t, encode_outboxes(outboxes), mark_ts, marks)
        res: SettleResult = sup.get(seq)
        return res

    def finish(self, t: int, inboxes: Sequence[list[Inbox]], reason: str) -> list[Outbox]:
        sup = self.supervisor
        seqs = [
            sup.send(w, "finish", t, encode_inboxes(boxes), reason)
            for w, boxes in zip(self.watched, inboxes, strict=True)
        ]
        return [ob for frame in sup.get_many(seqs) for ob in decode_outboxes(frame)]

    def summary(self) -> dict[str, Any]:
        if self.portfolio_watch is None:
            return self.local_portfolio.summary()
        sup = self.supervisor
        out: dict[str, Any] = sup.get(sup.send(self.portfolio_watch, "summary"))
        return out

    def close(self) -> None:
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        port = getattr(self, "portfolio_watch", None)
        for a in [*self.actors, port.handle if port is not None else None]:
            if a is not None:
                ray.kill(a)
        self.watched = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def make_backend(
    name: str,
    address: str | None = None,
    remote_portfolio: bool = False,
    actor_cls: type[SymbolActor] = SymbolActor,
) -> Backend:
    if name == "local":
        return LocalBackend(actor_cls)
    if name == "ray":
        return RayBackend(address, remote_portfolio, actor_cls)
    raise ValueError(f"execution.backend: must be 'local' or 'ray', got {name!r}")
