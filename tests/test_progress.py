"""The progress display: what it says, how often it draws, and where it stays silent."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from tickray.actors.progress import NullProgress, Progress, _Terminal, progress_for
from tickray.engine.clock import HOUR, MINUTE, parse_time


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[str, float]] = []
        self.final: str | None = None
        self.lines: list[str] = []

    def draw(self, text: str, frac: float) -> None:
        self.frames.append((text, frac))

    def done(self, text: str, frac: float) -> None:
        self.final = text

    def line(self, text: str) -> None:
        self.lines.append(text)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


T0 = parse_time("2024-01-01")


def test_a_replay_shows_time_rate_and_time_left() -> None:
    sink, clock = Sink(), Clock()
    p = Progress("replay", sink, fps=4, clock=clock)
    p.start_span(T0, T0 + 100 * HOUR, symbols=10, interval_ns=MINUTE)
    assert sink.frames[-1][0].startswith("replay   0.0% | 2024-01-01 00:00:00")
    clock.now += 2.0
    p.at(T0 + 25 * HOUR)
    text, frac = sink.frames[-1]
    assert frac == 0.25
    # 25 h x 60 bars x 10 symbols in 2 s; 25 h of market in 2 s; 3 times as long again
    assert text == (
        "replay  25.0% | 2024-01-02 01:00:00 | 7.5k bars/s | x45.0k real time | 6s left"
    )
    clock.now += 0.1  # faster than 4 frames a second: not drawn
    p.at(T0 + 26 * HOUR)
    assert len(sink.frames) == 2
    clock.now += 0.2
    p.at(T0 + 27 * HOUR)
    assert len(sink.frames) == 3
    clock.now += 0.01
    p.at(T0 + 100 * HOUR)  # the end is always drawn
    assert sink.frames[-1][1] == 1.0 and "left" not in sink.frames[-1][0]
    p.close("done")
    assert sink.final is not None and sink.final.endswith("| done")


def test_counted_work_and_lines_between_frames() -> None:
    sink, clock = Sink(), Clock()
    p = Progress("sweep", sink, fps=0, clock=clock)
    p.start_count(8, "runs")
    clock.now += 10
    p.count(2)
    assert sink.frames[-1][0] == "sweep 2/8 runs | 0.20 runs/s | 30s left"
    p.write("   0  window=10  return 1.00%")
    assert sink.lines == ["   0  window=10  return 1.00%"]
    assert sink.frames[-1][0] == "sweep 2/8 runs | 0.20 runs/s | 30s left"  # redrawn


def test_the_terminal_line_is_redrawn_in_place() -> None:
    out = io.StringIO()
    term = _Terminal(out)
    term.draw("replay  10.0% | long text", 0.1)
    term.draw("replay 100%", 1.0)
    term.done("replay 100% | done", 1.0)
    assert out.getvalue() == (
        "\rreplay  10.0% | long text" + "\rreplay 100%" + " " * 14 + "\rreplay 100% | done\n"
    )


def test_silent_where_nobody_watches(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert type(progress_for("replay")) is Progress
    assert type(progress_for("replay", False)) is NullProgress
    monkeypatch.setenv("CI", "true")  # CI logs never get a progress bar
    assert type(progress_for("replay", True)) is NullProgress
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a log file
    assert type(progress_for("replay")) is NullProgress


def test_a_run_feeds_the_bar_to_its_end(
    small_universe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickray.cluster import runner

    sinks: list[Sink] = []

    def fake(label: str, enabled: bool | None = None) -> Any:
        sinks.append(Sink())
        return Progress(label, sinks[-1], fps=0)

    monkeypatch.setattr(runner, "progress_for", fake)
    import tickray

    tickray.run(
        {"data": {"source": "files", "path": str(small_universe)}, "run": {"sync": "1h"}},
        backend="local",
        out=tmp_path / "r",
    )
    frames = sinks[0].frames
    assert frames[0][1] == 0.0 and frames[-1][1] == 1.0
    assert [f for _, f in frames] == sorted(f for _, f in frames)
    assert sinks[0].final is not None and "100.0%" in sinks[0].final
