"""Bar data quality: validation checks, a scored report, and gap policies that repair a table.

:func:`check_bars` runs every check over one symbol's whole bar history with vectorised numpy
and returns a :class:`QualityReport`; :func:`check_symbol` does the same for a symbol in the
store (``ROOT/bars/<interval>/<SYMBOL>/<YYYY-MM>.parquet``). :func:`apply_gap_policy` turns a
table into a clean BARS table (or raises) by one of the :class:`GapPolicy` rules, and
:func:`format_report` renders a report as text for the command line.

Checks (``ts`` is the bar OPEN time, int64 ns, UTC):

- ``ohlc``: ``high < max(open, close)``, ``low > min(open, close)`` or ``high < low``;
- ``bad_price``: an open, high, low or close that is <= 0 or not finite;
- ``bad_volume``: a volume that is < 0 or not finite;
- ``duplicate_ts``: a row whose ts equals that of an earlier row (the first one is kept);
- ``non_monotonic``: a row whose ts is below the largest ts of the rows before it;
- ``off_grid``: a ts that is not ``origin + k * interval`` (``origin`` defaults to the most
  common phase ``ts mod interval``, so a few off-grid bars cannot move the grid);
- gaps: missing grid slots between the first and last bar, as :class:`Gap` (first and last
  missing open time, number of missing bars). The grid is continuous (24/7 markets): for a
  market with sessions, gaps include nights and weekends;
- ``outlier``: a bar whose close-to-close log return has a robust z-score above
  ``outlier_z`` (see below);
- ``zero_volume_run``: bars in runs of more than ``max_zero_volume_run`` consecutive bars of
  zero volume (all zero-volume bars are counted in ``zero_volume_bars`` too);
- ``stale_price``: bars in runs of more than ``max_stale_run`` consecutive bars with
  identical (open, high, low, close).

The row checks (the first six) look at every input row. The sequence checks (gaps, outliers,
runs) look at the *timeline*: the rows sorted by ts, the first row of each ts, on the grid;
outliers also skip rows with a bad price.

Outliers. ``r_i = log(close_i / close_{i-1}) / sqrt(steps_i)`` between consecutive timeline
bars (``steps_i`` grid steps apart, so a return across a gap is scaled to one bar). The returns
are cut into consecutive blocks of about ``outlier_window`` returns (the whole series when it
is shorter than two windows) and, per block, ``z_i = (r_i - median) / (1.4826 * MAD)``, where
MAD is the median absolute deviation from the median (1.4826 * MAD estimates the standard
deviation of a normal). A bar with ``|z| > outlier_z`` (default 20) is flagged. Why not the
plain ``(r - mean) / std``: mean and std have a breakdown point of zero. One bad print of any
size drags both, so in a window of n returns no point can score above (n - 1) / sqrt(n)
(Samuelson's bound: 4.5 for n = 21), and a few large errors inflate the std until they hide
each other (masking). On fat-tailed returns (crypto minutes are close to Student-t) the std is
set by the few largest moves, so the yardstick moves with the very points it should judge.
Median and MAD ignore up to half the sample. Blocks keep the scale local, so a calm month does
not flag every bar of a volatile one. When a block has MAD 0 (more than half of its returns are
zero: a coarse tick on a low-priced coin), the scale falls back to 1.2533 times the mean
absolute deviation from the median (the same normal-consistent scale); a block of only zero
returns has no outliers. The threshold is high because real minute returns are fat-tailed:
on the 11 Binance USD-M months in ``shared/data`` a threshold of 12 flags 5-87 real moves per
month, 20 flags 0-31, while a genuine bad print (a price off by a few percent on a bar of
0.1 % volatility) scores in the hundreds. A one-bar spike flags two bars (the jump in and the
jump back); a level shift flags one. Fewer than ``MIN_RETURNS`` returns: no outlier check. Flagged bars are
not removed by any policy: a big move may well be real.

Score, in [0, 1]: ``1 - (W_BAD * bad + W_MISSING * missing + W_OUTLIER * outliers + W_RUN *
runs)``, clipped at 0, where ``bad`` is the fraction of rows failing any row check or off the
grid, ``missing`` the fraction of grid slots (present + missing) that are missing, ``outliers``
the fraction of timeline bars flagged, ``runs`` the fraction in zero-volume or stale runs. The
weights (1, 0.5, 0.25, 0.1) rank what each does to a backtest: a bad bar gives wrong fills and
must be removed, a missing bar can be filled, an outlier and a quiet run are often real. An
empty table scores 0.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tickray.feeds.schemas import (
    BARS,
    TS_TYPE,
    DataError,
    conform,
    format_ts,
    interval_text,
    open_parquet,
    ts_numpy,
)
from tickray.feeds.schemas import interval_ns as parse_interval
from tickray.feeds.store import bar_files, validate_symbol

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

OUTLIER_Z = 20.0
OUTLIER_WINDOW = 1440
MIN_RETURNS = 20
MAX_ZERO_VOLUME_RUN = 30
MAX_STALE_RUN = 30
EXAMPLES = 5
MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD -> standard deviation of a normal
MEAN_AD_TO_SD = 1.2533  # sqrt(pi / 2): mean absolute deviation -> sd of a normal
W_BAD, W_MISSING, W_OUTLIER, W_RUN = 1.0, 0.5, 0.25, 0.1
_PRICES = ("open", "high", "low", "close")
_COLUMNS = ("ts", *_PRICES, "volume")


class Check(enum.StrEnum):
    """The checks of :func:`check_bars` (values are the keys of ``QualityReport.findings``)."""

    OHLC = "ohlc"
    BAD_PRICE = "bad_price"
    BAD_VOLUME = "bad_volume"
    DUPLICATE_TS = "duplicate_ts"
    NON_MONOTONIC = "non_monotonic"
    OFF_GRID = "off_grid"
    OUTLIER = "outlier"
    ZERO_VOLUME_RUN = "zero_volume_run"
    STALE_PRICE = "stale_price"


#: Checks whose rows count as bad bars in the score. ``drop`` removes them, except rows that
#: are merely out of order (``non_monotonic``), which it sorts into place.
ROW_CHECKS = (
    Check.OHLC,
    Check.BAD_PRICE,
    Check.BAD_VOLUME,
    Check.DUPLICATE_TS,
    Check.NON_MONOTONIC,
    Check.OFF_GRID,
)


class GapPolicy(enum.StrEnum):
    """What :func:`apply_gap_policy` does with gaps and bad bars."""

    REPORT = "report"
    DROP = "drop"
    FFILL = "ffill"
    INTERPOLATE = "interpolate"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    """Result of one check: ``count`` bars, ``examples`` = open times (ns) of the first few."""

    count: int
    examples: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing bars ``start_ns, start_ns + interval, ..., end_ns`` (open times, ns): ``missing`` bars."""

    start_ns: int
    end_ns: int
    missing: int


