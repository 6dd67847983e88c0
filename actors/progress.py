"""Progress of a replay, a sweep or a download: a bar in the terminal or in a notebook.

A :class:`Progress` shows how far a run has gone, how fast it goes and how long is
left. For a replay: the simulated time reached, the share of the run's span,
bars per second (symbols x bar intervals covered, per wall-clock second) and an
estimate of the time left from the average speed so far. For counted work (sweep
variants, downloaded days) the same with items instead of simulated time.

Where it is shown (:func:`progress_for`):

- in a terminal (stderr is a TTY): one line redrawn in place, at most ``fps`` times
  a second, ended with a newline when the work ends;
- in a Jupyter notebook: an HTML bar in the cell's output, updated in place through
  IPython's display handle (no extra widget package needed);
- anywhere else (a pipe, a log file, CI where ``$CI`` is set): nothing at all, so a
  progress bar never reaches logs.

The wall clock measures only the display's speed and estimates here; it never enters
the simulation.
"""

from __future__ import annotations

import html
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from tickray.engine.clock import iso

__all__ = ["NullProgress", "Progress", "ProgressSink", "progress_for", "in_notebook"]


class ProgressSink(Protocol):
    """What a :class:`Progress` draws on."""

    def draw(self, text: str, frac: float) -> None: ...
    def done(self, text: str, frac: float) -> None: ...
    def line(self, text: str) -> None: ...


