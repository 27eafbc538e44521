"""Rate limits through `limits`: in process by default, shared through Redis when REDIS_URL is set.

The sliding-window counter strategy: two counters per key (this window and the last, weighted by how
much of the last still overlaps), so a hit costs the same however busy the key is. The moving window
kept every hit of the window in a list per key, and the in-memory storage ran a timer thread every
10 ms to expire them.

In process (no REDIS_URL, or Redis down) the counting is `Windows` below, not limits' memory storage: the same
sliding-window arithmetic in a dict, about 1 µs a hit where limits took 10-20 µs (its storage wraps every call in
decorators; two keys a vote, counted after the vote at once and looked at before it: a tenth of a vote's CPU,
bench/README.md), and no timer thread (limits' started one on almost every hit, which on a busy worker meant a
thread per vote). Counters of past windows are swept inline, at most once a second.

When Redis stops answering, limits are counted in this process instead (each worker with its own
budget, as without REDIS_URL): sign-in, votes and pages keep working. One warning goes to the log,
Redis is tried again every `retry_seconds`, and once it answers it is used again.

A request counts each of its hits once (`counting_once`), however often app/db.py's DbSessionMiddleware runs it:
after a slice of lock wait on PostgreSQL it runs the request again from the start, and a comment or a sign-in that
waited for a busy row was counted once per run, so a burst of votes on an item refused its comments early.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from app.errors import RateLimited

log = logging.getLogger("ahead.ratelimit")

# Seconds to wait for Redis to connect or answer before counting in memory: a hit is on the request's path.
REDIS_TIMEOUT = 0.5


class Windows:
    """Sliding-window counters in this process, as limits' `SlidingWindowCounterRateLimiter` counts: per key and limit
    the hits of the current window and of the last, the last weighted by how much of it still overlaps the sliding
    window; a hit is allowed while that weighted count, rounded down, stays under the limit. Thread-safe (votes count
    in threads off the event loop)."""

    SWEEP_SECONDS = 1.0

    def __init__(self) -> None:
        # (key, limit) -> [window number, hits in it, hits in the window before]
        self.counters: dict[tuple[str, str], list[int]] = {}
        self._limits: dict[str, tuple[int, float]] = {}  # limit -> (hits allowed, seconds a window lasts)
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def hit(self, limit: str, key: str, *, count: bool = True) -> float | None:
        """Count one hit (`count=False`: only ask whether it would be counted): None when allowed, else the seconds
        until one would be."""
        amount, expiry = self._item(limit)
        now = time.time()
        window, into = divmod(now, expiry)
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            counter = self.counters.get((key, limit))
            if counter is None:
                counter = [int(window), 0, 0]
            elif counter[0] != window:  # a new window: the last one's hits carry over, older ones are gone
                counter = [int(window), 0, counter[1] if counter[0] == window - 1 else 0]
            current, previous = counter[1], counter[2]
            if int(previous * (expiry - into) / expiry + current) < amount:
                if count:
                    counter[1] += 1
                    self.counters[(key, limit)] = counter
                return None
        # Refused: when the weighted count will be under the limit again
        if current >= amount:  # not in this window: in the next, once this one's weight has fallen enough
            return expiry - into + expiry * (1 - amount / current)
        return expiry * (1 - (amount - current) / previous) - into

    def _item(self, limit: str) -> tuple[int, float]:
        known = self._limits.get(limit)
        if known is None:
            item = _parsed(limit)
            known = self._limits[limit] = (item.amount, float(item.get_expiry()))
        return known

    def _sweep(self, now: float) -> None:
        """Drop the counters whose windows are over (caller holds the lock)."""
        self._next_sweep = now + self.SWEEP_SECONDS
        gone = [key for key, (window, _, _) in self.counters.items()
                if window + 2 <= now // self._limits[key[1]][1]]
        for key in gone:
            del self.counters[key]

    def reset(self) -> None:
        with self._lock:
            self.counters.clear()


# The hits the current request counted, by (limit, key): None where allowed, else the Retry-After it was refused with.
_COUNTED: ContextVar[dict[tuple[str, str], int | None] | None] = ContextVar("ahead_counted_hits", default=None)


@contextmanager
def counting_once() -> Iterator[None]:
    """Within it (one request, all its runs), a hit already counted says again what it said, without counting."""
    token = _COUNTED.set({})
    try:
        yield
    finally:
        _COUNTED.reset(token)


@lru_cache(maxsize=64)
def _parsed(limit: str) -> RateLimitItem:
    return parse(limit)


@dataclass(frozen=True)
class LimiterState:
    """Where limits are counted: "redis", "memory" (no REDIS_URL) or "degraded" (Redis set but down)."""

    state: str
    detail: str


class RateLimiter:
    """Counts hits per key, in Redis when REDIS_URL is set (one limit for every worker and instance), else in the
    process. With `key_secret` (the app passes SECRET_KEY) what a key names after its kind — an email address, an
    IP address, a person's id — is stored as a keyed hash: whoever reads Redis or a memory dump finds no one's
    address in the limits ("login:email-ip:" and 32 hex characters)."""

    def __init__(self, redis_url: str = "", *, retry_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, key_secret: str = "") -> None:
        self._key = hashlib.sha256(("ratelimit:" + key_secret).encode()).digest() if key_secret else b""
        self._memory = Windows()
        self._redis: SlidingWindowCounterRateLimiter | None = None
        if redis_url:
            storage = storage_from_string(redis_url, wrap_exceptions=True, socket_connect_timeout=REDIS_TIMEOUT,
                                          socket_timeout=REDIS_TIMEOUT)
            self._redis = SlidingWindowCounterRateLimiter(storage)
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None  # wall-clock time, for the readiness detail
        self._retry_at = 0.0

    def hit(self, limit: str, *keys: str) -> None:
        """Count one hit against every key; raise RateLimited once any of them is over its limit."""
        counted = _COUNTED.get()
        for given in keys:
            key = self._stored(given)
            if counted is not None and (limit, key) in counted:
                retry_after = counted[(limit, key)]
                if retry_after is not None:
                    raise RateLimited(retry_after=retry_after)
                continue
            wait = self._count(limit, key, count=True)
            # Whole seconds after which a hit is allowed again: rounded down, a client waiting just that long was
            # refused once more (a walk-through's finding)
            retry_after = None if wait is None else max(1, int(wait) + 1)
            if counted is not None:
                counted[(limit, key)] = retry_after
            if retry_after is not None:
                raise RateLimited(retry_after=retry_after)

    def allows(self, limit: str, key: str) -> bool:
        """Whether `hit(limit, key)` would count one more hit now, counting nothing (what this request counted already
        says what it said)."""
        stored = self._stored(key)
        counted = _COUNTED.get()
        if counted is not None and (limit, stored) in counted:
            return counted[(limit, stored)] is None
        return self._count(limit, stored, count=False) is None

    def _count(self, limit: str, key: str, *, count: bool) -> float | None:
        """Count a hit (or only ask), in Redis or in the process: None when allowed, else the seconds until it would
        be."""
        redis_ = self._redis
        if redis_ is None or (self._down_since is not None and self._clock() < self._retry_at):
            return self._memory.hit(limit, key, count=count)
        item = _parsed(limit)
        try:
            if redis_.hit(item, key) if count else redis_.test(item, key):
                allowed = True
            else:
                allowed, reset = False, redis_.get_window_stats(item, key).reset_time
        except StorageError as exc:
            self._went_down(exc)
            return self._memory.hit(limit, key, count=count)
        if self._down_since is not None:
            self._came_back()
        return None if allowed else reset - time.time()

    def _stored(self, key: str) -> str:
        """The key as counted: "kind:sub-kind:" kept readable, what follows as its keyed hash (with a key)."""
        if not self._key:
            return key
        kind, sub, named = key.split(":", 2) if key.count(":") >= 2 else ("", "", key)
        digest = hmac.new(self._key, named.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{kind}:{sub}:{digest}"

    def state(self) -> LimiterState:
        """For /readyz: pings Redis, or when it is down tries it again once a retry is due (never more often)."""
        if self._redis is None:
            return LimiterState("memory", "counted in each process (no REDIS_URL)")
        # A PING when Redis is believed up, and when it is down and a retry is due.
        if self._down_since is None or self._clock() >= self._retry_at:
            if self._redis.storage.check():
                self._came_back()
            else:
                self._went_down(None)
        if self._down_since is None:
            return LimiterState("redis", "shared by every process through Redis")
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self._down_since))
        return LimiterState("degraded", f"Redis unreachable since {since}: counted in each process, "
                                        f"retrying every {self._retry_seconds:g} s")

    def reset(self) -> None:
        self._memory.reset()
        if self._redis is not None:
            self._redis.storage.reset()

    def _went_down(self, exc: Exception | None) -> None:
        with self._lock:
            self._retry_at = self._clock() + self._retry_seconds
            if self._down_since is not None:
                return  # still down: said so once already
            self._down_since = time.time()
        log.warning("Redis (REDIS_URL) is unreachable (%s): rate limits are counted in each process until it "
                    "answers again; trying again every %g s", exc or "no answer", self._retry_seconds)

    def _came_back(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            self._down_since = None
        log.warning("Redis (REDIS_URL) answers again: rate limits are shared through it again")
