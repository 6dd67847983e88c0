"""Paper sessions in the REST service: ``POST /paper``, live status, ``DELETE`` stops cleanly.

The service runs on 127.0.0.1 (as in tests/test_service.py) and streams from the local
kline server of tests/test_paper.py (synthetic 1 s klines in Binance's combined-stream
format; no recorded data needed), an address the service allows as ``tickray serve
--live-url`` would. Waiting is done on the session's own event stream, never by sleeping.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.parquet as pq
import pytest
from test_paper import KlineServer, paper_spec
from test_service import AUTH, Served, client, get_json, run, settings

from tickray.cluster.jobs import JobStore
from tickray.cluster.service import SpecPolicy
from tickray.engine.spec import SpecError

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def klines() -> Iterator[KlineServer]:
    srv = KlineServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, klines: KlineServer) -> Iterator[Served]:
    """A service allowing the local kline server, paper sessions of at most one hour."""
    base = tmp_path_factory.mktemp("paper-service")
    s = Served(
        settings(
            base / "svc",
            base / "data",
            live_urls=(f"ws://127.0.0.1:{klines.port}/",),
            max_paper_duration=3600.0,
        )
    )
    yield s
    s.close()


async def next_live(ws: aiohttp.ClientWebSocketResponse, after_steps: int) -> dict[str, Any]:
    """The next live event of the session's stream with more than ``after_steps`` steps."""
    async for msg in ws:
        event = json.loads(msg.data)
        if event["type"] == "live" and event["live"]["steps"] > after_steps:
            return dict(event["live"])
        assert event["type"] != "status" or event["status"] in ("queued", "running"), event
    raise AssertionError("the session's stream ended")


def test_a_paper_session_serves_its_live_status_and_stops_cleanly_on_delete(
    served: Served, klines: KlineServer
) -> None:
    spec = paper_spec(klines.port, on_stop="flatten")  # no duration: the service's maximum

    async def scenario() -> None:
        async with client(served) as c:
            async with c.post("/paper", json=spec) as r:
                job = await r.json()
                assert r.status == 202, job
            pid = job["id"]
            assert r.headers["Location"] == f"/paper/{pid}"
            assert job["kind"] == "paper" and job["spec"]["live"]["duration"] == "1h"
            assert job["live"] is None
            await get_json(c, f"/backtests/{pid}", 404)  # a paper session is no backtest
            async with c.ws_connect(f"/paper/{pid}/events") as ws:
                first = await next_live(ws, 2)
                now = await get_json(c, f"/paper/{pid}")
                assert now["status"] == "running" and now["live"]["steps"] >= first["steps"]
                later = await next_live(ws, now["live"]["steps"])
            # the numbers move on with the session, about once a second
            assert later["steps"] > now["live"]["steps"] and later["updated"] > first["updated"]
            assert later["messages"] > first["messages"] > 0
            live = later
            assert set(live["positions"]) == {"AAAUSDT", "BBBUSDT"}
            assert live["equity"] is not None and live["pnl"] == live["equity"] - 100_000.0
            assert live["message_rate"] > 0 and live["bar_latency"]["p50_ms"] is not None
            assert {"p50_ms", "p99_ms"} <= set(live["decision_latency"])
            assert live["reconnects"] == 0 and live["resyncs"] == 0 and live["gaps"] == 0
            assert live["stopped"] is None and 0 <= live["progress"] < 0.01
            listed = await get_json(c, "/paper")
            assert [j["id"] for j in listed["jobs"]] == [pid] and listed["jobs"][0]["live"]
            assert pid not in [j["id"] for j in (await get_json(c, "/backtests"))["jobs"]]
            # DELETE: the session stops at its next step, flattens, writes its results
            async with c.delete(f"/paper/{pid}") as r:
                assert r.status == 202 and (await r.json())["cancel_requested"] is True
            async with c.ws_connect(f"/paper/{pid}/events") as ws:
                async for msg in ws:
                    event = json.loads(msg.data)
                    if event["type"] == "status" and event["status"] != "running":
                        break
            done = await get_json(c, f"/paper/{pid}")
            assert done["status"] == "done" and done["error"] is None, done
            assert done["live"]["stopped"] == "stopped on request"
            assert all(q == 0 for q in done["live"]["positions"].values()), done["live"]
            assert done["session"]["stopped"] == "stopped on request"
            assert done["session"]["steps"] == done["live"]["steps"]
            assert done["metrics"]["portfolio"]["fills"] >= 1, done["metrics"]
            assert set(done["links"]) >= {"fills", "equity", "orders"}
            async with c.get(f"/paper/{pid}/fills") as r:
                fills = await r.json()
                assert r.status == 200 and fills["count"] >= 1
            folder = served.settings.data_dir / "jobs" / pid
            headers = {"Accept": "application/vnd.apache.parquet"}
            async with c.get(f"/paper/{pid}/equity", headers=headers) as r:
                assert r.status == 200
                assert await r.read() == (folder / "equity.parquet").read_bytes()
            assert pq.read_table(folder / "equity.parquet").num_rows == done["live"]["steps"]
            async with c.delete(f"/paper/{pid}") as r:
                assert r.status == 409

    run(scenario(), timeout=60)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"live": {"ws_url": "ws://169.254.169.254/latest"}}, "live.ws_url: ws://169.254.169.254/latest is not an allowed stream address"),
        ({"live": {"ws_url": "wss://fstream.binance.com.evil.example"}}, "live.ws_url: wss://fstream.binance.com.evil.example is not an allowed"),
        ({"live": {"record": "/tmp/anywhere"}}, "live.record: not accepted by the service"),
        ({"live": {"duration": "2h"}}, "live.duration: 2h is longer than the service's maximum of 1h"),
        ({"live": {"market": "coinm"}}, "live.market: must be one of 'spot', 'usdm'"),
        ({"universe": None}, "universe.symbols: paper trading needs the symbols"),
        ({"strategy": {"name": "momentum", "modules": ["os"]}}, "strategy.modules: not accepted"),
        ({"data": {"interval": "7m"}}, "data.interval: spot streams no 7m klines"),
        ({"run": {"backend": "ray"}}, "run.backend: the service runs each paper session"),
        ({"account": {"type": "perp"}, "live": {"market": "usdm"}, "data": {"interval": "1m"}}, "perp.funding: a paper session in the service reads no files"),
    ],
)  # fmt: skip
def test_bad_paper_specs_get_400_naming_the_key_path(
    served: Served, klines: KlineServer, change: dict[str, Any], error: str
) -> None:
    spec = paper_spec(klines.port)
    for section, keys in change.items():
        if keys is None:
            del spec[section]
        else:
            spec[section] = dict(spec.get(section) or {}) | keys

    async def scenario() -> str:
        async with client(served) as c, c.post("/paper", json=spec) as r:
            body = await r.json()
            assert r.status == 400, body
            return str(body["error"])

    assert run(scenario()).startswith(error)


