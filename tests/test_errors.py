"""Every failure is problem+json with a 4xx (or a 503), and changes nothing."""

import json

import pytest

from api.parsers import MAX_BODY_BYTES
from conversations.models import Conversation, Message
from tests.conftest import DATABASE_DOWN, assert_problem, message

pytestmark = pytest.mark.django_db


def assert_refused(response, status: int, detail: str | None = None) -> None:
    """A problem+json of this status, and nothing stored."""
    assert_problem(response, status, detail)
    assert not Message.objects.exists()
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"sender": "a",}',
        b"{'sender': 'a'}",
        b'{"sender": NaN, "conversation_id": "c", "message": "m"}',
        b'{"sender": "a", "conversation_id": Infinity, "message": "m"}',
        b'{"sender": "a", "conversation_id": -Infinity, "message": "m"}',
        b"\xff\xfe{}",
        b'{"sender": "\xc3\x28", "conversation_id": "c", "message": "m"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b'{"sender": "a"} trailing',
        b"   ",
    ],
)
def test_malformed_json_is_a_400(api, body):
    assert_refused(api.post_raw(body), 400)


def test_json_nested_up_to_1024_levels_is_read(api):
    nested = "[" * 1023 + "]" * 1023
    body = json.dumps(message())[:-1] + f', "extra": {nested}}}'

    assert api.post_raw(body).status_code == 201


@pytest.mark.parametrize("body", ["[]", '["a"]', "1", '"text"', "null", "true"])
def test_a_json_body_that_is_not_an_object_is_a_400(api, body):
    assert_refused(api.post_raw(body), 400, "The request body must be a JSON object.")


def test_an_empty_body_is_a_400(api):
    assert_refused(api.post_raw(b""), 400, "The request body is empty; send a JSON object.")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
def test_a_non_json_content_type_is_a_415(api, content_type):
    response = api.post_raw(json.dumps(message()), content_type=content_type)

    assert_refused(response, 415)


def test_a_415_says_what_to_send_instead(api):
    """``curl -d`` sends a form's content type unless told otherwise."""
    form = "application/x-www-form-urlencoded"

    assert_problem(
        api.post_raw(json.dumps(message()), content_type=form),
        415,
        "Send the body as JSON with the header Content-Type: application/json "
        "(this one came as application/x-www-form-urlencoded).",
    )
    assert_problem(
        api.post_raw(json.dumps(message()), content_type=""),
        415,
        "Send the body as JSON with the header Content-Type: application/json "
        "(this one came with no Content-Type).",
    )


def test_an_empty_body_with_a_non_json_content_type_is_a_415(api):
    assert_refused(api.post_raw(b"", content_type="text/plain"), 415)


def test_json_with_a_charset_parameter_is_accepted(api):
    response = api.post_raw(json.dumps(message()), content_type="application/json; charset=utf-8")

    assert response.status_code == 201


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 10 * 1024 * 1024])
def test_a_body_over_256_kib_is_a_413(api, size):
    padding = "x" * (size - len(json.dumps(message(text=""))))
    body = json.dumps(message(text=padding)).encode()
    assert len(body) == size

    assert_refused(api.post_raw(body), 413)


def test_a_body_of_exactly_256_kib_is_read(api):
    body = json.dumps({**message(), "padding": ""})
    body = body.replace('"padding": ""', '"padding": "' + "x" * (MAX_BODY_BYTES - len(body)) + '"')
    assert len(body.encode()) == MAX_BODY_BYTES

    assert api.post_raw(body).status_code == 201


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/messages/"),
        ("put", "/messages/"),
        ("delete", "/messages/"),
        ("patch", "/messages/1/"),
        ("delete", "/messages/1/"),
        ("post", "/conversations/1234"),
        ("put", "/conversations/1234/"),
        ("delete", "/conversations/1234"),
        ("post", "/healthz"),
        ("delete", "/readyz"),
    ],
)
def test_a_wrong_method_is_a_405(client, method, path):
    if method == "get":
        response = client.get(path)
    else:
        response = getattr(client, method)(path, "{}", content_type="application/json")

    assert_refused(response, 405)
    assert "Allow" in response


def test_an_unknown_address_is_a_404_problem(client):
    assert_refused(client.get("/nothing/here"), 404)


@pytest.mark.parametrize("path", ["/conversations/a/b", "/conversations/a%2Fb"])
def test_a_conversation_id_with_a_slash_is_an_unknown_address(client, path):
    # Declared as this operation's 404 in the schema: no id, however
    # encoded, reaches the history view with a "/" in it.
    assert_refused(client.get(path), 404)


def test_the_api_answers_json_whatever_the_accept_header(api):
    response = api.post(message(), HTTP_ACCEPT="text/html")

    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "method, path",
    [("post", "/messages/"), ("get", "/conversations/1234"), ("get", "/messages/1/")],
)
def test_an_unreachable_database_is_a_503_with_retry_after(
    client, unreachable_database, method, path
):
    if method == "post":
        response = client.post(path, json.dumps(message()), content_type="application/json")
    else:
        response = client.get(path)

    assert_problem(response, 503, DATABASE_DOWN)
    assert response["Retry-After"] == "5"
