"""The write path: the one way a message is stored."""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import Conversation, Message


def _conversation_create_or_lock(conversation_id: str) -> None:
    """Create the conversation, or lock its row if it exists, in one statement.

    On PostgreSQL the upsert holds the conversation's row lock until commit,
    so writers to one conversation take their turn: each message gets its id
    and its ``created`` after the previous writer committed, and ids within a
    conversation follow commit order (a reader paging with ``?after=`` never
    misses a message). Concurrent first messages meet at the primary key and
    the loser takes the update branch instead of failing. On SQLite the
    IMMEDIATE transaction already serialises all writers.
    """
    table = connection.ops.quote_name(Conversation._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, message_count) VALUES (%s, 1) "
            f"ON CONFLICT (id) DO UPDATE SET message_count = {table}.message_count + 1",
            [conversation_id],
        )


def _now_to_the_millisecond() -> datetime:
    # The API renders milliseconds; storing exactly that keeps what a client
    # sees and what the database holds the same value.
    now = timezone.now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def message_create(*, conversation_id: str, sender: str, message: str) -> Message:
    """Store a message, creating its conversation on its first message.

    Three statements in one transaction: create-or-lock the conversation,
    insert the message, record it in the conversation's counters. The caller
    sees the message only after the transaction has committed.
    """
    with transaction.atomic():
        _conversation_create_or_lock(conversation_id)
        created = _now_to_the_millisecond()
        stored = Message.objects.create(
            conversation_id=conversation_id, sender=sender, message=message, created=created
        )
        Conversation.objects.filter(pk=conversation_id).update(
            first_message_id=Coalesce(F("first_message_id"), Value(stored.id)),
            first_message_at=Coalesce(
                F("first_message_at"), Value(created, output_field=DateTimeField())
            ),
            last_message_id=stored.id,
            last_message_at=created,
        )
    return stored
