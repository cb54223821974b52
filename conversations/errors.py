"""One error shape for the whole API: RFC 9457 problem details."""

from __future__ import annotations

import sys
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

PROBLEM_CONTENT_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 5


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is not answering; try again shortly."
    default_code = "service_unavailable"


# RFC 9110's names, which Python's http module uses only from 3.13 on.
TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


class IdempotencyConflict(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = (
        "This Idempotency-Key already stored a different message in this conversation; "
        "a retry must repeat the same sender and message, a new message needs a new key."
    )
    default_code = "idempotency_key_reused"


def problem(status_code: int, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": TITLES.get(status_code) or HTTPStatus(status_code).phrase,
        "status": status_code,
        "detail": detail,
        **extra,
    }


def _field_errors(detail: Any) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {
            field: [
                str(message) for message in (messages if isinstance(messages, list) else [messages])
            ]
            for field, messages in detail.items()
        }
    return {"non_field_errors": [str(message) for message in detail]}


def problem_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's exception handler, answering every error as problem+json.

    A database that cannot be reached (or stays locked past the busy timeout)
    is a ``503`` with ``Retry-After``: the client should retry. The write
    path is one transaction, so a write either happened whole or not at all;
    a database that fails during COMMIT can have made it durable without the
    service learning so, which is why a retry should carry the same
    ``Idempotency-Key``.
    """
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, (OperationalError, InterfaceError)):
        exc = ServiceUnavailable()
    if not isinstance(exc, exceptions.APIException):
        return None

    headers = {}
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    elif getattr(exc, "wait", None):
        headers["Retry-After"] = f"{exc.wait:.0f}"

    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        detail = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
        body = problem(exc.status_code, detail, errors=errors)
    else:
        body = problem(exc.status_code, str(exc.detail))

    set_rollback()
    return Response(
        body, status=exc.status_code, headers=headers, content_type=PROBLEM_CONTENT_TYPE
    )


def _problem_response(status_code: int, detail: str) -> JsonResponse:
    return JsonResponse(
        problem(status_code, detail), status=status_code, content_type=PROBLEM_CONTENT_TYPE
    )


def bad_request(request: HttpRequest, exception: Exception) -> JsonResponse:
    return _problem_response(400, "The request could not be understood.")


def permission_denied(request: HttpRequest, exception: Exception) -> JsonResponse:
    return _problem_response(403, "You do not have permission to do this.")


def page_not_found(request: HttpRequest, exception: Exception) -> JsonResponse:
    return _problem_response(404, "There is nothing at this address.")


def server_error(request: HttpRequest) -> JsonResponse:
    """Django's last resort (handler500); a database that fails outside the API is still a 503.

    The admin's pages, its sessions and logins reach the database before any
    of the API's handling applies.
    """
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        response = _problem_response(503, str(ServiceUnavailable.default_detail))
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return _problem_response(500, "The server failed to answer this request; it has been logged.")
