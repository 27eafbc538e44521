"""Rate limits through `limits`: in process by default, shared through Redis when REDIS_URL is set.

The sliding-window counter strategy: two counters per key (this window and the last, weighted by how
much of the last still overlaps), so a hit costs the same however busy the key is. The moving window
kept every hit of the window in a list per key, and the in-memory storage ran a timer thread every
10 ms to expire them.
"""

from __future__ import annotations

import time
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from app.errors import RateLimited


@lru_cache(maxsize=64)
def _parsed(limit: str) -> RateLimitItem:
    return parse(limit)


class RateLimiter:
    def __init__(self, redis_url: str = "") -> None:
        storage = storage_from_string(redis_url) if redis_url else MemoryStorage()
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    def hit(self, limit: str, *keys: str) -> None:
        """Count one hit against every key; raise RateLimited once any of them is over its limit."""
        item = _parsed(limit)
        for key in keys:
            if not self._limiter.hit(item, key):
                reset = self._limiter.get_window_stats(item, key).reset_time
                raise RateLimited(retry_after=max(1, int(reset - time.time())))

    def reset(self) -> None:
        self._limiter.storage.reset()
