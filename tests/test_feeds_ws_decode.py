"""The websocket decoder's fast path (msgspec + the numba level scanner) against the reference
path (``json.loads`` and the hand-written parsers), and the live book's batched settling
against applying diffs one by one.

The fast path must give exactly the reference's events (same types, same values to the bit)
on every message of the real recordings in ``../shared/data/crypto/ws_recordings``, take
every one of them (no fallback), and hand anything unusual back to the reference path, so
that malformed messages still raise the DataError naming the stream and the field.
"""

from __future__ import annotations

import gzip
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.feeds.livebook import LiveBook
from tickray.feeds.schemas import DataError
from tickray.feeds.ws import DepthDiff, MessageDecoder
from tickray.feeds.wslevels import scan_levels

WS = Path("crypto") / "ws_recordings"
#: (file, market, lines read): hftbacktest lines are "<ns> <json>", cryptofeed "<s>: <json>".
RECORDINGS = [
    ("hftbacktest/binance_spot_BTCUSDT_2024-08-08.ws.gz", "spot", 40_000),
    ("hftbacktest/binance_spot_ETHUSDT_2024-08-08.ws.gz", "spot", 40_000),
    ("hftbacktest/binance_usdm_BTCUSDT_2024-08-08.ws.gz", "usdm", 40_000),
    ("hftbacktest/binance_usdm_ETHUSDT_2024-08-08.ws.gz", "usdm", 40_000),
    ("hftbacktest/binance_coinm_BTCUSD_PERP_2024-08-08.ws.gz", "usdm", 40_000),
    ("cryptofeed/BINANCE.ws.1.0.gz", "spot", None),
    ("cryptofeed/BINANCE_FUTURES.ws.1.0.gz", "usdm", None),
    ("cryptofeed/BINANCE_DELIVERY.ws.1.0.gz", "usdm", None),
]


def stream_texts(path: Path, limit: int | None) -> list[str]:
    """The combined-stream messages of a recording, in order."""
    out = []
    for line in gzip.decompress(path.read_bytes()).decode().split("\n")[:limit]:
        at = line.find('{"stream":')
        if at >= 0:
            out.append(line[at:])
    return out


def exact(value: Any) -> Any:
    """``value`` with every float as its hex form (so -0.0 != 0.0) and arrays as lists, and
    each event's type kept: equal results are equal to the bit."""
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, np.ndarray):
        assert value.dtype == np.float64 and value.ndim == 1
        return ["ndarray", [x.hex() for x in value.tolist()]]
    if isinstance(value, tuple):
        return [type(value).__name__, [exact(v) for v in value]]
    if isinstance(value, list):
        return [exact(v) for v in value]
    return value


def outcome(decoder: MessageDecoder, text: str) -> Any:
    try:
        return exact(decoder.decode(text))
    except DataError as exc:
        return ["DataError", str(exc)]


@pytest.mark.realdata
@pytest.mark.parametrize(("name", "market", "limit"), RECORDINGS, ids=[r[0] for r in RECORDINGS])
def test_fast_path_decodes_real_recordings_exactly_as_the_reference(
    shared_data: Path, name: str, market: str, limit: int | None
) -> None:
    path = shared_data / WS / name
    if not path.is_file():
        pytest.skip(f"recording {path} not found")
    texts = stream_texts(path, limit)
    fast = MessageDecoder("spot" if market == "spot" else "usdm")
    ref = MessageDecoder("spot" if market == "spot" else "usdm", fast=False)
    kinds: set[str] = set()
    for text in texts:
        got = outcome(fast, text)
        assert got == outcome(ref, text), text[:200]
        kinds.add(got[0] if got[0] == "DataError" else got[1][1][0])
    assert fast.fallbacks == 0  # every message of a known stream took the fast path
    assert len(texts) > 200 and "DepthDiff" in kinds and "DataError" not in kinds


SPOT_TRADE = '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"61837.63000000","q":"0.02000000","T":2,"m":true,"M":true}}'
AGG_TRADE = '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":7,"p":"61837.63","q":"0.02","f":1,"l":2,"T":2,"m":false}}'
SPOT_TOP = '{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63","B":"3.7","a":"61837.64","A":"1.5"}}'
FUT_TOP = '{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5,"s":"BTCUSDT","b":"1.5","B":"2","a":"1.6","A":"3","T":8,"E":9}}'
SPOT_DEPTH = '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":5,"s":"BTCUSDT","U":10,"u":12,"b":[["61800.20","0.014"],["61800.10","1.5"]],"a":[]}}'
FUT_DEPTH = '{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":5,"T":4,"s":"BTCUSDT","U":10,"u":12,"pu":9,"b":[["61800.20","0.014"]],"a":[["61800.30","0.000"]]}}'
VALID = {
    "spot": [SPOT_TRADE, AGG_TRADE, SPOT_TOP, SPOT_DEPTH],
    "usdm": [FUT_TOP, FUT_DEPTH],
}


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


