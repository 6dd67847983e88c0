"""BinanceRest against a real aiohttp server on 127.0.0.1 that speaks Binance's REST formats.

Every test runs on a fake clock: the limiter and the retry backoff sleep on it, and the
server stamps each request with it, so budgets and waits are asserted without real waiting.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pyarrow as pa
import pytest
from aiohttp import web

from tickray.feeds.rest import (
    BannedError,
    BinanceHTTPError,
    BinanceRest,
    WeightLimiter,
    request_weight,
    shared_limiter,
    weight_limit,
)
from tickray.feeds.schemas import BARS, FUNDING, TRADES, DataError, conform

pytestmark = pytest.mark.network

T = TypeVar("T")
REST_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crypto" / "rest" / "nautilus"
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z, ms
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
EIGHT_HOURS_MS = 8 * HOUR_MS


def run(coro: Awaitable[T]) -> T:
    """Run one test scenario with a hard bound, so a hang fails instead of stalling the suite."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout=5.0)

    return asyncio.run(bounded())


class FakeClock:
    """Monotonic seconds that move only when someone sleeps on them."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------------------------
# Binance-format data


def kline_row(i: int) -> list[Any]:
    """Bar i of a 1m series, exactly Binance's 12 fields (prices and volumes as strings)."""
    t = T0 + i * MINUTE_MS
    o = 100.0 + (i % 97) * 0.01
    c = o + 0.005
    v = 1.0 + (i % 13)
    return [
        t,
        f"{o:.8f}",
        f"{c + 0.01:.8f}",
        f"{o - 0.01:.8f}",
        f"{c:.8f}",
        f"{v:.8f}",
        t + MINUTE_MS - 1,
        f"{v * o:.8f}",
        10 + i % 7,
        f"{v / 2:.8f}",
        f"{v * o / 2:.8f}",
        "0",
    ]


