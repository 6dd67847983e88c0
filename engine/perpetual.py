"""USD-M perpetual futures margin arithmetic: notional brackets, maintenance margin,
liquidation prices and funding, as Binance defines them (one-way and hedge position modes).

Amounts are in the quote asset (USDT); ``qty`` is the absolute position size
in base units and ``side`` is +1 for a long, -1 for a short.

* **Brackets.** Each symbol has a table of notional brackets. A position of
  notional ``N`` falls in the bracket with ``floor <= N < cap``, which sets
  its maximum leverage, its maintenance margin rate ``mmr`` and its
  maintenance amount ``cum`` (so that the maintenance margin
  ``N * mmr - cum`` is continuous across brackets:
  ``cum_k = cum_{k-1} + floor_k * (mmr_k - mmr_{k-1})``).
* **Liquidation.** A position is liquidated when its margin balance (wallet
  balance plus unrealised PnL) falls to its maintenance margin. For one
  position with wallet balance ``WB`` (the isolated margin, or the cross
  wallet less the other positions' maintenance margins plus their unrealised
  PnL) that gives ``LP = (WB + cum - side * qty * entry) / (qty * mmr - side * qty)``,
  with the bracket of the position's notional at ``LP``.
* **Hedge mode.** A symbol may hold a long and a short position at once, each
  with its own entry, notional bracket and maintenance margin. With isolated
  margin each is liquidated on its own (the formula above, with its own
  margin). With cross margin both share the wallet, and the symbol's margin
  balance ``WB + qL * (P - eL) - qS * (P - eS)`` meets the sum of their
  maintenance margins at
  ``LP = (WB + cumL + cumS - qL * eL + qS * eS) / (qL * mmrL + qS * mmrS - qL + qS)``
  (:func:`hedge_liquidation_band`): below ``LP`` when the legs' slope
  ``qL * (1 - mmrL) - qS * (1 + mmrS)`` is positive (more long), above it
  otherwise; with several brackets there may be one of each. An exactly
  hedged pair is liquidated when the price rises far enough that both
  maintenance margins exceed the wallet.
* **Funding.** At each funding time a position pays ``side * qty * mark * rate``
  (longs pay shorts when the rate is positive); a negative payment is received.

Nothing here reads data: tables and rates come from the run spec or from
:mod:`tickray.feeds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class MarginError(ValueError):
    """A bracket table, leverage or position the exchange would refuse; names the problem."""


@dataclass(frozen=True, slots=True)
class Bracket:
    """One notional bracket: ``floor <= notional < cap``."""

    floor: float
    cap: float
    max_leverage: float
    mmr: float
    cum: float


@dataclass(frozen=True, slots=True)
class BracketTable:
    """A symbol's brackets, lowest first, checked for gaps and for continuous margin."""

    symbol: str
    brackets: tuple[Bracket, ...]

    def __post_init__(self) -> None:
        if not self.brackets:
            raise MarginError(f"{self.symbol}: a bracket table needs at least one bracket")
        prev: Bracket | None = None
        for k, b in enumerate(self.brackets):
            where = f"{self.symbol} bracket {k + 1}"
            if not (0 <= b.floor < b.cap):
                raise MarginError(f"{where}: floor {b.floor} must be >= 0 and below cap {b.cap}")
            if not (0 < b.mmr < 1):
                raise MarginError(f"{where}: mmr {b.mmr} must be in (0, 1)")
            if not b.max_leverage >= 1:
                raise MarginError(f"{where}: max_leverage {b.max_leverage} must be >= 1")
            if prev is None:
                if b.floor != 0 or b.cum != 0:
                    raise MarginError(f"{where}: the first bracket starts at 0 with cum 0")
            else:
                if b.floor != prev.cap:
                    raise MarginError(f"{where}: floor {b.floor} must equal the cap {prev.cap}")
                want = prev.cum + b.floor * (b.mmr - prev.mmr)
                if not math.isclose(b.cum, want, rel_tol=1e-9, abs_tol=1e-6):
                    raise MarginError(
                        f"{where}: cum {b.cum} breaks continuous margin (expected {want:.6f})"
                    )
            prev = b

    def bracket(self, notional: float, *, beyond: bool = False) -> Bracket:
        """The bracket holding ``notional``. Above the last cap it is an error (no
        order may open such a position), or with ``beyond`` the last bracket (a
        position that grew there as its price moved)."""
        for b in self.brackets:
            if notional < b.cap:
                return b
        if beyond:
            return self.brackets[-1]
        raise MarginError(
            f"{self.symbol}: notional {notional:.2f} is above the largest bracket "
            f"({self.brackets[-1].cap:.0f})"
        )

    def maintenance_margin(self, notional: float) -> float:
        b = self.bracket(notional, beyond=True)
        return notional * b.mmr - b.cum

    def check_leverage(self, leverage: float, notional: float) -> None:
        """MarginError when ``leverage`` is not allowed for a position of ``notional``."""
        if not (math.isfinite(leverage) and leverage >= 1):
            raise MarginError(f"{self.symbol}: leverage must be >= 1, got {leverage!r}")
        b = self.bracket(notional)
        if leverage > b.max_leverage:
            raise MarginError(
                f"{self.symbol}: leverage {leverage:g}x is above the {b.max_leverage:g}x allowed "
                f"for a notional of {notional:.2f}"
            )

    def initial_margin(self, notional: float, leverage: float) -> float:
        self.check_leverage(leverage, notional)
        return notional / leverage


