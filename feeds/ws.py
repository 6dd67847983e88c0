"""Binance websocket market data (spot and USD-M futures): stream names, a reconnecting
combined-stream client, and the parsers that turn each message into typed events.

Protocol (Binance "WebSocket Streams" docs, spot and USD-M):

- One connection carries many streams on the *combined* endpoint
  ``<base>/stream?streams=<s1>/<s2>/...``; every message is wrapped as
  ``{"stream": "btcusdt@trade", "data": {...}}``. Bases: ``wss://stream.binance.com:9443``
  (spot) and ``wss://fstream.binance.com`` (USD-M); tests pass ``ws://127.0.0.1:<port>``.
- Stream names are ``<lowercase symbol>@<kind>``: ``depth`` (spot every 1000 ms, USD-M every
  250 ms), ``depth@100ms``, ``depth@500ms`` (USD-M), ``depth@0ms`` (USD-M, real time; not in
  the public docs but served, and used by hftbacktest's collector), ``trade``, ``aggTrade``,
  ``bookTicker``, ``kline_<interval>`` and ``markPrice`` / ``markPrice@1s`` (USD-M).
  :class:`Subscription` builds a symbol's set; :func:`combined_url` the URL.
- Streams can be added and removed on an open connection with
  ``{"method": "SUBSCRIBE" | "UNSUBSCRIBE", "params": [...], "id": n}``; Binance answers
  ``{"result": null, "id": n}`` or ``{"error": {"code": c, "msg": "..."}, "id": n}`` and accepts
  at most 5 (spot) / 10 (USD-M) such messages per second per connection.
- Keepalive: Binance pings every 20 s (spot) or 3 min (USD-M) and drops a connection that does
  not pong in time. The ``websockets`` library answers every ping with a pong by itself, in
  its protocol layer, even while the consumer is busy; it also sends its own pings every
  ``ping_interval`` s and closes the connection when no pong comes within ``ping_timeout`` s.
- Binance ends every connection after 24 h. The client reconnects proactively after
  ``max_lifetime`` s (default 23 h 50 min) so that the cut happens at a time of our choosing;
  whatever is lost in between shows up as a depth sequence gap and resyncs the book
  (:mod:`tickray.feeds.livebook`).

:class:`BinanceWs` is an async iterator of :class:`WsMessage` ``(recv_ns, stream, data)``:
``recv_ns`` is the local receive time in int64 ns since the epoch, UTC, from an injectable
clock (default ``time.time_ns``), never going back (a wall-clock step back is clamped and
counted); ``data`` is the message parsed into a typed event (:class:`DepthDiff`,
:class:`Trade`, :class:`Top`, :class:`MarkPrice`, :class:`Kline`) whose prices and
quantities are floats and whose exchange times (``*_ms``) are Binance's epoch milliseconds.
The client reconnects with jittered exponential backoff (seeded ``random.Random``, capped),
after a dropped connection, after a silent one (a watchdog closes a connection that received
nothing for ``stall_timeout`` s) and before the 24 h limit; :class:`WsStats` counts
connections, reconnects, stalls, messages per stream and errors.

Validation happens here, at the edge: a message that is not JSON, lacks a field, or carries a
value of the wrong type, a negative or non-finite price or quantity, or another symbol than its
stream raises :class:`~tickray.feeds.schemas.DataError` naming the stream and the field. The
client counts it, keeps its text in ``stats.error_log`` and skips the message (``strict=True``
raises instead); it never drops one silently. A skipped depth diff breaks the depth sequence,
so the book resyncs.

Every received text (and every REST snapshot a book fetched, via :meth:`BinanceWs.note_snapshot`)
gets a session sequence number ``seq`` (0, 1, 2, ...) and goes, before any parsing, to an
optional :class:`MessageSink` such as :class:`tickray.feeds.wsrecord.WsRecorder`, so that a live
session can be replayed exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import chain
from typing import Annotated, Any, Generic, Literal, NamedTuple, Protocol, TypeVar

import aiohttp
import msgspec
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    InvalidURI,
    WebSocketException,
)
from websockets.protocol import State

from tickray.feeds.schemas import DataError

Market = Literal["spot", "usdm"]
Clock = Callable[[], int]
Sleep = Callable[[float], Awaitable[None]]

WS_BASE_URLS: dict[str, str] = {
    "spot": "wss://stream.binance.com:9443",
    "usdm": "wss://fstream.binance.com",
}
#: Depth update speeds per market; the first is the plain ``<symbol>@depth`` stream.
DEPTH_SPEEDS: dict[str, tuple[str, ...]] = {
    "spot": ("1000ms", "100ms"),
    "usdm": ("250ms", "500ms", "100ms", "0ms"),
}
KLINE_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)
#: Streams one connection may carry.
MAX_STREAMS: dict[str, int] = {"spot": 1024, "usdm": 200}
#: Control messages (SUBSCRIBE, UNSUBSCRIBE, ...) Binance accepts per second per connection.
CONTROL_RATE: dict[str, int] = {"spot": 5, "usdm": 10}
#: Binance closes every connection after this many seconds.
CONNECTION_LIFETIME_S = 24 * 3600.0
DEFAULT_MAX_LIFETIME_S = CONNECTION_LIFETIME_S - 600.0
#: The client's receive loop gives the event loop a turn every this many messages.
_YIELD_EVERY = 64

_INF = math.inf


# ---------------------------------------------------------------------------------------------
# stream names


class StreamKind(IntEnum):
    """What a stream carries (the part of its name after ``<symbol>@``)."""

    DEPTH = 1
    TRADE = 2
    AGG_TRADE = 3
    BOOK_TICKER = 4
    KLINE = 5
    MARK_PRICE = 6


_DEPTH_RE = re.compile(r"depth(?:@([0-9]+ms))?")
_MARK_RE = re.compile(r"markPrice(?:@1s)?")


def stream_kind(stream: str) -> tuple[str, StreamKind]:
    """``(SYMBOL, kind)`` of a stream name such as ``"btcusdt@depth@100ms"``.

    Raises DataError for a name that is not one of the kinds listed in the module docstring
    (partial-book ``depth5`` streams, user data and all-market streams are not supported).
    """
    prefix, at, suffix = stream.partition("@")
    if at and prefix and prefix == prefix.lower():
        if _DEPTH_RE.fullmatch(suffix):
            return prefix.upper(), StreamKind.DEPTH
        if suffix == "trade":
            return prefix.upper(), StreamKind.TRADE
        if suffix == "aggTrade":
            return prefix.upper(), StreamKind.AGG_TRADE
        if suffix == "bookTicker":
            return prefix.upper(), StreamKind.BOOK_TICKER
        if suffix.startswith("kline_") and suffix[6:] in KLINE_INTERVALS:
            return prefix.upper(), StreamKind.KLINE
        if _MARK_RE.fullmatch(suffix):
            return prefix.upper(), StreamKind.MARK_PRICE
    raise DataError(
        f"unknown stream {stream!r}: expected <symbol>@depth[@<n>ms], <symbol>@trade, "
        f"<symbol>@aggTrade, <symbol>@bookTicker, <symbol>@kline_<interval> or "
        f"<symbol>@markPrice[@1s] with a lowercase symbol"
    )


def _check_market(market: str) -> Market:
    if market == "spot":
        return "spot"
    if market == "usdm":
        return "usdm"
    raise ValueError(f"market must be 'spot' or 'usdm', got {market!r}")


def depth_stream(symbol: str, speed: str, market: Market) -> str:
    """``<symbol>@depth[@<speed>]``; ``speed`` is one of :data:`DEPTH_SPEEDS` of ``market``."""
    speeds = DEPTH_SPEEDS[_check_market(market)]
    if speed not in speeds:
        raise ValueError(f"{market} depth speed must be one of {speeds}, got {speed!r}")
    base = f"{symbol.lower()}@depth"
    return base if speed == speeds[0] else f"{base}@{speed}"


def kline_stream(symbol: str, interval: str, market: Market) -> str:
    """``<symbol>@kline_<interval>`` (``1s`` bars exist on spot only)."""
    if interval not in KLINE_INTERVALS or (interval == "1s" and _check_market(market) != "spot"):
        raise ValueError(f"no {market} kline interval {interval!r}")
    return f"{symbol.lower()}@kline_{interval}"


def mark_price_stream(symbol: str, speed: str = "1s") -> str:
    """USD-M ``<symbol>@markPrice@1s`` (``speed="1s"``) or ``<symbol>@markPrice`` (``"3s"``)."""
    if speed not in ("1s", "3s"):
        raise ValueError(f"markPrice speed must be '1s' or '3s', got {speed!r}")
    base = f"{symbol.lower()}@markPrice"
    return f"{base}@1s" if speed == "1s" else base


@dataclass(frozen=True, slots=True)
class Subscription:
    """The streams of one symbol.

    ``depth``: a depth speed (see :data:`DEPTH_SPEEDS`) or None for no diff stream;
    ``trades``/``agg_trades``/``book_ticker``: those streams; ``klines``: bar intervals;
    ``mark_price``: ``"1s"``, ``"3s"`` or None (USD-M only).
    """

    symbol: str
    depth: str | None = "100ms"
    trades: bool = True
    agg_trades: bool = False
    book_ticker: bool = True
    klines: tuple[str, ...] = ()
    mark_price: str | None = None

    def streams(self, market: Market) -> tuple[str, ...]:
        """The stream names, in a fixed order (depth, trade, aggTrade, bookTicker, klines, mark)."""
        sym = self.symbol.lower()
        out: list[str] = []
        if self.depth is not None:
            out.append(depth_stream(sym, self.depth, market))
        if self.trades:
            out.append(f"{sym}@trade")
        if self.agg_trades:
            out.append(f"{sym}@aggTrade")
        if self.book_ticker:
            out.append(f"{sym}@bookTicker")
        out += [kline_stream(sym, interval, market) for interval in self.klines]
        if self.mark_price is not None:
            if market != "usdm":
                raise ValueError(f"{self.symbol}: markPrice streams exist on USD-M only")
            out.append(mark_price_stream(sym, self.mark_price))
        return tuple(out)


def combined_url(market: Market, streams: Iterable[str], base_url: str | None = None) -> str:
    """``<base>/stream?streams=a/b/c``: the combined-stream URL (ValueError if empty or too many)."""
    names = list(streams)
    if not names:
        raise ValueError("a combined stream needs at least one stream name")
    limit = MAX_STREAMS[_check_market(market)]
    if len(names) > limit:
        raise ValueError(f"{len(names)} streams on one {market} connection: Binance allows {limit}")
    for name in names:
        stream_kind(name)
    base = (base_url or WS_BASE_URLS[market]).rstrip("/")
    return f"{base}/stream?streams={'/'.join(names)}"


# ---------------------------------------------------------------------------------------------
# typed events


#: Flat ``[price, qty, price, qty, ...]`` levels: a float64 array as decoded (a list works too).
Levels = npt.NDArray[np.float64] | list[float]


class DepthDiff(NamedTuple):
    """One ``depthUpdate``: update ids ``first_id`` (U) .. ``last_id`` (u), ``prev_id`` (pu,
    USD-M only, else None); ``bids``/``asks`` flat ``[price, qty, price, qty, ...]`` as sent
    (qty 0 deletes the level), float64 arrays from :class:`MessageDecoder` (a diff made by
    hand may hold lists); ``event_ms`` is E. The levels stay numpy arrays from the decoder to
    the book and its rows (a USD-M depth@0ms diff carries about 66 levels)."""

    first_id: int
    last_id: int
    prev_id: int | None
    bids: Levels
    asks: Levels
    event_ms: int


class Trade(NamedTuple):
    """One ``trade`` (``trade_id`` = t) or ``aggTrade`` (``trade_id`` = a); ``trade_ms`` is T."""

    trade_id: int
    price: float
    qty: float
    is_buyer_maker: bool
    trade_ms: int


class Top(NamedTuple):
    """One ``bookTicker``: best bid and ask after update ``update_id`` (u); ``event_ms`` is
    USD-M's E (spot sends no time)."""

    update_id: int
    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float
    event_ms: int | None


