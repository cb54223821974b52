"""Probes for load balancers and orchestrators.

Both are exempt from rate limits (``throttle_classes = []``): a throttled
probe would take a healthy instance out of service.
"""

from __future__ import annotations

from django.db import connection
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.schema import healthz_schema, readyz_schema


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
