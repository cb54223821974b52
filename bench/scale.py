"""Scale test: two app servers, PgBouncer, a streaming replica, and no stale read for a writer.

    .venv/bin/python bench/scale.py                 # make scale-test: 12 s, then the control
    .venv/bin/python bench/scale.py --quick         # the variant tests/test_scale.py runs

It builds the deployment of docs/deployment.md on this machine: ``initdb`` a
primary on a free loopback port, ``pg_basebackup -R`` a streaming replica of
it, Debian's PgBouncer (transaction pooling, pool 4) in front of each, and two
instances of the Procfile's ``web`` command (``WEB_CONCURRENCY=2``) on them,
sharing Redis for the rate limits. Eight clients each post to one instance and
read their message back through the other (the default page, ``?after=``,
``GET /messages/<id>/``), echoing the ``Consistency-Token`` of the ``201``,
while a nemesis pauses the replica's replay (``pg_wal_replay_pause()``) for
1.5 s of every 3 s and once stops the replica and starts it again.

It then checks, from the servers' own records rather than the service's
claims: no acknowledged message lost or stored twice (the primary's table); no
read that lacks a message its client was acknowledged; the replica served at
least half of the reads while it was replaying, and none whose token was past
its replay position while paused (its statement log: each read it served
starts with the conversation's counters or the message, named by its
parameter, and the client's ledger tells which read that was and its token;
``pg_stat_database`` counts as many statements as the log holds); no 5xx; and
never more server connections on either PostgreSQL than the pool size
(``pg_stat_activity``, sampled).

Then it runs the negative control: the same run with the token ignored
(``DATABASE_REPLICA_IGNORE_TOKEN=1``), which must produce stale reads, so the
check is known to be able to fail. The exit status is 0 only when the run
passes every check and the control shows stale reads.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.crash import Gunicorn
from conversations.rules import EVENTS_LISTEN_APPLICATION_NAME
from harness.databases import ThrowawayPostgres as Postgres
from harness.databases import postgres_bindir, temporary_root
from harness.processes import HOST, release
from harness.topology import (
    INSTANCES,
    POOL_SIZE,
    POSITION_CHECK,
    WORKERS,
    PgBouncer,
    Primary,
    Replica,
    admin_connection,
    install_pgbouncer,
    lsn,
    replica_reads,
    replica_statements,
    topology_up,
    unavailable,
    web_environment,
)

CLIENTS = 8
PAUSE_EVERY, PAUSE_FOR = 3.0, 1.5
# The replica is stopped in this cycle's replaying half, for about this long.
STOP_CYCLE, STOP_FOR = 1, 1.0
REQUEST_TIMEOUT = 15.0
TOKEN = "Consistency-Token"
EXIT_FAILED, EXIT_SETUP_FAILED = 1, 2


def now_text() -> str:
    return time.strftime("%H:%M:%S") + f".{int(time.time() % 1 * 1000):03d}"


def say(text: str) -> None:
    print(f"[{now_text()}] {text}", flush=True)


# -- what the clients saw ------------------------------------------------------


@dataclass
class Read:
    kind: str
    started: float
    ended: float
    status: int
    stale: bool
    # What the replica's log names a read by: its conversation, or the
    # message it asked for (GET /messages/<id>/).
    key: str
    token: str | None


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: dict[str, tuple[int, str]] = field(default_factory=dict)
    reads: list[Read] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stale_examples: list[str] = field(default_factory=list)

    def count(self, what: str) -> None:
        with self.lock:
            self.statuses[what] = self.statuses.get(what, 0) + 1


def request(
    connection: http.client.HTTPConnection, method: str, path: str, body=None, headers=None
) -> tuple[int, dict[str, str], bytes]:
    payload = json.dumps(body).encode() if body is not None else None
    headers = {**(headers or {}), **({"Content-Type": "application/json"} if payload else {})}
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def client(
    number: int, run_id: str, ports: tuple[int, int], ledger: Ledger, stop: threading.Event
) -> None:
    """Post, then read the message back through the other instance, until told to stop."""
    # A conversation of its own: its reads, one at a time, are the only ones
    # the replica's log can name with it.
    conversation = f"scale-{run_id}-{number}"
    writes = http.client.HTTPConnection(HOST, ports[number % 2], timeout=REQUEST_TIMEOUT)
    reads = http.client.HTTPConnection(HOST, ports[1 - number % 2], timeout=REQUEST_TIMEOUT)
    mine: list[int] = []
    kinds = ("page", "after", "message")
    seq = 0
    while not stop.is_set():
        seq += 1
        key, text = str(uuid.uuid4()), f"client {number} message {seq}"
        body = {"sender": f"client-{number}", "conversation_id": conversation, "message": text}
        for _attempt in range(20):
            try:
                status, headers, answer = request(
                    writes, "POST", "/messages/", body, {"Idempotency-Key": key}
                )
            except (OSError, http.client.HTTPException) as error:
                ledger.count(f"POST {type(error).__name__}")
                writes.close()
                time.sleep(0.1)
                continue
            ledger.count(f"POST {status}")
            if status == 201:
                break
            time.sleep(0.1)
        else:
            with ledger.lock:
                ledger.errors.append(f"client {number}: no 201 for {key}")
            continue
        created = json.loads(answer)
        token = headers.get(TOKEN.lower())
        with ledger.lock:
            ledger.acknowledged[key] = (created["id"], text)
        previous = mine[-1] if mine else 0
        mine.append(created["id"])
        kind = kinds[seq % len(kinds)]
        path = {
            "page": f"/conversations/{conversation}",
            "after": f"/conversations/{conversation}?after={previous}",
            "message": f"/messages/{created['id']}/",
        }[kind]
        started = time.time()
        try:
            status, _, answer = request(reads, "GET", path, None, {TOKEN: token} if token else {})
        except (OSError, http.client.HTTPException) as error:
            ledger.count(f"GET {type(error).__name__}")
            reads.close()
            continue
        ended = time.time()
        ledger.count(f"GET {status}")
        stale = False
        if kind == "message":
            stale = status == 404 or (status == 200 and json.loads(answer) != created)
        elif status == 200:
            page = json.loads(answer)
            ids = {m["id"] for m in page["messages"]}
            low = min(ids, default=0)
            # Every message of this client's that the page's range covers.
            stale = created["id"] not in ids or any(i not in ids for i in mine if i >= low)
            if kind == "after":
                stale = created["id"] not in ids
        if stale:
            with ledger.lock:
                if len(ledger.stale_examples) < 3:
                    ledger.stale_examples.append(f"{path} after acknowledged id {created['id']}")
        with ledger.lock:
            key = str(created["id"]) if kind == "message" else conversation
            ledger.reads.append(Read(kind, started, ended, status, stale, key, token))


# -- the nemesis and the samplers ---------------------------------------------


@dataclass
class Timeline:
    """Wall-clock windows: when replay was paused (and at which LSN), when the replica was down."""

    paused: list[tuple[float, float, str]] = field(default_factory=list)
    down: list[tuple[float, float]] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    def replaying(self, at: float) -> bool:
        return not any(a <= at < b for a, b, _ in self.paused) and not any(
            a <= at < b for a, b in self.down
        )


def nemesis(
    replica: Replica,
    bouncer: PgBouncer,
    timeline: Timeline,
    duration: float,
    stats: list[int],
    stop_replica: bool,
) -> None:
    cycles = max(1, round(duration / PAUSE_EVERY))
    for cycle in range(cycles):
        replay_until = time.time() + PAUSE_EVERY - PAUSE_FOR
        if stop_replica and cycle == STOP_CYCLE:
            # Count what the replica served so far: its statistics start again
            # from zero when it recovers after a restart.
            # PgBouncer stays paused until the replica is down, so that no read
            # commits there between the count and the stop.
            stats.append(replica_commits(replica, bouncer, resume=False))
            went_down = time.time()
            try:
                replica.stop()
            finally:
                bouncer.admin("RESUME chat")
            time.sleep(STOP_FOR)
            replica.start()
            timeline.down.append((went_down, time.time()))
            stats.append(replica_commits(replica, None))
            say(f"nemesis: replica stopped and started again ({time.time() - went_down:.1f} s)")
        time.sleep(max(0.0, replay_until - time.time()))
        with admin_connection(replica) as admin:
            admin.execute("SELECT pg_wal_replay_pause()")
            while admin.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] != (
                "paused"
            ):
                time.sleep(0.005)
            paused_at = time.time()
            position = admin.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
            time.sleep(max(0.0, paused_at + PAUSE_FOR - time.time()))
            resumed_at = time.time()
            admin.execute("SELECT pg_wal_replay_resume()")
        timeline.paused.append((paused_at, resumed_at, position))


def replica_commits(replica: Replica, bouncer: PgBouncer | None, resume: bool = True) -> int:
    """Transactions ended in the replica's ``chat`` database (``pg_stat_database``).

    The service reads a replica in autocommit: a transaction a statement, and
    one that fails (a timeout) rolls back.

    A backend reports its counts when it goes idle, at most once a second, or
    when it exits: pausing PgBouncer closes every server connection, so the
    counts are complete when read.
    """
    if bouncer is not None:
        bouncer.admin("PAUSE chat")
        time.sleep(0.2)
    try:
        with admin_connection(replica) as admin:
            # Each new session commits one transaction of its own as it starts.
            return admin.execute(
                "SELECT xact_commit + xact_rollback - sessions FROM pg_stat_database "
                "WHERE datname = 'chat'"
            ).fetchone()[0]
    finally:
        if bouncer is not None and resume:
            bouncer.admin("RESUME chat")


@dataclass
class Samples:
    connections: dict[str, int] = field(default_factory=dict)
    listening: dict[str, int] = field(default_factory=dict)
    lag: list[tuple[float, float]] = field(default_factory=list)


def sampler(servers: dict[str, Postgres], samples: Samples, stop: threading.Event) -> None:
    """Server connections of the service on each PostgreSQL, and the replica's replay lag."""
    admins: dict[str, psycopg.Connection] = {}
    while not stop.is_set():
        for name, server in servers.items():
            try:
                admin = admins.get(name) or admins.setdefault(name, admin_connection(server))
                pooled, listening = admin.execute(
                    "SELECT count(*) FILTER (WHERE application_name <> %(listen)s), "
                    "count(*) FILTER (WHERE application_name = %(listen)s) "
                    "FROM pg_stat_activity "
                    "WHERE datname = 'chat' AND backend_type = 'client backend'",
                    {"listen": EVENTS_LISTEN_APPLICATION_NAME},
                ).fetchone()
                samples.connections[name] = max(samples.connections.get(name, 0), pooled)
                samples.listening[name] = max(samples.listening.get(name, 0), listening)
            except psycopg.Error:
                # The replica is down for a moment: nothing to count there.
                admins.pop(name, None)
        try:
            row = (
                admins["primary"]
                .execute("SELECT EXTRACT(epoch FROM replay_lag) FROM pg_stat_replication")
                .fetchone()
            )
            samples.lag.append((time.time(), float(row[0] or 0.0) if row else float("nan")))
        except (psycopg.Error, KeyError):
            pass
        time.sleep(0.02)
    for admin in admins.values():
        admin.close()


