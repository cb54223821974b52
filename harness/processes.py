"""The Procfile's processes on loopback, with an environment built from the call alone."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SECRET_KEY = "harness-only-secret-key-that-is-long-and-random-enough-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def procfile_command(process: str) -> list[str]:
    for line in (PROJECT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return shlex.split(command)
    raise LookupError(f"no {process!r} process in the Procfile")


def server_environment(database_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a server on ``database_url``: its settings come from here, not the shell.

    The shell's ``DJANGO_``, ``GUNICORN_`` and ``PORT`` variables are left out,
    so that a run is the same whoever starts it; the interpreter's own bin
    directory comes first on ``PATH``, so the Procfile's ``gunicorn`` and
    ``python`` are the virtualenv's.
    """
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GUNICORN_", "PORT"))
    }
    # The server's database is its own: with replicas configured for the
    # suite, its replica is that database too, as the suite's are.
    env.pop("DATABASE_DIRECT_URL", None)
    if env.pop("DATABASE_REPLICA_URLS", None) and database_url.startswith("postgres"):
        env["DATABASE_REPLICA_URLS"] = database_url
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DATABASE_URL=database_url,
        DJANGO_SECRET_KEY=SECRET_KEY,
        DJANGO_HTTPS="0",
        WEB_CONCURRENCY="2",
    )
    env.update(overrides)
    return env


def release(env: dict[str, str]) -> None:
    """The Procfile's release step (the migrations), as a platform runs it before a deploy."""
    done = subprocess.run(
        procfile_command("release"),
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the release step failed:\n{done.stdout}{done.stderr}")


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def spawn(
    command: list[str], env: dict[str, str], log: Path, *, discard_stdout: bool = False
) -> subprocess.Popen:
    """Start a server in a process group of its own, its output appended to ``log``."""
    with log.open("ab") as output:
        return subprocess.Popen(
            command,
            cwd=PROJECT,
            env=env,
            stdout=subprocess.DEVNULL if discard_stdout else output,
            stderr=output if discard_stdout else subprocess.STDOUT,
            start_new_session=True,
        )


def web_command(port: int) -> list[str]:
    # Loopback only: gunicorn.conf.py binds every interface, as a deploy wants; a later --bind wins.
    return [*procfile_command("web"), "--bind", f"{HOST}:{port}"]


def wait_until_answering(
    port: int, process: subprocess.Popen, log: Path, timeout: float = 30
) -> None:
    """Until the server answers HTTP at all (any status); an error if it exits or never does."""
    deadline = time.monotonic() + timeout
    while True:
        connection = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            connection.request("GET", "/conversations/warm-up")
            connection.getresponse().read()
            return
        except (OSError, http.client.HTTPException):
            if process.poll() is not None or time.monotonic() > deadline:
                output = log.read_text(errors="replace")
                raise RuntimeError(f"the server did not start; its log {log}:\n{output}") from None
            time.sleep(0.1)
        finally:
            connection.close()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``: a gunicorn master's workers."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def stop(process: subprocess.Popen | None, timeout: float = 30) -> None:
    """SIGTERM the whole process group (gunicorn and its workers); SIGKILL what outstays it."""
    if process is None:
        return
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    wait_for_group_to_exit(process, timeout=10)


def wait_for_group_to_exit(process: subprocess.Popen, timeout: float) -> None:
    """Until no process of the group is left (a worker can outlive its master); then SIGKILL."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            return
        time.sleep(0.02)


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
    # The web process, leader of the server's process group (None when not ours to signal).
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


class RestartableServer:
    """The Procfile's web process on a port of its own, that can be stopped and started
    again on it: a restart, as its clients see one. Run the release step first."""

    def __init__(self, env: dict[str, str], log: Path, command: list[str] | None = None) -> None:
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port)}
        self.log = log
        self.command = command or web_command(self.port)
        self.process: subprocess.Popen | None = None

    def start(self) -> LiveServer:
        self.process = spawn(self.command, self.env, self.log)
        wait_until_answering(self.port, self.process, self.log)
        return LiveServer(HOST, self.port, self.process)

    def stop(self) -> None:
        """SIGTERM, as a platform stops a process, and wait until it has exited."""
        stop(self.process)
        self.process = None


@contextmanager
def live_server(env: dict[str, str], log: Path) -> Iterator[LiveServer]:
    """The release step, then the Procfile's web process on a free port until done."""
    port = free_port()
    env = {**env, "PORT": str(port)}
    release(env)
    process = spawn(web_command(port), env, log)
    try:
        wait_until_answering(port, process, log)
        yield LiveServer(HOST, port, process)
    finally:
        stop(process)
