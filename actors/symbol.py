"""The symbol actor: owns the feed cursors and simulations of one shard of symbols.

A plain class; :mod:`tickray.actors.backends` runs it in-process or wraps it
with ``ray.remote`` in one place. Market data never leaves it: it reads its
own Parquet files and sends only msgpack frames (intents, order updates,
fills, marks) back.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from tickray.actors.usercode import ensure_loaded
from tickray.engine.book import MarketEvents, queue_from_spec
from tickray.engine.clock import format_duration
from tickray.engine.codec import decode_inboxes, encode_outboxes
from tickray.engine.config import RunConfig, l2_strategy
from tickray.engine.events import EMPTY_FILLS, ControlKind, Inbox, Outbox, update_batch
from tickray.engine.impact import impact_from_spec
from tickray.engine.l2signals import SignalDriver
from tickray.engine.l2sim import L2SymbolSim
from tickray.engine.l2venue import L2Venue, TickStrategy
from tickray.engine.latency import latency_from_spec, symbol_seed
from tickray.engine.matching import Fees
from tickray.engine.orders import OrderRules
from tickray.engine.perpstate import PerpSymbolState
from tickray.engine.signals import SignalStrategy
from tickray.engine.strategies import make_strategy
from tickray.engine.symbol import BarSource, SymbolSim
from tickray.feeds.calendars import calendar_for
from tickray.feeds.funding import perp_inputs
from tickray.feeds.l2events import recording_events
from tickray.feeds.recordings import read_binance_recording
from tickray.feeds.replay import BarCursor
from tickray.feeds.wsrecord import read_ws_recording
from tickray.risk.sizing import SymbolSizer

_NO_TS = np.empty(0, dtype=np.int64)
_NO_PX = np.empty(0, dtype=np.float64)


class SymbolActor:
    """Feed cursor, strategy, order manager and bar fill model for each of its symbols."""

    def __init__(
        self,
        config: RunConfig,
        symbols: Sequence[str],
        t0: int,
        strategies: Mapping[str, type] | None = None,
    ) -> None:
        # a user strategy: its modules (shipped by Ray's runtime environment) are
        # imported, and classes sent by value (defined in __main__) registered
        ensure_loaded(config.strategy.modules, strategies)
        self.sims: dict[str, SymbolSim | L2SymbolSim] = {}
        if config.l2 is not None:
            self._start_l2(config, symbols, t0)
            return
        interval = format_duration(config.interval_ns)
        hours = calendar_for(config.execution.calendar)
        # 24/7: nothing to check, so the fill path stays free of calendar lookups
        calendar = None if hours.is_always_open else hours
        for s in symbols:
            cursor = self._bar_source(config, s, interval)
            self.sims[s] = SymbolSim(
                config.spec(s),
                make_strategy(config.strategy.name, config.strategy.params),
                cursor,
                interval_ns=config.interval_ns,
                sync_ns=config.sync_ns,
                t0=t0,
                account=config.account_for(s),
                allocation=config.allocation_for(s),
                budget=config.budget,
                self_approve=config.approval == "symbol",
                execution=config.execution,
                calendar=calendar,
                maker_fee=config.fees_for(s)[0],
                perp=_perp_state(config, s),
                sizer=_sizer(config, s),
                stops=(config.monitor.break_even_r, config.monitor.trail_r),
            )

    def _start_l2(self, config: RunConfig, symbols: Sequence[str], t0: int) -> None:
        """Order-book replays: each symbol's recording through its own L2 venue."""
        l2 = config.l2
        assert l2 is not None
        ex = config.execution
        for s in symbols:
            maker, taker = config.fees_for(s)
            events = self._l2_events(config, s)
            venue = L2Venue(
                config.spec(s),
                fees=Fees(maker=maker, taker=taker),
                latency=latency_from_spec(l2.latency, seed=symbol_seed(l2.seed, s)),
                impact=impact_from_spec(ex.impact),
                rules=OrderRules(ex.rules),
                queue=queue_from_spec(l2.queue),
                tops=l2.tops,
            )
            built = l2_strategy(l2.strategy, l2.params)
            strategy: TickStrategy = built
            timer_ns, wake_on_trade = l2.timer_ns, False
            if isinstance(built, SignalStrategy):
                strategy = SignalDriver(
                    built,
                    config.spec(s),
                    config.allocation_for(s),
                    allow_short=config.account.allow_short,
                    bar_ns=l2.bar_ns,
                )
                wake_on_trade = strategy.wants_trades
                timer_ns = built.timer_ns
            self.sims[s] = L2SymbolSim(
                venue,
                strategy,
                events,
                sync_ns=config.sync_ns,
                t0=t0,
                timer_ns=timer_ns,
                wake_ticks=l2.wake_ticks,
                wake_on_fill=l2.wake_on_fill,
                wake_on_trade=wake_on_trade,
            )

    def _l2_events(self, config: RunConfig, symbol: str) -> Iterator[MarketEvents]:
        """``symbol``'s market events in batches: its recording (a live actor: its book)."""
        assert config.l2 is not None
        path = Path(config.l2.files[symbol])
        # a folder: a paper session's recorder output (tickray.feeds.wsrecord)
        rec = read_ws_recording(path, symbol) if path.is_dir() else read_binance_recording(path)
        return iter([recording_events(rec)])

    def _bar_source(self, config: RunConfig, symbol: str, interval: str) -> BarSource:
        """Where ``symbol``'s bars come from: its Parquet files (a live actor: a stream)."""
        return BarCursor(
            config.data_root,
            interval,
            symbol,
            config.start_ns,
            config.end_ns,
            batch_rows=config.chunk_rows,
        )

    def step(self, until: int, inboxes: Sequence[Inbox], symbols: Sequence[str]) -> list[Outbox]:
        """Advance ``symbols`` to ``until`` (each may stop earlier, at a step with news)."""
        decisions = {b.symbol: b.decisions for b in inboxes}
        for b in inboxes:
            for c in b.controls:
                sim = self.sims[b.symbol]
                if c.kind == ControlKind.MARGIN and isinstance(sim, SymbolSim) and sim.perp:
                    sim.perp.set_cross_wallet(c.value)
                elif c.kind == ControlKind.FLATTEN:  # bars and order books alike
                    sim.flatten_reason = c.reason or "flatten"
        return [self.sims[s].advance(until, decisions.get(s, [])) for s in symbols]

    def close_out(self, t: int, inboxes: Sequence[Inbox], reason: str) -> list[Outbox]:
        """End of run: apply the last decisions and cancel what is still open."""
        decisions = {b.symbol: b.decisions for b in inboxes}
        out = []
        for s, sim in self.sims.items():
            updates = update_batch(sim.finish(t, decisions.get(s, []), reason))
            out.append(Outbox(s, t, [], updates, EMPTY_FILLS, _NO_TS, _NO_PX, sim.position))
        return out

    # The wire forms used across processes: msgpack frames in, msgpack frames out.
    def advance(self, until: int, inbox: bytes, symbols: Sequence[str]) -> bytes:
        return encode_outboxes(self.step(until, decode_inboxes(inbox), symbols))

    def finish(self, t: int, inbox: bytes, reason: str) -> bytes:
        return encode_outboxes(self.close_out(t, decode_inboxes(inbox), reason))

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    # Recovery (tickray.actors.supervise): the state at a step boundary, and back.
    def checkpoint(self) -> bytes | None:
        """Every simulation of this actor as it stands, pickled (a bar cursor by where it
        stands, not by its open file). None for an order-book replay: its events are the
        whole recording in memory, so it recovers by replaying its calls from the start."""
        if any(isinstance(sim, L2SymbolSim) for sim in self.sims.values()):
            return None
        # cloudpickle: a strategy class defined in a notebook (__main__) goes by value
        from ray import cloudpickle

        state: bytes = cloudpickle.dumps(self.sims, protocol=5)
        return state

    def restore(self, state: bytes | None) -> bool:
        """Continue from ``state`` (None: from the state the constructor gave)."""
        if state is not None:
            self.sims = pickle.loads(state)
        return True


