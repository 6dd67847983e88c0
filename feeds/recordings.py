"""Read raw Binance websocket recordings into the canonical tick schemas, with a synced L2 book.

Two recorders are supported; both store what Binance sent, unchanged, with the local receive
time of each message:

- **hftbacktest** (:func:`read_binance_recording`): one gzip file per symbol, one message per
  line as ``<local_receive_time_ns> <json>``. The JSON is the combined-stream wrapper
  ``{"stream": "btcusdt@depth@100ms", "data": {...}}`` for ``depthUpdate``, ``trade`` and
  ``bookTicker``; exactly one line is the REST depth snapshot ``{"lastUpdateId": ..., "bids":
  [[p, q], ...], "asks": [...]}`` (futures add ``E``/``T``, COIN-M ``symbol``/``pair``).
- **cryptofeed** (:func:`read_cryptofeed_recording`): a multi-symbol websocket file
  (``<url> <-> <connect_time>`` then ``<local_epoch_seconds>: <json>`` lines) and a separate
  file of REST snapshots (``<url> -> <local_epoch_seconds>: <json>``). Trades come from the
  ``aggTrade`` stream there, so a trade row is one aggregated trade (``trade_id`` = ``a``).

What a :class:`Recording` holds:

- ``ts`` of every row is the **local receive time** of its message in ns. It is the only clock
  common to the three streams: spot ``bookTicker`` carries no exchange time at all.
- ``depth`` starts with the snapshot's levels (``is_snapshot`` true, bids then asks in the
  snapshot's order, ``first_update_id = last_update_id = lastUpdateId``), followed by the diffs
  that Binance's sync procedure ("How to manage a local order book correctly") keeps:

  - spot: drop diffs with ``u <= lastUpdateId``; the first kept diff must have
    ``U <= lastUpdateId + 1 <= u``; each later diff must have ``U == previous u + 1``;
  - futures (USD-M, COIN-M): drop diffs with ``u < lastUpdateId``; the first kept diff must have
    ``U <= lastUpdateId <= u``; each later diff must have ``pu == previous u``.

  A diff with N levels gives N rows (bids then asks) sharing its ``U``, ``u`` and ``pu`` (null
  on spot); a diff with no levels counts for the sequence but gives no rows. Diffs received
  *before* the snapshot that are newer than it are kept, in file order, after the snapshot rows;
  their ``ts`` is ``max(own receive time, snapshot receive time)``, so that ``depth.ts`` never
  goes back (they could not have been applied before the snapshot arrived anyway). The
  ``depth_line`` of such rows is still the line they were read from.
- ``trades`` and ``tops`` hold every trade and ``bookTicker`` message of the file, in file order.

A sequence gap (or a first diff that does not bracket the snapshot) raises DataError with
``strict=True``; with ``strict=False`` the depth rows stop at the gap and ``Recording.gaps``
describes it (the trades and tops still cover the whole file).

Line numbers: the ``*_line`` arrays are 0-based indexes of lines in the file (blank lines
counted). Error messages number lines from 1, like the other readers in ``feeds/``, so that
``sed -n 12p`` shows the line a message names.
"""

from __future__ import annotations

import gc
import gzip
import json
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tickray.feeds.schemas import TS_TYPE, DataError, conform

MARKETS = ("spot", "usdm", "coinm")

# Stream kinds, from the part of the stream name after "<symbol>@".
_DEPTH, _TRADE, _AGG_TRADE, _TOP, _SKIP = range(5)
_DEPTH_STREAM_RE = re.compile(r"depth(@[0-9]+ms)?")

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Recording:
    """One symbol's recorded depth diffs, trades and book tops, in the canonical schemas.

    ``depth`` / ``trades`` / ``tops`` are DEPTH_UPDATES / TRADES / BOOK_TOPS tables whose ``ts``
    is the local receive time (ns, UTC) and never goes back; ``*_line`` give, row for row, the
    0-based line of the file each row was read from. ``snapshot_ts`` is the receive time of the
    REST depth snapshot. ``gaps`` is empty for a clean recording; with ``strict=False`` it
    describes where the depth sequence broke (the depth rows stop there).
    """

    symbol: str
    market: str
    depth: pa.Table
    depth_line: Int64Array
    trades: pa.Table
    trades_line: Int64Array
    tops: pa.Table
    tops_line: Int64Array
    snapshot_ts: int
    source: str
    gaps: list[str] = field(default_factory=list)
    #: File the snapshot was read from: ``source`` itself for hftbacktest, the REST file for
    #: cryptofeed (the snapshot rows' ``depth_line`` is then a line of that file).
    snapshot_source: str = ""


