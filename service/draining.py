"""Stopping without losing a request: the service's part between SIGTERM and uvicorn's shutdown.

uvicorn, told to stop, closes its listening socket and every idle keep-alive connection in one
step, so a request that a client is writing onto such a connection at that moment is lost (reset,
never read); and a connection accepted just as the listener closes is never told to close at all.
So the service hears SIGTERM and SIGINT first (its handler goes before uvicorn's once the app has
started) and drains before it passes the signal on:

1. this process's listening sockets stop taking connections: a new one is refused before anything
   is sent, safe to retry on another replica;
2. SPREAD_S later (time for the other workers, signalled by the supervisor at the same moment, to
   close theirs: a client told to close here must not reconnect to a worker about to close its
   socket under it), every answer says `Connection: close` (service/http/request_context.py), so
   no client writes another request onto a connection it was answered on;
3. once no request has started for QUIET_S (at most LIMIT_S after the signal), uvicorn gets the
   signal: its graceful shutdown answers what is in flight and closes connections that no client
   has used since the signal.

A second signal goes straight to uvicorn (Ctrl-C twice still forces the exit). An app served by
uvicorn's own command line listens on uvicorn's socket, not ours: there step 1 is left out.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from types import FrameType
from typing import Any

SPREAD_S = 0.1
QUIET_S = 0.5  # no request started for this long: every client still sending has been answered
LIMIT_S = 5.0

# This process's listening sockets: service/workers.py puts them here before uvicorn serves on them.
listening: list[socket.socket] = []


class Drain:
    def __init__(self, sockets: list[socket.socket] | None = None) -> None:
        self.sockets = listening if sockets is None else sockets
        self.stopping = threading.Event()  # set: answers say `Connection: close`
        self.last_request = 0.0  # time.perf_counter() at the latest request's start
        self._signalled = False
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Go before the SIGTERM and SIGINT handlers installed now (uvicorn's). Signal handlers live
        in the main thread only: in another (an app served in-process by tests) this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            installed = signal.getsignal(signum)
            if callable(installed):
                signal.signal(signum, self._handler(loop, installed))

    def _handler(self, loop: asyncio.AbstractEventLoop, installed: Callable[..., Any]) -> Callable[..., None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self._signalled:
                installed(signum, frame)
                return
            self._signalled = True
            # The loop may be anywhere in its own code when a handler runs: the drain starts in it.
            loop.call_soon_threadsafe(self._start, lambda: installed(signum, frame))

        return handler

    def _start(self, then: Callable[[], None]) -> None:
        self._task = asyncio.get_running_loop().create_task(self.drain(then))

    async def drain(self, then: Callable[[], None]) -> None:
        """Stop accepting, wait for the clients still sending to be answered, then call `then`
        (whatever happens here: uvicorn must hear the signal)."""
        try:
            signalled = time.perf_counter()
            self._stop_accepting()
            await asyncio.sleep(SPREAD_S)
            self.stopping.set()
            said_close = time.perf_counter()
            while True:
                now = time.perf_counter()
                if now - max(self.last_request, said_close) >= QUIET_S or now - signalled >= LIMIT_S:
                    break
                await asyncio.sleep(0.05)
        finally:
            then()

    def _stop_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            if sock.fileno() == -1:  # already closed: uvicorn is shutting down for its own reasons
                continue
            # asyncio's server stops watching the socket first: shut, it would poll readable forever.
            loop.remove_reader(sock.fileno())
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # refuses new connections; the fd stays uvicorn's
