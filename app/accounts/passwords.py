"""argon2 password hashing and checking, off the event loop.

argon2 is slow on purpose (tens of milliseconds of CPU and 64 MiB per call). Called from an ``async def``
endpoint it would stop the worker's event loop for that long, and a burst of failed logins would stall
every other request of the worker. So each call runs in a small thread pool of its own and is awaited:
argon2-cffi releases the GIL while it hashes, and the loop keeps serving.

* Two threads: at most two hashes per process at a time, so a burst of logins queues here instead of
  taking every core (and 64 MiB each) from the rest of the portal.
* Their priority is lowered (``os.nice``): on Linux a thread's nice value is its own, so only these
  threads yield to request handling when the machine is busy; the threads argon2 starts for its lanes
  inherit it.
* Callers hold no database transaction while they wait (see ``RequestSession.end_transaction``): on
  SQLite a write transaction holds the database's only write lock.

The ``*_blocking`` functions are for the command line and tests, where nothing else waits on the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

THREADS = 2
NICENESS = 10

_hasher = PasswordHasher()


def _lower_priority() -> None:
    # Not fatal where the platform refuses it: hashing still runs off the loop, only at normal priority.
    with contextlib.suppress(OSError, AttributeError):
        os.nice(NICENESS)


_pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="argon2", initializer=_lower_priority)


@cache
def _dummy_hash() -> str:
    """Checked against when there is no account (or no password), so every failure costs the same."""
    return _hasher.hash("not-a-real-password-" + secrets.token_hex(8))


def hash_password_blocking(password: str) -> str:
    return _hasher.hash(password)


def verify_password_blocking(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; a missing or damaged hash costs one verification and is False."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's (cheap: it only parses the hash)."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return False


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_pool, hash_password_blocking, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    return await asyncio.get_running_loop().run_in_executor(_pool, verify_password_blocking, password_hash,
                                                            password)
