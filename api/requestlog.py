"""One structured log line per request, and the request's id on every line it logs.

The request's line goes to the ``chatproject.requests`` logger, which
settings.LOGGING writes to stdout as JSON; gunicorn's own access log is off in
its favour. Everything else logged while a request is answered (Django's
warnings and tracebacks, the rate limits' Redis warning) goes to stderr as
JSON too, and RequestIdFilter adds the request's id to each of those lines.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponseBase
from pythonjsonlogger.orjson import OrjsonFormatter

from .clients import client_ip

logger = logging.getLogger("chatproject.requests")

REQUEST_ID_HEADER = "X-Request-ID"
# A proxy's or a client's id is kept when it is short and made of characters
# that are safe to echo and to search for (uuids, hex, Heroku's and AWS's
# formats); anything else is replaced, so a client cannot forge a log field.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._~:@+=/-]{1,200}")

# The id of the request this thread (or task) is answering, if any.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


def request_id_for(request: HttpRequest) -> str:
    """The request's own id when it is sane, else a new one."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    if SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to a record logged while a request is being answered."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


def forget_request_id(**kwargs: Any) -> None:
    """Sent when the response is closed: Django logs a 4xx or 5xx after the middleware
    returns, so the id stays set until then, and not into the thread's next work."""
    current_request_id.set(None)


class RequestLogMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        request_finished.connect(forget_request_id, dispatch_uid="api.requestlog")

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request.request_id = request_id_for(request)
        current_request_id.set(request.request_id)
        started = time.perf_counter()
        response = self.get_response(request)
        # For a streamed response (the admin's exports) this is the time to
        # the first byte, not to the last.
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        response[REQUEST_ID_HEADER] = request.request_id
        logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "query": request.META.get("QUERY_STRING", ""),
                "status": response.status_code,
                "duration_ms": duration_ms,
                "request_id": request.request_id,
                "client": client_ip(request),
            },
        )
        return response


class WithoutTracebackFormatter(OrjsonFormatter):
    """The JSON line without its traceback or stack.

    For records whose cause is the client's (a rejected Host header): the
    message says what happened, and Django's traceback of where it noticed
    would only bury the lines that matter.
    """

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(
            {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None}
        )
        return super().format(bare)
