"""Canonical schemas: conform() casting, ordering and the error messages it gives."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tickray.feeds.schemas import (
    BARS,
    SCHEMAS,
    TS_TYPE,
    DataError,
    conform,
    format_ts,
    interval_ns,
    interval_text,
)

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
MIN = 60 * 10**9


def _bars_dict(n: int = 5) -> dict[str, object]:
    ts = T0 + np.arange(n, dtype=np.int64) * MIN
    px = 100.0 + np.arange(n, dtype=np.float64)
    return {
        "ts": pa.array(ts, type=pa.int64()).cast(TS_TYPE),
        "open": px,
        "high": px + 1,
        "low": px - 1,
        "close": px + 0.5,
        "volume": np.ones(n),
    }


def test_every_schema_carries_kind_and_version_metadata() -> None:
    for kind, schema in SCHEMAS.items():
        assert schema.metadata[b"tickray.kind"] == kind.encode()
        assert schema.metadata[b"tickray.schema_version"] == b"1"
        assert schema.field("ts").type == pa.timestamp("ns", tz="UTC")
        assert not schema.field("ts").nullable


def test_conform_orders_casts_and_adds_missing_nullable_columns() -> None:
    cols = _bars_dict()
    cols["volume"] = pa.array([1, 2, 3, 4, 5], type=pa.int32())  # cast to float64
    table = pa.table({k: cols[k] for k in ("close", "volume", "ts", "low", "open", "high")})
    out = conform(table, "bars", "test")
    assert out.schema.equals(BARS, check_metadata=True)
    assert out.column("quote_volume").null_count == 5
    assert out.column("trade_count").type == pa.int64()
    assert out.column("volume").to_pylist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_conform_reads_naive_and_integer_ts_as_utc_ns() -> None:
    cols = _bars_dict(2)
    naive = pa.array(np.array([T0, T0 + MIN], dtype="datetime64[ns]"))
    ints = pa.array([T0, T0 + MIN], type=pa.int64())
    for ts in (naive, ints):
        cols["ts"] = ts
        out = conform(pa.table(cols), "bars", "test")
        assert out.column("ts").type == TS_TYPE
        assert out.column("ts")[0].value == T0


def test_conform_missing_required_column_names_source_column_and_kind() -> None:
    cols = _bars_dict()
    del cols["close"]
    with pytest.raises(DataError, match=r"^src\.csv: missing column 'close' for bars$"):
        conform(pa.table(cols), "bars", "src.csv")


def test_conform_duplicate_timestamp_reports_row_and_ts() -> None:
    cols = _bars_dict()
    ts = T0 + np.array([0, 1, 2, 2, 3], dtype=np.int64) * MIN
    cols["ts"] = pa.array(ts, type=pa.int64()).cast(TS_TYPE)
    with pytest.raises(
        DataError, match=r"f\.csv: bars row 3: duplicate timestamp 2024-01-01T00:02:00Z"
    ):
        conform(pa.table(cols), "bars", "f.csv")


def test_conform_non_monotonic_timestamp_reports_row_and_ts() -> None:
    cols = _bars_dict()
    ts = T0 + np.array([0, 1, 3, 2, 4], dtype=np.int64) * MIN
    cols["ts"] = pa.array(ts, type=pa.int64()).cast(TS_TYPE)
    with pytest.raises(
        DataError, match=r"bars row 3: non-monotonic timestamp 2024-01-01T00:02:00Z"
    ):
        conform(pa.table(cols), "bars", "f.csv")


def test_conform_allows_equal_timestamps_for_trades_but_not_going_back() -> None:
    ts = pa.array([T0, T0, T0 + 1], type=pa.int64())
    trades = {
        "ts": ts,
        "trade_id": [1, 2, 3],
        "price": [1.0, 1.0, 1.1],
        "qty": [1.0, 2.0, 3.0],
        "is_buyer_maker": [True, False, True],
    }
    assert conform(pa.table(trades), "trades", "t").num_rows == 3
    trades["ts"] = pa.array([T0, T0 + 2, T0 + 1], type=pa.int64())
    with pytest.raises(DataError, match="trades row 2: non-monotonic timestamp"):
        conform(pa.table(trades), "trades", "t")


def test_conform_nan_close_names_column_and_first_bad_ts() -> None:
    cols = _bars_dict()
    close = np.array(cols["close"], dtype=np.float64)
    close[2] = np.nan
    close[4] = np.inf
    cols["close"] = close
    with pytest.raises(
        DataError, match=r"x: non-finite 'close' \(nan\) at bars row 2 \(ts 2024-01-01T00:02:00Z\)"
    ):
        conform(pa.table(cols), "bars", "x")


def test_conform_null_in_required_column_is_rejected() -> None:
    cols = _bars_dict(3)
    cols["open"] = pa.array([1.0, None, 2.0])
    with pytest.raises(DataError, match=r"null 'open' at bars row 1 \(ts 2024-01-01T00:01:00Z\)"):
        conform(pa.table(cols), "bars", "x")


def test_conform_failed_cast_names_column() -> None:
    cols = _bars_dict(2)
    cols["volume"] = pa.array(["1.0", "abc"])
    with pytest.raises(DataError, match=r"x: column 'volume' of type string cannot be cast"):
        conform(pa.table(cols), "bars", "x")


def test_conform_unknown_kind() -> None:
    with pytest.raises(DataError, match="unknown data kind 'candles'"):
        conform(pa.table(_bars_dict()), "candles", "x")


def test_conform_depth_updates_and_funding_fill_nullable_columns() -> None:
    depth = {
        "ts": pa.array([T0, T0], type=pa.int64()),
        "first_update_id": [1, 1],
        "last_update_id": [3, 3],
        "side": [1, -1],
        "price": [100.0, 101.0],
        "qty": [0.0, 2.0],
        "is_snapshot": [False, False],
    }
    out = conform(pa.table(depth), "depth_updates", "d")
    assert out.column("side").type == pa.int8()
    assert out.column("prev_last_update_id").null_count == 2
    funding = conform(pa.table({"ts": pa.array([T0], type=pa.int64())}), "funding", "f")
    assert funding.column_names == ["ts", "funding_rate", "mark_price", "index_price"]


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1s", 10**9),
        ("1m", 60 * 10**9),
        ("3m", 180 * 10**9),
        ("15m", 900 * 10**9),
        ("1h", 3600 * 10**9),
        ("12h", 12 * 3600 * 10**9),
        ("1d", 86400 * 10**9),
        ("1w", 7 * 86400 * 10**9),
        ("90s", 90 * 10**9),
    ],
)
def test_interval_ns_parses_counts_and_units(text: str, ns: int) -> None:
    assert interval_ns(text) == ns


@pytest.mark.parametrize("text", ["", "m", "0m", "1M", "1 m", "1.5h", "01m", "1y", "-1m"])
def test_interval_ns_rejects_anything_else(text: str) -> None:
    with pytest.raises(DataError, match="bad interval"):
        interval_ns(text)


def test_interval_text_round_trips() -> None:
    for text in ("1s", "1m", "5m", "1h", "4h", "1d", "1w", "90s"):
        assert interval_text(interval_ns(text)) == text


def test_format_ts_is_iso_utc_with_optional_fraction() -> None:
    assert format_ts(T0) == "2024-01-01T00:00:00Z"
    assert format_ts(T0 + 1_500_000) == "2024-01-01T00:00:00.0015Z"
