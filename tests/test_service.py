"""The REST service (``tickray serve``) on a real aiohttp server on 127.0.0.1.

Each service runs on its own event loop in a background thread, as a deployed one would
serve; the tests are its clients (aiohttp's client, HTTP and websockets). Jobs run in the
service's worker processes on copies of the ``small_universe`` data under a data root,
plus one longer single-symbol history (20 days of 1m bars, unfused steps) for runs that
must still be going when a test cancels them or stops the service. Waiting is done on the
job's own event stream (the websocket), never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickray.cluster.jobs import JobStatus, JobStore
from tickray.cluster.service import (
    TOKEN_ENV,
    RunningServer,
    ServiceSettings,
    negotiate,
    openapi_document,
    resolve_token,
    start_server,
)
from tickray.engine.clock import parse_time

pytestmark = pytest.mark.network

T = TypeVar("T")
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LONG_START = "2024-03-01"
LONG_DAYS = 20
LONG_END = "2024-03-21T00:00:00Z"

SMALL: dict[str, Any] = {
    "data": {"source": "files", "path": "small", "end": "2024-03-01T06:00:00Z"},
    "strategy": {"name": "sma_cross", "params": {"fast": 5, "slow": 20}},
}
"""Three symbols x 6 hours of 1m bars: about 0.1 s of replay."""
TINY: dict[str, Any] = {
    "data": {"source": "files", "path": "small", "end": "2024-03-01T01:00:00Z"},
    "strategy": {"name": "sma_cross", "params": {"fast": 5, "slow": 20}},
}
FULL: dict[str, Any] = {
    "data": {"source": "files", "path": "small"},
    "strategy": {"name": "sma_cross", "params": {"fast": 5, "slow": 20}},
}
"""Three symbols x 2 days."""
LONG: dict[str, Any] = {
    "data": {"source": "files", "path": "long"},
    "strategy": {"name": "sma_cross", "params": {"fast": 5, "slow": 20}},
    "run": {"fuse": False},
}
"""One symbol x 20 days, one round per minute: a few seconds of replay."""


def run(coro: Awaitable[T], timeout: float = 40.0) -> T:
    """Run one client scenario with a hard bound, so a hang fails instead of stalling."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Served:
    """A service on its own event loop in a daemon thread (as ``tickray serve`` runs it)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: RunningServer = self.call(start_server(settings))
        self.url = self.server.url

    def call(self, coro: Awaitable[T], timeout: float = 60.0) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def settings(data_dir: Path, roots: Path, **kw: Any) -> ServiceSettings:
    return ServiceSettings(data_dir=data_dir, token=TOKEN, port=0, data_roots=(roots,), **kw)


@asynccontextmanager
async def client(
    served: Served, headers: dict[str, str] | None = None
) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(served.url, headers=AUTH if headers is None else headers) as c:
        yield c


async def submit(c: aiohttp.ClientSession, spec: dict[str, Any]) -> dict[str, Any]:
    async with c.post("/backtests", json=spec) as r:
        body = await r.json()
        assert r.status == 202, body
        assert r.headers["Location"] == f"/backtests/{body['id']}"
        return dict(body)


async def get_json(c: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
    async with c.get(path) as r:
        body = await r.json()
        assert r.status == status, body
        return body


async def wait_status(c: aiohttp.ClientSession, job_id: str, *wanted: str) -> dict[str, Any]:
    """Follow the job's event stream until its status is one of ``wanted``; the job."""
    async with c.ws_connect(f"/backtests/{job_id}/events") as ws:
        async for msg in ws:
            event = json.loads(msg.data)
            if event["type"] == "status" and event["status"] in wanted:
                return dict(event["job"])
    job = await get_json(c, f"/backtests/{job_id}")  # the stream ended on another status
    assert job["status"] in wanted, job
    return dict(job)


