"""Event strategies on real order-book recordings: trades, books, bars from trades, signals.

The same SignalStrategy API as on bars, driven by the L2 venue through the
actor topology. Each delivered event is checked against the recording itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import results_digest

from tickray.cluster.cli import build_l2_config, main
from tickray.cluster.runner import run_backtest
from tickray.engine import event_strategies
from tickray.engine.book import TRADE
from tickray.engine.config import ConfigError, RunConfig
from tickray.engine.events import Fill
from tickray.engine.signals import Bar, BookTop, Context, Signal, SignalStrategy, Trade, buy
from tickray.feeds.l2events import recording_events
from tickray.feeds.recordings import read_binance_recording

pytestmark = pytest.mark.realdata

NAME = "binance_usdm_BTCUSDT_2024-08-08.ws.gz"


class Recorder(SignalStrategy):
    """Records what it is told; buys once with a bracket after ``warmup`` bars."""

    name = "l2_recorder"
    timer_ns = 10_000_000_000
    log: ClassVar[dict[str, list[Any]]] = {}
    enter: ClassVar[bool] = False

    @property
    def warmup(self) -> int:
        return 2

    def on_trade(self, trade: Trade, ctx: Context) -> Signal | None:
        self.log["trade"].append(trade)
        return None

    def on_book(self, book: BookTop, ctx: Context) -> Signal | None:
        self.log["book"].append(book)
        return None

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        self.log["bar"].append(bar)
        if self.enter and ctx.bars == 2:
            return buy(take_profit=bar.close + 5.0, stop_loss=bar.close - 5.0, confidence=0.1)
        return None

    def on_timer(self, ts: int, ctx: Context) -> Signal | None:
        self.log["timer"].append(ts)
        return None

    def on_fill(self, fill: Fill, ctx: Context) -> Signal | None:
        self.log["fill"].append((fill, ctx.position))
        return None


@pytest.fixture
def recorder() -> Iterator[type[Recorder]]:
    event_strategies.EVENT_STRATEGIES["l2_recorder"] = Recorder
    Recorder.log = {k: [] for k in ("trade", "book", "bar", "timer", "fill")}
    yield Recorder
    del event_strategies.EVENT_STRATEGIES["l2_recorder"]
    Recorder.enter = False


def _config(path: Path, **kw: Any) -> RunConfig:
    """The topology tests' command line, with the recorder strategy on 1m trade bars."""
    from test_l2_topology import _args

    base: dict[str, Any] = dict(
        wake_ticks=1, wake_on_fill=True, strategy="l2_recorder", param=None, bar="1m"
    )
    return build_l2_config(_args([path], **(base | kw)))


@pytest.fixture(scope="module")
def recording(shared_data: Path) -> Path:
    return shared_data / "crypto" / "ws_recordings" / "hftbacktest" / NAME


def test_trades_books_and_bars_match_the_recording(
    recording: Path, recorder: type[Recorder], tmp_path: Path
) -> None:
    cfg = _config(recording)
    run_backtest(cfg, tmp_path / "run")
    ev = recording_events(read_binance_recording(recording))
    trade = ev.kind == TRADE
    before = ev.ts < cfg.end_ns
    log = Recorder.log
    # every trade of the recording, in order (those after the book first had two sides)
    got = [(t.ts, t.price, t.qty) for t in log["trade"]]
    want = list(
        zip(
            ev.ts[trade & before].tolist(),
            ev.price[trade & before].tolist(),
            ev.qty[trade & before].tolist(),
            strict=True,
        )
    )
    assert got == want[len(want) - len(got) :] and len(got) > 1000
    assert [t.buyer_is_maker for t in log["trade"][:50]] == [
        bool(s < 0) for s in ev.side[trade & before][len(want) - len(got) :][:50]
    ]
    # 1m bars built from those trades equal pandas' resample of them (bars closed by the end)
    frame = pd.DataFrame(got, columns=["ts", "price", "qty"])
    frame.index = pd.to_datetime(frame.ts, utc=True)
    agg = frame.price.resample("1min").ohlc().join(frame.qty.resample("1min").sum())
    agg = agg.dropna()
    bars = log["bar"]
    assert len(bars) >= 2
    for bar in bars:
        row = agg.loc[pd.Timestamp(bar.ts_open, tz="UTC")]
        assert (bar.open, bar.high, bar.low, bar.close) == (row.open, row.high, row.low, row.close)
        assert bar.volume == pytest.approx(row.qty, rel=1e-12)
        assert bar.ts_close == bar.ts_open + 60_000_000_000
    # book tops: each differs from the one before, bid below ask
    tops = log["book"]
    assert len(tops) > 100
    assert all(b.bid < b.ask for b in tops)
    assert all(a[1:] != b[1:] for a, b in zip(tops, tops[1:], strict=False))
    # timers every 10 s of simulated time, in order
    timers = log["timer"]
    assert timers == sorted(timers) and np.all(np.diff(timers) == 10_000_000_000)


def test_a_bracket_signal_trades_on_the_book(
    recording: Path, recorder: type[Recorder], tmp_path: Path
) -> None:
    Recorder.enter = True
    cfg = _config(recording)
    res = run_backtest(cfg, tmp_path / "run")
    fills = pq.read_table(res.out / "fills.parquet").to_pandas()
    orders = pq.read_table(res.out / "orders.parquet").to_pandas()
    assert len(fills) >= 1
    assert fills.side.iloc[0] == "BUY"
    first_types = orders.groupby("order_id").type.first()
    assert {"MARKET", "LIMIT", "STOP_MARKET"} <= set(first_types)
    # the entry filled; on_fill saw it with the position already holding it
    fill, pos = Recorder.log["fill"][0]
    assert fill.side.name == "BUY" and pos == pytest.approx(fill.qty)
    if len(fills) > 1:  # an exit filled: the other exit was cancelled (one cancels the other)
        last = orders.groupby("order_id").tail(1).set_index("order_id")
        exits = last[last.type.isin(["LIMIT", "STOP_MARKET"])]
        assert sorted(exits.status) == ["CANCELED", "FILLED"]
    again = run_backtest(
        RunConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "sync_ns": 10**8}),
        tmp_path / "again",
    )
    assert results_digest(again.out)["fills.parquet"] == results_digest(res.out)["fills.parquet"]


def test_bar_strategies_cannot_run_on_books(recording: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strategy 'momentum' works on bar batches"):
        _config(recording, strategy="momentum")


def test_cli_runs_an_event_strategy_on_a_recording(
    recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "replay-l2",
            str(recording),
            "--strategy",
            "enhanced_momentum",
            "--param",
            "fast=3",
            "--param",
            "slow=6",
            "--param",
            "threshold=0.0001",
            "--param",
            "atr_window=3",
            "--bar",
            "10s",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    assert rc == 0
    fills = pq.read_table(tmp_path / "out" / "fills.parquet")
    assert fills.num_rows > 0


def test_grid_inferred_from_a_recording_is_the_decimal_tick(recording: Path) -> None:
    from tickray.feeds.l2events import infer_grid

    # the snapshot's prices are 0.1 apart as decimals; as float gaps they come out
    # 0.099999999999, which made every fill price 61751.49999938 instead of 61751.5
    assert infer_grid(read_binance_recording(recording)) == (0.1, 0.001)
