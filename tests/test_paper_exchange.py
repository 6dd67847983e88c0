"""An order-book paper session's trading rules come from the exchange's exchangeInfo.

A local aiohttp server on 127.0.0.1 answers ``GET /api/v3/exchangeInfo`` (spot: the symbols
asked with ``symbol=`` or ``symbols=["A","B"]``, HTTP 400 code -1121 "Invalid symbol." for
an unknown name) and ``GET /fapi/v1/exchangeInfo`` (USD-M: every symbol, parameters
ignored), in Binance's format: the filters as Binance lists them (spot PRICE_FILTER,
LOT_SIZE, NOTIONAL; USD-M PRICE_FILTER, LOT_SIZE, MIN_NOTIONAL ``notional``), decimals as
strings. No recorded data is needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from loopthread import ServerThread, start_app

from tickray.cluster.paper import exchange_specs
from tickray.engine.config import ConfigError

pytestmark = pytest.mark.network


def spot_row(
    symbol: str, base: str, quote: str, tick: str, step: str, notional: str, status: str = "TRADING"
) -> dict[str, Any]:
    """A spot exchangeInfo symbol as Binance lists it (2024: NOTIONAL replaced MIN_NOTIONAL)."""
    return {
        "symbol": symbol,
        "status": status,
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": tick,
                "maxPrice": "1000000.00000000",
                "tickSize": tick,
            },
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000", "stepSize": step},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "NOTIONAL",
                "minNotional": notional,
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
    }


def usdm_row(
    symbol: str, tick: str, step: str, notional: str, status: str = "TRADING"
) -> dict[str, Any]:
    """A USD-M exchangeInfo symbol as Binance lists it."""
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "status": status,
        "baseAsset": symbol.removesuffix("USDT"),
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "filters": [
            {"minPrice": "402", "maxPrice": "1246396.60", "filterType": "PRICE_FILTER", "tickSize": tick},
            {"stepSize": step, "filterType": "LOT_SIZE", "maxQty": "1000", "minQty": step},
            {"stepSize": step, "filterType": "MARKET_LOT_SIZE", "maxQty": "120", "minQty": step},
            {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
            {"notional": notional, "filterType": "MIN_NOTIONAL"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }  # fmt: skip


SPOT_ROWS = [
    spot_row("BTCUSDT", "BTC", "USDT", "0.01000000", "0.00001000", "5.00000000"),
    spot_row("ETHBTC", "ETH", "BTC", "0.00001000", "0.00010000", "0.00010000"),
    spot_row("LUNAUSDT", "LUNA", "USDT", "0.00010000", "0.01000000", "5.00000000", "BREAK"),
]
USDM_ROWS = [
    usdm_row("BTCUSDT", "0.10", "0.001", "100"),
    usdm_row("ETHUSDT", "0.01", "0.001", "20"),
    usdm_row("OLDUSDT", "0.01", "1", "5", status="SETTLING"),
]


def exchange_info(market: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The exchangeInfo document around ``rows``."""
    weight = 6000 if market == "spot" else 2400
    return {
        "timezone": "UTC",
        "serverTime": 1723075200000,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        ],
        "exchangeFilters": [],
        "symbols": rows,
    }


def add_exchange_info(
    app: web.Application, spot: list[dict[str, Any]], usdm: list[dict[str, Any]]
) -> list[str]:
    """Add both markets' exchangeInfo routes to ``app``; returns the log of query strings."""
    seen: list[str] = []

    async def spot_info(request: web.Request) -> web.Response:
        seen.append(f"spot {request.query_string}")
        q = request.query
        wanted: list[str] | None = None
        if "symbol" in q:
            wanted = [q["symbol"]]
        elif "symbols" in q:
            wanted = json.loads(q["symbols"])
        rows = spot
        if wanted is not None:
            known = {r["symbol"]: r for r in spot}
            if any(w not in known for w in wanted):
                return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
            rows = [known[w] for w in wanted]
        return web.json_response(exchange_info("spot", rows))

    async def usdm_info(request: web.Request) -> web.Response:
        seen.append(f"usdm {request.query_string}")
        return web.json_response(exchange_info("usdm", usdm))

    app.router.add_get("/api/v3/exchangeInfo", spot_info)
    app.router.add_get("/fapi/v1/exchangeInfo", usdm_info)
    return seen


