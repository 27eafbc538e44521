"""The outbox worker: claims due jobs in batches and runs them, each marked done in its own transaction.

`ahead serve` runs one in each web process (OUTBOX_WORKER, on by default); `ahead worker` runs one more on
its own, on this machine or another. Several workers share the queue by claiming: a worker takes up to
OUTBOX_BATCH_SIZE due jobs in one short transaction, setting `claimed_by` and a lease (`claimed_until`,
OUTBOX_LEASE_SECONDS); on PostgreSQL with FOR UPDATE SKIP LOCKED, so two workers never take the same job and
never wait for one another; on SQLite the claim is a write transaction (BEGIN IMMEDIATE), one at a time.

Exactly once, but for one: an email is handed to the SMTP server first and its job marked done right after,
in a transaction of its own. A worker killed between the two leaves one message accepted but not marked:
when its lease runs out another worker (or the same one, started again) sends it again, with the same
Message-ID (derived from the job's key), so the receiving side can tell. Nothing else is sent twice, and
nothing is lost: a job is only ever finished by the worker holding its lease.

Lanes: kinds registered with a lane of their own (webhook calls) are never claimed by the main loop, which
sends the emails; `run_forever` gives each lane a claim loop of its own that runs up to LANE_CONCURRENCY of
its jobs side by side, each in its own task and thread, taking more as soon as one finishes. So a receiver
that hangs holds up no email, and other receivers only once LANE_CONCURRENCY calls hang at the same time.
The lanes claim with the same leases, under the same worker name, as the main loop.

The database is only touched in a thread (asyncio.to_thread), so a worker inside a web process never holds
up that process's requests while it waits for a lock, and SMTP is spoken asynchronously.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database, listen_once, utcnow
from app.outbox import mailer, registry, service
from app.outbox.models import JobState, OutboxJob
from app.outbox.registry import Failed, Job, Retry

log = logging.getLogger("ahead.outbox")

PURGE_EVERY_SECONDS = 3600.0
PURGE_CHUNK = 5000
LANE_CONCURRENCY = 8  # jobs of one lane (webhook calls) run at once by one worker

# Marking a job done runs once per email: one statement built here, so each run is a compiled-cache hit with
# bound values. Built per call with the values written in (a JSON payload among them) it was not cached and
# cost about 1.1 ms of CPU per email of the 2.5 ms a message took in all (bench/README.md, "The outbox").
_jobs = OutboxJob.__table__
_MARK_DONE = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("job_id"), _jobs.c.claimed_by == bindparam("worker"),
           _jobs.c.state == JobState.pending.value)
    .values(state=JobState.done.value, finished_at=bindparam("finished_at"), attempts=bindparam("attempts"),
            result=bindparam("result"), claimed_by=None, claimed_until=None)
)
_MARK_DONE_WITH_PAYLOAD = _MARK_DONE.values(payload=bindparam("payload"))


def wake_on_commit(database: Database) -> None:
    """A commit of this database's sessions that enqueued jobs wakes the workers of this process (the others
    poll). Attached to the database's own session factories, as `revision.track` is, never to SQLAlchemy's
    global Session class: a session of another database or library in the process wakes nobody. Once per
    factory, however often it is called (the app and the CLI call it on the database they use)."""
    for factory in {id(f): f for f in (database.read_sessions, database.write_sessions)}.values():
        listen_once(factory, "after_commit", _wake_after_commit)


def _wake_after_commit(session: Session) -> None:
    if service.wants_wake(session):
        registry.wake()


@dataclass
class Tally:
    """What a run did, for the CLI, the tests and the benchmark."""

    done: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.done + self.retried + self.failed + self.dead

    def add(self, other: Tally) -> None:
        self.done += other.done
        self.retried += other.retried
        self.failed += other.failed
        self.dead += other.dead
        self.errors += other.errors


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(self, database: Database, settings: Settings, *, name: str | None = None,
                 only: frozenset[str] | None = None, skip: frozenset[str] = frozenset()) -> None:
        self.database = database
        self.only = only  # the kinds this worker claims (a lane's); None: any kind not in `skip`
        self.skip = skip
        self._executor: ThreadPoolExecutor | None = None  # a lane's own threads for its handlers
        self.settings = settings
        self.name = name or worker_name()
        self.batch_size = settings.outbox_batch_size
        self.lease = timedelta(seconds=settings.outbox_lease_seconds)
        self._recording: asyncio.Future[None] | None = None  # the last email sent, being marked done
        self.stopping: asyncio.Event | None = None  # set: finish the message in hand, leave the rest of the batch

    # --- the database side (run in a thread) ----------------------------------------------------------

    def _session(self) -> Session:
        return self.database.new_session(write=True)

    def claim(self, limit: int | None = None) -> list[Job]:
        """Take up to `limit` due jobs (oldest due first) for this worker's lease; committed."""
        now = utcnow()
        due = (select(OutboxJob.id)
               .where(OutboxJob.state == JobState.pending, OutboxJob.next_attempt_at <= now,
                      (OutboxJob.claimed_until.is_(None)) | (OutboxJob.claimed_until < now))
               .order_by(OutboxJob.next_attempt_at, OutboxJob.id))
        if self.only is not None:
            due = due.where(OutboxJob.kind.in_(sorted(self.only)))
        elif self.skip:
            due = due.where(OutboxJob.kind.not_in(sorted(self.skip)))
        # An idle worker only reads: no write transaction (on SQLite, the database's write lock) once a second
        # in every web process when nothing is due.
        with self.database.new_session(write=False) as probe:
            if probe.scalar(due.limit(1)) is None:
                return []
        with self._session() as session:
            ids = list(session.scalars(due.limit(limit or self.batch_size).with_for_update(skip_locked=True)))
            if not ids:
                session.rollback()
                return []
            session.execute(update(OutboxJob).where(OutboxJob.id.in_(ids))
                            .values(claimed_by=self.name, claimed_until=now + self.lease)
                            .execution_options(synchronize_session=False))
            rows = session.scalars(select(OutboxJob).where(OutboxJob.id.in_(ids))
                                   .order_by(OutboxJob.next_attempt_at, OutboxJob.id)).all()
            jobs = [service.job_from_row(row) for row in rows]
            session.commit()
            return jobs

    def renew(self, ids: list[int]) -> set[int]:
        """Extend the lease on `ids`; the ones still ours."""
        with self._session() as session:
            session.execute(update(OutboxJob).where(OutboxJob.id.in_(ids), OutboxJob.claimed_by == self.name,
                                                    OutboxJob.state == JobState.pending)
                            .values(claimed_until=utcnow() + self.lease)
                            .execution_options(synchronize_session=False))
            ours = set(session.scalars(select(OutboxJob.id).where(OutboxJob.id.in_(ids),
                                                                  OutboxJob.claimed_by == self.name)))
            session.commit()
            return ours

    def purge(self) -> int:
        """Delete finished jobs older than OUTBOX_KEEP_DAYS, PURGE_CHUNK at a time (short transactions)."""
        before = utcnow() - timedelta(days=self.settings.outbox_keep_days)
        deleted = 0
        while True:
            with self._session() as session:
                ids = list(session.scalars(select(OutboxJob.id).where(
                    OutboxJob.state != JobState.pending, OutboxJob.finished_at < before).limit(PURGE_CHUNK)))
                if ids:
                    session.execute(delete(OutboxJob).where(OutboxJob.id.in_(ids))
                                    .execution_options(synchronize_session=False))
                session.commit()
            deleted += len(ids)
            if len(ids) < PURGE_CHUNK:
                break
        if deleted:
            log.info("outbox: %d finished job(s) older than %d days deleted", deleted,
                     self.settings.outbox_keep_days)
        return deleted

    def release(self, ids: list[int]) -> None:
        """Give claimed jobs back (a worker stopping): due again at once for any worker."""
        if not ids:
            return
        with self._session() as session:
            session.execute(update(OutboxJob).where(OutboxJob.id.in_(ids), OutboxJob.claimed_by == self.name)
                            .values(claimed_by=None, claimed_until=None)
                            .execution_options(synchronize_session=False))
            session.commit()

    def _mark_done(self, session: Session, job: Job, result: str) -> bool:
        if session.get_bind().dialect.name == "postgresql":
            # Not waiting for the WAL flush of each "sent" (it was the larger part of a message's time): a worker
            # killed loses nothing the server was told; only a crash of PostgreSQL itself can lose the last
            # fraction of a second of these marks, and those messages go again, with the same Message-IDs.
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        values: dict[str, Any] = {"job_id": job.id, "worker": self.name, "finished_at": utcnow(),
                                  "attempts": job.attempts + 1, "result": result[:2000]}
        finished = _finished_payload(job)
        statement = _MARK_DONE
        if finished:
            statement, values["payload"] = _MARK_DONE_WITH_PAYLOAD, finished["payload"]
        changed = session.connection().execute(statement, values)
        return bool(getattr(changed, "rowcount", 0))

    def finish_done(self, job: Job, result: str, session: Session | None = None) -> None:
        own = session is None
        session = session or self._session()
        try:
            if not self._mark_done(session, job, result):
                session.rollback()
                log.warning("job %s (%s, %s) finished after its lease was lost: another worker may run it again",
                            job.id, job.kind, job.key)
                return
            session.commit()
        finally:
            if own:
                session.close()

    def finish_failed(self, job: Job, exc: BaseException) -> str:
        """Record a failed attempt: retried later, failed for good, or dead. Returns the new state."""
        spec = registry.kind(job.kind)
        attempts = job.attempts + 1
        reason = exc.reason if isinstance(exc, Retry | Failed) else f"{type(exc).__name__}: {exc}"
        reason = reason or type(exc).__name__
        now = utcnow()
        values: dict[str, Any] = {"attempts": attempts, "last_error": reason[:2000], "claimed_by": None,
                                  "claimed_until": None}
        schedule = spec.schedule if spec else registry.EMAIL_SCHEDULE
        wait = registry.backoff(schedule, attempts)
        if isinstance(exc, Failed):
            state = JobState.failed
        elif wait is None:
            state = JobState.dead
        else:
            state = JobState.pending
            if isinstance(exc, Retry) and exc.after is not None:
                wait = exc.after
        values["state"] = state
        if state is JobState.pending:
            values["next_attempt_at"] = now + timedelta(seconds=wait or 0)
        else:
            values["finished_at"] = now
        to = job.payload.get("to") if job.kind == service.EMAIL_KIND else None
        about = f"{job.kind} job {job.id} ({job.key}{', to ' + str(to) if to else ''})"
        if state is JobState.pending:
            log.warning("%s: attempt %d failed, next in %ds: %s", about, attempts, round(wait or 0), reason)
        else:
            log.error("%s: %s after %d attempt(s): %s", about, state.value, attempts, reason)
        with self._session() as session:
            session.execute(update(OutboxJob).where(OutboxJob.id == job.id, OutboxJob.claimed_by == self.name)
                            .values(**values).execution_options(synchronize_session=False))
            if state is JobState.dead and spec is not None and spec.on_dead is not None:
                try:
                    with session.begin_nested():
                        spec.on_dead(session, Job(job.id, job.kind, job.payload, job.key, attempts))
                except Exception:
                    log.exception("%s: its on_dead hook failed", about)
            session.commit()
        return state.value

    # --- running jobs -----------------------------------------------------------------------------------

    async def run_batch(self) -> Tally:
        """Claim one batch and run it; what happened. An empty tally when nothing was due."""
        tally = Tally()
        jobs = await asyncio.to_thread(self.claim)
        if not jobs:
            return tally
        smtp = mailer.Mailer(self.settings)
        self._recording = None
        renew_every = self.lease.total_seconds() / 3
        renewed = time.monotonic()
        remaining = [job.id for job in jobs]
        ours = set(remaining)
        try:
            for job in jobs:
                if self.stopping is not None and self.stopping.is_set():
                    await asyncio.to_thread(self.release, remaining)
                    break
                remaining.remove(job.id)
                if time.monotonic() - renewed > renew_every:
                    ours = await asyncio.to_thread(self.renew, [job.id, *remaining])
                    renewed = time.monotonic()
                if job.id not in ours:
                    continue  # our lease ran out and another worker has it
                await self._run_one(job, smtp, tally)
        finally:
            try:
                await self._recorded(tally)
            finally:
                await smtp.close()
        return tally

    async def _recorded(self, tally: Tally) -> None:
        """Wait until the last email sent is recorded as done."""
        recording, self._recording = self._recording, None
        if recording is None:
            return
        try:
            await recording
            tally.done += 1
        except Exception:
            # Sent but not recorded: its lease runs out and it goes again, with the same Message-ID.
            log.exception("an email was sent but could not be marked done; it will be sent again")

    async def _run_one(self, job: Job, smtp: mailer.Mailer | None, tally: Tally) -> None:
        try:
            if job.kind == service.EMAIL_KIND:
                if smtp is None:
                    raise Retry("an email reached a lane without an SMTP connection")
                # The previous email is recorded while this one's envelope goes to the server, and before the
                # server can accept this one: at most one message is ever out and not yet recorded.
                result = await mailer.deliver(self.settings, smtp, job, before_accept=lambda: self._recorded(tally))
                self._recording = asyncio.ensure_future(asyncio.to_thread(self.finish_done, job, result))
                return
            await self._recorded(tally)
            await self._run_handler(job)
            tally.done += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._recorded(tally)
            if not isinstance(exc, Retry | Failed):
                log.exception("%s job %s (%s) raised", job.kind, job.id, job.key)
            state = await asyncio.to_thread(self.finish_failed, job, exc)
            tally.errors.append(str(exc))
            if state == JobState.pending:
                tally.retried += 1
            elif state == JobState.failed:
                tally.failed += 1
            else:
                tally.dead += 1

    async def _run_handler(self, job: Job) -> None:
        spec = registry.kind(job.kind)
        if spec is None:
            raise Failed(f"no handler for jobs of kind {job.kind!r} in this process")
        session = self._session()
        try:
            if spec.is_async:
                await cast(Callable[[Session, Job], Awaitable[None]], spec.run)(session, job)
            elif self._executor is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, spec.run, session, job)
            else:
                await asyncio.to_thread(spec.run, session, job)
            await asyncio.to_thread(self._commit_done, session, job)
        except BaseException:
            await asyncio.to_thread(session.rollback)
            raise
        finally:
            session.close()

    def _commit_done(self, session: Session, job: Job) -> None:
        if not self._mark_done(session, job, ""):
            session.rollback()
            log.warning("job %s (%s) finished after its lease was lost; what it did is rolled back", job.id, job.key)
            return
        session.commit()
        if service.wants_wake(session):
            registry.wake()

    async def run_until_empty(self, *, max_batches: int | None = None) -> Tally:
        """Run batches until no job is due (jobs waiting for a later retry stay waiting)."""
        tally = Tally()
        batches = 0
        while max_batches is None or batches < max_batches:
            done = await self.run_batch()
            batches += 1
            if not done.total:
                break
            tally.add(done)
        return tally

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set: batches while jobs are due, then wait for a wake-up or the poll interval.
        A failure of the database or a bug is logged and the worker carries on after a pause."""
        loop = asyncio.get_running_loop()
        self.stopping = stop
        woken = asyncio.Event()
        registry.add_waiter(loop, woken)
        lanes = registry.lanes()
        self.skip = frozenset().union(*lanes.values()) if lanes else frozenset()
        lane_tasks = [asyncio.create_task(Worker(self.database, self.settings, name=self.name, only=kinds)
                                          .run_lane(stop, lane), name=f"outbox-lane-{lane}")
                      for lane, kinds in sorted(lanes.items())]
        log.info("outbox worker %s started (batch %d, poll every %ss, lanes: %s)", self.name, self.batch_size,
                 self.settings.outbox_poll_seconds, ", ".join(sorted(lanes)) or "none")
        purged_at = -PURGE_EVERY_SECONDS
        try:
            while not stop.is_set():
                woken.clear()
                try:
                    if time.monotonic() - purged_at >= PURGE_EVERY_SECONDS:
                        purged_at = time.monotonic()
                        await asyncio.to_thread(self.purge)
                    tally = await self.run_batch()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    _failed(exc, "outbox worker %s: a batch failed; trying again shortly", self.name)
                    tally = Tally()
                    await _wait_any(stop, woken, self.settings.outbox_poll_seconds * 5)
                    continue
                if tally.total:
                    continue  # maybe more is due
                await _wait_any(stop, woken, self.settings.outbox_poll_seconds)
        finally:
            registry.remove_waiter(loop, woken)
            try:
                await asyncio.gather(*lane_tasks)
            finally:
                for task in lane_tasks:
                    task.cancel()
            log.info("outbox worker %s stopped", self.name)

    async def run_lane(self, stop: asyncio.Event, lane: str) -> None:
        """Run this lane's jobs until `stop` is set, up to LANE_CONCURRENCY at once, claiming more as soon as
        one finishes. On stop the calls under way are finished (each is bounded by its own timeout)."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        registry.add_waiter(loop, woken)
        self._executor = ThreadPoolExecutor(max_workers=LANE_CONCURRENCY, thread_name_prefix=f"outbox-{lane}")
        running: set[asyncio.Task[None]] = set()
        tally = Tally()
        try:
            while not stop.is_set():
                woken.clear()
                free = LANE_CONCURRENCY - len(running)
                claimed = 0
                if free > 0:
                    try:
                        jobs = await asyncio.to_thread(self.claim, free)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        _failed(exc, "outbox worker %s, lane %s: a claim failed; trying again shortly", self.name,
                                lane)
                        jobs = []
                        await _wait_any(stop, woken, self.settings.outbox_poll_seconds * 5)
                    claimed = len(jobs)
                    for job in jobs:
                        running.add(asyncio.create_task(self._run_one(job, None, tally)))
                if claimed and claimed == free:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await _wait_any(stop, woken, self.settings.outbox_poll_seconds, *running)
                running = {task for task in running if not task.done()}
            if running:
                await asyncio.wait(running)
        except asyncio.CancelledError:
            # Not waited for: the calls under way keep their claims until the lease ends, then go again.
            for task in running:
                task.cancel()
            raise
        finally:
            registry.remove_waiter(loop, woken)
            self._executor.shutdown(wait=False)


