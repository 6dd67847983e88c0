"""Corporate actions (splits and cash dividends) on daily equity bars.

The raw series is always kept: readers return raw BARS plus the actions, and
:func:`adjust` / :func:`apply_factor_file` return a *new* adjusted BARS table.

Adjustment factors
------------------
An action with ex-date ``t`` changes every bar *before* ``t`` (``ts < t``):

* a split of ratio ``r`` (7.0 for 7:1) contributes ``1 / r`` to prices and ``r`` to volumes;
* a cash dividend ``d`` contributes a price factor only, on one of two bases:

  - ``"prior_close"`` (CRSP, also what Lean's factor files hold): ``1 - d / close_{t-1}``,
    where ``close_{t-1}`` is the raw close of the last bar before ``t``;
  - ``"ex_close"`` (reproduces the Quandl WIKI ``Adj.`` columns, to ~1e-12):
    ``close_t / (close_t + d)``, where ``close_t`` is the raw close of the ex-date bar,
    i.e. ``1 / (1 + d / close_t)``.

Directions
----------
``method="backward"`` (the usual one) leaves the last bar at raw prices and multiplies each
earlier bar by the product of the factors of all later actions. ``method="forward"`` leaves
the first bar raw and divides each later bar by the product of the factors of the actions
up to and including its date. The two differ by one constant per series.

Dates are exchange dates; readers put each bar at midnight UTC of its date.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tickray.feeds.schemas import TS_TYPE, DataError, conform, ts_numpy

Method = Literal["backward", "forward"]
DividendBasis = Literal["prior_close", "ex_close"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Lean stores equity prices as integers in units of 1/10,000 USD.
LEAN_PRICE_SCALE = 10_000.0


@dataclass(frozen=True)
class CorporateActions:
    """Splits and cash dividends of one security, one row per ex-date.

    ``ex_date`` is int64 ns (UTC midnight of the ex-date), strictly increasing;
    ``split_ratio`` is new shares per old share (1.0 = no split); ``dividend`` is cash
    per share in the price currency, on the pre-split share count of that date (0.0 = none).
    """

    ex_date: I64
    split_ratio: F64
    dividend: F64
    source: str = "actions"

    def __post_init__(self) -> None:
        n = len(self.ex_date)
        for name in ("split_ratio", "dividend"):
            if len(getattr(self, name)) != n:
                raise DataError(
                    f"{self.source}: field {name!r} has {len(getattr(self, name))} rows, ex_date has {n}"
                )
        diff = np.diff(self.ex_date)
        if diff.size and (diff <= 0).any():
            i = int(np.flatnonzero(diff <= 0)[0]) + 1
            what = "duplicate" if diff[i - 1] == 0 else "unsorted"
            raise DataError(f"{self.source}: field 'ex_date' is {what} at action row {i}")
        bad = ~np.isfinite(self.split_ratio) | (self.split_ratio <= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{self.source}: field 'split_ratio' must be finite and > 0, row {i} is {self.split_ratio[i]}"
            )
        bad = ~np.isfinite(self.dividend) | (self.dividend < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{self.source}: field 'dividend' must be finite and >= 0, row {i} is {self.dividend[i]}"
            )

    @classmethod
    def from_lists(
        cls,
        ex_date: list[int],
        split_ratio: list[float] | None = None,
        dividend: list[float] | None = None,
        source: str = "actions",
    ) -> CorporateActions:
        """Build from plain lists; a missing list means no splits (1.0) or no dividends (0.0)."""
        n = len(ex_date)
        return cls(
            np.asarray(ex_date, dtype=np.int64),
            np.asarray(split_ratio if split_ratio is not None else [1.0] * n, dtype=np.float64),
            np.asarray(dividend if dividend is not None else [0.0] * n, dtype=np.float64),
            source,
        )

    def __len__(self) -> int:
        return len(self.ex_date)


def _column(table: pa.Table, name: str) -> F64:
    return np.asarray(table.column(name).to_numpy(), dtype=np.float64)


def adjustment_factors(
    raw_bars: pa.Table, actions: CorporateActions, *, dividend_basis: DividendBasis = "prior_close"
) -> tuple[F64, F64]:
    """Backward (price, volume) multipliers per bar: products of the factors of later actions.

    Vectorised: each action's factor is put on the first bar on or after its ex-date (an
    extra slot past the end takes actions after the last bar), then a reverse cumulative
    product gives, for every bar, the product over all strictly later slots.
    """
    ts = ts_numpy(raw_bars.column("ts"))
    close = _column(raw_bars, "close")
    n = ts.size
    slot = np.searchsorted(ts, actions.ex_date, side="left")  # first bar with ts >= ex_date
    price_f = 1.0 / actions.split_ratio
    has_div = actions.dividend > 0
    if has_div.any():
        price_f = price_f * _dividend_factors(close, slot, actions, has_div, dividend_basis)
    slots_price = np.ones(n + 1)
    slots_volume = np.ones(n + 1)
    # Actions at slot 0 (on or before the first bar) change nothing, but multiply.at keeps
    # them harmlessly in slot 0, which no bar reads.
    np.multiply.at(slots_price, slot, price_f)
    np.multiply.at(slots_volume, slot, actions.split_ratio)
    later_price = np.asarray(np.cumprod(slots_price[::-1])[::-1][1:], dtype=np.float64)
    later_volume = np.asarray(np.cumprod(slots_volume[::-1])[::-1][1:], dtype=np.float64)
    return later_price, later_volume


def _dividend_factors(
    close: F64,
    slot: I64,
    actions: CorporateActions,
    has_div: npt.NDArray[np.bool_],
    basis: DividendBasis,
) -> F64:
    n = close.size
    d = actions.dividend
    out = np.ones(len(actions))
    if basis == "prior_close":
        # No bar before the ex-date: the factor touches no bar, so it stays 1.
        use = has_div & (slot > 0)
        ref = close[np.clip(slot - 1, 0, max(n - 1, 0))] if n else np.ones(len(actions))
        out[use] = 1.0 - d[use] / ref[use]
    elif basis == "ex_close":
        use = has_div & (slot > 0)
        if (use & (slot >= n)).any():
            i = int(np.flatnonzero(use & (slot >= n))[0])
            raise DataError(
                f"{actions.source}: field 'ex_date' row {i}: dividend after the last bar has no "
                "ex-date close (needed for dividend_basis='ex_close')"
            )
        ref = close[np.clip(slot, 0, max(n - 1, 0))] if n else np.ones(len(actions))
        out[use] = ref[use] / (ref[use] + d[use])
    else:
        raise ValueError(f"unknown dividend_basis {basis!r}: expected 'prior_close' or 'ex_close'")
    bad = use & ~(out > 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{actions.source}: field 'dividend' row {i} ({d[i]}) is not below the prior close"
        )
    return out


def adjust(
    raw_bars: pa.Table,
    actions: CorporateActions,
    *,
    method: Method = "backward",
    dividend_basis: DividendBasis = "prior_close",
    source: str = "adjusted bars",
) -> pa.Table:
    """Split- and dividend-adjusted copy of ``raw_bars`` (BARS schema; the input is not changed).

    ``backward``: the last bar stays raw and earlier open/high/low/close are multiplied by the
    cumulative factor of all later actions; volume is multiplied by the later split ratios
    only (a 2:1 split doubles earlier volumes, dividends leave volume alone).
    ``forward``: the first bar stays raw and later bars are divided by the factors of the
    actions on or before them. ``dividend_basis`` is described in the module docstring.
    Only open, high, low, close and volume change; other columns are kept as they are.
    """
    if method not in ("backward", "forward"):
        raise ValueError(f"unknown method {method!r}: expected 'backward' or 'forward'")
    bars = conform(raw_bars, "bars", source)
    price, volume = adjustment_factors(bars, actions, dividend_basis=dividend_basis)
    if method == "forward" and price.size:
        price, volume = price / price[0], volume / volume[0]
    return _scaled(bars, price, volume, source)


def _scaled(bars: pa.Table, price: F64, volume: F64, source: str) -> pa.Table:
    columns = {name: bars.column(name) for name in bars.column_names}
    for name in ("open", "high", "low", "close"):
        columns[name] = pa.array(_column(bars, name) * price)
    columns["volume"] = pa.array(_column(bars, "volume") * volume)
    return conform(pa.table(columns), "bars", source)


# ----------------------------------------------------------------------------- factor files


@dataclass(frozen=True)
class FactorFile:
    """Lean-style factor rows: each row's factors apply to bars dated on or before it,
    and after the previous row (so a row is dated the last trading day before its event)."""

    date: I64
    price_factor: F64
    split_factor: F64
    source: str = "factor file"

    def __post_init__(self) -> None:
        diff = np.diff(self.date)
        if diff.size and (diff <= 0).any():
            i = int(np.flatnonzero(diff <= 0)[0]) + 1
            what = "duplicate" if diff[i - 1] == 0 else "unsorted"
            raise DataError(f"{self.source}: field 'date' is {what} at row {i}")
        for name in ("price_factor", "split_factor"):
            values = getattr(self, name)
            if len(values) != len(self.date):
                raise DataError(
                    f"{self.source}: field {name!r} has {len(values)} rows, date has {len(self.date)}"
                )
            bad = ~np.isfinite(values) | (values <= 0)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(
                    f"{self.source}: field {name!r} must be finite and > 0, row {i} is {values[i]}"
                )


def apply_factor_file(
    raw_bars: pa.Table, factors: FactorFile, *, source: str = "adjusted bars"
) -> pa.Table:
    """Backward-adjust raw bars with a factor file: price x price_factor x split_factor,
    volume / split_factor. A bar takes the first row dated on or after its own date; a bar
    later than every row stays raw (Lean ends its files with a 2050 row of 1, 1)."""
    bars = conform(raw_bars, "bars", source)
    ts = ts_numpy(bars.column("ts"))
    row = np.searchsorted(factors.date, ts, side="left")
    inside = row < factors.date.size
    pf = np.ones(ts.size)
    sf = np.ones(ts.size)
    pf[inside] = factors.price_factor[row[inside]]
    sf[inside] = factors.split_factor[row[inside]]
    return _scaled(bars, pf * sf, 1.0 / sf, source)


# ----------------------------------------------------------------------------- readers


def _date_ns(col: pa.ChunkedArray | pa.Array) -> I64:
    return ts_numpy(col.cast(pa.timestamp("s")).cast(pa.timestamp("ns")).cast(TS_TYPE))


def _read_csv(path: str | Path, **kwargs: object) -> pa.Table:
    try:
        return pacsv.read_csv(path, **kwargs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: unreadable CSV ({str(exc).splitlines()[0]})") from None


def _quandl_rows(path: str | Path, ticker: str) -> pa.Table:
    table = _read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={"date": pa.timestamp("s"), "ticker": pa.string()}
        ),
    )
    rows = table.filter(pc.equal(table.column("ticker"), ticker))
    if rows.num_rows == 0:
        raise DataError(f"{path}: no rows for ticker {ticker!r}")
    return rows


def read_quandl_wiki(path: str | Path, ticker: str) -> tuple[pa.Table, CorporateActions]:
    """Raw bars and actions of ``ticker`` from a Quandl WIKI table export.

    Columns ``ticker,date,open,high,low,close,volume,ex-dividend,split_ratio,adj_*``; the
    raw columns are unadjusted and kept as they are. An action is a row whose ``ex-dividend``
    is non-zero or whose ``split_ratio`` is not 1.
    """
    rows = _quandl_rows(path, ticker)
    source = f"{path} [{ticker}]"
    ts = _date_ns(rows.column("date"))
    bars = conform(
        pa.table(
            {
                "ts": pa.array(ts, type=TS_TYPE),
                **{c: rows.column(c) for c in ("open", "high", "low", "close", "volume")},
            }
        ),
        "bars",
        source,
    )
    div = _column(rows, "ex-dividend")
    split = _column(rows, "split_ratio")
    hit = (div != 0) | (split != 1)
    return bars, CorporateActions(ts[hit], split[hit], div[hit], source)


def read_quandl_wiki_adjusted(path: str | Path, ticker: str) -> pa.Table:
    """The vendor's own adjusted series (``adj_open`` ... ``adj_volume``) of ``ticker`` as BARS."""
    rows = _quandl_rows(path, ticker)
    cols = {c: rows.column(f"adj_{c}") for c in ("open", "high", "low", "close", "volume")}
    ts = pa.array(_date_ns(rows.column("date")), type=TS_TYPE)
    return conform(pa.table({"ts": ts, **cols}), "bars", f"{path} [{ticker}] adjusted")