class MarkPrice(NamedTuple):
    """One USD-M ``markPriceUpdate``: mark (p) and index (i) prices, the current funding rate
    estimate (r, None when sent empty) and the next funding time (T)."""

    mark_price: float
    index_price: float | None
    funding_rate: float | None
    next_funding_ms: int
    event_ms: int


class Kline(NamedTuple):
    """One ``kline`` message: the bar opened at ``open_ms`` as it stands; ``closed`` (x) is
    true on the bar's final message."""

    interval: str
    open_ms: int
    close_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trade_count: int
    taker_buy_volume: float
    closed: bool


class ControlReply(NamedTuple):
    """Binance's answer to a SUBSCRIBE/UNSUBSCRIBE/...: ``error`` is ``(code, msg)`` or None."""

    id: int | None
    result: Any
    error: tuple[int | None, str] | None


Event = DepthDiff | Trade | Top | MarkPrice | Kline


class WsMessage(NamedTuple):
    """One stream message: local receive time (ns, UTC), stream name, parsed event."""

    recv_ns: int
    stream: str
    data: Event


# ---------------------------------------------------------------------------------------------
# validation and parsing


def _is_int(v: object) -> bool:
    return type(v) is int


def _is_bool(v: object) -> bool:
    return type(v) is bool


def _is_dec(v: object) -> bool:
    """A finite, non-negative decimal (Binance sends strings; JSON numbers are accepted)."""
    if type(v) is bool or not isinstance(v, str | int | float):
        return False
    try:
        x = float(v)
    except ValueError:
        return False
    return 0.0 <= x < _INF


