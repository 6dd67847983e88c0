"""Durable backtest jobs: the SQLite job index and the pool of worker processes that runs them.

**The index** (:class:`JobStore`) is one SQLite table (stdlib ``sqlite3``, WAL journal)
holding each job's id, status, spec document (JSON), submission, start and finish times
(ISO-8601 UTC strings with milliseconds, ``2024-05-01T12:00:00.123Z``), progress (the
fraction 0..1 of the run's simulated span settled, and the simulated time reached, ISO-8601
UTC), error and results folder (relative to the service's data dir). Every change is
committed when it happens, so a service that stops, or dies, finds its jobs again:
:meth:`JobStore.recover` turns the jobs that were ``running`` into ``interrupted``.

**The pool** (:class:`WorkerPool`) runs at most ``workers`` jobs at once, each in a
long-lived worker process started with multiprocessing's ``spawn`` (a crash, a memory
blow-up or a hang in one run cannot take the service down), and keeps at most
``max_queue`` jobs waiting (:class:`QueueFull` past that: the service's back-pressure).
A worker runs :func:`tickray.cluster.runner.run_backtest` in its main thread, so its
SIGTERM handling applies: stopping a running job is a SIGTERM to its worker, which makes
the clock stop at its next step and keep the settled part in ``<out>.partial``. The pool
repeats the signal until the run reports back (a signal that lands before the run has
installed its handler is ignored by the idle worker) and kills the worker after
``stop_grace`` seconds. Results are written to ``<results_dir>/<job id>`` (atomically:
the run writes ``<id>.partial`` and renames it when complete).

Progress comes back from the worker a few times a second through a
:class:`~tickray.actors.progress.Progress` whose display is the worker's pipe, handed
to ``run_backtest`` as its progress.

**Paper sessions** are jobs of kind ``paper`` (a RunConfig with ``live`` set), run by
:func:`tickray.cluster.paper.run_paper` in a pool of their own (a session holds its
worker for as long as it streams). The session starts at the first step boundary after
its worker takes it; its live status (positions, equity, latency, message rates,
resyncs) comes back about once a second and is kept in the index's ``live`` column. A
stop request is :data:`~tickray.cluster.paper.STOP_SIGNAL` (SIGUSR1) to the worker:
the session stops at its next step boundary, flattens or keeps its positions as its
spec says, and writes a complete results folder, so a stopped session ends ``done``
(``cancel_requested`` tells it was asked to). The kill deadline is ``stop_grace`` plus
one step and the session's grace, the longest a clean stop takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import sqlite3
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tickray.actors.progress import Progress
from tickray.engine.clock import iso
from tickray.engine.config import RunConfig

__all__ = [
    "KINDS",
    "RESUMABLE",
    "TERMINAL",
    "Event",
    "Job",
    "JobStatus",
    "JobStore",
    "QueueFull",
    "WorkerPool",
    "utc_now",
]


class JobStatus(StrEnum):
    """Where a job is. ``done``, ``failed`` and ``cancelled`` are final; ``interrupted``
    (the service stopped while it ran) waits for a resume."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


TERMINAL = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})
"""Statuses a job never leaves by itself (``interrupted`` and these can be resumed, but
only on request)."""

RESUMABLE = frozenset({JobStatus.INTERRUPTED, JobStatus.FAILED, JobStatus.CANCELLED})
"""Statuses from which ``resume`` re-queues a job (it restarts from the beginning)."""


def utc_now() -> str:
    """The wall-clock time as ISO-8601 UTC with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Job:
    """One row of the job index. Times are ISO-8601 UTC strings (None until they happen);
    ``progress`` is the fraction (0..1) of the run's simulated span settled and
    ``reached`` the simulated time (ISO-8601 UTC) it settled up to; ``result`` is the
    results folder relative to the data dir (set once the job is done)."""

    seq: int
    id: str
    status: JobStatus
    spec: dict[str, Any]
    created: str
    started: str | None
    finished: str | None
    progress: float
    reached: str | None
    error: str | None
    result: str | None
    cancel_requested: bool
    attempts: int
    kind: str = "backtest"
    live: dict[str, Any] | None = None
    """A paper session's last status (see :meth:`tickray.actors.live.LiveClock.status`)."""