def read_lean_daily(path: str | Path) -> pa.Table:
    """Raw bars from a Lean daily equity CSV (no header: ``yyyymmdd 00:00,o,h,l,c,v``,
    prices in 1/10,000 USD). Prices are returned in USD; nothing is adjusted."""
    names = ["date", "open", "high", "low", "close", "volume"]
    table = _read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=names),
        convert_options=pacsv.ConvertOptions(
            column_types={"date": pa.timestamp("s"), **{c: pa.float64() for c in names[1:]}},
            timestamp_parsers=["%Y%m%d %H:%M"],
        ),
    )
    cols = {
        c: pc.divide(table.column(c), LEAN_PRICE_SCALE) for c in ("open", "high", "low", "close")
    }
    ts = pa.array(_date_ns(table.column("date")), type=TS_TYPE)
    return conform(
        pa.table({"ts": ts, **cols, "volume": table.column("volume")}), "bars", str(path)
    )


def read_lean_factor_file(path: str | Path) -> FactorFile:
    """A Lean factor file: no header, ``yyyymmdd,price_factor,split_factor[,reference_price]``."""
    table = _read_csv(
        path,
        read_options=pacsv.ReadOptions(autogenerate_column_names=True),
        convert_options=pacsv.ConvertOptions(
            column_types={"f0": pa.timestamp("s"), "f1": pa.float64(), "f2": pa.float64()},
            timestamp_parsers=["%Y%m%d"],
        ),
    )
    return FactorFile(
        _date_ns(table.column("f0")), _column(table, "f1"), _column(table, "f2"), str(path)
    )
