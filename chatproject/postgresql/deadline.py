"""A deadline on the client's side for each round trip to PostgreSQL.

The server's ``statement_timeout`` and ``lock_timeout`` end a statement that
runs or waits too long, but only a server that is running can enforce them:
one that is frozen (SIGSTOP, a host swapping itself to death, a network that
drops packets without a reset) leaves the client waiting on its socket for as
long as TCP keeps the connection open, and the kernel of a frozen host still
acknowledges every packet. So each statement and each COMMIT is also watched
from here: one thread per process looks at the armed deadlines a few times a
second and shuts down the socket of any connection whose deadline passed.
psycopg then sees the connection end and raises ``OperationalError``, which
the API answers as its ``503``, and Django drops the connection.

Arming and disarming cost two dictionary operations under a lock; nothing is
started per statement.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

TICK_SECONDS = 0.2


class Watchdog:
    def __init__(self) -> None:
        self._tokens = itertools.count()
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, int]] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    @contextmanager
    def deadline(self, fileno: int, seconds: float) -> Iterator[None]:
        """Shut down socket ``fileno`` if the block is still running after ``seconds``."""
        if os.getpid() != self._pid:
            # A forked child has the parent's lock and table but not its thread.
            self._reset()
        token = next(self._tokens)
        with self._lock:
            self._armed[token] = (time.monotonic() + seconds, fileno)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="postgresql-deadline", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._armed.pop(token, None)

    def _watch(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            now = time.monotonic()
            # Under the lock, so that the socket is shut down only while its
            # owner is still inside the block: the file descriptor cannot have
            # been closed and reused by then.
            with self._lock:
                for token, (due, fileno) in list(self._armed.items()):
                    if due <= now:
                        self._armed.pop(token, None)
                        shut_down(fileno)


def shut_down(fileno: int) -> None:
    """End the connection on ``fileno``, leaving the descriptor to its owner to close."""
    try:
        sock = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


watchdog = Watchdog()
