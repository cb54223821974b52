"""Slow and idle clients cannot stop the service: the Procfile's web process, attacked.

Each kind of connection an attacker can hold cheaply is held by the hundred
(headers a byte at a time, a body a byte a second, nothing at all after
connecting) while an ordinary client keeps asking; and a request that has not
fully arrived by the deadline gets its connection closed.
"""

from __future__ import annotations

import http.client
import selectors
import socket
import threading
import time
from collections.abc import Callable

import pytest

from harness.processes import live_server, server_environment

EACH_KIND = 256
HELD_SECONDS = 20
ANSWER_WITHIN = 1.0


def stalled_headers(sock: socket.socket) -> Callable[[], bytes]:
    """A request line, then one more byte of a header that never ends."""
    sock.sendall(b"GET /conversations/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return lambda: b"a"


def trickled_body(sock: socket.socket) -> Callable[[], bytes]:
    """Complete headers for a body of 200 bytes, sent a byte a second."""
    sock.sendall(
        b"POST /messages/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"
    )
    return lambda: b" "


def idle(sock: socket.socket) -> Callable[[], bytes]:
    return lambda: b""


class Attacker(threading.Thread):
    """Holds ``count`` connections of each kind, a byte a second on each, reopening any closed."""

    def __init__(self, port: int, count: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.count = count
        self.seconds = seconds
        self.selector = selectors.DefaultSelector()
        # Seconds from the start of the hold to each close by the server.
        self.closed_after: list[float] = []
        self.held = threading.Event()
        self.stop = threading.Event()

    def open(self, kind: Callable[[socket.socket], Callable[[], bytes]]) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        trickle = kind(sock)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, (kind, trickle))

    def close(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        sock.close()

    def run(self) -> None:
        for kind in (stalled_headers, trickled_body, idle):
            for _ in range(self.count):
                self.open(kind)
        self.held.set()
        held_from = time.monotonic()
        ends = held_from + self.seconds
        next_byte = time.monotonic() + 1
        try:
            while time.monotonic() < ends and not self.stop.is_set():
                for key, _ in self.selector.select(timeout=0.1):
                    # The server answered or closed: a real attacker opens another.
                    try:
                        key.fileobj.recv(65536)
                    except OSError:
                        pass
                    self.close(key.fileobj)
                    self.open(key.data[0])
                    self.closed_after.append(time.monotonic() - held_from)
                if time.monotonic() >= next_byte:
                    next_byte += 1
                    for key in list(self.selector.get_map().values()):
                        byte = key.data[1]()
                        if byte:
                            try:
                                key.fileobj.send(byte)
                            except OSError:
                                self.close(key.fileobj)
                                self.open(key.data[0])
                                self.closed_after.append(time.monotonic() - held_from)
        finally:
            for key in list(self.selector.get_map().values()):
                self.close(key.fileobj)


def timed_get(port: int, path: str) -> tuple[int | str, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_WITHIN)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except OSError as exc:
        return type(exc).__name__, time.monotonic() - started
    finally:
        conn.close()


def test_hundreds_of_slow_and_idle_connections_do_not_delay_an_ordinary_request(
    fresh_database_url, tmp_path
):
    with live_server(server_environment(fresh_database_url), tmp_path / "server.log") as server:
        attacker = Attacker(server.port, EACH_KIND, HELD_SECONDS)
        attacker.start()
        assert attacker.held.wait(timeout=30), "the attacker could not open its connections"
        answers = []
        try:
            while attacker.is_alive():
                answers.append(timed_get(server.port, "/conversations/ordinary"))
                time.sleep(0.25)
        finally:
            attacker.stop.set()
            attacker.join(timeout=10)

    late = [(status, round(seconds, 2)) for status, seconds in answers if seconds > ANSWER_WITHIN]
    assert [status for status, _ in answers] == [200] * len(answers)
    assert late == []
    assert len(answers) >= HELD_SECONDS * 2
    # The attack was held, not refused: the server closed none of its
    # connections until the request deadline (20 s by default) came near.
    assert [after for after in attacker.closed_after if after < HELD_SECONDS - 5] == []


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float | None]:
    """What the server sent, and when it closed the connection (None: still open)."""
    started = time.monotonic()
    received = b""
    sock.settimeout(0.1)
    while time.monotonic() - started < seconds:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received, time.monotonic() - started
        if not chunk:
            return received, time.monotonic() - started
        received += chunk
    return received, None


@pytest.mark.parametrize(
    "opening, trickle",
    [
        pytest.param(b"", b"", id="idle"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a", id="headers"),
        pytest.param(
            b"POST /messages/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
            b" ",
            id="body",
        ),
    ],
)
def test_a_request_that_has_not_arrived_by_the_deadline_has_its_connection_closed(
    fresh_database_url, tmp_path, opening, trickle
):
    deadline = 2
    env = server_environment(fresh_database_url, WEB_REQUEST_DEADLINE=str(deadline))
    with live_server(env, tmp_path / "server.log") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(opening)
            started = time.monotonic()
            received, closed_after = b"", None
            # A byte every half second: each one is more than the keep-alive
            # timer of a server that counts from the last byte would wait for.
            while closed_after is None and time.monotonic() - started < deadline + 8:
                chunk, closed_after = read_until_closed(sock, 0.5)
                received += chunk
                if closed_after is None and trickle:
                    try:
                        sock.send(trickle)
                    except OSError:
                        closed_after = 0
            elapsed = time.monotonic() - started

    assert closed_after is not None, f"still open after {elapsed:.1f} s"
    assert deadline - 0.5 <= elapsed <= deadline + 2
    assert received in (b"",) or received.startswith(b"HTTP/1.1 408 ")


def test_past_the_connection_bound_a_new_connection_is_a_503_and_service_resumes_below_it(
    fresh_database_url, tmp_path
):
    bound = 20
    env = server_environment(
        fresh_database_url, WEB_CONCURRENCY="1", WEB_MAX_CONNECTIONS=str(bound)
    )
    with live_server(env, tmp_path / "server.log") as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(bound)]
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
            refused, closed_after = read_until_closed(extra, 5)
        for sock in held:
            sock.close()
        time.sleep(0.5)
        after = server.request("GET", "/healthz")

    assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"retry-after: 1\r\n" in refused
    assert closed_after is not None and closed_after < 1
    assert after.status == 200
