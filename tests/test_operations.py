"""What operators rely on: health probes, one JSON log line per request, request ids."""

import io
import json
import logging
import re

import pytest

from tests.conftest import message
from tests.live import fresh_database, live_server, manage, server_environment

pytestmark = pytest.mark.django_db

REQUEST_LOGGER = "chatproject.requests"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def request_log(caplog):
    """The request logger's records (it does not propagate to the root logger)."""
    logger = logging.getLogger(REQUEST_LOGGER)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def lines_written(caplog) -> list[dict]:
    """The request log's records as its configured handler writes them on stdout."""
    (handler,) = [h for h in logging.getLogger(REQUEST_LOGGER).handlers if h.name == "requests"]
    return [
        json.loads(handler.format(record))
        for record in caplog.records
        if record.name == REQUEST_LOGGER
    ]


@pytest.fixture
def application_log():
    """What the application log's handler (stderr) writes while a test runs, line by line."""
    (handler,) = [h for h in logging.getLogger().handlers if h.name == "console"]
    written = io.StringIO()
    saved = handler.setStream(written)
    yield lambda: [json.loads(line) for line in written.getvalue().splitlines()]
    handler.setStream(saved)


@pytest.mark.parametrize("path", ["/healthz", "/healthz/"])
def test_healthz_answers_without_touching_the_database(client, django_assert_num_queries, path):
    with django_assert_num_queries(0):
        response = client.get(path)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/readyz", "/readyz/"])
def test_readyz_asks_the_database_one_trivial_query(client, django_assert_num_queries, path):
    with django_assert_num_queries(1):
        response = client.get(path)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db(transaction=True)
def test_with_the_database_unreachable_readyz_is_a_503_and_healthz_still_answers(
    client, unreachable_database
):
    ready = client.get("/readyz")
    healthy = client.get("/healthz")

    assert ready.status_code == 503
    assert ready["Content-Type"] == "application/problem+json"
    assert ready["Retry-After"] == "5"
    assert ready.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The database is not answering; try again shortly.",
    }
    assert healthy.status_code == 200
    assert healthy.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/healthz", "/healthz/", "/readyz", "/readyz/"])
@pytest.mark.parametrize("host", ["10.1.2.3:8000", "10.1.2.3", "[fd00::7]:8000", "pod-7"])
def test_probes_answer_whatever_host_the_prober_sends(client, path, host):
    response = client.get(path, HTTP_HOST=host)

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_everything_but_the_probes_still_refuses_a_host_that_is_not_allowed(client):
    response = client.get("/conversations/c", HTTP_HOST="10.1.2.3:8000")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_probes_over_plain_http_are_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz/").status_code == 200
    assert client.get("/conversations/1234").status_code == 301


def test_each_request_is_logged_as_one_json_line_with_its_fields(api, request_log):
    response = api.post(message(), REMOTE_ADDR="203.0.113.9", HTTP_X_REQUEST_ID="req-42")

    (line,) = lines_written(request_log)
    assert response.status_code == 201
    assert isinstance(line.pop("duration_ms"), float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", line.pop("time"))
    assert line == {
        "level": "INFO",
        "logger": REQUEST_LOGGER,
        "message": "POST /messages/ 201",
        "method": "POST",
        "path": "/messages/",
        "query": "",
        "status": 201,
        "request_id": "req-42",
        "client": "203.0.113.9",
    }


def test_errors_and_query_strings_are_logged_too(api, request_log):
    api.get("/conversations/1234?limit=0")

    (line,) = lines_written(request_log)
    assert (line["method"], line["path"], line["query"], line["status"]) == (
        "GET",
        "/conversations/1234",
        "limit=0",
        400,
    )


@pytest.mark.parametrize(
    "request_id",
    ["req-42", "0f8fad5b-d9cb-469f-a165-70867728950e", "Root=1-67891233-abcdef012345678912345678"],
)
def test_a_sane_request_id_from_the_client_is_echoed_and_logged(client, request_log, request_id):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=request_id)

    assert response["X-Request-ID"] == request_id
    assert lines_written(request_log)[0]["request_id"] == request_id


@pytest.mark.parametrize("request_id", [None, "", "has spaces", "x" * 201, "caf\u00e9", "a\tb"])
def test_a_missing_or_odd_request_id_is_replaced_by_a_new_one(client, request_log, request_id):
    meta = {} if request_id is None else {"HTTP_X_REQUEST_ID": request_id}

    response = client.get("/healthz", **meta)

    assert GENERATED_ID.fullmatch(response["X-Request-ID"])
    assert lines_written(request_log)[0]["request_id"] == response["X-Request-ID"]


def test_each_request_gets_its_own_generated_id(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]

    assert first != second


def test_a_traceback_logged_while_answering_is_one_json_line_with_the_request_id(
    client, application_log, settings
):
    settings.ROOT_URLCONF = "tests.failing_urls"
    client.raise_request_exception = False

    response = client.get("/fails-on-purpose", HTTP_X_REQUEST_ID="req-fails")

    (line,) = application_log()
    assert response.status_code == 500
    assert (line["level"], line["logger"], line["message"]) == (
        "ERROR",
        "django.request",
        "Internal Server Error: /fails-on-purpose",
    )
    assert line["request_id"] == "req-fails"
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert "Failure: a test view failed on purpose" in line["exc_info"]


