"""The read path: a conversation's state and ETag, a page of its history, and the links.

Every history request reads the conversation's counters (one primary-key
lookup), answers a 304 from them or reads one page (one index range scan),
and links the pages on either side. With read replicas configured, both
queries run on a replica that has shown it holds the reader's writes
(chatproject.replicas), or else on the primary. Both
queries are plain SQL: this is the hottest path of the service, and building
them through the ORM costs about as much as running them
(docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.db import connections
from django.utils.http import parse_etags
from rest_framework.request import Request

from chatproject.replicas import PRIMARY, replica_read

from .inputs import PageRequest
from .models import Conversation, Message
from .rules import PAGE_LIMIT_DEFAULT, PAGE_MAX_BYTES

# ``created`` as the API renders it (``2018-01-17T04:50:14.883Z``: UTC,
# milliseconds, a ``Z``), computed by the database. A page then reads four
# plain values per message: no timestamp object is built and formatted in
# Python for each row, the largest part of a long page's CPU before
# (docs/performance.md).
CREATED_AS_TEXT = {
    "postgresql": """to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')""",
    # Django stores UTC text; SQLite's %f is seconds with three decimals
    # (rounded, where to_char truncates: the same for the whole milliseconds
    # message_create stores).
    "sqlite": "strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', created)",
}

# A message's size in a page, as the database measures it: its sender and
# text as JSON strings, in UTF-8 (a control character is six bytes there),
# plus what its keys, id and timestamp add.
MESSAGE_JSON_BYTES = {
    "postgresql": "octet_length(to_json(sender)::text) + octet_length(to_json(message)::text)",
    "sqlite": (
        "length(CAST(json_quote(sender) AS BLOB)) + length(CAST(json_quote(message) AS BLOB))"
    ),
}
MESSAGE_JSON_OVERHEAD = 80


@dataclass(frozen=True)
class ConversationState:
    """The conversation's counters, kept by ``services.message_create`` with each insert."""

    message_count: int = 0
    first_message_id: int = 0
    last_message_id: int = 0

    @classmethod
    def load(cls, conversation_id: str, *, using: str = PRIMARY) -> ConversationState:
        """One primary-key lookup; a conversation with no row has no messages."""
        connection = connections[using]
        table = connection.ops.quote_name(Conversation._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT message_count, first_message_id, last_message_id FROM {table} "
                "WHERE id = %s",
                [conversation_id],
            )
            row = cursor.fetchone()
        return cls(*row) if row and row[0] else cls()

    @property
    def etag(self) -> str:
        # Messages are only ever added, with ids that grow: a page's content
        # can change only if the count or the newest id does. Pages are read
        # up to the newest id these counters name, so the tag labels exactly
        # the page it is sent with.
        return f'"m{self.message_count}.{self.last_message_id}"'

    def matches(self, if_none_match: str) -> bool:
        tags = {tag.removeprefix("W/") for tag in parse_etags(if_none_match)}
        return "*" in tags or self.etag in tags


def page_sql(
    page: PageRequest, *, newest: int, using: str = PRIMARY, with_reach: bool = False
) -> tuple[str, list]:
    """The SQL of one page, and its parameters (``page_rows`` runs it; tests EXPLAIN it).

    ``newest`` is the conversation's newest message id as its counters say.
    Bounding the scan by it starts every page at a known id, so the cost is
    one index range scan whatever the conversation's length, whichever index
    the planner picks; and a page never holds a message newer than the
    counters its ETag and links were made from. ``with_reach`` adds each
    row's running size in bytes, which ``page_cut`` reads.
    """
    connection = connections[using]
    table = connection.ops.quote_name(Message._meta.db_table)
    created = CREATED_AS_TEXT[connection.vendor]
    size = f"{MESSAGE_JSON_BYTES[connection.vendor]} + {MESSAGE_JSON_OVERHEAD}"
    if page.after is not None:
        order, bounds = "", "id > %s AND id <= %s"
        params = [page.conversation_id, page.after, newest, page.limit]
    else:
        upper = newest if page.before is None else min(newest, page.before - 1)
        order, bounds = " DESC", "id <= %s"
        params = [page.conversation_id, upper, page.limit]
    # The range scan reads up to ``limit`` rows in page order; a running total
    # of their sizes keeps those that start within PAGE_MAX_BYTES, so the
    # first is always kept and the last one kept may pass it. The page's
    # links then continue from the last message it holds.
    columns = (
        "id, sender, message, created, reach" if with_reach else "id, sender, message, created"
    )
    sql = (
        f"SELECT {columns} FROM ("
        f"SELECT *, SUM(size) OVER (ORDER BY id{order} ROWS UNBOUNDED PRECEDING) AS reach "
        f"FROM (SELECT id, sender, message, {created} AS created, {size} AS size "
        f"FROM {table} WHERE conversation_id = %s AND {bounds} ORDER BY id{order} LIMIT %s"
        ") AS scanned"
        f") AS page WHERE reach - size < %s ORDER BY id{order}"
    )
    return sql, [*params, PAGE_MAX_BYTES]


