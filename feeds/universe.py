"""Universe selection: which symbols a run trades, from exchangeInfo or from stored bars.

- :func:`select_from_exchange_info` filters a Binance ``exchangeInfo`` response (spot
  ``/api/v3`` or USD-M ``/fapi/v1``) by status, quote asset and contract type.
- :func:`specs_from_exchange_info` turns its filters into the trading rules that
  :func:`tickray.feeds.store.write_symbol_specs` stores.
- :func:`select_from_data` keeps the stored symbols with enough history and enough average
  daily quote volume in a window, streaming the month files one record batch at a time.

Malformed payloads raise :class:`~tickray.feeds.schemas.DataError` naming the row and field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from tickray.feeds.replay import iter_table_batches
from tickray.feeds.rest import parse_exchange_info
from tickray.feeds.schemas import DataError, interval_ns
from tickray.feeds.store import bar_files, data_range, list_symbols

DAY_NS = 86_400 * 10**9
ENDPOINT = "exchangeInfo"


def _symbol_rows(info: object) -> list[dict[str, Any]]:
    """The validated ``symbols`` rows of an exchangeInfo payload."""
    rows: list[dict[str, Any]] = parse_exchange_info(info, ENDPOINT)["symbols"]
    for i, row in enumerate(rows):
        where = f"{ENDPOINT} symbols row {i} ({row['symbol']})"
        spot = row.get("isSpotTradingAllowed")
        if spot is not None and not isinstance(spot, bool):
            raise DataError(f"{where}: field 'isSpotTradingAllowed' {spot!r} is not a boolean")
        contract = row.get("contractType")
        if contract is not None and not isinstance(contract, str):
            raise DataError(f"{where}: field 'contractType' {contract!r} is not a string")
    return rows


def select_from_exchange_info(
    info: dict[str, Any],
    *,
    status: str | None = "TRADING",
    quote_assets: Iterable[str] | None = None,
    contract_type: str | None = None,
    symbols: Iterable[str] | None = None,
) -> list[str]:
    """Sorted names of the exchangeInfo symbols that pass every given filter.

    ``status`` (None: any) and ``quote_assets`` (None: any) match the fields of the same
    name; ``contract_type`` (e.g. ``"PERPETUAL"``) matches USD-M ``contractType`` and is a
    DataError on a payload row without it (spot); ``symbols`` restricts to those names.
    Spot rows with ``isSpotTradingAllowed`` false are always left out: they cannot be traded.
    """
    quotes = None if quote_assets is None else frozenset(quote_assets)
    wanted = None if symbols is None else frozenset(symbols)
    out: list[str] = []
    for i, row in enumerate(_symbol_rows(info)):
        if status is not None and row["status"] != status:
            continue
        if quotes is not None and row["quoteAsset"] not in quotes:
            continue
        if wanted is not None and row["symbol"] not in wanted:
            continue
        if row.get("isSpotTradingAllowed") is False:
            continue
        if contract_type is not None:
            if "contractType" not in row:
                raise DataError(f"{ENDPOINT} symbols row {i}: missing field 'contractType'")
            if row["contractType"] != contract_type:
                continue
        out.append(row["symbol"])
    return sorted(out)


def _decimal(value: object, where: str) -> float:
    """A Binance decimal string (or JSON number) as a finite float >= 0."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            out = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(out) and out >= 0:
                return out
    raise DataError(f"{where} {value!r} is not a finite number >= 0")


