"""Django's PostgreSQL backend, with a health check that costs no round trip.

With ``CONN_HEALTH_CHECKS`` on, Django tests a persistent connection before
the first query of every request that reuses it, and Django's test is a
``SELECT 1``: one more round trip to the server per request, a large share
of the database work of a ``304`` (docs/performance.md). This backend tests it the way go-sql-driver's
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

Every statement, COMMIT and ROLLBACK also runs under a deadline on the
client's side (``settings.DB_CLIENT_DEADLINE``, chatproject/postgresql/deadline.py),
so that a server that stops answering altogether costs a request seconds,
not as long as TCP keeps the connection open.
"""

from __future__ import annotations

import select
from contextlib import nullcontext
from typing import Any

from django.conf import settings
from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper
from psycopg.pq import TransactionStatus

from .deadline import watchdog


class DatabaseWrapper(PostgreSQLDatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute_wrappers.append(self._execute_within_deadline)

    def _within_deadline(self):
        # A replica has a shorter one of its own (settings): the primary
        # answers a read that a stuck replica would hold.
        seconds = self.settings_dict.get("CLIENT_DEADLINE", settings.DB_CLIENT_DEADLINE)
        if not seconds or self.connection is None or self.connection.closed:
            return nullcontext()
        return watchdog.deadline(self.connection.fileno(), seconds)

    def _execute_within_deadline(self, execute, sql, params, many, context):
        with self._within_deadline():
            return execute(sql, params, many, context)

    def init_connection_state(self) -> None:
        with self._within_deadline():
            super().init_connection_state()

    def _commit(self) -> None:
        with self._within_deadline():
            return super()._commit()

    def _rollback(self) -> None:
        with self._within_deadline():
            return super()._rollback()

    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed:
            return False
        # After a database error (Django asks again then) or outside an idle
        # session, only the full test can tell.
        if self.errors_occurred or connection.info.transaction_status != TransactionStatus.IDLE:
            with self._within_deadline():
                return super().is_usable()
        # poll(), unlike select(), takes any file descriptor number.
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN)
        if not poller.poll(0):
            return True
        with self._within_deadline():
            return super().is_usable()
