"""The single-flight revision read (app.revision.SingleFlight, PostgreSQL's reader before a request's session).

The rule it must keep: a request that arrives after a write's commit returned sees that write. So a request is
never answered from a read that started before it arrived. The reads here are slow on purpose and released by
hand, and the "database" is a counter that a "commit" moves while a read is in flight: a request that took the
answer of the read already in flight would see the counter from before the commit.
"""

from __future__ import annotations

import asyncio

import pytest

from app import revision


class SlowDatabase:
    """A revision that commits move; each read takes its snapshot when it starts and answers when released."""

    def __init__(self) -> None:
        self.revision = 0
        self.started: list[int] = []  # the snapshot each read took, in the order they started
        self.gates: list[asyncio.Event] = []
        self.failing = False

    async def read(self) -> tuple[int, int]:
        snapshot = self.revision
        self.started.append(snapshot)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.failing:
            raise ConnectionError("server closed the connection")
        return snapshot, 0

    def commit(self) -> None:
        self.revision += 1

    async def release(self, read: int) -> None:
        """Let read number `read` (from 1) answer, once it has started."""
        await _started(self, read)
        self.gates[read - 1].set()


async def _started(database: SlowDatabase, reads: int) -> None:
    """Wait until `reads` reads have started (a few turns of the loop at most; a read never started fails)."""
    for _ in range(1000):
        if len(database.started) >= reads:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"read {reads} never started ({len(database.started)} did)")


async def test_a_request_arriving_during_a_read_waits_for_the_next_read():
    database = SlowDatabase()
    flight = revision.SingleFlight(database.read)
    first = asyncio.ensure_future(flight())
    await _started(database, 1)  # read 1 is in flight, its snapshot taken before the commit below
    database.commit()  # a write's commit returns...
    later = [asyncio.ensure_future(flight()) for _ in range(20)]  # ...then these requests arrive
    await database.release(1)
    assert await first == (0, 0)
    await database.release(2)
    # Every later request sees the commit: none took read 1's answer, and one read served them all.
    assert [await request for request in later] == [(1, 0)] * 20
    assert database.started == [0, 1] and flight.reads == 2


async def test_requests_arriving_during_the_queued_read_wait_for_the_one_after():
    database = SlowDatabase()
    flight = revision.SingleFlight(database.read)
    first = asyncio.ensure_future(flight())
    await _started(database, 1)
    second = asyncio.ensure_future(flight())  # queued behind read 1
    await database.release(1)
    await _started(database, 2)  # read 2 (second's) is in flight now
    database.commit()
    third = asyncio.ensure_future(flight())
    await database.release(2)
    await database.release(3)
    assert (await first, await second, await third) == ((0, 0), (0, 0), (1, 0))
    assert flight.reads == 3


async def test_an_idle_worker_reads_afresh_for_each_request():
    """Nothing in flight: the request's read starts at once, after it arrived (no answer is remembered)."""
    database = SlowDatabase()
    flight = revision.SingleFlight(database.read)
    for expected in range(3):
        request = asyncio.ensure_future(flight())
        await database.release(expected + 1)
        assert await request == (expected, 0)
        database.commit()
    assert flight.reads == 3


async def test_a_failed_read_fails_its_requests_and_the_next_read_starts_afresh():
    database = SlowDatabase()
    resets: list[int] = []

    async def reset() -> None:
        resets.append(len(database.started))

    flight = revision.SingleFlight(database.read, reset=reset)
    database.failing = True
    request = asyncio.ensure_future(flight())
    await database.release(1)
    with pytest.raises(ConnectionError):
        await request
    assert resets == [1]  # the connection is dropped before anything else is read
    database.failing = False
    request = asyncio.ensure_future(flight())
    await database.release(2)
    assert await request == (0, 0)


async def test_a_read_that_hangs_times_out_and_the_next_request_is_not_stuck_behind_it():
    database = SlowDatabase()
    flight = revision.SingleFlight(database.read, timeout=0.05)
    hung = asyncio.ensure_future(flight())  # read 1 is never released
    await _started(database, 1)
    queued = asyncio.ensure_future(flight())
    with pytest.raises(TimeoutError):
        await hung
    await database.release(2)  # the queued read starts once the hung one is given up
    assert await queued == (0, 0)


async def test_a_request_given_up_does_not_cancel_the_read_others_wait_for():
    database = SlowDatabase()
    flight = revision.SingleFlight(database.read)
    first = asyncio.ensure_future(flight())
    await _started(database, 1)
    leaving = asyncio.ensure_future(flight())  # both wait for read 2
    staying = asyncio.ensure_future(flight())
    await asyncio.sleep(0)
    leaving.cancel()
    await database.release(1)
    await database.release(2)
    assert await first == (0, 0) and await staying == (0, 0)
    assert leaving.cancelled() and flight.reads == 2
