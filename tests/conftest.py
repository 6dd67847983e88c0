"""Shared fixtures: one Ray instance per session, the real-data folder, a small universe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tickray.engine.clock import MINUTE, parse_time

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL_SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
SMALL_START = parse_time("2024-03-01")
SMALL_BARS = 2 * 1440


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    """Ray started once for the whole session (2 CPUs, no dashboard) and reused."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=200 * 1024 * 1024,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_universe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic symbols x two days of 1m bars in the canonical layout."""
    from tickray.feeds.store import write_bars
    from tickray.feeds.synthetic import generate_bars

    root = tmp_path_factory.mktemp("small-universe")
    for sym, table in generate_bars(list(SMALL_SYMBOLS), SMALL_START, SMALL_BARS, seed=11).items():
        write_bars(root, sym, "1m", table)
    return root


SMALL_END = SMALL_START + SMALL_BARS * MINUTE


def write_bar_rows(
    root: Path,
    symbol: str,
    start_ns: int,
    rows: list[tuple[float, float, float, float]],
    interval_ns: int = MINUTE,
) -> None:
    """Write hand-made (open, high, low, close) 1m bars starting at ``start_ns``."""
    import pyarrow as pa

    from tickray.feeds.store import write_bars

    ts = [start_ns + i * interval_ns for i in range(len(rows))]
    table = pa.table(
        {
            "ts": pa.array(ts, type=pa.timestamp("ns", tz="UTC")),
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
            "volume": [1.0] * len(rows),
        }
    )
    write_bars(root, symbol, "1m", table)


def results_digest(folder: Path) -> dict[str, str]:
    """sha256 of every results file but run.json (which names the backend and actors)
    and the report made from it."""
    import hashlib

    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.name not in ("run.json", "report.html")
    }


def write_funding_rows(
    root: Path, symbol: str, rows: list[tuple[int, float | None, float | None]]
) -> None:
    """Write (ts, funding rate or None, mark price or None) rows as ``symbol``'s funding ticks."""
    import pyarrow as pa

    from tickray.feeds.store import write_ticks

    write_ticks(
        root,
        "funding",
        symbol,
        pa.table(
            {
                "ts": pa.array([r[0] for r in rows], type=pa.timestamp("ns", tz="UTC")),
                "funding_rate": pa.array([r[1] for r in rows], type=pa.float64()),
                "mark_price": pa.array([r[2] for r in rows], type=pa.float64()),
                "index_price": pa.array([None] * len(rows), type=pa.float64()),
            }
        ),
    )
