"""One structured log line per request, tagged with a request id.

The line goes to the ``chatproject.requests`` logger, which settings.LOGGING
writes to stdout as JSON; gunicorn's own access log is off in its favour.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from .clients import client_ip

logger = logging.getLogger("chatproject.requests")

REQUEST_ID_HEADER = "X-Request-ID"
# A proxy's or a client's id is kept when it is short and made of characters
# that are safe to echo and to search for (uuids, hex, Heroku's and AWS's
# formats); anything else is replaced, so a client cannot forge a log field.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._~:@+=/-]{1,200}")


def request_id_for(request: HttpRequest) -> str:
    """The request's own id when it is sane, else a new one."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    if SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestLogMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request.request_id = request_id_for(request)
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
