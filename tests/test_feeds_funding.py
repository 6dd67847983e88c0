"""Funding-rate records (feeds.funding) from the real files and hand-built bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickray.engine.clock import HOUR, parse_time
from tickray.feeds.funding import check_coverage, read_funding_csv
from tickray.feeds.schemas import DataError, ts_numpy


@pytest.mark.realdata
def test_binance_usdm_funding_file(shared_data: Path) -> None:
    t = read_funding_csv(
        shared_data / "crypto" / "funding" / "binance_usdm_BTCUSDT_fundingRate.csv", "BTCUSDT"
    )
    assert t.num_rows == 200
    ts = ts_numpy(t["ts"])
    assert ts[0] == 1768233600000 * 1_000_000  # 2026-01-12 16:00 UTC
    steps = (ts[1:] - ts[:-1]) // 1_000_000
    assert ((steps >= 8 * 3600 * 1000 - 20) & (steps <= 8 * 3600 * 1000 + 20)).all()  # ms jitter
    rates = t["funding_rate"].to_pylist()
    assert min(rates) == pytest.approx(-0.00015178) and max(rates) == pytest.approx(0.0001)
    check_coverage(ts, parse_time("2026-01-13"), parse_time("2026-03-19"))
    with pytest.raises(DataError, match="does not cover the run: the first record"):
        check_coverage(ts, parse_time("2026-01-01"), parse_time("2026-02-01"))
    with pytest.raises(DataError, match="does not cover the run: the last record"):
        check_coverage(ts, parse_time("2026-03-01"), parse_time("2026-04-01"))


@pytest.mark.realdata
def test_lean_funding_file_and_its_gap(shared_data: Path) -> None:
    t = read_funding_csv(
        shared_data / "crypto" / "funding" / "binance_coinm_BTCUSD_funding_lean.csv"
    )
    assert t.num_rows == 12
    ts = ts_numpy(t["ts"])
    assert ts[0] == parse_time("2020-12-29")
    check_coverage(ts, parse_time("2020-12-29"), parse_time("2020-12-31T20:00:00"))
    with pytest.raises(DataError, match="gap from 2020-12-31T16:00:00"):
        check_coverage(ts, parse_time("2020-12-29"), parse_time("2022-12-13T16:00:00"))


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "f.csv"
    p.write_text(text)
    return p


def test_rest_layout_with_mark_price(tmp_path: Path) -> None:
    p = _write(
        tmp_path, "fundingTime,fundingRate,markPrice\n0,0.0001,60000.5\n28800000,-0.0002,61000\n"
    )
    t = read_funding_csv(p)
    assert t["mark_price"].to_pylist() == [60000.5, 61000.0]
    assert ts_numpy(t["ts"]).tolist() == [0, 8 * HOUR]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "timestamp,symbol,funding_rate\n0,BTCUSDT,abc\n",
            "line 2: funding rate 'abc' is not a number",
        ),
        ("timestamp,symbol,funding_rate\n0,BTCUSDT,0.5\n", "line 2: funding rate 0.5 is beyond"),
        ("timestamp,symbol,funding_rate\n0,ETHUSDT,0.0001\n", "line 2: symbol 'ETHUSDT', expected"),
        (
            "timestamp,symbol,funding_rate\n10,BTCUSDT,0.0\n10,BTCUSDT,0.0\n",
            "funding times must increase",
        ),
        ("timestamp,symbol\n0,BTCUSDT\n", "no funding_rate or fundingRate column"),
        ("2020-12-29,0.0001\n", "line 1: bad time"),
        ("", "no funding records"),
    ],
)
def test_bad_funding_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_funding_csv(_write(tmp_path, text), "BTCUSDT")
