"""Read Binance's public data dumps (data.binance.vision) into the canonical BARS and TRADES schemas.

Each archive is a zip holding exactly one CSV, next to a ``<name>.zip.CHECKSUM`` file whose
content is ``<sha256 hex>  <name>.zip`` (the ``sha256sum`` format). File names, monthly or daily:

- klines: ``<SYMBOL>-<interval>-<YYYY-MM>[-<DD>].zip`` (interval ``1s`` ... ``1w``, or ``1mo``);
- trades: ``<SYMBOL>-trades-<YYYY-MM>[-<DD>].zip``;
- aggTrades: ``<SYMBOL>-aggTrades-<YYYY-MM>[-<DD>].zip``.

CSV layouts, for spot and USD-M futures (spot files have no header row; futures files have one,
named exactly as below; the reader tells them apart by the first cell of line 1):

- klines (both): ``open_time,open,high,low,close,volume,close_time,quote_volume,count,
  taker_buy_volume,taker_buy_quote_volume,ignore``;
- trades: spot ``id,price,qty,quote_qty,time,is_buyer_maker,is_best_match``, futures the same
  without ``is_best_match``;
- aggTrades: spot ``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,
  is_buyer_maker,is_best_match``, futures the same without ``is_best_match``.

Times are integers since the epoch, UTC: milliseconds, except in spot files from 2025-01-01 on,
which use microseconds. The unit is detected per file from the magnitude of the first time
(1e11 <= t < 1e14 is ms, i.e. 1973..5138; 1e14 <= t < 1e17 is us), and every row must use it.

Mapping to the canonical schemas (:mod:`tickray.feeds.schemas`):

- klines -> BARS: ``ts`` = open time, ``trade_count`` = ``count``. ``close_time`` is checked
  (inside its bar) and dropped, as are ``taker_buy_quote_volume`` and ``ignore``.
- trades -> TRADES: ``ts`` = ``time``, ``trade_id`` = ``id``; ``quote_qty`` and
  ``is_best_match`` are dropped.
- aggTrades -> TRADES: one row per aggregated trade, ``ts`` = ``transact_time``, ``trade_id`` =
  ``agg_trade_id``, ``qty`` = ``quantity``. TRADES has no room for ``first_trade_id`` and
  ``last_trade_id``: they are checked (``first <= last``) and dropped, with ``is_best_match``.

COIN-M files are not supported: their volume columns mean other things, and their headers are
refused. Mark, index and premium-index klines share the kline file names; they are refused when
their folder (``markPriceKlines`` ...) is in the path and cannot be told apart otherwise.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from tickray.feeds.binance import KLINE_COLUMNS
from tickray.feeds.schemas import TS_TYPE, DataError, conform, format_ts, interval_ns
from tickray.feeds.store import validate_symbol, write_bars, write_ticks

KINDS = ("klines", "trades", "aggTrades")
CHECKSUM_SUFFIX = ".CHECKSUM"

_NAME_RE = re.compile(
    r"(?P<symbol>[A-Z0-9_]+)-(?P<what>trades|aggTrades|[1-9][0-9]*(?:s|m|h|d|w|mo))-"
    r"(?P<period>[0-9]{4}-(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12][0-9]|3[01]))?)\.zip"
)
_OTHER_KLINE_FOLDERS = frozenset({"markPriceKlines", "indexPriceKlines", "premiumIndexKlines"})
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_INT_RE = re.compile(r"-?[0-9]+")
_FLOAT_RE = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf)", re.I
)
_TRUE = ("true", "True", "TRUE")
_FALSE = ("false", "False", "FALSE")
# Time units: (name, ns per unit, lowest value, bound) - see the module docstring.
_TIME_UNITS = (("ms", 10**6, 10**11, 10**14), ("us", 10**3, 10**14, 10**17))

_I64, _F64, _BOOL = pa.int64(), pa.float64(), pa.bool_()
_KLINE_NAMES = KLINE_COLUMNS
_TRADE_NAMES = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match")
_AGG_NAMES = (
    "agg_trade_id",
    "price",
    "quantity",
    "first_trade_id",
    "last_trade_id",
    "transact_time",
    "is_buyer_maker",
    "is_best_match",
)


@dataclass(frozen=True)
class _Layout:
    """One CSV layout: its columns, the ones parsed (with their type) and the time column."""

    names: tuple[str, ...]
    types: dict[str, pa.DataType]
    time: str


_KLINES = _Layout(
    _KLINE_NAMES,
    {
        "open_time": _I64,
        "open": _F64,
        "high": _F64,
        "low": _F64,
        "close": _F64,
        "volume": _F64,
        "close_time": _I64,
        "quote_volume": _F64,
        "count": _I64,
        "taker_buy_volume": _F64,
    },
    "open_time",
)
_TRADE_TYPES = {"id": _I64, "price": _F64, "qty": _F64, "time": _I64, "is_buyer_maker": _BOOL}
_AGG_TYPES = {
    "agg_trade_id": _I64,
    "price": _F64,
    "quantity": _F64,
    "first_trade_id": _I64,
    "last_trade_id": _I64,
    "transact_time": _I64,
    "is_buyer_maker": _BOOL,
}
#: Layouts of each kind by column count (spot and futures differ only by is_best_match).
_LAYOUTS: dict[str, dict[int, _Layout]] = {
    "klines": {12: _KLINES},
    "trades": {
        7: _Layout(_TRADE_NAMES, _TRADE_TYPES, "time"),
        6: _Layout(_TRADE_NAMES[:6], _TRADE_TYPES, "time"),
    },
    "aggTrades": {
        8: _Layout(_AGG_NAMES, _AGG_TYPES, "transact_time"),
        7: _Layout(_AGG_NAMES[:7], _AGG_TYPES, "transact_time"),
    },
}


@dataclass(frozen=True)
class DumpName:
    """What a dump's file name says: ``BTCUSDT-1m-2024-01.zip`` is klines of BTCUSDT, 1m, 2024-01.

    ``interval`` is None for trades and aggTrades; ``period`` is ``YYYY-MM`` (monthly file) or
    ``YYYY-MM-DD`` (daily file).
    """

    symbol: str
    kind: str
    interval: str | None
    period: str


def parse_dump_name(path: str | Path) -> DumpName | None:
    """The :class:`DumpName` of a data.binance.vision file name, or None if it is not one."""
    m = _NAME_RE.fullmatch(Path(path).name)
    if m is None:
        return None
    what = m.group("what")
    kind = what if what in ("trades", "aggTrades") else "klines"
    interval = what if kind == "klines" else None
    return DumpName(m.group("symbol"), kind, interval, m.group("period"))


def checksum_path(zip_path: str | Path) -> Path:
    """The sibling ``<name>.zip.CHECKSUM`` file of a dump."""
    path = Path(zip_path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def verify_checksum(zip_path: str | Path, *, require_checksum: bool = True) -> str:
    """sha256 (hex) of the zip, checked against its ``.CHECKSUM`` file; returns the digest.

    The zip is hashed in one streaming read. DataError naming the file when the zip is missing,
    when the CHECKSUM file is missing (unless ``require_checksum=False``: then the digest is
    returned unchecked), malformed or names another file, or when the digests differ (both
    are given).
    """
    path = Path(zip_path)
    try:
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the dump ({exc.strerror or exc})") from None
    sums = checksum_path(path)
    try:
        text = sums.read_text(encoding="ascii")
    except FileNotFoundError:
        if not require_checksum:
            return digest
        raise DataError(
            f"{path}: checksum file {sums.name} not found next to it (download it too, or pass "
            f"require_checksum=False / verify=False to skip the check)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{sums}: cannot read the checksum file ({exc})") from None
    fields = text.split()
    if len(fields) != 2 or _SHA256_RE.fullmatch(fields[0]) is None:
        raise DataError(f"{sums}: expected '<sha256 hex>  {path.name}', got {text.strip()[:200]!r}")
    expected, named = fields[0].lower(), fields[1].lstrip("*")
    if named != path.name:
        raise DataError(f"{sums}: the checksum is for {named!r}, not {path.name!r}")
    if digest != expected:
        raise DataError(
            f"{path}: sha256 mismatch: the file hashes to {digest} but {sums.name} says {expected}"
        )
    return digest


def read_dump(
    zip_path: str | Path,
    *,
    kind: str | None = None,
    symbol: str | None = None,
    verify: bool = True,
) -> pa.Table:
    """Read one data.binance.vision zip into a conformed BARS (klines) or TRADES table.

    ``kind`` ("klines", "trades" or "aggTrades") and the symbol come from the file name; when
    given they must agree with it, and ``kind`` is required for a file not named the Binance way.
    ``verify`` checks the sha256 against the ``.CHECKSUM`` file first (which must exist).
    The CSV member is streamed from the zip (never read whole into memory) and validated:
    exactly one CSV member, a known layout, numeric fields, one time unit (ms or us), open
    times strictly increasing on the interval's spacing (klines) or times non-decreasing
    (trades), ``low <= open, close <= high``, close time inside its bar, taker volume <= volume,
    positive prices, non-negative volumes. Every error is a DataError naming the file, and the
    line and field when one is at fault.

    Example (values from a real USD-M file)::

        bars = read_dump("FILUSDT-1m-2026-02.zip")   # 40,320 rows, ts = bar open time
        bars.column("open")[0].as_py()               # 1.052
    """
    path = Path(zip_path)
    name = _resolve_name(path, kind, symbol)
    if verify:
        verify_checksum(path)
    interval = name.interval if name.kind == "klines" else None
    step_ns = _fixed_interval_ns(interval)
    try:
        with zipfile.ZipFile(path) as zf:
            member = _only_csv(path, zf)
            return _read_member(path, zf, member, name.kind, step_ns)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the dump ({exc.strerror or exc})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        raise DataError(f"{path}: unreadable zip archive ({exc})") from None


def import_dumps(
    paths: Iterable[str | Path], root: str | Path, *, verify: bool = True
) -> list[Path]:
    """Read dumps and store them under ``root``; returns the Parquet files written, in order.

    Klines go to ``write_bars(root, symbol, interval, ...)`` (interval from the name: ``1mo``
    cannot be stored); trades and aggTrades to ``write_ticks(root, "trades", symbol, ...)``.
    Every file is read and validated before anything is written, so a bad input file leaves
    the store untouched (this holds all the decoded tables in memory at once, about 33 bytes
    per trade). Files of one symbol (and interval) are sorted by time and must not overlap;
    trades and aggTrades of one symbol are refused together, as their ids mean different things.
    Each store file is replaced atomically and merged with what is already stored; a conflict
    with stored rows is found only when its file is written, after the groups sorted before it
    (by store, symbol, interval) have been written.
    """
    groups: dict[tuple[str, str, str], list[tuple[pa.Table, Path]]] = {}
    tick_kind: dict[str, tuple[str, Path]] = {}
    named = [(Path(p), _name_for_import(Path(p))) for p in paths]
    if not named:
        raise DataError("import_dumps: no input files")
    for path, name in named:
        if name.kind != "klines":
            first = tick_kind.setdefault(name.symbol, (name.kind, path))
            if first[0] != name.kind:
                raise DataError(
                    f"{path}: {name.kind} of {name.symbol} cannot be stored with the "
                    f"{first[0]} of {first[1]} (both go to trades, with different ids)"
                )
    for path, name in named:
        table = read_dump(path, verify=verify)
        store = "bars" if name.kind == "klines" else "trades"
        groups.setdefault((store, name.symbol, name.interval or ""), []).append((table, path))
    written: list[Path] = []
    for (store, sym, interval), parts in sorted(groups.items()):
        table = _join_in_time_order(parts, strict=store == "bars")
        if store == "bars":
            written += write_bars(root, sym, interval, table)
        else:
            written += write_ticks(root, "trades", sym, table)
    return written


# --------------------------------------------------------------------------------------------
# Names and archives


def _resolve_name(path: Path, kind: str | None, symbol: str | None) -> DumpName:
    """The dump's name, checked against an explicit kind and symbol (which fill in when absent)."""
    if kind is not None and kind not in KINDS:
        raise DataError(f"{path}: unknown dump kind {kind!r}: expected one of {list(KINDS)}")
    if symbol is not None:
        validate_symbol(symbol)
    odd = _OTHER_KLINE_FOLDERS.intersection(path.parts)
    if odd:
        raise DataError(f"{path}: {sorted(odd)[0]} files are not trade klines; not supported")
    name = parse_dump_name(path)
    if name is None:
        if kind is None:
            raise DataError(
                f"{path}: cannot tell the kind from the file name (expected e.g. "
                f"BTCUSDT-1m-2024-01.zip or BTCUSDT-trades-2024-01-05.zip); pass kind="
            )
        return DumpName(symbol or "", kind, None, "")
    if kind is not None and kind != name.kind:
        raise DataError(f"{path}: kind {kind!r} given but the file name says {name.kind!r}")
    if symbol is not None and symbol != name.symbol:
        raise DataError(f"{path}: symbol {symbol!r} given but the file name says {name.symbol!r}")
    return name


