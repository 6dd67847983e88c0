"""The portfolio actor: a thin shell around :class:`tickray.engine.portfolio.Portfolio`."""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import numpy.typing as npt

from tickray.engine.codec import decode_outboxes
from tickray.engine.config import RunConfig
from tickray.engine.portfolio import Portfolio, SettleResult
from tickray.risk.portfolio import attach_risk, risk_events


class PortfolioActor:
    """Books the symbols' outboxes at each step's end and returns the next inboxes."""

    def __init__(self, config: RunConfig) -> None:
        self.portfolio = Portfolio(config)
        attach_risk(self.portfolio, config)

    def settle(
        self,
        t: int,
        outboxes: bytes,
        mark_ts: npt.NDArray[np.int64],
        marks: npt.NDArray[np.float64],
    ) -> SettleResult:
        """The wire form: the symbols' outboxes arrive as one msgpack frame."""
        return self.portfolio.settle(t, decode_outboxes(outboxes), mark_ts, marks)

    def checkpoint(self) -> bytes:
        """The portfolio (with its risk monitor) at this settlement, pickled."""
        return pickle.dumps(self.portfolio, protocol=5)

    def restore(self, state: bytes | None) -> bool:
        if state is not None:
            self.portfolio = pickle.loads(state)
        return True

    def pid(self) -> int:
        return os.getpid()

    def summary(self) -> dict[str, Any]:
        p = self.portfolio
        return {
            "cash": p.cash,
            "equity": p.equity_now(),
            "positions": {s: float(p.pos[i]) for i, s in enumerate(p.symbols)},
            "fees": {s: float(p.fees[i]) for i, s in enumerate(p.symbols)},
            "realized_pnl": {s: float(p.realized[i]) for i, s in enumerate(p.symbols)},
            "fills": {s: int(p.fill_count[i]) for i, s in enumerate(p.symbols)},
            "balances": p.balances(),
            "dust": {s: float(p.dust[i]) for i, s in enumerate(p.symbols)},
            "risk_events": risk_events(p),
        }
