"""Live delivery: GET /conversations/<id>/events, a Server-Sent Events stream."""

from __future__ import annotations

import json
import socket
import threading
import time

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from chatproject.replicas import replicas_configured
from conversations import events
from conversations.rules import EVENTS_APPLICATION_NAME, EVENTS_LISTEN_APPLICATION_NAME
from conversations.services import EVENTS_CHANNEL, message_create
from tests.conftest import message, postgresql_only
from tests.events_client import EventStream, in_process_server, wait_until

# Transactional: a stream reads on a connection of its own, so it sees only
# committed messages, and NOTIFY fires only on commit. As a marker, not the
# transactional_db fixture, so that the replicas are allowed when configured.
pytestmark = pytest.mark.django_db(transaction=True)


def listening_connection() -> psycopg.Connection:
    """A connection of its own to the test database, listening on the events channel."""
    listener = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    listener.execute(f"LISTEN {EVENTS_CHANNEL}")
    return listener


@postgresql_only("NOTIFY is PostgreSQL's")
def test_a_stored_message_notifies_its_conversation_and_id_on_commit(api):
    with listening_connection() as listener:
        response = api.post(message("tea-room"))

        notified = [(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=1)]

    assert notified == [(EVENTS_CHANNEL, f"tea-room {response.json()['id']}")]


@postgresql_only("NOTIFY is PostgreSQL's")
def test_a_replayed_post_notifies_nothing(api):
    api.post(message("tea-room"), HTTP_IDEMPOTENCY_KEY="k-1")
    with listening_connection() as listener:
        api.post(message("tea-room"), HTTP_IDEMPOTENCY_KEY="k-1")

        notified = list(listener.notifies(timeout=1))

    assert notified == []


def test_storing_a_message_stays_three_statements_in_one_transaction(api):
    api.post(message("tea-room"))

    with CaptureQueriesContext(connection) as captured:
        response = api.post(message("tea-room"))

    assert response.status_code == 201
    statements = [query["sql"].split()[0] for query in captured.captured_queries]
    # With replicas configured, the Consistency-Token's LSN is read after the commit.
    token = ["SELECT"] if replicas_configured() else []
    assert statements == ["BEGIN", "INSERT", "INSERT", "UPDATE", "COMMIT", *token]


# -- the stream, through a real server on the test database ----------------------------------

HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


@pytest.fixture
def server():
    with in_process_server() as live:
        yield live


@pytest.fixture
def streams(server):
    opened: list[EventStream] = []

    def open_stream(path: str, headers: dict | None = None, timeout: float = 10) -> EventStream:
        stream = EventStream(server, path, headers, timeout)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def post(api, conversation_id: str, text: str = "hello") -> dict:
    response = api.post(message(conversation_id, text=text))
    assert response.status_code == 201
    return response.json()


def page_message(stored: dict) -> dict:
    return {key: stored[key] for key in ("id", "sender", "message", "created")}


def test_a_stream_sends_retry_then_each_message_as_the_history_page_renders_it(api, streams):
    first = post(api, "tea-room", "one")
    second = post(api, "tea-room", 'two\nlines, "quoted" ✓')

    stream = streams("/conversations/tea-room/events?last_event_id=0")

    assert stream.status == 200
    assert {name: stream.headers[name] for name in HEADERS} == HEADERS
    assert stream.raw_block() == b"retry: 3000\n\n"
    page = api.get("/conversations/tea-room").json()["messages"]
    expected = [
        f"id: {row['id']}\nevent: message\ndata: {json.dumps(row, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()
        for row in page
    ]
    assert [stream.raw_block(), stream.raw_block()] == expected
    assert page == [page_message(first), page_message(second)]


def test_a_message_posted_after_the_stream_opened_arrives_on_it(api, streams):
    stream = streams("/conversations/tea-room/events/")
    assert stream.status == 200
    assert stream.block().retry == "3000"
    assert stream.block().id == "0"

    stored = post(api, "tea-room")

    [event] = stream.messages(1)
    assert (event.id, event.event, json.loads(event.data)) == (
        str(stored["id"]),
        "message",
        page_message(stored),
    )


def test_without_a_resume_point_a_stream_starts_after_the_newest_message_and_says_so(api, streams):
    post(api, "tea-room", "before")
    newest = post(api, "tea-room", "also before")

    stream = streams("/conversations/tea-room/events")
    stream.block()
    position = stream.block()
    after = post(api, "tea-room", "after")

    assert position.id == str(newest["id"])
    assert stream.message_ids(1) == [after["id"]]


