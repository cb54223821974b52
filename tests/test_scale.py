"""Read replicas behind PgBouncer: the scale test's quick run, and the rules of a replica read.

Everything here runs on a primary, a streaming replica and a PgBouncer in
front of each that the tests build themselves (harness/topology.py), never on the
suite's database. Which database served a read is taken from the replica's
own statement log: a read it served starts there with the conversation's
counters or the message, named by its parameter.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from django.db import connection

from chatproject.replicas import token_lsn
from harness.databases import postgres_bindir, temporary_root
from harness.processes import PROJECT, LiveServer, live_server
from harness.topology import (
    POSITION_CHECK,
    admin_connection,
    install_pgbouncer,
    replica_reads,
    replica_statements,
    topology_up,
    unavailable,
    web_environment,
)
from tests.conftest import postgresql_only
from tests.events_client import EventStream

if connection.vendor == "postgresql":
    # As the browser tests' Chromium: Debian's package, installed if missing (as root).
    install_pgbouncer()
pytestmark = [
    postgresql_only("read replicas and PgBouncer are PostgreSQL's"),
    pytest.mark.skipif(unavailable() is not None, reason=f"scale test: {unavailable()}"),
]

TOKEN = re.compile(r"[0-9A-F]{16}")
FUTURE = "FFFFFFFFFFFFFFFF"
MAX_LAG = 0.5


class Topology:
    def __init__(self, root: Path, cleanup: ExitStack) -> None:
        self.primary, self.replica, self.bouncers = topology_up(postgres_bindir(), root, cleanup)

    def wait_for_replay(self, token: str) -> None:
        deadline = time.monotonic() + 10
        with admin_connection(self.replica) as admin:
            while not admin.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [token_lsn(token)]
            ).fetchone()[0]:
                assert time.monotonic() < deadline, f"the replica never replayed {token}"
                time.sleep(0.01)

    def replay(self, paused: bool) -> None:
        with admin_connection(self.replica) as admin:
            admin.execute(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()")

    def served(self, key: object) -> int:
        """How many reads of this conversation (or message id) the replica served."""
        return sum(1 for read in replica_reads(self.statements()) if read.key == str(key))

    def statements(self, since: float = 0.0):
        return [s for s in replica_statements(self.replica.log) if s.at >= since]


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    with ExitStack() as cleanup:
        root = cleanup.enter_context(temporary_root(keep=False))
        if os.geteuid() == 0:
            # PostgreSQL and PgBouncer run as postgres, in directories below it.
            shutil.chown(root, "postgres", "postgres")
        yield Topology(root, cleanup)


@pytest.fixture(scope="module")
def server(topology, tmp_path_factory) -> Iterator[LiveServer]:
    env = web_environment(topology.primary, topology.bouncers, ignore_token=False)
    env.update(DATABASE_REPLICA_MAX_LAG=str(MAX_LAG), REDIS_URL="")
    log = tmp_path_factory.mktemp("web") / "gunicorn.log"
    with live_server(env, log) as running:
        running.log = log
        yield running


def post(server: LiveServer, conversation: str, text: str = "hello"):
    answer = server.request(
        "POST", "/messages/", {"sender": "ada", "conversation_id": conversation, "message": text}
    )
    assert answer.status == 201, answer.body
    return answer


def test_a_post_answers_with_its_token_as_a_header_and_an_httponly_lax_cookie(server):
    answer = post(server, "token-shape")
    token = answer.headers["Consistency-Token"]

    cookie = SimpleCookie(answer.headers["Set-Cookie"])["consistency_token"]

    assert TOKEN.fullmatch(token)
    assert cookie.value == token
    assert (cookie["httponly"], cookie["samesite"], cookie["max-age"], cookie["path"]) == (
        True,
        "Lax",
        "300",
        "/",
    )


def test_a_read_with_a_token_the_replica_has_replayed_is_served_by_the_replica(server, topology):
    posted = post(server, "fresh-token")
    token = posted.headers["Consistency-Token"]
    topology.wait_for_replay(token)

    page = server.request("GET", "/conversations/fresh-token", headers={"Consistency-Token": token})
    one = server.request(
        "GET", f"/messages/{posted.json()['id']}/", headers={"Consistency-Token": token}
    )

    assert [m["id"] for m in page.json()["messages"]] == [posted.json()["id"]]
    assert one.json() == posted.json()
    assert (topology.served("fresh-token"), topology.served(posted.json()["id"])) == (1, 1)


def test_reads_the_replicas_last_answer_covers_run_as_on_the_primary_no_check_no_transaction(
    server, topology
):
    """The replica's position, once asked, vouches for the reads of the next few
    milliseconds in that process: those run just their own statements, in autocommit."""
    token = post(server, "burst").headers["Consistency-Token"]
    topology.wait_for_replay(token)
    started = time.time()
    statuses: list[int] = []

    def reads() -> None:
        for _ in range(10):
            answer = server.request(
                "GET", "/conversations/burst", headers={"Consistency-Token": token}
            )
            statuses.append(answer.status)

    threads = [threading.Thread(target=reads) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # PgBouncer's own "select 1" on a server connection idle for 30 s is not the service's.
    statements = [s for s in topology.statements(since=started - 0.002) if s.text != "select 1"]
    texts = [s.text for s in statements]
    checks = sum(1 for text in texts if text.startswith(POSITION_CHECK))

    assert statuses == [200] * 40
    assert topology.served("burst") == 40
    assert not [t for t in texts if t.split()[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK")]
    # Each read: its counters and its page; some also asked the position first.
    assert len(statements) == 2 * 40 + checks
    assert checks < 40


def test_a_token_the_replica_has_not_replayed_sends_the_read_to_the_primary(server, topology):
    topology.replay(paused=True)
    try:
        posted = post(server, "paused-replay")
        token = posted.headers["Consistency-Token"]
        page = server.request(
            "GET", "/conversations/paused-replay", headers={"Consistency-Token": token}
        )
        cookie = server.request(
            "GET",
            f"/messages/{posted.json()['id']}/",
            headers={"Cookie": f"consistency_token={token}"},
        )
    finally:
        topology.replay(paused=False)

    assert [m["id"] for m in page.json()["messages"]] == [posted.json()["id"]]
    assert cookie.status == 200
    assert cookie.json() == posted.json()
    assert (topology.served("paused-replay"), topology.served(posted.json()["id"])) == (0, 0)


def test_a_token_from_the_future_sends_the_read_to_the_primary(server, topology):
    posted = post(server, "future-token")

    page = server.request(
        "GET", "/conversations/future-token", headers={"Consistency-Token": FUTURE}
    )

    assert page.status == 200
    assert [m["id"] for m in page.json()["messages"]] == [posted.json()["id"]]
    assert topology.served("future-token") == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Consistency-Token": "garbage"},
        {"Consistency-Token": "0/3000148"},
        {"Consistency-Token": "FFFFFFFFFFFFFFFFF"},
        {"Consistency-Token": "-000000000000001"},
        {"Consistency-Token": "F" * 4000},
        {"Consistency-Token": ""},
        {"Cookie": "consistency_token=not-a-token"},
        {"Cookie": 'consistency_token="0/0'},
    ],
)
def test_a_malformed_token_is_ignored_never_refused(server, topology, headers):
    posted = post(server, "malformed-token")
    # Read as without a token: by any replica within the maximum lag. Once
    # the replica has the message, both answers are the same whoever serves.
    topology.wait_for_replay(posted.headers["Consistency-Token"])
    plain = server.request("GET", "/conversations/malformed-token")

    page = server.request("GET", "/conversations/malformed-token", headers=headers)
    one = server.request("GET", f"/messages/{posted.json()['id']}/", headers=headers)

    assert page.status == 200
    assert page.json() == plain.json()
    assert one.status == 200


def test_without_a_token_a_replica_lagging_past_the_maximum_is_not_used(server, topology):
    topology.replay(paused=True)
    try:
        posted = post(server, "lagging")
        # The replica's last replayed commit is older than the maximum lag.
        time.sleep(MAX_LAG * 2)
        page = server.request("GET", "/conversations/lagging")
    finally:
        topology.replay(paused=False)

    assert [m["id"] for m in page.json()["messages"]] == [posted.json()["id"]]


def test_with_the_replica_down_the_primary_answers_and_the_replica_is_used_again_later(
    server, topology
):
    posted = post(server, "replica-down")
    topology.replica.stop()
    try:
        answers = [server.request("GET", "/conversations/replica-down").status for _ in range(10)]
    finally:
        topology.replica.start()
    log = server.log.read_text()

    assert answers == [200] * 10
    # Once per worker process, not once per read.
    assert 1 <= log.count("replica replica1 skipped") <= 2
    again = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        token = post(server, "replica-back").headers["Consistency-Token"]
        topology.wait_for_replay(token)
        server.request("GET", "/conversations/replica-back", headers={"Consistency-Token": token})
        if topology.served("replica-back"):
            again = token
            break
        time.sleep(0.2)
    assert again is not None, "the replica was not used again after it came back"
    assert posted.status == 201


def test_live_events_reach_streams_through_pgbouncer_while_the_api_shares_its_pool(server):
    """Behind a transaction-pooling PgBouncer (1.18: no prepared statements) the catch-up
    queries, like the API's, may land on any server connection: none may rely on a
    statement prepared on another."""
    streams = [EventStream(server, f"/conversations/live-{n}/events") for n in range(2)]
    stop = threading.Event()

    def reads() -> None:
        while not stop.is_set():
            server.request("GET", "/conversations/live-elsewhere")

    others = [threading.Thread(target=reads) for _ in range(3)]
    for thread in others:
        thread.start()
    try:
        for stream in streams:
            stream.block()
        posted = {n: [] for n in range(2)}
        for number in range(80):
            posted[number % 2].append(post(server, f"live-{number % 2}", f"m{number}").json()["id"])
        received = [stream.message_ids(40) for stream in streams]
    finally:
        stop.set()
        for thread in others:
            thread.join()
        for stream in streams:
            stream.close()

    assert received == [posted[0], posted[1]]
    assert "prepared statement" not in server.log.read_text()


def test_the_quick_scale_run_passes_and_its_negative_control_finds_stale_reads():
    run = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--quick"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    sections = run.stdout.split("== negative control")
    figures = [
        dict(re.findall(r"^  ([a-z_]+) +(\S.*)$", section, re.MULTILINE)) for section in sections
    ]

    assert run.returncode == 0, run.stdout + run.stderr
    assert len(figures) == 2
    run_figures, control = figures
    assert {k: run_figures[k] for k in ("lost", "duplicated", "stale", "fivexx")} == dict.fromkeys(
        ("lost", "duplicated", "stale", "fivexx"), "0"
    )
    assert run_figures["replica_served_past_token_while_paused"] == "0"
    assert float(run_figures["replica_share_while_replaying"]) >= 0.5
    assert int(control["stale"]) > 0
    assert "RESULT: OK" in sections[0]
    assert "CONTROL: OK, stale reads found" in sections[1]
