"""Funding-rate records of perpetual futures, in the canonical FUNDING schema.

Three layouts are read, told apart by their first line:

* ``timestamp,symbol,funding_rate``: ms UTC, as collected from Binance's
  ``/fapi/v1/fundingRate`` (``fundingTime``, which lands a few ms past the hour);
* ``fundingTime,fundingRate[,markPrice]`` (optionally with ``symbol``): the
  REST response written as CSV;
* no header, ``yyyymmdd HH:MM:SS,rate``: QuantConnect Lean's files.

Rates are fractions per funding interval (0.0001 = 0.01%). Records must be in
strictly increasing time; a rate beyond +-10% per interval is refused as a
unit error. :func:`check_coverage` says whether records cover a run's window.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tickray.engine.clock import DAY, HOUR, iso
from tickray.engine.perpstate import NO_FUNDING, FundingSchedule, MarkSeries
from tickray.feeds.schemas import DataError, conform
from tickray.feeds.store import read_ticks

MAX_RATE = 0.1


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed by the caller


def read_funding_csv(path: str | Path, symbol: str | None = None) -> pa.Table:
    """Funding records of one symbol as a FUNDING table (``mark_price`` when the file has it)."""
    p = Path(path)
    try:
        with _open(p) as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read funding records ({e})") from None
    if not rows:
        raise DataError(f"{p}: no funding records")
    head = [c.strip() for c in rows[0]]
    ts: list[int] = []
    rate: list[float] = []
    mark: list[float | None] = []
    if head and head[0] in ("timestamp", "fundingTime"):
        cols = {name: k for k, name in enumerate(head)}
        t_col = cols[head[0]]
        r_col = cols.get("funding_rate", cols.get("fundingRate"))
        if r_col is None:
            raise DataError(f"{p}: line 1: no funding_rate or fundingRate column in {head}")
        s_col, m_col = cols.get("symbol"), cols.get("markPrice")
        for n, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if s_col is not None and symbol is not None and row[s_col].strip() != symbol:
                raise DataError(f"{p}: line {n}: symbol {row[s_col]!r}, expected {symbol!r}")
            ts.append(_int(p, n, "timestamp", row[t_col]) * 1_000_000)
            rate.append(_rate(p, n, row[r_col]))
            mark.append(_float(p, n, "markPrice", row[m_col]) if m_col is not None else None)
    else:
        for n, row in enumerate(rows, start=1):
            if not row:
                continue
            if len(row) != 2:
                raise DataError(f"{p}: line {n}: expected 'yyyymmdd HH:MM:SS,rate', got {row}")
            try:
                when = datetime.strptime(row[0].strip(), "%Y%m%d %H:%M:%S").replace(tzinfo=UTC)
            except ValueError:
                raise DataError(f"{p}: line {n}: bad time {row[0]!r}") from None
            ts.append(int(when.timestamp()) * 1_000_000_000)
            rate.append(_rate(p, n, row[1]))
            mark.append(None)
    if not ts:
        raise DataError(f"{p}: no funding records")
    arr = np.array(ts, dtype=np.int64)
    back = np.flatnonzero(np.diff(arr) <= 0)
    if len(back):
        k = int(back[0])
        raise DataError(
            f"{p}: funding times must increase: record {k + 2} at {iso(int(arr[k + 1]))} "
            f"follows {iso(int(arr[k]))}"
        )
    table = pa.table(
        {
            "ts": pa.array(arr, pa.timestamp("ns", tz="UTC")),
            "funding_rate": pa.array(rate, pa.float64()),
            "mark_price": pa.array(mark, pa.float64()),
            "index_price": pa.nulls(len(arr), pa.float64()),
        }
    )
    return conform(table, "funding", str(p))


def _int(p: Path, n: int, name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DataError(f"{p}: line {n}: {name} {text!r} is not an integer") from None


def _float(p: Path, n: int, name: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"{p}: line {n}: {name} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise DataError(f"{p}: line {n}: {name} {text!r} is not finite")
    return v


def _rate(p: Path, n: int, text: str) -> float:
    v = _float(p, n, "funding rate", text)
    if abs(v) > MAX_RATE:
        raise DataError(
            f"{p}: line {n}: funding rate {v} is beyond +-{MAX_RATE} per interval "
            "(a percent where a fraction belongs?)"
        )
    return v


def check_coverage(
    ts: npt.NDArray[np.int64], start: int, end: int, *, interval: int = 8 * HOUR, source: str = ""
) -> None:
    """DataError unless records reach back to ``start`` and leave no gap longer than
    one ``interval`` (plus a minute of exchange jitter) before ``end``."""
    where = f"{source}: " if source else ""
    slack = interval + 60_000_000_000
    if len(ts) == 0:
        raise DataError(f"{where}no funding records for {iso(start)} to {iso(end)}")
    if ts[0] > start + slack:
        raise DataError(
            f"{where}funding data does not cover the run: the first record is at "
            f"{iso(int(ts[0]))}, the run starts at {iso(start)}"
        )
    if ts[-1] + slack < end:
        raise DataError(
            f"{where}funding data does not cover the run: the last record is at "
            f"{iso(int(ts[-1]))}, the run ends at {iso(end)}"
        )
    inside = ts[(ts >= start - slack) & (ts <= end + slack)]
    gaps = np.flatnonzero(np.diff(inside) > slack)
    if len(gaps):
        k = int(gaps[0])
        raise DataError(
            f"{where}funding data has a gap from {iso(int(inside[k]))} to {iso(int(inside[k + 1]))}"
        )


def perp_inputs(
    root: str | Path,
    symbol: str,
    start: int,
    end: int,
    *,
    funding: object = "store",
    marks: str = "store",
) -> tuple[FundingSchedule, MarkSeries | None]:
    """One symbol's funding records and mark prices for a perpetual run.

    ``funding``: ``"store"`` reads the data root's ``funding`` ticks (rows with a
    rate are funding records; rows with a mark price are marks), ``"none"`` runs
    without funding, and a mapping names each symbol's funding-rate CSV. The
    records must cover ``[start, end)`` (:func:`check_coverage`), else DataError.
    ``marks == "store"`` uses the store's mark prices when it has any; with none
    (or ``"last"``) the symbol derives its marks from the last price.
    """
    table: pa.Table | None = None
    if funding == "store" or marks == "store":
        try:  # a day either side: the coverage check looks a funding interval beyond
            table = read_ticks(root, "funding", symbol, start - DAY, end + DAY)
        except DataError:
            if funding == "store":
                raise DataError(
                    f"perp.funding: no funding records for {symbol} under {root} "
                    "(write them with the demo generator or give a funding file, "
                    "or set perp.funding to 'none')"
                ) from None
    sched = NO_FUNDING
    if funding == "store" and table is not None:
        sched = _schedule(table)
    elif isinstance(funding, dict):
        sched = _schedule(read_funding_csv(funding[symbol], symbol))
    if funding != "none":
        check_coverage(sched.ts, start, end, source=f"{symbol} funding")
    mark = None
    if marks == "store" and table is not None:
        px = table.column("mark_price")
        keep = pc.is_valid(px)
        ts = table.column("ts").filter(keep).cast(pa.int64()).to_numpy()
        if len(ts):
            mark = MarkSeries(
                np.ascontiguousarray(ts, dtype=np.int64),
                np.ascontiguousarray(px.filter(keep).to_numpy(), dtype=np.float64),
            )
    return sched, mark


def _schedule(table: pa.Table) -> FundingSchedule:
    """Funding records as arrays. Record times are floored to the second: Binance's
    ``fundingTime`` lands a few ms past the hour, and the position that pays is the
    one held at the hour."""
    rate = table.column("funding_rate")
    keep = pc.is_valid(rate)
    ts = table.column("ts").filter(keep).cast(pa.int64()).to_numpy()
    ts = ts - ts % 1_000_000_000
    mark = table.column("mark_price").filter(keep).to_numpy(zero_copy_only=False)
    return FundingSchedule(
        np.ascontiguousarray(ts, dtype=np.int64),
        np.ascontiguousarray(rate.filter(keep).to_numpy(), dtype=np.float64),
        np.array([np.nan if v is None else v for v in mark], dtype=np.float64)
        if mark.dtype == object
        else np.ascontiguousarray(mark, dtype=np.float64),
    )
