"""Recovery of Ray actors that die mid-replay: checkpoints at step boundaries, restarts,
and the calls since the checkpoint sent again.

Every call that changes an actor's state goes through :class:`Supervisor`, which numbers
it and keeps it in the actor's log. At most every ``checkpoint_every_ns`` of wall time,
right after a call, the actor is asked for a checkpoint: its whole state at that step
boundary, pickled. Once the checkpoint is in the driver, the log keeps only the calls
after it. When an actor's process dies (``RayActorError`` and kin), Ray restarts it (the
actor is created with ``max_restarts``; its constructor runs again), or, when it cannot
(its node is gone), a new actor is started on an alive node; the new process restores
the checkpoint (none yet: the constructor's initial state) and is sent the logged calls
again. Actors are deterministic, so it ends in the state the dead one would have reached,
and the results are byte-identical to an undisturbed run. The outputs of replayed calls
that the clock had already taken are dropped.

Which wall time a checkpoint is taken at never changes a result: only how much is sent
again after a failure. Each recovery is logged (``recoveries``, written to ``run.json``).
An error raised by the actor's own code (``RayTaskError``) is not a lost process and is
never retried: it propagates as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("tickray.recovery")


class ActorLost(RuntimeError):
    """An actor died more often than ``run.max_restarts`` allows (or recovery is off)."""


def lost_errors() -> tuple[type[BaseException], ...]:
    """The Ray errors that mean the actor's process (or node) is gone, not that its code
    raised."""
    from ray import exceptions as rx

    return (
        rx.RayActorError,
        rx.ActorUnschedulableError,
        rx.WorkerCrashedError,
        rx.NodeDiedError,
        rx.ObjectLostError,
    )


@dataclass
class Watched:
    """One supervised Ray actor: its handle, its last checkpoint and the calls since."""

    name: str
    handle: Any
    make: Callable[[], tuple[Any, str]]
    """Start a replacement actor (on an alive node) when Ray cannot restart this one; its
    handle and node."""
    node: str = ""
    """The id of the node it is placed on."""
    state: bytes | None = None
    """The last checkpoint (None: the state its constructor gives)."""
    log: list[tuple[int, str, tuple[Any, ...]]] = field(default_factory=list)
    last_checkpoint: float = field(default_factory=time.perf_counter)
    checkpoints: int = 0
    restarts: int = 0
    pending: tuple[Any, int] | None = None
    """A checkpoint asked for: (its ref, the number of the call it follows)."""
    checkpointable: bool = True


class Supervisor:
    """Numbered calls to Ray actors, with checkpoints and recovery (see the module).

    ``enabled`` False (``run.max_restarts = 0``, or a live session, whose streams cannot
    be replayed): calls go straight through and a lost actor fails the run.
    """

    def __init__(self, ray: Any, every_ns: int, max_restarts: int, enabled: bool) -> None:
        self._ray = ray
        self.every_s = every_ns / 1e9
        self.max_restarts = max_restarts
        self.enabled = enabled and max_restarts > 0
        self._seq = 0
        self._refs: dict[int, tuple[Watched, Any]] = {}
        self.recoveries: list[dict[str, Any]] = []
        self._lost = lost_errors()

    def send(self, w: Watched, method: str, *args: Any) -> int:
        """Call ``method(*args)`` on ``w``'s actor; returns the call's number for :meth:`get`."""
        self._seq += 1
        seq = self._seq
        self._refs[seq] = (w, getattr(w.handle, method).remote(*args))
        if not self.enabled:
            return seq
        w.log.append((seq, method, args))
        due = time.perf_counter() - w.last_checkpoint >= self.every_s
        if due and w.pending is None and w.checkpointable:
            w.pending = (w.handle.checkpoint.remote(), seq)
        return seq

    def get(self, seq: int) -> Any:
        """The result of call ``seq``, recovering its actor first if it died."""
        while True:
            w, ref = self._refs[seq]
            try:
                out = self._ray.get(ref)
            except self._lost as exc:
                if not self.enabled:
                    raise
                self.recover(w, exc)
                continue
            self._done(seq, w)
            return out

    def get_many(self, seqs: list[int]) -> list[Any]:
        """The results of the calls ``seqs``, fetched in one ``ray.get`` (one by one, with
        recovery, when an actor of them died)."""
        refs = [self._refs[seq][1] for seq in seqs]
        try:
            outs: list[Any] = self._ray.get(refs)
        except self._lost:
            if not self.enabled:
                raise
            return [self.get(seq) for seq in seqs]
        for seq in seqs:
            self._done(seq, self._refs[seq][0])
        return outs

    def _done(self, seq: int, w: Watched) -> None:
        """Call ``seq`` of ``w`` has its result: forget it, and keep a checkpoint taken
        after it."""
        del self._refs[seq]
        if w.pending is not None and w.pending[1] <= seq:
            self._keep_checkpoint(w)

    def _keep_checkpoint(self, w: Watched) -> None:
        assert w.pending is not None
        ref, after = w.pending
        w.pending = None
        try:
            state = self._ray.get(ref)
        except self._lost as exc:
            self.recover(w, exc)  # the log still reaches back to the last checkpoint
            return
        except Exception as exc:
            raise ActorLost(
                f"{w.name}: its state could not be checkpointed ({exc}); a strategy's "
                "state must pickle, or set run.max_restarts = 0 to run without recovery"
            ) from exc
        w.last_checkpoint = time.perf_counter()
        if state is None:  # the actor recovers by replaying its calls from the start
            w.checkpointable = False
            return
        w.state = state
        w.checkpoints += 1
        w.log = [entry for entry in w.log if entry[0] > after]

    def _restore(self, w: Watched) -> bool:
        """Put ``w``'s checkpoint into its restarted process (Ray restarts it under the same
        handle; the call waits while it is unavailable), or into a new actor when it is
        gone for good (its node died). True when a new actor took its place."""
        from ray import exceptions as rx

        deadline = time.monotonic() + 120.0
        while True:
            try:
                self._ray.get(w.handle.restore.remote(w.state))
                return False
            except rx.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # restarting: ask again
            except self._lost:
                break
        self._ray.kill(w.handle)
        w.handle, w.node = w.make()
        self._ray.get(w.handle.restore.remote(w.state))
        return True

    def recover(self, w: Watched, exc: BaseException) -> None:
        """Restart ``w``'s actor, restore its checkpoint and send the calls since again."""
        if not self.enabled or w.restarts >= self.max_restarts:
            raise ActorLost(
                f"{w.name} died {w.restarts + 1} times (run.max_restarts = "
                f"{self.max_restarts}): {exc}"
            ) from exc
        w.restarts += 1
        began = time.perf_counter()
        w.pending = None
        replaced = self._restore(w)
        waiting = 0
        for seq, method, args in w.log:
            ref = getattr(w.handle, method).remote(*args)
            if seq in self._refs:
                self._refs[seq] = (w, ref)
                waiting += 1
        w.last_checkpoint = time.perf_counter()
        entry = {
            "actor": w.name,
            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "restored_from": "checkpoint" if w.state is not None else "start",
            "checkpoints_before": w.checkpoints,
            "calls_replayed": len(w.log) - waiting,
            "calls_resent": waiting,
            "new_actor": replaced,
            "node": w.node,
            "restart": w.restarts,
            "seconds": round(time.perf_counter() - began, 3),
        }
        self.recoveries.append(entry)
        log.warning(
            "%s died (%s); restored from its %s and sent %d calls again",
            w.name,
            entry["error"],
            entry["restored_from"],
            len(w.log),
        )