def page_cut(rows: list[tuple]) -> bool:
    """Whether ``page_sql(..., with_reach=True)``'s rows, in the query's order, may stop short.

    The first row left out would have started at the last kept row's reach,
    so a page whose reach stays under PAGE_MAX_BYTES holds every row that
    its ``limit`` allows. A reach at or past it may also just be the end.
    """
    return bool(rows) and rows[-1][4] >= PAGE_MAX_BYTES


def later_count_sql(
    conversation_id: str, *, after: int, limit: int, using: str = PRIMARY
) -> tuple[str, list]:
    """How many of the conversation's messages come after ``after``, counted up to ``limit``.

    An index-only range scan: it reads no message text.
    """
    table = connections[using].ops.quote_name(Message._meta.db_table)
    sql = (
        f"SELECT COUNT(*) FROM (SELECT id FROM {table} "
        "WHERE conversation_id = %s AND id > %s ORDER BY id LIMIT %s) AS later"
    )
    return sql, [conversation_id, after, limit]


def page_rows(page: PageRequest, *, newest: int, using: str = PRIMARY) -> list[dict]:
    """One page of messages, oldest first, shaped as a history page lists them.

    ``after`` reads forward from an id; otherwise the newest ``limit``
    messages (older than ``before``, if given) are read backwards and
    reversed; either stops once it passes PAGE_MAX_BYTES. The admin and the
    exports read pages through it too.
    """
    sql, params = page_sql(page, newest=newest, using=using)
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return page_messages(page, cursor.fetchall())


def page_messages(page: PageRequest, rows: list[tuple]) -> list[dict]:
    """``page_sql``'s rows, oldest first, shaped as a history page lists them.

    The live events read the same query on a connection of their own.
    """
    if page.after is None:
        rows.reverse()
    return [
        {"id": id, "sender": sender, "message": message, "created": created}
        for id, sender, message, created in rows
    ]


def history_page(
    page: PageRequest, state: ConversationState, *, using: str = PRIMARY
) -> list[dict]:
    """The page's messages; no query when the counters say it is empty."""
    nothing_there = (
        state.message_count == 0
        or (page.after is not None and page.after >= state.last_message_id)
        or (page.before is not None and page.before <= state.first_message_id)
    )
    if nothing_there:
        return []
    return page_rows(page, newest=state.last_message_id, using=using)


@dataclass(frozen=True)
class HistoryRead:
    state: ConversationState
    # None when the client's copy is current: the answer is a 304.
    messages: list[dict] | None


def history_read(page: PageRequest, *, if_none_match: str, token: int | None) -> HistoryRead:
    """The counters and, unless ``If-None-Match`` names them, the page, from one database.

    ``token`` is the reader's Consistency-Token, if it sent a well-formed one.
    """

    def read(using: str) -> HistoryRead:
        state = ConversationState.load(page.conversation_id, using=using)
        if state.matches(if_none_match):
            return HistoryRead(state, None)
        return HistoryRead(state, history_page(page, state, using=using))

    return replica_read(read, token)


def message_read(message_id: int, *, token: int | None) -> Message | None:
    """One message, or None; a replica that lacks it leaves the answer to the primary."""

    def read(using: str) -> Message | None:
        try:
            return Message.objects.using(using).get(pk=message_id)
        except Message.DoesNotExist:
            return None

    return replica_read(read, token)


def page_links(
    request: Request, page: PageRequest, state: ConversationState, messages: list[dict]
) -> dict[str, str | None]:
    """URLs of the older and the newer page, or None at either end."""
    links: dict[str, str | None] = {"previous": None, "next": None}
    if not messages:
        return links
    kept = {} if page.limit == PAGE_LIMIT_DEFAULT else {"limit": page.limit}
    if messages[0]["id"] > state.first_message_id:
        query = urlencode({"before": messages[0]["id"], **kept})
        links["previous"] = request.build_absolute_uri(f"{request.path}?{query}")
    if messages[-1]["id"] < state.last_message_id:
        query = urlencode({"after": messages[-1]["id"], **kept})
        links["next"] = request.build_absolute_uri(f"{request.path}?{query}")
    return links


def link_header(links: dict[str, str | None]) -> str:
    """The same links as an RFC 8288 ``Link`` header."""
    relations = {"previous": "prev", "next": "next"}
    return ", ".join(f'<{url}>; rel="{relations[name]}"' for name, url in links.items() if url)