async def wait_running(c: aiohttp.ClientSession, job_id: str) -> float:
    """Follow the job's events until it reports progress past its start; that fraction."""
    async with c.ws_connect(f"/backtests/{job_id}/events") as ws:
        async for msg in ws:
            event = json.loads(msg.data)
            if event["type"] == "progress" and event["progress"] > 0:
                return float(event["progress"])
            if event["type"] == "status":
                assert event["status"] in ("queued", "running"), event
    raise AssertionError(f"job {job_id} ended before it reported progress")


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory, small_universe: Path) -> Path:
    """``<tmp>/data`` (the data root): ``small`` (the small universe, with a harmless
    link cycle), ``long`` (one symbol x 20 days), ``escape`` (a symlink to a folder
    outside), ``sneaky`` (the small universe with one symbol's folder a symlink to
    outside), ``chain`` (a link to sneaky's bars); and ``<tmp>/outside``."""
    from tickray.feeds.store import write_bars
    from tickray.feeds.synthetic import generate_bars

    base = tmp_path_factory.mktemp("service")
    data = base / "data"
    shutil.copytree(small_universe, data / "small")
    shutil.copytree(small_universe, base / "outside" / "small")
    (base / "outside" / "funding.csv").write_text("symbol,fundingTime,fundingRate\n")
    bars = generate_bars(["LONGUSDT"], parse_time(LONG_START), LONG_DAYS * 1440, seed=5)
    write_bars(data / "long", "LONGUSDT", "1m", bars["LONGUSDT"])
    (data / "escape").symlink_to(base / "outside" / "small", target_is_directory=True)
    shutil.copytree(small_universe, data / "sneaky")
    evil = data / "sneaky" / "bars" / "1m" / "EVILUSDT"
    evil.symlink_to(base / "outside" / "small" / "bars" / "1m" / "AAAUSDT")
    # a link inside the roots to a folder that holds a link out, and a link cycle
    (data / "chain").mkdir()
    (data / "chain" / "bars").symlink_to(data / "sneaky" / "bars", target_is_directory=True)
    (data / "small" / "loop").symlink_to(data / "small", target_is_directory=True)
    return data


@pytest.fixture(scope="module")
def served(roots: Path) -> Iterator[Served]:
    """The shared service: 2 workers, room for 64 waiting jobs."""
    s = Served(settings(roots.parent / "svc", roots, workers=2, max_queue=64))
    yield s
    s.close()


@pytest.fixture(scope="module")
def tight(roots: Path) -> Iterator[Served]:
    """A service with one worker, one queue place, 64 KiB bodies and 16 KiB downloads."""
    s = Served(
        settings(
            roots.parent / "tight",
            roots,
            workers=1,
            max_queue=1,
            max_body=64 * 1024,
            max_download=16 * 1024,
        )
    )
    yield s
    s.close()


@dataclass
class Finished:
    job: dict[str, Any]
    folder: Path


@pytest.fixture(scope="module")
def finished(served: Served) -> Finished:
    """A two-day job run to the end on the shared service."""

    async def scenario() -> dict[str, Any]:
        async with client(served) as c:
            job = await submit(c, FULL)
            await wait_status(c, job["id"], "done")
            return dict(await get_json(c, f"/backtests/{job['id']}"))

    job = run(scenario())
    return Finished(job, served.settings.data_dir / "jobs" / job["id"])


# -- auth, health, the document --------------------------------------------------------------------


def test_health_is_open_and_every_other_route_needs_the_bearer_token(served: Served) -> None:
    async def scenario() -> None:
        async with client(served, headers={}) as anon:
            assert await get_json(anon, "/health") == {"status": "ok"}
            for method, path in [
                ("GET", "/backtests"),
                ("POST", "/backtests"),
                ("GET", "/openapi.json"),
                ("GET", "/backtests/0123456789abcdef"),
                ("DELETE", "/backtests/0123456789abcdef"),
                ("GET", "/backtests/0123456789abcdef/fills"),
            ]:
                async with anon.request(method, path) as r:
                    assert r.status == 401, (method, path)
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
                    assert (await r.json())["error"] == "authorization: missing bearer token"
        for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Basic dXNlcjpwdw==", TOKEN):
            async with (
                client(served, headers={"Authorization": wrong}) as c,
                c.get("/backtests") as r,
            ):
                assert r.status == 401, wrong
                assert (await r.json())["error"] == "authorization: wrong bearer token"
        async with client(served) as c:
            assert "jobs" in await get_json(c, "/backtests")

    run(scenario())


