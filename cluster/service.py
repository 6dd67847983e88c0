"""The REST service for backtests (``tickray serve``): an aiohttp app over a durable job store.

Clients submit run specs as JSON (``POST /backtests``), follow them (``GET
/backtests/{id}``, or the websocket ``/backtests/{id}/events``), download their fills,
equity and orders (JSON, Arrow IPC stream or Parquet) and cancel or resume them. The
jobs, their index (SQLite) and their results live in the service's data dir
(:mod:`tickray.cluster.jobs`), so a restarted service lists what it ran before.

Paper sessions (``POST /paper``: a spec with its ``[live]`` section) run the same way in
a pool of their own; ``GET /paper/{id}`` and the websocket ``/paper/{id}/events`` show
their live status about once a second, ``DELETE /paper/{id}`` stops one cleanly (its
results written, then downloadable like a backtest's). A session streams only from
Binance's public endpoints or from those the operator allowed (``--live-url``): a request
never chooses where the service connects. A session without ``live.duration`` gets the
service's maximum (``--max-paper-duration``), and a longer one is refused.

Security assumptions (see docs/service.md): the service binds to 127.0.0.1 unless
told otherwise and speaks plain HTTP (put a TLS proxy in front of it on a network);
every request but ``GET /health`` carries ``Authorization: Bearer <token>``; a spec
runs only registered strategies (``strategy.modules`` is refused: no code comes from
requests), reads data only under the configured data roots (paths resolved, symlinks
followed, anything leading out refused), never downloads (``data.source`` "exchange" is
refused) and runs on the in-process backend in a worker process; bodies and downloads
are size-limited. Times in JSON are ISO-8601 UTC strings with a ``Z``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hmac
import json
import logging
import math
import os
import secrets
import signal
import sqlite3
import sys
import threading
import traceback
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from aiohttp import WSCloseCode, WSMsgType, web

from tickray.cluster.jobs import (
    RESUMABLE,
    TERMINAL,
    Event,
    Job,
    JobStatus,
    JobStore,
    QueueFull,
    WorkerPool,
)
from tickray.engine.clock import duration_ns, format_duration, iso
from tickray.engine.config import ConfigError, RunConfig
from tickray.engine.spec import SCHEMA, Key, SpecError, parse_spec
from tickray.feeds.ws import WS_BASE_URLS

__all__ = [
    "DEFAULT_PORT",
    "ServiceSettings",
    "SpecPolicy",
    "add_serve_parser",
    "cmd_serve",
    "create_app",
    "openapi_document",
    "start_server",
]

DEFAULT_PORT = 8765
MAX_BODY = 1024 * 1024
"""Largest request body, bytes (1 MiB)."""
MAX_DOWNLOAD = 256 * 1024 * 1024
"""Largest results download, bytes (256 MiB)."""
TABLES = ("fills", "equity", "orders")
"""The results tables the service serves."""
TOKEN_ENV = "TICKRAY_API_TOKEN"
MAX_PAGE = 500
MAX_PAPER_DURATION = 24 * 3600.0
"""The longest paper session, seconds (24 h); a session without a duration gets it."""

JSON = "application/json"
ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
X_PARQUET = "application/x-parquet"
_MEDIA = {JSON: "json", ARROW: "arrow", PARQUET: "parquet", X_PARQUET: "parquet"}
_ID = "{id:[0-9a-f]{16}}"


@dataclass(frozen=True)
class ServiceSettings:
    """How a service runs. ``data_dir`` holds the job index (``jobs.sqlite3``) and the
    results (``jobs/<id>/``); ``data_roots`` are the only folders specs may read data
    from (default: ``data_dir/data``). Sizes are bytes; ``stop_grace`` is seconds a
    run asked to stop may take before its worker is killed."""

    data_dir: Path
    token: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_roots: tuple[Path, ...] = ()
    workers: int = 2
    max_queue: int = 100
    max_body: int = MAX_BODY
    max_download: int = MAX_DOWNLOAD
    stop_grace: float = 10.0
    paper_sessions: int = 1
    """Paper sessions streaming at once (each in its own worker process)."""
    live_urls: tuple[str, ...] = ()
    """Stream addresses a paper spec may name in ``live.ws_url`` besides Binance's."""
    max_paper_duration: float = MAX_PAPER_DURATION

    def roots(self) -> tuple[Path, ...]:
        """The data roots, resolved (symlinks followed)."""
        given = self.data_roots or (self.data_dir / "data",)
        return tuple(Path(r).resolve() for r in given)


# -- what a spec from a request may do ----------------------------------------------------------


