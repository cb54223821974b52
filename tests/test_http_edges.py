"""What the server that serves $PORT does with odd requests: the Procfile's web process."""

from __future__ import annotations

import re
import socket
import time

import pytest

from harness.processes import live_server, server_environment


@pytest.fixture(scope="module")
def server(fresh_database_url, tmp_path_factory):
    with live_server(
        server_environment(fresh_database_url), tmp_path_factory.mktemp("log") / "server.log"
    ) as running:
        for text in ("first", "second"):
            posted = running.request(
                "POST", "/messages/", {"sender": "a", "conversation_id": "c1", "message": text}
            )
            assert posted.status == 201
        yield running


def exchange(port: int, *parts: bytes, pause: float = 0.3, seconds: float = 3) -> bytes:
    """Send each part (a pause between them), then read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        for n, part in enumerate(parts):
            if n:
                time.sleep(pause)
            try:
                sock.sendall(part)
            except OSError:
                break
        received = b""
        sock.settimeout(1)
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


def status_lines(received: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.[01] \d{3}", received)


CHUNKED_GET = (
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"zz\r\nnot a chunk\r\n0\r\n\r\n",
)


def test_a_malformed_chunk_size_gets_one_answer_when_sent_with_the_headers(server):
    received = exchange(server.port, b"".join(CHUNKED_GET))

    assert len(status_lines(received)) == 1, received


def test_a_malformed_chunk_size_after_the_headers_gets_no_second_answer(server):
    received = exchange(server.port, *CHUNKED_GET)

    assert len(status_lines(received)) <= 1, received


@pytest.mark.parametrize("script_name", ["/x", "//evil.example", "/conversations"])
def test_a_script_name_request_header_changes_no_link_and_is_no_500(server, script_name):
    path = "/conversations/c1?limit=1"
    plain = server.request("GET", path)
    with_header = server.request("GET", path, headers={"SCRIPT_NAME": script_name})

    assert plain.status == 200
    assert plain.json()["previous"] == (
        f"http://127.0.0.1:{server.port}/conversations/c1?before={plain.json()['messages'][0]['id']}&limit=1"
    )
    assert (with_header.status, with_header.json()) == (plain.status, plain.json())
    assert with_header.headers["Link"] == plain.headers["Link"]


def test_a_script_name_header_cannot_send_links_to_another_host(server):
    answer = server.request(
        "GET", "//evil.example/conversations/c1?limit=1", headers={"SCRIPT_NAME": "//evil.example"}
    )

    assert answer.status < 500
    assert b"evil.example" not in answer.body
    assert all("evil.example" not in value for value in answer.headers.values())
