"""User strategy code: import the user's modules, and ship them to Ray workers.

A user writes a strategy class in their own file, a package folder or a notebook cell,
and registers it with :func:`tickray.register_strategy` (a decorator). Three ways reach
the symbol actors that build it:

- **In-process** (``backend = "local"``): the driver imported the module, so the class
  is in this process's registry already.
- **Ray, a module file or package folder**: the module is named in
  ``strategy.modules`` (spec, ``--strategy-module``, or found from the class itself);
  :func:`runtime_env` lists its path under Ray's ``py_modules``, Ray uploads it to each
  node, and :func:`ensure_loaded` imports it by name in the worker, which registers
  the class there. Nothing is copied by hand, and a multi-node cluster works the same.
- **Ray, a class defined in ``__main__``** (a script or a notebook cell): no file can be
  imported on a worker, so the class itself travels by value (Ray's cloudpickle) as an
  argument of the symbol actor, which registers it before building the strategy.

Modules installed in the environment (under site-packages) are assumed to be installed
on every node and are imported by name only.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import sysconfig
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tickray.engine.config import ConfigError, RunConfig, UserModule
from tickray.engine.strategies import register_strategy, registry, user_strategies

__all__ = [
    "UserCodeError",
    "ensure_loaded",
    "load_module",
    "load_modules",
    "main_classes",
    "runtime_env",
    "shipped_modules",
    "uploaded_env",
]

_LOADED: dict[str, str] = {}
"""Module name -> sha256 of the source this process executed for it (from a path)."""


class UserCodeError(ConfigError):
    """A user module that does not exist, does not import, or clashes with another."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(".py") or "/" in ref or "\\" in ref or Path(ref).exists()


def load_module(ref: str) -> UserModule:
    """Import the user module ``ref`` in this process (registering its strategies).

    ``ref`` is a ``.py`` file, a package folder (with ``__init__.py``), or a dotted
    module name importable here. A file is imported under its stem, a folder under
    its name; a file already imported from the same path is executed again only when
    its source changed (so an edited module is picked up by the next run).
    Raises :class:`UserCodeError` naming ``ref`` when it does not exist or fails to
    import (with the module's own traceback).
    """
    if not isinstance(ref, str) or not ref.strip():
        raise UserCodeError(f"strategy.modules: expected a path or module name, got {ref!r}")
    ref = ref.strip()
    if not _looks_like_path(ref):
        return _import_by_name(ref)
    path = Path(ref).expanduser().resolve()
    if not path.exists():
        raise UserCodeError(f"strategy module {ref}: no such file or folder")
    if path.is_file():
        if path.suffix != ".py":
            raise UserCodeError(f"strategy module {ref}: a module file must end in .py")
        name, init = path.stem, path
    else:
        init = path / "__init__.py"
        if not init.is_file():
            raise UserCodeError(f"strategy module {ref}: a package folder needs an __init__.py")
        name = path.name
    if not name.isidentifier():
        raise UserCodeError(
            f"strategy module {ref}: {name!r} is not a valid module name (letters, digits "
            "and '_', not starting with a digit)"
        )
    digest = _digest(path)
    known = sys.modules.get(name)
    if known is not None:
        known_file = getattr(known, "__file__", None)
        if known_file is None or Path(known_file).resolve() != init:
            raise UserCodeError(
                f"strategy module {ref}: its name {name!r} is already taken by "
                f"{known_file or 'a built-in module'}; rename the file"
            )
        if _LOADED.get(name) == digest:
            return UserModule(name, str(path), digest)
    _exec_path(name, path, init, ref)
    _LOADED[name] = digest
    return UserModule(name, str(path), digest)


