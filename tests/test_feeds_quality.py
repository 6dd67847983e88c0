"""Bar quality checks, the scored report and the gap policies (feeds.quality).

Hand-made series: ``_series`` builds N one-minute bars from given log returns (open = previous
close, high/low 0.05 beyond the body, volume 1 + i % 7), so every bar passes every check; each
test plants one defect at known rows and expects exactly those rows to be flagged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.feeds.binance import convert_klines, read_klines_csv
from tickray.feeds.quality import (
    MAX_STALE_RUN,
    MAX_ZERO_VOLUME_RUN,
    Check,
    Gap,
    GapPolicy,
    QualityReport,
    Run,
    apply_gap_policy,
    check_bars,
    check_symbol,
    format_report,
    load_report,
)
from tickray.feeds.schemas import BARS, TS_TYPE, DataError, ts_numpy
from tickray.feeds.store import write_bars
from tickray.feeds.synthetic import generate_bars

MIN = 60 * 10**9
T0 = int(np.datetime64("2024-01-01T00:00", "ns").astype(np.int64))
N = 200
Arrays = dict[str, np.ndarray]


def _series(
    n: int = N, returns: np.ndarray | None = None, start: int = T0, iv: int = MIN
) -> Arrays:
    """n clean bars; log returns default to a seeded normal with sd 0.001."""
    if returns is None:
        returns = np.random.default_rng(5).normal(0.0, 0.001, n)
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([100.0], close[:-1]))
    return {
        "ts": start + np.arange(n, dtype=np.int64) * iv,
        "open": open_,
        "high": np.maximum(open_, close) + 0.05,
        "low": np.minimum(open_, close) - 0.05,
        "close": close,
        "volume": 1.0 + np.arange(n) % 7,
    }


def _table(a: Arrays) -> pa.Table:
    """A raw (not conformed) table: defects such as duplicates stay in."""
    cols: dict[str, Any] = {k: v for k, v in a.items() if k != "ts"}
    return pa.table({"ts": pa.array(a["ts"], type=pa.int64()).cast(TS_TYPE), **cols})


def _rows(a: Arrays, index: list[int] | np.ndarray) -> Arrays:
    return {k: v[np.asarray(index, dtype=np.int64)] for k, v in a.items()}


def _without(a: Arrays, rows: list[int]) -> Arrays:
    return _rows(a, np.setdiff1d(np.arange(a["ts"].size), rows))


def _flagged(rep: QualityReport) -> dict[str, int]:
    return {k: f.count for k, f in rep.findings.items() if f.count}


TS = _series()["ts"]


# --------------------------------------------------------------------------------------------
# Each check finds exactly the planted rows


def _plant_ohlc(a: Arrays) -> Arrays:
    a["high"][10] = min(a["open"][10], a["close"][10]) - 0.01  # high < max(open, close)
    a["low"][20] = max(a["open"][20], a["close"][20]) + 0.01  # low > min(open, close)
    return a


def _plant_bad_price(a: Arrays) -> Arrays:
    a["low"][15] = 0.0
    a["low"][40] = -2.0  # below the body, so OHLC order still holds
    a["low"][60] = np.nan  # NaN compares false: only the price check sees it
    return a


def _plant_bad_volume(a: Arrays) -> Arrays:
    a["volume"][5] = -1.0
    a["volume"][6] = np.inf
    return a


def _plant_duplicate(a: Arrays) -> Arrays:
    return _rows(a, [*range(51), 50, *range(51, N)])  # row 50 repeated right after itself


def _plant_non_monotonic(a: Arrays) -> Arrays:
    return _rows(a, [*range(70), 71, 72, 70, *range(73, N)])  # row 70 arrives two rows late


def _plant_off_grid(a: Arrays) -> Arrays:
    a = _rows(a, [*range(81), 80, *range(81, N)])
    a["ts"][81] += 30 * 10**9  # an extra bar at 01:20:30, between two full grid bars
    return a


def _plant_outlier(a: Arrays) -> Arrays:
    r = np.random.default_rng(5).normal(0.0, 0.001, N)
    r[120] = np.log(1.5)  # a level shift: one return of 40.5 %, ~600 robust sd
    return _series(returns=r)


def _plant_zero_volume_run(a: Arrays) -> Arrays:
    a["volume"][30 : 31 + MAX_ZERO_VOLUME_RUN] = 0.0  # 31 bars: one longer than allowed
    a["volume"][100:103] = 0.0  # 3 bars: a short quiet spell, not flagged
    return a


def _plant_stale(a: Arrays) -> Arrays:
    s = slice(130, 131 + MAX_STALE_RUN)  # 31 bars of one unchanged price, with volume
    for col in ("open", "high", "low", "close"):
        a[col][s] = a["close"][129]
    return a


PLANTED: dict[str, tuple[Callable[[Arrays], Arrays], Check, tuple[int, ...]]] = {
    "ohlc": (_plant_ohlc, Check.OHLC, (TS[10], TS[20])),
    "bad_price": (_plant_bad_price, Check.BAD_PRICE, (TS[15], TS[40], TS[60])),
    "bad_volume": (_plant_bad_volume, Check.BAD_VOLUME, (TS[5], TS[6])),
    "duplicate": (_plant_duplicate, Check.DUPLICATE_TS, (TS[50],)),
    "non_monotonic": (_plant_non_monotonic, Check.NON_MONOTONIC, (TS[70],)),
    "off_grid": (_plant_off_grid, Check.OFF_GRID, (TS[80] + 30 * 10**9,)),
    "outlier": (_plant_outlier, Check.OUTLIER, (TS[120],)),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_each_check_finds_exactly_the_planted_rows(name: str) -> None:
    plant, check, expected = PLANTED[name]
    rep = check_bars(_table(plant(_series())), MIN, symbol="TESTUSDT")
    assert _flagged(rep) == {check.value: len(expected)}
    assert rep.examples(check) == tuple(int(t) for t in expected)
    assert rep.gaps == ()
    assert rep.score < 1.0


def test_clean_hand_made_series_has_no_findings_and_scores_one() -> None:
    rep = check_bars(_table(_series()), MIN, symbol="TESTUSDT")
    assert rep.clean and rep.score == 1.0
    assert (rep.rows, rep.expected_bars, rep.first_ts, rep.last_ts) == (N, N, TS[0], TS[-1])
    assert rep.recommendations() == []


def test_zero_volume_run_longer_than_the_limit_is_flagged_and_short_ones_only_counted() -> None:
    rep = check_bars(_table(_plant_zero_volume_run(_series())), MIN, symbol="TESTUSDT")
    assert _flagged(rep) == {"zero_volume_run": 31}
    assert rep.zero_volume_runs == (Run(int(TS[30]), int(TS[60]), 31),)
    assert rep.zero_volume_bars == 31 + 3
    assert rep.examples(Check.ZERO_VOLUME_RUN) == tuple(int(t) for t in TS[30:35])


def test_run_of_identical_ohlc_is_a_stale_price() -> None:
    rep = check_bars(_table(_plant_stale(_series())), MIN, symbol="TESTUSDT")
    assert _flagged(rep) == {"stale_price": 31}
    assert rep.stale_runs == (Run(int(TS[130]), int(TS[160]), 31),)
    # One bar fewer is within the limit.
    rep = check_bars(_table(_plant_stale(_series())), MIN, symbol="T", max_stale_run=31)
    assert rep.clean


def test_gaps_list_first_and_last_missing_bar_and_count() -> None:
    rep = check_bars(_table(_without(_series(), [*range(100, 105), 150])), MIN, symbol="T")
    assert rep.gaps == (Gap(int(TS[100]), int(TS[104]), 5), Gap(int(TS[150]), int(TS[150]), 1))
    assert (rep.missing_bars, rep.expected_bars, rep.rows) == (6, N, N - 6)
    assert _flagged(rep) == {}
    # Score: 1 - 0.5 * missing fraction = 1 - 0.5 * 6 / 200 = 0.985.
    assert rep.score == pytest.approx(0.985)
    assert any("2 gaps totalling 6 bars" in r and "ffill" in r for r in rep.recommendations())


def test_one_bar_spike_flags_the_jump_in_and_the_jump_back() -> None:
    a = _series()
    a["close"][90] *= 1.05
    a["high"][90] = a["close"][90] + 0.05
    a["open"][91] = a["close"][90]
    a["high"][91] = a["open"][91] + 0.05
    rep = check_bars(_table(a), MIN, symbol="T")
    assert _flagged(rep) == {"outlier": 2}
    assert rep.examples(Check.OUTLIER) == (TS[90], TS[91])


def test_outliers_on_a_coarse_tick_use_the_mean_deviation_when_mad_is_zero() -> None:
    # 70 % of the returns are exactly zero (MAD 0); the rest are +-1 tick of 0.01 on 10.00.
    rng = np.random.default_rng(9)
    ticks = np.cumsum(np.where(rng.random(N) < 0.3, rng.choice([-1, 1], N), 0)) + 1000
    ticks[150:] += 40  # one jump of 40 ticks (0.4 %): about 100 scale units
    close = ticks / 100.0
    a = _series()
    a["close"], a["open"] = close, np.concatenate(([close[0]], close[:-1]))
    a["high"], a["low"] = np.maximum(a["open"], close), np.minimum(a["open"], close)
    rep = check_bars(_table(a), MIN, symbol="T", max_stale_run=N)
    assert _flagged(rep) == {"outlier": 1}
    assert rep.examples(Check.OUTLIER) == (TS[150],)


def test_score_weights_bad_bars_fully() -> None:
    # 2 OHLC rows of 200: 1 - 1.0 * 2 / 200 = 0.99.
    rep = check_bars(_table(_plant_ohlc(_series())), MIN, symbol="T")
    assert rep.score == pytest.approx(0.99)


def test_empty_input_scores_zero() -> None:
    rep = check_bars(BARS.empty_table(), MIN, symbol="T")
    assert (rep.rows, rep.score, rep.gaps, rep.first_ts) == (0, 0.0, (), None)
    assert "no bars" in format_report(rep)


def test_arrays_and_tables_give_the_same_report() -> None:
    a = _plant_bad_price(_series())
    assert check_bars(a, MIN, symbol="T") == check_bars(_table(a), MIN, symbol="T")


def test_replay_chunks_and_sub_second_intervals_are_accepted(small_universe: Path) -> None:
    from tickray.feeds.replay import BarCursor

    chunk = BarCursor(small_universe, "1m", "AAAUSDT", 0, 2**62).next_chunk()
    assert chunk is not None
    assert check_bars(chunk, MIN, symbol="AAAUSDT").rows == chunk.n_rows
    rep = check_bars(_series(30, iv=250_000_000), 250_000_000, symbol="T")
    assert rep.clean and "T 250000000ns: score 1.0000" in rep.summary()


def test_clean_synthetic_series_scores_high_with_only_rare_outliers() -> None:
    # Asserted: no gaps and no finding of any check but `outlier`; outliers (real fat-tail
    # moves of the Student-t model) at most 2 per 10,000 bars; score >= 0.99.
    n = 20 * 1440
    for sym, table in generate_bars(["AAAUSDT", "BBBUSDT", "CCCUSDT"], T0, n, seed=7).items():
        rep = check_bars(table, MIN, symbol=sym)
        assert rep.gaps == () and rep.rows == n
        assert set(_flagged(rep)) <= {"outlier"}
        assert rep.count(Check.OUTLIER) <= 2 * n / 10_000
        assert rep.score >= 0.99


# --------------------------------------------------------------------------------------------
# Real data: the 11 Binance USD-M months are clean (shared/data/README.md, section 1)

KLINES = "crypto/klines_1m/binance_usdm_futures"
README_FIGURES = {  # file: (rows, zero-volume bars)
    "ALGOUSDT-1m-2026-02.csv.gz": (40_320, 22),
    "AVAXUSDT-1m-2026-02.csv.gz": (40_320, 0),
    "DOTUSDT-1m-2026-02.csv.gz": (40_320, 0),
    "FILUSDT-1m-2026-02.csv.gz": (40_320, 0),
    "LINKUSDT-1m-2026-02.csv.gz": (40_320, 0),
    "LTCUSDT-1m-2026-02.csv.gz": (40_320, 0),
    "NEARUSDT-1m-2026-02.csv.gz": (40_320, 0),
    "FILUSDT-1m-2023-08.csv.gz": (44_640, 11),
    "FILUSDT-1m-2023-09.csv.gz": (43_200, 41),
    "FILUSDT-1m-2023-10.csv.gz": (44_640, 24),
    "FILUSDT-1m-2023-11.csv.gz": (43_200, 3),
}
INVALID = (Check.OHLC, Check.BAD_PRICE, Check.BAD_VOLUME, Check.DUPLICATE_TS)


@pytest.mark.parametrize("name", sorted(README_FIGURES))
def test_binance_month_agrees_with_the_readme(shared_data: Path, name: str) -> None:
    rows, zero_volume = README_FIGURES[name]
    rep = check_bars(read_klines_csv(shared_data / KLINES / name), MIN, symbol=name.split("-")[0])
    assert (rep.rows, rep.expected_bars, rep.gaps) == (rows, rows, ())
    assert all(rep.count(c) == 0 for c in (*INVALID, Check.NON_MONOTONIC, Check.OFF_GRID))
    assert rep.zero_volume_bars == zero_volume
    assert rep.zero_volume_runs == () and rep.stale_runs == ()  # longest quiet run: 19 bars
    assert rep.score >= 0.999


def test_check_symbol_streams_stored_months_and_finds_no_gap_between_them(
    shared_data: Path, tmp_path: Path
) -> None:
    files = [shared_data / KLINES / f"FILUSDT-1m-2023-{m:02d}.csv.gz" for m in (8, 9, 10, 11)]
    assert len(convert_klines(files, tmp_path, "FILUSDT", "1m")) == 4
    rep = check_symbol(tmp_path, "1m", "FILUSDT")
    # README: the four months join with no gap, 175,680 bars; 11 + 41 + 24 + 3 zero-volume bars.
    assert (rep.rows, rep.expected_bars, rep.gaps) == (175_680, 175_680, ())
    assert rep.zero_volume_bars == 79
    assert all(rep.count(c) == 0 for c in INVALID)


def test_check_symbol_reports_gaps_across_month_files(tmp_path: Path) -> None:
    # Bars 2024-01-31 23:50 .. 2024-02-01 00:09 minus 23:58 .. 00:01 (4 bars across the files).
    start = int(np.datetime64("2024-01-31T23:50", "ns").astype(np.int64))
    a = _series(20, start=start)
    write_bars(tmp_path, "GAPUSDT", "1m", _table(_without(a, [8, 9, 10, 11])))
    rep = check_symbol(tmp_path, "1m", "GAPUSDT")
    assert rep.gaps == (Gap(int(a["ts"][8]), int(a["ts"][11]), 4),)
    assert rep.rows == 16


# --------------------------------------------------------------------------------------------
# Property: the gap list reconstructs exactly the removed bars


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(3, 400),
    data=st.data(),
    iv=st.sampled_from([10**9, MIN, 3600 * 10**9, 86_400 * 10**9]),
    phase=st.integers(0, 10**12),
)
def test_gap_list_reconstructs_the_removed_timestamps(
    n: int, data: st.DataObject, iv: int, phase: int
) -> None:
    removed = sorted(data.draw(st.sets(st.integers(1, n - 2), max_size=n - 2)))
    a = _series(n, start=T0 + phase, iv=iv)
    rep = check_bars(_without(a, removed), iv, symbol="T")
    rebuilt = [t for g in rep.gaps for t in range(g.start_ns, g.end_ns + iv, iv)]
    assert rebuilt == a["ts"][removed].tolist()
    assert rep.missing_bars == len(removed) and rep.expected_bars == n
    assert rep.count(Check.OFF_GRID) == 0


# --------------------------------------------------------------------------------------------
# Gap policies


def _column(t: pa.Table, name: str) -> np.ndarray:
    return np.asarray(t.column(name).to_numpy(zero_copy_only=False))


def test_ffill_inserts_flat_bars_at_the_previous_close_with_zero_volume() -> None:
    a = _series(20)
    res = apply_gap_policy(_table(_without(a, [5, 6, 7, 12])), MIN, "ffill")
    out = res.table
    assert out.schema == BARS and (res.filled, res.dropped) == (4, 0)
    assert ts_numpy(out.column("ts")).tolist() == a["ts"].tolist()
    for row, prev in ((5, 4), (6, 4), (7, 4), (12, 11)):
        for col in ("open", "high", "low", "close"):
            assert _column(out, col)[row] == a["close"][prev]
        assert _column(out, "volume")[row] == 0.0
    assert out.column("quote_volume").null_count == 20  # the input had no quote volume
    assert check_bars(out, MIN, symbol="T").gaps == ()


def test_interpolate_puts_closes_on_the_line_between_the_neighbours() -> None:
    a = _series(20)
    t = _table(_without(a, [5, 6, 7])).append_column("quote_volume", pa.array(np.ones(17)))
    res = apply_gap_policy(t, MIN, GapPolicy.INTERPOLATE)
    out = res.table
    assert res.filled == 3 and check_bars(out, MIN, symbol="T").gaps == ()
    c0, c1 = a["close"][4], a["close"][8]
    # Three missing bars: closes at 1/4, 2/4 and 3/4 of the way from c0 to c1.
    closes = [c0 + (c1 - c0) * j / 4 for j in (1, 2, 3)]
    np.testing.assert_allclose(_column(out, "close")[5:8], closes, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_column(out, "open")[5:8], [c0, *closes[:2]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(_column(out, "high")[5:8], np.maximum([c0, *closes[:2]], closes))
    assert _column(out, "volume")[5:8].tolist() == [0.0] * 3
    assert _column(out, "quote_volume")[5:8].tolist() == [0.0] * 3


def test_drop_removes_exactly_the_bad_rows_and_sorts() -> None:
    a = _series(30)
    a["high"][3] = a["low"][3] - 1.0  # invalid OHLC
    a["low"][7] = 0.0  # non-positive price
    a["volume"][12] = -5.0  # negative volume
    order = [*range(11), 10, *range(11, 20), 21, 20, *range(22, 30)]  # dup of 10; 20/21 swapped
    b = _rows(a, order)
    b["ts"] = b["ts"].copy()
    res = apply_gap_policy(_table(b), MIN, "drop")
    keep = [i for i in range(30) if i not in (3, 7, 12)]
    assert ts_numpy(res.table.column("ts")).tolist() == a["ts"][keep].tolist()
    assert _column(res.table, "close").tolist() == a["close"][keep].tolist()
    assert (res.dropped, res.filled) == (4, 0)
    assert res.report.count(Check.DUPLICATE_TS) == 1
    assert res.report.count(Check.NON_MONOTONIC) == 1


def test_drop_keeps_a_good_duplicate_when_the_first_copy_is_bad() -> None:
    a = _rows(_series(10), [*range(5), 4, *range(5, 10)])
    a["close"] = a["close"].copy()
    a["close"][4] = -1.0  # the first row at ts[4] is bad; its duplicate is fine
    res = apply_gap_policy(_table(a), MIN, "drop")
    assert res.table.num_rows == 10 and res.dropped == 1
    assert _column(res.table, "close")[4] == a["close"][5]


def test_fail_raises_below_the_minimum_score_naming_symbol_and_score() -> None:
    a = _series(20)
    a["low"][:4] = 0.0  # 4 bad bars of 20: score 1 - 4 / 20 = 0.8
    with pytest.raises(DataError, match=r"BADUSDT: bar quality score 0\.8000 is below .*0\.9"):
        apply_gap_policy(_table(a), MIN, "fail", symbol="BADUSDT", min_score=0.9)
    res = apply_gap_policy(_table(a), MIN, "fail", symbol="BADUSDT", min_score=0.75)
    assert res.table.num_rows == 20 and res.report.score == pytest.approx(0.8)


def test_report_leaves_rows_unchanged_and_cannot_conform_duplicates() -> None:
    a = _without(_series(20), [9])
    res = apply_gap_policy(_table(a), MIN, "report")
    assert res.table.schema == BARS and res.table.num_rows == 19
    assert len(res.report.gaps) == 1
    with pytest.raises(DataError, match="duplicate timestamp"):
        apply_gap_policy(_table(_plant_duplicate(_series())), MIN, "report")


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="'smooth'"):
        apply_gap_policy(_table(_series(5)), MIN, "smooth")


# --------------------------------------------------------------------------------------------
# JSON, save and text


def _messy_report() -> QualityReport:
    a = _plant_ohlc(_plant_zero_volume_run(_series()))
    return check_bars(_table(_without(a, [100, 101, 150])), MIN, symbol="MESSUSDT")


def test_report_round_trips_through_json() -> None:
    rep = _messy_report()
    text = json.dumps(rep.as_dict())
    back = QualityReport.from_dict(json.loads(text))
    assert back == rep
    assert json.loads(text)["first"] == "2024-01-01T00:00:00Z"


def test_save_writes_quality_interval_symbol_json(tmp_path: Path) -> None:
    rep = _messy_report()
    path = rep.save(tmp_path, "1m", "MESSUSDT")
    assert path == tmp_path / "quality" / "1m" / "MESSUSDT.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["MESSUSDT.json"]  # no temp left
    assert load_report(tmp_path, "1m", "MESSUSDT") == rep
    with pytest.raises(DataError, match="bad symbol"):
        rep.save(tmp_path, "1m", "bad/symbol")


def test_format_report_lists_findings_gaps_and_advice() -> None:
    text = format_report(_messy_report())
    assert text.startswith("MESSUSDT 1m: 197 bars, 2024-01-01T00:00:00Z .. 2024-01-01T03:19:00Z")
    assert "ohlc" in text and "2024-01-01T00:10:00Z" in text
    assert "gap 2024-01-01T01:40:00Z .. 2024-01-01T01:41:00Z: 2 bars" in text
    assert "2 gaps totalling 3 bars" in text
    assert "'drop'" in text and "zero volume" in text


def test_the_cli_checks_a_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tickray.cluster.cli import main
    from tickray.feeds.store import write_bars
    from tickray.feeds.synthetic import generate_bars

    start = int(np.datetime64("2024-01-01", "ns").astype(np.int64))
    for sym, table in generate_bars(["AAAUSDT"], start, 600, seed=1).items():
        keep = np.ones(table.num_rows, dtype=bool)
        keep[100:110] = False  # a 10-bar gap
        write_bars(tmp_path, sym, "1m", table.filter(pa.array(keep)))
    assert main(["data", "check", "--data", str(tmp_path), "--save"]) == 0
    out = capsys.readouterr().out
    assert "AAAUSDT" in out and "saved" in out
    saved = json.loads((tmp_path / "quality" / "1m" / "AAAUSDT.json").read_text())
    assert saved["gaps"] == [[start + 100 * 60 * 10**9, start + 109 * 60 * 10**9, 10]]
    assert main(["data", "check", "--data", str(tmp_path), "--min-score", "0.999"]) == 1
    assert "below --min-score 0.999: AAAUSDT" in capsys.readouterr().err
