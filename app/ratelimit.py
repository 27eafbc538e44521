"""Rate limits through `limits`: in process by default, shared through Redis when REDIS_URL is set."""

from __future__ import annotations

from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.errors import RateLimited


class RateLimiter:
    def __init__(self, redis_url: str = "") -> None:
        storage = storage_from_string(redis_url) if redis_url else MemoryStorage()
        self._limiter = MovingWindowRateLimiter(storage)

    def hit(self, limit: str, *keys: str) -> None:
        """Count one hit against every key; raise RateLimited once any of them is over its limit."""
        item = parse(limit)
        for key in keys:
            if not self._limiter.hit(item, key):
                reset = self._limiter.get_window_stats(item, key).reset_time
                import time

                raise RateLimited(retry_after=max(1, int(reset - time.time())))

    def reset(self) -> None:
        self._limiter.storage.reset()
