"""How a message is written out: the body of POST's 201 and of GET /messages/<id>/.

History pages are shaped by the database itself (conversations.selectors).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .models import Message


def render_created(created: datetime) -> str:
    """UTC, exactly three decimals, and a ``Z``: ``2018-01-17T04:50:14.883Z``."""
    return (
        created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{created.microsecond // 1000:03d}Z"
    )


def message_representation(message: Message) -> dict[str, Any]:
    """A message as the API returns it."""
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "sender": message.sender,
        "message": message.message,
        "created": render_created(message.created),
    }
