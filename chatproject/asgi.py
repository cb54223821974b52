"""The ASGI application that serves $PORT (the Procfile's ``web`` process).

The live events path is served natively, in the event loop; every other
request goes to the unchanged WSGI Django application, in a bounded pool of
long-lived threads (``GUNICORN_THREADS``), so that each thread keeps its own
persistent database connection, as under gthread, and the process never opens
more than that many. A request reaches a thread only once it has arrived
whole, headers and body, so a slow client costs the event loop a buffer and
never holds a thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import os
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from a2wsgi.wsgi import build_environ

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")

from django.conf import settings  # noqa: E402
from django.http.response import HttpResponseBase  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from chatproject.wsgi import application as django_application  # noqa: E402
from conversations import events  # noqa: E402  (needs the settings loaded above)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

THREADS = int(os.environ.get("GUNICORN_THREADS", "4"))
# Django reads at most this much of a body (it answers 413 past it), so the
# event loop buffers no more than one byte beyond it before handing over.
BODY_BUFFER_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1
# chatproject/health.py's liveness probe (chatproject/urls.py routes both).
LIVENESS_PATHS = frozenset({"/healthz", "/healthz/"})


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request's body, up to ``limit`` bytes; None if the client went away first."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body = message.get("body", b"")
        chunks.append(body)
        size += len(body)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def without_underscored_headers(scope: Scope) -> Scope:
    """Drop request headers whose names hold an underscore.

    In WSGI ``X_Forwarded_Proto`` and ``X-Forwarded-Proto`` are the same
    ``HTTP_X_FORWARDED_PROTO``, so a client could pass a value through a proxy
    that sets only the dashed one; nginx and gunicorn drop such headers too.
    """
    headers = scope["headers"]
    if not any(b"_" in name for name, _ in headers):
        return scope
    return {**scope, "headers": [(name, value) for name, value in headers if b"_" not in name]}


class ThreadedWSGI:
    """Django's WSGI application run in a bounded pool of threads, for an ASGI server.

    a2wsgi's ``WSGIMiddleware`` hands every message between the thread and
    the event loop and waits for each (the body read, the response's start,
    each chunk, its end: four or five hand-overs a request, each waking the
    loop and then the thread). Here the body has already arrived whole, and a
    response held in memory (every API answer) comes back with the thread's
    result: one hand-over each way. A streaming response (the admin's
    exports, static files) is sent chunk by chunk from the thread, each chunk
    waiting for the loop as in a2wsgi, so its memory stays bounded. The
    environ is a2wsgi's.
    """

    def __init__(self, app: Callable[..., HttpResponseBase], workers: int) -> None:
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="WSGI")

    async def __call__(self, scope: Scope, body: bytes, send: Send) -> None:
        loop = asyncio.get_running_loop()
        environ = build_environ(scope, io.BytesIO(body))
        context = contextvars.copy_context()
        answer = await loop.run_in_executor(
            self.executor, context.run, self.respond, environ, loop, send
        )
        if answer is not None:
            head, content = answer
            await send(head)
            await send({"type": "http.response.body", "body": content})

    def respond(
        self, environ: dict, loop: asyncio.AbstractEventLoop, send: Send
    ) -> tuple[Message, bytes] | None:
        """In a thread: the answer's start and body, or None once a streaming one has been sent.

        Django's WSGI handler calls ``start_response`` before it returns its
        response and never uses the ``write()`` that returns.
        """
        head: dict = {"type": "http.response.start"}

        def start_response(status: str, headers: list, exc_info=None):
            head["status"] = int(status.split(" ", 1)[0])
            head["headers"] = [
                (name.strip().encode("latin1").lower(), value.strip().encode("latin1"))
                for name, value in headers
            ]

        def stream(message: Message) -> None:
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        response = self.app(environ, start_response)
        try:
            if not response.streaming:
                return head, b"".join(response)
            stream(head)
            for chunk in response:
                stream({"type": "http.response.body", "body": chunk, "more_body": True})
            stream({"type": "http.response.body", "body": b""})
            return None
        finally:
            response.close()


class Application:
    """Routes the events path to the events application, and the rest to Django."""

    def __init__(
        self,
        django: Callable[..., Any],
        events: ASGIApp | None = None,
        is_events_path: Callable[[str], bool] | None = None,
        startup: Callable[[], Awaitable[None]] | None = None,
        shutdown: Callable[[], Awaitable[None]] | None = None,
        threads: int = THREADS,
    ) -> None:
        self.django = ThreadedWSGI(django, workers=threads)
        # The liveness probe gets a thread of its own, so that it is answered at
        # once even while every thread above waits on a stuck database; it
        # touches no database, so this thread never holds a connection.
        self.probes = ThreadedWSGI(django, workers=1)
        self.events = events
        self.is_events_path = is_events_path
        self.startup = startup
        self.shutdown = shutdown
        self.streams_closed = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] != "http":
            # No websockets here; the server does not upgrade, so this is a safeguard.
            await send({"type": "websocket.close", "code": 1000})
        elif self.events is not None and self.is_events_path(scope["path"]):
            await self.events(scope, receive, send)
        else:
            django = self.probes if scope["path"] in LIVENESS_PATHS else self.django
            await self.to_django(django, without_underscored_headers(scope), receive, send)

    async def to_django(
        self, django: ThreadedWSGI, scope: Scope, receive: Receive, send: Send
    ) -> None:
        body = await read_body(receive, BODY_BUFFER_BYTES)
        if body is None:
            return
        await django(scope, body, send)

    async def close_streams(self) -> None:
        """End every open stream at once: the server calls this as it begins to drain."""
        if self.shutdown is not None and not self.streams_closed:
            self.streams_closed = True
            await self.shutdown()

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    # Import the URLconf, and with it every view, before the first
                    # request instead of during it: that request would otherwise
                    # wait for the imports, in each worker.
                    get_resolver().url_patterns  # noqa: B018
                    if self.startup is not None:
                        await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close_streams()
                self.django.executor.shutdown(wait=False)
                self.probes.executor.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Application(
    django_application,
    events=events.application,
    is_events_path=events.handles,
    startup=events.startup,
    shutdown=events.shutdown,
)
