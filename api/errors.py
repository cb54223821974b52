"""One error shape for the whole service: RFC 9457 problem details."""

from __future__ import annotations

import sys
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

PROBLEM_CONTENT_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 5
# RFC 9110's names, which Python's http module uses only from 3.13 on.
TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


class DomainError(Exception):
    """A well-formed request that the domain refuses, and says why: a ``422``.

    Services raise subclasses with the reason as their message; the
    exception handler answers them, so no view catches them.
    """


class UnprocessableContent(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "unprocessable_content"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is not answering; try again shortly."
    default_code = "service_unavailable"
    # DRF's exception_handler sends it as Retry-After, as it does a throttle's wait.
    wait = RETRY_AFTER_SECONDS


def problem(status_code: int, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": TITLES.get(status_code) or HTTPStatus(status_code).phrase,
        "status": status_code,
        "detail": detail,
        **extra,
    }


def _as_api_exception(exc: Exception) -> Exception:
    """The DRF exception that answers ``exc``, for the errors DRF does not know.

    A database that cannot be reached (or stays locked past the busy
    timeout) is a ``503`` with ``Retry-After``: the client should retry. The
    write path is one transaction, so a write either happened whole or not
    at all; a database that fails during COMMIT can have made it durable
    without the service learning so, which is why a retry should carry the
    same ``Idempotency-Key``. Django's 404 and 403 are answered in DRF's own
    words rather than with their messages, which can name a model.
    """
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, OperationalError | InterfaceError):
        return ServiceUnavailable()
    if isinstance(exc, DomainError):
        return UnprocessableContent(str(exc))
    return exc


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
    """DRF's exception handler, its answer reshaped into problem+json."""
    exc = _as_api_exception(exc)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(response.data)
        detail = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
        response.data = problem(response.status_code, detail, errors=errors)
    else:
        response.data = problem(response.status_code, str(exc.detail))
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


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