class SpecPolicy:
    """The checks a spec from a request passes on top of the CLI's (module doc).

    :meth:`check` returns the document to store and run, with its data paths made
    absolute and resolved; :meth:`config` builds its RunConfig (the CLI's
    ``config_from_document`` and the runner's input checks: it reads file statistics,
    so call it off the event loop).
    """

    def __init__(
        self,
        roots: tuple[Path, ...],
        live_urls: tuple[str, ...] = (),
        max_paper_duration: float = MAX_PAPER_DURATION,
    ) -> None:
        if not roots:
            raise ValueError("at least one data root is needed")
        self.roots = roots
        self.live_urls = frozenset(_url_key(u) for u in (*WS_BASE_URLS.values(), *live_urls))
        self.max_paper_ns = int(max_paper_duration * 1e9)
        self._disk_lock = threading.Lock()  # demo generation and cache exports write

    def check(self, doc: object) -> dict[str, Any]:
        """``doc`` checked like the CLI checks a spec, then against the service's rules;
        SpecError naming the key path otherwise."""
        if not isinstance(doc, Mapping):
            raise SpecError(f"spec: must be a JSON object of sections, got {_kind(doc)}")
        strategy = doc.get("strategy")
        if isinstance(strategy, Mapping) and "modules" in strategy:
            raise SpecError(
                "strategy.modules: not accepted by the service (no code is loaded from "
                "requests); name a registered strategy in strategy.name"
            )
        if "live" in doc:
            raise SpecError(
                "live: a backtest has no live section; start paper sessions with POST /paper"
            )
        spec = parse_spec(doc)
        data, run = spec.values["data"], spec.values["run"]
        if data["source"] == "exchange":
            raise SpecError(
                "data.source: 'exchange' is not served (a request never makes the service "
                "download); fill a cache folder under a data root and use 'cache'"
            )
        if run["backend"] != "local":
            raise SpecError(
                "run.backend: the service runs each backtest in its own worker process on "
                "the 'local' backend"
            )
        if run["address"] is not None:
            raise SpecError("run.address: not accepted by the service")
        if spec.grid:
            raise SpecError(
                f"strategy.params: {', '.join(sorted(spec.grid))} form a grid of {spec.runs} "
                "runs; submit one job per point"
            )
        out = copy.deepcopy(dict(doc))
        if data["source"] in ("files", "cache"):
            if data["path"] is None:
                raise SpecError(
                    f"data.path: required with data.source {data['source']!r} in the "
                    "service (a folder under a data root)"
                )
            out["data"]["path"] = str(self.resolve("data.path", data["path"]))
        funding = spec.values["perp"]["funding"]
        if spec.values["account"]["type"] == "perp" and isinstance(funding, dict):
            out["perp"]["funding"] = {
                sym: str(self.resolve(f"perp.funding.{sym}", path, folder=False))
                for sym, path in funding.items()
            }
        return out

    def resolve(self, where: str, raw: object, *, folder: bool = True) -> Path:
        """``raw`` (relative paths: under the first data root) resolved, symlinks
        followed; SpecError naming ``where`` when it leads outside the data roots, does
        not exist, or (a folder) holds a symlink leading outside them."""
        if not isinstance(raw, str) or not raw or "\0" in raw:
            raise SpecError(f"{where}: must be a path, got {_kind(raw)}")
        p = Path(raw)
        real = (p if p.is_absolute() else self.roots[0] / p).resolve()
        if not self._inside(real):
            raise SpecError(f"{where}: {raw} is outside the data roots")
        if folder and not real.is_dir():
            raise SpecError(f"{where}: {raw} is not a folder under the data roots")
        if not folder and not real.is_file():
            raise SpecError(f"{where}: {raw} is not a file under the data roots")
        if folder:
            self._check_links(where, raw, real)
        return real

    def _check_links(self, where: str, raw: str, top: Path) -> None:
        """Every symlink met reading ``top`` (following links that stay inside the
        roots, each folder once) must lead inside the roots."""
        seen = {top}
        stack = [(top, PurePosixPath(raw))]
        while stack:
            folder, shown = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    target = Path(entry.path).resolve() if entry.is_symlink() else None
                    if target is not None and not self._inside(target):
                        raise SpecError(
                            f"{where}: {shown / entry.name} links outside the data roots"
                        )
                    real = target or Path(entry.path)
                    if real.is_dir() and real not in seen:
                        seen.add(real)
                        stack.append((real, shown / entry.name))

    def _inside(self, real: Path) -> bool:
        return any(real.is_relative_to(r) for r in self.roots)

    def config(self, doc: Mapping[str, Any]) -> RunConfig:
        """The RunConfig of a checked document (:meth:`check`), its inputs checked."""
        from tickray.cluster.runner import check_inputs
        from tickray.cluster.spec import config_from_document

        source = doc.get("data", {}).get("source", "demo")
        writes = source in ("demo", "cache")
        with self._disk_lock if writes else contextlib.nullcontext():
            config = config_from_document(doc)
        check_inputs(config)
        return config

    def prepare(self, doc: dict[str, Any]) -> RunConfig:
        """:meth:`check` then :meth:`config`: for stored specs (the roots may have
        changed since they were accepted)."""
        return self.config(self.check(doc))

    # -- paper sessions -------------------------------------------------------------------------
    def check_paper(self, doc: object) -> dict[str, Any]:
        """A paper session's spec checked like ``tickray paper`` checks one, then against
        the service's rules: registered strategies only, the local backend, no file read
        or written (``live.record`` and funding or mark files refused), streams only from
        the allowed addresses, and a duration (the service's maximum when none is given).
        Returns the document to store and run (its duration filled in)."""
        if not isinstance(doc, Mapping):
            raise SpecError(f"spec: must be a JSON object of sections, got {_kind(doc)}")
        strategy = doc.get("strategy")
        if isinstance(strategy, Mapping) and "modules" in strategy:
            raise SpecError(
                "strategy.modules: not accepted by the service (no code is loaded from "
                "requests); name a registered strategy in strategy.name"
            )
        spec = parse_spec(doc)
        run, live = spec.values["run"], spec.values["live"]
        if run["backend"] != "local":
            raise SpecError("run.backend: the service runs each paper session on 'local'")
        if run["address"] is not None:
            raise SpecError("run.address: not accepted by the service")
        if live["record"] is not None:
            raise SpecError(
                "live.record: not accepted by the service (a request never chooses where "
                "the service writes)"
            )
        url = live["ws_url"]
        if url is not None and _url_key(url) not in self.live_urls:
            raise SpecError(
                f"live.ws_url: {url} is not an allowed stream address (Binance's public "
                "endpoints, or those the service was started with, --live-url)"
            )
        if spec.values["account"]["type"] == "perp":
            perp = spec.values["perp"]
            if perp["funding"] != "none" or perp["marks"] != "last":
                raise SpecError(
                    "perp.funding: a paper session in the service reads no files; set "
                    "perp.funding = 'none' and perp.marks = 'last'"
                )
        out = copy.deepcopy(dict(doc))
        most = format_duration(self.max_paper_ns)
        if live["duration"] is None:
            out["live"] = dict(out.get("live") or {}) | {"duration": most}
        elif live["duration"] > self.max_paper_ns:
            raise SpecError(
                f"live.duration: {format_duration(live['duration'])} is longer than the "
                f"service's maximum of {most}"
            )
        self.paper_config(out)  # the symbols, the interval and the steps
        return out

    def paper_config(self, doc: Mapping[str, Any]) -> RunConfig:
        """The session of a checked document (it starts when a worker takes it)."""
        from tickray.cluster.paper import paper_config

        return paper_config(parse_spec(doc))

    def prepare_paper(self, doc: dict[str, Any]) -> RunConfig:
        """:meth:`check_paper` then :meth:`paper_config`, for stored specs (the allowed
        addresses may have changed since)."""
        return self.paper_config(self.check_paper(doc))