def _is_signed_dec(v: object) -> bool:
    if v == "":
        return True
    if type(v) is bool or not isinstance(v, str | int | float):
        return False
    try:
        return math.isfinite(float(v))
    except ValueError:
        return False


def _is_levels(v: object) -> bool:
    return isinstance(v, list)


_WHAT: dict[Callable[[object], bool], str] = {
    _is_int: "an integer",
    _is_bool: "true or false",
    _is_dec: "a finite, non-negative decimal",
    _is_signed_dec: "a finite decimal",
    _is_levels: "a list of [price, qty]",
}
_Spec = tuple[tuple[str, Callable[[object], bool]], ...]


def _explain(data: object, stream: str, symbol: str, spec: _Spec) -> DataError:
    """The DataError for the first field of ``data`` that fails ``spec`` (the slow path)."""
    if not isinstance(data, dict):
        return DataError(f"{stream}: 'data' is {type(data).__name__}, expected a JSON object")
    if "s" not in data:
        return DataError(f"{stream}: missing field 's'")
    if data["s"] != symbol:
        return DataError(f"{stream}: field 's' is {data['s']!r}, expected {symbol!r}")
    for name, check in spec:
        if name not in data:
            return DataError(f"{stream}: missing field {name!r}")
        if not check(data[name]):
            return DataError(f"{stream}: field {name!r} is {data[name]!r}: expected {_WHAT[check]}")
    return DataError(f"{stream}: malformed message {data!r:.200}")


#: Decimal text -> float, for the depth levels: prices and quantities repeat all the time, and
#: a dict lookup costs half a float() parse (measured: 0.11 s instead of 0.22 s for the 887k
#: values of a 6-minute USD-M BTCUSDT depth@0ms stream). Cleared when it grows past the bound.
_FLOATS: dict[object, float] = {}
_FLOATS_MAX = 1 << 18


def parse_levels(raw: object, where: str) -> list[float]:
    """``[[price, qty], ...]`` of decimal strings -> flat ``[price, qty, ...]`` floats.

    DataError (naming ``where``, the level and what is wrong) unless every level is a
    two-element list of finite, non-negative decimals.
    """
    if type(raw) is list and set(map(type, raw)) <= {list} and set(map(len, raw)) <= {2}:
        texts = list(chain.from_iterable(raw))
        try:
            flat = _cached_floats(texts)
        except (TypeError, ValueError):
            raise _level_error(raw, where) from None
        # min catches negatives and -inf; the sum is NaN or inf if any value is
        if not flat or (min(flat) >= 0.0 and sum(flat) < _INF):
            return flat
    raise _level_error(raw, where)


def _cached_floats(texts: list[Any]) -> list[float]:
    cached: list[float | None] = list(map(_FLOATS.get, texts))
    if None not in cached:
        return cached  # type: ignore[return-value]
    flat = [float(t) if v is None else v for t, v in zip(texts, cached, strict=True)]
    if len(_FLOATS) > _FLOATS_MAX:
        _FLOATS.clear()
    _FLOATS.update(zip(texts, flat, strict=True))
    return flat


def _level_error(raw: object, where: str) -> DataError:
    if not isinstance(raw, list):
        return DataError(f"{where} is {type(raw).__name__}, expected a list of [price, qty]")
    for i, level in enumerate(raw):
        if not isinstance(level, list) or len(level) != 2:
            return DataError(f"{where} level {i} is {level!r}: expected [price, qty]")
        for name, value in zip(("price", "qty"), level, strict=True):
            if not _is_dec(value):
                return DataError(
                    f"{where} level {i} {name} is {value!r}: expected a finite, non-negative decimal"
                )
    return DataError(f"{where}: malformed levels")


_TRADE_SPEC: _Spec = (
    ("t", _is_int),
    ("p", _is_dec),
    ("q", _is_dec),
    ("m", _is_bool),
    ("T", _is_int),
)
_AGG_SPEC: _Spec = (("a", _is_int),) + _TRADE_SPEC[1:]
_TOP_SPEC: _Spec = (
    ("u", _is_int),
    ("b", _is_dec),
    ("B", _is_dec),
    ("a", _is_dec),
    ("A", _is_dec),
)
_DEPTH_SPEC: _Spec = (("E", _is_int), ("U", _is_int), ("u", _is_int))
_MARK_SPEC: _Spec = (("E", _is_int), ("p", _is_dec), ("r", _is_signed_dec), ("T", _is_int))
_KLINE_SPEC: _Spec = (
    ("t", _is_int),
    ("T", _is_int),
    ("o", _is_dec),
    ("h", _is_dec),
    ("l", _is_dec),
    ("c", _is_dec),
    ("v", _is_dec),
    ("q", _is_dec),
    ("n", _is_int),
    ("V", _is_dec),
    ("x", _is_bool),
)

Parser = Callable[[Any], Event]


def _trade_parser(stream: str, symbol: str, agg: bool) -> Parser:
    id_field = "a" if agg else "t"
    spec = _AGG_SPEC if agg else _TRADE_SPEC

    def parse(data: Any) -> Event:
        try:
            tid, t, m = data[id_field], data["T"], data["m"]
            p, q = float(data["p"]), float(data["q"])
            ok = data["s"] == symbol and type(tid) is int and type(t) is int and type(m) is bool
            ok = ok and 0.0 <= p < _INF and 0.0 <= q < _INF
        except (KeyError, TypeError, ValueError):
            ok = False
        if ok:
            return Trade(tid, p, q, m, t)
        raise _explain(data, stream, symbol, spec)

    return parse


