"""The hub: one per process, it tells each open event stream of its conversation's new messages.

On PostgreSQL it holds one ``LISTEN`` connection (``DATABASE_DIRECT_URL``, else
``DATABASE_URL``) and a pool of at most two connections for the catch-up
queries, however many streams are open; on SQLite, which has no NOTIFY, it
polls about every 0.5 s. Either way a wake-up of a conversation costs one
query, the history page's own (conversations/selectors.py), that serves all the
conversation's streams in this process: it reads from the lowest last id among
them, and each stream takes only the ids above the last it was given. An idle
stream holds no connection, no thread and no query.

Ordering, which is what makes delivery gapless:

- a stream subscribes before its own first query, and that query runs only
  once the LISTEN connection has been live, so a message committed after the
  query is announced to a subscribed stream;
- a stream that is still running its first query when its conversation wakes
  is marked, and wakes the conversation again once it is ready;
- when the LISTEN connection drops, it is reconnected with backoff and every
  conversation with open streams is woken, so each catches up from its last id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool
from django.conf import settings
from django.db import connection as django_connection
from psycopg.conninfo import make_conninfo

from .inputs import PageRequest
from .rules import (
    EVENTS_APPLICATION_NAME,
    EVENTS_LISTEN_APPLICATION_NAME,
    EVENTS_POOL_MAX_CONNECTIONS,
    MAX_MESSAGE_ID,
    PAGE_LIMIT_MAX,
)
from .selectors import later_count_sql, page_cut, page_messages, page_sql
from .services import EVENTS_CHANNEL

logger = logging.getLogger(__name__)

# Seconds between attempts to reach the database again, the last one repeated.
BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
SQLITE_POLL_SECONDS = 0.5
# How long a query waits for one of the pool's connections. Streams opening
# in a burst (every client of a restarted instance reconnecting) queue for
# them; a 503 would make EventSource give up for good, so the wait is long.
POOL_WAIT_SECONDS = 10.0
# A stream whose client reads slower than messages arrive is disconnected
# (it resumes with Last-Event-ID) once this much waits for it while a send to
# it is blocked, beyond what the server's socket buffers hold.
STREAM_BUFFER_BYTES = 256 * 1024
# A wake-up with more to read than one page reads the next once its streams
# have sent the last, waiting this long at most: a client that takes longer
# to read a page is the slow one the buffer limit disconnects.
DRAIN_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.01


def page(conversation_id: str, *, after: int | None, limit: int) -> PageRequest:
    """The history page a wake-up reads: the oldest ``limit`` after ``after``, else the newest.

    Read with the API's own page query (conversations/selectors.py), bounded
    by the largest id since a stream has no counters to bound it by.
    """
    return PageRequest(conversation_id, limit=limit, after=after)


@dataclass(frozen=True)
class Fetched:
    """A page read for the streams: its messages, oldest first."""

    rows: list[dict]
    # It stopped at PAGE_MAX_BYTES: more may come after its last message.
    cut: bool


class StoreUnavailable(Exception):
    """The database did not answer a stream's or a wake-up's query."""


@dataclass(eq=False)
class Stream:
    """One open event stream: what it has been given and what waits to be sent."""

    conversation_id: str
    # The newest message id handed to this stream (sent or waiting).
    last_id: int = 0
    # Set once the stream's own first query is done: from then on the hub
    # hands it every message above last_id.
    ready: bool = False
    missed: bool = False
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Why the stream is ending: "disconnected", "overflow", "shutdown", "unavailable".
    closed: str | None = None
    task: asyncio.Task | None = None
    sending: bool = False

    def deliver(self, events: list[tuple[int, bytes]]) -> None:
        for message_id, event in events:
            if message_id > self.last_id:
                self.pending.append(event)
                self.pending_bytes += len(event)
                self.last_id = message_id
        # Only while its last send waits on the client: a burst handed to a
        # stream that is free to send is taken at once, however large.
        if self.sending and self.pending_bytes > STREAM_BUFFER_BYTES:
            self.close("overflow")
        self.wake.set()

    def take(self) -> bytes:
        chunk = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        return chunk

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
        self.wake.set()
        # A send blocked on a client that stopped reading would never return.
        if self.sending and self.task is not None and reason != "disconnected":
            self.task.cancel()


class PostgresStore:
    """LISTEN on a direct connection; catch-up queries on a small pool."""

    def __init__(self, on_notify: Callable[[str], None], on_reconnect: Callable[[], None]):
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect
        self.live = asyncio.Event()
        database = settings.DATABASES["default"]
        direct = database
        if settings.DATABASE_DIRECT_URL:
            import dj_database_url

            direct = dj_database_url.parse(settings.DATABASE_DIRECT_URL)
        # The API's connect timeout and server-side timeouts, for both.
        options = database.get("OPTIONS", {})
        # Named apart: it is a direct connection, outside any pooler's count
        # (bench/scale.py tells it from the pooled ones by this name).
        self.listen_conninfo = conninfo(direct, options, EVENTS_LISTEN_APPLICATION_NAME)
        self.pool = psycopg_pool.AsyncConnectionPool(
            conninfo(database, options),
            min_size=1,
            max_size=EVENTS_POOL_MAX_CONNECTIONS,
            # As the API's connections: behind a transaction-pooling PgBouncer
            # older than 1.21 (DATABASE_PREPARED_STATEMENTS=0) a statement
            # prepared on one server connection is unknown on the next.
            kwargs={"autocommit": True, "prepare_threshold": options.get("prepare_threshold", 5)},
            open=False,
        )
        self.listener: asyncio.Task | None = None

    async def start(self) -> None:
        await self.pool.open(wait=False)
        self.listener = asyncio.create_task(self._listen_forever(), name="events LISTEN")

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            await asyncio.gather(self.listener, return_exceptions=True)
        await self.pool.close(timeout=1)

    async def _listen_forever(self) -> None:
        attempt = 0
        dropped = False
        while True:
            try:
                listener = await psycopg.AsyncConnection.connect(
                    self.listen_conninfo, autocommit=True
                )
                async with listener:
                    await listener.execute(f"LISTEN {EVENTS_CHANNEL}")
                    attempt = 0
                    self.live.set()
                    if dropped:
                        logger.info("Live events: LISTEN connection restored")
                        self.on_reconnect()
                    async for notify in listener.notifies():
                        self.on_notify(notify.payload.partition(" ")[0])
            except psycopg.Error as error:
                if not dropped or attempt == 0:
                    logger.warning("Live events: LISTEN connection lost (%s); retrying", error)
            dropped = True
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1

    async def query(self, sql: str, params: list) -> list[tuple]:
        try:
            async with self.pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchall()
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            raise StoreUnavailable(str(error)) from error


class SqliteStore:
    """No NOTIFY: wake every conversation with open streams about every 0.5 s."""

    def __init__(self, on_notify: Callable[[str], None], on_poll: Callable[[], None]):
        self.on_poll = on_poll
        self.live = asyncio.Event()
        self.poller: asyncio.Task | None = None

    async def start(self) -> None:
        self.live.set()
        self.poller = asyncio.create_task(self._poll_forever(), name="events poll")

    async def stop(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            await asyncio.gather(self.poller, return_exceptions=True)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(SQLITE_POLL_SECONDS)
            self.on_poll()

    async def query(self, sql: str, params: list) -> list[tuple]:
        try:
            return await asyncio.to_thread(self._query, sql, params)
        except Exception as error:  # sqlite3's and Django's errors alike
            raise StoreUnavailable(str(error)) from error

    @staticmethod
    def _query(sql: str, params: list) -> list[tuple]:
        # A development convenience: Django's own SQLite connection, in a
        # short-lived worker thread, closed at once so that none is left open.
        try:
            with django_connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            django_connection.close()


async def sent(streams: list[Stream], timeout: float) -> None:
    """Wait until every open one of ``streams`` has sent what it was given, or ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while any(stream.closed is None and (stream.sending or stream.pending) for stream in streams):
        if asyncio.get_running_loop().time() >= deadline:
            return
        await asyncio.sleep(DRAIN_POLL_SECONDS)


