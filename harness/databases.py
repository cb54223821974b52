"""Databases to run a server on: a fresh one on a server that exists, or a PostgreSQL of our own."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from harness.processes import HOST, free_port


def is_postgresql(database_url: str) -> bool:
    return urlsplit(database_url).scheme in {"postgres", "postgresql"}


def database_on(server_url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``server_url`` (same user, host, options)."""
    return urlsplit(server_url)._replace(scheme="postgres", path=f"/{name}").geturl()


def create_database(server_url: str, name: str, *, replace: bool = False) -> str:
    """A new, empty database on the server of ``server_url``; its URL."""
    with psycopg.connect(server_url, dbname="postgres", autocommit=True) as admin:
        if replace:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return database_on(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(tmp_dir: Path, database_url: str | None = None) -> Iterator[str]:
    """A new, empty database of ``database_url``'s kind, dropped at the end; its URL.

    ``database_url`` defaults to ``DATABASE_URL``, the one the settings read:
    a PostgreSQL URL gets a database of its own on that server, anything else
    (SQLite, the default) a file in ``tmp_dir``.
    """
    server_url = os.environ.get("DATABASE_URL", "") if database_url is None else database_url
    if not is_postgresql(server_url):
        yield f"sqlite:///{tmp_dir / 'live.sqlite3'}"
        return
    name = f"chat_live_{os.getpid()}_{time.monotonic_ns()}"
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        drop_database(server_url, name)


# -- a PostgreSQL cluster of our own ----------------------------------------


def _version_key(bindir: str) -> tuple[int, ...]:
    digits = re.findall(r"\d+", Path(bindir).parent.name)
    return tuple(int(d) for d in digits)


def postgres_bindir() -> Path | None:
    """The directory of initdb and pg_ctl: pg_config's, else the newest Debian one."""
    candidates = []
    if pg_config := shutil.which("pg_config"):
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += ["/usr/local/pgsql/bin"]
    for candidate in candidates:
        bindir = Path(candidate)
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def postgres_unavailable() -> str | None:
    """Why a throwaway PostgreSQL cannot be started here, or None if it can."""
    if postgres_bindir() is None:
        return "the PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no 'postgres' user to run PostgreSQL as"
    return None


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own in ``root``, on 127.0.0.1 and a free port only.

    It never stops or reconfigures a server it did not start. ``url`` is its
    one database, ``database``, made by ``create()``.
    """

    def __init__(self, bindir: Path, root: Path, database: str = "chat") -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "pgdata"
        self.log = root / "postgresql.log"
        self.port = free_port()
        self.database = database
        self.url = self.url_of(database)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root.
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def create(self) -> None:
        """initdb (trust auth, UTF-8, C locale), start, and create the database."""
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{HOST}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                # After a crash PostgreSQL fsyncs its data directory file by
                # file before recovery, seconds on a slow disk; one syncfs()
                # gives the same guarantee.
                "recovery_init_sync_method = syncfs\n"
            )
        self.start()
        create_database(self.url_of("postgres"), self.database)

    def url_of(self, database: str) -> str:
        return f"postgres://postgres@{HOST}:{self.port}/{database}"

    def start(self) -> None:
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60")

    def crash(self) -> None:
        """Stop without a checkpoint: every backend dies as in a power cut of the server."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self.crash()
            except RuntimeError as error:
                print(error, file=sys.stderr)


@contextmanager
def temporary_root(keep: bool) -> Iterator[Path]:
    """A directory under /tmp for throwaway servers, removed after unless ``keep``."""
    root = Path(tempfile.mkdtemp(prefix="chat-servers-"))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
