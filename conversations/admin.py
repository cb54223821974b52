"""A read-only view of stored chats for support staff, and erasure on request.

Messages are written only through ``services``: the admin shows them and
changes nothing, so counters and ETags stay true. The one thing it can do is
erase a whole conversation (``services.conversation_erase``), behind a
confirmation page, for staff with the ``delete_conversation`` permission.
"""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.core.exceptions import BadRequest, EmptyResultSet, FullResultSet, PermissionDenied
from django.core.paginator import Paginator
from django.db import connection, transaction
from django.db.models import OuterRef, Subquery
from django.db.models.expressions import RawSQL
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import content_disposition_header
from django.utils.text import Truncator

from . import export
from .inputs import PageRequest
from .models import Conversation, Message
from .selectors import page_rows
from .services import conversation_erase

RECENT_MESSAGES_SHOWN = 50
# Around a message linked to from its own page: this many on either side.
CONTEXT_MESSAGES_SHOWN = 25
# Participants are read from a conversation's latest messages, so the list
# costs one short index range per row however long a conversation is.
PARTICIPANTS_FROM_LATEST = 50
PARTICIPANTS_SHOWN = 4
PREVIEW_CHARACTERS = 80
ERASE_PERMISSION = "conversations.delete_conversation"
# The filter the conversation page's link puts on the message list.
CONVERSATION_FILTER = "conversation__id__exact"
# file format: (what writes it, its content type)
EXPORT_FORMATS = {
    "json": (export.as_json, "application/json"),
    "csv": (export.as_csv, "text/csv; charset=utf-8"),
}
# Above this many rows (by PostgreSQL's statistics) an unfiltered changelist
# shows the planner's estimate instead of counting every row.
ESTIMATE_COUNT_ABOVE = 100_000


class LargeTablePaginator(Paginator):
    """Counts a filtered result exactly, but estimates a whole large table.

    ``COUNT(*)`` of a table with millions of messages takes seconds on
    PostgreSQL; ``pg_class.reltuples`` is free and close enough for a page count.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if connection.vendor == "postgresql" and not queryset.query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [queryset.model._meta.db_table],
                )
                estimate = cursor.fetchone()[0]
            if estimate > ESTIMATE_COUNT_ABOVE:
                return estimate
        return super().count


class CheckedChangeList(ChangeList):
    """A changelist whose filters are checked before its page is drawn.

    The admin accepts any lookup on a listed filter's field, and some values
    fail only when the query is compiled, as the page renders: a year past
    9999 (``created__year=99999999999999999999``) cannot become a date.
    Compiling it here turns that into a ``400``.
    """

    def get_queryset(self, request: HttpRequest, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        try:
            queryset.query.get_compiler(queryset.db).as_sql()
        except (EmptyResultSet, FullResultSet):
            pass
        except (OverflowError, ValueError) as error:
            raise BadRequest(f"A filter value is out of range: {error}") from error
        return queryset


def human_time(value: datetime | str | None) -> str:
    """A moment as the admin writes it everywhere (chatproject/formats)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


