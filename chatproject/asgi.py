"""The ASGI application, for an ASGI server; the Procfile serves ``chatproject.wsgi`` instead."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")

application = get_asgi_application()
