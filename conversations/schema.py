"""The API's OpenAPI description: what drf-spectacular cannot read from the code.

The views stay thin by taking their ``extend_schema`` from here; each
operation declares only its own answers (api.schema adds those every
operation shares). The limits and patterns come from conversations.rules, as
the input checks' do; tests/test_api_docs.py proves the two accept the same.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import (
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers

from api.errors import PROBLEM_CONTENT_TYPE
from api.parsers import MAX_BODY_BYTES
from api.schema import problem, response_header

from . import rules
from .rules import (
    CONVERSATION_ID_DESCRIPTION,
    CONVERSATION_ID_MAX_LENGTH,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    MESSAGE_MAX_LENGTH,
    PAGE_LIMIT_DEFAULT,
    PAGE_LIMIT_MAX,
    PAGE_MAX_BYTES,
    SENDER_MAX_LENGTH,
)


class ConversationIdField(serializers.CharField):
    """A conversation id: read as a JSON string or integer, written as a string."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=CONVERSATION_ID_MAX_LENGTH, trim_whitespace=False, **kwargs)


class MessageSerializer(serializers.Serializer):
    """A message as the API accepts and returns it, for the OpenAPI schema only.

    ``converstaion_id`` is the misspelling in this API's first published
    example; clients built from it keep working. ``inputs.message_input``
    applies these rules to a request and ``representations`` writes the
    answer; MessageSerializerExtension below adds what a field cannot say.
    """

    id = serializers.IntegerField(read_only=True)
    conversation_id = ConversationIdField(required=False)
    converstaion_id = ConversationIdField(required=False, write_only=True)
    sender = serializers.CharField(max_length=SENDER_MAX_LENGTH)
    message = serializers.CharField(max_length=MESSAGE_MAX_LENGTH, trim_whitespace=False)
    created = serializers.DateTimeField(read_only=True)


def conversation_id_text_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": CONVERSATION_ID_MAX_LENGTH,
        "pattern": rules.CONVERSATION_ID_PATTERN,
    }


class ConversationIdFieldExtension(OpenApiSerializerFieldExtension):
    """A conversation id is read as a string or an integer, and always written as a string."""

    target_class = ConversationIdField

    def map_serializer_field(self, auto_schema, direction: str) -> dict[str, Any]:
        text = conversation_id_text_schema()
        if direction == "response":
            return {**text, "description": CONVERSATION_ID_DESCRIPTION}
        return {
            "oneOf": [
                text,
                {
                    "type": "integer",
                    "minimum": rules.JSON_INTEGER_MIN,
                    "maximum": rules.JSON_INTEGER_MAX,
                    "description": "Stored as its decimal text.",
                },
            ],
            "description": f"A JSON string, or a JSON integer. {CONVERSATION_ID_DESCRIPTION}",
        }


MESSAGE_FIELD_DESCRIPTIONS = {
    "id": "Assigned by the server; within a conversation, ids grow in commit order.",
    "conversation_id": (
        "The conversation the message belongs to; it exists from its first message. "
        f"{CONVERSATION_ID_DESCRIPTION}"
    ),
    "converstaion_id": (
        "The misspelling in this API's first published example, accepted when "
        "`conversation_id` is absent. If both are sent and differ, that is a 400."
    ),
    "sender": (
        f"A JSON string, 1 to {SENDER_MAX_LENGTH} characters after trimming surrounding "
        "whitespace; stored trimmed. No NUL and no lone surrogate."
    ),
    "message": (
        f"A JSON string, 1 to {MESSAGE_MAX_LENGTH} characters, stored exactly as sent but not "
        "whitespace only. No NUL and no lone surrogate."
    ),
    "created": (
        "Set by the server: UTC with exactly millisecond precision and a `Z` "
        "(`2018-01-17T04:50:14.883Z`)."
    ),
}


