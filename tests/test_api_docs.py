"""The OpenAPI schema and the Swagger UI page: complete, valid, current, and offline."""

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from conversations.inputs import message_input
from conversations.rules import (
    ALIAS_DIFFERS,
    CONVERSATION_ID_MAX_LENGTH,
    CONVERSATION_ID_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    JSON_INTEGER_MAX,
    JSON_INTEGER_MIN,
    MESSAGE_MAX_LENGTH,
    MESSAGE_PATTERN,
    SENDER_MAX_LENGTH,
    SENDER_PATTERN,
)

pytestmark = pytest.mark.django_db

COMMITTED_SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
RETRY_AFTER = {"Retry-After": {"type": "integer", "minimum": 0}}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> str:
    """The schema as `make schema` writes it: validated, and failing on any warning."""
    path = tmp_path_factory.mktemp("schema") / "openapi.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return path.read_text()


@pytest.fixture(scope="module")
def schema(generated) -> dict:
    return yaml.safe_load(generated)


def without_descriptions(value):
    """The schema's structure, with its prose left out of the comparison."""
    if isinstance(value, dict):
        return {k: without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [without_descriptions(v) for v in value]
    return value


def matches(pattern: str, value: str) -> bool:
    """A pattern as JSON Schema reads it (ECMA 262): `$` is the end of the text, where
    Python's `$` also matches before a final newline."""
    return re.search(pattern.replace("$", r"\Z"), value) is not None


def parameters(operation: dict) -> dict:
    return {
        (p["in"], p["name"]): without_descriptions(p["schema"]) for p in operation["parameters"]
    }


def headers(response: dict) -> dict:
    return {name: without_descriptions(h["schema"]) for name, h in response["headers"].items()}


def test_the_schema_is_valid_openapi_3_and_generates_without_warnings(schema):
    assert schema["openapi"].startswith("3.")


def test_the_committed_copy_is_current(generated):
    assert COMMITTED_SCHEMA.read_text() == generated, (
        "docs/openapi.yaml is stale: run `make schema` and commit it"
    )


def test_the_schema_lists_each_endpoint_once_by_its_documented_path(schema):
    assert {path: sorted(methods) for path, methods in schema["paths"].items()} == {
        "/messages/": ["post"],
        "/messages/{id}/": ["get"],
        "/conversations/{conversation_id}": ["get"],
        "/healthz": ["get"],
        "/readyz": ["get"],
    }


def test_posting_a_message_is_described_with_its_body_headers_and_every_status(schema):
    operation = schema["paths"]["/messages/"]["post"]
    responses = operation["responses"]

    assert operation["requestBody"]["required"] is True
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MessageRequest"
    }
    assert parameters(operation) == {
        ("header", "Idempotency-Key"): {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "pattern": r"^[\x20-\x7E]{1,255}$",
        }
    }
    assert sorted(responses) == ["201", "400", "405", "411", "413", "415", "422", "429", "503"]
    assert responses["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Message"
    }
    assert headers(responses["201"]) == {
        "Location": {"type": "string"},
        "Idempotent-Replayed": {"type": "string", "enum": ["true"]},
    }
    for status in ["400", "405", "411", "413", "415", "422", "429", "503"]:
        assert responses[status]["content"] == PROBLEM, status
    assert headers(responses["429"]) == RETRY_AFTER
    assert headers(responses["503"]) == RETRY_AFTER
    assert headers(responses["405"]) == {"Allow": {"type": "string"}}


def test_reading_a_message_is_described_with_every_status(schema):
    operation = schema["paths"]["/messages/{id}/"]["get"]
    responses = operation["responses"]

    assert parameters(operation) == {
        ("path", "id"): {"type": "integer", "format": "int64", "minimum": 0}
    }
    assert sorted(responses) == ["200", "404", "405", "429", "503"]
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Message"
    }
    for status in ["404", "405", "429", "503"]:
        assert responses[status]["content"] == PROBLEM, status
    assert headers(responses["429"]) == RETRY_AFTER
    assert headers(responses["503"]) == RETRY_AFTER


