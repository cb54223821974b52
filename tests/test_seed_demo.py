"""``manage.py seed_demo``: demo conversations, written once however often it runs."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Count, Max
from django.utils import timezone

from conversations.management.commands.seed_demo import DEMO_CONVERSATIONS
from conversations.models import Conversation, Message
from conversations.services import message_create

pytestmark = pytest.mark.django_db

HINT = (
    "Browse them in the admin at /admin/conversations/conversation/ "
    "or through the API at /conversations/demo-support\n"
)


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seeding_writes_each_demo_conversation_in_order(api):
    output = seed()
    history = api.get("/conversations/demo-support").json()

    assert output == (
        "demo-support: 7 messages written\n"
        "demo-team-standup: 6 messages written\n"
        "demo-book-club: 6 messages written\n"
        "demo-long-thread: 240 messages written\n" + HINT
    )
    assert [(m["sender"], m["message"]) for m in history["messages"]] == DEMO_CONVERSATIONS[
        "demo-support"
    ]
    for conversation_id, messages in DEMO_CONVERSATIONS.items():
        stored = Message.objects.filter(conversation_id=conversation_id).order_by("id")
        assert list(stored.values_list("sender", "message")) == messages


def test_seeding_goes_through_the_write_path_so_the_counters_are_true():
    seed()

    for conversation in Conversation.objects.annotate(
        counted=Count("messages"), newest=Max("messages__id")
    ):
        assert conversation.message_count == conversation.counted
        assert conversation.last_message_id == conversation.newest


def test_seeding_again_writes_nothing():
    seed()
    before = list(Message.objects.order_by("id").values_list("id", "conversation_id", "message"))

    output = seed()

    assert output == (
        "demo-support: already there, left as it is\n"
        "demo-team-standup: already there, left as it is\n"
        "demo-book-club: already there, left as it is\n"
        "demo-long-thread: already there, left as it is\n" + HINT
    )
    assert list(Message.objects.order_by("id").values_list("id", "conversation_id", "message")) == (
        before
    )


def test_a_demo_conversation_someone_already_used_is_left_alone():
    message_create(conversation_id="demo-book-club", sender="someone", message="mine")

    output = seed()

    assert "demo-book-club: already there, left as it is\n" in output
    assert list(
        Message.objects.filter(conversation_id="demo-book-club").values_list("sender", "message")
    ) == [("someone", "mine")]
    assert Message.objects.filter(conversation_id="demo-support").count() == 7


def test_seeded_messages_are_spread_over_realistic_times_in_order():
    seed()

    for conversation_id, messages in DEMO_CONVERSATIONS.items():
        times = list(
            Message.objects.filter(conversation_id=conversation_id)
            .order_by("id")
            .values_list("created", flat=True)
        )
        assert len(times) == len(messages)
        assert times == sorted(times) and len(set(times)) == len(times), conversation_id
        assert times[-1] < timezone.now()
        conversation = Conversation.objects.get(pk=conversation_id)
        assert (conversation.first_message_at, conversation.last_message_at) == (
            times[0],
            times[-1],
        )
    support = Message.objects.filter(conversation_id="demo-support").order_by("id")
    minutes = {f"{m.created:%H:%M}" for m in support}
    assert len(minutes) == len(DEMO_CONVERSATIONS["demo-support"])
    book_club = Message.objects.filter(conversation_id="demo-book-club")
    assert len({m.created.date() for m in book_club}) >= 3