KINDS = ("backtest", "paper")
"""What a job runs: a backtest, or a paper session on live streams."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    progress REAL NOT NULL DEFAULT 0,
    reached TEXT,
    error TEXT,
    result TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'backtest',
    live TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
"""
# columns added after the first release, with their definitions (older indexes get them)
_ADDED = {"kind": "TEXT NOT NULL DEFAULT 'backtest'", "live": "TEXT"}
_COLUMNS = (
    "seq, id, status, spec, created, started, finished, progress, reached, error, result, "
    "cancel_requested, attempts, kind, live"
)


class JobStore:
    """The job index in the SQLite file ``path`` (created with its folder if missing).

    Safe to call from several threads (one connection behind a lock); every method
    commits before it returns. Writes use WAL with ``synchronous=NORMAL``: a committed
    change survives the process dying (a power cut may lose the last few).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, definition in _ADDED.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads -------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return _job(row) if row is not None else None

    def page(
        self,
        statuses: Iterable[JobStatus] = (),
        *,
        limit: int = 100,
        before: int | None = None,
        kind: str | None = None,
    ) -> list[Job]:
        """Jobs newest first (by submission), at most ``limit``, only those with one of
        ``statuses`` (all when empty), only those submitted before the job with sequence
        number ``before`` (the cursor of the previous page), only of ``kind`` (if given)."""
        where: list[str] = []
        args: list[object] = []
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        wanted = [str(s) for s in statuses]
        if wanted:
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            args += wanted
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        sql = f"SELECT {_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, [*args, limit]).fetchall()
        return [_job(r) for r in rows]

    def with_status(self, status: JobStatus, kind: str | None = None) -> list[Job]:
        """Every job with ``status`` (of ``kind``, if given), oldest first."""
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE status = ?"
        args: list[object] = [str(status)]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        return [_job(r) for r in rows]

    # -- writes ------------------------------------------------------------------------------
    def add(self, job_id: str, spec: Mapping[str, Any], kind: str = "backtest") -> Job:
        """A new queued job of ``kind``. IntegrityError when ``job_id`` is taken."""
        if kind not in KINDS:
            raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
        text = json.dumps(spec, sort_keys=True, allow_nan=False)
        self._write(
            "INSERT INTO jobs (id, status, spec, created, kind) VALUES (?, ?, ?, ?, ?)",
            (job_id, str(JobStatus.QUEUED), text, utc_now(), kind),
        )
        return self._must(job_id)

    def start(self, job_id: str) -> Job:
        """The job has left the queue for a worker: ``running``, one more attempt."""
        self._write(
            "UPDATE jobs SET status = ?, started = ?, finished = NULL, progress = 0, "
            "reached = NULL, error = NULL, result = NULL, live = NULL, attempts = attempts + 1 "
            "WHERE id = ?",
            (str(JobStatus.RUNNING), utc_now(), job_id),
        )
        return self._must(job_id)

    def set_progress(self, job_id: str, fraction: float, reached: str | None) -> None:
        self._write(
            "UPDATE jobs SET progress = ?, reached = ? WHERE id = ?", (fraction, reached, job_id)
        )

    def set_live(
        self, job_id: str, fraction: float, reached: str | None, live: Mapping[str, Any]
    ) -> None:
        """A paper session's status: its progress, simulated time and live numbers."""
        text = json.dumps(live, sort_keys=True, allow_nan=False)
        self._write(
            "UPDATE jobs SET progress = ?, reached = ?, live = ? WHERE id = ?",
            (fraction, reached, text, job_id),
        )

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        result: str | None = None,
    ) -> Job:
        """The job ended with ``status`` (``interrupted`` included)."""
        self._write(
            "UPDATE jobs SET status = ?, finished = ?, error = ?, result = ? WHERE id = ?",
            (str(status), utc_now(), error, result, job_id),
        )
        return self._must(job_id)

    def request_cancel(self, job_id: str) -> Job:
        self._write("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return self._must(job_id)

    def requeue(self, job_id: str) -> Job:
        """Back to ``queued`` with its run state cleared (a resume restarts the run)."""
        self._write(
            "UPDATE jobs SET status = ?, started = NULL, finished = NULL, progress = 0, "
            "reached = NULL, error = NULL, result = NULL, live = NULL, cancel_requested = 0 "
            "WHERE id = ?",
            (str(JobStatus.QUEUED), job_id),
        )
        return self._must(job_id)

    def recover(self, kind: str | None = None) -> list[str]:
        """Mark the jobs (of ``kind``, if given) left ``running`` by a service that stopped
        as ``interrupted``; returns their ids. Call once at start, before any job runs."""
        ids = [j.id for j in self.with_status(JobStatus.RUNNING, kind)]
        for job_id in ids:
            self.finish(
                job_id,
                JobStatus.INTERRUPTED,
                error="the service stopped while this job ran; resume restarts it",
            )
        return ids

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _must(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job


def _job(row: tuple[Any, ...]) -> Job:
    return Job(
        seq=int(row[0]),
        id=str(row[1]),
        status=JobStatus(row[2]),
        spec=json.loads(row[3]),
        created=row[4],
        started=row[5],
        finished=row[6],
        progress=float(row[7]),
        reached=row[8],
        error=row[9],
        result=row[10],
        cancel_requested=bool(row[11]),
        attempts=int(row[12]),
        kind=str(row[13]),
        live=json.loads(row[14]) if row[14] else None,
    )


# -- the worker process --------------------------------------------------------------------------


class _NoDisplay:
    def draw(self, text: str, frac: float) -> None:
        return None

    def done(self, text: str, frac: float) -> None:
        return None

    def line(self, text: str) -> None:
        return None


class PipeProgress(Progress):
    """A replay's progress sent through ``send(fraction, reached_ns)`` at most ``fps``
    times a wall-clock second (and always at the end of the span)."""

    def __init__(self, send: Callable[[float, int], None], fps: float = 4.0) -> None:
        super().__init__("replay", _NoDisplay(), fps=fps)
        self._send = send
        self._t = 0

    def at(self, t: int, *, force: bool = False) -> None:
        self._t = t
        super().at(t, force=force)

    def _show(self, text: str, frac: float, now: float) -> None:
        super()._show(text, frac, now)
        self._send(frac, self._t)


def _ignore(_signum: int, _frame: object) -> None:
    """Between runs a stop request has nothing to stop."""


def worker_main(conn: Connection) -> None:
    """A worker process: run the jobs sent on ``conn`` one at a time, report on it.

    Receives ``(job_id, config, out)`` (None: quit); sends ``("progress", id, fraction,
    reached_ns)`` while it runs, then one of ``("done", id, folder)``, ``("stopped", id,
    why, reached_iso, folder)`` or ``("failed", id, message)``. The process leaves the
    terminal's process group, so a Ctrl-C meant for the service reaches the service only
    (which then stops the runs itself).
    """
    with contextlib.suppress(OSError):
        os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGUSR1, _ignore)  # a paper session's stop request
    from tickray.cluster import runner  # import the whole engine before the first job

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        job_id, config, out = msg
        reply = _run_job(conn, runner, job_id, config, Path(out))
        try:
            conn.send(reply)
        except OSError:
            return


def _run_job(
    conn: Connection, runner: Any, job_id: str, config: RunConfig, out: Path
) -> tuple[Any, ...]:
    if config.live is not None:
        return _run_session(conn, job_id, config, out)

    def send(frac: float, reached: int) -> None:
        conn.send(("progress", job_id, frac, reached))

    bar = PipeProgress(send)
    try:
        res = runner.run_backtest(config, out, progress=bar)
    except BaseException as exc:  # the worker reports every failure and lives on
        traceback.print_exc()
        return ("failed", job_id, describe_error(exc))
    if res.interrupted:
        reached = res.metrics.get("incomplete", {}).get("reached")
        return ("stopped", job_id, res.interrupted, reached, str(res.out))
    return ("done", job_id, str(res.out))


def _run_session(conn: Connection, job_id: str, config: RunConfig, out: Path) -> tuple[Any, ...]:
    """A paper session, from the next step boundary on; its status sent as ``("live",
    id, status)`` about once a second. Stopped or not, it ends ``("done", id, folder)``
    (its results are complete); ``("failed", id, message)`` when it breaks."""
    from tickray.cluster.paper import restart_at, run_paper

    def send(status: dict[str, Any]) -> None:
        conn.send(("live", job_id, status))

    try:
        res = run_paper(restart_at(config), out, progress=False, on_status=send)
    except BaseException as exc:  # the worker reports every failure and lives on
        traceback.print_exc()
        return ("failed", job_id, describe_error(exc))
    return ("done", job_id, str(res.out))


def describe_error(exc: BaseException) -> str:
    """The message a client sees: a configuration or data error's own text (it names
    the key or the file), anything else prefixed with its type."""
    from tickray.engine.config import ConfigError
    from tickray.feeds.schemas import DataError

    if isinstance(exc, ConfigError | DataError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# -- the pool --------------------------------------------------------------------------------


class QueueFull(Exception):
    """No room in the queue; ``retry_after`` is a suggested wait in seconds."""

    def __init__(self, queued: int, retry_after: int) -> None:
        super().__init__(f"the queue is full ({queued} jobs waiting); retry later")
        self.retry_after = retry_after


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection


@dataclass
class _Active:
    """A job a slot has taken from the queue."""

    job_id: str
    worker: _Worker | None = None
    cancel: bool = False
    stopper: asyncio.Task[None] | None = None
    grace: float = 0.0  # seconds a clean stop may take on top of the pool's stop_grace


Event = dict[str, Any]
"""A progress or status event, JSON-ready."""


class WorkerPool:
    """Runs queued jobs of ``store`` on ``workers`` worker processes (module doc).

    ``prepare(spec)`` turns a stored spec document into its RunConfig (it runs in a
    thread; an exception fails the job with its message); it is used for jobs queued
    before a restart and for resumed jobs, while a fresh submission hands its checked
    config to :meth:`enqueue`. ``publish(job_id, event)`` is called on the event loop
    for every status change and progress report. Use from one asyncio event loop.
    ``kind``: the jobs of the store this pool runs (``backtest`` or ``paper``).
    """

    def __init__(
        self,
        store: JobStore,
        results_dir: Path,
        prepare: Callable[[dict[str, Any]], RunConfig],
        publish: Callable[[str, Event], None],
        *,
        workers: int = 2,
        max_queue: int = 100,
        stop_grace: float = 10.0,
        kind: str = "backtest",
    ) -> None:
        if workers < 1 or max_queue < 1:
            raise ValueError("workers and max_queue must be >= 1")
        if kind not in KINDS:
            raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        self.store = store
        self.results_dir = results_dir
        self.prepare = prepare
        self.publish = publish
        self.workers = workers
        self.max_queue = max_queue
        self.stop_grace = stop_grace
        self._waiting: OrderedDict[str, RunConfig | None] = OrderedDict()
        self._active: dict[str, _Active] = {}
        self._procs: list[_Worker | None] = [None] * workers
        self._wake = asyncio.Condition()
        self._slots: list[asyncio.Task[None]] = []
        self._closing = False
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="tickray-job")
        self._ctx = multiprocessing.get_context("spawn")
        self._mean_seconds = 5.0  # running mean of job wall times, for Retry-After

    # -- queue -------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._active)

    @property
    def full(self) -> bool:
        return len(self._waiting) >= self.max_queue

    def worker_pids(self) -> dict[str, int]:
        """The process id of the worker running each running job (for monitoring)."""
        return {
            job_id: a.worker.process.pid
            for job_id, a in self._active.items()
            if a.worker is not None and a.worker.process.pid is not None
        }

    def retry_after(self) -> int:
        """Seconds until a queue place is likely free: a job ends every mean job time
        / workers seconds on average (between 1 and 300)."""
        return int(min(300, max(1, math.ceil(self._mean_seconds / self.workers))))

    def check_room(self) -> None:
        if self.full:
            raise QueueFull(len(self._waiting), self.retry_after())

    async def enqueue(self, job_id: str, config: RunConfig | None = None) -> None:
        """Queue a stored ``queued`` job (``config``: its checked RunConfig when at hand).
        Call :meth:`check_room` first, with no ``await`` in between."""
        self._waiting[job_id] = config
        async with self._wake:
            self._wake.notify()

    async def start(self) -> None:
        """Recover the index (running -> interrupted), queue the jobs left queued, start
        the slots. Worker processes start with the first job they run."""
        for job_id in self.store.recover(self.kind):
            self.publish(job_id, self._status(job_id))
        for job in self.store.with_status(JobStatus.QUEUED, self.kind):
            self._waiting[job.id] = None
        self._slots = [asyncio.create_task(self._slot(k)) for k in range(self.workers)]

    async def _next(self) -> tuple[str, RunConfig | None] | None:
        async with self._wake:
            while not self._waiting and not self._closing:
                await self._wake.wait()
            if self._closing:
                return None
            return self._waiting.popitem(last=False)

    # -- cancel and resume -------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or interrupted job now, or ask a running one to stop (it ends
        ``cancelled`` once its worker reports). Returns the job as it stands."""
        if job_id in self._waiting:
            del self._waiting[job_id]
            return self._end(job_id, JobStatus.CANCELLED, error="cancelled before it started")
        active = self._active.get(job_id)
        if active is not None:
            job = self.store.request_cancel(job_id)
            if not active.cancel:
                active.cancel = True
                if active.worker is not None:
                    self._stop(active)
            return job
        stored = self.store.get(job_id)
        if stored is None:
            raise KeyError(job_id)
        if stored.status == JobStatus.INTERRUPTED:
            return self._end(job_id, JobStatus.CANCELLED, error=stored.error)
        return stored

    async def resume(self, job_id: str, config: RunConfig | None = None) -> Job:
        """Re-queue an interrupted, failed or cancelled job (it restarts from the
        beginning). QueueFull when the queue is full."""
        self.check_room()
        job = self.store.requeue(job_id)
        self.publish(job_id, self._status(job_id))
        await self.enqueue(job_id, config)
        return job

    # -- running -----------------------------------------------------------------------------
    async def _slot(self, k: int) -> None:
        while True:
            taken = await self._next()
            if taken is None:
                return
            job_id, config = taken
            active = _Active(job_id)
            self._active[job_id] = active
            try:
                await self._run(k, active, config)
            except Exception as exc:  # never lose a slot to a bug: fail the job instead
                traceback.print_exc()
                self._end(job_id, JobStatus.FAILED, error=describe_error(exc))
            finally:
                if active.stopper is not None:
                    active.stopper.cancel()
                self._active.pop(job_id, None)

    async def _run(self, k: int, active: _Active, config: RunConfig | None) -> None:
        job_id = active.job_id
        job = self.store.start(job_id)
        self.publish(job_id, self._status(job_id))
        began = asyncio.get_running_loop().time()
        if config is None:
            try:
                config = await asyncio.to_thread(self.prepare, job.spec)
            except Exception as exc:
                self._end(job_id, JobStatus.FAILED, error=describe_error(exc))
                return
        if active.cancel:
            self._end(job_id, JobStatus.CANCELLED, error="cancelled before it started")
            return
        if config.live is not None:  # a clean stop takes up to one more step
            active.grace = config.sync_ns / 1e9 + config.live.grace_s + 5.0
        if self._closing:  # never started: it stays queued for the next start
            self.store.requeue(job_id)
            return
        out = self.results_dir / job_id
        await asyncio.to_thread(_clear, out)
        worker = await self._worker(k)
        worker.conn.send((job_id, config, str(out)))
        active.worker = worker
        if active.cancel or self._closing:
            self._stop(active)
        await self._follow(k, active, worker)
        elapsed = asyncio.get_running_loop().time() - began
        self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * elapsed

    async def _follow(self, k: int, active: _Active, worker: _Worker) -> None:
        """Relay the worker's reports on ``active`` until its run ends."""
        loop = asyncio.get_running_loop()
        job_id = active.job_id
        while True:
            try:
                msg = await loop.run_in_executor(self._executor, worker.conn.recv)
            except (EOFError, OSError):
                await asyncio.to_thread(worker.process.join, 5.0)
                self._procs[k] = None
                code = worker.process.exitcode
                if active.cancel:  # killed after the grace period: drop what it wrote
                    await asyncio.to_thread(_clear, self.results_dir / job_id)
                    self._end(job_id, JobStatus.CANCELLED, error="cancelled while running")
                elif self._closing:
                    self._interrupted(job_id, None)
                else:
                    self._end(
                        job_id,
                        JobStatus.FAILED,
                        error=f"the worker process died (exit code {code})",
                    )
                return
            kind = msg[0]
            if kind == "live":
                status: dict[str, Any] = msg[2]
                fraction = float(status.get("progress") or 0.0)
                reached = status.get("reached")
                self.store.set_live(job_id, fraction, reached, status)
                self.publish(job_id, {"type": "live", "id": job_id, "live": status})
                continue
            if kind == "progress":
                fraction, reached = float(msg[2]), iso(int(msg[3]))
                self.store.set_progress(job_id, fraction, reached)
                self.publish(
                    job_id,
                    {"type": "progress", "id": job_id, "progress": fraction, "reached": reached},
                )
                continue
            if kind == "done":
                rel = Path(msg[2]).relative_to(self.results_dir.parent).as_posix()
                self._end(job_id, JobStatus.DONE, result=rel)
            elif kind == "stopped":
                folder = Path(msg[4])
                if active.cancel:
                    await asyncio.to_thread(shutil.rmtree, folder, True)
                    self._end(
                        job_id, JobStatus.CANCELLED, error=f"cancelled at simulated time {msg[3]}"
                    )
                else:
                    self._interrupted(job_id, msg[3])
            else:
                self._end(job_id, JobStatus.FAILED, error=str(msg[2]))
            return

    def _interrupted(self, job_id: str, reached: str | None) -> None:
        at = f" at simulated time {reached}" if reached else ""
        self._end(
            job_id,
            JobStatus.INTERRUPTED,
            error=f"the service stopped while this job ran{at}; resume restarts it",
        )

    def _end(
        self, job_id: str, status: JobStatus, *, error: str | None = None, result: str | None = None
    ) -> Job:
        job = self.store.finish(job_id, status, error=error, result=result)
        self.publish(job_id, self._status(job_id))
        return job

    def _status(self, job_id: str) -> Event:
        job = self.store.get(job_id)
        return {"type": "status", "id": job_id, "status": str(job.status) if job else None}

    async def _worker(self, k: int) -> _Worker:
        w = self._procs[k]
        if w is not None and w.process.is_alive():
            return w
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main, args=(child,), name=f"tickray-worker-{k}", daemon=True
        )
        await asyncio.to_thread(proc.start)
        child.close()
        w = _Worker(proc, parent)
        self._procs[k] = w
        return w

    def _stop(self, active: _Active) -> None:
        if active.stopper is None and active.worker is not None:
            # a paper session asked to stop (not by the service stopping) says so
            sig = signal.SIGUSR1 if self.kind == "paper" and active.cancel else signal.SIGTERM
            task = self._stopper(active.worker, sig, self.stop_grace + active.grace)
            active.stopper = asyncio.get_running_loop().create_task(task)

    async def _stopper(self, worker: _Worker, sig: int, grace: float) -> None:
        """Send ``sig`` to the worker every 0.25 s until its run reports back (the slot
        cancels this task then), SIGKILL after ``grace`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        pid = worker.process.pid
        while loop.time() < deadline and pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            await asyncio.sleep(0.25)
        worker.process.kill()

    # -- shutdown ----------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop: running jobs are asked to stop and end ``interrupted`` (queued jobs stay
        queued for the next start); the worker processes quit."""
        self._closing = True
        async with self._wake:
            self._wake.notify_all()
        for active in list(self._active.values()):
            self._stop(active)
        longest = max((a.grace for a in self._active.values()), default=0.0)
        if self._slots:
            _, late = await asyncio.wait(self._slots, timeout=self.stop_grace + longest + 10.0)
            for task in late:
                task.cancel()
        for w in self._procs:
            if w is None:
                continue
            with contextlib.suppress(OSError):
                w.conn.send(None)
            await asyncio.to_thread(w.process.join, 5.0)
            if w.process.is_alive():
                w.process.kill()
            w.conn.close()
        self._procs = [None] * self.workers
        self._executor.shutdown(wait=False, cancel_futures=True)


def _clear(out: Path) -> None:
    """Remove a previous attempt's results (``out`` and ``out.partial``)."""
    for p in (out, out.with_name(out.name + ".partial")):
        if p.exists():
            shutil.rmtree(p)
