"""History pages: which messages a page holds, its links and its ETag."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.utils.http import parse_etags
from rest_framework.request import Request

from .models import Conversation, Message
from .serializers import PAGE_LIMIT_DEFAULT


@dataclass(frozen=True)
class ConversationState:
    message_count: int = 0
    first_message_id: int = 0
    last_message_id: int = 0

    @classmethod
    def load(cls, conversation_id: str) -> ConversationState:
        """One primary-key lookup; a conversation with no row has no messages."""
        row = Conversation.objects.counters(conversation_id)
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


def history_page(
    conversation_id: str,
    state: ConversationState,
    *,
    limit: int,
    before: int | None,
    after: int | None,
) -> list[dict]:
    """The page's messages, rendered; no query when the counters say it is empty."""
    nothing_there = (
        state.message_count == 0
        or (after is not None and after >= state.last_message_id)
        or (before is not None and before <= state.first_message_id)
    )
    if nothing_there:
        return []
    return Message.objects.page(
        conversation_id, limit=limit, newest=state.last_message_id, before=before, after=after
    )


def page_links(
    request: Request, state: ConversationState, messages: list[dict], *, limit: int
) -> dict[str, str | None]:
    """URLs of the older and the newer page, or None at either end."""
    links: dict[str, str | None] = {"previous": None, "next": None}
    if not messages:
        return links
    kept = {} if limit == PAGE_LIMIT_DEFAULT else {"limit": limit}
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
