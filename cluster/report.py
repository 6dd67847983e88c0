"""A self-contained HTML report of a results folder: one file that opens offline.

``write_report(folder)`` reads what the recorder wrote (``equity.parquet``,
``symbol_equity.parquet``, ``fills.parquet``, ``orders.parquet``,
``metrics.json``, ``run.json``, and when present ``funding.parquet`` and
``liquidations.parquet``) and writes ``<folder>/report.html``: the run's
settings, the portfolio metrics, the equity and drawdown charts, each symbol's
results, funding and liquidations, the fills and the orders' rejections.

The page references nothing outside itself (no scripts, fonts, images or
links off the page): the charts are SVG drawn here and the styles are inline.
Curves longer than ``MAX_POINTS`` are reduced by keeping the lowest and the
highest point of each bucket, so no drawdown disappears from a chart. All
times are UTC. The same folder always renders to the same text (no
generation time is written), so reports can be diffed.

Metrics are shown whatever keys ``metrics.json`` holds: known keys get their
format (percent, ratio, money, count, time, duration), other keys are shown
as written, and null is ``n/a``.

Example::

    from tickray.cluster.report import write_report

    path = write_report("results/run-20240101-000000-ab12")  # .../report.html

or from a shell: ``python -m tickray.cluster.report results/run-... [--out FILE]``.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tickray.engine.clock import DAY, HOUR, MINUTE, SECOND, ceil_to, iso

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MAX_POINTS = 2000
"""Most points drawn per curve (each bucket keeps its lowest and highest point)."""
SPARK_POINTS = 200
"""Most points of a symbol's equity sparkline."""
MAX_ROWS = 1000
"""Fills or liquidations beyond this many show only the first and last ``EDGE_ROWS``."""
EDGE_ROWS = 500
MAX_REASONS = 200
"""Most order events with a reason (rejections, cancellations) listed."""

PERCENT_KEYS = frozenset(
    {
        "total_return",
        "annual_return",
        "benchmark_return",
        "alpha",
        "volatility",
        "max_drawdown",
        "win_rate",
        "exposure",
    }
)
RATIO_KEYS = frozenset({"sharpe", "sortino", "calmar", "profit_factor", "beta", "turnover"})
MONEY_KEYS = frozenset(
    {
        "initial",
        "final",
        "fees",
        "expectancy",
        "avg_win",
        "avg_loss",
        "funding",
        "realized_pnl",
        "traded_notional",
    }
)
COUNT_KEYS = frozenset({"trades", "fills", "liquidations", "orders", "rejections"})
TIME_KEYS = frozenset({"max_drawdown_peak", "max_drawdown_trough", "max_drawdown_recovery"})
PLAIN_KEYS = frozenset({"final_position", "periods_per_year"})
SIGNED_KEYS = frozenset(
    {"total_return", "annual_return", "benchmark_return", "alpha", "expectancy", "realized_pnl"}
)
"""Keys whose sign is good or bad news, coloured green or red."""

LABELS: Mapping[str, str] = {
    "initial": "Initial equity",
    "final": "Final equity",
    "total_return": "Total return",
    "annual_return": "Annual return",
    "benchmark_return": "Benchmark return",
    "alpha": "Alpha",
    "beta": "Beta",
    "volatility": "Volatility",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "calmar": "Calmar",
    "max_drawdown": "Max drawdown",
    "max_drawdown_peak": "Drawdown peak",
    "max_drawdown_trough": "Drawdown trough",
    "max_drawdown_recovery": "Drawdown recovery",
    "max_drawdown_duration_ns": "Drawdown duration",
    "longest_drawdown_ns": "Longest drawdown",
    "trades": "Trades",
    "fills": "Fills",
    "win_rate": "Win rate",
    "profit_factor": "Profit factor",
    "expectancy": "Expectancy",
    "avg_win": "Average win",
    "avg_loss": "Average loss",
    "exposure": "Exposure",
    "traded_notional": "Traded notional",
    "turnover": "Turnover",
    "fees": "Fees",
    "funding": "Funding paid",
    "liquidations": "Liquidations",
    "final_position": "Final position",
    "periods_per_year": "Periods per year",
}
"""Display names, in display order; other keys follow in alphabetical order."""

_ORDER = {key: i for i, key in enumerate(LABELS)}
_HEADLINE = ("total_return", "annual_return", "sharpe", "max_drawdown", "final", "trades")
_POS, _NEG, _LINE, _MUTED = "#1a7f37", "#cf222e", "#0969da", "#8c959f"
_MUTED_TEXT = "#59636e"


