"""An order-book session's feed in a child process of its symbol actor.

An order-book feed does a lot of Python per message: websocket frames, decoding, the
book's sequence checks and levels, the rows of the next drain, the recorder. On a thread
of the actor's process it shares the interpreter lock with the simulation, so the two
take turns on one core however many the machine has. :class:`BookFeedProcess` runs the
same feed (:class:`tickray.actors.live.BookFeed`: websocket, REST snapshots, synced
books and recorder) in a child process, so it gets a core of its own, and hands each
step its drained tables over a pipe.

The protocol is strictly request and reply, one at a time (a lock guards the pipe): the
actor sends ``(op, arg)`` and reads ``("ok", result)`` or ``("error", text)``, where
``op`` is ``"drain"`` (a symbol's :class:`~tickray.feeds.livebook.SymbolBatch` since the
last drain: every message received before the request is in it, as on a thread),
``"status"``, ``"failure"`` (the feed's error, if it failed) or ``"stop"`` (closes the
connection and the recorder and answers with the final status; the child then exits).
The child starts with ``python -m tickray.actors.feedproc <fd>`` (no re-import of the
parent's main module, which matters inside Ray's workers), reads its arguments as the
first message, runs in a process group of its own and ignores SIGINT (a terminal's
Ctrl-C goes to the whole foreground process group; the parent decides when the feed
stops, after a last drain) and stops by itself when the parent's end of the pipe closes.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tickray.actors.live import BookFeed

from tickray.engine.config import LiveConfig
from tickray.feeds.livebook import SymbolBatch
from tickray.feeds.ws import Market

__all__ = ["BookFeedProcess"]

#: Seconds the parent waits for the child to import and connect its pipe.
START_TIMEOUT_S = 120.0
#: Seconds a drain or status request may take before the feed counts as failed.
REQUEST_TIMEOUT_S = 30.0


class FeedProcessError(RuntimeError):
    """The feed's child process failed, exited or stopped answering."""


class BookFeedProcess:
    """The interface of :class:`tickray.actors.live.BookFeed` (``drain``, ``status``,
    ``stop``, ``error``, ``market``) over a child process that runs one."""

    def __init__(
        self, live: LiveConfig, symbols: list[str], tops: bool, record: Path | None
    ) -> None:
        self.market: Market = "usdm" if live.market == "usdm" else "spot"
        self._lock = threading.Lock()
        self._final: dict[str, Any] | None = None
        self._failure: BaseException | None = None
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tickray.actors.feedproc", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                process_group=0,  # Ctrl-C at a terminal reaches its process group: not this
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send((live, list(symbols), tops, str(record) if record else ""))
        self._ready = False

    def wait_ready(self) -> None:
        """Wait until the child has imported, loaded its compiled code and started its
        feed (it is connecting then); raises FeedProcessError if it failed to."""
        if not self._ready:
            self._call("ready", None, START_TIMEOUT_S)
            self._ready = True

    @property
    def error(self) -> BaseException | None:
        """The feed's failure (its child's, or the child itself exiting), else None."""
        if self._failure is None and self._final is None:
            try:
                text = self._call("failure", None, REQUEST_TIMEOUT_S)
            except FeedProcessError as exc:
                self._failure = exc
            else:
                if text:
                    self._failure = FeedProcessError(text)
        return self._failure

    def drain(self, symbol: str) -> SymbolBatch:
        if self._failure is not None:
            raise RuntimeError(f"live feed failed: {self._failure!r}") from self._failure
        batch: SymbolBatch = self._call("drain", symbol, REQUEST_TIMEOUT_S)
        return batch

    def status(self) -> dict[str, Any]:
        if self._final is not None:
            return self._final
        st: dict[str, Any] = self._call("status", None, REQUEST_TIMEOUT_S)
        return st

    def stop(self) -> None:
        """Stop the feed (its connection closed, its recorder flushed and closed) and wait
        for the child to exit; idempotent."""
        if self._final is None:
            try:
                self._final = self._call("stop", None, REQUEST_TIMEOUT_S)
            except FeedProcessError as exc:
                self._final = {"ws": {}, "books": {}, "stop_error": str(exc)}
            self._conn.close()
        try:
            self._proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _call(self, op: str, arg: Any, timeout: float) -> Any:
        if op != "ready":
            self.wait_ready()
        with self._lock:
            try:
                if op != "ready":
                    self._conn.send((op, arg))
                if not self._conn.poll(timeout):
                    raise FeedProcessError(
                        f"the feed process (pid {self._proc.pid}) did not answer {op!r} "
                        f"within {timeout:g} s"
                    )
                kind, result = self._conn.recv()
            except (EOFError, OSError) as exc:
                code = self._proc.poll()
                raise FeedProcessError(
                    f"the feed process (pid {self._proc.pid}) is gone "
                    f"(exit code {code}) during {op!r}: {type(exc).__name__}"
                ) from None
        if kind == "error":
            raise FeedProcessError(f"the feed process failed during {op!r}: {result}")
        return result

    def __del__(self) -> None:  # a session that never stopped: do not leave the child
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _status(feed: BookFeed, startup_cpu_s: float, startup: dict[str, float]) -> dict[str, Any]:
    """The feed's status, with this process's pid, CPU seconds (in all, and before it
    connected: imports and compiled code loaded), each thread's CPU seconds since it
    connected, and peak RSS."""
    threads = {k: round(v - startup.get(k, 0.0), 3) for k, v in _thread_cpu().items()}
    return feed.status() | {
        "feed_process": {
            "pid": os.getpid(),
            "cpu_s": round(_cpu(), 3),
            "startup_cpu_s": round(startup_cpu_s, 3),
            "threads": {k: v for k, v in threads.items() if v > 0},
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    }


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each of this process's threads, by name (Linux; {} elsewhere)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        name = names.get(int(task.name), f"native-{task.name}")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _serve(conn: Connection) -> None:
    from tickray.actors.live import BookFeed

    live, symbols, tops, record = conn.recv()
    feed: BookFeed | None = None
    try:
        try:
            feed = BookFeed(live, symbols, tops, Path(record) if record else None)
            feed.wait_ready()
            if feed.error is not None:
                raise feed.error
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        startup, threads = _cpu(), _thread_cpu()
        conn.send(("ok", None))
        while True:
            op, arg = conn.recv()
            try:
                if op == "drain":
                    result: Any = feed.drain(arg)
                elif op == "status":
                    result = _status(feed, startup, threads)
                elif op == "failure":
                    result = repr(feed.error) if feed.error is not None else ""
                elif op == "stop":
                    feed.stop()
                    result = _status(feed, startup, threads)
                else:
                    raise ValueError(f"unknown request {op!r}")
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                conn.send(("ok", result))
            if op == "stop":
                return
    except (EOFError, OSError):  # the parent went away (its actor died): stop, quietly
        return
    finally:
        if feed is not None:
            feed.stop()  # idempotent: the connection closed, the recorder flushed


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(argv[0]))
    code = 0
    try:
        _serve(conn)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        conn.close()
        sys.stderr.flush()
        os._exit(code)  # the feed's daemon thread and its loop are done with


if __name__ == "__main__":
    main(sys.argv[1:])
