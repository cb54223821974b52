"""What every operation's OpenAPI description shares: the problem shape, response
headers, and the errors any operation can answer with, added once by a hook."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from .errors import PROBLEM_CONTENT_TYPE, RETRY_AFTER_SECONDS


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details: the one shape of every error."""

    type = serializers.CharField(help_text="Always `about:blank`: `status` says what it is.")
    title = serializers.CharField(help_text="The status's name, e.g. `Bad Request`.")
    status = serializers.IntegerField(min_value=400, max_value=599)
    detail = serializers.CharField(help_text="What went wrong, in words for a person.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Only for invalid fields or parameters: each one's problems.",
    )


def problem(description: str) -> OpenApiResponse:
    return OpenApiResponse(ProblemSerializer, description=description)


def response_header(
    name: str, statuses: list[int], description: str, schema: Any = str
) -> OpenApiParameter:
    return OpenApiParameter(
        name, schema, OpenApiParameter.HEADER, response=statuses, description=description
    )


WRONG_METHOD = "This path does not take the method; `Allow` lists those it does."
TOO_MANY_REQUESTS = (
    "This client has sent more requests than its rate allows (`RATE_LIMIT_POST` for POST, "
    "`RATE_LIMIT_GET` for GET); `Retry-After` says when to try again."
)
UNAVAILABLE = (
    "The database cannot be reached or stays locked. Nothing was stored, unless the database "
    "failed during the commit: retry with the same `Idempotency-Key`."
)
ALLOW = {"schema": {"type": "string"}, "description": "The methods this path takes."}
PROBLEM_CONTENT = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _retry_after(rate_limited: bool) -> dict[str, Any]:
    description = f"Seconds to wait before retrying: {RETRY_AFTER_SECONDS} after a 503"
    if rate_limited:
        description += "; after a 429, until the client's rate allows another request"
    return {"schema": {"type": "integer", "minimum": 0}, "description": f"{description}."}


def _with_header(response: dict[str, Any], name: str, header: dict[str, Any]) -> dict[str, Any]:
    rest = {key: value for key, value in response.items() if key != "headers"}
    return {"headers": {**response.get("headers", {}), name: header}, **rest}


def common_responses(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular postprocessing hook: the answers every operation shares.

    Every operation can be sent the wrong method: a ``405`` with ``Allow``.
    Every operation whose view is rate limited can be a ``429``, and reads the
    database, so it can be a ``503``; the probes, which are not rate limited,
    declare their own ``503`` if they have one. Every ``429`` and ``503``
    carries ``Retry-After``. Each operation's own answers are declared with it.
    """
    for path, _regex, method, callback in generator.endpoints:
        view = generator.create_view(callback, method)
        operation = result["paths"][generator.coerce_path(path, method, view)][method.lower()]
        responses = operation["responses"]
        responses["405"] = _with_header(
            {"content": PROBLEM_CONTENT, "description": WRONG_METHOD}, "Allow", ALLOW
        )
        rate_limited = bool(view.throttle_classes)
        if rate_limited:
            responses["429"] = {"content": PROBLEM_CONTENT, "description": TOO_MANY_REQUESTS}
            responses.setdefault("503", {"content": PROBLEM_CONTENT, "description": UNAVAILABLE})
        for status in ("429", "503"):
            if status in responses:
                responses[status] = _with_header(
                    responses[status], "Retry-After", _retry_after(rate_limited)
                )
        operation["responses"] = dict(sorted(responses.items()))
    return result
