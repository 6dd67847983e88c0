"""The portfolio: a spot cash account that books fills, marks positions and approves intents.

Accounting (quote asset, floats rounded only where the exchange rounds):

* A fill of signed quantity ``q`` at ``price`` with fee ``fee`` changes cash by
  ``-q * price - fee`` and the position by ``q``.
* Equity at a step boundary ``b`` is ``cash + sum(position * mark(b))``, summed
  over symbols in their sorted order. A symbol's own equity is its equal
  allocation (initial cash / symbols) plus its cash flows plus its marked position.
* Realised PnL (average cost of the open position, fees apart) is computed by
  each symbol, which knows its fills first, and summed here.

Approval (at the step's end, in order of intent time, then symbol, then intent
id): the part of an order that reduces the projected position is always
approved; the part that opens or grows it must leave *free cash* >= 0, where
free cash is cash, plus the estimated cash of approved orders not yet filled,
minus ``(1 + short_margin)`` times the marked value of short positions.
Estimates price a buy at the last mark times ``1 + price_buffer`` and a sell at
``1 - price_buffer``, fees included. An order that does not fit is resized to
what fits (in whole steps) or rejected, with the reason recorded. Short sales
are rejected unless the account allows shorting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from tickray.engine.approval import check_cash
from tickray.engine.clock import ceil_to
from tickray.engine.config import RunConfig
from tickray.engine.events import (
    Fill,
    Inbox,
    OrderIntent,
    OrderStatus,
    OrderUpdate,
    Outbox,
    RiskAction,
    RiskDecision,
)
from tickray.engine.instruments import SymbolSpec
from tickray.engine.symbol import SimulationError

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class BookedFill(NamedTuple):
    """A fill as booked by the account, with what it did to the position."""

    fill: Fill
    realized_pnl: float
    position_after: float
    cash_after: float


class SettleResult(NamedTuple):
    """What one settlement produced, for the next step and for the recorder.

    ``symbol_equity`` has one row per boundary in ``equity_ts`` and one column
    per symbol (sorted order).
    """

    inboxes: list[Inbox]
    fills: list[BookedFill]
    updates: list[OrderUpdate]
    intents: list[OrderIntent]
    decisions: list[RiskDecision]
    equity_ts: I64
    equity: F64
    cash: F64
    gross: F64
    symbol_equity: npt.NDArray[np.float64]


class Portfolio:
    """Spot cash account over a fixed, sorted symbol list (pure, no I/O)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        acct = config.account
        self.symbols = list(config.symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.specs: list[SymbolSpec] = [config.spec(s) for s in self.symbols]
        n = len(self.symbols)
        self.initial_cash = acct.initial_cash
        self.alloc = acct.initial_cash / n
        self.short_margin = acct.short_margin
        self.allow_short = acct.allow_short
        self.cash = acct.initial_cash
        self.pos = np.zeros(n)
        self.mark = np.full(n, math.nan)
        self.flow = np.zeros(n)
        self.fees = np.zeros(n)
        self.realized = np.zeros(n)
        self.fill_count = np.zeros(n, dtype=np.int64)
        self.pending_pos = np.zeros(n)
        self.pending_cash = 0.0
        self._pending: dict[tuple[str, int], tuple[float, float]] = {}
        self.time = -(2**63)
        self.interval = config.interval_ns
        self.sync = config.sync_ns

    # -- settlement ---------------------------------------------------------------------
    def settle(self, t: int, outboxes: Sequence[Outbox], mark_ts: I64, marks: F64) -> SettleResult:
        """Book the outboxes of the symbols at boundary ``t`` and decide their intents.

        ``mark_ts`` are all boundaries since the previous settlement up to ``t``
        and ``marks`` their marks, one column per symbol.
        """
        if t <= self.time:
            raise SimulationError(f"settle at {t} is not after the previous one at {self.time}")
        if (
            len(mark_ts) == 0
            or int(mark_ts[-1]) != t
            or marks.shape != (len(mark_ts), len(self.symbols))
        ):
            raise SimulationError(f"settle at {t}: marks must cover the boundaries up to {t}")
        self.time = t
        rows = len(mark_ts)
        equity = np.empty(rows)
        cash = np.empty(rows)
        gross = np.empty(rows)
        sym_eq = np.empty((rows, len(self.symbols)))
        head = rows - 1
        fills: list[BookedFill] = []
        updates: list[OrderUpdate] = []
        intents: list[OrderIntent] = []
        ordered = sorted(outboxes, key=_by_symbol) if len(outboxes) > 1 else outboxes
        # Each fill is booked at the boundary ending the step in which its bar
        # closed; rows before that boundary see the account without it.
        step0 = int(mark_ts[0])
        groups: dict[int, list[tuple[int, Fill, float]]] = {}
        for ob in ordered:
            i = self.index[ob.symbol]
            for f, pnl in zip(ob.fills, ob.realized.tolist(), strict=True):
                row = (ceil_to(f.ts_event + self.interval, self.sync) - step0) // self.sync
                groups.setdefault(max(0, min(int(row), head)), []).append((i, f, pnl))
        done_rows = 0
        for row in sorted(groups):
            if row > done_rows:
                sl = slice(done_rows, row)
                self._equity(marks[sl], equity[sl], cash[sl], gross[sl], sym_eq[sl])
                done_rows = row
            for i, f, pnl in groups[row]:
                fills.append(self._book(i, f, pnl))
        if head > done_rows:
            sl = slice(done_rows, head)
            self._equity(marks[sl], equity[sl], cash[sl], gross[sl], sym_eq[sl])
        for ob in ordered:
            i = self.index[ob.symbol]
            for u in ob.updates:
                if u.status in _DONE:
                    self._release(u.symbol, u.order_id)
            updates.extend(ob.updates)
            intents.extend(ob.intents)
            if self.specs[i].round_qty(float(self.pos[i]) - ob.position) != 0:
                raise SimulationError(
                    f"{ob.symbol}: symbol reports position {ob.position}, account has {self.pos[i]}"
                )
        last = marks[head]
        known = ~np.isnan(last)
        self.mark[known] = last[known]
        self._equity(marks[head:], equity[head:], cash[head:], gross[head:], sym_eq[head:])
        if len(intents) > 1:
            intents.sort(key=_intent_order)
        decisions = [self._decide(t, it) for it in intents]
        by_symbol: dict[str, list[RiskDecision]] = {}
        for d in decisions:
            by_symbol.setdefault(d.symbol, []).append(d)
        inboxes = [Inbox(s, t, ds, []) for s, ds in sorted(by_symbol.items())]
        return SettleResult(
            inboxes, fills, updates, intents, decisions, mark_ts, equity, cash, gross, sym_eq
        )

    def _equity(self, marks: F64, total: F64, cash: F64, gross: F64, sym: F64) -> None:
        """Fill the equity rows for ``marks`` with the current positions and cash.

        Sums run over symbols in their fixed order (``np.add.accumulate`` is
        sequential), so a boundary's value never depends on how many boundaries
        are computed together. Unheld symbols add an exact 0.0.
        """
        rows = len(total)
        if rows == 1 and len(self.symbols) <= 16:
            self._equity_row(marks[0], total, cash, gross, sym)
            return
        held = self.pos != 0.0
        value = np.where(held, marks * self.pos, 0.0)
        cash[:] = self.cash
        sym[:] = value + (self.alloc + self.flow)
        acc = np.empty((rows, len(self.symbols) + 1))
        acc[:, 0] = self.cash
        acc[:, 1:] = value
        total[:] = np.add.accumulate(acc, axis=1)[:, -1]
        acc[:, 0] = 0.0
        np.abs(value, out=acc[:, 1:])
        gross[:] = np.add.accumulate(acc, axis=1)[:, -1]

    def _equity_row(self, marks: F64, total: F64, cash: F64, gross: F64, sym: F64) -> None:
        """One boundary, few symbols: the same sequential float sums in plain Python."""
        acc = self.cash
        gr = 0.0
        base = self.alloc + self.flow
        row = sym[0]
        for i, p in enumerate(self.pos.tolist()):
            v = p * float(marks[i]) if p != 0.0 else 0.0
            acc += v
            gr += abs(v)
            row[i] = v + float(base[i])
        total[0] = acc
        cash[0] = self.cash
        gross[0] = gr

    def _book(self, i: int, f: Fill, realized: float) -> BookedFill:
        """Cash, position and totals of one fill; ``realized`` comes from the symbol."""
        q = f.side * f.qty
        self.pos[i] = self.specs[i].round_qty(float(self.pos[i]) + q)
        cash_delta = -q * f.price - f.fee
        self.cash += cash_delta
        self.flow[i] += cash_delta
        self.fees[i] += f.fee
        self.realized[i] += realized
        self.fill_count[i] += 1
        return BookedFill(f, realized, float(self.pos[i]), self.cash)

    def _release(self, symbol: str, order_id: int) -> None:
        held = self._pending.pop((symbol, order_id), None)
        if held is not None:
            self.pending_pos[self.index[symbol]] -= held[0]
            self.pending_cash -= held[1]

    # -- approval -----------------------------------------------------------------------
    def free_cash(self) -> float:
        """Cash after approved-unfilled orders, less the collateral short positions lock."""
        proj = self.pos + self.pending_pos
        short = proj < 0
        locked = float(-(proj[short] * self.mark[short]).sum()) if short.any() else 0.0
        return self.cash + self.pending_cash - locked * (1.0 + self.short_margin)

    def _decide(self, t: int, it: OrderIntent) -> RiskDecision:
        i = self.index[it.symbol]
        px = float(self.mark[i]) if not math.isnan(self.mark[i]) else it.ref_price
        proj = float(self.pos[i] + self.pending_pos[i])
        chk = check_cash(
            self.config.account, self.specs[i], it.side, it.qty, proj, px, self.free_cash()
        )
        if chk.action != RiskAction.REJECT:
            self._pending[(it.symbol, it.intent_id)] = (it.side * chk.qty, chk.cash_estimate)
            self.pending_pos[i] += it.side * chk.qty
            self.pending_cash += chk.cash_estimate
        return RiskDecision(it.symbol, it.intent_id, t, chk.action, chk.qty, chk.reason)

    # -- summary ------------------------------------------------------------------------
    def equity_now(self) -> float:
        value = np.where(self.pos != 0, self.pos * np.nan_to_num(self.mark), 0.0)
        return self.cash + float(value.sum())


_DONE = frozenset((OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED))


def _by_symbol(o: Outbox) -> str:
    return o.symbol


def _intent_order(it: OrderIntent) -> tuple[int, str, int]:
    return (it.ts_event, it.symbol, it.intent_id)
