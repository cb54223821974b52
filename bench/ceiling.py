"""The ceiling: a bare WSGI app that does the least the same contract needs.

No Django, no DRF: psycopg with one connection per thread (statements are
prepared by psycopg after a few uses), orjson for JSON. It answers the same
requests with the same status codes, headers that matter and bodies as the
service, so the benchmark can show the service's throughput as a fraction of
what this stack can do at all. Run by ``bench/run.py`` under the same
gunicorn settings as the service (``gunicorn bench.ceiling:app``).
"""

from __future__ import annotations

import os
import re
import threading
from datetime import UTC, datetime

import orjson
import psycopg

# The contract's limits, from the one place the service reads them (a plain
# module: importing it brings in no Django).
from conversations.rules import (
    CONVERSATION_ID_CHARACTERS,
    CONVERSATION_ID_MAX_LENGTH,
    MESSAGE_MAX_LENGTH,
    PAGE_LIMIT_DEFAULT,
    SENDER_MAX_LENGTH,
)

DATABASE_URL = os.environ["DATABASE_URL"]
ID_RE = re.compile(f"[{CONVERSATION_ID_CHARACTERS}]{{1,{CONVERSATION_ID_MAX_LENGTH}}}")
local = threading.local()

UPSERT = """
    INSERT INTO conversations_conversation (id, message_count) VALUES (%s, 1)
    ON CONFLICT (id) DO UPDATE SET message_count = conversations_conversation.message_count + 1
"""
INSERT = """
    INSERT INTO conversations_message (conversation_id, sender, message, created)
    VALUES (%s, %s, %s, %s) RETURNING id
"""
RECORD = """
    UPDATE conversations_conversation SET last_message_id = %s, last_message_at = %s,
        first_message_id = COALESCE(first_message_id, %s),
        first_message_at = COALESCE(first_message_at, %s)
    WHERE id = %s
"""
STATE = """
    SELECT message_count, first_message_id, last_message_id
    FROM conversations_conversation WHERE id = %s
"""
# Bounded by the conversation's newest id, read with its counters, as the
# service does: a range scan that starts at the page, whatever the length.
# PostgreSQL renders ``created`` as the API does, as the service has it do:
# cheaper than a timestamp object per row formatted in Python.
PAGE = """
    SELECT id, sender, message,
           to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    FROM conversations_message
"""
NEWEST = PAGE + "WHERE conversation_id = %s AND id <= %s ORDER BY id DESC LIMIT %s"
AFTER = PAGE + "WHERE conversation_id = %s AND id > %s AND id <= %s ORDER BY id LIMIT %s"


def connection() -> psycopg.Connection:
    conn = getattr(local, "conn", None)
    if conn is None or conn.closed:
        conn = local.conn = psycopg.connect(
            DATABASE_URL, autocommit=True, application_name="ceiling"
        )
    return conn


def created_text(created: datetime) -> str:
    return (
        created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{created.microsecond // 1000:03d}Z"
    )


def respond(start_response, status: str, body: bytes, headers: list | None = None) -> list[bytes]:
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        + (headers or []),
    )
    return [body]


def post_message(environ, start_response) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data = orjson.loads(environ["wsgi.input"].read(length))
    conversation_id, sender, text = data["conversation_id"], data["sender"].strip(), data["message"]
    if not (
        ID_RE.fullmatch(conversation_id)
        and 0 < len(sender) <= SENDER_MAX_LENGTH
        and 0 < len(text) <= MESSAGE_MAX_LENGTH
    ):
        return respond(start_response, "400 Bad Request", b'{"status":400}')
    now = datetime.now(UTC)
    created = now.replace(microsecond=now.microsecond // 1000 * 1000)
    conn = connection()
    with conn.transaction():
        conn.execute(UPSERT, (conversation_id,))
        message_id = conn.execute(INSERT, (conversation_id, sender, text, created)).fetchone()[0]
        conn.execute(RECORD, (message_id, created, message_id, created, conversation_id))
    body = orjson.dumps(
        {
            "id": message_id,
            "conversation_id": conversation_id,
            "sender": sender,
            "message": text,
            "created": created_text(created),
        }
    )
    location = f"http://{environ['HTTP_HOST']}/messages/{message_id}/"
    return respond(start_response, "201 Created", body, [("Location", location)])


def get_conversation(environ, start_response, conversation_id: str) -> list[bytes]:
    if not ID_RE.fullmatch(conversation_id):
        return respond(start_response, "400 Bad Request", b'{"status":400}')
    query = dict(
        part.split("=", 1) for part in environ.get("QUERY_STRING", "").split("&") if "=" in part
    )
    limit = int(query.get("limit", PAGE_LIMIT_DEFAULT))
    after = int(query["after"]) if "after" in query else None
    conn = connection()
    state = conn.execute(STATE, (conversation_id,)).fetchone() or (0, 0, 0)
    count, first_id, last_id = state[0], state[1] or 0, state[2] or 0
    etag = f'"m{count}.{last_id}"'
    headers = [("ETag", etag), ("Cache-Control", "no-cache")]
    if environ.get("HTTP_IF_NONE_MATCH") == etag:
        start_response("304 Not Modified", headers)
        return [b""]
    if count == 0 or (after is not None and after >= last_id):
        rows = []
    elif after is not None:
        rows = conn.execute(AFTER, (conversation_id, after, last_id, limit)).fetchall()
    else:
        rows = conn.execute(NEWEST, (conversation_id, last_id, limit)).fetchall()[::-1]
    messages = [{"id": r[0], "sender": r[1], "message": r[2], "created": r[3]} for r in rows]
    base = f"http://{environ['HTTP_HOST']}{environ['PATH_INFO']}"
    previous = f"{base}?before={rows[0][0]}" if rows and rows[0][0] > first_id else None
    following = f"{base}?after={rows[-1][0]}" if rows and rows[-1][0] < last_id else None
    if previous or following:
        links = [f'<{u}>; rel="{r}"' for u, r in ((previous, "prev"), (following, "next")) if u]
        headers.append(("Link", ", ".join(links)))
    body = orjson.dumps(
        {"id": conversation_id, "messages": messages, "previous": previous, "next": following}
    )
    return respond(start_response, "200 OK", body, headers)


def app(environ, start_response) -> list[bytes]:
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    if method == "POST" and path.rstrip("/") == "/messages":
        return post_message(environ, start_response)
    if method == "GET" and path.startswith("/conversations/"):
        return get_conversation(environ, start_response, path[len("/conversations/") :].rstrip("/"))
    return respond(start_response, "404 Not Found", b'{"status":404}')