# What the fast path must hand back: malformed messages (-> the reference's DataError) and
# unusual but valid ones (-> the reference's values).
VARIANTS = [
    ("spot", SPOT_TRADE, '"p":"61837.63000000",', ""),
    ("spot", SPOT_TRADE, '"q":"0.02000000"', '"q":"-0.02"'),
    ("spot", SPOT_TRADE, '"q":"0.02000000"', '"q":"NaN"'),
    ("spot", SPOT_TRADE, '"q":"0.02000000"', '"q":"inf"'),
    ("spot", SPOT_TRADE, '"q":"0.02000000"', '"q":0.02'),  # a JSON number: valid
    ("spot", SPOT_TRADE, '"q":"0.02000000"', '"q":" 0.02"'),  # float() reads it: valid
    ("spot", SPOT_TRADE, '"m":true', '"m":"yes"'),
    ("spot", SPOT_TRADE, '"m":true', '"m":1'),
    ("spot", SPOT_TRADE, '"t":7', '"t":"7"'),
    ("spot", SPOT_TRADE, '"t":7', '"t":7.0'),
    ("spot", SPOT_TRADE, '"t":7', '"t":true'),
    ("spot", SPOT_TRADE, '"s":"BTCUSDT"', '"s":"ETHUSDT"'),
    ("spot", SPOT_TRADE, '"stream":"btcusdt@trade"', '"stream":"btcusdt\\u0040trade"'),
    ("spot", SPOT_TRADE, '"E":1,', '"E":1,"stream":"ethusdt@trade",'),
    ("spot", AGG_TRADE, '"a":7', '"a":-7'),  # ids are any integer: valid
    ("spot", AGG_TRADE, '"a":7,', ""),
    ("spot", SPOT_TOP, '"A":"1.5"', '"A":"NaN"'),
    ("spot", SPOT_TOP, '"u":50093239212,', ""),
    ("spot", SPOT_TOP, '"u":50093239212,', '"u":50093239212,"E":null,'),
    ("spot", SPOT_TOP, '"u":50093239212,', '"u":50093239212,"E":"3",'),
    ("usdm", FUT_TOP, '"E":9', '"E":9.5'),
    ("usdm", FUT_DEPTH, '"pu":9,', ""),
    ("usdm", FUT_DEPTH, '"pu":9,', '"pu":"9",'),
    ("usdm", FUT_DEPTH, '"U":10', '"U":13'),
    ("usdm", FUT_DEPTH, '"U":10', '"U":1e1'),
    ("usdm", FUT_DEPTH, '["61800.20","0.014"]', '["61800.20"]'),
    ("usdm", FUT_DEPTH, '["61800.20","0.014"]', '["61800.20","0.014","1"]'),
    ("usdm", FUT_DEPTH, '["61800.20","0.014"]', '{"p":"61800.20"}'),
    ("usdm", FUT_DEPTH, '"0.000"', '"abc"'),
    ("usdm", FUT_DEPTH, '"0.000"', '"-0.000"'),  # -0.0: non-negative, valid
    ("usdm", FUT_DEPTH, '"0.000"', '"1e-3"'),  # an exponent: valid
    ("usdm", FUT_DEPTH, '"0.000"', '"1_000"'),  # float() reads it: valid
    ("usdm", FUT_DEPTH, '"0.000"', "0.5"),  # a JSON number: valid
    ("usdm", FUT_DEPTH, '"0.000"', "true"),  # the reference reads true as 1.0
    ("usdm", FUT_DEPTH, '"0.000"', '"Infinity"'),
    ("usdm", FUT_DEPTH, '"0.000"', '"1e400"'),
    ("usdm", FUT_DEPTH, '"0.000"', '"0.12345678901234567890123"'),  # > 22 decimals
    ("usdm", FUT_DEPTH, '"0.000"', '"123456789012345678"'),  # > 2**53
    ("usdm", FUT_DEPTH, '"b":[["61800.20","0.014"]]', '"b":[ ["61800.20", "0.014"] ]'),
    ("usdm", FUT_DEPTH, '"b":[["61800.20","0.014"]]', '"b":{}'),
    ("usdm", FUT_DEPTH, '"b":[["61800.20","0.014"]]', '"b":null'),
    ("spot", SPOT_DEPTH, '"U":10,', '"U":10,"pu":"x",'),  # spot ignores pu
    ("spot", SPOT_DEPTH, '"E":5,', ""),
]