@dataclass
class _Snapshot:
    line: int
    ts: int
    last_update_id: int
    bids: list[Any]
    asks: list[Any]
    symbol: str | None  # COIN-M and cryptofeed snapshots name their symbol; spot/USD-M do not
    futures: bool  # futures snapshots carry E (event time) and T
    coin: bool  # COIN-M snapshots carry "pair"


# One depth diff: (line, receive ts, U, u, pu or None, bids, asks).
_Diff = tuple[int, int, Any, Any, Any, list[Any], list[Any]]


@dataclass
class _Streams:
    """Columns gathered from the stream messages of one symbol, as Python lists."""

    symbol: str | None
    diffs: list[_Diff] = field(default_factory=list)
    trade_cols: tuple[list[Any], ...] = field(default_factory=lambda: tuple([] for _ in range(6)))
    top_cols: tuple[list[Any], ...] = field(default_factory=lambda: tuple([] for _ in range(7)))
    trade_kind: int | None = None
    trade_kind_line: int = 0
    first_data: dict[str, Any] | None = None
    symbol_line: int = 0


# --------------------------------------------------------------------------------------------
# public readers


def read_binance_recording(path: str | Path, *, strict: bool = True) -> Recording:
    """Read one hftbacktest ``*.ws.gz`` recording (gzip or plain text) of a single symbol.

    The market (``"spot"``, ``"usdm"`` or ``"coinm"``) is told from the messages: futures depth
    diffs carry ``pu``, COIN-M messages carry ``ps`` (the pair). Raises DataError naming the file
    and line for bad JSON, a missing field, an unknown stream, a line of another symbol, a price
    or quantity that is not a finite non-negative decimal, receive times that go back, zero or
    two snapshots, and (when ``strict``) a break in the depth sequence.
    """
    source = str(path)
    with _gc_paused():
        return _read_hftbacktest(source, strict)


def _read_hftbacktest(source: str, strict: bool) -> Recording:
    lines = _read_lines(Path(source), source)
    streams, snapshot = _collect(_hftbacktest_messages(lines, source), source, None, False)
    if snapshot is None:
        raise DataError(f"{source}: no REST depth snapshot line (a line with 'lastUpdateId')")
    return _build(streams, snapshot, source, source, strict)


def read_cryptofeed_recording(
    ws_path: str | Path, snapshot_path: str | Path, symbol: str, *, strict: bool = True
) -> Recording:
    """Read one symbol from a cryptofeed Binance recording (``*.ws.1.0`` + ``*.http.0.0``).

    ``symbol`` is the exchange symbol, e.g. ``"NKNUSDT"`` or ``"BTCUSD_211231"``. Lines of the
    other symbols in the websocket file are skipped, and so are ``kline`` streams. Receive times
    are the recorder's epoch seconds, converted to ns from their decimal text (exact, no float
    rounding). ``snapshot_path`` must hold exactly one depth snapshot of ``symbol``; the
    snapshot rows' ``depth_line`` is its line in that file. Trades come from ``aggTrade``:
    ``trade_id`` is the aggregate trade id ``a``.
    """
    with _gc_paused():
        return _read_cryptofeed(str(ws_path), str(snapshot_path), symbol.upper(), strict)


def _read_cryptofeed(source: str, snap_source: str, symbol: str, strict: bool) -> Recording:
    snap_lines = _read_lines(Path(snap_source), snap_source)
    snapshot = _cryptofeed_snapshot(snap_lines, snap_source, symbol)
    lines = _read_lines(Path(source), source)
    streams, inline = _collect(_cryptofeed_messages(lines, source), source, symbol, True)
    if inline is not None:
        raise DataError(f"{source}: line {inline.line + 1}: unexpected depth snapshot in a ws file")
    if streams.first_data is None:
        raise DataError(f"{source}: no stream messages for {symbol}")
    return _build(streams, snapshot, source, snap_source, strict)


