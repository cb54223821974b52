"""A stuck database costs a request a few seconds and a 503, never a hang.

Against the Procfile's web process on a PostgreSQL of the test's own (initdb
on a free port, as the crash test does): never the shared server. Once with a
table locked by another session, once with the postmaster and every backend
stopped with SIGSTOP, the way a frozen database host looks from the service.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from harness.databases import ThrowawayPostgres, postgres_bindir, postgres_unavailable
from harness.processes import children, live_server, server_environment
from tests.conftest import DATABASE_DOWN, assert_problem, message

pytestmark = pytest.mark.skipif(
    postgres_unavailable() is not None, reason=f"a private PostgreSQL: {postgres_unavailable()}"
)

# Shorter than the defaults, so that the test is quick; the defaults are
# checked on their own below.
CONNECT_TIMEOUT, STATEMENT_TIMEOUT, LOCK_TIMEOUT = 2, 2, 1
# A request must be answered within its timeout and this much more.
SLACK = 2.5
# With replicas configured (CI runs the suite so, the database standing in as
# its own replica) a read asks the replica first: a frozen one costs it up to
# the replica's connect timeout (2 s, chatproject/settings.py) before the
# primary is tried, until it is skipped.
REPLICA_WORST = 2 if os.environ.get("DATABASE_REPLICA_URLS") else 0
# What a client waits before it calls the service hung.
CLIENT_PATIENCE = 20


@dataclass
class Timed:
    status: int
    # Names are case-insensitive, as in HTTP: uvicorn sends them in lower case.
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)


def timed_request(port: int, method: str, path: str, body: dict | None = None) -> Timed:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_PATIENCE)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return Timed(
            response.status,
            response.headers,
            response.read(),
            time.monotonic() - started,
        )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def database():
    root = Path(tempfile.mkdtemp(prefix="chat-timeouts-"))
    cluster = ThrowawayPostgres(postgres_bindir(), root)
    cluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def server(database, tmp_path_factory):
    env = server_environment(
        database.url,
        DJANGO_DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
        DJANGO_DB_STATEMENT_TIMEOUT=str(STATEMENT_TIMEOUT),
        DJANGO_DB_LOCK_TIMEOUT=str(LOCK_TIMEOUT),
    )
    with live_server(env, tmp_path_factory.mktemp("log") / "gunicorn.log") as running:
        yield running


def stored_messages(database: ThrowawayPostgres, conversation: str) -> list[str]:
    with psycopg.connect(database.url) as conn:
        rows = conn.execute(
            "SELECT message FROM conversations_message WHERE conversation_id = %s ORDER BY id",
            [conversation],
        ).fetchall()
    return [row[0] for row in rows]


def test_with_a_table_locked_writes_and_reads_are_a_prompt_503_and_nothing_is_half_written(
    server, database
):
    assert (
        timed_request(server.port, "POST", "/messages/", message("locked", text="before")).status
        == 201
    )
    with psycopg.connect(database.url) as locker:
        locker.execute(
            "LOCK TABLE conversations_message, conversations_conversation IN ACCESS EXCLUSIVE MODE"
        )
        with ThreadPoolExecutor(4) as pool:
            post = pool.submit(
                timed_request, server.port, "POST", "/messages/", message("locked", text="during")
            )
            read = pool.submit(timed_request, server.port, "GET", "/conversations/locked")
            ready = pool.submit(timed_request, server.port, "GET", "/readyz")
            healthy = pool.submit(timed_request, server.port, "GET", "/healthz")
            answers = [f.result() for f in (post, read, ready, healthy)]
        locker.rollback()
    after = timed_request(server.port, "POST", "/messages/", message("locked", text="after"))

    post, read, ready, healthy = answers
    for answer in (post, read):
        assert_problem(answer, 503, DATABASE_DOWN)
        assert answer.headers["Retry-After"] == "5"
        assert answer.seconds < LOCK_TIMEOUT + SLACK
    # A lock on the tables does not stop the database from answering.
    assert (ready.status, healthy.status) == (200, 200)
    assert after.status == 201
    assert stored_messages(database, "locked") == ["before", "after"]
    counted = timed_request(server.port, "GET", "/conversations/locked")
    assert [m["message"] for m in counted.json()["messages"]] == ["before", "after"]


def test_with_the_database_frozen_requests_are_a_503_healthz_answers_and_it_recovers(
    server, database
):
    assert (
        timed_request(server.port, "POST", "/messages/", message("frozen", text="before")).status
        == 201
    )
    postmaster = int((database.data / "postmaster.pid").read_text().split()[0])
    frozen = [postmaster, *children(postmaster)]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(12) as pool:
            # As many as the server has threads (2 workers x 4), and more.
            reads = [
                pool.submit(timed_request, server.port, "GET", "/conversations/frozen")
                for _ in range(8)
            ]
            post = pool.submit(
                timed_request, server.port, "POST", "/messages/", message("frozen", text="during")
            )
            ready = pool.submit(timed_request, server.port, "GET", "/readyz")
            time.sleep(0.5)
            healthy = pool.submit(timed_request, server.port, "GET", "/healthz")
            answers = [f.result() for f in [*reads, post, ready]]
            healthy = healthy.result()
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)

    # A statement's deadline on the client's side is the server's timeout
    # and a second; a new connection gives up after its connect timeout.
    worst = max(CONNECT_TIMEOUT, STATEMENT_TIMEOUT + 1) + REPLICA_WORST
    # Ten requests on eight threads, shared unevenly by two workers: some
    # wait for another request's deadline before their own starts.
    for answer in answers:
        assert_problem(answer, 503, DATABASE_DOWN)
        assert answer.headers["Retry-After"] == "5"
        assert answer.seconds < 2 * worst + SLACK, [a.seconds for a in answers]
    # Liveness: answered at once, though every thread that runs Django waits on
    # the database (an orchestrator's probe gives up after a second or so and
    # would restart a process that is alive).
    assert healthy.status == 200
    assert healthy.seconds < 1

    deadline = time.monotonic() + 30
    while True:
        after = timed_request(server.port, "POST", "/messages/", message("frozen", text="after"))
        if after.status == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after.status == 201
    assert stored_messages(database, "frozen") == ["before", "after"]
