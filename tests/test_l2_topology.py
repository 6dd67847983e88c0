"""Order-book replays through the actor topology (clock, symbol actors, portfolio, recorder)."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import results_digest

from tickray.cluster.cli import build_l2_config, main
from tickray.cluster.runner import run_backtest
from tickray.engine.config import RunConfig
from tickray.engine.l2venue import L2Venue
from tickray.engine.latency import latency_from_spec, symbol_seed
from tickray.engine.matching import Fees
from tickray.engine.quoting import QuotingStrategy
from tickray.feeds.l2events import recording_events
from tickray.feeds.recordings import read_binance_recording

pytestmark = pytest.mark.realdata

NAMES = ("binance_usdm_BTCUSDT_2024-08-08.ws.gz", "binance_spot_ETHUSDT_2024-08-08.ws.gz")


def _args(files: list[Path], **kw: object) -> Namespace:
    base: dict[str, object] = dict(
        files=[str(f) for f in files],
        sync="1s",
        size=0.01,
        offset=0,
        max_position=None,
        timer="1s",
        wake_ticks=0,
        wake_on_fill=False,
        latency='{"submit": "2ms", "cancel": "1ms", "modify": "1ms", "market_data": "1ms"}',
        queue="conservative",
        no_tops=False,
        seed=0,
        cash=100_000.0,
        fee=0.0005,
        maker_fee=0.0002,
        backend="local",
        symbols_per_actor=0,
    )
    base.update(kw)
    return Namespace(**base)


@pytest.fixture(scope="module")
def l2_files(shared_data: Path) -> list[Path]:
    return [shared_data / "crypto" / "ws_recordings" / "hftbacktest" / n for n in NAMES]


def _config(files: list[Path], **kw: object) -> RunConfig:
    cfg = build_l2_config(_args(files))
    return RunConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, **kw})  # type: ignore[arg-type]


def test_topology_fills_equal_the_venue_run_alone(l2_files: list[Path], tmp_path: Path) -> None:
    """Stepping the replay second by second through the clock changes nothing."""
    cfg = _config(l2_files)
    res = run_backtest(cfg, tmp_path / "run")
    fills = pq.read_table(res.out / "fills.parquet").to_pylist()
    assert len(fills) > 50
    for path in l2_files:
        rec = read_binance_recording(path)
        assert cfg.l2 is not None
        v = L2Venue(
            cfg.spec(rec.symbol),
            fees=Fees(maker=0.0002, taker=0.0005),
            latency=latency_from_spec(cfg.l2.latency, seed=symbol_seed(0, rec.symbol)),
        )
        v.attach(QuotingStrategy(0.01), timer_ns=1_000_000_000, wake_on_fill=False)
        v.run(recording_events(rec))
        mine = [f for f in fills if f["symbol"] == rec.symbol]
        # fills before the run's last boundary: the clock stops there
        alone = [f for f in v.fills if f.ts_event < cfg.end_ns]
        assert [(f["order_id"], f["qty"], f["price"]) for f in mine] == [
            (f.order_id, f.qty, f.price) for f in alone
        ]
        assert mine[-1]["position_after"] == pytest.approx(
            sum(f.side * f.qty for f in alone), abs=1e-9
        )


def test_sharding_does_not_change_an_l2_replay(l2_files: list[Path], tmp_path: Path) -> None:
    one = run_backtest(_config(l2_files, symbols_per_actor=1), tmp_path / "a")
    two = run_backtest(_config(l2_files, symbols_per_actor=2), tmp_path / "b")
    assert results_digest(one.out) == results_digest(two.out)


@pytest.mark.ray
def test_ray_l2_replay_is_byte_identical(
    ray_session: object, l2_files: list[Path], tmp_path: Path
) -> None:
    local = run_backtest(_config(l2_files), tmp_path / "local")
    ray = run_backtest(_config(l2_files, backend="ray", symbols_per_actor=1), tmp_path / "ray")
    assert results_digest(ray.out) == results_digest(local.out)


def test_replay_l2_cli_reports_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replay-l2", str(tmp_path / "nope.ws.gz"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "nope.ws.gz" in err
