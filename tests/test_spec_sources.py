"""Spec data sources backed by the kline cache: 'exchange' fetches into it, 'cache' reads it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiohttp import web
from test_feeds_rest import FakeBinance, FakeClock

from tickray.cluster.runner import run_backtest
from tickray.cluster.spec import config_from_document
from tickray.engine.spec import SpecError, parse_spec
from tickray.feeds.cache import KlineCache

pytestmark = pytest.mark.network


@contextmanager
def fake_binance(market: str = "spot") -> Iterator[tuple[str, FakeBinance]]:
    """The test suite's FakeBinance on 127.0.0.1, served from its own thread and loop."""
    loop = asyncio.new_event_loop()
    fake = FakeBinance(market, FakeClock())
    runner = web.AppRunner(fake.app())
    ready = threading.Event()
    url: list[str] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        host, port = runner.addresses[0][:2]
        url.append(f"http://{host}:{port}")
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(5.0)
    try:
        yield url[0], fake
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)


def _doc(source: str, cache: Path, url: str | None = None) -> dict[str, object]:
    data: dict[str, object] = {
        "source": source,
        "path": str(cache),
        "venue": "spot",
        "start": "2024-01-01",
        "end": "2024-01-02",
    }
    if url:
        data["base_url"] = url
    return {
        "data": data,
        "universe": {"symbols": ["BTCUSDT"]},
        "strategy": {"name": "momentum", "params": {"window": 5, "threshold": 0.0001}},
        "account": {"allow_short": True},
    }


def test_exchange_fetches_into_the_cache_then_cache_replays_offline(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with fake_binance() as (url, fake):
        a = run_backtest(config_from_document(_doc("exchange", cache, url)), tmp_path / "a")
        asked = len(fake.seen)
        assert asked > 0
        # the same run again needs nothing from the exchange: the closed days are cached
        run_backtest(config_from_document(_doc("exchange", cache, url)), tmp_path / "b")
        assert len(fake.seen) == asked
    # offline, from the cache alone: the same results
    c = run_backtest(config_from_document(_doc("cache", cache)), tmp_path / "c")
    for name in ("fills.parquet", "equity.parquet"):
        assert pq.read_table(a.out / name).equals(pq.read_table(c.out / name))
    assert pq.read_table(a.out / "fills.parquet").num_rows > 0
    assert KlineCache(cache).symbols("spot", "1m") == ["BTCUSDT"]


def test_cache_sources_need_symbols_and_a_range() -> None:
    with pytest.raises(SpecError, match="universe.symbols: required with data.source 'cache'"):
        parse_spec({"data": {"source": "cache"}})
    with pytest.raises(SpecError, match="data.start and data.end: required with data.source"):
        parse_spec({"data": {"source": "exchange"}, "universe": {"symbols": ["BTCUSDT"]}})


def test_cli_data_fetch_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_feeds_rest import kline_row

    from tickray.cluster.cli import main
    from tickray.feeds.store import data_range, list_symbols

    with fake_binance() as (url, _fake):
        rc = main(
            [
                "data",
                "fetch",
                "--symbols",
                "BTCUSDT",
                "--start",
                "2024-01-01",
                "--end",
                "2024-01-02",
                "--market",
                "spot",
                "--cache",
                str(tmp_path / "cache"),
                "--store",
                str(tmp_path / "store"),
                "--base-url",
                url,
                "--quiet",
            ]
        )
    assert rc == 0
    assert "BTCUSDT: 1440 1m bars" in capsys.readouterr().out
    assert list_symbols(tmp_path / "store", "1m") == ["BTCUSDT"]
    # a kline CSV in Binance's dump format, imported under the symbol its name gives
    csv = tmp_path / "ETHUSDT-1m-2024-01.csv"
    csv.write_text("\n".join(",".join(str(v) for v in kline_row(i)) for i in range(120)) + "\n")
    rc = main(["data", "import", str(csv), "--out", str(tmp_path / "imported")])
    assert rc == 0
    first, last = data_range(tmp_path / "imported", "1m", "ETHUSDT")
    assert (last - first) // 60_000_000_000 == 119
    rc = main(["data", "import", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
