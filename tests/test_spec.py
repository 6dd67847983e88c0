"""The run spec: defaults, errors that name the key path, grids, example files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import results_digest

from tickray.cluster.cli import main
from tickray.cluster.runner import run_backtest
from tickray.cluster.spec import build_run, config_from_document, load_spec, merge
from tickray.engine.clock import HOUR, MINUTE, parse_time
from tickray.engine.config import ConfigError
from tickray.engine.spec import (
    SCHEMA,
    SpecError,
    expand_grid,
    parse_spec,
    reference_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def test_two_keys_make_a_complete_spec() -> None:
    spec = parse_spec({"data": {"source": "demo"}, "strategy": {"name": "momentum"}})
    assert spec.get("data.interval") == MINUTE
    assert spec.get("account.type") == "spot" and spec.get("account.cash") == 100_000.0
    assert spec.get("run.backend") == "local" and spec.get("run.sync") is None
    assert spec.params == {} and spec.grid == {} and spec.runs == 1
    # every key of every section has a value once defaults are filled
    assert {s: set(v) for s, v in spec.values.items()} == {s: set(k) for s, k in SCHEMA.items()}
    assert parse_spec({}).get("strategy.name") == "momentum"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"stratgy": {}}, "stratgy: unknown section (known: data, universe,"),
        ({"data": {"sorce": "demo"}}, "data.sorce: unknown key (known: source, path,"),
        ({"data": "demo"}, "data: must be a table, got 'demo'"),
        (
            {"strategy": {"params": {"window": "x"}}},
            "strategy.params.window: must be an integer",
        ),
        (
            {"strategy": {"params": {"window": 0}}},
            "strategy.params.window: must be an integer >= 1, got 0",
        ),
        ({"strategy": {"params": {"windw": 3}}}, "strategy 'momentum' has no parameter 'windw'"),
        (
            {"strategy": {"name": "nope"}},
            "strategy.name: unknown strategy 'nope' (known: breakout,",
        ),
        ({"account": {"cash": -5}}, "account.cash: must be a number > 0, got -5"),
        ({"account": {"cash": True}}, "account.cash: must be a number > 0, got True"),
        ({"account": {"taker_fee": 0.5}}, "account.taker_fee: must be a number >= 0 and <= 0.1"),
        ({"sizing": {"fraction": 0}}, "sizing.fraction: must be a number > 0 and <= 1, got 0"),
        ({"run": {"sync": "5x"}}, "run.sync: must be a duration like '1m' or '4h', got '5x'"),
        ({"run": {"fuse": "yes"}}, "run.fuse: must be true or false, got 'yes'"),
        ({"run": {"symbols_per_actor": 1.5}}, "run.symbols_per_actor: must be an integer >= 0"),
        ({"data": {"start": "yesterday"}}, "data.start: must be an ISO-8601 UTC time"),
        (
            {"data": {"start": "2024-02-01", "end": "2024-01-01"}},
            "data.end: must be after data.start",
        ),
        ({"data": {"source": "files"}}, "data.path: required when data.source is 'files'"),
        ({"data": {"source": "s3"}}, "data.source: must be one of 'demo', 'files', 'cache'"),
        ({"perp": {"leverage": 5}}, "perp: only with account.type 'perp'"),
        (
            {"account": {"type": "perp"}, "perp": {"leverage": 0}},
            "perp.leverage: must be a number >= 1, got 0",
        ),
        ({"universe": {"symbols": []}}, "universe.symbols: at least one symbol is needed"),
        ({"account": {"balances": {"BTC": "x"}}}, "account.balances.BTC: must be a number"),
        (
            {"strategy": {"params": {"window": {"start": 1, "stop": 5}}}},
            "strategy.params.window: a range needs exactly start, stop and step",
        ),
        (
            {"strategy": {"params": {"window": [10, 0]}}},
            "strategy.params.window: must be an integer >= 1, got 0 (grid point {'window': 0})",
        ),
        ({"strategy": {"params": {"window": []}}}, "strategy.params.window: a grid needs"),
        ([1, 2], "spec: must be a table of sections, got list"),
        (
            {"run": {"approval": "symbol"}, "risk": {"max_open_positions": 1}},
            "risk.max_open_positions: pre-trade limits are checked by the portfolio",
        ),
        ({"live": {"on_stop": "sell"}}, "live.on_stop: must be one of 'flatten', 'keep'"),
        ({"strategy": {"modules": [3]}}, "strategy.modules: must be a list of strings"),
    ],
)
def test_bad_specs_name_the_key_and_the_problem(doc: Any, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert message in str(info.value)


def test_grids_expand_in_a_fixed_order() -> None:
    spec = parse_spec(
        {
            "strategy": {
                "name": "momentum",
                "params": {
                    "window": [30, 10],
                    "threshold": {"start": 0.01, "stop": 0.03, "step": 0.01},
                },
            }
        }
    )
    assert spec.runs == 6 and spec.grid["threshold"] == (0.01, 0.02, 0.03)
    points = expand_grid(spec)
    assert points == [{"threshold": t, "window": w} for t in (0.01, 0.02, 0.03) for w in (30, 10)]
    ints = parse_spec({"strategy": {"params": {"window": {"start": 2, "stop": 9, "step": 3}}}})
    assert ints.grid["window"] == (2, 5, 8)
    with pytest.raises(SpecError, match="form a grid of 6 runs; run it as a sweep"):
        config_from_document({"strategy": {"params": {"window": [1, 2, 3, 4, 5, 6]}}})


def test_spec_and_flags_give_the_same_config(small_universe: Path) -> None:
    doc = {
        "data": {"source": "files", "path": str(small_universe), "end": "2024-03-02"},
        "universe": {"symbols": "aaausdt,BBBUSDT"},
        "account": {"cash": 50_000, "taker_fee": 0.0005},
        "strategy": {"name": "sma_cross", "params": {"fast": 5, "slow": 20}},
        "run": {"sync": "5m"},
    }
    from_spec = config_from_document(doc)
    assert from_spec.symbols == ("AAAUSDT", "BBBUSDT")
    assert from_spec.end_ns == parse_time("2024-03-02") and from_spec.sync_ns == 5 * MINUTE
    assert from_spec.account.initial_cash == 50_000 and from_spec.account.taker_fee == 0.0005
    import argparse

    from tickray.cluster.cli import build_config, parser

    args = parser().parse_args(
        [
            "backtest",
            "--data",
            str(small_universe),
            "--symbols",
            "AAAUSDT",
            "BBBUSDT",
            "--end",
            "2024-03-02",
            "--cash",
            "50000",
            "--fee",
            "0.0005",
            "--strategy",
            "sma_cross",
            "--param",
            "fast=5",
            "--param",
            "slow=20",
            "--sync",
            "5m",
        ]
    )
    assert isinstance(args, argparse.Namespace)
    from_flags = build_config(args)
    assert from_flags.strategy.name == "sma_cross"
    assert from_flags == from_spec.__class__(
        **{f: getattr(from_spec, f) for f in from_spec.__dataclass_fields__ if f != "strategy"},
        strategy=from_flags.strategy,
    )


def test_universe_filters_and_unknown_symbols(small_universe: Path) -> None:
    base = {"data": {"source": "files", "path": str(small_universe)}}
    every = config_from_document(base)
    assert len(every.symbols) == 3
    # history shorter than asked leaves nothing
    with pytest.raises(SpecError, match="universe: no symbol passes the filters"):
        config_from_document(merge(base, {"universe": {"min_history": "30d"}}))
    kept = config_from_document(merge(base, {"universe": {"min_history": f"{24}h"}}))
    assert kept.symbols == every.symbols
    with pytest.raises(SpecError, match="universe.symbols: unknown symbol 'ZZZUSDT'"):
        config_from_document(merge(base, {"universe": {"symbols": ["ZZZUSDT"]}}))
    with pytest.raises(SpecError, match=r"data.path: .* is not a folder"):
        config_from_document({"data": {"source": "files", "path": "/nonexistent/x"}})
    assert HOUR  # the helpers above use hour units


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_example_spec_runs_on_the_demo_data(path: Path, tmp_path: Path) -> None:
    doc = load_spec(path)
    # two days of three symbols keep the suite fast; everything else is the file's
    short = merge(
        doc,
        {
            "data": {"end": "2024-01-03"},
            "universe": {"symbols": ["SYN00USDT", "SYN01USDT", "SYN02USDT"]},
            "run": {"backend": "local"},
        },
    )
    spec = parse_spec(short)
    points = expand_grid(spec)
    for k, params in enumerate(points[:2]):  # a grid's first two points
        res = run_backtest(build_run(spec, params), tmp_path / f"r{k}")
        assert (res.out / "metrics.json").exists()
        fills = pq.read_table(res.out / "fills.parquet")
        assert fills.num_rows > 0, f"{path.name} traded nothing"


def test_cli_runs_a_spec_file_and_flags_override_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "run.json"
    spec.write_text(
        json.dumps(
            {
                "data": {"source": "demo", "end": "2024-01-02"},
                "universe": {"symbols": ["SYN00USDT", "SYN01USDT"]},
                "strategy": {"name": "momentum", "params": {"window": 30, "threshold": 0.004}},
                "run": {"backend": "local"},
            }
        )
    )
    rc = main(["backtest", str(spec), "--out", str(tmp_path / "a"), "--quiet"])
    assert rc == 0
    rc = main(
        ["backtest", str(spec), "--param", "window=31", "--out", str(tmp_path / "b"), "--quiet"]
    )
    assert rc == 0
    run_a = json.loads((tmp_path / "a" / "run.json").read_text())
    run_b = json.loads((tmp_path / "b" / "run.json").read_text())
    assert json.dumps(run_a, sort_keys=True).count('"window": 30') >= 1
    assert (
        json.dumps(run_b, sort_keys=True).count('"window": "31"')
        + json.dumps(run_b, sort_keys=True).count('"window": 31')
        >= 1
    )
    assert results_digest(tmp_path / "a") != results_digest(tmp_path / "b")
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nsource = "demo"\nintervl = "1m"\n')
    capsys.readouterr()
    rc = main(["backtest", str(bad), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "data.intervl: unknown key" in err
    assert not (tmp_path / "c").exists()
    broken = tmp_path / "broken.toml"
    broken.write_text("[data\n")
    rc = main(["backtest", str(broken), "--out", str(tmp_path / "d")])
    assert rc == 2 and "does not parse" in capsys.readouterr().err


def test_sweep_runs_every_grid_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "grid.toml"
    spec.write_text(
        "[data]\nsource = 'demo'\nend = '2024-01-02'\n"
        "[universe]\nsymbols = ['SYN00USDT']\n"
        "[strategy]\nname = 'momentum'\nparams = { window = [20, 40], threshold = 0.004 }\n"
    )
    rc = main(["sweep", str(spec), "--out", str(tmp_path / "s")])
    assert rc == 0
    rows = json.loads((tmp_path / "s" / "sweep.json").read_text())["rows"]
    assert [r["params"] for r in sorted(rows, key=lambda r: r["run"])] == [
        {"threshold": 0.004, "window": 20},
        {"threshold": 0.004, "window": 40},
    ]
    assert (tmp_path / "s" / "0001" / "metrics.json").exists()
    assert "sweep of 2 runs of momentum" in capsys.readouterr().out


def test_the_spec_reference_in_docs_is_generated_from_the_schema() -> None:
    """docs/spec.md documents every key and nothing else (regenerate with
    ``python -m tickray.cluster.spec > docs/spec.md``)."""
    assert (ROOT / "docs" / "spec.md").read_text(encoding="utf-8") == reference_markdown() + "\n"


def test_execution_latency_delays_the_fill_to_the_next_bar(tmp_path: Path) -> None:
    from conftest import write_bar_rows

    root = tmp_path / "data"
    t0 = parse_time("2024-05-01")
    bars = [(100.0, 100.0, 100.0, 100.0), (100.0, 102.0, 100.0, 102.0)]
    bars += [(102.0 + k, 102.0 + k, 102.0 + k, 102.0 + k) for k in range(1, 4)]
    write_bar_rows(root, "AAAUSDT", t0, bars)
    doc: dict[str, Any] = {
        "data": {"source": "files", "path": str(root)},
        "strategy": {"name": "momentum", "params": {"window": 1, "threshold": 0.01}},
        "account": {"taker_fee": 0.0, "price_buffer": 0.0},
    }
    prices = []
    for k, latency in enumerate([None, {"submit": "2s"}]):
        d = merge(doc, {"execution": {"latency": latency}}) if latency else doc
        res = run_backtest(config_from_document(d), tmp_path / f"o{k}")
        prices.append(pq.read_table(res.out / "fills.parquet").column("price").to_pylist()[0])
    # decided at bar 1's close (102): without latency it fills at bar 2's open (103); the
    # order arriving 2 s later misses that open and fills at bar 3's (104)
    assert prices == [103.0, 104.0]
    with pytest.raises(ConfigError, match="execution.latency: latency.submit must be a duration"):
        config_from_document(merge(doc, {"execution": {"latency": {"submit": "soon"}}}))


def test_the_run_address_key_reaches_the_backend(
    small_universe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickray.cluster import runner

    seen: list[str | None] = []
    real = runner.make_backend

    def spy(name: str, address: str | None = None, *args: Any) -> Any:
        seen.append(address)
        return real("local", None, *args)

    monkeypatch.setattr(runner, "make_backend", spy)
    doc = {
        "data": {"source": "files", "path": str(small_universe)},
        "run": {"address": "10.0.0.7:6379", "backend": "ray"},
    }
    config = config_from_document(doc)
    assert config.address == "10.0.0.7:6379"
    run_backtest(config, tmp_path / "a")
    run_backtest(config, tmp_path / "b", address="10.0.0.8:6379")  # the flag wins
    assert seen == ["10.0.0.7:6379", "10.0.0.8:6379"]