def liquidation_price(
    table: BracketTable, side: int, qty: float, entry: float, wallet: float
) -> float:
    """The mark price at which a position's margin balance meets its maintenance margin.

    ``wallet`` is the margin backing the position: the isolated margin, or for
    cross margin the wallet balance less the other positions' maintenance
    margins plus their unrealised PnL. Returns 0.0 when no positive price
    liquidates the position (a long backed by its whole notional or more; a
    price below a billionth of the entry is float noise of that case).
    """
    if side not in (1, -1):
        raise MarginError(f"side must be 1 or -1, got {side!r}")
    if not (qty > 0 and entry > 0):
        raise MarginError(f"qty and entry must be > 0, got {qty!r} and {entry!r}")
    best, miss = 0.0, math.inf
    last = len(table.brackets) - 1
    for k, b in enumerate(table.brackets):
        denom = qty * b.mmr - side * qty
        price = (wallet + b.cum - side * qty * entry) / denom
        if price <= entry * 1e-9:
            continue
        notional = qty * price
        cap = math.inf if k == last else b.cap  # the last bracket holds all beyond it
        if b.floor <= notional < cap:
            return price
        # float noise at a bracket edge: keep the nearest solution
        gap = b.floor - notional if notional < b.floor else notional - cap
        if gap < miss:
            best, miss = price, gap
    return best if miss <= 1e-6 * max(1.0, qty * entry) else 0.0


