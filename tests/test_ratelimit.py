"""Rate limits: in process by default, and one limit shared by every worker through Redis."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from app.errors import RateLimited
from app.ratelimit import RateLimiter

REDIS = ("127.0.0.1", 6379)


def _redis_running() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(REDIS) == 0


def _hits_allowed(limiters: list[RateLimiter], key: str, attempts: int) -> int:
    allowed = 0
    for n in range(attempts):
        try:
            limiters[n % len(limiters)].hit("5/minute", key)
            allowed += 1
        except RateLimited as refused:
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
    return allowed


def test_in_process_each_worker_counts_alone():
    key = f"test:{uuid.uuid4().hex}"
    assert _hits_allowed([RateLimiter()], key, 8) == 5
    assert _hits_allowed([RateLimiter(), RateLimiter()], key, 16) == 10  # two processes, two budgets


def test_through_redis_two_workers_share_one_limit():
    if not _redis_running():
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("no Redis on 127.0.0.1:6379 (this machine kind runs one; CI must test the shared limit)")
        pytest.skip("no Redis on 127.0.0.1:6379")
    key = f"test:{uuid.uuid4().hex}"
    workers = [RateLimiter("redis://127.0.0.1:6379/0"), RateLimiter("redis://127.0.0.1:6379/0")]
    assert _hits_allowed(workers, key, 12) == 5
    assert _hits_allowed(workers, f"{key}:other", 3) == 3  # per key