def _sizer(config: RunConfig, symbol: str) -> SymbolSizer | None:
    """The symbol's sizer, unless the run sizes by ``position_fraction`` (the default)."""
    if config.sizing.method == "fraction":
        return None
    lev = config.perp.leverage_for(symbol) if config.perp is not None else 1.0
    return SymbolSizer(
        config.sizing,
        config.spec(symbol),
        allocation=config.budget_for(symbol),
        leverage=lev,
        symbols=len(config.symbols),
    )


def _perp_state(config: RunConfig, symbol: str) -> PerpSymbolState | None:
    """The perpetual state of ``symbol`` (None for a spot run), with its funding and marks."""
    perp = config.perp
    if perp is None:
        return None
    funding, marks = perp_inputs(
        config.data_root,
        symbol,
        config.start_ns,
        config.end_ns,
        funding=perp.funding,
        marks=perp.marks,
    )
    state = PerpSymbolState(
        perp.table(symbol),
        perp.leverage_for(symbol),
        isolated=perp.margin_mode == "isolated",
        liquidation_fee=perp.liquidation_fee,
        funding=funding,
        marks=marks,
        wallet=config.account.initial_cash,
        hedge=perp.position_mode == "hedge",
    )
    state.next_funding = int(funding.ts.searchsorted(config.start_ns, side="right"))
    return state
