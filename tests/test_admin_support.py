"""The admin as support staff use it: finding a conversation, reading it, erasing it on request."""

import html
import re
from datetime import datetime

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.db import DatabaseError, connection

from conversations.models import Conversation, Message
from conversations.services import message_create
from tests.test_admin import PAGES

pytestmark = pytest.mark.django_db

CONVERSATIONS = "/admin/conversations/conversation/"
MESSAGES = "/admin/conversations/message/"


def human(moment: datetime) -> str:
    return f"{moment.day} {moment:%b %Y, %H:%M:%S} UTC"


def cell(content: str, field: str) -> list[str]:
    """The text of every cell of one column of a changelist, in order."""
    cells = re.findall(rf'<t[dh] class="field-{field}"[^>]*>(.*?)</t[dh]>', content, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells]


def staff(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    return User.objects.get(pk=user.pk)


SUPPORT = ("view_conversation", "view_message")


@pytest.fixture
def support(client):
    client.force_login(staff("support", *SUPPORT))
    return client


@pytest.fixture
def eraser(client):
    client.force_login(staff("eraser", *SUPPORT, "delete_conversation"))
    return client


@pytest.fixture
def chats():
    for sender, text in [("ada", "hello"), ("grace", "hi ada"), ("ada", "x" * 200)]:
        message_create(conversation_id="1234", sender=sender, message=text)
    message_create(conversation_id="12-b", sender="linus", message="other one")
    message_create(conversation_id="other", sender="carol", message="elsewhere")


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_staff_who_may_only_view(support, chats, path):
    response = support.get(path)

    assert response.status_code == 200
    assert b"errornote" not in response.content


def test_the_conversation_list_shows_participants_and_the_last_message(support, chats):
    for n in range(6):
        message_create(conversation_id="crowd", sender=f"person {n}", message=f"hi {n}")

    content = support.get(CONVERSATIONS).content.decode()

    assert cell(content, "id") == ["crowd", "other", "12-b", "1234"]
    assert cell(content, "participants") == [
        "person 0, person 1, person 2, person 3 and 2 more",
        "carol",
        "linus",
        "ada, grace",
    ]
    assert cell(content, "last_message") == [
        "person 5: hi 5",
        "carol: elsewhere",
        "linus: other one",
        "ada: " + "x" * 79 + "…",
    ]
    last = Conversation.objects.get(pk="1234")
    assert cell(content, "first")[-1] == human(last.first_message_at)
    assert cell(content, "last")[-1] == human(last.last_message_at)


def test_the_conversation_list_reads_participants_in_its_own_queries(
    support, chats, django_assert_max_num_queries
):
    for n in range(40):
        for sender in ("a", "b"):
            message_create(conversation_id=f"c{n}", sender=sender, message="m")

    with django_assert_max_num_queries(8):
        content = support.get(CONVERSATIONS).content.decode()

    assert cell(content, "participants").count("a, b") == 40


def test_conversations_are_found_by_the_start_of_their_id_and_the_page_says_so(support, chats):
    content = support.get(CONVERSATIONS, {"q": "12"}).content.decode()

    assert sorted(cell(content, "id")) == ["12-b", "1234"]
    assert "Finds conversations by the start of their id (case matters)" in content
    assert cell(support.get(CONVERSATIONS, {"q": "34"}).content.decode(), "id") == []


def test_show_all_is_offered_only_when_the_list_is_narrowed(support, chats):
    unfiltered = support.get(CONVERSATIONS).content.decode()
    searched = support.get(CONVERSATIONS, {"q": "12"}).content.decode()

    assert "Show all" not in unfiltered
    assert "Show all" in searched


def test_read_only_pages_have_no_history_button(support, chats):
    message = Message.objects.first()

    for page in (f"{CONVERSATIONS}1234/change/", f"{MESSAGES}{message.pk}/change/"):
        content = support.get(page).content.decode()
        assert "historylink" not in content and ">History<" not in content


def test_the_conversation_page_is_a_transcript_with_download_buttons(support, chats):
    content = support.get(f"{CONVERSATIONS}1234/change/").content.decode()

    transcript = re.findall(
        r'<li id="message-(\d+)">\s*<p class="chat-meta"><strong>(.*?)</strong>\s*'
        r'<time datetime="([^"]+)">([^<]+)</time>.*?<p class="chat-text">(.*?)</p>',
        content,
        re.S,
    )
    stored = Message.objects.filter(conversation_id="1234").order_by("id")
    assert [
        (int(i), s, human(datetime.fromisoformat(c)), w, t) for i, s, c, w, t in transcript
    ] == [(m.pk, m.sender, human(m.created), human(m.created), m.message) for m in stored]
    assert re.findall(r'class="download">(Download \w+)</a>', content) == [
        "Download JSON",
        "Download CSV",
    ]


def test_the_full_message_list_of_a_conversation_is_oldest_first_and_says_it_is_filtered(
    support, chats
):
    content = support.get(MESSAGES, {"conversation__id__exact": "1234"}).content.decode()

    assert cell(content, "short_message") == ["hello", "hi ada", "x" * 79 + "…"]
    assert "<h1>Messages in conversation 1234, oldest first</h1>" in content
    assert "Filtered to one conversation" in content
    unfiltered = support.get(MESSAGES).content.decode()
    assert cell(unfiltered, "short_message")[0] == "elsewhere"


def test_a_message_page_links_to_the_message_in_its_conversation(support):
    for n in range(80):
        message_create(conversation_id="long", sender="s", message=f"number {n}")
    early = Message.objects.get(message="number 5")

    page = support.get(f"{MESSAGES}{early.pk}/change/").content.decode()
    link = html.unescape(re.search(r'href="([^"]+)">See it in conversation long<', page).group(1))
    assert link == f"{CONVERSATIONS}long/change/?around={early.pk}#message-{early.pk}"
    in_context = support.get(link.split("#")[0]).content.decode()

    assert f'<li id="message-{early.pk}" class="marked" aria-current="true">' in in_context
    shown = [int(n) for n in re.findall(r"number (\d+)</p>", in_context)]
    assert shown == list(range(0, 31))
    assert f"Messages around message {early.pk}, oldest first" in in_context


def test_ordinary_staff_cannot_erase_and_are_not_offered_to(support, chats):
    page = support.get(f"{CONVERSATIONS}1234/change/").content.decode()

    assert "Erase" not in page
    assert support.get(f"{CONVERSATIONS}1234/erase/").status_code == 403
    assert support.post(f"{CONVERSATIONS}1234/erase/").status_code == 403
    assert Message.objects.filter(conversation_id="1234").count() == 3


def test_erasing_asks_first_then_removes_the_messages_and_counters_and_logs_it(eraser, chats, api):
    page = eraser.get(f"{CONVERSATIONS}1234/change/").content.decode()
    assert f'href="{CONVERSATIONS}1234/erase/" class="erase">Erase…</a>' in page

    confirmation = eraser.get(f"{CONVERSATIONS}1234/erase/")
    assert confirmation.status_code == 200
    assert "all\n3 of its messages" in confirmation.content.decode()
    assert Message.objects.filter(conversation_id="1234").count() == 3

    erased = eraser.post(f"{CONVERSATIONS}1234/erase/")

    assert erased.status_code == 302 and erased["Location"] == CONVERSATIONS
    assert not Message.objects.filter(conversation_id="1234").exists()
    assert not Conversation.objects.filter(pk="1234").exists()
    assert Message.objects.count() == 2
    entry = LogEntry.objects.get()
    assert (entry.user.username, entry.object_id, entry.action_flag, entry.change_message) == (
        "eraser",
        "1234",
        DELETION,
        "Erased the conversation and its 3 messages.",
    )
    assert (
        "Erased conversation 1234: 3 messages removed."
        in eraser.get(CONVERSATIONS).content.decode()
    )
    answer = api.get("/conversations/1234")
    assert answer.status_code == 200
    assert answer.json() == {"id": "1234", "messages": [], "previous": None, "next": None}


def test_the_eraser_can_still_change_nothing_else(eraser, chats):
    message = Message.objects.first()

    assert eraser.post(f"{CONVERSATIONS}1234/delete/", {"post": "yes"}).status_code == 403
    assert eraser.post(f"{MESSAGES}{message.pk}/delete/", {"post": "yes"}).status_code == 403
    assert eraser.post(f"{MESSAGES}{message.pk}/change/", {"sender": "x"}).status_code == 403
    assert Message.objects.count() == 5


@pytest.fixture
def conversation_deletes_refused():
    """A trigger that fails the last statement of an erasure, as a dying database would."""
    table = Conversation._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER refuse BEFORE DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER refuse BEFORE DELETE ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )


def test_an_erasure_that_fails_part_way_removes_nothing(
    eraser, chats, conversation_deletes_refused
):
    with pytest.raises(DatabaseError):
        eraser.post(f"{CONVERSATIONS}1234/erase/")

    assert Message.objects.filter(conversation_id="1234").count() == 3
    assert Conversation.objects.get(pk="1234").message_count == 3
    assert not LogEntry.objects.exists()