class MessageSerializerExtension(OpenApiSerializerExtension):
    """Adds each field's rule, and that one of the two spellings of the id is required."""

    target_class = MessageSerializer

    def map_serializer(self, auto_schema, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["description"] = "A message as stored and returned."
        for name, field_schema in schema["properties"].items():
            if name in MESSAGE_FIELD_DESCRIPTIONS:
                field_schema["description"] = MESSAGE_FIELD_DESCRIPTIONS[name]
            if "oneOf" in field_schema:
                # CharField's minLength, added beside the branches; the string
                # branch has its own.
                field_schema.pop("minLength", None)
        if direction == "request":
            # The rules the serializer adds to a CharField's: trimming, not blank, no NUL.
            # The sender's limit is on its trimmed length, which the pattern counts.
            schema["properties"]["sender"].pop("maxLength")
            schema["properties"]["sender"]["pattern"] = rules.SENDER_PATTERN
            schema["properties"]["message"]["pattern"] = rules.MESSAGE_PATTERN
            schema["anyOf"] = [
                {"required": ["conversation_id"]},
                {"required": ["converstaion_id"]},
            ]
            schema["description"] = "Unknown extra fields are ignored."
        return schema


class HistoryMessageSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text=MESSAGE_FIELD_DESCRIPTIONS["id"])
    sender = serializers.CharField(max_length=SENDER_MAX_LENGTH)
    message = serializers.CharField(max_length=MESSAGE_MAX_LENGTH)
    created = serializers.DateTimeField(help_text=MESSAGE_FIELD_DESCRIPTIONS["created"])


class ConversationPageSerializer(serializers.Serializer):
    id = ConversationIdField(help_text="The conversation id, as in the URL.")
    messages = HistoryMessageSerializer(many=True, help_text="Oldest first (id ascending).")
    previous = serializers.URLField(
        allow_null=True,
        help_text="The page of older messages; null when this page starts at the first message.",
    )
    next = serializers.URLField(
        allow_null=True,
        help_text="The page of newer messages; null when this page ends at the newest message.",
    )


def canonical_paths_only(endpoints: list[tuple]) -> list[tuple]:
    """Each API path is routed with and without its trailing slash; the schema
    lists the spelling the README uses, once."""

    def canonical(path: str) -> bool:
        if path.startswith("/messages"):
            return path.endswith("/")
        return not path.endswith("/")

    return [endpoint for endpoint in endpoints if canonical(endpoint[0])]


# Headers, request and response.

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
        "pattern": rules.IDEMPOTENCY_KEY_PATTERN,
    },
    OpenApiParameter.HEADER,
    description=(
        f"Makes a retry safe: 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters, "
        "scoped to the conversation. "
        "A retry with the same key and payload answers the original 201 (with "
        "`Idempotent-Replayed: true`) and stores nothing; the same key with a different "
        "payload is a 422."
    ),
)
IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match",
    str,
    OpenApiParameter.HEADER,
    description="An ETag from an earlier answer (or `*`): if it is still current, the answer "
    "is a 304 with no body.",
)


ETAG = response_header(
    "ETag",
    [200, 304],
    "Changes whenever a message is added to the conversation; send it back in `If-None-Match`.",
)
CACHE_CONTROL = response_header(
    "Cache-Control", [200, 304], "`no-cache`: revalidate with `If-None-Match` before reuse."
)
LINK = response_header(
    "Link",
    [200],
    'RFC 8288 links to the older (`rel="prev"`) and newer (`rel="next"`) pages, as in '
    "`previous` and `next`; absent when there are neither.",
)
LOCATION = response_header("Location", [201], "The message's URL, `GET /messages/{id}/`.")
IDEMPOTENT_REPLAYED = response_header(
    "Idempotent-Replayed",
    [201],
    "`true` when this 201 replays the answer to an earlier request with the same "
    "`Idempotency-Key`; absent otherwise.",
    {"type": "string", "enum": ["true"]},
)

# Paging.

PAGE_LIMIT = OpenApiParameter(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT_MAX, "default": PAGE_LIMIT_DEFAULT},
    OpenApiParameter.QUERY,
    description=f"Messages per page, 1 to {PAGE_LIMIT_MAX}.",
)
# Any whole number: one past the largest 64-bit id reads as the largest.
MESSAGE_ID_QUERY = {"type": "integer", "minimum": 0}
BEFORE = OpenApiParameter(
    "before",
    MESSAGE_ID_QUERY,
    OpenApiParameter.QUERY,
    description="The newest `limit` messages older than this message id (no such message "
    "need exist). Not with `after`.",
)
AFTER = OpenApiParameter(
    "after",
    MESSAGE_ID_QUERY,
    OpenApiParameter.QUERY,
    description="The oldest `limit` messages newer than this message id; `after=0` reads from "
    "the first message. Not with `before`.",
)
CONVERSATION_ID_PATH = OpenApiParameter(
    "conversation_id",
    conversation_id_text_schema(),
    OpenApiParameter.PATH,
    description=CONVERSATION_ID_DESCRIPTION + " A malformed id is a 400; an id with no messages is "
    "an empty conversation.",
)
MESSAGE_ID_PATH = OpenApiParameter(
    "id",
    {"type": "integer", "format": "int64", "minimum": 0},
    OpenApiParameter.PATH,
    description="A message id.",
)

