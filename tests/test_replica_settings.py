"""The database settings: replicas, the direct URL, PgBouncer, and nothing changed when unset.

Each case starts a fresh interpreter with its own environment, since settings
are read once at start. What a replica does for a read is in tests/test_scale.py.
"""

import json
import subprocess
import sys

import pytest

from chatproject.replicas import PrimaryRouter, token_lsn, token_parse
from harness.processes import PROJECT

PRIMARY = "postgres://chat@primary.internal:6432/chat"
REPLICA = "postgres://chat@replica.internal:6432/chat"
SHOW_DATABASES = (
    "import json, django; django.setup(); from django.conf import settings; "
    "print(json.dumps(settings.DATABASES, default=str))"
)


def settings_with(**env: str) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "chatproject.settings"}
    return subprocess.run(
        [sys.executable, "-c", SHOW_DATABASES],
        cwd=PROJECT,
        env={**base, "DJANGO_DEBUG": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def databases_with(**env: str) -> dict:
    shown = settings_with(**env)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_replica_urls_on_sqlite_are_refused_at_start_with_a_clear_message():
    shown = settings_with(DATABASE_URL="sqlite:///db.sqlite3", DATABASE_REPLICA_URLS=REPLICA)

    assert shown.returncode != 0
    assert (
        "DATABASE_REPLICA_URLS needs PostgreSQL: DATABASE_URL is not a postgres:// URL, "
        "and SQLite has no replicas. Unset DATABASE_REPLICA_URLS." in shown.stderr
    )


def test_a_replica_url_that_is_not_postgresql_is_refused_at_start():
    shown = settings_with(
        DATABASE_URL=PRIMARY, DATABASE_REPLICA_URLS=f"{REPLICA},sqlite:///replica.sqlite3"
    )

    assert shown.returncode != 0
    assert "DATABASE_REPLICA_URLS: replica 2 is not a postgres:// URL." in shown.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_PREPARED_STATEMENTS", "no"),
        ("DATABASE_REPLICA_MAX_LAG", "1s"),
        ("DATABASE_REPLICA_IGNORE_TOKEN", "yes"),
    ],
)
def test_a_malformed_database_setting_stops_the_process_at_start(name, value):
    shown = settings_with(DATABASE_URL=PRIMARY, DATABASE_REPLICA_URLS=REPLICA, **{name: value})

    assert shown.returncode != 0
    assert f"{name} must be" in shown.stderr


def test_without_the_new_settings_the_primary_connection_is_as_it_was():
    databases = databases_with(DATABASE_URL=PRIMARY)

    assert set(databases) == {"default", "direct"}
    assert databases["default"]["ENGINE"] == "chatproject.postgresql"
    assert databases["default"]["OPTIONS"] == {
        "connect_timeout": 2,
        "options": "-c statement_timeout=5000 -c lock_timeout=2000",
        "server_side_binding": True,
        "prepare_threshold": 5,
    }
    assert databases["default"]["DISABLE_SERVER_SIDE_CURSORS"] is False
    assert databases["default"]["CONN_MAX_AGE"] == 600
    assert databases["default"]["CONN_HEALTH_CHECKS"] is True
    assert databases["direct"]["HOST"] == "primary.internal"
    assert databases["direct"]["TEST"]["MIRROR"] == "default"


def test_behind_pgbouncer_the_service_keeps_no_cursor_or_prepared_statement_across_transactions():
    databases = databases_with(
        DATABASE_URL=PRIMARY,
        DATABASE_DIRECT_URL="postgres://chat@primary.internal:5432/chat",
        DATABASE_REPLICA_URLS=REPLICA,
        DATABASE_PREPARED_STATEMENTS="0",
    )

    for alias in ("default", "replica1"):
        assert databases[alias]["DISABLE_SERVER_SIDE_CURSORS"] is True
        assert databases[alias]["OPTIONS"]["prepare_threshold"] is None
    # Migrations and LISTEN talk to PostgreSQL itself, which keeps both.
    assert databases["direct"]["PORT"] == 5432
    assert databases["direct"]["DISABLE_SERVER_SIDE_CURSORS"] is False


def test_each_replica_gets_an_alias_a_short_connect_timeout_and_mirrors_the_primary_in_tests():
    databases = databases_with(DATABASE_URL=PRIMARY, DATABASE_REPLICA_URLS=f"{REPLICA}, {REPLICA}2")

    assert [alias for alias in databases if alias.startswith("replica")] == [
        "replica1",
        "replica2",
    ]
    assert databases["replica2"]["NAME"] == "chat2"
    assert databases["replica1"]["OPTIONS"]["connect_timeout"] == 2
    assert databases["replica1"]["CLIENT_DEADLINE"] == 1.0
    assert databases["replica1"]["TEST"]["MIRROR"] == "default"


def test_no_migration_runs_on_a_replica_and_every_model_uses_the_primary():
    router = PrimaryRouter()

    assert router.allow_migrate("replica1", "conversations") is False
    assert router.allow_migrate("default", "conversations") is True
    assert router.allow_migrate("direct", "conversations") is True
    assert router.db_for_read(object) == router.db_for_write(object) == "default"


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        " ",
        "0",
        "0/3000148",
        "000000000300014",
        "00000000030001489",
        "000000000300014G",
        "0x00000000300014",
        "00000000 3000148",
        "é000000003000148",
    ],
)
def test_a_malformed_token_is_no_token(malformed):
    assert token_parse(malformed) is None


def test_a_token_is_a_wal_position_in_any_case_and_the_newest_of_header_and_cookie_wins():
    assert token_parse("00000016b374d848") == 0x16_B374D848
    assert token_lsn("00000016B374D848") == "16/B374D848"
    assert token_parse("0000000003000148", "0000000100000000") == 1 << 32
    assert token_parse("FFFFFFFFFFFFFFFF", "0000000000000001") == 2**64 - 1
    assert token_parse("nonsense", "0000000000000001") == 1
    assert token_parse(None, None) is None
