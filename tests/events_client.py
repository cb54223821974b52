"""Event-stream test helpers: an in-process server and a reader of Server-Sent Events."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from harness.processes import PROJECT, LiveServer, free_port, release


@dataclass
class Event:
    id: str | None = None
    event: str | None = None
    data: str | None = None
    comments: list[str] = field(default_factory=list)
    retry: str | None = None


class EventStream:
    """``GET`` an events path and read what comes back, block by block."""

    def __init__(self, server: LiveServer, path: str, headers: dict | None = None, timeout=10):
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
        self.conn.request("GET", path, headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = {name.lower(): value for name, value in self.response.getheaders()}

    def body(self) -> bytes:
        return self.response.read()

    def raw_block(self) -> bytes:
        """The bytes of the next block (up to and including its blank line); b"" at the end."""
        lines = []
        while True:
            line = self.response.readline()
            if not line:
                return b"".join(lines)
            lines.append(line)
            if line == b"\n":
                return b"".join(lines)

    def block(self) -> Event | None:
        raw = self.raw_block()
        if not raw:
            return None
        event = Event()
        for line in raw.decode().splitlines():
            if not line:
                continue
            if line.startswith(":"):
                event.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            setattr(event, name, value)
        return event

    def messages(self, count: int) -> list[Event]:
        """The next ``count`` message events, skipping everything else, within the timeout.

        The timeout bounds the whole wait: keep-alive comments alone would
        otherwise keep a stream that never delivers from ever timing out.
        """
        found = []
        deadline = time.monotonic() + self.timeout
        while len(found) < count:
            event = self.block()
            assert event is not None, f"the stream ended after {len(found)} of {count} messages"
            assert time.monotonic() < deadline, f"{len(found)} of {count} messages in time"
            if event.event == "message":
                found.append(event)
        return found

    def message_ids(self, count: int) -> list[int]:
        return [int(event.id) for event in self.messages(count)]

    def close(self) -> None:
        self.conn.close()


class StreamClosingServer(uvicorn.Server):
    """uvicorn waits for every connection to close before the lifespan's shutdown: the
    streams are closed first, as the deployed server does on SIGTERM."""

    async def shutdown(self, sockets=None) -> None:
        from conversations import events

        await events.shutdown()
        await super().shutdown(sockets)


@contextmanager
def in_process_server() -> Iterator[LiveServer]:
    """chatproject.asgi's application under uvicorn in a thread, on the test database."""
    from chatproject.asgi import application

    config = uvicorn.Config(
        application, host="127.0.0.1", port=free_port(), lifespan="on", log_level="warning"
    )
    server = StreamClosingServer(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield LiveServer("127.0.0.1", config.port)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive(), "uvicorn did not stop"


def wait_until(condition, timeout: float = 5.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class AsgiServer:
    """chatproject.asgi under uvicorn, in a process group of its own, that can be
    stopped and started again on the same port (a restart, as clients see one)."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = 2, port: int | None = None):
        self.env = env
        self.log = log
        self.workers = workers
        self.server = LiveServer("127.0.0.1", port or free_port())
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "chatproject.asgi:application",
            "--host", self.server.host, "--port", str(self.server.port),
            "--workers", str(self.workers),
            "--timeout-graceful-shutdown", "2", "--log-level", "warning",
        ]  # fmt: skip

    def start(self) -> LiveServer:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self.command(), cwd=PROJECT, env=self.env, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                self.server.request("GET", "/healthz")
                return self.server
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the server did not start:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM, as a platform stops a process, and wait for it to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None


@contextmanager
def asgi_live_server(env: dict[str, str], log: Path, workers: int = 2) -> Iterator[LiveServer]:
    """The release step, then chatproject.asgi under uvicorn with ``workers`` processes."""
    release(env)
    asgi = AsgiServer(env, log, workers)
    try:
        yield asgi.start()
    finally:
        asgi.stop()
