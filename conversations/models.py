"""The schema: fields, indexes and constraints. Writes are in services.py, reads in selectors.py."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Length
from django.db.models.lookups import GreaterThanOrEqual, LessThanOrEqual

from .rules import (
    CONVERSATION_ID_MAX_LENGTH,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    MESSAGE_MAX_LENGTH,
    SENDER_MAX_LENGTH,
)


def length_in_range(field: str, max_length: int, *, name: str) -> models.CheckConstraint:
    """The database's own check that a text is 1 to ``max_length`` characters."""
    return models.CheckConstraint(
        condition=models.Q(GreaterThanOrEqual(Length(field), 1))
        & models.Q(LessThanOrEqual(Length(field), max_length)),
        name=name,
    )


class Conversation(models.Model):
    """A conversation exists from its first message.

    The counters are kept by ``services.message_create`` in the same
    transaction as each insert, so a history page and its ETag can be answered
    from this one row without counting or scanning the messages table.
    """

    id = models.CharField(primary_key=True, max_length=CONVERSATION_ID_MAX_LENGTH)
    message_count = models.PositiveIntegerField(default=0)
    first_message_id = models.BigIntegerField(null=True, blank=True)
    last_message_id = models.BigIntegerField(null=True, blank=True)
    first_message_at = models.DateTimeField(null=True, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The admin lists conversations by last activity, newest first;
            # the id breaks ties between messages stored in the same millisecond.
            models.Index(
                fields=["-last_message_at", "-last_message_id"], name="conversation_last_activity"
            ),
        ]
        constraints = [
            length_in_range(
                "id", CONVERSATION_ID_MAX_LENGTH, name="conversation_id_length_in_range"
            ),
        ]

    def __str__(self) -> str:
        return self.id


class Message(models.Model):
    conversation = models.ForeignKey(
        Conversation,
        on_delete=models.CASCADE,
        related_name="messages",
        # Covered by the (conversation, id) index below.
        db_index=False,
    )
    sender = models.CharField(max_length=SENDER_MAX_LENGTH)
    message = models.TextField()
    created = models.DateTimeField()
    # The client's Idempotency-Key, kept with the message so that a retry is
    # answered with it for as long as the message exists. NULL, not "", when
    # absent: the unique constraint below applies only to messages with a key.
    idempotency_key = models.CharField(  # noqa: DJ001
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH, null=True, blank=True, editable=False
    )

    class Meta:
        indexes = [
            # Every history page is a range over one conversation's ids:
            # newest first (default and ?before=), or oldest first (?after=).
            models.Index(fields=["conversation", "id"], name="message_conversation_page"),
        ]
        constraints = [
            # Keys are scoped to a conversation. Partial, so messages sent
            # without a key cost this index nothing.
            models.UniqueConstraint(
                fields=["conversation", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="message_idempotency_key_unique",
            ),
            length_in_range("sender", SENDER_MAX_LENGTH, name="message_sender_length_in_range"),
            length_in_range("message", MESSAGE_MAX_LENGTH, name="message_length_in_range"),
        ]

    def __str__(self) -> str:
        return f"{self.sender} in {self.conversation_id} at {self.created:%Y-%m-%d %H:%M:%S}"
