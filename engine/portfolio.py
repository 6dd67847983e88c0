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
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from tickray.engine.approval import CashCheck, check_cash, check_margin
from tickray.engine.config import RunConfig
from tickray.engine.events import (
    EMPTY_FILLS,
    EMPTY_FUNDING,
    EMPTY_UPDATES,
    Control,
    ControlKind,
    Fill,
    FillBatch,
    Inbox,
    Liquidity,
    OrderIntent,
    OrderStatus,
    Outbox,
    PositionSide,
    RiskAction,
    RiskDecision,
    Side,
    UpdateBatch,
)
from tickray.engine.instruments import SymbolSpec, base_fee_split, book_fill
from tickray.engine.perpetual import isolated_margin_after
from tickray.engine.steps import bar_close
from tickray.engine.symbol import SimulationError

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class _Rows(NamedTuple):
    """The equity rows a settlement fills in: one per boundary (``sym``: one column per symbol)."""

    equity: F64
    cash: F64
    gross: F64
    sym: F64

    def at(self, sl: slice) -> _Rows:
        """Views of the rows in ``sl``."""
        return _Rows(self.equity[sl], self.cash[sl], self.gross[sl], self.sym[sl])


class BookedFill(NamedTuple):
    """One booked fill, with what it did to its symbol and to the account."""

    fill: Fill
    realized_pnl: float
    position_after: float
    cash_after: float


class FillRecords(NamedTuple):
    """The fills booked by one settlement, in booking order, with the cash after each."""

    symbol: npt.NDArray[np.object_]
    fills: FillBatch
    cash_after: F64

    def rows(self) -> list[BookedFill]:
        """The records as typed rows (for inspection and tests; the recorder uses columns)."""
        out: list[BookedFill] = []
        for k, name in enumerate(self.symbol.tolist()):
            one = self.fills.take(np.arange(k, k + 1))
            out.append(
                BookedFill(
                    one.events(name)[0],
                    float(one.realized_pnl[0]),
                    float(one.position_after[0]),
                    float(self.cash_after[k]),
                )
            )
        return out


class UpdateRecords(NamedTuple):
    """The order updates of one settlement's outboxes (symbol order, then as emitted)."""

    symbol: npt.NDArray[np.object_]
    updates: UpdateBatch


class SettleResult(NamedTuple):
    """What one settlement produced, for the next step and for the recorder.

    ``symbol_equity`` has one row per boundary in ``equity_ts`` and one column
    per symbol (sorted order).
    """

    inboxes: list[Inbox]
    fills: FillRecords
    updates: UpdateRecords
    intents: list[OrderIntent]
    decisions: list[RiskDecision]
    equity_ts: I64
    equity: F64
    cash: F64
    gross: F64
    symbol_equity: npt.NDArray[np.float64]
    funding: FundingRecords | None = None
    marks: F64 | None = None


class FundingRecords(NamedTuple):
    """The funding settlements booked by one settlement (perpetual accounts), in booking order."""

    symbol: npt.NDArray[np.object_]
    records: npt.NDArray[np.void]


class RiskHook(Protocol):
    """Portfolio-level risk rules beside the cash and margin checks (tickray.risk).

    ``observe`` sees every settlement's boundaries (their times, equity and
    marks) before intents are decided; ``review`` may cut or refuse what the
    account check approved (only the part of an order that opens exposure:
    ``check(qty)`` re-runs the account check for a smaller quantity);
    ``controls`` are sent to the symbols after the decisions (a kill switch's
    FLATTEN).
    """

    def observe(self, pf: Portfolio, mark_ts: I64, equity: F64, cash: F64, marks: F64) -> None: ...

    def review(
        self,
        pf: Portfolio,
        t: int,
        it: OrderIntent,
        chk: CashCheck,
        price: float,
        projected: float,
        check: Callable[[float], CashCheck],
    ) -> CashCheck: ...

    def controls(self, pf: Portfolio, t: int) -> list[Control]: ...