def test_reading_history_is_described_with_paging_conditional_get_and_every_status(schema):
    operation = schema["paths"]["/conversations/{conversation_id}"]["get"]
    responses = operation["responses"]
    message_id = {"type": "integer", "minimum": 0}

    assert parameters(operation) == {
        ("path", "conversation_id"): {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "pattern": r"^(?!\.{1,2}$)[A-Za-z0-9._~:@+-]{1,100}$",
        },
        ("query", "limit"): {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        ("query", "before"): message_id,
        ("query", "after"): message_id,
        ("header", "If-None-Match"): {"type": "string"},
    }
    assert sorted(responses) == ["200", "304", "400", "404", "405", "429", "503"]
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ConversationPage"
    }
    assert headers(responses["200"]) == {
        "ETag": {"type": "string"},
        "Cache-Control": {"type": "string"},
        "Link": {"type": "string"},
    }
    assert "content" not in responses["304"]
    assert headers(responses["304"]) == {
        "ETag": {"type": "string"},
        "Cache-Control": {"type": "string"},
    }
    for status in ["400", "404", "405", "429", "503"]:
        assert responses[status]["content"] == PROBLEM, status
    assert headers(responses["429"]) == RETRY_AFTER
    assert headers(responses["503"]) == RETRY_AFTER


def test_a_message_as_sent_has_every_field_with_its_limits(schema):
    text_id = {
        "type": "string",
        "minLength": 1,
        "maxLength": 100,
        "pattern": r"^(?!\.{1,2}$)[A-Za-z0-9._~:@+-]{1,100}$",
    }
    string_or_integer = {
        "oneOf": [
            text_id,
            {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1},
        ]
    }

    assert without_descriptions(schema["components"]["schemas"]["MessageRequest"]) == {
        "type": "object",
        "properties": {
            "conversation_id": string_or_integer,
            "converstaion_id": {**string_or_integer, "writeOnly": True},
            # The sender's 150 is counted after trimming: its pattern says so.
            "sender": {"type": "string", "minLength": 1, "pattern": SENDER_PATTERN},
            "message": {
                "type": "string",
                "minLength": 1,
                "maxLength": 10000,
                "pattern": MESSAGE_PATTERN,
            },
        },
        "required": ["message", "sender"],
        "anyOf": [{"required": ["conversation_id"]}, {"required": ["converstaion_id"]}],
    }


def test_a_message_as_returned_and_a_history_page_are_described_field_by_field(schema):
    components = without_descriptions(schema["components"]["schemas"])
    text_id = {
        "type": "string",
        "minLength": 1,
        "maxLength": 100,
        "pattern": r"^(?!\.{1,2}$)[A-Za-z0-9._~:@+-]{1,100}$",
    }

    assert components["Message"] == {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "readOnly": True},
            "conversation_id": text_id,
            "sender": {"type": "string", "maxLength": 150},
            "message": {"type": "string", "maxLength": 10000},
            "created": {"type": "string", "format": "date-time", "readOnly": True},
        },
        "required": ["created", "id", "message", "sender"],
    }
    assert components["ConversationPage"] == {
        "type": "object",
        "properties": {
            "id": text_id,
            "messages": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryMessage"}},
            "previous": {"type": "string", "format": "uri", "nullable": True},
            "next": {"type": "string", "format": "uri", "nullable": True},
        },
        "required": ["id", "messages", "next", "previous"],
    }
    assert components["HistoryMessage"] == {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "sender": {"type": "string", "maxLength": 150},
            "message": {"type": "string", "maxLength": 10000},
            "created": {"type": "string", "format": "date-time"},
        },
        "required": ["created", "id", "message", "sender"],
    }


def test_errors_are_one_problem_component(schema):
    assert without_descriptions(schema["components"]["schemas"]["Problem"]) == {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "errors": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        },
        "required": ["detail", "status", "title", "type"],
    }


@pytest.mark.parametrize(
    "conversation_id",
    [
        *["1234", "a" * 100, "a" * 101, "", "no spaces", "a/b", "é", "x\u0000", "A-z.0_9~:@+-"],
        *[".", "..", "...", ".a", "..\n", "1234\n"],
    ],
)
def test_the_documented_id_pattern_accepts_what_the_api_accepts(conversation_id):
    try:
        message_input({"conversation_id": conversation_id, "sender": "a", "message": "m"}, None)
        accepted = True
    except ValidationError:
        accepted = False

    assert matches(CONVERSATION_ID_PATTERN, conversation_id) == accepted


