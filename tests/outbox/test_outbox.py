"""The outbox: jobs written in the caller's transaction, run by a worker, retried, failed, dead; real email
through aiosmtpd (both parts, headers, a Message-ID that is the same each time the message is sent)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app import outbox
from app.config import Settings
from app.db import utcnow
from app.outbox import registry, service
from app.outbox.models import JobState, OutboxJob
from app.outbox.worker import Worker, wake_on_commit
from tests.helpers.http import bound_database
from tests.helpers.smtp import Inbox, free_port, smtp_server


@pytest.fixture(scope="module")
def inbox_server() -> Iterator[Inbox]:
    with smtp_server() as inbox:
        yield inbox


@pytest.fixture
def inbox(inbox_server: Inbox) -> Inbox:
    with inbox_server.lock:
        inbox_server.messages.clear()
    inbox_server.answer = None
    return inbox_server


@pytest.fixture
def settings(database_url: str, inbox_server: Inbox) -> Settings:
    return Settings(database_url=database_url, secret_key="test-secret-key-" + "x" * 32,
                    base_url="http://roadmap.example", redis_url="", smtp_url=f"smtp://127.0.0.1:{inbox_server.port}",
                    mail_from="Roadmap <roadmap@example.com>", _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def worker(database, connection, settings) -> Worker:  # type: ignore[no-untyped-def]
    return Worker(bound_database(database, connection), settings)


def jobs(session, **where) -> list[OutboxJob]:  # type: ignore[no-untyped-def]
    session.expire_all()
    return list(session.scalars(select(OutboxJob).filter_by(**where).order_by(OutboxJob.id)))


def invite(session, to: str = "pat@example.com", key: str = "invite:1", **kw) -> None:  # type: ignore[no-untyped-def]
    service.enqueue_email(session, to=to, template="invitation", key=key, context={
        "portal_name": "Acme Roadmap", "inviter_name": "Ada", "link": "http://roadmap.example/invitations/abc",
        "role_label": "a product manager", "days": 7}, **kw)


def make_due(session) -> None:  # type: ignore[no-untyped-def]
    session.execute(update(OutboxJob).values(next_attempt_at=utcnow() - timedelta(seconds=1)))


class TestEnqueue:
    def test_a_rolled_back_change_queues_nothing(self, session):
        with pytest.raises(RuntimeError), session.begin_nested():
            invite(session)
            raise RuntimeError("the change failed")
        assert jobs(session) == []
        invite(session)
        assert [(j.kind, j.state, j.key) for j in jobs(session)] == [("email", JobState.pending, "email:invite:1")]

    def test_the_same_key_twice_queues_one_job(self, session):
        invite(session, key="release:7:user:3")
        invite(session, key="release:7:user:3", to="someone-else@example.com")
        service.enqueue(session, "ping", {"n": 1}, key="ping:1")
        service.enqueue(session, "ping", {"n": 2}, key="ping:1")
        assert [(j.key, j.payload.get("to") or j.payload.get("n")) for j in jobs(session)] == [
            ("email:release:7:user:3", "pat@example.com"), ("ping:1", 1)]

    def test_run_at_defers_a_job(self, session):
        service.enqueue(session, "ping", {}, run_at=utcnow() + timedelta(hours=1))
        (job,) = jobs(session)
        assert job.next_attempt_at > utcnow() + timedelta(minutes=59) and job.key.startswith("ping:")


class TestEmail:
    async def test_the_message_arrives_with_both_parts_and_its_headers(self, session, worker, inbox):
        invite(session, headers={"List-Unsubscribe": "<http://roadmap.example/unsubscribe/x>",
                                 "Message-ID": "<forged@example.com>"})
        tally = await worker.run_until_empty()
        assert tally.done == 1
        (message,) = inbox.received()
        assert message["To"] == "pat@example.com" and message["From"] == "Roadmap <roadmap@example.com>"
        assert message["Subject"] == "Ada invited you to Acme Roadmap"
        assert message["List-Unsubscribe"] == "<http://roadmap.example/unsubscribe/x>"
        assert message["Date"]
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "http://roadmap.example/invitations/abc" in text and 'href="http://roadmap.example/invitations/abc"' in html
        # The Message-ID comes from the key (a job cannot set its own): the same message has the same one.
        assert message["Message-ID"] == service.message_id("email:invite:1", "roadmap.example")
        assert message["Message-ID"].endswith("@roadmap.example>") and "forged" not in message["Message-ID"]
        (job,) = jobs(session)
        assert job.state == JobState.done and job.attempts == 1 and job.result.startswith("250 2.0.0 Queued")
        assert "context" not in job.payload  # the link in it is not kept once the message is out

    async def test_words_beyond_ascii_and_long_lines_arrive_intact_and_a_header_cannot_add_one(
            self, session, worker, settings, inbox):
        worker.settings = settings.model_copy(update={"mail_from": "Équipe Produit <roadmap@example.com>"})
        name = "Café Ünïcode — Roadmap " + "très " * 20
        service.enqueue_email(session, to="pat@example.com", template="invitation", key="utf8", context={
            "portal_name": name, "inviter_name": "Zoë", "link": "http://roadmap.example/invitations/" + "x" * 120,
            "role_label": "a product manager", "days": 7},
            headers={"X-Campaign": "spring\r\nBcc: everyone@example.com"})
        assert (await worker.run_until_empty()).done == 1
        (message,) = inbox.received()
        assert message["Subject"] == f"Zoë invited you to {name.strip()}"
        (sender,) = message["From"].addresses
        assert (sender.display_name, sender.addr_spec) == ("Équipe Produit", "roadmap@example.com")
        assert message["Bcc"] is None and message["X-Campaign"] == "spring Bcc: everyone@example.com"
        text = message.get_body(("plain",)).get_content()
        assert "Café Ünïcode" in text and "http://roadmap.example/invitations/" + "x" * 120 in text
        assert "Zoë" in message.get_body(("html",)).get_content()

    async def test_one_connection_carries_a_batch(self, session, worker, inbox, monkeypatch):
        connects = 0
        original = outbox.mailer.Mailer._connect

        async def counting(self):  # type: ignore[no-untyped-def]
            nonlocal connects
            connects += 1
            return await original(self)

        monkeypatch.setattr(outbox.mailer.Mailer, "_connect", counting)
        for n in range(25):
            invite(session, to=f"person{n}@example.com", key=f"batch:{n}")
        assert (await worker.run_until_empty()).done == 25
        assert connects == 1 and len(inbox.received()) == 25

    async def test_a_refused_recipient_fails_for_good_with_the_servers_words(self, session, worker, inbox, caplog):
        invite(session, to="refused@example.com")
        tally = await worker.run_until_empty()
        assert tally.failed == 1 and inbox.received() == []
        (job,) = jobs(session)
        assert job.state == JobState.failed and "550 5.1.1 No such user here" in job.last_error
        assert job.finished_at is not None
        assert any("refused@example.com" in r.getMessage() and "550" in r.getMessage() for r in caplog.records)

    @pytest.mark.parametrize("answer", ["451 4.3.0 Try again later", "554 5.3.0 Mail system misconfigured"])
    async def test_a_server_answering_errors_holds_the_message_until_it_is_back(self, session, worker, inbox, answer):
        inbox.answer = answer
        invite(session)
        tally = await worker.run_until_empty()
        assert tally.retried == 1 and inbox.received() == []
        (job,) = jobs(session)
        assert job.state == JobState.pending and job.attempts == 1 and answer in job.last_error
        assert job.next_attempt_at > utcnow() + timedelta(seconds=20)  # the email schedule's first wait: 30 s
        assert (await worker.run_until_empty()).total == 0  # not due yet

        inbox.answer = None
        make_due(session)
        assert (await worker.run_until_empty()).done == 1
        assert len(inbox.received()) == 1 and jobs(session)[0].attempts == 2

    async def test_a_server_that_is_down_is_tried_once_per_batch(self, session, worker, settings, inbox):
        worker.settings = settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{free_port()}"})
        for n in range(5):
            invite(session, to=f"p{n}@example.com", key=f"down:{n}")
        tally = await worker.run_until_empty()
        assert tally.retried == 5
        assert {j.state for j in jobs(session)} == {JobState.pending}
        assert all("could not be reached" in j.last_error for j in jobs(session))

    async def test_without_smtp_url_the_message_is_logged(self, session, worker, settings, inbox, caplog):
        worker.settings = settings.model_copy(update={"smtp_url": ""})
        invite(session)
        with caplog.at_level("INFO", logger="ahead.mail"):
            assert (await worker.run_until_empty()).done == 1
        assert "http://roadmap.example/invitations/abc" in caplog.text and inbox.received() == []
        assert jobs(session)[0].result == "logged: SMTP_URL is not set"


# --- handlers registered by domains -------------------------------------------------------------------------

calls: list[str] = []
dead: list[int] = []


@outbox.handler("test_fan_out")
def fan_out(session, job: outbox.Job) -> None:  # type: ignore[no-untyped-def]
    """As h12b's "notify followers": one email job per recipient, keyed (event, recipient)."""
    for n in range(job.payload["count"]):
        invite(session, to=f"follower{n}@example.com", key=f"{job.payload['event']}:{n}")


