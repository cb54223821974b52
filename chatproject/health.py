"""Probes for load balancers and orchestrators.

Both are exempt from rate limits (``throttle_classes = []``): a throttled
probe would take a healthy instance out of service. And both answer whatever
``Host`` the prober sends (ProbesAnyHostMiddleware): an orchestrator probes a
pod by its own address, which no ALLOWED_HOSTS lists, and a probe reveals
nothing a forged Host could misuse.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponseBase
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.errors import PROBLEM_CONTENT_TYPE
from api.schema import problem


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok"])


class ReadinessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok"])
    database = serializers.ChoiceField(choices=["ok"])


healthz_schema = extend_schema(
    summary="Liveness: the process answers",
    description="Touches no database. Not rate limited.",
    tags=["operations"],
    responses={200: OpenApiResponse(HealthSerializer, description="The process answers.")},
)

readyz_schema = extend_schema(
    summary="Readiness: the database answers",
    description="Runs one trivial query. Not rate limited.",
    tags=["operations"],
    responses={
        200: OpenApiResponse(ReadinessSerializer, description="The database answers."),
        (503, PROBLEM_CONTENT_TYPE): problem("The database does not answer."),
    },
)


class Healthz(APIView):
    """Liveness: the process answers. Touches no database, so a database
    outage does not get healthy processes restarted."""

    throttle_classes: list = []

    @healthz_schema
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class Readyz(APIView):
    """Readiness: the database answers a trivial query.

    When it does not, the OperationalError becomes the API's ``503``
    problem+json with ``Retry-After`` (api.errors).
    """

    throttle_classes: list = []

    @readyz_schema
    def get(self, request: Request) -> Response:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return Response({"status": "ok", "database": "ok"})


class ProbesAnyHostMiddleware:
    """Answers the probes' paths before anything that checks the Host header.

    Everything after it (CommonMiddleware, CSRF, the HTTPS redirect) would
    call ``request.get_host()`` and turn a pod's address into a ``400``.
    Placed inside the request log and the security headers, so a probe is
    still logged and gets its headers.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        healthz, readyz = Healthz.as_view(), Readyz.as_view()
        self.probes = {
            "/healthz": healthz,
            "/healthz/": healthz,
            "/readyz": readyz,
            "/readyz/": readyz,
        }

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        probe = self.probes.get(request.path_info)
        if probe is None:
            return self.get_response(request)
        return probe(request).render()