def format_metric(key: str, value: Any) -> str:
    """A metric's value as the report shows it.

    Percent for returns, volatility, drawdown, win rate and exposure (2
    decimals); 2 decimals for ratios; money with thousands separators and 2
    decimals; counts as integers; drawdown times as UTC date and time; keys
    ending in ``_ns`` as a duration (``3d 4h``). Null, NaN: ``n/a``. Other keys
    are shown as written.
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if key in PERCENT_KEYS:
        return f"{value * 100:,.2f}%"
    if key in RATIO_KEYS or key in MONEY_KEYS:
        return f"{value:,.2f}"
    if key in COUNT_KEYS:
        return f"{round(value):,}"
    if key in TIME_KEYS:
        return format_time(int(value))
    if key.endswith("_ns"):
        return format_span(int(value))
    if key in PLAIN_KEYS:
        return _plain(float(value))
    return str(value)


def format_time(ts: int) -> str:
    """ns UTC as ``2024-01-01 08:18:00`` (sub-second digits only when present)."""
    return iso(ts).replace("T", " ").removesuffix("Z")


def format_span(ns: int) -> str:
    """A duration in ns, to the two largest units: ``3d 4h``, ``2h 5m``, ``4m 10s``, ``0.25s``."""
    sign = "-" if ns < 0 else ""
    total = abs(ns) // SECOND
    days, rest = divmod(total, DAY // SECOND)
    hours, rest = divmod(rest, HOUR // SECOND)
    minutes, seconds = divmod(rest, MINUTE // SECOND)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {seconds}s"
    return f"{sign}{abs(ns) / SECOND:g}s"


def downsample(x: npt.NDArray[Any], y: F64, max_points: int = MAX_POINTS) -> tuple[Any, F64]:
    """At most ``max_points`` points of the curve ``(x, y)``, in order.

    The first and last points stay; the rest is cut into equal buckets, each
    keeping its lowest and its highest point, so every peak and trough of the
    full curve is still drawn.
    """
    n = len(y)
    if n <= max_points:
        return x, y
    if max_points < 4:
        raise ValueError(f"downsample: max_points must be >= 4, got {max_points}")
    buckets = (max_points - 2) // 2
    edges = np.linspace(1, n - 1, buckets + 1).astype(np.int64)
    keep = [0, n - 1]
    for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if b > a:
            seg = y[a:b]
            keep += [a + int(np.argmin(seg)), a + int(np.argmax(seg))]
    idx = np.unique(np.asarray(keep, dtype=np.int64))
    return x[idx], y[idx]


def render_report(folder: str | os.PathLike[str]) -> str:
    """The report of the results folder ``folder`` as one HTML document."""
    run = _load(Path(folder))
    sections = [
        _summary(run),
        _equity_section(run),
        _drawdown_section(run),
        _symbols_section(run),
        _risk_section(run),
        _funding_section(run),
        _liquidations_section(run),
        _fills_section(run),
        _orders_section(run),
    ]
    present = [s for s in sections if s is not None]
    nav = " ".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in present)
    body = "\n".join(text for _, _, text in present)
    name = run.folder.name
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>tickray report: {_e(name)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<div class="page">\n{_header(run)}\n<nav>{nav}</nav>\n<main>\n{body}\n</main>\n'
        f"<footer>Generated by tickray from the results folder {_e(name)}. "
        "All times are UTC.</footer>\n</div>\n</body>\n</html>\n"
    )


def write_report(folder: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of ``folder`` to ``out`` (default: ``<folder>/report.html``) and
    return the path written.

    The file is written beside its final name and then renamed, so a reader
    never sees half a report.
    """
    text = render_report(folder)
    path = Path(out) if out is not None else Path(folder) / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Run:
    folder: Path
    info: dict[str, Any]
    portfolio: dict[str, Any]
    symbols: dict[str, dict[str, Any]]
    ts: I64
    equity: F64
    symbol_ts: I64
    symbol_equity: dict[str, F64]
    fills: pa.Table | None
    orders: pa.Table | None
    funding: pa.Table | None
    liquidations: pa.Table | None
    balances: dict[str, Any] = field(default_factory=dict)
    risk: pa.Table | None = None
    risk_events: pa.Table | None = None
    risk_summary: dict[str, Any] = field(default_factory=dict)
    # decimals per symbol, looked up once (a table cell asks for every row)
    _decimals: dict[str, tuple[int | None, int | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def config(self) -> dict[str, Any]:
        return _dict(self.info.get("config"))

    def decimals(self, symbol: str) -> tuple[int | None, int | None]:
        """(price decimals, quantity decimals) from the run's symbol specs, when known."""
        known = self._decimals.get(symbol)
        if known is None:
            known = self._decimals[symbol] = self._spec_decimals(symbol)
        return known

    def _spec_decimals(self, symbol: str) -> tuple[int | None, int | None]:
        specs = self.config.get("specs")
        spec = specs.get(symbol) if isinstance(specs, dict) else None
        if not isinstance(spec, dict):
            return None, None
        p, q = spec.get("price_decimals"), spec.get("qty_decimals")
        return (p if isinstance(p, int) else None, q if isinstance(q, int) else None)


def _load(folder: Path) -> _Run:
    if not folder.is_dir():
        raise FileNotFoundError(f"report: {folder} is not a folder")
    for required in ("metrics.json", "equity.parquet"):
        if not (folder / required).is_file():
            raise FileNotFoundError(
                f"report: {folder} is not a finished results folder (no {required})"
            )
    metrics = _read_json(folder / "metrics.json")
    info = _read_json(folder / "run.json") if (folder / "run.json").is_file() else {}
    portfolio = metrics.get("portfolio")
    symbols = metrics.get("symbols")
    equity = pq.read_table(folder / "equity.parquet")
    ts, eq = _timestamps(equity), _floats(equity, "equity")
    sym_table = _read_optional(folder / "symbol_equity.parquet")
    sym_ts = _timestamps(sym_table) if sym_table is not None else np.zeros(0, np.int64)
    sym_eq = {
        name: _floats(sym_table, name)
        for name in (sym_table.column_names if sym_table is not None else [])
        if name != "ts"
    }
    return _Run(
        folder=folder,
        info=info,
        portfolio=portfolio if isinstance(portfolio, dict) else {},
        symbols={str(k): v for k, v in _dict(symbols).items() if isinstance(v, dict)},
        ts=ts,
        equity=eq,
        symbol_ts=sym_ts,
        symbol_equity=sym_eq,
        fills=_read_optional(folder / "fills.parquet"),
        orders=_read_optional(folder / "orders.parquet"),
        funding=_read_optional(folder / "funding.parquet"),
        liquidations=_read_optional(folder / "liquidations.parquet"),
        balances=_dict(metrics.get("balances")),
        risk=_read_optional(folder / "risk.parquet"),
        risk_events=_read_optional(folder / "risk_events.parquet"),
        risk_summary=_dict(metrics.get("risk")),
    )


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"report: {path}: expected a JSON object")
    return data


def _read_optional(path: Path) -> pa.Table | None:
    return pq.read_table(path) if path.is_file() else None


def _timestamps(table: pa.Table) -> I64:
    if "ts" not in table.column_names:
        return np.zeros(table.num_rows, np.int64)
    return np.asarray(table.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)


def _floats(table: pa.Table, name: str) -> F64:
    col = pc.fill_null(table.column(name).cast(pa.float64()), math.nan)
    return np.asarray(col.to_numpy(), dtype=np.float64)


def _column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist() if name in table.column_names else []


# ---------------------------------------------------------------- text helpers


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _plain(v: float) -> str:
    """A quantity or price with up to 8 significant digits and no exponent."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    digits = max(0, min(12, 7 - math.floor(math.log10(abs(v)))))
    text = f"{v:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fixed(v: Any, decimals: int | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:,.{decimals}f}" if decimals is not None else _plain(float(v))


def _money(v: Any, decimals: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:,.{decimals}f}"


def _sign_class(v: Any) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool) or math.isnan(v):
        return ""
    return "pos" if v > 0 else "neg" if v < 0 else ""


def _label(key: str) -> str:
    return LABELS.get(key) or key.replace("_", " ")


def _metric_keys(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    """Keys with scalar values, known ones in display order, then the rest alphabetically."""
    keys = {k for d in dicts for k, v in d.items() if not isinstance(v, dict | list)}
    return sorted(keys, key=lambda k: (_ORDER.get(k, len(_ORDER)), k))


def _classes(*names: str) -> str:
    return " ".join(n for n in names if n)


def _metric_cell(key: str, value: Any) -> str:
    cls = _classes("num", _sign_class(value) if key in SIGNED_KEYS else "")
    return f'<td class="{cls}" data-key="{_e(key)}">{_e(format_metric(key, value))}</td>'


def _td(text: str, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>"


def _thead(titles: Sequence[tuple[str, bool]]) -> str:
    cells = "".join(
        f'<th class="num">{_e(t)}</th>' if num else f"<th>{_e(t)}</th>" for t, num in titles
    )
    return f"<thead><tr>{cells}</tr></thead>"


def _section(sid: str, title: str, inner: str) -> tuple[str, str, str]:
    return sid, title, f'<section id="{sid}">\n<h2>{_e(title)}</h2>\n{inner}\n</section>'


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# ---------------------------------------------------------------- header and metrics


def _header(run: _Run) -> str:
    cfg = run.config
    strategy = _dict(cfg.get("strategy"))
    name = strategy.get("name") or "strategy"
    params = _dict(strategy.get("params"))
    param_text = ", ".join(f"{k}={_param(v)}" for k, v in params.items()) or "defaults"
    symbols = list(run.symbols) or list(run.symbol_equity)
    rows: list[tuple[str, str]] = [
        ("Strategy", str(name)),
        ("Parameters", param_text),
        ("Symbols", f"{len(symbols)}: {', '.join(symbols)}"),
        ("Start", _run_time(run.info.get("start"))),
        ("End", _run_time(run.info.get("end"))),
        ("Bar interval", str(run.info.get("interval", "n/a"))),
        ("Step (sync)", str(run.info.get("sync", "n/a"))),
    ]
    account = _account(cfg)
    if account:
        rows.append(("Account", account))
    if "backend" in cfg:
        rows.append(("Backend", str(cfg["backend"])))
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in rows)
    return (
        f'<header id="run">\n<h1>Backtest report: {_e(name)} on {len(symbols)} '
        f"symbol{'' if len(symbols) == 1 else 's'}</h1>\n"
        f'<p class="sub">{_e(run.folder.name)}</p>\n<dl class="info">{items}</dl>\n</header>'
    )


def _account(cfg: Mapping[str, Any]) -> str:
    """The account's kind: ``account.kind`` when the config names it, else told from ``perp``."""
    account = _dict(cfg.get("account"))
    if "kind" in account:
        return str(account["kind"])
    if "perp" not in cfg:
        return ""
    perp = cfg.get("perp")
    if not isinstance(perp, dict):
        return "spot, shorts on margin" if account.get("allow_short") else "spot"
    text = "USD-M perpetual"
    if "margin_mode" in perp:
        text += f", {perp['margin_mode']} margin"
    if isinstance(perp.get("leverage"), int | float):
        text += f", leverage {perp['leverage']:g}x"
    return text


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _param(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _run_time(v: Any) -> str:
    return v.replace("T", " ").removesuffix("Z") if isinstance(v, str) else "n/a"


def _summary(run: _Run) -> tuple[str, str, str]:
    m = run.portfolio
    cards = "".join(
        f'<div class="card" data-key="{k}"><div class="label">{_e(_label(k))}</div>'
        f'<div class="{_classes("value", _sign_class(m[k]) if k in SIGNED_KEYS else "")}">'
        f"{_e(format_metric(k, m[k]))}</div></div>"
        for k in _HEADLINE
        if k in m
    )
    keys = _metric_keys([m])
    half = (len(keys) + 1) // 2
    tables = "".join(
        '<table class="kv">'
        + "".join(
            f'<tr data-key="{_e(k)}"><th>{_e(_label(k))}</th>{_metric_cell(k, m[k])}</tr>'
            for k in part
        )
        + "</table>"
        for part in (keys[:half], keys[half:])
        if part
    )
    inner = (
        f'<div class="cards">{cards}</div>\n'
        f'<div class="kv-grid" id="portfolio-metrics">{tables}</div>'
    )
    if not keys:
        inner += _note("metrics.json has no portfolio metrics.")
    cash = [(str(a), v) for a, v in run.balances.items() if isinstance(v, int | float)]
    if cash:
        rows = "".join(
            f'<tr data-asset="{_e(a)}"><th>{_e(a)}</th><td class="num">{_e(f"{v:,.8g}")}</td></tr>'
            for a, v in cash
        )
        inner += (
            f'\n<h3>Cash at the end, per asset</h3>\n<table class="kv" id="balances">{rows}</table>'
        )
    return _section("portfolio", "Portfolio", inner)


# ---------------------------------------------------------------- charts

_W, _H = 960, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 84, 16, 12, 28
_TICK_STEPS = (
    [s * SECOND for s in (1, 5, 15, 30)]
    + [m * MINUTE for m in (1, 5, 15, 30)]
    + [h * HOUR for h in (1, 2, 3, 6, 12)]
    + [d * DAY for d in (1, 2, 7, 14, 28, 91, 182, 364)]
)


def _time_ticks(t0: int, t1: int, most: int = 7) -> tuple[list[int], str]:
    """Round times between t0 and t1 (at most ``most``) and their strftime format."""
    span = t1 - t0
    if span <= 0:
        return [t0], "%Y-%m-%d %H:%M"
    step = next((s for s in _TICK_STEPS if span / s <= most - 1), 0)
    if not step:
        step = -(-span // ((most - 1) * 364 * DAY)) * 364 * DAY
    fmt = "%Y-%m-%d" if step >= DAY else "%m-%d %H:%M" if step >= MINUTE else "%H:%M:%S"
    return list(range(ceil_to(t0, step), t1 + 1, step)), fmt


def _line_chart(
    chart_id: str,
    label: str,
    ts: I64,
    y: F64,
    fmt: Callable[[float], str],
    *,
    baseline: float | None = None,
    area: bool = False,
) -> str:
    """An SVG line chart of ``y`` over time, min and max labelled, with date ticks.

    ``baseline`` draws a dashed reference level (and ``area`` fills between the
    curve and it). ``fmt`` formats the y labels.
    """
    ok = np.isfinite(y)
    ts, y = ts[ok], y[ok]
    if len(y) == 0:
        return _note(f"No data for the {label.lower()}.")
    xs, ys = downsample(ts, y, MAX_POINTS)
    t0, t1 = int(ts[0]), int(ts[-1])
    lo, hi = float(y.min()), float(y.max())
    r_lo = min(lo, baseline) if baseline is not None else lo
    r_hi = max(hi, baseline) if baseline is not None else hi
    pad = (r_hi - r_lo) * 0.06 or (abs(r_hi) * 0.01 or 1.0)
    r_lo, r_hi = r_lo - pad, r_hi + pad
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def px(t: Any) -> Any:
        return _LEFT + (np.asarray(t, dtype=np.float64) - t0) / max(t1 - t0, 1) * pw

    def py(v: Any) -> Any:
        return _TOP + (r_hi - np.asarray(v, dtype=np.float64)) / (r_hi - r_lo) * ph

    parts = [
        f'<rect x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}" fill="none" stroke="#d1d9e0"/>'
    ]
    ticks, tfmt = _time_ticks(t0, t1)
    for t in ticks:
        x = float(px(t))
        anchor = "start" if x < _LEFT + 30 else "end" if x > _W - _RIGHT - 30 else "middle"
        text = datetime.fromtimestamp(t // SECOND, tz=UTC).strftime(tfmt)
        parts.append(
            f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_TOP + ph}" stroke="#eaeef2"/>'
            f'<text x="{x:.1f}" y="{_H - 8}" text-anchor="{anchor}">{_e(text)}</text>'
        )
    levels = {lo: "min", hi: "max"}
    for v in sorted(levels):
        yy = float(py(v))
        parts.append(
            f'<line x1="{_LEFT}" y1="{yy:.1f}" x2="{_LEFT + pw}" y2="{yy:.1f}" stroke="#eaeef2"/>'
            f'<text x="{_LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" '
            f'data-level="{levels[v]}">{_e(fmt(v))}</text>'
        )
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(xs), py(ys), strict=True))
    if baseline is not None:
        yb = float(py(baseline))
        if area:
            x_first, x_last = float(px(xs[0])), float(px(xs[-1]))
            parts.append(
                f'<polygon points="{x_first:.1f},{yb:.1f} {points} {x_last:.1f},{yb:.1f}" '
                f'fill="{_NEG}" fill-opacity="0.15" stroke="none"/>'
            )
        parts.append(
            f'<line x1="{_LEFT}" y1="{yb:.1f}" x2="{_LEFT + pw}" y2="{yb:.1f}" '
            'stroke="#59636e" stroke-dasharray="4 3"/>'
        )
    color = _NEG if area else _LINE
    parts.append(
        f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5" '
        'stroke-linejoin="round"/>'
    )
    return (
        f'<svg id="{chart_id}" class="chart" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{_e(label)}">{_svg_text(parts)}</svg>'
    )


def _svg_text(parts: Sequence[str]) -> str:
    """Chart elements in a group that sets the text style as SVG attributes, not page CSS,
    so that a chart copied out of the page (or a renderer without CSS) draws the same."""
    return (
        '<g font-family="system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif" '
        f'font-size="11" fill="{_MUTED_TEXT}" style="font-variant-numeric: tabular-nums">'
        f"{''.join(parts)}</g>"
    )


def _axis_money(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.2f}"


def _axis_percent(v: float) -> str:
    return f"{v * 100:,.2f}%"


def _curve(run: _Run) -> tuple[I64, F64]:
    """Portfolio equity over time, starting from the initial equity at the run's start."""
    start = run.config.get("start_ns")
    initial = run.portfolio.get("initial")
    ts, eq = run.ts, run.equity
    if (
        isinstance(start, int)
        and isinstance(initial, int | float)
        and (not len(ts) or start < ts[0])
    ):
        ts = np.concatenate(([start], ts)).astype(np.int64)
        eq = np.concatenate(([float(initial)], eq))
    return ts, eq


def _equity_section(run: _Run) -> tuple[str, str, str]:
    ts, eq = _curve(run)
    initial = run.portfolio.get("initial")
    base = float(initial) if isinstance(initial, int | float) else None
    chart = _line_chart("equity-chart", "Equity curve", ts, eq, _axis_money, baseline=base)
    ok = eq[np.isfinite(eq)]
    note = ""
    if len(ok):
        note = _note(
            f"Portfolio equity at each step's end: from {_money(float(ok[0]))} to "
            f"{_money(float(ok[-1]))}; lowest {_money(float(ok.min()))}, highest "
            f"{_money(float(ok.max()))}. The dashed line is the initial equity."
        )
    return _section("equity", "Equity curve", chart + "\n" + note)


def drawdown_curve(equity: F64) -> F64:
    """The underwater curve: equity / running peak - 1 (0 at a peak, -0.25 a quarter below)."""
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, equity / peak - 1.0, 0.0)


