"""Bars from a recorded live session: the closed klines of its raw messages.

A paper session (``tickray paper`` with ``live.record``) writes every raw websocket message
of each symbol actor to ``<record>/ws-<first symbol>/`` (:class:`~tickray.feeds.wsrecord.
WsRecorder`). :func:`recorded_bars` decodes those messages with the very decoder the live
session used and keeps each bar's final (``x: true``) kline, once, in time order, so that a
backtest of :func:`store_recorded_bars`'s folder over the session's range sees exactly the
bars the live simulation saw.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tickray.feeds.livebook import kline_bars
from tickray.feeds.schemas import DataError
from tickray.feeds.store import write_bars
from tickray.feeds.ws import Kline, Market, MessageDecoder
from tickray.feeds.wsrecord import KIND_WS, read_ws_messages

__all__ = ["recorded_bars", "store_recorded_bars"]


def _sessions(folder: Path) -> list[Path]:
    if any(folder.glob("part-*.parquet")):
        return [folder]
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("part-*.parquet")))
    if not subs:
        raise DataError(f"{folder}: no websocket recording (part-*.parquet) here or below")
    return subs


def recorded_bars(folder: str | Path, interval: str) -> dict[str, pa.Table]:
    """Each symbol's closed ``interval`` klines in the recording(s) under ``folder``, as
    BARS tables (``ts`` = open time), sorted by time, one row per bar."""
    root = Path(folder)
    rows: dict[str, dict[int, Kline]] = {}
    for session in _sessions(root):
        table, meta = read_ws_messages(session)
        market_name = meta.get("market", "spot")
        market: Market = "usdm" if market_name == "usdm" else "spot"
        decoder = MessageDecoder(market)
        kinds = table.column("kind").to_pylist()
        texts = table.column("text").to_pylist()
        streams = table.column("stream").to_pylist()
        for kind, stream, text in zip(kinds, streams, texts, strict=True):
            if kind != KIND_WS or stream is None or f"@kline_{interval}" not in stream:
                continue
            _, event = decoder.decode(text)
            if isinstance(event, Kline) and event.closed:
                rows.setdefault(stream.split("@")[0].upper(), {})[event.open_ms] = event
    out: dict[str, pa.Table] = {}
    for symbol, bars in sorted(rows.items()):
        out[symbol] = kline_bars([bars[t] for t in sorted(bars)], f"{root} ({symbol})")
    return out


def store_recorded_bars(folder: str | Path, root: str | Path, interval: str) -> list[str]:
    """Write :func:`recorded_bars` into the data folder ``root``; returns the symbols."""
    bars = recorded_bars(folder, interval)
    for symbol, table in bars.items():
        write_bars(root, symbol, interval, table)
    return sorted(bars)
