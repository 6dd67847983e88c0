"""tickray: an actor-based streaming market simulator.

The layers install as subpackages: ``tickray.engine`` (pure simulation core),
``tickray.risk`` (pure risk functions), ``tickray.feeds`` (market data I/O),
``tickray.actors`` (the step protocol's actors, in-process or on Ray) and
``tickray.cluster`` (CLI, launch, service).

From Python::

    import tickray
    res = tickray.run({"data": {"source": "demo"}, "strategy": {"name": "momentum"}})
    res.summary()
    res.equity()            # a DataFrame with UTC timestamps
    same = tickray.load(res.out)

A strategy of your own, from a module or a notebook cell::

    from tickray import SignalStrategy, Signal, register_strategy

    @register_strategy
    class Dip(SignalStrategy):
        name = "dip"
        params = {"drop": (float, 0.01, 0.0)}
        def on_bar(self, bar, ctx): ...

    tickray.run({"data": {"source": "demo"}}, strategy=Dip)

The names are imported on first use (``run``, ``load`` and ``Result`` from
:mod:`tickray.cluster.api`, the strategy classes from :mod:`tickray.engine`), so
``import tickray`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Result": "tickray.cluster.api",
    "load": "tickray.cluster.api",
    "run": "tickray.cluster.api",
    "register_strategy": "tickray.engine.strategies",
    "BarStrategy": "tickray.engine.strategies",
    "SignalStrategy": "tickray.engine.signals",
    "Signal": "tickray.engine.signals",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        # imported by name: the strict type check of the pure layers must not follow it
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'tickray' has no attribute {name!r}")
