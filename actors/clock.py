"""The clock: owns simulation time and drives the step protocol in replay mode.

Each round:

1. every symbol whose time equals the settled time ``t`` is advanced (one call
   per symbol actor, all at once) with its inbox, towards ``target``; a symbol
   stops at the end of the first step with news, or at ``target``;
2. the next settlement time is the earliest time any symbol reached; the
   portfolio books the outboxes of the symbols there (sorted by symbol), marks
   the account at every boundary since ``t`` and decides their intents;
3. the results go to the recorder and the decisions become the inboxes of
   those symbols.

With ``fuse`` off, ``target`` is always the next boundary (one round per step).
With it on, a symbol with nothing to report runs ahead up to ``fuse_steps``
boundaries in one call; since a step with no news needs nothing from the
portfolio, both give byte-identical results. Ties are broken by symbol name.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tickray.actors.backends import Backend, Call, Pending, cpu_count
from tickray.actors.progress import Progress
from tickray.actors.recorder import Recorder
from tickray.engine.clock import ceil_to, floor_to
from tickray.engine.config import RunConfig
from tickray.engine.events import Inbox, Outbox
from tickray.engine.portfolio import SettleResult, concat_updates
from tickray.engine.steps import split_outbox

FUSE_STEPS = 4096
END_REASON = "end of backtest"


def shard(symbols: tuple[str, ...], symbols_per_actor: int, cpus: int) -> list[list[str]]:
    """Split the sorted symbols into contiguous shards, one per symbol actor.

    ``symbols_per_actor == 0`` spreads them over ``min(len(symbols), cpus)`` actors.
    """
    n = len(symbols)
    actors = math.ceil(n / symbols_per_actor) if symbols_per_actor else min(n, max(1, cpus))
    size, extra = divmod(n, actors)
    out, i = [], 0
    for a in range(actors):
        k = size + (1 if a < extra else 0)
        out.append(list(symbols[i : i + k]))
        i += k
    return [s for s in out if s]


@dataclass
class ClockStats:
    """Counts and wall-clock seconds of a run's phases (measurement only, not simulation)."""

    rounds: int = 0
    calls: int = 0
    settles: int = 0
    boundaries: int = 0
    setup_s: float = 0.0
    advance_s: float = 0.0
    settle_s: float = 0.0
    record_s: float = 0.0


class RunInterrupted(KeyboardInterrupt):
    """The run was asked to stop (Ctrl-C, SIGTERM); every step settled up to ``reached``
    (ns) is recorded."""

    def __init__(self, reached: int, why: str = "interrupted") -> None:
        super().__init__(why)
        self.reached = reached
        self.why = why