# --------------------------------------------------------------------------------------------
# reading lines


def _read_lines(path: Path, source: str) -> list[str]:
    """Whole file (gzip or plain), decoded, split on newlines: one read is faster than a stream."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"{source}: no such file") from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DataError(f"{source}: unreadable recording ({exc})") from None
    return text.split("\n")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a recording is parsed and converted.

    json.loads makes one dict or list per message and per price level, all kept alive until the
    tables are built: the collector would run over and over on objects that can never be
    garbage, which more than doubles the time of a 90k-line file. Nothing parsed here forms a
    cycle, and the parsed messages are freed (by reference counting) before the collector is
    switched back on, so that its first pass has next to nothing to scan.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _loads(text: str, source: str, i: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{source}: line {i + 1}: invalid JSON ({exc.msg} at column {exc.colno})"
        ) from None


def _hftbacktest_messages(lines: list[str], source: str) -> Iterator[tuple[int, int, Any]]:
    """(0-based line, receive ns, decoded JSON) of each non-blank ``<ns> <json>`` line."""
    prev = -(1 << 63)
    loads = json.loads
    for i, line in enumerate(lines):
        if not line:
            continue
        head, _, body = line.partition(" ")
        try:
            ts = int(head)
        except ValueError:
            raise DataError(
                f"{source}: line {i + 1}: expected '<receive_time_ns> <json>', got {line[:40]!r}"
            ) from None
        if ts < prev:
            raise DataError(f"{source}: line {i + 1}: receive time {ts} ns goes back (from {prev})")
        prev = ts
        try:
            msg = loads(body)
        except json.JSONDecodeError:
            msg = _loads(body, source, i)  # raises with the position
        yield i, ts, msg


def _seconds_to_ns(text: str) -> int:
    """Exact ns of a decimal epoch-seconds text such as ``1633998512.0633569``."""
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(text)
    return int(whole) * 1_000_000_000 + int(frac.ljust(9, "0") or "0")


def _cryptofeed_messages(lines: list[str], source: str) -> Iterator[tuple[int, int, Any]]:
    """(0-based line, receive ns, JSON) of each ``<epoch_seconds>: <json>`` line of a ws file."""
    prev = -(1 << 63)
    for i, line in enumerate(lines):
        if not line.strip() or (i == 0 and " <-> " in line):  # header: url <-> connect time
            continue
        head, sep, body = line.partition(": ")
        try:
            ts = _seconds_to_ns(head)
        except ValueError:
            raise DataError(
                f"{source}: line {i + 1}: expected '<epoch_seconds>: <json>', got {line[:40]!r}"
            ) from None
        if ts < prev:
            raise DataError(f"{source}: line {i + 1}: receive time {head} s goes back")
        prev = ts
        yield i, ts, _loads(body, source, i)


def _cryptofeed_snapshot(lines: list[str], source: str, symbol: str) -> _Snapshot:
    """The one REST depth snapshot of ``symbol`` in a cryptofeed ``*.http`` file."""
    found: _Snapshot | None = None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        url, arrow, rest = line.partition(" -> ")
        head, sep, body = rest.partition(": ")
        if not arrow or not sep:
            raise DataError(f"{source}: line {i + 1}: expected '<url> -> <epoch_seconds>: <json>'")
        query = parse_qs(urlsplit(url).query)
        if "/depth" not in url or query.get("symbol", [""])[0].upper() != symbol:
            continue
        try:
            ts = _seconds_to_ns(head)
        except ValueError:
            raise DataError(f"{source}: line {i + 1}: bad receive time {head[:30]!r}") from None
        snap = _parse_snapshot(i, ts, _loads(body, source, i), source)
        if found is not None:
            raise DataError(
                f"{source}: two depth snapshots of {symbol} (lines {found.line + 1} and {i + 1})"
            )
        found = snap
    if found is None:
        raise DataError(f"{source}: no depth snapshot of {symbol}")
    return found


def _parse_snapshot(i: int, ts: int, msg: dict[str, Any], source: str) -> _Snapshot:
    where = f"{source}: line {i + 1}"
    try:
        last_id, bids, asks = msg["lastUpdateId"], msg["bids"], msg["asks"]
    except KeyError as exc:
        raise DataError(f"{where}: depth snapshot without field {exc.args[0]!r}") from None
    if type(last_id) is not int:
        raise DataError(f"{where}: snapshot lastUpdateId {last_id!r} is not an integer")
    if not isinstance(bids, list) or not isinstance(asks, list):
        raise DataError(f"{where}: snapshot bids and asks must be lists of [price, qty]")
    sym = msg.get("symbol")
    return _Snapshot(i, ts, last_id, bids, asks, sym, "E" in msg or "T" in msg, "pair" in msg)


# --------------------------------------------------------------------------------------------
# gathering stream messages


def _classify(stream: str, streams: _Streams, line: int, skip_others: bool, source: str) -> int:
    """Kind of a stream name; learns the recording's symbol from the first one."""
    prefix, at, suffix = stream.partition("@")
    where = f"{source}: line {line + 1}"
    if not at or not prefix:
        raise DataError(f"{where}: unknown stream {stream!r}")
    if streams.symbol is None:
        streams.symbol, streams.symbol_line = prefix.upper(), line
    elif prefix.upper() != streams.symbol:
        if skip_others:
            return _SKIP
        raise DataError(
            f"{where}: stream {stream!r} is for {prefix.upper()}, but this recording is "
            f"{streams.symbol} (from line {streams.symbol_line + 1})"
        )
    if _DEPTH_STREAM_RE.fullmatch(suffix):
        return _DEPTH
    if suffix == "trade":
        return _TRADE
    if suffix == "aggTrade":
        return _AGG_TRADE
    if suffix == "bookTicker":
        return _TOP
    if skip_others and suffix.startswith("kline_"):
        return _SKIP
    raise DataError(
        f"{where}: unknown stream {stream!r}: expected <symbol>@depth[@<n>ms], "
        f"<symbol>@trade, <symbol>@aggTrade or <symbol>@bookTicker"
    )


