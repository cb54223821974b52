"""gunicorn settings for the web process (the Procfile's ``web`` command)."""

import os
import resource

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# uvicorn in each worker (chatproject/server.py): an event loop holds every
# connection, and Django runs in GUNICORN_THREADS threads (chatproject/asgi.py).
worker_class = "chatproject.server.Worker"
# Django's threads per worker, each with its own persistent database
# connection; chatproject/asgi.py sizes its pool from the same variable (gthread
# reads it here, for the benchmark's bare WSGI ceiling).
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Open connections per worker; past it a new connection is answered 503.
worker_connections = int(os.environ.get("WEB_MAX_CONNECTIONS", "4096"))
keepalive = 5
timeout = 30
# On SIGTERM, requests in flight get this long to finish.
graceful_timeout = 20
# The application logs each request as one JSON line on stdout
# (api.requestlog), with its request id: no second, plain access log.
accesslog = None
errorlog = "-"
# gunicorn 27 opens a control socket at one path per user by default, so two
# instances on one machine would take it from each other; nothing here uses it.
control_socket_disable = True

# Each open connection is a file descriptor: allow as many as the hard limit.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard != resource.RLIM_INFINITY and _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
