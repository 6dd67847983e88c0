"""A cluster-wide request-weight budget for downloads from many workers.

Binance counts request weight per IP. Workers of one machine (or one NAT
address) downloading at once must share that budget: each process keeps its
own :class:`~tickray.feeds.rest.WeightLimiter`, and :class:`WeightBudget`, a
Ray actor holding one more limiter, admits every request of every process
too. ``budget_hook(handle)`` is the ``acquire_remote`` hook the process
limiters await (``WeightLimiter(..., acquire_remote=budget_hook(h))``).

The actor books a request's weight when it admits it and starts its window
then (it does not see the response), so the shared window is, if anything,
stricter than the exchange's.
"""

from __future__ import annotations

from typing import Any

import ray

from tickray.feeds.rest import AcquireRemote, WeightLimiter


@ray.remote
class WeightBudget:
    """One shared weight budget (per exchange market and IP); see the module doc."""

    def __init__(self, budget: int, margin: float = 0.1, window: float = 60.0) -> None:
        self.limiter = WeightLimiter(budget, margin, window=window)
        self.admitted = 0

    async def acquire(self, weight: int) -> None:
        spend = await self.limiter.acquire(weight)
        self.limiter.settle(spend)
        self.admitted += weight

    def used(self) -> int:
        return self.limiter.used()


def weight_budget(name: str, budget: int, margin: float = 0.1, window: float = 60.0) -> Any:
    """The cluster's budget actor called ``name`` (created on first use, then shared)."""
    return WeightBudget.options(name=name, get_if_exists=True).remote(  # type: ignore[attr-defined]
        budget, margin, window
    )


def budget_hook(handle: Any) -> AcquireRemote:
    """The ``acquire_remote`` hook of a process limiter sharing ``handle``'s budget."""

    async def acquire(weight: int) -> None:
        await handle.acquire.remote(weight)

    return acquire
