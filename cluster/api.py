"""The Python API: ``tickray.run(spec)`` and ``tickray.load(folder)``, both giving a :class:`Result`.

``run`` takes what ``tickray backtest`` takes: a spec file path (TOML or
JSON), a spec document (a dict), or a finished
:class:`~tickray.engine.config.RunConfig`; the same checks run and the same
errors come back (``SpecError`` / ``ConfigError`` naming the key). Keyword
overrides set the common run keys without editing the spec: ``backend``,
``out`` (the results folder; default ``results/run-<time>-<id>``) and
``progress``.

A :class:`Result` reads the results folder lazily: each table comes as a
pandas DataFrame with UTC timestamps (``fills()``, ``orders()``, ...) or as an
Arrow table (``table(name)``); ``metrics`` is the ``metrics.json`` dict and
``portfolio`` / ``symbol(name)`` typed views of it
(:class:`~tickray.engine.metrics.Metrics`); ``summary()`` is the headline
table; ``report()`` writes the HTML report and returns its path.
``load(folder)`` gives the same Result back from a finished run's folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tickray.cluster.runner import RunResult, run_backtest
from tickray.cluster.spec import build_run, config_from_document, load_spec, merge
from tickray.engine.config import RunConfig
from tickray.engine.metrics import Metrics
from tickray.engine.spec import RunSpec
from tickray.engine.strategies import check_strategy_class, register_strategy, user_strategies

TABLES = (
    "fills",
    "orders",
    "positions",
    "equity",
    "symbol_equity",
    "marks",
    "funding",
    "liquidations",
    "risk",
    "risk_events",
)
"""The Parquet files a results folder may hold (funding and liquidations: perpetuals)."""


class Result:
    """A finished run's results (see the module doc). ``out`` is its folder."""

    def __init__(self, out: str | Path, run: RunResult | None = None) -> None:
        self.out = Path(out)
        if not (self.out / "metrics.json").is_file():
            raise FileNotFoundError(
                f"{self.out} is not a finished results folder (no metrics.json)"
            )
        self.metrics: dict[str, Any] = json.loads((self.out / "metrics.json").read_text())
        self.run_info: dict[str, Any] = json.loads((self.out / "run.json").read_text())
        self.wall_seconds = run.wall_seconds if run is not None else None

    @property
    def complete(self) -> bool:
        """False for a run stopped early (Ctrl-C): its tables end at :attr:`reached`."""
        return "incomplete" not in self.metrics

    @property
    def reached(self) -> str | None:
        """Where an incomplete run stopped (ISO-8601 UTC simulated time); None when complete."""
        info = self.metrics.get("incomplete")
        return str(info["reached"]) if isinstance(info, dict) else None

    def __repr__(self) -> str:
        p = self.metrics["portfolio"]
        return (
            f"Result({str(self.out)!r}, return {p['total_return']:.2%}, "
            f"sharpe {p['sharpe']}, trades {p['trades']})"
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Result)
            and self.metrics == other.metrics
            and all(self._equal(name, other) for name in TABLES)
        )

    def _equal(self, name: str, other: Result) -> bool:
        a, b = self.out / f"{name}.parquet", other.out / f"{name}.parquet"
        if a.exists() != b.exists():
            return False
        return not a.exists() or a.read_bytes() == b.read_bytes()

    # -- tables --------------------------------------------------------------------------
    def table(self, name: str) -> pa.Table:
        """One results file as an Arrow table (an empty table for a file the run has not)."""
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
        path = self.out / f"{name}.parquet"
        return pq.read_table(path) if path.exists() else pa.table({})

    def frame(self, name: str) -> pd.DataFrame:
        """One results file as a DataFrame; times are tz-aware UTC timestamps."""
        frame: pd.DataFrame = self.table(name).to_pandas()
        return frame

    def fills(self) -> pd.DataFrame:
        return self.frame("fills")

    def orders(self) -> pd.DataFrame:
        return self.frame("orders")

    def positions(self) -> pd.DataFrame:
        return self.frame("positions")

    def equity(self) -> pd.DataFrame:
        """Portfolio equity, cash and gross exposure per step boundary."""
        return self.frame("equity")

    def symbol_equity(self) -> pd.DataFrame:
        return self.frame("symbol_equity")

    def decisions(self) -> pd.DataFrame:
        """The portfolio's resizes and rejections (and the risk rules'), with reasons."""
        o = self.orders()
        if o.empty:
            return o
        return o[(o.status == "REJECTED") | ((o.status == "ACCEPTED") & (o.reason != ""))]

    def risk(self) -> pd.DataFrame:
        return self.frame("risk")

    # -- metrics -------------------------------------------------------------------------
    @property
    def portfolio(self) -> Metrics:
        """The portfolio's metrics, typed."""
        return _metrics(self.metrics["portfolio"])

    def symbol(self, name: str) -> Metrics:
        """One symbol's metrics, typed."""
        try:
            return _metrics(self.metrics["symbols"][name])
        except KeyError:
            known = ", ".join(sorted(self.metrics["symbols"]))
            raise KeyError(f"no symbol {name!r} in this run (symbols: {known})") from None

    def summary(self) -> pd.DataFrame:
        """Return, Sharpe, max drawdown, trades and fees per symbol and for the portfolio."""
        cols = ["total_return", "sharpe", "max_drawdown", "trades", "fees"]
        rows = {s: {c: m.get(c) for c in cols} for s, m in self.metrics["symbols"].items()}
        rows["PORTFOLIO"] = {c: self.metrics["portfolio"].get(c) for c in cols}
        return pd.DataFrame.from_dict(rows, orient="index")[cols]

    def report(self) -> Path:
        """Write the offline HTML report (again) and return its path."""
        from tickray.cluster.report import write_report

        return write_report(self.out)


