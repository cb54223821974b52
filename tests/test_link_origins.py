"""Links point where the settings say: no request header moves their scheme, host or prefix.

gunicorn copies a client's ``SCRIPT_NAME`` header into the WSGI environ (from
loopback, and from any address in ``forwarded_allow_ips``), and proxies that
pass headers with underscores (Caddy, HAProxy, Envoy) let anyone send it. The
Django test client's extra keywords are that same environ.
"""

import pytest

from harness.databases import fresh_database
from harness.processes import live_server, server_environment
from tests.conftest import message

pytestmark = pytest.mark.django_db

FORGED_ORIGIN = {
    "SCRIPT_NAME": "//evil.example",
    "HTTP_SCRIPT_NAME": "//evil.example",
    "HTTP_X_FORWARDED_HOST": "evil.example",
    "HTTP_X_FORWARDED_PORT": "666",
    "HTTP_X_FORWARDED_PREFIX": "/evil",
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_ORIGINAL_URL": "/evil/conversations/c",
    "HTTP_FORWARDED": "host=evil.example;proto=https",
}


def post_two(api) -> list[int]:
    return [api.post(message("c", text=f"m{n}")).json()["id"] for n in range(2)]


def test_no_forwarding_or_script_name_header_moves_the_paging_links(api):
    first, second = post_two(api)

    page = api.get("/conversations/c?limit=1", **FORGED_ORIGIN)

    assert page.status_code == 200
    assert page.json() == {
        "id": "c",
        "messages": [page.json()["messages"][0]],
        "previous": f"http://testserver/conversations/c?before={second}&limit=1",
        "next": None,
    }
    assert (
        page["Link"] == f'<http://testserver/conversations/c?before={second}&limit=1>; rel="prev"'
    )


def test_no_forwarding_or_script_name_header_moves_the_location_of_a_new_message(api):
    posted = api.post(message("c"), **FORGED_ORIGIN)

    assert posted.status_code == 201
    assert posted["Location"] == f"http://testserver/messages/{posted.json()['id']}/"


def test_a_path_prefix_comes_only_from_the_setting(api, settings):
    settings.FORCE_SCRIPT_NAME = "/chat"
    first, second = post_two(api)

    page = api.get("/conversations/c?limit=1", SCRIPT_NAME="//evil.example")

    assert (
        page.json()["previous"] == f"http://testserver/chat/conversations/c?before={second}&limit=1"
    )


def test_the_path_prefix_setting_defaults_to_none_taken_from_requests(settings):
    assert settings.FORCE_SCRIPT_NAME == ""


# Under gunicorn, which turns the header into the environ's SCRIPT_NAME.


@pytest.fixture(scope="module")
def server(tmp_path_factory, django_db_blocker):
    with (
        django_db_blocker.unblock(),
        fresh_database(tmp_path_factory.mktemp("db")) as database_url,
    ):
        env = server_environment(database_url)
        with live_server(env, tmp_path_factory.mktemp("log") / "gunicorn.log") as running:
            yield running


def test_under_the_live_server_a_script_name_header_does_not_poison_the_links(server):
    for n in range(2):
        server.request("POST", "/messages/", message("poison", text=f"m{n}"))
    honest = server.request("GET", "/conversations/poison?limit=1")

    poisoned = server.request(
        "GET", "/conversations/poison?limit=1", headers={"SCRIPT_NAME": "//evil.example"}
    )
    # gunicorn stripped a SCRIPT_NAME header's value from the path; uvicorn
    # leaves the path as sent, so this one is simply not an address of ours.
    prefixed = server.request(
        "GET",
        "//evil.example/conversations/poison?limit=1",
        headers={"SCRIPT_NAME": "//evil.example"},
    )

    base = f"http://{server.host}:{server.port}/conversations/poison"
    assert honest.json()["previous"].startswith(f"{base}?before=")
    assert poisoned.status == 200
    assert poisoned.json()["previous"] == honest.json()["previous"]
    assert poisoned.headers["Link"] == honest.headers["Link"]
    assert prefixed.status == 404
    assert b"evil.example" not in prefixed.body