def conninfo(
    database: dict[str, Any], options: dict[str, Any], name: str = EVENTS_APPLICATION_NAME
) -> str:
    """A psycopg connection string from a Django DATABASES entry and the API's OPTIONS."""
    return make_conninfo(
        "",
        connect_timeout=options.get("connect_timeout"),
        options=options.get("options"),
        dbname=database["NAME"],
        user=database.get("USER") or None,
        password=database.get("PASSWORD") or None,
        host=database.get("HOST") or None,
        port=database.get("PORT") or None,
        application_name=name,
        # A server that vanishes without closing the socket is noticed.
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
    )


class Hub:
    def __init__(self, render: Callable[[dict[str, Any]], bytes]) -> None:
        self.render = render
        self.streams: dict[str, set[Stream]] = {}
        self.count = 0
        self._dirty: set[str] = set()
        self._running: dict[str, asyncio.Task] = {}
        if django_connection.vendor == "postgresql":
            self.store: PostgresStore | SqliteStore = PostgresStore(self.wake, self.wake_all)
        else:
            self.store = SqliteStore(self.wake, self.wake_all)

    async def start(self) -> None:
        await self.store.start()

    async def stop(self, grace: float = 1.0) -> None:
        """Close every stream at once, give them ``grace`` seconds to end, then the database."""
        streams = [stream for group in self.streams.values() for stream in group]
        for stream in streams:
            stream.close("shutdown")
        tasks = [stream.task for stream in streams if stream.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
        for task in list(self._running.values()):
            task.cancel()
        await self.store.stop()

    async def wait_live(self, timeout: float) -> bool:
        """Whether the LISTEN connection is (or has been) live, waiting up to ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self.store.live.wait()
        except TimeoutError:
            return False
        return True

    def subscribe(self, stream: Stream, limit: int) -> bool:
        """Add the stream unless ``limit`` streams are open already."""
        if self.count >= limit:
            return False
        self.streams.setdefault(stream.conversation_id, set()).add(stream)
        self.count += 1
        return True

    def unsubscribe(self, stream: Stream) -> None:
        group = self.streams.get(stream.conversation_id)
        if group is None or stream not in group:
            return
        group.discard(stream)
        self.count -= 1
        if not group:
            del self.streams[stream.conversation_id]

    async def fetch(self, conversation_id: str, *, after: int | None, limit: int) -> Fetched:
        wanted = page(conversation_id, after=after, limit=limit)
        sql, params = page_sql(wanted, newest=MAX_MESSAGE_ID, with_reach=True)
        rows = await self.store.query(sql, params)
        cut = page_cut(rows)
        return Fetched(page_messages(wanted, [row[:4] for row in rows]), cut)

    async def count_after(self, conversation_id: str, *, after: int, limit: int) -> int:
        sql, params = later_count_sql(conversation_id, after=after, limit=limit)
        [(count,)] = await self.store.query(sql, params)
        return count

    def ready(self, stream: Stream, last_id: int) -> None:
        """The stream's own first query is done and handed out up to ``last_id``."""
        stream.last_id = max(stream.last_id, last_id)
        stream.ready = True
        if stream.missed:
            self.wake(stream.conversation_id)

    def wake(self, conversation_id: str) -> None:
        if conversation_id not in self.streams:
            return
        self._dirty.add(conversation_id)
        if conversation_id not in self._running:
            self._running[conversation_id] = asyncio.create_task(self._catch_up(conversation_id))

    def wake_all(self) -> None:
        for conversation_id in list(self.streams):
            self.wake(conversation_id)

    async def _catch_up(self, conversation_id: str) -> None:
        """Read what is new for the conversation's streams until nothing is left to read."""
        attempt = 0
        try:
            while conversation_id in self._dirty:
                self._dirty.discard(conversation_id)
                group = self.streams.get(conversation_id)
                if not group:
                    return
                ready = []
                for stream in group:
                    if stream.ready:
                        ready.append(stream)
                    else:
                        stream.missed = True
                if not ready:
                    continue
                after = min(stream.last_id for stream in ready)
                try:
                    fetched = await self.fetch(conversation_id, after=after, limit=PAGE_LIMIT_MAX)
                except StoreUnavailable as error:
                    logger.warning("Live events: catch-up query failed (%s); retrying", error)
                    self._dirty.add(conversation_id)
                    await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                    attempt += 1
                    continue
                attempt = 0
                events = [(row["id"], self.render(row)) for row in fetched.rows]
                # Only the streams that were ready before the query: one that
                # became ready during it was marked, and wakes us again.
                for stream in ready:
                    if stream.closed is None:
                        stream.deliver(events)
                if len(fetched.rows) == PAGE_LIMIT_MAX or fetched.cut:
                    # More is there already: read it once the streams have
                    # sent this page, so that a burst larger than their
                    # buffers reaches every client that keeps up with it.
                    await sent(ready, timeout=DRAIN_SECONDS)
                    self._dirty.add(conversation_id)
        finally:
            self._running.pop(conversation_id, None)
