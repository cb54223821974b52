"""Content-Security-Policy for what the service itself renders.

Django's SecurityMiddleware and XFrameOptionsMiddleware already send
``X-Content-Type-Options: nosniff``, ``Referrer-Policy`` and
``X-Frame-Options: DENY`` on every response; Django 5.2 has no CSP of its
own, and a policy is a single header, so this sets it rather than a library.
"""

from __future__ import annotations

from collections.abc import Callable

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


class ContentSecurityPolicyMiddleware:
    """Sends API_POLICY on every answer that is not an HTML page, DEMO_PAGE_POLICY on the demo.

    The admin and Swagger UI are left without one: Django's admin and the
    Swagger UI page use inline scripts and styles that a strict policy would
    block, and both are pages staff or developers open on purpose.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if "Content-Security-Policy" in response:
            return response
        match = getattr(request, "resolver_match", None)
        if match is not None and match.url_name == "demo":
            response["Content-Security-Policy"] = DEMO_PAGE_POLICY
        elif not response.get("Content-Type", "").startswith("text/html"):
            response["Content-Security-Policy"] = API_POLICY
        return response