class NoShowAllChangeList(CheckedChangeList):
    """Django offers "Show all" beside the count even when nothing is filtered
    (it does not count the whole table, so it cannot tell); here it is only
    offered when a search or a filter narrowed the list."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        if not set(self.filter_params) - {ORDER_VAR}:
            self.full_result_count = self.result_count


class ReadOnlyAdmin(admin.ModelAdmin):
    paginator = LargeTablePaginator
    # Changelists count only the filtered result, never the whole table again.
    show_full_result_count = False

    class Media:
        css = {"all": ["conversations/admin.css"]}

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return NoShowAllChangeList

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Erasure has a page of its own (ConversationAdmin.erase_view); Django's
        # delete view would list every message on its confirmation page.
        return False


def _participants_sql() -> RawSQL:
    """The distinct senders among a conversation's latest messages, as a JSON array.

    A correlated subquery, so the changelist reads them in its own query: a
    range of the (conversation, id) index per row.
    """
    messages_table = connection.ops.quote_name(Message._meta.db_table)
    conversations_table = connection.ops.quote_name(Conversation._meta.db_table)
    aggregate = "json_agg" if connection.vendor == "postgresql" else "json_group_array"
    return RawSQL(
        f"(SELECT {aggregate}(DISTINCT latest.sender) FROM ("
        f"SELECT sender FROM {messages_table} m "
        f"WHERE m.conversation_id = {conversations_table}.id "
        "ORDER BY m.id DESC LIMIT %s) latest)",
        [PARTICIPANTS_FROM_LATEST],
    )


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ["id", "participants", "last_message", "message_count", "first", "last"]
    search_fields = ["id__startswith"]
    search_help_text = (
        "Finds conversations by the start of their id (case matters): "
        "“demo” finds demo-support and demo-book-club."
    )
    ordering = ["-last_message_at", "-last_message_id"]
    fields = ["id", "participants", "message_count", "first", "last"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest):
        last = Message.objects.filter(pk=OuterRef("last_message_id"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                participant_list=_participants_sql(),
                last_sender=Subquery(last.values("sender")[:1]),
                last_text=Subquery(last.values("message")[:1]),
            )
        )

    @admin.display(description="Participants")
    def participants(self, conversation: Conversation) -> str:
        senders = conversation.participant_list or []
        if isinstance(senders, str):  # SQLite hands back the JSON as text
            senders = json.loads(senders)
        senders = sorted(senders, key=str.casefold)
        shown = ", ".join(senders[:PARTICIPANTS_SHOWN])
        more = len(senders) - PARTICIPANTS_SHOWN
        return f"{shown} and {more} more" if more > 0 else shown

    @admin.display(description="Last message")
    def last_message(self, conversation: Conversation) -> str:
        if conversation.last_text is None:
            return "-"
        text = Truncator(conversation.last_text).chars(PREVIEW_CHARACTERS)
        return f"{conversation.last_sender}: {text}"

    @admin.display(description="First message at", ordering="first_message_at")
    def first(self, conversation: Conversation) -> str:
        return human_time(conversation.first_message_at)

    @admin.display(description="Last message at", ordering="last_message_at")
    def last(self, conversation: Conversation) -> str:
        return human_time(conversation.last_message_at)

    def get_urls(self) -> list:
        return [
            path(
                "<path:object_id>/export/<str:file_format>/",
                self.admin_site.admin_view(self.export_view),
                name="conversations_conversation_export",
            ),
            path(
                "<path:object_id>/erase/",
                self.admin_site.admin_view(self.erase_view),
                name="conversations_conversation_erase",
            ),
            *super().get_urls(),
        ]

    def _viewable(self, request: HttpRequest, object_id: str) -> Conversation:
        conversation = self.get_object(request, unquote(object_id))
        if conversation is None:
            raise Http404
        if not self.has_view_permission(request, conversation):
            raise PermissionDenied
        return conversation

    def export_view(
        self, request: HttpRequest, object_id: str, file_format: str
    ) -> StreamingHttpResponse:
        """The whole conversation as a file, streamed (conversations.export)."""
        if file_format not in EXPORT_FORMATS:
            raise Http404
        conversation = self._viewable(request, object_id)
        write, content_type = EXPORT_FORMATS[file_format]
        return StreamingHttpResponse(
            write(conversation),
            content_type=content_type,
            headers={
                "Content-Disposition": content_disposition_header(
                    as_attachment=True, filename=f"conversation-{conversation.pk}.{file_format}"
                )
            },
        )

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ERASE_PERMISSION)

    def erase_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A confirmation page (GET), then the erasure, logged in the admin's history (POST)."""
        conversation = self._viewable(request, object_id)
        if not self.has_erase_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            with transaction.atomic():
                LogEntry.objects.log_actions(
                    user_id=request.user.pk,
                    queryset=[conversation],
                    action_flag=DELETION,
                    change_message=(
                        f"Erased the conversation and its {conversation.message_count} messages."
                    ),
                    single_object=True,
                )
                removed = conversation_erase(conversation_id=conversation.pk)
            self.message_user(
                request,
                f"Erased conversation {conversation.pk}: {removed} messages removed.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:conversations_conversation_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Erase conversation {conversation.pk}?",
            "opts": self.opts,
            "original": conversation,
            "participants": self.participants(conversation),
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/conversations/conversation/erase_confirmation.html", context
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        conversation = self.get_object(request, unquote(object_id))
        extra_context = dict(extra_context or {})
        if conversation is not None:
            extra_context.update(self.transcript_context(request, conversation))
            extra_context["downloads"] = [
                (
                    file_format.upper(),
                    reverse(
                        "admin:conversations_conversation_export",
                        args=[quote(conversation.pk), file_format],
                    ),
                )
                for file_format in EXPORT_FORMATS
            ]
            if self.has_erase_permission(request):
                extra_context["erase_url"] = reverse(
                    "admin:conversations_conversation_erase", args=[quote(conversation.pk)]
                )
        return super().change_view(request, object_id, form_url, extra_context)

    def transcript_context(self, request: HttpRequest, conversation: Conversation) -> dict:
        """The latest messages, or those around ``?around=<message id>``, as a chat."""
        newest = conversation.last_message_id or 0
        around = request.GET.get("around", "")
        if around.isdigit() and 0 < int(around) <= newest:
            marked = int(around)
            before = PageRequest(
                conversation.pk, limit=CONTEXT_MESSAGES_SHOWN + 1, before=marked + 1
            )
            after = PageRequest(conversation.pk, limit=CONTEXT_MESSAGES_SHOWN, after=marked)
            rows = page_rows(before, newest=newest) + page_rows(after, newest=newest)
            heading = f"Messages around message {marked}, oldest first"
        else:
            marked = None
            latest = PageRequest(conversation.pk, limit=RECENT_MESSAGES_SHOWN)
            rows = page_rows(latest, newest=newest)
            heading = f"Latest messages (up to {RECENT_MESSAGES_SHOWN}), oldest first"
        all_messages = reverse("admin:conversations_message_changelist")
        return {
            "transcript_heading": heading,
            "showing_around": marked is not None,
            "transcript": [
                {**row, "when": human_time(row["created"]), "marked": row["id"] == marked}
                for row in rows
            ],
            "all_messages_url": (
                f"{all_messages}?{urlencode({CONVERSATION_FILTER: conversation.pk})}"
            ),
        }


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "conversation", "sender", "short_message", "when"]
    list_select_related = ["conversation"]
    search_fields = ["sender", "message"]
    search_help_text = "Finds messages by their sender or by words in their text."
    list_filter = ["created"]
    raw_id_fields = ["conversation"]
    fields = ["conversation", "sender", "message", "when", "in_context"]
    readonly_fields = fields

    def filtered_conversation(self, request: HttpRequest) -> str | None:
        return request.GET.get(CONVERSATION_FILTER) or None

    def get_ordering(self, request: HttpRequest) -> list[str]:
        # One conversation reads as a transcript, oldest first; the whole
        # table starts with what arrived last.
        return ["id"] if self.filtered_conversation(request) else ["-id"]

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        conversation = self.filtered_conversation(request)
        if conversation is not None:
            extra_context = {
                **(extra_context or {}),
                "title": f"Messages in conversation {conversation}, oldest first",
                "subtitle": "Filtered to one conversation",
                "all_messages_url": reverse("admin:conversations_message_changelist"),
            }
        return super().changelist_view(request, extra_context)

    @admin.display(description="Message")
    def short_message(self, message: Message) -> str:
        return Truncator(message.message).chars(PREVIEW_CHARACTERS)

    @admin.display(description="Created", ordering="created")
    def when(self, message: Message) -> str:
        return human_time(message.created)

    @admin.display(description="In its conversation")
    def in_context(self, message: Message) -> str:
        page = reverse(
            "admin:conversations_conversation_change", args=[quote(message.conversation_id)]
        )
        return format_html(
            '<a href="{}?{}#message-{}">See it in conversation {}</a>',
            page,
            urlencode({"around": message.pk}),
            message.pk,
            message.conversation_id,
        )