def agg_trade(i: int, spot: bool, t_start: int) -> dict[str, Any]:
    """Aggregate trade i; three trades share each millisecond, so page edges split a ms."""
    row: dict[str, Any] = {
        "a": 5_000_000 + i,
        "p": f"{42000 + (i % 50) * 0.1:.8f}",
        "q": f"{0.001 * (1 + i % 9):.8f}",
        "f": 9_000_000 + 2 * i,
        "l": 9_000_000 + 2 * i + 1,
        "T": t_start + (i // 3) * 7,
        "m": i % 2 == 0,
    }
    if spot:
        row["M"] = True
    return row


def funding_row(i: int) -> dict[str, Any]:
    """Funding event i; the first ten have markPrice "" as Binance's old records do."""
    return {
        "symbol": "BTCUSDT",
        "fundingTime": T0 + i * EIGHT_HOURS_MS,
        "fundingRate": f"{0.0001 + (i % 5) * 0.00001:.8f}",
        "markPrice": "" if i < 10 else f"{42000 + i:.8f}",
    }


DEPTH = {
    "lastUpdateId": 14527958487,
    "bids": [["60650.00000000", "0.00213000"], ["60648.08000000", "0.06346000"]],
    "asks": [["60650.01000000", "1.20000000"], ["60651.00000000", "0.50000000"]],
}
PREMIUM = {
    "symbol": "BTCUSDT",
    "markPrice": "42012.50000000",
    "indexPrice": "42010.11230000",
    "estimatedSettlePrice": "42009.87000000",
    "lastFundingRate": "0.00010000",
    "interestRate": "0.00010000",
    "nextFundingTime": T0 + EIGHT_HOURS_MS,
    "time": T0 + 1234,
}


def server_weight(market: str, endpoint: str, q: dict[str, str]) -> int:
    """What Binance charges, per its API docs (kept apart from the client's own table)."""
    limit = int(q.get("limit", "0")) or None
    if market == "spot":
        fixed = {"klines": 2, "aggTrades": 4, "exchangeInfo": 20}
        if endpoint == "depth":
            n = limit or 100
            return 5 if n <= 100 else 25 if n <= 500 else 50 if n <= 1000 else 250
        return fixed[endpoint]
    if endpoint == "klines":
        n = limit or 500
        return 1 if n < 100 else 2 if n < 500 else 5 if n <= 1000 else 10
    if endpoint == "depth":
        n = limit or 500
        return {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}[n]
    return {"aggTrades": 20}.get(endpoint, 1)


@dataclass
class Scripted:
    """A canned response served instead of the real one (``hold``: wait for it first)."""

    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    hold: asyncio.Event | None = None


@dataclass
class Seen:
    at: float
    endpoint: str
    query: dict[str, str]
    weight: int


class FakeBinance:
    """The subset of api.binance.com / fapi.binance.com that BinanceRest uses."""

    def __init__(self, market: str, clock: FakeClock) -> None:
        self.market = market
        self.clock = clock
        self.klines = [kline_row(i) for i in range(3500)]
        self.trades: list[dict[str, Any]] = []
        self.funding = [funding_row(i) for i in range(1500)]
        self.exchange_info: Any = None
        self.script: dict[str, list[Scripted]] = defaultdict(list)
        self.seen: list[Seen] = []
        self.used_weight_override: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        prefix = "/api/v3" if self.market == "spot" else "/fapi/v1"
        app.router.add_get(prefix + "/{endpoint}", self.handle)
        return app

    def used_weight(self) -> int:
        now = self.clock()
        return sum(s.weight for s in self.seen if s.at > now - 60.0)

    async def handle(self, request: web.Request) -> web.Response:
        endpoint = request.match_info["endpoint"]
        q = dict(request.query)
        self.seen.append(Seen(self.clock(), endpoint, q, server_weight(self.market, endpoint, q)))
        used = self.used_weight_override if self.used_weight_override is not None else None
        headers = {"X-MBX-USED-WEIGHT-1M": str(used if used is not None else self.used_weight())}
        if self.script[endpoint]:
            canned = self.script[endpoint].pop(0)
            if canned.hold is not None:
                await asyncio.wait_for(canned.hold.wait(), 2.0)
            return web.Response(
                status=canned.status,
                text=canned.body,
                headers={**headers, **canned.headers},
                content_type="application/json",
            )
        status, payload = getattr(self, "_" + endpoint)(q)
        return web.Response(
            status=status,
            text=json.dumps(payload, separators=(",", ":")),
            headers=headers,
            content_type="application/json",
        )

    def _klines(self, q: dict[str, str]) -> tuple[int, Any]:
        if q.get("symbol") != "BTCUSDT":
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        cap = 1000 if self.market == "spot" else 1500
        limit = min(int(q.get("limit", "500")), cap)
        start, end = q.get("startTime"), q.get("endTime")
        rows = [
            r
            for r in self.klines
            if (start is None or r[0] >= int(start)) and (end is None or r[0] <= int(end))
        ]
        return 200, rows[:limit] if start is not None else rows[-limit:]

    def _aggTrades(self, q: dict[str, str]) -> tuple[int, Any]:
        limit = min(int(q.get("limit", "500")), 1000)
        if "fromId" in q:
            return 200, [t for t in self.trades if t["a"] >= int(q["fromId"])][:limit]
        start, end = int(q["startTime"]), int(q["endTime"])
        if end - start >= HOUR_MS:
            return 400, {"code": -1127, "msg": "More than 1 hours between startTime and endTime."}
        return 200, [t for t in self.trades if start <= t["T"] <= end][:limit]

    def _fundingRate(self, q: dict[str, str]) -> tuple[int, Any]:
        limit = min(int(q.get("limit", "100")), 1000)
        start, end = int(q["startTime"]), int(q["endTime"])
        return 200, [r for r in self.funding if start <= r["fundingTime"] <= end][:limit]

    def _depth(self, q: dict[str, str]) -> tuple[int, Any]:
        if self.market == "usdm":
            return 200, {"lastUpdateId": DEPTH["lastUpdateId"], "E": T0, "T": T0 - 3, **DEPTH}
        return 200, DEPTH

    def _premiumIndex(self, q: dict[str, str]) -> tuple[int, Any]:
        return 200, PREMIUM

    def _exchangeInfo(self, q: dict[str, str]) -> tuple[int, Any]:
        return 200, self.exchange_info


@asynccontextmanager
async def binance(
    market: str = "spot",
    *,
    budget: int = 1200,
    margin: float = 0.1,
    max_retries: int = 5,
    timeout: float = 2.0,
    acquire_remote: Callable[[int], Awaitable[None]] | None = None,
) -> AsyncIterator[tuple[FakeBinance, BinanceRest, FakeClock]]:
    """A FakeBinance on an ephemeral 127.0.0.1 port and a client for it on a fake clock."""
    clock = FakeClock()
    fake = FakeBinance(market, clock)
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    limiter = WeightLimiter(
        budget, margin, clock=clock, sleep=clock.sleep, acquire_remote=acquire_remote
    )
    client = BinanceRest(
        market,  # type: ignore[arg-type]
        base_url=f"http://{host}:{port}",
        limiter=limiter,
        max_retries=max_retries,
        timeout=timeout,
        rng=random.Random(7),
    )
    try:
        async with client:
            yield fake, client, clock
    finally:
        await runner.cleanup()


def reference_bars(rows: list[list[Any]]) -> pa.Table:
    """BARS built straight from Binance rows, independently of the client's parser."""
    table = pa.table(
        {
            "ts": pa.array([r[0] * 1_000_000 for r in rows], type=pa.int64()),
            "open": [float(r[1]) for r in rows],
            "high": [float(r[2]) for r in rows],
            "low": [float(r[3]) for r in rows],
            "close": [float(r[4]) for r in rows],
            "volume": [float(r[5]) for r in rows],
            "quote_volume": [float(r[7]) for r in rows],
            "trade_count": pa.array([r[8] for r in rows], type=pa.int64()),
            "taker_buy_volume": [float(r[9]) for r in rows],
        }
    )
    return conform(table, "bars", "reference")


# ---------------------------------------------------------------------------------------------
# Weights


def test_request_weights_follow_binance_docs() -> None:
    # USD-M klines by limit: [1,100) -> 1, [100,500) -> 2, [500,1000] -> 5, >1000 -> 10.
    assert [request_weight("usdm", "klines", n) for n in (99, 100, 499, 1000, 1500)] == [
        1,
        2,
        2,
        5,
        10,
    ]
    assert request_weight("spot", "klines", 1000) == 2
    assert [request_weight("spot", "depth", n) for n in (100, 500, 1000, 5000)] == [5, 25, 50, 250]
    assert [request_weight("usdm", "depth", n) for n in (50, 100, 500, 1000)] == [2, 5, 10, 20]
    assert request_weight("spot", "exchangeInfo") == 20
    assert request_weight("usdm", "exchangeInfo") == 1
    assert request_weight("spot", "aggTrades") == 4
    assert request_weight("usdm", "aggTrades") == 20


# ---------------------------------------------------------------------------------------------
# Pagination


@pytest.mark.parametrize(("market", "pages"), [("spot", 4), ("usdm", 3)])
def test_klines_paginate_to_the_exact_reference_range(market: str, pages: int) -> None:
    # Bars 5 .. 3404 inclusive = 3400 rows: spot pages of 1000 -> 4 requests (1000, 1000,
    # 1000, 400); futures pages of 1500 -> 3 requests (1500, 1500, 400).
    async def scenario() -> tuple[pa.Table, FakeBinance]:
        async with binance(market) as (fake, rest, _):
            start, end = fake.klines[5][0], fake.klines[3404][0]
            return await rest.klines("BTCUSDT", "1m", start, end), fake

    table, fake = run(scenario())
    assert table.schema == BARS
    assert table.equals(reference_bars(fake.klines[5:3405]))
    starts = [int(s.query["startTime"]) for s in fake.seen]
    assert len(starts) == pages
    # Each page starts 1 ms after the previous page's last open time.
    size = 1000 if market == "spot" else 1500
    assert starts[1] == fake.klines[5 + size - 1][0] + 1


def test_klines_range_past_the_end_is_empty_bars() -> None:
    async def scenario() -> pa.Table:
        async with binance() as (fake, rest, _):
            start = fake.klines[-1][0] + MINUTE_MS
            return await rest.klines("BTCUSDT", "1m", start, start + HOUR_MS)

    table = run(scenario())
    assert table.num_rows == 0 and table.schema == BARS


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_agg_trades_paginate_by_id_without_gaps_or_repeats(market: str) -> None:
    # 2600 trades, three per ms, starting 90 minutes after the requested start: the first
    # hour-long window is empty, the second finds the first page, later pages go by fromId.
    # The requested end cuts the series at trade 2400's millisecond (trades 2400..2402).
    async def scenario() -> tuple[pa.Table, FakeBinance]:
        async with binance(market) as (fake, rest, _):
            start = T0
            fake.trades = [agg_trade(i, market == "spot", T0 + 90 * MINUTE_MS) for i in range(2600)]
            end = fake.trades[2400]["T"]
            return await rest.agg_trades("BTCUSDT", start, end), fake

    table, fake = run(scenario())
    assert table.schema == TRADES
    expected = fake.trades[:2403]
    assert table.column("trade_id").to_pylist() == [t["a"] for t in expected]
    assert table.column("price").to_pylist() == [float(t["p"]) for t in expected]
    assert table.column("is_buyer_maker").to_pylist() == [t["m"] for t in expected]
    kinds = [("fromId" in s.query, "startTime" in s.query) for s in fake.seen]
    assert kinds == [(False, True), (False, True), (True, False), (True, False)]


def test_funding_rate_paginates_and_keeps_old_blank_mark_prices_null() -> None:
    # 1500 events every 8 h; all of them requested -> pages of 1000 and 500.
    async def scenario() -> tuple[pa.Table, FakeBinance]:
        async with binance("usdm") as (fake, rest, _):
            end = fake.funding[-1]["fundingTime"]
            return await rest.funding_rate("BTCUSDT", T0, end), fake

    table, fake = run(scenario())
    assert table.schema == FUNDING
    assert table.num_rows == 1500 and len(fake.seen) == 2
    assert table.column("ts").cast(pa.int64()).to_pylist() == [
        r["fundingTime"] * 1_000_000 for r in fake.funding
    ]
    marks = table.column("mark_price").to_pylist()
    assert marks[:10] == [None] * 10 and marks[10] == 42010.0
    assert table.column("funding_rate").to_pylist()[1] == pytest.approx(0.00011)


def test_funding_rate_is_refused_on_spot() -> None:
    async def scenario() -> None:
        async with binance("spot") as (_, rest, _):
            await rest.funding_rate("BTCUSDT", T0, T0 + HOUR_MS)

    with pytest.raises(ValueError, match="fundingRate is not available on the spot market"):
        run(scenario())


# ---------------------------------------------------------------------------------------------
# Snapshots: depth, premiumIndex, exchangeInfo


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_depth_snapshot_parses_levels_and_is_charged_by_limit(market: str) -> None:
    async def scenario() -> tuple[dict[str, Any], FakeBinance]:
        async with binance(market) as (fake, rest, _):
            return await rest.depth("BTCUSDT", limit=500), fake

    book, fake = run(scenario())
    assert book["last_update_id"] == 14527958487
    assert book["bids"][0] == (60650.0, 0.00213) and book["asks"][1] == (60651.0, 0.5)
    assert book["ts_event_ms"] == (None if market == "spot" else T0)
    assert fake.seen[0].weight == (25 if market == "spot" else 10)


def test_premium_index_is_a_validated_dict() -> None:
    async def scenario() -> dict[str, Any]:
        async with binance("usdm") as (_, rest, _):
            return await rest.premium_index("BTCUSDT")

    got = run(scenario())
    assert got["markPrice"] == 42012.5 and got["lastFundingRate"] == 0.0001
    assert got["nextFundingTime"] == T0 + EIGHT_HOURS_MS


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("market", "name", "limit", "weight"),
    [
        ("spot", "http_spot_market_exchange_info.json", 1200, 20),
        ("usdm", "http_futures_market_exchange_info.json", 6000, 1),
    ],
)
def test_exchange_info_from_captured_binance_response(
    market: str, name: str, limit: int, weight: int
) -> None:
    path = REST_DATA / name
    if not path.is_file():
        pytest.skip(f"captured Binance response not found at {path} (see ../shared/data/README.md)")
    payload = json.loads(path.read_text())

    async def scenario() -> tuple[dict[str, Any], FakeBinance]:
        async with binance(market) as (fake, rest, _):
            fake.exchange_info = payload
            return await rest.exchange_info(), fake

    info, fake = run(scenario())
    assert info == payload
    assert weight_limit(info) == limit
    assert "BTCUSDT" in {s["symbol"] for s in info["symbols"]}
    assert fake.seen[0].weight == weight


