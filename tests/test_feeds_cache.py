"""KlineCache: memory -> disk -> source, against the FakeBinance REST server on 127.0.0.1.

FakeBinance serves 3500 1m bars from 2024-01-01T00:00Z (bar i opens at T0 + i minutes):
day 1 = bars 0..1439, day 2 = 1440..2879, day 3 = 2880..3499 (the last opens at 10:19).
USD-M pages hold 1500 bars, so each day partition is exactly one request.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_feeds_rest import (
    MINUTE_MS,
    T0,
    FakeBinance,
    Scripted,
    _bad_close,
    binance,
    kline_row,
    reference_bars,
    run,
)

from tickray.engine.clock import DAY, HOUR, MINUTE, MS, SECOND, parse_time
from tickray.feeds.cache import (
    CacheStats,
    FetchError,
    KlineCache,
    MissingDataError,
    cache_key,
    export_to_store,
)
from tickray.feeds.schemas import BARS, DataError, ts_numpy
from tickray.feeds.store import bar_files
from tickray.feeds.synthetic import generate_bars

pytestmark = pytest.mark.network

VENUE = "binance_usdm"
T0_NS = T0 * MS  # 2024-01-01T00:00Z
END3 = T0_NS + 3 * DAY


class Now:
    """The cache's wall clock, moved by hand."""

    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def at(bar: int, seconds: int) -> int:
    """``seconds`` after bar ``bar`` of the FakeBinance series opened."""
    return T0_NS + bar * MINUTE + seconds * SECOND


def starts(fake: FakeBinance) -> list[int]:
    return [int(s.query["startTime"]) for s in fake.seen]


def day_ms(day: int) -> int:
    return T0 + day * 1440 * MINUTE_MS


def meta(path: Path) -> dict[bytes, bytes]:
    return pq.read_schema(path).metadata


class TableSource:
    """An in-process KlineSource over ready BARS tables (``start_ms``..``end_ms`` inclusive)."""

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        self.tables = tables
        self.calls: list[tuple[str, int]] = []

    async def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pa.Table:
        self.calls.append((symbol, start_ms))
        await asyncio.sleep(0)
        table = self.tables[symbol]
        ts = ts_numpy(table.column("ts"))
        lo = int(np.searchsorted(ts, start_ms * MS, "left"))
        hi = int(np.searchsorted(ts, end_ms * MS, "right"))
        return table.slice(lo, hi - lo)


# ---------------------------------------------------------------------------------------------
# The three layers


def test_first_call_fetches_days_then_memory_then_disk_serve_without_requests(
    tmp_path: Path,
) -> None:
    # now = 10:19:30 on day 3: bar 3499 (opened 10:19) is still open, so 3499 bars are closed.
    now = Now(at(3499, 30))

    async def scenario() -> tuple[list[pa.Table], list[list[int]], KlineCache, KlineCache]:
        async with binance("usdm") as (fake, rest, _):
            cache = KlineCache(tmp_path, now_ns=now, grace_ns=0)
            first = await cache.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, END3)
            seen_after_first = starts(fake)
            second = await cache.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, END3)
            reopened = KlineCache(tmp_path, now_ns=now, grace_ns=0)
            third = await reopened.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, END3)
            return [first, second, third], [seen_after_first, starts(fake)], cache, reopened

    tables, seen, cache, reopened = run(scenario())
    expected = reference_bars([kline_row(i) for i in range(3499)])
    for table in tables:
        assert table.schema == BARS and table.equals(expected)
    # One request per day partition, each for the whole UTC day; none after that.
    assert seen[0] == [day_ms(0), day_ms(1), day_ms(2)]
    assert seen[1] == seen[0]
    assert cache.stats() == CacheStats(
        memory_hits=3,
        memory_misses=3,
        disk_misses=3,
        fetches=3,
        memory_bytes=cache.stats().memory_bytes,
        memory_entries=3,
        peak_memory_bytes=cache.stats().memory_bytes,
    )
    assert reopened.stats().disk_hits == 3 and reopened.stats().fetches == 0

    files = cache.files(VENUE, "BTCUSDT", "1m")
    base = tmp_path / "venue=binance_usdm" / "symbol=BTCUSDT" / "interval=1m"
    assert files == [base / f"date=2024-01-0{d}.parquet" for d in (1, 2, 3)]
    assert [meta(f)[b"tickray.complete"] for f in files] == [b"true", b"true", b"false"]
    assert meta(files[2])[b"tickray.fetched_ns"] == str(now.t).encode()
    assert cache.symbols(VENUE, "1m") == ["BTCUSDT"] and cache.symbols(VENUE, "1h") == []


