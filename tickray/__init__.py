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

``run``, ``load`` and ``Result`` live in :mod:`tickray.cluster.api` and are
imported on first use, so ``import tickray`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Result", "load", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        # imported by name: the strict type check of the pure layers must not follow it
        api = importlib.import_module("tickray.cluster.api")
        return getattr(api, name)
    raise AttributeError(f"module 'tickray' has no attribute {name!r}")
