"""The first hour from a fresh clone: the make targets the README shows do what it says."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

from harness.processes import PROJECT, free_port

DEV_PASSWORD = "a long enough password for the first hour"


def newcomer_shell() -> dict[str, str]:
    """The environment without the suite's own database settings (CI runs it with
    replicas of its PostgreSQL): a newcomer's make targets run on SQLite."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}


def make(*args: str, env: dict[str, str] | None = None, timeout: int = 180):
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=PROJECT,
        env={**newcomer_shell(), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_busy_port_is_reported_before_any_setup_step(tmp_path: Path):
    venv = tmp_path / "fresh-venv"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        run = make("run", f"PORT={port}", f"VENV={venv}")

    assert run.returncode != 0
    assert f"Port {port} on 127.0.0.1 is busy" in run.stderr
    assert f"Pick another: make run PORT={port + 1}" in run.stderr
    # Nothing was installed or migrated first.
    assert not venv.exists()
    assert "migrate" not in run.stdout


def test_make_run_serves_on_the_port_it_is_given(tmp_path: Path):
    port = free_port()
    env = {**newcomer_shell(), "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}"}
    server = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=PROJECT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        status = None
        deadline = time.monotonic() + 60
        while status is None and time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/conversations/1234")
                status = conn.getresponse().status
                conn.close()
            except OSError:
                time.sleep(0.3)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        output, _ = server.communicate(timeout=30)

    assert status == 200, output
    assert f"Demo:  http://127.0.0.1:{port}/ (the chat page)" in output


def test_make_superuser_asks_nothing_when_the_environment_says_it_all(tmp_path: Path):
    database = tmp_path / "admin.sqlite3"

    run = make(
        "superuser",
        env={
            "DATABASE_URL": f"sqlite:///{database}",
            "DJANGO_SUPERUSER_USERNAME": "boss",
            "DJANGO_SUPERUSER_EMAIL": "boss@example.com",
            "DJANGO_SUPERUSER_PASSWORD": DEV_PASSWORD,
        },
    )

    assert run.returncode == 0, run.stderr
    assert "Superuser created successfully." in run.stdout
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT username, email, is_staff, is_superuser FROM auth_user"
        ).fetchall()
    assert rows == [("boss", "boss@example.com", 1, 1)]


def collected(target: str) -> str:
    run = make(target, "ARGS=--collect-only -q -p no:cacheprovider")
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_make_test_fast_leaves_out_the_browser_and_the_crash_and_fuzz_runs():
    fast, full = collected("test-fast"), collected("test")

    for slow in (
        "tests/test_crash.py",
        "tests/test_fuzz.py",
        "test_two_people_in_one_conversation",
    ):
        assert slow not in fast
        assert slow in full
    for everyday in ("test_the_root_url_serves_the_chat_page", "tests/test_errors.py"):
        assert everyday in fast
        assert everyday in full