def hedge_liquidation_band(
    table: BracketTable,
    long_qty: float,
    long_entry: float,
    short_qty: float,
    short_entry: float,
    wallet: float,
) -> tuple[float, float]:
    """Cross margin, hedge mode: the mark prices at which a symbol's long and short
    positions together meet their maintenance margins.

    ``long_qty`` and ``short_qty`` are sizes (>= 0). ``wallet`` is the margin
    backing the symbol (the cross wallet less the other symbols' maintenance
    margins plus their unrealised PnL). Returns ``(lower, upper)``: the symbol
    is liquidated when the mark falls to ``lower`` or below, or rises to
    ``upper`` or above. ``lower`` is 0.0 when no positive price below is one,
    ``upper`` inf when none above is; ``lower`` is inf when every price is
    (a margin balance already below maintenance that the hedge keeps from
    moving). The margin balance less maintenance is concave in the price (a
    linear balance less convex maintenance margins), so there are at most
    these two crossings. With one leg empty this is :func:`liquidation_price`.
    """
    if long_qty < 0 or short_qty < 0:
        raise MarginError(f"leg sizes must be >= 0, got {long_qty!r} and {short_qty!r}")
    if long_qty == 0 and short_qty == 0:
        return 0.0, math.inf
    if short_qty == 0:
        return liquidation_price(table, 1, long_qty, long_entry, wallet), math.inf
    if long_qty == 0:
        lp = liquidation_price(table, -1, short_qty, short_entry, wallet)
        return 0.0, (lp if lp > 0.0 else math.inf)
    ref = max(long_qty * long_entry, short_qty * short_entry, 1.0)
    tiny = min(long_entry, short_entry) * 1e-9
    last = len(table.brackets) - 1
    lower, upper = 0.0, math.inf
    near: dict[int, tuple[float, float]] = {}  # direction -> (gap, price) of the nearest miss
    for kl, bl in enumerate(table.brackets):
        cap_l = math.inf if kl == last else bl.cap
        for ks, bs in enumerate(table.brackets):
            cap_s = math.inf if ks == last else bs.cap
            slope = long_qty * (1.0 - bl.mmr) - short_qty * (1.0 + bs.mmr)
            if slope == 0.0:
                continue  # flat piece: no crossing inside it
            num = wallet + bl.cum + bs.cum - long_qty * long_entry + short_qty * short_entry
            price = num / -slope
            up = slope < 0  # falls below maintenance as the price rises past it
            if price <= (0.0 if up else tiny):  # a floor that low is float noise of none
                continue
            nl, ns = long_qty * price, short_qty * price
            gap = max(bl.floor - nl, nl - cap_l, bs.floor - ns, ns - cap_s, 0.0)
            if gap == 0.0:
                if up:
                    upper = min(upper, price)
                else:
                    lower = max(lower, price)
            elif gap < near.get(int(up), (math.inf, 0.0))[0]:
                near[int(up)] = (gap, price)  # float noise at a bracket edge
    for rising, (gap, price) in near.items():
        if gap <= 1e-6 * ref:
            if rising and upper == math.inf:
                upper = price
            elif not rising and lower == 0.0:
                lower = price
    if lower == 0.0 and upper == math.inf:
        # no crossing: above maintenance everywhere or below it everywhere
        at_zero = wallet - long_qty * long_entry + short_qty * short_entry  # excess at price 0
        b0 = table.brackets[0]
        slope0 = long_qty * (1.0 - b0.mmr) - short_qty * (1.0 + b0.mmr)
        if at_zero < 0.0 or (at_zero == 0.0 and slope0 <= 0.0):
            return math.inf, math.inf
    return lower, upper


def margin_balance(side: int, qty: float, entry: float, mark: float, wallet: float) -> float:
    """Wallet balance plus the position's unrealised PnL at ``mark``."""
    return wallet + side * qty * (mark - entry)


def funding_payment(side: int, qty: float, mark: float, rate: float) -> float:
    """What the position pays at a funding time (negative: it receives)."""
    return side * qty * mark * rate


#: Binance's published USD-M BTCUSDT brackets (shape and values as of 2024), as an example
#: and default; real runs should load the exchange's ``leverageBracket`` for their symbols.
BTCUSDT_BRACKETS = BracketTable(
    "BTCUSDT",
    (
        Bracket(0, 300_000, 125, 0.004, 0),
        Bracket(300_000, 800_000, 100, 0.005, 300),
        Bracket(800_000, 3_000_000, 75, 0.0065, 1_500),
        Bracket(3_000_000, 12_000_000, 50, 0.01, 12_000),
        Bracket(12_000_000, 70_000_000, 25, 0.02, 132_000),
        Bracket(70_000_000, 100_000_000, 20, 0.025, 482_000),
        Bracket(100_000_000, 230_000_000, 10, 0.05, 2_982_000),
        Bracket(230_000_000, 480_000_000, 5, 0.1, 14_482_000),
        Bracket(480_000_000, 600_000_000, 4, 0.125, 26_482_000),
        Bracket(600_000_000, 800_000_000, 3, 0.15, 41_482_000),
        Bracket(800_000_000, 1_200_000_000, 2, 0.25, 121_482_000),
        Bracket(1_200_000_000, 1_800_000_000, 1, 0.5, 421_482_000),
    ),
)


