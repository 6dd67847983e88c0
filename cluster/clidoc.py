"""The command-line reference, generated from the ``tickray`` argparse parser.

``python -m tickray.cluster.clidoc > docs/cli.md`` writes it; a test keeps
``docs/cli.md`` equal to :func:`reference_markdown`, so the page cannot drift
from the flags the commands take. Only the parser and the command line's translation
of flags into spec keys are used: no command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from tickray.cluster.cli import parser, spec_document


def commands(root: argparse.ArgumentParser | None = None) -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its name after ``tickray`` (``"backtest"``,
    ``"data check"``, ...), in the parser's order; commands that only group others
    (``data``) are left out."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        sub = _subparsers(p)
        if sub is None:
            out[path] = p
            return
        for name, child in sub.choices.items():
            walk(child, f"{path} {name}".strip())

    walk(root if root is not None else parser(), "")
    return out


def _subparsers(p: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def command_help(root: argparse.ArgumentParser | None = None) -> dict[str, str]:
    """The one-line help of each command, as ``tickray --help`` lists it."""
    out: dict[str, str] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        sub = _subparsers(p)
        if sub is None:
            return
        helps = {a.dest: a.help or "" for a in sub._choices_actions}
        for name, child in sub.choices.items():
            full = f"{path} {name}".strip()
            out[full] = helps.get(name, "")
            walk(child, full)

    walk(root if root is not None else parser(), "")
    return out


def _sample(action: argparse.Action) -> list[str]:
    """Values that make ``action`` parse: a switch takes none; a choice its first; a
    number 1; ``NAME=VALUE`` forms a name and a number; JSON an empty object."""
    if action.nargs == 0:
        return []
    if action.choices is not None:
        return [str(next(iter(action.choices)))]
    if action.type in (int, float):
        return ["1"]
    meta = str(action.metavar or "")
    if "|" in meta:
        return [meta.split("|")[0]]
    if "=" in meta:
        return ["X=" + ("0,0" if "," in meta.split("=")[1] else "1")]
    if "JSON" in (action.help or "").upper():
        return ["{}"]
    return ["X"]


def _flat(doc: dict[str, Any]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, keys in doc.items() for k, v in (keys or {}).items()}


def flag_keys() -> dict[str, list[str]]:
    """The spec keys each ``tickray backtest`` flag sets, found by running the command
    line's own translation (:func:`~tickray.cluster.cli.spec_document`) with and
    without the flag; a flag that sets no key maps to ``[]``."""
    p = parser()
    cmds = commands(p)
    backtest = cmds["backtest"]
    out: dict[str, list[str]] = {}
    for a in backtest._actions:
        if not a.option_strings or isinstance(a, argparse._HelpAction):
            continue
        flag = a.option_strings[0]
        base = [] if flag in ("--demo", "--data") else ["--data", "DIR"]
        before = _flat(spec_document(p.parse_args(["backtest", *base])))
        after = _flat(spec_document(p.parse_args(["backtest", *base, flag, *_sample(a)])))
        out[flag] = [k for k, v in after.items() if before.get(k, object()) != v]
    return out


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (a ``|`` would end the cell)."""
    return " ".join(text.split()).replace("|", "\\|")


def _prose(text: str) -> str:
    """A table cell of prose: ``<`` would open an HTML tag, RST's double backticks
    become Markdown's single ones."""
    return _cell(text).replace("<", "\\<").replace("``", "`")


def _help_text(action: argparse.Action, prog: str) -> str:
    """The action's help with argparse's ``%(...)s`` and ``%%`` expanded, as ``--help``
    prints it."""
    text = action.help or ""
    if "%" not in text:
        return text
    params = dict(vars(action), prog=prog)
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    return text % params


def _value(action: argparse.Action) -> str:
    """What follows the flag: its metavar, its choices, or nothing for a switch."""
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        name = str(action.metavar)
    elif action.choices is not None:
        name = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        name = action.dest.upper()
    if action.nargs == "+":
        return f"{name} [{name} ...]"
    if action.nargs == "?":
        return f"[{name}]"
    return name


def _default(action: argparse.Action) -> str:
    d = action.default
    if d is None or d is False or d == argparse.SUPPRESS or action.nargs == 0:
        return ""
    return f"`{d}`"


def _synopsis(name: str, p: argparse.ArgumentParser) -> str:
    parts = [f"tickray {name}"]
    for a in p._actions:
        if a.option_strings:
            if a.required:
                parts.append(f"{a.option_strings[0]} {_value(a)}")
        elif not isinstance(a, argparse._SubParsersAction):
            parts.append(_value(a) if a.nargs in ("?", "+") else a.dest.upper())
    parts.append("[options]")
    return " ".join(parts)


def _table(
    actions: list[argparse.Action], prog: str, keys: dict[str, list[str]] | None
) -> list[str]:
    """One row per argument; with ``keys``, a column of the spec keys each flag sets."""
    head = ["argument", "default", "meaning"] + (["spec key"] if keys is not None else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in actions:
        if a.option_strings:
            value = _value(a)
            arg = ", ".join(f"`{f}{' ' + value if value else ''}`" for f in a.option_strings)
            if a.required:
                arg += " (required)"
        else:
            arg = f"`{_value(a) if a.nargs in ('?', '+') else a.dest.upper()}`"
        row = [_cell(arg), _cell(_default(a)), _prose(_help_text(a, prog))]
        if keys is not None:
            row.append(
                ", ".join(f"`{k}`" for k in keys.get(a.option_strings[0], []))
                if a.option_strings
                else ""
            )
        lines.append("| " + " | ".join(row) + " |")
    return lines


def reference_markdown() -> str:
    """The command-line reference (every command, its arguments, their defaults and
    meaning, and for ``backtest`` the spec key each flag sets) as Markdown, generated
    from the argparse parser."""
    top = parser()
    helps = command_help(top)
    keys = flag_keys()
    lines = [
        "# Command-line reference",
        "",
        "Generated from the `tickray` argparse parser (`tickray.cluster.cli.parser`) by "
        "`python -m tickray.cluster.clidoc > docs/cli.md`; a test keeps this page equal to "
        "the generator's output. Every command also takes `-h` / `--help`. Example: "
        "[`examples/guide_cli.py`](../examples/guide_cli.py); the guide starts at "
        "[index.md](index.md).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    cmds = commands(top)
    for name in cmds:
        anchor = "tickray-" + name.replace(" ", "-")
        lines.append(f"| [`tickray {name}`](#{anchor}) | {_prose(helps[name])} |")
    lines.append("")
    for name, p in cmds.items():
        lines += [f"## tickray {name}", ""]
        about = p.description or helps[name]
        if about:
            lines += [_prose(about), ""]
        if name == "backtest":
            lines += [
                "The spec key column is what each flag sets, found by running the command "
                "line's own translation (`tickray.cluster.cli.spec_document`) with and "
                "without the flag. The keys are described in [spec.md](spec.md).",
                "",
            ]
        lines += ["```", _synopsis(name, p), "```", ""]
        for group in p._action_groups:
            shown = [
                a
                for a in group._group_actions
                if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
            ]
            if not shown:
                continue
            title = group.title or "arguments"
            lines += [f"**{title[:1].upper() + title[1:]}**", ""]
            lines += _table(shown, p.prog, keys if name == "backtest" else None)
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tickray.cluster.clidoc > docs/cli.md
    print(reference_markdown())
