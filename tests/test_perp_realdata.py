"""USD-M perpetual runs on real Binance 1h klines with the exchange's real funding records
(../shared/data; skipped when it is absent)."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import results_digest

from tickray.cluster.runner import run_backtest
from tickray.engine.clock import HOUR, parse_time
from tickray.engine.config import AccountConfig, PerpConfig, RunConfig, StrategyConfig
from tickray.feeds.binance import convert_klines
from tickray.feeds.funding import read_funding_csv
from tickray.feeds.schemas import DataError

pytestmark = pytest.mark.realdata

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START, END = parse_time("2026-01-13"), parse_time("2026-03-19")


@pytest.fixture(scope="module")
def perp_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("perp-real")
    klines = shared_data / "crypto" / "klines_1h" / "binance_usdm_futures"
    for sym in SYMBOLS:
        convert_klines([klines / f"{sym}-1h.csv.gz"], root, sym, "1h")
    files = {
        s: str(shared_data / "crypto" / "funding" / f"binance_usdm_{s}_fundingRate.csv")
        for s in SYMBOLS
    }
    return root, files


def _config(root: Path, files: dict, mode: str, leverage: float, **kw: object) -> RunConfig:
    return RunConfig(
        data_root=str(root),
        interval_ns=HOUR,
        symbols=SYMBOLS,
        start_ns=kw.pop("start", START),  # type: ignore[arg-type]
        end_ns=kw.pop("end", END),  # type: ignore[arg-type]
        strategy=StrategyConfig("momentum", {"window": 24, "threshold": 0.02}),
        account=AccountConfig(initial_cash=100_000.0, taker_fee=0.0005, allow_short=True),
        perp=PerpConfig(leverage=leverage, margin_mode=mode, funding=files),
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("mode", ["isolated", "cross"])
def test_real_funding_is_paid_on_real_positions(
    perp_data: tuple[Path, dict], tmp_path: Path, mode: str
) -> None:
    root, files = perp_data
    res = run_backtest(_config(root, files, mode, 3.0), tmp_path / "out")
    funding = pq.read_table(res.out / "funding.parquet").to_pandas()
    fills = pq.read_table(res.out / "fills.parquet").to_pandas()
    marks = pq.read_table(res.out / "marks.parquet").to_pandas()
    assert len(fills) > 10 and len(funding) > 50
    for sym in SYMBOLS:
        rec = read_funding_csv(files[sym], sym).to_pandas()
        t = rec.ts.astype("int64").to_numpy()
        t = t - t % 1_000_000_000  # the exchange's stamps land a few ms late
        mine = funding[funding.symbol == sym]
        # every record in the window settles once, at the 1h bar closing at its hour,
        # on the position held then (records of flat hours pay nothing and are not listed)
        in_run = t[(t > START) & (t <= END)]
        got = mine.ts.astype("int64").to_numpy()
        assert set(got) <= set(in_run.tolist())
        assert (mine.settled.astype("int64").to_numpy() == got).all()
        rates = dict(zip(t.tolist(), rec.funding_rate.tolist(), strict=True))
        mark_at = dict(zip(marks.ts.astype("int64").tolist(), marks[sym].tolist(), strict=True))
        for row in mine.itertuples():
            ts = row.ts.value
            assert row.funding_rate == rates[ts]
            assert row.mark_price == mark_at[ts]  # no mark data: the bar's close
            assert row.payment == round(row.position * row.mark_price * row.funding_rate, 8)
        # the position at each funding time is the one the fills left
        sf = fills[fills.symbol == sym]
        for row in mine.itertuples():
            before = sf[sf.ts.astype("int64") < row.ts.value]
            assert before.position_after.iloc[-1] == row.position
    m = res.metrics["portfolio"]
    assert m["funding"] == pytest.approx(float(funding.payment.sum()), abs=1e-6)
    eq = pq.read_table(res.out / "equity.parquet").to_pandas()
    assert math.isfinite(m["sharpe"]) and (eq.equity > 0).all()


def test_high_leverage_on_real_data_liquidates_by_the_formula(
    perp_data: tuple[Path, dict], tmp_path: Path
) -> None:
    root, files = perp_data
    res = run_backtest(_config(root, files, "isolated", 40.0), tmp_path / "out")
    liq = pq.read_table(res.out / "liquidations.parquet").to_pandas()
    assert len(liq) >= 1
    assert res.metrics["portfolio"]["liquidations"] == len(liq)
    eq = pq.read_table(res.out / "equity.parquet").to_pandas()
    assert (eq.equity > -1e-6).all()  # losses stop at the margin
    # fuse on and off, one or two symbols per actor: the same bytes
    want = results_digest(res.out)
    for k, kw in enumerate([{"fuse": False}, {"symbols_per_actor": 1}]):
        again = run_backtest(_config(root, files, "isolated", 40.0, **kw), tmp_path / f"a{k}")
        assert results_digest(again.out) == want


def test_a_run_beyond_the_funding_records_is_refused(
    perp_data: tuple[Path, dict], tmp_path: Path
) -> None:
    root, files = perp_data
    cfg = _config(root, files, "cross", 2.0, end=parse_time("2026-03-21"))
    with pytest.raises(DataError, match=r"BTCUSDT funding: funding data does not cover the run"):
        run_backtest(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
