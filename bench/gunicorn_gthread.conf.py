"""gunicorn settings of the WSGI server the web process ran before live delivery (issue 9).

bench/live.py measures the API under it, in the same run as the Procfile's web
process, as the baseline its targets compare with: ``gunicorn chatproject.wsgi``,
gthread workers, otherwise the settings of gunicorn.conf.py at that time.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads let a worker hold keep-alive connections from chat widgets and wait
# on the database without blocking its other requests.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
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