def _top_parser(stream: str, symbol: str) -> Parser:
    def parse(data: Any) -> Event:
        try:
            u = data["u"]
            b, bq, a, aq = float(data["b"]), float(data["B"]), float(data["a"]), float(data["A"])
            e = data.get("E")
            ok = data["s"] == symbol and type(u) is int and (e is None or type(e) is int)
        except (KeyError, TypeError, ValueError, AttributeError):
            ok = False
        # the sum is inf or NaN if any value is; min catches negatives
        if ok and min(b, bq, a, aq) >= 0.0 and b + bq + a + aq < _INF:
            return Top(u, b, bq, a, aq, e)
        spec = _TOP_SPEC + ((("E", _is_int),) if isinstance(data, dict) and "E" in data else ())
        raise _explain(data, stream, symbol, spec)

    return parse


def _depth_parser(stream: str, symbol: str, futures: bool) -> Parser:
    spec = (
        _DEPTH_SPEC
        + ((("pu", _is_int),) if futures else ())
        + (("b", _is_levels), ("a", _is_levels))
    )

    def parse(data: Any) -> Event:
        try:
            first, last, e = data["U"], data["u"], data["E"]
            prev = data["pu"] if futures else None
            raw_b, raw_a = data["b"], data["a"]
            ok = data["s"] == symbol and type(first) is int and type(last) is int
            ok = ok and type(e) is int and (not futures or type(prev) is int)
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise _explain(data, stream, symbol, spec)
        if first > last:
            raise DataError(f"{stream}: depth diff U {first} > u {last}")
        bids = parse_levels(raw_b, f"{stream}: field 'b'")
        asks = parse_levels(raw_a, f"{stream}: field 'a'")
        return DepthDiff(first, last, prev, _array(bids), _array(asks), e)

    return parse


def _mark_parser(stream: str, symbol: str) -> Parser:
    def parse(data: Any) -> Event:
        if not isinstance(data, dict) or data.get("s") != symbol:
            raise _explain(data, stream, symbol, _MARK_SPEC)
        for name, check in _MARK_SPEC:
            if not check(data.get(name)):
                raise _explain(data, stream, symbol, _MARK_SPEC)
        index = data.get("i")
        if index is not None and not _is_dec(index):
            raise DataError(f"{stream}: field 'i' is {index!r}: expected {_WHAT[_is_dec]}")
        rate = data["r"]
        return MarkPrice(
            float(data["p"]),
            None if index is None else float(index),
            None if rate == "" else float(rate),
            data["T"],
            data["E"],
        )

    return parse


def _kline_parser(stream: str, symbol: str) -> Parser:
    interval = stream.partition("@kline_")[2]

    def parse(data: Any) -> Event:
        if not isinstance(data, dict) or data.get("s") != symbol:
            raise _explain(data, stream, symbol, (("k", lambda v: isinstance(v, dict)),))
        k = data.get("k")
        if not isinstance(k, dict):
            raise DataError(f"{stream}: field 'k' is {k!r}: expected a JSON object")
        for name, check in _KLINE_SPEC:
            if name not in k:
                raise DataError(f"{stream}: missing field 'k.{name}'")
            if not check(k[name]):
                raise DataError(
                    f"{stream}: field 'k.{name}' is {k[name]!r}: expected {_WHAT[check]}"
                )
        return Kline(
            interval,
            k["t"],
            k["T"],
            float(k["o"]),
            float(k["h"]),
            float(k["l"]),
            float(k["c"]),
            float(k["v"]),
            float(k["q"]),
            k["n"],
            float(k["V"]),
            k["x"],
        )

    return parse


def _control(msg: dict[str, Any], text: str) -> ControlReply:
    msg_id = msg.get("id")
    msg_id = msg_id if type(msg_id) is int else None
    err = msg.get("error")
    if err is None and "code" in msg and "msg" in msg:  # a bare {"code": ..., "msg": ...}
        err = msg
    if err is not None:
        code = err.get("code") if isinstance(err, dict) else None
        text_ = str(err.get("msg", "")) if isinstance(err, dict) else str(err)
        return ControlReply(msg_id, None, (code if type(code) is int else None, text_))
    if "result" not in msg:
        raise DataError(
            f"neither a stream message (no 'stream'/'data') nor a reply (no 'result'/'error'): "
            f"{text[:120]!r}"
        )
    return ControlReply(msg_id, msg["result"], None)


# ---------------------------------------------------------------------------------------------
# the fast path: typed decoding in C (msgspec) and numba
#
# The depth, trade, aggTrade and bookTicker messages of a stream seen before are decoded by
# msgspec straight into typed fields; a depth diff's levels are left as raw JSON text there
# and read into one float64 array by a compiled scanner (tickray.feeds.wslevels), or by
# msgspec's lax mode when the text is not in the scanner's exact form. A 66-level USD-M
# depth@0ms diff takes ~5 us instead of ~55 us, a trade ~2 us instead of ~4.5 us.
#
# The fast path only ever *accepts* what the parsers above accept, with the same values;
# whatever it does not accept (a malformed message, but also a JSON number where Binance sends
# a string, or a float text that Python reads and msgspec does not, such as " 1.5" or "1_0")
# goes through the parsers above, which give the event or the DataError naming the field.
# Integers, booleans and the symbol are decoded in strict mode (a "7" is not an integer there,
# as above); only the levels' fallback uses msgspec's lax mode, which reads a decimal string
# as a float, with the range check (finite, non-negative) that parse_levels makes. Trade and
# bookTicker prices are a few per message: float() here, as above.

_D = TypeVar("_D")
_Level = Annotated[float, msgspec.Meta(ge=0.0, le=1.7976931348623157e308)]
_LEVELS = msgspec.json.Decoder(list[tuple[_Level, _Level]], strict=False)
_FastParser = Callable[[str], Event | None]


class _Envelope(msgspec.Struct, Generic[_D]):
    stream: str
    data: _D


class _SpotDepth(msgspec.Struct):
    E: int
    s: str
    U: int
    u: int
    b: msgspec.Raw
    a: msgspec.Raw


class _FutDepth(msgspec.Struct):
    E: int
    s: str
    U: int
    u: int
    pu: int
    b: msgspec.Raw
    a: msgspec.Raw


class _Trade(msgspec.Struct):
    s: str
    t: int
    p: str
    q: str
    m: bool
    T: int


