"""The Python API (docs/python.md): run, load, the Result, and a run stopped by Ctrl-C.

Run: ``python examples/guide_python.py`` (a few seconds, in-process backend).
``TICKRAY_EXAMPLE_FAST=1`` replays one day instead of three; results go to
``$TICKRAY_EXAMPLE_OUT`` or a new temporary folder.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import tickray
from tickray import SignalStrategy
from tickray.engine.signals import Bar, Context, Signal, buy, flat

FAST = os.environ.get("TICKRAY_EXAMPLE_FAST") == "1"
OUT = Path(os.environ.get("TICKRAY_EXAMPLE_OUT") or tempfile.mkdtemp(prefix="tickray-python-"))
END = "2024-01-02" if FAST else "2024-01-04"
SPEC_FILE = Path(__file__).with_name("momentum.toml")

# -- run: a spec dict (or a spec file, or a RunConfig) ----------------------------------------
doc: dict[str, Any] = {
    "data": {"source": "demo", "end": END},
    "universe": {"symbols": ["SYN00USDT", "SYN01USDT"]},
    "strategy": {"name": "momentum", "params": {"window": 30, "threshold": 0.005}},
}
res = tickray.run(doc, backend="local", out=OUT / "momentum", progress=False)
print(res)
print(f"complete: {res.complete}, wall time {res.wall_seconds:.2f} s")

# -- the tables: DataFrames with UTC timestamps -----------------------------------------------
fills = res.fills()
print(f"\nfills: {len(fills)} rows, columns {list(fills.columns)}")
print(f"first fill at {fills.ts.iloc[0]} ({fills.ts.dt.tz})")
for name in ("orders", "positions", "equity", "symbol_equity", "risk"):
    frame = getattr(res, name)()
    print(f"{name + '()':<16} {frame.shape[0]:6d} rows  {list(frame.columns)[:6]}")
print(f"decisions()      {len(res.decisions()):6d} rows (resized or rejected, with the reason)")
marks = res.table("marks")  # any results file as an Arrow table
print(f"table('marks')   {marks.num_rows:6d} rows (Arrow)")

# -- metrics: the metrics.json dict and typed views ---------------------------------------------
p = res.portfolio
print(f"\nportfolio: return {p.total_return:.2%}, Sharpe {p.sharpe:.2f}, fees {p.fees:.2f} USDT")
s = res.symbol("SYN00USDT")
print(f"SYN00USDT: {s.trades} round trips, win rate {s.win_rate:.0%}")
print(res.summary().round(4).to_string())
print(f"report: {res.report().name}")

# -- load: the same Result from the folder ------------------------------------------------------
again = tickray.load(res.out)
print(f"\nload(res.out) == res: {again == res}")
assert again == res

# -- a file spec runs as it is; keywords override backend, out, strategy and params -------------
from_file = tickray.run(SPEC_FILE, params={"window": 30}, out=OUT / "from-file", progress=False)
print(f"{SPEC_FILE.name} with window=30: {from_file}")


# -- Ctrl-C: stop at the next step, keep what was done ---------------------------------------
class CtrlC(SignalStrategy):
    """Trades every 50 bars and, at SYN00USDT's ``at``-th bar, sends this process SIGINT,
    as Ctrl-C in a terminal (or Jupyter's interrupt button) would."""

    name = "ctrl_c"
    params = {"at": (int, 600, 1)}
    at: int

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        if ctx.bars == self.at and ctx.symbol == "SYN00USDT":
            os.kill(os.getpid(), signal.SIGINT)
        if ctx.bars % 50 == 0:
            return flat() if ctx.position else buy()
        return None


doc["run"] = {"sync": "1h"}
cut = tickray.run(doc, strategy=CtrlC, backend="local", out=OUT / "ctrl-c", progress=False)
print(f"\ninterrupted: complete {cut.complete}, reached {cut.reached}, folder {cut.out.name}")
print(f"  equity ends at {cut.equity().ts.iloc[-1]}; error.txt: {(cut.out / 'error.txt').exists()}")
assert not cut.complete and cut.out.name == "ctrl-c.partial"
assert tickray.load(cut.out) == cut
print(f"\nresults in {OUT}")
