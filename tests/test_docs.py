"""The user guide (docs/) and its example scripts (examples/*.py).

Every example script runs to completion; the generated pages equal their
generators' output; the pages name only spec keys, commands and flags that exist,
and link only to files and headings that exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tickray.cluster.clidoc import commands
from tickray.engine.spec import SCHEMA

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
PAGES = sorted(DOCS.glob("*.md"))
CHECKED = [*PAGES, ROOT / "README.md"]  # pages whose keys, flags and links are checked

SLOW = {"guide_cluster.py"}  # starts a two-node Ray cluster
TIMEOUT = {"guide_cluster.py": 180}  # seconds; the others take well under 30 s


def example_env(out: Path) -> dict[str, str]:
    """The environment of an example script under test: less history, results in ``out``,
    a fresh local Ray instance for any run that starts one (never a cluster some other
    process started on this machine), and plots drawn off screen."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {
        "TICKRAY_EXAMPLE_FAST": "1",
        "TICKRAY_EXAMPLE_OUT": str(out),
        "RAY_ADDRESS": "local",
        "MPLBACKEND": "Agg",
    }
    return env


# -- (a, b) every example script, the notebook included, runs to completion -------------------


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, marks=[pytest.mark.slow] if p.name in SLOW else []) for p in EXAMPLES],
    ids=[p.stem for p in EXAMPLES],
)
def test_example_script_runs_to_completion(script: Path, tmp_path: Path) -> None:
    # run from elsewhere: the scripts find their files from __file__, not the working dir
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=example_env(tmp_path / "out"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT.get(script.name, 120),
    )
    assert done.returncode == 0, (
        f"{script.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    assert done.stdout.strip(), f"{script.name} printed nothing"


def test_the_notebook_is_a_percent_format_notebook() -> None:
    """Cells start with ``# %%`` (code) or ``# %% [markdown]`` (text); every code cell
    compiles on its own; the plot cell falls back when matplotlib is missing."""
    text = (ROOT / "examples" / "notebook.py").read_text(encoding="utf-8")
    cells = re.split(r"^# %%", text, flags=re.M)
    assert cells[0] == "", "the notebook must start with a cell marker"
    kinds = ["markdown" if c.startswith(" [markdown]") else "code" for c in cells[1:]]
    assert kinds.count("markdown") >= 4 and kinds.count("code") >= 4
    for k, (kind, body) in enumerate(zip(kinds, cells[1:], strict=True)):
        if kind == "markdown":
            lines = [ln for ln in body.splitlines()[1:] if ln.strip()]
            assert all(ln.startswith("#") for ln in lines), f"markdown cell {k} has code"
        else:
            compile(body, f"notebook cell {k}", "exec")
    assert "import tickray" in cells[2]
    assert "import matplotlib.pyplot as plt\nexcept ImportError:" in cells[-1]


# -- (c) the CLI reference is the generator's output --------------------------------------------


def test_cli_reference_equals_the_generator_output() -> None:
    """docs/cli.md is ``python -m tickray.cluster.clidoc`` (run in a fresh process, so that
    strategies other tests registered do not show in the --strategy help); regenerate with
    ``python -m tickray.cluster.clidoc > docs/cli.md``."""
    done = subprocess.run(
        [sys.executable, "-m", "tickray.cluster.clidoc"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == done.stdout


def test_cli_reference_covers_every_command_and_flag() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name, p in commands().items():
        assert f"## tickray {name}\n" in text
        for action in p._actions:
            for flag in action.option_strings:
                assert flag in ("-h", "--help") or f"`{flag}" in text, f"{name} {flag}"


# -- (d) spec keys named in the guide exist, and the spec reference names every key ----------

_FILE_SUFFIXES = {"parquet", "json", "py", "md", "html", "toml", "yaml", "txt", "csv"}
_KEY = re.compile(r"(?<![\w.\-/])(" + "|".join(SCHEMA) + r")\.([A-Za-z_]\w*)(?:\.([\w<>]+))?")


def code_spans(text: str) -> list[str]:
    """The inline code spans of a Markdown text (fenced blocks left out)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def named_keys(text: str) -> list[tuple[str, str, str | None]]:
    """``(section, key, subkey)`` of every ``section.key`` in the text's code spans, for
    the spec's sections; file names like ``run.json`` are not keys."""
    found = []
    for span in code_spans(text):
        for section, key, sub in _KEY.findall(span):
            if key not in _FILE_SUFFIXES:
                found.append((section, key, sub or None))
    return found


@pytest.mark.parametrize("page", CHECKED, ids=[p.name for p in CHECKED])
def test_spec_keys_named_in_a_page_exist(page: Path) -> None:
    keys = named_keys(page.read_text(encoding="utf-8"))
    bad = [f"{s}.{k}" for s, k, _ in keys if k not in SCHEMA[s]]
    assert not bad, f"{page.name} names spec keys that do not exist: {sorted(set(bad))}"
    # below strategy.params the names are the strategy's own; nothing else has sub-keys
    deep = [f"{s}.{k}.{sub}" for s, k, sub in keys if sub and (s, k) != ("strategy", "params")]
    assert not deep, f"{page.name} names nested keys that do not exist: {deep}"


def test_the_key_check_sees_the_guide_s_keys() -> None:
    """The check above is only as good as its pattern: it must find the keys the guide
    pages do name, and refuse made-up ones."""
    found = {f"{s}.{k}" for p in PAGES for s, k, _ in named_keys(p.read_text(encoding="utf-8"))}
    assert {"run.sync", "run.approval", "strategy.modules", "execution.maker_fee"} <= found
    assert len(found) >= 30
    assert named_keys("`run.synch` and `run.json` and `tickray.run`") == [("run", "synch", None)]


def test_the_spec_reference_lists_every_key() -> None:
    """docs/spec.md, read as a reader would: every section heading and every key row."""
    listed: dict[str, set[str]] = {}
    section = ""
    for line in (DOCS / "spec.md").read_text(encoding="utf-8").splitlines():
        head = re.match(r"^## \[(\w+)\]$", line)
        if head:
            section = head.group(1)
            listed[section] = set()
        row = re.match(r"^\| `(\w+)` \|", line)
        if row and section:
            listed[section].add(row.group(1))
    assert listed == {s: set(keys) for s, keys in SCHEMA.items()}


# -- (e) commands and flags named in the docs exist ---------------------------------------------


def command_lines(text: str) -> list[str]:
    """Shell commands of a Markdown text: inline code spans, and the lines of fenced
    shell blocks (```sh, ```bash, ```console or no language; continued lines joined)."""
    out = list(code_spans(text))
    for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S):
        if lang in ("", "sh", "bash", "shell", "console"):
            out += block.replace("\\\n", " ").splitlines()
    return out


def tickray_calls(line: str) -> list[tuple[str, list[str]]]:
    """``(command, flags)`` of each ``tickray COMMAND ...`` in a command line."""
    calls = []
    for m in re.finditer(r"\btickray\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?", line):
        rest = line[m.end() :]
        rest = re.split(r"\s(?:#|\||;|&&)\s|\b(?:tickray|ray)\s", rest)[0]
        name = m.group(1)
        if name == "data" and m.group(2):
            name = f"data {m.group(2)}"
        calls.append((name, re.findall(r"(?<![\w-])--[a-z][\w-]*", rest)))
    return calls


@pytest.mark.parametrize("page", CHECKED, ids=[p.name for p in CHECKED])
def test_commands_and_flags_named_in_a_page_exist(page: Path) -> None:
    cmds = commands()
    every_flag = {f for p in cmds.values() for a in p._actions for f in a.option_strings}
    problems = []
    for line in command_lines(page.read_text(encoding="utf-8")):
        for name, flags in tickray_calls(line):
            if name not in cmds:
                problems.append(f"unknown command: tickray {name}  ({line.strip()})")
                continue
            known = {f for a in cmds[name]._actions for f in a.option_strings}
            problems += [f"tickray {name} has no {f}" for f in flags if f not in known]
        bare = line.strip()
        if bare.startswith("--"):  # a flag named on its own: some command has it
            flag = re.match(r"--[a-z][\w-]*", bare)
            if flag and flag.group(0) not in every_flag:
                problems.append(f"no command has {flag.group(0)}")
    assert not problems, f"{page.name}:\n" + "\n".join(problems)


def test_the_flag_check_sees_commands_and_refuses_made_up_flags() -> None:
    assert tickray_calls(".venv/bin/tickray backtest --demo --sync 1h  # a comment --x") == [
        ("backtest", ["--demo", "--sync"])
    ]
    assert tickray_calls("tickray data check --data d --min-score 0.9") == [
        ("data check", ["--data", "--min-score"])
    ]
    assert tickray_calls("python -m tickray.cluster.clidoc > docs/cli.md") == []
    cmds = commands()
    assert "--no-such-flag" not in {f for a in cmds["backtest"]._actions for f in a.option_strings}


# -- links, the example index, the cluster launcher template ------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"\s", "-", text)


@pytest.mark.parametrize("page", CHECKED, ids=[p.name for p in CHECKED])
def test_relative_links_point_to_files_and_headings_that_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue  # http(s) and mail links are not checked
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(target)
        elif anchor and dest.suffix == ".md":
            heads = re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), flags=re.M)
            if anchor not in {slug(h) for h in heads}:
                bad.append(target)
    assert not bad, f"{page.name}: broken links {bad}"


def test_the_index_lists_every_page_and_every_example() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for page in PAGES:
        assert page.name == "index.md" or f"]({page.name})" in index, page.name
    for script in EXAMPLES:
        assert f"`{script.name}`" in index, script.name
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/index.md)" in readme


def test_the_cluster_launcher_template_is_accepted_by_ray_and_shown_in_the_guide() -> None:
    """Ray's launcher fills in the on-premise defaults and validates the file against
    its schema, as ``ray up`` does; the guide shows the same settings."""
    yaml = pytest.importorskip("yaml")
    util = pytest.importorskip("ray.autoscaler._private.util")
    template = yaml.safe_load((DOCS / "ray-cluster.yaml").read_text(encoding="utf-8"))
    util.validate_config(util.prepare_config(template))
    guide = (DOCS / "cluster.md").read_text(encoding="utf-8")
    shown = re.findall(r"^```yaml\n(.*?)^```", guide, flags=re.M | re.S)
    assert len(shown) == 1 and yaml.safe_load(shown[0]) == template