@pytest.mark.parametrize(("market", "text", "old", "new"), VARIANTS)
def test_fast_path_hands_back_what_it_does_not_take_and_the_outcome_is_the_reference(
    market: str, text: str, old: str, new: str
) -> None:
    fast = MessageDecoder("spot" if market == "spot" else "usdm")
    ref = MessageDecoder("spot" if market == "spot" else "usdm", fast=False)
    for valid in VALID[market]:  # the streams are known: the next messages go the fast way
        assert outcome(fast, valid) == outcome(ref, valid)
    assert fast.fallbacks == 0
    variant = _edit(text, old, new)
    got = outcome(fast, variant)
    assert got == outcome(ref, variant)
    if got[0] == "DataError":  # still naming the stream (or the JSON problem) and the field
        assert re.search(r"btcusdt@|invalid JSON|stream", got[1]), got[1]


def test_malformed_messages_name_the_field_on_the_fast_path_too() -> None:
    fast = MessageDecoder("usdm")
    fast.decode(FUT_DEPTH)
    with pytest.raises(DataError, match=r"btcusdt@depth@0ms: field 'a' level 0 qty is 'abc'"):
        fast.decode(_edit(FUT_DEPTH, '"0.000"', '"abc"'))
    with pytest.raises(DataError, match=r"btcusdt@depth@0ms: missing field 'pu'"):
        fast.decode(_edit(FUT_DEPTH, '"pu":9,', ""))
    spot = MessageDecoder("spot")
    spot.decode(SPOT_TRADE)
    with pytest.raises(DataError, match=r"btcusdt@trade: field 't' is '7': expected an integer"):
        spot.decode(_edit(SPOT_TRADE, '"t":7', '"t":"7"'))
    assert fast.fallbacks == 2 and spot.fallbacks == 1


def test_decoded_depth_levels_are_flat_float64_arrays() -> None:
    fast = MessageDecoder("spot")
    for _ in range(2):  # the reference path (first sight), then the fast path
        _, diff = fast.decode(SPOT_DEPTH)
        assert isinstance(diff, DepthDiff)
        assert isinstance(diff.bids, np.ndarray) and diff.bids.dtype == np.float64
        assert diff.bids.tolist() == [61800.2, 0.014, 61800.1, 1.5]
        assert isinstance(diff.asks, np.ndarray) and diff.asks.tolist() == []
        assert diff.prev_id is None


# ---------------------------------------------------------------------------------------------
# the level scanner

decimals = st.builds(
    lambda whole, frac, point: whole + ("." + frac if point else ""),
    st.text("0123456789", min_size=1, max_size=20),
    st.text("0123456789", max_size=25),
    st.booleans(),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(decimals, decimals), max_size=6))
def test_scanner_reads_plain_decimals_as_float_does_or_gives_up(
    levels: list[tuple[str, str]],
) -> None:
    text = "[" + ",".join(f'["{p}","{q}"]' for p, q in levels) + "]"
    got = scan_levels(text.encode(), b"[]")
    want = [float(x) for lv in levels for x in lv]
    if got is None:
        # only numbers outside the exact fast path: more than 2**53 or 22 decimals
        assert any(
            len(x.partition(".")[2]) > 22 or int(x.replace(".", "")) > 2**53
            for lv in levels
            for x in lv
        )
        return
    vals, nb = got
    assert nb == len(want) and [x.hex() for x in vals.tolist()] == [x.hex() for x in want]


