from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from tests.live import free_port

# The answer to any request while the database cannot be reached or is stuck.
SERVICE_UNAVAILABLE = {
    "type": "about:blank",
    "title": "Service Unavailable",
    "status": 503,
    "detail": "The database is not answering; try again shortly.",
}


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
