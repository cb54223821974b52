"""Crash test: every acknowledged message survives killed workers, servers and databases.

    .venv/bin/python -m bench.crash --seed 7 --duration 60    # the full run (make crash)
    .venv/bin/python -m bench.crash --quick --seed 3          # ~10 s, one fault of each kind

It starts a throwaway PostgreSQL (``initdb`` into a temporary directory, a free
port on 127.0.0.1, so it never stops a server it did not start), migrates it
with the Procfile's ``release`` command and runs the Procfile's ``web`` command
on it. Writer threads post unique messages, each with its own
``Idempotency-Key``, into shared conversations, one at a time, and retry the
same request with the same key until they get a ``201``. Meanwhile faults
chosen by a seeded RNG hit the service: ``kill -9`` of a gunicorn worker,
``SIGTERM`` of the gunicorn master and a restart, ``pg_ctl stop -m immediate``
and a restart. At the end every conversation is read back through the API and
the database, and the run is checked Jepsen-style: nothing acknowledged is
lost, nothing is stored twice, nothing unsent appears, each writer's messages
keep their order, the conversations' counters match, and no answer is a 500.
The exit status is 0 only when there is no violation.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from harness.databases import (
    ThrowawayPostgres,
    postgres_bindir,
    postgres_unavailable,
    temporary_root,
)
from harness.processes import (
    HOST,
    children,
    free_port,
    release,
    server_environment,
    spawn,
    stop,
    wait_for_group_to_exit,
    wait_until_answering,
    web_command,
)

DATABASE = "chat"
WEB_CONCURRENCY = 2
CONVERSATIONS = 10
READ_PAGE = 1000
# A 503 says "Retry-After: 5"; writers wait at most this long so that the run
# keeps pressing on a server that is coming back.
RETRY_AFTER_CAP = 1.0
REQUEST_TIMEOUT = 40.0
# After the last fault, how long writers get to land their message in flight.
FINISH_TIMEOUT = 60.0
# A fault that comes due while the previous one is still recovering waits
# this long after it, so that every fault hits a service that is working.
HEALTHY_GAP = 1.0
KILL_WORKER, RESTART_GUNICORN, CRASH_POSTGRES = "kill-worker", "restart-gunicorn", "crash-postgres"
FAULT_KINDS = (KILL_WORKER, RESTART_GUNICORN, CRASH_POSTGRES)
NO_FAULT = "no fault"
EXIT_VIOLATIONS, EXIT_SETUP_FAILED = 1, 2


def log(started: float, text: str) -> None:
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
    print(f"[{stamp} +{time.monotonic() - started:6.2f}s] {text}", flush=True)


# -- gunicorn --------------------------------------------------------------


class Gunicorn:
    """The Procfile's web process, in a process group of its own, on 127.0.0.1."""

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.port = free_port()
        # XDG_RUNTIME_DIR puts gunicorn's control socket (gunicorn.ctl) in our
        # directory instead of one shared by every gunicorn of this user.
        self.env = {**env, "PORT": str(self.port), "XDG_RUNTIME_DIR": str(root)}
        self.log = root / "gunicorn.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        # The log is appended to: each restart's lines follow the last one's.
        self.process = spawn(web_command(self.port), self.env, self.log)
        wait_until_answering(self.port, self.process, self.log, timeout=60)

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def kill_worker(self, pick: float) -> tuple[int, int, float]:
        """SIGKILL one worker; wait for the master to replace it. (killed, new, seconds)"""
        workers = self.workers()
        victim = workers[int(pick * len(workers))]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 30
        while time.monotonic() < deadline:
            current = self.workers()
            fresh = [pid for pid in current if pid not in workers]
            if len(current) >= WEB_CONCURRENCY and victim not in current and fresh:
                return victim, fresh[0], time.monotonic() - killed_at
            time.sleep(0.02)
        raise RuntimeError(f"gunicorn did not replace worker {victim} within 30 s")

    def terminate(self) -> float:
        """SIGTERM the master alone, as a platform's restart does; wait for its group to exit.

        The seconds it took.
        """
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        wait_for_group_to_exit(self.process, timeout=30)
        return time.monotonic() - sent

    def stop(self) -> None:
        stop(self.process)


# -- writers ---------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    key: str
    writer: int
    seq: int
    conversation: str
    sender: str
    text: str