def test_scanner_splits_the_sides_and_rejects_anything_but_the_exact_form() -> None:
    got = scan_levels(b'[["1.5","2"],["0.25","0"]]', b'[["3","4.000"]]')
    assert got is not None
    vals, nb = got
    assert (vals.tolist(), nb) == ([1.5, 2.0, 0.25, 0.0, 3.0, 4.0], 4)
    assert scan_levels(b"[]", b"[]") is not None
    for bad in [
        b"",
        b"[",
        b'[["1","2"]',
        b'[["1","2"]] ',
        b'[["1","2"],]',
        b'[["1"]]',
        b'[["1","2","3"]]',
        b'[[1,"2"]]',
        b'[["-1","2"]]',
        b'[["1e3","2"]]',
        b'[[" 1","2"]]',
        b'[["","2"]]',
        b'[[".","2"]]',
        b'[["1.2.3","2"]]',
        b'[["1","2"] ,["3","4"]]',
        b'{"1":"2"}',
    ]:
        assert scan_levels(bad, b"[]") is None, bad
        assert scan_levels(b"[]", bad) is None, bad
    assert scan_levels(b'[["9007199254740992","1"]]', b"[]") is not None  # 2**53
    assert scan_levels(b'[["9007199254740993","1"]]', b"[]") is None
    assert scan_levels(b'[["0.' + b"0" * 21 + b'1","1"]]', b"[]") is not None  # 22 decimals
    assert scan_levels(b'[["0.' + b"0" * 22 + b'1","1"]]', b"[]") is None


# ---------------------------------------------------------------------------------------------
# the live book: many diffs settled at once == one by one


def _diffs(rng: random.Random, n: int, u0: int) -> list[DepthDiff]:
    out = []
    for k in range(n):
        sides = []
        for _ in range(2):
            flat: list[float] = []
            for _ in range(rng.randint(0, 6)):
                flat += [float(rng.randint(1, 40)), float(rng.choice([0, 0, 1, 2, 3.5]))]
            sides.append(np.array(flat, dtype=np.float64) if rng.random() < 0.8 else flat)
        u = u0 + k + 1
        out.append(DepthDiff(u, u, u - 1, sides[0], sides[1], 0))
    return out


def _synced(listener: bool) -> LiveBook:
    book = LiveBook("BTCUSDT", "usdm", listener=(lambda b, s: None) if listener else None)
    book.on_diff(0, 0, DepthDiff(100, 100, 99, [], [], 0))
    bids = [[str(float(p)), "1"] for p in range(10, 30)]
    asks = [[str(float(p)), "1"] for p in range(25, 45)]
    assert book.on_snapshot(1, 1, {"lastUpdateId": 100, "bids": bids, "asks": asks})
    return book


@pytest.mark.parametrize("seed", range(40))
def test_book_settled_in_batches_equals_the_book_applied_diff_by_diff(seed: int) -> None:
    rng = random.Random(seed)
    batched = _synced(listener=False)  # diffs pile up and settle at once, vectorised
    one_by_one = _synced(listener=True)  # a listener sees the book after every diff
    u = 100
    for _ in range(rng.randint(1, 6)):
        diffs = _diffs(rng, rng.randint(1, 60), u)
        u += len(diffs)
        for seq, d in enumerate(diffs):
            batched.on_diff(10 + seq, 10 + seq, d)
            one_by_one.on_diff(10 + seq, 10 + seq, d)
        for read in (lambda b: b.best_bid(), lambda b: b.best_ask(), lambda b: b.top(3)):
            assert read(batched) == read(one_by_one)
        # the same levels, quantities and dict order (a resync lists removals in that order)
        assert list(batched.bids.items()) == list(one_by_one.bids.items())
        assert list(batched.asks.items()) == list(one_by_one.asks.items())
        assert all(type(p) is float for p in batched.bids)
    assert batched.drain()[0].equals(one_by_one.drain()[0])


def test_a_resync_removes_the_levels_the_new_snapshot_lacks_after_batched_diffs() -> None:
    batched, one_by_one = _synced(listener=False), _synced(listener=True)
    rng = random.Random(7)
    diffs = _diffs(rng, 50, 100)
    gap = DepthDiff(300, 300, 299, [], [], 0)  # pu does not follow: a gap, then a resync
    snap = {"lastUpdateId": 300, "bids": [["11.0", "2"]], "asks": [["50.0", "2"]]}
    for book in (batched, one_by_one):
        for seq, d in enumerate(diffs):
            book.on_diff(10 + seq, 10 + seq, d)
        book.on_diff(100, 100, gap)
        assert book.on_snapshot(101, 101, snap)
    a, b = batched.drain()[0], one_by_one.drain()[0]
    assert a.equals(b)
    assert batched.stats.resyncs == 1 and math.isclose(batched.best_bid()[0], 11.0)  # type: ignore[index]