def _url_key(url: str) -> str:
    """A stream address as compared with the allowed ones: without trailing slashes."""
    return url.strip().rstrip("/")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# -- events ---------------------------------------------------------------------------------


class EventBus:
    """Per-job fan-out of events to websocket subscribers. A slow subscriber loses its
    oldest events, never the newest (so the final status always arrives)."""

    def __init__(self, depth: int = 256) -> None:
        self.depth = depth
        self._subs: dict[str, set[asyncio.Queue[Event]]] = defaultdict(set)

    def subscribe(self, job_id: str) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(self.depth)
        self._subs[job_id].add(q)
        return q

    def unsubscribe(self, job_id: str, q: asyncio.Queue[Event]) -> None:
        subs = self._subs.get(job_id)
        if subs is not None:
            subs.discard(q)
            if not subs:
                del self._subs[job_id]

    def publish(self, job_id: str, event: Event) -> None:
        for q in self._subs.get(job_id, ()):
            if q.full():
                q.get_nowait()
            q.put_nowait(event)


# -- the app ----------------------------------------------------------------------------------


class ApiError(Exception):
    """An error response: ``{"error": message}`` with ``status`` (and ``headers``)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Service:
    """What the handlers share: settings, the store, the pool, the policy, the bus."""

    settings: ServiceSettings
    store: JobStore
    pool: WorkerPool
    policy: SpecPolicy
    bus: EventBus
    paper_pool: WorkerPool
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    @property
    def results_dir(self) -> Path:
        return self.settings.data_dir / "jobs"

    def job(self, job_id: str, kind: str = "backtest") -> Job:
        job = self.store.get(job_id)
        if job is None or job.kind != kind:
            what = "paper session" if kind == "paper" else "job"
            raise ApiError(404, f"id: no {what} {job_id}")
        return job

    def pool_of(self, kind: str) -> WorkerPool:
        return self.paper_pool if kind == "paper" else self.pool

    def publish(self, job_id: str, event: Event) -> None:
        if event.get("type") == "status":
            job = self.store.get(job_id)
            if job is not None:
                event = {"type": "status", "id": job_id, "status": str(job.status)}
                event["job"] = job_json(job)
        self.bus.publish(job_id, event)

    def new_job(self, spec: Mapping[str, Any], kind: str = "backtest") -> Job:
        for _ in range(8):
            try:
                return self.store.add(secrets.token_hex(8), spec, kind)
            except sqlite3.IntegrityError:
                continue  # an id already taken: 1 in 2**64 per job
        raise RuntimeError("could not draw a free job id")


SERVICE = web.AppKey("service", Service)


def job_json(
    job: Job,
    *,
    metrics: dict[str, Any] | None = None,
    full: bool = False,
    session: dict[str, Any] | None = None,
) -> Event:
    """A job as the API shows it (``full``: with its spec, and its metrics when done; a
    paper session with its live status, and its ``live.json`` as ``session`` when done)."""
    base = f"{_prefix(job.kind)}/{job.id}"
    out: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "status": str(job.status),
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "progress": job.progress,
        "reached": job.reached,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "attempts": job.attempts,
        "links": {"self": base, "events": f"{base}/events"}
        | ({t: f"{base}/{t}" for t in TABLES} if job.status == JobStatus.DONE else {}),
    }
    if job.kind == "paper":
        out["live"] = job.live
    if full:
        out["spec"] = job.spec
        if metrics is not None:
            out["metrics"] = metrics
        if session is not None:
            out["session"] = session
    return out


def _prefix(kind: str) -> str:
    return "/paper" if kind == "paper" else "/backtests"


def _route_kind(request: web.Request) -> str:
    """The kind of job a route serves, from its path."""
    return "paper" if request.path.startswith("/paper") else "backtest"


def _error_body(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as ``{"error": ...}`` JSON, the HTTP layer's own (404, 405, 413) too."""
    try:
        return await handler(request)
    except ApiError as e:
        return _error_body(e.status, e.message, e.headers)
    except QueueFull as e:
        return _error_body(503, str(e), {"Retry-After": str(e.retry_after)})
    except web.HTTPException as e:
        if e.status < 400:
            raise
        keep = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")}
        return _error_body(e.status, e.reason.lower() if e.reason else "error", keep)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        traceback.print_exc()
        return _error_body(500, "internal error (see the service's log)")


