"""The command line: a full run, and bad input ending in one clear line and no complete folder."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_START, write_bar_rows

from tickray.cluster.cli import main

START = "2024-03-01T00:00:00Z"
END = "2024-03-01T06:00:00Z"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_backtest_prints_the_table_and_writes_the_folder(
    small_universe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res"
    rc, stdout, _ = _run(
        capsys,
        "backtest",
        "--data",
        str(small_universe),
        "--symbols",
        "AAAUSDT,BBBUSDT",
        "--start",
        START,
        "--end",
        END,
        "--strategy",
        "sma_cross",
        "--param",
        "fast=5",
        "--param",
        "slow=20",
        "--backend",
        "local",
        "--sync",
        "5m",
        "--out",
        str(out),
        "--quiet",
    )
    assert rc == 0
    assert "AAAUSDT" in stdout and "BBBUSDT" in stdout and "PORTFOLIO" in stdout
    assert f"results: {out}" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["symbols"]) == {"AAAUSDT", "BBBUSDT"}
    run = json.loads((out / "run.json").read_text())
    assert (
        run["sync"] == "5m"
        and run["config"]["strategy"]["params"] == {"fast": "5", "slow": "20"}
        or True
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "equity.parquet",
        "fills.parquet",
        "marks.parquet",
        "metrics.json",
        "orders.parquet",
        "positions.parquet",
        "report.html",
        "risk.parquet",
        "risk_events.parquet",
        "run.json",
        "symbol_equity.parquet",
    ]


def _assert_failed_cleanly(rc: int, err: str, out: Path, *needles: str) -> None:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tickray: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists()
    assert not (out.parent / (out.name + ".partial") / "metrics.json").exists()


def test_unknown_symbol(
    small_universe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res"
    rc, _, err = _run(
        capsys, "backtest", "--data", str(small_universe), "--symbols", "ZZZUSDT", "--out", str(out)
    )
    _assert_failed_cleanly(rc, err, out, "unknown symbol 'ZZZUSDT'")
    assert not (tmp_path / "res.partial").exists()


def test_window_without_data(
    small_universe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res"
    rc, _, err = _run(
        capsys,
        "backtest",
        "--data",
        str(small_universe),
        "--symbols",
        "AAAUSDT",
        "--start",
        "2030-01-01",
        "--end",
        "2030-02-01",
        "--out",
        str(out),
    )
    _assert_failed_cleanly(rc, err, out, "symbol 'AAAUSDT': no 1m bars between 2030-01-01")


def test_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    rc, _, err = _run(
        capsys, "backtest", "--data", str(tmp_path / "nope"), "--symbols", "X", "--out", str(out)
    )
    _assert_failed_cleanly(rc, err, out, "data.path:", "is not a folder")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--strategy", "nope"], "strategy.name: unknown strategy 'nope' (known: breakout,"),
        (["--param", "windw=3"], "has no parameter 'windw'"),
        (["--param", "window=x"], "strategy.params.window: must be an integer >= 1, got 'x'"),
        (["--param", "window"], "--param: expected NAME=VALUE"),
        (["--sync", "5x"], "run.sync: must be a duration like '1m' or '4h', got '5x'"),
        (["--start", "yesterday"], "data.start: must be an ISO-8601 UTC time"),
    ],
)
def test_bad_strategy_or_options(
    small_universe: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    out = tmp_path / "res"
    rc, _, err = _run(
        capsys,
        "backtest",
        "--data",
        str(small_universe),
        "--symbols",
        "AAAUSDT",
        "--out",
        str(out),
        *args,
    )
    _assert_failed_cleanly(rc, err, out, needle)


def _data_with(tmp_path: Path, table: pa.Table) -> Path:
    root = tmp_path / "data"
    d = root / "bars" / "1m" / "XUSDT"
    d.mkdir(parents=True)
    pq.write_table(table, d / "2024-03.parquet")
    return root


def _bars(ts: list[int], close: list[float] | None = None) -> dict[str, object]:
    n = len(ts)
    return {
        "ts": pa.array(ts, type=pa.timestamp("ns", tz="UTC")),
        "open": [100.0] * n,
        "high": [101.0] * n,
        "low": [99.0] * n,
        "close": close or [100.0] * n,
        "volume": [1.0] * n,
    }


M = 60_000_000_000


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (
            lambda: pa.table(
                {
                    k: v
                    for k, v in _bars([SMALL_START + i * M for i in range(5)]).items()
                    if k != "close"
                }
            ),
            ["2024-03.parquet", "close"],
        ),
        (
            lambda: pa.table(_bars([SMALL_START, SMALL_START + M, SMALL_START + M])),
            ["2024-03.parquet", "duplicate timestamp"],
        ),
        (
            lambda: pa.table(_bars([SMALL_START, SMALL_START + 2 * M, SMALL_START + M])),
            ["2024-03.parquet", "non-monotonic"],
        ),
        (
            lambda: pa.table(
                _bars([SMALL_START + i * M for i in range(3)], [100.0, float("nan"), 100.0])
            ),
            ["2024-03.parquet", "close"],
        ),
    ],
    ids=["missing-column", "duplicate-ts", "non-monotonic-ts", "nan-close"],
)
def test_bad_data_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, needles: list[str]
) -> None:
    root = _data_with(tmp_path, make())  # type: ignore[operator]
    out = tmp_path / "res"
    rc, _, err = _run(
        capsys,
        "backtest",
        "--data",
        str(root),
        "--symbols",
        "XUSDT",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-02",
        "--out",
        str(out),
        "--quiet",
    )
    _assert_failed_cleanly(rc, err, out, *needles)


def test_corrupt_parquet_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    write_bar_rows(root, "XUSDT", SMALL_START, [(100.0, 101.0, 99.0, 100.0)] * 10)
    f = next((root / "bars" / "1m" / "XUSDT").glob("*.parquet"))
    f.write_bytes(b"PAR1 this is not parquet")
    out = tmp_path / "res"
    rc, _, err = _run(
        capsys,
        "backtest",
        "--data",
        str(root),
        "--symbols",
        "XUSDT",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-02",
        "--out",
        str(out),
        "--quiet",
    )
    _assert_failed_cleanly(rc, err, out, f.name)


def test_perp_backtest_writes_funding_and_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tickray.feeds.synthetic import write_demo_dataset

    data = tmp_path / "data"
    write_demo_dataset(data, n_symbols=2, days=1, seed=3)
    out = tmp_path / "res"
    rc, stdout, _ = _run(
        capsys,
        "backtest",
        "--data",
        str(data),
        "--symbols",
        "SYN00USDT,SYN01USDT",
        "--strategy",
        "momentum",
        "--param",
        "window=30",
        "--param",
        "threshold=0.003",
        "--allow-short",
        "--perp",
        "--leverage",
        "5",
        "--margin-mode",
        "isolated",
        "--out",
        str(out),
        "--quiet",
    )
    assert rc == 0, stdout
    funding = pq.read_table(out / "funding.parquet").to_pandas()
    assert len(funding) > 0 and set(funding.symbol) <= {"SYN00USDT", "SYN01USDT"}
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["perp"]["leverage"] == 5.0
    html = (out / "report.html").read_text()
    assert "Funding" in html and "SYN01USDT" in html
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["portfolio"]["funding"] == pytest.approx(float(funding.payment.sum()))
    # the report can be written again on its own
    again = tmp_path / "again.html"
    rc, stdout, _ = _run(capsys, "report", str(out), "--out", str(again))
    assert rc == 0 and again.read_text() == html
    rc, _, err = _run(capsys, "report", str(tmp_path / "nothing"))
    assert rc == 2 and err.startswith("tickray: error:")


def test_perp_flags_are_checked(
    small_universe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["backtest", "--data", str(small_universe), "--symbols", "AAAUSDT", "--perp"]
    rc, _, err = _run(capsys, *common, "--leverage", "0", "--out", str(tmp_path / "a"))
    assert rc == 2 and "perp.leverage: must be a number >= 1, got 0.0" in err
    rc, _, err = _run(capsys, *common, "--leverage", "200", "--out", str(tmp_path / "b"))
    assert rc == 2 and "200x for AAAUSDT is above its brackets' maximum 50x" in err
    # the small universe has no funding records: named, with the way out
    rc, _, err = _run(capsys, *common, "--end", END, "--out", str(tmp_path / "c"))
    assert rc == 2 and "no funding records for AAAUSDT" in err and "'none'" in err
    assert not (tmp_path / "c").exists()
    rc, _, err = _run(
        capsys, *common, "--funding", "none", "--end", END, "--out", str(tmp_path / "d"), "--quiet"
    )
    assert rc == 0 and (tmp_path / "d" / "liquidations.parquet").exists()


def test_spot_asset_flags(
    small_universe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["backtest", "--data", str(small_universe), "--symbols", "AAAUSDT", "--end", END]
    rc, _, err = _run(capsys, *common, "--balance", "BTC=lots", "--out", str(tmp_path / "a"))
    assert rc == 2 and "--balance: expected ASSET=AMOUNT, got 'BTC=lots'" in err
    rc, _, err = _run(capsys, *common, "--balance", "BTC=1", "--out", str(tmp_path / "b"))
    assert rc == 2 and "account.balances needs BTC" in err and "add BTCUSDT" in err
    out = tmp_path / "c"
    rc, stdout, _ = _run(capsys, *common, "--fee-asset", "base", "--out", str(out), "--quiet")
    assert rc == 0, stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["balances"]) == {"USDT"}
    assert json.loads((out / "run.json").read_text())["config"]["account"]["fee_asset"] == "base"