@outbox.handler("test_flaky", schedule=(10, 20), on_dead=lambda session, job: dead.append(job.id))
def flaky(session, job: outbox.Job) -> None:  # type: ignore[no-untyped-def]
    calls.append(job.payload["mode"])
    service.enqueue(session, "test_fan_out", {"count": 1, "event": f"flaky{job.attempts}"})  # kept only on success
    if job.payload["mode"] == "retry":
        raise outbox.Retry("receiver busy", after=timedelta(minutes=5))
    if job.payload["mode"] == "fail":
        raise outbox.Failed("the receiver said 410 Gone")
    if job.payload["mode"] == "bug":
        raise KeyError("oops")


@outbox.handler("test_async")
async def async_handler(session, job: outbox.Job) -> None:  # type: ignore[no-untyped-def]
    await asyncio.sleep(0)
    calls.append("async")


class TestHandlers:
    async def test_a_fan_out_job_queues_one_email_per_recipient_and_they_are_sent(self, session, worker, inbox):
        service.enqueue(session, "test_fan_out", {"count": 30, "event": "release:1"}, key="fan:release:1")
        tally = await worker.run_until_empty()
        assert tally.done == 31 and len(inbox.received()) == 30
        assert sorted(m["To"] for m in inbox.received()) == sorted(f"follower{n}@example.com" for n in range(30))
        # The event again (a worker that crashed after fanning out, say): nobody gets it twice.
        service.enqueue(session, "test_fan_out", {"count": 30, "event": "release:1"}, key="fan:release:1:again")
        assert (await worker.run_until_empty()).done == 1 and len(inbox.received()) == 30

    async def test_retry_waits_as_asked_and_nothing_the_attempt_wrote_is_kept(self, session, worker):
        calls.clear()
        service.enqueue(session, "test_flaky", {"mode": "retry"}, key="flaky")
        assert (await worker.run_until_empty()).retried == 1
        (job,) = jobs(session)
        assert job.state == JobState.pending and job.last_error == "receiver busy"
        assert timedelta(minutes=4) < job.next_attempt_at - utcnow() <= timedelta(minutes=5)

    async def test_failed_is_final(self, session, worker):
        service.enqueue(session, "test_flaky", {"mode": "fail"}, key="flaky")
        assert (await worker.run_until_empty()).failed == 1
        (job,) = jobs(session)
        assert job.state == JobState.failed and job.last_error == "the receiver said 410 Gone"

    async def test_a_bug_is_retried_by_the_schedule_then_dead_and_the_kind_is_told(self, session, worker, caplog):
        dead.clear()
        service.enqueue(session, "test_flaky", {"mode": "bug"}, key="flaky")
        await worker.run_until_empty()
        (job,) = jobs(session)
        assert job.state == JobState.pending and job.attempts == 1 and "KeyError" in job.last_error
        assert timedelta(seconds=5) < job.next_attempt_at - utcnow() <= timedelta(seconds=10)
        assert any("Traceback" in (r.exc_text or "") or r.exc_info for r in caplog.records)
        for _ in range(2):
            make_due(session)
            await worker.run_until_empty()
        (job,) = jobs(session)
        assert job.state == JobState.dead and job.attempts == 3 and dead == [job.id]

    async def test_success_keeps_what_the_handler_wrote(self, session, worker, inbox):
        service.enqueue(session, "test_flaky", {"mode": "ok"}, key="flaky")
        service.enqueue(session, "test_async", {}, key="async")
        tally = await worker.run_until_empty()
        assert tally.failed == 0 and tally.retried == 0
        assert len(inbox.received()) == 1  # the flaky job's fan-out, committed with it, ran too
        assert {j.kind: j.state for j in jobs(session)}["test_async"] == JobState.done

    async def test_a_kind_nobody_handles_fails_with_that_reason(self, session, worker):
        service.enqueue(session, "no_such_kind", {})
        assert (await worker.run_until_empty()).failed == 1
        assert "no handler" in jobs(session)[0].last_error


