"""Real worker processes (`ahead worker`) sending to a real SMTP server on loopback: killed in the middle of a
batch and started again, every recipient gets the message exactly once, except at most one per kill (accepted
by the server just before the kill), which carries the same Message-ID; two workers at once send each message
once (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: claims one at a time)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from app.db import Database
from app.outbox import service
from app.outbox.models import JobState, OutboxJob
from tests.helpers.databases import connected, own_database
from tests.helpers.smtp import Inbox, smtp_server
from tests.helpers.workers import pending, start_worker, stop, wait_for

RECIPIENTS = 400


@pytest.fixture
def crash_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Database]]:
    with own_database(tmp_path_factory.mktemp("outbox"), "outbox") as url, connected(url) as database:
        yield url, database


def queue_release_emails(database: Database, count: int = RECIPIENTS) -> None:
    with database.transaction() as session:
        service.enqueue_many(session, service.EMAIL_KIND, [
            ({"to": f"follower{n}@example.com", "template": "invitation", "headers": {}, "context": {
                "portal_name": "Acme", "inviter_name": "Ada", "link": f"http://roadmap.example/i/{n}",
                "role_label": "a product manager", "days": 7}}, f"email:release:9:user:{n}")
            for n in range(count)])


class KillingInbox(Inbox):
    """Kills the sending worker (SIGKILL) right after accepting its `kill_at`-th message, before the worker
    hears the 250: the worst moment, the message is out and the worker cannot record it."""

    def __init__(self) -> None:
        super().__init__()
        self.victim: subprocess.Popen[bytes] | None = None
        self.kill_at: int | None = None
        self.killed = threading.Event()
        self.killed_on: str | None = None  # the recipient of the message accepted just before the kill

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        answer = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(0.002)  # a little like a real server: the worker is mid-batch when the kill comes
        if self.kill_at is not None and len(self.received()) >= self.kill_at and self.victim is not None:
            self.kill_at = None
            self.killed_on = self.received()[-1]["To"]
            os.kill(self.victim.pid, signal.SIGKILL)
            self.victim.wait()
            self.killed.set()
        return answer


def test_a_worker_killed_mid_batch_loses_nothing_and_doubles_at_most_one_message_per_kill(crash_db, tmp_path):
    url, database = crash_db
    queue_release_emails(database)
    inbox = KillingInbox()
    log = tmp_path / "worker.log"
    with smtp_server(inbox) as server:
        # First kill: just after the server accepted message 90 (mid-batch: batches are 50).
        inbox.kill_at = 90
        inbox.victim = start_worker(url, server.port, log, outbox_batch_size="50")
        assert inbox.killed.wait(60), log.read_text()
        assert 90 <= len(inbox.received()) < RECIPIENTS

        # Second kill: at whatever moment the worker has reached, mid-batch, by the clock.
        second = start_worker(url, server.port, log, outbox_batch_size="50")
        before = len(inbox.received())
        wait_for(lambda: len(inbox.received()) >= before + 120, 60, "the second worker to send")
        second.send_signal(signal.SIGKILL)
        second.wait()

        third = start_worker(url, server.port, log, outbox_batch_size="50")
        try:
            wait_for(lambda: pending(database) == 0, 60, "the queue to empty")
        finally:
            stop(third)

    received = inbox.received()
    per_recipient = Counter(m["To"] for m in received)
    assert set(per_recipient) == {f"follower{n}@example.com" for n in range(RECIPIENTS)}  # nothing lost
    doubled = {to: n for to, n in per_recipient.items() if n > 1}
    assert len(doubled) <= 2 and all(n == 2 for n in doubled.values()), doubled  # at most one per kill
    assert doubled.get(inbox.killed_on) == 2  # the message accepted just before the first kill went again
    for to in doubled:
        ids = {m["Message-ID"] for m in received if m["To"] == to}
        assert len(ids) == 1, ids  # ... as the same message
    # Every message has a Message-ID of its own, derived from its key.
    by_id = Counter(m["Message-ID"] for m in received)
    assert len(by_id) == RECIPIENTS
    with database.transaction() as session:
        states = dict(session.execute(select(OutboxJob.state, func.count()).group_by(OutboxJob.state)).all())
    assert states == {JobState.done: RECIPIENTS}


def test_two_workers_at_once_send_each_message_once(crash_db, tmp_path):
    url, database = crash_db
    queue_release_emails(database)
    inbox = Inbox()
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with smtp_server(inbox) as server:
        workers = [start_worker(url, server.port, log, outbox_batch_size="20") for log in logs]
        try:
            wait_for(lambda: pending(database) == 0, 90, "the queue to empty")
        finally:
            for worker in workers:
                stop(worker)
    assert [worker.returncode for worker in workers] == [0, 0]  # SIGTERM: each stopped cleanly
    per_recipient = Counter(m["To"] for m in inbox.received())
    assert len(per_recipient) == RECIPIENTS and set(per_recipient.values()) == {1}
    sent = [log.read_text().count("Email sent to") for log in logs]
    assert sum(sent) == RECIPIENTS, sent
    if url.startswith("postgresql"):
        assert min(sent) > 0, sent  # they shared the queue, neither waiting for the other's claims