# -- one run -------------------------------------------------------------------


@dataclass
class Verdict:
    figures: dict[str, object] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def run_once(
    name: str,
    root: Path,
    primary: Primary,
    replica: Replica,
    bouncers: dict[str, PgBouncer],
    duration: float,
    ignore_token: bool,
) -> Verdict:
    env = web_environment(primary, bouncers, ignore_token)
    verdict = Verdict()
    with ExitStack() as cleanup:
        webs = []
        for n in (1, 2):
            web_root = root / f"{name}-web{n}"
            web_root.mkdir()
            web = Gunicorn(env, web_root)
            cleanup.callback(web.stop)
            web.start()
            webs.append(web)
        ports = (webs[0].port, webs[1].port)
        say(f"{name}: gunicorn on {HOST}:{ports[0]} and {HOST}:{ports[1]}")

        ledger, timeline, samples = Ledger(), Timeline(), Samples()
        stop_clients, stop_sampler = threading.Event(), threading.Event()
        stats: list[int] = [replica_commits(replica, bouncers["replica"])]
        run_id = uuid.uuid4().hex[:8]
        servers = {"primary": primary, "replica": replica}
        sampling = threading.Thread(
            target=sampler, args=(servers, samples, stop_sampler), daemon=True
        )
        clients = [
            threading.Thread(
                target=client, args=(n, run_id, ports, ledger, stop_clients), daemon=True
            )
            for n in range(CLIENTS)
        ]
        sampling.start()
        timeline.started = time.time()
        for thread in clients:
            thread.start()
        nemesis(replica, bouncers["replica"], timeline, duration, stats, stop_replica=True)
        stop_clients.set()
        for thread in clients:
            thread.join(timeout=REQUEST_TIMEOUT * 2)
        timeline.ended = time.time()
        stop_sampler.set()
        sampling.join(timeout=10)
        stats.append(replica_commits(replica, bouncers["replica"]))
        log_5xx = sum(
            1
            for web in webs
            for line in web.log.read_text(errors="replace").splitlines()
            if '"status": 5' in line or '"status":5' in line
        )
    check(verdict, ledger, timeline, samples, stats, replica, primary, run_id, log_5xx)
    return verdict