@pytest.mark.parametrize(
    "path, headers",
    [
        ("/conversations/tea-room/events?last_event_id={resume}", {}),
        ("/conversations/tea-room/events", {"Last-Event-ID": "{resume}"}),
        # A reconnecting EventSource sends the header with the URL it first opened.
        ("/conversations/tea-room/events?last_event_id=0", {"Last-Event-ID": "{resume}"}),
    ],
)
def test_resuming_replays_every_later_message_then_continues_live_with_no_gap_or_duplicate(
    api, streams, path, headers
):
    ids = [post(api, "tea-room", f"old {n}")["id"] for n in range(4)]
    post(api, "elsewhere")
    resume = ids[1]

    stream = streams(
        path.format(resume=resume), {k: v.format(resume=resume) for k, v in headers.items()}
    )
    replayed = stream.message_ids(2)
    live = [post(api, "tea-room", f"new {n}")["id"] for n in range(3)]

    assert replayed == ids[2:]
    assert stream.message_ids(3) == live


@pytest.mark.parametrize("missing, reset", [(1000, False), (1001, True)])
def test_a_replay_sends_at_most_the_newest_thousand_and_a_reset_when_more_are_missing(
    api, streams, missing, reset
):
    ids = [
        message_create(conversation_id="long", sender="bot", message=f"m{n}")[0].id
        for n in range(missing)
    ]

    stream = streams("/conversations/long/events?last_event_id=0", timeout=30)
    assert stream.block().retry == "3000"
    if reset:
        event = stream.block()
        assert (event.id, event.event, json.loads(event.data)) == (
            None,
            "reset",
            {"detail": "More than 1000 messages are missing: reload the history page."},
        )
    replayed = stream.message_ids(1000)
    live = post(api, "long")["id"]

    assert replayed == ids[-1000:]
    assert stream.message_ids(1) == [live]


# Pages stop at PAGE_MAX_BYTES (1 MiB): these messages fill one in about a hundred.
LARGE = "x" * 10_000


def test_a_replay_of_more_than_a_page_of_bytes_sends_every_message_then_continues_live(
    api, streams
):
    ids = [
        message_create(conversation_id="large", sender="bot", message=LARGE)[0].id
        for _ in range(250)
    ]

    stream = streams("/conversations/large/events?last_event_id=0", timeout=30)
    replayed = stream.message_ids(250)
    live = post(api, "large")["id"]

    assert replayed == ids
    assert stream.message_ids(1) == [live]


def test_a_reset_is_sent_when_more_than_a_thousand_are_missing_however_large_they_are(api, streams):
    ids = [
        message_create(conversation_id="long", sender="bot", message="y" * 2_000)[0].id
        for _ in range(1001)
    ]

    stream = streams("/conversations/long/events?last_event_id=0", timeout=30)
    assert stream.block().retry == "3000"
    assert stream.block().event == "reset"
    # The newest that fit in a page, then live: the client reloads the history for the rest.
    first = stream.block()
    assert first.event == "message"
    start = ids.index(int(first.id))
    replayed = [ids[start], *stream.message_ids(len(ids) - start - 1)]
    live = post(api, "long")["id"]

    assert start >= 1 and replayed == ids[start:]
    assert stream.message_ids(1) == [live]


def test_a_burst_of_more_than_a_page_of_bytes_in_one_commit_arrives_whole(api, streams):
    stream = streams("/conversations/burst/events", timeout=30)
    stream.block()
    stream.block()

    with transaction.atomic():
        ids = [
            message_create(conversation_id="burst", sender="bot", message=LARGE)[0].id
            for _ in range(250)
        ]

    assert stream.message_ids(250) == ids


PROBLEM = {"type": "about:blank", "title": "Bad Request", "status": 400}
ID_RULE = "Use 1 to 100 of the characters A-Z a-z 0-9 . _ ~ : @ + - (and not '.' or '..' alone)."


@pytest.mark.parametrize(
    "path, headers, errors",
    [
        ("/conversations/no%20spaces/events", {}, {"conversation_id": [ID_RULE]}),
        ("/conversations/../events", {}, {"conversation_id": [ID_RULE]}),
        (f"/conversations/{'x' * 101}/events", {}, {
            "conversation_id": ["Ensure this field has no more than 100 characters."]
        }),
        ("/conversations/ok/events?last_event_id=-1", {}, {
            "last_event_id": ["A valid integer is required."]
        }),
        ("/conversations/ok/events?last_event_id=", {}, {
            "last_event_id": ["A valid integer is required."]
        }),
        ("/conversations/ok/events", {"Last-Event-ID": "12a"}, {
            "Last-Event-ID": ["A valid integer is required."]
        }),
    ],
)  # fmt: skip
def test_a_malformed_conversation_id_or_resume_point_is_a_400_before_any_stream(
    streams, path, headers, errors
):
    stream = streams(path, headers)

    assert stream.status == 400
    assert stream.headers["content-type"] == "application/problem+json"
    detail = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
    assert json.loads(stream.body()) == {**PROBLEM, "detail": detail, "errors": errors}