class TestRetryFromTheOutside:
    async def test_failed_and_dead_jobs_go_again(self, session, worker, inbox):
        invite(session, to="refused@example.com", key="a")
        invite(session, key="b")
        await worker.run_until_empty()
        assert service.counts(session).failed == 1
        session.execute(update(OutboxJob).where(OutboxJob.key == "email:b").values(state=JobState.dead))
        assert service.retry(session) == 2
        assert session.scalar(select(func.count()).select_from(OutboxJob)
                              .where(OutboxJob.state == JobState.pending)) == 2


async def test_finished_jobs_older_than_the_keep_days_are_deleted_and_nothing_else(session, worker, inbox):
    for n in range(3):
        invite(session, key=f"old:{n}")
    invite(session, to="refused@example.com", key="old:refused")
    await worker.run_until_empty()
    invite(session, key="waiting", run_at=utcnow() + timedelta(hours=1))  # pending: never deleted, however old
    session.execute(update(OutboxJob).values(finished_at=utcnow() - timedelta(days=31),
                                             created_at=utcnow() - timedelta(days=31)))
    invite(session, key="recent")
    await worker.run_until_empty()
    assert worker.purge() == 4
    assert {j.key for j in jobs(session)} == {"email:waiting", "email:recent"}


class TestWakingTheWorker:
    """A commit that enqueued something wakes this process's worker: the app's sessions' commits only."""

    @pytest.fixture
    def woken(self, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
        calls: list[bool] = []
        monkeypatch.setattr(registry, "wake", lambda: calls.append(True))
        return calls

    def test_a_commit_of_the_apps_sessions_that_enqueued_wakes_it(self, database, connection, woken):  # type: ignore[no-untyped-def]
        bound = bound_database(database, connection)
        wake_on_commit(bound)
        wake_on_commit(bound)  # once per factory, however often
        with bound.new_session(write=True) as session:
            invite(session)
            session.commit()
        assert woken == [True]
        with bound.new_session(write=True) as session:
            session.commit()  # nothing enqueued: nobody woken
        assert woken == [True]

    def test_a_session_not_of_the_app_never_wakes_it(self, database, connection, woken):  # type: ignore[no-untyped-def]
        wake_on_commit(bound_database(database, connection))  # the app's factories listen; others do not
        for session in (Session(bind=connection, join_transaction_mode="create_savepoint"),
                        sessionmaker(bind=connection, join_transaction_mode="create_savepoint")()):
            with session:
                invite(session, key=f"invite:{id(session)}")
                session.commit()
        assert woken == []


@pytest.mark.parametrize("lost", [True, False], ids=["connection lost", "anything else"])
async def test_a_failed_batch_is_logged_in_one_line_when_the_database_connection_was_lost(
        worker, monkeypatch, caplog, lost):  # type: ignore[no-untyped-def]
    """PostgreSQL restarted or the worker's backend ended: the pool replaces the connection and the next batch goes
    through, so the operator's log says so in a line (as a request's does), not with an ERROR's traceback; any
    other failure keeps its traceback."""
    stop = asyncio.Event()
    cause = Exception("terminating connection due to administrator command")

    async def failing() -> None:
        stop.set()  # the worker carries on after a pause: it ends here instead
        raise OperationalError("SELECT ... FROM outbox_jobs", {}, cause, connection_invalidated=lost)

    monkeypatch.setattr(worker, "run_batch", failing)
    monkeypatch.setattr(worker, "purge", lambda: None)
    with caplog.at_level("WARNING", logger="ahead.outbox"):
        await asyncio.wait_for(worker.run_forever(stop), 10)

    [record] = [r for r in caplog.records if "a batch failed" in r.getMessage()]
    if lost:
        assert record.levelname == "WARNING" and record.exc_info is None
        assert record.getMessage().endswith("(its database connection was lost: terminating connection due to "
                                            "administrator command)")
    else:
        assert record.levelname == "ERROR" and record.exc_info is not None