# ---------------------------------------------------------------------------------------------
# Rate limiting


def test_high_used_weight_header_makes_the_client_wait_a_window() -> None:
    # Budget 1200 with a 10 % margin -> capacity 1080. The server reports 1100 already used
    # (another process on the IP), so the next 2-weight request must wait until that usage
    # ages out: 60 s on the fake clock.
    async def scenario() -> tuple[FakeBinance, FakeClock]:
        async with binance() as (fake, rest, clock):
            fake.used_weight_override = 1100
            await rest.klines("BTCUSDT", "1m", T0, T0)
            fake.used_weight_override = None
            await rest.klines("BTCUSDT", "1m", T0, T0)
            return fake, clock

    fake, clock = run(scenario())
    assert fake.seen[1].at - fake.seen[0].at == pytest.approx(60.0)
    assert sum(clock.sleeps) == pytest.approx(60.0)


def test_concurrent_requests_never_exceed_the_budget_in_any_window() -> None:
    # Budget 100, no margin; 12 spot depth(limit=500) calls of weight 25 each = 300 weight,
    # so at most 4 per 60 s window: the server must see them in three waves.
    async def scenario() -> FakeBinance:
        async with binance(budget=100, margin=0.0) as (fake, rest, _):
            await asyncio.gather(*(rest.depth("BTCUSDT", limit=500) for _ in range(12)))
            return fake

    fake = run(scenario())
    assert len(fake.seen) == 12
    for s in fake.seen:
        in_window = sum(o.weight for o in fake.seen if s.at - 60.0 < o.at <= s.at)
        assert in_window <= 100, f"{in_window} weight in the 60 s before t={s.at}"
    assert len({s.at for s in fake.seen}) == 3