TEXT_CASES = [
    *["hi", " hi ", "a" * 150, f" {'a' * 150}\n", "a" * 151, f"a{' ' * 149}a", f"a{' ' * 150}a"],
    *["", " ", "\t\n", "\u3000\u2028", "\x1c", "\ufeff", "\u200b", "a\u0000", "\u0000"],
    *["\x85x\xa0", "tea\n", "a" * 10_000, f"{'a' * 10_000}\n", " " * 9_999 + "a"],
]


@pytest.mark.parametrize("text", TEXT_CASES, ids=range(len(TEXT_CASES)))
def test_the_documented_sender_and_message_rules_accept_what_the_api_accepts(schema, text):
    request = schema["components"]["schemas"]["MessageRequest"]["properties"]
    for field in ["sender", "message"]:
        rules = request[field]
        body = {"conversation_id": "1234", "sender": "anson", "message": "hi", field: text}
        try:
            message_input(body, idempotency_key=None)
            errors = {}
        except ValidationError as error:
            errors = error.detail
        documented = rules["minLength"] <= len(text) <= rules.get("maxLength", len(text))
        documented = documented and matches(rules["pattern"], text)

        assert documented == (field not in errors), field


def ecma_pattern(validator, pattern, instance, schema):
    """JSON Schema's `pattern` as ECMA 262 reads it (see matches)."""
    if isinstance(instance, str) and not matches(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# OpenAPI 3.0's schemas are JSON Schema draft 4 (1.0 is not an integer there,
# as it is not to message_input), read with ECMA patterns.
OpenApiValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"pattern": ecma_pattern}
)

# Values a body can carry once orjson has read it (no lone surrogates), made of
# what the rules care about: id characters and others, every kind of
# whitespace the rules name, NUL, lengths at and around each limit, and JSON
# values of every other type.
SPACE = st.sampled_from(
    [" ", "\t", "\n", "\x0b", "\x1c", "\x85", "\xa0", "\u1680", "\u2000", "\u200a"]
    + ["\u2028", "\u3000"]
)
SPACES = st.text(SPACE, max_size=2)
NOT_SPACES = st.sampled_from(["a", "Z", "0", ".", "-", "~", "@", "é", "/", "\u200b", "\ufeff"])
RULE_CHARACTERS = SPACE | NOT_SPACES | st.just("\x00")


def around(limit: int) -> st.SearchStrategy[str]:
    return st.sampled_from([limit - 1, limit, limit + 1]).map("x".__mul__)


