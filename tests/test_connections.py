"""Persistent connections: each is tested before a request reuses it, without a round trip."""

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from django.db import OperationalError, connection, connections

from conversations.rules import EVENTS_CONNECTIONS_PER_PROCESS
from harness.databases import fresh_database
from harness.processes import live_server, server_environment
from tests.conftest import postgresql_only

pytestmark = postgresql_only("the test of a reused connection is PostgreSQL's backend's own")


def server_connection() -> psycopg.Connection:
    settings = connection.settings_dict
    return psycopg.connect(
        dbname="postgres",
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"] or "postgres",
        password=settings["PASSWORD"] or None,
        autocommit=True,
    )


@pytest.fixture
def own_connection(db):
    """A connection of the service's own backend, outside the test's transaction."""
    wrapper = connections.create_connection("default")
    wrapper.ensure_connection()
    yield wrapper
    wrapper.close()


def last_query(pid: int) -> str:
    with server_connection() as admin:
        return admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[
            0
        ]


def test_a_healthy_connection_passes_without_a_query_to_the_server(own_connection):
    with own_connection.cursor() as cursor:
        cursor.execute("SELECT 'the last query'")
    pid = own_connection.connection.info.backend_pid

    assert own_connection.is_usable()
    assert own_connection.is_usable()
    assert last_query(pid) == "SELECT 'the last query'"


def test_after_a_database_error_the_full_test_runs(own_connection):
    own_connection.errors_occurred = True
    pid = own_connection.connection.info.backend_pid

    assert own_connection.is_usable()
    assert last_query(pid) == "SELECT 1"


def test_a_connection_the_server_ended_fails_the_test(own_connection):
    pid = own_connection.connection.info.backend_pid
    with server_connection() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone()[0]

    assert not own_connection.is_usable()


@pytest.fixture(scope="module")
def database_url(tmp_path_factory, django_db_blocker):
    with django_db_blocker.unblock(), fresh_database(tmp_path_factory.mktemp("db")) as url:
        yield url


def test_after_the_server_ends_every_connection_the_next_requests_are_answered(
    database_url, tmp_path
):
    # Without the test each worker thread's first request would fail on its
    # dead connection (a 503), however healthy the server is again.
    name = database_url.rsplit("/", 1)[1]
    with live_server(server_environment(database_url), tmp_path / "gunicorn.log") as server:
        # At once, so that both workers and several of their threads open a
        # connection: one after another they may all reuse a single thread's.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: server.request("GET", f"/conversations/warm-{n}"), range(32)))
        with server_connection() as admin:
            ended = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
                "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            ).fetchone()[0]
        time.sleep(0.2)
        answers = [server.request("GET", f"/conversations/after-{n}").status for n in range(32)]

    assert ended >= 2
    assert answers == [200] * 32


def test_many_clients_at_once_open_no_more_connections_than_workers_times_threads(
    database_url, tmp_path
):
    name = database_url.rsplit("/", 1)[1]
    env = server_environment(database_url, WEB_CONCURRENCY="2", GUNICORN_THREADS="3")
    with live_server(env, tmp_path / "gunicorn.log") as server:

        def client(number: int) -> list[int]:
            message = {"sender": f"c{number}", "conversation_id": "crowd", "message": "hi"}
            return [server.request("POST", "/messages/", message).status for _ in range(3)] + [
                server.request("GET", "/conversations/crowd").status for _ in range(3)
            ]

        with ThreadPoolExecutor(64) as pool:
            statuses = [status for result in pool.map(client, range(64)) for status in result]
        with server_connection() as admin:
            opened = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
            ).fetchone()[0]

    # Each worker's threads, one connection each to every database they read
    # (with replicas configured, the replica here is this database too), plus
    # what its live delivery holds (LISTEN and the catch-up pool), however many
    # clients came.
    databases = 2 if "DATABASE_REPLICA_URLS" in env else 1
    assert statuses == [201, 201, 201, 200, 200, 200] * 64
    assert 2 <= opened <= 2 * (3 * databases + EVENTS_CONNECTIONS_PER_PROCESS)


def test_each_connection_carries_the_statement_and_lock_timeouts(own_connection):
    with own_connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
        )
        timeouts = cursor.fetchone()

    assert timeouts == ("5s", "2s")
    assert own_connection.connection.info.get_parameters()["connect_timeout"] == "2"


def test_a_statement_past_its_timeout_is_cancelled_by_the_server(own_connection, settings):
    started = time.monotonic()
    with pytest.raises(OperationalError, match="statement timeout"):
        with own_connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = '300ms'")
            cursor.execute("SELECT pg_sleep(3)")

    assert time.monotonic() - started < 2


def test_a_server_that_never_answers_is_cut_off_by_the_clients_deadline(own_connection, settings):
    settings.DB_CLIENT_DEADLINE = 0.5
    started = time.monotonic()
    with pytest.raises(OperationalError):
        with own_connection.cursor() as cursor:
            # The server's own timeout is off, as on a server too frozen to apply it.
            cursor.execute("SET statement_timeout = 0")
            cursor.execute("SELECT pg_sleep(5)")

    assert time.monotonic() - started < 1.5
    assert not own_connection.is_usable()