def _collect(
    messages: Iterator[tuple[int, int, Any]], source: str, symbol: str | None, skip_others: bool
) -> tuple[_Streams, _Snapshot | None]:
    """Gather one symbol's stream messages into lists, and the in-file depth snapshot if any.

    This is the hot loop (one pass per line, ~100k lines): it stays flat, with the list appends
    bound to locals, and leaves conversion and validation of values to vectorised code later.
    """
    st = _Streams(symbol)
    snapshot: _Snapshot | None = None
    kinds: dict[str, int] = {}
    add_diff = st.diffs.append
    t_line, t_ts, t_id, t_p, t_q, t_m = (c.append for c in st.trade_cols)
    b_line, b_ts, b_u, b_b, b_bq, b_a, b_aq = (c.append for c in st.top_cols)
    i = -1
    try:
        for i, ts, msg in messages:
            if type(msg) is not dict:
                raise DataError(f"{source}: line {i + 1}: expected a JSON object")
            stream = msg.get("stream")
            if stream is None:
                if "lastUpdateId" not in msg:
                    raise DataError(
                        f"{source}: line {i + 1}: neither a stream message "
                        f"(no 'stream') nor a depth snapshot (no 'lastUpdateId')"
                    )
                if snapshot is not None:
                    raise DataError(
                        f"{source}: two depth snapshots (lines {snapshot.line + 1} and {i + 1})"
                    )
                snapshot = _parse_snapshot(i, ts, msg, source)
                continue
            kind = kinds.get(stream)
            if kind is None:
                kind = kinds[stream] = _classify(stream, st, i, skip_others, source)
            if kind == _SKIP:
                continue
            data = msg["data"]
            if data["s"] != st.symbol:
                raise DataError(
                    f"{source}: line {i + 1}: symbol {data['s']!r} in a {stream!r} message"
                )
            if kind == _TOP:
                b_line(i)
                b_ts(ts)
                b_u(data["u"])
                b_b(data["b"])
                b_bq(data["B"])
                b_a(data["a"])
                b_aq(data["A"])
            elif kind == _DEPTH:
                add_diff((i, ts, data["U"], data["u"], data.get("pu"), data["b"], data["a"]))
            else:
                if kind != st.trade_kind:
                    _check_trade_kind(st, kind, i, source)
                t_line(i)
                t_ts(ts)
                t_id(data["t"] if kind == _TRADE else data["a"])
                t_p(data["p"])
                t_q(data["q"])
                t_m(data["m"])
            if st.first_data is None:
                st.first_data = data
    except KeyError as exc:
        raise DataError(f"{source}: line {i + 1}: missing field {exc.args[0]!r}") from None
    except (TypeError, AttributeError) as exc:
        raise DataError(f"{source}: line {i + 1}: malformed message ({exc})") from None
    return st, snapshot


