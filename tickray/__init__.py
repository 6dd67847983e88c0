"""tickray: an actor-based streaming market simulator.

The layers install as subpackages: ``tickray.engine`` (pure simulation core),
``tickray.risk`` (pure risk functions), ``tickray.feeds`` (market data I/O),
``tickray.actors`` (the step protocol's actors, in-process or on Ray) and
``tickray.cluster`` (CLI, launch, service).
"""

__version__ = "0.1.0"
