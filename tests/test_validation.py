"""Bad input to POST /messages/: a clear 400 naming the field, and nothing stored."""

import pytest

from conversations.models import Conversation, Message
from conversations.rules import BLANK, NOT_A_STRING, REQUIRED, SURROGATE_CHARACTER
from conversations.rules import CONVERSATION_ID_RULE as BAD_ID
from conversations.rules import NOT_STRING_OR_INTEGER as NOT_STRING_OR_INT
from conversations.rules import NUL_CHARACTER as NUL
from tests.conftest import message

pytestmark = pytest.mark.django_db

SURROGATE = SURROGATE_CHARACTER.format(code_point=0xD800)


def assert_rejected(
    response, field: str, messages: list[str], also: dict[str, list[str]] | None = None
) -> None:
    errors = {field: messages, **(also or {})}
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "; ".join(f"{name}: {' '.join(texts)}" for name, texts in errors.items()),
        "errors": errors,
    }
    assert list(body["errors"]) == list(errors)
    assert not Message.objects.exists()
    assert not Conversation.objects.exists()


@pytest.mark.parametrize("field", ["sender", "message"])
def test_a_missing_field_is_rejected(api, field):
    payload = message()
    del payload[field]

    assert_rejected(api.post(payload), field, [REQUIRED])


def test_a_missing_conversation_id_is_rejected(api):
    assert_rejected(api.post({"sender": "a", "message": "b"}), "conversation_id", [REQUIRED])


@pytest.mark.parametrize("value", [42, 1.5, True, None, [], {}, ["a"]])
@pytest.mark.parametrize("field", ["sender", "message"])
def test_text_fields_take_only_json_strings(api, field, value):
    expected = ["This field may not be null."] if value is None else [NOT_A_STRING]

    assert_rejected(api.post({**message(), field: value}), field, expected)


@pytest.mark.parametrize("value", [1.0, 1.5, True, False, [], {}, ["1234"], {"id": "1"}])
def test_conversation_id_takes_only_strings_and_integers(api, value):
    assert_rejected(
        api.post(message(conversation_id=value)), "conversation_id", [NOT_STRING_OR_INT]
    )


def test_a_null_conversation_id_is_rejected(api):
    assert_rejected(
        api.post(message(conversation_id=None)), "conversation_id", ["This field may not be null."]
    )


@pytest.mark.parametrize(
    "value", ["a b", "a/b", "a?b", "a#b", "a%20b", "ä", ".", "..", " 1234", "1234\n", "a\u0000b"]
)
def test_conversation_id_outside_the_allowed_characters_is_rejected(api, value):
    response = api.post(message(conversation_id=value))

    assert_rejected(response, "conversation_id", response.json()["errors"]["conversation_id"])
    assert BAD_ID in response.json()["errors"]["conversation_id"]


def test_an_empty_conversation_id_is_rejected(api):
    assert_rejected(api.post(message(conversation_id="")), "conversation_id", [BLANK])


def test_a_conversation_id_over_100_characters_is_rejected(api):
    assert_rejected(
        api.post(message(conversation_id="x" * 101)),
        "conversation_id",
        ["Ensure this field has no more than 100 characters."],
    )


def test_an_integer_conversation_id_beyond_64_bits_is_rejected(api):
    # JSON readers hold integers in 64 bits; a longer id must be sent as a string.
    response = api.post_raw('{"sender": "a", "message": "b", "conversation_id": ' + "9" * 101 + "}")

    assert_rejected(response, "conversation_id", [NOT_STRING_OR_INT])


def test_a_sender_over_150_characters_is_rejected(api):
    assert_rejected(
        api.post(message(sender="s" * 151)),
        "sender",
        ["Ensure this field has no more than 150 characters."],
    )


def test_a_sender_of_only_whitespace_is_rejected(api):
    assert_rejected(api.post(message(sender=" \t\n ")), "sender", [BLANK])


def test_a_message_over_10000_characters_is_rejected(api):
    assert_rejected(
        api.post(message(text="m" * 10_001)),
        "message",
        ["Ensure this field has no more than 10000 characters."],
    )


@pytest.mark.parametrize("text", ["", " ", "\n\t  \u3000"])
def test_a_blank_message_is_rejected(api, text):
    assert_rejected(api.post(message(text=text)), "message", [BLANK])


@pytest.mark.parametrize("field", ["sender", "message"])
def test_a_nul_character_is_rejected(api, field):
    assert_rejected(api.post({**message(), field: "a\u0000b"}), field, [NUL])


@pytest.mark.parametrize("field", ["sender", "message", "conversation_id"])
def test_a_lone_surrogate_is_rejected(api, field):
    body = '{"sender": "a", "conversation_id": "c", "message": "m"}'.replace(
        f'"{field}": "', f'"{field}": "\\ud800'
    )
    response = api.post_raw(body)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert not Message.objects.exists()


def test_conversation_id_and_alias_that_differ_are_rejected(api):
    payload = {**message(conversation_id="1234"), "converstaion_id": "5678"}

    assert_rejected(
        api.post(payload),
        "converstaion_id",
        ["Differs from conversation_id; send only conversation_id."],
    )


def test_an_invalid_alias_is_rejected_even_beside_a_valid_id(api):
    payload = {**message(conversation_id="1234"), "converstaion_id": True}

    assert_rejected(api.post(payload), "converstaion_id", [NOT_STRING_OR_INT])


def test_every_bad_field_is_named_in_the_order_of_the_fields(api):
    response = api.post({"conversation_id": "a b", "sender": None, "message": 7})

    assert_rejected(
        response,
        "conversation_id",
        [BAD_ID],
        also={"sender": ["This field may not be null."], "message": [NOT_A_STRING]},
    )


def test_a_field_can_break_two_rules_at_once(api):
    assert_rejected(
        api.post(message(sender="\u0000" * 151)),
        "sender",
        ["Ensure this field has no more than 150 characters.", NUL],
    )


def test_a_too_long_message_of_only_whitespace_is_too_long_first(api):
    assert_rejected(
        api.post(message(text=" " * 10_001)),
        "message",
        ["Ensure this field has no more than 10000 characters."],
    )


def test_rules_between_fields_wait_until_every_field_is_valid(api):
    payload = {"converstaion_id": "5678", "conversation_id": "1234", "sender": "", "message": "m"}

    assert_rejected(api.post(payload, HTTP_IDEMPOTENCY_KEY="caf\u00e9"), "sender", [BLANK])
