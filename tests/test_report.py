"""The HTML report of a results folder: every section, the numbers of metrics.json, offline.

The folders come from real runs of the command line on a small synthetic
dataset (two symbols, two days of 1m bars, 1m steps, so 2880 equity rows):
a busy run (momentum over one bar, no threshold, shorts allowed: a trade on
almost every sign change, well over 1000 fills) and a quiet one (a threshold
no move reaches: no fills, flat equity).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.cluster.cli import main as cli_main
from tickray.cluster.report import (
    EDGE_ROWS,
    MAX_POINTS,
    downsample,
    format_metric,
    main,
    render_report,
    write_report,
)
from tickray.engine.clock import DAY, HOUR, MINUTE, parse_time
from tickray.feeds.synthetic import write_demo_dataset

START = "2024-01-01T00:00:00Z"
END = "2024-01-03T00:00:00Z"


def _backtest(data: Path, out: Path, *params: str, short: bool = False) -> Path:
    args = ["backtest", "--data", str(data), "--symbols", "SYN00USDT,SYN01USDT"]
    args += ["--allow-short"] if short else []
    args += ["--start", START, "--end", END, "--sync", "1m", "--backend", "local"]
    args += ["--out", str(out), "--quiet"]
    for p in params:
        args += ["--param", p]
    assert cli_main(args) == 0
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report-data")
    assert write_demo_dataset(root, n_symbols=2, days=2) == ["SYN00USDT", "SYN01USDT"]
    return root


@pytest.fixture(scope="module")
def busy(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report-runs") / "busy"
    return _backtest(data_root, out, "window=1", "threshold=0", short=True)


@pytest.fixture(scope="module")
def quiet(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report-runs") / "quiet"
    return _backtest(data_root, out, "threshold=100")


@pytest.fixture(scope="module")
def busy_html(busy: Path) -> str:
    return render_report(busy)


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / folder.name
    shutil.copytree(folder, dst)
    return dst


def _metrics(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "metrics.json").read_text())
    return data


# ---------------------------------------------------------------- a small DOM

VOID = {"meta", "br", "img", "input", "link", "hr", "col", "wbr", "area", "base", "source"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.walk()

    def all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        return [
            n
            for n in self.walk()
            if (tag is None or n.tag == tag)
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def by_id(self, ident: str) -> Node:
        found = self.all(id=ident)
        assert len(found) == 1, f"{len(found)} elements with id {ident!r}"
        return found[0]


class TreeBuilder(HTMLParser):
    """Builds a tree and records every end tag that does not close the open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if self.stack[-1].tag != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1].tag}> at {self.getpos()}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(text: str) -> Node:
    b = TreeBuilder()
    b.feed(text)
    b.close()
    assert b.errors == []
    assert [n.tag for n in b.stack] == ["#document"], "unclosed elements"
    return b.root


def _cells(node: Node) -> dict[str, str]:
    return {td.attrs["data-key"]: td.text() for td in node.all("td") if "data-key" in td.attrs}


def _points(svg: Node) -> int:
    (line,) = svg.all("polyline")
    return len(line.attrs["points"].split())


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("total_return", 0.12345, "12.35%"),
        ("annual_return", -1.0, "-100.00%"),
        ("max_drawdown", 0.0549, "5.49%"),
        ("win_rate", 0.5, "50.00%"),
        ("exposure", 0.25, "25.00%"),
        ("volatility", 12.5, "1,250.00%"),
        ("sharpe", 1.236, "1.24"),
        ("profit_factor", 1.5, "1.50"),
        ("beta", -0.333, "-0.33"),
        ("final", 1234567.891, "1,234,567.89"),
        ("fees", 0.004, "0.00"),
        ("avg_loss", -12.5, "-12.50"),
        ("trades", 12345, "12,345"),
        ("liquidations", 2, "2"),
        # 2024-01-01T08:18:00Z
        ("max_drawdown_peak", 1704097080000000000, "2024-01-01 08:18:00"),
        ("max_drawdown_recovery", None, "n/a"),
        ("max_drawdown_duration_ns", 3 * DAY + 4 * HOUR + 5 * MINUTE, "3d 4h"),
        ("max_drawdown_duration_ns", 2 * HOUR + 5 * MINUTE, "2h 5m"),
        ("final_position", -292984.0, "-292,984"),
        ("final_position", 0.00125, "0.00125"),
        ("sharpe", None, "n/a"),
        ("sharpe", float("nan"), "n/a"),
        # Keys the report does not know are shown as written.
        ("tail_ratio", 0.123456789, "0.123456789"),
        ("mystery_count", 7, "7"),
        ("label", "abc", "abc"),
    ],
)
def test_format_metric_formats_known_keys_and_shows_others_raw(
    key: str, value: Any, shown: str
) -> None:
    assert format_metric(key, value) == shown


