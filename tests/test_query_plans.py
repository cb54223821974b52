"""On PostgreSQL, a page is one index range scan whatever the conversation's length."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection

from conversations.admin import PARTICIPANTS_FROM_LATEST
from conversations.inputs import PageRequest
from conversations.models import Conversation
from conversations.selectors import ConversationState, page_sql
from tests.conftest import postgresql_only

pytestmark = [
    postgresql_only("the plans are PostgreSQL's"),
    pytest.mark.django_db,
]

BIG = 20_000
SMALL_CONVERSATIONS = 500
SMALL_EACH = 20


@pytest.fixture
def messages():
    """One long conversation and many short ones whose ids interleave after it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO conversations_conversation (id, message_count) "
            "SELECT 'small-' || c, 0 FROM generate_series(1, %s) c "
            "UNION ALL SELECT 'big', 0",
            [SMALL_CONVERSATIONS],
        )
        cursor.execute(
            "INSERT INTO conversations_message (conversation_id, sender, message, created) "
            "SELECT 'big', 's', 'm' || n, now() FROM generate_series(1, %s) n",
            [BIG],
        )
        cursor.execute(
            "INSERT INTO conversations_message (conversation_id, sender, message, created) "
            "SELECT 'small-' || c, 's', 'm' || n, now() "
            "FROM generate_series(1, %s) n, generate_series(1, %s) c ORDER BY n, c",
            [SMALL_EACH, SMALL_CONVERSATIONS],
        )
        cursor.execute(
            "UPDATE conversations_conversation c SET message_count = s.n, "
            "first_message_id = s.lo, last_message_id = s.hi "
            "FROM (SELECT conversation_id, count(*) n, min(id) lo, max(id) hi "
            "FROM conversations_message GROUP BY conversation_id) s WHERE c.id = s.conversation_id"
        )
        cursor.execute("ANALYZE conversations_message")
        cursor.execute("ANALYZE conversations_conversation")


def plan_nodes(plan: dict) -> list[dict]:
    return [plan] + [node for child in plan.get("Plans", []) for node in plan_nodes(child)]


def explain(conversation_id: str, **paging) -> list[dict]:
    state = ConversationState.load(conversation_id)
    middle = (state.first_message_id + state.last_message_id) // 2
    paging = {k: middle if v == "middle" else v for k, v in paging.items()}
    sql, params = page_sql(
        PageRequest(conversation_id, limit=100, **paging), newest=state.last_message_id
    )
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
        (explained,) = cursor.fetchone()  # psycopg reads the json column already
    return plan_nodes(explained[0]["Plan"])


@pytest.mark.parametrize("conversation_id", ["big", "small-7"])
@pytest.mark.parametrize(
    "paging", [{}, {"before": "middle"}, {"after": "middle"}, {"after": 0}], ids=str
)
def test_a_page_is_an_index_range_scan_and_never_a_sort(messages, conversation_id, paging):
    nodes = explain(conversation_id, **paging)

    assert not [node for node in nodes if "Sort" in node["Node Type"]]
    scans = [node for node in nodes if node.get("Relation Name") == "conversations_message"]
    assert len(scans) == 1
    scan = scans[0]
    assert scan["Node Type"] in {"Index Scan", "Index Only Scan"}
    assert "id" in scan["Index Cond"]
    # The scan stops at the page: it reads about a page of rows, not the conversation.
    assert scan["Actual Rows"] <= 100
    assert scan.get("Rows Removed by Filter", 0) <= 100 * 2


def test_the_admin_conversation_list_reads_a_few_rows_of_each_conversation(messages, rf):
    """Participants and the last message come from index ranges of their own
    conversation, and the id prefix search uses the id's pattern index."""
    model_admin = admin.site._registry[Conversation]
    request = rf.get("/admin/conversations/conversation/", {"q": "big"})
    request.user = User(is_superuser=True, is_staff=True)
    listed, _ = model_admin.get_search_results(request, model_admin.get_queryset(request), "b")
    sql, params = listed.order_by(*model_admin.ordering)[:100].query.sql_with_params()

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
        (explained,) = cursor.fetchone()
    nodes = plan_nodes(explained[0]["Plan"])

    scans = {node["Relation Name"]: node for node in nodes if "Relation Name" in node}
    assert set(scans) == {"conversations_conversation", "conversations_message"}
    for node in nodes:
        if node.get("Relation Name") == "conversations_message":
            assert node["Node Type"] in {"Index Scan", "Index Only Scan"}
            assert node["Actual Rows"] <= PARTICIPANTS_FROM_LATEST
    assert "Seq Scan" not in {n["Node Type"] for n in nodes if n.get("Relation Name")}