def _name_for_import(path: Path) -> DumpName:
    name = _resolve_name(path, None, None)
    validate_symbol(name.symbol)
    if name.interval is not None:
        try:
            interval_ns(name.interval)
        except DataError as exc:
            raise DataError(f"{path}: interval {name.interval!r} cannot be stored: {exc}") from None
    return name


def _fixed_interval_ns(interval: str | None) -> int | None:
    """Length of a kline interval in ns, or None when unknown or not fixed (``1mo``)."""
    if interval is None or interval.endswith("mo"):
        return None
    return interval_ns(interval)


def _only_csv(path: Path, zf: zipfile.ZipFile) -> zipfile.ZipInfo:
    members = [info for info in zf.infolist() if not info.is_dir()]
    if len(members) != 1:
        names = [info.filename for info in members]
        raise DataError(f"{path}: expected exactly one CSV in the zip, found {len(names)}: {names}")
    if not members[0].filename.lower().endswith(".csv"):
        raise DataError(f"{path}: the zip member {members[0].filename!r} is not a .csv file")
    return members[0]


# --------------------------------------------------------------------------------------------
# Parsing


def _first_line(path: Path, zf: zipfile.ZipFile, member: zipfile.ZipInfo) -> list[str]:
    with zf.open(member) as raw:
        line = raw.readline(1 << 16)
    try:
        text = line.decode("utf-8").lstrip("\ufeff").strip()
    except UnicodeDecodeError:
        raise DataError(f"{path}: line 1 is not UTF-8 text") from None
    if not text:
        raise DataError(f"{path}: empty CSV {member.filename!r} (no rows)")
    return [cell.strip() for cell in text.split(",")]