def test_open_candle_is_never_stored_and_stale_refetches_the_incomplete_day_only(
    tmp_path: Path,
) -> None:
    day3 = tmp_path / "venue=binance_usdm/symbol=BTCUSDT/interval=1m/date=2024-01-03.parquet"
    now = Now(at(3499, 30))  # 10:19:30: bar 3499 (opened 10:19) is still open

    async def scenario() -> tuple[list[int], list[int], list[int], list[int]]:
        rows, requests, stored = [], [], []
        async with binance("usdm") as (fake, rest, _):
            cache = KlineCache(tmp_path, now_ns=now, grace_ns=0)

            async def call(refresh: str = "stale") -> None:
                table = await cache.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, END3, refresh=refresh)
                rows.append(table.num_rows)
                requests.append(len(fake.seen))
                stored.append(pq.read_table(day3).num_rows)

            await call()
            now.t = at(3499, 90)  # 10:20:30: bar 3499 has closed since the fetch
            await call("never")
            await call("stale")
            now.t = at(3499, 110)  # no further bar has closed (the next closes at 10:21)
            await call("stale")
            return rows, requests, stored, starts(fake)

    rows, requests, stored, seen = run(scenario())
    # Day 3 held bars 2880..3498 (619), without the open 3499, until "stale" fetched it again.
    assert stored == [619, 619, 620, 620]
    assert rows == [3499, 3499, 3500, 3500]
    # "never" made no request; "stale" fetched day 3 only; then nothing was stale.
    assert requests == [3, 3, 4, 4] and seen[3] == day_ms(2)
    assert pq.read_schema(day3).metadata[b"tickray.complete"] == b"false"


def test_grace_keeps_a_just_closed_bar_out_until_it_has_settled(tmp_path: Path) -> None:
    # With 5 s of grace, bar 3498 (closed at 10:19:00) is not trusted at 10:19:03.
    now = Now(at(3499, 3))

    async def scenario() -> tuple[int, int]:
        async with binance("usdm") as (_, rest, _):
            cache = KlineCache(tmp_path, now_ns=now)
            early = await cache.bars(rest, VENUE, "BTCUSDT", "1m", at(3400, 0), END3)
            now.t = at(3499, 6)
            late = await cache.bars(rest, VENUE, "BTCUSDT", "1m", at(3400, 0), END3)
            return early.num_rows, late.num_rows

    assert run(scenario()) == (98, 99)  # bars 3400..3497, then 3400..3498


def test_always_refetches_every_day(tmp_path: Path) -> None:
    now = Now(at(3500, 30))

    async def scenario() -> tuple[list[int], pa.Table]:
        async with binance("usdm") as (fake, rest, _):
            cache = KlineCache(tmp_path, now_ns=now, grace_ns=0)
            await cache.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, END3)
            again = await cache.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, END3, refresh="always")
            return starts(fake), again

    seen, again = run(scenario())
    assert seen == [day_ms(0), day_ms(1), day_ms(2)] * 2
    assert again.equals(reference_bars([kline_row(i) for i in range(3500)]))


