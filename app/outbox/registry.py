"""What the outbox knows of the jobs it runs: a handler per kind, registered by the domains.

The outbox knows no domain (like the page cache's slot fillers, app/pagecache.py): a domain registers a
handler for each kind of job it enqueues, and the entry points import the modules that do (app/handlers.py).

    @outbox.handler("notify_followers")
    def notify_followers(session: Session, job: outbox.Job) -> None: ...

A handler runs once per attempt with a fresh write session and the job (`Job`: id, kind, payload, key,
attempts so far). What it writes to the session, jobs it enqueues included, is committed together with the
job being marked done; if it raises, nothing it wrote is kept. It says how an attempt ended by returning
(done) or raising:

* `Retry(after=...)`: try again later (after that long, or by the kind's schedule when `after` is None);
* `Failed(reason)`: it can never succeed (a recipient the server refuses): state "failed", no more attempts;
* any other exception: logged with its traceback and retried by the schedule.

When the schedule is used up the job is "dead" and the kind's `on_dead(session, job)` runs (a webhook's
owner tells the admins there). A sync handler runs in a thread, so the event loop of the process (its web
requests) never waits for it; an async one runs on the loop and must not touch the session while it awaits
something slow: the session's transaction, on SQLite the database's one write lock, begins with its first
statement, so do the network call first and write afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

# Seconds to wait before each attempt after a failed one. Email: about 16 hours in all (a mail server that
# is down for a night still gets the message in the morning; a sign-in link in it is long expired by then,
# but the person asks for another). Webhooks (h12c): three days, then dead and the admins are told.
EMAIL_SCHEDULE: tuple[float, ...] = (30, 120, 600, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600)
THREE_DAYS_SCHEDULE: tuple[float, ...] = (
    60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 12 * 3600, 12 * 3600, 12 * 3600, 12 * 3600, 2 * 3600)


@dataclass(frozen=True, slots=True)
class Job:
    """One job as a handler sees it (a copy: the row is the worker's)."""

    id: int
    kind: str
    payload: dict[str, Any]
    key: str
    attempts: int  # attempts made before this one


class Retry(Exception):  # what the handler asks for, not an error of its own
    """Try the job again later: after `after` (seconds or a timedelta), or by the kind's schedule."""

    def __init__(self, reason: str = "", *, after: float | timedelta | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after.total_seconds() if isinstance(after, timedelta) else after


class Failed(Exception):  # an outcome: the job can never succeed
    """The job can never succeed: no more attempts (state "failed"), `reason` kept and logged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


HandlerFn = Callable[[Any, Job], None] | Callable[[Any, Job], Awaitable[None]]

# Jobs of a kind in a lane of its own are claimed and run apart from the main lane's (emails): a webhook
# receiver that hangs holds up neither the mail nor, within the lane's concurrency, the other receivers.
MAIN_LANE = "main"
OnDead = Callable[[Any, Job], None]


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    run: HandlerFn
    schedule: Sequence[float] = EMAIL_SCHEDULE
    on_dead: OnDead | None = None
    is_async: bool = field(default=False)
    lane: str = MAIN_LANE


_kinds: dict[str, Kind] = {}


def handler(kind: str, *, schedule: Sequence[float] = EMAIL_SCHEDULE, on_dead: OnDead | None = None,
            lane: str = MAIN_LANE) -> Callable[[HandlerFn], HandlerFn]:
    """Register the decorated function as the handler of `kind` (one per kind; registering again replaces
    it, so a module imported twice in tests does no harm). A `lane` other than the main one gets its own
    claim loop in every worker, its jobs run side by side (calls to other systems that may hang)."""

    def register(fn: HandlerFn) -> HandlerFn:
        _kinds[kind] = Kind(kind, fn, tuple(schedule), on_dead, inspect.iscoroutinefunction(fn), lane)
        return fn

    return register


def kind(name: str) -> Kind | None:
    return _kinds.get(name)


def kinds() -> list[str]:
    return sorted(_kinds)


def lanes() -> dict[str, frozenset[str]]:
    """The kinds of each lane other than the main one."""
    found: dict[str, set[str]] = {}
    for spec in _kinds.values():
        if spec.lane != MAIN_LANE:
            found.setdefault(spec.lane, set()).add(spec.name)
    return {lane: frozenset(names) for lane, names in found.items()}


def backoff(schedule: Sequence[float], attempts: int) -> float | None:
    """Seconds before the next attempt after `attempts` failed ones; None when the schedule is used up."""
    return schedule[attempts - 1] if 0 < attempts <= len(schedule) else None


# --- waking the worker of this process ------------------------------------------------------------------
# A commit that enqueued something wakes the workers running in this process at once (a sign-in link goes out
# within a second); other processes find the job by polling (OUTBOX_POLL_SECONDS).

_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
_waiters_lock = threading.Lock()


def add_waiter(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with _waiters_lock:
        _waiters.add((loop, event))


def remove_waiter(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with _waiters_lock:
        _waiters.discard((loop, event))


def wake() -> None:
    """Tell this process's workers that there is work (from any thread)."""
    with _waiters_lock:
        waiters = list(_waiters)
    for loop, event in waiters:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # its loop has closed
            remove_waiter(loop, event)