def check(
    verdict: Verdict,
    ledger: Ledger,
    timeline: Timeline,
    samples: Samples,
    stats: list[int],
    replica: Replica,
    primary: Primary,
    run_id: str,
    log_5xx: int,
) -> None:
    figures, failures = verdict.figures, verdict.failures
    with psycopg.connect(primary.url) as direct:
        stored = direct.execute(
            "SELECT idempotency_key, id, message FROM conversations_message "
            "WHERE conversation_id LIKE %s",
            [f"scale-{run_id}-%"],
        ).fetchall()
    by_key = {key: (id, text) for key, id, text in stored}
    texts = [text for _, _, text in stored]
    lost = sum(1 for key, seen in ledger.acknowledged.items() if by_key.get(key) != seen)
    duplicated = len(texts) - len(set(texts))
    stale = sum(1 for read in ledger.reads if read.stale)
    fivexx = sum(n for what, n in ledger.statuses.items() if re.search(r" 5\d\d$", what))
    figures.update(
        seconds=round(timeline.ended - timeline.started, 1),
        acknowledged=len(ledger.acknowledged),
        stored=len(stored),
        lost=lost,
        duplicated=duplicated,
        reads=len(ledger.reads),
        stale=stale,
        answers=dict(sorted(ledger.statuses.items())),
        fivexx=fivexx,
        fivexx_logged=log_5xx,
        pauses=len(timeline.paused),
        stops=len(timeline.down),
    )

    # Which reads the replica served, from its own statement log; each is
    # the client's read of that conversation or message in flight then.
    statements = [s for s in replica_statements(replica.log) if s.at >= timeline.started]
    served = replica_reads(statements)
    reads_by_key: dict[str, list[Read]] = {}
    for read in ledger.reads:
        reads_by_key.setdefault(read.key, []).append(read)
    # The log's times are whole milliseconds.
    slack = 0.002
    clients_reads = {
        id(served_read): next(
            (
                r
                for r in reads_by_key.get(served_read.key, [])
                if r.started - slack <= served_read.at <= r.ended + slack
            ),
            None,
        )
        for served_read in served
    }
    unattributed = [t for t in served if clients_reads[id(t)] is None]
    while_replaying = [r for r in ledger.reads if timeline.replaying((r.started + r.ended) / 2)]
    served_replaying = [t for t in served if timeline.replaying(t.at)]
    past_token = [
        t
        for t in served
        for start, end, position in timeline.paused
        if start <= t.at < end
        and (read := clients_reads[id(t)]) is not None
        and read.token is not None
        and int(read.token, 16) > lsn(position)
    ]
    served_paused = [t for t in served if not timeline.replaying(t.at)]
    while_down = [
        r.ended - r.started
        for r in ledger.reads
        if any(r.started < b and r.ended > a for a, b in timeline.down)
    ]
    counted = stats[1] - stats[0] + (stats[-1] - stats[2] if len(stats) == 4 else 0)
    share = len(served_replaying) / len(while_replaying) if while_replaying else 0.0
    checks = sum(1 for s in statements if s.text.startswith(POSITION_CHECK))
    figures.update(
        replica_statements=len(statements),
        replica_statements_pg_stat_database=counted,
        replica_position_checks=checks,
        replica_served=len(served),
        replica_served_unattributed=len(unattributed),
        reads_while_replaying=len(while_replaying),
        replica_served_while_replaying=len(served_replaying),
        replica_share_while_replaying=round(share, 3),
        replica_share_of_all_reads=round(len(served) / len(ledger.reads), 3)
        if ledger.reads
        else 0.0,
        replica_served_while_paused=len(served_paused),
        replica_served_past_token_while_paused=len(past_token),
        max_server_connections=samples.connections,
        max_listen_connections=samples.listening,
        reads_overlapping_replica_down=len(while_down),
        slowest_read_while_replica_down_ms=round(max(while_down, default=0.0) * 1000, 1),
    )
    lags = sorted(lag for at, lag in samples.lag if timeline.replaying(at) and lag == lag)
    if lags:
        figures["replay_lag_ms_while_replaying"] = {
            "p50": round(statistics.median(lags) * 1000, 1),
            "p99": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000, 1),
            "samples": len(lags),
        }

    if lost:
        failures.append(f"{lost} acknowledged messages lost")
    if duplicated:
        failures.append(f"{duplicated} messages stored twice")
    if stale:
        failures.append(f"{stale} stale reads: {ledger.stale_examples}")
    if fivexx or log_5xx:
        failures.append(f"{fivexx} 5xx answers ({log_5xx} in the servers' logs)")
    if ledger.errors:
        failures.append(f"{len(ledger.errors)} writes never acknowledged")
    if share < 0.5:
        failures.append(f"the replica served {share:.1%} of the reads while replaying, not half")
    if past_token:
        failures.append(f"the replica served {len(past_token)} reads past their token, paused")
    if counted != len(statements):
        failures.append(
            f"pg_stat_database counts {counted} statements on the replica, "
            f"its log {len(statements)}"
        )
    kinds = {t.kind for t in served}
    if kinds != {"history", "message"}:
        failures.append(f"the replica's log shows served reads of {sorted(kinds)} only")
    if unattributed:
        failures.append(f"the replica's log has {len(unattributed)} reads no client was making")
    for server, count in samples.connections.items():
        if count > POOL_SIZE:
            failures.append(f"{count} server connections on the {server}, pool is {POOL_SIZE}")
    # One LISTEN per worker, on the primary only; none seen would mean the
    # name above no longer matches the one the hub gives it.
    listening = samples.listening.get("primary", 0)
    if not 1 <= listening <= INSTANCES * WORKERS or samples.listening.get("replica", 0):
        failures.append(
            f"LISTEN connections {samples.listening}: one per worker on the primary expected"
        )
    if not timeline.paused or not timeline.down:
        failures.append("the nemesis did not pause and stop the replica")