class _Terminal:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.width = 0

    def draw(self, text: str, frac: float) -> None:
        pad = max(0, self.width - len(text))
        self.width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def done(self, text: str, frac: float) -> None:
        self.draw(text, frac)
        self.stream.write("\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        # clear the bar, print the line on stdout, and let the next draw redraw the bar
        self.stream.write("\r" + " " * self.width + "\r")
        self.stream.flush()
        self.width = 0
        print(text, flush=True)


class _Notebook:
    def __init__(self) -> None:
        from IPython.display import HTML, display

        self._html = HTML
        self.handle = display(HTML(""), display_id=True)

    def _render(self, text: str, frac: float) -> Any:
        pct = max(0.0, min(1.0, frac)) * 100
        return self._html(
            '<div style="font-family:monospace">'
            f'<progress value="{pct:.1f}" max="100" style="width:40%"></progress> '
            f"{html.escape(text)}</div>"
        )

    def draw(self, text: str, frac: float) -> None:
        if self.handle is not None:
            self.handle.update(self._render(text, frac))

    def done(self, text: str, frac: float) -> None:
        self.draw(text, frac)

    def line(self, text: str) -> None:
        print(text, flush=True)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # pragma: no cover - IPython half-initialised
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _rate(x: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def _eta(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """A progress display for ``label``.

    Replays call :meth:`start_span` then :meth:`at` with simulated times (ns);
    counted work calls :meth:`start_count` then :meth:`count`. :meth:`close` ends
    the line. ``clock`` (seconds, monotonic) is injectable for tests.
    """

    def __init__(
        self,
        label: str,
        sink: ProgressSink,
        *,
        fps: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.sink = sink
        self.min_gap = 1.0 / fps if fps > 0 else 0.0
        self.clock = clock
        self.began = clock()
        self.last_draw = -1e18
        self.t0 = self.t_end = 0
        self.per_ns = 0.0  # bars per simulated ns (symbols / interval)
        self.total = 0
        self.unit = ""
        self.text = ""
        self.frac = 0.0
        self.closed = False

    def start_span(self, t0: int, t_end: int, symbols: int = 0, interval_ns: int = 0) -> None:
        """A replay from ``t0`` to ``t_end`` (ns) of ``symbols`` symbols with bars of
        ``interval_ns`` (0: no bar rate, e.g. an order-book replay)."""
        self.t0, self.t_end = t0, max(t_end, t0 + 1)
        self.per_ns = symbols / interval_ns if interval_ns > 0 else 0.0
        self.began = self.clock()
        self.at(t0, force=True)

    def at(self, t: int, *, force: bool = False) -> None:
        """The replay has settled every step up to simulated time ``t``."""
        frac = (t - self.t0) / (self.t_end - self.t0)
        now = self.clock()
        if not force and now - self.last_draw < self.min_gap and frac < 1.0:
            return
        wall = now - self.began
        parts = [f"{self.label} {frac * 100:5.1f}%", iso(t)[:19].replace("T", " ")]
        if wall > 0 and t > self.t0:
            if self.per_ns:
                parts.append(f"{_rate((t - self.t0) * self.per_ns / wall)} bars/s")
            parts.append(f"x{_rate((t - self.t0) / 1e9 / wall)} real time")
            if 0 < frac < 1:
                parts.append(f"{_eta(wall * (1 - frac) / frac)} left")
        self._show(" | ".join(parts), frac, now)

    def start_count(self, total: int, unit: str) -> None:
        """Counted work of ``total`` items called ``unit`` (e.g. "runs")."""
        self.total, self.unit = max(total, 0), unit
        self.began = self.clock()
        self.count(0, force=True)

    def count(self, done: int, *, force: bool = False) -> None:
        """``done`` of the items are finished."""
        frac = done / self.total if self.total else 1.0
        now = self.clock()
        if not force and now - self.last_draw < self.min_gap and frac < 1.0:
            return
        wall = now - self.began
        parts = [f"{self.label} {done}/{self.total} {self.unit}"]
        if wall > 0 and done:
            parts.append(f"{done / wall:.2f} {self.unit}/s")
            if done < self.total:
                parts.append(f"{_eta(wall * (self.total - done) / done)} left")
        self._show(" | ".join(parts), frac, now)

    def _show(self, text: str, frac: float, now: float) -> None:
        self.text, self.frac, self.last_draw = text, frac, now
        self.sink.draw(text, frac)

    def status(self, text: str, frac: float = 0.0, *, force: bool = False) -> None:
        """Show ``text`` as it is (a live session's status line), at most ``fps`` a second."""
        now = self.clock()
        if force or now - self.last_draw >= self.min_gap:
            self._show(text, frac, now)

    def write(self, text: str) -> None:
        """Print a line of output (on stdout) without breaking the bar."""
        self.sink.line(text)
        if self.text and not self.closed:
            self.sink.draw(self.text, self.frac)

    def close(self, note: str = "") -> None:
        """End the display (``note``, e.g. "interrupted", is appended)."""
        if self.closed:
            return
        self.closed = True
        text = self.text + (f" | {note}" if note else "")
        self.sink.done(text, self.frac)


class NullProgress(Progress):
    """Shows nothing (progress off, or nowhere to show it)."""

    def __init__(self, label: str = "") -> None:
        super().__init__(label, _Silent(), fps=0.0)

    def _show(self, text: str, frac: float, now: float) -> None:
        self.text, self.frac = text, frac

    def close(self, note: str = "") -> None:
        self.closed = True


class _Silent:
    def draw(self, text: str, frac: float) -> None:
        return None

    def done(self, text: str, frac: float) -> None:
        return None

    def line(self, text: str) -> None:
        print(text, flush=True)


def progress_for(label: str, enabled: bool | None = None) -> Progress:
    """A progress display where one can be seen (see the module doc), else a silent one.

    ``enabled=False`` is always silent; ``None`` and ``True`` show it in a notebook or a
    terminal, and never when ``$CI`` is set or stderr is a pipe or a file.
    """
    if enabled is False or os.environ.get("CI"):
        return NullProgress(label)
    if in_notebook():
        try:
            return Progress(label, _Notebook())
        except Exception:  # no display available after all
            return NullProgress(label)
    if sys.stderr is not None and sys.stderr.isatty():
        return Progress(label, _Terminal(sys.stderr))
    return NullProgress(label)