def _drawdown_section(run: _Run) -> tuple[str, str, str]:
    ts, eq = _curve(run)
    ok = np.isfinite(eq)
    dd = drawdown_curve(eq[ok])
    chart = _line_chart(
        "drawdown-chart", "Drawdown", ts[ok], dd, _axis_percent, baseline=0.0, area=True
    )
    deepest = float(-dd.min()) if len(dd) else 0.0
    note = _note(
        f"Fall below the running peak of equity; deepest {format_metric('max_drawdown', deepest)}."
    )
    return _section("drawdown", "Drawdown", chart + "\n" + note)


def _sparkline(ts: I64, y: F64) -> str:
    ok = np.isfinite(y)
    ts, y = ts[ok], y[ok]
    if len(y) < 2:
        return ""
    xs, ys = downsample(ts, y, SPARK_POINTS)
    w, h = 120, 28
    lo, hi = float(y.min()), float(y.max())
    span = (hi - lo) or 1.0
    x = 1 + (xs - xs[0]) / max(int(xs[-1] - xs[0]), 1) * (w - 2)
    yy = 2 + (hi - ys) / span * (h - 4) if hi > lo else np.full(len(ys), h / 2)
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, yy, strict=True))
    color = _POS if y[-1] > y[0] else _NEG if y[-1] < y[0] else _MUTED
    return (
        f'<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="equity"><polyline points="{points}" fill="none" stroke="{color}" '
        'stroke-width="1.2"/></svg>'
    )


