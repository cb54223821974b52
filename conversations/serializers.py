"""What the API accepts and how it renders messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

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


class ConversationIdField(serializers.CharField):
    """A conversation id: a JSON string, or a JSON integer taken as its decimal text."""

    default_error_messages = {"invalid": "Must be a string or an integer."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=CONVERSATION_ID_MAX_LENGTH, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        return conversation_id_value(data)


# DRF's own wording, so that a message's errors read as every other field's.
REQUIRED = serializers.Field.default_error_messages["required"]
NULL = serializers.Field.default_error_messages["null"]
BLANK = serializers.CharField.default_error_messages["blank"]
NOT_A_STRING = serializers.CharField.default_error_messages["invalid"]
TOO_LONG = serializers.CharField.default_error_messages["max_length"]
NOT_STRING_OR_INTEGER = ConversationIdField.default_error_messages["invalid"]
NUL_CHARACTER = ProhibitNullCharactersValidator.message
SURROGATE_CHARACTER = ProhibitSurrogateCharactersValidator.message
SURROGATE_RE = re.compile("[\ud800-\udfff]")


def conversation_id_value(data: Any) -> str:
    """A conversation id from a JSON body: a string, or an integer as its decimal text."""
    if data is None:
        raise serializers.ValidationError(NULL)
    if data == "":
        raise serializers.ValidationError(BLANK)
    if isinstance(data, bool) or not isinstance(data, str | int):
        raise serializers.ValidationError(NOT_STRING_OR_INTEGER)
    value = str(data)
    errors = conversation_id_errors(value)
    if errors:
        raise serializers.ValidationError(errors)
    return value


def text_value(data: Any, *, max_length: int, trim: bool) -> str:
    """A JSON string (stripped if ``trim``), checked in the order DRF's CharField checks it.

    A number or a boolean is an error, not text: a client that sends one
    for a name has a bug it should hear about.
    """
    if data is None:
        raise serializers.ValidationError(NULL)
    if data == "" or (trim and isinstance(data, str) and not data.strip()):
        raise serializers.ValidationError(BLANK)
    if not isinstance(data, str):
        raise serializers.ValidationError(NOT_A_STRING)
    value = data.strip() if trim else data
    errors = []
    if len(value) > max_length:
        errors.append(TOO_LONG.format(max_length=max_length))
    if "\x00" in value:
        errors.append(NUL_CHARACTER)
    if surrogate := SURROGATE_RE.search(value):
        errors.append(SURROGATE_CHARACTER.format(code_point=ord(surrogate[0])))
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
    """A message as the API accepts and returns it, for the OpenAPI schema.

    ``converstaion_id`` is the misspelling in this API's first published
    example; clients built from it keep working. ``message_input`` applies
    these rules to a request and ``message_representation`` writes the
    answer: building a Serializer per POST (DRF deep-copies its fields) and
    running its validation cost a tenth of the request's CPU.
    """

    id = serializers.IntegerField(read_only=True)
    conversation_id = ConversationIdField(required=False)
    converstaion_id = ConversationIdField(required=False, write_only=True)
    sender = serializers.CharField(max_length=SENDER_MAX_LENGTH)
    message = serializers.CharField(max_length=MESSAGE_MAX_LENGTH, trim_whitespace=False)
    created = serializers.DateTimeField(read_only=True)


def sender_value(data: Any) -> str:
    return text_value(data, max_length=SENDER_MAX_LENGTH, trim=True)


def message_value(data: Any) -> str:
    """Stored exactly as sent, but not whitespace only (checked once the rest passed)."""
    value = text_value(data, max_length=MESSAGE_MAX_LENGTH, trim=False)
    if not value.strip():
        raise serializers.ValidationError(BLANK)
    return value


# A POST body's fields, whether each is required, and how each is read: in
# MessageSerializer's order, which is the order their errors are listed in.
MESSAGE_FIELDS = [
    ("conversation_id", False, conversation_id_value),
    ("converstaion_id", False, conversation_id_value),
    ("sender", True, sender_value),
    ("message", True, message_value),
]


def message_input(data: Mapping[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    """A POST body and its Idempotency-Key, checked: ``message_create``'s arguments.

    Raises a ValidationError naming every bad field, worded and ordered as
    MessageSerializer's validation would: first each field (missing, null,
    blank, wrong type, too long, NUL), and only when they all pass, the rules
    between them (one of the two spellings of the id; the key's form).
    """
    errors: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for name, required, read in MESSAGE_FIELDS:
        if name not in data:
            if required:
                errors[name] = [REQUIRED]
            continue
        try:
            values[name] = read(data[name])
        except serializers.ValidationError as error:
            errors[name] = [str(message) for message in error.detail]
    if errors:
        raise serializers.ValidationError(errors)

    conversation_id = values.get("conversation_id")
    alias = values.get("converstaion_id")
    if conversation_id is None and alias is None:
        raise serializers.ValidationError({"conversation_id": [REQUIRED]})
    if conversation_id is not None and alias is not None and conversation_id != alias:
        raise serializers.ValidationError(
            {"converstaion_id": ["Differs from conversation_id; send only conversation_id."]}
        )
    if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key):
        raise serializers.ValidationError(
            {IDEMPOTENCY_KEY_HEADER: ["Use 1 to 255 printable ASCII characters."]}
        )
    return {
        "conversation_id": conversation_id if conversation_id is not None else alias,
        "sender": values["sender"],
        "message": values["message"],
        "idempotency_key": idempotency_key,
    }


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