def _exec_path(name: str, path: Path, init: Path, ref: str) -> None:
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(path)] if path.is_dir() else None
    )
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise UserCodeError(f"strategy module {ref}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        tb = "".join(traceback.format_exception(exc)).rstrip()
        raise UserCodeError(
            f"strategy module {ref}: importing it failed with {type(exc).__name__}: {exc}\n{tb}"
        ) from exc


def _import_by_name(ref: str) -> UserModule:
    try:
        importlib.import_module(ref)
    except ModuleNotFoundError as exc:
        if exc.name is not None and ref.startswith(exc.name):
            raise UserCodeError(
                f"strategy module {ref}: no such module (nor a file or folder of that name)"
            ) from None
        raise UserCodeError(f"strategy module {ref}: importing it failed: {exc}") from exc
    except Exception as exc:
        tb = "".join(traceback.format_exception(exc)).rstrip()
        raise UserCodeError(
            f"strategy module {ref}: importing it failed with {type(exc).__name__}: {exc}\n{tb}"
        ) from exc
    top = sys.modules[ref.split(".")[0]]
    source = _source_of(top)
    if source is None or _installed(source):
        return UserModule(ref, "", "")
    return UserModule(ref, str(source), _digest(source))


def load_modules(refs: Sequence[str]) -> tuple[UserModule, ...]:
    """:func:`load_module` of each reference, in order."""
    return tuple(load_module(r) for r in refs)


def _source_of(module: Any) -> Path | None:
    """The file of a top-level module, or the folder of a top-level package."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    p = Path(file).resolve()
    return p.parent if p.name == "__init__.py" else p


def _installed(path: Path) -> bool:
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    return any(path.is_relative_to(Path(r).resolve()) for r in roots if r)


def _tickray_root() -> Path:
    return Path(__file__).resolve().parents[1]


def shipped_modules(config: RunConfig) -> tuple[UserModule, ...]:
    """The modules a worker must import: the config's, plus the module that defines the
    run's strategy class when it is a user class from a file no module entry covers."""
    mods = list(config.strategy.modules)
    cls = user_strategies().get(config.strategy.name)
    if cls is None or cls.__module__ == "__main__":
        return tuple(mods)
    top_name = cls.__module__.split(".")[0]
    top = sys.modules.get(top_name)
    source = _source_of(top) if top is not None else None
    if (
        source is None
        or _installed(source)
        or source.is_relative_to(_tickray_root())
        or any(m.name.split(".")[0] == top_name for m in mods)
    ):
        return tuple(mods)
    mods.append(UserModule(cls.__module__, str(source), _digest(source)))
    return tuple(mods)


def main_classes(config: RunConfig) -> dict[str, type]:
    """The run's strategy class when no worker could import it (defined in ``__main__``:
    a script or a notebook cell): it is sent to the actors by value."""
    cls = user_strategies().get(config.strategy.name)
    if cls is None or cls.__module__ != "__main__":
        return {}
    return {config.strategy.name: cls}


def runtime_env(mods: Sequence[UserModule]) -> dict[str, Any] | None:
    """Ray's runtime environment that uploads the modules' files to every node."""
    paths = sorted({m.path for m in mods if m.path})
    return {"py_modules": paths} if paths else None


def uploaded_env(env: Mapping[str, Any]) -> dict[str, Any]:
    """``env`` with its local ``py_modules`` paths uploaded to the running Ray cluster's
    store, for actors of a job that did not start with them (the driver called
    ``ray.init`` before): Ray takes local paths only at the job level, URIs per actor.

    Uses Ray's own packaging step, the one ``ray.init(runtime_env=...)`` runs (a
    private function of Ray: the tests run it on the installed version).
    """
    try:
        from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    except ImportError as exc:  # pragma: no cover - another Ray version
        raise UserCodeError(
            "this Ray version cannot ship strategy modules to a running job; start Ray "
            f"with ray.init(runtime_env={dict(env)!r}) instead"
        ) from exc
    uploaded: dict[str, Any] = upload_py_modules_if_needed(dict(env), include_gitignore=False)
    return uploaded


def ensure_loaded(mods: Sequence[UserModule], classes: Mapping[str, type] | None = None) -> None:
    """In a worker (or in-process): import each user module and register ``classes``,
    so that the run's strategy name resolves. A module already imported is kept."""
    for m in mods:
        if m.name in sys.modules:
            continue
        try:
            importlib.import_module(m.name)
        except ModuleNotFoundError as exc:
            # no fallback to m.path: on Ray the module must arrive through the runtime
            # environment (a path is of the driver's machine, not this one's)
            if exc.name is None or not m.name.startswith(exc.name):
                raise
            raise UserCodeError(
                f"strategy module {m.name} ({m.path or 'installed'}) cannot be imported on "
                "this worker: give its file in strategy.modules so that Ray ships it"
            ) from None
    known = registry()
    for name, cls in (classes or {}).items():
        if known.get(name) is not cls:
            register_strategy(cls, name=name)