def _layout_of(path: Path, kind: str, first: list[str]) -> tuple[_Layout, bool]:
    """The layout of the file and whether line 1 is a header, from the first line."""
    layouts = _LAYOUTS[kind]
    layout = layouts.get(len(first))
    if layout is None:
        counts = " or ".join(str(n) for n in sorted(layouts))
        raise DataError(
            f"{path}: line 1: {len(first)} columns, but {kind} dumps have {counts} "
            f"(is this a {kind} file?)"
        )
    header = _INT_RE.fullmatch(first[0]) is None
    if header and [cell.lower() for cell in first] != list(layout.names):
        raise DataError(
            f"{path}: line 1: unexpected header {','.join(first)!r}; expected "
            f"{','.join(layout.names)!r} for {kind}"
        )
    return layout, header


def _read_member(
    path: Path, zf: zipfile.ZipFile, member: zipfile.ZipInfo, kind: str, step_ns: int | None
) -> pa.Table:
    layout, header = _layout_of(path, kind, _first_line(path, zf, member))
    options = pacsv.ConvertOptions(
        column_types=layout.types,
        include_columns=list(layout.types),
        null_values=[],  # an empty field is a parse error with its line, not a null
        strings_can_be_null=False,
        true_values=list(_TRUE),
        false_values=list(_FALSE),
    )
    try:
        with zf.open(member) as stream:
            table = pacsv.read_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    column_names=list(layout.names), skip_rows=int(header), block_size=1 << 22
                ),
                # Blank lines count as (bad) rows, so that row i is always line i + 1 + header.
                parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                convert_options=options,
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _locate_parse_error(path, zf, member, layout, header, exc) from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows in {member.filename!r}")
    check = _Checker(path, table, header)
    if kind == "klines":
        return check.klines(step_ns)
    return check.trades(kind)


