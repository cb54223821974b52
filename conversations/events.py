"""``GET /conversations/<conversation_id>/events``: new messages pushed as Server-Sent Events.

The interface with the server that serves ``$PORT`` (chatproject/asgi.py):

- ``handles(path)``: whether a request path is an events path (with or without
  its trailing slash); such ``http`` requests go to ``application``, natively,
  never through the WSGI bridge, which would hold one of its threads per stream.
- ``application(scope, receive, send)``: the ASGI application for them. It
  answers the whole contract: the ``200`` stream, the ``400``/``405``/``429``/
  ``503`` problem+json answers before a stream starts, CORS and its preflight
  (through the same django-cors-headers settings as the API), the request log
  and the security headers (the API's own middleware, called once per stream).
- ``await startup()`` and ``await shutdown()``, for the ASGI lifespan:
  ``shutdown`` closes every stream at once, then the database connections.
- ``open_streams()``: how many streams this process has open.

It is async all through and reads with psycopg directly (conversations/hub.py),
never through the ORM; the rate limit, the only synchronous step, runs in a
thread with the API's own throttle and cache.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.request import Request

from api.errors import PROBLEM_CONTENT_TYPE, ServiceUnavailable, problem_exception_handler
from api.requestlog import RequestLogMiddleware
from api.throttles import ClientRateThrottle
from chatproject.headers import SecurityHeadersMiddleware

from . import rules
from .hub import Hub, StoreUnavailable, Stream
from .inputs import conversation_id_errors

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

EVENTS_PATH_RE = re.compile(r"/conversations/([^/]+)/events/?")
REPLAY_MAX = 1000
# EventSource waits this long (ms) before it reconnects.
PRELUDE = b"retry: 3000\n\n"
KEEP_ALIVE = b": keep-alive\n\n"
RESET = (
    b"event: reset\n"
    b'data: {"detail": "More than 1000 messages are missing: reload the history page."}\n\n'
)
# The replay goes out in pieces of about this size, so that a long one is
# never joined into one large buffer.
REPLAY_CHUNK_BYTES = 64 * 1024
# How long a new stream waits for the process's first LISTEN before a 503.
LIVE_TIMEOUT_SECONDS = 5.0
ALLOWED_METHODS = "GET, OPTIONS"

_hub: Hub | None = None


def message_event(row: dict[str, Any]) -> bytes:
    """One message as an event: its id, and the history page's JSON for it on one line."""
    return b"id: %d\nevent: message\ndata: %s\n\n" % (row["id"], orjson.dumps(row))


def handles(path: str) -> bool:
    return EVENTS_PATH_RE.fullmatch(path) is not None


def open_streams() -> int:
    return _hub.count if _hub is not None else 0


async def startup() -> None:
    await running_hub()


async def shutdown() -> None:
    global _hub
    hub, _hub = _hub, None
    if hub is not None:
        await hub.stop()


async def running_hub() -> Hub:
    global _hub
    if _hub is None:
        _hub = Hub(render=message_event)
        await _hub.start()
    return _hub


def resume_point(conversation_id: str, query: Mapping[str, str], header: str | None) -> int | None:
    """The id to replay after (``Last-Event-ID``, else ``?last_event_id``), or None.

    Raises a ValidationError naming every malformed one. The header wins: a
    reconnecting EventSource sends it with the URL it first opened, whose
    ``last_event_id`` is older.
    """
    errors: dict[str, list[str]] = {}
    if id_errors := conversation_id_errors(conversation_id):
        errors["conversation_id"] = id_errors
    resume = None
    for name, raw in (("last_event_id", query.get("last_event_id")), ("Last-Event-ID", header)):
        if raw is None:
            continue
        if not (raw.isascii() and raw.isdigit()):
            errors[name] = [rules.NOT_AN_INTEGER]
        else:
            # As the history's before/after: ids are 64-bit, larger reads as the largest.
            resume = min(int(raw), rules.MAX_MESSAGE_ID) if len(raw) <= 19 else rules.MAX_MESSAGE_ID
    if errors:
        raise exceptions.ValidationError(errors)
    return resume


