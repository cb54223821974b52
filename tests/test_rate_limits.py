"""Rate limits per client address, on a process's own cache and on Redis.

The suite runs with the limits off (pyproject.toml); each test here turns on
the ones it checks, with a fresh cache of its own, through Django's settings.
Per-day budgets keep a window from ending in the middle of a test.
"""

import json
import math
import os
import secrets
import subprocess
import sys
import time

import pytest
import redis
from django.core.cache import cache

from conversations.models import Message
from tests.conftest import message
from tests.live import PROJECT, fresh_database, live_server, server_environment

pytestmark = pytest.mark.django_db

REDIS_URL = "redis://127.0.0.1:6379/9"
DAY = 86_400


def redis_reachable() -> bool:
    try:
        return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False


needs_redis = pytest.mark.skipif(not redis_reachable(), reason=f"no Redis answers at {REDIS_URL}")


def delete_keys(pattern: str) -> None:
    """Remove this test's keys only: the Redis server is shared, so never FLUSHDB."""
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(pattern):
        client.delete(key)


@pytest.fixture(params=["locmem", pytest.param("redis", marks=needs_redis)])
def throttle_cache(request, settings):
    """A fresh, empty cache for the counters: each worker's own, or Redis."""
    prefix = f"rate-limit-test-{secrets.token_hex(8)}"
    if request.param == "locmem":
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": prefix,
            }
        }
        yield request.param
        return
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": prefix,
        }
    }
    yield request.param
    delete_keys(f"{prefix}:*")


@pytest.fixture
def limits(settings, throttle_cache):
    """Set the rates (``None`` is off) and the number of trusted proxies."""

    def set_limits(*, post: str | None = None, get: str | None = None, proxies: int = 0) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"post": post, "get": get},
            "NUM_PROXIES": proxies,
        }

    return set_limits


def seconds_to_midnight() -> int:
    return math.ceil(DAY - time.time() % DAY)


def assert_throttled(response, *, latest: int, earliest: int) -> None:
    """A 429 problem whose Retry-After is the time left in the day's window."""
    wait = int(response["Retry-After"])
    assert earliest <= wait <= latest
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Request was throttled. Expected available in {wait} "
        + ("second." if wait == 1 else "seconds."),
    }


def test_over_the_post_limit_a_client_gets_a_429_with_retry_after_and_nothing_is_stored(
    api, limits
):
    limits(post="2/day")

    allowed = [api.post(message(text=f"m{n}")).status_code for n in range(2)]
    latest = seconds_to_midnight()
    refused = api.post(message(text="one too many"))
    earliest = seconds_to_midnight()

    assert allowed == [201, 201]
    assert_throttled(refused, latest=latest, earliest=earliest)
    assert list(Message.objects.values_list("message", flat=True)) == ["m0", "m1"]


def test_history_and_single_messages_share_the_get_limit(api, limits):
    posted = api.post(message()).json()
    limits(get="2/day")

    allowed = [
        api.get("/conversations/1234").status_code,
        api.get(f"/messages/{posted['id']}/").status_code,
    ]
    latest = seconds_to_midnight()
    refused = api.get("/conversations/1234")
    earliest = seconds_to_midnight()

    assert allowed == [200, 200]
    assert_throttled(refused, latest=latest, earliest=earliest)


def test_post_and_get_have_separate_budgets(api, limits):
    limits(post="1/day", get="1/day")

    statuses = [
        api.post(message()).status_code,
        api.get("/conversations/1234").status_code,
        api.post(message()).status_code,
        api.get("/conversations/1234").status_code,
    ]

    assert statuses == [201, 200, 429, 429]


def test_a_limit_that_is_off_lets_every_request_through(api, limits):
    limits(post=None, get="1/day")

    posts = [api.post(message(text=f"m{n}")).status_code for n in range(5)]
    gets = [api.get("/conversations/1234").status_code for _ in range(2)]

    assert posts == [201] * 5
    assert gets == [200, 429]


def test_each_client_address_has_its_own_budget(api, limits):
    limits(post="1/day")

    statuses = [
        api.post(message(), REMOTE_ADDR="192.0.2.1").status_code,
        api.post(message(), REMOTE_ADDR="192.0.2.1").status_code,
        api.post(message(), REMOTE_ADDR="192.0.2.2").status_code,
        api.post(message(), REMOTE_ADDR="2001:db8::1").status_code,
    ]

    assert statuses == [201, 429, 201, 201]


