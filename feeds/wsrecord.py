"""Record a live Binance websocket session to Parquet, and read it back as a Recording.

:class:`WsRecorder` is a :class:`~tickray.feeds.ws.MessageSink`: pass it as ``sink=`` to
:class:`~tickray.feeds.ws.BinanceWs` and it receives, in session order, every raw message text
(valid or not, control replies included) and every REST depth snapshot the live books fetched
(:class:`~tickray.feeds.livebook.LiveFeed` notes them through the client). One row per message,
in the :data:`RAW_MESSAGES` schema:

=========  ===============================  ==================================================
column     type                             meaning
=========  ===============================  ==================================================
seq        int64                            session sequence number (0, 1, 2, ...; the
                                            ``line`` of the rows of a replayed Recording)
ts         timestamp[ns, UTC]               local receive time (never goes back)
kind       int8                             0 websocket message, 1 REST depth snapshot
conn       int32                            connection number (1 = first, +1 per reconnect)
stream     string, nullable                 stream name (null: undecodable or control reply)
symbol     string, nullable                 symbol of a REST snapshot (null for kind 0)
text       string                           the text exactly as received (kind 0) or the
                                            snapshot's JSON, re-serialised compactly (kind 1)
=========  ===============================  ==================================================

Files: the directory holds ``part-000000.parquet``, ``part-000001.parquet``, ... Rows are
buffered and written as one row group every ``batch_rows`` rows or ``batch_seconds`` s
(checked at each write, and by :meth:`WsRecorder.flush`), so memory stays bounded. Those
writes happen on the recorder's own thread, one at a time and in order: encoding and zstd
compression release the GIL, so the session's thread only turns the rows into an Arrow table
(about a tenth of the cost) and goes on receiving; it waits for the previous write before
handing over the next, so at most one batch is in flight. :meth:`WsRecorder.flush` and
:meth:`WsRecorder.close` return once everything is written, and a failed write raises at the
next flush. A part is written to a hidden ``.part-NNNNNN.parquet.tmp`` and renamed into place
(after fsync) when it reaches ``part_rows`` rows or ``part_seconds`` s, or on
:meth:`WsRecorder.close`: a part file that exists is complete. After a crash, the rows of the
unfinished ``.tmp`` part are lost (at most ``part_rows``, plus the batch being written); the
finished parts read normally.

:func:`read_ws_recording` replays the rows through the same code as the live session
(:class:`~tickray.feeds.ws.MessageDecoder`, :class:`~tickray.feeds.livebook.LiveSymbol`), so a
live session's books, gaps and resyncs replay exactly. Fed the lines of an hftbacktest file
(``seq`` = line index, the snapshot line as a kind-1 row), it gives a Recording equal to
:func:`~tickray.feeds.recordings.read_binance_recording` of that file.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from tickray.feeds.livebook import Handler, LiveBook, LiveSymbol, SymbolBatch
from tickray.feeds.recordings import Recording
from tickray.feeds.schemas import SCHEMA_VERSION, TS_TYPE, DataError, open_parquet, ts_numpy
from tickray.feeds.ws import ControlReply, Market, MessageDecoder, stream_kind

KIND_WS = 0
KIND_SNAPSHOT = 1
RAW_KIND = b"ws_messages"

RAW_MESSAGES = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("kind", pa.int8(), nullable=False),
        pa.field("conn", pa.int32(), nullable=False),
        pa.field("stream", pa.string(), nullable=True),
        pa.field("symbol", pa.string(), nullable=True),
        pa.field("text", pa.string(), nullable=False),
    ],
    metadata={b"tickray.kind": RAW_KIND, b"tickray.schema_version": SCHEMA_VERSION},
)
PART_GLOB = "part-[0-9][0-9][0-9][0-9][0-9][0-9].parquet"
_PART_RE = re.compile(r"part-([0-9]{6})\.parquet")


class WsRecorder:
    """Writes a session's raw messages to Parquet part files in ``directory`` (module doc).

    ``market`` (``"spot"``/``"usdm"``) and ``metadata`` (e.g. the stream URL) are stored in
    every part's schema metadata. ``directory`` must not already hold parts. Use as a context
    manager or call :meth:`close`; ``monotonic`` (seconds) times the flushes.
    """

    def __init__(
        self,
        directory: str | Path,
        market: Market,
        *,
        batch_rows: int = 5000,
        batch_seconds: float = 2.0,
        part_rows: int = 500_000,
        part_seconds: float = 3600.0,
        metadata: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_rows <= 0 or part_rows <= 0:
            raise ValueError("batch_rows and part_rows must be positive")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if any(self.directory.glob(PART_GLOB)):
            raise DataError(f"{self.directory}: already holds a recording (part files)")
        self.market = market
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.part_rows = part_rows
        self.part_seconds = part_seconds
        self.monotonic = monotonic
        meta = {b"tickray.market": market.encode()}
        meta |= {f"tickray.{k}".encode(): v.encode() for k, v in (metadata or {}).items()}
        self.schema = RAW_MESSAGES.with_metadata({**RAW_MESSAGES.metadata, **meta})
        #: Finished part files, in order.
        self.parts: list[Path] = []
        #: Rows handed to the recorder so far.
        self.rows = 0
        self._cols: tuple[list[Any], ...] = tuple([] for _ in range(7))
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._part_rows = 0
        self._part_started = 0.0
        self._last_flush = monotonic()
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None

    # -- MessageSink ----------------------------------------------------------------------------

    def write_message(
        self, seq: int, recv_ns: int, conn: int, stream: str | None, text: str
    ) -> None:
        """One websocket message (``stream`` None when it could not be decoded)."""
        self._add(seq, recv_ns, KIND_WS, conn, stream, None, text)

    def write_snapshot(self, seq: int, recv_ns: int, conn: int, symbol: str, text: str) -> None:
        """One REST depth snapshot of ``symbol`` (its JSON text)."""
        self._add(seq, recv_ns, KIND_SNAPSHOT, conn, None, symbol, text)

    # -- files ----------------------------------------------------------------------------------

    def _add(
        self,
        seq: int,
        recv_ns: int,
        kind: int,
        conn: int,
        stream: str | None,
        symbol: str | None,
        text: str,
    ) -> None:
        # once per message: plain appends, one clock read
        if self._closed:
            raise RuntimeError("WsRecorder is closed")
        c_seq, c_ts, c_kind, c_conn, c_stream, c_symbol, c_text = self._cols
        c_seq.append(seq)
        c_ts.append(recv_ns)
        c_kind.append(kind)
        c_conn.append(conn)
        c_stream.append(stream)
        c_symbol.append(symbol)
        c_text.append(text)
        self.rows += 1
        if (
            len(c_seq) >= self.batch_rows
            or self.monotonic() - self._last_flush >= self.batch_seconds
        ):
            self._flush(wait=False)

    def flush(self) -> None:
        """Write the buffered rows as one row group (and finish the part if it is full);
        returns once every row handed to the recorder is written."""
        self._flush(wait=True)

    def wait(self) -> None:
        """Block until the batch handed to the writer thread, if any, is written (the rows
        still buffered stay buffered)."""
        fut, self._writing = self._writing, None
        if fut is not None:
            fut.result()  # re-raises the write's error here

    def _flush(self, wait: bool) -> None:
        self._last_flush = self.monotonic()
        if not self._cols[0]:
            if wait:
                self.wait()
            return
        table = pa.Table.from_arrays(
            [
                pa.array(self._cols[0], type=pa.int64()),
                pa.array(self._cols[1], type=pa.int64()).cast(TS_TYPE),
                pa.array(self._cols[2], type=pa.int8()),
                pa.array(self._cols[3], type=pa.int32()),
                pa.array(self._cols[4], type=pa.string()),
                pa.array(self._cols[5], type=pa.string()),
                pa.array(self._cols[6], type=pa.string()),
            ],
            schema=self.schema,
        )
        for col in self._cols:
            col.clear()
        self.wait()  # one write at a time: memory stays bounded and row groups in order
        if wait:
            self._write(table)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tickray-ws-recorder")
        self._writing = self._pool.submit(self._write, table)

    def _write(self, table: pa.Table) -> None:
        """One row group into the open part (opening one if needed), and the part finished
        if it is full; on the writer thread, or on the caller's when it waits anyway."""
        if self._writer is None:
            self._open_part()
        assert self._writer is not None
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._part_rows += table.num_rows
        age = self.monotonic() - self._part_started
        if self._part_rows >= self.part_rows or age >= self.part_seconds:
            self._finish_part()

    def _open_part(self) -> None:
        index = len(self.parts)
        self._tmp = self.directory / f".part-{index:06d}.parquet.tmp"
        self._writer = pq.ParquetWriter(
            str(self._tmp),
            self.schema,
            compression="zstd",
            use_dictionary=["stream", "symbol"],
            write_statistics=["seq", "ts", "conn"],
        )
        self._part_rows = 0
        self._part_started = self.monotonic()

    def _finish_part(self) -> None:
        if self._writer is None or self._tmp is None:
            return
        self._writer.close()
        with open(self._tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        final = self.directory / self._tmp.name[1:].removesuffix(".tmp")
        os.replace(self._tmp, final)
        self.parts.append(final)
        self._writer = self._tmp = None

    def close(self) -> list[Path]:
        """Flush, finish the open part and return every part file written."""
        if not self._closed:
            try:
                self.flush()
                self._finish_part()
            finally:
                self._closed = True
                if self._pool is not None:
                    self._pool.shutdown()
        return list(self.parts)

    def __enter__(self) -> WsRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# reading


def part_files(path: str | Path) -> list[Path]:
    """The finished part files of a recording directory, in order (or ``[path]`` for a file)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataError(f"{p}: no such recording")
    parts = sorted(p.glob(PART_GLOB))
    if not parts:
        raise DataError(f"{p}: no part files ({PART_GLOB})")
    return parts


def read_ws_messages(path: str | Path) -> tuple[pa.Table, dict[str, str]]:
    """All rows of a recording (directory or one part file), and its ``tickray.*`` metadata.

    DataError when a part is not a RAW_MESSAGES file, or when ``seq`` does not increase or
    ``ts`` goes back across the rows.
    """
    tables = []
    meta: dict[str, str] = {}
    for part in part_files(path):
        pf = open_parquet(part)
        schema = pf.schema_arrow
        got = (schema.metadata or {}).get(b"tickray.kind")
        if got != RAW_KIND or not schema.remove_metadata().equals(RAW_MESSAGES.remove_metadata()):
            raise DataError(f"{part}: not a websocket recording part ({RAW_KIND.decode()} schema)")
        meta = {
            k.decode().removeprefix("tickray."): v.decode()
            for k, v in (schema.metadata or {}).items()
            if k.startswith(b"tickray.")
        }
        tables.append(pf.read())
    table = pa.concat_tables(tables)
    seq = table.column("seq").to_numpy()
    if len(seq) > 1 and not (seq[1:] > seq[:-1]).all():
        raise DataError(
            f"{path}: seq does not increase (row {int((seq[1:] <= seq[:-1]).argmax()) + 1})"
        )
    ts = ts_numpy(table.column("ts"))
    if len(ts) > 1 and not (ts[1:] >= ts[:-1]).all():
        raise DataError(
            f"{path}: receive time goes back (row {int((ts[1:] < ts[:-1]).argmax()) + 1})"
        )
    return table, meta


class WsReplay(NamedTuple):
    """One symbol of a recording, replayed: its rows (as a live drain would give them), its
    book after the last message (with its stats), and the messages skipped as malformed."""

    symbol: str
    market: Market
    batch: SymbolBatch
    book: LiveBook
    errors: list[str]


def _market(meta: Mapping[str, str], path: str | Path) -> Market:
    market = meta.get("market")
    if market == "spot":
        return "spot"
    if market == "usdm":
        return "usdm"
    raise DataError(f"{path}: metadata tickray.market is {market!r}, expected 'spot' or 'usdm'")


def _symbols_of(table: pa.Table) -> list[str]:
    streams = table.column("stream").unique().drop_null().to_pylist()
    return sorted({s.partition("@")[0].upper() for s in streams})


def recorded_symbols(path: str | Path) -> list[str]:
    """The symbols whose streams a recording (directory or part file) holds, sorted."""
    table, _ = read_ws_messages(path)
    return _symbols_of(table)


def _only_symbol(table: pa.Table, path: str | Path) -> str:
    symbols = _symbols_of(table)
    if len(symbols) != 1:
        raise DataError(f"{path}: recording holds symbols {symbols}: pass symbol=")
    return str(symbols[0])


def replay_ws_recording(
    path: str | Path, symbol: str | None = None, *, strict: bool = False
) -> WsReplay:
    """Replay one symbol of a recording through the live code (module doc).

    ``symbol`` may be left out when the recording holds one. Malformed messages are skipped
    and listed in ``errors``, as the live client skipped them (``strict=True`` raises
    DataError at the first instead).
    """
    table, meta = read_ws_messages(path)
    market = _market(meta, path)
    sym_name = (symbol or _only_symbol(table, path)).upper()
    prefix = sym_name.lower() + "@"
    decoder = MessageDecoder(market)
    live = LiveSymbol(sym_name, market)
    book = live.book
    routes: dict[str, Handler] = {}
    errors: list[str] = []
    seqs = table.column("seq").to_pylist()
    stamps = ts_numpy(table.column("ts")).tolist()
    kinds = table.column("kind").to_pylist()
    streams = table.column("stream").to_pylist()
    conns = table.column("conn").to_pylist()
    symbols = table.column("symbol").to_pylist()
    texts = table.column("text").to_pylist()
    for seq, ts, kind, conn, stream, snap_symbol, text in zip(
        seqs, stamps, kinds, conns, streams, symbols, texts, strict=True
    ):
        if kind == KIND_SNAPSHOT:
            if snap_symbol == sym_name:
                try:
                    payload = json.loads(text)
                except json.JSONDecodeError as exc:
                    payload = {"error": f"invalid JSON ({exc.msg})"}  # counted as a bad snapshot
                book.on_snapshot(ts, seq, payload if isinstance(payload, dict) else {})
            continue
        if stream is not None and not stream.startswith(prefix):
            continue
        try:
            name, data = decoder.decode(text)
        except DataError as exc:
            if strict:
                raise DataError(f"{path}: message {seq}: {exc}") from None
            errors.append(f"message {seq} (connection {conn}): {exc}")
            continue
        if name is None or isinstance(data, ControlReply) or not name.startswith(prefix):
            continue
        handler = routes.get(name)
        if handler is None:
            handler = routes[name] = live.handler(stream_kind(name)[1])
        handler(ts, seq, data)
    return WsReplay(sym_name, market, live.drain(), book, errors)


def read_ws_recording(
    path: str | Path, symbol: str | None = None, *, strict: bool = False
) -> Recording:
    """One symbol of a recording as a :class:`~tickray.feeds.recordings.Recording`.

    Rows and ``*_line`` (= ``seq``) are what the live session produced; ``gaps`` lists the
    sequence breaks the session met (each followed by a resync, so the depth rows go on).
    Trades come from ``@trade``, or from ``@aggTrade`` if there is no trade stream (DataError
    if both were recorded). DataError when no snapshot of the symbol was ever applied.
    """
    rep = replay_ws_recording(path, symbol, strict=strict)
    b = rep.batch
    if b.trades.num_rows and b.agg_trades.num_rows:
        raise DataError(
            f"{path}: {rep.symbol} has both trade and aggTrade messages; a Recording's trades "
            f"must come from one of them"
        )
    use_agg = b.agg_trades.num_rows > 0
    snapshot_ts = rep.book.first_snapshot_ts
    if snapshot_ts is None:
        raise DataError(f"{path}: no REST depth snapshot of {rep.symbol} was applied")
    return Recording(
        symbol=rep.symbol,
        market=rep.market,
        depth=b.depth,
        depth_line=b.depth_line,
        trades=b.agg_trades if use_agg else b.trades,
        trades_line=b.agg_trades_line if use_agg else b.trades_line,
        tops=b.tops,
        tops_line=b.tops_line,
        snapshot_ts=snapshot_ts,
        source=str(path),
        gaps=list(rep.book.gaps),
        snapshot_source=str(path),
    )
