"""The pre-trade cash check shared by the portfolio and by self-approving symbols.

An order is split into a *closing* part, which reduces the projected position
(position plus approved orders not yet filled) and is always approved, and an
*opening* part, which must leave free cash >= 0. Free cash is cash, plus the
estimated cash of approved-unfilled orders, minus ``(1 + short_margin)`` times
the marked value of short positions. Estimates price a buy at the reference
price times ``1 + price_buffer`` and a sell at ``1 - price_buffer``, fees
included. What does not fit is resized to the largest whole number of steps
that fits, or rejected; short sales are rejected unless the account allows
shorting. Every outcome carries its reason.
"""

from __future__ import annotations

from typing import NamedTuple

from tickray.engine.config import AccountConfig
from tickray.engine.events import RiskAction, Side
from tickray.engine.instruments import SymbolSpec
from tickray.engine.perpetual import BracketTable, max_notional


class CashCheck(NamedTuple):
    """The outcome: what to do, the approved quantity, why, and its cash estimate."""

    action: RiskAction
    qty: float
    reason: str
    cash_estimate: float


def cash_estimate(acct: AccountConfig, side: Side, qty: float, px: float) -> float:
    """Estimated cash change of a fill (negative for a buy), fees and buffer included."""
    if side == Side.BUY:
        return -qty * px * (1.0 + acct.price_buffer) * (1.0 + acct.taker_fee)
    return qty * px * (1.0 - acct.price_buffer) * (1.0 - acct.taker_fee)


def check_cash(
    acct: AccountConfig,
    spec: SymbolSpec,
    side: Side,
    qty: float,
    projected_position: float,
    px: float,
    free_cash: float,
) -> CashCheck:
    """Approve, resize or reject an order of ``qty`` (> 0) at reference price ``px``."""
    sign = int(side)
    closing = min(qty, abs(projected_position)) if projected_position * sign < 0 else 0.0
    opening = spec.round_qty(qty - closing)
    reason = ""
    if opening > 0 and side == Side.SELL and not acct.allow_short:
        opening, reason = 0.0, "short selling disabled (spot account without margin)"
    if opening > 0:
        free = free_cash + _closing_effect(acct, side, closing, px)
        unit = _opening_cost(acct, side, px)
        # A short whose proceeds cover its collateral (unit <= 0) uses no free cash.
        fits = opening if unit <= 0 else spec.floor_qty(max(free, 0.0) / unit)
        if fits < opening:
            need = opening * unit
            asked = opening
            opening = fits if spec.tradable(fits, px) else 0.0
            reason = (
                f"insufficient free cash: {opening} of {asked} fit "
                f"({max(free, 0.0):.2f} free, {need:.2f} needed)"
            )
    approved = spec.round_qty(closing + opening)
    if approved <= 0:
        return CashCheck(RiskAction.REJECT, 0.0, reason, 0.0)
    action = RiskAction.APPROVE if approved >= qty else RiskAction.RESIZE
    return CashCheck(action, approved, reason, cash_estimate(acct, side, approved, px))


def _closing_effect(acct: AccountConfig, side: Side, qty: float, px: float) -> float:
    """Change of free cash from the closing part of an order."""
    if qty <= 0:
        return 0.0
    released = qty * px * (1.0 + acct.short_margin) if side == Side.BUY else 0.0
    return cash_estimate(acct, side, qty, px) + released


def _opening_cost(acct: AccountConfig, side: Side, px: float) -> float:
    """Free cash one unit of a position-opening order uses."""
    if side == Side.BUY:
        return px * (1.0 + acct.price_buffer) * (1.0 + acct.taker_fee)
    return px * (1.0 + acct.short_margin) - px * (1.0 - acct.price_buffer) * (1.0 - acct.taker_fee)


def check_margin(
    acct: AccountConfig,
    spec: SymbolSpec,
    table: BracketTable,
    leverage: float,
    side: Side,
    qty: float,
    projected_position: float,
    px: float,
    available: float,
    released: float,
    leg_sign: int = 0,
) -> CashCheck:
    """Approve, resize or reject a perpetual order of ``qty`` at reference price ``px``.

    The closing part (what reduces the projected position) is always approved
    and frees ``released`` per unit closed (the caller's figure: the initial
    margin for cross margin; the position's isolated margin plus its
    unrealised PnL, per unit, for isolated margin). The opening part must keep the position's
    notional within what its brackets allow at ``leverage``, and its initial
    margin ``qty * px' / leverage`` plus the taker fee ``qty * px' * fee``
    (``px'`` is ``px`` moved by the price buffer against the order) must fit in
    ``available`` (the account's available balance after the initial margin of
    positions and approved-unfilled orders). ``cash_estimate`` is minus what
    the check counted (initial margin and fee of the opening part), reserved
    until the order ends.

    Hedge mode (``leg_sign`` +1 for an order on the long position, -1 on the
    short one): an order against its position's side only closes it; what
    would go beyond the position is cut (Binance refuses it).
    """
    sign = int(side)
    closing = min(qty, abs(projected_position)) if projected_position * sign < 0 else 0.0
    opening = spec.round_qty(qty - closing)
    reason = ""
    if leg_sign and sign != leg_sign and opening > 0:
        leg = "LONG" if leg_sign > 0 else "SHORT"
        reason = (
            f"hedge mode: a {side.name} on the {leg} position only closes it: {closing} of {qty}"
        )
        opening = 0.0
    held = 0.0 if projected_position * sign < 0 else abs(projected_position)
    if opening > 0:
        cap_qty = max_notional(table, leverage) * (1.0 - 1e-12) / px - held
        allowed = spec.floor_qty(max(cap_qty, 0.0))
        if allowed < opening:
            reason = (
                f"leverage {leverage:g}x allows at most {max_notional(table, leverage):.0f} "
                f"notional: {allowed} of {opening} fit"
            )
            opening = allowed if spec.tradable(allowed, px) else 0.0
    worse = px * (1.0 + acct.price_buffer)
    unit = worse / leverage + worse * acct.taker_fee  # margin and fee of one unit opened
    if opening > 0:
        free = available + closing * max(released, 0.0)
        fits = spec.floor_qty(max(free, 0.0) / unit)
        if fits < opening:
            asked = opening
            opening = fits if spec.tradable(fits, px) else 0.0
            reason = (
                f"insufficient margin: {opening} of {asked} fit "
                f"({max(free, 0.0):.2f} available, {asked * unit:.2f} needed at {leverage:g}x)"
            )
    approved = spec.round_qty(closing + opening)
    if approved <= 0:
        return CashCheck(RiskAction.REJECT, 0.0, reason, 0.0)
    action = RiskAction.APPROVE if approved >= qty else RiskAction.RESIZE
    return CashCheck(action, approved, reason, -opening * unit)
