"""Swagger UI's page, answering OPTIONS as Django's own views do."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.request import Request


class SwaggerUI(SpectacularSwaggerSplitView):
    """drf-spectacular's Swagger UI page, with a script of its own (no inline script).

    DRF answers OPTIONS with a description of the view rendered by the view's
    renderer, and this view's only renderer is an HTML template that has no
    such page: a ``500``. The page takes no input to describe.
    """

    def options(self, request: Request, *args, **kwargs) -> HttpResponse:
        return HttpResponse(headers={"Allow": "GET, HEAD, OPTIONS"})