def _check_trade_kind(st: _Streams, kind: int, line: int, source: str) -> None:
    if st.trade_kind is None:
        st.trade_kind, st.trade_kind_line = kind, line
        return
    raise DataError(
        f"{source}: line {line + 1}: both trade and aggTrade streams (the other from line "
        f"{st.trade_kind_line + 1}); a recording's trades must come from one of them"
    )


# --------------------------------------------------------------------------------------------
# the sync procedure and the tables


def _market(st: _Streams, snap: _Snapshot, snap_source: str) -> str:
    """ "spot", "usdm" or "coinm": futures diffs carry pu, COIN-M messages carry ps (the pair)."""
    if st.diffs:
        futures = st.diffs[0][4] is not None
        if futures != snap.futures:
            kind = "futures (E/T)" if snap.futures else "spot (no E/T)"
            diffs = "futures (pu)" if futures else "spot (no pu)"
            raise DataError(
                f"{snap_source}: line {snap.line + 1}: snapshot looks {kind} but the depth diffs "
                f"look {diffs}"
            )
    else:
        futures = snap.futures
    if not futures:
        return "spot"
    coin = snap.coin or (st.first_data is not None and "ps" in st.first_data)
    return "coinm" if coin else "usdm"


def _check_ids(diff: _Diff, futures: bool, source: str) -> None:
    line, _, first, last, prev, bids, asks = diff
    where = f"{source}: line {line + 1}"
    for name, value in (("U", first), ("u", last)) + ((("pu", prev),) if futures else ()):
        if type(value) is not int:
            if value is None:
                raise DataError(f"{where}: futures depth diff without field 'pu'")
            raise DataError(f"{where}: depth diff {name} {value!r} is not an integer")
    if not futures and prev is not None:
        raise DataError(f"{where}: spot depth diff with a 'pu' field (the others have none)")
    if first > last:
        raise DataError(f"{where}: depth diff U {first} > u {last}")
    if not isinstance(bids, list) or not isinstance(asks, list):
        raise DataError(f"{where}: depth diff b and a must be lists of [price, qty]")


def _sync(
    diffs: list[_Diff], snap: _Snapshot, futures: bool, source: str, strict: bool
) -> tuple[list[_Diff], list[str]]:
    """The diffs Binance's sync procedure applies after ``snap``, and the gap if it breaks."""
    last_id = snap.last_update_id
    target = last_id if futures else last_id + 1  # the update id the first diff must contain
    kept: list[_Diff] = []
    prev_u: int | None = None
    for diff in diffs:
        _check_ids(diff, futures, source)
        line, _, first, last, prev, _, _ = diff
        gap = None
        if prev_u is None:
            if last < target:  # already in the snapshot
                continue
            if first > target:
                gap = (
                    f"line {line + 1}: the first depth diff newer than the snapshot "
                    f"(lastUpdateId {last_id}) has U={first}, u={last}: expected "
                    f"U <= {target} <= u; updates {target}..{first - 1} are missing"
                )
        elif futures and prev != prev_u:
            gap = (
                f"line {line + 1}: depth sequence gap: pu={prev} but the previous diff "
                f"had u={prev_u} (this diff U={first}, u={last})"
            )
        elif not futures and first != prev_u + 1:
            gap = (
                f"line {line + 1}: depth sequence gap: U={first} but the previous diff "
                f"had u={prev_u}, so U should be {prev_u + 1} (this diff u={last})"
            )
        if gap is not None:
            if strict:
                raise DataError(f"{source}: {gap}")
            return kept, [f"{gap}; depth rows stop here"]
        kept.append(diff)
        prev_u = last
    return kept, []


