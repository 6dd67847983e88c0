"""Portfolio risk limits: configuration, VaR / CVaR / correlation, and the pre-trade check.

The hand-computed book most cases use (made-up round prices):

    symbols   BTCUSDT  ETHUSDT  SOLUSDT
    price     2000     50       10
    equity    7500

with a lot of 0.01 for the order's symbol.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickray.engine.config import ConfigError
from tickray.engine.events import RiskAction, Side
from tickray.engine.instruments import SymbolSpec
from tickray.risk.limits import CHECKS, LimitCheck, RiskLimits, check_limits
from tickray.risk.var import (
    exposure_correlation,
    exposure_correlations,
    historical_cvar,
    historical_var,
    parametric_cvar,
    parametric_var,
    portfolio_pnl,
    var_cvar,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
PRICES = np.array([2000.0, 50.0, 10.0])
EQUITY = 7500.0
BTC = SymbolSpec("BTCUSDT", step_size=0.01)


def check(
    limits: RiskLimits,
    side: Side,
    qty: float,
    positions: tuple[float, float, float] = (0.0, 0.0, 0.0),
    *,
    spec: SymbolSpec = BTC,
    **kw: Any,
) -> LimitCheck:
    """An order on BTCUSDT at 2000 against the standard book."""
    args: dict[str, Any] = {
        "spec": spec,
        "symbol": spec.symbol,
        "side": side,
        "qty": qty,
        "price": 2000.0,
        "positions": np.array(positions),
        "prices": PRICES,
        "equity": EQUITY,
        "symbols": SYMBOLS,
    }
    args.update(kw)
    return check_limits(limits, **args)


# ---------------------------------------------------------------- configuration


def test_default_limits_are_off_and_approve_anything() -> None:
    limits = RiskLimits()
    assert not limits.enabled and limits.returns_window == 0
    assert check(limits, Side.BUY, 1000.0, (0.0, 1e6, -1e6)) == (RiskAction.APPROVE, 1000.0, "")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"var_confidence": -0.5}, r"^risk\.var_confidence: must be in \(0, 1\), got -0\.5$"),
        ({"var_confidence": 1.0}, r"^risk\.var_confidence: "),
        ({"max_correlation": 0.0}, r"^risk\.max_correlation: must be in \(0, 1\]"),
        ({"max_correlation": 1.5}, r"^risk\.max_correlation: "),
        ({"correlation_window": 1}, r"^risk\.correlation_window: must be an integer >= 2"),
        ({"var_window": 1}, r"^risk\.var_window: must be an integer >= 2"),
        ({"var_window": 20.0}, r"^risk\.var_window: "),
        ({"var_method": "monte_carlo"}, r"^risk\.var_method: must be one of historical"),
        ({"correlation_action": "shrink"}, r"^risk\.correlation_action: must be one of resize"),
        ({"max_gross_leverage": 0.0}, r"^risk\.max_gross_leverage: must be a positive number"),
        ({"max_gross_leverage": -3.0}, r"^risk\.max_gross_leverage: "),
        ({"max_gross_leverage": math.nan}, r"^risk\.max_gross_leverage: "),
        ({"max_gross_leverage": "3"}, r"^risk\.max_gross_leverage: "),
        ({"max_position_notional": True}, r"^risk\.max_position_notional: "),
        ({"var_limit": math.inf}, r"^risk\.var_limit: "),
        ({"max_open_positions": 0}, r"^risk\.max_open_positions: must be an integer >= 1"),
        ({"max_open_positions": 2.5}, r"^risk\.max_open_positions: "),
        ({"max_orders_per_step": 0}, r"^risk\.max_orders_per_step: "),
        ({"groups": {"BTCUSDT": ""}, "max_group_fraction": 1.0}, r"^risk\.groups\.BTCUSDT: "),
        ({"groups": ["BTCUSDT"], "max_group_fraction": 1.0}, r"^risk\.groups: "),
    ],
)
def test_bad_limits_name_their_key(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RiskLimits(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # net <= gross always: a net cap above the gross cap could never bind
        ({"max_gross_leverage": 2.0, "max_net_leverage": 3.0}, r"^risk\.max_net_leverage: 3\.0"),
        ({"max_gross_leverage": 2.0, "max_position_fraction": 2.5}, r"^risk\.max_position_"),
        (
            {"max_gross_leverage": 1.0, "groups": {"BTCUSDT": "a"}, "max_group_fraction": 1.5},
            r"^risk\.max_group_fraction: ",
        ),
        # CVaR >= VaR at the same confidence
        ({"var_limit": 0.05, "cvar_limit": 0.04}, r"^risk\.cvar_limit: 0\.04 is below"),
        ({"groups": {"BTCUSDT": "majors"}}, r"^risk\.groups: .*max_group_fraction is not"),
        ({"max_group_fraction": 0.5}, r"^risk\.max_group_fraction: set but"),
        ({"max_orders_per_step": 5, "max_orders_per_day": 4}, r"^risk\.max_orders_per_step: "),
        # 50 bars at 0.99: the 50th of 50 losses is the quantile, nothing lies beyond it
        ({"var_limit": 0.05, "var_window": 50}, r"^risk\.var_window: .*at least 100$"),
    ],
)
def test_contradictory_limits_are_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RiskLimits(**kwargs)


def test_consistent_limits_are_accepted() -> None:
    limits = RiskLimits(
        max_gross_leverage=3.0,
        max_net_leverage=3.0,  # equal is fine
        max_position_fraction=1.0,
        var_limit=0.05,
        cvar_limit=0.05,
        var_window=100,  # 100 x 0.01 = one loss beyond the quantile
        max_correlation=0.8,
        correlation_window=20,
        max_orders_per_step=2,
        max_orders_per_day=2,
    )
    assert limits.enabled and limits.returns_window == 100
    # a short parametric window is fine: it has no order statistic to run out of
    assert RiskLimits(var_limit=0.05, var_method="parametric", var_window=10).returns_window == 10


def test_from_mapping_rejects_unknown_keys_and_builds_the_rest() -> None:
    with pytest.raises(ConfigError, match=r"^risk\.max_leverage: unknown key"):
        RiskLimits.from_mapping({"max_leverage": 3.0})
    limits = RiskLimits.from_mapping(
        {"max_group_fraction": 0.5, "groups": {"BTCUSDT": "majors", "ETHUSDT": "majors"}}
    )
    assert limits.groups == {"BTCUSDT": "majors", "ETHUSDT": "majors"}
    limits.check_universe(SYMBOLS)
    with pytest.raises(
        ConfigError, match=r"^risk\.groups: not in the run's symbols: \['ETHUSDT'\]"
    ):
        limits.check_universe(("BTCUSDT",))


def test_checks_run_in_the_documented_order() -> None:
    assert [name for name, _ in CHECKS] == [
        "max_orders_per_step",
        "max_orders_per_day",
        "max_open_positions",
        "max_position_notional",
        "equity",
        "max_position_fraction",
        "max_group_fraction",
        "max_gross_leverage",
        "max_net_leverage",
        "max_correlation",
        "var_limit",
    ]


# ---------------------------------------------------------------- VaR and CVaR


def _sample() -> tuple[np.ndarray, np.ndarray]:
    """250 bars of 3 symbols; the third has no history yet (NaN) and is not held."""
    rng = np.random.default_rng(7)
    r = rng.standard_t(4, size=(250, 3)) * 0.01
    r[:, 2] = np.nan
    return r, np.array([1000.0, -500.0, 0.0])


def test_historical_var_is_numpys_inverted_cdf_quantile_of_the_losses() -> None:
    r, w = _sample()
    losses = -(r[:, :2] @ w[:2])
    expected = np.quantile(losses, 0.99, method="inverted_cdf")
    # the order statistic: k = ceil(250 x 0.99) = ceil(247.5) = 248th smallest (1-based)
    assert expected == np.sort(losses)[247]
    assert historical_var(r, w, 0.99) == pytest.approx(expected, rel=1e-15)
    for c in (0.9, 0.95, 0.975):
        assert historical_var(r, w, c) == pytest.approx(
            np.quantile(losses, c, method="inverted_cdf"), rel=1e-15
        )


def test_historical_cvar_is_the_mean_of_the_worst_losses() -> None:
    r, w = _sample()
    losses = np.sort(-(r[:, :2] @ w[:2]))
    # 250 x (1 - 0.96) = 10 losses beyond the quantile: their mean
    assert historical_cvar(r, w, 0.96) == pytest.approx(losses[-10:].mean(), rel=1e-12)
    # and in general 1 / (1 - c) times the integral of the quantile function over (c, 1)
    c = 0.9837
    u = c + (np.arange(200_000) + 0.5) * (1 - c) / 200_000
    integral = np.quantile(losses, u, method="inverted_cdf").mean()
    assert historical_cvar(r, w, c) == pytest.approx(integral, rel=1e-4)


def test_historical_cvar_weights_the_boundary_loss_by_its_share_of_the_tail() -> None:
    # losses 1..10 (one symbol, notional 1, returns = -losses), confidence 0.75:
    # VaR = L(ceil(7.5)) = L(8) = 8; the tail (0.75, 1] holds L(8) on (0.75, 0.8],
    # L(9) on (0.8, 0.9], L(10) on (0.9, 1]: CVaR = (0.05 x 8 + 0.1 x 9 + 0.1 x 10) / 0.25
    # = 0.2 x 8 + 0.4 x 9 + 0.4 x 10 = 9.2
    losses = np.array([3.0, 9.0, 1.0, 10.0, 5.0, 2.0, 8.0, 4.0, 7.0, 6.0])
    r = -losses[:, None]
    assert historical_var(r, [1.0], 0.75) == 8.0
    assert historical_cvar(r, [1.0], 0.75) == pytest.approx(9.2, rel=1e-14)


def test_a_tail_of_gains_has_zero_var() -> None:
    # a long in a symbol that only rose: every "loss" is negative, so VaR and CVaR are 0
    r = np.array([[0.01], [0.02], [0.03], [0.04]])
    assert var_cvar(r, [1000.0], 0.75, "historical") == (0.0, 0.0)
    # a short in it loses: losses 10, 20, 30, 40; VaR = L(3) = 30, CVaR = L(4) = 40
    assert var_cvar(r, [-1000.0], 0.75, "historical") == pytest.approx((30.0, 40.0))


def test_parametric_var_and_cvar_match_the_gaussian_closed_form() -> None:
    r, w = _sample()
    # sigma^2 = w' S w with S the sample covariance (ddof 1) of the held columns
    cov = np.cov(r[:, :2], rowvar=False, ddof=1)
    sigma = math.sqrt(w[:2] @ cov @ w[:2])
    z = 2.3263478740408408  # the standard normal 0.99 quantile
    var = parametric_var(r, w, 0.99)
    assert var == pytest.approx(z * sigma, rel=1e-12)
    # Phi(VaR / sigma) = 0.99, Phi from math.erf
    assert 0.5 * (1 + math.erf(var / sigma / math.sqrt(2))) == pytest.approx(0.99, abs=1e-12)
    # CVaR = sigma phi(z) / (1 - c), phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
    phi = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    assert parametric_cvar(r, w, 0.99) == pytest.approx(sigma * phi / 0.01, rel=1e-12)
    # with the mean: both shift by minus the mean P&L
    mu = float((r[:, :2] @ w[:2]).mean())
    assert parametric_var(r, w, 0.99, with_mean=True) == pytest.approx(z * sigma - mu, rel=1e-12)
    assert parametric_cvar(r, w, 0.99, with_mean=True) == pytest.approx(
        sigma * phi / 0.01 - mu, rel=1e-12
    )
    assert var_cvar(r, w, 0.99, "parametric") == (var, parametric_cvar(r, w, 0.99))
    assert NormalDist().inv_cdf(0.99) == pytest.approx(z, rel=1e-15)


def test_var_has_no_opinion_on_missing_history() -> None:
    r, w = _sample()
    # the unheld NaN column does not matter; a held one does
    assert math.isfinite(historical_var(r, w, 0.99))
    assert math.isnan(historical_var(r, [1.0, 1.0, 1.0], 0.99))
    assert math.isnan(parametric_cvar(r, [1.0, 1.0, 1.0], 0.99))
    assert math.isnan(historical_var(r[:1], w, 0.99))  # one bar
    assert portfolio_pnl(r, [0.0, 0.0, 0.0]).tolist() == [0.0] * 250
    with pytest.raises(ValueError, match="confidence"):
        historical_var(r, w, 1.0)
    with pytest.raises(ValueError, match="method"):
        var_cvar(r, w, 0.9, "cornish_fisher")


# ---------------------------------------------------------------- correlation


def test_exposure_correlation_matches_numpy_corrcoef() -> None:
    rng = np.random.default_rng(11)
    r = rng.normal(0, 0.01, size=(60, 4))
    r[:, 1] += 0.8 * r[:, 0]
    r[:, 3] = np.nan  # not listed yet, not held
    w = np.array([3000.0, -1500.0, 800.0, 0.0])
    got = exposure_correlations(r, w)
    for i in range(3):
        others = [j for j in range(3) if j != i]
        expected = np.corrcoef(r[:, i], r[:, others] @ w[others])[0, 1]
        assert got[i] == pytest.approx(expected, abs=1e-12)
        assert exposure_correlation(r, w, i) == got[i]
    assert math.isnan(got[3])  # its own history is missing


def test_exposure_correlation_by_hand() -> None:
    # x = 1, 2, 3, 4 and y = 1, 3, 2, 4 (%): deviations (-1.5, -0.5, 0.5, 1.5) and
    # (-1.5, 0.5, -0.5, 1.5): sxy = 2.25 - 0.25 - 0.25 + 2.25 = 4, sxx = syy = 5: 0.8
    r = np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0], [4.0, 4.0]]) / 100
    assert exposure_correlation(r, [0.0, 5000.0], 0) == pytest.approx(0.8, rel=1e-14)
    # a short exposure reverses it
    assert exposure_correlation(r, [0.0, -5000.0], 0) == pytest.approx(-0.8, rel=1e-14)


def test_exposure_correlation_is_undefined_without_exposure_or_variance() -> None:
    r = np.array([[0.01, 0.02, np.nan], [0.02, 0.01, 0.01], [0.0, 0.03, 0.02]])
    assert math.isnan(exposure_correlation(r, [100.0, 0.0, 0.0], 0))  # nothing else held
    assert math.isnan(exposure_correlation(r, [0.0, 0.0, 100.0], 0))  # held NaN history
    flat = np.array([[0.01, 0.02], [0.01, 0.01], [0.01, 0.03]])
    assert math.isnan(exposure_correlation(flat, [0.0, 100.0], 0))
    assert math.isnan(exposure_correlation(r[:1], [0.0, 100.0, 0.0], 0))


# ---------------------------------------------------------------- each limit by hand


def test_gross_leverage_resizes_to_what_fits() -> None:
    # ETH +200 x 50 = 10000, SOL -1000 x 10 = -10000: others' gross 20000.
    # Buy 2.0 BTC at 2000: (20000 + 4000) / 7500 = 3.2x > 3x.
    # Fits: (3 x 7500 - 20000) / 2000 = 1.25
    limits = RiskLimits(max_gross_leverage=3.0)
    out = check(limits, Side.BUY, 2.0, (0.0, 200.0, -1000.0))
    assert out == (
        RiskAction.RESIZE,
        1.25,
        "gross leverage 3.2x would exceed the 3x cap: 1.25 of 2.0 fit",
    )
    # 1.0 fits: (20000 + 2000) / 7500 = 2.93x
    assert check(limits, Side.BUY, 1.0, (0.0, 200.0, -1000.0)) == (RiskAction.APPROVE, 1.0, "")


def test_a_resize_below_the_minimum_notional_is_a_reject() -> None:
    # as above, 1.25 x 2000 = 2500 < min_notional 3000
    spec = SymbolSpec("BTCUSDT", step_size=0.01, min_notional=3000.0)
    out = check(RiskLimits(max_gross_leverage=3.0), Side.BUY, 2.0, (0.0, 200.0, -1000.0), spec=spec)
    assert out == (
        RiskAction.REJECT,
        0.0,
        "gross leverage 3.2x would exceed the 3x cap: 0.0 of 2.0 fit",
    )


def test_position_notional_caps_the_position_after_the_order() -> None:
    limits = RiskLimits(max_position_notional=5000.0)
    # held 1.0; buy 3.0: (1 + 3) x 2000 = 8000 > 5000; fits 5000 / 2000 - 1 = 1.5
    out = check(limits, Side.BUY, 3.0, (1.0, 0.0, 0.0))
    assert out == (
        RiskAction.RESIZE,
        1.5,
        "position notional 8000.00 would exceed the 5000.00 cap: 1.5 of 3.0 fit",
    )


def test_the_closing_part_of_an_order_is_always_allowed() -> None:
    limits = RiskLimits(max_position_notional=5000.0)
    # held +1.0, sell 4.0: closing 1.0 passes; opening 3.0 short = 6000 > 5000, 2.5 fit
    out = check(limits, Side.SELL, 4.0, (1.0, 0.0, 0.0))
    assert out == (
        RiskAction.RESIZE,
        3.5,
        "position notional 6000.00 would exceed the 5000.00 cap: 2.5 of 3.0 fit",
    )
    # held 3.0 = 6000, over the cap since prices moved: selling reduces it, always fine
    assert check(limits, Side.SELL, 1.0, (3.0, 0.0, 0.0)) == (RiskAction.APPROVE, 1.0, "")
    # but buying more of it is not: (3 + 1) x 2000 = 8000, nothing fits
    out = check(limits, Side.BUY, 1.0, (3.0, 0.0, 0.0))
    assert out == (
        RiskAction.REJECT,
        0.0,
        "position notional 8000.00 would exceed the 5000.00 cap: 0.0 of 1.0 fit",
    )


def test_position_fraction_caps_the_position_as_a_share_of_equity() -> None:
    # 0.5 x 7500 = 3750 quote; buy 2.0 x 2000 = 4000 = 0.5333 of equity;
    # fits 3750 / 2000 = 1.875, floored to the 0.01 lot: 1.87
    out = check(RiskLimits(max_position_fraction=0.5), Side.BUY, 2.0)
    assert out == (
        RiskAction.RESIZE,
        1.87,
        "position 0.5333 of equity would exceed the 0.5 cap: 1.87 of 2.0 fit",
    )


def test_group_fraction_caps_a_groups_gross_notional() -> None:
    limits = RiskLimits(groups={"BTCUSDT": "majors", "ETHUSDT": "majors"}, max_group_fraction=1.0)
    # majors: ETH -100 x 50 = |-5000|; SOL is in no group. Buy 2.0 BTC: (5000 + 4000) / 7500
    # = 1.2 > 1; fits (7500 - 5000) / 2000 = 1.25
    out = check(limits, Side.BUY, 2.0, (0.0, -100.0, 5000.0))
    assert out == (
        RiskAction.RESIZE,
        1.25,
        "group majors at 1.2 of equity would exceed the 1 cap: 1.25 of 2.0 fit",
    )
    # a symbol in no group is not limited by it
    sol = SymbolSpec("SOLUSDT", step_size=0.01)
    out = check(limits, Side.BUY, 5000.0, (0.0, -100.0, 5000.0), spec=sol, price=10.0)
    assert out == (RiskAction.APPROVE, 5000.0, "")


def test_net_leverage_caps_the_signed_sum() -> None:
    limits = RiskLimits(max_net_leverage=1.0)
    book = (0.0, 100.0, -1000.0)  # ETH +5000, SOL -10000: net -5000
    # buy 10 BTC: -5000 + 20000 = 15000 = 2x; fits (7500 + 5000) / 2000 = 6.25 (net +7500)
    out = check(limits, Side.BUY, 10.0, book)
    assert out == (
        RiskAction.RESIZE,
        6.25,
        "net leverage 2x would exceed the 1x cap: 6.25 of 10.0 fit",
    )
    # sell 1: -7000 = 0.9333x fits; sell 2: -9000 = 1.2x, fits (7500 - 5000) / 2000 = 1.25
    assert check(limits, Side.SELL, 1.0, book) == (RiskAction.APPROVE, 1.0, "")
    out = check(limits, Side.SELL, 2.0, book)
    assert out == (
        RiskAction.RESIZE,
        1.25,
        "net leverage 1.2x would exceed the 1x cap: 1.25 of 2.0 fit",
    )


def test_net_leverage_lets_an_over_limit_book_trade_back() -> None:
    # net -20000 = 2.67x, over the 1x cap; buying 4 BTC (+8000) brings it to 1.6x: allowed
    book = (0.0, 0.0, -2000.0)
    assert check(RiskLimits(max_net_leverage=1.0), Side.BUY, 4.0, book) == (
        RiskAction.APPROVE,
        4.0,
        "",
    )


def test_open_positions_counts_symbols_held() -> None:
    limits = RiskLimits(max_open_positions=2)
    book = (0.0, 100.0, -1000.0)  # ETH and SOL held
    out = check(limits, Side.BUY, 1.0, book)
    assert out == (
        RiskAction.REJECT,
        0.0,
        "3 open positions would exceed the cap of 2: 0.0 of 1.0 fit",
    )
    # adding to a held position, or flipping one, keeps the count
    eth = SymbolSpec("ETHUSDT", step_size=0.01)
    assert check(limits, Side.BUY, 10.0, book, spec=eth, price=50.0).action == RiskAction.APPROVE
    assert check(limits, Side.SELL, 150.0, book, spec=eth, price=50.0).qty == 150.0


def test_order_rate_limits_throttle_new_risk_but_not_exits() -> None:
    limits = RiskLimits(max_orders_per_step=2, max_orders_per_day=10)
    out = check(limits, Side.BUY, 1.0, orders_this_step=2)
    assert out == (
        RiskAction.REJECT,
        0.0,
        "2 orders approved this step reach the cap of 2 per step: 0.0 of 1.0 fit",
    )
    assert check(limits, Side.BUY, 1.0, orders_this_step=1, orders_today=9).qty == 1.0
    out = check(limits, Side.BUY, 1.0, orders_this_step=0, orders_today=10)
    assert out.reason == "10 orders approved today reach the cap of 10 per day: 0.0 of 1.0 fit"
    # held +1, sell 3: the closing 1.0 goes through the throttle
    out = check(limits, Side.SELL, 3.0, (1.0, 0.0, 0.0), orders_this_step=2)
    assert out[:2] == (RiskAction.RESIZE, 1.0)


def test_equity_limits_leave_no_room_without_equity() -> None:
    out = check(RiskLimits(max_gross_leverage=3.0), Side.BUY, 1.0, equity=-100.0)
    assert out == (
        RiskAction.REJECT,
        0.0,
        "equity -100.00 is not positive: no room under max_gross_leverage: 0.0 of 1.0 fit",
    )
    # a cap in quote does not need equity
    assert check(RiskLimits(max_position_notional=5000.0), Side.BUY, 1.0, equity=-100.0).qty == 1.0


def test_every_binding_limit_is_in_the_reason_in_order() -> None:
    limits = RiskLimits(max_position_notional=5000.0, max_gross_leverage=3.0)
    # buy 3.0: position 6000 > 5000 leaves 2.5; then gross (20000 + 5000) / 7500 = 3.333x
    # leaves 1.25
    out = check(limits, Side.BUY, 3.0, (0.0, 200.0, -1000.0))
    assert out == (
        RiskAction.RESIZE,
        1.25,
        "position notional 6000.00 would exceed the 5000.00 cap: 2.5 of 3.0 fit; "
        "gross leverage 3.333x would exceed the 3x cap: 1.25 of 2.5 fit",
    )


# Correlation: BTC returns x = 1, 2, 3, 4 (%), ETH y = 1, 3, 2, 4: correlation 0.8 (see above)
CORR_RETURNS = np.array([[1.0, 1.0, 0.0], [2.0, 3.0, 0.0], [3.0, 2.0, 0.0], [4.0, 4.0, 0.0]]) / 100


def test_correlation_with_the_open_exposure_rejects_or_resizes() -> None:
    book = (0.0, 100.0, 0.0)  # long ETH
    reject = RiskLimits(max_correlation=0.6, correlation_window=4)
    out = check(reject, Side.BUY, 2.0, book, returns=CORR_RETURNS)
    assert out == (
        RiskAction.REJECT,
        0.0,
        "correlation 0.800 with the open exposure over 4 bars exceeds the 0.6 cap: 0.0 of 2.0 fit",
    )
    # resize by 0.6 / 0.8: 2.0 x 0.75 = 1.5
    resize = RiskLimits(max_correlation=0.6, correlation_window=4, correlation_action="resize")
    assert check(resize, Side.BUY, 2.0, book, returns=CORR_RETURNS)[:2] == (RiskAction.RESIZE, 1.5)
    # a short BTC against long ETH hedges it: -0.8
    assert check(reject, Side.SELL, 2.0, book, returns=CORR_RETURNS).action == RiskAction.APPROVE
    # and 0.8 is within a 0.8 cap
    loose = RiskLimits(max_correlation=0.8, correlation_window=4)
    assert check(loose, Side.BUY, 2.0, book, returns=CORR_RETURNS).action == RiskAction.APPROVE


def test_correlation_has_no_opinion_on_an_incomplete_window() -> None:
    book = (0.0, 100.0, 0.0)
    limits = RiskLimits(max_correlation=0.6, correlation_window=4)
    early = CORR_RETURNS.copy()
    early[0, 1] = np.nan  # ETH's first bar not known yet
    assert check(limits, Side.BUY, 2.0, book, returns=early).action == RiskAction.APPROVE
    assert check(limits, Side.BUY, 2.0, book, returns=CORR_RETURNS[1:]).action == RiskAction.APPROVE
    assert check(limits, Side.BUY, 2.0, book, returns=None).action == RiskAction.APPROVE
    # SOL's history (not held) may be missing: the check still has its opinion
    sol_missing = CORR_RETURNS.copy()
    sol_missing[:, 2] = np.nan
    assert check(limits, Side.BUY, 2.0, book, returns=sol_missing).action == RiskAction.REJECT


# VaR: BTC returns 1, -2, 3, -4 (%); ETH the same
VAR_RETURNS = (
    np.array([[1.0, 1.0, 0.0], [-2.0, -2.0, 0.0], [3.0, 3.0, 0.0], [-4.0, -4.0, 0.0]]) / 100
)


def test_historical_var_limit_resizes_to_what_fits() -> None:
    # long q BTC = 2000q notional: losses 2000q x (-0.01, 0.02, -0.03, 0.04); at 0.75 over 4
    # bars VaR = L(ceil(3)) = L(3) = 40q and CVaR = L(4) = 80q. Cap 0.01 x 7500 = 75:
    # q <= 1.875 -> 1.87. At q = 2: VaR 80 = 0.01067 of equity.
    limits = RiskLimits(var_limit=0.01, var_confidence=0.75, var_window=4)
    out = check(limits, Side.BUY, 2.0, returns=VAR_RETURNS)
    assert out == (
        RiskAction.RESIZE,
        1.87,
        "historical VaR 80.00 at 0.75 (0.01067 of equity) would exceed the 0.01 cap: 1.87 of 2.0 fit",
    )
    # with a CVaR cap of 0.015 x 7500 = 112.5 as well: 80q <= 112.5, q <= 1.406 -> 1.4
    both = RiskLimits(var_limit=0.01, cvar_limit=0.015, var_confidence=0.75, var_window=4)
    out = check(both, Side.BUY, 2.0, returns=VAR_RETURNS)
    assert out == (
        RiskAction.RESIZE,
        1.4,
        "historical VaR 80.00 at 0.75 (0.01067 of equity) would exceed the 0.01 cap and "
        "historical CVaR 160.00 at 0.75 (0.02133 of equity) would exceed the 0.015 cap: "
        "1.4 of 2.0 fit",
    )


def test_var_limit_counts_the_rest_of_the_book() -> None:
    # ETH +40 x 50 = +2000 moves with BTC. Selling o BTC leaves 2000 (1 - o) of the same
    # risk: short beyond o = 1, losses 2000 (o - 1) x (0.01, -0.02, 0.03, -0.04), VaR = L(3)
    # = 20 (o - 1). Cap 0.0061 x 7500 = 45.75: o <= 3.2875 -> 3.28. At o = 5: VaR 80.
    limits = RiskLimits(var_limit=0.0061, var_confidence=0.75, var_window=4)
    out = check(limits, Side.SELL, 5.0, (0.0, 40.0, 0.0), returns=VAR_RETURNS)
    assert out == (
        RiskAction.RESIZE,
        3.28,
        "historical VaR 80.00 at 0.75 (0.01067 of equity) would exceed the 0.0061 cap: "
        "3.28 of 5.0 fit",
    )


def test_an_order_that_lowers_var_passes_a_book_over_its_var_limit() -> None:
    # the book's VaR is 40 (ETH +2000 alone), above the cap 0.001 x 7500 = 7.5
    limits = RiskLimits(var_limit=0.001, var_confidence=0.75, var_window=4)
    book = (0.0, 40.0, 0.0)
    # selling 2 BTC turns it into a 2000 short: VaR 20, lower: allowed
    assert check(limits, Side.SELL, 2.0, book, returns=VAR_RETURNS) == (RiskAction.APPROVE, 2.0, "")
    # buying any BTC adds to it: rejected
    assert check(limits, Side.BUY, 0.01, book, returns=VAR_RETURNS).action == RiskAction.REJECT


def test_parametric_var_limit_resizes_to_the_gaussian_quantile() -> None:
    # BTC returns +-1%: mean 0, sample std 0.01 x sqrt(4 / 3) = 0.0115470; VaR of q BTC at
    # 0.99 = 2.326348 x 2000q x 0.0115470 = 53.7250q <= 0.01 x 7500 = 75: q <= 1.39600 -> 1.39
    r = np.array([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]]) / 100
    limits = RiskLimits(var_limit=0.01, var_method="parametric", var_window=4)
    out = check(limits, Side.BUY, 2.0, returns=r)
    assert out == (
        RiskAction.RESIZE,
        1.39,
        "parametric VaR 107.45 at 0.99 (0.01433 of equity) would exceed the 0.01 cap: "
        "1.39 of 2.0 fit",
    )


def test_var_has_no_opinion_before_its_window_fills() -> None:
    limits = RiskLimits(var_limit=0.001, var_confidence=0.75, var_window=4)
    early = VAR_RETURNS.copy()
    early[0, 0] = np.nan
    assert check(limits, Side.BUY, 2.0, returns=early).action == RiskAction.APPROVE
    assert check(limits, Side.BUY, 2.0, returns=VAR_RETURNS[:3]).action == RiskAction.APPROVE


def test_bad_calls_are_value_errors() -> None:
    with pytest.raises(ValueError, match="spec is for"):
        check(RiskLimits(), Side.BUY, 1.0, symbol="ETHUSDT")
    with pytest.raises(ValueError, match="one entry per symbol"):
        check(RiskLimits(), Side.BUY, 1.0, positions=np.zeros(2))
    with pytest.raises(ValueError, match="returns must be"):
        check(RiskLimits(), Side.BUY, 1.0, returns=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="no finite price"):
        check(RiskLimits(), Side.BUY, 1.0, (0.0, 1.0, 0.0), prices=np.array([1.0, np.nan, 1.0]))


# ---------------------------------------------------------------- properties


def _gross(notionals: np.ndarray) -> float:
    return float(np.abs(notionals).sum())


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    positions=st.lists(
        st.one_of(st.just(0.0), st.integers(-5000, 5000).map(lambda n: n / 100)),
        min_size=3,
        max_size=3,
    ),
    prices=st.lists(st.floats(1.0, 5000.0), min_size=3, max_size=3),
    equity=st.floats(100.0, 1e6),
    index=st.integers(0, 2),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    lots=st.integers(1, 10_000),
    gross_cap=st.floats(0.5, 5.0),
    position_cap=st.floats(100.0, 1e5),
    net=st.booleans(),
)
def test_approved_orders_never_push_gross_leverage_or_position_past_the_cap(
    positions: list[float],
    prices: list[float],
    equity: float,
    index: int,
    side: Side,
    lots: int,
    gross_cap: float,
    position_cap: float,
    net: bool,
) -> None:
    limits = RiskLimits(
        max_gross_leverage=gross_cap,
        max_position_notional=position_cap,
        max_net_leverage=gross_cap / 2 if net else None,
    )
    spec = SymbolSpec(SYMBOLS[index], step_size=0.01)
    pos, px = np.array(positions), np.array(prices)
    qty = lots / 100
    out = check_limits(
        limits,
        spec=spec,
        symbol=SYMBOLS[index],
        side=side,
        qty=qty,
        price=px[index],
        positions=pos,
        prices=px,
        equity=equity,
        symbols=SYMBOLS,
    )
    assert 0.0 <= out.qty <= qty
    assert (out.action == RiskAction.REJECT) == (out.qty == 0.0)
    assert (out.action == RiskAction.APPROVE) == (out.qty == qty)
    after = pos.copy()
    after[index] = round(pos[index] + int(side) * out.qty, 2)
    before_n, after_n = pos * px, after * px
    # floor_qty's tolerance of 1e-9 lots, and float sums
    tol = 1e-9 * (1.0 + _gross(before_n) + equity * gross_cap)
    assert _gross(after_n) <= max(gross_cap * equity, _gross(before_n)) + tol
    assert abs(after_n[index]) <= max(position_cap, abs(before_n[index])) + tol
    if net:
        assert abs(after_n.sum()) <= max(gross_cap / 2 * equity, abs(before_n.sum())) + tol or (
            # the closing part always goes through, even when it raises the net
            abs(after[index]) <= abs(pos[index]) and after[index] * pos[index] >= 0
        )


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    seed=st.integers(0, 2**31),
    index=st.integers(0, 2),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    lots=st.integers(1, 10_000),
    method=st.sampled_from(["historical", "parametric"]),
    cap=st.floats(0.0002, 0.02),  # 2 to 200 of equity: about half the orders get cut
)
def test_approved_orders_never_push_var_past_the_cap(
    seed: int, index: int, side: Side, lots: int, method: str, cap: float
) -> None:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, 0.02, size=(40, 3))
    returns[:, 1] += 0.7 * returns[:, 0]
    pos = np.round(rng.normal(0, 20, size=3), 2)
    pos[index] = 0.0
    px = np.array([100.0, 50.0, 20.0])
    equity = 10_000.0
    limits = RiskLimits(var_limit=cap, var_method=method, var_window=40, var_confidence=0.95)
    spec = SymbolSpec(SYMBOLS[index], step_size=0.01)
    out = check_limits(
        limits,
        spec=spec,
        symbol=SYMBOLS[index],
        side=side,
        qty=lots / 100,
        price=px[index],
        positions=pos,
        prices=px,
        equity=equity,
        symbols=SYMBOLS,
        returns=returns,
    )
    after = pos.copy()
    after[index] = int(side) * out.qty
    before_var = var_cvar(returns, pos * px, 0.95, method)[0]
    after_var = var_cvar(returns, after * px, 0.95, method)[0]
    assert after_var <= max(cap * equity, before_var) * (1 + 1e-9)
