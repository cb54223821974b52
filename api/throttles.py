"""Rate limits per client address: one budget for writes, one for reads.

DRF's own ``SimpleRateThrottle`` keeps a list of timestamps per client and
reads and rewrites it whole on every request: two cache round trips, a few
kilobytes each way at 1,200 requests a minute, and counts lost when requests
race. A fixed-window counter costs one atomic increment instead.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress

from django.core.cache import cache
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from .clients import client_key

logger = logging.getLogger(__name__)


def count_hit(store: BaseCache, key: str, window_seconds: int) -> int:
    """Add one to the counter at ``key`` (created to expire with its window); its new value."""
    if isinstance(store, RedisCache):
        # One round trip: INCR creates the key at 1 and is atomic across
        # workers. Django's cache API would take three (add, exists, incr).
        key = store.make_and_validate_key(key)
        client = store._cache.get_client(key, write=True)
        pipe = client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, window_seconds)
        count, _ = pipe.execute()
        return count
    with suppress(ValueError):
        # Every request but a window's first finds its counter: one call.
        return store.incr(key)
    if store.add(key, 1, window_seconds):
        return 1
    try:
        # Another thread of this worker started the window a moment ago.
        return store.incr(key)
    except ValueError:
        # And the window ended since.
        store.set(key, 1, window_seconds)
        return 1


class ClientRateThrottle(SimpleRateThrottle):
    """Counts each client's requests per window, separately for writes and reads.

    The scope is ``post`` for unsafe methods and ``get`` for GET, HEAD and
    OPTIONS, and its rate comes from ``DEFAULT_THROTTLE_RATES`` (``None``
    turns it off). A client over its budget gets a ``429`` whose Retry-After
    says when its window ends. A window starts on a multiple of its length
    (every minute on the minute for ``/min``), so a client can at most
    double its rate across a window's end.

    If Redis does not answer, requests are let through: the chat keeps
    working without limits rather than failing with them.
    """

    def __init__(self) -> None:
        # The scope, and so the rate, depends on the request's method: both
        # are chosen in allow_request. DRF reads the rates once at import;
        # they are read per request here, so that settings changes apply.
        self.retry_after: float | None = None

    def allow_request(self, request: Request, view: object) -> bool:
        self.scope = "get" if request.method in SAFE_METHODS else "post"
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        if rate is None:
            return True
        limit, window_seconds = self.parse_rate(rate)
        now = time.time()
        window = int(now // window_seconds)
        key = f"throttle:{self.scope}:{window_seconds}:{window}:{client_key(request)}"
        try:
            count = count_hit(cache, key, window_seconds)
        except RedisError as error:
            logger.warning("Rate limits are off: Redis did not answer (%s)", error)
            return True
        if count <= limit:
            return True
        self.retry_after = (window + 1) * window_seconds - now
        return False

    def wait(self) -> float | None:
        return self.retry_after