class Portfolio:
    """Spot cash account over a fixed, sorted symbol list (pure, no I/O)."""

    risk: RiskHook | None = None

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        acct = config.account
        self.symbols = list(config.symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.specs: list[SymbolSpec] = [config.spec(s) for s in self.symbols]
        self.accounts = [config.account_for(s) for s in self.symbols]  # per-symbol taker fee
        n = len(self.symbols)
        self.alloc = acct.initial_cash / n
        self.short_margin = acct.short_margin
        self.cash = acct.initial_cash
        self.pos = np.zeros(n)
        self.mark = np.full(n, math.nan)
        self.flow = np.zeros(n)
        self.fees = np.zeros(n)
        self.realized = np.zeros(n)
        self.fill_count = np.zeros(n, dtype=np.int64)
        self.pending_pos = np.zeros(n)
        self.pending_cash = 0.0
        # (symbol, order id) -> (signed qty, cash estimate, leg) of approved-unfilled orders
        self._pending: dict[tuple[str, int], tuple[float, float, int]] = {}
        self.time = -(2**63)
        self.interval = config.interval_ns
        self.sync = config.sync_ns
        self.perp = config.perp
        # perpetual positions per leg: column 0 the net position (one-way mode) or the
        # long one (hedge mode), column 1 the short one (hedge mode)
        self.lpos = np.zeros((n, 2))
        self.lpend = np.zeros((n, 2))  # approved-unfilled orders per leg
        self.entry = np.zeros((n, 2))  # average entry price per leg
        self.iso = np.zeros((n, 2))  # isolated margin per leg
        self.funding = np.zeros(n)  # funding paid per symbol
        self.liquidations = np.zeros(n, dtype=np.int64)
        self.isolated = False
        self.hedge = False
        if self.perp is not None:
            self.hedge = self.perp.position_mode == "hedge"
            self.tables = [self.perp.table(s) for s in self.symbols]
            self.leverage = [self.perp.leverage_for(s) for s in self.symbols]
            self.isolated = self.perp.margin_mode == "isolated"
        # Spot with several cash assets or fees in base (see config.AccountConfig):
        # cash per quote asset (index 0 is the currency), valued at conversion marks.
        self.multi = config.multi_asset and self.perp is None
        self.base_fee = acct.fee_asset == "base"
        self.dust = np.zeros(n)
        if self.multi:
            quotes = {config.quote_of(s) for s in self.symbols} | set(acct.balances)
            self.assets = [acct.currency] + sorted(quotes - {acct.currency})
            aidx = {a: k for k, a in enumerate(self.assets)}
            self.sym_asset = np.array(
                [aidx[config.quote_of(s)] for s in self.symbols], dtype=np.int64
            )
            self.cash_by = np.array([config.pool(a) for a in self.assets])
            self.conv = [-1] + [self.index[a + acct.currency] for a in self.assets[1:]]
            self.rate = np.array([1.0] + [math.nan] * (len(self.assets) - 1))
            self.pending_by = np.zeros(len(self.assets))
            self.budget = np.array([config.budget_for(s) for s in self.symbols])
            self.fee_rates = [config.fees_for(s) for s in self.symbols]

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
        unknown = [ob.symbol for ob in outboxes if ob.symbol not in self.index]
        if unknown:
            raise SimulationError(
                f"settle at {t}: outbox of {unknown[0]!r}, which is not one of the run's symbols"
            )
        self.time = t
        rows = len(mark_ts)
        out = _Rows(
            np.empty(rows), np.empty(rows), np.empty(rows), np.empty((rows, len(self.symbols)))
        )
        head = rows - 1
        ordered = sorted(outboxes, key=_by_symbol) if len(outboxes) > 1 else list(outboxes)
        funding = None
        if self.perp is None and not self.multi:
            fills = self._book(ordered, marks, int(mark_ts[0]), out)
        else:
            fills, funding = self._book_events(ordered, marks, int(mark_ts[0]), out)
        intents: list[OrderIntent] = []
        for ob in ordered:
            i = self.index[ob.symbol]
            if ob.updates.size and self._pending:
                done = _DONE[ob.updates.status]
                for oid in ob.updates.order_id[done].tolist():
                    self._release(ob.symbol, oid)
            intents.extend(ob.intents)
            if self.specs[i].round_qty(float(self.pos[i]) - ob.position) != 0:
                raise SimulationError(
                    f"{ob.symbol}: symbol reports position {ob.position}, account has {self.pos[i]}"
                )
        updates = concat_updates(ordered)
        last = marks[head]
        known = ~np.isnan(last)
        self.mark[known] = last[known]
        if self.risk is not None:
            self.risk.observe(self, mark_ts, out.equity, out.cash, marks)
        if len(intents) > 1:
            intents.sort(key=_intent_order)
        decisions = [self._decide(t, it) for it in intents]
        by_symbol: dict[str, list[RiskDecision]] = {}
        for d in decisions:
            by_symbol.setdefault(d.symbol, []).append(d)
        if self.perp is not None and not self.isolated:
            inboxes = self._margin_inboxes(t, ordered, by_symbol)
        else:
            inboxes = [Inbox(s, t, ds, []) for s, ds in sorted(by_symbol.items())]
        if self.risk is not None:
            extra = self.risk.controls(self, t)
            if extra:
                have = {b.symbol: b for b in inboxes}
                for c in extra:
                    box = have.get(c.symbol) or Inbox(c.symbol, t, [], [])
                    have[c.symbol] = box._replace(controls=[*box.controls, c])
                inboxes = [have[s] for s in sorted(have)]
        return SettleResult(
            inboxes,
            fills,
            updates,
            intents,
            decisions,
            mark_ts,
            out.equity,
            out.cash,
            out.gross,
            out.sym,
            funding,
            marks,
        )

    def _equity(self, marks: F64, out: _Rows) -> None:
        """Fill the equity rows for ``marks`` with the current positions and cash."""
        if self.multi:
            self._equity_multi(marks, out)
            return
        rows = len(out.equity)
        if rows == 1 and len(self.symbols) <= 16:
            self._equity_row(marks[0], out)
            return
        cash_rows = np.full(rows, self.cash)
        self._equity_rows(marks, cash_rows, self.pos[None, :], self.flow[None, :], out)

    def _rates(self, marks: F64) -> F64:
        """Each cash asset's value in the currency at each row of ``marks``: the
        conversion symbol's mark, the last one known where it has none yet."""
        rates = np.empty((len(marks), len(self.assets)))
        for a, col in enumerate(self.conv):
            if col < 0:
                rates[:, a] = 1.0
                continue
            r = marks[:, col].copy()
            for k in range(len(r)):
                if math.isnan(r[k]):
                    r[k] = self.rate[a]
                else:
                    self.rate[a] = r[k]
            if np.isnan(r).any():
                mine = self.sym_asset == a
                held = bool(np.any((self.pos + self.dust)[mine] != 0.0))
                if self.cash_by[a] != 0.0 or held:
                    raise SimulationError(
                        f"no {self.symbols[col]} mark yet to value {self.assets[a]} in "
                        f"{self.assets[0]} (its data starts later than the run)"
                    )
                r = np.nan_to_num(r)  # nothing held in it: its value is 0 at any rate
            rates[:, a] = r
        return rates

    def _equity_multi(self, marks: F64, out: _Rows) -> None:
        """Cash of every asset and positions plus dust, valued in the currency; a
        symbol's equity is its budget plus its cash flows, valued like its quote
        asset, plus its holdings."""
        rates = self._rates(marks)
        q_rate = rates[:, self.sym_asset]
        held = self.pos + self.dust
        value = np.where(held != 0.0, held * marks * q_rate, 0.0)
        cash = np.full(len(marks), float(self.cash_by[0]))
        for a in range(1, len(self.assets)):  # in a fixed order: no BLAS reassociation
            cash = cash + rates[:, a] * float(self.cash_by[a])
        out.cash[:] = cash
        out.equity[:] = cash + value.sum(axis=1)
        out.gross[:] = np.abs(value).sum(axis=1)
        out.sym[:] = (self.budget + self.flow) * q_rate + value

    def _equity_row(self, marks: F64, out: _Rows) -> None:
        """One boundary, few symbols: the same sequential float sums in plain Python."""
        acc = self.cash
        gr = 0.0
        base = self.alloc + self.flow
        row = out.sym[0]
        for i, p in enumerate(self.pos.tolist()):
            v = p * float(marks[i]) if p != 0.0 else 0.0
            acc += v
            gr += abs(v)
            row[i] = v + float(base[i])
        out.equity[0] = acc
        out.cash[0] = self.cash
        out.gross[0] = gr

    def _book(
        self,
        ordered: list[Outbox],
        marks: F64,
        step0: int,
        out: _Rows,
    ) -> FillRecords:
        """Book the fills and fill the equity rows; returns the fills in booking order.

        A fill is booked at the boundary ending the step in which its bar
        closed, so rows before it see the account without it. Booking order is
        (boundary, symbol, fill order); cash and each symbol's flow are running
        sums in that order, so the numbers never depend on how many boundaries
        one settlement covers. Two implementations do the same float operations
        in the same order: one fill at a time (cheap for the few fills of a
        step) and vectorised per symbol (for the long batches of self-approving
        symbols); which one runs is only a matter of speed.
        """
        parts = [(self.index[ob.symbol], ob.fills) for ob in ordered if ob.fills.size]
        if not parts:
            self._equity(marks, out)
            return _NO_FILL_RECORDS
        rows = len(out.equity)
        if len(parts) == 1 and parts[0][1].size <= 8:
            # One symbol, a few fills (the usual portfolio-approval step): its
            # fills are already in booking order, as it emitted them in time order.
            i, f = parts[0]
            last = rows - 1
            row_list = [
                min(
                    max(
                        (
                            -((-((t // self.interval + 1) * self.interval)) // self.sync)
                            * self.sync
                            - step0
                        )
                        // self.sync,
                        0,
                    ),
                    last,
                )
                for t in f.ts.tolist()
            ]
            cash_after = self._book_each(f, [i] * f.size, row_list, marks, out)
            return FillRecords(np.full(f.size, self.symbols[i], dtype=object), f, cash_after)
        sym = np.concatenate([np.full(b.size, i, dtype=np.int64) for i, b in parts])
        seq = np.concatenate([np.arange(b.size) for _, b in parts])
        f = FillBatch.concat([b for _, b in parts])
        closes = bar_close(f.ts, self.interval)
        row = np.clip((-((-closes) // self.sync) * self.sync - step0) // self.sync, 0, rows - 1)
        order = np.lexsort((seq, sym, row))
        f = f.take(order)
        sym, row = sym[order], row[order]
        if f.size <= 40 * len(parts):
            cash_after = self._book_each(f, sym.tolist(), row.tolist(), marks, out)
        else:
            cash_after = self._book_vectorised(f, sym, row, marks, out)
        names = np.array(self.symbols, dtype=object)[sym]
        return FillRecords(names, f, cash_after)

    def _book_each(
        self,
        f: FillBatch,
        sym: list[int],
        row: list[int],
        marks: F64,
        out: _Rows,
    ) -> F64:
        """Fill after fill in booking order; equity rows for each stretch between them."""
        after: list[float] = []
        done = 0
        for i, r, side, qty, price, fee, pnl in zip(
            sym,
            row,
            f.side.tolist(),
            f.qty.tolist(),
            f.price.tolist(),
            f.fee.tolist(),
            f.realized_pnl.tolist(),
            strict=True,
        ):
            if r > done:
                sl = slice(done, r)
                self._equity(marks[sl], out.at(sl))
                done = r
            q = side * qty
            delta = -q * price - fee
            self.cash += delta
            self.flow[i] += delta
            self.fees[i] += fee
            self.realized[i] += pnl
            self.pos[i] = self._positions(i, [q])[0]
            self.fill_count[i] += 1
            after.append(self.cash)
        sl = slice(done, len(out.equity))
        self._equity(marks[sl], out.at(sl))
        return np.array(after)

    def _book_vectorised(
        self,
        f: FillBatch,
        sym: I64,
        row: I64,
        marks: F64,
        out: _Rows,
    ) -> F64:
        """Per symbol with numpy running sums (``np.add.accumulate`` is sequential)."""
        rows = len(out.equity)
        delta = -(f.side * f.qty) * f.price - f.fee
        cash_after = np.add.accumulate(np.concatenate(([self.cash], delta)))[1:]
        at_row = np.arange(rows)
        last = np.searchsorted(row, at_row, side="right") - 1
        cash_rows = np.where(last >= 0, cash_after[np.maximum(last, 0)], self.cash)
        pos_rows = np.tile(self.pos, (rows, 1))
        flow_rows = np.tile(self.flow, (rows, 1))
        for i in np.unique(sym).tolist():
            mine = sym == i
            r_i = row[mine]
            flow_i = np.add.accumulate(np.concatenate(([self.flow[i]], delta[mine])))[1:]
            pos_i = np.array(self._positions(i, (f.side[mine] * f.qty[mine]).tolist()))
            li = np.searchsorted(r_i, at_row, side="right") - 1
            hit = li >= 0
            pos_rows[hit, i] = pos_i[li[hit]]
            flow_rows[hit, i] = flow_i[li[hit]]
            self.pos[i] = pos_i[-1]
            self.flow[i] = flow_i[-1]
            self.fees[i] = np.add.accumulate(np.concatenate(([self.fees[i]], f.fee[mine])))[-1]
            self.realized[i] = np.add.accumulate(
                np.concatenate(([self.realized[i]], f.realized_pnl[mine]))
            )[-1]
            self.fill_count[i] += int(mine.sum())
        self._equity_rows(marks, cash_rows, pos_rows, flow_rows, out)
        self.cash = float(cash_after[-1])
        result: F64 = cash_after
        return result

    def _positions(self, i: int, signed_qty: list[float]) -> list[float]:
        """Positions after each fill, counted in whole steps so that sums are exact.

        The account keeps its own count rather than trusting the symbol's, and
        the two are compared at every settlement.
        """
        spec = self.specs[i]
        step, dec = spec.step_size, spec.qty_decimals
        steps = round(float(self.pos[i]) / step)
        out = []
        for q in signed_qty:
            steps += round(q / step)
            out.append(round(steps * step, dec))
        return out

    def _equity_rows(
        self, marks: F64, cash_rows: F64, pos_rows: F64, flow_rows: F64, out: _Rows
    ) -> None:
        """Equity rows from each row's cash, positions and flows (rows broadcast).

        Sums run over symbols in their fixed order (``np.add.accumulate`` is
        sequential), so a boundary's value never depends on how many boundaries
        are computed together. Unheld symbols add an exact 0.0.
        """
        value = np.where(pos_rows != 0.0, marks * pos_rows, 0.0)
        out.cash[:] = cash_rows
        out.sym[:] = value + (self.alloc + flow_rows)
        acc = np.empty((len(out.equity), len(self.symbols) + 1))
        acc[:, 0] = cash_rows
        acc[:, 1:] = value
        out.equity[:] = np.add.accumulate(acc, axis=1)[:, -1]
        acc[:, 0] = 0.0
        np.abs(value, out=acc[:, 1:])
        out.gross[:] = np.add.accumulate(acc, axis=1)[:, -1]

    def _release(self, symbol: str, order_id: int) -> None:
        held = self._pending.pop((symbol, order_id), None)
        if held is not None:
            i = self.index[symbol]
            self.pending_pos[i] -= held[0]
            self.lpend[i, held[2]] -= held[0]
            self.pending_cash -= held[1]
            if self.multi:
                self.pending_by[self.sym_asset[i]] -= held[1]

    # -- approval -----------------------------------------------------------------------
    def free_cash(self) -> float:
        """Cash after approved-unfilled orders, less the collateral short positions lock."""
        proj = self.pos + self.pending_pos
        short = proj < 0
        locked = float(-(proj[short] * self.mark[short]).sum()) if short.any() else 0.0
        return self.cash + self.pending_cash - locked * (1.0 + self.short_margin)

    def free_cash_in(self, asset: int) -> float:
        """Cash of one asset after its approved-unfilled orders, less what the short
        positions of symbols quoted in it lock."""
        proj = self.pos + self.pending_pos
        short = (proj < 0) & (self.sym_asset == asset)
        locked = float(-(proj[short] * self.mark[short]).sum()) if short.any() else 0.0
        cash = float(self.cash_by[asset]) + float(self.pending_by[asset])
        return cash - locked * (1.0 + self.short_margin)

    def _check(self, it: OrderIntent, qty: float, px: float) -> CashCheck:
        """The account's check (cash, or margin) of ``qty`` of intent ``it`` at ``px``."""
        i = self.index[it.symbol]
        leg = 1 if it.position_side == PositionSide.SHORT else 0
        if self.perp is not None:
            proj = float(self.lpos[i, leg] + self.lpend[i, leg])
            return check_margin(
                self.accounts[i],
                self.specs[i],
                self.tables[i],
                self.leverage[i],
                it.side,
                qty,
                proj,
                px,
                self.available_margin(),
                self._released(i, leg, px),
                leg_sign=_LEG_SIGN[it.position_side],
            )
        proj = float(self.pos[i] + self.pending_pos[i])
        free = self.free_cash_in(int(self.sym_asset[i])) if self.multi else self.free_cash()
        return check_cash(self.accounts[i], self.specs[i], it.side, qty, proj, px, free)

    def _decide(self, t: int, it: OrderIntent) -> RiskDecision:
        i = self.index[it.symbol]
        px = float(self.mark[i]) if not math.isnan(self.mark[i]) else it.ref_price
        leg = 1 if it.position_side == PositionSide.SHORT else 0
        chk = self._check(it, it.qty, px)
        if self.risk is not None and chk.action != RiskAction.REJECT:
            proj = float(self.pos[i] + self.pending_pos[i])
            if self.perp is not None:
                proj = float(self.lpos[i, leg] + self.lpend[i, leg])
            chk = self.risk.review(self, t, it, chk, px, proj, lambda q: self._check(it, q, px))
        if chk.action != RiskAction.REJECT:
            self._pending[(it.symbol, it.intent_id)] = (it.side * chk.qty, chk.cash_estimate, leg)
            self.pending_pos[i] += it.side * chk.qty
            self.lpend[i, leg] += it.side * chk.qty
            self.pending_cash += chk.cash_estimate
            if self.multi:
                self.pending_by[self.sym_asset[i]] += chk.cash_estimate
        return RiskDecision(it.symbol, it.intent_id, t, chk.action, chk.qty, chk.reason)

    # -- perpetual margin ---------------------------------------------------------------
    def wallet_balance(self) -> float:
        """Deposits plus realised PnL less fees and funding: cash plus each position's cost."""
        return self.cash + float((self.lpos * self.entry).sum())

    def maintenance(self) -> F64:
        """Each symbol's maintenance margin at its mark (hedge mode: both legs')."""
        mark = np.nan_to_num(self.mark).tolist()
        return np.array(
            [
                sum(t.maintenance_margin(abs(p) * m) for p in legs if p != 0.0)
                for t, legs, m in zip(self.tables, self.lpos.tolist(), mark, strict=True)
            ]
        )

    def available_margin(self) -> float:
        """What new positions may use: cross, the margin balance less the positions'
        initial margin; isolated, the wallet less the positions' isolated margins;
        both less the margin reserved by approved-unfilled orders."""
        if self.isolated:
            base = self.wallet_balance() - float(self.iso.sum())
        else:
            gross = np.abs(self.lpos).sum(axis=1)
            im = gross * np.nan_to_num(self.mark) / np.array(self.leverage)
            base = self.equity_now() - float(im.sum())
        return base + self.pending_cash

    def _released(self, i: int, leg: int, px: float) -> float:
        """Margin freed per unit of symbol ``i``'s position ``leg`` closed near ``px``:
        its initial margin (cross), or its isolated margin plus its unrealised PnL at
        ``px`` moved by the price buffer against the position (isolated)."""
        if not self.isolated:
            return px / self.leverage[i]
        pos = float(self.lpos[i, leg])
        if pos == 0.0:
            return 0.0
        buf = self.accounts[i].price_buffer
        worse = px * (1.0 - buf) if pos > 0 else px * (1.0 + buf)
        return (float(self.iso[i, leg]) + pos * (worse - float(self.entry[i, leg]))) / abs(pos)

    def _margin_inboxes(
        self, t: int, ordered: list[Outbox], by_symbol: dict[str, list[RiskDecision]]
    ) -> list[Inbox]:
        """Cross margin: every settled symbol learns the wallet backing its position.

        The account's excess margin ``X`` (margin balance less every position's
        maintenance margin and the margin reserved by approved orders) is shared
        out in proportion to each symbol's maintenance plus reserved margin: a
        symbol's wallet puts its own margin balance at its maintenance margin,
        plus its reservation, plus its share of ``X``. Each symbol then
        liquidates on its own marks between steps; when several fall at once
        the sum of their margin balances is the account's, so the account never
        sinks below maintenance unseen (with one position this is exactly the
        exchange's cross formula; with several it liquidates one that falls
        alone earlier than the exchange would).
        """
        mark = np.nan_to_num(self.mark)[:, None]
        upnl = np.where(self.lpos != 0.0, self.lpos * (mark - self.entry), 0.0).sum(axis=1)
        mm = self.maintenance()
        reserved = np.zeros(len(self.symbols))
        for (sym, _), (_, est, _) in self._pending.items():
            reserved[self.index[sym]] -= est
        need = mm + reserved
        total = float(need.sum())
        excess = self.equity_now() - total
        share = need / total if total > 0 else np.zeros(len(self.symbols))
        wallet = need + share * excess - upnl
        boxes = []
        for s in sorted({ob.symbol for ob in ordered} | set(by_symbol)):
            i = self.index[s]
            control = Control(ControlKind.MARGIN, t, s, "", float(wallet[i]))
            boxes.append(Inbox(s, t, by_symbol.get(s, []), [control]))
        return boxes

    def _book_events(
        self, ordered: list[Outbox], marks: F64, step0: int, out: _Rows
    ) -> tuple[FillRecords, FundingRecords]:
        """Book fills (and a perpetual's funding) one event at a time.

        Order: (boundary, symbol, time, funding before fills at the same time, as
        emitted): a fill happens at its bar's open, a funding settlement at the
        close of the bar that settled it, so each symbol's events come in the
        order the symbol saw them. A fill moves
        cash like a spot trade (so equity stays cash plus marked positions): on
        a perpetual, also the average entry and isolated margin as the symbol's
        margin state does; with several cash assets, the cash of the symbol's
        quote asset; with fees in base, a buy pays no quote fee and books whole
        lots, its dust kept apart. A funding payment leaves cash and, for
        isolated margin, the position's margin. ``cash_after`` is the cash of
        the fill's quote asset.
        """
        rows = len(out.equity)
        last = rows - 1
        keys: list[tuple[int, int, int, int, int]] = []
        batches: list[FillBatch] = []
        fund: list[npt.NDArray[np.void]] = []
        fund_sym: list[int] = []
        nf = 0
        for ob in ordered:
            i = self.index[ob.symbol]
            f = ob.fills
            if f.size:
                close = bar_close(f.ts, self.interval)
                rows_of = np.clip(
                    (-((-close) // self.sync) * self.sync - step0) // self.sync, 0, last
                )
                keys.extend(
                    (int(rr), i, int(t), 1, nf + k)
                    for k, (rr, t) in enumerate(zip(rows_of.tolist(), f.ts.tolist(), strict=True))
                )
                batches.append(f)
                nf += f.size
            if len(ob.funding):
                at = ob.funding["settled"]
                r = np.clip((-((-at) // self.sync) * self.sync - step0) // self.sync, 0, last)
                base = len(fund)
                fund.extend(ob.funding[k : k + 1] for k in range(len(ob.funding)))
                fund_sym.extend([i] * len(ob.funding))
                keys.extend(
                    (int(rr), i, int(t), 0, base + k)
                    for k, (rr, t) in enumerate(zip(r.tolist(), at.tolist(), strict=True))
                )
        if not keys:
            self._equity(marks, out)
            return _NO_FILL_RECORDS, FundingRecords(np.empty(0, dtype=object), EMPTY_FUNDING)
        keys.sort()
        allf = FillBatch.concat(batches) if batches else EMPTY_FILLS
        order: list[int] = []
        after: list[float] = []
        f_order: list[int] = []
        done = 0
        for r, i, _, kind, k in keys:
            if r > done:
                sl = slice(done, r)
                self._equity(marks[sl], out.at(sl))
                done = r
            if kind == 0:
                pay = float(fund[k]["payment"][0])
                self.cash -= pay
                self.flow[i] -= pay
                self.funding[i] += pay
                held = float(fund[k]["position"][0])
                leg = 1 if self.hedge and held < 0 else 0
                if self.isolated and self.lpos[i, leg] != 0.0:
                    self.iso[i, leg] -= pay
                f_order.append(k)
                continue
            one = allf.data[k]
            side, qty, price, fee = (
                int(one["side"]),
                float(one["qty"]),
                float(one["price"]),
                float(one["fee"]),
            )
            q = side * qty
            liq = int(one["liquidity"])
            delta = -q * price - fee
            if self.base_fee and side == Side.BUY:
                maker, taker = self.fee_rates[i]
                rate = maker if liq == Liquidity.MAKER else taker
                booked, fee_value, dust = base_fee_split(
                    qty, price, rate, self.specs[i], float(self.dust[i])
                )
                if fee_value != fee:
                    raise SimulationError(
                        f"{self.symbols[i]}: fill {int(one['fill_id'])} fee {fee} is not the "
                        f"base fee's value {fee_value}"
                    )
                if rate >= 0:
                    delta = -q * price
                q = booked
                self.dust[i] = dust
            self.flow[i] += delta
            self.fees[i] += fee
            self.realized[i] += float(one["realized_pnl"])
            leg = 0
            if self.perp is not None:
                leg = 1 if int(one["position_side"]) == PositionSide.SHORT else 0
                before = float(self.lpos[i, leg])
                new = self.specs[i].round_qty(before + q)
            else:
                before = float(self.pos[i])
                new = self._positions(i, [q])[0]
            if self.multi:
                a = int(self.sym_asset[i])
                self.cash_by[a] += delta
                self.cash = float(self.cash_by[0])
                cash_after = float(self.cash_by[a])
            else:
                self.cash += delta
                cash_after = self.cash
                _, entry, _ = book_fill(before, float(self.entry[i, leg]), q, price, self.specs[i])
                self.entry[i, leg] = 0.0 if new == 0.0 else entry
                self.iso[i, leg] = isolated_margin_after(
                    float(self.iso[i, leg]), before, new, price, self.leverage[i]
                )
                self.lpos[i, leg] = new
                new = self.specs[i].round_qty(float(self.lpos[i, 0] + self.lpos[i, 1]))
            self.pos[i] = new
            self.fill_count[i] += 1
            if liq == Liquidity.LIQUIDATION:
                self.liquidations[i] += 1
            order.append(k)
            after.append(cash_after)
        sl = slice(done, rows)
        self._equity(marks[sl], out.at(sl))
        f_sorted = allf.take(np.array(order, dtype=np.int64))
        names = (
            np.array(self.symbols, dtype=object)[
                [keys_i for (_, keys_i, _, kind, _) in keys if kind == 1]
            ]
            if order
            else np.empty(0, dtype=object)
        )
        records = FillRecords(names, f_sorted, np.array(after))
        fsyms = np.array([self.symbols[fund_sym[k]] for k in f_order], dtype=object)
        frec = np.concatenate([fund[k] for k in f_order]) if f_order else EMPTY_FUNDING
        return records, FundingRecords(fsyms, frec)

    # -- summary ------------------------------------------------------------------------
    def equity_now(self) -> float:
        """Equity at the last marks (in the currency)."""
        if self.multi:
            row = _Rows(np.empty(1), np.empty(1), np.empty(1), np.empty((1, len(self.symbols))))
            kept = self.rate.copy()
            self._equity_multi(self.mark[None, :], row)
            self.rate = kept
            return float(row.equity[0])
        value = np.where(self.pos != 0, self.pos * np.nan_to_num(self.mark), 0.0)
        return self.cash + float(value.sum())

    def balances(self) -> dict[str, float]:
        """Cash per asset (just the currency for a one-asset account)."""
        if not self.multi:
            return {self.config.account.currency: self.cash}
        return {a: float(v) for a, v in zip(self.assets, self.cash_by.tolist(), strict=True)}


_DONE = np.zeros(max(OrderStatus) + 1, dtype=bool)  # statuses that end an order, by value
_DONE[[OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED]] = True
_LEG_SIGN = {PositionSide.BOTH: 0, PositionSide.LONG: 1, PositionSide.SHORT: -1}
_NO_FILL_RECORDS = FillRecords(np.empty(0, dtype=object), EMPTY_FILLS, np.empty(0))


def concat_updates(ordered: list[Outbox]) -> UpdateRecords:
    """The updates of several outboxes as one set of records, in the given order."""
    parts = [ob for ob in ordered if ob.updates.size]
    if not parts:
        return UpdateRecords(np.empty(0, dtype=object), EMPTY_UPDATES)
    if len(parts) == 1:
        ob = parts[0]
        return UpdateRecords(np.full(ob.updates.size, ob.symbol, dtype=object), ob.updates)
    names = np.concatenate([np.full(ob.updates.size, ob.symbol, dtype=object) for ob in parts])
    return UpdateRecords(names, UpdateBatch.concat([ob.updates for ob in parts]))


def _by_symbol(o: Outbox) -> str:
    return o.symbol


def _intent_order(it: OrderIntent) -> tuple[int, str, int]:
    return (it.ts_event, it.symbol, it.intent_id)
