"""``make bench-live``: live delivery (issue 9) on PostgreSQL, against today's WSGI server.

Two servers run at once on one fresh database (``chat_bench_live`` on
127.0.0.1:5432), loopback only: the Procfile's ``web`` process with its default
settings ("service"), and the WSGI server it replaced ("wsgi": ``gunicorn
chatproject.wsgi`` with gunicorn.conf.py's settings and gthread workers, as
the ceiling of ``make bench`` runs). It measures, and
prints as markdown tables:

- delivery: streams open over 200 conversations while 50 messages a second
  are posted; the latency from each POST's ``201`` to the event at each stream
  of its conversation, p50 / p99 / max, and whether every message reached every
  stream of its conversation exactly once (misses, duplicates, order);
- the API's POST and page req/s and CPU per answer (the server's process tree
  and its PostgreSQL backends) with no streams, with 1,000 idle and with 1,000
  receiving streams open, each against the WSGI server measured in turn;
- worker resident memory and PostgreSQL connections at 0, 1,000 and 2,000
  streams, and the memory each stream costs;
- widget capacity: the most streams at which p99 stays within 200 ms, against
  the widgets the same box serves polling every 2 s (its idle-poll req/s × 2);
- with ``--ten-thousand``: 10,000 streams on a restarted service whose stream
  and connection bounds are raised to hold them (still two workers): memory,
  delivery, and the API's req/s with them open;
- with ``--widgets N[,M...]``: N streams the same way (memory and delivery),
  then M, the steps that tell whether live delivery serves five times the
  polling widgets.
  Each stream is a descriptor in a client and in a worker: run as root (with
  CAP_SYS_RESOURCE), the benchmark raises its hard open-file limit to hold
  them, and the servers it starts inherit it (gunicorn.conf.py raises the soft
  limit to the hard one); otherwise each worker holds at most its hard limit.

The stream clients are asyncio protocols over raw sockets, no task per stream,
in ``--clients`` processes; every timestamp is ``time.monotonic()``, one
clock for every process on Linux. Every loop is bounded by count and time.
``--quick`` is a smoke run of about a minute at a tenth of the scale.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

from bench.run import BENCH, COUNTERS, RESULTS, ensure_wrk, get_scenario
from conversations.rules import EVENTS_CONNECTIONS_PER_PROCESS
from harness.processes import PROJECT, free_port, procfile_command, release

HOST = "127.0.0.1"
SERVER_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE = "chat_bench_live"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
# This script's own connections, left out of every server's count.
BENCH_APPLICATION = "bench live"
CONVERSATIONS = 200
PAGE_MESSAGES = 50
# The web process before live delivery: the same settings, gthread workers.
WSGI_COMMAND = [
    "gunicorn", "chatproject.wsgi", "--config", "gunicorn.conf.py", "--worker-class", "gthread",
]  # fmt: skip
WORKERS = 2
# Django threads per worker: gunicorn.conf.py's default, since no GUNICORN_ variable is passed on.
GUNICORN_THREADS = 4
WIDGET_P99_MS = 200
POLL_SECONDS = 2
# The bounds a 10,000-stream service needs, per worker: streams, and open
# connections (streams, keep-alive API clients and the benchmark's wrk).
TEN_THOUSAND_ENV = {"EVENTS_MAX_STREAMS": "10000", "WEB_MAX_CONNECTIONS": "12000"}


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def raise_open_file_limit(wanted: int = 0) -> int:
    """Soft RLIMIT_NOFILE up to the hard one (each stream is a descriptor here too).

    As root, the hard limit too, up to ``wanted``: this process's children, the
    servers among them, inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < wanted:
        with open("/proc/sys/fs/nr_open") as ceiling:
            raised = min(wanted, int(ceiling.read()))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, raised))
            hard = raised
        except (ValueError, OSError):
            # Root without CAP_SYS_RESOURCE (a container): the hard limit stays.
            pass
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the servers -------------------------------------------------------------


