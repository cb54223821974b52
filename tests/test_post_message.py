"""POST /messages/: what is accepted, how it is stored, what comes back."""

import re

import pytest

from conversations.models import Conversation, Message
from tests.conftest import message

pytestmark = pytest.mark.django_db

CREATED_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_posting_to_a_new_conversation_creates_it(api):
    response = api.post(message())

    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": body["id"],
        "conversation_id": "1234",
        "sender": "anson",
        "message": "I'm a teapot",
        "created": body["created"],
    }
    assert isinstance(body["id"], int)
    conversation = Conversation.objects.get(pk="1234")
    assert conversation.message_count == 1
    assert conversation.first_message_id == conversation.last_message_id == body["id"]


def test_created_is_utc_with_exactly_milliseconds_and_a_z(api):
    created = api.post(message()).json()["created"]

    assert CREATED_FORMAT.fullmatch(created)
    stored = Message.objects.get().created
    assert stored.microsecond % 1000 == 0
    assert created.startswith(stored.strftime("%Y-%m-%dT%H:%M:%S"))


def test_location_points_at_the_message_which_returns_the_same_body(api):
    response = api.post(message())
    body = response.json()

    assert response.headers["Location"] == f"http://testserver/messages/{body['id']}/"
    fetched = api.get(f"/messages/{body['id']}/")
    assert fetched.status_code == 200
    assert fetched.json() == body


def test_a_message_can_be_fetched_without_the_trailing_slash(api):
    body = api.post(message()).json()

    assert api.get(f"/messages/{body['id']}").json() == body


def test_posting_without_the_trailing_slash_works(api):
    response = api.post(message(), path="/messages")

    assert response.status_code == 201
    assert Message.objects.count() == 1


def test_a_second_message_updates_the_conversation_counters(api):
    first = api.post(message()).json()
    second = api.post(message(sender="bob", text="hello")).json()

    conversation = Conversation.objects.get(pk="1234")
    assert conversation.message_count == 2
    assert conversation.first_message_id == first["id"]
    assert conversation.last_message_id == second["id"]
    assert second["id"] > first["id"]
    assert conversation.last_message_at >= conversation.first_message_at


def test_sender_is_stored_trimmed(api):
    body = api.post(message(sender="  anson \t")).json()

    assert body["sender"] == "anson"
    assert Message.objects.get().sender == "anson"


def test_message_is_stored_exactly_as_sent(api):
    text = "  two leading spaces, a tab\\t, unicode ☕ 👍🏽 and a trailing newline\n"
    body = api.post(message(text=text)).json()

    assert body["message"] == text
    assert Message.objects.get().message == text


def test_an_integer_conversation_id_is_stored_as_its_decimal_string(api):
    body = api.post(message(conversation_id=1234)).json()

    assert body["conversation_id"] == "1234"
    assert Conversation.objects.get().pk == "1234"


@pytest.mark.parametrize("conversation_id", ["a", "A-z.0_9~:@+", "x" * 100, "-5", "..."])
def test_every_allowed_conversation_id_character_is_accepted(api, conversation_id):
    response = api.post(message(conversation_id=conversation_id))

    assert response.status_code == 201
    assert response.json()["conversation_id"] == conversation_id


def test_the_misspelled_converstaion_id_is_accepted_as_an_alias(api):
    payload = {"sender": "anson", "converstaion_id": "1234", "message": "hi"}
    response = api.post(payload)

    assert response.status_code == 201
    assert response.json()["conversation_id"] == "1234"
    assert "converstaion_id" not in response.json()


def test_the_alias_may_repeat_the_same_conversation_id(api):
    payload = {**message(conversation_id="1234"), "converstaion_id": 1234}

    assert api.post(payload).status_code == 201


def test_unknown_extra_fields_are_ignored(api):
    response = api.post({**message(), "id": 999, "created": "1999-01-01T00:00:00.000Z", "x": [1]})

    assert response.status_code == 201
    assert response.json()["id"] != 999
    assert not response.json()["created"].startswith("1999")


def test_limits_are_inclusive(api):
    response = api.post(message(sender="s" * 150, text="m" * 10_000))

    assert response.status_code == 201


def test_length_counts_characters_not_bytes(api):
    response = api.post(message(sender="é" * 150, text="👍" * 10_000))

    assert response.status_code == 201
    assert Message.objects.get().message == "👍" * 10_000
