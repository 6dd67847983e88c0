"""Portfolio risk limits (the run spec's ``[risk]`` section) and the pre-trade check.

:class:`RiskLimits` holds the limits; each is off when None. :func:`check_limits`
applies every enabled limit to one order intent and approves, resizes or
rejects it, with a reason naming each limit that bound and its numbers
(``gross leverage 3.2x would exceed the 3x cap: 1.25 of 2.0 fit``).

As in :mod:`tickray.engine.approval`, an order splits into a *closing* part,
which brings the symbol's position towards zero and is always approved, and an
*opening* part, which the limits may cut. The checks run in a fixed order,
each on what the previous ones left of the opening part, and a cut is floored
to the symbol's lot (and dropped when it falls below the minimum quantity or
notional):

1. ``max_orders_per_step``: orders approved for the symbol in this step.
2. ``max_orders_per_day``: orders approved for the symbol this (UTC) day.
3. ``max_open_positions``: a position opened from flat must fit the count.
4. ``max_position_notional``: ``|position| * price`` after the order (quote).
5. ``max_position_fraction``: the same, as a fraction of equity.
6. ``max_group_fraction``: gross notional of the symbol's group / equity.
7. ``max_gross_leverage``: ``sum |notional| / equity``.
8. ``max_net_leverage``: ``|sum notional| / equity``.
9. ``max_correlation``: correlation of the symbol's returns with the P&L of the
   other positions (signed by the order's side), over ``correlation_window`` bars.
10. ``var_limit`` and ``cvar_limit`` (one search for both): the portfolio's VaR
    and CVaR after the order, as fractions of equity, over ``var_window`` bars.

Rate limits come first since they need no arithmetic and a throttled order
needs no other opinion; then the hard caps a size is cut to exactly; the
statistical checks last, since they are the costliest and the least certain.
The rate limits throttle new risk only: the closing part of an order passes
them too, so an exit is never held up.

Limits on equity (5 to 10) cut the opening part to nothing while equity is not
positive. A limit already exceeded before the order (prices moved) lets no
position grow, but never blocks what does not worsen it: a net-short book may
buy back up to the net cap on the long side, and an order that lowers VaR is
fine while VaR is above its cap.

The correlation and VaR checks have **no opinion** (they pass) while the
window is incomplete: ``returns`` has fewer rows than the window, or holds NaN
in the order's symbol or in a symbol that is held; also when the correlation
is undefined (no other position, a flat series).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tickray.engine.events import RiskAction, Side
from tickray.engine.instruments import SymbolSpec
from tickray.engine.riskconfig import RiskLimits

__all__ = ["CHECKS", "LimitCheck", "RiskLimits", "check_limits"]
from tickray.risk.var import exposure_correlation, pnl_var_cvar, portfolio_pnl


class LimitCheck(NamedTuple):
    """The outcome: what to do, the approved quantity and why (empty when nothing bound)."""

    action: RiskAction
    qty: float
    reason: str


@dataclass(frozen=True, slots=True)
class _Book:
    """The portfolio as one order's checks see it, after the order's closing part."""

    limits: RiskLimits
    spec: SymbolSpec
    symbols: Sequence[str]
    index: int
    sign: int
    price: float
    held: float  # |position| of the symbol after the closing part (base units)
    positions: NDArray[np.float64]  # with the symbol's entry after the closing part
    notionals: NDArray[np.float64]  # signed, quote; zero where nothing is held
    equity: float
    returns: NDArray[np.float64] | None
    orders_this_step: int
    orders_today: int

    def others(self) -> NDArray[np.float64]:
        """Notionals of the other symbols (the order's own set to 0)."""
        out = self.notionals.copy()
        out[self.index] = 0.0
        return out

    def fit_added(self, room: float) -> float:
        """Opening quantity that keeps ``(held + o) * price`` within ``room``, to the lot."""
        return self.spec.floor_qty(max(room / self.price - self.held, 0.0))

    def window(self, rows: int) -> NDArray[np.float64] | None:
        """The last ``rows`` rows of returns; None when fewer are known."""
        if self.returns is None or self.returns.shape[0] < rows:
            return None
        return self.returns[-rows:]


# A check returns (the opening quantity that fits, what bound) or (o, "") when nothing did.
_Check = Callable[[_Book, float], tuple[float, str]]


def _orders_per_step(b: _Book, o: float) -> tuple[float, str]:
    cap, n = b.limits.max_orders_per_step, b.orders_this_step
    if cap is None or n < cap:
        return o, ""
    return 0.0, f"{n} orders approved this step reach the cap of {cap} per step"


def _orders_per_day(b: _Book, o: float) -> tuple[float, str]:
    cap, n = b.limits.max_orders_per_day, b.orders_today
    if cap is None or n < cap:
        return o, ""
    return 0.0, f"{n} orders approved today reach the cap of {cap} per day"


def _open_positions(b: _Book, o: float) -> tuple[float, str]:
    cap = b.limits.max_open_positions
    if cap is None or b.held > 0:
        return o, ""
    others = int(np.count_nonzero(b.positions))  # the symbol's own entry is 0 here
    if others + 1 <= cap:
        return o, ""
    return 0.0, f"{others + 1} open positions would exceed the cap of {cap}"


def _position_notional(b: _Book, o: float) -> tuple[float, str]:
    cap = b.limits.max_position_notional
    if cap is None:
        return o, ""
    want = (b.held + o) * b.price
    if want <= cap:
        return o, ""
    return b.fit_added(cap), f"position notional {want:.2f} would exceed the {cap:.2f} cap"


def _equity(b: _Book, o: float) -> tuple[float, str]:
    lim = b.limits
    on = [
        k
        for k in (
            "max_position_fraction",
            "max_group_fraction",
            "max_gross_leverage",
            "max_net_leverage",
            "var_limit",
            "cvar_limit",
        )
        if getattr(lim, k) is not None
    ]
    if not on or (math.isfinite(b.equity) and b.equity > 0):
        return o, ""
    return 0.0, f"equity {b.equity:.2f} is not positive: no room under {', '.join(on)}"


def _position_fraction(b: _Book, o: float) -> tuple[float, str]:
    cap = b.limits.max_position_fraction
    if cap is None:
        return o, ""
    want = (b.held + o) * b.price / b.equity
    if want <= cap:
        return o, ""
    fit = b.fit_added(cap * b.equity)
    return fit, f"position {want:.4g} of equity would exceed the {cap:g} cap"


def _group_fraction(b: _Book, o: float) -> tuple[float, str]:
    cap = b.limits.max_group_fraction
    group = b.limits.groups.get(b.symbols[b.index])
    if cap is None or group is None:
        return o, ""
    members = np.array([b.limits.groups.get(s) == group for s in b.symbols])
    others = float(np.abs(b.others()[members]).sum())
    want = (others + (b.held + o) * b.price) / b.equity
    if want <= cap:
        return o, ""
    fit = b.fit_added(cap * b.equity - others)
    return fit, f"group {group} at {want:.4g} of equity would exceed the {cap:g} cap"


def _gross_leverage(b: _Book, o: float) -> tuple[float, str]:
    cap = b.limits.max_gross_leverage
    if cap is None:
        return o, ""
    others = float(np.abs(b.others()).sum())
    want = (others + (b.held + o) * b.price) / b.equity
    if want <= cap:
        return o, ""
    fit = b.fit_added(cap * b.equity - others)
    return fit, f"gross leverage {want:.4g}x would exceed the {cap:g}x cap"


def _net_leverage(b: _Book, o: float) -> tuple[float, str]:
    cap = b.limits.max_net_leverage
    if cap is None:
        return o, ""
    net = float(b.notionals.sum())  # after the closing part
    want = abs(net + b.sign * o * b.price) / b.equity
    if want <= cap:
        return o, ""
    # |net + s o p| <= max(cap E, |net|) for 0 <= o <= (cap E - s net) / p: an order
    # against the net exposure may take it to the cap on the other side
    fit = b.spec.floor_qty(max((cap * b.equity - b.sign * net) / b.price, 0.0))
    if fit >= o:
        return o, ""
    return fit, f"net leverage {want:.4g}x would exceed the {cap:g}x cap"


def _correlation(b: _Book, o: float) -> tuple[float, str]:
    lim = b.limits
    cap = lim.max_correlation
    if cap is None:
        return o, ""
    window = b.window(lim.correlation_window)
    if window is None:
        return o, ""
    corr = b.sign * exposure_correlation(window, b.others(), b.index)
    if math.isnan(corr) or corr <= cap:
        return o, ""
    what = (
        f"correlation {corr:.3f} with the open exposure over {lim.correlation_window} bars "
        f"exceeds the {cap:g} cap"
    )
    if lim.correlation_action == "reject":
        return 0.0, what
    return b.spec.floor_qty(o * cap / corr), what


def _var(b: _Book, o: float) -> tuple[float, str]:
    lim = b.limits
    if lim.var_limit is None and lim.cvar_limit is None:
        return o, ""
    window = b.window(lim.var_window)
    if window is None:
        return o, ""
    own = window[:, b.index]
    base = portfolio_pnl(window, b.notionals)
    if not (np.isfinite(own).all() and np.isfinite(base).all()):
        return o, ""
    unit = own * (b.sign * b.price)  # P&L per unit of the opening part, per bar

    def measure(q: float) -> tuple[float, float]:
        return pnl_var_cvar(base + q * unit, lim.var_confidence, lim.var_method)

    # a book already above a cap may still take an order that does not raise the measure
    var0, cvar0 = measure(0.0)
    caps = (
        math.inf if lim.var_limit is None else max(lim.var_limit * b.equity, var0),
        math.inf if lim.cvar_limit is None else max(lim.cvar_limit * b.equity, cvar0),
    )

    def fits(q: float) -> bool:
        v, cv = measure(q)
        return v <= caps[0] and cv <= caps[1]

    if fits(o):
        return o, ""
    # Bisection on whole lots: 0 fits, o does not. Exact for the convex measures
    # (both CVaRs, Gaussian VaR); historical VaR is not convex in the size, so there
    # the lot found fits but a larger one might too.
    step = b.spec.step_size
    lo, hi = 0, round(o / step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(b.spec.round_qty(mid * step)):
            lo = mid
        else:
            hi = mid
    var1, cvar1 = measure(o)
    over = []
    conf = f"{lim.var_confidence:g}"
    if var1 > caps[0] and lim.var_limit is not None:
        over.append(
            f"{lim.var_method} VaR {var1:.2f} at {conf} ({var1 / b.equity:.4g} of equity) "
            f"would exceed the {lim.var_limit:g} cap"
        )
    if cvar1 > caps[1] and lim.cvar_limit is not None:
        over.append(
            f"{lim.var_method} CVaR {cvar1:.2f} at {conf} ({cvar1 / b.equity:.4g} of equity) "
            f"would exceed the {lim.cvar_limit:g} cap"
        )
    return b.spec.round_qty(lo * step), " and ".join(over)


CHECKS: tuple[tuple[str, _Check], ...] = (
    ("max_orders_per_step", _orders_per_step),
    ("max_orders_per_day", _orders_per_day),
    ("max_open_positions", _open_positions),
    ("max_position_notional", _position_notional),
    ("equity", _equity),
    ("max_position_fraction", _position_fraction),
    ("max_group_fraction", _group_fraction),
    ("max_gross_leverage", _gross_leverage),
    ("max_net_leverage", _net_leverage),
    ("max_correlation", _correlation),
    ("var_limit", _var),
)
"""The checks in the order :func:`check_limits` applies them (``var_limit``: VaR and CVaR)."""


def check_limits(
    limits: RiskLimits,
    *,
    spec: SymbolSpec,
    symbol: str,
    side: Side,
    qty: float,
    price: float,
    positions: ArrayLike,
    prices: ArrayLike,
    equity: float,
    symbols: Sequence[str],
    returns: ArrayLike | None = None,
    orders_this_step: int = 0,
    orders_today: int = 0,
) -> LimitCheck:
    """Approve, resize or reject an order of ``qty`` (> 0) of ``symbol`` at ``price``.

    ``positions`` (signed base quantities) and ``prices`` (marks) are arrays
    over the run's ``symbols``, in that order; ``positions`` should be the
    projected ones (held plus approved, not yet filled), as for the cash
    check. The order's own symbol is valued at ``price`` (its mark in
    ``prices`` is not read); other symbols at their mark, read only where a
    position is held. ``equity`` is the account's equity in the same currency.
    ``returns``: past simple returns, (bars x symbols), oldest first, at least
    :attr:`RiskLimits.returns_window` rows for the correlation and VaR checks
    to have an opinion (None: no history). ``orders_this_step`` and
    ``orders_today``: intents already approved for ``symbol`` in this step and
    this day. ``spec`` is ``symbol``'s lot and minimums.

    The module's notes give the order of the checks; ``reason`` lists every
    limit that cut the order, in that order, separated by ``"; "``.
    """
    if spec.symbol != symbol:
        raise ValueError(f"spec is for {spec.symbol}, the order for {symbol}")
    if not (math.isfinite(qty) and qty > 0 and math.isfinite(price) and price > 0):
        raise ValueError(f"qty and price must be positive, got {qty!r} and {price!r}")
    index = list(symbols).index(symbol)
    pos = np.array(positions, dtype=np.float64)
    px = np.asarray(prices, dtype=np.float64)
    if pos.shape != (len(symbols),) or px.shape != pos.shape:
        raise ValueError(f"positions and prices must have one entry per symbol ({len(symbols)})")
    sign = int(side)
    position = float(pos[index])
    closing = min(qty, abs(position)) if position * sign < 0 else 0.0
    opening = spec.round_qty(qty - closing)
    pos[index] = spec.round_qty(position + sign * closing)
    px = px.copy()
    px[index] = price
    held = pos != 0.0
    if not np.isfinite(px[held]).all():
        raise ValueError("a held position has no finite price")
    notionals = np.where(held, pos * np.where(held, px, 0.0), 0.0)
    r = None if returns is None else np.asarray(returns, dtype=np.float64)
    if r is not None and (r.ndim != 2 or r.shape[1] != len(symbols)):
        raise ValueError(f"returns must be (bars x {len(symbols)}), got {r.shape}")
    book = _Book(
        limits=limits,
        spec=spec,
        symbols=symbols,
        index=index,
        sign=sign,
        price=price,
        held=abs(float(pos[index])),
        positions=pos,
        notionals=notionals,
        equity=equity,
        returns=r,
        orders_this_step=orders_this_step,
        orders_today=orders_today,
    )
    reasons = []
    for _, check in CHECKS:
        if opening <= 0:
            break
        fit, what = check(book, opening)
        if what and fit < opening:
            fit = fit if spec.tradable(fit, price) else 0.0
            reasons.append(f"{what}: {fit} of {opening} fit")
            opening = fit
    approved = spec.round_qty(closing + opening)
    reason = "; ".join(reasons)
    if approved <= 0:
        return LimitCheck(RiskAction.REJECT, 0.0, reason)
    action = RiskAction.APPROVE if approved >= qty else RiskAction.RESIZE
    return LimitCheck(action, approved, reason)
