"""What the API accepts and how it renders messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rest_framework import serializers

from .models import (
    CONVERSATION_ID_MAX_LENGTH,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    MESSAGE_MAX_LENGTH,
    SENDER_MAX_LENGTH,
    Message,
)

# Unreserved URL characters plus ":@+", so an id is its own URL path segment.
CONVERSATION_ID_RE = re.compile(r"[A-Za-z0-9._~:@+\-]+")
CONVERSATION_ID_RULE = (
    "Use 1 to 100 of the characters A-Z a-z 0-9 . _ ~ : @ + - (and not '.' or '..' alone)."
)
IDEMPOTENCY_KEY_RE = re.compile(rf"[\x20-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
MAX_MESSAGE_ID = 2**63 - 1
PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 1000


def render_created(created: datetime) -> str:
    """UTC, exactly three decimals, and a ``Z``: ``2018-01-17T04:50:14.883Z``."""
    return (
        created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{created.microsecond // 1000:03d}Z"
    )


def conversation_id_errors(value: str) -> list[str]:
    """What is wrong with a conversation id, from a body or a URL; empty if nothing."""
    if not value:
        return ["This field may not be blank."]
    if not CONVERSATION_ID_RE.fullmatch(value) or value in {".", ".."}:
        return [CONVERSATION_ID_RULE]
    if len(value) > CONVERSATION_ID_MAX_LENGTH:
        return [f"Ensure this field has no more than {CONVERSATION_ID_MAX_LENGTH} characters."]
    return []


class StrictCharField(serializers.CharField):
    """A CharField that takes only JSON strings.

    DRF's own turns ``42`` or ``true`` into text; a client that sends a number
    for a name has a bug it should hear about.
    """

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ConversationIdField(serializers.CharField):
    """A conversation id: a JSON string, or a JSON integer taken as its decimal text."""

    default_error_messages = {"invalid": "Must be a string or an integer."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=CONVERSATION_ID_MAX_LENGTH, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("invalid")
        value = str(data)
        errors = conversation_id_errors(value)
        if errors:
            raise serializers.ValidationError(errors)
        return value


def message_representation(message: Message) -> dict[str, Any]:
    """A message as the API returns it (POST's 201 and GET /messages/<id>/)."""
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "sender": message.sender,
        "message": message.message,
        "created": render_created(message.created),
    }


class MessageSerializer(serializers.Serializer):
    """A message as the API accepts and returns it.

    ``converstaion_id`` is the misspelling in this API's first published
    example; clients built from it keep working. The request's
    ``Idempotency-Key`` header, if any, comes in through the context and is
    checked with the body.

    A plain Serializer with declared fields, not a ModelSerializer: it reads
    input, ``message_representation`` writes output, and building a
    ModelSerializer's fields from the model on every POST was a tenth of the
    request's time.
    """

    id = serializers.IntegerField(read_only=True)
    conversation_id = ConversationIdField(required=False)
    converstaion_id = ConversationIdField(required=False, write_only=True)
    sender = StrictCharField(max_length=SENDER_MAX_LENGTH)
    message = StrictCharField(max_length=MESSAGE_MAX_LENGTH, trim_whitespace=False)
    # Output only, rendered by message_representation; declared for the schema.
    created = serializers.DateTimeField(read_only=True)

    def validate_message(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        conversation_id = attrs.pop("conversation_id", None)
        alias = attrs.pop("converstaion_id", None)
        if conversation_id is None and alias is None:
            raise serializers.ValidationError({"conversation_id": ["This field is required."]})
        if conversation_id is not None and alias is not None and conversation_id != alias:
            raise serializers.ValidationError(
                {"converstaion_id": ["Differs from conversation_id; send only conversation_id."]}
            )
        attrs["conversation_id"] = conversation_id if conversation_id is not None else alias
        key = self.context.get("idempotency_key")
        if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
            raise serializers.ValidationError(
                {IDEMPOTENCY_KEY_HEADER: ["Use 1 to 255 printable ASCII characters."]}
            )
        attrs["idempotency_key"] = key
        return attrs


@dataclass(frozen=True)
class PageRequest:
    conversation_id: str
    limit: int = PAGE_LIMIT_DEFAULT
    before: int | None = None
    after: int | None = None


def page_request(conversation_id: str, query: Mapping[str, str]) -> PageRequest:
    """The history request's conversation id and paging parameters, checked.

    Raises a ValidationError naming every bad one. Plain code rather than a
    DRF Serializer: this runs on every poll of every widget, and building a
    Serializer (it deep-copies its fields) cost more than the query it guards.
    The messages are DRF's own, so errors read the same everywhere.
    """
    errors: dict[str, list[str]] = {}
    id_errors = conversation_id_errors(conversation_id)
    if id_errors:
        errors["conversation_id"] = id_errors
    numbers: dict[str, int] = {}
    for name in ("limit", "before", "after"):
        raw = query.get(name)
        if raw is None:
            continue
        if not (raw.isascii() and raw.isdigit()):
            errors[name] = ["A valid integer is required."]
        elif name != "limit":
            # Any whole number is a bound. Ids are 64-bit, so a larger one
            # reads as the largest id (and Python will not even convert a
            # string of over 4,300 digits).
            numbers[name] = min(int(raw), MAX_MESSAGE_ID) if len(raw) <= 19 else MAX_MESSAGE_ID
        elif len(raw) > 4 or int(raw) > PAGE_LIMIT_MAX:
            errors[name] = [f"Ensure this value is less than or equal to {PAGE_LIMIT_MAX}."]
        elif int(raw) < 1:
            errors[name] = ["Ensure this value is greater than or equal to 1."]
        else:
            numbers[name] = int(raw)
    if "before" in query and "after" in query:
        errors.setdefault("before", []).append("Use before or after, not both.")
        errors.setdefault("after", []).append("Use before or after, not both.")
    if errors:
        raise serializers.ValidationError(errors)
    return PageRequest(conversation_id, **numbers)
