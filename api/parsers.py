"""Reading request bodies: JSON objects only, bounded in size."""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser
from rest_framework.request import Request

MAX_BODY_BYTES = 256 * 1024


class RequestBodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB."
    default_code = "request_body_too_large"


class BoundedJSONParser(BaseParser):
    """Parse a UTF-8 JSON body of at most ``MAX_BODY_BYTES`` with orjson.

    It reads at most one byte past the limit, whatever Content-Length claims,
    so an oversized body costs no more memory than the limit. orjson rejects
    what a strict JSON reader should: ``NaN`` and ``Infinity``, invalid UTF-8,
    lone surrogates, and nesting deeper than 1024 levels (as an error, not a
    ``RecursionError``).
    """

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        body = stream.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise RequestBodyTooLarge()
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise exceptions.ParseError(f"The request body is not valid JSON: {exc}") from exc


class LengthRequired(exceptions.APIException):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_detail = "Send the body with a Content-Length header; chunked bodies are not read."
    default_code = "length_required"


def json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object, or the 4xx that says why not.

    DRF hands an empty body over as ``{}`` without asking a parser or looking
    at the content type; this endpoint wants both checked. A WSGI application
    sees a chunked body (no Content-Length) as empty, so it gets a ``411``
    rather than a misleading "empty body".
    """
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        raise LengthRequired()
    media_type = request.content_type.partition(";")[0].strip().lower()
    if media_type != BoundedJSONParser.media_type:
        # A plain ``curl -d`` sends a form's type: say what would work.
        came = f"came as {media_type}" if media_type else "came with no Content-Type"
        raise exceptions.UnsupportedMediaType(
            media_type,
            detail=(
                "Send the body as JSON with the header Content-Type: application/json "
                f"(this one {came})."
            ),
        )
    declared_length = request.META.get("CONTENT_LENGTH") or "0"
    if declared_length.isdigit() and int(declared_length) > MAX_BODY_BYTES:
        raise RequestBodyTooLarge()
    data = request.data
    if request.stream is None:
        raise exceptions.ParseError("The request body is empty; send a JSON object.")
    if not isinstance(data, dict):
        raise exceptions.ParseError("The request body must be a JSON object.")
    return data
