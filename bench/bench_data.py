"""Market-data benchmarks: CSV import into the store, and reading bars back from the kline cache.

``python bench/bench_data.py`` runs both (``bench/run_all.py`` calls the functions). Each case
prints one line::

    NAME: N rows in S s = R rows/s = X x BASELINE

with the baseline measured in the same process on the same data, then detail lines in
parentheses. Times are the best of several passes after one untimed pass, so files come from
a warm OS page cache, which is what a replay that reruns over the same history sees.

- ``import``: :func:`tickray.feeds.binance.convert_klines` of the real Binance USD-M 1m kline
  CSVs in ``../shared/data`` into a temporary bar store, against ``pyarrow.csv.read_csv`` of the
  same files alone (the issue's target: 2,000,000 rows/s).
- ``cached_read``: :meth:`tickray.feeds.cache.KlineCache.read_range_sync` of a month of 1m bars
  of 100 synthetic symbols, filled through the cache's own fetch path (day partitions, then
  the month compacted), against ``pyarrow.parquet.read_table`` of one file holding the same
  rows (the issue's target: 20,000,000 rows/s). The same read from the uncompacted day files
  is shown too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tickray.engine.clock import DAY, MS, parse_time
from tickray.feeds.binance import import_klines, read_klines_csv
from tickray.feeds.cache import CACHE_WRITER_OPTIONS, KlineCache
from tickray.feeds.schemas import ts_numpy
from tickray.feeds.store import write_bars
from tickray.feeds.synthetic import generate_bars

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
KLINES_1M = Path("crypto") / "klines_1m" / "binance_usdm_futures"
IMPORT_TARGET = 2_000_000
READ_TARGET = 20_000_000
#: A month of 30 days, so that 30 days of bars fill it and the cache compacts it.
READ_START = parse_time("2024-04-01")


def _best(fn: Callable[[], Any], passes: int) -> tuple[float, float, Any]:
    """(best, median) seconds of ``passes`` timed calls after one untimed call; last result."""
    result = fn()
    times = []
    for _ in range(passes):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return min(times), statistics.median(times), result


def _line(name: str, rows: int, seconds: float, base_name: str, base_seconds: float) -> str:
    rate, base_rate = rows / seconds, rows / base_seconds
    return (
        f"{name}: {rows:,} rows in {seconds:.3f} s = {rate:,.0f} rows/s "
        f"= {rate / base_rate:.2f}x {base_name}"
    )


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# CSV import


def bench_import(shared_data: Path = SHARED_DATA, passes: int = 3) -> float:
    """Import the real 1m kline CSVs with convert_klines; returns rows/s."""
    folder = Path(shared_data) / KLINES_1M
    files = sorted(folder.glob("*.csv*"))
    if not files:
        print(f"import: skipped, no kline CSVs in {folder}")
        return 0.0
    by_symbol: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        by_symbol[f.name.split("-")[0]].append(f)

    def baseline() -> int:
        return sum(pacsv.read_csv(f).num_rows for f in files)

    def run_import() -> int:
        with tempfile.TemporaryDirectory(prefix="tickray-bench-import-") as tmp:
            import_klines(by_symbol, tmp, "1m")
            return sum(pq.read_metadata(p).num_rows for p in Path(tmp).rglob("*.parquet"))

    base_s, _, rows = _best(baseline, passes)
    import_s, import_med, imported = _best(run_import, passes)
    if imported != rows:
        raise AssertionError(f"import wrote {imported} rows, read_csv read {rows}")
    print(_line("import", rows, import_s, "read_csv", base_s), flush=True)

    # Where the time goes: the CSV reads alone, then the store writes alone.
    read_s, _, tables = _best(
        lambda: {s: [read_klines_csv(p) for p in ps] for s, ps in by_symbol.items()}, passes
    )

    def write_only() -> None:
        with tempfile.TemporaryDirectory(prefix="tickray-bench-import-") as tmp:
            for sym, parts in tables.items():
                write_bars(tmp, sym, "1m", pa.concat_tables(parts))

    write_s, _, _ = _best(write_only, passes)
    ceiling_s = _parse_ceiling(files, passes)
    print(
        f"  ({len(files)} files of {len(by_symbol)} symbols; median {import_med:.3f} s; "
        f"read_csv alone {rows / base_s:,.0f} rows/s; of the import, read_klines_csv "
        f"{read_s:.3f} s and write_bars {write_s:.3f} s; target {IMPORT_TARGET:,} rows/s "
        f"{'met' if rows / import_s >= IMPORT_TARGET else 'NOT met'}; {_cores()} cores)",
        flush=True,
    )
    print(
        f"  (ceiling: gunzip + CSV parse alone, no checks and no write, every file at once "
        f"on {_cores()} cores: {rows / ceiling_s:,.0f} rows/s; the import is "
        f"{ceiling_s / import_s:.2f}x that)",
        flush=True,
    )
    return rows / import_s


def _parse_ceiling(files: list[Path], passes: int) -> float:
    """Seconds to gunzip and parse every file, one file per core, nothing else: what
    no import of these files can beat on this machine, whatever it does after."""
    blobs = [f.read_bytes() for f in files]
    opts = pacsv.ReadOptions(autogenerate_column_names=True, use_threads=False)

    def one(blob: bytes) -> int:
        data = zlib.decompress(blob, 47) if blob[:2] == b"\x1f\x8b" else blob
        return int(pacsv.read_csv(pa.BufferReader(data), read_options=opts).num_rows)

    with ThreadPoolExecutor(max_workers=_cores()) as pool:
        seconds, _, _ = _best(lambda: sum(pool.map(one, blobs)), passes)
    return seconds


# ---------------------------------------------------------------------------------------------
# Cached reads


class _TablesSource:
    """A KlineSource over ready tables, so the cache is filled through its real fetch path."""

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        self.tables = tables

    async def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pa.Table:
        table = self.tables[symbol]
        ts = ts_numpy(table.column("ts"))
        lo = int(np.searchsorted(ts, start_ms * MS, "left"))
        hi = int(np.searchsorted(ts, end_ms * MS, "right"))
        return table.slice(lo, hi - lo)


def bench_cached_read(n_symbols: int = 100, days: int = 30, passes: int = 5) -> float:
    """Read ``days`` of 1m bars of ``n_symbols`` from the cache's disk layer; returns rows/s."""
    symbols = [f"S{i:03d}USDT" for i in range(n_symbols)]
    start, end = READ_START, READ_START + days * DAY
    tmp = Path(tempfile.mkdtemp(prefix="tickray-bench-cache-"))
    try:
        began = time.perf_counter()
        tables = generate_bars(symbols, start, days * 1440, seed=17)
        rows = sum(t.num_rows for t in tables.values())
        cache = KlineCache(tmp / "cache", now_ns=lambda: end + DAY, compact=False)
        source = _TablesSource(tables)

        async def fill() -> None:
            await asyncio.gather(*(cache.bars(source, "syn", s, "1m", start, end) for s in symbols))

        asyncio.run(fill())
        setup_s = time.perf_counter() - began

        def read() -> int:
            got = cache.read_range_sync("syn", symbols, "1m", start, end)
            return sum(t.num_rows for t in got.values())

        day_s, _, n_day = _best(read, passes)
        n_day_files = sum(len(cache.files("syn", s, "1m")) for s in symbols)
        for s in symbols:
            cache.compact("syn", s, "1m", partial=True)
        n_files = sum(len(cache.files("syn", s, "1m")) for s in symbols)
        read_s, read_med, n_read = _best(read, passes)

        one = tmp / "one.parquet"
        pq.write_table(pa.concat_tables(tables.values()), one, **CACHE_WRITER_OPTIONS)
        base_s, _, n_base = _best(lambda: pq.read_table(one).num_rows, passes)
        if not n_day == n_read == n_base == rows:
            raise AssertionError(f"read {n_day}/{n_read}/{n_base} rows, expected {rows}")
        print(_line("cached_read", rows, read_s, "read_table(one file)", base_s), flush=True)
        print(
            f"  ({n_symbols} symbols x {days} days of 1m bars in {n_files} month files; median "
            f"{read_med:.3f} s; from {n_day_files} day files before compaction "
            f"{rows / day_s:,.0f} rows/s; one file {rows / base_s:,.0f} rows/s; target "
            f"{READ_TARGET:,} rows/s {'met' if rows / read_s >= READ_TARGET else 'NOT met'}; "
            f"{_cores()} cores; fill through the cache {setup_s:.1f} s)",
            flush=True,
        )
        return rows / read_s
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    print(f"bench_data: {_cores()} cores, pyarrow {pa.__version__}", flush=True)
    if (SHARED_DATA / KLINES_1M).is_dir():
        bench_import(SHARED_DATA)
    else:
        print(f"import: skipped, no real data at {SHARED_DATA / KLINES_1M}")
    bench_cached_read()


if __name__ == "__main__":
    sys.exit(main())