def test_the_redis_warning_carries_the_id_of_the_request_it_let_through(
    api, application_log, unreachable_redis
):
    response = api.post(message(), HTTP_X_REQUEST_ID="req-redis")

    (line,) = application_log()
    assert response.status_code == 201
    assert line["level"] == "WARNING"
    assert line["message"].startswith("Rate limits are off: Redis did not answer")
    assert line["request_id"] == "req-redis"


def test_django_s_warning_about_a_4xx_carries_the_request_id_and_the_next_request_s_does_not(
    api, application_log
):
    api.post({"sender": "anson"}, HTTP_X_REQUEST_ID="req-bad")
    api.get("/conversations/x?limit=0")

    first, second = application_log()
    assert (first["message"], first["request_id"]) == ("Bad Request: /messages/", "req-bad")
    assert second["message"] == "Bad Request: /conversations/x"
    assert GENERATED_ID.fullmatch(second["request_id"])


def test_a_line_logged_outside_any_request_has_no_request_id(client, application_log):
    client.get("/healthz", HTTP_X_REQUEST_ID="req-before")
    logging.getLogger("conversations").warning("between requests")

    (line,) = application_log()
    assert line["message"] == "between requests"
    assert "request_id" not in line


# Under gunicorn, as deployed.


@pytest.fixture(scope="module")
def server(tmp_path_factory, django_db_blocker):
    with (
        django_db_blocker.unblock(),
        fresh_database(tmp_path_factory.mktemp("db")) as database_url,
    ):
        env = server_environment(database_url, CORS_ALLOWED_ORIGINS="https://widget.example")
        collected = manage(env, "collectstatic", "--noinput")
        assert collected.returncode == 0, collected.stderr
        log = tmp_path_factory.mktemp("log") / "gunicorn.log"
        with live_server(env, log) as running:
            running.log = log
            yield running


def test_under_gunicorn_each_request_is_one_json_line_on_stdout_and_no_access_log(server):
    answer = server.request("GET", "/readyz", headers={"X-Request-ID": "live-1"})

    lines = server.log.read_text().splitlines()
    logged = [json.loads(line) for line in lines if '"live-1"' in line]
    assert answer.status == 200
    assert answer.headers["X-Request-ID"] == "live-1"
    assert [(entry["path"], entry["status"]) for entry in logged] == [("/readyz", 200)]
    assert not [line for line in lines if "GET /readyz HTTP/1.1" in line]


def test_under_gunicorn_django_s_own_log_lines_carry_the_request_id_too(server):
    answer = server.request("GET", "/no-such-page", headers={"X-Request-ID": "live-404"})

    logged = [
        json.loads(line) for line in server.log.read_text().splitlines() if "live-404" in line
    ]
    assert answer.status == 404
    assert sorted((entry["logger"], entry["message"]) for entry in logged) == [
        ("chatproject.requests", "GET /no-such-page 404"),
        ("django.request", "Not Found: /no-such-page"),
    ]


def test_under_gunicorn_the_docs_page_and_its_assets_are_served_with_debug_off(server):
    page = server.request("GET", "/api/docs/")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.body.decode())

    assert page.status == 200
    assert len(assets) == 4
    for asset in assets:
        assert server.request("GET", asset).status == 200, asset
    assert server.request("GET", "/api/schema/").status == 200


def test_under_gunicorn_the_allowed_origins_come_from_the_environment(server):
    def preflight(origin: str) -> dict[str, str]:
        answer = server.request(
            "OPTIONS",
            "/messages/",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        return {name.lower(): value for name, value in answer.headers.items()}

    allowed = preflight("https://widget.example")
    refused = preflight("https://stranger.example")

    assert allowed["access-control-allow-origin"] == "https://widget.example"
    assert allowed["access-control-max-age"] == "86400"
    assert "access-control-allow-origin" not in refused


def test_under_gunicorn_a_probe_with_the_pods_address_as_host_is_answered(server):
    healthy = server.request("GET", "/healthz", headers={"Host": "10.244.0.17:8000"})
    ready = server.request("GET", "/readyz", headers={"Host": "10.244.0.17:8000"})

    assert (healthy.status, healthy.json()) == (200, {"status": "ok"})
    assert (ready.status, ready.json()) == (200, {"status": "ok", "database": "ok"})


def test_under_gunicorn_each_rejected_host_is_one_log_line_without_a_traceback(server):
    answer = server.request(
        "GET", "/conversations/c", headers={"Host": "rejected-host.example", "X-Request-ID": "rh-1"}
    )

    lines = server.log.read_text().splitlines()
    mentions = [line for line in lines if "rejected-host.example" in line]
    assert answer.status == 400
    assert len(mentions) == 1, mentions
    entry = json.loads(mentions[0])
    assert (entry["level"], entry["logger"], entry["request_id"]) == (
        "ERROR",
        "django.security.DisallowedHost",
        "rh-1",
    )
    assert entry["message"].startswith("Invalid HTTP_HOST header: 'rejected-host.example'.")
    assert "exc_info" not in entry
    assert "Traceback" not in mentions[0]
