"""Read replicas: which database answers a history read, and the Consistency-Token.

Everything goes to the primary (``default``) unless ``replica_read`` sends a
history read to a replica. A replica answers only when it is fresh enough for
the reader, which it has shown before the read's first statement runs:

- a read carrying a Consistency-Token (the primary's WAL position after the
  reader's last write) needs the replica's replay position at or past it;
- a read without one needs the replica's replay lag under
  ``DATABASE_REPLICA_MAX_LAG``.

PostgreSQL replays WAL forward only and, in READ COMMITTED, every statement
takes a new snapshot: a statement that starts after the replica showed a
position sees every commit up to it. So the position is asked in a statement
of its own, and the answer vouches for the reads of the next
``POSITION_SECONDS`` in this process: a read the last answer covers runs its
queries straight away, in autocommit, in as many round trips as on the
primary (no BEGIN, no check, no COMMIT); any other asks again first, one
round trip more. Each replica URL must reach one standby: the answer vouches
for the next reads through the same URL.

A replica that is down, refuses, times out or errs is skipped for
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
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, connections

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
# How long a replica's answer about its position vouches for later reads. Far
# shorter than a replica takes to restart: one that crashed may reopen a little
# behind what it had shown, and by then no answer from before is trusted.
POSITION_SECONDS = 0.01

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


def token_parse(*values: str | None) -> int | None:
    """The WAL position of the newest well-formed token among the values (header, cookie).

    None if there is none: a malformed token is ignored, and the read is then
    judged as one without a token, never refused.
    """
    tokens = [value.strip() for value in values if value]
    positions = [int(token, 16) for token in tokens if _TOKEN.fullmatch(token)]
    return max(positions) if positions else None


def consistency_token(request) -> int | None:
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


@dataclass(frozen=True)
class Position:
    """What a replica said of itself, and when (``time.monotonic()``)."""

    standby: bool
    # Its replay position, in bytes of WAL as a token counts them.
    replayed: int
    # Seconds behind the primary then: 0 with all it has received replayed,
    # else the age of the last commit it replayed; None if it has none yet.
    lag: float | None
    at: float

    def serves(self, token: int | None) -> bool:
        if token is not None and not settings.DATABASE_REPLICA_IGNORE_TOKEN:
            return self.replayed >= token
        # The lag grows by the time since the answer, unless replay went on.
        age = time.monotonic() - self.at
        return self.lag is not None and self.lag + age < settings.DATABASE_REPLICA_MAX_LAG


class _Positions:
    """Each replica's last answer in this process (a dict write is atomic under the GIL)."""

    SQL = (
        "SELECT pg_is_in_recovery(), "
        "COALESCE(pg_last_wal_replay_lsn() - '0/0'::pg_lsn, 0)::bigint, "
        "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
        "ELSE EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp()) END"
    )

    def __init__(self) -> None:
        self._last: dict[str, Position] = {}

    def recent(self, alias: str) -> Position | None:
        position = self._last.get(alias)
        if position is None or time.monotonic() - position.at >= POSITION_SECONDS:
            return None
        return position

    def ask(self, alias: str) -> Position:
        at = time.monotonic()
        with connections[alias].cursor() as cursor:
            cursor.execute(self.SQL)
            standby, replayed, lag = cursor.fetchone()
        position = Position(standby, replayed, None if lag is None else float(lag), at)
        self._last[alias] = position
        return position

    def forget(self, alias: str) -> None:
        self._last.pop(alias, None)


positions = _Positions()


def _fresh(alias: str, token: int | None) -> bool:
    """Whether the replica has everything the reader may have seen, asking it unless just told."""
    position = positions.recent(alias)
    if position is not None and position.standby and position.serves(token):
        return True
    position = positions.ask(alias)
    if not position.standby:
        skips.log(alias, "primary", f"replica {alias} is not a standby; the primary answers")
        return False
    if not position.serves(token):
        skips.log(alias, "behind", f"replica {alias} is behind; the primary answers")
        return False
    return True


def replica_read(read: Callable[[str], T | None], token: int | None) -> T | None:
    """``read(alias)`` on a fresh replica, else on the primary.

    ``read`` takes the database alias it must use. A replica that answers
    None (nothing found) is asked again of the primary, which may already
    hold something the replica has not replayed yet.
    """
    aliases = [alias for alias in replica_aliases() if skips.available(alias)]
    random.shuffle(aliases)
    for alias in aliases:
        try:
            if not _fresh(alias, token):
                continue
            answer = read(alias)
        except DatabaseError as error:
            positions.forget(alias)
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