def test_without_trusted_proxies_x_forwarded_for_is_ignored(api, limits):
    limits(post="1/day", proxies=0)

    statuses = [
        api.post(message(), HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(3)
    ]

    assert statuses == [201, 429, 429]


def test_with_one_trusted_proxy_the_client_is_the_address_that_proxy_saw(api, limits):
    limits(post="1/day", proxies=1)

    def post_via_proxy(forwarded_for: str) -> int:
        return api.post(
            message(), REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded_for
        ).status_code

    statuses = [
        post_via_proxy("192.0.2.7"),
        # What the client itself wrote into the header is to the left: ignored.
        post_via_proxy("198.51.100.1, 192.0.2.7"),
        post_via_proxy("192.0.2.8"),
    ]

    assert statuses == [201, 429, 201]


def test_with_two_trusted_proxies_the_client_is_two_hops_from_the_right(api, limits):
    limits(post="1/day", proxies=2)

    statuses = [
        api.post(message(), HTTP_X_FORWARDED_FOR="192.0.2.7, 10.0.0.2").status_code,
        api.post(message(), HTTP_X_FORWARDED_FOR="192.0.2.7, 10.0.0.3").status_code,
        api.post(message(), HTTP_X_FORWARDED_FOR="spoofed, 192.0.2.8, 10.0.0.2").status_code,
    ]

    assert statuses == [201, 429, 201]


def test_an_odd_forwarded_address_is_still_counted(api, limits):
    """A proxy that passes the client's own header on gives it any text; it is hashed."""
    limits(post="1/day", proxies=1)
    odd = "not an address " + "x" * 300

    statuses = [
        api.post(message(), HTTP_X_FORWARDED_FOR=odd).status_code,
        api.post(message(), HTTP_X_FORWARDED_FOR=odd).status_code,
    ]

    assert statuses == [201, 429]


def test_the_addresses_of_one_ipv6_slash_64_share_one_budget(api, limits):
    limits(post="5/day", proxies=1)

    statuses = [
        api.post(message(), HTTP_X_FORWARDED_FOR=f"2001:db8:1:2::{n:x}").status_code
        for n in range(1, 21)
    ]
    next_network = api.post(message(), HTTP_X_FORWARDED_FOR="2001:db8:1:3::1").status_code

    assert statuses == [201] * 5 + [429] * 15
    assert next_network == 201


@pytest.mark.parametrize(
    "spellings",
    [
        # IPv4, and the same address mapped into IPv6, in every way it can be written.
        ["192.0.2.7", "::ffff:192.0.2.7", "::FFFF:C000:0207", "[::ffff:192.0.2.7]"],
        # One IPv6 address, spelled short, long, in capitals and bracketed.
        [
            "2001:db8::7",
            "2001:0db8:0000:0000:0000:0000:0000:0007",
            "2001:DB8::7",
            "[2001:db8::7]",
        ],
    ],
    ids=["ipv4-mapped", "ipv6"],
)
def test_every_spelling_of_one_client_address_shares_one_budget(api, limits, spellings):
    limits(post=f"{len(spellings) - 1}/day", proxies=1)

    statuses = [
        api.post(message(), HTTP_X_FORWARDED_FOR=spelling).status_code for spelling in spellings
    ]

    assert statuses == [201] * (len(spellings) - 1) + [429]


def test_rate_limits_add_no_database_query(api, limits, django_assert_num_queries):
    posted = api.post(message()).json()
    limits(get="3/day")

    with django_assert_num_queries(1):
        assert api.get("/conversations/1234", HTTP_IF_NONE_MATCH="*").status_code == 304
    with django_assert_num_queries(1):
        assert api.get(f"/messages/{posted['id']}/").status_code == 200
    with django_assert_num_queries(1):
        assert api.get("/conversations/nobody").status_code == 200
    with django_assert_num_queries(0):
        assert api.get("/conversations/1234").status_code == 429


@needs_redis
@pytest.mark.parametrize("throttle_cache", ["redis"], indirect=True)
def test_in_redis_a_client_has_one_counter_per_window_that_expires_with_it(api, limits):
    limits(post="5/day")

    for _ in range(3):
        api.post(message())

    redis_client = redis.Redis.from_url(REDIS_URL)
    window = int(time.time() // DAY)
    key = f"{cache.key_prefix}:1:throttle:post:{DAY}:{window}:127.0.0.1"
    assert redis_client.keys(f"{cache.key_prefix}:*") == [key.encode()]
    assert redis_client.get(key) == b"3"
    assert 0 < redis_client.ttl(key) <= DAY


def test_when_redis_does_not_answer_requests_go_through_and_it_is_logged(
    api, unreachable_redis, caplog
):
    statuses = [api.post(message()).status_code for _ in range(2)]

    assert statuses == [201, 201]
    assert "Rate limits are off: Redis did not answer" in caplog.text


def settings_under(**env: str) -> subprocess.CompletedProcess:
    """Start Django in a new process with these variables; print what the settings became."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"RATE_LIMIT_POST", "RATE_LIMIT_GET", "REDIS_URL", "DJANGO_TRUSTED_PROXIES"}
    }
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'rates': s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'], "
        "'proxies': s.REST_FRAMEWORK['NUM_PROXIES'], 'cache': s.CACHES['default']}))"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "chatproject.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_defaults_are_generous_limits_on_each_workers_own_cache_and_no_proxy():
    result = settings_under()

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "rates": {"post": "120/min", "get": "1200/min"},
        "proxies": 0,
        "cache": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        },
    }


def test_the_environment_sets_rates_proxies_and_redis():
    result = settings_under(
        RATE_LIMIT_POST="off",
        RATE_LIMIT_GET="30/minute",
        DJANGO_TRUSTED_PROXIES="2",
        REDIS_URL="redis://cache.internal:6379/3",
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "rates": {"post": None, "get": "30/minute"},
        "proxies": 2,
        "cache": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://cache.internal:6379/3",
            "KEY_PREFIX": "chat",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        },
    }


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RATE_LIMIT_POST", "lots"),
        ("RATE_LIMIT_POST", "0/min"),
        ("RATE_LIMIT_GET", "120/fortnight"),
        ("RATE_LIMIT_GET", "120"),
        ("DJANGO_TRUSTED_PROXIES", "-1"),
        ("DJANGO_TRUSTED_PROXIES", "yes"),
    ],
)
def test_a_malformed_setting_stops_the_process_at_start_and_names_itself(variable, value):
    result = settings_under(**{variable: value})

    assert result.returncode != 0
    assert f"{variable} must be" in result.stderr


@pytest.fixture(scope="module")
def database_url(tmp_path_factory, django_db_blocker):
    with django_db_blocker.unblock(), fresh_database(tmp_path_factory.mktemp("db")) as url:
        yield url


@needs_redis
def test_under_gunicorn_with_redis_the_limit_is_shared_by_its_workers(database_url, tmp_path):
    # Each in a /64 of its own: the network is the client.
    client_network = f"2001:db8:{secrets.token_hex(2)}:{secrets.token_hex(2)}::"
    other_network = f"2001:db8:{secrets.token_hex(2)}:{secrets.token_hex(2)}::"
    client, other = f"{client_network}1", f"{other_network}1"
    env = server_environment(
        database_url,
        WEB_CONCURRENCY="2",
        REDIS_URL=REDIS_URL,
        RATE_LIMIT_POST="3/day",
        RATE_LIMIT_GET="off",
        DJANGO_TRUSTED_PROXIES="1",
    )

    def post(forwarded_for: str) -> int:
        # A new connection each time, so that either worker may answer.
        return server.request(
            "POST", "/messages/", message("live"), headers={"X-Forwarded-For": forwarded_for}
        )

    try:
        with live_server(env, tmp_path / "gunicorn.log") as server:
            allowed = [post(client).status for _ in range(3)]
            refused = post(f"192.0.2.1, {client}")
            elsewhere = post(other)
            reads = [server.request("GET", "/conversations/live").status for _ in range(5)]
    finally:
        delete_keys(f"chat:*:throttle:*:{client_network}/64")
        delete_keys(f"chat:*:throttle:*:{other_network}/64")

    assert allowed == [201, 201, 201]
    assert refused.status == 429
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert 1 <= int(refused.headers["Retry-After"]) <= DAY
    assert refused.json()["status"] == 429
    assert elsewhere.status == 201
    assert reads == [200] * 5


def test_health_probes_are_never_throttled(client, limits):
    limits(post="1/day", get="1/day")

    assert client.get("/conversations/1234").status_code == 200
    assert client.get("/conversations/1234").status_code == 429
    for path in ["/healthz", "/readyz", "/healthz", "/readyz"]:
        assert client.get(path).status_code == 200
