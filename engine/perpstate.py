"""One symbol's perpetual-futures state inside its symbol actor: marks, funding, liquidation.

The symbol owns what only it can know at event resolution (DESIGN.md §2: the
symbol-level risk monitor):

* **Mark price.** From mark-price data when the run has it (the last mark in
  each bar's ``(open, close]``), else derived from the last price: the bar's
  close. A bar's adverse mark extremes are its low and high scaled by
  ``mark / close`` (the basis is taken as constant within the bar).
* **Funding.** A funding record at time ``T`` settles at the close of the
  first bar closing at or after ``T``, on the position held then, at the
  record's mark price (or the bar's mark when the record has none):
  ``payment = round(position * mark * rate, 8)``, paid when positive.
* **Liquidation.** After a bar's fills, a long is liquidated when the bar's
  mark low reaches its liquidation price and a short when the mark high does
  (:func:`~tickray.engine.perpetual.liquidation_price`, with the position's
  isolated margin, or for cross margin the wallet the portfolio gave this
  symbol at the last step (its share of the account's excess margin, see
  ``Portfolio._margin_inboxes``), plus its own realised PnL, fees and funding
  since). A bar that opens beyond the price liquidates before orders fill at
  that open. The position is closed at the liquidation price
  rounded to the tick against the trader, with the clearance fee
  (:func:`~tickray.engine.perpetual.liquidation_fee`); open orders are
  cancelled.
* **Hedge mode.** The long and the short position (legs 0 and 1) each have
  an isolated margin and are liquidated one by one; with cross margin they
  share the symbol's wallet and are liquidated together at the price where
  their combined margin balance meets their combined maintenance margin
  (:func:`~tickray.engine.perpetual.hedge_liquidation_band`). ``leg``
  selects the position that ``on_fill``, ``on_funding``, ``wallet`` and
  ``liquidation_price`` work on.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from tickray.engine.perpetual import (
    BracketTable,
    hedge_liquidation_band,
    isolated_margin_after,
    liquidation_price,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class FundingSchedule(NamedTuple):
    """Funding records of one symbol, oldest first; ``mark`` is NaN where none is given."""

    ts: I64
    rate: F64
    mark: F64


class MarkSeries(NamedTuple):
    """Mark prices of one symbol at times ``ts`` (strictly increasing)."""

    ts: I64
    price: F64


NO_FUNDING = FundingSchedule(
    np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64), np.empty(0, dtype=np.float64)
)


class PerpSymbolState:
    """Margin, funding cursor and liquidation price of one symbol's perpetual position."""

    def __init__(
        self,
        table: BracketTable,
        leverage: float,
        *,
        isolated: bool,
        liquidation_fee: float,
        funding: FundingSchedule = NO_FUNDING,
        marks: MarkSeries | None = None,
        wallet: float = 0.0,
        hedge: bool = False,
    ) -> None:
        self.table = table
        self.hedge = hedge
        self.leverage = leverage
        self.isolated = isolated
        self.liquidation_fee = liquidation_fee
        self.funding = funding
        self.marks = marks
        self.iso = [0.0, 0.0]  # isolated margin per leg (one-way mode uses leg 0)
        self.leg = 0
        self.cross_base = wallet
        self.cross_delta = 0.0
        self.next_funding = 0
        self.liquidations = 0

    @property
    def iso_margin(self) -> float:
        """The isolated margin of the current leg."""
        return self.iso[self.leg]

    @iso_margin.setter
    def iso_margin(self, value: float) -> None:
        self.iso[self.leg] = value

    # -- wallet ---------------------------------------------------------------------------
    def set_cross_wallet(self, value: float) -> None:
        """The portfolio's cross wallet for this symbol (wallet less the other
        positions' maintenance margins plus their unrealised PnL) at the last step."""
        self.cross_base = value
        self.cross_delta = 0.0

    def wallet(self) -> float:
        """The margin backing this position now."""
        return self.iso_margin if self.isolated else self.cross_base + self.cross_delta

    def on_fill(
        self, position: float, new_position: float, price: float, realized: float, fee: float
    ) -> None:
        if self.isolated:
            self.iso_margin = isolated_margin_after(
                self.iso_margin, position, new_position, price, self.leverage
            )
        else:
            self.cross_delta += realized - fee

    def on_funding(self, payment: float) -> None:
        if self.isolated:
            self.iso_margin -= payment
        else:
            self.cross_delta -= payment

    def liquidation_price(self, position: float, entry: float) -> float:
        """Where the mark liquidates ``position`` (0.0: nowhere above zero)."""
        if position == 0.0:
            return 0.0
        side = 1 if position > 0 else -1
        return liquidation_price(self.table, side, abs(position), entry, self.wallet())

    def hedge_liquidation(
        self, long_pos: float, long_entry: float, short_pos: float, short_entry: float
    ) -> tuple[float, float]:
        """Cross margin, hedge mode: the marks at or beyond which both legs are
        liquidated (lower, upper; see ``hedge_liquidation_band``)."""
        return hedge_liquidation_band(
            self.table, long_pos, long_entry, -short_pos, short_entry, self.wallet()
        )

    # -- data ---------------------------------------------------------------------------
    def bar_marks(
        self, open_ts: I64, close_ts: I64, low: F64, high: F64, close: F64
    ) -> tuple[F64, F64, F64]:
        """Each bar's mark at its close and its adverse extremes (low, high)."""
        if self.marks is None or len(self.marks.ts) == 0:
            return close, low, high
        idx = self.marks.ts.searchsorted(close_ts, side="right") - 1
        ok = idx >= 0
        ok[ok] = self.marks.ts[idx[ok]] > open_ts[ok]
        mark = close.copy()
        mark[ok] = self.marks.price[idx[ok]]
        ratio = mark / close
        return mark, low * ratio, high * ratio

    def funding_in(self, close_ts: I64) -> tuple[I64, I64]:
        """Bars of ``close_ts`` that settle funding records not yet settled: (bar index,
        record index) pairs, in order; records before the first close are skipped."""
        f = self.funding.ts
        lo = self.next_funding
        if lo >= len(f) or len(close_ts) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        hi = lo + int(f[lo:].searchsorted(close_ts[-1], side="right"))
        recs = np.arange(lo, hi, dtype=np.int64)
        bars = close_ts.searchsorted(f[lo:hi], side="left").astype(np.int64)
        return bars, recs

    def funding_mark(self, record: int, bar_mark: float) -> float:
        m = float(self.funding.mark[record])
        return bar_mark if math.isnan(m) else m
