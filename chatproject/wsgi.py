"""The WSGI application: what the Procfile's gunicorn serves (``chatproject.wsgi``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")

application = get_wsgi_application()
