"""The service as an operator runs it: settings, checks, and gunicorn from the Procfile."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.live import fresh_database, live_server, manage, server_environment

WRITERS = 8
POSTS_EACH = 10


@pytest.fixture(scope="module")
def database_url(tmp_path_factory, django_db_blocker):
    with django_db_blocker.unblock(), fresh_database(tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    env = server_environment(database_url)
    collected = manage(env, "collectstatic", "--noinput")
    assert collected.returncode == 0, collected.stderr
    with live_server(env, tmp_path_factory.mktemp("log") / "gunicorn.log") as running:
        yield running


def test_the_procfile_web_process_serves_the_api(server):
    posted = server.request(
        "POST", "/messages", {"sender": "anson", "conversation_id": "live", "message": "hi"}
    )
    history = server.request("GET", "/conversations/live/")

    assert posted.status == 201
    assert history.status == 200
    assert history.json()["messages"] == [
        {k: posted.json()[k] for k in ("id", "sender", "message", "created")}
    ]


def test_a_chunked_body_is_a_411_asking_for_a_content_length(server):
    answer = server.request(
        "POST",
        "/messages/",
        {"sender": "a", "conversation_id": "chunked", "message": "m"},
        chunked=True,
    )

    assert answer.status == 411
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert server.request("GET", "/conversations/chunked").json()["messages"] == []


def test_admin_pages_get_their_css_from_whitenoise_with_debug_off(server):
    login = server.request("GET", "/admin/login/")
    stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', login.body.decode())

    assert login.status == 200
    assert "/static/admin/css/base.css" in stylesheets
    for href in stylesheets:
        css = server.request("GET", href)
        assert css.status == 200
        assert css.headers["Content-Type"].startswith("text/css")
        # whitenoise answers before Django's own header middleware runs.
        assert css.headers["X-Content-Type-Options"] == "nosniff"
        assert css.headers["X-Frame-Options"] == "DENY"


def test_concurrent_writers_under_gunicorn_all_succeed_in_order(server):
    def writer(number: int) -> list[int]:
        return [
            server.request(
                "POST",
                "/messages/",
                {"sender": f"w{number}", "conversation_id": "busy", "message": str(n)},
            ).status
            for n in range(POSTS_EACH)
        ]

    with ThreadPoolExecutor(WRITERS) as pool:
        statuses = [status for result in pool.map(writer, range(WRITERS)) for status in result]
    messages = server.request("GET", "/conversations/busy?limit=1000").json()["messages"]

    assert statuses == [201] * WRITERS * POSTS_EACH
    assert len(messages) == WRITERS * POSTS_EACH
    for number in range(WRITERS):
        sent = [m["message"] for m in messages if m["sender"] == f"w{number}"]
        assert sent == [str(n) for n in range(POSTS_EACH)]


def test_with_https_on_plain_http_is_redirected_and_proxied_https_is_served(database_url, tmp_path):
    env = server_environment(database_url, DJANGO_HTTPS="1")
    with live_server(env, tmp_path / "gunicorn.log") as https_server:
        plain = https_server.request("GET", "/conversations/x")
        proxied = https_server.request(
            "GET", "/conversations/x", headers={"X-Forwarded-Proto": "https"}
        )

    assert plain.status == 301
    assert plain.headers["Location"] == f"https://127.0.0.1:{https_server.port}/conversations/x"
    assert proxied.status == 200
    assert proxied.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_the_deploy_check_passes_with_debug_off_a_real_key_and_https(database_url):
    env = server_environment(database_url, DJANGO_HTTPS="1")

    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stderr + result.stdout


def test_the_process_refuses_to_start_without_a_secret_key_when_debug_is_off(database_url):
    env = server_environment(database_url)
    del env["DJANGO_SECRET_KEY"]

    result = manage(env, "check")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_debug_mode_needs_no_secret_key(database_url):
    env = server_environment(database_url, DJANGO_DEBUG="1")
    del env["DJANGO_SECRET_KEY"]

    assert manage(env, "check").returncode == 0


def test_the_database_timeouts_default_to_2_s_to_connect_5_s_a_statement_2_s_a_lock(settings):
    assert (
        settings.DB_CONNECT_TIMEOUT,
        settings.DB_STATEMENT_TIMEOUT,
        settings.DB_LOCK_TIMEOUT,
        settings.DB_SERVER_TIMEOUTS,
        settings.DB_CLIENT_DEADLINE,
    ) == (2, 5, 2, "startup", 6)


@pytest.mark.parametrize(
    "variable, value",
    [
        ("DJANGO_DB_STATEMENT_TIMEOUT", "5s"),
        ("DJANGO_DB_LOCK_TIMEOUT", "-1"),
        ("DJANGO_DB_SERVER_TIMEOUTS", "sometimes"),
        ("DJANGO_SCRIPT_NAME", "//evil.example"),
    ],
)
def test_a_malformed_database_timeout_or_path_prefix_stops_the_process_at_start(
    database_url, variable, value
):
    result = manage(server_environment(database_url, **{variable: value}), "check")

    assert result.returncode != 0
    assert f"{variable} must be" in result.stderr


@pytest.mark.parametrize(
    "server_timeouts, options",
    [
        (
            "startup",
            {"connect_timeout": 2, "options": "-c statement_timeout=5000 -c lock_timeout=2000"},
        ),
        ("off", {"connect_timeout": 2}),
    ],
)
def test_the_server_timeouts_go_in_the_startup_packet_unless_turned_off(server_timeouts, options):
    env = server_environment(
        "postgres://chat@db.invalid:5432/chat", DJANGO_DB_SERVER_TIMEOUTS=server_timeouts
    )
    shown = manage(
        env,
        "shell",
        "-c",
        "import json; from django.conf import settings; "
        "o = settings.DATABASES['default']['OPTIONS']; "
        "print(json.dumps({k: o[k] for k in ('connect_timeout', 'options') if k in o}))",
    )

    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout.strip().splitlines()[-1]) == options