def control_caught(verdict: Verdict) -> bool:
    """The control shows both failures the token prevents: stale reads, and reads the
    replica's log shows served past their token while paused."""
    figures = verdict.figures
    return (
        figures.get("stale", 0) > 0 and figures.get("replica_served_past_token_while_paused", 0) > 0
    )


def report(name: str, verdict: Verdict, control: bool = False) -> None:
    print(f"== {name}")
    for key, value in verdict.figures.items():
        print(f"  {key:40} {value}")
    for failure in verdict.failures:
        print(f"  {'found' if control else 'FAIL'} {failure}")
    if control:
        verdict_line = (
            "OK, stale reads found"
            if control_caught(verdict)
            else "FAILED, no stale read or no read served past its token"
        )
        print(f"  CONTROL: {verdict_line}")
    else:
        print(f"  RESULT: {'OK' if not verdict.failures else 'FAILED'}", flush=True)


def measure(
    root: Path,
    primary: Primary,
    replica: Replica,
    bouncers: dict[str, PgBouncer],
    seconds: float,
) -> None:
    """POST, then GET (with the token) req/s against one of two instances, and what it cost.

    The GETs run twice: with the replica configured, then without it (every
    read on the primary), so that the price of the replica's check shows.
    """
    samples, stop_sampler = Samples(), threading.Event()
    sampling = threading.Thread(
        target=sampler,
        args=({"primary": primary, "replica": replica}, samples, stop_sampler),
        daemon=True,
    )
    sampling.start()
    tokens: dict[int, str] = {}
    for setup, kinds in (("with the replica", ("POST", "GET")), ("primary only", ("GET",))):
        env = web_environment(primary, bouncers, ignore_token=False)
        if setup == "primary only":
            env.pop("DATABASE_REPLICA_URLS")
        with ExitStack() as cleanup:
            webs = []
            for n in (1, 2):
                web_root = root / f"measure-{len(kinds)}-web{n}"
                web_root.mkdir()
                web = Gunicorn(env, web_root)
                cleanup.callback(web.stop)
                web.start()
                webs.append(web)
            for kind in kinds:
                started = time.time()
                count = load(kind, webs[0].port, seconds, tokens)
                ended = time.time()
                on_replica = [
                    s for s in replica_statements(replica.log) if started <= s.at <= ended
                ]
                served = len(replica_reads(on_replica))
                durations = sorted(
                    json.loads(line)["duration_ms"]
                    for line in webs[0].log.read_text(errors="replace").splitlines()
                    if line.startswith("{") and f'"method":"{kind}"' in line
                )
                line = (
                    f"{setup}: {kind} {count / seconds:.0f} req/s ({CLIENTS} clients, one "
                    f"instance), server time p50 {statistics.median(durations):.2f} ms"
                )
                if kind == "GET" and setup == "with the replica":
                    line += (
                        f"; the replica served {served / max(1, count):.1%} of them, "
                        f"{len(on_replica) / max(1, served):.2f} statements each there"
                    )
                say(line)
    stop_sampler.set()
    sampling.join(timeout=10)
    lags = sorted(lag for _, lag in samples.lag if lag == lag)
    say(
        f"server connections at most {samples.connections} (pool {POOL_SIZE}; without PgBouncer "
        f"up to 2 instances x 2 workers x {os.environ.get('GUNICORN_THREADS', '4')} threads)"
    )
    if lags:
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        say(
            f"replay lag p50 {statistics.median(lags) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
            f"({len(lags)} samples of pg_stat_replication.replay_lag)"
        )


