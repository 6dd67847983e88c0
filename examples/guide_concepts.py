"""The concepts of docs/concepts.md, shown on the demo data.

1. Determinism: the same spec gives byte-identical results in-process and on Ray,
   one symbol per actor or several, fused or one round per step.
2. ``run.sync`` with portfolio approval: an order fills at the open of the first
   bar opening at or after the end of the step in which its signal came.
3. ``run.approval = "symbol"``: each symbol checks its own sub-account at the
   signal, so its order fills at the next bar's open whatever ``run.sync`` is.

Run: ``python examples/guide_concepts.py`` (about 10 s; the Ray run starts a local
Ray instance and stops it). ``TICKRAY_EXAMPLE_FAST=1`` replays one day instead of
three; results go to ``$TICKRAY_EXAMPLE_OUT`` or a new temporary folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import tickray

FAST = os.environ.get("TICKRAY_EXAMPLE_FAST") == "1"
OUT = Path(os.environ.get("TICKRAY_EXAMPLE_OUT") or tempfile.mkdtemp(prefix="tickray-concepts-"))

SPEC: dict[str, Any] = {
    "data": {
        "source": "demo",
        "start": "2024-01-01",
        "end": "2024-01-02" if FAST else "2024-01-04",
    },
    "universe": {"symbols": ["SYN00USDT", "SYN01USDT", "SYN02USDT"]},
    "strategy": {"name": "momentum", "params": {"window": 30, "threshold": 0.004}},
}


def run(name: str, backend: str = "local", **run_keys: Any) -> tickray.Result:
    """The demo spec with ``run_keys`` as its ``[run]`` section."""
    return tickray.run(SPEC | {"run": run_keys}, backend=backend, out=OUT / name, progress=False)


# -- 1. the same results whatever runs them ---------------------------------------------------
base = run("local")
print(f"baseline: {base}")
variants = {
    "ray": run("ray", backend="ray"),
    "one symbol per actor": run("one-per-actor", symbols_per_actor=1),
    "no fusing": run("no-fuse", fuse=False),
}
for name, res in variants.items():
    # Result equality: the same metrics and the same bytes in every Parquet table
    print(f"  {name:<22} byte-identical to the baseline: {res == base}")
    assert res == base, name

# -- 2. sync: the portfolio's reaction time ---------------------------------------------------
every_bar = base  # run.sync defaults to the bar interval (1m)
quarter = run("sync-15m", sync="15m")
print("\nportfolio approval, first fills:")
for name, res in (("sync 1m", every_bar), ("sync 15m", quarter)):
    f = res.fills()
    times = ", ".join(t.strftime("%H:%M") for t in f.ts.iloc[:4])
    print(f"  {name:<9} {len(f):4d} fills, first at {times}  ({res.equity().shape[0]} equity rows)")
# with 15m steps, every fill sits on a quarter hour: the open of the first bar after the step
assert (quarter.fills().ts.dt.minute % 15 == 0).all()

# -- 3. symbol approval: fills at the next bar's open, sync only samples the equity -----------
own = run("symbol-15m", sync="15m", approval="symbol")
f = own.fills()
times = ", ".join(t.strftime("%H:%M") for t in f.ts.iloc[:4])
print(f"\nsymbol approval, sync 15m: {len(f)} fills, first at {times}")
print(f"  equity rows: {own.equity().shape[0]} (one per 15m step)")


def when(fills: Any) -> Any:
    """Fill times, symbols and sides in time order (tables are in step order, then
    symbol order, so rows of one 15m step come symbol by symbol)."""
    cols = fills[["ts", "symbol", "side"]]
    return cols.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


same = when(f).equals(when(every_bar.fills()))
print(f"  same fill times and sides as portfolio approval with sync 1m: {same}")
assert same

print("\nreturns:")
for name, res in (("sync 1m", every_bar), ("sync 15m", quarter), ("symbol, 15m", own)):
    print(f"  {name:<12} {res.portfolio.total_return:8.2%}  trades {res.portfolio.trades}")
print(f"\nresults in {OUT}")