def test_other_methods_are_a_405_naming_the_allowed_ones(server):
    answer = server.request("POST", "/conversations/ok/events", body={})

    assert (answer.status, answer.headers["allow"], answer.json()) == (
        405,
        "GET, OPTIONS",
        {
            "type": "about:blank",
            "title": "Method Not Allowed",
            "status": 405,
            "detail": 'Method "POST" not allowed.',
        },
    )


def test_opening_a_stream_counts_as_one_read_and_over_the_limit_is_a_429(streams, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"events-rate-limit-{time.monotonic_ns()}",
        }
    }
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"post": None, "get": "2/day"},
    }

    answers = [streams("/conversations/ok/events") for _ in range(3)]

    assert [answer.status for answer in answers] == [200, 200, 429]
    wait = int(answers[2].headers["retry-after"])
    assert json.loads(answers[2].body()) == {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Request was throttled. Expected available in {wait} seconds.",
    }


def test_more_streams_than_the_process_allows_is_a_503_with_retry_after(streams, settings):
    settings.EVENTS_MAX_STREAMS = 2
    first, second = streams("/conversations/a/events"), streams("/conversations/b/events")

    refused = streams("/conversations/c/events")

    assert (first.status, second.status, refused.status) == (200, 200, 503)
    assert refused.headers["retry-after"] == "5"
    assert json.loads(refused.body()) == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "This server has as many event streams open as it allows; "
        "try again shortly, or read the history page.",
    }
    first.close()
    wait_until(lambda: events.open_streams() == 1, what="the closed stream to be noticed")
    assert streams("/conversations/c/events").status == 200


def test_a_client_that_goes_away_is_noticed_and_its_stream_ended(streams):
    stream = streams("/conversations/a/events")
    stream.block()
    assert events.open_streams() == 1

    stream.close()

    wait_until(lambda: events.open_streams() == 0, what="the stream to end")


def test_an_idle_stream_sends_a_keep_alive_comment_every_heartbeat(streams, settings):
    settings.EVENTS_HEARTBEAT_SECONDS = 1
    stream = streams("/conversations/a/events")
    stream.block()
    stream.block()

    started = time.monotonic()
    beats = [stream.raw_block() for _ in range(2)]

    assert beats == [b": keep-alive\n\n"] * 2
    assert 1.5 <= time.monotonic() - started < 3


def test_a_stream_is_closed_by_the_server_after_its_maximum_age(streams, settings):
    settings.EVENTS_MAX_SECONDS = 1
    stream = streams("/conversations/a/events")

    started = time.monotonic()
    blocks = iter(stream.raw_block, b"")

    assert list(blocks) == [b"retry: 3000\n\n", b"id: 0\n\n"]
    assert 0.9 <= time.monotonic() - started < 3


WIDGET = "https://widget.example"


def test_cors_as_for_the_api_with_last_event_id_allowed(streams, server, settings):
    settings.CORS_ALLOWED_ORIGINS = [WIDGET]

    stream = streams("/conversations/a/events", {"Origin": WIDGET})
    preflight = server.request(
        "OPTIONS",
        "/conversations/a/events",
        headers={
            "Origin": WIDGET,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "last-event-id",
        },
    )
    stranger = streams("/conversations/a/events", {"Origin": "https://stranger.example"})

    assert stream.status == 200
    assert stream.headers["access-control-allow-origin"] == WIDGET
    assert preflight.status == 200
    assert {
        k.lower(): v
        for k, v in preflight.headers.items()
        if k.lower().startswith("access-control-")
    } == {
        "access-control-allow-origin": WIDGET,
        "access-control-allow-methods": "GET, POST, OPTIONS",
        "access-control-allow-headers": (
            "content-type, idempotency-key, if-none-match, last-event-id, consistency-token"
        ),
        "access-control-expose-headers": (
            "Location, ETag, Link, Retry-After, Idempotent-Replayed, Consistency-Token"
        ),
        "access-control-max-age": "86400",
    }
    assert "access-control-allow-origin" not in stranger.headers


def test_every_stream_of_a_conversation_gets_every_message_once_in_order(api, streams):
    opened = [streams(f"/conversations/{name}/events?last_event_id=0") for name in "aab"]

    posted = {name: [post(api, name, f"{name}{n}")["id"] for n in range(5)] for name in "ab"}

    assert [stream.message_ids(5) for stream in opened] == [
        posted["a"],
        posted["a"],
        posted["b"],
    ]


