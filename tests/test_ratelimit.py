"""Rate limits: in process by default, and one limit shared by every worker through Redis."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid

import pytest
import redis

from app.errors import RateLimited
from app.ratelimit import RateLimiter, counting_once
from tests.factories import PASSWORD, make_item, make_user
from tests.helpers.http import client_for, csrf_token, post_form
from tests.helpers.servers import free_port
from tests.helpers.tcp_proxy import TcpProxy

REDIS = ("127.0.0.1", 6379)


def _redis_running() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(REDIS) == 0


def _hits_allowed(limiters: list[RateLimiter], key: str, attempts: int) -> int:
    allowed = 0
    for n in range(attempts):
        try:
            limiters[n % len(limiters)].hit("5/day", key)  # a day: a minute boundary inside the loop would let a sixth through
            allowed += 1
        except RateLimited as refused:
            assert 1 <= int(refused.headers["Retry-After"]) <= 86400
    return allowed


def test_in_process_each_worker_counts_alone():
    key = f"test:{uuid.uuid4().hex}"
    assert _hits_allowed([RateLimiter()], key, 8) == 5
    assert _hits_allowed([RateLimiter(), RateLimiter()], key, 16) == 10  # two processes, two budgets


@pytest.mark.parametrize("url", ["", "redis://127.0.0.1:6379/0"])
def test_asking_whether_a_hit_would_count_counts_nothing(url):
    """What the vote at once asks before its statement (app/voting/views.py `_may_count`): it spends no budget, says
    no once the budget is spent, and within a request says what the request's own hit said."""
    if url and not _redis_running():
        pytest.skip("no Redis on 127.0.0.1:6379")
    limiter, key = RateLimiter(url, key_secret="s" * 32), f"vote:user:{uuid.uuid4().hex}"
    assert all(limiter.allows("2/day", key) for _ in range(5))
    limiter.hit("2/day", key)
    assert limiter.allows("2/day", key)
    limiter.hit("2/day", key)
    assert not limiter.allows("2/day", key)
    with counting_once():
        other = f"vote:user:{uuid.uuid4().hex}"
        limiter.hit("1/day", other)  # the request's own hit, the budget's last
        assert limiter.allows("1/day", other)  # counted already: a second run of the request is not refused
    assert not limiter.allows("1/day", other)


def test_in_process_counting_starts_no_thread():
    # limits' own memory storage started a timer thread on almost every hit (one per vote on a busy worker).
    limiter = RateLimiter()
    before = set(threading.enumerate())
    for n in range(300):
        limiter.hit("100000/minute", f"vote:user:{n}")
        limiter.hit("1000000/minute", "vote:ip:127.0.0.1")
    assert set(threading.enumerate()) <= before


def test_in_process_counters_of_past_windows_are_swept(monkeypatch):
    limiter = RateLimiter()
    counters = limiter._memory.counters
    limiter.hit("5/second", "old")
    assert counters  # counted
    later = time.time() + 60  # both windows of "old" are long over
    monkeypatch.setattr(time, "time", lambda: later)
    limiter._memory._next_sweep = 0.0  # a sweep is due
    limiter.hit("5/second", "new")
    assert [key for key, _ in counters if "old" in key] == []
    assert [key for key, _ in counters if "new" in key]


def test_in_process_the_last_windows_hits_weigh_as_much_as_it_still_overlaps(monkeypatch):
    """limits' sliding-window counter arithmetic, counted in the process (app.ratelimit.Windows): 10 hits an hour,
    all spent late in one window; a quarter into the next, three quarters of them still count (7.5, read as 7), so
    three more are allowed, and the fourth is told when one will be."""
    now = [3600 * 1000 + 3500.0]  # late in an hour's window
    monkeypatch.setattr(time, "time", lambda: now[0])
    limiter, key = RateLimiter(), "vote:user:1"
    assert _hits_allowed_at("10/hour", limiter, key, 12) == 10
    now[0] = 3600 * 1001 + 900.0  # a quarter into the next window
    assert _hits_allowed_at("10/hour", limiter, key, 5) == 3
    with pytest.raises(RateLimited) as refused:
        limiter.hit("10/hour", key)
    # 7.5 + 3 = 10.5 now; under 10 again once the last window's weight is under 7, just after 30 % into this one
    # (1,080 s): told to wait the whole seconds past it, so that a client waiting just that long is let in
    retry_after = int(refused.value.headers["Retry-After"])
    assert retry_after == 1080 - 900 + 1
    now[0] += retry_after - 1
    assert _hits_allowed_at("10/hour", limiter, key, 1) == 0
    now[0] += 1
    assert _hits_allowed_at("10/hour", limiter, key, 1) == 1


def _hits_allowed_at(limit: str, limiter: RateLimiter, key: str, attempts: int) -> int:
    allowed = 0
    for _ in range(attempts):
        with contextlib.suppress(RateLimited):
            limiter.hit(limit, key)
            allowed += 1
    return allowed