# ---------------------------------------------------------------- downsampling


def test_downsample_keeps_the_deepest_dip_of_a_long_curve() -> None:
    # A million points of a gentle rise with one dip of one point at 700,001:
    # plotting every 500th point would miss it, the min-max buckets keep it.
    n = 1_000_000
    x = np.arange(n, dtype=np.int64)
    y = np.linspace(100.0, 200.0, n)
    y[700_001] = 10.0
    xs, ys = downsample(x, y)
    assert len(xs) <= MAX_POINTS
    assert xs[0] == 0 and xs[-1] == n - 1
    assert 700_001 in xs and ys.min() == 10.0 and ys.max() == 200.0
    assert np.all(np.diff(xs) > 0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e9, 1e9, allow_nan=False), max_size=600),
    st.integers(min_value=4, max_value=120),
)
def test_downsample_is_a_bounded_ordered_subset_with_the_extremes(
    values: list[float], max_points: int
) -> None:
    y = np.asarray(values, dtype=np.float64)
    x = np.arange(len(y), dtype=np.int64)
    xs, ys = downsample(x, y, max_points)
    if len(y) <= max_points:
        assert np.array_equal(xs, x)  # short curves are drawn whole
    assert len(xs) <= max_points
    assert np.all(np.diff(xs) > 0)
    assert np.array_equal(ys, y[xs])
    if len(y):
        assert xs[0] == 0 and xs[-1] == len(y) - 1
        assert ys.min() == y.min() and ys.max() == y.max()


# ---------------------------------------------------------------- a real run


def test_write_report_writes_report_html_into_the_folder(busy: Path, tmp_path: Path) -> None:
    folder = _copy(busy, tmp_path)
    path = write_report(folder)
    assert path == folder / "report.html"
    assert path.read_text(encoding="utf-8") == render_report(folder)
    elsewhere = write_report(folder, tmp_path / "elsewhere.html")
    assert elsewhere == tmp_path / "elsewhere.html" and elsewhere.is_file()
    assert not list(tmp_path.rglob("*.tmp"))


def test_report_is_the_same_text_every_time(busy: Path, busy_html: str) -> None:
    assert render_report(busy) == busy_html


def test_report_has_every_section_and_symbol(busy: Path, busy_html: str) -> None:
    doc = parse(busy_html)
    for ident in ("run", "portfolio", "equity", "drawdown", "symbols", "trades", "orders"):
        doc.by_id(ident)
    for ident in ("portfolio-metrics", "equity-chart", "drawdown-chart", "returns-chart"):
        doc.by_id(ident)
    for ident in ("symbol-metrics", "fills-table", "order-status"):
        doc.by_id(ident)
    # Optional files absent: no section for them.
    assert not doc.all(id="funding") and not doc.all(id="liquidations")
    symbols = list(_metrics(busy)["symbols"])
    rows = doc.by_id("symbol-metrics").all("tr")
    assert [r.attrs["data-symbol"] for r in rows if "data-symbol" in r.attrs] == symbols
    bars = doc.by_id("returns-chart").all("rect")
    assert [b.attrs["data-symbol"] for b in bars] == symbols


def test_header_shows_the_run_settings(busy: Path, busy_html: str) -> None:
    header = parse(busy_html).by_id("run")
    info = {dt.text(): div.all("dd")[0].text() for div in header.all("div") for dt in div.all("dt")}
    assert info["Strategy"] == "momentum"
    assert info["Parameters"] == "threshold=0.0, window=1"
    assert info["Start"] == "2024-01-01 00:00:00" and info["End"] == "2024-01-03 00:00:00"
    assert info["Bar interval"] == "1m" and info["Step (sync)"] == "1m"
    assert info["Symbols"] == "2: SYN00USDT, SYN01USDT"
    if "perp" in json.loads((busy / "run.json").read_text())["config"]:
        assert info["Account"] == "spot, shorts on margin"  # --allow-short, no --perp


