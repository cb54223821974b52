"""GET /conversations/<id>: order, paging, links, ETags and query budgets."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.rules import (
    AT_LEAST,
    AT_MOST,
    BEFORE_OR_AFTER,
    CONVERSATION_ID_RULE,
    NOT_AN_INTEGER,
    TOO_LONG,
)
from conversations.services import message_create
from tests.conftest import assert_problem

pytestmark = pytest.mark.django_db


def post_many(conversation_id: str, count: int) -> list[int]:
    return [
        message_create(conversation_id=conversation_id, sender=f"s{n}", message=f"m{n}")[0].id
        for n in range(count)
    ]


def ids(response) -> list[int]:
    return [m["id"] for m in response.json()["messages"]]


def test_history_returns_messages_oldest_first_with_their_fields(api):
    first = api.post(
        {"sender": "anson", "conversation_id": "1234", "message": "I'm a teapot"}
    ).json()
    second = api.post({"sender": "bob", "conversation_id": "1234", "message": "short"}).json()

    response = api.get("/conversations/1234")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "id": "1234",
        "messages": [
            {
                "id": first["id"],
                "sender": "anson",
                "message": "I'm a teapot",
                "created": first["created"],
            },
            {"id": second["id"], "sender": "bob", "message": "short", "created": second["created"]},
        ],
        "previous": None,
        "next": None,
    }


def test_the_trailing_slash_is_optional(api):
    post_many("c", 2)

    assert api.get("/conversations/c/").json() == api.get("/conversations/c").json()


def test_a_well_formed_id_with_no_messages_is_an_empty_conversation(api):
    response = api.get("/conversations/nobody-here")

    assert response.status_code == 200
    assert response.json() == {"id": "nobody-here", "messages": [], "previous": None, "next": None}
    assert "Link" not in response


def test_other_conversations_are_not_mixed_in(api):
    post_many("a", 2)
    mine = post_many("b", 2)
    post_many("a", 2)

    assert ids(api.get("/conversations/b")) == mine


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/conversations/" + "x" * 101, TOO_LONG.format(max_length=100)),
        ("/conversations/a%20b", CONVERSATION_ID_RULE),
        ("/conversations/a%00b", CONVERSATION_ID_RULE),
        ("/conversations/%ED%A0%80", CONVERSATION_ID_RULE),
        ("/conversations/..", CONVERSATION_ID_RULE),
        ("/conversations/.", CONVERSATION_ID_RULE),
        ("/conversations/%C3%A4", CONVERSATION_ID_RULE),
    ],
)
def test_a_malformed_id_is_a_400(api, path, error):
    assert_problem(api.get(path), 400, errors={"conversation_id": [error]})


def test_without_paging_the_newest_100_are_returned(api):
    all_ids = post_many("c", 105)

    response = api.get("/conversations/c")

    assert ids(response) == all_ids[5:]
    assert response.json()["previous"] == f"http://testserver/conversations/c?before={all_ids[5]}"
    assert response.json()["next"] is None


def test_limit_takes_the_newest_messages(api):
    all_ids = post_many("c", 5)

    assert ids(api.get("/conversations/c?limit=2")) == all_ids[3:]


@pytest.mark.parametrize(
    ("bound", "index"),
    [
        # The newest messages older than it.
        ("before", 6),
        # The oldest messages newer than it.
        ("after", 2),
    ],
)
def test_before_and_after_read_the_page_next_to_a_message(api, bound, index):
    all_ids = post_many("c", 10)

    response = api.get(f"/conversations/c?{bound}={all_ids[index]}&limit=3")

    assert ids(response) == all_ids[3:6]
    assert response.json()["previous"] == (
        f"http://testserver/conversations/c?before={all_ids[3]}&limit=3"
    )
    assert (
        response.json()["next"] == f"http://testserver/conversations/c?after={all_ids[5]}&limit=3"
    )


def test_after_zero_reads_from_the_first_message(api):
    all_ids = post_many("c", 5)

    response = api.get("/conversations/c?after=0&limit=2")

    assert ids(response) == all_ids[:2]
    assert response.json()["previous"] is None


def test_before_and_after_need_no_such_message_to_exist(api):
    all_ids = post_many("c", 3)

    assert ids(api.get(f"/conversations/c?before={all_ids[-1] + 1000}")) == all_ids
    assert ids(api.get("/conversations/c?before=0")) == []
    assert ids(api.get(f"/conversations/c?after={all_ids[-1] + 1000}")) == []
    assert ids(api.get(f"/conversations/c?after={2**63 - 1}")) == []


@pytest.mark.parametrize("huge", [str(2**63), "9" * 30, "9" * 5000])
def test_bounds_past_the_largest_possible_id_read_as_the_largest(api, huge):
    all_ids = post_many("c", 3)

    assert ids(api.get(f"/conversations/c?before={huge}")) == all_ids
    assert ids(api.get(f"/conversations/c?after={huge}")) == []


def test_following_next_from_the_start_visits_every_message_once(api):
    all_ids = post_many("c", 7)
    seen, url = [], "/conversations/c?after=0&limit=3"
    while url:
        body = api.get(url).json()
        seen += [m["id"] for m in body["messages"]]
        url = body["next"]

    assert seen == all_ids


def test_following_previous_from_the_newest_page_visits_every_message_once(api):
    all_ids = post_many("c", 7)
    seen, url = [], "/conversations/c?limit=3"
    while url:
        body = api.get(url).json()
        seen = [m["id"] for m in body["messages"]] + seen
        url = body["previous"]

    assert seen == all_ids


def test_an_empty_page_has_no_links(api):
    all_ids = post_many("c", 3)

    response = api.get(f"/conversations/c?after={all_ids[-1]}")

    assert response.json() == {"id": "c", "messages": [], "previous": None, "next": None}
    assert "Link" not in response


def test_links_go_out_as_an_rfc_8288_link_header(api):
    all_ids = post_many("c", 9)

    response = api.get(f"/conversations/c/?after={all_ids[2]}&limit=3")

    assert response["Link"] == (
        f'<http://testserver/conversations/c/?before={all_ids[3]}&limit=3>; rel="prev", '
        f'<http://testserver/conversations/c/?after={all_ids[5]}&limit=3>; rel="next"'
    )


def test_a_single_page_conversation_has_no_link_header(api):
    post_many("c", 3)

    assert "Link" not in api.get("/conversations/c")


@pytest.mark.parametrize(
    "query, field, error",
    [
        ("limit=0", "limit", AT_LEAST.format(min_value=1)),
        ("limit=1001", "limit", AT_MOST.format(max_value=1000)),
        ("limit=-1", "limit", NOT_AN_INTEGER),
        ("limit=abc", "limit", NOT_AN_INTEGER),
        ("limit=", "limit", NOT_AN_INTEGER),
        ("limit=1.0", "limit", NOT_AN_INTEGER),
        ("limit=%2B5", "limit", NOT_AN_INTEGER),
        ("limit=%205", "limit", NOT_AN_INTEGER),
        ("limit=%D9%A3", "limit", NOT_AN_INTEGER),
        ("before=-1", "before", NOT_AN_INTEGER),
        ("before=x", "before", NOT_AN_INTEGER),
        ("before=1e3", "before", NOT_AN_INTEGER),
        ("after=-5", "after", NOT_AN_INTEGER),
        ("limit=" + "9" * 5000, "limit", AT_MOST.format(max_value=1000)),
    ],
)
def test_bad_paging_parameters_are_a_400(api, query, field, error):
    assert_problem(api.get(f"/conversations/c?{query}"), 400, errors={field: [error]})


def test_before_and_after_together_are_a_400(api):
    response = api.get("/conversations/c?before=5&after=1")

    assert_problem(response, 400, errors={"before": [BEFORE_OR_AFTER], "after": [BEFORE_OR_AFTER]})


def test_limits_of_1_and_1000_are_accepted(api):
    all_ids = post_many("c", 2)

    assert ids(api.get("/conversations/c?limit=1")) == all_ids[1:]
    assert ids(api.get("/conversations/c?limit=1000")) == all_ids


def test_every_200_carries_an_etag_and_no_cache(api):
    post_many("c", 1)

    for path in ["/conversations/c", "/conversations/empty"]:
        response = api.get(path)
        assert response["ETag"].startswith('"')
        assert response["Cache-Control"] == "no-cache"


def test_a_matching_if_none_match_is_a_304_with_no_body(api):
    post_many("c", 2)
    etag = api.get("/conversations/c")["ETag"]

    response = api.get("/conversations/c", HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert response["Cache-Control"] == "no-cache"


def test_if_none_match_accepts_a_list_a_weak_tag_and_a_star(api):
    post_many("c", 1)
    etag = api.get("/conversations/c")["ETag"]

    assert api.get("/conversations/c", HTTP_IF_NONE_MATCH=f'"other", W/{etag}').status_code == 304
    assert api.get("/conversations/c", HTTP_IF_NONE_MATCH="*").status_code == 304
    assert api.get("/conversations/c", HTTP_IF_NONE_MATCH='"other"').status_code == 200
    assert api.get("/conversations/c", HTTP_IF_NONE_MATCH="garbage").status_code == 200


def test_the_etag_changes_when_a_message_arrives(api):
    post_many("c", 1)
    etag = api.get("/conversations/c")["ETag"]
    post_many("c", 1)

    response = api.get("/conversations/c", HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 200
    assert response["ETag"] != etag
    assert len(response.json()["messages"]) == 2


def test_an_empty_conversation_gets_a_304_until_its_first_message(api):
    etag = api.get("/conversations/new")["ETag"]
    assert api.get("/conversations/new", HTTP_IF_NONE_MATCH=etag).status_code == 304

    post_many("new", 1)

    assert api.get("/conversations/new", HTTP_IF_NONE_MATCH=etag).status_code == 200


@pytest.mark.parametrize("size", [3, 150])
@pytest.mark.parametrize(
    "query", ["", "?limit=10", "?before={middle}", "?after={middle}", "?after=0&limit=5"]
)
def test_a_page_costs_two_queries_whatever_the_conversation_size(
    api, django_assert_num_queries, size, query
):
    all_ids = post_many("c", size)
    path = "/conversations/c" + query.format(middle=all_ids[size // 2])

    with django_assert_num_queries(2):
        response = api.get(path)

    assert response.status_code == 200


def test_a_304_costs_one_query(api, django_assert_num_queries):
    post_many("c", 3)
    etag = api.get("/conversations/c")["ETag"]

    with django_assert_num_queries(1):
        assert api.get("/conversations/c", HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_an_idle_poll_costs_one_query(api, django_assert_num_queries):
    newest = post_many("c", 3)[-1]

    with django_assert_num_queries(1):
        response = api.get(f"/conversations/c?after={newest}")

    assert response.json()["messages"] == []


def test_an_unknown_conversation_costs_one_query(api, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert api.get("/conversations/unknown").status_code == 200


def test_a_message_costs_one_query_to_fetch(api, django_assert_num_queries):
    message_id = post_many("c", 1)[0]

    with django_assert_num_queries(1):
        assert api.get(f"/messages/{message_id}/").status_code == 200


@pytest.mark.parametrize("existing", [0, 1])
def test_posting_costs_three_statements_in_one_transaction(api, existing):
    post_many("c", existing)

    with CaptureQueriesContext(connection) as captured:
        assert api.post({"sender": "a", "conversation_id": "c", "message": "m"}).status_code == 201

    # Inside the test's own transaction, atomic() opens a savepoint where
    # production opens a transaction.
    statements = [query["sql"].split()[0] for query in captured.captured_queries]
    assert statements == ["SAVEPOINT", "INSERT", "INSERT", "UPDATE", "RELEASE"]


def test_an_unknown_message_is_a_404_problem(api):
    # Ids of more than 19 digits match no route, so the 404 of an unknown address answers.
    for path, detail in [
        ("/messages/123456/", "Not found."),
        (f"/messages/{2**63}/", "Not found."),
        (f"/messages/{10**30}", "There is nothing at this address."),
        ("/messages/" + "1" * 5000 + "/", "There is nothing at this address."),
    ]:
        assert_problem(api.get(path), 404, detail)