def test_a_stopping_server_closes_its_streams_at_once():
    with in_process_server() as live:
        stream = EventStream(live, "/conversations/a/events")
        stream.block()
        started = time.monotonic()
    # Leaving the block stopped the server: the stream has ended by now.

    assert [stream.raw_block(), stream.raw_block()] == [b"id: 0\n\n", b""]
    assert time.monotonic() - started < 3
    stream.close()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only: its polling fallback")
def test_on_sqlite_a_new_message_arrives_by_polling_within_a_second(api, streams):
    stream = streams("/conversations/a/events")
    stream.block()
    stream.block()

    started = time.monotonic()
    stored = post(api, "a")

    assert stream.message_ids(1) == [stored["id"]]
    assert time.monotonic() - started < 1.0


def events_backends(kind: str | None = None) -> list[tuple[int, str]]:
    """The live events' own PostgreSQL connections to the test database: (pid, last query)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, query FROM pg_stat_activity "
            "WHERE application_name IN (%s, %s) AND datname = current_database()",
            [EVENTS_APPLICATION_NAME, EVENTS_LISTEN_APPLICATION_NAME],
        )
        rows = cursor.fetchall()
    return [row for row in rows if kind is None or row[1].startswith(kind)]


@postgresql_only("counts PostgreSQL's connections")
def test_database_connections_do_not_grow_with_the_number_of_streams(api, streams):
    one = streams("/conversations/c0/events?last_event_id=0")
    post(api, "c0")
    one.messages(1)
    with_one = len(events_backends())

    many = [streams(f"/conversations/c{n % 10}/events?last_event_id=0") for n in range(60)]
    posted = [post(api, f"c{n}")["id"] for n in range(10)]
    for n, stream in enumerate(many):
        received = stream.message_ids(2 if n % 10 == 0 else 1)
        assert received[-1] == posted[n % 10]

    # One LISTEN connection and a pool of at most two for the queries.
    assert with_one <= 3
    assert len(events_backends()) <= 3


@postgresql_only("pg_terminate_backend is PostgreSQL's")
def test_a_killed_listen_connection_is_restored_and_nothing_is_lost(api, streams):
    stream = streams("/conversations/tea-room/events")
    stream.block()
    stream.block()
    before = post(api, "tea-room")["id"]
    assert stream.message_ids(1) == [before]
    [(listener, _)] = events_backends("LISTEN")

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [listener])
    # Posted while the stream's process has no LISTEN connection.
    during = [post(api, "tea-room", f"during {n}")["id"] for n in range(3)]
    # No message after them: they arrive by the catch-up that follows the reconnect.
    assert stream.message_ids(3) == during
    assert [pid for pid, _ in events_backends("LISTEN")] != [listener]


def test_a_client_that_stops_reading_is_disconnected_when_its_buffer_fills(
    api, streams, server, request
):
    reader = streams("/conversations/flood/events")
    reader.block()
    reader.block()
    stalled = socket.socket()
    request.addfinalizer(stalled.close)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((server.host, server.port))
    stalled.sendall(b"GET /conversations/flood/events HTTP/1.1\r\nHost: test\r\n\r\n")
    wait_until(lambda: events.open_streams() == 2, what="the stalled stream to open")

    received: list[int] = []

    def keep_reading() -> None:
        while True:
            [event] = reader.messages(1)
            received.append(int(event.id))
            if json.loads(event.data)["message"] == "the end":
                return

    keeping_up = threading.Thread(target=keep_reading)
    keeping_up.start()
    text = "x" * 10_000
    posted = []
    # However fast the server's socket buffers fill on this machine: the
    # stream is dropped once they are full and its own buffer fills too.
    deadline = time.monotonic() + 15
    while events.open_streams() == 2 and time.monotonic() < deadline:
        posted.append(post(api, "flood", text)["id"])
    disconnected = events.open_streams() == 1
    posted.append(post(api, "flood", "the end")["id"])
    keeping_up.join(timeout=30)

    assert disconnected, f"still open after {len(posted)} messages in 15 s"
    # The reader that keeps up got every message, once, in order.
    assert received == posted
    # The server dropped the connection with its unread data, rather than
    # keeping it open until a client that does not read would have read it.
    wait_until(
        lambda: not server_side_open(server.port, stalled.getsockname()[1]),
        what="the server to drop the stalled connection",
    )


def server_side_open(server_port: int, client_port: int) -> bool:
    """Whether a process still holds the server's end of the client's TCP connection (Linux).

    A socket that its process closed but whose unsent data the kernel is
    still trying to deliver is listed with inode 0: it belongs to no process.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                ports = tuple(int(end.split(":")[1], 16) for end in fields[1:3])
                if ports == (server_port, client_port) and fields[9] != "0":
                    return True
    return False
