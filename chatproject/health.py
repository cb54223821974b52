"""Probes for load balancers and orchestrators.

Both are exempt from rate limits (``throttle_classes = []``): a throttled
probe would take a healthy instance out of service.
"""

from __future__ import annotations

from django.db import connection
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
