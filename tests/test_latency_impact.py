"""Latency and market-impact models: hand-computed values, seeded streams, invariants."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.clock import MS, SECOND
from tickray.engine.impact import (
    EwmaVolatility,
    ImpactError,
    ImpactModel,
    LinearImpact,
    NoImpact,
    SquareRootImpact,
    impact_from_spec,
)
from tickray.engine.latency import (
    ConstantLatency,
    EmpiricalDelay,
    LatencyError,
    LatencyKind,
    LatencyModel,
    LognormalDelay,
    SampledLatency,
    UniformDelay,
    latency_from_spec,
    symbol_seed,
)

SUBMIT, MODIFY, CANCEL, MD = (
    LatencyKind.SUBMIT,
    LatencyKind.MODIFY,
    LatencyKind.CANCEL,
    LatencyKind.MARKET_DATA,
)


def _draws(model: LatencyModel, kind: LatencyKind, n: int) -> list[int]:
    return [model.draw(kind) for _ in range(n)]


# --------------------------------------------------------------------------- latency


def test_constant_latency_returns_the_configured_ns_per_kind() -> None:
    m = ConstantLatency(submit=5 * MS, modify=4 * MS, cancel=3 * MS, market_data=1 * MS)
    assert _draws(m, SUBMIT, 3) == [5_000_000] * 3
    assert (m.draw(MODIFY), m.draw(CANCEL), m.draw(MD)) == (4_000_000, 3_000_000, 1_000_000)
    assert isinstance(m, LatencyModel)


def test_default_latency_is_zero_for_every_kind() -> None:
    m = latency_from_spec(None, seed=0)
    assert isinstance(m, ConstantLatency)
    assert [m.draw(k) for k in LatencyKind] == [0, 0, 0, 0]


def test_constant_latency_rejects_negative_or_fractional_ns() -> None:
    with pytest.raises(LatencyError, match="cancel must be an int number of ns >= 0, got -1"):
        ConstantLatency(cancel=-1)
    with pytest.raises(LatencyError, match="submit"):
        ConstantLatency(submit=1.5)  # type: ignore[arg-type]


def _lognormal(seed: int, block: int = 1024) -> SampledLatency:
    return SampledLatency(
        seed,
        submit=LognormalDelay(5 * MS, 0.4),
        cancel=UniformDelay(1 * MS, 3 * MS),
        market_data=EmpiricalDelay([700_000, 900_000, 2 * MS]),
        block=block,
    )


def test_seeded_sampled_latency_gives_the_same_sequence_twice() -> None:
    a, b = _lognormal(11), _lognormal(11)
    assert _draws(a, SUBMIT, 3000) == _draws(b, SUBMIT, 3000)
    assert _draws(a, MD, 100) == _draws(b, MD, 100)
    assert _draws(_lognormal(12), SUBMIT, 50) != _draws(_lognormal(11), SUBMIT, 50)


def test_block_draws_equal_one_at_a_time_draws() -> None:
    # The reference draws one lognormal at a time from the submit stream by hand:
    # stream 0 of SeedSequence(11).spawn(4), value = rint(5e6 * exp(0.4 * z)).
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(11).spawn(4)[0]))
    by_hand = [int(np.rint(5e6 * np.exp(0.4 * rng.standard_normal()))) for _ in range(2500)]
    for block in (1, 7, 1024):
        assert _draws(_lognormal(11, block=block), SUBMIT, 2500) == by_hand
    for kind in (CANCEL, MD):
        one = _draws(_lognormal(3, block=1), kind, 2100)
        assert _draws(_lognormal(3, block=1024), kind, 2100) == one


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), block=st.integers(1, 64), n=st.integers(0, 300))
def test_block_size_never_changes_the_draws(seed: int, block: int, n: int) -> None:
    assert _draws(_lognormal(seed, block=block), SUBMIT, n) == _draws(_lognormal(seed), SUBMIT, n)


def test_kinds_are_independent_streams() -> None:
    # Interleaving cancel and market-data draws does not shift the submit sequence.
    alone = _draws(_lognormal(5), SUBMIT, 2000)
    mixed = _lognormal(5)
    interleaved = []
    for i in range(2000):
        if i % 3 == 0:
            mixed.draw(CANCEL)
            mixed.draw(MD)
        interleaved.append(mixed.draw(SUBMIT))
    assert interleaved == alone


def test_lognormal_median_is_near_the_given_median_over_20k_draws() -> None:
    # Sample median of 20k lognormals: standard error ~ 1.25 * sigma / sqrt(n)
    # = 1.25 * 0.4 / 141 ~ 0.35% of the median, so 2% is a wide margin.
    draws = _draws(SampledLatency(2024, submit=LognormalDelay(3 * MS, 0.4)), SUBMIT, 20_000)
    assert abs(float(np.median(draws)) / 3e6 - 1) < 0.02
    assert min(draws) > 0


def test_empirical_draws_only_observed_values() -> None:
    observed = [700_000, 900_000, 2 * MS]
    draws = _draws(_lognormal(9), MD, 3000)
    assert set(draws) == set(observed)  # every value seen, nothing else
    # with replacement, each value about a third of the time (1000 +- ~26 expected)
    assert all(800 < draws.count(v) < 1200 for v in observed)


def test_uniform_draws_stay_within_low_and_high() -> None:
    draws = _draws(_lognormal(9), CANCEL, 5000)
    assert min(draws) >= 1 * MS and max(draws) <= 3 * MS
    assert abs(float(np.mean(draws)) / 2e6 - 1) < 0.02  # mean of U[1ms, 3ms] = 2 ms


def test_floors_are_respected() -> None:
    # A floor at the median lifts about half of the lognormal draws to exactly the floor.
    m = SampledLatency(
        1,
        submit=LognormalDelay(3 * MS, 0.5, floor_ns=3 * MS),
        cancel=UniformDelay(0, 10 * MS, floor_ns=8 * MS),
        market_data=EmpiricalDelay([1, 2, 5 * MS], floor_ns=1 * MS),
    )
    sub = _draws(m, SUBMIT, 4000)
    assert min(sub) == 3 * MS and 1800 < sub.count(3 * MS) < 2200
    assert min(_draws(m, CANCEL, 2000)) == 8 * MS  # U[0, 10ms] is below 8 ms 80% of the time
    assert set(_draws(m, MD, 200)) == {1 * MS, 5 * MS}


def test_symbol_seed_is_stable_and_different_per_symbol() -> None:
    # blake2b(b"42:BTCUSDT", digest_size=8, person=b"tickray-latency"), little-endian:
    # pinned so that a change of derivation (which changes every run's fills) is caught.
    assert symbol_seed(42, "BTCUSDT") == 7599086399229573868
    assert symbol_seed(42, "BTCUSDT") == symbol_seed(42, "BTCUSDT")
    seeds = {symbol_seed(42, s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSD")}
    assert len(seeds) == 4
    assert symbol_seed(43, "BTCUSDT") != symbol_seed(42, "BTCUSDT")
    assert all(0 <= s < 2**64 for s in seeds)


def test_latency_spec_of_plain_durations_is_constant() -> None:
    m = latency_from_spec({"submit": "5ms", "cancel": 250_000, "market_data": "1s"}, seed=0)
    assert isinstance(m, ConstantLatency)
    assert [m.draw(k) for k in LatencyKind] == [5 * MS, 0, 250_000, SECOND]
    assert latency_from_spec(m.describe(), seed=0).describe() == m.describe()


def test_latency_spec_with_a_distribution_is_sampled_and_describe_rebuilds_it() -> None:
    spec: dict[str, Any] = {
        "submit": "5ms",
        "cancel": {"dist": "lognormal", "median": "3ms", "sigma": 0.4, "floor": "1ms"},
        "modify": {"dist": "uniform", "low": "1ms", "high": 2 * MS},
        "market_data": {"dist": "empirical", "values": [1_200_000, "2ms"]},
    }
    seed = symbol_seed(7, "ETHUSDT")
    m = latency_from_spec(spec, seed=seed)
    assert isinstance(m, SampledLatency)
    assert m.describe() == {
        "submit": 5 * MS,
        "modify": {"dist": "uniform", "low": MS, "high": 2 * MS, "floor": 0},
        "cancel": {"dist": "lognormal", "median": 3 * MS, "sigma": 0.4, "floor": MS},
        "market_data": {"dist": "empirical", "values": [1_200_000, 2 * MS], "floor": 0},
    }
    again = latency_from_spec(m.describe(), seed=seed)
    for kind in LatencyKind:
        assert _draws(again, kind, 1500) == _draws(latency_from_spec(spec, seed=seed), kind, 1500)
    assert _draws(m, SUBMIT, 3) == [5 * MS] * 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cancel": {"dist": "lognormal", "median": "3ms", "sigma": -1}}, "latency.cancel.sigma must be > 0, got -1"),
        ({"cancel": {"dist": "lognormal", "median": 0, "sigma": 1}}, "latency.cancel.median must be > 0"),
        ({"cancel": {"dist": "lognormal", "sigma": 1}}, "latency.cancel.median is required"),
        ({"submit": -5}, "latency.submit must be a duration"),
        ({"submit": "5 ms"}, "latency.submit must be a duration"),
        ({"submit": 1.5}, "latency.submit must be a duration"),
        ({"orders": "5ms"}, "latency.orders is not a latency"),
        ({"modify": {"dist": "pareto"}}, "latency.modify.dist must be one of"),
        ({"modify": {"dist": "uniform", "low": 5, "high": 3}}, "latency.modify.high must be >= low"),
        ({"modify": {"dist": "uniform", "low": 1, "high": 3, "mean": 2}}, "latency.modify.mean is not a parameter"),
        ({"market_data": {"dist": "empirical", "values": []}}, "latency.market_data.values must be a non-empty"),
        ({"market_data": {"dist": "empirical", "values": [1, -2]}}, r"latency.market_data.values\[1\] must be"),
        ({"market_data": {"dist": "empirical", "values": [1], "floor": "x"}}, "latency.market_data.floor must be"),
        (["5ms"], "latency must be a mapping"),
    ],
)  # fmt: skip
def test_latency_spec_errors_name_the_field(spec: Any, message: str) -> None:
    with pytest.raises(LatencyError, match=message):
        latency_from_spec(spec, seed=1)


def test_latency_seed_must_be_a_non_negative_int() -> None:
    with pytest.raises(LatencyError, match="seed must be an int >= 0"):
        latency_from_spec(None, seed=-1)


# --------------------------------------------------------------------------- impact


def test_no_impact_fills_at_the_un_impacted_price() -> None:
    m = NoImpact()
    assert m.price(0, +1, 1e9, 100.0, 1.0, 0.5) == 100.0
    assert isinstance(m, ImpactModel)
    assert impact_from_spec(None).describe() == {"model": "none"}


def test_linear_impact_hand_computed() -> None:
    m = LinearImpact(bps=5, coef=0.1)
    # f = 5 / 1e4 + 0.1 * 100 / 10_000 = 0.0005 + 0.001 = 0.0015
    assert m.price(0, +1, 100.0, 100.0, 10_000.0, 0.02) == pytest.approx(100.15)
    assert m.price(0, -1, 100.0, 100.0, 10_000.0, 0.02) == pytest.approx(99.85)
    # no volume to compete with: only the bps part, 100 * (1 + 0.0005)
    assert m.price(0, +1, 100.0, 100.0, 0.0, 0.02) == pytest.approx(100.05)
    # linear: twice the size, twice the participation cost: 0.0005 + 0.002 = 0.0025
    assert m.price(0, +1, 200.0, 100.0, 10_000.0, 0.02) == pytest.approx(100.25)


def test_linear_impact_is_capped_so_a_sell_never_goes_negative() -> None:
    m = LinearImpact(coef=1.0)
    # f = 1 * 50_000 / 10_000 = 5, capped at the default max_fraction 1 -> sell at 0
    assert m.price(0, -1, 50_000.0, 100.0, 10_000.0, 0.0) == 0.0
    assert LinearImpact(coef=1.0, max_fraction=0.1).price(0, -1, 5e4, 100.0, 1e4, 0.0) == 90.0


def test_sqrt_impact_hand_computed_first_fill() -> None:
    m = SquareRootImpact(coef=1.0, decay_ns=60 * SECOND)
    # I = 1 * 0.02 * sqrt(100 / 10_000) = 0.02 * 0.1 = 0.002; a fill pays I / 2 = 0.001
    assert m.instantaneous(100.0, 10_000.0, 0.02) == pytest.approx(0.002)
    assert m.price(0, +1, 100.0, 100.0, 10_000.0, 0.02) == pytest.approx(100.1)
    assert m.price(0, -1, 100.0, 100.0, 10_000.0, 0.02) == pytest.approx(99.9)


def test_sqrt_transient_impact_decays_exponentially_in_simulation_time() -> None:
    t0 = 1_700_000_000 * SECOND
    m = SquareRootImpact(coef=1.0, decay_ns=60 * SECOND)
    m.record(t0, +1, 100.0, 100.0, 10_000.0, 0.02)  # S(t0) = +0.002
    assert m.transient(t0) == pytest.approx(0.002)
    # 60 s later, one decay time: S = 0.002 * e^-1 = 0.000735758...
    assert m.transient(t0 + 60 * SECOND) == pytest.approx(0.002 * math.exp(-1))
    # a new buy of the same size: 100 * (1 + 0.000735758 + 0.001) = 100.1735758...
    assert m.price(t0 + 60 * SECOND, +1, 100.0, 100.0, 10_000.0, 0.02) == pytest.approx(
        100.17357588823428
    )
    # a sell also sees the raised price: 100 * (1 + 0.000735758 - 0.001) = 99.9735758...
    assert m.price(t0 + 60 * SECOND, -1, 100.0, 100.0, 10_000.0, 0.02) == pytest.approx(
        99.97357588823428
    )
    # a later sell of twice the size: S = 0.002 e^-1 - 0.02 * sqrt(0.02) = 0.000736 - 0.002828
    m.record(t0 + 60 * SECOND, -1, 200.0, 100.0, 10_000.0, 0.02)
    assert m.transient(t0 + 60 * SECOND) == pytest.approx(0.002 * math.exp(-1) - 0.02 * 0.02**0.5)
    # a ts before the last record counts as no time elapsed
    assert m.transient(t0) == m.transient(t0 + 60 * SECOND)


def test_buys_pay_more_and_sells_receive_less() -> None:
    for m in (LinearImpact(bps=2, coef=0.5), SquareRootImpact(coef=0.8)):
        buy = m.price(0, +1, 50.0, 2000.0, 5000.0, 0.01)
        sell = m.price(0, -1, 50.0, 2000.0, 5000.0, 0.01)
        assert sell < 2000.0 < buy


def test_bigger_orders_pay_more_per_unit_like_a_square_root() -> None:
    m = SquareRootImpact(coef=1.0)
    # per-unit slippage is price * I / 2 = 100 * 0.02 * sqrt(q / 10_000) / 2:
    # q = 100 -> 0.1, q = 400 -> 0.2, q = 1600 -> 0.4: four times the size, twice the cost per unit
    per_unit = [m.price(0, +1, q, 100.0, 10_000.0, 0.02) - 100.0 for q in (100.0, 400.0, 1600.0)]
    assert per_unit == pytest.approx([0.1, 0.2, 0.4])
    # concave: the total cost q * per_unit grows like q^1.5, more than linearly but per unit sub-linearly
    assert per_unit[1] / per_unit[0] == pytest.approx(2.0)


def test_sqrt_impact_caps_are_respected() -> None:
    m = SquareRootImpact(coef=1.0, max_fraction=0.1)
    # I = 1 * 1.0 * sqrt(1) = 1, capped at 0.1: buy at 100 * (1 + 0.05) = 105
    assert m.instantaneous(1e4, 1e4, 1.0) == 0.1
    assert m.price(0, +1, 1e4, 100.0, 1e4, 1.0) == pytest.approx(105.0)
    # no volume: the cap
    assert m.instantaneous(1.0, 0.0, 0.01) == 0.1
    # the transient is capped at +-max_fraction however many buys pile up
    for i in range(10):
        m.record(i, +1, 1e4, 100.0, 1e4, 1.0)
    assert m.transient(9) == 0.1
    for i in range(10, 30):
        m.record(i, -1, 1e4, 100.0, 1e4, 1.0)
    assert m.transient(29) == -0.1


def test_sqrt_impact_with_zero_decay_keeps_no_memory() -> None:
    m = SquareRootImpact(coef=1.0, decay_ns=0)
    m.record(0, +1, 100.0, 100.0, 10_000.0, 0.02)
    assert m.transient(0) == 0.0
    assert m.price(0, +1, 100.0, 100.0, 10_000.0, 0.02) == pytest.approx(100.1)


def test_impact_is_deterministic_for_the_same_calls() -> None:
    def run() -> list[float]:
        m = SquareRootImpact(coef=0.7, decay_ns=30 * SECOND)
        out = []
        for i in range(50):
            side = 1 if i % 3 else -1
            ts = i * 7 * SECOND
            out.append(m.price(ts, side, 10.0 + i, 100.0 + i, 5000.0, 0.015))
            m.record(ts, side, 10.0 + i, 100.0 + i, 5000.0, 0.015)
        return out

    assert run() == run()


_prices = st.floats(1e-6, 1e7, allow_nan=False, allow_infinity=False)
_qtys = st.floats(0.0, 1e9, allow_nan=False, allow_infinity=False)
_volumes = st.floats(-1.0, 1e12, allow_nan=False, allow_infinity=False)
_sigmas = st.floats(0.0, 5.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    side=st.sampled_from([1, -1]),
    qty=_qtys,
    price=_prices,
    volume=_volumes,
    sigma=_sigmas,
    coef=st.floats(0.0, 10.0),
    bps=st.floats(0.0, 100.0),
    cap=st.floats(1e-6, 1.0),
)
def test_fresh_model_never_fills_better_than_the_un_impacted_price(
    side: int,
    qty: float,
    price: float,
    volume: float,
    sigma: float,
    coef: float,
    bps: float,
    cap: float,
) -> None:
    models: list[ImpactModel] = [
        NoImpact(),
        LinearImpact(bps=bps, coef=coef, max_fraction=cap),
        SquareRootImpact(coef=coef, max_fraction=cap),
    ]
    for m in models:
        fill = m.price(123, side, qty, price, volume, sigma)
        assert side * (fill - price) >= 0
        assert fill >= 0


def test_impact_spec_builds_each_model_and_describe_rebuilds_it() -> None:
    m = impact_from_spec({"model": "sqrt", "coef": 0.8, "decay": "30s"})
    assert isinstance(m, SquareRootImpact)
    assert (m.coef, m.decay_ns, m.max_fraction) == (0.8, 30 * SECOND, 0.1)
    lin = impact_from_spec({"model": "linear", "bps": 2})
    assert isinstance(lin, LinearImpact) and (lin.bps, lin.coef) == (2.0, 0.0)
    for model in (m, lin, impact_from_spec({"model": "none"})):
        assert impact_from_spec(model.describe()).describe() == model.describe()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model": "sqrt", "coef": -1}, "impact.coef must be a number >= 0, got -1"),
        ({"model": "sqrt", "decay": "soon"}, "impact.decay must be a duration"),
        ({"model": "sqrt", "max_fraction": 2}, r"impact.max_fraction must be in \(0, 1\], got 2"),
        ({"model": "sqrt", "bps": 1}, "impact.bps is not a parameter of 'sqrt'"),
        ({"model": "linear", "bps": "1"}, "impact.bps must be a number"),
        ({"model": "none", "coef": 1}, "impact.coef is not a parameter of 'none'"),
        ({"model": "almgren"}, "impact.model must be one of none, linear, sqrt"),
        ({"coef": 1}, "impact.model must be one of"),
        ("sqrt", "impact must be a mapping"),
    ],
)
def test_impact_spec_errors_name_the_field(spec: Any, message: str) -> None:
    with pytest.raises(ImpactError, match=message):
        impact_from_spec(spec)


def test_impact_rejects_negative_qty_and_sigma() -> None:
    with pytest.raises(ImpactError, match="qty must be >= 0"):
        SquareRootImpact().price(0, 1, -1.0, 100.0, 10.0, 0.01)
    with pytest.raises(ImpactError, match="sigma must be >= 0"):
        SquareRootImpact().price(0, 1, 1.0, 100.0, 10.0, math.nan)


# --------------------------------------------------------------------------- volatility


def test_ewma_volatility_hand_computed() -> None:
    v = EwmaVolatility(halflife=1)  # alpha = 1 - 2^-1 = 0.5
    assert v.value == 0.0
    v.update(100.0)
    assert v.value == 0.0  # one price, no return yet
    v.update(110.0)  # r1 = ln(1.1) = 0.0953102; var seeded with r1^2
    assert v.value == pytest.approx(math.log(1.1))
    v.update(99.0)  # r2 = ln(0.9) = -0.1053605; var = 0.5 r1^2 + 0.5 r2^2
    assert v.value == pytest.approx(math.sqrt(0.5 * math.log(1.1) ** 2 + 0.5 * math.log(0.9) ** 2))
    assert v.count == 3


def test_ewma_volatility_rejects_non_positive_prices() -> None:
    with pytest.raises(ValueError, match="price must be finite and > 0"):
        EwmaVolatility(5).update(0.0)
    with pytest.raises(ValueError, match="price must be finite and > 0"):
        EwmaVolatility(5).update_many(np.array([1.0, -2.0]))


@settings(max_examples=200, deadline=None)
@given(
    prices=st.lists(st.floats(1e-3, 1e6, allow_nan=False, allow_infinity=False), max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=4),
    halflife=st.integers(1, 50),
)
def test_ewma_update_many_is_bit_identical_to_repeated_update(
    prices: list[float], cuts: list[int], halflife: int
) -> None:
    one = EwmaVolatility(halflife)
    for p in prices:
        one.update(p)
    many = EwmaVolatility(halflife)
    bounds = [0, *sorted(min(c, len(prices)) for c in cuts), len(prices)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):  # batches carry the state across
        many.update_many(np.array(prices[lo:hi], dtype=np.float64))
    assert many.value == one.value  # exact, not approx
    assert many.count == one.count == len(prices)
