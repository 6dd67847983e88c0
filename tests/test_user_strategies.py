"""User strategies from the user's own files and notebook cells, on every backend.

The strategy module is written to a temporary folder that is not on ``sys.path``, so a
Ray worker can only import it if tickray ships it through Ray's runtime environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SMALL_START

import tickray
from tickray.actors.usercode import UserCodeError, load_module
from tickray.cluster.cli import main as cli_main
from tickray.engine.signals import Direction, Signal, SignalStrategy
from tickray.engine.spec import SpecError
from tickray.engine.strategies import (
    BarStrategy,
    ParamError,
    register_strategy,
    unregister_strategy,
    user_strategies,
)

MODULE = '''
"""A user's strategies (written by the test)."""
import os
import signal

import numpy as np

from tickray import BarStrategy, Signal, SignalStrategy, register_strategy
from tickray.engine.signals import Direction


@register_strategy
class DipBuyer(SignalStrategy):
    """Buys after a bar closes `drop` below its open; flat after `hold` bars."""

    name = "{prefix}dip_buyer"
    params = {{"drop": (float, 0.001, 0.0), "hold": (int, 5, 1)}}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.left = 0

    def on_bar(self, bar, ctx):
        if self.left:
            self.left -= 1
            return Signal(Direction.FLAT) if self.left == 0 else None
        if bar.close < bar.open * (1 - self.drop):
            self.left = self.hold
            return Signal(Direction.BUY)
        return None


@register_strategy(name="{prefix}parity")
class Parity(BarStrategy):
    """Long while the close's whole part is even."""

    name = "parity_unused"
    params = {{"scale": (float, 1.0, 0.0)}}

    @property
    def warmup(self):
        return 1

    def raw_one(self, close):
        return 1 if int(close * self.scale) % 2 == 0 else 0

    def raw_batch(self, close):
        return ((close * self.scale).astype(np.int64) % 2 == 0).astype(np.int8)


@register_strategy
class Interrupter(SignalStrategy):
    """Sends this process SIGINT at AAAUSDT's `at`-th bar (as Ctrl-C would)."""

    name = "{prefix}interrupter"
    params = {{"at": (int, 300, 1)}}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.n = 0

    def on_bar(self, bar, ctx):
        self.n += 1
        if self.n == self.at and ctx.symbol == "AAAUSDT":
            os.kill(os.getpid(), signal.SIGINT)
        return Signal(Direction.BUY) if self.n % 50 == 0 else None
