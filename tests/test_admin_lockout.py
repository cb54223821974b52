"""The admin's login resists guessing: 5 failures from an address, or to an account, lock it a while."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from tests.hashers import CountingPBKDF2PasswordHasher

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


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


@pytest.fixture
def other_staff(db, fast_password_hashing):
    return User.objects.create_superuser("ops", password=PASSWORD)


def test_a_login_to_another_account_does_not_clear_this_accounts_failures(
    client, staff, other_staff
):
    first_round = [log_in(client, f"guess {n}").status_code for n in range(4)]
    other = log_in(client, PASSWORD, username="ops")
    client.logout()
    fifth_failure = log_in(client, "guess 5")

    assert first_round == [200] * 4
    assert other.status_code == 302
    assert fifth_failure.status_code == 429
    assert log_in(client, PASSWORD).status_code == 429
    assert log_in(client, PASSWORD, username="ops").status_code == 429


def test_failures_to_one_account_from_many_addresses_lock_that_account(client, staff, other_staff):
    for n in range(5):
        log_in(client, f"guess {n}", REMOTE_ADDR=f"198.51.100.{n}")

    assert log_in(client, PASSWORD, REMOTE_ADDR="192.0.2.10").status_code == 429
    assert log_in(client, PASSWORD, username="ops", REMOTE_ADDR="192.0.2.10").status_code == 302


@pytest.mark.django_db(transaction=True)
def test_of_sixteen_wrong_passwords_at_once_at_most_five_are_checked_and_the_right_one_is_refused(
    settings,
):
    # Django's real hasher: the time it takes is the window concurrent attempts used to slip through.
    settings.PASSWORD_HASHERS = ["tests.hashers.CountingPBKDF2PasswordHasher"]
    User.objects.create_superuser("staff", password=PASSWORD)
    CountingPBKDF2PasswordHasher.checked = 0
    start = threading.Barrier(16)

    def wrong(n: int) -> int:
        start.wait()
        try:
            return log_in(Client(), f"guess {n}").status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(16) as pool:
        statuses = sorted(pool.map(wrong, range(16)))
    checked = CountingPBKDF2PasswordHasher.checked
    right = log_in(Client(), PASSWORD)

    assert checked <= 5
    # At most four re-shown forms (fewer when the counts of others land
    # first); every other attempt is the lockout.
    assert statuses.count(200) <= 4
    assert set(statuses) <= {200, 429}
    assert right.status_code == 429
    assert CountingPBKDF2PasswordHasher.checked == checked


def test_a_username_longer_than_the_attempts_column_is_a_failed_login_not_a_500(client, staff):
    response = log_in(client, "guess", username="u" * 256)

    assert response.status_code == 200
    assert b"Please enter the correct username and password" in response.content


def test_the_attempts_before_the_lockout_warn_how_many_are_left(client, staff):
    pages = [log_in(client, f"guess {n}").content.decode() for n in range(4)]

    assert "4 attempts left" in pages[0]
    assert "3 attempts left" in pages[1]
    assert "1 attempt left: after 5 failed logins" in pages[3]


def test_the_lockout_page_has_the_admins_look_and_says_what_is_locked_until_when_and_whom_to_ask(
    client, staff, settings
):
    settings.ADMIN_CONTACT = "ops@example.com"
    for n in range(5):
        log_in(client, f"guess {n}", REMOTE_ADDR="192.0.2.66")

    page = log_in(client, PASSWORD, REMOTE_ADDR="192.0.2.66")
    text = page.content.decode()

    assert page.status_code == 429
    assert 899 <= int(page["Retry-After"]) <= 900
    assert '<link rel="stylesheet" href="/static/admin/css/base.css">' in text
    assert "Django administration" in text
    assert "Every login from this network address, <strong>192.0.2.66</strong>" in text
    assert "Every login to the account <strong>staff</strong> is refused" in text
    assert "in about 15 minutes" in text
    assert "ask <strong>ops@example.com</strong>" in text
    assert "axes_reset_ip 192.0.2.66" in text


def test_an_address_locked_by_guesses_at_other_accounts_does_not_say_this_account_is_locked(
    client, staff
):
    for n in range(5):
        log_in(client, "guess", username=f"admin{n}")

    text = log_in(client, PASSWORD).content.decode()

    assert "Every login from this network address" in text
    assert "Every login to the account" not in text
    assert "the people who run this service" in text


def test_other_clients_are_not_locked_out(client, staff):
    for n in range(5):
        log_in(client, "guess", username=f"admin{n}", REMOTE_ADDR="192.0.2.66")

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
        log_in(
            client,
            "guess",
            username=f"admin{n}",
            HTTP_X_FORWARDED_FOR=f"198.51.100.{n}, 192.0.2.66",
        )

    assert log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.66").status_code == 429
    assert log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.10").status_code == 302


def test_failures_from_one_ipv6_slash_64_lock_out_the_whole_network(client, staff, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    for n in range(1, 6):
        log_in(client, "guess", username=f"admin{n}", HTTP_X_FORWARDED_FOR=f"2001:db8:7:7::{n}")

    same_network = log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="2001:db8:7:7:ffff::1")
    next_network = log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="2001:db8:7:8::1")

    assert same_network.status_code == 429
    assert "2001:db8:7:7::/64" in same_network.content.decode()
    assert next_network.status_code == 302


def test_an_ipv4_mapped_address_is_locked_out_with_its_ipv4_spelling(client, staff, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    for n in range(5):
        log_in(client, "guess", username=f"admin{n}", HTTP_X_FORWARDED_FOR="::ffff:192.0.2.9")

    assert log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.9").status_code == 429


def test_the_lockout_ends_after_the_cool_off(client, staff, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=3)
    for n in range(5):
        log_in(client, f"guess {n}")
    assert log_in(client, PASSWORD).status_code == 429

    time.sleep(3.1)

    assert log_in(client, PASSWORD).status_code == 302


def test_the_settings_lock_out_by_address_and_by_account_after_5_failures_for_15_minutes(
    settings,
):
    assert (
        settings.AXES_FAILURE_LIMIT,
        settings.AXES_COOLOFF_TIME,
        settings.AXES_LOCKOUT_PARAMETERS,
        settings.AUTHENTICATION_BACKENDS[0],
    ) == (
        5,
        timedelta(minutes=15),
        ["ip_address", "username"],
        "chatproject.lockout.CountFirstBackend",
    )