class Clock:
    """Drives a replay from ``config.start_ns`` to its end over a backend.

    :meth:`request_stop` (safe from a signal handler) makes :meth:`run` stop at the
    next settlement: it records that step and raises :class:`RunInterrupted`.
    """

    def __init__(
        self,
        config: RunConfig,
        backend: Backend,
        recorder: Recorder,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.recorder = recorder
        self.progress = progress
        self.stop_requested = ""
        self.reached = 0
        self.stats = ClockStats()
        sync = config.sync_ns
        self.t0 = floor_to(config.start_ns, sync)
        last_close = floor_to(config.end_ns - 1, config.interval_ns) + config.interval_ns
        self.t_end = ceil_to(last_close, sync)
        self.shards = shard(config.symbols, config.symbols_per_actor, cpu_count())

    def request_stop(self, why: str = "interrupted") -> None:
        """Stop at the next settlement (the steps settled so far are recorded)."""
        self.stop_requested = why

    def run(self) -> dict[str, Any]:
        cfg = self.config
        self.reached = self.t0
        # symbols spread over the CPUs the backend has (a Ray cluster's, not this machine's)
        self.backend.prepare(cfg)
        self.shards = shard(cfg.symbols, cfg.symbols_per_actor, self.backend.cpus())
        if self.progress is not None:
            interval = cfg.interval_ns if cfg.l2 is None else 0
            self.progress.start_span(self.t0, self.t_end, len(cfg.symbols), interval)
        sync = cfg.sync_ns
        symbols = list(cfg.symbols)
        col = {s: i for i, s in enumerate(symbols)}
        began = time.perf_counter()
        self.backend.start(cfg, self.shards, self.t0)
        stats = self.stats
        stats.setup_s = time.perf_counter() - began
        at = dict.fromkeys(symbols, self.t0)
        held: dict[str, Outbox] = {}
        inboxes: dict[str, Inbox] = {}
        mark_buf: list[npt.NDArray[np.float64]] = [np.empty(0) for _ in symbols]
        horizon = sync * (FUSE_STEPS if cfg.fuse else 1)
        t = self.t0
        target = min(self.t_end, t + horizon)
        flight = [self._submit(symbols, target, inboxes)]
        last_res: SettleResult | None = None
        ivl, self_ok = cfg.interval_ns, cfg.approval == "symbol"
        last_pos = dict.fromkeys(symbols, 0.0)
        while True:
            t_a = time.perf_counter()
            try:
                outs = [ob for h in flight for ob in self.backend.collect(h)]
            except Exception:
                if last_res is not None:  # a symbol failed: keep every step settled so far
                    self.recorder.record(last_res)
                raise
            stats.advance_s += time.perf_counter() - t_a
            for ob in outs:
                at[ob.symbol] = ob.reached
                held[ob.symbol] = ob
                i = col[ob.symbol]
                mark_buf[i] = np.concatenate((mark_buf[i], ob.mark_px))
            t_next = min(at.values())
            k = (t_next - t) // sync
            mark_ts = np.arange(t + sync, t_next + 1, sync, dtype=np.int64)
            marks = np.empty((k, len(symbols)))
            for i in range(len(symbols)):
                marks[:, i] = mark_buf[i][:k]
                mark_buf[i] = mark_buf[i][k:]
            settling = [held.pop(s) for s in symbols if at[s] == t_next]
            # Symbols ahead may hold fills and updates of steps up to t_next: the
            # portfolio books them now, as it would have stepping one at a time.
            for s, ob in list(held.items()):
                if ob.fills.size or ob.updates.size or len(ob.funding):
                    head, held[s] = split_outbox(ob, t_next, ivl, sync, self_ok, last_pos[s])
                    if head is not None:
                        settling.append(head)
            for ob in settling:
                last_pos[ob.symbol] = ob.position
            flight = []
            if t_next < self.t_end:
                if target <= t_next:
                    target = min(self.t_end, t_next + horizon)
                # Symbols with no intent need no decision: they move on while the
                # portfolio settles (their results cannot depend on this settlement).
                early = [ob.symbol for ob in settling if not ob.intents and at[ob.symbol] == t_next]
                if early:
                    flight.append(self._submit(early, target, inboxes))
            t_a = time.perf_counter()
            res = self.backend.settle(t_next, settling, mark_ts, marks)
            stats.settle_s += time.perf_counter() - t_a
            stats.settles += 1
            stats.boundaries += k
            for box in res.inboxes:
                inboxes[box.symbol] = box
            if t_next < self.t_end:
                late = [ob.symbol for ob in settling if ob.intents and at[ob.symbol] == t_next]
                if late:
                    flight.append(self._submit(late, target, inboxes))
            t_a = time.perf_counter()
            if last_res is not None:
                self.recorder.record(last_res)
            last_res = res
            stats.record_s += time.perf_counter() - t_a
            t = t_next
            self.reached = t
            if self.progress is not None:
                self.progress.at(t)
            if t >= self.t_end:
                break
            if self.stop_requested:
                self.recorder.record(last_res)
                raise RunInterrupted(t, self.stop_requested)
        self.recorder.record(last_res)
        last = [[inboxes[s] for s in sh if s in inboxes] for sh in self.shards]
        closing = self.backend.finish(t, last, END_REASON)
        closing.sort(key=lambda o: o.symbol)
        self.recorder.record_orders([], concat_updates(closing))
        return self.backend.summary()

    def _submit(self, symbols: list[str], target: int, inboxes: dict[str, Inbox]) -> Pending:
        """One advance call per symbol actor for ``symbols`` (sorted), with their inboxes."""
        wanted = set(symbols)
        calls: list[Call] = []
        for a, sh in enumerate(self.shards):
            movers = [s for s in sh if s in wanted]
            if movers:
                boxes = [inboxes.pop(s) for s in movers if s in inboxes]
                calls.append((a, target, boxes, movers))
        self.stats.rounds += 1
        self.stats.calls += len(calls)
        return self.backend.submit(calls)


def stderr_progress(label: str) -> Callable[[float], None]:
    """A progress bar on stderr when it is a terminal (silent otherwise)."""
    if not sys.stderr.isatty():
        return lambda _f: None
    last = [-1]

    def show(frac: float) -> None:
        pct = int(frac * 100)
        if pct != last[0]:
            last[0] = pct
            bar = "#" * (pct // 4)
            end = "\n" if pct >= 100 else ""
            sys.stderr.write(f"\r{label} [{bar:<25}] {pct:3d}%{end}")
            sys.stderr.flush()

    return show
