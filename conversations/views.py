from __future__ import annotations

from django.http import Http404
from django.urls import reverse
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from api.parsers import json_object
from chatproject.replicas import consistency_token, remember_writes

from .inputs import message_input, page_request
from .representations import message_representation
from .rules import IDEMPOTENCY_KEY_HEADER
from .schema import conversation_retrieve_schema, message_create_schema, message_retrieve_schema
from .selectors import history_read, link_header, message_read, page_links
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
        response = Response(
            message_representation(message), status=status.HTTP_201_CREATED, headers=headers
        )
        return remember_writes(response)

    @message_retrieve_schema
    def retrieve(self, request: Request, pk: str) -> Response:
        message = message_read(int(pk), token=consistency_token(request))
        if message is None:
            raise Http404
        return Response(message_representation(message))


class ConversationViewSet(viewsets.ViewSet):
    lookup_field = "conversation_id"
    lookup_value_regex = "[^/]+"

    @conversation_retrieve_schema
    def retrieve(self, request: Request, conversation_id: str) -> Response:
        page = page_request(conversation_id, request.query_params)
        read = history_read(
            page,
            if_none_match=request.headers.get("If-None-Match", ""),
            token=consistency_token(request),
        )
        state, messages = read.state, read.messages
        headers = {"ETag": state.etag, "Cache-Control": "no-cache"}
        if messages is None:
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)

        links = page_links(request, page, state, messages)
        if links["previous"] or links["next"]:
            headers["Link"] = link_header(links)
        return Response(
            {"id": page.conversation_id, "messages": messages, **links}, headers=headers
        )
