"""Idempotency-Key: a retried POST stores nothing new and gets the original answer."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation, Message
from tests.conftest import assert_problem, message, postgresql_only

pytestmark = pytest.mark.django_db

KEY = "retry-7f3c1a"


def post_with_key(api, payload: dict, key: str = KEY):
    return api.post(payload, HTTP_IDEMPOTENCY_KEY=key)


def test_a_retry_with_the_same_key_and_payload_returns_the_original_response(api):
    first = post_with_key(api, message())
    api.post(message(text="something in between"))
    retry = post_with_key(api, message())

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry["Location"] == first["Location"]
    assert retry["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Message.objects.count() == 2
    conversation = Conversation.objects.get()
    assert conversation.message_count == 2
    assert conversation.last_message_id != first.json()["id"]


def test_the_key_is_stored_with_the_message(api):
    body = post_with_key(api, message()).json()

    assert Message.objects.get(pk=body["id"]).idempotency_key == KEY


def test_a_sender_that_differs_only_in_surrounding_whitespace_is_the_same_payload(api):
    first = post_with_key(api, message(sender="anson"))
    retry = post_with_key(api, message(sender=" anson "))

    assert retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]


@pytest.mark.parametrize("change", [{"message": "another text"}, {"sender": "someone else"}])
def test_the_same_key_with_a_different_payload_is_a_422(api, change):
    original = post_with_key(api, message()).json()

    response = post_with_key(api, {**message(), **change})

    assert_problem(
        response,
        422,
        "This Idempotency-Key already stored a different message in this conversation; "
        "a retry must repeat the same sender and message, a new message needs a new key.",
    )
    assert list(Message.objects.values_list("id", flat=True)) == [original["id"]]
    assert Conversation.objects.get().message_count == 1


def test_keys_are_scoped_to_the_conversation(api):
    first = post_with_key(api, message(conversation_id="one"))
    second = post_with_key(api, message(conversation_id="two"))

    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second
    assert second.json()["id"] != first.json()["id"]


def test_messages_without_a_key_are_never_replays(api):
    api.post(message())
    response = api.post(message())

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert Message.objects.count() == 2


@pytest.mark.parametrize("key", ["a", "x" * 255, "with spaces and ~!@#$%^&*()", "0"])
def test_keys_of_1_to_255_printable_ascii_characters_are_accepted(api, key):
    assert post_with_key(api, message(), key=key).status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there", "bell\x07"])
def test_other_keys_are_a_400(api, key):
    response = post_with_key(api, message(), key=key)

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "Idempotency-Key": ["Use 1 to 255 printable ASCII characters."]
    }
    assert not Message.objects.exists()


def test_a_keyed_post_and_its_replay_cost_three_statements_each(api):
    with CaptureQueriesContext(connection) as first:
        post_with_key(api, message())
    with CaptureQueriesContext(connection) as replay:
        assert post_with_key(api, message())["Idempotent-Replayed"] == "true"

    # Inside the test's transaction, atomic() opens a savepoint where production
    # opens a transaction; the replay rolls its write transaction back.
    def verbs(captured):
        return [query["sql"].split()[0] for query in captured.captured_queries]

    assert verbs(first) == ["SAVEPOINT", "INSERT", "INSERT", "UPDATE", "RELEASE"]
    assert verbs(replay) == ["SAVEPOINT", "INSERT", "INSERT", "ROLLBACK", "RELEASE", "SELECT"]


@postgresql_only("only PostgreSQL runs these requests truly at once")
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_store_one_message_and_all_get_its_id():
    writers = 8
    start = threading.Barrier(writers)

    def send(_: int):
        client = Client()
        start.wait()
        try:
            response = client.post(
                "/messages/",
                json.dumps(message(conversation_id="same-key")),
                content_type="application/json",
                HTTP_IDEMPOTENCY_KEY=KEY,
            )
            return response.status_code, response.json()["id"]
        finally:
            connection.close()

    with ThreadPoolExecutor(writers) as pool:
        answers = list(pool.map(send, range(writers)))

    stored = list(Message.objects.filter(conversation_id="same-key").values_list("id", flat=True))
    assert len(stored) == 1
    assert answers == [(201, stored[0])] * writers
    assert Conversation.objects.get(pk="same-key").message_count == 1