@dataclass(frozen=True, slots=True)
class Run:
    """``bars`` consecutive timeline bars from ``start_ns`` to ``end_ns`` (open times, ns)."""

    start_ns: int
    end_ns: int
    bars: int


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Outcome of :func:`check_bars` for one symbol. JSON via :meth:`as_dict` / :meth:`from_dict`.

    ``findings`` holds every :class:`Check` (count 0 when clean); ``expected_bars`` is the number
    of grid slots from the first to the last on-grid bar; ``score`` is defined in the module
    docstring; ``params`` are the thresholds used.
    """

    symbol: str
    interval_ns: int
    rows: int
    first_ts: int | None
    last_ts: int | None
    expected_bars: int
    findings: dict[str, Finding]
    gaps: tuple[Gap, ...]
    zero_volume_bars: int
    zero_volume_runs: tuple[Run, ...]
    stale_runs: tuple[Run, ...]
    score: float
    params: dict[str, float] = field(default_factory=dict)

    @property
    def missing_bars(self) -> int:
        """Total bars missing in all gaps."""
        return sum(g.missing for g in self.gaps)

    def count(self, check: Check | str) -> int:
        """Number of bars flagged by ``check``."""
        return self.findings[Check(check).value].count

    def examples(self, check: Check | str) -> tuple[int, ...]:
        """Open times (ns) of the first few bars flagged by ``check``."""
        return self.findings[Check(check).value].examples

    @property
    def clean(self) -> bool:
        """True when no check fired and there is no gap (outliers and runs included)."""
        return not self.gaps and all(f.count == 0 for f in self.findings.values())

    def summary(self) -> str:
        """One line: symbol, score, rows, and each problem with its count."""
        parts = [f"{k} {f.count}" for k, f in self.findings.items() if f.count]
        if self.gaps:
            parts.insert(0, f"{len(self.gaps)} gaps ({self.missing_bars} bars)")
        issues = ", ".join(parts) if parts else "no issues"
        return (
            f"{self.symbol} {_interval_label(self.interval_ns)}: score {self.score:.4f}, "
            f"{self.rows} bars, {issues}"
        )

    def recommendations(self) -> list[str]:
        """Human advice, one sentence per kind of problem found."""
        return _recommendations(self)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (ints, floats, strings, lists); ISO times for reading."""
        return {
            "symbol": self.symbol,
            "interval": _interval_label(self.interval_ns),
            "interval_ns": self.interval_ns,
            "rows": self.rows,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "first": None if self.first_ts is None else format_ts(self.first_ts),
            "last": None if self.last_ts is None else format_ts(self.last_ts),
            "expected_bars": self.expected_bars,
            "missing_bars": self.missing_bars,
            "score": self.score,
            "findings": {
                k: {"count": f.count, "examples": list(f.examples)}
                for k, f in self.findings.items()
            },
            "gaps": [[g.start_ns, g.end_ns, g.missing] for g in self.gaps],
            "zero_volume_bars": self.zero_volume_bars,
            "zero_volume_runs": [[r.start_ns, r.end_ns, r.bars] for r in self.zero_volume_runs],
            "stale_runs": [[r.start_ns, r.end_ns, r.bars] for r in self.stale_runs],
            "params": dict(self.params),
            "recommendations": self.recommendations(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityReport:
        """Inverse of :meth:`as_dict` (derived keys such as ``first`` are ignored)."""
        return cls(
            symbol=data["symbol"],
            interval_ns=int(data["interval_ns"]),
            rows=int(data["rows"]),
            first_ts=data["first_ts"],
            last_ts=data["last_ts"],
            expected_bars=int(data["expected_bars"]),
            findings={
                k: Finding(int(v["count"]), tuple(int(x) for x in v["examples"]))
                for k, v in data["findings"].items()
            },
            gaps=tuple(Gap(*map(int, g)) for g in data["gaps"]),
            zero_volume_bars=int(data["zero_volume_bars"]),
            zero_volume_runs=tuple(Run(*map(int, r)) for r in data["zero_volume_runs"]),
            stale_runs=tuple(Run(*map(int, r)) for r in data["stale_runs"]),
            score=float(data["score"]),
            params={k: float(v) for k, v in data["params"].items()},
        )

    def save(self, root: str | Path, interval: str, symbol: str | None = None) -> Path:
        """Write :meth:`as_dict` to ``ROOT/quality/<interval>/<SYMBOL>.json`` atomically."""
        parse_interval(interval)
        sym = validate_symbol(self.symbol if symbol is None else symbol)
        path = Path(root) / "quality" / interval / f"{sym}.json"
        text = json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return path


def _interval_label(ns: int) -> str:
    """``1m``-style text of an interval, or ``<n>ns`` when it is not whole seconds."""
    try:
        return interval_text(ns)
    except DataError:
        return f"{ns}ns"


def load_report(root: str | Path, interval: str, symbol: str) -> QualityReport:
    """Read a report written by :meth:`QualityReport.save`."""
    path = Path(root) / "quality" / interval / f"{validate_symbol(symbol)}.json"
    try:
        return QualityReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read quality report ({exc})") from None


# --------------------------------------------------------------------------------------------
# Checks


class _Bars(NamedTuple):
    ts: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64


def _arrays(data: pa.Table | Mapping[str, Any] | Any) -> _Bars:
    """Numpy columns of a table, a mapping of arrays or a BarChunk-like object (no validation)."""
    if isinstance(data, pa.Table):
        missing = [c for c in _COLUMNS if c not in data.column_names]
        if missing:
            raise DataError(f"bars table lacks column(s) {missing}")
        ts = ts_numpy(data.column("ts"))
        cols = [
            np.asarray(data.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)
            for c in _COLUMNS[1:]
        ]
        return _Bars(ts, *cols)
    get = data.__getitem__ if isinstance(data, Mapping) else lambda c: getattr(data, c)
    try:
        raw = [get(c) for c in _COLUMNS]
    except (KeyError, AttributeError) as exc:
        raise DataError(f"bars arrays lack column {exc}") from None
    ts = np.asarray(raw[0])
    if ts.dtype.kind == "M":
        ts = ts.astype("datetime64[ns]")
    ts = ts.astype(np.int64)
    cols = [np.asarray(c, dtype=np.float64) for c in raw[1:]]
    if any(c.shape != ts.shape for c in cols):
        raise DataError("bars arrays differ in length")
    return _Bars(ts, *cols)


def _finding(mask: B, ts: I64) -> Finding:
    rows = np.flatnonzero(mask)
    return Finding(int(rows.size), tuple(int(t) for t in ts[rows[:EXAMPLES]]))


def _grid_origin(ts: I64, iv: int) -> int:
    """Most common phase ``ts mod iv`` (ties: the smallest)."""
    phases, counts = np.unique(ts % iv, return_counts=True)
    return int(phases[int(np.argmax(counts))])


def _runs(mask: B, ts: I64, longer_than: int) -> tuple[list[Run], B]:
    """Runs of True in ``mask`` longer than ``longer_than``, and the mask of their bars."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # [start, end)
    keep = (ends - starts) > longer_than
    in_runs = np.zeros(mask.size, dtype=bool)
    runs: list[Run] = []
    for s, e in zip(starts[keep], ends[keep], strict=True):
        in_runs[s:e] = True
        runs.append(Run(int(ts[s]), int(ts[e - 1]), int(e - s)))
    return runs, in_runs


def _robust_z(r: F64, window: int) -> F64:
    """Blockwise robust z-score of ``r`` (see the module docstring)."""
    z = np.zeros(r.size)
    n_blocks = max(1, r.size // window)
    for idx in np.array_split(np.arange(r.size), n_blocks):
        block = r[idx]
        med = float(np.median(block))
        dev = np.abs(block - med)
        scale = MAD_TO_SD * float(np.median(dev))
        if scale == 0.0:
            scale = MEAN_AD_TO_SD * float(dev.mean())
        if scale > 0.0:
            z[idx] = dev / scale
    return z


def _outliers(ts: I64, close: F64, iv: int, z_max: float, window: int) -> B:
    """Mask over the timeline bars whose return from the previous bar is an outlier."""
    out = np.zeros(ts.size, dtype=bool)
    if ts.size < MIN_RETURNS + 1:
        return out
    steps = np.diff(ts) // iv
    r = np.diff(np.log(close)) / np.sqrt(steps)
    out[1:] = _robust_z(r, window) > z_max
    return out


def check_bars(
    data: pa.Table | Mapping[str, Any] | Any,
    interval_ns: int,
    *,
    symbol: str,
    origin_ns: int | None = None,
    outlier_z: float = OUTLIER_Z,
    outlier_window: int = OUTLIER_WINDOW,
    max_zero_volume_run: int = MAX_ZERO_VOLUME_RUN,
    max_stale_run: int = MAX_STALE_RUN,
) -> QualityReport:
    """Run every check on one symbol's bars and score them (see the module docstring).

    ``data`` is a pa.Table with ts, open, high, low, close and volume (any row order, defects
    allowed: it is not conformed), a mapping of such arrays, or a replay BarChunk.
    ``interval_ns`` is the bar length; ``origin_ns`` pins the grid (default: the most common
    phase). Runs count when longer than ``max_zero_volume_run`` / ``max_stale_run`` bars.
    """
    iv = int(interval_ns)
    if iv <= 0:
        raise DataError(f"{symbol}: interval must be > 0 ns, got {iv}")
    if outlier_window < 1:
        raise DataError(f"{symbol}: outlier_window must be >= 1 return, got {outlier_window}")
    bars = _arrays(data)
    ts, n = bars.ts, int(bars.ts.size)
    params = {
        "outlier_z": float(outlier_z),
        "outlier_window": float(outlier_window),
        "max_zero_volume_run": float(max_zero_volume_run),
        "max_stale_run": float(max_stale_run),
    }
    masks: dict[Check, B] = {}
    o, h, lo, c = bars.open, bars.high, bars.low, bars.close
    masks[Check.OHLC] = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
    prices = np.stack([o, h, lo, c])
    masks[Check.BAD_PRICE] = np.asarray(~(np.isfinite(prices) & (prices > 0)).all(axis=0))
    masks[Check.BAD_VOLUME] = ~(np.isfinite(bars.volume) & (bars.volume >= 0))
    order = np.argsort(ts, kind="stable")
    dup = np.zeros(n, dtype=bool)
    if n:
        dup[order[1:]] = ts[order[1:]] == ts[order[:-1]]
    masks[Check.DUPLICATE_TS] = dup
    nonmono = np.zeros(n, dtype=bool)
    if n:
        nonmono[1:] = ts[1:] < np.maximum.accumulate(ts)[:-1]
    masks[Check.NON_MONOTONIC] = nonmono
    origin = (_grid_origin(ts, iv) if n else 0) if origin_ns is None else int(origin_ns) % iv
    off = (ts - origin) % iv != 0
    masks[Check.OFF_GRID] = off

    # The timeline: sorted, first row of each ts, on the grid.
    line = order[~dup[order] & ~off[order]]
    lts = ts[line]
    steps = np.diff(lts) // iv
    holes = np.flatnonzero(steps > 1)
    gaps = tuple(
        Gap(int(lts[i] + iv), int(lts[i + 1] - iv), int(steps[i] - 1)) for i in holes.tolist()
    )
    expected = int((lts[-1] - lts[0]) // iv + 1) if lts.size else 0

    priced = line[~masks[Check.BAD_PRICE][line]]
    out_rows = priced[_outliers(ts[priced], c[priced], iv, outlier_z, outlier_window)]
    masks[Check.OUTLIER] = np.zeros(n, dtype=bool)
    masks[Check.OUTLIER][out_rows] = True

    zero = bars.volume[line] == 0
    zv_runs, zv_in = _runs(zero, lts, max_zero_volume_run)
    same = np.zeros(line.size, dtype=bool)
    if line.size:
        p = prices[:, line]
        same[1:] = (p[:, 1:] == p[:, :-1]).all(axis=0)
        # A run of k identical bars is k - 1 "same as previous" flags plus its first bar.
        same[:-1] |= same[1:].copy()
    st_runs, st_in = _runs(same, lts, max_stale_run)
    for check, in_runs in ((Check.ZERO_VOLUME_RUN, zv_in), (Check.STALE_PRICE, st_in)):
        masks[check] = np.zeros(n, dtype=bool)
        masks[check][line[in_runs]] = True

    findings = {check.value: _finding(masks[check], ts) for check in Check}
    bad = np.zeros(n, dtype=bool)
    for check in ROW_CHECKS:
        bad |= masks[check]
    score = _score(
        n,
        int(bad.sum()),
        expected,
        sum(g.missing for g in gaps),
        int(masks[Check.OUTLIER].sum()),
        int((zv_in | st_in).sum()),
        line.size,
    )
    return QualityReport(
        symbol=symbol,
        interval_ns=iv,
        rows=n,
        first_ts=int(lts[0]) if lts.size else None,
        last_ts=int(lts[-1]) if lts.size else None,
        expected_bars=expected,
        findings=findings,
        gaps=gaps,
        zero_volume_bars=int(zero.sum()),
        zero_volume_runs=tuple(zv_runs),
        stale_runs=tuple(st_runs),
        score=score,
        params=params,
    )


def _score(
    rows: int, bad: int, expected: int, missing: int, outliers: int, in_runs: int, line: int
) -> float:
    if rows == 0:
        return 0.0
    penalty = W_BAD * bad / rows
    penalty += W_MISSING * (missing / expected if expected else 0.0)
    if line:
        penalty += W_OUTLIER * outliers / line + W_RUN * in_runs / line
    return float(max(0.0, 1.0 - penalty))


def check_symbol(root: str | Path, interval: str, symbol: str, **kwargs: Any) -> QualityReport:
    """:func:`check_bars` over a stored symbol's whole history (keyword options are passed on).

    Month files are read one at a time and only the six bar columns are kept, as numpy arrays
    (48 bytes per bar: 10 years of 1m bars is about 250 MB). Files are read raw, so defects
    that the replay would reject (bad prices, order across files) are reported, not raised.
    """
    iv = parse_interval(interval)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in _COLUMNS}
    for path in bar_files(root, interval, symbol):
        pf = open_parquet(path)
        try:
            missing = [c for c in _COLUMNS if c not in pf.schema_arrow.names]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing} for bars")
            chunk = _arrays(pf.read(columns=list(_COLUMNS)))
        finally:
            pf.close()
        for name, arr in zip(_COLUMNS, chunk, strict=True):
            parts[name].append(arr)
    arrays = {c: np.concatenate(v) for c, v in parts.items()}
    return check_bars(arrays, iv, symbol=symbol, **kwargs)


# --------------------------------------------------------------------------------------------
# Recommendations and text


def _recommendations(rep: QualityReport) -> list[str]:
    out: list[str] = []
    if rep.rows == 0:
        return ["no bars: nothing to backtest; check the source and the date range"]
    bad = {c.value: rep.count(c) for c in ROW_CHECKS if rep.count(c)}
    if bad:
        what = ", ".join(f"{n} {k}" for k, n in bad.items())
        out.append(
            f"bars failing validity checks ({what}): use gap policy 'drop' to remove them "
            f"(duplicates keep the first bar of each ts), or fix the source"
        )
    if rep.gaps:
        big = max(rep.gaps, key=lambda g: g.missing)
        out.append(
            f"{len(rep.gaps)} gaps totalling {rep.missing_bars} bars (largest {big.missing} from "
            f"{format_ts(big.start_ns)}): use gap policy 'ffill' for a strategy that needs every "
            f"bar, or 'drop' to leave them missing; 'interpolate' invents prices (plots and "
            f"resampling only)"
        )
    n_out = rep.count(Check.OUTLIER)
    if n_out:
        out.append(
            f"{n_out} outlier returns (robust |z| > {rep.params.get('outlier_z', OUTLIER_Z):g}): "
            f"check them against another source; no policy removes them since big moves happen"
        )
    if rep.zero_volume_runs:
        out.append(
            f"{len(rep.zero_volume_runs)} runs of zero volume ({rep.count(Check.ZERO_VOLUME_RUN)} "
            f"bars): fills on these bars are unrealistic; use a volume-aware fill model"
        )
    if rep.stale_runs:
        out.append(
            f"{len(rep.stale_runs)} runs of unchanged OHLC ({rep.count(Check.STALE_PRICE)} bars): "
            f"the feed may have stalled; compare with another source"
        )
    return out


def format_report(report: QualityReport) -> str:
    """Multi-line text of a report for the command line."""
    r = report
    span = (
        "no bars"
        if r.first_ts is None or r.last_ts is None
        else (f"{format_ts(r.first_ts)} .. {format_ts(r.last_ts)}")
    )
    lines = [
        f"{r.symbol} {_interval_label(r.interval_ns)}: {r.rows} bars, {span}",
        f"score {r.score:.4f}; expected {r.expected_bars} bars, missing {r.missing_bars} "
        f"in {len(r.gaps)} gaps; zero-volume bars {r.zero_volume_bars}",
    ]
    for name, f in r.findings.items():
        if f.count:
            ex = ", ".join(format_ts(t) for t in f.examples)
            lines.append(f"  {name:<16} {f.count:>8}  e.g. {ex}")
    for g in r.gaps[:EXAMPLES]:
        lines.append(f"  gap {format_ts(g.start_ns)} .. {format_ts(g.end_ns)}: {g.missing} bars")
    if len(r.gaps) > EXAMPLES:
        lines.append(f"  ... {len(r.gaps) - EXAMPLES} more gaps")
    lines.extend(f"- {text}" for text in r.recommendations())
    if r.clean:
        lines.append("clean: no findings")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Gap policies


class PolicyResult(NamedTuple):
    """A policy's output: the BARS ``table``, the ``report`` of the INPUT, rows dropped/added."""

    table: pa.Table
    report: QualityReport
    dropped: int
    filled: int


def _bad_rows(table: pa.Table, iv: int) -> B:
    """Rows that fail a row check (what ``drop`` removes), recomputed from the table."""
    bars = _arrays(table)
    ts = bars.ts
    prices = np.stack([bars.open, bars.high, bars.low, bars.close])
    bad = ~(np.isfinite(prices) & (prices > 0)).all(axis=0)
    o, h, lo, c = prices
    bad |= (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
    bad |= ~(np.isfinite(bars.volume) & (bars.volume >= 0))
    origin = _grid_origin(ts, iv) if ts.size else 0
    bad |= (ts - origin) % iv != 0
    # Duplicates: of the rows left, the first of each ts (in row order) survives.
    good = np.flatnonzero(~bad)
    order = good[np.argsort(ts[good], kind="stable")]
    if order.size > 1:
        bad[order[1:]] = ts[order[1:]] == ts[order[:-1]]
    return bad


def _drop(table: pa.Table, iv: int) -> tuple[pa.Table, int]:
    bad = _bad_rows(table, iv)
    kept = table.filter(pa.array(~bad))
    order = np.argsort(ts_numpy(kept.column("ts")), kind="stable")
    return kept.take(pa.array(order)), int(bad.sum())


def _fill(table: pa.Table, iv: int, interpolate: bool) -> tuple[pa.Table, int]:
    """Insert the missing grid bars of a clean, sorted BARS table (see :func:`apply_gap_policy`)."""
    ts = ts_numpy(table.column("ts"))
    if ts.size < 2:
        return table, 0
    steps = np.diff(ts) // iv
    holes = np.flatnonzero(steps > 1)
    if holes.size == 0:
        return table, 0
    close = np.asarray(table.column("close").to_numpy(), dtype=np.float64)
    miss = steps[holes] - 1
    left = np.repeat(holes, miss)  # row before each new bar
    j = np.arange(int(miss.sum())) - np.repeat(np.cumsum(miss) - miss, miss) + 1  # 1..m
    new_ts = ts[left] + j * iv
    c0 = close[left]
    if interpolate:
        c1 = close[left + 1]
        frac_close = j / np.repeat(miss + 1, miss)
        frac_open = (j - 1) / np.repeat(miss + 1, miss)
        new_close = c0 + (c1 - c0) * frac_close
        new_open = c0 + (c1 - c0) * frac_open
    else:
        new_close = new_open = c0
    cols: dict[str, Any] = {
        "ts": pa.array(new_ts, type=pa.int64()).cast(TS_TYPE),
        "open": new_open,
        "high": np.maximum(new_open, new_close),
        "low": np.minimum(new_open, new_close),
        "close": new_close,
        "volume": np.zeros(new_ts.size),
    }
    for name in ("quote_volume", "trade_count", "taker_buy_volume"):
        typ = BARS.field(name).type
        has = table.column(name).null_count < table.num_rows
        cols[name] = pa.array(np.zeros(new_ts.size) if has else [None] * new_ts.size).cast(typ)
    added = pa.Table.from_pydict(cols, schema=BARS)
    merged = pa.concat_tables([table, added])
    order = np.argsort(ts_numpy(merged.column("ts")), kind="stable")
    return merged.take(pa.array(order)).combine_chunks(), int(new_ts.size)


def apply_gap_policy(
    table: pa.Table,
    interval_ns: int,
    policy: GapPolicy | str,
    *,
    symbol: str = "bars",
    min_score: float = 0.95,
    **check_options: Any,
) -> PolicyResult:
    """Check ``table`` (:func:`check_bars`) and return it under ``policy`` as a BARS table.

    - ``report``: rows unchanged (conformed; DataError if they cannot be, e.g. duplicates);
    - ``drop``: remove bars failing a row check (invalid OHLC, bad price or volume, off the
      grid, duplicates after the first of each ts), and sort by ts. Gaps stay open;
    - ``ffill``: ``drop``, then insert the missing grid bars as flat bars at the previous
      close with zero volume (quote volume, trade count and taker volume 0, or null when the
      input has none). Right for a strategy that needs every bar: no trade, no price change;
    - ``interpolate``: ``drop``, then insert bars whose closes lie on the straight line from
      the close before the gap to the close after it (the m missing bars close at fractions
      1/(m+1) .. m/(m+1) of the way), each opening at the previous close, high/low = max/min
      of open and close, zero volume. This INVENTS prices, off the tick grid: acceptable for
      plotting, resampling or indicators that need a value, never for fills or PnL;
    - ``fail``: raise DataError naming the symbol and score when ``report.score < min_score``,
      else as ``report``.
    Outliers, zero-volume and stale runs are never changed. ``check_options`` go to check_bars.
    """
    pol = GapPolicy(policy)
    iv = int(interval_ns)
    report = check_bars(table, iv, symbol=symbol, **check_options)
    source = f"apply_gap_policy({symbol}, {pol.value})"
    if pol is GapPolicy.FAIL and report.score < min_score:
        raise DataError(
            f"{symbol}: bar quality score {report.score:.4f} is below the minimum "
            f"{min_score:g}: {report.summary()}"
        )
    if pol in (GapPolicy.REPORT, GapPolicy.FAIL):
        return PolicyResult(conform(table, "bars", source), report, 0, 0)
    kept, dropped = _drop(table, iv)
    out = conform(kept, "bars", source)
    filled = 0
    if pol in (GapPolicy.FFILL, GapPolicy.INTERPOLATE):
        out, filled = _fill(out, iv, pol is GapPolicy.INTERPOLATE)
        out = conform(out, "bars", source)
    return PolicyResult(out.combine_chunks(), report, dropped, filled)


__all__ = [
    "Check",
    "Finding",
    "Gap",
    "GapPolicy",
    "PolicyResult",
    "QualityReport",
    "Run",
    "apply_gap_policy",
    "check_bars",
    "check_symbol",
    "format_report",
    "load_report",
]