def padded(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(SPACES, core, SPACES).map("".join)


VALID = {
    "conversation_id": st.from_regex(r"[a-z0-9._~:@+-]{1,4}", fullmatch=True)
    | around(CONVERSATION_ID_MAX_LENGTH)
    | st.integers(JSON_INTEGER_MIN, JSON_INTEGER_MAX),
    "sender": padded(st.text(NOT_SPACES, min_size=1, max_size=3) | around(SENDER_MAX_LENGTH)),
    "message": padded(st.text(NOT_SPACES, min_size=1, max_size=3) | around(MESSAGE_MAX_LENGTH)),
}
EDGE_VALUES = st.sampled_from(
    [None, True, False, "", " ", "\u3000\n", "\x00", "a\x00", 1.0, [], {}]
)
ANY_VALUE = st.one_of(
    EDGE_VALUES,
    SPACES,
    st.text(RULE_CHARACTERS, max_size=6),
    padded(st.text(RULE_CHARACTERS, max_size=3)),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
    st.integers(JSON_INTEGER_MIN, JSON_INTEGER_MAX),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
FIELDS = ["conversation_id", "converstaion_id", "sender", "message", "extra"]
IDEMPOTENCY_KEYS = st.one_of(
    st.none(),
    st.text(st.sampled_from(["k", "~", " "]), min_size=1, max_size=3),
    st.sampled_from(["", "k" * 255, "k" * 256, "tab\there", "café", "\x7f"]),
)


@st.composite
def bodies(draw) -> dict:
    """A body that is nearly right: up to two of its fields changed, dropped or added."""
    body = {name: draw(VALID[name]) for name in ("conversation_id", "sender", "message")}
    if draw(st.booleans()):
        body["converstaion_id"] = body.pop("conversation_id")
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(FIELDS))
        change = draw(st.sampled_from(["drop", "any", "edge", "valid", "copy", "nul"]))
        if change == "drop":
            body.pop(name, None)
        elif change in {"valid", "nul"} and name in VALID:
            body[name] = draw(VALID[name])
            if change == "nul" and isinstance(body[name], str):
                body[name] = draw(st.sampled_from(["\x00", "a\x00", " \x00b"])) + body[name]
        elif change == "edge":
            body[name] = draw(EDGE_VALUES)
        elif change == "copy" and "conversation_id" in body:
            body["converstaion_id"] = body["conversation_id"]
        else:
            body[name] = draw(ANY_VALUE)
    return body


@settings(
    # More than the request-level properties' 100: an example here sends no request.
    max_examples=5 * int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(body=bodies(), idempotency_key=IDEMPOTENCY_KEYS)
@example(body={"conversation_id": "a", "sender": "s", "message": "m"}, idempotency_key=None)
@example(
    body={"conversation_id": 7, "converstaion_id": "7", "sender": "s", "message": "m"},
    idempotency_key="k",
)
@example(body={"converstaion_id": "a", "sender": " s\n", "message": "m\n"}, idempotency_key="")
@example(body={"conversation_id": "..", "sender": "s", "message": "m"}, idempotency_key=None)
@example(body={"conversation_id": True, "sender": "s", "message": "m"}, idempotency_key=None)
@example(body={"conversation_id": "a", "sender": "s", "message": " \u2028\t"}, idempotency_key=None)
@example(body={"conversation_id": "a", "sender": "s\x00", "message": "m"}, idempotency_key=None)
def test_the_published_schema_and_message_input_accept_and_reject_the_same_bodies(
    schema, body, idempotency_key
):
    body_schema = schema["components"]["schemas"]["MessageRequest"]
    (key_parameter,) = schema["paths"]["/messages/"]["post"]["parameters"]
    documented = OpenApiValidator(body_schema).is_valid(body) and (
        idempotency_key is None
        or OpenApiValidator(key_parameter["schema"]).is_valid(idempotency_key)
    )
    try:
        message_input(body, idempotency_key)
        accepted, errors = True, {}
    except ValidationError as error:
        accepted, errors = False, error.detail

    event(f"documented {documented}, accepted {accepted}")
    spellings = [body[name] for name in ("conversation_id", "converstaion_id") if name in body]
    if documented and len(spellings) == 2 and str(spellings[0]) != str(spellings[1]):
        # JSON Schema cannot compare two properties: the alias's description says
        # that two different ids are a 400, and they are, for that reason alone.
        assert errors == {"converstaion_id": [ALIAS_DIFFERS]}
    else:
        assert accepted == documented, errors


def test_the_documented_idempotency_key_is_printable_ascii():
    assert re.fullmatch(IDEMPOTENCY_KEY_PATTERN, "retry-1 ~!")
    assert not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, "")
    assert not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, "x" * 256)
    assert not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, "tab\there")
    assert not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, "caf\u00e9")


def test_the_schema_is_served_as_yaml_and_as_json(client, schema):
    as_yaml = client.get("/api/schema/")
    as_json = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert as_yaml.status_code == 200
    assert as_yaml["Content-Type"] == "application/vnd.oai.openapi; charset=utf-8"
    assert yaml.safe_load(as_yaml.content) == schema
    assert as_json.status_code == 200
    assert as_json["Content-Type"] == "application/json"
    assert json.loads(as_json.content) == schema


def test_the_docs_page_is_swagger_ui_from_local_files_only(client):
    response = client.get("/api/docs/")
    page = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert "<script>" not in page
    assert sorted(assets) == [
        "/api/docs/?script=",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/favicon-32x32.png",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-standalone-preset.js",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css",
    ]
    for asset in assets:
        if asset.startswith("/static/"):
            assert finders.find(asset.removeprefix("/static/")), asset


def test_the_docs_page_script_loads_the_local_schema_and_nothing_remote(client):
    response = client.get("/api/docs/?script=")
    script = response.content.decode()

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert 'url: "/api/schema/"' in script
    assert not re.search(r"https?://", script)
