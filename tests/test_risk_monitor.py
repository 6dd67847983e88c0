"""The risk monitor on hand-made equity paths: drawdown scaling and halt, resume, daily loss, kill."""

from __future__ import annotations

import pytest

from tickray.engine.config import ConfigError
from tickray.risk.monitor import DAY_NS, Monitor, MonitorConfig

H = 3_600_000_000_000


def _run(cfg: MonitorConfig, path: list[float], step: int = H) -> Monitor:
    m = Monitor(cfg)
    for k, eq in enumerate(path):
        m.observe((k + 1) * step, eq)
    return m


def test_drawdown_scales_then_halts_then_resumes() -> None:
    m = Monitor(MonitorConfig(max_drawdown=0.20))
    m.observe(H, 100.0)
    assert m.verdict().scale == 1.0
    m.observe(2 * H, 110.0)  # new peak
    m.observe(3 * H, 99.0)  # drawdown 10%: scale 1 - 0.10 / 0.20 = 0.5
    v = m.verdict()
    assert v.scale == pytest.approx(0.5) and "scaled to 50% in a 10.00% drawdown" in v.reason
    m.observe(4 * H, 85.8)  # 22% > 20%: halt
    v = m.verdict()
    assert v.scale == 0.0 and v.reason.startswith("halted: drawdown 22.00% past 20.00%")
    m.observe(5 * H, 95.0)  # 13.6%: still above the resume level (10%)
    assert m.verdict().scale == 0.0
    m.observe(6 * H, 100.1)  # 9%: resumes, scaled 1 - 0.09 / 0.2 = 0.55
    assert m.verdict().scale == pytest.approx(0.55)
    assert [(e.kind, round(e.value, 4)) for e in m.events] == [("halt", 0.22), ("resume", 0.09)]
    assert m.halted_ns(7 * H) == 2 * H  # halted from 4h to 6h


def test_min_scale_and_lookback() -> None:
    m = _run(MonitorConfig(max_drawdown=0.5, min_scale=0.4), [100.0, 60.0])
    # drawdown 40%: 1 - 0.4 / 0.5 = 0.2, floored at min_scale 0.4
    assert m.verdict().scale == pytest.approx(0.4)
    # with a 2 h lookback the peak of 100 at 1h leaves the window by 3h
    m = _run(MonitorConfig(max_drawdown=0.5, drawdown_lookback_ns=2 * H), [100.0, 80.0, 80.0])
    assert m.drawdown == 0.0


def test_daily_loss_halts_until_the_next_utc_day() -> None:
    m = Monitor(MonitorConfig(daily_loss_limit=0.05))
    day = DAY_NS
    m.observe(day + H, 100.0)  # the day's first boundary
    m.observe(day + 2 * H, 94.0)  # -6%: halted for the day
    v = m.verdict()
    assert v.scale == 0.0 and "halted for the day: loss 6.00% past 5.00%" in v.reason
    m.observe(2 * day, 96.0)  # midnight closes the day before: still halted
    assert m.verdict().scale == 0.0
    m.observe(2 * day + H, 96.0)  # a new day
    assert m.verdict().scale == 1.0
    assert [e.kind for e in m.events] == ["daily_halt", "daily_resume"]


def test_kill_switch_flattens_once_and_stays() -> None:
    m = _run(MonitorConfig(max_drawdown=0.2, kill_drawdown=0.3), [100.0, 69.0])
    v = m.verdict()
    assert v.flatten and v.scale == 0.0 and v.reason.startswith("kill switch")
    assert not m.verdict().flatten  # the flatten order goes out once
    m.observe(10 * H, 200.0)
    assert m.verdict().scale == 0.0  # no resume after a kill


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_drawdown": 1.5}, "risk.max_drawdown: must be in (0, 1), got 1.5"),
        ({"daily_loss_limit": -0.1}, "risk.daily_loss_limit: must be in (0, 1)"),
        ({"resume_drawdown": 0.1}, "risk.resume_drawdown: needs risk.max_drawdown"),
        (
            {"max_drawdown": 0.2, "resume_drawdown": 0.3},
            "risk.resume_drawdown: must be >= 0 and below risk.max_drawdown (0.2)",
        ),
        (
            {"max_drawdown": 0.2, "kill_drawdown": 0.1},
            "risk.kill_drawdown: must be above risk.max_drawdown (0.2)",
        ),
        ({"min_scale": 2}, "risk.min_scale: must be in [0, 1], got 2"),
    ],
)
def test_contradictory_limits_are_refused(kw: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        MonitorConfig(**kw)  # type: ignore[arg-type]
    assert message in str(info.value)
