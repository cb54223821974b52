"""The admin: a fast, read-only view of stored chats for staff."""

import html
import re
from datetime import datetime

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import admin as chat_admin
from conversations.admin import RECENT_MESSAGES_SHOWN
from conversations.models import Message
from conversations.services import message_create
from tests.conftest import postgresql_only

pytestmark = pytest.mark.django_db

PAGES = [
    "/admin/conversations/conversation/",
    "/admin/conversations/conversation/?q=1234",
    "/admin/conversations/conversation/1234/change/",
    "/admin/conversations/message/",
    "/admin/conversations/message/?q=teapot",
    "/admin/conversations/message/?q=anson",
    "/admin/conversations/message/?conversation__id__exact=1234",
    "/admin/conversations/message/?created__gte=2000-01-01+00%3A00%3A00%2B00%3A00",
]


@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser("staff", password=None)
    client.force_login(user)
    return client


@pytest.fixture
def chat():
    message_create(conversation_id="1234", sender="anson", message="I'm a teapot")
    message_create(conversation_id="1234", sender="bob", message="<script>alert(1)</script>")
    message_create(conversation_id="other", sender="carol", message="elsewhere")


@pytest.mark.parametrize("path", PAGES)
def test_admin_pages_render_for_staff(staff_client, chat, path):
    response = staff_client.get(path)

    assert response.status_code == 200
    assert b"errornote" not in response.content


@pytest.mark.parametrize("path", PAGES)
def test_admin_pages_send_anyone_else_to_the_login_page(client, chat, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_conversation_list_shows_counts_and_is_ordered_by_last_activity(staff_client, chat):
    message_create(conversation_id="quiet", sender="x", message="y")
    message_create(conversation_id="1234", sender="anson", message="latest")

    response = staff_client.get("/admin/conversations/conversation/")

    listed = [row.pk for row in response.context["cl"].result_list]
    assert listed == ["1234", "quiet", "other"]
    assert response.context["cl"].result_list[0].message_count == 3


def test_searching_conversations_finds_by_id(staff_client, chat):
    response = staff_client.get("/admin/conversations/conversation/?q=other")

    assert [row.pk for row in response.context["cl"].result_list] == ["other"]


def test_searching_messages_finds_by_sender_and_text(staff_client, chat):
    by_sender = staff_client.get("/admin/conversations/message/?q=carol")
    by_text = staff_client.get("/admin/conversations/message/?q=teapot")

    assert [m.message for m in by_sender.context["cl"].result_list] == ["elsewhere"]
    assert [m.sender for m in by_text.context["cl"].result_list] == ["anson"]


def test_the_conversation_page_shows_its_latest_messages_newest_last_and_escaped(
    staff_client, chat
):
    content = staff_client.get("/admin/conversations/conversation/1234/change/").content.decode()

    assert content.index("I&#x27;m a teapot") < content.index(
        "&lt;script&gt;alert(1)&lt;/script&gt;"
    )
    assert "<script>alert(1)" not in content
    assert "elsewhere" not in content
    assert "/admin/conversations/message/?conversation__id__exact=1234" in content


def test_the_conversation_page_shows_when_each_message_was_created_to_the_second(
    staff_client, chat
):
    content = staff_client.get("/admin/conversations/conversation/1234/change/").content.decode()
    api = staff_client.get("/conversations/1234").json()["messages"]

    for message in api:
        created = datetime.fromisoformat(message["created"])
        human = f"{created.day} {created:%b %Y, %H:%M:%S} UTC"
        assert f'<time datetime="{message["created"]}">{human}</time>' in content


def test_a_long_conversation_page_shows_a_bounded_number_in_bounded_queries(
    staff_client, django_assert_max_num_queries
):
    for n in range(RECENT_MESSAGES_SHOWN + 30):
        message_create(conversation_id="long", sender="s", message=f"message number {n}")

    with django_assert_max_num_queries(8):
        content = staff_client.get(
            "/admin/conversations/conversation/long/change/"
        ).content.decode()

    shown = [n for n in range(RECENT_MESSAGES_SHOWN + 30) if f"message number {n}<" in content]
    assert shown == list(range(30, RECENT_MESSAGES_SHOWN + 30))


def test_the_message_list_does_not_count_the_whole_table_again(staff_client, chat):
    response = staff_client.get("/admin/conversations/message/?conversation__id__exact=1234")

    assert response.context["cl"].result_count == 2
    assert response.context["cl"].full_result_count is None


@postgresql_only("the estimate comes from PostgreSQL's table statistics")
def test_an_unfiltered_list_of_a_large_table_is_estimated_not_counted(
    staff_client, chat, monkeypatch
):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE conversations_message")
    monkeypatch.setattr(chat_admin, "ESTIMATE_COUNT_ABOVE", 0)

    with CaptureQueriesContext(connection) as captured:
        response = staff_client.get("/admin/conversations/message/")

    assert response.status_code == 200
    assert response.context["cl"].result_count == 3
    assert not [q for q in captured.captured_queries if "COUNT(*)" in q["sql"]]


def test_a_filtered_list_is_counted_exactly(staff_client, chat):
    response = staff_client.get("/admin/conversations/message/?q=elsewhere")

    assert response.context["cl"].result_count == 1


def test_the_message_list_loads_conversations_in_the_same_query(
    staff_client, chat, django_assert_max_num_queries
):
    for n in range(30):
        message_create(conversation_id=f"c{n}", sender="s", message="m")

    with django_assert_max_num_queries(8):
        assert staff_client.get("/admin/conversations/message/").status_code == 200


def test_the_admin_changes_nothing(staff_client, chat):
    message = Message.objects.first()

    assert staff_client.get("/admin/conversations/message/add/").status_code == 403
    assert (
        staff_client.post(f"/admin/conversations/message/{message.pk}/change/", {"sender": "x"})
    ).status_code == 403
    assert (
        staff_client.post(
            f"/admin/conversations/message/{message.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert (
        staff_client.post(
            "/admin/conversations/conversation/1234/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert Message.objects.get(pk=message.pk).sender == message.sender
    assert Message.objects.count() == 3


def test_createsuperuser_makes_an_account_that_can_log_in(client, monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "correct horse battery staple")
    call_command("createsuperuser", "--noinput", "--username=boss", "--email=boss@example.com")

    login = client.post(
        "/admin/login/?next=/admin/",
        {"username": "boss", "password": "correct horse battery staple"},
    )

    assert login.status_code == 302
    assert login["Location"] == "/admin/"
    assert client.get("/admin/conversations/conversation/").status_code == 200


def test_the_link_to_all_messages_works_for_ids_with_reserved_characters(staff_client):
    message_create(conversation_id="team:a+b@x", sender="s", message="found me")
    page = staff_client.get("/admin/conversations/conversation/team:a+b@x/change/")
    link = re.search(r'href="(/admin/conversations/message/\?[^"]+)"', page.content.decode())

    listed = staff_client.get(html.unescape(link.group(1)))

    assert [m.message for m in listed.context["cl"].result_list] == ["found me"]
