"""The Python API: tickray.run on a dict, a file and a RunConfig; tickray.load gives it back."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import tickray
from tickray.engine.config import ConfigError
from tickray.engine.spec import SpecError

DOC = {
    "data": {"source": "demo", "end": "2024-01-02"},
    "universe": {"symbols": ["SYN00USDT", "SYN01USDT"]},
    "strategy": {"name": "momentum", "params": {"window": 30, "threshold": 0.004}},
}


def test_run_load_and_the_result(tmp_path: Path) -> None:
    res = tickray.run(DOC, out=tmp_path / "a")
    assert isinstance(res, tickray.Result)
    fills = res.fills()
    assert len(fills) > 0 and str(fills.ts.dt.tz) == "UTC"
    eq = res.equity()
    assert list(eq.columns[:3]) == ["ts", "equity", "cash"]
    assert res.portfolio.total_return == pytest.approx(res.metrics["portfolio"]["total_return"])
    assert res.symbol("SYN00USDT").fills == res.metrics["symbols"]["SYN00USDT"]["fills"]
    summary = res.summary()
    assert list(summary.index) == ["SYN00USDT", "SYN01USDT", "PORTFOLIO"]
    assert isinstance(res.decisions(), pd.DataFrame)
    assert res.report().name == "report.html"
    assert tickray.load(res.out) == res
    with pytest.raises(KeyError, match="no symbol 'NOPE'"):
        res.symbol("NOPE")


def test_run_takes_a_file_and_overrides(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(DOC))
    a = tickray.run(spec, out=tmp_path / "a")
    b = tickray.run(tickray.run.__globals__["config_from_document"](DOC), out=tmp_path / "b")
    assert a.metrics == b.metrics
    assert a.run_info["config"]["backend"] == "local"


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="strategy.params.window: must be an integer >= 1"):
        tickray.run({"strategy": {"params": {"window": "x"}}}, out=tmp_path / "x")
    with pytest.raises(
        TypeError, match="spec: expected a spec file path, a dict, a RunSpec or a RunConfig"
    ):
        tickray.run(42, out=tmp_path / "y")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="spec: .* is not a file"):
        tickray.run(tmp_path / "missing.toml", out=tmp_path / "z")
    with pytest.raises(FileNotFoundError, match="not a finished results folder"):
        tickray.load(tmp_path)