def load(kind: str, port: int, seconds: float, tokens: dict[int, str]) -> int:
    """CLIENTS threads sending one kind of request for so long; how many succeeded."""
    until = time.monotonic() + seconds
    counts: list[int] = []

    def one(number: int) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
        conversation = f"measure-{number}"
        done = 0
        while time.monotonic() < until:
            if kind == "POST":
                body = {"sender": "m", "conversation_id": conversation, "message": "hello"}
                status, headers, _ = request(connection, "POST", "/messages/", body)
                tokens[number] = headers.get(TOKEN.lower(), "")
            else:
                path = f"/conversations/{conversation}"
                status, _, _ = request(connection, "GET", path, None, {TOKEN: tokens[number]})
            done += status < 300
        counts.append(done)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of load per run")
    parser.add_argument("--quick", action="store_true", help="6 s per run (make test)")
    parser.add_argument("--no-control", action="store_true", help="skip the negative control")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--measure", type=float, metavar="SECONDS", help="measure req/s instead of checking"
    )
    args = parser.parse_args()
    duration = 6.0 if args.quick else args.duration
    install_pgbouncer()
    if reason := unavailable():
        print(f"cannot run: {reason}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    bindir = postgres_bindir()
    with ExitStack() as cleanup:
        root = cleanup.enter_context(temporary_root(args.keep))
        if os.geteuid() == 0:
            # PostgreSQL and PgBouncer run as postgres, in directories below it.
            shutil.chown(root, "postgres", "postgres")
        primary, replica, bouncers = topology_up(bindir, root, cleanup)
        env = web_environment(primary, bouncers, ignore_token=False)
        release(env)
        say(
            f"primary on {HOST}:{primary.port}, replica on {HOST}:{replica.port}, PgBouncer on "
            f"{bouncers['primary'].port} and {bouncers['replica'].port} (pool {POOL_SIZE})"
        )
        if args.measure:
            measure(root, primary, replica, bouncers, args.measure)
            return 0
        verdict = run_once("run", root, primary, replica, bouncers, duration, False)
        report("run (Consistency-Token honoured)", verdict)
        if args.no_control:
            return EXIT_FAILED if verdict.failures else 0
        control = run_once("control", root, primary, replica, bouncers, duration, True)
        report("negative control (token ignored: stale reads expected)", control, control=True)
        control_failed = not control_caught(control)
        return EXIT_FAILED if verdict.failures or control_failed else 0


if __name__ == "__main__":
    sys.exit(main())
