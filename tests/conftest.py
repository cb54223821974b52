from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from harness.processes import free_port

# The answer to any request while the database cannot be reached or is stuck.
# The detail of the 503 for a database that does not answer.
DATABASE_DOWN = "The database is not answering; try again shortly."


def postgresql_only(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        connection.vendor != "postgresql", reason=f"PostgreSQL only: {reason}"
    )


class Api:
    """The Django test client, speaking JSON to the API."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def post(self, payload: Any, path: str = "/messages/", **meta: str):
        return self.client.post(path, json.dumps(payload), content_type="application/json", **meta)

    def post_raw(
        self, body: bytes | str, content_type: str = "application/json", path: str = "/messages/"
    ):
        # The test client leaves out Content-Type for an empty body; a real
        # client sends it, so it is always set here.
        return self.client.post(path, body, content_type=content_type, CONTENT_TYPE=content_type)

    def get(self, path: str, **meta: str):
        return self.client.get(path, **meta)


@pytest.fixture
def api(client: Client) -> Api:
    return Api(client)


def message(
    conversation_id: str = "1234", sender: str = "anson", text: str = "I'm a teapot"
) -> dict:
    return {"sender": sender, "conversation_id": conversation_id, "message": text}


# Every error's title, as RFC 9110 names its status.
PROBLEM_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def assert_problem(
    response: Any,
    status: int,
    detail: str | None = None,
    errors: dict[str, list[str]] | None = None,
) -> dict:
    """The answer is problem+json of this status, and its body is exactly the one expected.

    With ``errors`` (each invalid field's messages, in order) and no ``detail``,
    the detail is what the API writes for them: each field and its messages,
    joined by "; ". With neither, any detail passes that is words for a person;
    the rest of the body is still compared whole. Takes the Django test
    client's responses and a live server's answers alike; returns the body.
    """
    status_code = response.status_code if hasattr(response, "status_code") else response.status
    body = response.json()
    if detail is None and errors is not None:
        detail = "; ".join(f"{field}: {' '.join(texts)}" for field, texts in errors.items())
    elif detail is None:
        assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
        detail = body["detail"]
    assert status in PROBLEM_TITLES, f"no title known for {status}: {body}"
    expected = {"type": "about:blank", "title": PROBLEM_TITLES[status], "status": status}
    expected["detail"] = detail
    if errors is not None:
        expected["errors"] = errors

    assert status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    assert body == expected
    assert list(body.get("errors", {})) == list(errors or {})
    return body


@pytest.fixture
def unreachable_redis(settings):
    """Rate limits on (one request a day), counted on a Redis that refuses connections."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"post": "1/day", "get": "1/day"},
    }


@pytest.fixture
def unreachable_database():
    """Point the connection at a database that cannot be opened, then restore it.

    The driver really fails to connect: a refused TCP port on PostgreSQL, a
    path in a directory that does not exist on SQLite.
    """
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "postgresql":
        connection.settings_dict.update(HOST="127.0.0.1", PORT="1")
    else:
        connection.settings_dict["NAME"] = "/nonexistent-directory/db.sqlite3"
    yield
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)


@pytest.fixture(autouse=True)
def _close_replica_connections():
    """The replicas' connections are not the test's: close them, so the test database can go."""
    yield
    from django.db import connections

    from chatproject.replicas import replica_aliases

    for alias in replica_aliases():
        # Only one that was opened: closing is refused in an async context
        # (the browser tests'), where none is.
        if connections[alias].connection is not None:
            connections[alias].close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With DATABASE_REPLICA_URLS set, a test that may query the primary may query the replicas.

    In tests each replica is the test database itself (a test mirror): the
    history reads ask it whether it is a standby, hear that it is not, and
    read the primary, so the suite runs the same requests with and without
    replicas configured.
    """
    from chatproject.replicas import replica_aliases

    replicas = replica_aliases()
    if not replicas:
        return
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker is None or "databases" in marker.kwargs:
            continue
        item.add_marker(
            pytest.mark.django_db(*marker.args, **marker.kwargs, databases=["default", *replicas]),
            append=False,
        )


@pytest.fixture(scope="module")
def fresh_database_url(tmp_path_factory, django_db_blocker):
    """A new, empty database for the module's live servers (harness/processes.py), dropped after it."""
    from harness.databases import fresh_database

    with django_db_blocker.unblock(), fresh_database(tmp_path_factory.mktemp("db")) as url:
        yield url