def test_concurrent_identical_calls_share_one_fetch_per_day(tmp_path: Path) -> None:
    now = Now(at(3500, 30))

    async def scenario() -> tuple[list[pa.Table], list[int], CacheStats]:
        async with binance("usdm") as (fake, rest, _):
            cache = KlineCache(tmp_path, now_ns=now, grace_ns=0)
            calls = [cache.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, END3) for _ in range(4)]
            tables = await asyncio.gather(*calls)
            return tables, starts(fake), cache.stats()

    tables, seen, stats = run(scenario())
    assert sorted(seen) == [day_ms(0), day_ms(1), day_ms(2)]  # 3 requests, not 12
    assert stats.fetches == 3 and stats.dedup_waits == 9  # 3 later calls x 3 days
    expected = reference_bars([kline_row(i) for i in range(3500)])
    assert all(t.equals(expected) for t in tables)


def test_memory_bound_holds_under_concurrent_load(tmp_path: Path) -> None:
    # A full 1m day is 1440 rows x 9 columns x 8 bytes = 103,680 bytes (plus bitmaps):
    # a bound of 150,000 bytes holds one day at a time.
    now = Now(at(3500, 30))
    bound = 150_000

    async def scenario() -> tuple[list[int], CacheStats]:
        async with binance("usdm") as (_, rest, _):
            cache = KlineCache(tmp_path, memory_bytes=bound, now_ns=now, grace_ns=0)
            ranges = [(T0_NS + d * DAY, T0_NS + (d + 1) * DAY) for d in range(3)]
            ranges += [(T0_NS, END3), (T0_NS + HOUR, END3 - HOUR)]
            calls = [cache.bars(rest, VENUE, "BTCUSDT", "1m", a, b) for a, b in ranges]
            tables = await asyncio.gather(*calls)
            return [t.num_rows for t in tables], cache.stats()

    rows, stats = run(scenario())
    assert rows == [1440, 1440, 620, 3500, 3500 - 60]
    assert stats.peak_memory_bytes <= bound and stats.memory_bytes <= bound
    assert stats.memory_entries == 1 and stats.evictions >= 2
    assert stats.fetches == 3


def test_5xx_then_malformed_answer_caches_nothing(tmp_path: Path) -> None:
    now = Now(at(3500, 30))

    async def scenario() -> tuple[FetchError, KlineCache, int, pa.Table, int]:
        async with binance("usdm") as (fake, rest, _):
            bad = json.dumps(_bad_close([kline_row(i) for i in range(20)]))
            fake.script["klines"] += [Scripted(500, "oops"), Scripted(200, bad)]
            cache = KlineCache(tmp_path, now_ns=now, grace_ns=0)
            with pytest.raises(FetchError) as err:
                await cache.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, T0_NS + DAY)
            n_failed = len(fake.seen)
            ok = await cache.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, T0_NS + DAY)
            return err.value, cache, n_failed, ok, len(fake.seen)

    err, cache, n_failed, ok, n_total = run(scenario())
    assert "binance_usdm BTCUSDT 1m 2024-01-01" in str(err)
    assert "field 4 (close) 'x' is not a number" in str(err)
    assert isinstance(err.__cause__, DataError) and err.day == "2024-01-01"
    assert n_failed == 2  # the 500, then the malformed page
    # Nothing was kept: the next call asked again and got the good day.
    assert n_total == 3 and ok.num_rows == 1440
    assert cache.stats().fetch_errors == 1 and cache.stats().fetches == 2


class _OffGrid(TableSource):
    async def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pa.Table:
        table = await super().klines(symbol, interval, start_ms, end_ms)
        ts = ts_numpy(table.column("ts")).copy()
        ts[5] += 30 * SECOND  # 00:05:30 on a 1m grid
        return table.set_column(0, "ts", pa.array(ts, type=BARS.field("ts").type))


class _Spill(TableSource):
    async def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pa.Table:
        return await super().klines(symbol, interval, start_ms, end_ms + 60_000)  # one bar more