def _finished_payload(job: Job) -> dict[str, Any]:
    """A sent email keeps who it was for and which template, not its context: a sign-in link or an
    invitation's secret is not kept in the database once the message is out. Failed and dead ones keep it,
    so that `ahead outbox --retry` can render them again."""
    if job.kind != service.EMAIL_KIND:
        return {}
    return {"payload": {k: v for k, v in job.payload.items() if k != "context"}}


async def _wait_any(stop: asyncio.Event, woken: asyncio.Event, timeout: float,
                    *running: asyncio.Task[None]) -> None:
    """Until stop, a wake-up, the timeout or the end of any of the `running` tasks (which are not cancelled)."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(woken.wait())]
    try:
        await asyncio.wait([*waits, *running], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


async def run_until_empty(database: Database, settings: Settings, *, max_batches: int | None = None) -> Tally:
    """Run the queue to empty now, in the caller's event loop (tests, `ahead outbox --run`)."""
    return await Worker(database, settings).run_until_empty(max_batches=max_batches)


def _failed(exc: Exception, message: str, *args: Any) -> None:
    """A batch's or a lane's claim failed: a database connection lost (PostgreSQL restarted, its backend ended; the
    pool replaces the connection and the next try goes through) in one line, as a request's is; anything else with
    its traceback."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        cause = str(exc.orig or exc).strip().splitlines()
        log.warning(message + " (its database connection was lost: %s)", *args, cause[0] if cause else "")
    else:
        log.error(message, *args, exc_info=exc)