def _locate_parse_error(
    path: Path,
    zf: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    layout: _Layout,
    header: bool,
    exc: Exception,
) -> DataError:
    """Slow path after pyarrow refused the CSV: find the first bad line and field with csv."""
    with zf.open(member) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        for lineno, row in enumerate(csv.reader(text), start=1):
            if lineno == 1 and header:
                continue
            if len(row) != len(layout.names):
                return DataError(
                    f"{path}: line {lineno}: expected {len(layout.names)} fields, got {len(row)}"
                )
            for field, value in zip(layout.names, row, strict=True):
                kind = layout.types.get(field)
                if kind is not None and not _parses(value, kind):
                    what = {"int64": "an integer", "double": "a number", "bool": "true or false"}
                    return DataError(
                        f"{path}: line {lineno}: field {field!r}: {value!r} is not "
                        f"{what[str(kind)]}"
                    )
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"{path}: cannot parse the CSV: {first}")


def _parses(value: str, kind: pa.DataType) -> bool:
    if kind == _I64:
        return _INT_RE.fullmatch(value) is not None
    if kind == _F64:
        return _FLOAT_RE.fullmatch(value) is not None
    return value in _TRUE or value in _FALSE


# --------------------------------------------------------------------------------------------
# Validation of the parsed columns (vectorised; row i of the table is line i + 1 + header)


