"""Read replicas: which database answers a history read, and the Consistency-Token.

Everything goes to the primary (``default``) unless ``replica_read`` sends a
history read to a replica. A replica answers only when it is fresh enough for
the reader, and it proves that in the same transaction that reads the page:

- a read carrying a Consistency-Token (the primary's WAL position after the
  reader's last write) needs ``pg_last_wal_replay_lsn() >= token``;
- a read without one needs the replica's replay lag under
  ``DATABASE_REPLICA_MAX_LAG``.

PostgreSQL replays WAL forward only, so a replica that has replayed past the
token when the transaction starts has the reader's writes for all of it. A
replica that is down, refuses, times out or errs is skipped for
``REPLICA_RETRY_SECONDS`` and the primary answers; each kind of skip is
logged once per ``SKIP_LOG_SECONDS`` per process, not per request.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, connections, transaction

PRIMARY = "default"
REPLICA_PREFIX = "replica"
TOKEN_HEADER = "Consistency-Token"
TOKEN_COOKIE = "consistency_token"
# Long enough to outlive any sane replication lag; after it, a read without a
# token is judged by lag alone, which the write has long passed.
TOKEN_COOKIE_MAX_AGE = 300
# How long a failed replica is left alone before a read tries it again (one
# read per worker process then pays the connect timeout to find out), and how
# often the same complaint about one replica is logged.
REPLICA_RETRY_SECONDS = 1.0
SKIP_LOG_SECONDS = 60.0

# A token is the WAL position as 16 hexadecimal digits: legal as it is in a
# header and a cookie, and clients are told it is opaque.
_TOKEN = re.compile(r"[0-9A-Fa-f]{16}")
# SQLSTATE classes that say the session is gone, not that one query failed:
# connection exceptions (08) and operator intervention (57: shutdown, a
# replica's recovery conflict that ends the session).
_SESSION_LOST = ("08", "57")

logger = logging.getLogger(__name__)
T = TypeVar("T")


class PrimaryRouter:
    """Every model reads and writes the primary; nothing migrates a replica."""

    def db_for_read(self, model, **hints) -> str:
        return PRIMARY

    def db_for_write(self, model, **hints) -> str:
        return PRIMARY

    def allow_migrate(self, db: str, app_label: str, **hints) -> bool:
        return not db.startswith(REPLICA_PREFIX)


def replica_aliases() -> list[str]:
    """The replicas' aliases: settings names them replica1, replica2, ..."""
    return [alias for alias in settings.DATABASES if alias.startswith(REPLICA_PREFIX)]


def replicas_configured() -> bool:
    return bool(settings.DATABASE_REPLICA_URLS)


def token_lsn(token: str) -> str:
    """A token's WAL position in PostgreSQL's text form (``16/B374D848``)."""
    position = int(token, 16)
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def token_parse(*values: str | None) -> str | None:
    """The WAL position of the newest well-formed token among the values (header, cookie).

    None if there is none: a malformed token is ignored, and the read is then
    judged as one without a token, never refused.
    """
    tokens = [value.strip() for value in values if value]
    positions = [int(token, 16) for token in tokens if _TOKEN.fullmatch(token)]
    return token_lsn(f"{max(positions):016X}") if positions else None


def consistency_token(request) -> str | None:
    """The reader's token (header or cookie), when replicas are configured and it is well-formed."""
    if not replicas_configured():
        return None
    return token_parse(request.headers.get(TOKEN_HEADER), request.COOKIES.get(TOKEN_COOKIE))


def remember_writes(response):
    """Give a write's answer the token its client's later reads carry, when replicas are configured.

    The header is for any client (widgets on other origins echo it); the
    cookie is for same-origin browsers, which then send it on every read.
    """
    if replicas_configured():
        token = token_after_commit()
        response[TOKEN_HEADER] = token
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            max_age=TOKEN_COOKIE_MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=settings.HTTPS,
        )
    return response


def token_after_commit() -> str:
    """The primary's WAL insert position now: past the commit of every write acknowledged so far.

    The insert position, not the flushed one: with ``synchronous_commit=off``
    a commit can return before its record is flushed.
    """
    with connections[PRIMARY].cursor() as cursor:
        cursor.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
        return f"{cursor.fetchone()[0]:016X}"


class _Skips:
    """Replicas that failed lately, and when each complaint was last logged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_until: dict[str, float] = {}
        self._logged_at: dict[tuple[str, str], float] = {}

    def available(self, alias: str) -> bool:
        with self._lock:
            return self._down_until.get(alias, 0.0) <= time.monotonic()

    def down(self, alias: str, error: Exception) -> None:
        with self._lock:
            self._down_until[alias] = time.monotonic() + REPLICA_RETRY_SECONDS
        self.log(alias, "down", f"replica {alias} skipped for {REPLICA_RETRY_SECONDS:g} s: {error}")

    def log(self, alias: str, reason: str, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._logged_at.get((alias, reason), -SKIP_LOG_SECONDS) < SKIP_LOG_SECONDS:
                return
            self._logged_at[(alias, reason)] = now
        logger.warning(text)


skips = _Skips()


class _NotFresh(Exception):
    """Raised inside the replica's transaction to end it: the primary answers."""


def _fresh(alias: str, token: str | None) -> bool:
    """Whether the replica has everything the reader may have seen, asked in its transaction."""
    with connections[alias].cursor() as cursor:
        if token is not None and not settings.DATABASE_REPLICA_IGNORE_TOKEN:
            cursor.execute(
                "SELECT pg_is_in_recovery(), "
                "COALESCE(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)",
                [token],
            )
        else:
            # With all it has received replayed, a replica is as fresh as its
            # stream; otherwise its lag is the age of the last commit it replayed.
            cursor.execute(
                "SELECT pg_is_in_recovery(), COALESCE("
                "pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
                "OR now() - pg_last_xact_replay_timestamp() < make_interval(secs => %s), false)",
                [settings.DATABASE_REPLICA_MAX_LAG],
            )
        standby, fresh = cursor.fetchone()
    if not standby:
        skips.log(alias, "primary", f"replica {alias} is not a standby; the primary answers")
        return False
    if not fresh:
        skips.log(alias, "behind", f"replica {alias} is behind; the primary answers")
    return fresh


def replica_read(read: Callable[[str], T | None], token: str | None) -> T | None:
    """``read(alias)`` on a fresh replica, else on the primary.

    ``read`` takes the database alias it must use. A replica that answers
    None (nothing found) is asked again of the primary, which may already
    hold something the replica has not replayed yet.
    """
    aliases = [alias for alias in replica_aliases() if skips.available(alias)]
    random.shuffle(aliases)
    for alias in aliases:
        try:
            with transaction.atomic(using=alias):
                if not _fresh(alias, token):
                    raise _NotFresh
                answer = read(alias)
        except _NotFresh:
            continue
        except DatabaseError as error:
            sqlstate = getattr(error.__cause__, "sqlstate", None)
            if sqlstate is None or sqlstate.startswith(_SESSION_LOST):
                skips.down(alias, error)
                with suppress(DatabaseError):
                    connections[alias].close()
            else:
                skips.log(alias, "error", f"replica {alias} failed a read: {error}")
            continue
        if answer is not None:
            return answer
    return read(PRIMARY)