def _symbol_spec(row: Mapping[str, Any], where: str) -> dict[str, float]:
    filters: dict[str, Mapping[str, Any]] = {}
    for j, raw in enumerate(row["filters"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("filterType"), str):
            raise DataError(f"{where} filter {j}: expected an object with a 'filterType'")
        filters[raw["filterType"]] = raw

    def field(kind: str, key: str) -> float:
        if kind not in filters:
            raise DataError(f"{where}: missing filter {kind!r}")
        if key not in filters[kind]:
            raise DataError(f"{where}: filter {kind!r} has no field {key!r}")
        return _decimal(filters[kind][key], f"{where}: {kind} {key}")

    spec = {
        "tick_size": field("PRICE_FILTER", "tickSize"),
        "step_size": field("LOT_SIZE", "stepSize"),
        "min_qty": field("LOT_SIZE", "minQty"),
    }
    for name in ("tick_size", "step_size"):
        if spec[name] == 0:
            raise DataError(f"{where}: {name} is 0 (the filter is disabled)")
    # Spot names the notional floor ``minNotional`` (MIN_NOTIONAL, later NOTIONAL); USD-M
    # uses ``notional``. With both filters present the larger floor is the binding one.
    floors = [
        field(kind, key)
        for kind in ("MIN_NOTIONAL", "NOTIONAL")
        if kind in filters
        for key in ("minNotional", "notional")
        if key in filters[kind]
    ]
    spec["min_notional"] = max(floors, default=0.0)
    return spec


def specs_from_exchange_info(info: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{symbol: {tick_size, step_size, min_qty, min_notional}}`` for every payload symbol.

    tick_size is PRICE_FILTER ``tickSize`` (quote per unit), step_size and min_qty are
    LOT_SIZE ``stepSize`` / ``minQty`` (base units), min_notional is the MIN_NOTIONAL or
    NOTIONAL floor (quote currency; 0 when the symbol has neither filter). DataError when
    PRICE_FILTER or LOT_SIZE is missing or a tick/step size is 0.
    """
    out: dict[str, dict[str, float]] = {}
    for i, row in enumerate(_symbol_rows(info)):
        out[row["symbol"]] = _symbol_spec(row, f"{ENDPOINT} symbols row {i} ({row['symbol']})")
    return out


def quote_volume_total(
    root: str | Path, interval: str, symbol: str, start_ns: int, end_ns: int
) -> float:
    """Sum of quote volume of ``symbol``'s bars with ``start_ns <= ts < end_ns``.

    Uses the ``quote_volume`` column, or ``close * volume`` for bars where it is null (or
    files without it). Streams one record batch at a time.
    """
    total = 0.0
    files = bar_files(root, interval, symbol)
    for batch in iter_table_batches(files, "bars", start_ns, end_ns):
        estimate = pc.multiply(batch.column("close"), batch.column("volume"))
        names = batch.schema.names
        quote = batch.column("quote_volume") if "quote_volume" in names else None
        if quote is not None and quote.null_count < len(quote):
            estimate = pc.if_else(pc.is_null(quote), estimate, quote)
        total += float(
            np.sum(np.asarray(estimate.to_numpy(zero_copy_only=False), dtype=np.float64))
        )
    return total


def average_daily_quote_volume(
    root: str | Path, interval: str, symbol: str, start_ns: int, end_ns: int
) -> float:
    """Quote volume in ``[start_ns, end_ns)`` divided by the window's length in days.

    Dividing by the whole window (not the days with data) ranks a symbol listed mid-window
    by what it actually traded over the window.
    """
    if end_ns <= start_ns:
        raise ValueError(f"empty window: start_ns {start_ns} >= end_ns {end_ns}")
    return quote_volume_total(root, interval, symbol, start_ns, end_ns) / (
        (end_ns - start_ns) / DAY_NS
    )


def select_from_data(
    root: str | Path,
    interval: str,
    symbols: Iterable[str] | None = None,
    *,
    start_ns: int,
    end_ns: int,
    min_quote_volume: float | None = None,
    min_history_ns: int | None = None,
) -> list[str]:
    """Sorted stored symbols (``symbols`` or all of ``interval``) tradable in the window.

    A symbol is kept when it has bars overlapping ``[start_ns, end_ns)``; when its history
    up to the window end, ``min(last bar close, end_ns) - first bar open``, is at least
    ``min_history_ns``; and when its :func:`average_daily_quote_volume` in the window is at
    least ``min_quote_volume`` (quote currency per day). History comes from Parquet statistics
    and is checked first, so volume is only streamed for the symbols still in.
    """
    if end_ns <= start_ns:
        raise ValueError(f"empty window: start_ns {start_ns} >= end_ns {end_ns}")
    if min_history_ns is not None and min_history_ns < 0:
        raise ValueError(f"min_history_ns must be >= 0, got {min_history_ns}")
    if min_quote_volume is not None and not min_quote_volume >= 0:
        raise ValueError(f"min_quote_volume must be >= 0, got {min_quote_volume}")
    step = interval_ns(interval)
    names = list_symbols(root, interval) if symbols is None else sorted(set(symbols))
    out: list[str] = []
    for symbol in names:
        first, last = data_range(root, interval, symbol)
        if first >= end_ns or last < start_ns:
            continue
        if min_history_ns is not None and min(last + step, end_ns) - first < min_history_ns:
            continue
        if min_quote_volume is not None:
            adv = average_daily_quote_volume(root, interval, symbol, start_ns, end_ns)
            if adv < min_quote_volume:
                continue
        out.append(symbol)
    return out
