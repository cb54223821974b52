"""Live events across processes, instances and database restarts (PostgreSQL, real servers)."""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness.databases import ThrowawayPostgres as Postgres
from harness.databases import fresh_database, postgres_bindir, postgres_unavailable
from harness.processes import LiveServer, live_server, server_environment
from tests.conftest import message, postgresql_only
from tests.events_client import EventStream

pytestmark = postgresql_only("NOTIFY and LISTEN are PostgreSQL's")


def post(server: LiveServer, conversation_id: str, text: str = "hello") -> int:
    answer = server.request("POST", "/messages/", message(conversation_id, text=text))
    assert answer.status == 201, answer.body
    return answer.json()["id"]


@pytest.fixture(scope="module")
def two_instances(tmp_path_factory):
    """Two instances of the Procfile's web process, two workers each, on one database."""
    root = tmp_path_factory.mktemp("events-live")
    with fresh_database(root) as url:
        env = server_environment(url, WEB_CONCURRENCY="2")
        with live_server(env, root / "a.log") as a, live_server(env, root / "b.log") as b:
            yield a, b


def test_a_message_posted_to_one_instance_reaches_streams_on_every_process_of_both(
    two_instances,
):
    a, b = two_instances
    # Four streams per instance: the two workers of each share them out.
    streams = [
        EventStream(server, "/conversations/shared/events?last_event_id=0")
        for server in (a, a, a, a, b, b, b, b)
    ]
    try:
        posted = [
            post(server, "shared", f"m{n}") for n, server in zip(range(10), itertools.cycle((a, b)))
        ]

        assert [stream.message_ids(10) for stream in streams] == [posted] * 8
    finally:
        for stream in streams:
            stream.close()


def test_eight_concurrent_writers_reach_every_stream_once_in_increasing_id_order(two_instances):
    a, b = two_instances
    streams = [EventStream(server, "/conversations/busy/events") for server in (a, a, b, b)]
    for stream in streams:
        stream.block()
        stream.block()
    posted: list[int] = []
    lock = threading.Lock()

    def write(server: LiveServer, writer: int) -> None:
        for n in range(25):
            stored = post(server, "busy", f"writer {writer} message {n}")
            with lock:
                posted.append(stored)

    writers = [
        threading.Thread(target=write, args=(server, n))
        for n, server in zip(range(8), itertools.cycle((a, b)))
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    try:
        for stream in streams:
            received = stream.message_ids(len(posted))
            assert received == sorted(posted)
            assert len(set(received)) == 200
    finally:
        for stream in streams:
            stream.close()


@pytest.mark.skipif(postgres_unavailable() is not None, reason=f"{postgres_unavailable()}")
def test_a_stream_stays_open_with_heartbeats_while_its_database_restarts_and_loses_nothing():
    # Under /tmp, not pytest's private directory: PostgreSQL runs as its own user.
    with tempfile.TemporaryDirectory(prefix="chat-events-pg-") as root:
        restart_under_a_stream(Path(root))


def restart_under_a_stream(tmp_path: Path) -> None:
    database = Postgres(postgres_bindir(), tmp_path)
    try:
        database.create()
        env = server_environment(database.url, EVENTS_HEARTBEAT_SECONDS="1", WEB_CONCURRENCY="1")
        with live_server(env, tmp_path / "server.log") as server:
            stream = EventStream(server, "/conversations/tea-room/events?last_event_id=0")
            before = [post(server, "tea-room", f"before {n}") for n in range(2)]
            assert stream.message_ids(2) == before

            database.crash()
            # Down: the stream stays open and keeps sending heartbeats.
            beats = [stream.block() for _ in range(2)]
            database.start()
            after = [post_until_stored(server, "tea-room", f"after {n}") for n in range(2)]

            assert [beat.comments for beat in beats] == [["keep-alive"]] * 2
            assert stream.message_ids(2) == after
            stream.close()
    finally:
        database.destroy()


def post_until_stored(server: LiveServer, conversation_id: str, text: str) -> int:
    """Retry a POST that the recovering database answers with a 503."""
    deadline = time.monotonic() + 30
    while True:
        answer = server.request(
            "POST", "/messages/", message(conversation_id, text=text),
            headers={"Idempotency-Key": text},
        )  # fmt: skip
        if answer.status == 201:
            return answer.json()["id"]
        assert answer.status == 503 and time.monotonic() < deadline, answer.body
        time.sleep(0.2)