def test_header_names_the_account_kind(busy: Path, tmp_path: Path) -> None:
    folder = _copy(busy, tmp_path)
    run = json.loads((folder / "run.json").read_text())
    run["config"]["perp"] = {"margin_mode": "isolated", "leverage": 5.0}
    (folder / "run.json").write_text(json.dumps(run))
    header = parse(render_report(folder)).by_id("run")
    assert "USD-M perpetual, isolated margin, leverage 5x" in header.text()
    run["config"]["account"]["kind"] = "portfolio margin"  # named by the config: shown as is
    (folder / "run.json").write_text(json.dumps(run))
    header = parse(render_report(folder)).by_id("run")
    assert "Accountportfolio margin" in header.text()


def test_portfolio_numbers_match_metrics_json(busy: Path, busy_html: str) -> None:
    m = _metrics(busy)["portfolio"]
    shown = _cells(parse(busy_html).by_id("portfolio-metrics"))
    assert shown == {k: format_metric(k, v) for k, v in m.items()}
    # The same numbers by hand, for the main formats.
    assert shown["total_return"] == f"{m['total_return'] * 100:,.2f}%"
    assert shown["sharpe"] == f"{m['sharpe']:,.2f}"
    assert shown["fees"] == f"{m['fees']:,.2f}"
    assert shown["trades"] == f"{m['trades']:,}"
    assert shown["max_drawdown_recovery"] == "n/a"


def test_symbol_numbers_match_metrics_json(busy: Path, busy_html: str) -> None:
    table = parse(busy_html).by_id("symbol-metrics")
    for symbol, m in _metrics(busy)["symbols"].items():
        (row,) = table.all("tr", data_symbol=symbol)
        assert _cells(row) == {k: format_metric(k, v) for k, v in m.items()}
        (bar,) = parse(busy_html).by_id("returns-chart").all("rect", data_symbol=symbol)
        color = "#1a7f37" if m["total_return"] > 0 else "#cf222e"
        assert bar.attrs["fill"] == color


def test_long_curves_are_drawn_with_at_most_max_points(busy: Path, busy_html: str) -> None:
    # 2880 equity rows and the starting point: more than MAX_POINTS.
    assert pq.read_metadata(busy / "equity.parquet").num_rows + 1 > MAX_POINTS
    doc = parse(busy_html)
    for ident in ("equity-chart", "drawdown-chart"):
        # Two points a bucket, fewer where a bucket's lowest and highest are one point.
        assert MAX_POINTS // 2 < _points(doc.by_id(ident)) <= MAX_POINTS


def test_equity_chart_labels_its_min_max_and_dates(busy: Path, busy_html: str) -> None:
    eq = pq.read_table(busy / "equity.parquet").column("equity").to_numpy()
    lo = min(float(eq.min()), 100_000.0)  # the curve starts at the initial equity
    hi = max(float(eq.max()), 100_000.0)
    svg = parse(busy_html).by_id("equity-chart")
    levels = {t.attrs["data-level"]: t.text() for t in svg.all("text") if "data-level" in t.attrs}
    assert levels == {"min": f"{lo:,.0f}", "max": f"{hi:,.0f}"}
    # Two days: a tick every 12 hours.
    dates = [t.text() for t in svg.all("text") if "data-level" not in t.attrs]
    assert dates == ["01-01 00:00", "01-01 12:00", "01-02 00:00", "01-02 12:00", "01-03 00:00"]


def test_drawdown_chart_bottoms_at_the_metrics_max_drawdown(busy: Path, busy_html: str) -> None:
    # The report computes the underwater curve from equity.parquet; its lowest
    # point is the max drawdown that metrics.json computed on its own.
    mdd = _metrics(busy)["portfolio"]["max_drawdown"]
    svg = parse(busy_html).by_id("drawdown-chart")
    levels = {t.attrs["data-level"]: t.text() for t in svg.all("text") if "data-level" in t.attrs}
    assert levels == {"min": f"{-mdd * 100:,.2f}%", "max": "0.00%"}


