"""The gunicorn worker that serves $PORT: uvicorn (uvloop, httptools) with three defences.

- **A deadline for each request.** A request must arrive whole, headers and
  body, within ``WEB_REQUEST_DEADLINE`` seconds of its first byte (of the
  connection opening, for the first one), or its connection is closed (with a
  ``408`` when no part of an answer has been sent). uvicorn's own keep-alive
  timer restarts with every byte, so a byte a second would hold a connection
  for ever.
- **A bound on open connections.** Past ``worker_connections`` per process a
  new connection is answered ``503`` and closed at once, so an attacker's
  idle connections cannot use up the process's file descriptors.
- **One request, one answer.** When a request turns out malformed after its
  answer has begun (a bad chunk in the body of a ``GET`` that was answered
  without reading it), the connection is closed instead of a second, unsolicited
  ``400`` being written to it.

On ``SIGTERM`` the application's ``close_streams`` runs before the server
waits for requests in flight, so open event streams end at once instead of
holding the process until the graceful timeout.
"""

from __future__ import annotations

import gc
import os
import sys
from asyncio import TimerHandle
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server as UvicornServer
from uvicorn_worker import UvicornWorker

# The collector's thresholds in a worker: the youngest objects every 50,000
# allocations instead of CPython's 700, the next generation once every 50
# young collections, the oldest once every 100 of those. A worker holding
# many open streams keeps a great many long-lived objects, and with the
# defaults the collections that reach them stalled the event loop, and every
# delivery with it (docs/performance.md, "Live delivery"). Only cyclic
# garbage waits longer for it; reference counting frees everything else at
# once, as before.
GC_THRESHOLDS = (50_000, 50, 100)

REQUEST_DEADLINE = float(os.environ.get("WEB_REQUEST_DEADLINE", "20"))
# The request line and headers together; past this a request is a 400. Large
# enough for any browser's cookies, small enough that a client cannot make
# the parser hold megabytes.
MAX_HEAD_BYTES = 64 * 1024

REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 16\r\nconnection: close\r\n\r\nRequest Timeout\n"
)
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\ncontent-length: 20\r\nconnection: close\r\n\r\nService Unavailable\n"
)


class HeadTooLarge(Exception):
    """Raised from a parser callback: httptools turns it into a parse error, a 400."""


class Protocol(HttpToolsProtocol):
    request_deadline = REQUEST_DEADLINE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline: TimerHandle | None = None
        self.head_bytes = 0
        self.head_complete = False

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        if self.limit_concurrency is not None and len(self.connections) > self.limit_concurrency:
            self.logger.warning("Too many open connections: refusing one.")
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self.arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm_deadline()
        super().connection_lost(exc)

    def arm_deadline(self) -> None:
        if self.deadline is None:
            self.deadline = self.loop.call_later(self.request_deadline, self.deadline_passed)

    def disarm_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def deadline_passed(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        answering = self.cycle is not None and not self.cycle.response_complete
        if not self.head_complete and not answering:
            self.transport.write(REQUEST_TIMEOUT)
        elif self.cycle is not None:
            # The application is waiting for the rest of the body: it hears of
            # the disconnect, and nothing it sends afterwards is written.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = 0
        self.head_complete = False
        self.arm_deadline()

    def count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge

    def on_url(self, url: bytes) -> None:
        self.count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_complete = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.disarm_deadline()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        request_in_progress = self.cycle is not None and self.cycle.more_body
        if request_in_progress and self.cycle.response_started:
            self.transport.close()
            return
        if request_in_progress:
            # The application may already be running on this request: what it
            # would send after the 400 must not reach the client.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        super().send_400_response(msg)

    def shutdown(self) -> None:
        if self.deadline is not None and not (self.cycle and self.cycle.response_started):
            # A request still arriving is not a request in flight: don't wait for it.
            self.transport.close()
            return
        super().shutdown()


class Server(UvicornServer):
    async def shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        for server in self.servers:
            server.close()
        close_streams = getattr(self.config.app, "close_streams", None)
        if close_streams is not None:
            await close_streams()
        await super().shutdown(sockets=sockets)


class Worker(UvicornWorker):
    CONFIG_KWARGS = {
        "loop": "uvloop",
        "http": Protocol,
        "ws": "none",
        "lifespan": "on",
        # The client's address and scheme are Django's to decide from the
        # settings (DJANGO_TRUSTED_PROXIES, DJANGO_HTTPS), never the server's.
        "proxy_headers": False,
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections
        # Leave the arbiter's graceful timeout a second to see the process out
        # before it kills it: requests still running then are cancelled.
        self.config.timeout_graceful_shutdown = max(self.cfg.graceful_timeout - 1, 1)

    def init_process(self) -> None:
        gc.set_threshold(*GC_THRESHOLDS)
        super().init_process()

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