def test_binance_s_own_endpoints_are_allowed_and_a_missing_duration_gets_the_maximum(
    tmp_path: Path,
) -> None:
    policy = SpecPolicy((tmp_path,), max_paper_duration=1800.0)
    for market, url in (("spot", "wss://stream.binance.com:9443/"), ("usdm", None)):
        doc = paper_spec(1) | {"live": {"market": market, "ws_url": url}}
        if market == "usdm":
            doc["data"] = {"interval": "1m"}
        checked = policy.check_paper(doc)
        assert checked["live"]["duration"] == "30m" and doc["live"].get("duration") is None
        assert policy.prepare_paper(checked).live is not None
    with pytest.raises(SpecError, match="live.ws_url: ws://127.0.0.1:1 is not an allowed"):
        policy.check_paper(paper_spec(1))  # loopback is not allowed unless the operator says


def test_serve_takes_only_websocket_live_urls(tmp_path: Path, capsys: Any) -> None:
    from tickray.cluster.cli import main

    args = ["serve", "--data-dir", str(tmp_path), "--live-url", "http://127.0.0.1:1"]
    assert main(args) == 2
    assert "--live-url: must start with ws:// or wss://" in capsys.readouterr().err
    assert main(["serve", "--data-dir", str(tmp_path), "--max-paper-duration", "1x"]) == 2


def test_an_index_from_before_paper_sessions_gains_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL, spec TEXT NOT NULL, created TEXT NOT NULL, started TEXT,
            finished TEXT, progress REAL NOT NULL DEFAULT 0, reached TEXT, error TEXT,
            result TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0);
        INSERT INTO jobs (id, status, spec, created)
            VALUES ('0123456789abcdef', 'done', '{}', '2024-05-01T00:00:00.000Z');"""
    )
    db.commit()
    db.close()
    store = JobStore(path)
    old = store.get("0123456789abcdef")
    assert old is not None and old.kind == "backtest" and old.live is None
    store.add("fedcba9876543210", {}, "paper")
    store.set_live("fedcba9876543210", 0.5, "2024-05-01T00:00:01Z", {"steps": 1})
    new = store.get("fedcba9876543210")
    assert new is not None and new.kind == "paper" and new.live == {"steps": 1}
    assert [j.id for j in store.page(kind="paper")] == ["fedcba9876543210"]
    store.close()


def test_every_paper_route_needs_the_token(served: Served) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession(served.url) as anon:
            for method, path in [
                ("POST", "/paper"),
                ("GET", "/paper"),
                ("GET", "/paper/0123456789abcdef"),
                ("DELETE", "/paper/0123456789abcdef"),
                ("GET", "/paper/0123456789abcdef/fills"),
            ]:
                async with anon.request(method, path) as r:
                    assert r.status == 401, (method, path)
        async with aiohttp.ClientSession(served.url, headers=AUTH) as c:
            await get_json(c, "/paper/0123456789abcdef", 404)

    run(scenario())


def test_a_service_that_stops_ends_its_running_session_with_complete_results(
    tmp_path: Path, klines: KlineServer
) -> None:
    served = Served(
        settings(tmp_path / "svc", tmp_path / "data", live_urls=(f"ws://127.0.0.1:{klines.port}",))
    )
    try:

        async def scenario() -> str:
            async with client(served) as c:
                async with c.post("/paper", json=paper_spec(klines.port, on_stop="keep")) as r:
                    job = await r.json()
                    assert r.status == 202, job
                async with c.ws_connect(f"/paper/{job['id']}/events") as ws:
                    await next_live(ws, 1)
                return str(job["id"])

        pid = run(scenario())
    finally:
        served.close()  # as Ctrl-C or SIGTERM to `tickray serve`
    store = JobStore(tmp_path / "svc" / "jobs.sqlite3")
    job = store.get(pid)
    store.close()
    assert job is not None and job.status == "done" and job.result == f"jobs/{pid}", job
    assert job.live is not None and job.live["stopped"] == "interrupted by SIGTERM"
    live = json.loads((tmp_path / "svc" / job.result / "live.json").read_text())
    assert live["stopped"] == "interrupted by SIGTERM" and live["steps"] >= 2