def _bar_chart(items: Sequence[tuple[str, float | None]]) -> str:
    """Horizontal bars of each symbol's total return from a zero line, green up, red down."""
    row, top, label_w, value_w = 24, 8, 120, 78
    h = top * 2 + row * len(items)
    vals = [v for _, v in items if v is not None and math.isfinite(v)]
    lo, hi = min([0.0, *vals]), max([0.0, *vals])
    if hi == lo:
        hi = lo + 1.0
    x0, x1 = label_w + value_w, _W - value_w

    def px(v: float) -> float:
        return x0 + (v - lo) / (hi - lo) * (x1 - x0)

    zero = px(0.0)
    parts = [
        f'<line x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{h - top + 4}" '
        'stroke="#59636e"/>'
    ]
    for i, (name, v) in enumerate(items):
        y = top + i * row
        parts.append(
            f'<text x="{label_w - 8}" y="{y + row / 2 + 4:.1f}" text-anchor="end" '
            f'fill="#1f2328">{_e(name)}</text>'
        )
        if v is None or not math.isfinite(v):
            parts.append(f'<text x="{zero + 6:.1f}" y="{y + row / 2 + 4:.1f}">n/a</text>')
            continue
        end = px(v)
        left, width = min(zero, end), abs(end - zero)
        color = _POS if v > 0 else _NEG if v < 0 else _MUTED
        anchor, tx = ("start", end + 6) if v >= 0 else ("end", end - 6)
        parts.append(
            f'<rect x="{left:.1f}" y="{y + 4}" width="{max(width, 1.0):.1f}" height="{row - 8}" '
            f'fill="{color}" data-symbol="{_e(name)}"/>'
            f'<text x="{tx:.1f}" y="{y + row / 2 + 4:.1f}" text-anchor="{anchor}">'
            f"{_e(format_metric('total_return', v))}</text>"
        )
    return (
        f'<svg id="returns-chart" class="chart" viewBox="0 0 {_W} {h}" role="img" '
        f'aria-label="Total return by symbol">{_svg_text(parts)}</svg>'
    )


