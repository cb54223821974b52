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

What it cannot see, no more than a query could before its own timeout, is a
server that vanished without closing the socket (a host lost with no reset):
the request that finds it out gets the API's ``503`` and Django drops the
connection.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper
from psycopg.pq import TransactionStatus


class DatabaseWrapper(PostgreSQLDatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed:
            return False
        # After a database error (Django asks again then) or outside an idle
        # session, only the full test can tell.
        if self.errors_occurred or connection.info.transaction_status != TransactionStatus.IDLE:
            return super().is_usable()
        # poll(), unlike select(), takes any file descriptor number.
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN)
        return not poller.poll(0) or super().is_usable()
