"""The symbol actor: owns the feed cursors and simulations of one shard of symbols.

A plain class; :mod:`tickray.actors.backends` runs it in-process or wraps it
with ``ray.remote`` in one place. Market data never leaves it: it reads its
own Parquet files and sends only msgpack frames (intents, order updates,
fills, marks) back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tickray.engine.clock import format_duration
from tickray.engine.codec import decode_inboxes, encode_outboxes
from tickray.engine.config import RunConfig
from tickray.engine.events import EMPTY_FILLS, Inbox, Outbox, update_batch
from tickray.engine.strategies import make_strategy
from tickray.engine.symbol import SymbolSim
from tickray.feeds.calendars import calendar_for
from tickray.feeds.replay import BarCursor

_NO_TS = np.empty(0, dtype=np.int64)
_NO_PX = np.empty(0, dtype=np.float64)


class SymbolActor:
    """Feed cursor, strategy, order manager and bar fill model for each of its symbols."""

    def __init__(self, config: RunConfig, symbols: Sequence[str], t0: int) -> None:
        interval = format_duration(config.interval_ns)
        hours = calendar_for(config.execution.calendar)
        # 24/7: nothing to check, so the fill path stays free of calendar lookups
        calendar = None if hours.is_always_open else hours
        self.sims: dict[str, SymbolSim] = {}
        for s in symbols:
            cursor = BarCursor(
                config.data_root,
                interval,
                s,
                config.start_ns,
                config.end_ns,
                batch_rows=config.chunk_rows,
            )
            self.sims[s] = SymbolSim(
                config.spec(s),
                make_strategy(config.strategy.name, config.strategy.params),
                cursor,
                interval_ns=config.interval_ns,
                sync_ns=config.sync_ns,
                t0=t0,
                account=config.account,
                allocation=config.allocation,
                budget=config.budget,
                self_approve=config.approval == "symbol",
                execution=config.execution,
                calendar=calendar,
            )

    def step(self, until: int, inboxes: Sequence[Inbox], symbols: Sequence[str]) -> list[Outbox]:
        """Advance ``symbols`` to ``until`` (each may stop earlier, at a step with news)."""
        decisions = {b.symbol: b.decisions for b in inboxes}
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
