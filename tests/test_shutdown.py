"""SIGTERM, as a platform sends it to the Procfile's web process: drain, finish, exit in time."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from harness.processes import LiveServer, live_server, server_environment

IDLE_CONNECTIONS = 500
# Thousands, as the issue asks; below EVENTS_MAX_STREAMS even if one worker takes them all.
OPEN_STREAMS = 2000
GRACEFUL_TIMEOUT = 20  # gunicorn.conf.py's graceful_timeout


@contextmanager
def messages_locked(fresh_database_url: str) -> Iterator[None]:
    """Hold the database's write lock on messages, so a POST waits for it."""
    if fresh_database_url.startswith("sqlite"):
        holder = sqlite3.connect(
            fresh_database_url.removeprefix("sqlite:///"), isolation_level=None
        )
        holder.execute("BEGIN IMMEDIATE")
    else:
        holder = psycopg.connect(fresh_database_url)
        holder.execute("LOCK TABLE conversations_message IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        holder.rollback() if isinstance(holder, psycopg.Connection) else holder.execute("ROLLBACK")
        holder.close()


def idle_connections(port: int, count: int) -> list[socket.socket]:
    """Connections that have had one answer each and now wait, as a widget's keep-alive does."""
    socks = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if n % 2:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            # Whole, with a Content-Length or chunked.
            while not answer.endswith((b'{"status":"ok"}', b"\r\n0\r\n\r\n")):
                chunk = sock.recv(65536)
                assert chunk, f"connection {n} closed after {answer!r}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
        socks.append(sock)
    return socks


def open_streams(port: int, count: int) -> list[socket.socket]:
    """Event streams, each past its first block (so open in a worker), over 50 conversations."""
    socks = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(
            f"GET /conversations/drain-{n % 50}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        )
        head = b""
        while b"retry: 3000" not in head:
            chunk = sock.recv(65536)
            assert chunk, f"stream {n} closed after {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 "), head
        socks.append(sock)
    return socks


def closed_by_server(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (a stream's last bytes read)."""
    deadline = time.monotonic() + seconds
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if sock.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize(
    "opened",
    [
        pytest.param(lambda port: idle_connections(port, IDLE_CONNECTIONS), id="idle connections"),
        pytest.param(lambda port: open_streams(port, OPEN_STREAMS), id="open event streams"),
    ],
)
def test_on_sigterm_open_connections_close_at_once_and_a_request_in_flight_finishes(
    fresh_database_url, tmp_path, opened
):
    env = server_environment(fresh_database_url)
    with live_server(env, tmp_path / "server.log") as server:
        socks = opened(server.port)
        answers = []

        def post(running: LiveServer) -> None:
            message = {"sender": "a", "conversation_id": "drain", "message": "in flight"}
            answers.append(running.request("POST", "/messages/", message).status)

        # Held for under a second: past the lock timeout (2 s) the POST would be a 503.
        with messages_locked(fresh_database_url):
            in_flight = threading.Thread(target=post, args=(server,))
            in_flight.start()
            time.sleep(0.5)
            os.killpg(server.process.pid, signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.3)
        closed = sum(
            closed_by_server(sock, max(0.01, signalled + 3 - time.monotonic())) for sock in socks
        )
        closed_within = time.monotonic() - signalled
        in_flight.join(timeout=GRACEFUL_TIMEOUT)
        server.process.wait(timeout=GRACEFUL_TIMEOUT + 5)
        exited_within = time.monotonic() - signalled
        for sock in socks:
            sock.close()

    assert answers == [201]
    assert closed == len(socks)
    assert closed_within < 3
    assert exited_within < GRACEFUL_TIMEOUT
