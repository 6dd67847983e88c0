"""The cluster-wide weight budget: process limiters on two clients share one Ray actor."""

from __future__ import annotations

import asyncio
import time

import pytest

from tickray.feeds.rest import WeightLimiter

pytestmark = pytest.mark.ray


def test_two_clients_share_one_budget(ray_session: object) -> None:
    import ray

    from tickray.cluster.limiter import budget_hook, weight_budget

    handle = weight_budget("test-binance-usdm", budget=10, margin=0.0, window=1.5)
    # each client alone would admit 10 per window; together they may admit 10
    a = WeightLimiter(10, 0.0, acquire_remote=budget_hook(handle))
    b = WeightLimiter(10, 0.0, acquire_remote=budget_hook(handle))

    async def scenario() -> tuple[float, float]:
        began = time.monotonic()
        for limiter in (a, b):
            limiter.settle(await limiter.acquire(4))
        assert ray.get(handle.used.remote()) == 8
        third = asyncio.ensure_future(a.acquire(4))  # 12 > 10: waits for the window
        await asyncio.sleep(0.5)
        waited = third.done()
        spend = await asyncio.wait_for(third, timeout=5.0)
        a.settle(spend)
        return time.monotonic() - began, float(waited)

    elapsed, done_early = asyncio.run(scenario())
    assert done_early == 0.0 and elapsed >= 1.4
    # the same name gives the same actor: a third client sees the weight already admitted
    again = weight_budget("test-binance-usdm", budget=10, margin=0.0, window=1.5)
    assert ray.get(again.used.remote()) >= 4