def test_the_openapi_document_describes_exactly_the_app_s_routes(served: Served) -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    routes = {(r.method.lower(), r.resource.canonical) for r in served.server.app.router.routes()}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (method, path)
            if path != "/health":  # every route but /health is behind the token
                assert "401" in op["responses"], (method, path)
            named = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
            assert named == set(path.replace("}", "{").split("{")[1::2]), (method, path)

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref
    spec = doc["components"]["schemas"]["Spec"]["properties"]
    assert "live" not in spec and "modules" not in spec["strategy"]["properties"]
    paper = doc["components"]["schemas"]["PaperSpec"]["properties"]
    assert "record" not in paper["live"]["properties"] and "ws_url" in paper["live"]["properties"]

    async def served_doc() -> Any:
        async with client(served) as c:
            return await get_json(c, "/openapi.json")

    assert run(served_doc()) == json.loads(json.dumps(doc))


# -- a run from submission to results ------------------------------------------------------------


def test_a_submitted_backtest_reports_progress_and_ends_done_with_its_metrics(
    served: Served,
) -> None:
    async def scenario() -> None:
        async with client(served) as c:
            job = await submit(c, SMALL)
            assert job["status"] == "queued" and job["started"] is None
            # the spec is kept with its data path made absolute under the root
            assert job["spec"]["data"]["path"] == str(served.settings.roots()[0] / "small")
            seen: list[dict[str, Any]] = []
            async with c.ws_connect(f"/backtests/{job['id']}/events") as ws:
                async for msg in ws:
                    seen.append(json.loads(msg.data))
            assert seen[-1]["type"] == "status" and seen[-1]["status"] == "done"
            progress = [e["progress"] for e in seen if e["type"] == "progress"]
            assert progress == sorted(progress) and progress[-1] == 1.0
            done = await get_json(c, f"/backtests/{job['id']}")
        assert done["status"] == "done" and done["error"] is None
        assert done["progress"] == 1.0
        assert done["reached"] == "2024-03-01T06:00:00Z"  # the simulated time reached
        assert done["created"] <= done["started"] <= done["finished"]
        assert all(done[k].endswith("Z") for k in ("created", "started", "finished"))
        folder = served.settings.data_dir / "jobs" / job["id"]
        assert done["metrics"] == json.loads((folder / "metrics.json").read_text())
        assert done["metrics"]["portfolio"]["trades"] > 0
        assert set(done["links"]) == {"self", "events", "fills", "equity", "orders"}

    run(scenario())


def test_results_download_as_json_arrow_and_parquet_equal_to_the_run_files(
    served: Served, finished: Finished
) -> None:
    job_id = finished.job["id"]

    async def fetch(c: aiohttp.ClientSession, name: str, accept: str | None) -> tuple[str, bytes]:
        headers = {"Accept": accept} if accept else {}
        async with c.get(f"/backtests/{job_id}/{name}", headers=headers) as r:
            assert r.status == 200, await r.text()
            return r.headers["Content-Type"], await r.read()

    async def scenario() -> None:
        async with client(served) as c:
            for name in ("fills", "equity", "orders"):
                path = finished.folder / f"{name}.parquet"
                table = pq.read_table(path)
                assert table.num_rows > 0
                # Parquet: the run's file, byte for byte, under either media type
                for accept in ("application/vnd.apache.parquet", "application/x-parquet"):
                    kind, body = await fetch(c, name, accept)
                    assert kind == accept and body == path.read_bytes()
                # Arrow IPC stream: the same schema and rows
                kind, body = await fetch(c, name, "application/vnd.apache.arrow.stream")
                assert kind == "application/vnd.apache.arrow.stream"
                assert pa.ipc.open_stream(body).read_all().equals(table)
                # JSON (the default): the same rows, times ISO-8601 UTC, NaN as null
                kind, body = await fetch(c, name, None)
                assert kind.startswith("application/json")
                doc = json.loads(body)
                assert doc["table"] == name and doc["count"] == table.num_rows
                assert doc["rows"] == _expected_rows(table)

    run(scenario())


