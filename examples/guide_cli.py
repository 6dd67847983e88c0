"""The command line (docs/cli.md), run the way a shell runs it.

Each command runs ``python -m tickray ...``, which is the ``tickray`` console script,
and prints its exit status and the last lines of its output:

1. ``tickray backtest`` with flags only (each flag sets one spec key);
2. ``tickray backtest`` of a spec file, with a flag overriding one of its keys;
3. ``tickray backtest`` of a strategy from a module file (``--strategy-module``);
4. ``tickray sweep`` of a parameter grid (a list and a range);
5. ``tickray report`` of a results folder;
6. a bad input: one line naming the problem, exit status 2, no results folder.

Run: ``python examples/guide_cli.py`` (about 10 s). ``TICKRAY_EXAMPLE_FAST=1``
replays one day instead of three; results go to ``$TICKRAY_EXAMPLE_OUT`` or a new
temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

FAST = os.environ.get("TICKRAY_EXAMPLE_FAST") == "1"
OUT = Path(os.environ.get("TICKRAY_EXAMPLE_OUT") or tempfile.mkdtemp(prefix="tickray-cli-"))
OUT.mkdir(parents=True, exist_ok=True)
END = "2024-01-02" if FAST else "2024-01-04"
HERE = Path(__file__).resolve().parent


def tickray(*args: str, expect: int = 0, show: int = 8) -> str:
    """Run ``tickray ARGS``; check its exit status; print its last ``show`` lines."""
    print("$ tickray " + " ".join(args))
    done = subprocess.run(
        [sys.executable, "-m", "tickray", *args], capture_output=True, text=True, cwd=OUT
    )
    text = (done.stdout + done.stderr).rstrip()
    for line in text.splitlines()[-show:]:
        print("  " + line)
    print(f"  (exit status {done.returncode})\n")
    assert done.returncode == expect, text
    return text


# 1. flags only: --demo picks the demo data (and Ray; --backend local overrides it)
tickray(
    "backtest", "--demo", "--backend", "local", "--symbols", "SYN00USDT,SYN01USDT",
    "--end", END, "--strategy", "sma_cross", "--param", "fast=30", "--param", "slow=120",
    "--sync", "15m", "--fee", "0.0005", "--quiet", "--out", "flags",
)  # fmt: skip

# 2. a spec file, and a flag on top of it (--param window=30 replaces the file's 60)
tickray(
    "backtest", str(HERE / "momentum.toml"), "--symbols", "SYN00USDT", "SYN01USDT",
    "--end", END, "--param", "window=30", "--quiet", "--out", "spec",
)  # fmt: skip

# 3. a strategy of your own, from a module file (examples/my_strategies.py)
tickray(
    "backtest", "--demo", "--backend", "local", "--symbols", "SYN00USDT", "SYN01USDT",
    "--end", END, "--strategy-module", str(HERE / "my_strategies.py"),
    "--strategy", "rsi_revert", "--param", "window=14", "--quiet", "--out", "module",
)  # fmt: skip

# 4. a grid: window = [30, 60], threshold from 0.005 to 0.01 by 0.005 -> 4 runs
grid = OUT / "grid.toml"
grid.write_text(
    f"""
[data]
source = "demo"
end = "{END}"

[universe]
symbols = ["SYN00USDT", "SYN01USDT"]

[strategy]
name = "momentum"
params = {{ window = [30, 60], threshold = {{ start = 0.005, stop = 0.01, step = 0.005 }} }}
""".lstrip()
)
tickray("sweep", str(grid), "--quiet", "--out", "grid")
print("  sweep.json:", (OUT / "grid" / "sweep.json").read_text().count('"run"'), "runs\n")

# 5. the offline HTML report, written again to another file
tickray("report", "flags", "--out", "flags-report.html")

# 6. bad input: one line on stderr, exit status 2, no results folder
tickray(
    "backtest", "--demo", "--strategy", "momentum", "--param", "window=0", "--out", "bad",
    expect=2,
)  # fmt: skip
assert not (OUT / "bad").exists()
print(f"results in {OUT}")
