"""Security headers on every answer, and a strict Content-Security-Policy on the API's."""

import pytest

from chatproject.headers import API_POLICY
from tests.conftest import message

pytestmark = pytest.mark.django_db


def assert_common_headers(response) -> None:
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_every_kind_of_api_answer_carries_the_security_headers_and_the_api_policy(api):
    posted = api.post(message())
    etag = api.get("/conversations/1234")["ETag"]
    answers = [
        posted,
        api.get("/conversations/1234"),
        api.get(f"/messages/{posted.json()['id']}/"),
        api.get("/conversations/1234", HTTP_IF_NONE_MATCH=etag),
        api.post({"sender": 1}),
        api.post_raw("text", content_type="text/plain"),
        api.get("/conversations/bad%20id"),
        api.get("/messages/"),
        api.get("/nothing/here"),
        api.get("/healthz"),
        api.client.options(
            "/messages/",
            HTTP_ORIGIN="https://widget.example",
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        ),
    ]

    assert [a.status_code for a in answers] == [
        201,
        200,
        200,
        304,
        400,
        415,
        400,
        405,
        404,
        200,
        200,
    ]
    for answer in answers:
        assert_common_headers(answer)
        assert answer["Content-Security-Policy"] == API_POLICY


def test_the_api_policy_lets_nothing_load_run_or_frame():
    directives = dict(part.strip().split(" ", 1) for part in API_POLICY.split(";"))

    assert directives == {
        "default-src": "'none'",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'none'",
    }


def test_the_demo_page_gets_a_policy_that_allows_only_its_own_files(client):
    response = client.get("/")

    assert response.status_code == 200
    assert_common_headers(response)
    assert response["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def test_admin_pages_carry_the_common_headers(client):
    response = client.get("/admin/login/")

    assert response.status_code == 200
    assert_common_headers(response)