@pytest.mark.parametrize(
    ("source_type", "message"),
    [
        (_OffGrid, "bar at 2024-03-01T00:05:30Z is not on the 1m grid"),
        (_Spill, "bar at 2024-03-02T00:00:00Z is outside the day"),
    ],
)
def test_bars_off_the_grid_or_outside_the_day_are_refused_naming_the_partition(
    tmp_path: Path, source_type: type[TableSource], message: str
) -> None:
    start = parse_time("2024-03-01")
    source = source_type(generate_bars(["AAAUSDT"], start, 3000, seed=1))
    cache = KlineCache(tmp_path, now_ns=Now(start + 10 * DAY), grace_ns=0)
    with pytest.raises(FetchError, match="venue_x AAAUSDT 1m 2024-03-01: .*" + message):
        run(cache.bars(source, "venue_x", "AAAUSDT", "1m", start, start + DAY))
    assert cache.files("venue_x", "AAAUSDT", "1m") == [] and cache.stats().memory_entries == 0


def test_offline_serves_what_is_held_and_names_the_missing_days(tmp_path: Path) -> None:
    now = Now(at(3500, 30))

    async def scenario() -> None:
        async with binance("usdm") as (_, rest, _):
            cache = KlineCache(tmp_path, now_ns=now, grace_ns=0)
            await cache.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, T0_NS + DAY)

    run(scenario())
    offline = KlineCache(tmp_path, now_ns=now, grace_ns=0)
    day1 = run(offline.bars(None, VENUE, "BTCUSDT", "1m", T0_NS + HOUR, T0_NS + DAY))
    assert day1.num_rows == 1380
    with pytest.raises(MissingDataError, match=r"2 day\(s\): 2024-01-02, 2024-01-03") as err:
        run(offline.bars(None, VENUE, "BTCUSDT", "1m", T0_NS, END3 + 5 * DAY))
    assert err.value.missing == {"BTCUSDT": ["2024-01-02", "2024-01-03"]}  # not the future


# ---------------------------------------------------------------------------------------------
# Keys, compaction, disk-only reads and export


def test_cache_key_is_a_stable_sha256_of_the_request() -> None:
    key = cache_key("binance_usdm", "BTCUSDT", "1m", "2024-01-01")
    assert key == "ad7c2f75d41e64781ff33d2b1110e3ba1f9f2de05eef985b5650b9a5ef4c2a7d"
    others = {
        cache_key("binance_spot", "BTCUSDT", "1m", "2024-01-01"),
        cache_key("binance_usdm", "ETHUSDT", "1m", "2024-01-01"),
        cache_key("binance_usdm", "BTCUSDT", "5m", "2024-01-01"),
        cache_key("binance_usdm", "BTCUSDT", "1m", "2024-01-02"),
    }
    assert key not in others and len(others) == 4