class _AggTrade(msgspec.Struct):
    s: str
    t: int = msgspec.field(name="a")  # the aggregate trade id, read as a trade's id
    p: str
    q: str
    m: bool
    T: int


class _Top(msgspec.Struct):
    s: str
    u: int
    b: str
    B: str
    a: str
    A: str
    E: int | None = None


def _array(flat: list[float]) -> npt.NDArray[np.float64]:
    return np.array(flat, dtype=np.float64)


def _fast_depth(stream: str, symbol: str, futures: bool) -> _FastParser:
    from tickray.feeds.wslevels import scan_levels, warm_up

    warm_up()  # now, not at the first diff
    levels = _LEVELS.decode

    def both(b: msgspec.Raw, a: msgspec.Raw) -> tuple[Levels, Levels] | None:
        got = scan_levels(bytes(b), bytes(a))
        if got is not None:
            vals, nb = got
            return vals[:nb], vals[nb:]
        try:  # not in the scanner's exact form: msgspec's general reading
            bids, asks = levels(b), levels(a)
        except msgspec.DecodeError:
            return None
        return (
            np.array(bids, dtype=np.float64).reshape(-1),
            np.array(asks, dtype=np.float64).reshape(-1),
        )

    # USD-M diffs carry pu (the previous diff's u); spot ones do not
    envelope: Any = _Envelope[_FutDepth] if futures else _Envelope[_SpotDepth]
    decode = msgspec.json.Decoder(envelope).decode

    def parse(text: str) -> Event | None:
        try:
            m = decode(text)
        except msgspec.DecodeError:
            return None
        d = m.data
        if m.stream != stream or d.s != symbol or d.u < d.U:
            return None
        sides = both(d.b, d.a)
        if sides is None:
            return None
        return DepthDiff(d.U, d.u, d.pu if futures else None, sides[0], sides[1], d.E)

    return parse


def _fast_trade(
    stream: str, symbol: str, kind: type[_Trade] | type[_AggTrade] = _Trade
) -> _FastParser:
    """A trade or (``kind=_AggTrade``) aggTrade message: its id, price, qty, side, time."""
    envelope: Any = _Envelope[kind]  # type: ignore[valid-type]
    trade: Callable[[str], Any] = msgspec.json.Decoder(envelope).decode

    def parse(text: str) -> Event | None:
        try:
            m = trade(text)
            d = m.data
            p, q = float(d.p), float(d.q)
        except (msgspec.DecodeError, ValueError):
            return None
        if m.stream != stream or d.s != symbol or not (0.0 <= p < _INF and 0.0 <= q < _INF):
            return None
        return Trade(d.t, p, q, d.m, d.T)

    return parse


def _fast_top(stream: str, symbol: str) -> _FastParser:
    top = msgspec.json.Decoder(_Envelope[_Top]).decode

    def parse(text: str) -> Event | None:
        try:
            m = top(text)
            d = m.data
            b, bq, a, aq = float(d.b), float(d.B), float(d.a), float(d.A)
        except (msgspec.DecodeError, ValueError):
            return None
        if m.stream != stream or d.s != symbol:
            return None
        if min(b, bq, a, aq) >= 0.0 and b + bq + a + aq < _INF:
            return Top(d.u, b, bq, a, aq, d.E)
        return None

    return parse


def _fast_parser(stream: str, symbol: str, kind: StreamKind, futures: bool) -> _FastParser | None:
    """The fast path of a stream, for the kinds that have one (klines and mark prices are a
    few a second: they keep the reference path only)."""
    if kind is StreamKind.DEPTH:
        return _fast_depth(stream, symbol, futures)
    if kind is StreamKind.TRADE:
        return _fast_trade(stream, symbol)
    if kind is StreamKind.AGG_TRADE:
        return _fast_trade(stream, symbol, _AggTrade)
    if kind is StreamKind.BOOK_TICKER:
        return _fast_top(stream, symbol)
    return None


class MessageDecoder:
    """Turns the text of one websocket message into ``(stream, event)``.

    The one per-message path shared by the live client and the recording reader
    (:mod:`tickray.feeds.wsrecord`). A stream's first message is decoded with ``json.loads``
    and the parser chosen by its name (learned and cached); from then on its depth, trade,
    aggTrade and bookTicker messages take the typed fast path (see above), which gives the
    same events and hands anything it does not accept back to that parser (counted in
    ``fallbacks``). ``fast=False`` decodes every message the reference way (to check the
    fast path against it). A control reply decodes to ``(None, reply)``. Raises DataError
    naming the stream and the field (see the module docstring).
    """

    def __init__(self, market: Market, *, fast: bool = True) -> None:
        self.market = _check_market(market)
        self.fast = fast
        #: Messages of a known stream the fast path handed back to the reference parser.
        self.fallbacks = 0
        self._parsers: dict[str, Parser] = {}
        self._fast: dict[str, _FastParser] = {}

    def parser(self, stream: str) -> Parser:
        """The parser of ``stream`` (DataError for an unknown stream name)."""
        found = self._parsers.get(stream)
        if found is None:
            symbol, kind = stream_kind(stream)
            futures = self.market == "usdm"
            if kind is StreamKind.DEPTH:
                found = _depth_parser(stream, symbol, futures)
            elif kind is StreamKind.TRADE or kind is StreamKind.AGG_TRADE:
                found = _trade_parser(stream, symbol, kind is StreamKind.AGG_TRADE)
            elif kind is StreamKind.BOOK_TICKER:
                found = _top_parser(stream, symbol)
            elif kind is StreamKind.KLINE:
                found = _kline_parser(stream, symbol)
            else:
                found = _mark_parser(stream, symbol)
            self._parsers[stream] = found
            fast = _fast_parser(stream, symbol, kind, futures) if self.fast else None
            if fast is not None:
                self._fast[stream] = fast
        return found

    def decode(self, text: str) -> tuple[str | None, Event | ControlReply]:
        if text.startswith('{"stream":"'):
            # the stream name as sent (the fast parser checks that the JSON says the same)
            stream = text[11 : text.find('"', 11)]
            fast = self._fast.get(stream)
            if fast is not None:
                event = fast(text)
                if event is not None:
                    return stream, event
                self.fallbacks += 1
        return self._decode(text)

    def _decode(self, text: str) -> tuple[str | None, Event | ControlReply]:
        """The reference path: ``json.loads``, then the stream's parser."""
        try:
            msg = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"invalid JSON ({exc.msg} at column {exc.colno}): {text[:80]!r}"
            ) from None
        try:
            stream = msg["stream"]
            data = msg["data"]
        except (KeyError, TypeError):
            if not isinstance(msg, dict):
                raise DataError(f"expected a JSON object, got {text[:80]!r}") from None
            if "stream" in msg:
                raise DataError(f"{msg['stream']!r}: missing field 'data'") from None
            return None, _control(msg, text)
        if type(stream) is not str:
            raise DataError(f"field 'stream' is {stream!r}: expected a stream name")
        parse = self._parsers.get(stream) or self.parser(stream)
        return stream, parse(data)


