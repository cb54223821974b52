"""Concurrent writers on PostgreSQL: nothing fails, nothing is lost, ids follow commit order."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction
from django.test import Client

from conversations.models import Conversation, Message
from conversations.services import message_create
from tests.conftest import postgresql_only

pytestmark = [
    postgresql_only("row locks order concurrent writers there; SQLite runs one write at a time"),
    pytest.mark.django_db(transaction=True),
]

WRITERS = 8
POSTS_EACH = 10


def test_concurrent_first_messages_to_a_new_conversation_are_all_stored_in_each_writers_order():
    start = threading.Barrier(WRITERS)

    def writer(number: int) -> list[int]:
        client = Client()
        start.wait()
        try:
            return [
                client.post(
                    "/messages/",
                    json.dumps(
                        {"sender": f"w{number}", "conversation_id": "race", "message": str(n)}
                    ),
                    content_type="application/json",
                ).status_code
                for n in range(POSTS_EACH)
            ]
        finally:
            connection.close()

    with ThreadPoolExecutor(WRITERS) as pool:
        statuses = [status for result in pool.map(writer, range(WRITERS)) for status in result]

    assert statuses == [201] * WRITERS * POSTS_EACH
    rows = list(Message.objects.filter(conversation_id="race").order_by("id").values())
    assert len(rows) == WRITERS * POSTS_EACH
    for number in range(WRITERS):
        sent = [row["message"] for row in rows if row["sender"] == f"w{number}"]
        assert sent == [str(n) for n in range(POSTS_EACH)]
    created = [row["created"] for row in rows]
    assert created == sorted(created)
    conversation = Conversation.objects.get(pk="race")
    assert conversation.message_count == WRITERS * POSTS_EACH
    assert conversation.first_message_id == rows[0]["id"]
    assert conversation.last_message_id == rows[-1]["id"]
    assert conversation.last_message_at == rows[-1]["created"]


def test_a_writer_waits_for_the_one_before_it_so_ids_follow_commit_order():
    message_create(conversation_id="queue", sender="a", message="exists")
    first_inserted, release_first = threading.Event(), threading.Event()
    first_id: list[int] = []

    def first_writer() -> None:
        try:
            with transaction.atomic():
                first_id.append(
                    message_create(conversation_id="queue", sender="a", message="1")[0].id
                )
                first_inserted.set()
                release_first.wait(timeout=10)
        finally:
            connection.close()

    def second_writer() -> dict:
        try:
            return (
                Client()
                .post(
                    "/messages/",
                    json.dumps({"sender": "b", "conversation_id": "queue", "message": "2"}),
                    content_type="application/json",
                )
                .json()
            )
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(first_writer)
        assert first_inserted.wait(timeout=10)
        second = pool.submit(second_writer)
        with pytest.raises(TimeoutError):
            # The second POST cannot get an id while the first is uncommitted.
            second.result(timeout=0.5)
        release_first.set()
        first.result(timeout=10)
        second_body = second.result(timeout=10)

    assert second_body["id"] > first_id[0]
    assert Conversation.objects.get(pk="queue").message_count == 3
