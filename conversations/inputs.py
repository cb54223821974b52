"""What a request may carry: a message to store, a page of history to read.

Plain code rather than DRF Serializers: these run on every request, and
building a Serializer (it deep-copies its fields) and running its validation
costs more than the queries they guard (docs/performance.md). The errors are worded and ordered as a
Serializer's would be (conversations.rules), and schema.MessageSerializer
describes the same rules to the OpenAPI schema; tests/test_api_docs.py proves
the two accept and reject the same bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rest_framework.exceptions import ValidationError

from . import rules

# Digits in the largest id and the largest limit: a longer number is out of
# range before Python is asked to convert it.
_ID_DIGITS = len(str(rules.MAX_MESSAGE_ID))
_LIMIT_DIGITS = len(str(rules.PAGE_LIMIT_MAX))


@dataclass(frozen=True)
class PageRequest:
    """One page of a conversation's history: the newest ``limit`` messages, those
    older than ``before``, or those newer than ``after``."""

    conversation_id: str
    limit: int = rules.PAGE_LIMIT_DEFAULT
    before: int | None = None
    after: int | None = None


def conversation_id_errors(value: str) -> list[str]:
    """What is wrong with a conversation id, from a body or a URL; empty if nothing."""
    if not value:
        return [rules.BLANK]
    if not rules.CONVERSATION_ID_RE.fullmatch(value) or value in rules.CONVERSATION_ID_DOT_SEGMENTS:
        return [rules.CONVERSATION_ID_RULE]
    if len(value) > rules.CONVERSATION_ID_MAX_LENGTH:
        return [rules.TOO_LONG.format(max_length=rules.CONVERSATION_ID_MAX_LENGTH)]
    return []


def conversation_id_value(data: Any) -> str:
    """A conversation id from a JSON body: a string, or an integer as its decimal text."""
    if data is None:
        raise ValidationError(rules.NULL)
    if data == "":
        raise ValidationError(rules.BLANK)
    if isinstance(data, bool) or not isinstance(data, str | int):
        raise ValidationError(rules.NOT_STRING_OR_INTEGER)
    value = str(data)
    errors = conversation_id_errors(value)
    if errors:
        raise ValidationError(errors)
    return value


def text_value(data: Any, *, max_length: int, trim: bool) -> str:
    """A JSON string (stripped if ``trim``), checked in the order DRF's CharField checks it.

    A number or a boolean is an error, not text: a client that sends one
    for a name has a bug it should hear about.
    """
    if data is None:
        raise ValidationError(rules.NULL)
    if data == "" or (trim and isinstance(data, str) and not data.strip()):
        raise ValidationError(rules.BLANK)
    if not isinstance(data, str):
        raise ValidationError(rules.NOT_A_STRING)
    value = data.strip() if trim else data
    errors = []
    if len(value) > max_length:
        errors.append(rules.TOO_LONG.format(max_length=max_length))
    if "\x00" in value:
        errors.append(rules.NUL_CHARACTER)
    if surrogate := rules.SURROGATE_RE.search(value):
        errors.append(rules.SURROGATE_CHARACTER.format(code_point=ord(surrogate[0])))
    if errors:
        raise ValidationError(errors)
    return value


def sender_value(data: Any) -> str:
    return text_value(data, max_length=rules.SENDER_MAX_LENGTH, trim=True)


def message_value(data: Any) -> str:
    """Stored exactly as sent, but not whitespace only (checked once the rest passed)."""
    value = text_value(data, max_length=rules.MESSAGE_MAX_LENGTH, trim=False)
    if not value.strip():
        raise ValidationError(rules.BLANK)
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

    Raises a ValidationError naming every bad field: first each field
    (missing, null, blank, wrong type, too long, NUL), and only when they all
    pass, the rules between them (one of the two spellings of the id; the
    key's form).
    """
    errors: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for name, required, read in MESSAGE_FIELDS:
        if name not in data:
            if required:
                errors[name] = [rules.REQUIRED]
            continue
        try:
            values[name] = read(data[name])
        except ValidationError as error:
            errors[name] = [str(message) for message in error.detail]
    if errors:
        raise ValidationError(errors)

    conversation_id = values.get("conversation_id")
    alias = values.get("converstaion_id")
    if conversation_id is None and alias is None:
        raise ValidationError({"conversation_id": [rules.REQUIRED]})
    if conversation_id is not None and alias is not None and conversation_id != alias:
        raise ValidationError({"converstaion_id": [rules.ALIAS_DIFFERS]})
    if idempotency_key is not None and not rules.IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key):
        raise ValidationError({rules.IDEMPOTENCY_KEY_HEADER: [rules.IDEMPOTENCY_KEY_RULE]})
    return {
        "conversation_id": conversation_id if conversation_id is not None else alias,
        "sender": values["sender"],
        "message": values["message"],
        "idempotency_key": idempotency_key,
    }


def page_request(conversation_id: str, query: Mapping[str, str]) -> PageRequest:
    """The history request's conversation id and paging parameters, checked.

    Raises a ValidationError naming every bad one.
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
            errors[name] = [rules.NOT_AN_INTEGER]
        elif name != "limit":
            # Any whole number is a bound. Ids are 64-bit, so a larger one
            # reads as the largest id (and Python will not even convert a
            # string of over 4,300 digits).
            numbers[name] = (
                min(int(raw), rules.MAX_MESSAGE_ID)
                if len(raw) <= _ID_DIGITS
                else rules.MAX_MESSAGE_ID
            )
        elif len(raw) > _LIMIT_DIGITS or int(raw) > rules.PAGE_LIMIT_MAX:
            errors[name] = [rules.AT_MOST.format(max_value=rules.PAGE_LIMIT_MAX)]
        elif int(raw) < 1:
            errors[name] = [rules.AT_LEAST.format(min_value=1)]
        else:
            numbers[name] = int(raw)
    if "before" in query and "after" in query:
        errors.setdefault("before", []).append(rules.BEFORE_OR_AFTER)
        errors.setdefault("after", []).append(rules.BEFORE_OR_AFTER)
    if errors:
        raise ValidationError(errors)
    return PageRequest(conversation_id, **numbers)
