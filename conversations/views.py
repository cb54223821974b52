from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from api.parsers import json_object

from .inputs import message_input, page_request
from .models import Message
from .representations import message_representation
from .rules import IDEMPOTENCY_KEY_HEADER
from .schema import conversation_retrieve_schema, message_create_schema, message_retrieve_schema
from .selectors import ConversationState, history_page, link_header, page_links
from .services import message_create


class MessageViewSet(viewsets.ViewSet):
    # Longer ids cannot exist (ids are 64-bit) and are a 404 by not matching:
    # Python refuses to convert a string of over 4,300 digits at all.
    lookup_value_regex = "[0-9]{1,19}"

    @message_create_schema
    def create(self, request: Request) -> Response:
        fields = message_input(json_object(request), request.headers.get(IDEMPOTENCY_KEY_HEADER))
        message, replayed = message_create(**fields)
        headers = {
            "Location": request.build_absolute_uri(reverse("message-detail", args=[message.id]))
        }
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(
            message_representation(message), status=status.HTTP_201_CREATED, headers=headers
        )

    @message_retrieve_schema
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(message_representation(get_object_or_404(Message, pk=int(pk))))


class ConversationViewSet(viewsets.ViewSet):
    lookup_field = "conversation_id"
    lookup_value_regex = "[^/]+"

    @conversation_retrieve_schema
    def retrieve(self, request: Request, conversation_id: str) -> Response:
        page = page_request(conversation_id, request.query_params)
        state = ConversationState.load(page.conversation_id)
        headers = {"ETag": state.etag, "Cache-Control": "no-cache"}
        if state.matches(request.headers.get("If-None-Match", "")):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)

        messages = history_page(page, state)
        links = page_links(request, page, state, messages)
        if links["previous"] or links["next"]:
            headers["Link"] = link_header(links)
        return Response(
            {"id": page.conversation_id, "messages": messages, **links}, headers=headers
        )