def test_cluster_hook_is_awaited_with_each_request_weight() -> None:
    granted: list[int] = []

    async def acquire_remote(weight: int) -> None:
        granted.append(weight)

    async def scenario() -> None:
        async with binance("usdm", acquire_remote=acquire_remote) as (_, rest, _):
            await rest.depth("BTCUSDT", limit=100)
            await rest.premium_index("BTCUSDT")

    run(scenario())
    assert granted == [5, 1]


def test_default_limiter_is_shared_per_market_across_clients() -> None:
    assert BinanceRest("spot").limiter is BinanceRest("spot").limiter is shared_limiter("spot")
    assert BinanceRest("usdm").limiter is not shared_limiter("spot")
    assert shared_limiter("usdm").capacity == 2160  # 2400 minus the 10 % margin


# ---------------------------------------------------------------------------------------------
# Errors and retries


def test_429_waits_retry_after_then_succeeds() -> None:
    async def scenario() -> tuple[pa.Table, FakeBinance, FakeClock]:
        async with binance() as (fake, rest, clock):
            body = json.dumps({"code": -1003, "msg": "Too many requests."})
            fake.script["klines"].append(Scripted(429, body, {"Retry-After": "7"}))
            table = await rest.klines("BTCUSDT", "1m", T0, T0 + 2 * MINUTE_MS)
            return table, fake, clock

    table, fake, clock = run(scenario())
    assert table.num_rows == 3 and len(fake.seen) == 2
    # Waited the 7 s Retry-After plus a jitter of 0.25-0.5 s (backoff base 0.5 s, attempt 0).
    assert 7.25 <= fake.seen[1].at - fake.seen[0].at < 7.5


