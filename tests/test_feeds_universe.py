"""Universe selection from exchangeInfo (real captured payloads) and from stored bars."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import SMALL_END, SMALL_START, SMALL_SYMBOLS

from tickray.engine.clock import parse_time
from tickray.feeds.schemas import DataError
from tickray.feeds.store import read_symbol_specs, write_bars, write_symbol_specs
from tickray.feeds.universe import (
    average_daily_quote_volume,
    quote_volume_total,
    select_from_data,
    select_from_exchange_info,
    specs_from_exchange_info,
)

HOUR = 3600 * 10**9
DAY = 24 * HOUR

# ---------------------------------------------------------------------------------------------
# Real payloads


def _nautilus(shared_data: Path, market: str) -> dict[str, Any]:
    path = shared_data / "crypto" / "rest" / "nautilus" / f"http_{market}_market_exchange_info.json"
    if not path.is_file():
        pytest.skip(f"captured {market} exchangeInfo not found at {path}")
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return payload


def _cryptofeed(shared_data: Path, name: str) -> dict[str, Any]:
    """A full exchangeInfo from a cryptofeed ``<url> -> <ts>: <json>`` recording."""
    path = shared_data / "crypto" / "ws_recordings" / "cryptofeed" / name
    if not path.is_file():
        pytest.skip(f"cryptofeed exchangeInfo recording not found at {path}")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        line = fh.readline()
    payload: dict[str, Any] = json.loads(line.split(": ", 1)[1])
    return payload


def _filter(info: dict[str, Any], symbol: str, kind: str, key: str) -> float:
    row = next(r for r in info["symbols"] if r["symbol"] == symbol)
    return float(next(f for f in row["filters"] if f["filterType"] == kind)[key])


def test_spot_trading_usdt_symbols_of_captured_payload(shared_data: Path) -> None:
    info = _nautilus(shared_data, "spot")
    # The capture is trimmed to two symbols, both TRADING against USDT.
    assert select_from_exchange_info(info, quote_assets=["USDT"]) == ["BTCUSDT", "ETHUSDT"]
    assert select_from_exchange_info(info, quote_assets=["BUSD"]) == []
    assert select_from_exchange_info(info, symbols=["ETHUSDT", "XRPUSDT"]) == ["ETHUSDT"]


def test_futures_perpetual_filter_drops_the_quarterly(shared_data: Path) -> None:
    info = _nautilus(shared_data, "futures")
    every = select_from_exchange_info(info, quote_assets=["USDT"])
    assert every == ["BTCUSDT", "BTCUSDT_220325", "ETHUSDT"]
    perps = select_from_exchange_info(info, quote_assets=["USDT"], contract_type="PERPETUAL")
    assert perps == ["BTCUSDT", "ETHUSDT"]
    quarter = select_from_exchange_info(info, contract_type="CURRENT_QUARTER")
    assert quarter == ["BTCUSDT_220325"]


def test_spot_specs_equal_the_payload_filters(shared_data: Path) -> None:
    info = _nautilus(shared_data, "spot")
    specs = specs_from_exchange_info(info)
    assert sorted(specs) == ["BTCUSDT", "ETHUSDT"]
    # BTCUSDT: tickSize "0.01000000", stepSize = minQty "0.00001000", minNotional "10.00000000".
    assert specs["BTCUSDT"] == {
        "tick_size": 0.01,
        "step_size": 0.00001,
        "min_qty": 0.00001,
        "min_notional": 10.0,
    }
    assert specs["ETHUSDT"]["tick_size"] == _filter(info, "ETHUSDT", "PRICE_FILTER", "tickSize")
    assert specs["ETHUSDT"]["step_size"] == _filter(info, "ETHUSDT", "LOT_SIZE", "stepSize")


def test_futures_specs_read_notional_of_min_notional(shared_data: Path) -> None:
    info = _nautilus(shared_data, "futures")
    specs = specs_from_exchange_info(info)
    # USD-M BTCUSDT: tickSize "0.10", stepSize = minQty "0.001", MIN_NOTIONAL notional "10".
    assert specs["BTCUSDT"] == {
        "tick_size": 0.1,
        "step_size": 0.001,
        "min_qty": 0.001,
        "min_notional": 10.0,
    }
    assert specs["ETHUSDT"]["tick_size"] == _filter(info, "ETHUSDT", "PRICE_FILTER", "tickSize")


def test_specs_round_trip_through_the_store(shared_data: Path, tmp_path: Path) -> None:
    specs = specs_from_exchange_info(_nautilus(shared_data, "futures"))
    write_symbol_specs(tmp_path, specs)
    assert read_symbol_specs(tmp_path) == specs


def test_full_spot_recording_counts(shared_data: Path, tmp_path: Path) -> None:
    info = _cryptofeed(shared_data, "BINANCE.0.gz")
    # 1,695 symbols: 1,262 TRADING, 315 of them quoted in USDT, of which 40 have
    # isSpotTradingAllowed false (margin-only leveraged tokens) -> 275.
    assert len(info["symbols"]) == 1695
    assert len(select_from_exchange_info(info, status=None)) == 1695 - 40
    usdt = select_from_exchange_info(info, quote_assets=["USDT"])
    assert len(usdt) == 275
    assert "BTCUSDT" in usdt and usdt == sorted(usdt)
    specs = specs_from_exchange_info(info)
    assert len(specs) == 1695
    assert specs["BTCUSDT"]["tick_size"] == _filter(info, "BTCUSDT", "PRICE_FILTER", "tickSize")
    assert specs["BTCUSDT"]["step_size"] == _filter(info, "BTCUSDT", "LOT_SIZE", "stepSize")
    write_symbol_specs(tmp_path, specs)  # every spec is acceptable to the store


def test_full_futures_recording_counts(shared_data: Path) -> None:
    info = _cryptofeed(shared_data, "BINANCE_FUTURES.0.gz")
    # 122 symbols: 121 TRADING, 119 of those against USDT; 2 of them are quarterlies.
    assert len(select_from_exchange_info(info, quote_assets=["USDT"])) == 119
    perps = select_from_exchange_info(info, quote_assets=["USDT"], contract_type="PERPETUAL")
    assert len(perps) == 117
    specs = specs_from_exchange_info(info)
    assert specs["BTCUSDT"]["tick_size"] == _filter(info, "BTCUSDT", "PRICE_FILTER", "tickSize")
    assert specs["BTCUSDT"]["min_notional"] == _filter(info, "BTCUSDT", "MIN_NOTIONAL", "notional")


# ---------------------------------------------------------------------------------------------
# Malformed payloads


def _tiny() -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": 1,
        "rateLimits": [],
        "symbols": [
            {
                "symbol": "AAAUSDT",
                "status": "TRADING",
                "baseAsset": "AAA",
                "quoteAsset": "USDT",
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": "0.01"},
                    {"filterType": "LOT_SIZE", "stepSize": "0.1", "minQty": "0.1"},
                    {"filterType": "NOTIONAL", "minNotional": "5"},
                ],
            }
        ],
    }


def test_tiny_payload_parses_with_notional_filter() -> None:
    assert select_from_exchange_info(_tiny()) == ["AAAUSDT"]
    assert specs_from_exchange_info(_tiny())["AAAUSDT"]["min_notional"] == 5.0


def test_missing_notional_filter_means_no_floor() -> None:
    info = _tiny()
    info["symbols"][0]["filters"].pop()
    assert specs_from_exchange_info(info)["AAAUSDT"]["min_notional"] == 0.0


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda i: i.pop("symbols"), "missing field 'symbols'"),
        (lambda i: i.update(symbols={}), "field 'symbols' is not an array"),
        (lambda i: i["symbols"][0].pop("quoteAsset"), "missing field 'quoteAsset'"),
        (lambda i: i["symbols"][0].update(status=1), "field 'status'"),
        (lambda i: i["symbols"][0].update(isSpotTradingAllowed="yes"), "isSpotTradingAllowed"),
        (lambda i: i["symbols"][0].update(contractType=3), "contractType"),
    ],
)
def test_malformed_payload_names_the_field(mutate: Any, match: str) -> None:
    info = copy.deepcopy(_tiny())
    mutate(info)
    with pytest.raises(DataError, match=match):
        select_from_exchange_info(info)
    with pytest.raises(DataError, match=match):
        specs_from_exchange_info(info)


def test_payload_that_is_not_an_object() -> None:
    with pytest.raises(DataError, match="expected a JSON object"):
        select_from_exchange_info([])  # type: ignore[arg-type]


def test_contract_type_on_spot_payload_is_an_error() -> None:
    with pytest.raises(DataError, match="missing field 'contractType'"):
        select_from_exchange_info(_tiny(), contract_type="PERPETUAL")


@pytest.mark.parametrize(
    ("index", "change", "match"),
    [
        (0, {"tickSize": "abc"}, "PRICE_FILTER tickSize 'abc'"),
        (0, {"tickSize": "0"}, "tick_size is 0"),
        (1, {"stepSize": "-1"}, "LOT_SIZE stepSize '-1'"),
        (2, {"minNotional": None}, "NOTIONAL minNotional None"),
    ],
)
def test_bad_filter_values_name_the_filter(index: int, change: dict[str, Any], match: str) -> None:
    info = _tiny()
    info["symbols"][0]["filters"][index].update(change)
    with pytest.raises(DataError, match=match):
        specs_from_exchange_info(info)


def test_missing_lot_size_filter() -> None:
    info = _tiny()
    del info["symbols"][0]["filters"][1]
    with pytest.raises(DataError, match=r"AAAUSDT\): missing filter 'LOT_SIZE'"):
        specs_from_exchange_info(info)
    info["symbols"][0]["filters"].append("LOT_SIZE")
    with pytest.raises(DataError, match="filter 2: expected an object"):
        specs_from_exchange_info(info)


# ---------------------------------------------------------------------------------------------
# Selection from stored bars
#
# Hourly bars from 2024-02-29 00:00; the window is 2024-02-29 12:00 -> 2024-03-01 12:00
# (one day, across the February and March files):
# - AAAUSDT: 48 bars, close 10, volume 100, quote_volume null -> 1,000 per bar;
#   24 bars in the window -> 24,000 per day.
# - BBBUSDT: 48 bars, close 20, volume 50 (1,000 estimated); quote_volume 500 in February,
#   null in March -> 12 x 500 + 12 x 1,000 = 18,000 per day.
# - CCCUSDT: 12 bars from 2024-03-01 00:00, quote_volume 5,000 -> 60,000 per day, but only
#   12 hours of history at the window end.
# - DDDUSDT: 24 bars in January: nothing in the window, never selected.

FEB29 = parse_time("2024-02-29")
WIN_START = FEB29 + 12 * HOUR
WIN_END = WIN_START + DAY


def _hourly(
    root: Path, symbol: str, start: int, n: int, close: float, volume: float, quote: list[Any]
) -> None:
    table = pa.table(
        {
            "ts": pa.array([start + i * HOUR for i in range(n)], type=pa.timestamp("ns", tz="UTC")),
            "open": [close] * n,
            "high": [close] * n,
            "low": [close] * n,
            "close": [close] * n,
            "volume": [volume] * n,
            "quote_volume": pa.array(quote, type=pa.float64()),
        }
    )
    write_bars(root, symbol, "1h", table)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    _hourly(tmp_path, "AAAUSDT", FEB29, 48, 10.0, 100.0, [None] * 48)
    _hourly(tmp_path, "BBBUSDT", FEB29, 48, 20.0, 50.0, [500.0] * 24 + [None] * 24)
    _hourly(tmp_path, "CCCUSDT", FEB29 + DAY, 12, 5.0, 10.0, [5000.0] * 12)
    _hourly(tmp_path, "DDDUSDT", parse_time("2024-01-10"), 24, 1.0, 1.0, [1.0] * 24)
    return tmp_path


def _select(root: Path, **kw: Any) -> list[str]:
    return select_from_data(root, "1h", start_ns=WIN_START, end_ns=WIN_END, **kw)


def test_average_daily_quote_volume_falls_back_to_close_times_volume(store: Path) -> None:
    got = {
        s: average_daily_quote_volume(store, "1h", s, WIN_START, WIN_END)
        for s in ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    }
    assert got == {"AAAUSDT": 24_000.0, "BBBUSDT": 18_000.0, "CCCUSDT": 60_000.0}
    # Over two days from 12:00 AAAUSDT has its remaining 36 bars: 36,000 / 2 = 18,000 a day.
    two_days = average_daily_quote_volume(store, "1h", "AAAUSDT", WIN_START, WIN_START + 2 * DAY)
    assert two_days == 18_000.0


def test_no_thresholds_keeps_every_symbol_with_bars_in_the_window(store: Path) -> None:
    assert _select(store) == ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    assert _select(store, symbols=["CCCUSDT", "AAAUSDT"]) == ["AAAUSDT", "CCCUSDT"]


def test_volume_threshold_is_inclusive(store: Path) -> None:
    assert _select(store, min_quote_volume=18_000.0) == ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    assert _select(store, min_quote_volume=18_000.01) == ["AAAUSDT", "CCCUSDT"]
    assert _select(store, min_quote_volume=24_000.01) == ["CCCUSDT"]


def test_short_history_is_excluded(store: Path) -> None:
    # CCCUSDT: first bar 2024-03-01 00:00, window end 12:00 -> 12 h of history.
    assert _select(store, min_history_ns=12 * HOUR) == ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    assert _select(store, min_history_ns=DAY) == ["AAAUSDT", "BBBUSDT"]
    # AAAUSDT: 2024-02-29 00:00 -> window end: 36 h.
    assert _select(store, min_history_ns=36 * HOUR + 1) == []
    both = _select(store, min_history_ns=DAY, min_quote_volume=20_000.0)
    assert both == ["AAAUSDT"]


def test_bad_arguments(store: Path) -> None:
    with pytest.raises(ValueError, match="empty window"):
        select_from_data(store, "1h", start_ns=WIN_END, end_ns=WIN_START)
    with pytest.raises(ValueError, match="min_history_ns"):
        _select(store, min_history_ns=-1)
    with pytest.raises(ValueError, match="min_quote_volume"):
        _select(store, min_quote_volume=float("nan"))
    with pytest.raises(DataError, match="unknown symbol 'EEEUSDT'"):
        _select(store, symbols=["EEEUSDT"])


def test_streamed_volume_matches_a_full_read_of_synthetic_bars(small_universe: Path) -> None:
    from tickray.feeds.synthetic import generate_bars

    tables = generate_bars(list(SMALL_SYMBOLS), SMALL_START, 2 * 1440, seed=11)
    for sym, table in tables.items():
        close = table.column("close").to_numpy()
        volume = table.column("volume").to_numpy()
        quote = table.column("quote_volume").to_numpy(zero_copy_only=False)
        expected = float(np.sum(np.where(np.isnan(quote), close * volume, quote)))
        got = quote_volume_total(small_universe, "1m", sym, SMALL_START, SMALL_END)
        assert got == pytest.approx(expected, rel=1e-12)