def test_through_redis_two_workers_share_one_limit():
    if not _redis_running():
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("no Redis on 127.0.0.1:6379 (this machine kind runs one; CI must test the shared limit)")
        pytest.skip("no Redis on 127.0.0.1:6379")
    key = f"test:{uuid.uuid4().hex}"
    workers = [RateLimiter("redis://127.0.0.1:6379/0"), RateLimiter("redis://127.0.0.1:6379/0")]
    assert _hits_allowed(workers, key, 12) == 5
    assert _hits_allowed(workers, f"{key}:other", 3) == 3  # per key


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_with_redis_unreachable_limits_are_counted_in_process_with_one_warning(caplog):

    limiter = RateLimiter(f"redis://127.0.0.1:{free_port()}/0", retry_seconds=10)
    key = f"test:{uuid.uuid4().hex}"
    with caplog.at_level("WARNING", logger="ahead.ratelimit"):
        assert _hits_allowed([limiter], key, 8) == 5  # still limited, no error
        assert _hits_allowed([limiter], f"{key}:b", 8) == 5
    warnings = [r for r in caplog.records if r.name == "ahead.ratelimit"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    state = limiter.state()
    assert state.state == "degraded" and "retrying every 10 s" in state.detail


def test_when_redis_comes_back_it_is_used_again(caplog):
    if not _redis_running():
        pytest.skip("no Redis on 127.0.0.1:6379")

    proxy = TcpProxy(REDIS).open()
    clock = _Clock()
    limiter = RateLimiter(f"redis://{proxy.url_host}/0", retry_seconds=10, clock=clock)
    other_worker = RateLimiter("redis://127.0.0.1:6379/0")
    key = f"test:{uuid.uuid4().hex}"
    try:
        assert _hits_allowed([limiter], key, 2) == 2
        assert limiter.state().state == "redis"

        proxy.close()
        assert _hits_allowed([limiter], f"{key}:down", 8) == 5  # in memory meanwhile
        assert limiter.state().state == "degraded"

        proxy.open()
        clock.now += 5
        assert limiter.state().state == "degraded"  # not tried again before its time
        clock.now += 5
        with caplog.at_level("WARNING", logger="ahead.ratelimit"):
            assert _hits_allowed([limiter], key, 2) == 2
        assert limiter.state().state == "redis"
        assert any("answers again" in r.getMessage() for r in caplog.records)
        # shared again: the other worker sees the four hits counted in Redis
        assert _hits_allowed([other_worker], key, 3) == 1
    finally:
        proxy.close()


async def test_pages_sign_in_and_votes_work_with_redis_down(database, connection, session, caplog):
    from sqlalchemy import select

    from app.config import Settings
    from app.voting.models import Vote

    settings = Settings(database_url=database.url, secret_key="k" * 40, base_url="http://testserver",
                        redis_url=f"redis://127.0.0.1:{free_port()}/0", _env_file=None)
    customer = make_user(session, password=PASSWORD)
    item = make_item(session)
    with caplog.at_level("WARNING", logger="ahead.ratelimit"):
        async with client_for(settings, database, connection) as client:
            assert (await client.get("/")).status_code == 200
            token = await csrf_token(client, "/login")
            signed_in = await client.post("/login", data={"email": customer.email, "password": PASSWORD,
                                                          "csrf_token": token})
            assert signed_in.status_code == 303
            voted = await post_form(client, f"/items/{item.public_id}/vote", {"importance": "important"},
                                    page="/")
            assert voted.status_code == 303
    assert session.scalar(select(Vote).where(Vote.item_id == item.id, Vote.user_id == customer.id)) is not None
    assert len([r for r in caplog.records if r.name == "ahead.ratelimit"]) == 1


def test_whoever_reads_the_counters_finds_no_email_or_address_in_them():
    """The login and sign-in-link limits are keyed by email address and IP address: with the app's secret, Redis
    (and a worker's memory) hold a keyed hash of them, and each key still counts on its own."""
    person = f"ann.{uuid.uuid4().hex[:8]}@example.com"
    key, other = f"login:email-ip:{person}|203.0.113.9", f"login:email-ip:{person}|203.0.113.10"
    limiters = [RateLimiter(key_secret="s" * 40)]
    if _redis_running():
        limiters.append(RateLimiter("redis://127.0.0.1:6379/0", key_secret="s" * 40))
    for limiter in limiters:
        assert _hits_allowed([limiter], key, 7) == 5 and _hits_allowed([limiter], other, 2) == 2
    counted = [key for key, _ in limiters[0]._memory.counters]
    if len(limiters) > 1:
        store = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        counted += [k.decode() for k in store.scan_iter(match="*login:email-ip:*", count=1000)]
    assert any("login:email-ip:" in k for k in counted)
    assert not [k for k in counted if "example.com" in k or "203.0.113" in k or "ann." in k]
    # Another secret, other keys: nobody can hash a list of addresses to find who tried to sign in.
    assert RateLimiter(key_secret="t" * 40)._stored(key) != limiters[0]._stored(key)


def test_a_refusal_names_the_wait_its_retry_after_gives():
    """The 429's words: a per-minute limit says "a minute" as before, a longer one its wait (a 2/day limit said "a
    minute" too), always rounded up."""
    assert [RateLimited(retry_after=s).detail.split("wait ")[1].split(" and")[0]
            for s in (1, 60, 61, 5400, 5401, 129600, 129601)] == [
        "a minute", "a minute", "about 2 minutes", "about 90 minutes", "about 2 hours", "about 36 hours",
        "about 2 days"]