class InfoServer(ServerThread):
    """An aiohttp server with both exchangeInfo routes, on its own thread and loop."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.seen = add_exchange_info(self.app, SPOT_ROWS, USDM_ROWS)
        self.url = ""
        super().__init__()

    async def serve(self) -> None:
        runner, self.url = await start_app(self.app)
        try:
            await self.running()
        finally:
            await runner.cleanup()


@pytest.fixture(scope="module")
def info() -> Iterator[InfoServer]:
    srv = InfoServer()
    yield srv
    srv.close()


def test_spot_rules_come_from_one_request_for_the_symbols_asked(info: InfoServer) -> None:
    info.seen.clear()
    specs = exchange_specs("spot", ["BTCUSDT", "ETHBTC"], info.url)
    # one request, the symbols as Binance's JSON array parameter
    assert info.seen == ['spot symbols=["BTCUSDT","ETHBTC"]']
    btc, eth = specs["BTCUSDT"], specs["ETHBTC"]
    assert (btc.tick_size, btc.step_size, btc.min_qty, btc.min_notional) == (0.01, 1e-5, 1e-5, 5.0)
    assert (btc.base_asset, btc.quote_asset) == ("BTC", "USDT")
    # ETHBTC: quoted in BTC, its floor in BTC
    assert (eth.tick_size, eth.step_size, eth.min_notional) == (1e-5, 1e-4, 1e-4)
    assert (eth.base_asset, eth.quote_asset) == ("ETH", "BTC")


def test_usdm_rules_read_the_min_notional_filter_s_notional(info: InfoServer) -> None:
    specs = exchange_specs("usdm", ["ETHUSDT", "BTCUSDT"], info.url)
    assert specs["BTCUSDT"].tick_size == 0.1 and specs["BTCUSDT"].step_size == 0.001
    assert specs["BTCUSDT"].min_notional == 100.0 and specs["ETHUSDT"].min_notional == 20.0


@pytest.mark.parametrize(
    ("market", "symbols", "error"),
    [
        ("spot", ["BTCUSDT", "NOPEUSDT"], "symbols: NOPEUSDT is not a symbol of Binance spot"),
        ("spot", ["LUNAUSDT"], "symbols: LUNAUSDT is not trading on Binance spot (exchangeInfo status BREAK)"),
        ("usdm", ["NOPEUSDT"], "symbols: NOPEUSDT is not a symbol of Binance usdm"),
        ("usdm", ["OLDUSDT"], "symbols: OLDUSDT is not trading on Binance usdm"),
    ],
)  # fmt: skip
def test_an_unknown_or_halted_symbol_is_refused_by_name(
    info: InfoServer, market: str, symbols: list[str], error: str
) -> None:
    with pytest.raises(ConfigError) as e:
        exchange_specs(market, symbols, info.url)
    assert str(e.value).startswith(error)


def test_the_paper_l2_command_refuses_an_unknown_symbol_before_it_streams(
    info: InfoServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tickray.cluster.cli import main

    out = tmp_path / "out"
    args = ["paper-l2", "--symbols", "BTCUSDT,NOPEUSDT", "--rest-url", info.url]
    # the websocket address is never used: the exchange's answer stops the command first
    rc = main([*args, "--ws-url", "ws://127.0.0.1:9", "--out", str(out)])
    assert rc == 2
    assert "symbols: NOPEUSDT is not a symbol of Binance spot" in capsys.readouterr().err
    assert not out.exists()
    rc = main(["paper-l2", "--symbols", "BTCUSDT", "--market", "usdm", "--depth", "1000ms"])
    assert rc == 2
    assert "--depth: usdm streams depth at 250ms, 500ms, 100ms, 0ms, not 1000ms" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("feed", "fork", "live.feed: must be 'process' or 'thread', got 'fork'"),
        ("transport", "curl", "live.transport: must be 'websockets' or 'aiohttp', got 'curl'"),
        ("symbols_per_feed", 0, "live.symbols_per_feed: must be an integer >= 1, got 0"),
        ("symbols_per_feed", 1.5, "live.symbols_per_feed: must be an integer >= 1, got 1.5"),
        ("absorb_ms", -5, "live.absorb_ms: must be a number >= 0, got -5"),
        ("absorb_ms", True, "live.absorb_ms: must be a number >= 0, got True"),
    ],
)
def test_a_live_config_names_a_bad_feed_or_transport(field: str, value: object, error: str) -> None:
    from tickray.engine.config import LiveConfig

    with pytest.raises(ConfigError, match=error):
        LiveConfig(**{field: value})


def test_a_client_refuses_an_unknown_transport_by_name() -> None:
    from tickray.feeds.ws import BinanceWs

    with pytest.raises(ValueError, match=r"transport: must be one of \('websockets', 'aiohttp'\)"):
        BinanceWs("spot", ["btcusdt@trade"], transport="curl")  # type: ignore[arg-type]
