"""The portfolio's risk monitor: drawdown halt and scaling, daily loss limit, kill switch.

It watches the equity at every step boundary (int64 ns UTC, the clock's
time) and says, before the portfolio decides the intents of a step, how much
of a new position may open:

* **Drawdown** (REPORT.md 5.2's DrawdownMonitor, made to act). The drawdown
  is ``(peak - equity) / peak`` with the peak over the last
  ``drawdown_lookback`` (the whole run when 0). While it deepens, new
  exposure is scaled by ``max(min_scale, 1 - drawdown / max_drawdown)``.
  Past ``max_drawdown`` new entries halt; they resume once the drawdown is
  back below ``resume_drawdown`` (by default half of ``max_drawdown``).
* **Daily loss.** Equity below the day's first boundary (UTC days) by more
  than ``daily_loss_limit`` halts new entries until the next UTC day.
* **Kill switch.** A drawdown past ``kill_drawdown`` flattens every position
  and halts new entries for the rest of the run.

Closing a position is never blocked. Every state change is kept as an event
(time, kind, value) for the risk report, and :meth:`Monitor.halted_ns`
sums the time spent halted.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

from tickray.engine.riskconfig import MonitorConfig

__all__ = ["DAY_NS", "Monitor", "MonitorConfig", "MonitorEvent", "Verdict"]

DAY_NS = 86_400_000_000_000


class MonitorEvent(NamedTuple):
    """A change of the monitor's state: ``kind`` is halt, resume, daily_halt,
    daily_resume or kill; ``value`` the drawdown or the day's loss then."""

    ts: int
    kind: str
    value: float


class Verdict(NamedTuple):
    """What may open now: ``scale`` of a new position (0: nothing), and why not all."""

    scale: float
    reason: str
    flatten: bool


class Monitor:
    """The monitor's state over a run (see the module doc)."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self._peaks: deque[tuple[int, float]] = deque()  # (ts, equity), decreasing equity
        self.drawdown = 0.0
        self.halted = False
        self.killed = False
        self._day = -1
        self._day_start = math.nan
        self.daily_loss = 0.0
        self.daily_halted = False
        self.events: list[MonitorEvent] = []
        self._halt_since: int | None = None
        self._halted_ns = 0
        self._flatten = False

    def observe(self, ts: int, equity: float) -> None:
        """Equity at the boundary ``ts`` (boundaries in increasing order)."""
        cfg = self.config
        peaks = self._peaks
        while peaks and peaks[-1][1] <= equity:
            peaks.pop()
        peaks.append((ts, equity))
        if cfg.drawdown_lookback_ns:
            while peaks[0][0] <= ts - cfg.drawdown_lookback_ns:
                peaks.popleft()
        peak = peaks[0][1]
        self.drawdown = (peak - equity) / peak if peak > 0 else 0.0
        was = self.blocked
        if cfg.max_drawdown is not None:
            if not self.halted and self.drawdown > cfg.max_drawdown:
                self.halted = True
                self.events.append(MonitorEvent(ts, "halt", self.drawdown))
            elif self.halted and self.drawdown < cfg.resume_at:
                self.halted = False
                self.events.append(MonitorEvent(ts, "resume", self.drawdown))
        if cfg.daily_loss_limit is not None:
            day = (ts - 1) // DAY_NS  # a boundary at midnight closes the day before
            if day != self._day:
                self._day = day
                self._day_start = equity
                if self.daily_halted:
                    self.daily_halted = False
                    self.events.append(MonitorEvent(ts, "daily_resume", 0.0))
            start = self._day_start
            self.daily_loss = (start - equity) / start if start > 0 else 0.0
            if not self.daily_halted and self.daily_loss > cfg.daily_loss_limit:
                self.daily_halted = True
                self.events.append(MonitorEvent(ts, "daily_halt", self.daily_loss))
        if cfg.kill_drawdown is not None and not self.killed and self.drawdown > cfg.kill_drawdown:
            self.killed = True
            self._flatten = True
            self.events.append(MonitorEvent(ts, "kill", self.drawdown))
        now = self.blocked
        if now and not was:
            self._halt_since = ts
        elif was and not now and self._halt_since is not None:
            self._halted_ns += ts - self._halt_since
            self._halt_since = None

    @property
    def blocked(self) -> bool:
        return self.halted or self.daily_halted or self.killed

    def verdict(self) -> Verdict:
        """What a new position may take now; ``flatten`` once, when the kill switch fires."""
        flatten, self._flatten = self._flatten, False
        cfg = self.config
        if self.killed:
            why = f"kill switch: drawdown past {cfg.kill_drawdown:.2%}; no new entries"
            return Verdict(0.0, why, flatten)
        if self.halted:
            why = (
                f"halted: drawdown {self.drawdown:.2%} past {cfg.max_drawdown:.2%} "
                f"(resumes below {cfg.resume_at:.2%})"
            )
            return Verdict(0.0, why, flatten)
        if self.daily_halted:
            why = f"halted for the day: loss {self.daily_loss:.2%} past {cfg.daily_loss_limit:.2%}"
            return Verdict(0.0, why, flatten)
        if cfg.max_drawdown is not None and cfg.scale_with_drawdown and self.drawdown > 0:
            scale = max(cfg.min_scale, 1.0 - self.drawdown / cfg.max_drawdown)
            if scale < 1.0:
                return Verdict(
                    scale, f"scaled to {scale:.0%} in a {self.drawdown:.2%} drawdown", flatten
                )
        return Verdict(1.0, "", flatten)

    def halted_ns(self, end: int) -> int:
        """Time spent with new entries blocked, up to ``end``."""
        extra = end - self._halt_since if self._halt_since is not None else 0
        return self._halted_ns + extra
