"""The admin's login resists guessing: a client that fails 5 times is locked out for a while."""

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
LOCKED_OUT = b"Account locked: too many login attempts. Please try again later."


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Django's real hasher takes about a second per login here; the lockout does not care."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(db, fast_password_hashing):
    return User.objects.create_superuser("staff", password=PASSWORD)


def log_in(client, password: str, username: str = "staff", **meta: str):
    return client.post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}, **meta
    )


def is_logged_in(client) -> bool:
    return client.get("/admin/").status_code == 200


def test_after_five_failures_even_the_right_password_is_refused(client, staff):
    failures = [log_in(client, f"guess {n}").status_code for n in range(5)]
    right = log_in(client, PASSWORD)

    # The first four re-show the form; the fifth is the lockout.
    assert failures == [200, 200, 200, 200, 429]
    assert right.status_code == 429
    assert right["Content-Type"] == "text/html; charset=utf-8"
    assert right.content == LOCKED_OUT
    assert not is_logged_in(client)


def test_a_right_password_before_the_limit_logs_in_and_clears_the_count(client, staff):
    failures = [log_in(client, f"guess {n}").status_code for n in range(4)]
    right = log_in(client, PASSWORD)
    client.logout()
    again = [log_in(client, f"guess {n}").status_code for n in range(4)]

    assert failures == [200] * 4
    assert right.status_code == 302
    assert right["Location"] == "/admin/"
    assert again == [200] * 4


def test_the_lockout_covers_every_username_from_that_client(client, staff):
    for n in range(5):
        log_in(client, "guess", username=f"admin{n}")

    assert log_in(client, PASSWORD).status_code == 429


def test_other_clients_are_not_locked_out(client, staff):
    for n in range(5):
        log_in(client, f"guess {n}", REMOTE_ADDR="192.0.2.66")

    assert log_in(client, PASSWORD, REMOTE_ADDR="192.0.2.10").status_code == 302


def test_without_trusted_proxies_a_forged_x_forwarded_for_does_not_escape_the_lockout(
    client, staff, settings
):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}
    for n in range(5):
        log_in(client, f"guess {n}", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")

    assert log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.99").status_code == 429


def test_behind_a_trusted_proxy_the_lockout_is_per_forwarded_client(client, staff, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    for n in range(5):
        log_in(client, f"guess {n}", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}, 192.0.2.66")

    assert log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.66").status_code == 429
    assert log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.10").status_code == 302


def test_the_lockout_ends_after_the_cool_off(client, staff, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=3)
    for n in range(5):
        log_in(client, f"guess {n}")
    assert log_in(client, PASSWORD).status_code == 429

    time.sleep(3.1)

    assert log_in(client, PASSWORD).status_code == 302


def test_the_settings_lock_out_by_address_after_5_failures_for_15_minutes(settings):
    assert (
        settings.AXES_FAILURE_LIMIT,
        settings.AXES_COOLOFF_TIME,
        settings.AXES_LOCKOUT_PARAMETERS,
        settings.AUTHENTICATION_BACKENDS[0],
    ) == (5, timedelta(minutes=15), ["ip_address"], "axes.backends.AxesStandaloneBackend")
