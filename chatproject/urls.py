from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.negotiation import DefaultContentNegotiation

from .adminonly import ADMIN_PATH
from .apidocs import SwaggerUI
from .health import Healthz, Readyz

urlpatterns = [
    # The API first: Django tries patterns in order, and nearly every request
    # is a POST /messages/ or a GET /conversations/<id>.
    path("", include("conversations.urls")),
    path(ADMIN_PATH, admin.site.urls),
    # The schema in YAML, or JSON with ?format=json or Accept: application/json
    # (the API's JSON-only negotiation would always pick YAML).
    path(
        "api/schema/",
        SpectacularAPIView.as_view(content_negotiation_class=DefaultContentNegotiation),
        name="schema",
    ),
    # Swagger UI with its script in a file of its own, so a strict
    # Content-Security-Policy (no inline scripts) does not break it.
    path("api/docs/", SwaggerUI.as_view(url_name="schema"), name="api-docs"),
    path("healthz", Healthz.as_view(), name="healthz"),
    path("healthz/", Healthz.as_view()),
    path("readyz", Readyz.as_view(), name="readyz"),
    path("readyz/", Readyz.as_view()),
    path("", include("demo.urls")),
]

handler400 = "api.errors.bad_request"
handler403 = "api.errors.permission_denied"
handler404 = "api.errors.page_not_found"
handler500 = "api.errors.server_error"