@dataclass
class Ledger:
    """What the clients sent and saw; shared by the writer threads.

    ``events`` counts every answer and connection error under the fault that
    was being injected when it came (until the service had recovered), or
    under ``NO_FAULT``: "201", "201 replayed", "503", "503 without
    Retry-After", any other status, or the connection error's class name
    (on a new or a kept-alive connection). A replay is a retry whose first
    attempt committed but whose answer never reached the writer; it counts
    under the fault that made that first attempt fail.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    phase: str = NO_FAULT
    sent: dict[str, Sent] = field(default_factory=dict)
    acknowledged: dict[str, int] = field(default_factory=dict)
    events: Counter = field(default_factory=Counter)
    replayed_after: Counter = field(default_factory=Counter)
    bad_answers: list[tuple[str, int, str, str]] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)

    def attempt(self, sent: Sent) -> None:
        with self.lock:
            self.sent[sent.key] = sent

    def answer(
        self,
        key: str,
        status: int,
        headers: http.client.HTTPMessage,
        body: bytes,
        first_failure: tuple[str, str] | None,
    ) -> None:
        """Count an answer; a replay counts under the phase of its first failed attempt."""
        with self.lock:
            self.events[self.phase, str(status)] += 1
            if status == 201:
                self.acknowledged[key] = json.loads(body)["id"]
                if headers.get("Idempotent-Replayed") == "true":
                    phase, outcome = first_failure or (self.phase, "")
                    self.events[phase, "201 replayed"] += 1
                    self.replayed_after[phase, outcome] += 1
            elif status == 503:
                if not headers.get("Retry-After"):
                    self.events[self.phase, "503 without Retry-After"] += 1
            elif len(self.bad_answers) < 20:
                stamp = time.strftime("%H:%M:%S")
                self.bad_answers.append((stamp, status, key, body[:600].decode(errors="replace")))

    def connection_error(self, error: Exception, reused: bool) -> None:
        with self.lock:
            where = "kept-alive" if reused else "new"
            self.events[self.phase, f"{type(error).__name__} ({where})"] += 1
            self.events[self.phase, "connection errors"] += 1

    def total(self, event: str) -> int:
        return sum(n for (_, name), n in self.events.items() if name == event)

    def other_statuses(self) -> Counter:
        others: Counter = Counter()
        for (_, name), n in self.events.items():
            if name.isdigit() and name not in ("201", "503"):
                others[name] += n
        return others


def writer(
    number: int, seed: int, port: int, ledger: Ledger, stop: threading.Event, abort: threading.Event
) -> None:
    """Post messages one at a time; retry each with its key until it is acknowledged."""
    rng = random.Random(f"{seed}/writer/{number}")
    connection: http.client.HTTPConnection | None = None
    seq = 0
    while not stop.is_set():
        sent = Sent(
            key=f"{number}-{seq}",
            writer=number,
            seq=seq,
            conversation=f"crash-{rng.randrange(CONVERSATIONS)}",
            sender=f"writer-{number:02d}",
            text=f"message {seq} from writer {number}",
        )
        ledger.attempt(sent)
        body = json.dumps(
            {"sender": sent.sender, "conversation_id": sent.conversation, "message": sent.text}
        ).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": sent.key}
        first_failure = None
        for attempt in itertools.count():
            if abort.is_set():
                ledger.unfinished.append(sent.key)
                return
            reused = connection is not None
            try:
                connection = connection or http.client.HTTPConnection(
                    HOST, port, timeout=REQUEST_TIMEOUT
                )
                connection.request("POST", "/messages/", body, headers)
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as error:
                ledger.connection_error(error, reused)
                first_failure = first_failure or (ledger.phase, type(error).__name__)
                if connection is not None:
                    connection.close()
                connection = None
                delay = min(0.05 * 2**attempt, 1.0)
            else:
                ledger.answer(sent.key, response.status, response.headers, answer, first_failure)
                if response.will_close:
                    connection.close()
                    connection = None
                # A 4xx to a valid message is a violation already recorded;
                # retrying would only repeat it.
                if response.status < 500:
                    break
                first_failure = first_failure or (ledger.phase, str(response.status))
                try:
                    delay = min(float(response.headers["Retry-After"]), RETRY_AFTER_CAP)
                except (KeyError, ValueError):
                    delay = RETRY_AFTER_CAP
            time.sleep(delay * rng.uniform(0.5, 1.5))
        seq += 1
    if connection is not None:
        connection.close()


# -- faults ----------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str
    pick: float
    downtime: float


def fault_plan(seed: int, duration: float, quick: bool) -> list[Fault]:
    """Faults from the seed alone: each round of three holds one of each kind."""
    rng = random.Random(seed)
    plan: list[Fault] = []
    at = 1.5 if quick else 2.0
    gaps = (1.5, 2.5) if quick else (2.5, 5.0)
    while True:
        kinds = list(FAULT_KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            plan.append(Fault(round(at, 2), kind, rng.random(), round(rng.uniform(1.0, 3.0), 2)))
            at += rng.uniform(*gaps)
            if quick and len(plan) == len(FAULT_KINDS):
                return plan
            if not quick and at > duration - 2:
                return plan


def inject(fault: Fault, web: Gunicorn, database: ThrowawayPostgres) -> str:
    if fault.kind == KILL_WORKER:
        killed, fresh, seconds = web.kill_worker(fault.pick)
        return f"kill -9 worker {killed}; master started worker {fresh} in {seconds:.2f} s"
    if fault.kind == RESTART_GUNICORN:
        master = web.process.pid
        seconds = web.terminate()
        restart = time.monotonic()
        web.start()
        return (
            f"SIGTERM master {master}; it exited in {seconds:.2f} s; "
            f"new master {web.process.pid} serving in {time.monotonic() - restart:.2f} s"
        )
    database.crash()
    time.sleep(fault.downtime)
    restart = time.monotonic()
    database.start()
    return (
        f"pg_ctl stop -m immediate; down {fault.downtime:.2f} s; "
        f"recovered and accepting connections in {time.monotonic() - restart:.2f} s"
    )


# -- checking --------------------------------------------------------------


def read_conversation(port: int, conversation: str) -> list[dict]:
    """Every message of a conversation through the API, following ``next``."""
    messages: list[dict] = []
    path = f"/conversations/{conversation}?after=0&limit={READ_PAGE}"
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        while path:
            connection.request("GET", path)
            response = connection.getresponse()
            page = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {page}")
            messages += page["messages"]
            path = None
            if page["next"]:
                parts = urlsplit(page["next"])
                path = f"{parts.path}?{parts.query}"
    finally:
        connection.close()
    return messages


@dataclass
class Verdict:
    figures: dict[str, int]
    conversations: list[tuple[str, int, int, int, str]]
    violations: list[str]


def check(ledger: Ledger, port: int, database_url: str) -> Verdict:
    conversation_ids = [f"crash-{n}" for n in range(CONVERSATIONS)]
    by_payload = {(s.conversation, s.sender, s.text): s for s in ledger.sent.values()}
    read = {c: read_conversation(port, c) for c in conversation_ids}

    with psycopg.connect(database_url) as db:
        doubled_keys = db.execute(
            "SELECT idempotency_key, count(*) FROM conversations_message "
            "GROUP BY idempotency_key HAVING count(*) > 1"
        ).fetchall()
        counters = {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT c.id, c.message_count, c.first_message_id, c.last_message_id, "
                "(SELECT count(*) FROM conversations_message m WHERE m.conversation_id = c.id) "
                "FROM conversations_conversation c"
            )
        }
        stored_in_db = db.execute("SELECT count(*) FROM conversations_message").fetchone()[0]

    stored: dict[str, int] = {}
    doubled_payloads = unexpected = out_of_order = paging = 0
    violations: list[str] = []
    table = []
    for conversation, messages in read.items():
        ids = [m["id"] for m in messages]
        if ids != sorted(set(ids)):
            paging += 1
            violations.append(
                f"{conversation}: the API's pages are not in strictly rising id order"
            )
        last_seq: dict[int, int] = {}
        for m in messages:
            sent = by_payload.get((conversation, m["sender"], m["message"]))
            if sent is None:
                unexpected += 1
                violations.append(f"unexpected message in {conversation}: {m}")
                continue
            if sent.key in stored:
                doubled_payloads += 1
                violations.append(f"{sent.key} stored twice in {conversation}: {m}")
                continue
            stored[sent.key] = m["id"]
            if last_seq.get(sent.writer, -1) > sent.seq:
                out_of_order += 1
                violations.append(
                    f"{conversation}: writer {sent.writer}'s message {sent.seq} (id {m['id']}) "
                    f"after its message {last_seq[sent.writer]}"
                )
            last_seq[sent.writer] = max(last_seq.get(sent.writer, -1), sent.seq)
        count, first_id, last_id, counted = counters.get(conversation, (0, None, None, 0))
        expected = (len(messages), ids[0] if ids else None, ids[-1] if ids else None, len(messages))
        ok = (count, first_id, last_id, counted) == expected
        if not ok:
            violations.append(
                f"{conversation}: message_count {count}, first/last id {first_id}/{last_id}, "
                f"{counted} rows in the database; the API shows {len(messages)} messages, "
                f"ids {expected[1]}..{expected[2]}"
            )
        table.append((conversation, len(messages), count, counted, "yes" if ok else "NO"))

    lost = [key for key in ledger.acknowledged if key not in stored]
    wrong_id = [
        key for key, id_ in ledger.acknowledged.items() if key in stored and stored[key] != id_
    ]
    violations += [f"lost: {key} was acknowledged as id {ledger.acknowledged[key]}" for key in lost]
    violations += [
        f"{key} was acknowledged as id {ledger.acknowledged[key]} but is stored as {stored[key]}"
        for key in wrong_id
    ]
    violations += [f"key {key} stored {n} times in the database" for key, n in doubled_keys]
    api_total = sum(len(m) for m in read.values())
    if stored_in_db != api_total:
        violations.append(f"{stored_in_db} messages in the database, {api_total} through the API")
    for status, n in sorted(ledger.other_statuses().items()):
        violations.append(f"{n} answers {status} (only 201 and 503 are expected)")
    if without := ledger.total("503 without Retry-After"):
        violations.append(f"{without} answers 503 without Retry-After")
    if ledger.unfinished:
        violations.append(f"writers never got a 201 for {sorted(ledger.unfinished)}")

    figures = {
        "sent": len(ledger.sent),
        "acknowledged": len(ledger.acknowledged),
        "stored": len(stored),
        "lost": len(lost),
        "duplicated": len(doubled_keys) + doubled_payloads,
        "unexpected": unexpected,
        "order violations": out_of_order,
        "wrong ids": len(wrong_id),
        "paging anomalies": paging,
        "counter mismatches": sum(row[-1] != "yes" for row in table),
        "unfinished": len(ledger.unfinished),
    }
    return Verdict(figures, table, violations)


def server_log_errors(log_path: Path) -> list[str]:
    """Lines in gunicorn's log about 500s: Django logs each one with its traceback."""
    lines = log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if "Internal Server Error" in line or '" 500 ' in line]