def problem_response(error: exceptions.APIException) -> HttpResponse:
    """The API's problem+json answer for ``error``, from its own exception handler."""
    answer = problem_exception_handler(error, {})
    response = HttpResponse(
        orjson.dumps(answer.data), status=answer.status_code, content_type=PROBLEM_CONTENT_TYPE
    )
    for name, value in answer.items():
        if name.lower() != "content-type":
            response[name] = value
    return response


def stream_response() -> HttpResponse:
    response = HttpResponse(content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # nginx and other proxies that honour it pass each event on at once.
    response["X-Accel-Buffering"] = "no"
    return response


# The API's own middleware, around an answer decided beforehand: the request
# log line, the security headers, and CORS (a preflight is answered by
# django-cors-headers itself).
_decorate = RequestLogMiddleware(
    SecurityHeadersMiddleware(CorsMiddleware(lambda request: request.events_response))
)


def decorated(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    request.events_response = response
    return _decorate(request)


async def send_response(send: Send, response: HttpResponse, *, more_body: bool = False) -> None:
    if not more_body:
        response["Content-Length"] = str(len(response.content))
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in response.items()
            ],
        }
    )
    if not more_body:
        await send({"type": "http.response.body", "body": response.content})


def rate_limited(request: HttpRequest) -> exceptions.Throttled | None:
    """The API's throttle for one read; runs in a thread (its cache may be Redis)."""
    throttle = ClientRateThrottle()
    if throttle.allow_request(Request(request), None):
        return None
    return exceptions.Throttled(throttle.wait())


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    request = ASGIRequest(scope, io.BytesIO())
    if request.method == "OPTIONS":
        answer = HttpResponse(status=200)
        answer["Allow"] = ALLOWED_METHODS
        await send_response(send, decorated(request, answer))
        return
    if request.method != "GET":
        answer = problem_response(exceptions.MethodNotAllowed(request.method))
        answer["Allow"] = ALLOWED_METHODS
        await send_response(send, decorated(request, answer))
        return
    match = EVENTS_PATH_RE.fullmatch(scope["path"])
    try:
        resume = resume_point(match[1], request.GET, request.headers.get("Last-Event-ID") or None)
    except exceptions.ValidationError as error:
        await send_response(send, decorated(request, problem_response(error)))
        return

    hub = await running_hub()
    stream = Stream(match[1])
    if not hub.subscribe(stream, settings.EVENTS_MAX_STREAMS):
        error = ServiceUnavailable(
            "This server has as many event streams open as it allows; "
            "try again shortly, or read the history page."
        )
        await send_response(send, decorated(request, problem_response(error)))
        return
    try:
        refusal = await asyncio.to_thread(rate_limited, request)
        if refusal is None:
            try:
                first = await first_events(hub, stream, resume)
            except StoreUnavailable:
                refusal = ServiceUnavailable()
        if refusal is not None:
            await send_response(send, decorated(request, problem_response(refusal)))
            return
        await send_response(send, decorated(request, stream_response()), more_body=True)
        await run_stream(hub, stream, first, receive, send)
    finally:
        hub.unsubscribe(stream)


@dataclass(frozen=True)
class Opening:
    """What a stream sends first: the prelude, and the replay or its position."""

    events: list[bytes]
    # The replay's first page stopped at PAGE_MAX_BYTES after this id: the
    # stream reads the rest itself, a page at a time as it sends them, and
    # takes the hub's live messages only after that.
    replay_after: int | None = None


