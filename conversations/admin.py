"""A read-only view of stored chats for staff.

Messages are written only through ``services.message_create``; the admin
shows them and changes nothing, so counters and ETags stay true.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import BadRequest, EmptyResultSet, FullResultSet, PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.http import Http404, HttpRequest, StreamingHttpResponse
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.http import content_disposition_header
from django.utils.text import Truncator

from . import export
from .inputs import PageRequest
from .models import Conversation, Message
from .selectors import page_rows

RECENT_MESSAGES_SHOWN = 50
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


class ReadOnlyAdmin(admin.ModelAdmin):
    paginator = LargeTablePaginator
    # Changelists count only the filtered result, never the whole table again.
    show_full_result_count = False

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return CheckedChangeList

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ["id", "message_count", "first_message_at", "last_message_at"]
    search_fields = ["=id"]
    ordering = ["-last_message_at", "-last_message_id"]
    fields = [
        "id",
        "message_count",
        "first_message_at",
        "last_message_at",
        "download",
        "recent_messages",
    ]
    readonly_fields = fields

    def get_urls(self) -> list:
        export_view = self.admin_site.admin_view(self.export_view)
        return [
            path(
                "<path:object_id>/export/<str:file_format>/",
                export_view,
                name="conversations_conversation_export",
            ),
            *super().get_urls(),
        ]

    def export_view(
        self, request: HttpRequest, object_id: str, file_format: str
    ) -> StreamingHttpResponse:
        """The whole conversation as a file, streamed (conversations.export)."""
        if file_format not in EXPORT_FORMATS:
            raise Http404
        conversation = self.get_object(request, unquote(object_id))
        if conversation is None:
            raise Http404
        if not self.has_view_permission(request, conversation):
            raise PermissionDenied
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

    @admin.display(description="Download all messages")
    def download(self, conversation: Conversation) -> str:
        return format_html_join(
            " ",
            '<a href="{}" download>{}</a>',
            (
                (
                    reverse(
                        "admin:conversations_conversation_export",
                        args=[quote(conversation.pk), file_format],
                    ),
                    file_format.upper(),
                )
                for file_format in EXPORT_FORMATS
            ),
        )

    @admin.display(description=f"Latest messages (up to {RECENT_MESSAGES_SHOWN}, newest last)")
    def recent_messages(self, conversation: Conversation) -> str:
        recent = page_rows(
            PageRequest(conversation.id, limit=RECENT_MESSAGES_SHOWN),
            newest=conversation.last_message_id or 0,
        )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((row["created"], row["sender"], row["message"]) for row in recent),
        )
        all_messages = reverse("admin:conversations_message_changelist")
        return format_html(
            "<table><thead><tr><th>Created</th><th>Sender</th><th>Message</th></tr></thead>"
            "<tbody>{}</tbody></table>"
            '<p><a href="{}?{}">All {} messages in this conversation</a></p>',
            rows,
            all_messages,
            urlencode({"conversation__id__exact": conversation.id}),
            conversation.message_count,
        )


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "conversation", "sender", "short_message", "created"]
    list_select_related = ["conversation"]
    search_fields = ["sender", "message"]
    list_filter = ["created"]
    raw_id_fields = ["conversation"]
    ordering = ["-id"]

    @admin.display(description="Message")
    def short_message(self, message: Message) -> str:
        return Truncator(message.message).chars(80)