def test_a_complete_month_is_compacted_and_reads_back_the_same(tmp_path: Path) -> None:
    # April 2024 of 1h bars (30 days x 24) and 1 May, fetched on 2 May.
    start = parse_time("2024-04-01")
    source = TableSource(
        generate_bars(["AAAUSDT", "BBBUSDT"], start, 31 * 24, seed=4, interval="1h")
    )
    now = Now(start + 31 * DAY + 30 * MINUTE)
    cache = KlineCache(tmp_path, now_ns=now, grace_ns=0)
    got = {
        sym: run(cache.bars(source, "syn", sym, "1h", start, start + 31 * DAY))
        for sym in ("AAAUSDT", "BBBUSDT")
    }
    for sym, table in got.items():
        assert table.equals(source.tables[sym])
        names = [p.name for p in cache.files("syn", sym, "1h")]
        assert names == ["month=2024-04.parquet", "date=2024-05-01.parquet"]
    assert cache.stats().compactions == 2

    read = cache.read_range_sync(
        "syn", ["AAAUSDT", "BBBUSDT"], "1h", start + HOUR, start + 31 * DAY
    )
    for sym in got:
        assert read[sym].equals(source.tables[sym].slice(1))

    # A day fetched again after compaction (and left uncompacted) wins over the month file;
    # both read paths still give every bar once, in time order.
    n_calls = len(source.calls)
    mid = start + 10 * DAY
    later = KlineCache(tmp_path, now_ns=now, grace_ns=0, compact=False)
    run(later.bars(source, "syn", "AAAUSDT", "1h", mid, mid + DAY, refresh="always"))
    assert len(source.calls) == n_calls + 1
    names = [p.name for p in later.files("syn", "AAAUSDT", "1h")]
    assert names == ["month=2024-04.parquet", "date=2024-04-11.parquet", "date=2024-05-01.parquet"]
    again = later.read_range_sync("syn", ["AAAUSDT"], "1h", start, start + 31 * DAY)["AAAUSDT"]
    assert again.equals(source.tables["AAAUSDT"])
    offline = KlineCache(tmp_path, now_ns=now, grace_ns=0)
    assert run(offline.bars(None, "syn", "AAAUSDT", "1h", start, start + 31 * DAY)).equals(
        source.tables["AAAUSDT"]
    )
    # Compacting again folds the day back into the month.
    assert later.compact("syn", "AAAUSDT", "1h") == [later.files("syn", "AAAUSDT", "1h")[0]]
    assert len(later.files("syn", "AAAUSDT", "1h")) == 2


def test_read_range_sync_names_missing_days_unless_allowed(tmp_path: Path) -> None:
    start = parse_time("2024-03-01")
    source = TableSource(generate_bars(["AAAUSDT"], start, 3 * 1440, seed=2))
    cache = KlineCache(tmp_path, now_ns=Now(start + 20 * DAY), grace_ns=0)
    run(cache.bars(source, "syn", "AAAUSDT", "1m", start + DAY, start + 2 * DAY))
    with pytest.raises(MissingDataError, match="AAAUSDT: 2024-03-01, 2024-03-03"):
        cache.read_range_sync("syn", ["AAAUSDT"], "1m", start, start + 3 * DAY)
    held = cache.read_range_sync(
        "syn", ["AAAUSDT"], "1m", start, start + 3 * DAY, allow_missing=True
    )
    assert held["AAAUSDT"].equals(source.tables["AAAUSDT"].slice(1440, 1440))


def test_export_to_store_writes_files_the_store_reads_back_equal(tmp_path: Path) -> None:
    now = Now(at(3500, 30))

    async def scenario() -> None:
        async with binance("usdm") as (_, rest, _):
            cache = KlineCache(tmp_path / "cache", now_ns=now, grace_ns=0)
            await cache.bars(rest, VENUE, "BTCUSDT", "1m", T0_NS, END3)

    run(scenario())
    cache = KlineCache(tmp_path / "cache", now_ns=now, grace_ns=0)
    written = export_to_store(cache, VENUE, None, "1m", tmp_path / "store")
    assert written == bar_files(tmp_path / "store", "1m", "BTCUSDT")
    assert [p.name for p in written] == ["2024-01.parquet"]
    back = pa.concat_tables(pq.read_table(p) for p in written)
    assert back.equals(reference_bars([kline_row(i) for i in range(3500)]))
    # Exporting again is a no-op merge of identical bars.
    assert export_to_store(cache, VENUE, ["BTCUSDT"], "1m", tmp_path / "store") == written


def test_intervals_that_do_not_divide_a_day_are_refused(tmp_path: Path) -> None:
    cache = KlineCache(tmp_path)
    with pytest.raises(DataError, match="does not divide a day"):
        cache.files(VENUE, "BTCUSDT", "1w")
    with pytest.raises(ValueError, match="bad venue"):
        cache.files("Binance", "BTCUSDT", "1m")
    with pytest.raises(ValueError, match="refresh must be one of"):
        run(cache.bars(None, VENUE, "BTCUSDT", "1m", 0, DAY, refresh="sometimes"))
