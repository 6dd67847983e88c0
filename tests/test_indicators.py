"""Indicators and strategies: hand-computed values, and batch == event by event."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.indicators import EMA, SMA, Lag
from tickray.engine.strategies import (
    MomentumStrategy,
    ParamError,
    SmaCrossStrategy,
    make_strategy,
)


def test_sma_hand_computed() -> None:
    sma = SMA(3)
    out = [sma.update(x) for x in [1.0, 2.0, 3.0, 4.0, 10.0]]
    assert math.isnan(out[0]) and math.isnan(out[1])
    assert out[2:] == [2.0, 3.0, (3 + 4 + 10) / 3]


def test_momentum_hand_computed_signals() -> None:
    # window 2, threshold 5%: momentum at bar i is close[i] / close[i-2] - 1
    s = MomentumStrategy(window=2, threshold=0.05)
    closes = [100.0, 100.0, 106.0, 104.0, 100.0, 98.0, 99.0]
    # bar2: 106/100-1 = +6% -> long; bar3: 104/100-1 = +4% -> hold long;
    # bar4: 100/106-1 = -5.7% -> short; bar5: 98/104-1 = -5.8% -> short;
    # bar6: 99/100-1 = -1% -> hold short
    assert [s.on_bar(c) for c in closes] == [0, 0, 1, 1, -1, -1, -1]
    assert s.warmup == 3


def test_sma_cross_needs_slow_bars_before_any_signal() -> None:
    s = SmaCrossStrategy(fast=2, slow=3)
    # bar2: fast=(2+3)/2=2.5 > slow=(1+2+3)/3=2 -> long
    # bar3: fast=(3+1)/2=2 == slow=(2+3+1)/3=2 -> hold long
    # bar4: fast=(1+0.5)/2=0.75 < slow=(3+1+0.5)/3=1.5 -> short
    assert [s.on_bar(c) for c in [1.0, 2.0, 3.0, 1.0, 0.5]] == [0, 0, 1, 1, -1]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(1.0, 1000.0), min_size=1, max_size=300),
    st.lists(st.integers(1, 40), min_size=1, max_size=10),
    st.integers(1, 30),
)
def test_batch_updates_equal_event_by_event(xs: list[float], cuts: list[int], w: int) -> None:
    arr = np.array(xs)
    for make in (lambda: SMA(w), lambda: Lag(w), lambda: EMA(w)):
        one, batched = make(), make()
        expect = np.array([one.update(x) for x in xs])
        got, i = [], 0
        for c in cuts * 50:
            if i >= len(arr):
                break
            got.append(batched.update_batch(arr[i : i + c]))
            i += c
        got.append(batched.update_batch(arr[i:]))
        assert np.concatenate(got).tobytes() == expect.tobytes()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(50.0, 150.0), min_size=1, max_size=400), st.integers(1, 64))
def test_strategy_targets_batch_equal_on_bar(xs: list[float], chunk: int) -> None:
    for name, params in (
        ("momentum", {"window": 5, "threshold": 0.01}),
        ("sma_cross", {"fast": 3, "slow": 8}),
    ):
        one, batched = make_strategy(name, params), make_strategy(name, params)
        expect = [one.on_bar(x) for x in xs]
        arr = np.array(xs)
        got = np.concatenate(
            [batched.targets(arr[i : i + chunk]) for i in range(0, len(arr), chunk)]
        )
        assert got.tolist() == expect


def test_unknown_strategy_and_bad_params_name_the_problem() -> None:
    with pytest.raises(
        ParamError, match="unknown strategy 'nope' \\(known: momentum, sma_cross\\)"
    ):
        make_strategy("nope")
    with pytest.raises(ParamError, match="has no parameter 'windw' \\(known: threshold, window\\)"):
        make_strategy("momentum", {"windw": 3})
    with pytest.raises(ParamError, match="strategy.params.window: must be an integer, got 'x'"):
        make_strategy("momentum", {"window": "x"})
    with pytest.raises(ParamError, match="strategy.params.window: must be >= 1"):
        make_strategy("momentum", {"window": 0})
    with pytest.raises(ParamError, match="fast \\(50\\) must be smaller than slow \\(20\\)"):
        make_strategy("sma_cross", {"fast": 50, "slow": 20})
    assert make_strategy("momentum", {"window": "7", "threshold": "0.5"}).warmup == 8