@dataclass
class Server:
    name: str
    argv: list[str]
    overrides: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GUNICORN_"))}
        env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            # Named, so that each server's connections are told apart.
            DATABASE_URL=f"{DATABASE_URL}?application_name={self.name}",
            DJANGO_SECRET_KEY="benchmark-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
            DJANGO_HTTPS="0",
            WEB_CONCURRENCY=str(WORKERS),
            # The load comes from one address; limits it can never reach keep
            # the rate limiter's cost in what is measured, refusing nothing.
            RATE_LIMIT_POST="1000000000/s",
            RATE_LIMIT_GET="1000000000/s",
            PORT=str(self.port),
        )
        env.update(self.overrides)
        return env

    def start(self) -> None:
        self.port = free_port()
        log_path = RESULTS / f"live-{self.name}.log"
        with log_path.open("wb") as errors:
            self.process = subprocess.Popen(
                # Loopback only: the config files bind every interface, as a deploy wants.
                [*self.argv, "--bind", f"{HOST}:{self.port}"],
                cwd=PROJECT,
                env=self.environment(),
                # stdout is the request log, a line per answer: kept off the disk.
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = get(self, "/conversations/warm-up")
                if status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {log_path}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def workers(self) -> list[psutil.Process]:
        """gunicorn's workers: the leaves of the process tree under the started command."""
        tree = self.tree()
        parents = {process.ppid() for process in tree}
        return [process for process in tree if process.pid not in parents]

    def backends(self, admin: psycopg.Connection) -> list[tuple[int, str]]:
        """The server's PostgreSQL backends (pid, state): ``wsgi``'s by name, the rest for
        the service, whose live-events connections carry a name of their own."""
        clause = "= %s" if self.name == "wsgi" else "NOT IN (%s, 'wsgi')"
        value = self.name if self.name == "wsgi" else BENCH_APPLICATION
        return admin.execute(
            "SELECT pid, coalesce(state, '') FROM pg_stat_activity "
            f"WHERE datname = %s AND backend_type = 'client backend' AND application_name {clause}",
            [DATABASE, value],
        ).fetchall()

    def cpu_seconds(self, admin: psycopg.Connection) -> dict[int, float]:
        """User + system CPU so far of each process of the server and of each of its backends."""
        processes = self.tree()
        processes += [psutil.Process(pid) for pid, _ in self.backends(admin)]
        times = {}
        for process in processes:
            try:
                cpu = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            times[process.pid] = cpu.user + cpu.system
        return times

    def worker_rss_mb(self) -> list[float]:
        return sorted(worker.memory_info().rss / 2**20 for worker in self.workers())

    def streams_per_worker(self) -> list[int]:
        """Established connections to the server's port, per worker (streams and keep-alives)."""
        counts = []
        for worker in self.workers():
            connections = worker.net_connections("tcp")
            counts.append(
                sum(
                    1
                    for c in connections
                    if c.status == "ESTABLISHED" and c.laddr.port == self.port
                )
            )
        return sorted(counts)

    def open_file_limit(self) -> int:
        return min(worker.rlimit(psutil.RLIMIT_NOFILE)[0] for worker in self.workers())


def require_events(server: Server) -> None:
    """Exit, saying why, unless the server answers an events path with a stream."""
    connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        connection.request("GET", "/conversations/live-1/events")
        response = connection.getresponse()
        kind = response.getheader("Content-Type", "")
    finally:
        connection.close()
    if response.status != 200 or not kind.startswith("text/event-stream"):
        sys.exit(
            f"the web process answers /conversations/<id>/events with {response.status} "
            f"{kind!r}, not an event stream: this checkout has no live delivery to measure"
        )


def get(server: Server, path: str, headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


# -- the database ------------------------------------------------------------

FILL = f"""
INSERT INTO conversations_conversation (id, message_count)
    SELECT prefix || c, 0
    FROM generate_series(1, {CONVERSATIONS}) c, unnest(ARRAY['page-', 'live-']) prefix;
INSERT INTO conversations_message (conversation_id, sender, message, created)
    SELECT 'page-' || c, 'user' || (m % 7),
           'Prefilled message ' || m || ' of a benchmark conversation, about as long as a chat line.',
           date_trunc('milliseconds', now() - interval '1 day' + (m * {CONVERSATIONS} + c) * interval '1 ms')
    FROM generate_series(1, {PAGE_MESSAGES}) m, generate_series(1, {CONVERSATIONS}) c
    ORDER BY m, c;
INSERT INTO conversations_message (conversation_id, sender, message, created)
    SELECT 'live-' || c, 'user', 'The first message of a live conversation.',
           date_trunc('milliseconds', now() - interval '1 hour')
    FROM generate_series(1, {CONVERSATIONS}) c;
"""


def admin_connection(database: str = DATABASE) -> psycopg.Connection:
    return psycopg.connect(
        SERVER_URL, dbname=database, autocommit=True, application_name=BENCH_APPLICATION
    )


def prepare_database(environment: dict[str, str]) -> None:
    """A fresh database, migrated by the Procfile's release command, then filled."""
    with admin_connection("postgres") as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    release(environment)
    with admin_connection() as admin:
        admin.execute(FILL)
        admin.execute(COUNTERS)
        admin.execute("VACUUM ANALYZE")
        admin.execute("CHECKPOINT")


def newest_ids(admin: psycopg.Connection) -> dict[str, int]:
    rows = admin.execute(
        "SELECT conversation_id, max(id) FROM conversations_message "
        "WHERE conversation_id LIKE 'live-%%' GROUP BY 1"
    ).fetchall()
    return dict(rows)


# -- the stream clients (one process per shard) -------------------------------

HEAD, SIZE, DATA = 0, 1, 2


class StreamClient(asyncio.Protocol):
    """One event stream: HTTP/1.1 chunked framing, then Server-Sent Events, parsed as they come."""

    def __init__(self, shard: Shard, key: int, path: bytes) -> None:
        self.shard = shard
        self.key = key
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.events = bytearray()
        self.state = HEAD
        self.size = 0
        self.opened = shard.loop.create_future()
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n"
            % (self.path, HOST.encode())
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self.buffer
        buffer += data
        while True:
            if self.state == HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buffer[:end]).lower()
                del buffer[: end + 4]
                status = int(head.split(b" ", 2)[1])
                if status != 200 or b"transfer-encoding: chunked" not in head:
                    self.settle(status)
                    self.closing = True
                    self.transport.close()
                    return
                self.state = SIZE
            elif self.state == SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                self.size = int(bytes(buffer[:end]).split(b";")[0], 16)
                del buffer[: end + 2]
                if self.size == 0:
                    self.shard.ended.append((self.key, "ended by the server"))
                    self.closing = True
                    self.transport.close()
                    return
                self.state = DATA
            else:
                if len(buffer) < self.size + 2:
                    return
                self.feed(buffer[: self.size], now)
                del buffer[: self.size + 2]
                self.state = SIZE

    def feed(self, data: bytearray, now: float) -> None:
        events = self.events
        events += data
        while (end := events.find(b"\n\n")) >= 0:
            block = bytes(events[:end])
            del events[: end + 2]
            if block.startswith(b"retry:"):
                self.settle(200)
            elif b"event: message" in block:
                self.shard.window.append((self.key, int(block[4 : block.index(b"\n")]), now))
            elif b"event: reset" in block:
                self.shard.ended.append((self.key, "reset"))

    def settle(self, status: int) -> None:
        if not self.opened.done():
            self.opened.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.settle(0)
        if not self.closing:
            self.shard.ended.append((self.key, "connection lost"))
        self.shard.streams.pop(self.key, None)


class Shard:
    """A client process's streams, driven by commands from the main process over a pipe."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pipe, port: int) -> None:
        self.loop = loop
        self.pipe = pipe
        self.port = port
        self.streams: dict[int, StreamClient] = {}
        self.window: list[tuple[int, int, float]] = []
        self.ended: list[tuple[int, str]] = []
        self.lags: list[float] = []
        self.done = loop.create_future()

    async def watch_lag(self) -> None:
        """How late this process's event loop runs a 10 ms timer: the client's own delay."""
        while not self.done.done():
            started = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags.append(time.monotonic() - started - 0.01)

    async def open(self, streams: list[tuple[int, str]], concurrency: int, timeout: float) -> dict:
        started = time.monotonic()
        gate = asyncio.Semaphore(concurrency)
        statuses: dict[int, int] = {}

        async def one(key: int, path: str) -> None:
            async with gate:
                try:
                    _, client = await asyncio.wait_for(
                        self.loop.create_connection(
                            lambda: StreamClient(self, key, path.encode()), HOST, self.port
                        ),
                        timeout,
                    )
                    status = await asyncio.wait_for(asyncio.shield(client.opened), timeout)
                except (OSError, TimeoutError):
                    status = 0
                else:
                    if status == 200:
                        self.streams[key] = client
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(one(key, path) for key, path in streams))
        opened = [key for key, _ in streams if key in self.streams]
        return {"statuses": statuses, "seconds": time.monotonic() - started, "opened": opened}

    def drop(self, keys: list[int]) -> int:
        dropped = 0
        for key in keys:
            client = self.streams.pop(key, None)
            if client is not None:
                client.closing = True
                client.transport.close()
                dropped += 1
        return dropped

    def collect(self) -> dict:
        window, self.window = self.window, []
        ended, self.ended = self.ended, []
        lags, self.lags = self.lags, []
        return {"events": window, "ended": ended, "lags": lags, "open": len(self.streams)}

    def on_command(self) -> None:
        command, *arguments = self.pipe.recv()
        if command == "open":
            task = self.loop.create_task(self.open(*arguments))
            task.add_done_callback(lambda done: self.pipe.send(done.result()))
        elif command == "drop":
            self.pipe.send(self.drop(*arguments))
        elif command == "count":
            self.pipe.send(len(self.window))
        elif command == "collect":
            self.pipe.send(self.collect())
        elif command == "quit":
            self.drop(list(self.streams))
            self.done.set_result(None)


def shard_main(pipe, port: int) -> None:
    raise_open_file_limit()
    try:
        import uvloop
    except ImportError:  # the stdlib loop serves too, a little more slowly
        uvloop = None
    run = uvloop.run if uvloop is not None else asyncio.run

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        shard = Shard(loop, pipe, port)
        loop.add_reader(pipe.fileno(), shard.on_command)
        # The loop (libuv) makes the descriptor non-blocking; a command or a
        # reply larger than the socket buffer then arrives in parts, which
        # Connection.recv cannot read: blocking again, each is read whole.
        os.set_blocking(pipe.fileno(), True)
        watcher = loop.create_task(shard.watch_lag())
        await shard.done
        watcher.cancel()
        await asyncio.sleep(0.1)

    run(serve())


class Clients:
    """The stream clients: ``count`` processes, the streams dealt out among them."""

    def __init__(self, server: Server, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes = []
        self.processes = []
        for _ in range(count):
            mine, theirs = context.Pipe()
            process = context.Process(target=shard_main, args=(theirs, server.port), daemon=True)
            process.start()
            self.pipes.append(mine)
            self.processes.append(process)
        # Stream key -> (its shard, its conversation).
        self.streams: dict[int, tuple[int, str]] = {}
        self.next_key = 0
        # Streams that did not open (any answer but a 200 stream, or none), ever.
        self.refused = 0

    def ask(self, *command, timeout: float = 120) -> list:
        for pipe in self.pipes:
            pipe.send(command)
        return [self.answer(pipe, timeout) for pipe in self.pipes]

    @staticmethod
    def answer(pipe, timeout: float):
        if not pipe.poll(timeout):
            raise RuntimeError(f"a stream client did not answer within {timeout:.0f} s")
        return pipe.recv()

    def open_to(self, total: int, resume: dict[str, int], concurrency: int = 64) -> dict:
        """Open streams until ``total`` are open, each from its conversation's newest id."""
        batches: list[list[tuple[int, str]]] = [[] for _ in self.pipes]
        planned = {}
        for _ in range(max(0, total - len(self.streams))):
            key = self.next_key
            self.next_key += 1
            conversation = f"live-{key % CONVERSATIONS + 1}"
            shard = key % len(self.pipes)
            planned[key] = (shard, conversation)
            path = f"/conversations/{conversation}/events?last_event_id={resume[conversation]}"
            batches[shard].append((key, path))
        for pipe, batch in zip(self.pipes, batches, strict=True):
            pipe.send(("open", batch, concurrency, 30.0))
        results = [self.answer(pipe, 300) for pipe in self.pipes]
        statuses: dict[int, int] = {}
        for result in results:
            for status, count in result["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
                if status != 200:
                    self.refused += count
        # A stream that did not open is forgotten: nothing is expected of it.
        for result in results:
            self.streams.update((key, planned[key]) for key in result["opened"])
        return {"statuses": statuses, "seconds": max(r["seconds"] for r in results)}

    def drop_to(self, total: int) -> None:
        keys = sorted(self.streams)[total:]
        by_shard: list[list[int]] = [[] for _ in self.pipes]
        for key in keys:
            by_shard[self.streams.pop(key)[0]].append(key)
        for pipe, batch in zip(self.pipes, by_shard, strict=True):
            pipe.send(("drop", batch))
        for pipe in self.pipes:
            self.answer(pipe, 60)

    def count(self) -> int:
        return sum(self.ask("count"))

    def collect(self) -> dict:
        merged = {"events": [], "ended": [], "lags": [], "open": 0}
        for result in self.ask("collect"):
            for name in ("events", "ended", "lags"):
                merged[name] += result[name]
            merged["open"] += result["open"]
        return merged

    def quit(self) -> None:
        for pipe in self.pipes:
            pipe.send(("quit",))
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


# -- the poster ----------------------------------------------------------------


class Poster:
    """``rate`` POSTs a second to the live conversations, in turn, for ``seconds``.

    Open loop: message ``i`` is due ``i / rate`` seconds after the start and
    goes out on whichever of ``senders`` keep-alive connections is free, so a
    slow answer delays no other message's schedule unless all are busy.
    """

    def __init__(self, server: Server, rate: int, seconds: float, senders: int = 8) -> None:
        self.server = server
        self.rate = rate
        self.total = int(rate * seconds)
        self.senders = senders
        self.lock = threading.Lock()
        self.next_index = 0
        self.answered: dict[int, float] = {}
        self.posted: dict[str, list[int]] = {}
        self.failures = 0
        self.late = 0.0
        self.stopping = False
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.started = time.monotonic()
        self.threads = [
            threading.Thread(target=self.send, daemon=True) for _ in range(self.senders)
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """No further message: the ones on their way are still answered and recorded."""
        self.stopping = True
        self.join()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=self.total / self.rate + 60)
        self.seconds = time.monotonic() - self.started

    def send(self) -> None:
        connection = http.client.HTTPConnection(HOST, self.server.port, timeout=10)
        while True:
            with self.lock:
                index = self.next_index
                self.next_index += 1
            if index >= self.total or self.stopping:
                break
            due = self.started + index / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                self.late = max(self.late, -wait)
            conversation = f"live-{index % CONVERSATIONS + 1}"
            body = json.dumps(
                {"sender": "bench", "conversation_id": conversation, "message": f"Live {index}"}
            )
            try:
                connection.request("POST", "/messages/", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                answered = time.monotonic()
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(HOST, self.server.port, timeout=10)
                self.failures += 1
                continue
            if response.status != 201:
                self.failures += 1
                continue
            message_id = json.loads(payload)["id"]
            with self.lock:
                self.answered[message_id] = answered
                self.posted.setdefault(conversation, []).append(message_id)
        connection.close()


# -- measurements ----------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def delivery(
    label: str,
    clients: Clients,
    poster: Poster,
    drain_seconds: float,
) -> dict:
    """Wait for every expected delivery (up to ``drain_seconds``), then check them all."""
    per_conversation: dict[str, int] = {}
    for _, conversation in clients.streams.values():
        per_conversation[conversation] = per_conversation.get(conversation, 0) + 1
    expected = sum(len(ids) * per_conversation.get(c, 0) for c, ids in poster.posted.items())
    deadline = time.monotonic() + drain_seconds
    while clients.count() < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    window = clients.collect()
    received: dict[int, list[int]] = {}
    latencies = []
    for key, message_id, at in window["events"]:
        received.setdefault(key, []).append(message_id)
        answered = poster.answered.get(message_id)
        if answered is not None:
            latencies.append((at - answered) * 1000)
    missed = duplicated = unordered = unexpected = 0
    for key, (_, conversation) in clients.streams.items():
        ids = received.get(key, [])
        wanted = set(poster.posted.get(conversation, []))
        got = set(ids)
        missed += len(wanted - got)
        unexpected += len(got - wanted)
        duplicated += len(ids) - len(got)
        unordered += sum(1 for a, b in zip(ids, ids[1:], strict=False) if b <= a)
    result = {
        "label": label,
        "streams": len(clients.streams),
        "posted": sum(len(ids) for ids in poster.posted.values()),
        "post_failures": poster.failures,
        "rate": sum(len(ids) for ids in poster.posted.values()) / poster.seconds,
        "expected": expected,
        "delivered": len(window["events"]),
        "missed": missed,
        "duplicated": duplicated,
        "unordered": unordered,
        "unexpected": unexpected,
        "ended": len(window["ended"]),
        "refused": clients.refused,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
        "client_lag_max_ms": max(window["lags"], default=0.0) * 1000,
        "poster_late_ms": poster.late * 1000,
    }
    log(
        f"delivery {label}: {result['delivered']:,}/{expected:,} delivered, p50 "
        f"{result['p50_ms']:.1f} p99 {result['p99_ms']:.1f} max {result['max_ms']:.1f} ms, "
        f"missed {missed} duplicated {duplicated} ended {result['ended']}"
    )
    return result


def delivery_window(label: str, clients: Clients, server: Server, args) -> dict:
    clients.collect()
    poster = Poster(server, args.rate, args.window)
    poster.start()
    poster.join()
    return delivery(label, clients, poster, args.drain)


class ConnectionPeak(threading.Thread):
    """The most PostgreSQL connections the server held at once, sampled every 0.25 s."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak = 0
        self.running = True

    def run(self) -> None:
        with admin_connection() as admin:
            while self.running:
                self.peak = max(self.peak, len(self.server.backends(admin)))
                time.sleep(0.25)


def wrk_run(wrk: str, server: Server, admin, script: str, seconds: float) -> dict:
    template = (BENCH / "wrk.lua.template").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(template.replace("-- SCENARIO --", script))
    before = server.cpu_seconds(admin)
    out = subprocess.run(
        [wrk, "-t2", "-c32", f"-d{seconds}s", "--timeout", "10s", "--latency", "-s", lua.name]
        + [server.url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    after = server.cpu_seconds(admin)
    os.unlink(lua.name)
    line = next((line for line in out.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    result = json.loads(line.removeprefix("RESULT "))
    result["statuses"] = {status: count for status, count in result["statuses"]}
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    spent = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    result["cpu_us"] = spent / max(result["requests"], 1) * 1e6
    return result


POST_SCRIPT = f"""
function request()
  sent = sent + 1
  local body = string.format(
    '{{"sender": "wrk%d", "conversation_id": "page-%d", "message": "Benchmark message %d"}}',
    thread_number, math.random({CONVERSATIONS}), sent)
  return wrk.format("POST", "/messages/", {{["Content-Type"] = "application/json"}}, body)
end
"""
PAGE_SCRIPT = get_scenario([f"/conversations/page-{c}" for c in range(1, CONVERSATIONS + 1)])
API_SCENARIOS = {"post": ("POST /messages/", {201}), "page": ("GET a page (50 messages)", {200})}


def poll_script(server: Server, newest: dict[str, int]) -> str:
    """The demo page's idle poll: ``?after=<newest id>`` with the ETag it last got (a 304)."""
    paths, etags = [], []
    for conversation, last in sorted(newest.items()):
        path = f"/conversations/{conversation}?after={last}"
        status, headers = get(server, path)
        if status != 200:
            raise RuntimeError(f"{path}: {status}")
        paths.append(path)
        etags.append(headers["etag"])
    return get_scenario(paths, etags)


def api_round(wrk: str, servers: list[Server], admin, args, condition: str) -> dict:
    """POST and page on each server in turn, ``args.runs`` times; the median run of each."""
    results: dict = {}
    for run in range(args.runs):
        order = servers if run % 2 == 0 else servers[::-1]
        for name in API_SCENARIOS:
            script = POST_SCRIPT if name == "post" else PAGE_SCRIPT
            for server in order:
                wrk_run(wrk, server, admin, script, args.warmup)
                result = wrk_run(wrk, server, admin, script, args.api_seconds)
                results.setdefault(name, {}).setdefault(server.name, []).append(result)
                log(
                    f"{condition:24} {name:5} {server.name:8} {result['rps']:7.0f} req/s  "
                    f"cpu {result['cpu_us']:5.0f} us/answer  statuses {result['statuses']}"
                )
    return {
        name: {server: median_run(runs) for server, runs in by_server.items()}
        for name, by_server in results.items()
    }


def median_run(runs: list[dict]) -> dict:
    """The median run by req/s, with every run's answers that were not a 2xx or 3xx."""
    median = dict(sorted(runs, key=lambda r: r["rps"])[len(runs) // 2])
    median["unexpected"] = sum(
        count
        for run in runs
        for status, count in run["statuses"].items()
        if not 200 <= status < 400
    ) + sum(run["socket_errors"] for run in runs)
    return median


def snapshot(label: str, server: Server, admin) -> dict:
    time.sleep(1)
    backends = server.backends(admin)
    result = {
        "label": label,
        "rss_mb": server.worker_rss_mb(),
        "connections": len(backends),
        "active": sum(1 for _, state in backends if state == "active"),
        "per_worker": server.streams_per_worker(),
    }
    log(
        f"memory {label}: workers {', '.join(f'{mb:.1f}' for mb in result['rss_mb'])} MB, "
        f"{result['connections']} PostgreSQL connections, connections per worker "
        f"{result['per_worker']}"
    )
    return result


def open_streams(clients: Clients, total: int, admin) -> dict:
    opened = clients.open_to(total, newest_ids(admin))
    refused = sum(n for status, n in opened["statuses"].items() if status != 200)
    log(f"streams: {total:,} open in {opened['seconds']:.1f} s, statuses {opened['statuses']}")
    return {"statuses": opened["statuses"], "refused": refused, "seconds": opened["seconds"]}


# -- the report -------------------------------------------------------------------


def delivery_table(rows: list[dict]) -> list[str]:
    lines = [
        "| streams open | conversations | messages posted (per s), POSTs failed | deliveries expected "
        "| delivered | missed / duplicated / out of order | p50 / p99 / max ms "
        "| streams refused / ended | client loop lag max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {CONVERSATIONS} | {row['posted']:,} ({row['rate']:.0f}), "
            f"{row['post_failures']} "
            f"| {row['expected']:,} | {row['delivered']:,} "
            f"| {row['missed']} / {row['duplicated']} / {row['unordered']} "
            f"| {row['p50_ms']:.1f} / {row['p99_ms']:.1f} / {row['max_ms']:.1f} "
            f"| {row['refused']} / {row['ended']} | {row['client_lag_max_ms']:.0f} |"
        )
    return lines


def api_table(conditions: dict[str, dict]) -> list[str]:
    lines = [
        "| scenario | streams open | service req/s | WSGI req/s | ratio "
        "| CPU µs per answer, service / WSGI | unexpected answers |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for condition, results in conditions.items():
        for name, (title, _) in API_SCENARIOS.items():
            ours, wsgi = results[name]["service"], results[name]["wsgi"]
            lines.append(
                f"| {title} | {condition} | {ours['rps']:,.0f} | {wsgi['rps']:,.0f} "
                f"| **{ours['rps'] / wsgi['rps']:.2f}×** "
                f"| {ours['cpu_us']:,.0f} / {wsgi['cpu_us']:,.0f} "
                f"| {ours['unexpected'] + wsgi['unexpected']} |"
            )
    return lines


def memory_table(snapshots: list[dict], base: dict) -> list[str]:
    lines = [
        "| streams open | worker RSS (MB) | per stream since 0 (KB) "
        "| PostgreSQL connections (active) | connections per worker |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for shot in snapshots:
        per = per_stream_kb(base, shot)
        lines.append(
            f"| {shot['label']} | {', '.join(f'{mb:.1f}' for mb in shot['rss_mb'])} "
            f"| {'—' if per is None else f'{per:.1f}'} | {shot['connections']} ({shot['active']}) "
            f"| {', '.join(str(n) for n in shot['per_worker'])} |"
        )
    return lines


def per_stream_kb(base: dict, shot: dict) -> float | None:
    if not shot["streams"]:
        return None
    return (sum(shot["rss_mb"]) - sum(base["rss_mb"])) * 1024 / shot["streams"]


def holds(ok: bool | str | None) -> str:
    """A target's verdict; a string says why the run could not tell."""
    if isinstance(ok, str):
        return ok
    return "not measured" if ok is None else ("**holds**" if ok else "**does not hold**")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 streams, 5 s")
    parser.add_argument(
        "--ten-thousand", action="store_true", help="then 10,000 streams (raised bounds)"
    )
    parser.add_argument(
        "--widgets",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[],
        help="then these many streams, a step each (a comma list; raised bounds)",
    )
    parser.add_argument("--clients", type=int, default=2, help="stream client processes")
    parser.add_argument("--rate", type=int, default=50, help="messages posted per second")
    parser.add_argument("--window", type=float, default=20, help="seconds of posting per window")
    parser.add_argument("--drain", type=float, default=10, help="seconds to wait for stragglers")
    parser.add_argument("--api-seconds", type=float, default=8, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per run")
    parser.add_argument("--runs", type=int, default=2, help="API runs per scenario and server")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    if args.quick:
        args.window, args.drain, args.api_seconds, args.warmup, args.runs = 5, 5, 2, 1, 1
    idle, busy = 1000 // scale, 2000 // scale
    ladder = [4000 // scale]
    ten_thousand = 10_000 // scale

    RESULTS.mkdir(exist_ok=True)
    # Each worker may hold every stream (their shares are uneven), as may a client.
    descriptors = raise_open_file_limit(2 * max(args.widgets, default=0) + 10_000)
    wrk = ensure_wrk()
    service = Server("service", procfile_command("web"))
    wsgi = Server("wsgi", WSGI_COMMAND)
    servers = [service, wsgi]
    log(f"preparing {DATABASE}")
    prepare_database(service.environment())
    figures: dict = {"delivery": [], "api": {}, "memory": []}
    clients = None
    with admin_connection() as admin:
        try:
            for server in servers:
                server.start()
            require_events(service)
            poll = poll_script(wsgi, newest_ids(admin))
            figures["poll"] = {}
            for server in servers:
                wrk_run(wrk, server, admin, poll, args.warmup)
                result = wrk_run(wrk, server, admin, poll, args.api_seconds)
                figures["poll"][server.name] = result
                log(f"idle poll {server.name}: {result['rps']:.0f} req/s {result['statuses']}")
            figures["api"]["none"] = api_round(wrk, servers, admin, args, "no streams")
            base = snapshot("0", service, admin) | {"streams": 0}
            figures["memory"].append(base)

            clients = Clients(service, args.clients)
            for total in (idle, busy):
                open_streams(clients, total, admin)
                shot = snapshot(f"{total:,}", service, admin) | {"streams": total}
                figures["memory"].append(shot)
            peak = ConnectionPeak(service)
            peak.start()
            row = delivery_window(f"{busy:,}", clients, service, args)
            figures["delivery"].append(row)
            clients.drop_to(idle)
            row = delivery_window(f"{idle:,}", clients, service, args)
            figures["delivery"].append(row)
            figures["api"][f"{idle:,} idle"] = api_round(wrk, servers, admin, args, "idle streams")

            # Receiving: the poster runs through the whole round of API runs,
            # stopped when it ends (bounded at twice the round's nominal time).
            round_seconds = args.runs * len(API_SCENARIOS) * 2 * (args.warmup + args.api_seconds)
            clients.collect()
            poster = Poster(service, args.rate, 2 * round_seconds + 30)
            poster.start()
            figures["api"][f"{idle:,} receiving"] = api_round(
                wrk, servers, admin, args, "receiving streams"
            )
            poster.stop()
            row = delivery(f"{idle:,}, API under wrk", clients, poster, args.drain)
            figures["delivery"].append(row)

            for total in ladder:
                open_streams(clients, total, admin)
                figures["memory"].append(
                    snapshot(f"{total:,}", service, admin) | {"streams": total}
                )
                row = delivery_window(f"{total:,}", clients, service, args)
                figures["delivery"].append(row)
            peak.running = False
            figures["connections_peak"] = peak.peak
            clients.quit()
            clients = None

            if args.ten_thousand:
                figures["ten_thousand"] = measure_step(
                    service, admin, args, ten_thousand, TEN_THOUSAND_ENV, wrk=wrk, wsgi=wsgi
                )
            figures["widgets"] = [
                measure_step(service, admin, args, total, widgets_environment(total))
                for total in args.widgets
            ]
        finally:
            if clients is not None:
                clients.quit()
            for server in servers:
                server.stop()
    report = render(args, figures, descriptors, idle, busy, ten_thousand)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    (RESULTS / f"live-{stamp}.json").write_text(json.dumps(figures, indent=1, default=str))
    (RESULTS / f"live-{stamp}.md").write_text(report + "\n")
    print()
    print(report)


def measure_step(
    service: Server,
    admin,
    args,
    total: int,
    bounds: dict[str, str],
    *,
    wrk: str | None = None,
    wsgi: Server | None = None,
) -> dict:
    """``total`` streams on a service restarted with ``bounds``: memory, delivery, and,
    given ``wsgi``, the API round against it with the streams open."""
    service.stop()
    service.overrides = dict(bounds)
    service.start()
    if wsgi is not None:
        for name in API_SCENARIOS:
            script = POST_SCRIPT if name == "post" else PAGE_SCRIPT
            wrk_run(wrk, service, admin, script, args.warmup)
    base = snapshot("0 (restarted)", service, admin) | {"streams": 0}
    clients = Clients(service, max(args.clients, -(-total // 5000)))
    try:
        opened = open_streams(clients, total, admin)
        shot = snapshot(f"{total:,}", service, admin) | {"streams": total}
        step = {
            "opened": opened,
            "memory": [base, shot],
            "delivery": delivery_window(f"{total:,}", clients, service, args),
            "open_file_limit": service.open_file_limit(),
        }
        if wsgi is not None:
            condition = f"{total:,} idle streams"
            step["api"] = api_round(wrk, [service, wsgi], admin, args, condition)
    finally:
        clients.quit()
    return step


def widgets_environment(total: int) -> dict[str, str]:
    """Bounds for ``total`` streams over two workers, whichever takes more of them."""
    return {"EVENTS_MAX_STREAMS": str(total), "WEB_MAX_CONNECTIONS": str(total + 2000)}


def render(args, figures: dict, descriptors: int, idle: int, busy: int, big: int) -> str:
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, PostgreSQL on "
        f"127.0.0.1){' — QUICK smoke run, a tenth of the scale' if args.quick else ''}: the "
        f"Procfile's web process with its default settings (WEB_CONCURRENCY={WORKERS}) against "
        f"the WSGI server it replaced (gthread workers, the same gunicorn.conf.py), both up at once; "
        f"{args.rate} messages/s posted to {CONVERSATIONS} conversations for {args.window:.0f} s "
        f"per delivery window; wrk 32 connections, {args.api_seconds:.0f} s per API run after "
        f"{args.warmup:.0f} s warm-up, median of {args.runs}; {args.clients} stream client "
        f"processes.",
        "",
        "Delivery, from each POST's 201 to the event at each stream of its conversation "
        "(a negative figure: the event came before the POST's answer was read):",
        "",
        *delivery_table(figures["delivery"]),
        "",
        "The API, against the WSGI server measured in turn in the same run (CPU: the server's "
        "processes and its PostgreSQL backends; with receiving streams it includes their "
        "deliveries):",
        "",
        *api_table(figures["api"]),
        "",
    ]
    memory = figures["memory"]
    lines += [
        f"Memory and PostgreSQL connections (the service; connections per worker counts every "
        f"established connection to it, streams and keep-alives; peak PostgreSQL connections "
        f"during the delivery windows: {figures['connections_peak']}):",
        "",
        *memory_table(memory, memory[0]),
        "",
    ]
    poll = figures["poll"]
    polling_rps = max(poll[name]["rps"] for name in poll)
    polling_widgets = polling_rps * POLL_SECONDS
    rows = list(figures["delivery"])
    ten = figures.get("ten_thousand")
    if ten:
        rows.append(ten["delivery"])
    rows += [step["delivery"] for step in figures.get("widgets", [])]
    live_ok = [
        row["streams"]
        for row in rows
        if row["expected"]
        and row["p99_ms"] <= WIDGET_P99_MS
        and not (row["missed"] or row["duplicated"] or row["ended"] or row["refused"])
    ]
    live_widgets = max(live_ok, default=0)
    top = max(row["streams"] for row in rows)
    lines += [
        "Widget capacity (one box, this run):",
        "",
        "| delivery | widgets | measured as |",
        "| --- | ---: | --- |",
        f"| polling every {POLL_SECONDS} s | {polling_widgets:,.0f} | idle poll (`?after=` with "
        f"`If-None-Match`, a 304) at {poll['service']['rps']:,.0f} req/s on the service, "
        f"{poll['wsgi']['rps']:,.0f} on the WSGI server; the better × {POLL_SECONDS} s |",
        f"| live | {'≥ ' if live_widgets == top else ''}{live_widgets:,} | the most streams "
        f"measured with p99 ≤ {WIDGET_P99_MS} ms and every message delivered once"
        f"{'; the largest step measured, so a lower bound' if live_widgets == top else ''} |",
        "",
    ]
    if ten:
        base, shot = ten["memory"]
        api = ten["api"]
        lines += [
            f"{big:,} streams (`--ten-thousand`): the service restarted with "
            + ", ".join(f"{k}={v}" for k, v in TEN_THOUSAND_ENV.items())
            + f" per worker, still {WORKERS} workers; open files per worker "
            f"{ten['open_file_limit']:,} (RLIMIT_NOFILE, raised to its hard limit by "
            f"gunicorn.conf.py), per client process {descriptors:,}; opened in "
            f"{ten['opened']['seconds']:.1f} s, statuses {ten['opened']['statuses']}:",
            "",
            *delivery_table([ten["delivery"]]),
            "",
            *memory_table([base, shot], base),
            "",
            *api_table({f"{big:,} idle": api}),
            "",
        ]
    for step in figures.get("widgets", []):
        base, shot = step["memory"]
        lines += [
            f"{shot['streams']:,} streams (`--widgets`): the service restarted with "
            + ", ".join(f"{k}={v}" for k, v in widgets_environment(shot["streams"]).items())
            + f" per worker, still {WORKERS} workers; open files per worker "
            f"{step['open_file_limit']:,}, per client process {descriptors:,}; opened in "
            f"{step['opened']['seconds']:.1f} s, statuses {step['opened']['statuses']}:",
            "",
            *delivery_table([step["delivery"]]),
            "",
            *memory_table([base, shot], base),
            "",
        ]
    lines += targets(figures, idle, busy, big, live_widgets, polling_widgets, live_widgets == top)
    return "\n".join(lines)


def targets(
    figures: dict, idle: int, busy: int, big: int, live: int, polling: float, bounded: bool
) -> list[str]:
    """Issue 9's targets, each with its figure; ``bounded``: the live capacity is a lower bound."""
    widgets: bool | str = live >= 5 * polling
    if not widgets and bounded:
        widgets = "not shown: the largest step measured held (`--widgets N` measures more)"
    by_label = {row["label"]: row for row in figures["delivery"]}
    at_idle = by_label[f"{idle:,}"]
    ten = figures.get("ten_thousand")
    api = figures["api"]

    def ratios(condition: dict) -> list[float]:
        return [
            condition[name]["service"]["rps"] / condition[name]["wsgi"]["rps"]
            for name in API_SCENARIOS
        ]

    none, idle_api = ratios(api["none"]), ratios(api[f"{idle:,} idle"])
    memory = {shot["streams"]: shot for shot in figures["memory"]}
    per_stream = per_stream_kb(memory[0], memory[busy])
    connections = [memory[n]["connections"] for n in (0, idle, busy)]
    # What the service may hold whatever the streams: each worker's threads'
    # persistent connections, its LISTEN connection and its catch-up pool (two).
    bound = WORKERS * (GUNICORN_THREADS + EVENTS_CONNECTIONS_PER_PROCESS)
    rows = [
        (
            f"p99 delivery ≤ 100 ms at {idle:,} streams",
            f"{at_idle['p99_ms']:.1f} ms, {at_idle['missed']} missed, "
            f"{at_idle['duplicated']} duplicated",
            at_idle["expected"] > 0
            and at_idle["p99_ms"] <= 100
            and not (at_idle["missed"] or at_idle["duplicated"] or at_idle["refused"]),
        ),
        (
            f"p99 delivery ≤ 250 ms at {big:,} streams",
            f"{ten['delivery']['p99_ms']:.1f} ms" if ten else "run with --ten-thousand",
            ten["delivery"]["p99_ms"] <= 250 if ten else None,
        ),
        (
            "API ≥ 0.9× the WSGI server, no streams (POST, page)",
            ", ".join(f"{r:.2f}×" for r in none),
            min(none) >= 0.9,
        ),
        (
            f"API ≥ 0.8× the WSGI server, {idle:,} idle streams (POST, page)",
            ", ".join(f"{r:.2f}×" for r in idle_api),
            min(idle_api) >= 0.8,
        ),
        (
            "≤ 50 KB of worker memory per open stream",
            f"{per_stream:.1f} KB (0 → {busy:,} streams)",
            per_stream <= 50,
        ),
        (
            "PostgreSQL connections independent of the stream count",
            f"{' / '.join(str(n) for n in connections)} at 0 / {idle:,} / {busy:,} streams; "
            f"peak {figures['connections_peak']} during delivery; bound {bound} "
            f"(workers × (threads + LISTEN + a pool of 2))",
            connections[2] <= connections[1] and figures["connections_peak"] <= bound,
        ),
        (
            "≥ 5× as many live widgets as polling widgets",
            f"{'≥ ' if bounded else ''}{live:,} / {polling:,.0f} = {live / polling:.1f}×",
            widgets,
        ),
    ]
    lines = ["| target | figure | |", "| --- | --- | --- |"]
    lines += [f"| {target} | {figure} | {holds(ok)} |" for target, figure, ok in rows]
    return lines


if __name__ == "__main__":
    main()