class _Checker:
    """Checks one parsed dump table and builds its canonical table; errors name line and field."""

    def __init__(self, path: Path, table: pa.Table, header: bool) -> None:
        self.path = path
        self.table = table
        self.first_line = 1 + int(header)

    def fail(self, row: int, field: str, problem: str) -> DataError:
        return DataError(f"{self.path}: line {row + self.first_line}: field {field!r}: {problem}")

    def ints(self, name: str) -> npt.NDArray[np.int64]:
        return np.asarray(self.table.column(name).to_numpy(), dtype=np.int64)

    def floats(self, name: str, positive: bool) -> npt.NDArray[np.float64]:
        values = np.asarray(self.table.column(name).to_numpy(), dtype=np.float64)
        ok = np.isfinite(values) & (values > 0 if positive else values >= 0)
        if not ok.all():
            i = int(np.argmin(ok))
            rule = "a finite number > 0" if positive else "a finite number >= 0"
            raise self.fail(i, name, f"{float(values[i])!r} is not {rule}")
        return values

    def time_unit(self, name: str, values: npt.NDArray[np.int64]) -> int:
        """ns per unit of an epoch time column (ms or us, from the first row; all rows alike)."""
        first = int(values[0])
        unit = next(((u, ns, lo, hi) for u, ns, lo, hi in _TIME_UNITS if lo <= first < hi), None)
        if unit is None:
            raise self.fail(0, name, f"time {first} is neither epoch milliseconds nor microseconds")
        label, ns, lo, hi = unit
        bad = np.flatnonzero((values < lo) | (values >= hi))
        if bad.size:
            i = int(bad[0])
            raise self.fail(
                i, name, f"time {int(values[i])} is not in {label} like the first data line"
            )
        return ns

    def ordered(self, name: str, ts: npt.NDArray[np.int64], strict: bool) -> None:
        diff = np.diff(ts)
        bad = np.flatnonzero(diff <= 0 if strict else diff < 0)
        if bad.size:
            i = int(bad[0]) + 1
            what = "repeats" if diff[i - 1] == 0 else "goes back to"
            raise self.fail(
                i, name, f"time {what} {format_ts(int(ts[i]))} after {format_ts(int(ts[i - 1]))}"
            )

    def klines(self, step_ns: int | None) -> pa.Table:
        open_raw = self.ints("open_time")
        unit_ns = self.time_unit("open_time", open_raw)
        ts = open_raw * unit_ns
        self.ordered("open_time", ts, strict=True)
        if step_ns is not None and ts.size > 1:
            off = np.flatnonzero(np.diff(ts) % step_ns)
            if off.size:
                i = int(off[0]) + 1
                raise self.fail(
                    i, "open_time", f"{format_ts(int(ts[i]))} is off the interval's spacing"
                )
        close_raw = self.ints("close_time")
        inside = close_raw > open_raw
        if step_ns is not None:
            inside &= close_raw < open_raw + step_ns // unit_ns
        if not inside.all():
            i = int(np.argmin(inside))
            raise self.fail(
                i,
                "close_time",
                f"{int(close_raw[i])} is not inside the bar opened at {int(open_raw[i])}",
            )
        o, h, lo, c = (self.floats(n, positive=True) for n in ("open", "high", "low", "close"))
        for field, values, bad in (
            ("high", h, h < np.maximum(o, c)),
            ("low", lo, lo > np.minimum(o, c)),
        ):
            if bad.any():
                i = int(np.argmax(bad))
                raise self.fail(
                    i,
                    field,
                    f"{float(values[i])!r} is outside open {float(o[i])!r} and close {float(c[i])!r}",
                )
        volume = self.floats("volume", positive=False)
        taker = self.floats("taker_buy_volume", positive=False)
        self.floats("quote_volume", positive=False)
        over = np.flatnonzero(taker > volume)
        if over.size:
            i = int(over[0])
            raise self.fail(
                i, "taker_buy_volume", f"{float(taker[i])!r} exceeds volume {float(volume[i])!r}"
            )
        count = self.ints("count")
        if (count < 0).any():
            i = int(np.argmax(count < 0))
            raise self.fail(i, "count", f"negative trade count {int(count[i])}")
        t = self.table
        out = pa.table(
            {
                "ts": _as_ts(ts),
                "open": t.column("open"),
                "high": t.column("high"),
                "low": t.column("low"),
                "close": t.column("close"),
                "volume": t.column("volume"),
                "quote_volume": t.column("quote_volume"),
                "trade_count": t.column("count"),
                "taker_buy_volume": t.column("taker_buy_volume"),
            }
        )
        return conform(out, "bars", str(self.path))

    def trades(self, kind: str) -> pa.Table:
        agg = kind == "aggTrades"
        time_name, id_name, qty_name = (
            ("transact_time", "agg_trade_id", "quantity") if agg else ("time", "id", "qty")
        )
        raw = self.ints(time_name)
        ts = raw * self.time_unit(time_name, raw)
        self.ordered(time_name, ts, strict=False)
        self.floats("price", positive=True)
        self.floats(qty_name, positive=True)
        if agg:
            first, last = self.ints("first_trade_id"), self.ints("last_trade_id")
            if (first > last).any():
                i = int(np.argmax(first > last))
                raise self.fail(
                    i, "last_trade_id", f"{int(last[i])} is before first_trade_id {int(first[i])}"
                )
        t = self.table
        out = pa.table(
            {
                "ts": _as_ts(ts),
                "trade_id": t.column(id_name),
                "price": t.column("price"),
                "qty": t.column(qty_name),
                "is_buyer_maker": t.column("is_buyer_maker"),
            }
        )
        return conform(out, "trades", str(self.path))