# ---------------------------------------------------------------------------------------------
# the client


class MessageSink(Protocol):
    """Receives every raw message of a session, in ``seq`` order (e.g. a WsRecorder)."""

    def write_message(
        self, seq: int, recv_ns: int, conn: int, stream: str | None, text: str
    ) -> None: ...

    def write_snapshot(self, seq: int, recv_ns: int, conn: int, symbol: str, text: str) -> None: ...


class WsError(RuntimeError):
    """The websocket could not be (re)connected, or Binance refused a control request."""


@dataclass
class WsStats:
    """Counters of one client (all times are the receive clock's ns).

    ``connects`` counts opened connections and ``reconnects`` those after the first; each end
    of a connection is one of ``drops`` (closed by the server or the network, including a
    missed pong), ``stalls`` (closed by the watchdog) or ``scheduled`` (closed by us before
    the 24 h limit). ``errors`` counts skipped malformed messages; the last 100 are in
    ``error_log``, each naming the message seq, the stream and the field.
    """

    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    drops: int = 0
    stalls: int = 0
    scheduled: int = 0
    messages: int = 0
    control_replies: int = 0
    errors: int = 0
    clock_steps_back: int = 0
    per_stream: dict[str, int] = field(default_factory=dict)
    error_log: deque[str] = field(default_factory=lambda: deque(maxlen=100))
    reconnect_times_ns: list[int] = field(default_factory=list)
    backoff_delays: deque[float] = field(default_factory=lambda: deque(maxlen=100))

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for results and logs."""
        return {
            "connects": self.connects,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "drops": self.drops,
            "stalls": self.stalls,
            "scheduled": self.scheduled,
            "messages": self.messages,
            "control_replies": self.control_replies,
            "errors": self.errors,
            "clock_steps_back": self.clock_steps_back,
            "per_stream": dict(self.per_stream),
            "error_log": list(self.error_log),
            "reconnect_times_ns": list(self.reconnect_times_ns),
            "backoff_delays": list(self.backoff_delays),
        }


Transport = Literal["websockets", "aiohttp"]
TRANSPORTS: tuple[str, ...] = ("websockets", "aiohttp")


class _Abort:
    """``transport.abort()`` of an aiohttp connection: shuts its socket down (no closing
    handshake), so that a pending receive ends at once."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    def abort(self) -> None:
        sock = self._ws.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _AiohttpConnection:
    """The part of websockets' ``ClientConnection`` that :class:`BinanceWs` uses (``recv``,
    ``send``, ``close``, ``transport.abort``, ``state``), over an aiohttp client websocket.

    aiohttp parses frames in compiled code: receiving costs about 1.5 us per message
    against about 6 for websockets' Python protocol (``make bench``), which matters at tens
    of thousands of depth messages a second. It answers the server's pings by itself
    (``autoping``) and sends its own every ``heartbeat`` s, dropping the connection when
    the pong does not come within half of that.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.transport = _Abort(ws)

    @property
    def state(self) -> State:
        return State.CLOSED if self._ws.closed else State.OPEN

    async def recv(self) -> str | bytes:
        try:
            msg = await self._ws.receive()
        except RuntimeError as exc:  # "Concurrent call to receive() is not allowed"
            raise ConcurrencyError(str(exc)) from None
        kind = msg.type
        if kind is aiohttp.WSMsgType.TEXT or kind is aiohttp.WSMsgType.BINARY:
            data: str | bytes = msg.data
            return data
        raise ConnectionClosed(None, None)  # CLOSE, CLOSING, CLOSED or ERROR

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_str(text)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise ConnectionClosed(None, None) from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code=code, message=reason.encode())


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): ``min(cap, base * 2**attempt)``
    scaled by a jitter factor in [0.5, 1)."""
    return min(cap, base * 2.0 ** min(attempt, 60)) * (0.5 + 0.5 * rng.random())