def test_418_raises_banned_error_with_the_ban_end_and_blocks_later_calls() -> None:
    async def scenario() -> tuple[BannedError, BannedError, FakeBinance, float]:
        async with binance() as (fake, rest, clock):
            body = json.dumps({"code": -1003, "msg": "Way too many requests; IP banned."})
            fake.script["klines"].append(Scripted(418, body, {"Retry-After": "120"}))
            t = clock()
            with pytest.raises(BannedError) as first:
                await rest.klines("BTCUSDT", "1m", T0, T0)
            with pytest.raises(BannedError) as second:
                await rest.depth("BTCUSDT")
            return first.value, second.value, fake, t

    first, second, fake, t = run(scenario())
    assert first.retry_after == 120.0 and first.until == t + 120.0
    assert "IP banned for 120 s" in str(first) and "-1003" in str(first)
    assert second.until == first.until
    assert len(fake.seen) == 1  # the second call never reached the server


def test_5xx_twice_then_success_with_bounded_jittered_backoff() -> None:
    async def scenario() -> tuple[dict[str, Any], FakeBinance, FakeClock]:
        async with binance() as (fake, rest, clock):
            fake.script["depth"] += [Scripted(500, "oops"), Scripted(503, "")]
            return await rest.depth("BTCUSDT"), fake, clock

    book, fake, clock = run(scenario())
    assert book["last_update_id"] == 14527958487 and len(fake.seen) == 3
    # Backoff 0.5 s then 1 s, each scaled by a jitter factor in [0.5, 1).
    assert len(clock.sleeps) == 2
    assert 0.25 <= clock.sleeps[0] < 0.5 and 0.5 <= clock.sleeps[1] < 1.0


