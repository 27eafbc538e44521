"""A mail server that hangs or answers errors never holds up a page: the app's own worker (running in the
background here, as in `ahead serve`) waits on it, pages and sign-in requests answer as usual, and the messages
go out once the server is back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from app import main
from app.config import Settings
from app.db import Database
from app.main import create_app
from app.outbox.models import JobState, OutboxJob
from app.outbox.service import enqueue
from app.portal.models import PortalSetting
from app.webhooks import service as webhooks
from app.webhooks.models import WebhookEndpoint
from tests.helpers.databases import connected, own_database
from tests.helpers.http import csrf_token
from tests.helpers.smtp import silent_server, smtp_server
from tests.webhooks.receiver import receiver

SLOWEST = 2.0  # seconds: far below what the mail server makes the worker wait (30 s held, 15 s timeout)


@pytest.fixture(scope="module")
def own_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with own_database(tmp_path_factory.mktemp("unaffected"), "unaffected") as url:
        yield url


@pytest.fixture
def own_db(own_url: str) -> Iterator[Database]:
    with connected(own_url) as database:
        yield database


def app_settings(url: str, smtp_port: int) -> Settings:
    return Settings(database_url=url, secret_key="test-secret-key-" + "x" * 32, base_url="http://testserver",
                    redis_url="", smtp_url=f"smtp://127.0.0.1:{smtp_port}", outbox_worker=True,
                    magic_link_rate_limit="100/hour", magic_link_ip_rate_limit="100/hour",
                    _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def running(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    monkeypatch.setattr(main, "OUTBOX_STOP_SECONDS", 1.0)  # a worker stuck on the server is not waited for long
    yield


async def timed_requests(client: httpx.AsyncClient, count: int) -> list[float]:
    took = []
    for n in range(count):
        started = time.perf_counter()
        if n % 4 == 3:
            token = await csrf_token(client, "/login")
            answer = await client.post("/login/email", data={"link_email": f"more{n}@example.com", "next": "",
                                                              "csrf_token": token})
            assert answer.status_code == 303
        else:
            assert (await client.get("/")).status_code == 200
        took.append(time.perf_counter() - started)
    return took


def last_error(database: Database, to: str) -> str:
    with database.transaction() as session:
        return next((job.last_error for job in session.scalars(select(OutboxJob)) if job.payload["to"] == to), "")


def job_states(database: Database) -> dict[str, JobState]:
    with database.transaction() as session:
        return {job.payload["to"]: job.state for job in session.scalars(select(OutboxJob))}


async def test_a_mail_server_that_hangs_holds_up_no_page_and_the_mail_goes_out_when_it_is_back(
        own_url, own_db, running):
    with smtp_server() as inbox:
        inbox.hang.set()
        app = create_app(app_settings(own_url, inbox.port))
        async with LifespanManager(app) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
            token = await csrf_token(client, "/login")
            await client.post("/login/email", data={"link_email": "first@example.com", "next": "",
                                                     "csrf_token": token})
            # The commit woke the worker at once; it is now stuck in the middle of handing the message over.
            assert await anyio.to_thread.run_sync(inbox.data_started.wait, 5)
            took = await timed_requests(client, 12)
            assert max(took) < SLOWEST, took
            assert inbox.received() == []

            inbox.hang.clear()  # the server is back
            with anyio.fail_after(20):
                while len(inbox.received()) < 4:
                    await anyio.sleep(0.1)
        assert sorted(m["To"] for m in inbox.received()) == sorted(
            ["first@example.com", "more3@example.com", "more7@example.com", "more11@example.com"])


async def test_a_mail_server_that_never_answers_holds_up_no_page_and_the_mail_waits(own_url, own_db, running):
    with silent_server() as port:
        app = create_app(app_settings(own_url, port))
        async with LifespanManager(app) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
            token = await csrf_token(client, "/login")
            await client.post("/login/email", data={"link_email": "silent@example.com", "next": "",
                                                     "csrf_token": token})
            await anyio.sleep(0.3)  # the worker is connecting, and will wait for a greeting that never comes
            took = await timed_requests(client, 8)
            assert max(took) < SLOWEST, took
    assert job_states(own_db)["silent@example.com"] == JobState.pending  # waiting for its next attempt


async def test_a_mail_server_that_answers_errors_holds_up_no_page_and_the_mail_goes_out_when_it_is_put_right(
        own_url, own_db, running):
    with smtp_server() as inbox:
        inbox.answer = "554 5.3.0 Mail system misconfigured"
        app = create_app(app_settings(own_url, inbox.port))
        async with LifespanManager(app) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
            token = await csrf_token(client, "/login")
            await client.post("/login/email", data={"link_email": "erring@example.com", "next": "",
                                                     "csrf_token": token})
            took = await timed_requests(client, 8)
            assert max(took) < SLOWEST, took
            with anyio.fail_after(10):
                while "554 5.3.0" not in last_error(own_db, "erring@example.com"):
                    await anyio.sleep(0.1)
        assert job_states(own_db)["erring@example.com"] == JobState.pending and inbox.received() == []
        assert "554 5.3.0 Mail system misconfigured" in last_error(own_db, "erring@example.com")
        with own_db.transaction() as session:
            job = session.scalar(select(OutboxJob).where(OutboxJob.key.like("email:magic_link:%"),
                                                         OutboxJob.payload["to"].as_string() == "erring@example.com"))
            assert job is not None
            job.next_attempt_at = job.created_at  # its next attempt is due now, the server put right
        inbox.answer = None
        app = create_app(app_settings(own_url, inbox.port))
        async with LifespanManager(app):
            with anyio.fail_after(10):
                while not inbox.to("erring@example.com"):
                    await anyio.sleep(0.1)


async def test_a_sign_in_link_arrives_within_a_second_or_two_woken_by_the_commit_not_the_poll(own_url, own_db, running):
    with smtp_server() as inbox:
        settings = app_settings(own_url, inbox.port).model_copy(update={"outbox_poll_seconds": 60.0})
        app = create_app(settings)
        async with LifespanManager(app) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
            await anyio.sleep(0.5)  # the worker has looked once and now waits a minute, unless woken
            token = await csrf_token(client, "/login")
            answered = await client.post("/login/email", data={"link_email": "quick@example.com", "next": "",
                                                                "csrf_token": token})
            assert answered.status_code == 303
            started = time.perf_counter()
            with anyio.fail_after(10):
                while not inbox.to("quick@example.com"):
                    await anyio.sleep(0.02)
            assert time.perf_counter() - started < 2.0


@pytest.fixture
def hooks_url(tmp_path: Path) -> Iterator[str]:
    with own_database(tmp_path, "hooks") as url:  # its webhook jobs stay out of the other tests' outbox
        yield url


async def test_a_hanging_webhook_receiver_holds_up_no_email_and_no_other_receiver(hooks_url, running):
    """Webhook calls run in a lane of their own: three calls to a receiver that never answers are under way,
    and an email and a call to another receiver queued after them still go out at once."""
    with smtp_server() as inbox, receiver() as hanging, receiver() as quick, connected(hooks_url) as own_db:
        hanging.hang_seconds = 15  # beyond the 10 s a call is given
        with own_db.transaction() as session:
            session.add(PortalSetting(key=webhooks.SETTING_KEY, value={"allow_private": True}))
            slow = WebhookEndpoint(url=hanging.url, secret=webhooks.new_secret(), events=["item.published"])
            fast = WebhookEndpoint(url=quick.url, secret=webhooks.new_secret(), events=["item.published"])
            session.add_all([slow, fast])
            session.flush()
            event = {"type": "item.published", "timestamp": "2026-01-01T00:00:00Z", "version": 1, "data": {}}
            for n in range(3):
                enqueue(session, webhooks.KIND, {"endpoint_id": slow.id, "message_id": f"msg_slow{n}", "event": event},
                        key=f"webhook:slow{n}")
        app = create_app(app_settings(hooks_url, inbox.port))
        async with LifespanManager(app, shutdown_timeout=30) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
            with anyio.fail_after(5):
                while len(hanging.calls) < 3:  # all three calls are under way (and hang)
                    await anyio.sleep(0.02)
            with own_db.transaction() as session:
                enqueue(session, webhooks.KIND, {"endpoint_id": fast.id, "message_id": "msg_fast", "event": event},
                        key="webhook:fast")
            token = await csrf_token(client, "/login")
            answered = await client.post("/login/email", data={"link_email": "after@example.com", "next": "",
                                                                "csrf_token": token})
            assert answered.status_code == 303
            started = time.perf_counter()
            with anyio.fail_after(10):
                while not (inbox.to("after@example.com") and quick.calls):
                    await anyio.sleep(0.02)
            assert time.perf_counter() - started < SLOWEST
            assert len(hanging.calls) == 3  # still hanging: nothing waited for them
