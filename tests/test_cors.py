"""Browsers on other origins: only the configured ones may call the API."""

import pytest

from conversations.models import Message
from harness.processes import manage, server_environment
from tests.conftest import message

pytestmark = pytest.mark.django_db

WIDGET = "https://widget.example"
STRANGER = "https://stranger.example"
EXPOSED = "Location, ETag, Link, Retry-After, Idempotent-Replayed"
PREFLIGHT_ANSWER = {
    "access-control-allow-origin": WIDGET,
    "access-control-allow-methods": "GET, POST, OPTIONS",
    "access-control-allow-headers": "content-type, idempotency-key, if-none-match",
    "access-control-expose-headers": EXPOSED,
    "access-control-max-age": "86400",
}


@pytest.fixture
def widget_allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = [WIDGET]


def cors_headers(response) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in response.headers.items()
        if name.lower().startswith("access-control-")
    }


def preflight(client, origin: str, method: str = "POST", path: str = "/messages/"):
    return client.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type, idempotency-key",
    )


def test_no_origin_is_allowed_by_default(settings, client):
    response = preflight(client, WIDGET)

    assert settings.CORS_ALLOWED_ORIGINS == []
    assert settings.CORS_ALLOW_ALL_ORIGINS is False
    assert cors_headers(response) == {}


@pytest.mark.parametrize(
    "method, path", [("POST", "/messages/"), ("GET", "/conversations/1234"), ("GET", "/messages/1")]
)
def test_a_preflight_from_an_allowed_origin_is_answered_and_cached_for_a_day(
    client, widget_allowed, method, path
):
    response = preflight(client, WIDGET, method, path)

    assert response.status_code == 200
    assert cors_headers(response) == PREFLIGHT_ANSWER
    assert not Message.objects.exists()


def test_a_preflight_from_another_origin_gets_no_permission(client, widget_allowed):
    response = preflight(client, STRANGER)

    assert response.status_code == 200
    assert cors_headers(response) == {}


def test_a_cross_origin_post_from_an_allowed_origin_can_read_the_answer_and_its_headers(
    api, widget_allowed
):
    response = api.post(message(), HTTP_ORIGIN=WIDGET)

    assert response.status_code == 201
    assert cors_headers(response) == {
        "access-control-allow-origin": WIDGET,
        "access-control-expose-headers": EXPOSED,
    }
    assert "origin" in response["Vary"].lower()


def test_an_allowed_origin_can_read_error_answers_too(api, widget_allowed):
    response = api.post({"sender": "anson"}, HTTP_ORIGIN=WIDGET)

    assert response.status_code == 400
    assert cors_headers(response) == {
        "access-control-allow-origin": WIDGET,
        "access-control-expose-headers": EXPOSED,
    }


def test_a_cross_origin_read_from_another_origin_gets_no_permission(api, widget_allowed):
    response = api.get("/conversations/1234", HTTP_ORIGIN=STRANGER)

    assert response.status_code == 200
    assert cors_headers(response) == {}


def test_the_admin_is_never_opened_to_other_origins(client, widget_allowed):
    response = client.get("/admin/login/", HTTP_ORIGIN=WIDGET)

    assert response.status_code == 200
    assert cors_headers(response) == {}


def settings_from_environment(tmp_path, **environment: str):
    env = server_environment(f"sqlite:///{tmp_path / 'db.sqlite3'}", **environment)
    return manage(
        env,
        "shell",
        "--no-imports",
        "--command",
        "from django.conf import settings; "
        "print(settings.CORS_ALLOW_ALL_ORIGINS, settings.CORS_ALLOWED_ORIGINS)",
    )


def test_the_allowed_origins_come_from_a_comma_list_in_the_environment(tmp_path):
    result = settings_from_environment(
        tmp_path, CORS_ALLOWED_ORIGINS="https://a.example, http://localhost:3000"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "False ['https://a.example', 'http://localhost:3000']\n"


def test_a_star_alone_allows_every_origin(tmp_path):
    result = settings_from_environment(tmp_path, CORS_ALLOWED_ORIGINS="*")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "True []\n"


def test_a_star_among_origins_is_refused_at_startup(tmp_path):
    result = settings_from_environment(tmp_path, CORS_ALLOWED_ORIGINS="*,https://a.example")

    assert result.returncode != 0
    assert "CORS_ALLOWED_ORIGINS is either '*' alone or a list of origins." in result.stderr


def test_every_origin_is_allowed_when_set_to_star(api, settings):
    settings.CORS_ALLOW_ALL_ORIGINS = True

    response = api.get("/conversations/1234", HTTP_ORIGIN=STRANGER)

    assert cors_headers(response) == {
        "access-control-allow-origin": "*",
        "access-control-expose-headers": EXPOSED,
    }
