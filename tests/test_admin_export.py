"""Staff download a whole conversation as JSON or CSV, streamed a batch at a time."""

import html
import json
import re

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext

from conversations import export
from conversations.models import Message
from conversations.representations import render_created
from conversations.services import message_create
from tests.conftest import assert_problem

pytestmark = pytest.mark.django_db

CONVERSATION = "team:ops@home+1_a"
EXPORT_URL = "/admin/conversations/conversation/{}/export/{}/"


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_superuser("staff", password=None))
    return client


@pytest.fixture
def chat() -> list[Message]:
    sent = [
        ("anson", "I'm a teapot"),
        ("bob", 'Quotes "and", commas\nand a second line'),
        ("carol", '=HYPERLINK("http://evil.example")'),
        ("-dash", "-1 from me, ünïcödé ☕"),
    ]
    messages = [
        message_create(conversation_id=CONVERSATION, sender=sender, message=text)[0]
        for sender, text in sent
    ]
    message_create(conversation_id="other", sender="dave", message="elsewhere")
    return messages


def export_links(staff_client) -> dict[str, str]:
    """The download links on the conversation's admin page, by label."""
    page = staff_client.get("/admin/conversations/conversation/").content.decode()
    change_url = html.unescape(
        re.search(r'href="([^"]+/change/)[^"]*">' + re.escape(CONVERSATION), page).group(1)
    )
    content = staff_client.get(change_url).content.decode()
    return {
        label: html.unescape(href)
        for href, label in re.findall(
            r'<a href="([^"]+/export/[^"]+)" download class="download">Download (\w+)</a>',
            content,
        )
    }


def download(staff_client, file_format: str) -> StreamingHttpResponse:
    return staff_client.get(export_links(staff_client)[file_format.upper()])


def downloaded_file(staff_client, file_format: str, content_type: str) -> str:
    """The download's text, once its answer is checked to be a named attachment of this type."""
    response = download(staff_client, file_format)

    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["Content-Disposition"] == (
        f'attachment; filename="conversation-team:ops@home+1_a.{file_format}"'
    )
    return b"".join(response.streaming_content).decode()


def test_the_conversation_page_links_to_both_downloads(staff_client, chat):
    assert export_links(staff_client) == {
        "JSON": "/admin/conversations/conversation/team_3Aops_40home_2B1_5Fa/export/json/",
        "CSV": "/admin/conversations/conversation/team_3Aops_40home_2B1_5Fa/export/csv/",
    }


def test_the_json_download_is_the_whole_conversation_oldest_first(staff_client, chat):
    body = downloaded_file(staff_client, "json", "application/json")
    rows = [
        {"id": m.id, "sender": m.sender, "message": m.message, "created": render_created(m.created)}
        for m in chat
    ]

    assert body == (
        '{"id":"team:ops@home+1_a","messages":[\n'
        + ",\n".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows)
        + "\n]}\n"
    )
    assert json.loads(body) == {"id": CONVERSATION, "messages": rows}


def test_the_csv_download_has_a_header_and_one_row_per_message_safe_for_spreadsheets(
    staff_client, chat
):
    body = downloaded_file(staff_client, "csv", "text/csv; charset=utf-8")
    created = [render_created(m.created) for m in chat]
    ids = [m.id for m in chat]

    assert body == (
        "id,conversation_id,sender,message,created\r\n"
        f"{ids[0]},team:ops@home+1_a,anson,I'm a teapot,{created[0]}\r\n"
        f'{ids[1]},team:ops@home+1_a,bob,"Quotes ""and"", commas\nand a second line",{created[1]}\r\n'
        f'{ids[2]},team:ops@home+1_a,carol,"\'=HYPERLINK(""http://evil.example"")",{created[2]}\r\n'
        f"{ids[3]},team:ops@home+1_a,'-dash,\"'-1 from me, ünïcödé ☕\",{created[3]}\r\n"
    )


# JSON: its opening, a chunk per batch, its closing; CSV: the header, a chunk per batch.
@pytest.mark.parametrize("file_format, chunk_count", [("json", 5), ("csv", 4)])
def test_the_download_is_streamed_in_batches_of_bounded_size(
    staff_client, chat, monkeypatch, file_format, chunk_count
):
    monkeypatch.setattr(export, "EXPORT_BATCH_SIZE", 3)
    for n in range(4):
        message_create(conversation_id=CONVERSATION, sender="s", message=f"more {n}")

    response = download(staff_client, file_format)
    with CaptureQueriesContext(connection) as captured:
        chunks = list(response.streaming_content)

    queries = [q["sql"] for q in captured.captured_queries]
    assert isinstance(response, StreamingHttpResponse)
    assert response.streaming
    assert len(queries) == 3  # 8 messages in batches of 3
    assert all(re.search(r"LIMIT 3\b", sql) for sql in queries), queries
    assert len(chunks) == chunk_count
    assert b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks).count(b"more ") == 4


def test_messages_that_arrive_during_a_download_are_left_out(staff_client, chat):
    response = download(staff_client, "json")
    message_create(conversation_id=CONVERSATION, sender="late", message="too late")

    body = json.loads(b"".join(response.streaming_content))

    assert [m["id"] for m in body["messages"]] == [m.id for m in chat]


@pytest.mark.parametrize("file_format", ["json", "csv"])
def test_anyone_but_staff_is_sent_to_the_login_page(client, chat, file_format):
    response = client.get(EXPORT_URL.format("team_3Aops_40home_2B1_5Fa", file_format))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize(
    "conversation_id, file_format", [("team_3Aops_40home_2B1_5Fa", "xml"), ("nobody", "json")]
)
def test_an_unknown_format_or_conversation_is_a_404(
    staff_client, chat, conversation_id, file_format
):
    response = staff_client.get(EXPORT_URL.format(conversation_id, file_format))

    assert_problem(response, 404, "There is nothing at this address.")


def test_a_download_changes_nothing(staff_client, chat):
    before = list(Message.objects.order_by("id").values())

    b"".join(download(staff_client, "csv").streaming_content)

    assert list(Message.objects.order_by("id").values()) == before


@pytest.mark.parametrize(
    "text",
    [
        " =1+1",
        "\n=1+1",
        "\u00a0=1+1",
        "\ufeff=1+1",
        "  \t\ufeff @SUM(A1)",
        "\u2003+1",
        "\r\n-1",
    ],
)
def test_a_formula_behind_spaces_line_feeds_no_break_spaces_or_a_bom_is_made_safe(text):
    assert export._spreadsheet_safe(text) == "'" + text


@pytest.mark.parametrize("text", ["hello", " hello", "\u00a0a = b", "1+1", "a@b", ""])
def test_text_that_is_not_a_formula_is_left_exactly_as_sent(text):
    assert export._spreadsheet_safe(text) == text
