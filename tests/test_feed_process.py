"""An order-book feed in a child process (tickray.actors.feedproc): its life cycle.

The feed points at a closed port on 127.0.0.1, so it keeps retrying its connection and
never streams: what is tested is the process around it (the paper sessions in
test_paper_l2.py stream real recordings through it).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tickray.actors.feedproc import BookFeedProcess, FeedProcessError
from tickray.engine.config import LiveConfig
from tickray.feeds.livebook import warm_up

pytestmark = pytest.mark.network


def idle_feed() -> BookFeedProcess:
    live = LiveConfig(market="usdm", ws_url="ws://127.0.0.1:9", rest_url="http://127.0.0.1:9")
    return BookFeedProcess(live, ["BTCUSDT"], False, None)


def test_the_child_serves_status_and_drains_ignores_ctrl_c_and_stops_when_asked() -> None:
    feed = idle_feed()
    pid = feed._proc.pid
    assert os.getpgid(pid) != os.getpgid(0)  # a terminal's Ctrl-C does not reach it ...
    feed.wait_ready()
    os.kill(pid, signal.SIGINT)  # ... and a SIGINT sent to it is ignored: the parent decides
    time.sleep(0.2)
    st = feed.status()
    assert st["feed_process"]["pid"] == pid and st["ws"]["connect_failures"] >= 1
    assert feed.error is None
    batch = feed.drain("BTCUSDT")
    assert batch.depth.num_rows == 0 and batch.trades.num_rows == 0
    feed.stop()
    assert feed._proc.returncode == 0
    assert feed.status()["feed_process"]["pid"] == pid  # the final status stays readable
    feed.stop()  # idempotent


def test_the_child_stops_by_itself_when_its_actor_goes_away() -> None:
    feed = idle_feed()
    feed._conn.close()  # what an actor's death does to its end of the pipe
    assert feed._proc.wait(timeout=10) == 0


def test_a_dead_child_is_an_error_naming_it_and_its_exit_code() -> None:
    feed = idle_feed()
    pid = feed._proc.pid
    os.kill(pid, signal.SIGKILL)
    feed._proc.wait(timeout=10)
    err = feed.error
    assert isinstance(err, FeedProcessError)
    assert f"the feed process (pid {pid}) is gone (exit code -9)" in str(err)
    with pytest.raises(RuntimeError, match=r"live feed failed: .*exit code -9"):
        feed.drain("BTCUSDT")
    feed.stop()  # still ends cleanly
    assert "stop_error" in feed.status()


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_the_warm_up_runs_a_book_through_sync_diffs_trades_and_a_drain(market: str) -> None:
    warm_up(market)  # type: ignore[arg-type]  # raises if the made-up book did not sync