def _as_ts(ts_ns: npt.NDArray[np.int64]) -> pa.Array:
    return pa.array(ts_ns, type=pa.int64()).view(TS_TYPE)


# --------------------------------------------------------------------------------------------
# Joining files


def _join_in_time_order(parts: Sequence[tuple[pa.Table, Path]], strict: bool) -> pa.Table:
    """Concatenate tables of one symbol in time order; DataError naming both files on overlap.

    Bars must not share an open time; trades may share a millisecond across files but their
    ids must keep increasing.
    """
    keyed = sorted(parts, key=lambda tp: _bounds(tp[0])[0])
    for (prev, prev_path), (cur, cur_path) in zip(keyed[:-1], keyed[1:], strict=True):
        _, prev_last = _bounds(prev)
        cur_first, _ = _bounds(cur)
        overlap = cur_first <= prev_last if strict else cur_first < prev_last
        if not strict and not overlap:
            overlap = cur.column("trade_id")[0].as_py() <= prev.column("trade_id")[-1].as_py()
        if overlap:
            raise DataError(
                f"{cur_path}: its data (from {format_ts(cur_first)}) overlaps {prev_path} "
                f"(to {format_ts(prev_last)}); pass each period once"
            )
    return pa.concat_tables([t for t, _ in keyed]).combine_chunks()


def _bounds(table: pa.Table) -> tuple[int, int]:
    ts = table.column("ts")
    return int(ts[0].value), int(ts[-1].value)
