from django.urls import path
from django.views.generic import TemplateView

from conversations import rules

# The page is static: all it knows about a conversation it reads from the API
# in the browser. Its form checks what the API will, with the API's own rules.
FORM_RULES = {
    "conversation_id_max_length": rules.CONVERSATION_ID_MAX_LENGTH,
    "conversation_id_pattern": f"[{rules.CONVERSATION_ID_CHARACTERS}]+",
    "conversation_id_hint": rules.CONVERSATION_ID_HINT,
    "sender_max_length": rules.SENDER_MAX_LENGTH,
}

urlpatterns = [
    path(
        "",
        TemplateView.as_view(template_name="demo/index.html", extra_context=FORM_RULES),
        name="demo",
    ),
]