def _build(st: _Streams, snap: _Snapshot, source: str, snap_source: str, strict: bool) -> Recording:
    symbol = st.symbol
    if symbol is None:
        raise DataError(f"{source}: no stream messages: cannot tell the symbol")
    if snap.symbol is not None and snap.symbol.upper() != symbol:
        raise DataError(
            f"{snap_source}: line {snap.line + 1}: depth snapshot of "
            f"{snap.symbol!r}, but this recording is {symbol}"
        )
    market = _market(st, snap, snap_source)
    kept, gaps = _sync(st.diffs, snap, market != "spot", source, strict)
    depth, depth_line = _depth_table(snap, kept, source, snap_source)
    trades, trades_line = _trades_table(
        st.trade_cols, "a" if st.trade_kind == _AGG_TRADE else "t", source
    )
    tops, tops_line = _tops_table(st.top_cols, source)
    return Recording(
        symbol=symbol,
        market=market,
        depth=depth,
        depth_line=depth_line,
        trades=trades,
        trades_line=trades_line,
        tops=tops,
        tops_line=tops_line,
        snapshot_ts=snap.ts,
        source=source,
        gaps=gaps,
        snapshot_source=snap_source,
    )


def _flatten_levels(
    level_lists: list[list[Any]], where: Callable[[int], str]
) -> tuple[list[Any], npt.NDArray[np.int64]]:
    """[p0, q0, p1, q1, ...] of all levels, and the number of levels in each list.

    ``where(k)`` names the file and line of ``level_lists[k]``, for the DataError raised when a
    level is not a ``[price, qty]`` list. Flattening with ``chain`` runs in C: a Python loop
    over the ~500k levels of a file would cost more than everything else here.
    """
    levels = list(chain.from_iterable(level_lists))
    if levels and (set(map(type, levels)) != {list} or set(map(len, levels)) != {2}):
        for k, level_list in enumerate(level_lists):
            if any(type(lv) is not list or len(lv) != 2 for lv in level_list):
                raise DataError(f"{where(k)}: depth levels must be [price, qty] pairs")
    counts = np.fromiter(map(len, level_lists), dtype=np.int64, count=len(level_lists))
    return list(chain.from_iterable(levels)), counts


def _depth_table(
    snap: _Snapshot, kept: list[_Diff], source: str, snap_source: str
) -> tuple[pa.Table, Int64Array]:
    n_msgs = 1 + len(kept)
    level_lists = [snap.bids, snap.asks]  # bids, asks, bids, asks, ... one pair per message
    for diff in kept:
        level_lists += (diff[5], diff[6])

    def where_list(k: int) -> str:
        if k < 2:
            return f"{snap_source}: line {snap.line + 1}"
        return f"{source}: line {kept[k // 2 - 1][0] + 1}"

    flat, counts = _flatten_levels(level_lists, where_list)

    msg_line = np.array([snap.line] + [d[0] for d in kept], dtype=np.int64)
    msg_ts = np.array([snap.ts] + [max(d[1], snap.ts) for d in kept], dtype=np.int64)
    msg_first = np.array([snap.last_update_id] + [d[2] for d in kept], dtype=np.int64)
    msg_last = np.array([snap.last_update_id] + [d[3] for d in kept], dtype=np.int64)
    msg_prev = pa.array([None] + [d[4] for d in kept], type=pa.int64())
    rows_per_msg = counts[0::2] + counts[1::2]
    row_msg = np.repeat(np.arange(n_msgs), rows_per_msg)
    side = np.repeat(np.tile(np.array([1, -1], dtype=np.int8), n_msgs), counts)
    row_line = msg_line[row_msg]
    snapshot_rows = int(rows_per_msg[0])

    # flat holds price, qty, price, qty, ...: value i belongs to row i // 2
    def field_name(i: int) -> str:
        row, what = i // 2, ("price", "qty")[i % 2]
        if row < snapshot_rows:
            return f"{'bids' if side[row] == 1 else 'asks'} {what}"
        return f"{'b' if side[row] == 1 else 'a'} {what}"

    def where(i: int) -> str:
        return snap_source if i // 2 < snapshot_rows else source

    values = _floats(flat, np.repeat(row_line, 2), field_name, where)
    table = pa.table(
        {
            "ts": pa.array(msg_ts[row_msg], type=TS_TYPE),
            "first_update_id": msg_first[row_msg],
            "last_update_id": msg_last[row_msg],
            "prev_last_update_id": msg_prev.take(pa.array(row_msg)),
            "side": side,
            "price": values[0::2],
            "qty": values[1::2],
            "is_snapshot": row_msg == 0,
        }
    )
    return conform(table, "depth_updates", source), row_line