def test_timeout_then_success() -> None:
    async def scenario() -> tuple[dict[str, Any], FakeBinance]:
        async with binance(timeout=0.05) as (fake, rest, _):
            hold = asyncio.Event()
            fake.script["depth"].append(Scripted(200, json.dumps(DEPTH), hold=hold))
            try:
                return await rest.depth("BTCUSDT"), fake
            finally:
                hold.set()

    book, fake = run(scenario())
    assert book["bids"][0] == (60650.0, 0.00213) and len(fake.seen) == 2


def test_exhausted_retries_raise_with_the_last_failure() -> None:
    async def scenario() -> FakeBinance:
        async with binance(max_retries=2) as (fake, rest, _):
            fake.script["depth"] += [Scripted(503, "busy")] * 3
            with pytest.raises(BinanceHTTPError, match="gave up after 3 attempts: HTTP 503"):
                await rest.depth("BTCUSDT")
            return fake

    assert len(run(scenario()).seen) == 3


def test_400_raises_at_once_with_binance_code_and_msg() -> None:
    async def scenario() -> tuple[BinanceHTTPError, FakeBinance]:
        async with binance() as (fake, rest, _):
            with pytest.raises(BinanceHTTPError) as err:
                await rest.klines("NOPE", "1m", T0, T0)
            return err.value, fake

    err, fake = run(scenario())
    assert err.status == 400 and err.code == -1121
    assert "Binance error -1121: Invalid symbol." in str(err)
    assert len(fake.seen) == 1


# ---------------------------------------------------------------------------------------------
# Malformed payloads


def _bad_close(rows: list[list[Any]]) -> list[list[Any]]:
    rows[17][4] = "x"
    return rows


