"""Middleware that only the admin needs, kept off every other request.

Sessions, authentication and flash messages serve the admin's logins and
pages alone: the API authenticates nobody, and the demo page and the API docs
keep no state. These subclasses of Django's own run as Django's do under the
admin's path and hand every other request straight on, so the API's hot
paths do not pay for them (a session store, a lazy user and a message
storage built and torn down per request).
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthentication
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessages
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessions
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponseBase

# Where chatproject/urls.py mounts the admin.
ADMIN_PATH = "admin/"


def is_admin_request(request: HttpRequest) -> bool:
    return request.path_info.startswith(f"/{ADMIN_PATH}")


class AdminOnly:
    """Put first among the bases: it decides whether Django's middleware runs at all."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if is_admin_request(request):
            return super().__call__(request)
        return self.get_response(request)


class SessionMiddleware(AdminOnly, DjangoSessions):
    pass


class AuthenticationMiddleware(AdminOnly, DjangoAuthentication):
    pass


class MessageMiddleware(AdminOnly, DjangoMessages):
    pass


class RefuseNulMiddleware:
    """A NUL in an admin page's path or query is a ``400``.

    No object id, search or filter can hold one: PostgreSQL's text cannot,
    and it refuses the query with an error instead of finding nothing.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if is_admin_request(request) and (
            "\x00" in request.path_info
            or any(
                "\x00" in key or "\x00" in "".join(values) for key, values in request.GET.lists()
            )
        ):
            raise BadRequest("A NUL character in an admin address.")
        return self.get_response(request)
