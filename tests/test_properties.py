"""Properties that hold for any input, checked with hypothesis through the test client.

Valid text comes back exactly as it was sent; anything at all, as a body, a
conversation id or a paging parameter, gets an answer from the contract and
never a 5xx.
"""

import itertools
import json
import os
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conversations.rules import (
    CONVERSATION_ID_CHARACTERS,
    CONVERSATION_ID_DOT_SEGMENTS,
    CONVERSATION_ID_MAX_LENGTH,
    MESSAGE_MAX_LENGTH,
    SENDER_MAX_LENGTH,
)
from conversations.services import message_create

pytestmark = pytest.mark.django_db

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any character the API stores: everything but NUL and lone surrogates.
STORABLE = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
# Characters Python's str.strip() removes, which is what "trimmed" means here.
WHITESPACE = st.text(st.sampled_from(" \t\n\r\x0b\x0c\x1c\x85\xa0\u2003\u2028\u3000"), max_size=4)
CONVERSATION_IDS = st.from_regex(
    f"[{CONVERSATION_ID_CHARACTERS}]{{1,{CONVERSATION_ID_MAX_LENGTH}}}", fullmatch=True
).filter(lambda value: value not in CONVERSATION_ID_DOT_SEGMENTS)

conversation_numbers = itertools.count()


def new_conversation_id() -> str:
    """A conversation of its own for each example: the database persists across examples."""
    return f"property-{next(conversation_numbers)}"


def assert_problem(response) -> None:
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == response.status_code
    assert {"type", "title", "status", "detail"} <= set(body)


def post_and_read_back(api, payload: dict) -> tuple[dict, dict, dict]:
    posted = api.post(payload)
    assert posted.status_code == 201, posted.content
    stored = posted.json()
    single = api.get(f"/messages/{stored['id']}/").json()
    history = api.get(f"/conversations/{payload['conversation_id']}").json()
    return stored, single, history


@PROPERTY_SETTINGS
@given(text=st.text(STORABLE, min_size=1, max_size=MESSAGE_MAX_LENGTH).filter(str.strip))
@example(text="\U0001d11e" * 10_000)
@example(text=" \u2028leading, trailing and line separators\u2029\r\n ")
@example(text="\ufeff\U0010ffff\x01\x7f\u0085")
def test_any_storable_text_round_trips_exactly_as_the_message(api, text):
    conversation_id = new_conversation_id()

    stored, single, history = post_and_read_back(
        api, {"sender": "anson", "conversation_id": conversation_id, "message": text}
    )

    assert stored == {
        "id": stored["id"],
        "conversation_id": conversation_id,
        "sender": "anson",
        "message": text,
        "created": stored["created"],
    }
    assert single == stored
    assert history["messages"] == [
        {"id": stored["id"], "sender": "anson", "message": text, "created": stored["created"]}
    ]


@PROPERTY_SETTINGS
@given(
    sender=st.tuples(
        WHITESPACE, st.text(STORABLE, min_size=1, max_size=SENDER_MAX_LENGTH), WHITESPACE
    )
    .map("".join)
    .filter(lambda sender: 1 <= len(sender.strip()) <= SENDER_MAX_LENGTH)
)
@example(sender="\u3000\t \U0001f600" + "x" * 149 + " \n")
def test_any_valid_sender_round_trips_trimmed(api, sender):
    conversation_id = new_conversation_id()

    stored, single, history = post_and_read_back(
        api, {"sender": sender, "conversation_id": conversation_id, "message": "hi"}
    )

    assert stored["sender"] == sender.strip()
    assert single["sender"] == sender.strip()
    assert [m["sender"] for m in history["messages"]] == [sender.strip()]


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 10, max_value=2**70)
    | st.floats()
    | st.text()
    | CONVERSATION_IDS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["sender", "conversation_id", "converstaion_id", "message"]
BODIES = (
    JSON_VALUES
    | st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES)
    | st.fixed_dictionaries({field: JSON_VALUES | CONVERSATION_IDS for field in FIELDS})
)


@PROPERTY_SETTINGS
@given(body=BODIES, ascii_only=st.booleans())
@example(body={"sender": "a", "conversation_id": 10**400, "message": "m"}, ascii_only=True)
@example(body={"sender": "a", "conversation_id": "c", "message": "\ud800"}, ascii_only=False)
@example(body={"sender": "a", "conversation_id": "c", "message": float("nan")}, ascii_only=True)
@example(body=[[[[[]]]]], ascii_only=True)
def test_any_json_body_gets_a_2xx_or_a_4xx_problem_never_a_5xx(api, body, ascii_only):
    # Lone surrogates go out as \ud800 escapes, or as the invalid UTF-8 they
    # would encode to; NaN and Infinity as the non-JSON words Python writes.
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")

    response = api.post_raw(raw)
    event(f"status {response.status_code}")

    assert 200 <= response.status_code < 500, response.content
    if response.status_code >= 400:
        assert_problem(response)


@PROPERTY_SETTINGS
@given(conversation_id=st.text(), trailing_slash=st.booleans())
@example(conversation_id="", trailing_slash=False)
@example(conversation_id="a/b", trailing_slash=True)
@example(conversation_id="\ud800\x00..", trailing_slash=False)
@example(conversation_id="x" * 100_000, trailing_slash=False)
def test_any_string_as_a_conversation_id_gets_a_2xx_or_a_4xx_never_a_5xx(
    api, conversation_id, trailing_slash
):
    path = "/conversations/" + quote(conversation_id, safe="", errors="surrogatepass")

    response = api.get(path + ("/" if trailing_slash else ""))
    event(f"status {response.status_code}")

    assert 200 <= response.status_code < 500, response.content
    if response.status_code >= 400:
        assert_problem(response)


@pytest.fixture
def conversation():
    for n in range(5):
        message_create(conversation_id="paged", sender="s", message=f"m{n}")


PAGING_VALUES = st.text() | st.integers().map(str) | st.from_regex(r"[0-9]{0,25}", fullmatch=True)


@PROPERTY_SETTINGS
@given(
    params=st.dictionaries(st.sampled_from(["limit", "before", "after"]), PAGING_VALUES),
)
@example(params={"limit": "1000", "before": str(2**63 - 1)})
@example(params={"after": str(2**63)})
@example(params={"limit": "\ud800", "after": "\x00"})
@example(params={"before": "١٢"})
def test_any_paging_parameters_get_a_200_or_a_400(api, conversation, params):
    query = urlencode(params, quote_via=quote, errors="surrogatepass")

    response = api.get(f"/conversations/paged?{query}")
    event(f"status {response.status_code}")

    assert response.status_code in {200, 400}, response.content
    if response.status_code == 400:
        assert_problem(response)
        assert set(response.json()["errors"]) <= {"limit", "before", "after"}
