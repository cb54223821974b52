"""A deployment on one machine: a primary, its streaming replica, PgBouncer in front of each.

Built from the PostgreSQL server binaries and Debian's pgbouncer on free
loopback ports, never the shared server: ``make scale-test`` (bench/scale.py)
runs its clients and nemesis against it, and tests/test_scale.py the rules of
a replica read. The replica logs every statement, so that which reads it
served is read from its own record (``replica_statements``, ``replica_reads``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from harness.databases import ThrowawayPostgres as Postgres
from harness.databases import postgres_unavailable
from harness.processes import HOST, free_port, server_environment

POOL_SIZE = 4
INSTANCES, WORKERS = 2, 2
REDIS_URL = "redis://127.0.0.1:6379/12"


def pgbouncer_unavailable() -> str | None:
    if shutil.which("pgbouncer") or Path("/usr/sbin/pgbouncer").is_file():
        return None
    return "Debian's pgbouncer is not installed (apt-get install pgbouncer)"


def install_pgbouncer() -> None:
    """As bin/install-chromium does for the browser: Debian's package, as root, if missing."""
    if pgbouncer_unavailable() is None or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "pgbouncer"],
        capture_output=True,
        timeout=600,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def unavailable() -> str | None:
    return postgres_unavailable() or pgbouncer_unavailable()


# -- the topology ------------------------------------------------------------


class Primary(Postgres):
    """initdb's defaults already stream WAL to replicas (wal_level replica, 10 senders)."""

    def create(self) -> None:
        super().create()
        # The service's time zone: neither Django nor PgBouncer then sets it on
        # each new connection, so every transaction in the replica's
        # pg_stat_database is a statement of the service's reads there.
        with admin_connection(self) as admin:
            admin.execute("ALTER SYSTEM SET timezone = 'UTC'")
            admin.execute("SELECT pg_reload_conf()")
            # PgBouncer 1.18 refuses the timeouts in the startup packet
            # (DJANGO_DB_SERVER_TIMEOUTS=off): the role carries them instead.
            admin.execute("ALTER ROLE postgres SET statement_timeout = '5s'")
            admin.execute("ALTER ROLE postgres SET lock_timeout = '2s'")

    def append_conf(self, text: str) -> None:
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(text)

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")


class Replica(Primary):
    """A hot standby streaming from the primary, logging every statement with its time."""

    def create_from(self, primary: Postgres) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "pg_basebackup", "-h", HOST, "-p", str(primary.port), "-U", "postgres",
            "-D", str(self.data), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        self.append_conf(
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.root}'\n"
            "hot_standby = on\n"
            # Every statement with its parameters and database: the record of
            # which reads the replica served.
            "log_statement = 'all'\n"
            "log_timezone = 'UTC'\n"
            "log_line_prefix = '%m [%p] %d '\n"
        )
        self.start()


class PgBouncer:
    """Debian's pgbouncer in transaction mode in front of one server, on a free port."""

    def __init__(self, root: Path, name: str, server: Postgres, query_wait: float) -> None:
        self.root = root / name
        self.root.mkdir()
        self.port = free_port()
        self.server = server
        self.url = f"postgres://postgres@{HOST}:{self.port}/chat"
        self.process: subprocess.Popen | None = None
        ini = self.root / "pgbouncer.ini"
        (self.root / "userlist.txt").write_text('"postgres" ""\n')
        ini.write_text(
            "[databases]\n"
            f"chat = host={HOST} port={server.port} dbname=chat\n"
            "[pgbouncer]\n"
            f"listen_addr = {HOST}\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.root / 'userlist.txt'}\n"
            "admin_users = postgres\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {POOL_SIZE}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
            "max_client_conn = 200\n"
            # As deploy/pgbouncer.ini: a server that is down fails a query
            # promptly instead of holding it for two minutes.
            "server_connect_timeout = 1\nserver_login_retry = 1\n"
            f"query_wait_timeout = {query_wait}\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
            f"pidfile = {self.root / 'pgbouncer.pid'}\n"
        )
        if os.geteuid() == 0:
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, "postgres", "postgres")

    def start(self) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        command = [binary, str(self.root / "pgbouncer.ini")]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root.
            command = ["runuser", "-u", "postgres", "--", *command]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as probe:
                    probe.execute("SELECT 1")
                return
            except psycopg.Error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start; see {self.root}") from None
                time.sleep(0.1)

    def admin(self, command: str) -> None:
        url = f"postgres://postgres@{HOST}:{self.port}/pgbouncer"
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as console:
            console.execute(command, prepare=False)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            self.process.wait(timeout=30)


