"""The ASGI application: live event streams natively, everything else to Django's WSGI app.

A stream is a long-lived async task with no thread of its own
(conversations/events.py); every other request goes to the unchanged WSGI
application through a2wsgi, on a bounded pool of long-lived threads
(``GUNICORN_THREADS``), so each thread keeps its persistent database
connection and connections stay at workers x threads.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")

django_application = get_wsgi_application()

from a2wsgi import WSGIMiddleware  # noqa: E402

from conversations import events  # noqa: E402  (needs the settings loaded above)

wsgi = WSGIMiddleware(django_application, workers=int(os.environ.get("GUNICORN_THREADS", "4")))


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await events.startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await events.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send) -> None:
    if scope["type"] == "http" and events.handles(scope["path"]):
        await events.application(scope, receive, send)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
    else:
        await wsgi(scope, receive, send)