# -- the run ---------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    bindir = postgres_bindir()
    if reason := postgres_unavailable():
        print(f"cannot run: {reason}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    plan = fault_plan(args.seed, args.duration, args.quick)
    print(
        f"crash test: seed {args.seed}, {args.duration:g} s, {args.writers} writers, "
        f"{CONVERSATIONS} conversations, {len(plan)} faults planned, PostgreSQL from {bindir}",
        flush=True,
    )
    for n, fault in enumerate(plan, 1):
        print(f"  plan {n:2d}: +{fault.at:5.2f}s {fault.kind}")

    setup = time.monotonic()
    with ExitStack() as cleanup:
        root = cleanup.enter_context(temporary_root(args.keep))
        database = ThrowawayPostgres(bindir, root, DATABASE)
        cleanup.callback(database.destroy)
        database.create()
        env = server_environment(
            database.url,
            WEB_CONCURRENCY=str(WEB_CONCURRENCY),
            # Every writer posts from 127.0.0.1: the default limits would refuse
            # most of them, and this run is about what is stored, not about pacing.
            RATE_LIMIT_POST="off",
            RATE_LIMIT_GET="off",
        )
        release(env)
        web = Gunicorn(env, root)
        cleanup.callback(web.stop)
        web.start()

        ledger = Ledger()
        stop, abort = threading.Event(), threading.Event()
        threads = [
            threading.Thread(
                target=writer,
                args=(n, args.seed, web.port, ledger, stop, abort),
                name=f"writer-{n}",
                daemon=True,
            )
            for n in range(args.writers)
        ]
        cleanup.callback(abort.set)
        started = time.monotonic()
        log(
            started,
            f"PostgreSQL on {HOST}:{database.port}, gunicorn on {HOST}:{web.port} "
            f"(set up in {started - setup:.1f} s); {args.writers} writers start",
        )
        for thread in threads:
            thread.start()
        recovered = started
        for n, fault in enumerate(plan, 1):
            due = max(started + fault.at, recovered + HEALTHY_GAP)
            time.sleep(max(0.0, due - time.monotonic()))
            log(started, f"fault {n}/{len(plan)}: {fault.kind}")
            ledger.phase = fault.kind
            log(started, f"  {inject(fault, web, database)}")
            ledger.phase = NO_FAULT
            recovered = time.monotonic()
        time.sleep(max(0.0, started + args.duration - time.monotonic()))
        log(started, "faults over; writers finish the message they are sending")
        stop.set()
        deadline = time.monotonic() + FINISH_TIMEOUT
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        abort.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)
        elapsed = time.monotonic() - started
        log(started, "writers stopped; reading every conversation back")
        verdict = check(ledger, web.port, database.url)
        log_errors = server_log_errors(web.log)
        if log_errors:
            verdict.violations.append(f"{len(log_errors)} lines about 500s in gunicorn's log")
        report(args, plan, ledger, verdict, elapsed, log_errors)
        return EXIT_VIOLATIONS if verdict.violations else 0


