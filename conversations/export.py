"""A whole conversation as a file, produced a batch at a time.

Staff download these from the admin. However long the conversation, memory
holds one batch: each is one range scan of the (conversation, id) index
(``selectors.page_rows``), continuing after the last id of the one before.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

import orjson

from .inputs import PageRequest
from .models import Conversation
from .selectors import page_rows

EXPORT_BATCH_SIZE = 2000
CSV_COLUMNS = ["id", "conversation_id", "sender", "message", "created"]
# A spreadsheet runs a cell that starts with one of these as a formula, and
# some skip leading spaces, line feeds, no-break spaces and a byte order mark
# to find it; anyone can send a message, so text cells that do get a leading
# apostrophe (OWASP's advice). The JSON export keeps the text exactly.
FORMULA_START = re.compile(r"[\s\ufeff\u200b-\u200d\u2060]*[=+\-@]|[\t\r]")


def message_batches(conversation: Conversation) -> Iterator[list[dict]]:
    """The conversation's messages, oldest first, as it stood when asked for.

    Messages that arrive while the file is being written are left out, so
    the file is one consistent snapshot.
    """
    newest = conversation.last_message_id or 0
    after = 0
    while after < newest:
        batch = page_rows(
            PageRequest(conversation.pk, limit=EXPORT_BATCH_SIZE, after=after), newest=newest
        )
        if not batch:
            return
        yield batch
        after = batch[-1]["id"]


def as_json(conversation: Conversation) -> Iterator[bytes]:
    """``{"id": ..., "messages": [...]}``, the shape of a history page, one message a line."""
    yield b'{"id":' + orjson.dumps(conversation.pk) + b',"messages":['
    separator = b"\n"
    for batch in message_batches(conversation):
        yield separator + b",\n".join(orjson.dumps(row) for row in batch)
        separator = b",\n"
    yield b"\n]}\n"


def _spreadsheet_safe(text: str) -> str:
    return "'" + text if FORMULA_START.match(text) else text


def as_csv(conversation: Conversation) -> Iterator[str]:
    """RFC 4180 CSV with a header row, one message a row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    for batch in message_batches(conversation):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(
            [
                row["id"],
                _spreadsheet_safe(conversation.pk),
                _spreadsheet_safe(row["sender"]),
                _spreadsheet_safe(row["message"]),
                row["created"],
            ]
            for row in batch
        )
        yield buffer.getvalue()
