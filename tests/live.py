"""A live server for tests: the Procfile's ``web`` command on a database of its own."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from django.db import connection

PROJECT = Path(__file__).resolve().parent.parent
SECRET_KEY = "live-test-secret-key-that-is-long-and-random-enough-0123456789abcdef"


@dataclass
class Answer:
    status: int
    # Names are case-insensitive, as in HTTP: uvicorn sends them in lower case.
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class LiveServer:
    host: str
    port: int
    # The shell that runs the web command, leader of the server's process group.
    process: subprocess.Popen | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> Answer:
        headers = dict(headers or {})
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        if chunked:
            payload = iter([payload])
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=payload, headers=headers, encode_chunked=chunked)
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def fresh_database(tmp_dir: Path) -> Iterator[str]:
    """A new, empty database of the kind the suite runs on; its URL."""
    if connection.vendor != "postgresql":
        yield f"sqlite:///{tmp_dir / 'live.sqlite3'}"
        return
    settings = connection.settings_dict
    server = {
        "host": settings["HOST"] or "127.0.0.1",
        "port": settings["PORT"] or 5432,
        "user": settings["USER"] or "postgres",
        "password": settings["PASSWORD"] or None,
    }
    name = f"chat_live_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        password = f":{server['password']}" if server["password"] else ""
        yield f"postgres://{server['user']}{password}@{server['host']}:{server['port']}/{name}"
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_environment(database_url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        DATABASE_URL=database_url,
        DJANGO_SECRET_KEY=SECRET_KEY,
        DJANGO_HTTPS="0",
        WEB_CONCURRENCY="2",
    )
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def procfile_command(process: str) -> str:
    for line in (PROJECT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return command.strip()
    raise LookupError(f"no {process!r} process in the Procfile")


@contextmanager
def live_server(env: dict[str, str], log: Path) -> Iterator[LiveServer]:
    """Migrate (the Procfile's release step), then run its web process until done."""
    port = free_port()
    env = {**env, "PORT": str(port)}
    release = subprocess.run(
        procfile_command("release"),
        shell=True,
        cwd=PROJECT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert release.returncode == 0, release.stderr
    with log.open("wb") as output:
        process = subprocess.Popen(
            # Loopback only: the config binds every interface, as a deploy wants.
            f"{procfile_command('web')} --bind 127.0.0.1:{port}",
            shell=True,
            cwd=PROJECT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LiveServer("127.0.0.1", port, process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.request("GET", "/conversations/warm-up")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
        process.wait(timeout=30)
