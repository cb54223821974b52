"""Who is asking: the client's address, as the rate limits, the request log and the
admin's login lockout all see it."""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework.throttling import BaseThrottle


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or X-Forwarded-For when proxies are trusted.

    With ``DJANGO_TRUSTED_PROXIES`` (DRF's ``NUM_PROXIES``) set to n, the
    address n hops from the right of X-Forwarded-For: the one the outermost
    trusted proxy saw.
    """
    return BaseThrottle().get_ident(request) or ""