#: A generic altcoin table in Binance's shape (used for symbols without their own table).
DEFAULT_BRACKETS: tuple[Bracket, ...] = (
    Bracket(0, 50_000, 50, 0.01, 0),
    Bracket(50_000, 250_000, 20, 0.025, 750),
    Bracket(250_000, 1_000_000, 10, 0.05, 7_000),
    Bracket(1_000_000, 5_000_000, 5, 0.1, 57_000),
    Bracket(5_000_000, 20_000_000, 4, 0.125, 182_000),
    Bracket(20_000_000, 50_000_000, 3, 0.15, 682_000),
    Bracket(50_000_000, 100_000_000, 2, 0.25, 5_682_000),
    Bracket(100_000_000, 1e15, 1, 0.5, 30_682_000),
)


def bracket_table(symbol: str, rows: object = None) -> BracketTable:
    """``symbol``'s table from spec rows ``[[floor, cap, max_leverage, mmr, cum], ...]``
    (Binance ``leverageBracket``'s notionalFloor, notionalCap, initialLeverage,
    maintMarginRatio, cum); None gives BTCUSDT's published table for BTCUSDT and
    :data:`DEFAULT_BRACKETS` for any other symbol."""
    if rows is None:
        if symbol == "BTCUSDT":
            return BTCUSDT_BRACKETS
        return BracketTable(symbol, DEFAULT_BRACKETS)
    if not isinstance(rows, list | tuple) or not rows:
        raise MarginError(f"{symbol}: brackets must be a list of [floor, cap, leverage, mmr, cum]")
    out = []
    for k, row in enumerate(rows):
        if not (
            isinstance(row, list | tuple)
            and len(row) == 5
            and all(isinstance(v, int | float) and math.isfinite(v) for v in row)
        ):
            raise MarginError(
                f"{symbol} bracket {k + 1}: expected [floor, cap, leverage, mmr, cum], got {row!r}"
            )
        out.append(Bracket(*(float(v) for v in row)))
    return BracketTable(symbol, tuple(out))


def max_notional(table: BracketTable, leverage: float) -> float:
    """The largest notional a position may have at ``leverage`` (the cap of the last
    bracket allowing it); 0.0 when no bracket does."""
    best = 0.0
    for b in table.brackets:
        if b.max_leverage >= leverage:
            best = b.cap
    return best


def isolated_margin_after(
    margin: float, position: float, new_position: float, price: float, leverage: float
) -> float:
    """An isolated position's margin after a fill moves it from ``position`` to
    ``new_position`` at ``price``.

    Opening or adding locks ``added * price / leverage``; reducing releases the
    closed share of the margin (realised PnL goes to the wallet, not to the
    position); a flip releases all of it and locks the new side's.
    """
    if new_position == 0.0:
        return 0.0
    if position == 0.0 or (position > 0) != (new_position > 0):
        return abs(new_position) * price / leverage
    if abs(new_position) >= abs(position):
        return margin + (abs(new_position) - abs(position)) * price / leverage
    return margin * abs(new_position) / abs(position)


def liquidation_fee(rate: float, qty: float, price: float, remaining: float) -> float:
    """The clearance fee of a liquidation: ``rate`` of the closed notional, capped at
    what margin remains after the close (so a liquidated balance never goes below
    zero, as the insurance fund takes the rest), rounded to 8 decimals."""
    return round(max(0.0, min(rate * qty * price, remaining)), 8)