async def first_events(hub: Hub, stream: Stream, resume: int | None) -> Opening:
    """The stream's opening, read before its ``200`` so that a failed read is a ``503``.

    Runs after the stream subscribed and once the LISTEN connection has been
    live, so whatever commits after this query reaches the stream.
    """
    if not await hub.wait_live(LIVE_TIMEOUT_SECONDS):
        raise StoreUnavailable("the LISTEN connection is not up")
    conversation_id = stream.conversation_id
    if resume is None:
        newest = (await hub.fetch(conversation_id, after=None, limit=1)).rows
        position = newest[0]["id"] if newest else 0
        hub.ready(stream, position)
        # The stream's position as its id: a client that reconnects before
        # any message arrived resumes from here, missing nothing.
        return Opening([PRELUDE, b"id: %d\n\n" % position])
    fetched = await hub.fetch(conversation_id, after=resume, limit=REPLAY_MAX + 1)
    rows = fetched.rows
    first = [PRELUDE]
    too_many = len(rows) > REPLAY_MAX or (
        fetched.cut
        and await hub.count_after(conversation_id, after=resume, limit=REPLAY_MAX + 1) > REPLAY_MAX
    )
    if too_many:
        rows = (await hub.fetch(conversation_id, after=None, limit=REPLAY_MAX)).rows
        first.append(RESET)
    elif fetched.cut:
        return Opening(first + [message_event(row) for row in rows], replay_after=rows[-1]["id"])
    hub.ready(stream, rows[-1]["id"] if rows else resume)
    return Opening(first + [message_event(row) for row in rows])


async def watch_disconnect(receive: Receive, stream: Stream) -> None:
    # uvicorn drops writes to a client that has gone without saying so.
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.close("disconnected")


async def abort_connection(send: Send) -> None:
    """Drop the client's connection now, with whatever it has not read.

    Returning from an unfinished response makes uvicorn close the transport,
    and a transport closes only once its write buffer is flushed, which a
    client that stopped reading never allows: the connection, its buffer and
    its file descriptor would stay. uvicorn's ``send`` is a method of the
    request's cycle, which holds the transport; a server whose ``send``
    is not falls back to that close.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        transport.abort()
        # Let the server see the connection lost before the app returns.
        await asyncio.sleep(0)


async def run_stream(
    hub: Hub, stream: Stream, opening: Opening, receive: Receive, send: Send
) -> None:
    loop = asyncio.get_running_loop()
    heartbeat = settings.EVENTS_HEARTBEAT_SECONDS
    ends = loop.time() + settings.EVENTS_MAX_SECONDS
    stream.task = asyncio.current_task()
    watcher = asyncio.create_task(watch_disconnect(receive, stream))

    async def write(body: bytes, more_body: bool = True) -> None:
        stream.sending = True
        try:
            await send({"type": "http.response.body", "body": body, "more_body": more_body})
        finally:
            stream.sending = False

    async def write_events(pieces: list[bytes]) -> None:
        chunk: list[bytes] = []
        size = 0
        for piece in pieces:
            chunk.append(piece)
            size += len(piece)
            if size >= REPLAY_CHUNK_BYTES:
                await write(b"".join(chunk))
                chunk, size = [], 0
        if chunk:
            await write(b"".join(chunk))

    try:
        await write_events(opening.events)
        after = opening.replay_after
        while after is not None and stream.closed is None:
            try:
                fetched = await hub.fetch(stream.conversation_id, after=after, limit=REPLAY_MAX)
            except StoreUnavailable:
                # The stream ends; the client resumes from the last id it got.
                stream.close("unavailable")
                break
            await write_events([message_event(row) for row in fetched.rows])
            if fetched.rows:
                after = fetched.rows[-1]["id"]
            if not fetched.cut:
                hub.ready(stream, after)
                after = None
        next_beat = loop.time() + heartbeat
        while stream.closed is None:
            now = loop.time()
            if now >= ends:
                break
            try:
                async with asyncio.timeout(min(next_beat, ends) - now):
                    await stream.wake.wait()
            except TimeoutError:
                pass
            stream.wake.clear()
            if stream.closed is not None:
                break
            body = stream.take()
            if not body and loop.time() >= next_beat:
                body = KEEP_ALIVE
            if body:
                await write(body)
                next_beat = loop.time() + heartbeat
        if stream.closed != "disconnected":
            await write(b"", more_body=False)
    except asyncio.CancelledError:
        # The hub cancels a send that a client stopped reading (its buffer
        # filled) and, at shutdown, one that does not end in time.
        if stream.closed in ("overflow", "shutdown"):
            asyncio.current_task().uncancel()
            await abort_connection(send)
            return
        raise
    finally:
        watcher.cancel()
