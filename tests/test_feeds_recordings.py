"""Binance websocket recordings: the depth sync procedure, validation, real files, tick store.

Hand-built recordings are written as gzip files in the hftbacktest layout (one
``<receive_ns> <json>`` per line, line numbers below are 1-based as in the error messages).
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickray.feeds.recordings import (
    Recording,
    read_binance_recording,
    read_cryptofeed_recording,
)
from tickray.feeds.schemas import (
    BOOK_TOPS,
    DEPTH_UPDATES,
    TRADES,
    TS_TYPE,
    DataError,
    ts_numpy,
)
from tickray.feeds.store import read_ticks, tick_dir, tick_files, write_ticks

T0 = 1_723_161_254_000_000_000  # 2024-08-08 23:54:14 UTC, in ns
MS = 1_000_000

# --------------------------------------------------------------------------------------------
# builders of hand-made recordings


def spot_diff(first: int, last: int, bids: Any = (), asks: Any = (), sym: str = "BTCUSDT") -> Any:
    data = {"e": "depthUpdate", "E": 1, "s": sym, "U": first, "u": last}
    data |= {"b": [list(x) for x in bids], "a": [list(x) for x in asks]}
    return {"stream": f"{sym.lower()}@depth@100ms", "data": data}


def fut_diff(first: int, last: int, prev: int, bids: Any = (), asks: Any = ()) -> Any:
    data = {"e": "depthUpdate", "E": 1, "T": 1, "s": "BTCUSDT", "U": first, "u": last, "pu": prev}
    data |= {"b": [list(x) for x in bids], "a": [list(x) for x in asks]}
    return {"stream": "btcusdt@depth@0ms", "data": data}


def snapshot(last_id: int, bids: Any, asks: Any, futures: bool = False) -> Any:
    snap: dict[str, Any] = {"lastUpdateId": last_id}
    if futures:
        snap |= {"E": 1, "T": 1}
    return snap | {"bids": [list(x) for x in bids], "asks": [list(x) for x in asks]}


def trade(trade_id: int, price: str, qty: str, maker: bool, sym: str = "BTCUSDT") -> Any:
    data = {"e": "trade", "E": 1, "s": sym, "t": trade_id, "p": price, "q": qty, "T": 1, "m": maker}
    return {"stream": f"{sym.lower()}@trade", "data": data}


def top(update_id: int, bid: str, bid_qty: str, ask: str, ask_qty: str) -> Any:
    # spot bookTicker: no event type, no exchange time
    data = {"u": update_id, "s": "BTCUSDT", "b": bid, "B": bid_qty, "a": ask, "A": ask_qty}
    return {"stream": "btcusdt@bookTicker", "data": data}


def write_recording(tmp_path: Path, messages: list[Any], name: str = "rec.ws.gz") -> Path:
    """Message k is received at T0 + k ms; a str is written as the raw JSON text of its line."""
    lines = []
    for k, msg in enumerate(messages):
        body = msg if isinstance(msg, str) else json.dumps(msg, separators=(",", ":"))
        lines.append(f"{T0 + k * MS} {body}\n")
    path = tmp_path / name
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(lines)
    return path


BOOK = snapshot(100, [("10.0", "1.5"), ("9.9", "2")], [("10.1", "3")])
FUT_BOOK = snapshot(100, [("10.0", "1.5"), ("9.9", "2")], [("10.1", "3")], futures=True)


def diff_ids(rec: Recording) -> list[tuple[int, int, int | None]]:
    """(U, u, pu) of each diff message with rows, in order (snapshot rows left out)."""
    diffs = ~rec.depth.column("is_snapshot").to_numpy(zero_copy_only=False)
    lines = rec.depth_line[diffs]
    starts = np.flatnonzero(np.concatenate(([True], lines[1:] != lines[:-1]))[: lines.size])
    rows = rec.depth.filter(pa.array(diffs)).take(pa.array(starts, type=pa.int64()))
    return list(
        zip(
            rows.column("first_update_id").to_pylist(),
            rows.column("last_update_id").to_pylist(),
            rows.column("prev_last_update_id").to_pylist(),
            strict=True,
        )
    )


# --------------------------------------------------------------------------------------------
# the sync procedure


def test_spot_keeps_the_diff_bracketing_last_update_id_plus_one_even_before_the_snapshot(
    tmp_path: Path,
) -> None:
    path = write_recording(
        tmp_path,
        [
            spot_diff(95, 99, bids=[("9.8", "1")]),  # line 1: u <= 100, dropped
            spot_diff(100, 100, asks=[("10.2", "4")]),  # line 2: u == lastUpdateId, dropped
            spot_diff(98, 102, bids=[("10.0", "0")], asks=[("10.1", "2.5")]),  # 3: brackets 101
            BOOK,  # line 4, received at T0 + 3 ms
            spot_diff(103, 105, bids=[("9.9", "7")]),  # line 5: U == 102 + 1
        ],
    )
    rec = read_binance_recording(path)
    assert (rec.symbol, rec.market, rec.gaps) == ("BTCUSDT", "spot", [])
    assert rec.snapshot_ts == T0 + 3 * MS
    depth = rec.depth
    assert depth.schema.equals(DEPTH_UPDATES, check_metadata=True)
    # 3 snapshot rows (bids then asks), then 2 rows of the diff of line 3, then 1 of line 5
    assert depth.column("is_snapshot").to_pylist() == [True] * 3 + [False] * 3
    assert depth.column("side").to_pylist() == [1, 1, -1, 1, -1, 1]
    assert depth.column("price").to_pylist() == [10.0, 9.9, 10.1, 10.0, 10.1, 9.9]
    assert depth.column("qty").to_pylist() == [1.5, 2.0, 3.0, 0.0, 2.5, 7.0]
    assert depth.column("first_update_id").to_pylist() == [100, 100, 100, 98, 98, 103]
    assert depth.column("last_update_id").to_pylist() == [100, 100, 100, 102, 102, 105]
    assert depth.column("prev_last_update_id").null_count == 6  # no pu on spot
    assert rec.depth_line.tolist() == [3, 3, 3, 2, 2, 4]  # 0-based file lines
    # the diff received before the snapshot is stamped with the snapshot's receive time
    assert ts_numpy(depth.column("ts")).tolist() == [T0 + 3 * MS] * 5 + [T0 + 4 * MS]


def test_spot_first_diff_that_skips_last_update_id_plus_one_is_a_gap(tmp_path: Path) -> None:
    path = write_recording(tmp_path, [BOOK, spot_diff(102, 104, bids=[("9.9", "1")])])
    with pytest.raises(DataError, match=r"rec\.ws\.gz: line 2: .*U=102, u=104.*U <= 101 <= u"):
        read_binance_recording(path)


def test_spot_diff_must_chain_on_first_update_id(tmp_path: Path) -> None:
    path = write_recording(
        tmp_path,
        [
            BOOK,
            spot_diff(101, 103, bids=[("9.9", "1")]),
            spot_diff(104, 104),  # no levels, still part of the sequence
            spot_diff(106, 107, asks=[("10.1", "1")]),  # line 4: 105 is missing
        ],
    )
    with pytest.raises(DataError, match=r"line 4: depth sequence gap: U=106 .* u=104"):
        read_binance_recording(path)


def test_diff_without_levels_counts_for_the_sequence_but_gives_no_rows(tmp_path: Path) -> None:
    path = write_recording(
        tmp_path,
        [BOOK, spot_diff(101, 103), spot_diff(104, 105, asks=[("10.3", "1")])],
    )
    rec = read_binance_recording(path)
    assert diff_ids(rec) == [(104, 105, None)]
    assert rec.depth.num_rows == 3 + 1


def test_futures_keep_the_diff_ending_at_last_update_id_and_chain_on_pu(tmp_path: Path) -> None:
    # futures drop only u < lastUpdateId: a diff with u == lastUpdateId brackets
    # U <= 100 <= u and is applied (a no-op on the snapshot's levels)
    path = write_recording(
        tmp_path,
        [
            fut_diff(90, 99, 89, bids=[("9.7", "1")]),  # line 1: u < 100, dropped
            FUT_BOOK,
            fut_diff(97, 100, 99, bids=[("9.9", "2")]),  # line 3: brackets 100
            fut_diff(101, 104, 100, asks=[("10.1", "0")]),  # pu == 100
            fut_diff(106, 109, 104, bids=[("9.5", "3")]),  # pu == 104 (U need not be u + 1)
        ],
    )
    rec = read_binance_recording(path)
    assert (rec.market, rec.gaps) == ("usdm", [])
    assert diff_ids(rec) == [(97, 100, 99), (101, 104, 100), (106, 109, 104)]
    assert rec.depth.column("prev_last_update_id").to_pylist()[:3] == [None] * 3


def test_futures_first_diff_starting_after_last_update_id_is_a_gap(tmp_path: Path) -> None:
    path = write_recording(tmp_path, [FUT_BOOK, fut_diff(101, 104, 100, bids=[("9.9", "1")])])
    with pytest.raises(DataError, match=r"line 2: .*lastUpdateId 100.*U <= 100 <= u"):
        read_binance_recording(path)


def test_futures_diff_must_chain_on_pu(tmp_path: Path) -> None:
    path = write_recording(
        tmp_path,
        [FUT_BOOK, fut_diff(99, 102, 98), fut_diff(104, 105, 103, bids=[("9.9", "1")])],
    )
    with pytest.raises(DataError, match=r"rec\.ws\.gz: line 3: depth sequence gap: pu=103 .*u=102"):
        read_binance_recording(path)


def test_coinm_is_told_from_the_pair_field(tmp_path: Path) -> None:
    msg = fut_diff(99, 102, 98, bids=[("61000.1", "12")])
    msg["stream"] = "btcusd_perp@depth@0ms"
    msg["data"] |= {"s": "BTCUSD_PERP", "ps": "BTCUSD"}
    book = FUT_BOOK | {"symbol": "BTCUSD_PERP", "pair": "BTCUSD"}
    rec = read_binance_recording(write_recording(tmp_path, [book, msg]))
    assert (rec.symbol, rec.market) == ("BTCUSD_PERP", "coinm")


def test_not_strict_records_the_gap_and_stops_depth_rows_there(tmp_path: Path) -> None:
    path = write_recording(
        tmp_path,
        [
            BOOK,
            spot_diff(101, 103, bids=[("9.9", "1")]),
            spot_diff(105, 106, bids=[("9.8", "1")]),  # line 3: gap (104 missing)
            spot_diff(107, 108, bids=[("9.7", "1")]),  # chains on the gap, still not kept
            trade(7, "10.05", "0.5", True),  # trades and tops go on past the gap
            top(108, "10.0", "1", "10.1", "2"),
        ],
    )
    rec = read_binance_recording(path, strict=False)
    assert len(rec.gaps) == 1
    assert re.search(r"line 3: depth sequence gap: U=105 .*u=103", rec.gaps[0])
    assert diff_ids(rec) == [(101, 103, None)]
    assert rec.trades.num_rows == 1 and rec.tops.num_rows == 1


# --------------------------------------------------------------------------------------------
# trades, tops and the common clock


def test_trades_and_tops_keep_file_order_and_receive_time(tmp_path: Path) -> None:
    path = write_recording(
        tmp_path,
        [
            trade(41, "10.05", "0.5", True),  # line 1, before the snapshot: kept
            BOOK,
            top(100, "10.0", "1.5", "10.1", "3"),
            trade(42, "10.1", "0.25", False),
        ],
    )
    rec = read_binance_recording(path)
    assert rec.trades.schema.equals(TRADES, check_metadata=True)
    assert rec.tops.schema.equals(BOOK_TOPS, check_metadata=True)
    assert rec.trades.to_pydict() == {
        "ts": pa.array([T0, T0 + 3 * MS], type=TS_TYPE).to_pylist(),
        "trade_id": [41, 42],
        "price": [10.05, 10.1],
        "qty": [0.5, 0.25],
        "is_buyer_maker": [True, False],
    }
    assert rec.trades_line.tolist() == [0, 3]
    assert rec.tops.column("update_id").to_pylist() == [100]
    assert rec.tops.column("ask_qty").to_pylist() == [3.0]
    assert rec.tops_line.tolist() == [2]
    assert ts_numpy(rec.tops.column("ts")).tolist() == [T0 + 2 * MS]


# --------------------------------------------------------------------------------------------
# bad files


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"stream":"btcusdt@trade","data":{', r"line 3: invalid JSON"),
        (trade(1, "10", "-0.5", True), r"line 3: field q is '-0.5'"),
        (top(1, "NaN", "1", "10.1", "1"), r"line 3: field b is 'NaN'"),
        (spot_diff(101, 101, bids=[("10", "-1")]), r"line 3: field b qty is '-1'"),
        (trade(1, "10", "x", True), r"line 3: field q is 'x'"),
        (trade(1, "10", "1", "yes"), r"line 3: field m is 'yes'"),
        ({"stream": "btcusdt@trade", "data": {"s": "BTCUSDT", "t": 1}}, r"line 3: missing field"),
        ({"stream": "btcusdt@kline_1m", "data": {}}, r"line 3: unknown stream 'btcusdt@kline_1m'"),
        (
            trade(1, "10", "1", True, sym="ETHUSDT"),
            r"line 3: stream 'ethusdt@trade' is for ETHUSDT",
        ),
        (BOOK, r"two depth snapshots \(lines 1 and 3\)"),
        ({"result": None, "id": 1}, r"line 3: neither a stream message"),
    ],
)
def test_bad_line_raises_naming_file_and_line(tmp_path: Path, bad_line: Any, message: str) -> None:
    ok_trade, ok_top = trade(1, "10", "1", True), top(101, "10", "1", "10.1", "1")
    path = write_recording(tmp_path, [BOOK, ok_trade, bad_line, ok_top])
    with pytest.raises(DataError, match=r"rec\.ws\.gz: " + message):
        read_binance_recording(path)


def test_symbol_field_must_match_the_stream(tmp_path: Path) -> None:
    msg = trade(1, "10", "1", True)
    msg["data"]["s"] = "ETHUSDT"
    with pytest.raises(DataError, match=r"line 2: symbol 'ETHUSDT' in a 'btcusdt@trade' message"):
        read_binance_recording(write_recording(tmp_path, [BOOK, msg]))


def test_negative_snapshot_qty_names_the_snapshot_line(tmp_path: Path) -> None:
    path = write_recording(tmp_path, [trade(1, "10", "1", True), snapshot(5, [("1", "-2")], [])])
    with pytest.raises(DataError, match=r"line 2: field bids qty is '-2'"):
        read_binance_recording(path)


def test_recording_without_snapshot_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"rec\.ws\.gz: no REST depth snapshot"):
        read_binance_recording(write_recording(tmp_path, [spot_diff(1, 2)]))


def test_receive_time_going_back_raises(tmp_path: Path) -> None:
    path = tmp_path / "back.ws.gz"
    body = json.dumps(trade(1, "10", "1", True))
    with gzip.open(path, "wt") as fh:
        fh.write(f"{T0} {json.dumps(BOOK)}\n{T0 + 5} {body}\n{T0 + 4} {body}\n")
    with pytest.raises(DataError, match=r"back\.ws\.gz: line 3: receive time .* goes back"):
        read_binance_recording(path)


def test_unreadable_gzip_raises(tmp_path: Path) -> None:
    path = tmp_path / "broken.ws.gz"
    path.write_bytes(gzip.compress(b"1 {}\n" * 100)[:-20])
    with pytest.raises(DataError, match=r"broken\.ws\.gz: unreadable recording"):
        read_binance_recording(path)


# --------------------------------------------------------------------------------------------
# the real recordings (README section 4 and 5)

HFT = "crypto/ws_recordings/hftbacktest"
# file, symbol, market, depthUpdate / trade / bookTicker messages (README table), diffs kept
# (the listed diffs minus the stale ones received before the snapshot)
HFT_FILES = [
    ("binance_spot_BTCUSDT_2024-08-08.ws.gz", "BTCUSDT", "spot", 3451, 9757, 28040, 3449),
    ("binance_spot_ETHUSDT_2024-08-08.ws.gz", "ETHUSDT", "spot", 3434, 6106, 24077, 3432),
    ("binance_usdm_BTCUSDT_2024-08-08.ws.gz", "BTCUSDT", "usdm", 6551, 21313, 66089, 6547),
    ("binance_usdm_ETHUSDT_2024-08-08.ws.gz", "ETHUSDT", "usdm", 6586, 14076, 53992, 6581),
    (
        "binance_coinm_BTCUSD_PERP_2024-08-08.ws.gz",
        "BTCUSD_PERP",
        "coinm",
        26847,
        2286,
        19136,
        26824,
    ),
]


@pytest.fixture(scope="module")
def hft_recordings(shared_data: Path) -> dict[str, Recording]:
    return {name: read_binance_recording(shared_data / HFT / name) for name, *_ in HFT_FILES}


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "symbol", "market", "n_depth", "n_trades", "n_tops", "kept"), HFT_FILES
)
def test_real_recording_counts_chain_and_clock(
    hft_recordings: dict[str, Recording],
    name: str,
    symbol: str,
    market: str,
    n_depth: int,
    n_trades: int,
    n_tops: int,
    kept: int,
) -> None:
    rec = hft_recordings[name]
    assert (rec.symbol, rec.market, rec.gaps) == (symbol, market, [])
    assert (rec.trades.num_rows, rec.tops.num_rows) == (n_trades, n_tops)
    assert len(rec.depth_line) == rec.depth.num_rows
    assert len(rec.trades_line) == n_trades and len(rec.tops_line) == n_tops
    for table in (rec.depth, rec.trades, rec.tops):
        assert np.all(np.diff(ts_numpy(table.column("ts"))) >= 0)
    # the REST snapshot asked for 1000 levels a side
    snap = rec.depth.column("is_snapshot").to_numpy()
    assert snap[:2000].all() and not snap[2000:].any()
    last_id = rec.depth.column("last_update_id")[0].as_py()
    ids = diff_ids(rec)  # every diff has levels in these files
    assert len(ids) == kept <= n_depth
    first_u, first_last, _ = ids[0]
    if market == "spot":
        assert first_u <= last_id + 1 <= first_last
        assert all(
            u == prev_last + 1
            for (u, _, _), (_, prev_last, _) in zip(ids[1:], ids[:-1], strict=True)
        )
    else:
        assert first_u <= last_id <= first_last
        assert all(
            pu == prev_last for (_, _, pu), (_, prev_last, _) in zip(ids[1:], ids[:-1], strict=True)
        )
    trade_ids = rec.trades.column("trade_id").to_numpy()
    assert np.all(np.diff(trade_ids) == 1)


@pytest.mark.realdata
def test_real_recording_keeps_newer_diffs_received_before_the_snapshot(
    hft_recordings: dict[str, Recording],
) -> None:
    before = {}
    for name, rec in hft_recordings.items():
        snap_line = int(rec.depth_line[0])
        before[name.split("_2024")[0]] = len(
            set(rec.depth_line[rec.depth_line < snap_line].tolist())
        )
    assert before == {
        "binance_spot_BTCUSDT": 1,
        "binance_spot_ETHUSDT": 0,
        "binance_usdm_BTCUSDT": 2,
        "binance_usdm_ETHUSDT": 2,
        "binance_coinm_BTCUSD_PERP": 2,
    }


CRYPTOFEED = "crypto/ws_recordings/cryptofeed"


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("exchange", "market", "n_tops", "n_agg_trades"),
    [
        ("BINANCE", "spot", 84, 2),
        ("BINANCE_FUTURES", "usdm", 613, 91),
        ("BINANCE_DELIVERY", "coinm", 2240, 51),
    ],
)
def test_cryptofeed_recordings_sync_every_symbol(
    shared_data: Path, exchange: str, market: str, n_tops: int, n_agg_trades: int
) -> None:
    ws = shared_data / CRYPTOFEED / f"{exchange}.ws.1.0.gz"
    http = shared_data / CRYPTOFEED / f"{exchange}.http.0.0.gz"
    with gzip.open(http, "rt") as fh:
        symbols = [re.findall(r"symbol=([A-Z0-9_]+)", line)[0] for line in fh if line.strip()]
    tops = trades = 0
    for symbol in symbols:
        rec = read_cryptofeed_recording(ws, http, symbol)
        assert (rec.symbol, rec.market, rec.gaps) == (symbol, market, [])
        assert rec.snapshot_source == str(http)
        assert rec.depth.column("is_snapshot")[0].as_py()
        tops += rec.tops.num_rows
        trades += rec.trades.num_rows
    # every bookTicker and aggTrade message of the file belongs to exactly one symbol
    assert (tops, trades) == (n_tops, n_agg_trades)


# --------------------------------------------------------------------------------------------
# the day-partitioned tick store

DAY_END = int(np.datetime64("2024-08-08T23:59:59.998", "ns").astype(np.int64))


def _trades(ts: list[int], first_id: int = 1) -> pa.Table:
    n = len(ts)
    return pa.table(
        {
            "ts": pa.array(ts, type=pa.int64()).cast(TS_TYPE),
            "trade_id": np.arange(first_id, first_id + n, dtype=np.int64),
            "price": np.linspace(100.0, 101.0, n),
            "qty": np.full(n, 0.5),
            "is_buyer_maker": np.arange(n) % 2 == 0,
        }
    )


def test_ticks_split_by_utc_day_and_round_trip_in_order(tmp_path: Path) -> None:
    # two rows share each ts: their order must survive the split and the read
    ts = [DAY_END, DAY_END, DAY_END + MS, DAY_END + 2 * MS, DAY_END + 2 * MS, DAY_END + 3 * MS]
    table = _trades(ts)
    files = write_ticks(tmp_path, "trades", "BTCUSDT", table)
    assert files == [
        tmp_path / "trades" / "BTCUSDT" / "2024-08-08.parquet",
        tmp_path / "trades" / "BTCUSDT" / "2024-08-09.parquet",
    ]
    assert tick_files(tmp_path, "trades", "BTCUSDT") == files
    back = read_ticks(tmp_path, "trades", "BTCUSDT")
    assert back.schema.equals(TRADES, check_metadata=True)
    assert back.equals(pa.Table.from_arrays(table.columns, schema=TRADES))
    # 23:59:59.998 (twice) and .999 on the 8th; 00:00:00.000 (twice) and .001 on the 9th
    assert [pq.read_table(f).num_rows for f in files] == [3, 3]
    # a window reads only its days and returns only its ticks, [start, end)
    part = read_ticks(tmp_path, "trades", "BTCUSDT", DAY_END + MS, DAY_END + 3 * MS)
    assert part.column("ts").cast(pa.int64()).to_pylist() == ts[2:5]
    assert read_ticks(tmp_path, "trades", "BTCUSDT", DAY_END + 2 * MS).num_rows == 3
    with pytest.raises(DataError, match="no trades for 'BTCUSDT'"):
        read_ticks(tmp_path, "trades", "BTCUSDT", DAY_END + 3 * 86_400 * 1000 * MS)


def test_rewriting_the_same_ticks_is_a_no_op_and_later_ticks_are_appended(tmp_path: Path) -> None:
    first = _trades([DAY_END - 10 * MS, DAY_END - 10 * MS, DAY_END - 9 * MS])
    (path,) = write_ticks(tmp_path, "trades", "BTCUSDT", first)
    stored = path.read_bytes()
    write_ticks(tmp_path, "trades", "BTCUSDT", first)
    assert path.read_bytes() == stored
    later = _trades([DAY_END - 5 * MS, DAY_END - 5 * MS], first_id=4)
    write_ticks(tmp_path, "trades", "BTCUSDT", later)
    back = read_ticks(tmp_path, "trades", "BTCUSDT")
    assert back.column("trade_id").to_pylist() == [1, 2, 3, 4, 5]
    earlier = _trades([DAY_END - 20 * MS], first_id=0)
    write_ticks(tmp_path, "trades", "BTCUSDT", earlier)
    assert read_ticks(tmp_path, "trades", "BTCUSDT").column("trade_id").to_pylist() == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]


def test_overlapping_different_ticks_are_refused(tmp_path: Path) -> None:
    write_ticks(tmp_path, "trades", "BTCUSDT", _trades([DAY_END - 10 * MS, DAY_END - 5 * MS]))
    with pytest.raises(DataError, match=r"2024-08-08\.parquet: new trades rows .* refusing"):
        write_ticks(tmp_path, "trades", "BTCUSDT", _trades([DAY_END - 5 * MS], first_id=9))


def test_tick_store_rejects_unknown_kinds_and_reports_missing_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown tick kind 'bars'"):
        tick_dir(tmp_path, "bars", "BTCUSDT")
    with pytest.raises(DataError, match="bad symbol"):
        tick_dir(tmp_path, "trades", "btcusdt")
    assert tick_files(tmp_path, "book_tops", "BTCUSDT") == []
    with pytest.raises(DataError, match="no book_tops for 'BTCUSDT'"):
        read_ticks(tmp_path, "book_tops", "BTCUSDT")


def test_depth_updates_of_a_recording_round_trip_through_the_store(tmp_path: Path) -> None:
    path = write_recording(
        tmp_path,
        [spot_diff(98, 102, bids=[("10.0", "0")]), BOOK, spot_diff(103, 105, asks=[("10.2", "1")])],
    )
    rec = read_binance_recording(path)
    write_ticks(tmp_path / "store", "depth_updates", "BTCUSDT", rec.depth)
    assert read_ticks(tmp_path / "store", "depth_updates", "BTCUSDT").equals(rec.depth)
