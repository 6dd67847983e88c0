"""Instrument rules: tick size, step size and minimums, and exact rounding to them.

Exchanges accept only prices that are whole multiples of the tick size and
quantities that are whole multiples of the step size. Rounding here goes
through integer counts of ticks or steps and then to the step's decimal
places, so ``0.1 + 0.2`` style residue never reaches an order or a fill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal


def _decimals(size: float) -> int:
    """Decimal places of a tick or step size written in the usual exchange form."""
    exp = Decimal(repr(size)).normalize().as_tuple().exponent
    return max(0, -int(exp))


#: Quote assets recognised at the end of a symbol's name, longest first where one ends
#: another (``FDUSD`` before ``USD``).
QUOTE_ASSETS = (
    "FDUSD",
    "USDT",
    "USDC",
    "BUSD",
    "TUSD",
    "USDP",
    "DAI",
    "BTC",
    "ETH",
    "BNB",
    "EUR",
    "TRY",
    "BRL",
    "JPY",
    "USD",
)


def split_symbol(symbol: str) -> tuple[str, str]:
    """(base, quote) from a symbol's name by its quote suffix; ("", "") when none is known.

    The base must have at least two characters, so that stock tickers such as
    GBTC or FETH are not read as crypto pairs.
    """
    for q in QUOTE_ASSETS:
        if symbol.endswith(q) and len(symbol) >= len(q) + 2:
            return symbol[: -len(q)], q
    return "", ""


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """Trading rules of one symbol (as in an exchange's exchangeInfo filters).

    ``tick_size``: price increment. ``step_size``: quantity increment.
    ``min_qty``: smallest order quantity. ``min_notional``: smallest
    ``price * qty`` an order may have, in the quote asset. ``base_asset`` and
    ``quote_asset`` default to what the name says (``ETHBTC``: ETH, BTC; see
    :data:`QUOTE_ASSETS`); empty when it says nothing (the quote is then the
    account's currency).
    """

    symbol: str
    tick_size: float = 0.01
    step_size: float = 0.00001
    min_qty: float = 0.0
    min_notional: float = 0.0
    base_asset: str = ""
    quote_asset: str = ""
    price_decimals: int = field(init=False, repr=False, compare=False)
    qty_decimals: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("tick_size", "step_size"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(
                    f"symbol {self.symbol}: {name} must be a positive number, got {v!r}"
                )
        for name in ("min_qty", "min_notional"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"symbol {self.symbol}: {name} must be >= 0, got {v!r}")
        if not self.base_asset and not self.quote_asset:
            base, quote = split_symbol(self.symbol)
            object.__setattr__(self, "base_asset", base)
            object.__setattr__(self, "quote_asset", quote)
        object.__setattr__(self, "price_decimals", _decimals(self.tick_size))
        object.__setattr__(self, "qty_decimals", _decimals(self.step_size))

    def round_price(self, price: float) -> float:
        """Nearest tick (half to even)."""
        return round(round(price / self.tick_size) * self.tick_size, self.price_decimals)

    def round_price_against(self, price: float, side: int) -> float:
        """To the tick, away from the trader: up for a buy (side 1), down for a sell (-1).

        For prices the simulation makes up (a spread, an impact), never the market's own.
        """
        tick = self.tick_size
        steps = math.ceil(price / tick - 1e-9) if side == 1 else math.floor(price / tick + 1e-9)
        return round(steps * tick, self.price_decimals)

    def floor_qty(self, qty: float) -> float:
        """Largest whole number of steps not above ``qty`` (for ``qty >= 0``).

        A relative tolerance absorbs float noise so that ``0.3 / 0.1`` counts as
        three steps, not 2.999..., and so that a quantity already on the grid
        stays whole however many steps it holds (8.9e10 steps carry ~1e-5 steps of noise).
        """
        if qty <= 0:
            return 0.0
        exact = qty / self.step_size
        near = round(exact)
        # the division's own noise is a few ulps of ``exact``: 1e-15 relative covers it
        steps = near if abs(exact - near) <= 1e-9 + 1e-15 * exact else math.floor(exact)
        return round(steps * self.step_size, self.qty_decimals)

    def round_qty(self, qty: float) -> float:
        """Nearest whole number of steps (half to even); keeps the sign."""
        return round(round(qty / self.step_size) * self.step_size, self.qty_decimals)

    def tradable(self, qty: float, price: float) -> bool:
        """True when ``qty`` at ``price`` meets the minimum quantity and notional."""
        return qty > 0 and qty >= self.min_qty and qty * price >= self.min_notional


def book_fill(
    position: float, avg_price: float, q: float, price: float, spec: SymbolSpec
) -> tuple[float, float, float]:
    """A signed fill ``q`` at ``price`` on a position held at average cost.

    Returns (position after, average price after, realised PnL of the fill),
    fees apart. A fill on the position's side moves the average; one against
    it realises ``closed x (price - average)`` and, crossing through zero,
    opens the rest at ``price``.
    """
    realized = 0.0
    if q == 0.0:  # nothing booked (a buy whose base fee left less than a lot)
        return position, avg_price, 0.0
    if position == 0.0 or (position > 0) == (q > 0):
        avg_price = (avg_price * abs(position) + price * abs(q)) / abs(position + q)
    else:
        closed = min(abs(q), abs(position))
        realized = closed * (price - avg_price) * (1.0 if position > 0 else -1.0)
        if abs(q) > abs(position):
            avg_price = price
    after = spec.round_qty(position + q)
    return after, (0.0 if after == 0.0 else avg_price), realized


def base_fee_split(
    qty: float, price: float, rate: float, spec: SymbolSpec, dust: float = 0.0
) -> tuple[float, float, float]:
    """A buy of ``qty`` whose fee is taken from the base asset received, as Binance spot
    does without BNB: (quantity booked on the position, fee valued in quote, dust after).

    The fee is ``round(qty * rate, 8)`` base units. What was received plus the
    ``dust`` already held goes to the position in whole lots; the rest stays
    dust (held, valued at the mark, not tradable until it makes a lot). The
    fee's quote value at the fill price is what the fill records as its fee. A
    rebate (``rate < 0``) is paid in quote instead: the whole ``qty`` is booked.
    """
    if rate < 0:
        return qty, round(qty * price * rate, 8), dust
    fee_base = round(qty * rate, 8)
    received = qty - fee_base + dust
    booked = spec.floor_qty(received)
    return booked, round(fee_base * price, 8), round(received - booked, 8)


def fill_fee(
    side: int, qty: float, price: float, rate: float, spec: SymbolSpec, dust: float, base_fee: bool
) -> tuple[float, float, float]:
    """(quantity booked, fee in quote, dust after) of a fill of ``qty`` at ``price``: the
    fee on the notional in quote, rounded to 8 decimals, or for a buy with fees in base
    :func:`base_fee_split`. The one rule of both bar fill paths."""
    if base_fee and side == 1:
        return base_fee_split(qty, price, rate, spec, dust)
    return qty, round(qty * price * rate, 8), dust


def held_to_sell(position: float, spec: SymbolSpec) -> float:
    """Whole lots of a long position a spot sell may take (0.0 when flat or short)."""
    return spec.floor_qty(max(position, 0.0))
