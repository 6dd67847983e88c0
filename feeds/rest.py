"""Binance REST client (spot and USD-M futures) with a weight-aware rate limiter.

:class:`BinanceRest` fetches klines, aggTrades and funding-rate history (paginated over any
range, returned as canonical Arrow tables) and exchangeInfo, depth and premiumIndex
(validated dicts), through one pooled ``aiohttp.ClientSession``::

    async with BinanceRest("usdm") as rest:
        bars = await rest.klines("BTCUSDT", "1m", start_ms, end_ms)        # BARS
        funding = await rest.funding_rate("BTCUSDT", start_ms, end_ms)     # FUNDING

Times passed in and out of this module's public methods are epoch **milliseconds** (Binance's
unit); the Arrow tables carry ``ts`` in ns as every canonical schema does.

Every request first takes its weight from a :class:`WeightLimiter`; by default one limiter per
market is shared by every client of the process (Binance counts spot and futures weight
separately, per IP). Failures: 429 honours ``Retry-After`` and retries; 418 raises
:class:`BannedError`; 5xx, timeouts and dropped connections retry with bounded, jittered
exponential backoff; any other 4xx raises :class:`BinanceHTTPError` at once with Binance's
``code`` and ``msg``. Every payload is validated before use: a malformed one raises
:class:`DataError` naming the endpoint, the row and the field.

Request weights charged by :func:`request_weight` (from Binance's API docs on
developers.binance.com; the spot docs list aggTrades at 2 and the spot testnet docs at 4, so
the larger is charged; Binance may change these, and the used-weight header corrects drift):

=====================  =============================  ======================================
endpoint               spot (/api/v3)                 USD-M (/fapi/v1)
=====================  =============================  ======================================
klines                 2                              1 / 2 / 5 / 10 for limit <100 / <500 /
                                                      <=1000 / >1000
aggTrades              4                              20
depth                  5 / 25 / 50 / 250 for limit    2 / 5 / 10 / 20 for limit <=50 / 100 /
                       <=100 / <=500 / <=1000 / more  500 / 1000
exchangeInfo           20                             1
fundingRate            -                              1 (Binance counts it in a separate
                                                      500 per 5 min budget, not modelled)
premiumIndex           -                              1 (one symbol)
=====================  =============================  ======================================
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import pyarrow as pa

from tickray.feeds.binance import KLINE_COLUMNS
from tickray.feeds.schemas import DataError, conform

Market = Literal["spot", "usdm"]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
AcquireRemote = Callable[[int], Awaitable[None]]

BASE_URLS: dict[str, str] = {
    "spot": "https://api.binance.com",
    "usdm": "https://fapi.binance.com",
}
#: Request weight allowed per minute per IP. Binance now publishes 6000 for spot in
#: exchangeInfo; 1200 is the long-standing figure and the safe default.
DEFAULT_BUDGET: dict[str, int] = {"spot": 1200, "usdm": 2400}
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
WINDOW_S = 60.0
MS_NS = 1_000_000

_PATHS: dict[str, dict[str, str]] = {
    "spot": {
        "klines": "/api/v3/klines",
        "aggTrades": "/api/v3/aggTrades",
        "depth": "/api/v3/depth",
        "exchangeInfo": "/api/v3/exchangeInfo",
    },
    "usdm": {
        "klines": "/fapi/v1/klines",
        "aggTrades": "/fapi/v1/aggTrades",
        "depth": "/fapi/v1/depth",
        "exchangeInfo": "/fapi/v1/exchangeInfo",
        "fundingRate": "/fapi/v1/fundingRate",
        "premiumIndex": "/fapi/v1/premiumIndex",
    },
}
#: Largest ``limit`` each paginated endpoint accepts.
MAX_LIMIT: dict[tuple[str, str], int] = {
    ("spot", "klines"): 1000,
    ("usdm", "klines"): 1500,
    ("spot", "aggTrades"): 1000,
    ("usdm", "aggTrades"): 1000,
    ("usdm", "fundingRate"): 1000,
}
#: Binance refuses an aggTrades startTime/endTime window of an hour or more.
AGG_TRADES_WINDOW_MS = 3_600_000 - 1


def request_weight(market: str, endpoint: str, limit: int | None = None) -> int:
    """Weight Binance charges one request to ``endpoint`` (see the module docstring's table)."""
    if endpoint == "klines":
        if market == "spot":
            return 2
        n = 500 if limit is None else limit
        return 1 if n < 100 else 2 if n < 500 else 5 if n <= 1000 else 10
    if endpoint == "aggTrades":
        return 4 if market == "spot" else 20
    if endpoint == "depth":
        n = (100 if market == "spot" else 500) if limit is None else limit
        if market == "spot":
            return 5 if n <= 100 else 25 if n <= 500 else 50 if n <= 1000 else 250
        return 2 if n <= 50 else 5 if n <= 100 else 10 if n <= 500 else 20
    if endpoint == "exchangeInfo":
        return 20 if market == "spot" else 1
    return 1  # fundingRate, premiumIndex (one symbol)


# ---------------------------------------------------------------------------------------------
# Errors


class BinanceHTTPError(RuntimeError):
    """A request Binance refused (4xx other than 429/418) or that kept failing after retries."""

    def __init__(self, message: str, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BannedError(BinanceHTTPError):
    """HTTP 418: the IP is banned. ``retry_after`` s from the response; ``until`` on the limiter clock."""

    def __init__(self, message: str, retry_after: float, until: float) -> None:
        super().__init__(message, status=418)
        self.retry_after = retry_after
        self.until = until


# ---------------------------------------------------------------------------------------------
# Rate limiter


@dataclass(slots=True)
class Spend:
    """Weight booked for one request: ``at`` is None while the request is in flight."""

    weight: int
    at: float | None = None


class WeightLimiter:
    """Keeps the request weight sent in any 60 s window under ``budget * (1 - margin)``.

    A token bucket whose tokens come back :data:`WINDOW_S` seconds after the response that
    spent them (a sliding-window log). A bucket refilled continuously would let up to twice
    the budget through in one minute (a full bucket plus a minute of refill); this one cannot,
    so it also holds in Binance's own calendar-minute windows. Weight is booked before a
    request is sent and counted as in flight until :meth:`settle` (called when its response,
    or its failure, arrives); the window is timed from then, because the server counted it at
    some moment in between and we cannot know which.

    ``observe_used_weight`` resynchronises with the server's ``X-MBX-USED-WEIGHT-1M``: when
    the server has counted more than we booked in the window (other processes on the same IP),
    the difference is booked as spent now, so the limiter slows down.

    ``acquire_remote(weight)`` is the hook for a cluster-wide budget: when given, it is awaited
    once per request after the local budget admits it and must return only when the cluster
    budget (e.g. a Ray actor holding one limiter per IP) admits ``weight`` too; an exception
    from it releases the local booking and propagates, and the request is not sent.

    ``clock`` (seconds, monotonic) and ``sleep`` are injectable so tests run on a fake clock.
    """

    def __init__(
        self,
        budget: int,
        margin: float = 0.1,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        acquire_remote: AcquireRemote | None = None,
        window: float = WINDOW_S,
    ) -> None:
        if budget <= 0 or not 0.0 <= margin < 1.0:
            raise ValueError(f"budget must be > 0 and margin in [0, 1): got {budget}, {margin}")
        self.budget = budget
        self.capacity = max(1, int(budget * (1.0 - margin)))
        self.clock = clock
        self.sleep = sleep
        self.acquire_remote = acquire_remote
        self.window = window
        self._spends: list[Spend] = []
        self._in_window = 0
        self._blocked_until = -math.inf
        self._banned_until = -math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()

    def used(self) -> int:
        """Weight booked in the current window (in flight, ours, and the server's excess)."""
        self._expire(self.clock())
        return self._in_window

    def _expire(self, now: float) -> None:
        kept = [s for s in self._spends if s.at is None or s.at + self.window > now]
        if len(kept) != len(self._spends):
            self._spends = kept
            self._in_window = sum(s.weight for s in kept)

    def _wake_time(self, weight: int) -> float | None:
        """When enough settled weight will have aged out for ``weight`` to fit (None: never)."""
        freed = 0
        for s in sorted((s for s in self._spends if s.at is not None), key=lambda s: s.at or 0.0):
            freed += s.weight
            if self._in_window - freed + weight <= self.capacity:
                return (s.at or 0.0) + self.window
        return None

    def _sync(self) -> tuple[asyncio.Lock, asyncio.Event]:
        # A process-wide limiter may outlive one event loop (several asyncio.run calls).
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._lock, self._settled = loop, asyncio.Lock(), asyncio.Event()
        return self._lock, self._settled

    async def acquire(self, weight: int) -> Spend:
        """Wait until ``weight`` fits in the window and book it (FIFO among waiters).

        Pass the returned :class:`Spend` to :meth:`settle` once the request has finished.
        Raises :class:`BannedError` while a 418 ban lasts.
        """
        weight = min(weight, self.capacity)  # a request heavier than the budget waits for all
        lock, settled = self._sync()
        async with lock:
            while True:
                now = self.clock()
                if now < self._banned_until:
                    left = self._banned_until - now
                    raise BannedError(
                        f"IP banned by Binance for {left:.0f} s more", left, self._banned_until
                    )
                if now < self._blocked_until:
                    await self.sleep(self._blocked_until - now)
                    continue
                self._expire(now)
                if self._in_window + weight <= self.capacity:
                    spend = Spend(weight)
                    self._spends.append(spend)
                    self._in_window += weight
                    break
                wake = self._wake_time(weight)
                if wake is None:  # only in-flight weight is in the way: wait for a response
                    settled.clear()
                    await settled.wait()
                else:
                    await self.sleep(max(wake - now, 1e-6))
        if self.acquire_remote is not None:
            try:
                await self.acquire_remote(weight)
            except BaseException:
                self.settle(spend)
                raise
        return spend

    def settle(self, spend: Spend) -> None:
        """Mark ``spend``'s request finished: its weight leaves the window ``window`` s from now."""
        if spend.at is None:
            spend.at = self.clock()
            self._settled.set()

    def observe_used_weight(self, used: int) -> None:
        """Resynchronise with the server's used weight for the current minute."""
        now = self.clock()
        self._expire(now)
        extra = used - self._in_window
        if extra > 0:
            self._spends.append(Spend(extra, now))
            self._in_window += extra

    def block_for(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (after a 429's Retry-After)."""
        self._blocked_until = max(self._blocked_until, self.clock() + seconds)

    def ban_for(self, seconds: float) -> float:
        """Refuse every request for ``seconds`` (after a 418); returns the ban's end."""
        self._banned_until = max(self._banned_until, self.clock() + seconds)
        return self._banned_until


_SHARED: dict[str, WeightLimiter] = {}


def shared_limiter(market: Market) -> WeightLimiter:
    """The process-wide limiter of ``market`` (created on first use with the default budget)."""
    if market not in _SHARED:
        _SHARED[market] = WeightLimiter(DEFAULT_BUDGET[market])
    return _SHARED[market]


# ---------------------------------------------------------------------------------------------
# Validation


def _num(value: object, where: str) -> float:
    """A Binance decimal string (or a JSON number) as a finite float."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            out = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(out):
                return out
    raise DataError(f"{where} {value!r} is not a number")


def _int(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise DataError(f"{where} {value!r} is not an integer")


def _bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise DataError(f"{where} {value!r} is not a boolean")


def _str(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    raise DataError(f"{where} {value!r} is not a string")


def _list(payload: object, endpoint: str) -> list[Any]:
    if not isinstance(payload, list):
        raise DataError(f"{endpoint}: expected a JSON array, got {type(payload).__name__}")
    return payload


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _field(row: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in row:
        raise DataError(f"{where}: missing field {key!r}")
    return row[key]


def _keyed(row: Mapping[str, Any], key: str, where: str) -> tuple[Any, str]:
    """(value, label) of a required field, for the typed checks above."""
    return _field(row, key, where), f"{where}: field {key!r}"


KLINE_FIELDS = KLINE_COLUMNS
_KLINE_INTS = {0, 6, 8}
_KLINE_NUMS = {1, 2, 3, 4, 5, 7, 9, 10}


def parse_klines(payload: object, endpoint: str = "klines") -> list[tuple[Any, ...]]:
    """Validate a klines response: each row exactly Binance's 12 fields, typed as documented."""
    rows = _list(payload, endpoint)
    out: list[tuple[Any, ...]] = []
    for i, row in enumerate(rows):
        where = f"{endpoint} row {i}"
        if not isinstance(row, list) or len(row) != len(KLINE_FIELDS):
            got = f"{len(row)} fields" if isinstance(row, list) else type(row).__name__
            raise DataError(f"{where}: expected an array of {len(KLINE_FIELDS)} fields, got {got}")
        parsed: list[Any] = []
        for j, value in enumerate(row):
            label = f"{where}: field {j} ({KLINE_FIELDS[j]})"
            if j in _KLINE_INTS:
                parsed.append(_int(value, label))
            elif j in _KLINE_NUMS:
                parsed.append(_num(value, label))
            else:
                parsed.append(value)
        out.append(tuple(parsed))
    return out


def klines_table(rows: list[tuple[Any, ...]], source: str) -> pa.Table:
    """Parsed kline rows as a BARS table (ts = open time)."""
    table = pa.table(
        {
            "ts": pa.array([r[0] * MS_NS for r in rows], type=pa.int64()),
            "open": pa.array([r[1] for r in rows], type=pa.float64()),
            "high": pa.array([r[2] for r in rows], type=pa.float64()),
            "low": pa.array([r[3] for r in rows], type=pa.float64()),
            "close": pa.array([r[4] for r in rows], type=pa.float64()),
            "volume": pa.array([r[5] for r in rows], type=pa.float64()),
            "quote_volume": pa.array([r[7] for r in rows], type=pa.float64()),
            "trade_count": pa.array([r[8] for r in rows], type=pa.int64()),
            "taker_buy_volume": pa.array([r[9] for r in rows], type=pa.float64()),
        }
    )
    return conform(table, "bars", source)


@dataclass(frozen=True, slots=True)
class AggTrade:
    """One validated aggTrades row (``ts_ms`` = Binance's ``T``)."""

    agg_id: int
    price: float
    qty: float
    first_id: int
    last_id: int
    ts_ms: int
    is_buyer_maker: bool


def parse_agg_trades(payload: object, endpoint: str = "aggTrades") -> list[AggTrade]:
    """Validate an aggTrades response (``M`` is spot-only and checked when present)."""
    out: list[AggTrade] = []
    for i, raw in enumerate(_list(payload, endpoint)):
        where = f"{endpoint} row {i}"
        row = _obj(raw, where)
        out.append(
            AggTrade(
                agg_id=_int(*_keyed(row, "a", where)),
                price=_num(*_keyed(row, "p", where)),
                qty=_num(*_keyed(row, "q", where)),
                first_id=_int(*_keyed(row, "f", where)),
                last_id=_int(*_keyed(row, "l", where)),
                ts_ms=_int(*_keyed(row, "T", where)),
                is_buyer_maker=_bool(*_keyed(row, "m", where)),
            )
        )
        if "M" in row:
            _bool(row["M"], f"{where}: field 'M'")
    return out


def agg_trades_table(trades: list[AggTrade], source: str) -> pa.Table:
    """Validated aggTrades as a TRADES table (trade_id = aggregate trade id)."""
    table = pa.table(
        {
            "ts": pa.array([t.ts_ms * MS_NS for t in trades], type=pa.int64()),
            "trade_id": pa.array([t.agg_id for t in trades], type=pa.int64()),
            "price": pa.array([t.price for t in trades], type=pa.float64()),
            "qty": pa.array([t.qty for t in trades], type=pa.float64()),
            "is_buyer_maker": pa.array([t.is_buyer_maker for t in trades], type=pa.bool_()),
        }
    )
    return conform(table, "trades", source)


def parse_funding(
    payload: object, endpoint: str = "fundingRate"
) -> list[tuple[int, float, float | None]]:
    """Validate a fundingRate response into (fundingTime ms, rate, mark price or None).

    Binance sends ``markPrice`` as ``""`` on old records; that becomes a null mark price.
    """
    out: list[tuple[int, float, float | None]] = []
    for i, raw in enumerate(_list(payload, endpoint)):
        where = f"{endpoint} row {i}"
        row = _obj(raw, where)
        _str(_field(row, "symbol", where), f"{where}: field 'symbol'")
        ts = _int(_field(row, "fundingTime", where), f"{where}: field 'fundingTime'")
        rate = _num(_field(row, "fundingRate", where), f"{where}: field 'fundingRate'")
        mark_raw = row.get("markPrice", "")
        mark = None if mark_raw == "" else _num(mark_raw, f"{where}: field 'markPrice'")
        out.append((ts, rate, mark))
    return out


def funding_table(rows: list[tuple[int, float, float | None]], source: str) -> pa.Table:
    """Validated funding rows as a FUNDING table (index_price is not in this endpoint: null)."""
    table = pa.table(
        {
            "ts": pa.array([r[0] * MS_NS for r in rows], type=pa.int64()),
            "funding_rate": pa.array([r[1] for r in rows], type=pa.float64()),
            "mark_price": pa.array([r[2] for r in rows], type=pa.float64()),
        }
    )
    return conform(table, "funding", source)


def parse_depth(payload: object, endpoint: str = "depth") -> dict[str, Any]:
    """Validate a depth snapshot into ``{last_update_id, bids, asks, ts_event_ms}``.

    ``bids``/``asks`` are lists of (price, qty) floats as sent (bids best first);
    ``ts_event_ms`` is the futures ``E`` (absent on spot: None).
    """
    obj = _obj(payload, endpoint)
    out: dict[str, Any] = {
        "last_update_id": _int(
            _field(obj, "lastUpdateId", endpoint), f"{endpoint}: field 'lastUpdateId'"
        ),
        "ts_event_ms": _int(obj["E"], f"{endpoint}: field 'E'") if "E" in obj else None,
    }
    for side in ("bids", "asks"):
        levels = _field(obj, side, endpoint)
        if not isinstance(levels, list):
            raise DataError(f"{endpoint}: field {side!r} is not an array")
        parsed: list[tuple[float, float]] = []
        for i, level in enumerate(levels):
            where = f"{endpoint} {side} row {i}"
            if not isinstance(level, list) or len(level) != 2:
                raise DataError(f"{where}: expected [price, qty], got {level!r}")
            parsed.append((_num(level[0], f"{where}: price"), _num(level[1], f"{where}: qty")))
        out[side] = parsed
    return out


_PREMIUM_NUMS = ("markPrice", "indexPrice", "lastFundingRate")
_PREMIUM_OPTIONAL_NUMS = ("estimatedSettlePrice", "interestRate")


def parse_premium_index(payload: object, endpoint: str = "premiumIndex") -> dict[str, Any]:
    """Validate one symbol's premiumIndex; prices and rates as floats, times as ms ints."""
    obj = _obj(payload, endpoint)
    out: dict[str, Any] = {
        "symbol": _str(_field(obj, "symbol", endpoint), f"{endpoint}: field 'symbol'")
    }
    for key in _PREMIUM_NUMS:
        out[key] = _num(_field(obj, key, endpoint), f"{endpoint}: field {key!r}")
    for key in _PREMIUM_OPTIONAL_NUMS:
        if key in obj:
            out[key] = _num(obj[key], f"{endpoint}: field {key!r}")
    for key in ("nextFundingTime", "time"):
        out[key] = _int(_field(obj, key, endpoint), f"{endpoint}: field {key!r}")
    return out


def parse_exchange_info(payload: object, endpoint: str = "exchangeInfo") -> dict[str, Any]:
    """Validate the parts of exchangeInfo we use (rate limits, symbols); return it unchanged."""
    obj = _obj(payload, endpoint)
    _str(_field(obj, "timezone", endpoint), f"{endpoint}: field 'timezone'")
    _int(_field(obj, "serverTime", endpoint), f"{endpoint}: field 'serverTime'")
    limits = _field(obj, "rateLimits", endpoint)
    if not isinstance(limits, list):
        raise DataError(f"{endpoint}: field 'rateLimits' is not an array")
    for i, raw in enumerate(limits):
        where = f"{endpoint} rateLimits row {i}"
        row = _obj(raw, where)
        for key in ("rateLimitType", "interval"):
            _str(_field(row, key, where), f"{where}: field {key!r}")
        for key in ("intervalNum", "limit"):
            _int(_field(row, key, where), f"{where}: field {key!r}")
    symbols = _field(obj, "symbols", endpoint)
    if not isinstance(symbols, list):
        raise DataError(f"{endpoint}: field 'symbols' is not an array")
    for i, raw in enumerate(symbols):
        where = f"{endpoint} symbols row {i}"
        row = _obj(raw, where)
        for key in ("symbol", "status", "baseAsset", "quoteAsset"):
            _str(_field(row, key, where), f"{where}: field {key!r}")
        if not isinstance(_field(row, "filters", where), list):
            raise DataError(f"{where}: field 'filters' is not an array")
    return obj


def weight_limit(info: Mapping[str, Any]) -> int | None:
    """The REQUEST_WEIGHT limit per minute from a validated exchangeInfo (None if absent)."""
    for row in info["rateLimits"]:
        if (
            row["rateLimitType"] == "REQUEST_WEIGHT"
            and row["interval"] == "MINUTE"
            and row["intervalNum"] == 1
        ):
            return int(row["limit"])
    return None


# ---------------------------------------------------------------------------------------------
# Client


class BinanceRest:
    """Async Binance REST client for one market; use as ``async with BinanceRest(...) as rest``.

    ``session``: an ``aiohttp.ClientSession`` to borrow (not closed on exit); by default the
    client opens and owns one pooled session. ``limiter``: defaults to the process-wide
    :func:`shared_limiter` of the market. ``max_retries``: retries after the first attempt for
    429, 5xx, timeouts and dropped connections. ``timeout``: seconds per attempt.
    ``rng``: jitter source (seed it in tests). ``backoff_base``/``backoff_cap``: the
    exponential backoff starts at ``backoff_base`` s and never exceeds ``backoff_cap`` s
    (before jitter, which scales each delay by a factor in [0.5, 1)).
    """

    def __init__(
        self,
        market: Market = "spot",
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        limiter: WeightLimiter | None = None,
        max_retries: int = 5,
        timeout: float = 10.0,
        *,
        rng: random.Random | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        if market not in BASE_URLS:
            raise ValueError(f"market must be 'spot' or 'usdm', got {market!r}")
        self.market: Market = market
        self.base_url = (base_url or BASE_URLS[market]).rstrip("/")
        self.limiter = limiter if limiter is not None else shared_limiter(market)
        self.max_retries = max_retries
        self.timeout = timeout
        self.rng = rng if rng is not None else random.Random()
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> BinanceRest:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=20),
                headers={"Accept": "application/json"},
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- transport ----------------------------------------------------------------------------

    def _path(self, endpoint: str) -> str:
        try:
            return _PATHS[self.market][endpoint]
        except KeyError:
            raise ValueError(f"{endpoint} is not available on the {self.market} market") from None

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_cap, self.backoff_base * 2.0**attempt)
        return delay * (0.5 + 0.5 * self.rng.random())

    async def _send(
        self, url: str, query: dict[str, str], timeout: aiohttp.ClientTimeout, weight: int
    ) -> tuple[int, str, float | None] | str:
        """One attempt: (status, body, Retry-After s) or the text of a transport failure."""
        assert self._session is not None
        spend = await self.limiter.acquire(weight)
        try:
            async with self._session.get(url, params=query, timeout=timeout) as resp:
                body = await resp.text()
                used = resp.headers.get(USED_WEIGHT_HEADER, "")
                sent = resp.status, body, _retry_after(resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            return f"{type(exc).__name__}: {exc}".rstrip(": ")
        finally:
            self.limiter.settle(spend)
        if used.isdigit():
            self.limiter.observe_used_weight(int(used))
        return sent

    async def get(self, endpoint: str, params: Mapping[str, Any], weight: int) -> Any:
        """GET ``endpoint`` (a key of the market's path table), returning the decoded JSON.

        Waits for ``weight`` on the limiter before every attempt, resynchronises it from the
        used-weight header of every response, and retries or raises as the module docs say.
        """
        if self._session is None:
            raise RuntimeError("BinanceRest used outside 'async with' (no session)")
        url = self.base_url + self._path(endpoint)
        query = {k: str(v) for k, v in params.items() if v is not None}
        label = f"{endpoint} {query}"
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        failure = ""
        for attempt in range(self.max_retries + 1):
            sent = await self._send(url, query, timeout, weight)
            if isinstance(sent, str):  # timeout or dropped connection
                failure = sent
                if attempt < self.max_retries:
                    await self.limiter.sleep(self._backoff(attempt))
                continue
            status, body, retry_after = sent
            if status == 200:
                try:
                    return json.loads(body)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{label}: response is not JSON ({exc})") from None
            if status == 418:
                wait = retry_after if retry_after is not None else 120.0
                until = self.limiter.ban_for(wait)
                raise BannedError(
                    f"{label}: HTTP 418, IP banned for {wait:g} s (Retry-After); {_error_text(body)}",
                    wait,
                    until,
                )
            if status == 429:
                wait = retry_after if retry_after is not None else self._backoff(attempt)
                self.limiter.block_for(wait)
                failure = f"HTTP 429 (Retry-After {wait:g} s): {_error_text(body)}"
                if attempt < self.max_retries:
                    await self.limiter.sleep(wait + self._backoff(attempt))
                continue
            if status >= 500:
                failure = f"HTTP {status}: {_error_text(body)}"
                if attempt < self.max_retries:
                    await self.limiter.sleep(self._backoff(attempt))
                continue
            code, msg = _error_fields(body)
            raise BinanceHTTPError(
                f"{label}: HTTP {status}: Binance error {code}: {msg}", status=status, code=code
            )
        raise BinanceHTTPError(f"{label}: gave up after {self.max_retries + 1} attempts: {failure}")

    # -- endpoints -----------------------------------------------------------------------------

    async def klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int,
        limit: int | None = None,
    ) -> pa.Table:
        """Bars with open time in ``[start_ms, end_ms]`` (both inclusive, ms) as a BARS table.

        Pages of ``limit`` (default: the endpoint's maximum, 1000 spot / 1500 futures); each
        page starts 1 ms after the previous page's last open time, so no bar is fetched twice
        or skipped.
        """
        limit = limit or MAX_LIMIT[(self.market, "klines")]
        weight = request_weight(self.market, "klines", limit)
        rows: list[tuple[Any, ...]] = []
        cursor = start_ms
        while cursor <= end_ms:
            params = {
                "symbol": symbol,
                "interval": interval,
                "startTime": cursor,
                "endTime": end_ms,
                "limit": limit,
            }
            payload = await self.get("klines", params, weight)
            raw = parse_klines(
                payload, f"{self._path('klines')} {symbol} startTime={cursor}: klines"
            )
            page = [r for r in raw if cursor <= r[0] <= end_ms]
            rows.extend(page)
            if len(raw) < limit or not page or page[-1][0] >= end_ms:
                break
            cursor = page[-1][0] + 1
        return klines_table(rows, f"binance {self.market} klines {symbol} {interval}")

    async def agg_trades(
        self, symbol: str, start_ms: int, end_ms: int, limit: int | None = None
    ) -> pa.Table:
        """Aggregate trades with ``T`` in ``[start_ms, end_ms]`` (ms) as a TRADES table.

        The first page is found by time (windows under an hour, as Binance requires); later
        pages continue by ``fromId`` = last aggregate id + 1, which cannot duplicate or skip a
        trade even when many share a millisecond at a page edge.
        """
        limit = limit or MAX_LIMIT[(self.market, "aggTrades")]
        weight = request_weight(self.market, "aggTrades", limit)
        path = self._path("aggTrades")
        trades: list[AggTrade] = []
        window_start = start_ms
        page: list[AggTrade] = []
        while window_start <= end_ms and not page:
            window_end = min(end_ms, window_start + AGG_TRADES_WINDOW_MS)
            params = {
                "symbol": symbol,
                "startTime": window_start,
                "endTime": window_end,
                "limit": limit,
            }
            payload = await self.get("aggTrades", params, weight)
            page = parse_agg_trades(payload, f"{path} {symbol} startTime={window_start}: aggTrades")
            window_start = window_end + 1
        while page:
            kept = [t for t in page if start_ms <= t.ts_ms <= end_ms]
            trades.extend(kept)
            if len(kept) < len(page) or len(page) < limit:
                break
            from_id = page[-1].agg_id + 1
            params = {"symbol": symbol, "fromId": from_id, "limit": limit}
            payload = await self.get("aggTrades", params, weight)
            page = parse_agg_trades(payload, f"{path} {symbol} fromId={from_id}: aggTrades")
        return agg_trades_table(trades, f"binance {self.market} aggTrades {symbol}")

    async def funding_rate(
        self, symbol: str, start_ms: int, end_ms: int, limit: int | None = None
    ) -> pa.Table:
        """Funding events with ``fundingTime`` in ``[start_ms, end_ms]`` (ms) as a FUNDING table.

        USD-M only. Pages continue 1 ms after the last funding time of the previous page.
        """
        path = self._path("fundingRate")
        limit = limit or MAX_LIMIT[(self.market, "fundingRate")]
        weight = request_weight(self.market, "fundingRate", limit)
        rows: list[tuple[int, float, float | None]] = []
        cursor = start_ms
        while cursor <= end_ms:
            params = {"symbol": symbol, "startTime": cursor, "endTime": end_ms, "limit": limit}
            payload = await self.get("fundingRate", params, weight)
            raw = parse_funding(payload, f"{path} {symbol} startTime={cursor}: fundingRate")
            page = [r for r in raw if cursor <= r[0] <= end_ms]
            rows.extend(page)
            if len(raw) < limit or not page or page[-1][0] >= end_ms:
                break
            cursor = page[-1][0] + 1
        return funding_table(rows, f"binance usdm fundingRate {symbol}")

    async def depth(self, symbol: str, limit: int = 100) -> dict[str, Any]:
        """Order book snapshot (see :func:`parse_depth`)."""
        weight = request_weight(self.market, "depth", limit)
        payload = await self.get("depth", {"symbol": symbol, "limit": limit}, weight)
        return parse_depth(payload, f"{self._path('depth')} {symbol}: depth")

    async def exchange_info(
        self, symbol: str | None = None, symbols: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """exchangeInfo (validated, see :func:`parse_exchange_info`); optionally of one
        ``symbol`` or, on spot, of ``symbols`` (sent as Binance's JSON array parameter;
        an unknown name gets HTTP 400, code -1121). USD-M ignores both and lists all."""
        if symbol is not None and symbols is not None:
            raise ValueError("exchange_info: give symbol or symbols, not both")
        weight = request_weight(self.market, "exchangeInfo")
        listed = json.dumps(list(symbols), separators=(",", ":")) if symbols else None
        params = {"symbol": symbol, "symbols": listed}
        payload = await self.get("exchangeInfo", params, weight)
        return parse_exchange_info(payload, f"{self._path('exchangeInfo')}: exchangeInfo")

    async def premium_index(self, symbol: str) -> dict[str, Any]:
        """Mark price, index price and funding of one USD-M symbol (see :func:`parse_premium_index`)."""
        weight = request_weight(self.market, "premiumIndex")
        payload = await self.get("premiumIndex", {"symbol": symbol}, weight)
        return parse_premium_index(payload, f"{self._path('premiumIndex')} {symbol}: premiumIndex")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (Binance sends an integer number of seconds)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _error_fields(body: str) -> tuple[int | None, str]:
    """Binance's ``{"code": -1121, "msg": "Invalid symbol."}``, or the raw body."""
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return None, body[:200]
    if isinstance(obj, dict) and "code" in obj:
        code = obj["code"] if isinstance(obj["code"], int) else None
        return code, str(obj.get("msg", ""))
    return None, body[:200]


def _error_text(body: str) -> str:
    code, msg = _error_fields(body)
    return f"code {code}: {msg}" if code is not None else msg
