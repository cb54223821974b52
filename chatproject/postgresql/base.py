"""Django's PostgreSQL backend, with a health check that costs no round trip.

With ``CONN_HEALTH_CHECKS`` on, Django tests a persistent connection before
the first query of every request that reuses it, and Django's test is a
``SELECT 1``: one more round trip to the server per request, a third of the
database work of a ``304``. This backend tests it the way go-sql-driver's
connection check does first: between requests a healthy connection has
nothing to read, since the server speaks only when asked. A server that
ended the session (a restart, a crash, ``pg_terminate_backend``, an idle
timeout) sent its last message and closed the socket, which makes the socket
readable. Only then does it run Django's full test, which also copes with
anything else the server may have sent in between.
"""

from __future__ import annotations

import select

import psycopg
from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper


class DatabaseWrapper(PostgreSQLDatabaseWrapper):
    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        try:
            readable, _, _ = select.select([self.connection.fileno()], [], [], 0)
        except (OSError, ValueError, psycopg.Error):
            return False
        return not readable or super().is_usable()
