"""Security headers on every response, whichever layer produced it.

Django's SecurityMiddleware and XFrameOptionsMiddleware send
``X-Content-Type-Options``, ``Referrer-Policy`` and ``X-Frame-Options``, but
only on responses that pass through them: a CORS preflight answered by
django-cors-headers and a static file served by whitenoise do not. This
middleware sits outside both and fills in whatever is missing, with the same
settings. Django 5.2 has no Content-Security-Policy of its own, and a policy
is a single header, so it sets that too rather than adding a library.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

# API answers are data, never a document: nothing in them may load, run,
# frame or be framed.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The demo chat page loads its own script and stylesheet and talks to its own
# API; it has no inline script or style.
DEMO_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

# Swagger UI's page (url name) has an inline style block.
UNPOLICED_PAGES = {"api-docs"}


class SecurityHeadersMiddleware:
    """nosniff, Referrer-Policy and X-Frame-Options on every response, and a CSP.

    DEMO_PAGE_POLICY goes on the demo page and API_POLICY on everything else
    (API answers, preflights, redirects, static files) except the admin and
    Swagger UI, which get no policy: Django's admin and the Swagger UI page use
    inline scripts and styles that a strict policy would block, and both are
    pages staff or developers open on purpose.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", settings.SECURE_REFERRER_POLICY)
        if not getattr(response, "xframe_options_exempt", False):
            headers.setdefault("X-Frame-Options", settings.X_FRAME_OPTIONS)
        match = getattr(request, "resolver_match", None)
        name = match.url_name if match else None
        if "Content-Security-Policy" in headers or name in UNPOLICED_PAGES:
            return response
        if match and "admin" in match.namespaces:
            return response
        headers["Content-Security-Policy"] = DEMO_PAGE_POLICY if name == "demo" else API_POLICY
        return response