def _short_row(rows: list[list[Any]]) -> list[list[Any]]:
    rows[3] = rows[3][:11]
    return rows


def _no_price(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    del rows[3]["p"]
    return rows


def _bad_rate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows[2]["fundingRate"] = "NaN"
    return rows


@pytest.mark.parametrize(
    ("market", "endpoint", "payload", "message"),
    [
        (
            "spot",
            "klines",
            _bad_close([kline_row(i) for i in range(20)]),
            "/api/v3/klines BTCUSDT startTime=1704067200000: klines row 17: field 4 (close) 'x' "
            "is not a number",
        ),
        (
            "usdm",
            "klines",
            _short_row([kline_row(i) for i in range(5)]),
            "/fapi/v1/klines BTCUSDT startTime=1704067200000: klines row 3: expected an array "
            "of 12 fields, got 11 fields",
        ),
        (
            "spot",
            "aggTrades",
            _no_price([agg_trade(i, True, T0) for i in range(5)]),
            "aggTrades row 3: missing field 'p'",
        ),
        (
            "usdm",
            "fundingRate",
            _bad_rate([funding_row(i) for i in range(10, 15)]),
            "/fapi/v1/fundingRate BTCUSDT startTime=1704067200000: fundingRate row 2: field "
            "'fundingRate' 'NaN' is not a number",
        ),
        ("spot", "depth", {**DEPTH, "asks": [["1.0"]]}, "depth asks row 0: expected [price, qty]"),
        (
            "usdm",
            "premiumIndex",
            {k: v for k, v in PREMIUM.items() if k != "markPrice"},
            "premiumIndex: missing field 'markPrice'",
        ),
        (
            "spot",
            "exchangeInfo",
            {"timezone": "UTC", "serverTime": T0, "rateLimits": [{"rateLimitType": "X"}]},
            "exchangeInfo rateLimits row 0: missing field 'interval'",
        ),
        ("spot", "klines", {"not": "a list"}, "klines: expected a JSON array, got dict"),
    ],
)
def test_malformed_payload_raises_data_error_naming_endpoint_and_row(
    market: str, endpoint: str, payload: Any, message: str
) -> None:
    calls: dict[str, Callable[[BinanceRest], Awaitable[object]]] = {
        "klines": lambda r: r.klines("BTCUSDT", "1m", T0, T0 + HOUR_MS),
        "aggTrades": lambda r: r.agg_trades("BTCUSDT", T0, T0 + 60_000),
        "fundingRate": lambda r: r.funding_rate("BTCUSDT", T0, T0 + 10 * EIGHT_HOURS_MS),
        "depth": lambda r: r.depth("BTCUSDT"),
        "premiumIndex": lambda r: r.premium_index("BTCUSDT"),
        "exchangeInfo": lambda r: r.exchange_info(),
    }

    async def scenario() -> None:
        async with binance(market) as (fake, rest, _):
            fake.script[endpoint].append(Scripted(200, json.dumps(payload)))
            await calls[endpoint](rest)

    with pytest.raises(DataError) as err:
        run(scenario())
    assert message in str(err.value)


def test_non_json_body_raises_data_error() -> None:
    async def scenario() -> None:
        async with binance() as (fake, rest, _):
            fake.script["depth"].append(Scripted(200, "<html>maintenance</html>"))
            await rest.depth("BTCUSDT")

    with pytest.raises(DataError, match="depth .*response is not JSON"):
        run(scenario())


# ---------------------------------------------------------------------------------------------
# Session ownership


def test_borrowed_session_is_left_open_and_own_session_is_closed() -> None:
    async def scenario() -> tuple[bool, bool]:
        async with aiohttp.ClientSession() as session:
            async with BinanceRest("spot", session=session):
                pass
            borrowed_open = not session.closed
        owner = BinanceRest("usdm")
        async with owner:
            own = owner._session
        return borrowed_open, own is not None and own.closed

    assert run(scenario()) == (True, True)
