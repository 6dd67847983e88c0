# %% [markdown]
# # tickray in a notebook
#
# This file is a notebook in the percent format: `# %%` starts a code cell and
# `# %% [markdown]` a text cell. VS Code (with its Python extension) runs it cell by
# cell as it is; Jupyter opens it as a notebook with the `jupytext` extension
# installed. It also runs as a plain script: `python examples/notebook.py`.
#
# It walks from `import tickray` through a demo run, the result tables and a
# strategy defined in a cell, to a plot of the equity curve. The guide is in
# `docs/index.md`.

# %%
import os
import tempfile
from pathlib import Path

import tickray

try:  # rich tables in a notebook, plain text elsewhere
    from IPython.display import display
except ImportError:
    display = print

FAST = os.environ.get("TICKRAY_EXAMPLE_FAST") == "1"
OUT = Path(os.environ.get("TICKRAY_EXAMPLE_OUT") or tempfile.mkdtemp(prefix="tickray-notebook-"))
print("tickray", tickray.__version__, "- results go to", OUT)

# %% [markdown]
# ## A run on the demo data
#
# `tickray.run` takes a spec (a dict here; a TOML or JSON file works the same) and
# returns a `Result`. The demo universe is synthetic 1m bars, generated on first
# use. `backend="local"` runs every actor in this process; `"ray"` starts a local
# Ray instance (or joins `address=`). A progress bar shows in a notebook or a
# terminal; Jupyter's interrupt button (Ctrl-C) stops the run at the next step and
# returns the part done.

# %%
spec = {
    "data": {
        "source": "demo",
        "start": "2024-01-01",
        "end": "2024-01-02" if FAST else "2024-01-08",
    },
    "universe": {"symbols": ["SYN00USDT", "SYN01USDT", "SYN02USDT"]},
    "strategy": {"name": "sma_cross", "params": {"fast": 30, "slow": 120}},
    "run": {"sync": "1h"},
}
res = tickray.run(spec, backend="local", out=OUT / "sma_cross")
print(res)
display(res.summary())

# %% [markdown]
# ## The result tables
#
# Each table is a pandas DataFrame with UTC timestamps, read from the results
# folder's Parquet files: `fills()`, `orders()`, `positions()`, `equity()`,
# `symbol_equity()`, `risk()`; `decisions()` keeps the orders the portfolio
# resized or rejected, with the reason. `portfolio` and `symbol(name)` are the
# metrics, typed.

# %%
display(res.fills().head())
display(res.equity().tail(3))
print("decisions (resizes and rejections):", len(res.decisions()))
m = res.portfolio
print(f"return {m.total_return:.2%}, Sharpe {m.sharpe:.2f}, max drawdown {m.max_drawdown:.2%}")
print(f"SYN00USDT: {res.symbol('SYN00USDT').trades} round trips")

# %% [markdown]
# ## A strategy of your own, defined in a cell
#
# A class defined in a notebook lives in `__main__`; `tickray.run(spec,
# strategy=Class)` registers it and, on Ray, sends the class to the workers by
# value. Running the cell again after an edit replaces the registered class.

# %%
from tickray import SignalStrategy, register_strategy  # noqa: E402
from tickray.engine.indicators import SMA  # noqa: E402
from tickray.engine.signals import Bar, Context, Signal, buy, flat  # noqa: E402


@register_strategy
class Dip(SignalStrategy):
    """Buy a close `drop` below its SMA, take profit at the SMA, stop `2 x drop` below."""

    name = "dip"
    params = {"window": (int, 60, 2), "drop": (float, 0.004, 0.0), "hold": (int, 240, 1)}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.avg = SMA(self.window)
        self.since = 0

    @property
    def warmup(self):
        return self.window

    def on_bar(self, bar: Bar, ctx: Context) -> Signal | None:
        avg = self.avg.update(bar.close)
        if ctx.position == 0 and not ctx.working and bar.close < avg * (1 - self.drop):
            self.since = ctx.bars
            return buy(take_profit=avg, stop_loss=bar.close * (1 - 2 * self.drop))
        if ctx.position > 0 and ctx.bars - self.since > self.hold:
            return flat()
        return None


dip = tickray.run(spec, strategy=Dip, params={"drop": 0.003}, out=OUT / "dip", progress=False)
print(dip)
display(dip.summary())

# %% [markdown]
# ## The equity curve
#
# matplotlib is not a dependency of tickray. With it installed, this cell plots
# both runs' equity; without it, it writes the curves to a CSV file instead.

# %%
curves = res.equity().set_index("ts")[["equity"]].rename(columns={"equity": "sma_cross"})
curves["dip"] = dip.equity().set_index("ts")["equity"]
try:
    import matplotlib.pyplot as plt
except ImportError:
    path = OUT / "equity.csv"
    curves.to_csv(path)
    print(f"matplotlib is not installed: the equity curves are in {path}")
    display(curves.iloc[:: max(1, len(curves) // 8)])
else:
    ax = curves.plot(title="Equity (USDT)", figsize=(9, 4))
    ax.set_xlabel("time (UTC)")
    plt.savefig(OUT / "equity.png")
    plt.show()