def _trades_table(
    cols: tuple[list[Any], ...], id_field: str, source: str
) -> tuple[pa.Table, Int64Array]:
    line_l, ts_l, ids, prices, qtys, makers = cols
    lines = np.array(line_l, dtype=np.int64)
    table = pa.table(
        {
            "ts": pa.array(np.array(ts_l, dtype=np.int64), type=TS_TYPE),
            "trade_id": _ints(ids, lines, id_field, source),
            "price": _floats(prices, lines, lambda _: "p", lambda _: source),
            "qty": _floats(qtys, lines, lambda _: "q", lambda _: source),
            "is_buyer_maker": _bools(makers, lines, "m", source),
        }
    )
    return conform(table, "trades", source), lines


def _tops_table(cols: tuple[list[Any], ...], source: str) -> tuple[pa.Table, Int64Array]:
    line_l, ts_l, update_ids, bid, bid_qty, ask, ask_qty = cols
    lines = np.array(line_l, dtype=np.int64)

    def floats(values: list[Any], name: str) -> npt.NDArray[np.float64]:
        return _floats(values, lines, lambda _: name, lambda _: source)

    table = pa.table(
        {
            "ts": pa.array(np.array(ts_l, dtype=np.int64), type=TS_TYPE),
            "update_id": _ints(update_ids, lines, "u", source),
            "bid_price": floats(bid, "b"),
            "bid_qty": floats(bid_qty, "B"),
            "ask_price": floats(ask, "a"),
            "ask_qty": floats(ask_qty, "A"),
        }
    )
    return conform(table, "book_tops", source), lines


def _floats(
    values: list[Any],
    lines: Int64Array,
    name: Callable[[int], str],
    where: Callable[[int], str],
) -> npt.NDArray[np.float64]:
    """Decimal strings (or JSON numbers) -> float64; DataError at the first bad, non-finite or
    negative value, naming its file, line and field."""
    arr: npt.NDArray[np.float64] | None = None
    try:
        # Arrow's string -> double cast is ~3x faster than numpy's per-object float() calls.
        arr = pc.cast(pa.array(values, type=pa.string()), pa.float64()).to_numpy(
            zero_copy_only=False
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        try:  # JSON numbers rather than strings, or a value Arrow will not parse
            arr = np.array(values, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            row = next(r for r, v in enumerate(values) if not _parses_as_float(v))
    if arr is not None:
        bad = ~(arr >= 0) | np.isinf(arr)  # NaN (and a null) fails arr >= 0
        if not bad.any():
            return arr
        row = int(np.argmax(bad))
    raise DataError(
        f"{where(row)}: line {int(lines[row]) + 1}: field {name(row)} is {values[row]!r}: "
        f"expected a finite, non-negative decimal"
    )


def _parses_as_float(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False
    try:
        float(value)
    except (ValueError, OverflowError):
        return False
    return True


def _ints(values: list[Any], lines: Int64Array, name: str, source: str) -> Int64Array:
    if set(map(type, values)) <= {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            pass
    for row, v in enumerate(values):
        if type(v) is not int or not -(1 << 63) <= v < (1 << 63):
            raise DataError(
                f"{source}: line {int(lines[row]) + 1}: field {name} is {v!r}: expected an integer"
            )
    raise AssertionError("unreachable")


def _bools(values: list[Any], lines: Int64Array, name: str, source: str) -> npt.NDArray[np.bool_]:
    if set(map(type, values)) <= {bool}:
        return np.array(values, dtype=np.bool_)
    row = next(r for r, v in enumerate(values) if type(v) is not bool)
    raise DataError(
        f"{source}: line {int(lines[row]) + 1}: field {name} is {values[row]!r}: "
        f"expected true or false"
    )