def topology_up(
    bindir: Path, root: Path, cleanup: ExitStack
) -> tuple[Primary, Replica, dict[str, PgBouncer]]:
    """The primary, its streaming replica, and a PgBouncer in front of each; stopped by cleanup."""
    primary = Primary(bindir, root / "primary")
    replica = Replica(bindir, root / "replica")
    for server in (primary, replica):
        server.root.mkdir()
        cleanup.callback(server.destroy)
    primary.create()
    replica.create_from(primary)
    bouncers = {
        "primary": PgBouncer(root, "pgbouncer-primary", primary, query_wait=5),
        # A read that would wait longer for the replica is the primary's.
        "replica": PgBouncer(root, "pgbouncer-replica", replica, query_wait=0.5),
    }
    for bouncer in bouncers.values():
        cleanup.callback(bouncer.stop)
        bouncer.start()
    return primary, replica, bouncers


def admin_connection(server: Postgres) -> psycopg.Connection:
    """A connection to the server's ``postgres`` database: its activity is not the service's."""
    return psycopg.connect(server.url_of("postgres"), autocommit=True)


# -- the replica's statement log ------------------------------------------------

_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[(\d+)\] (\S*) ?(LOG|DETAIL):  (.*)$"
)
_STATEMENT = re.compile(r"^(?:statement|execute [^:]*): (.*)$")
_PARAMETER = re.compile(r"\$\d+ = (?:'((?:[^']|'')*)'|NULL)")
# The first statement of each read the service lets a replica serve: a
# history read's counters, or one message by its id.
_SERVED = {
    "history": re.compile(r'FROM "conversations_conversation" WHERE id = \$1'),
    "message": re.compile(
        r'FROM "conversations_message" WHERE "conversations_message"\."id" = \$1'
    ),
}
POSITION_CHECK = "SELECT pg_is_in_recovery()"


@dataclass
class Statement:
    at: float
    pid: str
    text: str
    parameters: list[str]


@dataclass
class ServedRead:
    at: float
    kind: str
    # The conversation id of a history read, the message id of a message read.
    key: str


def lsn(text: str) -> int:
    high, low = text.split("/")
    return int(high, 16) << 32 | int(low, 16)


def replica_statements(log: Path) -> list[Statement]:
    """Every statement run in the replica's ``chat`` database, with its time and parameters."""
    statements: list[Statement] = []
    awaiting_parameters: dict[str, Statement] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match or match[3] != "chat":
            continue
        stamp, pid, _, level, text = match.groups()
        if level == "LOG" and (statement := _STATEMENT.match(text)):
            at = datetime.strptime(stamp + "+0000", "%Y-%m-%d %H:%M:%S.%f%z").timestamp()
            statements.append(Statement(at, pid, statement[1], []))
            awaiting_parameters[pid] = statements[-1]
        elif level == "DETAIL" and text.startswith("parameters: ") and pid in awaiting_parameters:
            values = _PARAMETER.findall(text)
            awaiting_parameters.pop(pid).parameters = [v.replace("''", "'") for v in values]
    return statements


def replica_reads(statements: list[Statement]) -> list[ServedRead]:
    """The reads the replica served: each one's first statement there."""
    return [
        ServedRead(statement.at, kind, statement.parameters[0])
        for statement in statements
        for kind, pattern in _SERVED.items()
        if pattern.search(statement.text) and statement.parameters
    ]


def web_environment(primary: Postgres, bouncers: dict[str, PgBouncer], ignore_token: bool):
    return server_environment(
        bouncers["primary"].url,
        DATABASE_DIRECT_URL=primary.url,
        DATABASE_REPLICA_URLS=bouncers["replica"].url,
        DATABASE_PREPARED_STATEMENTS="0",
        DJANGO_DB_SERVER_TIMEOUTS="off",
        DATABASE_REPLICA_IGNORE_TOKEN="1" if ignore_token else "0",
        REDIS_URL=REDIS_URL,
        # One address, eight busy clients: limits far above what they send,
        # counted in Redis by both instances.
        RATE_LIMIT_POST="1000000/min",
        RATE_LIMIT_GET="1000000/min",
        WEB_CONCURRENCY=str(WORKERS),
    )