def _expected_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of a results table as the JSON download must give them, computed
    independently of the service: pandas Timestamps as ISO-8601 with a Z."""
    frame = table.to_pandas()
    rows = []
    for rec in frame.to_dict("records"):
        out = {}
        for k, v in rec.items():
            if isinstance(v, pd.Timestamp):
                text = v.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S")
                frac = v.value % 1_000_000_000
                out[k] = text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"
            elif isinstance(v, float) and v != v:
                out[k] = None
            else:
                out[k] = v.item() if hasattr(v, "item") else v
        rows.append(out)
    return rows


def test_downloads_need_a_finished_job_and_an_offered_type(
    served: Served, finished: Finished
) -> None:
    job_id = finished.job["id"]

    async def scenario() -> None:
        async with client(served) as c:
            async with c.get(f"/backtests/{job_id}/fills", headers={"Accept": "text/html"}) as r:
                assert r.status == 406 and (await r.json())["error"].startswith("accept:")
            assert (await get_json(c, "/backtests/0123456789abcdef", 404))["error"].startswith(
                "id: no job"
            )
            await get_json(c, "/backtests/0123456789abcdef/orders", 404)
            await get_json(c, "/backtests/not-an-id", 404)
            async with c.delete(f"/backtests/{job_id}") as r:  # done: nothing to cancel
                assert r.status == 409
            async with c.post(f"/backtests/{job_id}/resume") as r:
                assert r.status == 409

    run(scenario())


def test_the_accept_header_picks_the_format_by_quality() -> None:
    json_, arrow = "application/json", "application/vnd.apache.arrow.stream"
    assert negotiate("") == negotiate("*/*") == negotiate("text/html, */*;q=0.1") == json_
    assert negotiate(arrow) == arrow
    assert negotiate("application/json;q=0.5, application/x-parquet") == "application/x-parquet"
    assert negotiate("application/x-parquet;q=0.2, application/vnd.apache.parquet") == (
        "application/vnd.apache.parquet"
    )
    assert negotiate("application/vnd.apache.parquet;q=0, application/json") == json_
    assert negotiate("text/csv") is None


# -- what a spec may not do ------------------------------------------------------------------------


async def refused(served: Served, body: Any, *, raw: bytes | None = None) -> str:
    async with client(served) as c:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with c.post("/backtests", **kwargs) as r:
            doc = await r.json()
            assert r.status == 400, doc
            return str(doc["error"])


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"bogus": {}}, "bogus: unknown section"),
        ({"data": {"sauce": "files"}}, "data.sauce: unknown key"),
        ({**FULL, "data": {**FULL["data"], "interval": "1x"}}, "data.interval: must be a duration"),
        ({"strategy": {"name": "no_such"}}, "strategy.name: unknown strategy 'no_such'"),
        (
            {**FULL, "strategy": {"name": "sma_cross", "params": {"fast": 0}}},
            "strategy.params.fast: must be an integer >= 1",
        ),
        (
            {**FULL, "strategy": {"name": "sma_cross", "params": {"fast": [5, 6]}}},
            "strategy.params: fast form a grid",
        ),
        (
            {**FULL, "universe": {"symbols": ["ZZZUSDT"]}},
            "universe.symbols: unknown symbol 'ZZZUSDT'",
        ),
        (
            {**FULL, "data": {**FULL["data"], "start": "2024-03-02", "end": "2024-03-01"}},
            "data.end: must be after data.start",
        ),
        (
            {
                "data": {"source": "exchange", "start": "2024-01-01", "end": "2024-01-02"},
                "universe": {"symbols": ["BTCUSDT"]},
            },
            "data.source: 'exchange' is not served",
        ),
        ({**FULL, "run": {"backend": "ray"}}, "run.backend: the service runs"),
        ({**FULL, "run": {"address": "10.0.0.1:6379"}}, "run.address: not accepted"),
        ({**FULL, "live": {"market": "spot"}}, "live: a backtest has no live section"),
        ([FULL], "spec: must be a JSON object"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_specs_get_400_naming_the_key_path(served: Served, spec: Any, error: str) -> None:
    assert run(refused(served, spec)).startswith(error)


def test_a_body_that_is_not_strict_json_gets_400(served: Served) -> None:
    assert run(refused(served, None, raw=b"{data = 1}")).startswith("spec: the body is not JSON")
    nan = b'{"account": {"cash": NaN}}'
    assert run(refused(served, None, raw=nan)) == (
        "spec: the body is not JSON: NaN is not a JSON number"
    )
    deep = b"[" * 100_000 + b"]" * 100_000
    assert run(refused(served, None, raw=deep)).startswith("spec: the body ")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"source": "files", "path": "../outside/small"}, "data.path: ../outside/small is outside"),
        ({"source": "files", "path": "small/../../outside/small"}, "data.path: small/../../"),
        ({"source": "files", "path": "/etc"}, "data.path: /etc is outside the data roots"),
        ({"source": "files", "path": "escape"}, "data.path: escape is outside the data roots"),
        ({"source": "files", "path": "sneaky"}, "data.path: sneaky/bars/1m/EVILUSDT links outside"),
        ({"source": "files", "path": "chain"}, "data.path: chain/bars/1m/EVILUSDT links outside"),
        ({"source": "files", "path": "missing"}, "data.path: missing is not a folder"),
        ({"source": "cache", "path": "../outside"}, "data.path: ../outside is outside"),
        ({"source": "cache"}, "data.path: required with data.source 'cache'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_data_outside_the_data_roots_is_refused(
    served: Served, roots: Path, data: dict[str, Any], error: str
) -> None:
    spec = {"data": data, "universe": {"symbols": ["AAAUSDT"]}, "strategy": FULL["strategy"]}
    got = run(refused(served, spec))
    assert got.startswith(error), got
    assert str(roots.parent) not in got  # no server paths leak beyond what was sent


def test_an_absolute_path_outside_the_roots_and_a_funding_file_outside_are_refused(
    served: Served, roots: Path
) -> None:
    outside = roots.parent / "outside" / "small"
    spec = {"data": {"source": "files", "path": str(outside)}, "strategy": FULL["strategy"]}
    assert run(refused(served, spec)) == f"data.path: {outside} is outside the data roots"
    perp = {
        **FULL,
        "account": {"type": "perp"},
        "universe": {"symbols": ["AAAUSDT"]},
        "perp": {"funding": {"AAAUSDT": "../outside/funding.csv"}},
    }
    assert run(refused(served, perp)).startswith(
        "perp.funding.AAAUSDT: ../outside/funding.csv is outside the data roots"
    )


def test_strategy_modules_are_refused_and_never_imported(served: Served, roots: Path) -> None:
    marker = roots.parent / "imported.txt"
    module = roots / "evil_strategy.py"
    module.write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    spec = {**FULL, "strategy": {"name": "sma_cross", "modules": [str(module)]}}
    assert run(refused(served, spec)).startswith("strategy.modules: not accepted")
    spec = {**FULL, "strategy": {"name": "sma_cross", "modules": "evil_strategy"}}
    assert run(refused(served, spec)).startswith("strategy.modules: not accepted")
    assert not marker.exists()


# -- limits, back-pressure, cancelling --------------------------------------------------------------


def test_a_body_over_the_limit_gets_413(tight: Served) -> None:
    async def scenario() -> None:
        padding = "x" * (65 * 1024)
        spec = {**TINY, "strategy": {"name": "sma_cross", "params": {"fast": 5}}, "pad": padding}
        async with client(tight) as c:
            async with c.post("/backtests", json=spec) as r:
                assert r.status == 413
                assert (await r.json())["error"].startswith("body: ")

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read to the limit
                for _ in range(70):
                    yield b" " * 1024

            async with c.post("/backtests", data=chunks()) as r:
                assert r.status == 413
                assert "error" in await r.json()

    run(scenario())


def test_downloads_over_the_limit_get_413(tight: Served) -> None:
    async def scenario() -> None:
        async with client(tight) as c:
            small = await submit(c, TINY)  # files of a few KiB
            await wait_status(c, small["id"], "done")
            big = await submit(c, FULL)  # fills.parquet is more than 16 KiB
            await wait_status(c, big["id"], "done")
            for accept in ("application/json", "application/vnd.apache.parquet"):
                async with c.get(
                    f"/backtests/{small['id']}/fills", headers={"Accept": accept}
                ) as r:
                    assert r.status == 200
                for name in ("fills", "equity"):
                    async with c.get(
                        f"/backtests/{big['id']}/{name}", headers={"Accept": accept}
                    ) as r:
                        assert r.status == 413
                        error = (await r.json())["error"]
                        assert error.startswith(f"{name}: the download would be")

    run(scenario())


def test_a_full_queue_pushes_back_and_queued_and_running_jobs_can_be_cancelled(
    tight: Served,
) -> None:
    async def scenario() -> None:
        async with client(tight) as c:
            long = await submit(c, LONG)
            await wait_running(c, long["id"])  # the one worker is busy
            queued = await submit(c, TINY)  # the one queue place is taken
            async with c.post("/backtests", json=TINY) as r:
                assert r.status == 503
                assert int(r.headers["Retry-After"]) >= 1
                assert (await r.json())["error"].startswith("the queue is full")
            # a queued job is cancelled at once and never starts
            async with c.delete(f"/backtests/{queued['id']}") as r:
                assert r.status == 200
                job = await r.json()
            assert job["status"] == "cancelled" and job["started"] is None
            # a running job is asked to stop, and stops at its next step
            async with c.delete(f"/backtests/{long['id']}") as r:
                assert r.status == 202
                job = await r.json()
            assert job["status"] == "running" and job["cancel_requested"] is True
            job = await wait_status(c, long["id"], "cancelled")
            assert 0 < job["progress"] < 1
            assert job["reached"] < LONG_END and job["error"].startswith("cancelled at")
            await get_json(c, f"/backtests/{long['id']}/fills", 409)
            async with c.delete(f"/backtests/{long['id']}") as r:
                assert r.status == 409
            # the worker lives on: the cancelled queued job resumes and finishes
            async with c.post(f"/backtests/{queued['id']}/resume") as r:
                assert r.status == 202
            job = await wait_status(c, queued["id"], "done", "failed")
            assert job["status"] == "done" and job["attempts"] == 1
        jobs = tight.settings.data_dir / "jobs"
        assert not (jobs / long["id"]).exists()
        assert not (jobs / f"{long['id']}.partial").exists()

    run(scenario())


def test_a_worker_that_dies_fails_only_its_job_and_the_next_job_gets_a_new_worker(
    tight: Served,
) -> None:
    from tickray.cluster.service import SERVICE

    pool = tight.server.app[SERVICE].pool

    async def scenario() -> None:
        async with client(tight) as c:
            long = await submit(c, LONG)
            await wait_running(c, long["id"])
            pid = tight.call(_pids(pool))[long["id"]]
            os.kill(pid, signal.SIGKILL)  # a crash: no chance to report
            job = await wait_status(c, long["id"], "failed")
            assert job["error"] == f"the worker process died (exit code {-signal.SIGKILL})"
            tiny = await submit(c, TINY)
            job = await wait_status(c, tiny["id"], "done", "failed")
            assert job["status"] == "done", job
            assert tight.call(_pids(pool)) == {}

    run(scenario())


def test_a_run_that_does_not_stop_in_time_is_killed_and_ends_cancelled(roots: Path) -> None:
    """With no grace period the worker is killed instead of waiting for the next step;
    the job still ends cancelled and leaves no results behind."""
    hasty = Served(settings(roots.parent / "hasty", roots, workers=1, stop_grace=0.0))

    async def scenario() -> str:
        async with client(hasty) as c:
            long = await submit(c, LONG)
            await wait_running(c, long["id"])
            async with c.delete(f"/backtests/{long['id']}") as r:
                assert r.status == 202
            job = await wait_status(c, long["id"], "cancelled")
            assert job["error"] == "cancelled while running"
            return str(long["id"])

    try:
        job_id = run(scenario())
    finally:
        hasty.close()
    jobs = roots.parent / "hasty" / "jobs"
    assert not (jobs / job_id).exists() and not (jobs / f"{job_id}.partial").exists()


async def _pids(pool: Any) -> dict[str, int]:
    return dict(pool.worker_pids())


# -- many at once ---------------------------------------------------------------------------------------


def test_fifty_concurrent_submissions_all_finish_with_unique_ids(served: Served) -> None:
    async def scenario() -> None:
        async with client(served) as c:
            specs = [
                {**SMALL, "strategy": {"name": "sma_cross", "params": {"fast": 2 + k % 5}}}
                for k in range(50)
            ]
            jobs = await asyncio.gather(*(submit(c, s) for s in specs))
            ids = [j["id"] for j in jobs]
            assert len(set(ids)) == 50
            for job_id in ids:
                job = await wait_status(c, job_id, "done", "failed")
                assert job["status"] == "done", job
            # all of them are listed as done, newest first, in pages of 20
            listed: list[str] = []
            cursor = None
            while True:
                query = "?status=done&limit=20" + (f"&cursor={cursor}" if cursor else "")
                page = await get_json(c, "/backtests" + query)
                assert len(page["jobs"]) <= 20
                assert all(j["status"] == "done" for j in page["jobs"])
                listed += [j["id"] for j in page["jobs"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert len(listed) == len(set(listed))
            assert set(ids) <= set(listed)
            assert (await get_json(c, "/backtests?status=queued,running"))["jobs"] == []
            bad = await get_json(c, "/backtests?status=finished", 400)
            assert bad["error"].startswith("status: unknown status 'finished'")
            bad = await get_json(c, "/backtests?limit=0", 400)
            assert bad["error"].startswith("limit: must be an integer between 1 and 500")

    run(scenario(), timeout=90)


# -- durability ---------------------------------------------------------------------------------------


def test_a_restarted_service_keeps_its_jobs_and_resumes_an_interrupted_one(roots: Path) -> None:
    data_dir = roots.parent / "durable"
    first = Served(settings(data_dir, roots, workers=1, max_queue=8))

    async def before() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], bytes]:
        async with client(first) as c:
            done = await submit(c, SMALL)
            await wait_status(c, done["id"], "done")
            async with c.get(f"/backtests/{done['id']}/fills") as r:
                fills = await r.read()
            running = await submit(c, LONG)
            await wait_running(c, running["id"])
            waiting = await submit(c, TINY)  # behind the running one (one worker)
            return done, running, waiting, fills

    try:
        done, running, waiting, fills = run(before())
    finally:
        first.close()  # the running job is stopped at its next step
    # a job left "running" by a service that died (no chance to mark it)
    store = JobStore(data_dir / "jobs.sqlite3")
    crashed = store.add("00000000000000c5", TINY)
    store.start(crashed.id)
    assert store.get(running["id"]).status == JobStatus.INTERRUPTED  # type: ignore[union-attr]
    assert store.get(waiting["id"]).status == JobStatus.QUEUED  # type: ignore[union-attr]
    store.close()

    second = Served(settings(data_dir, roots, workers=1, max_queue=8))

    async def after() -> None:
        async with client(second) as c:
            job = await get_json(c, f"/backtests/{done['id']}")
            assert job["status"] == "done" and job["metrics"]["portfolio"]["trades"] > 0
            async with c.get(f"/backtests/{done['id']}/fills") as r:
                assert await r.read() == fills
            listed = {j["id"]: j for j in (await get_json(c, "/backtests"))["jobs"]}
            assert {done["id"], running["id"], waiting["id"], crashed.id} <= set(listed)
            for job_id in (running["id"], crashed.id):
                job = await get_json(c, f"/backtests/{job_id}")
                assert job["status"] == "interrupted" and "resume" in job["error"]
            # the job queued when the service stopped runs on its own
            await wait_status(c, waiting["id"], "done")
            # the interrupted one resumes: from the beginning, to the end
            async with c.post(f"/backtests/{running['id']}/resume") as r:
                assert r.status == 202
                assert (await r.json())["status"] == "queued"
            job = await wait_status(c, running["id"], "done", "failed")
            assert job["status"] == "done" and job["reached"] == LONG_END
            assert job["attempts"] == 2
            async with c.get(
                f"/backtests/{running['id']}/equity",
                headers={"Accept": "application/vnd.apache.arrow.stream"},
            ) as r:
                equity = pa.ipc.open_stream(await r.read()).read_all()
            assert equity.num_rows == LONG_DAYS * 1440  # every step, from the first
            # an interrupted job can also be cancelled for good
            async with c.delete(f"/backtests/{crashed.id}") as r:
                assert r.status == 200 and (await r.json())["status"] == "cancelled"

    try:
        run(after(), timeout=60)
    finally:
        second.close()


# -- the command ------------------------------------------------------------------------------------


def test_the_token_comes_from_the_flag_the_environment_or_a_generated_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token, source = resolve_token(None, tmp_path)
    assert source == "new" and len(token) >= 40  # 32 random bytes, URL-safe base64
    assert (tmp_path / "token").read_text().strip() == token
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
    assert resolve_token(None, tmp_path) == (token, str(tmp_path / "token"))  # kept
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert resolve_token(None, tmp_path) == ("from-env", f"${TOKEN_ENV}")
    assert resolve_token("from-flag", tmp_path) == ("from-flag", "--token")


SERVE = """
import argparse, sys
from tickray.cluster.service import add_serve_parser
p = argparse.ArgumentParser(prog="tickray")
add_serve_parser(p.add_subparsers())
args = p.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def test_the_serve_command_prints_a_new_token_serves_loopback_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """``tickray serve`` as the CLI will run it (its parser and command, in a process of
    its own): a new token is printed and saved, the service answers on 127.0.0.1, and
    SIGTERM stops it cleanly (exit status 0)."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    data_dir = tmp_path / "srv"

    async def scenario() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVE, "serve", "--data-dir", str(data_dir), "--port", "0",
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        lines: list[str] = []
        while not any("listening on" in ln for ln in lines):
            line = await proc.stderr.readline()
            assert line, "serve ended early:\n" + "".join(lines)
            lines.append(line.decode())
        text = "".join(lines)
        token = re.search(r"API token \(saved in .*\): (\S+)", text)
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", text)
        assert token and url, text
        assert token.group(1) == (data_dir / "token").read_text().strip()
        async with aiohttp.ClientSession(url.group(1)) as c:
            async with c.get("/health") as r:
                assert r.status == 200
            async with c.get("/backtests") as r:
                assert r.status == 401
            headers = {"Authorization": f"Bearer {token.group(1)}"}
            async with c.get("/backtests", headers=headers) as r:
                assert r.status == 200 and (await r.json())["jobs"] == []
        proc.send_signal(signal.SIGTERM)
        rest = await proc.stderr.read()
        return await proc.wait(), rest.decode()

    code, rest = run(scenario(), timeout=30)
    assert code == 0, rest
    assert "stopping" in rest
    assert (data_dir / "jobs.sqlite3").is_file()
