"""Binance data.binance.vision dumps: names, checksums, every layout, bad input, and import.

The archives are built in tmp_path from real recordings in ../shared/data (see its README):
the USD-M 1m klines exactly as published (with a header), the same rows without the header as
spot files write them (in ms, and in us as spot files do from 2025 on), real spot trades
(nautilus parquet), real USD-M trades (hftbacktest websocket recording), real spot aggTrades
(a REST capture) and real USD-M aggTrades (cryptofeed recording), each written in the dump's
CSV layout, zipped under the dump's file name, with a ``.CHECKSUM`` file made by hashlib.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import zipfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickray.feeds.binance import read_klines_csv
from tickray.feeds.dumps import DumpName, import_dumps, parse_dump_name, read_dump, verify_checksum
from tickray.feeds.replay import BarCursor
from tickray.feeds.schemas import BARS, TRADES, DataError
from tickray.feeds.store import read_ticks

MS = 10**6
FUTURES_KLINES = "crypto/klines_1m/binance_usdm_futures"
KLINES_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
TRADES_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker"
AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"


# --------------------------------------------------------------------------------------------
# Building archives


def write_checksum(path: Path, digest: str | None = None) -> Path:
    """``<name>.zip.CHECKSUM`` in sha256sum format (the real digest unless one is given)."""
    digest = digest or hashlib.sha256(path.read_bytes()).hexdigest()
    sums = path.with_name(path.name + ".CHECKSUM")
    sums.write_text(f"{digest}  {path.name}\n")
    return sums


def write_dump(
    folder: Path,
    name: str,
    lines: list[str],
    *,
    checksum: bool = True,
    extra: dict[str, str] | None = None,
    method: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """A dump zip holding ``<stem>.csv`` (plus ``extra`` members), and its CHECKSUM file."""
    path = folder / name
    with zipfile.ZipFile(path, "w", method) as zf:
        zf.writestr(name.removesuffix(".zip") + ".csv", "\n".join(lines) + "\n")
        for member, text in (extra or {}).items():
            zf.writestr(member, text)
    if checksum:
        write_checksum(path)
    return path


def with_field(line: str, index: int, value: str) -> str:
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


def to_us(line: str) -> str:
    """A kline row in microseconds, as spot files write them from 2025 on (close = +999 us)."""
    fields = line.split(",")
    fields[0] = str(int(fields[0]) * 1000)
    fields[6] = str(int(fields[6]) * 1000 + 999)
    return ",".join(fields)


# --------------------------------------------------------------------------------------------
# Real data


@pytest.fixture(scope="module")
def fil_lines(shared_data: Path) -> list[str]:
    """The USD-M FILUSDT 1m file of 2026-02 as published: the header, then 40,320 rows."""
    path = shared_data / FUTURES_KLINES / "FILUSDT-1m-2026-02.csv.gz"
    return gzip.decompress(path.read_bytes()).decode().splitlines()


@pytest.fixture(scope="module")
def spot_trades(shared_data: Path) -> list[tuple[int, int, str, str, bool]]:
    """Real spot BTCUSDT trades of 2021-01-08: (time ms, id, price, qty, buyer is maker)."""
    path = shared_data / "crypto/ticks/nautilus_binance_spot_BTCUSDT_trades_2021-01-08.parquet"
    table = pq.read_table(path)
    ms = table.column("timestamp").cast(pa.int64()).to_pylist()  # timestamp[ms] -> epoch ms
    t = table.to_pydict()
    return [
        (ts, tid, f"{p:.8f}", f"{q:.8f}", m == "True")
        for ts, tid, p, q, m in zip(
            ms, t["trade_id"], t["price"], t["quantity"], t["buyer_maker"], strict=True
        )
    ]


@pytest.fixture(scope="module")
def futures_trades(shared_data: Path) -> list[tuple[int, int, str, str, bool]]:
    """Real USD-M BTCUSDT trades of 2024-08-08 from the websocket ``@trade`` stream."""
    path = shared_data / "crypto/ws_recordings/hftbacktest/binance_usdm_BTCUSDT_2024-08-08.ws.gz"
    out = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if "@trade" in line:
                d = json.loads(line.split(" ", 1)[1])["data"]
                out.append((d["T"], d["t"], d["p"], d["q"], d["m"]))
    return out


@pytest.fixture(scope="module")
def spot_agg_trades(shared_data: Path) -> list[dict[str, object]]:
    """Ten real spot BTCUSDT aggTrades of 2021-10-22 (REST ``/api/v3/aggTrades``)."""
    path = shared_data / "crypto/rest/nautilus/http_spot_market_agg_trades.json"
    return list(json.loads(path.read_text()))


@pytest.fixture(scope="module")
def futures_agg_trades(shared_data: Path) -> list[dict[str, object]]:
    """Forty real USD-M SUSHIUSDT aggTrades of 2021-07-22 (cryptofeed websocket recording)."""
    path = shared_data / "crypto/ws_recordings/cryptofeed/BINANCE_FUTURES.ws.1.0.gz"
    out = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if '"e":"aggTrade"' in line:
                d = json.loads(line.split(": ", 1)[1])["data"]
                if d["s"] == "SUSHIUSDT":
                    out.append(d)
    return out


def spot_trade_lines(trades: list[tuple[int, int, str, str, bool]], us: bool = False) -> list[str]:
    """Spot layout, no header: id,price,qty,quote_qty,time,is_buyer_maker,is_best_match."""
    return [
        f"{tid},{p},{q},{Decimal(p) * Decimal(q)},{t * 1000 if us else t},{m},True"
        for t, tid, p, q, m in trades
    ]


def futures_trade_lines(trades: list[tuple[int, int, str, str, bool]]) -> list[str]:
    """USD-M layout: a header, then id,price,qty,quote_qty,time,is_buyer_maker (lower case)."""
    rows = [
        f"{tid},{p},{q},{Decimal(p) * Decimal(q)},{t},{str(m).lower()}"
        for t, tid, p, q, m in trades
    ]
    return [TRADES_HEADER, *rows]


def kline_source(lines: list[str]) -> dict[str, np.ndarray]:
    """The kline CSV text parsed with the csv module: the values the store must hand back."""
    rows = [r for r in csv.reader(lines) if r[0] != "open_time"]
    cols = list(zip(*rows, strict=True))
    out = {"ts": np.array([int(v) * MS for v in cols[0]], dtype=np.int64)}
    for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        out[name] = np.array([float(v) for v in cols[i]])
    return out


# --------------------------------------------------------------------------------------------
# File names


def test_kind_interval_and_symbol_come_from_the_file_name() -> None:
    base = "data/spot/monthly/klines/BTCUSDT/1m/"
    assert parse_dump_name(base + "BTCUSDT-1m-2024-01.zip") == DumpName(
        "BTCUSDT", "klines", "1m", "2024-01"
    )
    assert parse_dump_name("BTCUSDT-15m-2024-01-05.zip") == DumpName(
        "BTCUSDT", "klines", "15m", "2024-01-05"
    )
    assert parse_dump_name("ETHUSDT-1mo-2024-01.zip") == DumpName(
        "ETHUSDT", "klines", "1mo", "2024-01"
    )
    assert parse_dump_name("BTCUSDT-trades-2024-01.zip") == DumpName(
        "BTCUSDT", "trades", None, "2024-01"
    )
    assert parse_dump_name("BTCUSDT-aggTrades-2024-01-05.zip") == DumpName(
        "BTCUSDT", "aggTrades", None, "2024-01-05"
    )
    for other in ("BTCUSDT-1m-2024-13.zip", "BTCUSDT-1m-2024-01.csv", "klines.zip"):
        assert parse_dump_name(other) is None


def test_mark_price_klines_share_the_names_but_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "markPriceKlines" / "BTCUSDT" / "1m"
    folder.mkdir(parents=True)
    path = write_dump(folder, "BTCUSDT-1m-2024-01.zip", ["1"])
    with pytest.raises(DataError, match="markPriceKlines files are not trade klines"):
        read_dump(path)


# --------------------------------------------------------------------------------------------
# Checksums


def test_checksum_that_matches_returns_the_sha256(tmp_path: Path) -> None:
    path = write_dump(
        tmp_path, "BTCUSDT-trades-2024-01.zip", ["1,2.0,3.0,6.0,1704067200000,True,True"]
    )
    assert verify_checksum(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_checksum_mismatch_names_the_file_and_both_digests(
    tmp_path: Path, fil_lines: list[str]
) -> None:
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", fil_lines[:10], checksum=False)
    real = hashlib.sha256(path.read_bytes()).hexdigest()
    wrong = "0" * 64
    write_checksum(path, wrong)
    for call in (lambda: verify_checksum(path), lambda: read_dump(path)):
        with pytest.raises(DataError) as err:
            call()
        assert str(path) in str(err.value)
        assert real in str(err.value) and wrong in str(err.value)
    assert read_dump(path, verify=False).num_rows == 9  # the check is what refused it


def test_missing_checksum_is_an_error_unless_not_required(
    tmp_path: Path, fil_lines: list[str]
) -> None:
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", fil_lines[:10], checksum=False)
    with pytest.raises(DataError, match=r"FILUSDT-1m-2026-02\.zip\.CHECKSUM not found"):
        verify_checksum(path)
    with pytest.raises(DataError, match="CHECKSUM not found"):
        read_dump(path)
    digest = verify_checksum(path, require_checksum=False)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_dump(path, verify=False).num_rows == 9


def test_checksum_file_for_another_archive_is_refused(tmp_path: Path) -> None:
    path = write_dump(
        tmp_path, "BTCUSDT-trades-2024-01.zip", ["1,2.0,3.0,6.0,1704067200000,True,True"]
    )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  BTCUSDT-trades-2024-02.zip\n")
    with pytest.raises(DataError, match="for 'BTCUSDT-trades-2024-02.zip', not"):
        verify_checksum(path)


def test_corrupted_archive_fails_the_checksum_and_then_the_zip_crc(
    tmp_path: Path, fil_lines: list[str]
) -> None:
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", fil_lines[:10], method=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    at = data.index(b"1.052,1.052,1.049")  # inside the stored CSV of the first bar
    data[at] = ord("2")
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256 mismatch"):
        read_dump(path)
    with pytest.raises(DataError, match="unreadable zip archive.*CRC"):
        read_dump(path, verify=False)


# --------------------------------------------------------------------------------------------
# Klines


@pytest.mark.parametrize(
    "layout", ["futures: header, ms", "spot: no header, ms", "spot from 2025: no header, us"]
)
def test_every_kline_layout_reads_to_the_published_bars(
    tmp_path: Path, shared_data: Path, fil_lines: list[str], layout: str
) -> None:
    rows = fil_lines[1:]
    lines = {
        "futures: header, ms": fil_lines,
        "spot: no header, ms": rows,
        "spot from 2025: no header, us": [to_us(r) for r in rows],
    }[layout]
    table = read_dump(write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", lines))
    assert table.schema.equals(BARS, check_metadata=True)
    assert table.num_rows == 40_320  # 28 days x 1440 minutes
    # The first line of the file: 1769904000000,1.052,1.052,1.049,1.050,83980.8,...,184,55074.9
    first = table.slice(0, 1).to_pylist()[0]
    assert first["ts"].isoformat() == "2026-02-01T00:00:00+00:00"
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        1.052,
        1.052,
        1.049,
        1.050,
    )
    assert (first["volume"], first["trade_count"], first["taker_buy_volume"]) == (
        83980.8,
        184,
        55074.9,
    )
    # The existing CSV loader reads the published .csv.gz to exactly the same table.
    published = shared_data / FUTURES_KLINES / "FILUSDT-1m-2026-02.csv.gz"
    assert table.equals(read_klines_csv(published))


def test_interval_in_the_name_must_match_the_spacing_of_the_bars(
    tmp_path: Path, fil_lines: list[str]
) -> None:
    path = write_dump(tmp_path, "FILUSDT-1h-2026-02.zip", fil_lines[:10])
    # line 3 opens one minute after line 2: not a whole number of hours.
    with pytest.raises(DataError, match=r"line 3: field 'open_time'.*off the interval's spacing"):
        read_dump(path)


def test_close_time_outside_its_bar_is_refused(tmp_path: Path, fil_lines: list[str]) -> None:
    lines = list(fil_lines[:6])
    open_ms = int(lines[3].split(",")[0])
    lines[3] = with_field(lines[3], 6, str(open_ms + 60_000))  # the next bar's open time
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", lines)
    with pytest.raises(DataError, match=r"line 4: field 'close_time'.*not inside the bar"):
        read_dump(path)


def test_mixed_time_units_are_refused(tmp_path: Path, fil_lines: list[str]) -> None:
    lines = [fil_lines[1], fil_lines[2], to_us(fil_lines[3])]
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", lines)
    with pytest.raises(DataError, match=r"line 3: field 'open_time'.*not in ms"):
        read_dump(path)


@pytest.mark.parametrize(
    ("index", "value", "field", "message"),
    [
        (1, "abc", "open", "'abc' is not a number"),
        (5, "", "volume", "'' is not a number"),
        (8, "18.4", "count", "'18.4' is not an integer"),
        (4, "nan", "close", "nan is not a finite number > 0"),
        (9, "-1", "taker_buy_volume", "-1.0 is not a finite number >= 0"),
    ],
)
def test_bad_kline_field_names_the_line_and_field(
    tmp_path: Path, fil_lines: list[str], index: int, value: str, field: str, message: str
) -> None:
    lines = list(fil_lines[:6])  # the header is line 1, so data row 3 is line 4
    lines[3] = with_field(lines[3], index, value)
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", lines)
    with pytest.raises(DataError) as err:
        read_dump(path)
    text = str(err.value)
    assert text.startswith(f"{path}: line 4: field {field!r}: ")
    assert message in text


@pytest.mark.parametrize(
    ("index", "value", "field"),
    [(2, "1.000", "high"), (3, "1.060", "low")],  # the bar opens 1.052 and closes 1.050
)
def test_ohlc_violation_names_the_line_and_field(
    tmp_path: Path, fil_lines: list[str], index: int, value: str, field: str
) -> None:
    lines = list(fil_lines[:6])
    lines[1] = with_field(lines[1], index, value)
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", lines)
    with pytest.raises(DataError, match=rf"line 2: field '{field}': .* is outside open 1.052"):
        read_dump(path)


def test_taker_volume_above_volume_is_refused(tmp_path: Path, fil_lines: list[str]) -> None:
    lines = list(fil_lines[:6])
    lines[2] = with_field(lines[2], 9, "1e9")
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", lines)
    with pytest.raises(DataError, match="line 3: field 'taker_buy_volume': 1000000000.0 exceeds"):
        read_dump(path)


def test_open_times_out_of_order_or_repeated_are_refused(
    tmp_path: Path, fil_lines: list[str]
) -> None:
    swapped = [fil_lines[0], fil_lines[1], fil_lines[3], fil_lines[2], fil_lines[4]]
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", swapped)
    with pytest.raises(DataError, match=r"line 4: field 'open_time': time goes back to"):
        read_dump(path)
    repeated = [fil_lines[1], fil_lines[2], fil_lines[2]]
    path = write_dump(tmp_path, "FILUSDT-1m-2026-03.zip", repeated)
    with pytest.raises(DataError, match=r"line 3: field 'open_time': time repeats"):
        read_dump(path, kind="klines")


def test_unknown_header_and_wrong_column_count_are_refused(
    tmp_path: Path, fil_lines: list[str]
) -> None:
    coin_m = KLINES_HEADER.replace("quote_volume", "base_volume")  # COIN-M's columns
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", [coin_m, *fil_lines[1:4]])
    with pytest.raises(DataError, match="line 1: unexpected header"):
        read_dump(path)
    path = write_dump(tmp_path, "FILUSDT-trades-2026-02.zip", fil_lines[1:4])
    with pytest.raises(DataError, match="line 1: 12 columns, but trades dumps have 6 or 7"):
        read_dump(path)


def test_a_short_line_is_named(tmp_path: Path, fil_lines: list[str]) -> None:
    lines = [*fil_lines[:4], fil_lines[4].rsplit(",", 2)[0], fil_lines[5]]
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", lines)
    with pytest.raises(DataError, match="line 5: expected 12 fields, got 10"):
        read_dump(path)


# --------------------------------------------------------------------------------------------
# Archives


def test_zip_must_hold_exactly_one_csv(tmp_path: Path, fil_lines: list[str]) -> None:
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", fil_lines[:5], extra={"notes.csv": "x\n"})
    with pytest.raises(DataError, match=r"expected exactly one CSV in the zip, found 2"):
        read_dump(path)
    other = tmp_path / "FILUSDT-1m-2026-03.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("FILUSDT-1m-2026-03.txt", "\n".join(fil_lines[:5]))
    with pytest.raises(DataError, match="is not a .csv file"):
        read_dump(other, verify=False)
    not_zip = tmp_path / "FILUSDT-1m-2026-04.zip"
    not_zip.write_text("\n".join(fil_lines[:5]))
    with pytest.raises(DataError, match="unreadable zip archive"):
        read_dump(not_zip, verify=False)
    with pytest.raises(DataError, match="cannot read the dump"):
        read_dump(tmp_path / "FILUSDT-1m-2026-05.zip", verify=False)


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", [KLINES_HEADER])
    with pytest.raises(DataError, match="no data rows"):
        read_dump(path)


def test_kind_and_symbol_must_agree_with_the_name(tmp_path: Path, fil_lines: list[str]) -> None:
    path = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", fil_lines[:5])
    with pytest.raises(DataError, match="kind 'trades' given but the file name says 'klines'"):
        read_dump(path, kind="trades")
    with pytest.raises(DataError, match="symbol 'DOTUSDT' given but the file name says 'FILUSDT'"):
        read_dump(path, symbol="DOTUSDT")
    renamed = write_dump(tmp_path, "fil-february.zip", fil_lines[:5])
    with pytest.raises(DataError, match="cannot tell the kind from the file name"):
        read_dump(renamed)
    assert read_dump(renamed, kind="klines", symbol="FILUSDT").num_rows == 4


# --------------------------------------------------------------------------------------------
# Trades and aggTrades


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_spot_trades_without_header(
    tmp_path: Path, spot_trades: list[tuple[int, int, str, str, bool]], unit: str
) -> None:
    lines = spot_trade_lines(spot_trades, us=unit == "us")
    table = read_dump(write_dump(tmp_path, "BTCUSDT-trades-2021-01-08.zip", lines))
    assert table.schema.equals(TRADES, check_metadata=True)
    assert table.num_rows == 2_001
    assert [v.value for v in table.column("ts")] == [t * MS for t, *_ in spot_trades]
    assert table.column("trade_id").to_pylist() == [tid for _, tid, *_ in spot_trades]
    assert table.column("price").to_pylist() == [float(p) for _, _, p, _, _ in spot_trades]
    assert table.column("qty").to_pylist() == [float(q) for *_, q, _ in spot_trades]
    assert table.column("is_buyer_maker").to_pylist() == [m for *_, m in spot_trades]
    # First real trade: id 553287559 at 00:00:00.278, 0.000263 BTC at 39,432.48, seller taker.
    assert table.slice(0, 1).to_pylist()[0]["trade_id"] == 553_287_559


def test_futures_trades_with_header(
    tmp_path: Path, futures_trades: list[tuple[int, int, str, str, bool]]
) -> None:
    lines = futures_trade_lines(futures_trades)
    table = read_dump(write_dump(tmp_path, "BTCUSDT-trades-2024-08-08.zip", lines))
    assert table.num_rows == 21_313
    assert [v.value for v in table.column("ts")] == [t * MS for t, *_ in futures_trades]
    assert table.column("trade_id").to_pylist() == [tid for _, tid, *_ in futures_trades]
    assert table.column("price").to_pylist() == [float(p) for _, _, p, _, _ in futures_trades]
    assert table.column("qty").to_pylist() == [float(q) for *_, q, _ in futures_trades]
    assert table.column("is_buyer_maker").to_pylist() == [m for *_, m in futures_trades]


def test_spot_agg_trades_without_header_keep_the_aggregate_id(
    tmp_path: Path, spot_agg_trades: list[dict[str, object]]
) -> None:
    lines = [
        f"{d['a']},{d['p']},{d['q']},{d['f']},{d['l']},{d['T']},{d['m']},{d['M']}"
        for d in spot_agg_trades
    ]
    table = read_dump(write_dump(tmp_path, "BTCUSDT-aggTrades-2021-10-22.zip", lines))
    assert table.schema.equals(TRADES, check_metadata=True)
    # trade_id is the aggregate id; first/last trade ids have no column in TRADES.
    assert table.column("trade_id").to_pylist() == [d["a"] for d in spot_agg_trades]
    assert table.column("price").to_pylist() == [float(str(d["p"])) for d in spot_agg_trades]
    assert table.column("qty").to_pylist() == [float(str(d["q"])) for d in spot_agg_trades]
    assert [v.value for v in table.column("ts")] == [int(str(d["T"])) * MS for d in spot_agg_trades]
    assert table.column("is_buyer_maker").to_pylist() == [d["m"] for d in spot_agg_trades]


def test_futures_agg_trades_with_header(
    tmp_path: Path, futures_agg_trades: list[dict[str, object]]
) -> None:
    lines = [AGG_HEADER] + [
        f"{d['a']},{d['p']},{d['q']},{d['f']},{d['l']},{d['T']},{str(d['m']).lower()}"
        for d in futures_agg_trades
    ]
    table = read_dump(write_dump(tmp_path, "SUSHIUSDT-aggTrades-2021-07-22.zip", lines))
    assert table.num_rows == 40
    # First one: agg id 87353230 covering trades 126902924..126902927, 297 SUSHI at 7.6120.
    assert table.slice(0, 1).to_pylist()[0]["trade_id"] == 87_353_230
    assert table.column("qty").to_pylist() == [float(str(d["q"])) for d in futures_agg_trades]
    assert [v.value for v in table.column("ts")] == [
        int(str(d["T"])) * MS for d in futures_agg_trades
    ]


def test_agg_trade_whose_last_id_precedes_its_first_is_refused(
    tmp_path: Path, futures_agg_trades: list[dict[str, object]]
) -> None:
    d = futures_agg_trades[0]
    lines = [AGG_HEADER, f"{d['a']},{d['p']},{d['q']},{d['l']},{d['f']},{d['T']},false"]
    path = write_dump(tmp_path, "SUSHIUSDT-aggTrades-2021-07-22.zip", lines)
    with pytest.raises(DataError, match="line 2: field 'last_trade_id': 126902924 is before"):
        read_dump(path)


def test_trades_may_share_a_millisecond_but_not_go_back(
    tmp_path: Path, spot_trades: list[tuple[int, int, str, str, bool]]
) -> None:
    lines = spot_trade_lines(spot_trades[:5])
    same = [lines[0], with_field(lines[1], 4, lines[0].split(",")[4]), *lines[2:]]
    assert read_dump(write_dump(tmp_path, "BTCUSDT-trades-2021-01-08.zip", same)).num_rows == 5
    back = [lines[0], lines[2], lines[1], *lines[3:]]
    path = write_dump(tmp_path, "BTCUSDT-trades-2021-01-09.zip", back)
    with pytest.raises(DataError, match=r"line 3: field 'time': time goes back to"):
        read_dump(path)


@pytest.mark.parametrize(
    ("index", "value", "field", "message"),
    [
        (1, "39432,48", "", "expected 7 fields, got 8"),
        (1, "n/a", "price", "'n/a' is not a number"),
        (2, "0", "qty", "0.0 is not a finite number > 0"),
        (5, "yes", "is_buyer_maker", "'yes' is not true or false"),
    ],
)
def test_bad_trade_field_names_the_line_and_field(
    tmp_path: Path,
    spot_trades: list[tuple[int, int, str, str, bool]],
    index: int,
    value: str,
    field: str,
    message: str,
) -> None:
    lines = spot_trade_lines(spot_trades[:5])  # no header: data row 2 is line 3
    lines[2] = with_field(lines[2], index, value)
    path = write_dump(tmp_path, "BTCUSDT-trades-2021-01-08.zip", lines)
    with pytest.raises(DataError) as err:
        read_dump(path)
    where = f"line 3: field {field!r}: " if field else "line 3: "
    assert str(err.value).startswith(f"{path}: {where}")
    assert message in str(err.value)


# --------------------------------------------------------------------------------------------
# Import into the store


def test_import_dumps_stores_bars_and_trades_that_read_back_as_the_source(
    tmp_path: Path,
    shared_data: Path,
    spot_trades: list[tuple[int, int, str, str, bool]],
    futures_agg_trades: list[dict[str, object]],
) -> None:
    months = {}
    for month in ("2023-08", "2023-09"):
        src = shared_data / FUTURES_KLINES / f"FILUSDT-1m-{month}.csv.gz"
        months[month] = gzip.decompress(src.read_bytes()).decode().splitlines()
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    paths = [
        # September first: the import sorts files by time.
        write_dump(dumps, "FILUSDT-1m-2023-09.zip", months["2023-09"]),
        write_dump(dumps, "FILUSDT-1m-2023-08.zip", months["2023-08"][1:]),  # spot-style
        write_dump(dumps, "BTCUSDT-trades-2021-01-08.zip", spot_trade_lines(spot_trades)),
        write_dump(
            dumps,
            "SUSHIUSDT-aggTrades-2021-07-22.zip",
            [AGG_HEADER]
            + [
                f"{d['a']},{d['p']},{d['q']},{d['f']},{d['l']},{d['T']},{str(d['m']).lower()}"
                for d in futures_agg_trades
            ],
        ),
    ]
    root = tmp_path / "store"
    written = import_dumps(paths, root)
    assert [p.relative_to(root).as_posix() for p in written] == [
        "bars/1m/FILUSDT/2023-08.parquet",
        "bars/1m/FILUSDT/2023-09.parquet",
        "trades/BTCUSDT/2021-01-08.parquet",
        "trades/SUSHIUSDT/2021-07-22.parquet",
    ]

    source = kline_source(months["2023-08"] + months["2023-09"])
    assert source["ts"].size == 44_640 + 43_200
    chunks = list(BarCursor(root, "1m", "FILUSDT", int(source["ts"][0]), int(source["ts"][-1]) + 1))
    for name, expected in source.items():
        got = np.concatenate([getattr(c, name) for c in chunks])
        np.testing.assert_array_equal(got, expected, err_msg=name)

    trades = read_ticks(root, "trades", "BTCUSDT")
    assert [v.value for v in trades.column("ts")] == [t * MS for t, *_ in spot_trades]
    assert trades.column("trade_id").to_pylist() == [tid for _, tid, *_ in spot_trades]
    assert trades.column("price").to_pylist() == [float(p) for _, _, p, _, _ in spot_trades]
    assert trades.column("qty").to_pylist() == [float(q) for *_, q, _ in spot_trades]
    agg = read_ticks(root, "trades", "SUSHIUSDT")
    assert agg.column("trade_id").to_pylist() == [d["a"] for d in futures_agg_trades]

    # Importing the same dumps again leaves the same files, byte for byte.
    before = {p: p.read_bytes() for p in written}
    assert import_dumps(paths, root) == written
    assert {p: p.read_bytes() for p in written} == before


def test_import_refuses_overlapping_dumps_and_writes_nothing(
    tmp_path: Path, fil_lines: list[str]
) -> None:
    monthly = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", fil_lines)
    daily = write_dump(tmp_path, "FILUSDT-1m-2026-02-01.zip", fil_lines[:1441])  # its first day
    root = tmp_path / "store"
    with pytest.raises(
        DataError, match=r"FILUSDT-1m-2026-02\.zip: its data .* overlaps .*-01\.zip"
    ):
        import_dumps([daily, monthly], root)
    assert not root.exists()


def test_import_refuses_a_bad_file_before_writing_the_good_ones(
    tmp_path: Path, fil_lines: list[str]
) -> None:
    good = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", fil_lines)
    bad = write_dump(tmp_path, "DOTUSDT-1m-2026-02.zip", fil_lines[:3], checksum=False)
    root = tmp_path / "store"
    with pytest.raises(DataError, match="DOTUSDT-1m-2026-02.zip.CHECKSUM not found"):
        import_dumps([good, bad], root)
    assert not root.exists()


def test_import_refuses_trades_and_agg_trades_of_one_symbol(tmp_path: Path) -> None:
    trades = tmp_path / "BTCUSDT-trades-2024-01-01.zip"
    agg = tmp_path / "BTCUSDT-aggTrades-2024-01-02.zip"
    with pytest.raises(DataError, match="aggTrades of BTCUSDT cannot be stored with the trades"):
        import_dumps([trades, agg], tmp_path / "store")


def test_import_refuses_monthly_bars_and_unnamed_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="interval '1mo' cannot be stored"):
        import_dumps([tmp_path / "BTCUSDT-1mo-2024-01.zip"], tmp_path / "store")
    with pytest.raises(DataError, match="cannot tell the kind from the file name"):
        import_dumps([tmp_path / "btc.zip"], tmp_path / "store")
    with pytest.raises(DataError, match="no input files"):
        import_dumps([], tmp_path / "store")


def test_the_cli_imports_dumps_and_refuses_a_bad_checksum(
    fil_lines: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tickray.cluster.cli import main
    from tickray.feeds.store import data_range

    month = write_dump(tmp_path, "FILUSDT-1m-2026-02.zip", fil_lines)
    assert main(["import-dumps", str(month), "--out", str(tmp_path / "store")]) == 0
    first, last = data_range(tmp_path / "store", "1m", "FILUSDT")
    assert (first, last) == (
        int(fil_lines[1].split(",")[0]) * 1_000_000,
        int(fil_lines[-1].split(",")[0]) * 1_000_000,
    )
    capsys.readouterr()
    write_checksum(month, "0" * 64)
    assert main(["import-dumps", str(month), "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tickray: error:") and "FILUSDT-1m-2026-02.zip" in err
    assert not (tmp_path / "other").exists()
