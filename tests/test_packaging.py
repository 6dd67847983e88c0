"""The wheel installs tickray.engine, tickray.actors, ... and no top-level engine/actors modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_subpackages_only(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("tickray-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("tickray-")}
    assert tops == {"tickray"}, tops
    for pkg in ("engine", "actors", "feeds", "risk", "cluster"):
        assert f"tickray/{pkg}/__init__.py" in names
    assert "tickray/py.typed" in names
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import tickray.engine.events as e, tickray.cluster.cli as c, tickray.feeds.schemas as f; "
        "assert e.__file__.startswith(sys.argv[1]), e.__file__; "
        "import importlib.util as u; assert u.find_spec('engine') is None; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(target)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "ok"