def test_more_than_1000_fills_show_the_first_and_last_500(busy: Path, busy_html: str) -> None:
    fills = pq.read_table(busy / "fills.parquet")
    n = fills.num_rows
    assert n > 1000
    table = parse(busy_html).by_id("fills-table")
    rows = table.all("tbody")[0].all("tr")
    assert len(rows) == 2 * EDGE_ROWS + 1
    gap = rows[EDGE_ROWS]
    assert gap.attrs["class"] == "gap" and gap.text() == f"{n - 2 * EDGE_ROWS:,} fills left out"
    section = parse(busy_html).by_id("trades").text()
    assert f"Showing the first 500 and the last 500 of {n:,} fills; {n - 1000:,} left out." in (
        section
    )
    first, last = fills.slice(0, 1).to_pylist()[0], fills.slice(n - 1).to_pylist()[0]
    for row, fill in ((rows[0], first), (rows[-1], last)):
        cells = [td.text() for td in row.all("td")]
        assert cells[0] == fill["ts"].strftime("%Y-%m-%d %H:%M:%S")
        assert cells[1:3] == [fill["symbol"], fill["side"]]
        assert cells[5] == f"{fill['fee']:,.4f}" and cells[6] == fill["liquidity"]
        assert cells[7] == f"{fill['realized_pnl']:,.2f}"


