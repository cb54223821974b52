"""Live delivery: GET /conversations/<id>/events, a Server-Sent Events stream."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.services import EVENTS_CHANNEL
from tests.conftest import message, postgresql_only


def listening_connection() -> psycopg.Connection:
    """A connection of its own to the test database, listening on the events channel."""
    listener = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    listener.execute(f"LISTEN {EVENTS_CHANNEL}")
    return listener


@postgresql_only("NOTIFY is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_stored_message_notifies_its_conversation_and_id_on_commit(api):
    with listening_connection() as listener:
        response = api.post(message("tea-room"))

        notified = [(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=1)]

    assert notified == [(EVENTS_CHANNEL, f"tea-room {response.json()['id']}")]


@postgresql_only("NOTIFY is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_replayed_post_notifies_nothing(api):
    api.post(message("tea-room"), HTTP_IDEMPOTENCY_KEY="k-1")
    with listening_connection() as listener:
        api.post(message("tea-room"), HTTP_IDEMPOTENCY_KEY="k-1")

        notified = list(listener.notifies(timeout=1))

    assert notified == []


@pytest.mark.django_db(transaction=True)
def test_storing_a_message_stays_three_statements_in_one_transaction(api):
    api.post(message("tea-room"))

    with CaptureQueriesContext(connection) as captured:
        response = api.post(message("tea-room"))

    assert response.status_code == 201
    statements = [query["sql"].split()[0] for query in captured.captured_queries]
    assert statements == ["BEGIN", "INSERT", "INSERT", "UPDATE", "COMMIT"]
