"""``python manage.py seed_demo``: a few realistic conversations to try the admin and the API on.

Safe to rerun: a demo conversation that already exists is left exactly as
it is, and each one is written in one transaction, so a rerun never doubles
a message and an interrupted run leaves no half-written conversation.
Messages go through ``services.message_create``, the one write path.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation
from conversations.services import message_create

LONG_THREAD_LENGTH = 240

DEMO_CONVERSATIONS: dict[str, list[tuple[str, str]]] = {
    "demo-support": [
        ("maria", "Hi! My order #4821 says delivered but nothing arrived."),
        ("sam (support)", "Sorry to hear that, Maria. Let me look it up."),
        ("sam (support)", "The courier left it at the reception of your building at 14:02."),
        ("maria", "Oh, we have a reception? I never knew. Checking now…"),
        ("maria", "Found it! Thank you so much 🙏"),
        ("sam (support)", "Glad it turned up. Anything else I can help with?"),
        ("maria", "No, that's all. Have a nice day!"),
    ],
    "demo-team-standup": [
        ("ada", "Morning all. Yesterday: finished the export. Today: docs. No blockers."),
        ("grace", "Yesterday: fixed the flaky test (it was the clock). Today: review Ada's PR."),
        ("linus", "Blocked on the staging database: it's out of disk."),
        ("ada", "I can free some space after standup, ping me."),
        ("grace", "Reminder: retro at 15:00, bring one thing to keep and one to change."),
        ("linus", "Disk is fine now, thanks Ada 👍"),
    ],
    "demo-book-club": [
        ("noor", "Chapter 3 of *The Dispossessed*: Shevek arrives on Urras. Thoughts?"),
        ("tom", "The contrast with Anarres is so sharp. Everything is *owned* there."),
        ("noor", "And yet he's drawn to it at first. I liked that it isn't black and white."),
        ("priya", "Late to the party — still on chapter 2, no spoilers please!"),
        ("tom", "🤐"),
        ("noor", "Next meeting Thursday 19:00, same place. Chapters 4–6."),
    ],
    # Long enough to page through (the API's default page is 100 messages)
    # and to see the admin show only the latest 50.
    "demo-long-thread": [
        (
            ("kim", "lee")[n % 2],
            f"Counting to {LONG_THREAD_LENGTH} together: {n + 1}",
        )
        for n in range(LONG_THREAD_LENGTH)
    ],
}


# When each conversation began, counted back from the seeding, and the
# minutes from each message to the next: a support chat of yesterday, this
# morning's standup, a book club over three evenings, a long thread over a day.
# The book club's evenings are more than a day apart, so they fall on three
# dates whatever the hour of the seeding.
TIMELINE: dict[str, tuple[timedelta, list[int]]] = {
    "demo-support": (timedelta(days=1, hours=3), [2, 4, 3, 1, 6, 2]),
    "demo-team-standup": (timedelta(hours=5, minutes=20), [1, 1, 2, 1, 95]),
    "demo-book-club": (timedelta(days=3, hours=2), [14, 22, 60 * 24 + 5, 3, 60 * 24 + 20]),
    "demo-long-thread": (
        timedelta(days=1, hours=4),
        [(7 * n) % 11 + 1 for n in range(LONG_THREAD_LENGTH - 1)],
    ),
}


def demo_times(conversation_id: str, now: datetime) -> list[datetime]:
    started_ago, gaps = TIMELINE[conversation_id]
    times = [now - started_ago]
    for minutes in gaps:
        times.append(times[-1] + timedelta(minutes=minutes, seconds=minutes * 7 % 50))
    return times


class Command(BaseCommand):
    help = "Fill the database with a few demo conversations; ones already there are left alone."

    def handle(self, *args, **options) -> None:
        for conversation_id, messages in DEMO_CONVERSATIONS.items():
            if Conversation.objects.filter(pk=conversation_id).exists():
                self.stdout.write(f"{conversation_id}: already there, left as it is")
                continue
            times = demo_times(conversation_id, timezone.now())
            with transaction.atomic():
                for (sender, text), created in zip(messages, times, strict=True):
                    message_create(
                        conversation_id=conversation_id,
                        sender=sender,
                        message=text,
                        created=created,
                    )
            self.stdout.write(f"{conversation_id}: {len(messages)} messages written")
        self.stdout.write(
            "Browse them in the admin at /admin/conversations/conversation/ "
            "or through the API at /conversations/demo-support"
        )