'''


def write_module(folder: Path, name: str, prefix: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(MODULE.format(prefix=prefix)))
    return path


@pytest.fixture()
def user_module(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A fresh strategy module (unique module and strategy names per test)."""
    tag = f"u{os.getpid()}_{abs(hash(tmp_path)) % 10**8}"
    folder = tmp_path / "code"
    folder.mkdir()
    path = write_module(folder, f"strats_{tag}", f"{tag}_")
    yield path, f"{tag}_"
    for name in list(user_strategies()):
        if name.startswith(tag):
            unregister_strategy(name)
    sys.modules.pop(path.stem, None)


def spec_for(root: Path, name: str, module: Path | None = None, **strategy: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"name": name} | strategy
    if module is not None:
        section["modules"] = [str(module)]
    return {
        "data": {"source": "files", "path": str(root)},
        "strategy": section,
        "run": {"sync": "1h"},
    }


# -- registration checks ---------------------------------------------------------------------


def test_a_class_without_the_required_methods_is_refused_by_name() -> None:
    class NoBatch(BarStrategy):
        name = "t_no_batch"
        params: dict[str, tuple[type, float | int, float | int]] = {}

        def raw_one(self, close: float) -> int:
            return 0

    with pytest.raises(ParamError, match=r"NoBatch: missing method\(s\) raw_batch"):
        register_strategy(NoBatch)

    class Silent(SignalStrategy):
        name = "t_silent"

    with pytest.raises(ParamError, match="Silent: overrides none of the callbacks"):
        register_strategy(Silent)
    with pytest.raises(ParamError, match="expected a class, got int"):
        register_strategy(42)
    with pytest.raises(ParamError, match="must subclass"):
        register_strategy(type("Plain", (), {"name": "t_plain"}))

    class BadParams(SignalStrategy):
        name = "t_bad_params"
        params = {"window": (str, "x", 0)}  # type: ignore[dict-item]

        def on_bar(self, bar: Any, ctx: Any) -> None:
            return None

    with pytest.raises(ParamError, match=r"params\['window'\] must be \(int or float"):
        register_strategy(BadParams)
    assert "t_no_batch" not in user_strategies()


def test_names_are_unique_and_built_ins_are_kept() -> None:
    class Momentum(SignalStrategy):
        name = "momentum"

        def on_bar(self, bar: Any, ctx: Any) -> None:
            return None

    with pytest.raises(ParamError, match="'momentum' is a built-in strategy's name"):
        register_strategy(Momentum)

    class First(SignalStrategy):
        name = "t_taken"

        def on_bar(self, bar: Any, ctx: Any) -> None:
            return None

    class Second(First):
        pass

    register_strategy(First)
    try:
        with pytest.raises(ParamError, match="already registered by .*First"):
            register_strategy(Second)
        assert register_strategy(First) is First  # the same class again: fine
    finally:
        unregister_strategy("t_taken")


def test_module_paths_that_do_not_exist_or_do_not_import(tmp_path: Path) -> None:
    with pytest.raises(UserCodeError, match="nope.py: no such file or folder"):
        load_module(str(tmp_path / "nope.py"))
    with pytest.raises(UserCodeError, match="no_such_module_xyz: no such module"):
        load_module("no_such_module_xyz")
    broken = tmp_path / "broken_mod_t.py"
    broken.write_text("import math\nraise RuntimeError('half written')\n")
    with pytest.raises(
        UserCodeError, match="broken_mod_t.py: importing it failed with RuntimeError: half written"
    ) as err:
        load_module(str(broken))
    assert "line 2" in str(err.value)  # the module's own traceback comes along
    assert "broken_mod_t" not in sys.modules
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserCodeError, match="must end in .py"):
        load_module(str(tmp_path / "notes.txt"))


def test_bad_input_fails_before_any_actor_starts(small_universe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserCodeError, match="missing.py: no such file"):
        tickray.run(spec_for(small_universe, "x", tmp_path / "missing.py"), out=out)
    with pytest.raises(SpecError, match=r"strategy.modules: must be a list of strings"):
        tickray.run(
            {
                "data": {"source": "files", "path": str(small_universe)},
                "strategy": {"name": "x", "modules": [3]},
            },
            out=out,
        )
    with pytest.raises(TypeError, match="spec: expected a spec file path, a dict"):
        tickray.run(42, out=out)  # type: ignore[arg-type]
    assert not out.exists() and not out.with_name("out.partial").exists()


# -- running them ---------------------------------------------------------------------------


def test_user_module_runs_unchanged_in_process_and_on_ray(
    ray_session: Any, small_universe: Path, user_module: tuple[Path, str], tmp_path: Path
) -> None:
    path, prefix = user_module
    for strat in ("dip_buyer", "parity"):
        spec = spec_for(small_universe, prefix + strat, path)
        local = tickray.run(spec, backend="local", out=tmp_path / f"{strat}-local")
        remote = tickray.run(spec, backend="ray", out=tmp_path / f"{strat}-ray")
        fills = local.fills()
        assert len(fills) > 10, strat
        assert fills.equals(remote.fills())
        assert local == remote
        # the run records which code it ran
        mods = local.run_info["config"]["strategy"]["modules"]
        assert mods[0]["name"] == path.stem and len(mods[0]["sha256"]) == 64
        assert tickray.load(local.out) == local


def test_a_notebook_class_travels_by_value(
    ray_session: Any, small_universe: Path, tmp_path: Path
) -> None:
    class Alternate(SignalStrategy):
        """Buy every 40th bar, flat 20 bars later (defined "in a notebook cell")."""

        __module__ = "__main__"  # what a class typed in a notebook or a script has
        name = "t_alternate"
        params = {"every": (int, 40, 2)}

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.n = 0

        def on_bar(self, bar: Any, ctx: Any) -> Signal | None:
            self.n += 1
            if self.n % self.every == 0:
                return Signal(Direction.BUY)
            if self.n % self.every == self.every // 2:
                return Signal(Direction.FLAT)
            return None

    try:
        spec = {"data": {"source": "files", "path": str(small_universe)}, "run": {"sync": "1h"}}
        local = tickray.run(spec, strategy=Alternate, backend="local", out=tmp_path / "a")
        remote = tickray.run(
            spec, strategy=Alternate, params={"every": 40}, backend="ray", out=tmp_path / "b"
        )
        assert len(local.fills()) > 10
        assert local.fills().equals(remote.fills())
    finally:
        unregister_strategy("t_alternate")


def test_cli_takes_the_user_module(
    small_universe: Path, user_module: tuple[Path, str], tmp_path: Path, capsys: Any
) -> None:
    path, prefix = user_module
    out = tmp_path / "cli"
    rc = cli_main(
        [
            "backtest",
            "--data",
            str(small_universe),
            "--strategy-module",
            str(path),
            "--strategy",
            prefix + "dip_buyer",
            "--param",
            "hold=3",
            "--backend",
            "local",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = tickray.load(out)
    assert res.run_info["config"]["strategy"]["params"] == {"hold": 3}
    assert len(res.fills()) > 10
    rc = cli_main(
        [
            "backtest",
            "--data",
            str(small_universe),
            "--strategy-module",
            str(tmp_path / "gone.py"),
            "--strategy",
            "x",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert rc == 2
    assert "gone.py: no such file or folder" in capsys.readouterr().err


def test_ctrl_c_keeps_what_was_recorded_and_marks_it_incomplete(
    small_universe: Path, user_module: tuple[Path, str], tmp_path: Path, capsys: Any
) -> None:
    path, prefix = user_module
    spec = spec_for(small_universe, prefix + "interrupter", path, params={"at": 700})
    res = tickray.run(spec, backend="local", out=tmp_path / "run")
    assert not res.complete
    assert res.out == tmp_path / "run.partial"
    assert not (tmp_path / "run").exists()
    reached = np.datetime64(res.reached.rstrip("Z"))
    eq = res.equity()
    assert eq.ts.iloc[-1].tz_convert(None).to_datetime64() == reached
    # it stopped at the first settlement after the 700th bar's close (sync 1h)
    start = np.datetime64(SMALL_START, "ns")
    assert start + np.timedelta64(700, "m") <= reached <= start + np.timedelta64(761, "m")
    assert "interrupted by SIGINT" in (res.out / "error.txt").read_text()
    assert json.loads((res.out / "run.json").read_text())["incomplete"]["reason"] == (
        "interrupted by SIGINT"
    )
    assert (res.out / "report.html").is_file()
    assert tickray.load(res.out) == res
    # the command line says so and exits 130
    rc = cli_main(
        [
            "backtest",
            "--data",
            str(small_universe),
            "--strategy-module",
            str(path),
            "--strategy",
            prefix + "interrupter",
            "--param",
            "at=700",
            "--backend",
            "local",
            "--sync",
            "1h",
            "--quiet",
            "--out",
            str(tmp_path / "cli"),
        ]
    )
    assert rc == 130
    assert "interrupted by SIGINT at" in capsys.readouterr().err
    assert (tmp_path / "cli.partial" / "metrics.json").is_file()


CLUSTER_SCRIPT = """
import json, sys
from ray.cluster_utils import Cluster
import tickray

spec, out = json.loads(sys.argv[1]), sys.argv[2]
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 2, "include_dashboard": False, "object_store_memory": 100 * 2**20})
cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
cluster.wait_for_nodes()
try:
    res = tickray.run(spec, backend="ray", address=cluster.address, out=out, progress=False)
    print(json.dumps({"actors": res.run_info["actors"]}))
finally:
    cluster.shutdown()
"""


def test_user_module_on_a_two_node_cluster(
    small_universe: Path, user_module: tuple[Path, str], tmp_path: Path
) -> None:
    """The module reaches both nodes through the job's runtime environment (the script
    runs elsewhere, so nothing but Ray can bring the file to the workers), and the
    symbols are sharded over the cluster's CPUs, not the driver machine's."""
    path, prefix = user_module
    spec = spec_for(small_universe, prefix + "dip_buyer", path)
    script = tmp_path / "elsewhere" / "drive.py"
    script.parent.mkdir()
    script.write_text(CLUSTER_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(spec), str(tmp_path / "cluster")],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    local = tickray.run(spec, backend="local", out=tmp_path / "local")
    remote = tickray.load(tmp_path / "cluster")
    # 3 symbols over the cluster's 3 CPUs (2 + 1), whatever this machine has
    assert len(json.loads(done.stdout.strip().splitlines()[-1])["actors"]) == 3
    assert len(local.fills()) > 10
    assert local.fills().equals(remote.fills())
    assert local.metrics == remote.metrics