@web.middleware
async def _auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """``Authorization: Bearer <token>`` on every request but ``GET /health`` (compared
    in constant time)."""
    if request.path == "/health":
        return await handler(request)
    token = request.app[SERVICE].settings.token.encode()
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token)
    if not ok:
        why = "missing bearer token" if not given else "wrong bearer token"
        raise ApiError(401, f"authorization: {why}", {"WWW-Authenticate": 'Bearer realm="tickray"'})
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    """Liveness: always ``{"status": "ok"}``, no token needed."""
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def submit(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    kind = _route_kind(request)
    pool = svc.pool_of(kind)
    pool.check_room()
    limit = svc.settings.max_body
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"body: {request.content_length} bytes, more than the limit of {limit}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"body: more than the limit of {limit} bytes") from None
    doc = parse_body(body)
    try:
        if kind == "paper":
            checked = svc.policy.check_paper(doc)
            config = svc.policy.paper_config(checked)
        else:
            checked = svc.policy.check(doc)
            config = await asyncio.to_thread(svc.policy.config, checked)
    except (ConfigError, ValueError, OSError) as e:
        raise ApiError(400, str(e)) from None
    pool.check_room()  # no await from here to enqueue: the check holds
    job = svc.new_job(checked, kind)
    await pool.enqueue(job.id, config)
    return web.json_response(
        job_json(job, full=True), status=202, headers={"Location": f"{_prefix(kind)}/{job.id}"}
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_body(body: bytes) -> Any:
    """The JSON document of a request body; ApiError 400 when it is not strict JSON
    (NaN and Infinity refused) or nests too deep."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"spec: the body is not JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "spec: the body nests too deep") from None


async def list_jobs(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    q = request.query
    statuses: list[JobStatus] = []
    for word in filter(None, (w.strip() for w in q.get("status", "").split(","))):
        try:
            statuses.append(JobStatus(word))
        except ValueError:
            known = ", ".join(s.value for s in JobStatus)
            raise ApiError(400, f"status: unknown status {word!r} (known: {known})") from None
    limit = _int_param(q, "limit", 100, 1, MAX_PAGE)
    cursor = _int_param(q, "cursor", None, 1, None)
    jobs = svc.store.page(statuses, limit=limit + 1, before=cursor, kind=_route_kind(request))
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return web.json_response(
        {
            "jobs": [job_json(j) for j in jobs],
            "next_cursor": str(jobs[-1].seq) if more else None,
        }
    )


def _int_param(
    q: Mapping[str, str], name: str, default: int | None, lo: int, hi: int | None
) -> Any:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if value < lo or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ApiError(400, f"{name}: must be an integer {bounds}, got {raw!r}")
    return value


async def get_job(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    job = svc.job(request.match_info["id"], _route_kind(request))
    metrics = session = None
    if job.status == JobStatus.DONE and job.result:
        folder = svc.settings.data_dir / job.result
        metrics = await asyncio.to_thread(_read_json, folder / "metrics.json")
        if job.kind == "paper":
            session = await asyncio.to_thread(_read_json, folder / "live.json")
    return web.json_response(job_json(job, metrics=metrics, full=True, session=session))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel: a queued (or interrupted) job at once (200), a running one at its next
    step (202; it ends ``cancelled``)."""
    svc = request.app[SERVICE]
    job = svc.job(request.match_info["id"], _route_kind(request))
    if job.status in TERMINAL:
        raise ApiError(409, f"id: job {job.id} is {job.status}; there is nothing to cancel")
    job = svc.pool_of(job.kind).cancel(job.id)
    return web.json_response(job_json(job, full=True), status=202 if not _ended(job) else 200)


def _ended(job: Job) -> bool:
    return job.status in TERMINAL or job.status == JobStatus.INTERRUPTED


async def resume_job(request: web.Request) -> web.Response:
    """Re-queue an interrupted, failed or cancelled job; it restarts from the beginning."""
    svc = request.app[SERVICE]
    job = svc.job(request.match_info["id"])
    if job.status not in RESUMABLE:
        raise ApiError(
            409,
            f"id: job {job.id} is {job.status}; only interrupted, failed or cancelled jobs resume",
        )
    svc.pool.check_room()
    try:
        config = await asyncio.to_thread(svc.policy.prepare, job.spec)
    except (ConfigError, ValueError, OSError) as e:
        raise ApiError(400, str(e)) from None
    job = svc.job(job.id)
    if job.status not in RESUMABLE:  # resumed by another request meanwhile
        raise ApiError(409, f"id: job {job.id} is {job.status}")
    job = await svc.pool.resume(job.id, config)
    return web.json_response(
        job_json(job, full=True), status=202, headers={"Location": f"/backtests/{job.id}"}
    )


def negotiate(accept: str) -> str | None:
    """The media type to answer an Accept header with: one of JSON, Arrow stream and
    the two Parquet names (highest q wins, the first listed on a tie; no header,
    ``*/*`` or ``application/*``: JSON), None when nothing offered fits."""
    if not accept.strip():
        return JSON
    best: tuple[float, str] | None = None
    for part in accept.split(","):
        media, *params = (s.strip() for s in part.split(";"))
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        offer = media if media in _MEDIA else JSON if media in ("*/*", "application/*") else None
        if offer is not None and q > 0 and (best is None or q > best[0]):
            best = (q, offer)
    return best[1] if best else None


def _table_handler(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await download(request, name)

    handler.__name__ = f"get_{name}"
    return handler


async def download(request: web.Request, name: str) -> web.StreamResponse:
    """One results table as JSON (``{"table", "count", "rows"}``, times ISO-8601 UTC,
    non-finite numbers as null), an Arrow IPC stream or the run's Parquet file as is."""
    svc = request.app[SERVICE]
    job = svc.job(request.match_info["id"], _route_kind(request))
    if job.status != JobStatus.DONE or not job.result:
        raise ApiError(409, f"id: job {job.id} is {job.status}; results exist once it is done")
    media = negotiate(request.headers.get("Accept", ""))
    if media is None:
        offered = ", ".join(_MEDIA)
        raise ApiError(406, f"accept: none of the offered types fits (offered: {offered})")
    path = svc.settings.data_dir / job.result / f"{name}.parquet"
    if not path.resolve().is_relative_to(svc.results_dir.resolve()) or not path.is_file():
        raise ApiError(404, f"{name}: job {job.id} has no {name} table")
    limit = svc.settings.max_download
    kind = _MEDIA[media]
    if kind == "parquet":
        _check_size(name, path.stat().st_size, limit)
        headers = {"Content-Type": media} | _attachment(f"{job.id}-{name}.parquet")
        return web.FileResponse(path, headers=headers)
    meta = await asyncio.to_thread(pq.read_metadata, path)
    raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    _check_size(name, raw, limit)
    if kind == "arrow":
        body = await asyncio.to_thread(arrow_stream, path)
        _check_size(name, len(body), limit)
        headers = {"Content-Type": ARROW} | _attachment(f"{job.id}-{name}.arrows")
        return web.Response(body=body, headers=headers)
    body = await asyncio.to_thread(table_json, path, name)
    _check_size(name, len(body), limit)
    return web.Response(body=body, content_type=JSON)


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


def _check_size(name: str, size: int, limit: int) -> None:
    if size > limit:
        raise ApiError(
            413,
            f"{name}: the download would be {size} bytes, more than the limit of {limit}",
        )


def arrow_stream(path: Path) -> bytes:
    """The Parquet file ``path`` as one Arrow IPC stream (same schema and rows)."""
    table = pq.read_table(path, use_threads=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of ``table`` as JSON-ready dicts: timestamps as ISO-8601 UTC strings
    (ns precision kept), NaN and infinities as None."""
    cols: list[list[Any]] = []
    for f, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(f.type):
            ns = col.cast(pa.timestamp("ns", tz=f.type.tz)).cast(pa.int64()).to_pylist()
            cols.append([None if v is None else iso(v) for v in ns])
        elif pa.types.is_floating(f.type):
            cols.append([v if v is None or math.isfinite(v) else None for v in col.to_pylist()])
        else:
            cols.append(col.to_pylist())
    names = table.column_names
    return [dict(zip(names, vals, strict=True)) for vals in zip(*cols, strict=True)]


def table_json(path: Path, name: str) -> bytes:
    table = pq.read_table(path, use_threads=False)
    doc = {"table": name, "count": table.num_rows, "rows": table_rows(table)}
    return json.dumps(doc, allow_nan=False, default=str).encode()


async def events(request: web.Request) -> web.StreamResponse:
    """Websocket: the job's status now, then each progress and status event as JSON, until
    the job ends (done, failed, cancelled or interrupted); then the server closes."""
    svc = request.app[SERVICE]
    kind = _route_kind(request)
    job = svc.job(request.match_info["id"], kind)
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    svc.sockets.add(ws)
    queue = svc.bus.subscribe(job.id)
    job = svc.job(job.id, kind)  # its state as of the subscription: no event is missed

    async def drain() -> None:  # reads (and drops) client messages; notices the close
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
        queue.put_nowait({"type": "closed"})

    reader = asyncio.create_task(drain())
    try:
        await ws.send_json(
            {"type": "status", "id": job.id, "status": str(job.status)} | {"job": job_json(job)}
        )
        if not _ended(job):
            while True:
                event = await queue.get()
                if event["type"] == "closed" or ws.closed:
                    break
                await ws.send_json(event)
                if event["type"] == "status" and event["status"] not in ("queued", "running"):
                    break
    except ConnectionResetError:
        pass
    finally:
        svc.bus.unsubscribe(job.id, queue)
        svc.sockets.discard(ws)
        await ws.close()
        reader.cancel()
    return ws


def create_app(settings: ServiceSettings) -> web.Application:
    """The aiohttp application of ``settings``: its job store opens at startup (running
    jobs of a previous life become ``interrupted``, queued ones queue again), its worker
    pool stops at cleanup (running jobs become ``interrupted``)."""
    data_dir = settings.data_dir
    roots = settings.roots()
    app = web.Application(middlewares=[_errors, _auth], client_max_size=settings.max_body)

    async def startup(app: web.Application) -> None:
        (data_dir / "jobs").mkdir(parents=True, exist_ok=True)
        for r in roots:
            r.mkdir(parents=True, exist_ok=True)
        store = JobStore(data_dir / "jobs.sqlite3")
        policy = SpecPolicy(roots, settings.live_urls, settings.max_paper_duration)
        bus = EventBus()
        holder: list[Service] = []

        def publish(job_id: str, event: Event) -> None:
            holder[0].publish(job_id, event)

        pool = WorkerPool(
            store,
            data_dir / "jobs",
            policy.prepare,
            publish,
            workers=settings.workers,
            max_queue=settings.max_queue,
            stop_grace=settings.stop_grace,
        )
        paper_pool = WorkerPool(
            store,
            data_dir / "jobs",
            policy.prepare_paper,
            publish,
            workers=settings.paper_sessions,
            max_queue=settings.max_queue,
            stop_grace=settings.stop_grace,
            kind="paper",
        )
        svc = Service(settings, store, pool, policy, bus, paper_pool)
        holder.append(svc)
        app[SERVICE] = svc
        await pool.start()
        await paper_pool.start()

    async def shutdown(app: web.Application) -> None:
        for ws in list(app[SERVICE].sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"service stopping")

    async def cleanup(app: web.Application) -> None:
        svc = app[SERVICE]
        await asyncio.gather(svc.pool.close(), svc.paper_pool.close())
        svc.store.close()

    app.on_startup.append(startup)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    r = app.router
    r.add_get("/health", health, allow_head=False)
    r.add_get("/openapi.json", openapi, allow_head=False)
    r.add_post("/backtests", submit)
    r.add_get("/backtests", list_jobs, allow_head=False)
    r.add_get(f"/backtests/{_ID}", get_job, allow_head=False)
    r.add_delete(f"/backtests/{_ID}", cancel_job)
    r.add_post(f"/backtests/{_ID}/resume", resume_job)
    for name in TABLES:
        r.add_get(f"/backtests/{_ID}/{name}", _table_handler(name), allow_head=False)
    r.add_get(f"/backtests/{_ID}/events", events, allow_head=False)
    r.add_post("/paper", submit)
    r.add_get("/paper", list_jobs, allow_head=False)
    r.add_get(f"/paper/{_ID}", get_job, allow_head=False)
    r.add_delete(f"/paper/{_ID}", cancel_job)
    for name in TABLES:
        r.add_get(f"/paper/{_ID}/{name}", _table_handler(name), allow_head=False)
    r.add_get(f"/paper/{_ID}/events", events, allow_head=False)
    return app


# -- the OpenAPI document -----------------------------------------------------------------------


def _key_schema(key: Key) -> dict[str, Any]:
    kind = key.kind
    s: dict[str, Any]
    if kind in ("int", "float"):
        s = {"type": "integer" if kind == "int" else "number"}
        if key.minimum is not None:
            s["exclusiveMinimum" if key.above else "minimum"] = key.minimum
        if key.maximum is not None:
            s["maximum"] = key.maximum
    elif kind == "bool":
        s = {"type": "boolean"}
    elif kind == "str":
        s = {"type": "string"} | ({"enum": list(key.choices)} if key.choices else {})
    elif kind in ("duration", "time"):
        s = {"type": "string", "description": key.describe()}
    elif kind in ("symbols", "strings"):
        s = {"oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]}
    elif kind == "assets":
        s = {"type": "object", "additionalProperties": {"type": "number"}}
    elif key.default == "store":
        s = {"oneOf": [{"type": "string", "enum": ["store", "none"]}, {"type": "object"}]}
    else:
        s = {"type": "object"}
    if key.optional or key.default is None:
        s = {"oneOf": [s, {"type": "null"}]}
    return {"description": key.doc} | s


def spec_schema(live: bool = False) -> dict[str, Any]:
    """JSON Schema of a spec the service accepts, from :data:`~tickray.engine.spec.SCHEMA`
    (without ``strategy.modules``, which it refuses; a backtest's without ``live``, a
    paper session's (``live``) without ``live.record``)."""
    refused = {("strategy", "modules"), ("live", "record")}
    sections = {}
    for section, keys in SCHEMA.items():
        if section == "live" and not live:
            continue
        props = {
            name: _key_schema(key) for name, key in keys.items() if (section, name) not in refused
        }
        sections[section] = {"type": "object", "properties": props, "additionalProperties": False}
    what = "A paper session's run spec (docs/paper.md)" if live else "A run spec (docs/spec.md)"
    return {
        "type": "object",
        "description": f"{what}; every key is optional.",
        "properties": sections,
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}} | extra


def _err(description: str, **extra: Any) -> dict[str, Any]:
    return _json(_ref("Error"), description, **extra)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route :func:`create_app` serves."""
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
    }
    unauthorized = _err("Missing or wrong bearer token.")
    not_found = _err("No job with this id.")
    retry = {
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer"},
            }
        }
    }
    location = {"headers": {"Location": {"schema": {"type": "string"}}}}
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "Liveness (no token needed).",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "The service is up.")},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "responses": {
                    "200": _json({"type": "object"}, "The OpenAPI 3.1 document."),
                    "401": unauthorized,
                },
            }
        },
        "/backtests": {
            "post": {
                "summary": "Submit a backtest.",
                "description": "The body is a run spec as JSON (docs/spec.md), checked as the "
                "command line checks it, then against the service's rules (registered "
                "strategies only, data under the data roots, local backend).",
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Spec")}}},
                "responses": {
                    "202": _json(_ref("Job"), "Queued.", **location),
                    "400": _err("The spec is invalid; the error names the key path."),
                    "401": unauthorized,
                    "413": _err("The body is larger than the limit."),
                    "503": _err("The queue is full.", **retry),
                },
            },
            "get": {
                "summary": "List jobs, newest first.",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "description": "Only jobs with one of these statuses (comma-separated).",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_PAGE,
                            "default": 100,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "The next_cursor of the previous page.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json(_ref("JobList"), "A page of jobs."),
                    "400": _err("A bad status, limit or cursor."),
                    "401": unauthorized,
                },
            },
        },
        "/backtests/{id}": {
            "get": {
                "summary": "One job: status, progress, error, metrics when done.",
                "parameters": [id_param],
                "responses": {
                    "200": _json(_ref("Job"), "The job."),
                    "401": unauthorized,
                    "404": not_found,
                },
            },
            "delete": {
                "summary": "Cancel a job.",
                "description": "A queued or interrupted job is cancelled at once (200); a "
                "running one is asked to stop at its next step (202) and ends cancelled.",
                "parameters": [id_param],
                "responses": {
                    "200": _json(_ref("Job"), "Cancelled."),
                    "202": _json(_ref("Job"), "Asked to stop; it ends cancelled."),
                    "401": unauthorized,
                    "404": not_found,
                    "409": _err("The job is done, failed or cancelled already."),
                },
            },
        },
        "/backtests/{id}/resume": {
            "post": {
                "summary": "Queue an interrupted, failed or cancelled job again.",
                "description": "The run restarts from the beginning.",
                "parameters": [id_param],
                "responses": {
                    "202": _json(_ref("Job"), "Queued again.", **location),
                    "400": _err("The stored spec no longer passes the checks."),
                    "401": unauthorized,
                    "404": not_found,
                    "409": _err("The job is queued, running or done."),
                    "503": _err("The queue is full.", **retry),
                },
            }
        },
        "/backtests/{id}/events": {
            "get": {
                "summary": "Websocket of the job's progress and status events (JSON).",
                "description": "The first message is the job's status; then progress events "
                "and status changes; the server closes after the job ends.",
                "parameters": [id_param],
                "responses": {
                    "101": {
                        "description": "Switching to the websocket protocol; messages are "
                        "Event objects.",
                        "content": {JSON: {"schema": _ref("Event")}},
                    },
                    "401": unauthorized,
                    "404": not_found,
                },
            }
        },
    }
    paths |= _paper_paths(id_param, unauthorized, retry, location)
    binary = {"type": "string", "contentEncoding": "binary"}
    for name, prefix in ((n, p) for p in ("/backtests", "/paper") for n in TABLES):
        paths[f"{prefix}/{{id}}/{name}"] = {
            "get": {
                "summary": f"The run's {name} table.",
                "description": "JSON by default; an Arrow IPC stream or the run's Parquet file "
                "by the Accept header.",
                "parameters": [
                    id_param,
                    {
                        "name": "Accept",
                        "in": "header",
                        "schema": {"type": "string", "enum": [JSON, ARROW, PARQUET, X_PARQUET]},
                    },
                ],
                "responses": {
                    "200": {
                        "description": f"The {name} table.",
                        "content": {
                            JSON: {"schema": _ref("Table")},
                            ARROW: {"schema": binary},
                            PARQUET: {"schema": binary},
                            X_PARQUET: {"schema": binary},
                        },
                    },
                    "401": unauthorized,
                    "404": _err(
                        f"No {'paper session' if prefix == '/paper' else 'job'} with this id."
                    ),
                    "406": _err("No acceptable media type."),
                    "409": _err("The job is not done."),
                    "413": _err("The download is larger than the limit."),
                },
            }
        }
    iso_time = {
        "type": ["string", "null"],
        "description": "ISO-8601 UTC, e.g. 2024-03-01T00:00:00Z",
    }
    status = {"type": "string", "enum": [s.value for s in JobStatus]}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "<key path>: <problem>"}},
        },
        "Health": {"type": "object", "properties": {"status": {"const": "ok"}}},
        "Spec": spec_schema(),
        "PaperSpec": spec_schema(live=True),
        "LiveStatus": _live_status_schema(),
        "Job": {
            "type": "object",
            "required": ["id", "kind", "status", "created", "progress"],
            "properties": {
                "id": {"type": "string"},
                "kind": {"type": "string", "enum": ["backtest", "paper"]},
                "status": status,
                "created": iso_time,
                "started": iso_time,
                "finished": iso_time,
                "progress": {"type": "number", "minimum": 0, "maximum": 1},
                "reached": iso_time | {"description": "Simulated time settled (ISO-8601 UTC)."},
                "error": {"type": ["string", "null"]},
                "cancel_requested": {"type": "boolean"},
                "attempts": {"type": "integer"},
                "links": {"type": "object", "additionalProperties": {"type": "string"}},
                "spec": {"oneOf": [_ref("Spec"), _ref("PaperSpec")]},
                "metrics": {"type": "object", "description": "metrics.json, once done."},
                "live": {
                    "oneOf": [_ref("LiveStatus"), {"type": "null"}],
                    "description": "A paper session's last status (null before its first).",
                },
                "session": {
                    "type": "object",
                    "description": "A paper session's live.json (docs/paper.md), once done.",
                },
            },
        },
        "JobList": {
            "type": "object",
            "properties": {
                "jobs": {"type": "array", "items": _ref("Job")},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "Table": {
            "type": "object",
            "properties": {
                "table": {"type": "string"},
                "count": {"type": "integer"},
                "rows": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Event": {
            "type": "object",
            "required": ["type", "id"],
            "properties": {
                "type": {"type": "string", "enum": ["status", "progress", "live"]},
                "id": {"type": "string"},
                "status": status,
                "job": _ref("Job"),
                "progress": {"type": "number"},
                "reached": iso_time,
                "live": _ref("LiveStatus"),
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tickray backtest service",
            "version": "1",
            "description": "Submit, follow, cancel and resume backtests; run paper sessions "
            "on live streams and follow their live status; download their results.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _paper_paths(
    id_param: dict[str, Any],
    unauthorized: dict[str, Any],
    retry: dict[str, Any],
    location: dict[str, Any],
) -> dict[str, Any]:
    not_found = _err("No paper session with this id.")
    return {
        "/paper": {
            "post": {
                "summary": "Start a paper session on live streams.",
                "description": "The body is a run spec as JSON with its live section "
                "(docs/paper.md), checked as `tickray paper` checks it, then against the "
                "service's rules (registered strategies, local backend, no live.record, "
                "live.ws_url only Binance's or an address the service allows, "
                "live.duration at most the service's maximum, which applies when none is "
                "given). The session starts at the first step boundary after a worker "
                "takes it.",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("PaperSpec")}},
                },
                "responses": {
                    "202": _json(_ref("Job"), "Queued.", **location),
                    "400": _err("The spec is invalid; the error names the key path."),
                    "401": unauthorized,
                    "413": _err("The body is larger than the limit."),
                    "503": _err("The queue is full.", **retry),
                },
            },
            "get": {
                "summary": "List paper sessions, newest first, with their live status.",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json(_ref("JobList"), "A page of paper sessions."),
                    "400": _err("A bad status, limit or cursor."),
                    "401": unauthorized,
                },
            },
        },
        "/paper/{id}": {
            "get": {
                "summary": "One paper session: status and its live numbers (about once a "
                "second), metrics and live.json once done.",
                "parameters": [id_param],
                "responses": {
                    "200": _json(_ref("Job"), "The session."),
                    "401": unauthorized,
                    "404": not_found,
                },
            },
            "delete": {
                "summary": "Stop a paper session.",
                "description": "A queued or interrupted session is cancelled at once (200); "
                "a running one stops at its next step boundary, flattening or keeping its "
                "positions as live.on_stop says, writes its results and ends done (202).",
                "parameters": [id_param],
                "responses": {
                    "200": _json(_ref("Job"), "Cancelled before it ran."),
                    "202": _json(_ref("Job"), "Asked to stop; it ends done."),
                    "401": unauthorized,
                    "404": not_found,
                    "409": _err("The session is done, failed or cancelled already."),
                },
            },
        },
        "/paper/{id}/events": {
            "get": {
                "summary": "Websocket of the session's live status and status events (JSON).",
                "description": "The first message is the session's status; then a live "
                "event about once a second and the status changes; the server closes "
                "after the session ends.",
                "parameters": [id_param],
                "responses": {
                    "101": {
                        "description": "Switching to the websocket protocol; messages are "
                        "Event objects.",
                        "content": {JSON: {"schema": _ref("Event")}},
                    },
                    "401": unauthorized,
                    "404": not_found,
                },
            }
        },
    }


def _live_status_schema() -> dict[str, Any]:
    latency = {
        "type": "object",
        "description": "Milliseconds; null before the first sample.",
        "properties": {k: {"type": ["number", "null"]} for k in ("p50_ms", "p99_ms", "max_ms")},
    }
    count = {"type": "integer", "minimum": 0}
    number = {"type": ["number", "null"]}
    return {
        "type": "object",
        "description": "A paper session's status (tickray.actors.live.LiveClock.status).",
        "properties": {
            "reached": {"type": "string", "description": "Simulated time settled (ISO-8601 UTC)."},
            "steps": count,
            "equity": number | {"description": "At the last step, in the account's currency."},
            "pnl": number | {"description": "Equity minus account.cash."},
            "positions": {"type": "object", "additionalProperties": {"type": "number"}},
            "messages": count,
            "message_rate": {"type": "number", "description": "Messages a second, lately."},
            "reconnects": count,
            "errors": count,
            "resyncs": count,
            "gaps": count,
            "late_bars": count,
            "bar_latency": latency,
            "decision_latency": latency,
            "step_lag": latency,
            "progress": number | {"description": "Share of live.duration gone."},
            "updated": {"type": "string", "description": "Wall time (ISO-8601 UTC)."},
            "stopped": {
                "type": ["string", "null"],
                "description": "Why the session ended (duration, stopped on request, ...).",
            },
        },
    }


# -- running it ---------------------------------------------------------------------------------


@dataclass
class RunningServer:
    """A started service: its ``url`` (``http://host:port``) and :meth:`close`."""

    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        """Stop serving; running jobs end ``interrupted``, queued ones stay queued."""
        await self.runner.cleanup()


async def start_server(settings: ServiceSettings) -> RunningServer:
    """Serve ``settings`` on ``host:port`` (port 0: any free port) until :meth:`close`."""
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    port = settings.port
    for address in runner.addresses:
        if isinstance(address, tuple):
            port = int(address[1])
            break
    return RunningServer(app, runner, settings.host, port)


def resolve_token(given: str | None, data_dir: Path) -> tuple[str, str]:
    """The API token and where it came from: ``given`` (``--token``), else
    ``$TICKRAY_API_TOKEN``, else ``data_dir/token``, else a new one (``secrets``, 256
    bits) saved there with mode 0600."""
    if given:
        return given, "--token"
    env = os.environ.get(TOKEN_ENV)
    if env:
        return env, f"${TOKEN_ENV}"
    path = data_dir / "token"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip(), str(path)
    token = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, "new"


def add_serve_parser(subparsers: Any) -> None:
    """Register ``tickray serve`` on the CLI's subparsers."""
    s = subparsers.add_parser(
        "serve",
        help="serve backtests over REST (see docs/service.md)",
        description="A REST service for backtests with durable jobs: submit specs as JSON, "
        "follow, cancel and resume them, download their results.",
    )
    s.add_argument(
        "--host", default="127.0.0.1", metavar="H", help="address to bind (default: loopback only)"
    )
    s.add_argument(
        "--port", type=int, default=DEFAULT_PORT, metavar="P", help="port to bind (0: any free one)"
    )
    s.add_argument(
        "--data-dir",
        required=True,
        metavar="DIR",
        help="the job index, the results (DIR/jobs/) and the token file",
    )
    s.add_argument(
        "--data-root",
        action="append",
        metavar="DIR",
        help="a folder specs may read data from; repeatable (default: DIR/data)",
    )
    s.add_argument(
        "--token",
        metavar="T",
        help=f"the bearer token (default: ${TOKEN_ENV}, else the data dir's token file, "
        "else a new one, printed)",
    )
    s.add_argument("--workers", type=int, default=2, metavar="N", help="backtests run at once")
    s.add_argument(
        "--max-queue", type=int, default=100, metavar="N", help="jobs waiting before 503"
    )
    s.add_argument(
        "--max-body", type=int, default=MAX_BODY, metavar="BYTES", help="largest request body"
    )
    s.add_argument(
        "--max-download",
        type=int,
        default=MAX_DOWNLOAD,
        metavar="BYTES",
        help="largest results download",
    )
    s.add_argument(
        "--paper-sessions", type=int, default=1, metavar="N", help="paper sessions run at once"
    )
    s.add_argument(
        "--max-paper-duration",
        default="24h",
        metavar="DUR",
        help="longest paper session, and the length of one without live.duration (default 24h)",
    )
    s.add_argument(
        "--live-url",
        action="append",
        metavar="URL",
        help="a stream address paper specs may name in live.ws_url besides Binance's "
        "public ones; repeatable",
    )
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """``tickray serve``: run the service until Ctrl-C or SIGTERM."""
    from tickray.cluster.cli import UsageError

    for name in ("workers", "max_queue", "max_body", "max_download", "paper_sessions"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: must be >= 1")
    try:
        longest = duration_ns(args.max_paper_duration)
    except ValueError as e:
        raise UsageError(f"--max-paper-duration: {e}") from None
    urls = tuple(args.live_url or ())
    for url in urls:
        if not url.startswith(("ws://", "wss://")):
            raise UsageError(f"--live-url: must start with ws:// or wss://, got {url!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data_dir = Path(args.data_dir)
    token, source = resolve_token(args.token, data_dir)
    settings = ServiceSettings(
        data_dir=data_dir,
        token=token,
        host=args.host,
        port=args.port,
        data_roots=tuple(Path(r) for r in args.data_root or ()),
        workers=args.workers,
        max_queue=args.max_queue,
        max_body=args.max_body,
        max_download=args.max_download,
        paper_sessions=args.paper_sessions,
        live_urls=urls,
        max_paper_duration=longest / 1e9,
    )
    if source == "new":
        print(f"tickray serve: API token (saved in {data_dir / 'token'}): {token}", file=sys.stderr)
    else:
        print(f"tickray serve: API token from {source}", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            "tickray serve: warning: listening beyond loopback over plain HTTP; put a TLS "
            "proxy in front",
            file=sys.stderr,
        )
    asyncio.run(_serve(settings))
    return 0


async def _serve(settings: ServiceSettings) -> None:
    from tickray.cluster.cli import UsageError

    try:
        server = await start_server(settings)
    except OSError as e:
        raise UsageError(f"cannot serve on {settings.host}:{settings.port}: {e}") from None
    roots = ", ".join(str(r) for r in settings.roots())
    print(f"tickray serve: listening on {server.url} (data roots: {roots})", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        print("tickray serve: stopping (running jobs become interrupted)", file=sys.stderr)
        await server.close()