# ---------------------------------------------------------------- per symbol


def _symbols_section(run: _Run) -> tuple[str, str, str]:
    names = list(run.symbols) + [s for s in run.symbol_equity if s not in run.symbols]
    if not names:
        return _section("symbols", "Symbols", _note("No per-symbol results."))
    keys = _metric_keys(run.symbols.values())
    head = _thead([("Symbol", False), ("Equity", False)] + [(_label(k), True) for k in keys])
    rows = []
    for name in names:
        m = run.symbols.get(name, {})
        curve = run.symbol_equity.get(name)
        spark = _sparkline(run.symbol_ts, curve) if curve is not None else ""
        cells = "".join(_metric_cell(k, m.get(k)) for k in keys)
        rows.append(f'<tr data-symbol="{_e(name)}"><th>{_e(name)}</th><td>{spark}</td>{cells}</tr>')
    table = (
        f'<div class="scroll"><table id="symbol-metrics" class="data">{head}'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    returns = [(n, _number(run.symbols.get(n, {}).get("total_return"))) for n in names]
    inner = f"<h3>Total return</h3>\n{_bar_chart(returns)}\n<h3>Metrics</h3>\n{table}"
    return _section("symbols", "Symbols", inner)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


# ---------------------------------------------------------------- funding and liquidations


def _axis_times(v: float) -> str:
    return f"{v:,.2f}x"


def _risk_section(run: _Run) -> tuple[str, str, str] | None:
    """Gross leverage over time, the risk monitor's events and the decisions it made."""
    t = run.risk
    if t is None or t.num_rows == 0:
        return None
    ts, lev = _timestamps(t), _floats(t, "gross_leverage")
    ok = np.isfinite(lev)
    chart = _line_chart(
        "leverage-chart", "Gross leverage", ts[ok], lev[ok], _axis_times, baseline=0.0
    )
    summ = run.risk_summary
    facts = [
        f"max gross leverage {summ.get('max_gross_leverage', float('nan')):.2f}x",
        f"{summ.get('halts', 0)} halt(s)",
        f"entries blocked for {format_span(int(float(summ.get('time_blocked_s', 0)) * 1e9))}",
    ]
    if summ.get("kill_switch"):
        facts.append("the kill switch fired")
    rows = []
    ev = run.risk_events
    if ev is not None and ev.num_rows:
        for when, kind, value in zip(
            _timestamps(ev).tolist(), _column(ev, "kind"), _column(ev, "value"), strict=True
        ):
            rows.append(
                f"<tr><td>{_e(format_time(when))}</td><td>{_e(kind)}</td>"
                f"{_td(format_metric('max_drawdown', value), 'num')}</tr>"
            )
    events = (
        "<table>"
        + _thead([("Time", False), ("Event", False), ("Value", True)])
        + "<tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else _note("The risk monitor never halted entries.")
    )
    decided = 0
    if run.orders is not None and run.orders.num_rows:
        reasons = _column(run.orders, "reason")
        statuses = _column(run.orders, "status")
        decided = sum(
            1
            for st, r in zip(statuses, reasons, strict=True)
            if r and st in ("ACCEPTED", "REJECTED")
        )
    note = _note("; ".join(facts) + f"; {decided:,} orders resized or refused with a reason.")
    return _section("risk", "Risk", chart + "\n" + note + "\n" + events)


def _funding_section(run: _Run) -> tuple[str, str, str] | None:
    t = run.funding
    if t is None:
        return None
    if t.num_rows == 0:
        return _section("funding", "Funding", _note("No funding payments."))
    syms, pays, rates = _column(t, "symbol"), _column(t, "payment"), _column(t, "funding_rate")
    per: dict[str, list[tuple[float, float | None]]] = {}
    for s, p, r in zip(syms, pays or [None] * len(syms), rates or [None] * len(syms), strict=True):
        per.setdefault(str(s), []).append((p or 0.0, r))
    rows = []
    for s in sorted(per):
        ps = [p for p, _ in per[s]]
        rs = [r for _, r in per[s] if r is not None]
        rows.append(
            f'<tr data-symbol="{_e(s)}"><th>{_e(s)}</th>{_td(f"{len(ps):,}", "num")}'
            f"{_td(_money(sum(ps)), 'num')}{_td(_money(sum(p for p in ps if p > 0)), 'num')}"
            f"{_td(_money(-sum(p for p in ps if p < 0)), 'num')}"
            f"{_td(f'{sum(rs) / len(rs) * 100:.4f}%' if rs else 'n/a', 'num')}</tr>"
        )
    total = sum(p for v in per.values() for p, _ in v)
    head = _thead(
        [
            ("Symbol", False),
            ("Payments", True),
            ("Net paid", True),
            ("Paid", True),
            ("Received", True),
            ("Mean rate", True),
        ]
    )
    table = f'<table id="funding-table" class="data">{head}<tbody>{"".join(rows)}</tbody></table>'
    note = _note(
        f"{_count(t.num_rows, 'funding payment')}, net {_money(total)} paid. Positive amounts were "
        "paid by the position, negative received (longs pay shorts when the rate is positive)."
    )
    return _section("funding", "Funding", note + "\n" + table)


_LIQUIDATION_COLUMNS = (
    ("ts", "Time", False),
    ("symbol", "Symbol", False),
    ("side", "Side", False),
    ("qty", "Qty", True),
    ("price", "Price", True),
    ("mark_price", "Mark", True),
    ("fee", "Fee", True),
    ("realized_pnl", "Realized PnL", True),
)


def _liquidations_section(run: _Run) -> tuple[str, str, str] | None:
    t = run.liquidations
    if t is None:
        return None
    if t.num_rows == 0:
        return _section("liquidations", "Liquidations", _note("No liquidations."))
    fees = pc.sum(t.column("fee")).as_py() if "fee" in t.column_names else None
    pnl = pc.sum(t.column("realized_pnl")).as_py() if "realized_pnl" in t.column_names else None
    note = _note(
        f"{_count(t.num_rows, 'liquidation')}; fees {_money(fees or 0.0)}, "
        f"realized PnL {_money(pnl or 0.0)}."
    )
    table = _event_table("liquidations-table", run, t, _LIQUIDATION_COLUMNS, "liquidations")
    return _section("liquidations", "Liquidations", note + "\n" + table)


# ---------------------------------------------------------------- fills and orders

_FILL_COLUMNS = (
    ("ts", "Time", False),
    ("symbol", "Symbol", False),
    ("side", "Side", False),
    ("qty", "Qty", True),
    ("price", "Price", True),
    ("fee", "Fee", True),
    ("liquidity", "Liquidity", False),
    ("realized_pnl", "Realized PnL", True),
)


def _cell(run: _Run, key: str, row: Mapping[str, Any]) -> str:
    v = row.get(key)
    price_dec, qty_dec = run.decimals(str(row.get("symbol")))
    if key == "ts":
        return _td(format_time(v) if isinstance(v, int) else "")
    if key == "side":
        return _td(str(v or ""), "buy" if v == "BUY" else "sell" if v == "SELL" else "")
    if key in ("price", "mark_price"):
        return _td(_fixed(v, price_dec), "num")
    if key == "qty":
        return _td(_fixed(v, qty_dec), "num")
    if key == "fee":
        return _td(_money(v, 4), "num")
    if key == "realized_pnl":
        return _td(_money(v), _classes("num", _sign_class(v)))
    if key == "reason":
        return _td("" if v is None else str(v), "wrap")
    return _td("" if v is None else str(v))


def _rows(t: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts, with ``ts`` as int ns (exact, and no pandas objects)."""
    if "ts" in t.column_names:
        t = t.set_column(t.column_names.index("ts"), "ts", t.column("ts").cast(pa.int64()))
    rows: list[dict[str, Any]] = t.to_pylist()
    return rows


def _event_table(
    table_id: str,
    run: _Run,
    t: pa.Table,
    columns: Sequence[tuple[str, str, bool]],
    noun: str,
) -> str:
    """Rows of ``t``; beyond MAX_ROWS, the first and last EDGE_ROWS and a line for the rest.

    Only the ``columns`` that ``t`` has are shown (the files' schemas grow).
    """
    columns = [c for c in columns if c[0] in t.column_names]
    n = t.num_rows
    if n > MAX_ROWS:
        parts = [_rows(t.slice(0, EDGE_ROWS)), _rows(t.slice(n - EDGE_ROWS))]
    else:
        parts = [_rows(t)]
    left_out = n - sum(len(p) for p in parts)
    body: list[str] = []
    for i, rows in enumerate(parts):
        if i:
            body.append(
                f'<tr class="gap"><td colspan="{len(columns)}">'
                f"{left_out:,} {_e(noun)} left out</td></tr>"
            )
        for row in rows:
            cls = ' class="liq"' if row.get("liquidity") == "LIQUIDATION" else ""
            body.append(f"<tr{cls}>{''.join(_cell(run, key, row) for key, _, _ in columns)}</tr>")
    head = _thead([(title, num) for _, title, num in columns])
    text = (
        f'<div class="scroll tall"><table id="{table_id}" class="data">{head}'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
    if left_out:
        text = (
            _note(
                f"Showing the first {EDGE_ROWS:,} and the last {EDGE_ROWS:,} of {n:,} {noun}; "
                f"{left_out:,} left out."
            )
            + "\n"
            + text
        )
    return text


def _fills_section(run: _Run) -> tuple[str, str, str]:
    t = run.fills
    if t is None or t.num_rows == 0:
        return _section("trades", "Trades", _note("No fills."))
    kinds = (
        pc.value_counts(t.column("liquidity")).to_pylist() if "liquidity" in t.column_names else []
    )
    split = ", ".join(f"{k['counts']:,} {str(k['values']).lower()}" for k in kinds)
    fees = pc.sum(t.column("fee")).as_py() if "fee" in t.column_names else None
    pnl = pc.sum(t.column("realized_pnl")).as_py() if "realized_pnl" in t.column_names else None
    note = _note(
        f"{_count(t.num_rows, 'fill')} ({split}); fees {_money(fees or 0.0)}, "
        f"realized PnL {_money(pnl or 0.0)}."
    )
    table = _event_table("fills-table", run, t, _FILL_COLUMNS, "fills")
    return _section("trades", "Trades", note + "\n" + table)


_REASON_COLUMNS = (
    ("ts", "Time", False),
    ("symbol", "Symbol", False),
    ("order_id", "Order", True),
    ("status", "Status", False),
    ("side", "Side", False),
    ("type", "Type", False),
    ("qty", "Qty", True),
    ("reason", "Reason", False),
)


def _orders_section(run: _Run) -> tuple[str, str, str]:
    t = run.orders
    if t is None or t.num_rows == 0:
        return _section("orders", "Orders", _note("No orders."))
    inner: list[str] = []
    if "status" in t.column_names:
        counts = pc.value_counts(t.column("status")).to_pylist()
        cells = "".join(
            f"<tr><th>{_e(c['values'])}</th>{_td(format(c['counts'], ','), 'num')}</tr>"
            for c in counts
        )
        inner.append(
            _note(f"{_count(t.num_rows, 'order event')}, by status:")
            + f'<table id="order-status" class="kv">{cells}</table>'
        )
    if "reason" in t.column_names:
        has_reason = pc.fill_null(pc.not_equal(t.column("reason"), ""), False)
        why = t.filter(has_reason)
        if why.num_rows:
            shown = _rows(why.slice(0, MAX_REASONS))
            head = _thead([(title, num) for _, title, num in _REASON_COLUMNS])
            body = "".join(
                "<tr>"
                + "".join(
                    _td(str(r.get(k)), "num") if k == "order_id" else _cell(run, k, r)
                    for k, _, _ in _REASON_COLUMNS
                )
                + "</tr>"
                for r in shown
            )
            more = why.num_rows - len(shown)
            inner.append(
                "<h3>Order events with a reason (rejections, resizes, cancellations)</h3>\n"
                + (
                    _note(f"The first {len(shown):,} of {why.num_rows:,}; {more:,} left out.")
                    if more
                    else ""
                )
                + f'<div class="scroll tall"><table id="order-reasons" class="data">{head}'
                f"<tbody>{body}</tbody></table></div>"
            )
        else:
            inner.append(_note("No order was rejected or cancelled with a reason."))
    return _section("orders", "Orders", "\n".join(inner))


# ---------------------------------------------------------------- page style

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --border: #d1d9e0; --panel: #f6f8fa;
  --pos: #1a7f37; --neg: #cf222e; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
.page { max-width: 1200px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 2px; }
h2 { font-size: 17px; margin: 34px 0 12px; padding-bottom: 6px;
  border-bottom: 1px solid var(--border); }
h3 { font-size: 14px; margin: 18px 0 8px; color: var(--muted); font-weight: 600; }
.sub, .note, footer { color: var(--muted); }
.note { font-size: 13px; margin: 6px 0 10px; }
footer { margin-top: 40px; font-size: 12px; border-top: 1px solid var(--border);
  padding-top: 10px; }
nav { position: sticky; top: 0; z-index: 2; background: #fff; padding: 8px 0;
  border-bottom: 1px solid var(--border); margin-top: 16px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; font-size: 13px; }
nav a:hover { text-decoration: underline; }
dl.info { display: flex; flex-wrap: wrap; gap: 6px 24px; margin: 14px 0 0; }
dl.info div { display: flex; gap: 10px; flex: 1 1 320px; min-width: 0; }
dl.info dt { color: var(--muted); flex: 0 0 96px; }
dl.info dd { margin: 0; overflow-wrap: anywhere; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 14px; }
.card { flex: 1 1 150px; border: 1px solid var(--border); border-radius: 6px;
  padding: 10px 12px; background: var(--panel); }
.card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.kv-grid { display: flex; flex-wrap: wrap; gap: 0 36px; align-items: flex-start; }
.kv-grid table { flex: 1 1 330px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 13px; }
table.kv { width: 100%; }
table.kv th { text-align: left; font-weight: normal; color: var(--muted); }
th, td { padding: 4px 10px; border-bottom: 1px solid #eaeef2; white-space: nowrap; }
table.data { width: 100%; }
table.data thead th { position: sticky; top: 0; background: var(--panel); text-align: left;
  font-weight: 600; border-bottom: 1px solid var(--border); white-space: normal; }
table.data tbody th { text-align: left; font-weight: 600; }
table.data tbody tr:nth-child(even) { background: #fafbfc; }
th.num, td.num, table.data thead th.num { text-align: right; }
td.wrap { white-space: normal; min-width: 280px; }
.pos, .buy { color: var(--pos); }
.neg, .sell { color: var(--neg); }
tr.liq { background: #fff1f0 !important; }
tr.gap td { text-align: center; color: var(--muted); font-style: italic; background: var(--panel); }
.scroll { overflow-x: auto; }
.tall { max-height: 560px; overflow-y: auto; border: 1px solid #eaeef2; }
svg.chart { width: 100%; height: auto; display: block; }
svg.spark { display: block; }
@media print { nav { position: static; } .tall { max-height: none; overflow: visible; } }
"""


def main(argv: list[str] | None = None) -> int:
    """``python -m tickray.cluster.report FOLDER [--out FILE]``: write it, print the path."""
    p = argparse.ArgumentParser(
        prog="python -m tickray.cluster.report", description="Write a results folder's HTML report."
    )
    p.add_argument("folder", help="a results folder written by `tickray backtest`")
    p.add_argument("--out", help="the HTML file (default: FOLDER/report.html)")
    args = p.parse_args(argv)
    try:
        print(write_report(args.folder, args.out))
    except (OSError, ValueError) as exc:
        print(f"tickray: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
