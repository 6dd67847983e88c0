"""The tests' local servers (exchange stand-ins) run on an event loop of their own, on a
thread of the test process: :class:`ServerThread` holds that loop and thread."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class ServerThread:
    """Runs :meth:`serve` on an asyncio loop in a daemon thread, from construction until
    :meth:`close`. A subclass sets its fields, then calls ``super().__init__()``; its
    ``serve`` starts its servers and awaits :meth:`running`, which lets the constructor
    return and itself returns once ``close`` is called."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        assert self._ready.wait(10), f"{type(self).__name__} did not start"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        try:
            await self.serve()
        finally:
            self._ready.set()  # a server that failed to start: the constructor's assert says so

    async def serve(self) -> None:
        raise NotImplementedError

    async def running(self) -> None:
        """Mark the server ready, then wait for :meth:`close`."""
        assert self._stop is not None
        self._ready.set()
        await self._stop

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self.thread.join(10)


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """``app`` served on 127.0.0.1 (a free port): its runner and base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"
