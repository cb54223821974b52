from __future__ import annotations

from django.db import models
from django.db.models.functions import Length
from django.db.models.lookups import GreaterThanOrEqual, LessThanOrEqual

CONVERSATION_ID_MAX_LENGTH = 100
SENDER_MAX_LENGTH = 150
MESSAGE_MAX_LENGTH = 10_000
IDEMPOTENCY_KEY_MAX_LENGTH = 255


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
            # The admin lists conversations by last activity, newest first.
            models.Index(fields=["-last_message_at"], name="conversation_last_activity"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=GreaterThanOrEqual(Length("id"), 1), name="conversation_id_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return self.id


class MessageQuerySet(models.QuerySet):
    def page(
        self,
        conversation_id: str,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
    ) -> list[dict]:
        """One page of a conversation's messages, oldest first, as dicts.

        Each page is one range scan of the (conversation, id) index, however
        long the conversation: ``after`` reads forward from an id, otherwise
        the newest ``limit`` messages (older than ``before``, if given) are
        read backwards and reversed.
        """
        rows = self.filter(conversation_id=conversation_id).values(
            "id", "sender", "message", "created"
        )
        if after is not None:
            return list(rows.filter(id__gt=after).order_by("id")[:limit])
        if before is not None:
            rows = rows.filter(id__lt=before)
        return list(reversed(rows.order_by("-id")[:limit]))


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

    objects = MessageQuerySet.as_manager()

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
            models.CheckConstraint(
                condition=GreaterThanOrEqual(Length("sender"), 1), name="message_sender_not_empty"
            ),
            models.CheckConstraint(
                condition=models.Q(GreaterThanOrEqual(Length("message"), 1))
                & models.Q(LessThanOrEqual(Length("message"), MESSAGE_MAX_LENGTH)),
                name="message_length_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sender} in {self.conversation_id} at {self.created:%Y-%m-%d %H:%M:%S}"
