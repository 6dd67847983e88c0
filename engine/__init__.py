"""tickray.engine: the pure, deterministic simulation core.

Events and their codec, time arithmetic, instruments, indicators, strategies,
bar fill simulation, accounts and metrics. Nothing here touches Ray, the
network, the disk or the wall clock.
"""
