from rest_framework.routers import SimpleRouter

from .views import ConversationViewSet, MessageViewSet


def routes(*, trailing_slash: bool, suffix: str = "") -> list:
    router = SimpleRouter(trailing_slash=trailing_slash)
    router.register("messages", MessageViewSet, basename=f"message{suffix}")
    router.register("conversations", ConversationViewSet, basename=f"conversation{suffix}")
    return router.urls


# Chat widgets post to ``/messages`` as often as to ``/messages/``, and a
# redirect would turn their POST into a GET: both spellings are served. The
# canonical names (``message-detail``, ...) reverse to the slashed form.
urlpatterns = routes(trailing_slash=True) + routes(trailing_slash=False, suffix="-no-slash")
