"""The write path: the one way a message is stored."""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from api.errors import DomainError

from .models import Conversation, Message
from .rules import IDEMPOTENCY_KEY_REUSED


class IdempotencyKeyReused(DomainError):
    """The key already stored a different message in this conversation (a 422)."""

    def __init__(self) -> None:
        super().__init__(IDEMPOTENCY_KEY_REUSED)


class _AlreadyStored(Exception):
    """Raised inside the write transaction to roll it back on a replay."""


def _to_the_millisecond(when: datetime) -> datetime:
    # The API renders milliseconds; storing exactly that keeps what a client
    # sees and what the database holds the same value.
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def _conversation_create_or_lock(cursor: CursorWrapper, conversation_id: str) -> None:
    """Create the conversation, or count one more message in it, in one statement.

    On PostgreSQL the upsert holds the conversation's row lock until commit,
    so writers to one conversation take their turn: each message gets its id
    and its ``created`` after the previous writer committed, and ids within a
    conversation follow commit order (a reader paging with ``?after=`` never
    misses a message). Concurrent first messages meet at the primary key and
    the loser takes the update branch instead of failing. On SQLite the
    IMMEDIATE transaction already serialises all writers.
    """
    table = connection.ops.quote_name(Conversation._meta.db_table)
    cursor.execute(
        f"INSERT INTO {table} (id, message_count) VALUES (%s, 1) "
        f"ON CONFLICT (id) DO UPDATE SET message_count = {table}.message_count + 1",
        [conversation_id],
    )


def _message_insert(cursor: CursorWrapper, message: Message) -> int | None:
    """Insert the message and return its id, or None if its key is already stored.

    Under the conversation's lock no other writer can be storing the same
    key, so a conflict here always means a committed earlier request.
    """
    table = connection.ops.quote_name(Message._meta.db_table)
    cursor.execute(
        f"INSERT INTO {table} (conversation_id, sender, message, created, idempotency_key) "
        "VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (conversation_id, idempotency_key) WHERE idempotency_key IS NOT NULL "
        "DO NOTHING RETURNING id",
        [
            message.conversation_id,
            message.sender,
            message.message,
            connection.ops.adapt_datetimefield_value(message.created),
            message.idempotency_key,
        ],
    )
    row = cursor.fetchone()
    return row[0] if row else None


# The channel that live event streams LISTEN on (conversations/events.py).
EVENTS_CHANNEL = "chat_messages"


def _conversation_record(cursor: CursorWrapper, message: Message) -> None:
    """Point the conversation's counters at its new newest message.

    On PostgreSQL the same statement NOTIFYs the live event streams: inside
    the transaction, so the notification is delivered only if it commits, and
    in commit order. The payload is the two ids, never the text, which could
    pass NOTIFY's 8,000-byte limit and abort the insert.
    """
    table = connection.ops.quote_name(Conversation._meta.db_table)
    created = connection.ops.adapt_datetimefield_value(message.created)
    params = [message.id, created, message.id, created, message.conversation_id]
    notify = ""
    if connection.vendor == "postgresql":
        notify = f" RETURNING pg_notify('{EVENTS_CHANNEL}', %s)"
        params.append(f"{message.conversation_id} {message.id}")
    cursor.execute(
        f"UPDATE {table} SET last_message_id = %s, last_message_at = %s, "
        "first_message_id = COALESCE(first_message_id, %s), "
        f"first_message_at = COALESCE(first_message_at, %s) WHERE id = %s{notify}",
        params,
    )


def message_create(
    *,
    conversation_id: str,
    sender: str,
    message: str,
    idempotency_key: str | None = None,
    created: datetime | None = None,
) -> tuple[Message, bool]:
    """Store a message, creating its conversation on its first message.

    Returns the message and whether it is a replay: a message already stored
    under the same ``idempotency_key`` in this conversation, with the same
    sender and text, is returned as it was and nothing new is stored. The
    same key with a different payload raises ``IdempotencyKeyReused``.

    ``created`` is for demo data and imports, never for the API: the time to
    store instead of now (to the millisecond). The caller keeps it in order
    with the conversation's other messages.

    Three statements in one transaction: create-or-lock the conversation,
    insert the message, record it in the conversation. The caller sees the
    message only after the transaction has committed. The statements are
    plain SQL: the upsert and the conflict-tolerant insert have no ORM form,
    and building the ORM's UPDATE costs more than the round trip it makes
    (docs/performance.md).
    """
    new = Message(
        conversation_id=conversation_id,
        sender=sender,
        message=message,
        idempotency_key=idempotency_key,
    )
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            _conversation_create_or_lock(cursor, conversation_id)
            new.created = _to_the_millisecond(created or timezone.now())
            new.id = _message_insert(cursor, new)
            if new.id is None:
                raise _AlreadyStored
            _conversation_record(cursor, new)
    except _AlreadyStored:
        stored = Message.objects.get(
            conversation_id=conversation_id, idempotency_key=idempotency_key
        )
        if (stored.sender, stored.message) != (sender, message):
            raise IdempotencyKeyReused from None
        return stored, True
    return new, False


def conversation_erase(*, conversation_id: str) -> int:
    """Remove a conversation for good: its messages, their keys, and its counters.

    For a person's request to have their data deleted. One transaction: the
    conversation's row is locked first, so no message can join it half-way,
    and either everything goes or nothing does. Returns how many messages
    were removed; a message posted to the id afterwards starts a new
    conversation. Raises ``Conversation.DoesNotExist`` if there is none.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        removed, _ = Message.objects.filter(conversation_id=conversation.pk).delete()
        Conversation.objects.filter(pk=conversation.pk).delete()
    return removed