EXAMPLE_MESSAGE = {
    "id": 1,
    "conversation_id": "1234",
    "sender": "anson",
    "message": "I'm a teapot",
    "created": "2018-01-17T04:50:14.883Z",
}

message_create_schema = extend_schema(
    summary="Store a message",
    description="The body is a JSON object sent as `application/json` (a `charset` parameter "
    "is fine). The 201 is sent after the message has been committed.",
    request=MessageSerializer,
    parameters=[
        IDEMPOTENCY_KEY,
        LOCATION,
        IDEMPOTENT_REPLAYED,
    ],
    responses={
        201: OpenApiResponse(MessageSerializer, description="Stored (or replayed)."),
        (400, PROBLEM_CONTENT_TYPE): problem(
            "Invalid fields (listed in `errors`), or a body that is not one JSON object: "
            "malformed, empty, `NaN`/`Infinity`, invalid UTF-8, nested deeper than 1024 levels. "
            "Also a malformed `Idempotency-Key`."
        ),
        (411, PROBLEM_CONTENT_TYPE): problem("A chunked body without `Content-Length`."),
        (413, PROBLEM_CONTENT_TYPE): problem(f"A body over {MAX_BODY_BYTES // 1024} KiB."),
        (415, PROBLEM_CONTENT_TYPE): problem("A body that is not `application/json`."),
        (422, PROBLEM_CONTENT_TYPE): problem(
            "The `Idempotency-Key` was used before in this conversation with a different payload."
        ),
    },
    examples=[
        OpenApiExample(
            "A message",
            value={"sender": "anson", "conversation_id": "1234", "message": "I'm a teapot"},
            request_only=True,
        ),
        OpenApiExample("Stored", value=EXAMPLE_MESSAGE, response_only=True, status_codes=[201]),
    ],
)

message_retrieve_schema = extend_schema(
    summary="Read one message",
    parameters=[MESSAGE_ID_PATH],
    responses={
        200: OpenApiResponse(MessageSerializer, description="The message, as its 201 showed it."),
        (404, PROBLEM_CONTENT_TYPE): problem("No such message."),
    },
    examples=[OpenApiExample("A message", value=EXAMPLE_MESSAGE, response_only=True)],
)

conversation_retrieve_schema = extend_schema(
    summary="Read a conversation's history, a page at a time",
    description="With neither `before` nor `after`, the newest `limit` messages. The page is "
    "always oldest first. A page also stops once its messages pass "
    f"{PAGE_MAX_BYTES // (1024 * 1024)} MiB as JSON (always at least one message); its "
    "`previous` and `next` links continue from where it stopped. Costs one primary-key lookup "
    "plus one index range scan, however long the conversation.",
    parameters=[
        CONVERSATION_ID_PATH,
        PAGE_LIMIT,
        BEFORE,
        AFTER,
        IF_NONE_MATCH,
        ETAG,
        CACHE_CONTROL,
        LINK,
    ],
    responses={
        200: OpenApiResponse(ConversationPageSerializer, description="One page of messages."),
        304: OpenApiResponse(description="`If-None-Match` names the current ETag: no body."),
        (400, PROBLEM_CONTENT_TYPE): problem(
            "A malformed conversation id, or invalid paging parameters (listed in `errors`): "
            "`limit` outside its range, `before` or `after` not plain digits, or both at once."
        ),
        (404, PROBLEM_CONTENT_TYPE): problem(
            "No such address: an id with a `/` in it, even encoded as `%2F`, is a path this "
            "operation does not serve."
        ),
    },
    examples=[
        OpenApiExample(
            "A page",
            value={
                "id": "1234",
                "messages": [{k: v for k, v in EXAMPLE_MESSAGE.items() if k != "conversation_id"}],
                "previous": None,
                "next": None,
            },
            response_only=True,
            status_codes=[200],
        )
    ],
)
