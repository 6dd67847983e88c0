"""An order-book session's feed in a child process of its symbol actor.

An order-book feed does a lot of Python per message: websocket frames, decoding, the
book's sequence checks and levels, the rows of the next drain, the recorder. On a thread
of the actor's process it shares the interpreter lock with the simulation, so the two
take turns on one core however many the machine has. :class:`BookFeedProcess` runs the
same feed (:class:`tickray.actors.live.BookFeed`: websocket, REST snapshots, synced
books and recorder) in a child process, so it gets a core of its own, and hands each
step its drained tables over a pipe.

The protocol is request and reply over a socket pair: the actor sends ``(op, arg)`` and
reads ``("ok", result)`` or ``("error", text)``, replies in the order of the requests
(several may be sent ahead; a lock guards the pipe). ``op`` is ``"drain"`` (a symbol's
rows since the last drain, in the compact :class:`~tickray.feeds.livebook.SymbolRows`,
of which the actor makes the :class:`~tickray.feeds.livebook.SymbolBatch`: every message
received before the request is in it, as on a thread), ``"status"`` or ``"stop"``
(closes the connection and the recorder and answers with the final status; the child
then exits). A failure inside the feed is the reply to the next drain; the child's exit
is seen by :attr:`BookFeedProcess.error`.

The child starts with ``python -m tickray.actors.feedproc <fd>`` (no re-import of the
parent's main module, which matters inside Ray's workers), reads its arguments as the
first message, runs in a process group of its own and ignores SIGINT (a terminal's
Ctrl-C goes to the whole foreground process group; the parent decides when the feed
stops, after a last drain) and stops by itself when the parent's end of the pipe closes.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tickray.actors.live import BookFeed

from tickray.engine.config import LiveConfig
from tickray.feeds.livebook import SymbolBatch, SymbolRows
from tickray.feeds.ws import Market

__all__ = ["BookFeedProcess"]

#: Seconds the parent waits for the child to import and connect its pipe.
START_TIMEOUT_S = 120.0
#: Seconds a drain or status request may take before the feed counts as failed.
REQUEST_TIMEOUT_S = 30.0


class FeedProcessError(RuntimeError):
    """The feed's child process failed, exited or stopped answering."""


class BookFeedProcess:
    """The interface of :class:`tickray.actors.live.BookFeed` (``drain_rows``, ``drain``,
    ``status``, ``stop``, ``error``, ``market``) over a child process that runs one.

    Requests may be sent ahead (:meth:`request_drain`): an actor asks each of its feeds
    for its step's tables at once, and they build them in parallel; replies are read in
    the order sent.
    """

    def __init__(
        self, live: LiveConfig, symbols: list[str], tops: bool, record: Path | None
    ) -> None:
        self.market: Market = "usdm" if live.market == "usdm" else "spot"
        self._lock = threading.Lock()
        self._final: dict[str, Any] | None = None
        self._failure: BaseException | None = None
        #: Requests sent whose replies are not read yet, in order; replies read early.
        self._pending: deque[tuple[str, Any]] = deque()
        self._early: dict[tuple[str, Any], tuple[str, Any]] = {}
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
        self._pending.append(("ready", None))
        self._ready = False

    def wait_ready(self) -> None:
        """Wait until the child has imported, loaded its compiled code and started its
        feed (it is connecting then); raises FeedProcessError if it failed to."""
        if not self._ready:
            self._result(("ready", None), START_TIMEOUT_S)
            self._ready = True

    @property
    def error(self) -> BaseException | None:
        """Why the feed failed (a failure inside the child is raised by the next drain),
        or the child's exit, else None."""
        if self._failure is None and self._final is None and self._proc.poll() is not None:
            self._failure = FeedProcessError(
                f"the feed process (pid {self._proc.pid}) is gone "
                f"(exit code {self._proc.returncode})"
            )
        return self._failure

    def request_drain(self, symbol: str) -> None:
        """Ask for ``symbol``'s tables now; :meth:`drain` reads them."""
        key = ("drain", symbol)
        if self._failure is None and key not in self._pending and key not in self._early:
            self._send(key)

    def drain_rows(self, symbol: str) -> SymbolRows:
        """``symbol``'s rows since the last drain, compact (the tables, or the events,
        are made here: the feed's process is the busier)."""
        if self._failure is not None:
            raise RuntimeError(f"live feed failed: {self._failure!r}") from self._failure
        try:
            self.request_drain(symbol)
            rows: SymbolRows = self._result(("drain", symbol), REQUEST_TIMEOUT_S)
        except FeedProcessError as exc:
            raise FeedProcessError(f"live feed failed: {exc}") from None
        return rows

    def drain(self, symbol: str) -> SymbolBatch:
        return self.drain_rows(symbol).batch()

    def status(self) -> dict[str, Any]:
        if self._final is not None:
            return self._final
        self._send(("status", None))
        st: dict[str, Any] = self._result(("status", None), REQUEST_TIMEOUT_S)
        return st

    def stop(self) -> None:
        """Stop the feed (its connection closed, its recorder flushed and closed) and wait
        for the child to exit; idempotent."""
        if self._final is None:
            try:
                self._send(("stop", None))
                self._final = self._result(("stop", None), REQUEST_TIMEOUT_S)
            except FeedProcessError as exc:
                self._final = {"ws": {}, "books": {}, "stop_error": str(exc)}
            self._conn.close()
        try:
            self._proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _send(self, key: tuple[str, Any]) -> None:
        self.wait_ready()
        with self._lock:
            try:
                self._conn.send(key)
            except OSError as exc:
                raise self._gone(key[0], exc) from None
            self._pending.append(key)

    def _result(self, key: tuple[str, Any], timeout: float) -> Any:
        """The reply to ``key``, reading (and keeping) the replies sent before it."""
        with self._lock:
            while key not in self._early:
                if not self._pending:
                    raise FeedProcessError(f"no {key[0]!r} request was sent")
                head = self._pending[0]
                try:
                    if not self._conn.poll(timeout):
                        raise FeedProcessError(
                            f"the feed process (pid {self._proc.pid}) did not answer "
                            f"{head[0]!r} within {timeout:g} s"
                        )
                    reply = self._conn.recv()
                except (EOFError, OSError) as exc:
                    raise self._gone(head[0], exc) from None
                self._pending.popleft()
                self._early[head] = reply
            kind, result = self._early.pop(key)
        if kind == "error":
            raise FeedProcessError(f"the feed process failed during {key[0]!r}: {result}")
        return result

    def _gone(self, op: str, exc: BaseException) -> FeedProcessError:
        with contextlib.suppress(subprocess.TimeoutExpired):  # its exit code, once reaped
            self._proc.wait(timeout=2.0)
        self._failure = FeedProcessError(
            f"the feed process (pid {self._proc.pid}) is gone "
            f"(exit code {self._proc.returncode}) during {op!r}: {type(exc).__name__}"
        )
        return self._failure

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