class BinanceWs:
    """Reconnecting Binance combined-stream client; iterate it for :class:`WsMessage`::

        async with BinanceWs("spot", [Subscription("BTCUSDT")]) as ws:
            async for recv_ns, stream, data in ws:
                ...

    ``streams``: stream names and/or :class:`Subscription` objects. ``base_url``: overrides
    :data:`WS_BASE_URLS`. ``clock``: receive time in ns (default ``time.time_ns``).
    ``rng``/``backoff_base``/``backoff_cap``: reconnect delays (:func:`backoff_delay`);
    ``max_retries``: consecutive failed connection attempts (a connection that ends before
    its first message counts as failed) before the iterator raises WsError; None retries
    forever. ``stall_timeout``: seconds without any message before the watchdog reconnects
    (None: no watchdog; pick it above the quietest stream's interval, e.g. markPrice@1s or
    bookTicker make good heartbeats). ``max_lifetime``: seconds after which a connection is
    closed (code 1000) and reopened at once, before Binance's 24 h cut. ``ping_interval``,
    ``ping_timeout``, ``open_timeout``, ``close_timeout``, ``compression``, ``proxy`` and
    ``max_queue`` go to ``websockets.connect``; ``max_queue`` (messages the library holds
    before it stops reading the socket) is 1024, not the library's 16: at tens of thousands
    of messages a second, 16 made it stop and restart reading (two epoll system calls) every
    dozen messages. ``strict``: raise DataError on a malformed message instead of
    counting and skipping it. ``sink``: gets every raw message (see :class:`MessageSink`).
    ``sleep``: used for the backoff (inject it to observe or skip the waits).
    ``transport``: ``"websockets"`` (the default) or ``"aiohttp"``, whose compiled frame
    parser receives about 4x cheaper (:class:`_AiohttpConnection`; ``ping_interval`` is
    its heartbeat, the pong wait half of it; ``max_queue`` does not apply); everything
    else (reconnects, watchdog, scheduled reconnects, control requests) is the same.
    """

    def __init__(
        self,
        market: Market,
        streams: Iterable[str | Subscription],
        *,
        base_url: str | None = None,
        clock: Clock = time.time_ns,
        rng: random.Random | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retries: int | None = None,
        stall_timeout: float | None = 30.0,
        max_lifetime: float | None = DEFAULT_MAX_LIFETIME_S,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        compression: str | None = None,
        max_queue: int = 1024,
        proxy: str | Literal[True] | None = True,
        strict: bool = False,
        sink: MessageSink | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: Transport = "websockets",
    ) -> None:
        self.market: Market = _check_market(market)
        if transport not in TRANSPORTS:
            raise ValueError(f"transport: must be one of {TRANSPORTS}, got {transport!r}")
        self.transport: Transport = transport
        self._http: aiohttp.ClientSession | None = None
        names: list[str] = []
        for item in streams:
            for name in item.streams(self.market) if isinstance(item, Subscription) else (item,):
                if name not in names:
                    names.append(name)
        combined_url(self.market, names, base_url)  # validates
        self.base_url = (base_url or WS_BASE_URLS[self.market]).rstrip("/")
        self._streams = names
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retries = max_retries
        self.stall_timeout = stall_timeout
        self.max_lifetime = max_lifetime
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.compression = compression
        self.max_queue = max_queue
        self.proxy = proxy
        self.strict = strict
        self.sink = sink
        self.sleep = sleep
        self.stats = WsStats()
        self.decoder = MessageDecoder(self.market)
        #: Number of the current connection (1 for the first, +1 per reconnect; 0 before).
        self.connection = 0
        #: Session sequence number the next message (or noted snapshot) gets.
        self.seq = 0
        #: ``seq`` of the message last yielded.
        self.last_seq = -1
        self._last_ts = -(1 << 63)
        self._received = 0
        self._conn: ClientConnection | _AiohttpConnection | None = None
        self._end_reason: str | None = None
        self._closed = False
        self._next_id = 1
        self._pending: dict[int, tuple[asyncio.Future[None], str, list[str]]] = {}
        self._control_sent: deque[float] = deque()

    # -- public ---------------------------------------------------------------------------------

    @property
    def streams(self) -> tuple[str, ...]:
        """The current stream set (what a reconnect asks for)."""
        return tuple(self._streams)

    @property
    def url(self) -> str:
        return combined_url(self.market, self._streams, self.base_url)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def stamp(self) -> int:
        """Receive time now (ns), never before the last one handed out."""
        ts = self.clock()
        if ts < self._last_ts:
            ts = self._last_ts
            self.stats.clock_steps_back += 1
        self._last_ts = ts
        return ts

    def note_snapshot(self, recv_ns: int, symbol: str, text: str) -> int:
        """Give a REST depth snapshot its session ``seq`` and pass it to the sink."""
        seq = self.seq
        self.seq = seq + 1
        if self.sink is not None:
            self.sink.write_snapshot(seq, recv_ns, self.connection, symbol, text)
        return seq

    async def __aenter__(self) -> BinanceWs:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop: close the connection (code 1000); the iterator ends."""
        self._closed = True
        conn = self._conn
        if conn is not None:
            await self._close_draining(conn)
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def subscribe(self, streams: Iterable[str], timeout: float = 5.0) -> None:
        """Add streams on the open connection (and to every reconnect's URL).

        Waits for Binance's reply, which the iterator reads, so call it from another task
        than the one iterating. Raises WsError if Binance refuses (the streams are then
        dropped again) or the connection ends first (they stay in the set).
        """
        new = [s for s in dict.fromkeys(streams) if s not in self._streams]
        if not new:
            return
        combined_url(self.market, self._streams + new, self.base_url)  # validates
        self._streams += new
        await self._request("SUBSCRIBE", new, timeout)

    async def unsubscribe(self, streams: Iterable[str], timeout: float = 5.0) -> None:
        """Remove streams on the open connection and from every reconnect's URL."""
        gone = [s for s in dict.fromkeys(streams) if s in self._streams]
        if not gone:
            return
        if len(gone) == len(self._streams):
            raise ValueError("cannot unsubscribe every stream (a combined URL needs one)")
        self._streams = [s for s in self._streams if s not in gone]
        await self._request("UNSUBSCRIBE", gone, timeout)

    def __aiter__(self) -> AsyncIterator[WsMessage]:
        return self._messages()

    # -- internals ------------------------------------------------------------------------------

    async def _request(self, method: str, params: list[str], timeout: float) -> None:
        conn = self._conn
        if conn is None:
            return  # not connected: the next connection's URL carries the change
        await self._control_slot()
        msg_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = (fut, method, params)
        try:
            await conn.send(json.dumps({"method": method, "params": params, "id": msg_id}))
            await asyncio.wait_for(fut, timeout)
        except ConnectionClosed:
            raise WsError(f"{method} {params}: connection closed before the reply") from None
        except TimeoutError:
            raise WsError(f"{method} {params}: no reply within {timeout:g} s") from None
        finally:
            self._pending.pop(msg_id, None)

    async def _control_slot(self) -> None:
        """Wait until one more control message fits Binance's per-second limit."""
        loop = asyncio.get_running_loop()
        rate = CONTROL_RATE[self.market]
        sent = self._control_sent
        while True:
            now = loop.time()
            while sent and sent[0] <= now - 1.0:
                sent.popleft()
            if len(sent) < rate:
                sent.append(now)
                return
            await asyncio.sleep(sent[0] + 1.0 - now)

    def _on_reply(self, reply: ControlReply) -> None:
        self.stats.control_replies += 1
        entry = self._pending.get(reply.id) if reply.id is not None else None
        if entry is None:
            if reply.error is not None:
                self._record_error(f"unsolicited error reply {reply.error}")
            return
        fut, method, params = entry
        if fut.done():
            return
        if reply.error is None:
            fut.set_result(None)
            return
        if method == "SUBSCRIBE":  # refused: not part of the set after all
            self._streams = [s for s in self._streams if s not in params] or self._streams
        code, msg = reply.error
        fut.set_exception(WsError(f"{method} {params}: Binance error {code}: {msg}"))

    def _record_error(self, text: str) -> None:
        self.stats.errors += 1
        self.stats.error_log.append(text)

    async def _close_draining(self, conn: ClientConnection | _AiohttpConnection) -> None:
        """Close with code 1000 while discarding what is still queued.

        When nobody reads, ``websockets`` stops reading the socket once its queue is full, so
        the server's close frame would wait behind the data until ``close_timeout``. If the
        iterator is reading at the moment, its ``recv`` drains instead (ConcurrencyError here).
        """
        closing = asyncio.create_task(self._close_conn(conn, 1000, "client closing"))
        try:
            while True:
                await conn.recv()
        except (ConnectionClosed, ConcurrencyError):
            pass
        await closing

    async def _close_conn(
        self, conn: ClientConnection | _AiohttpConnection, code: int, reason: str
    ) -> None:
        try:
            await asyncio.wait_for(conn.close(code, reason), self.close_timeout)
        except (TimeoutError, OSError, WebSocketException, aiohttp.ClientError):
            conn.transport.abort()

    async def _watchdog(self, conn: ClientConnection | _AiohttpConnection) -> None:
        """Close ``conn`` when it has been silent for ``stall_timeout`` s or is too old."""
        loop = asyncio.get_running_loop()
        opened = last_change = loop.time()
        seen = self._received
        step = self.stall_timeout / 4.0 if self.stall_timeout is not None else math.inf
        while True:
            now = loop.time()
            if self._received != seen:
                seen, last_change = self._received, now
            if self.max_lifetime is not None and now - opened >= self.max_lifetime:
                self._end_reason = "scheduled"
                await self._close_conn(conn, 1000, "scheduled reconnect")
                return
            if self.stall_timeout is not None and now - last_change >= self.stall_timeout:
                self._end_reason = "stall"
                conn.transport.abort()  # the peer is not talking: no closing handshake
                return
            wake = step
            if self.max_lifetime is not None:
                wake = min(wake, opened + self.max_lifetime - now)
            if math.isinf(wake):
                return
            await asyncio.sleep(max(wake, 0.001))

    async def _connect(self, attempt: int) -> ClientConnection | _AiohttpConnection | None:
        if self.transport == "aiohttp":
            return await self._connect_aiohttp()
        try:
            return await connect(
                self.url,
                open_timeout=self.open_timeout,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                close_timeout=self.close_timeout,
                compression=self.compression,
                max_queue=self.max_queue,
                proxy=self.proxy,
                max_size=1 << 22,
            )
        except InvalidURI:
            raise
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._connect_failed(exc)
            return None

    async def _connect_aiohttp(self) -> _AiohttpConnection | None:
        if self._http is None:
            self._http = aiohttp.ClientSession(trust_env=self.proxy is True)
        try:
            ws = await asyncio.wait_for(
                self._http.ws_connect(
                    self.url,
                    autoping=True,
                    heartbeat=self.ping_interval,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.close_timeout),
                    compress=15 if self.compression == "deflate" else 0,
                    max_msg_size=1 << 22,
                    proxy=self.proxy if isinstance(self.proxy, str) else None,
                ),
                self.open_timeout,
            )
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            self._connect_failed(exc)
            return None
        return _AiohttpConnection(ws)

    def _connect_failed(self, exc: BaseException) -> None:
        """Count and log a failed connection attempt (the caller backs off and retries)."""
        self.stats.connect_failures += 1
        self._record_error(f"connect to {self.base_url} failed: {type(exc).__name__}: {exc}")

    async def _backoff(self, attempt: int) -> None:
        if self.max_retries is not None and attempt >= self.max_retries:
            raise WsError(
                f"{self.base_url}: gave up after {attempt + 1} failed connection attempts; "
                f"last error: {self.stats.error_log[-1] if self.stats.error_log else 'none'}"
            )
        delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap, self.rng)
        self.stats.backoff_delays.append(delay)
        await self.sleep(delay)

    async def _messages(self) -> AsyncIterator[WsMessage]:
        attempt = 0
        stats = self.stats
        per_stream = stats.per_stream
        decode = self.decoder.decode
        while not self._closed:
            conn = await self._connect(attempt)
            if conn is None:
                await self._backoff(attempt)
                attempt += 1
                continue
            if self._closed:  # close() was called while connecting
                await self._close_conn(conn, 1000, "client closing")
                return
            self._conn = conn
            self.connection += 1
            stats.connects += 1
            if self.connection > 1:
                stats.reconnects += 1
                stats.reconnect_times_ns.append(self.stamp())
            self._end_reason = None
            watchdog = asyncio.create_task(self._watchdog(conn))
            got_any = False
            try:
                recv = conn.recv
                clock = self.clock
                sink = self.sink
                conn_no = self.connection
                turn = 0
                while True:
                    turn += 1
                    if turn == _YIELD_EVERY:
                        # recv() does not give the event loop a turn while messages are
                        # queued: give it one now and then, so that what waits on the loop
                        # (a step's drain, pings, the watchdog) waits for at most this many
                        # messages, not for the whole backlog
                        turn = 0
                        await asyncio.sleep(0)
                    try:
                        text = await recv()
                    except ConnectionClosed:
                        break
                    # hot path: one clock read, one json.loads, one parser call per message
                    ts = clock()
                    if ts < self._last_ts:
                        ts = self._last_ts
                        stats.clock_steps_back += 1
                    self._last_ts = ts
                    self._received += 1
                    got_any = True
                    if isinstance(text, bytes):
                        text = text.decode("utf-8", "replace")
                    seq = self.seq
                    self.seq = seq + 1
                    try:
                        stream, data = decode(text)
                    except DataError as exc:
                        if sink is not None:
                            sink.write_message(seq, ts, conn_no, None, text)
                        self._record_error(f"message {seq} (connection {conn_no}): {exc}")
                        if self.strict:
                            raise
                        continue
                    if sink is not None:
                        sink.write_message(seq, ts, conn_no, stream, text)
                    if stream is None or isinstance(data, ControlReply):
                        if isinstance(data, ControlReply):
                            self._on_reply(data)
                        continue
                    per_stream[stream] = per_stream.get(stream, 0) + 1
                    stats.messages += 1
                    self.last_seq = seq
                    yield WsMessage(ts, stream, data)
            finally:
                watchdog.cancel()
                self._conn = None
                for fut, _, _ in self._pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionClosed(None, None))
                if conn.state is not State.CLOSED:
                    await self._close_draining(conn)
            if self._closed:
                return
            reason = self._end_reason
            if reason == "scheduled":
                stats.scheduled += 1
                attempt = 0
                continue  # reopen at once
            if reason == "stall":
                stats.stalls += 1
            else:
                stats.drops += 1
            if got_any:
                attempt = 0
            await self._backoff(attempt)
            attempt += 1