def _metrics(d: dict[str, Any]) -> Metrics:
    names = {f.name for f in fields(Metrics)}
    values: dict[str, Any] = {k: v for k, v in d.items() if k in names}
    for f in fields(Metrics):
        if values.get(f.name) is None and f.type == "float":
            values[f.name] = float("nan")  # metrics.json writes NaN as null
    return Metrics(**values)


def run(
    spec: str | Path | Mapping[str, Any] | RunSpec | RunConfig | None = None,
    *,
    strategy: str | type | None = None,
    params: Mapping[str, Any] | None = None,
    backend: str | None = None,
    out: str | Path | None = None,
    progress: bool | None = None,
    address: str | None = None,
) -> Result:
    """Run a backtest and return its :class:`Result`; see the module doc.

    ``spec``: a spec file path, a spec dict, a checked :class:`RunSpec`, a
    :class:`RunConfig`, or None (the demo data with the default strategy).
    ``strategy``: a registered name, or a strategy class (registered here if it is not
    yet, so a class from a notebook cell runs as is); ``params`` its parameters
    (merged over the spec's). ``backend``: ``"local"`` (in-process) or ``"ray"``.
    ``progress``: None shows a bar where one can be seen (a terminal or a notebook;
    never in CI or a log), False never. Ctrl-C stops at the next step: the Result of
    the part done comes back with ``complete`` False.
    """
    name: str | None = None
    if strategy is not None:
        if isinstance(strategy, str):
            name = strategy
        else:
            name, _ = check_strategy_class(strategy)
            if user_strategies().get(name) is not strategy:
                register_strategy(strategy)
    if spec is None:
        spec = {"data": {"source": "demo"}}
    if isinstance(spec, RunConfig):
        config = spec
        if name is not None or params is not None:
            strat = config.strategy
            new_name = name or strat.name
            base = strat.params if new_name == strat.name else {}
            config = replace(
                config,
                strategy=replace(strat, name=new_name, params=dict(base) | dict(params or {})),
            )
        if backend is not None:
            config = replace(config, backend=backend)
    elif isinstance(spec, RunSpec):
        if name is not None or backend is not None:
            raise TypeError(
                "run: strategy= and backend= apply to a spec file or dict; a checked "
                "RunSpec is run as it is"
            )
        config = build_run(spec, params)
    else:
        if isinstance(spec, str | Path):
            doc = load_spec(spec)
        elif isinstance(spec, Mapping):
            doc = dict(spec)
        else:
            raise TypeError(
                "spec: expected a spec file path, a dict, a RunSpec or a RunConfig, "
                f"got {type(spec).__name__}"
            )
        over: dict[str, Any] = {}
        if backend is not None:
            over["run"] = {"backend": backend}
        if name is not None or params is not None:
            raw = doc.get("strategy")
            section: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
            if name is not None and section.get("name") not in (None, name):
                section.pop("params", None)  # the spec's parameters belong to another strategy
            if name is not None:
                section["name"] = name
            section["params"] = dict(section.get("params") or {}) | dict(params or {})
            over["strategy"] = section
        config = config_from_document(merge(doc, over) if over else doc)
    if out is None:
        from tickray.cluster.cli import default_out

        out = default_out()
    res = run_backtest(config, Path(out), address=address, progress=progress)
    return Result(res.out, res)


def load(folder: str | Path) -> Result:
    """The Result of a finished run's folder."""
    return Result(folder)