def report(
    args: argparse.Namespace,
    plan: list[Fault],
    ledger: Ledger,
    verdict: Verdict,
    elapsed: float,
    log_errors: list[str],
) -> None:
    kinds = Counter(fault.kind for fault in plan)
    phases = [NO_FAULT, *FAULT_KINDS]
    errors = sorted({name for _, name in ledger.events if name[0].isupper()})
    rows = [
        "201",
        "201 replayed",
        "503",
        "503 without Retry-After",
        "500",
        *sorted(set(ledger.other_statuses()) - {"500"}),
        "connection errors",
        *errors,
    ]
    width = max(len(phase) for phase in phases) + 2
    label_width = max(len(row) for row in rows) + 4
    print(
        f"\n== crash test summary: seed {args.seed}, {elapsed:.1f} s, {args.writers} writers, "
        f"{CONVERSATIONS} conversations"
    )
    print(
        f"faults: {len(plan)} (" + ", ".join(f"{kind} {kinds[kind]}" for kind in FAULT_KINDS) + ")"
    )
    print("answers and connection errors, by the fault in progress when they came")
    print(" " * label_width + "".join(f"{phase:>{width}}" for phase in [*phases, "total"]))
    for row in rows:
        counts = [ledger.events[phase, row] for phase in phases]
        label = f"  {row}" if row in errors or row.endswith(("replayed", "Retry-After")) else row
        print(f"{label:<{label_width}}" + "".join(f"{n:>{width}}" for n in [*counts, sum(counts)]))
    if ledger.replayed_after:
        print(
            "  replays came after: "
            + ", ".join(
                f"{outcome} in {phase} {n}"
                for (phase, outcome), n in sorted(ledger.replayed_after.items())
            )
        )
    print("results")
    for name, value in verdict.figures.items():
        print(f"  {name:<24}{value}")
    print("conversations   via the API  message_count  rows in the database  counters match")
    for name, shown, count, rows_in_db, ok in verdict.conversations:
        print(f"  {name:<12}{shown:>12}{count:>15}{rows_in_db:>22}  {ok}")
    if ledger.bad_answers:
        print("first answers other than 201 and 503 (time, status, key, body):")
        for bad in ledger.bad_answers:
            print(f"  {bad}")
    if log_errors:
        print("gunicorn log lines about 500s (first 20):")
        for line in log_errors[:20]:
            print(f"  {line}")
    for violation in verdict.violations[:50]:
        print(f"VIOLATION: {violation}")
    print(f"violations: {len(verdict.violations)}")
    print(f"RESULT: {'FAILED' if verdict.violations else 'OK'}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7, help="chooses the faults and the writes")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of faults, one every 2.5-5 s"
    )
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument(
        "--quick", action="store_true", help="one fault of each kind, ~10 s (the test suite's run)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args()
    if args.quick and args.duration == parser.get_default("duration"):
        args.duration = 10.0

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Either signal unwinds through the cleanup, even when started in the
    # background (where a shell leaves SIGINT ignored).
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError, psycopg.Error) as error:
        print(f"crash test could not run: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main())
