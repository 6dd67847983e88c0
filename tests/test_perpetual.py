"""USD-M perpetual margin arithmetic (engine.perpetual), against Binance's definitions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.perpetual import (
    BTCUSDT_BRACKETS,
    Bracket,
    BracketTable,
    MarginError,
    funding_payment,
    liquidation_price,
    margin_balance,
)

T = BTCUSDT_BRACKETS


def test_isolated_long_liquidates_where_margin_meets_maintenance() -> None:
    # long 1 BTC at 60,000 with 6,000 isolated margin (10x), bracket 1: mmr 0.4%, cum 0
    # LP = (6,000 + 0 - 60,000) / (0.004 - 1) = 54,216.8674...
    lp = liquidation_price(T, 1, 1.0, 60_000.0, 6_000.0)
    assert lp == pytest.approx(54_000 / 0.996, rel=1e-12)
    # there: margin balance 6,000 - 5,783.13 = 216.87 = 0.4% of 54,216.87
    assert margin_balance(1, 1.0, 60_000.0, lp, 6_000.0) == pytest.approx(lp * 0.004, rel=1e-9)


def test_isolated_short_liquidation_price() -> None:
    # short 2 BTC at 60,000 with 12,000: LP = (12,000 + 0 + 120,000) / (2 * 0.004 + 2)
    lp = liquidation_price(T, -1, 2.0, 60_000.0, 12_000.0)
    assert lp == pytest.approx(132_000 / 2.008, rel=1e-12)


def test_liquidation_uses_the_bracket_of_the_notional_at_that_price() -> None:
    # long 10 BTC at 60,000 with 60,000: bracket 1 would give a notional of 542k (> 300k),
    # so bracket 2 applies: (60,000 + 300 - 600,000) / (10 * 0.005 - 10) = 54,241.206...
    lp = liquidation_price(T, 1, 10.0, 60_000.0, 60_000.0)
    assert lp == pytest.approx(539_700 / 9.95, rel=1e-12)
    assert T.bracket(10 * lp).mmr == 0.005


def test_a_fully_backed_long_has_no_liquidation_price() -> None:
    assert liquidation_price(T, 1, 1.0, 60_000.0, 70_000.0) == 0.0


def test_maintenance_margin_is_continuous_across_brackets() -> None:
    for b in T.brackets[1:]:
        below = T.maintenance_margin(b.floor - 1e-6)
        at = T.maintenance_margin(b.floor)
        assert at == pytest.approx(below, abs=1e-3)


def test_leverage_is_checked_against_the_bracket() -> None:
    T.check_leverage(125, 100_000)
    with pytest.raises(MarginError, match="125x is above the 100x allowed"):
        T.check_leverage(125, 500_000)
    with pytest.raises(MarginError, match="leverage must be >= 1"):
        T.check_leverage(0, 1_000)
    with pytest.raises(MarginError, match="above the largest bracket"):
        T.bracket(2e9)
    assert T.initial_margin(600_000, 10) == 60_000


def test_bad_bracket_tables_are_refused() -> None:
    with pytest.raises(MarginError, match="bracket 2: floor 200 must equal the cap 100"):
        BracketTable("X", (Bracket(0, 100, 10, 0.01, 0), Bracket(200, 300, 5, 0.02, 2)))
    with pytest.raises(MarginError, match="bracket 2: cum 5 breaks continuous margin"):
        BracketTable("X", (Bracket(0, 100, 10, 0.01, 0), Bracket(100, 300, 5, 0.02, 5)))
    with pytest.raises(MarginError, match="first bracket starts at 0"):
        BracketTable("X", (Bracket(10, 100, 10, 0.01, 0),))


def test_funding_longs_pay_shorts_when_the_rate_is_positive() -> None:
    # 1 BTC long at a mark of 60,000 and a rate of 0.01%: pays 6 USDT; the short receives it
    assert funding_payment(1, 1.0, 60_000.0, 0.0001) == pytest.approx(6.0)
    assert funding_payment(-1, 1.0, 60_000.0, 0.0001) == pytest.approx(-6.0)
    assert funding_payment(1, 1.0, 60_000.0, -0.0001) == pytest.approx(-6.0)


@settings(max_examples=300, deadline=None)
@given(
    side=st.sampled_from([1, -1]),
    qty=st.floats(0.001, 5_000.0),
    entry=st.floats(1_000.0, 200_000.0),
    leverage=st.floats(1.0, 125.0),
)
def test_at_the_liquidation_price_margin_balance_equals_maintenance(
    side: int, qty: float, entry: float, leverage: float
) -> None:
    notional = qty * entry
    b = T.bracket(notional) if notional < T.brackets[-1].cap else None
    if b is None or leverage > b.max_leverage:
        return
    wallet = notional / leverage
    lp = liquidation_price(T, side, qty, entry, wallet)
    if lp == 0.0:
        assert side == 1  # only a long can be backed beyond any loss
        return
    mb = margin_balance(side, qty, entry, lp, wallet)
    assert mb == pytest.approx(T.maintenance_margin(qty * lp), rel=1e-7, abs=1e-6)
    # one step towards safety is above maintenance, one step past is below
    safe = lp * (1 + 1e-6) if side == 1 else lp * (1 - 1e-6)
    assert margin_balance(side, qty, entry, safe, wallet) > T.maintenance_margin(qty * safe)