def test_page_has_no_external_reference(busy_html: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", busy_html, re.I)
    assert "http://" not in busy_html and "https://" not in busy_html
    for needle in ("<script", "<link", "<img", "@import", "url("):
        assert needle not in busy_html.lower()
    hrefs = [a.attrs["href"] for a in parse(busy_html).all("a")]
    assert hrefs and all(h.startswith("#") for h in hrefs)


def test_page_parses_with_balanced_elements(busy_html: str) -> None:
    doc = parse(busy_html)  # no stray end tag, nothing left open
    (page,) = doc.all("html")
    assert [c.tag for c in page.children if isinstance(c, Node)] == ["head", "body"]
    # portfolio, equity, drawdown, symbols, risk, fills, orders
    assert len(doc.all("main")) == 1 and len(doc.all("section")) == 7
    assert busy_html.startswith("<!DOCTYPE html>")
    (risk,) = [s for s in doc.all("section") if s.attrs.get("id") == "risk"]
    assert "leverage-chart" in busy_html and "orders resized or refused" in busy_html
    assert risk.all("svg")


# ---------------------------------------------------------------- edge cases


def test_run_without_fills_renders(quiet: Path) -> None:
    assert pq.read_metadata(quiet / "fills.parquet").num_rows == 0
    html = render_report(quiet)
    doc = parse(html)
    assert doc.by_id("trades").text().strip().endswith("No fills.")
    shown = _cells(doc.by_id("portfolio-metrics"))
    assert shown["sharpe"] == "n/a" and shown["total_return"] == "0.00%"
    # Flat equity: one level label, a flat line.
    svg = doc.by_id("equity-chart")
    assert [t.text() for t in svg.all("text") if "data-level" in t.attrs] == ["100,000"]
    ys = {p.split(",")[1] for p in svg.all("polyline")[0].attrs["points"].split()}
    assert len(ys) == 1
    assert "0.00%" in doc.by_id("returns-chart").text()


def test_unknown_and_missing_metric_keys_do_not_break_the_report(
    busy: Path, tmp_path: Path
) -> None:
    folder = _copy(busy, tmp_path)
    metrics = _metrics(folder)
    port = metrics["portfolio"]
    del port["sharpe"]
    port |= {"win_rate": 0.4, "tail_ratio": 1.0625, "max_drawdown_duration_ns": DAY + 2 * HOUR}
    port["breakdown"] = {"nested": 1}  # not a scalar: left out
    first = next(iter(metrics["symbols"]))
    del metrics["symbols"][first]["total_return"]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    doc = parse(render_report(folder))
    shown = _cells(doc.by_id("portfolio-metrics"))
    assert "sharpe" not in shown and "breakdown" not in shown
    assert shown["win_rate"] == "40.00%"
    assert shown["tail_ratio"] == "1.0625"
    assert shown["max_drawdown_duration_ns"] == "1d 2h"
    (row,) = doc.by_id("symbol-metrics").all("tr", data_symbol=first)
    assert _cells(row)["total_return"] == "n/a"
    assert not doc.by_id("returns-chart").all("rect", data_symbol=first)


def test_funding_and_liquidations_are_shown_when_present(busy: Path, tmp_path: Path) -> None:
    folder = _copy(busy, tmp_path)
    ts = pa.array([parse_time("2024-01-01T08:00:00Z")] * 3, type=pa.timestamp("ns", tz="UTC"))
    funding = pa.table(
        {
            "ts": ts,
            "symbol": ["SYN00USDT", "SYN00USDT", "SYN01USDT"],
            "funding_rate": [0.0001, -0.00005, 0.0002],
            "mark_price": [0.05, 0.05, 62000.0],
            "position": [100000.0, -50000.0, 1.0],
            "payment": [12.5, -2.5, 3.0],
        }
    )
    pq.write_table(funding, folder / "funding.parquet")
    liquidations = pa.table(
        {
            "ts": ts.slice(0, 1),
            "symbol": ["SYN01USDT"],
            "side": ["SELL"],
            "qty": [0.5],
            "price": [61000.0],
            "mark_price": [61010.0],
            "fee": [15.25],
            "realized_pnl": [-1234.5],
        }
    )
    pq.write_table(liquidations, folder / "liquidations.parquet")
    doc = parse(render_report(folder))
    table = doc.by_id("funding-table")
    # SYN00USDT: 2 payments, 12.5 - 2.5 = 10 net, 12.5 paid, 2.5 received,
    # mean rate (0.0001 - 0.00005) / 2 = 0.0025%. SYN01USDT: 1 payment of 3.
    rows = {r.attrs["data-symbol"]: [td.text() for td in r.all("td")] for r in table.all("tr")[1:]}
    assert rows == {
        "SYN00USDT": ["2", "10.00", "12.50", "2.50", "0.0025%"],
        "SYN01USDT": ["1", "3.00", "3.00", "0.00", "0.0200%"],
    }
    assert "3 funding payments, net 13.00 paid." in doc.by_id("funding").text()
    (row,) = doc.by_id("liquidations-table").all("tbody")[0].all("tr")
    cells = [td.text() for td in row.all("td")]
    assert cells[0] == "2024-01-01 08:00:00" and cells[1:3] == ["SYN01USDT", "SELL"]
    assert cells[6:] == ["15.2500", "-1,234.50"]
    assert "1 liquidation; fees 15.25, realized PnL -1,234.50." in doc.by_id("liquidations").text()
    nav = [a.attrs["href"] for a in doc.all("nav")[0].all("a")]
    assert "#funding" in nav and "#liquidations" in nav


def test_hostile_text_is_escaped(busy: Path, tmp_path: Path) -> None:
    folder = _copy(busy, tmp_path)
    attack = "<script>alert(1)</script>"
    run = json.loads((folder / "run.json").read_text())
    run["config"]["strategy"] = {"name": '<img src=x onerror="alert(2)">', "params": {"x": attack}}
    (folder / "run.json").write_text(json.dumps(run))
    orders = pq.read_table(folder / "orders.parquet")
    reasons = [attack] + orders.column("reason").to_pylist()[1:]
    i = orders.column_names.index("reason")
    pq.write_table(orders.set_column(i, "reason", pa.array(reasons)), folder / "orders.parquet")
    html = render_report(folder)
    assert "<script" not in html and "<img" not in html
    assert "x=&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in html
    doc = parse(html)
    assert attack in doc.by_id("order-reasons").text()
    assert doc.by_id("run").all("dd")[1].text() == f"x={attack}"


def test_a_folder_without_metrics_is_refused(busy: Path, tmp_path: Path) -> None:
    folder = _copy(busy, tmp_path)
    (folder / "metrics.json").unlink()
    (folder / "report.html").unlink()  # the run wrote one; none must appear now
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        write_report(folder)
    assert not (folder / "report.html").exists()


def test_main_writes_the_report_and_fails_in_one_line(
    busy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.html"
    assert main([str(busy), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.is_file()
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tickray: error: report:")
