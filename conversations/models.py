from __future__ import annotations

from django.db import connection, models
from django.db.models.functions import Length
from django.db.models.lookups import GreaterThanOrEqual, LessThanOrEqual

CONVERSATION_ID_MAX_LENGTH = 100
SENDER_MAX_LENGTH = 150
MESSAGE_MAX_LENGTH = 10_000
IDEMPOTENCY_KEY_MAX_LENGTH = 255


# ``created`` as the API renders it (``2018-01-17T04:50:14.883Z``: UTC,
# milliseconds, a ``Z``), computed by the database. A page then reads four
# plain values per message: no timestamp object is built and formatted in
# Python for each row, which was most of a 100-message page's cost.
CREATED_AS_TEXT = {
    "postgresql": """to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')""",
    # Django stores UTC text; SQLite's %f is seconds with three decimals
    # (rounded, where to_char truncates: the same for the whole milliseconds
    # message_create stores).
    "sqlite": "strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', created)",
}


# A page stops once its messages pass this many bytes, as JSON: the largest
# page the contract allows (1,000 messages of 10,000 astral characters) would
# otherwise be a 40 MB answer, held in a worker's memory while it is built.
# The page always holds at least one message, and its links continue from
# where it stopped.
PAGE_MAX_BYTES = 1024 * 1024
# What a message adds to a page beside its sender and text as JSON strings:
# its keys, id and timestamp.
MESSAGE_JSON_OVERHEAD = 80
# A message's size in the page, as the database measures it: its sender and
# text as JSON strings (control characters grow six-fold there), in UTF-8.
MESSAGE_JSON_BYTES = {
    "postgresql": ("octet_length(to_json(sender)::text) + octet_length(to_json(message)::text)"),
    "sqlite": (
        "length(CAST(json_quote(sender) AS BLOB)) + length(CAST(json_quote(message) AS BLOB))"
    ),
}


class ConversationManager(models.Manager):
    def counters(self, conversation_id: str) -> tuple[int, int, int] | None:
        """(message_count, first_message_id, last_message_id), by primary key.

        Every history request starts here, a 304 ends here: plain SQL keeps it
        one round trip with nothing to build.
        """
        table = connection.ops.quote_name(self.model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT message_count, first_message_id, last_message_id FROM {table} "
                "WHERE id = %s",
                [conversation_id],
            )
            return cursor.fetchone()


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

    objects = ConversationManager()

    class Meta:
        indexes = [
            # The admin lists conversations by last activity, newest first;
            # the id breaks ties between messages stored in the same millisecond.
            models.Index(
                fields=["-last_message_at", "-last_message_id"], name="conversation_last_activity"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(GreaterThanOrEqual(Length("id"), 1))
                & models.Q(LessThanOrEqual(Length("id"), CONVERSATION_ID_MAX_LENGTH)),
                name="conversation_id_length_in_range",
            ),
        ]

    def __str__(self) -> str:
        return self.id


class MessageManager(models.Manager):
    def page_sql(
        self,
        conversation_id: str,
        *,
        limit: int,
        newest: int,
        before: int | None = None,
        after: int | None = None,
    ) -> tuple[str, list]:
        """The SQL of one page, and its parameters (``page`` runs it; tests EXPLAIN it).

        ``newest`` is the conversation's newest message id as its counters
        say. Bounding the scan by it starts every page at a known id, so the
        cost is one index range scan whatever the conversation's length,
        whichever index the planner picks; and a page never holds a message
        newer than the counters its ETag and links were made from.
        """
        table = connection.ops.quote_name(self.model._meta.db_table)
        created = CREATED_AS_TEXT[connection.vendor]
        size = f"{MESSAGE_JSON_BYTES[connection.vendor]} + {MESSAGE_JSON_OVERHEAD}"
        if after is not None:
            order, bounds = "", "id > %s AND id <= %s"
            params = [conversation_id, after, newest, limit]
        else:
            upper = newest if before is None else min(newest, before - 1)
            order, bounds = " DESC", "id <= %s"
            params = [conversation_id, upper, limit]
        # The range scan reads up to ``limit`` rows in page order; a running
        # total of their sizes keeps those that start within the byte budget,
        # so the first is always kept and the last one kept may pass it.
        sql = (
            "SELECT id, sender, message, created FROM ("
            f"SELECT *, SUM(size) OVER (ORDER BY id{order} ROWS UNBOUNDED PRECEDING) AS reach "
            f"FROM (SELECT id, sender, message, {created} AS created, {size} AS size "
            f"FROM {table} WHERE conversation_id = %s AND {bounds} ORDER BY id{order} LIMIT %s"
            ") AS scanned"
            f") AS page WHERE reach - size < %s ORDER BY id{order}"
        )
        return sql, [*params, PAGE_MAX_BYTES]

    def page(
        self,
        conversation_id: str,
        *,
        limit: int,
        newest: int,
        before: int | None = None,
        after: int | None = None,
    ) -> list[dict]:
        """One page of a conversation's messages, oldest first, as the API renders them.

        ``after`` reads forward from an id; otherwise the newest ``limit``
        messages (older than ``before``, if given) are read backwards and
        reversed. Plain SQL: this is the hottest query of the service, and
        building it through the ORM cost as much as running it.
        """
        sql, params = self.page_sql(
            conversation_id, limit=limit, newest=newest, before=before, after=after
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if after is None:
            rows.reverse()
        return [
            {"id": id, "sender": sender, "message": message, "created": created}
            for id, sender, message, created in rows
        ]


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

    objects = MessageManager()

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
                condition=models.Q(GreaterThanOrEqual(Length("sender"), 1))
                & models.Q(LessThanOrEqual(Length("sender"), SENDER_MAX_LENGTH)),
                name="message_sender_length_in_range",
            ),
            models.CheckConstraint(
                condition=models.Q(GreaterThanOrEqual(Length("message"), 1))
                & models.Q(LessThanOrEqual(Length("message"), MESSAGE_MAX_LENGTH)),
                name="message_length_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sender} in {self.conversation_id} at {self.created:%Y-%m-%d %H:%M:%S}"