def _answer(feed: BookFeed, op: str, arg: Any, startup: float, threads: dict[str, float]) -> Any:
    """One request's reply (``("ok", result)`` or ``("error", text)``); on the feed's
    event loop, between two messages (or on the main thread once that loop has ended)."""
    try:
        if op == "drain":
            if feed.error is not None:
                raise feed.error  # what the parent reports: "live feed failed: ..."
            assert feed.feed is not None
            return ("ok", feed.feed.drain_rows(arg))
        if op == "status":
            return ("ok", _status(feed, startup, threads))
        raise ValueError(f"unknown request {op!r}")
    except BaseException as exc:  # the feed's own error included
        return ("error", f"{type(exc).__name__}: {exc}")


def _serve(conn: Connection) -> None:
    """Start the feed, then answer requests on its event loop (no hand-over between
    threads: a drain runs between two messages, as on a thread of the actor) until asked
    to stop or the parent goes away; if the feed's loop ends first (it failed), answer on
    this thread."""
    from tickray.actors.live import BookFeed

    live, symbols, tops, record = conn.recv()
    feed: BookFeed | None = None
    try:
        try:
            feed = BookFeed(live, symbols, tops, Path(record) if record else None)
            feed.wait_ready()
            if feed.error is not None:
                raise feed.error
            loop = feed.loop
            assert loop is not None
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        startup, threads = _cpu(), _thread_cpu()
        conn.send(("ok", None))
        fd = conn.fileno()
        ended = threading.Event()  # stop asked, or the parent gone
        asked: list[str] = []

        def on_request() -> None:
            assert feed is not None
            try:
                op, arg = conn.recv()
            except (EOFError, OSError):
                op, arg = "gone", None
            if op in ("stop", "gone"):
                loop.remove_reader(fd)
                asked.append(op)
                ended.set()
                return
            try:
                conn.send(_answer(feed, op, arg, startup, threads))
            except OSError:
                loop.remove_reader(fd)
                asked.append("gone")
                ended.set()

        try:
            loop.call_soon_threadsafe(loop.add_reader, fd, on_request)
        except RuntimeError:  # the loop is closed already: the feed failed at its start
            pass
        else:
            while not ended.wait(0.05) and feed.thread.is_alive():
                pass
        while not asked:  # the feed's loop ended: answer here until stopped
            op, arg = conn.recv()
            if op == "stop":
                asked.append(op)
            else:
                conn.send(_answer(feed, op, arg, startup, threads))
        if asked[0] == "stop":
            feed.stop()
            conn.send(("ok", _status(feed, startup, threads)))
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
