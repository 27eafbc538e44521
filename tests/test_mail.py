"""Mail goes out after the request's transaction committed, never inside it and never when it rolled back.

The apps here run their outbox worker in the background, as `ahead serve` does: the commit wakes it.

Every place that sends mail: staff invitations and email sign-in links. Against a real SMTP server (aiosmtpd)
that is slow on purpose: it holds each message until the test lets it go. The "answers before the server
accepts" tests run the app behind a real uvicorn (httpx's ASGITransport only returns when the app's call has
finished, after-commit work included); the rollback tests use the ASGITransport for exactly that reason: when
the answer is back, everything the request would ever send has been sent.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from aiosmtpd.controller import Controller
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select, text

from app.accounts import service as accounts
from app.accounts.models import Invitation, MagicLink
from app.config import Settings
from app.db import Database
from app.deps import SESSION_COOKIE
from app.main import create_app
from tests.factories import make_admin
from tests.helpers.databases import connected, own_database
from tests.helpers.http import csrf_token
from tests.helpers.servers import serve

INVITATION_LINK = re.compile(r"http://testserver(/invitations/[A-Za-z0-9_-]+)")
MAGIC_LINK = re.compile(r"http://testserver(/login/email/[A-Za-z0-9_-]+)")


class SlowInbox:
    """An SMTP handler that accepts a message only once `release` is set (as a slow relay would)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.arrived = threading.Event()
        self.lock = threading.Lock()
        self.messages: list[email.message.EmailMessage] = []
        self.started = threading.Event()  # a message is being transferred, not yet accepted

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.started.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)
        self.arrived.set()
        return "250 Message accepted for delivery"

    def received(self) -> list[email.message.EmailMessage]:
        with self.lock:
            return list(self.messages)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def inbox() -> Iterator[tuple[SlowInbox, int]]:
    handler = SlowInbox()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        handler.release.set()
        controller.stop()


@pytest.fixture(scope="module")
def own_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with own_database(tmp_path_factory.mktemp("mail"), "mail") as url:
        yield url


@pytest.fixture(scope="module")
def own_db(own_url: str) -> Iterator[Database]:
    with connected(own_url) as database:
        yield database


@pytest.fixture
def mail_settings(own_url: str, inbox: tuple[SlowInbox, int], tmp_path: Path) -> Settings:
    return Settings(database_url=own_url, secret_key="test-secret-key-" + "x" * 32, base_url="http://testserver",
                    redis_url="", smtp_url=f"smtp://127.0.0.1:{inbox[1]}", _env_file=None,  # type: ignore[call-arg]
                    outbox_worker=True)  # these apps run their outbox worker, as `ahead serve` does


@pytest.fixture
def admin_token(own_db: Database) -> str:
    with own_db.transaction() as session:
        admin = make_admin(session, password=None, display_name="Ada Admin")
        return accounts.start_session(session, user=admin)


@pytest.fixture
async def served(mail_settings: Settings) -> AsyncIterator[str]:
    with serve(create_app(mail_settings)) as url:
        yield url


@pytest.fixture
async def in_process(mail_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(mail_settings)
    async with LifespanManager(app) as manager, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
        yield client


def _count(database: Database, model: type, *where: object) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def _arrives(inbox: SlowInbox) -> bool:
    return await anyio.to_thread.run_sync(inbox.arrived.wait, 15)


class TestAnsweredBeforeTheMailServerAccepts:
    async def test_an_invitation(self, served, inbox, own_db, admin_token):
        handler, _ = inbox
        async with httpx.AsyncClient(base_url=served) as client:
            client.cookies.set(SESSION_COOKIE, admin_token)
            token = await csrf_token(client, "/admin/staff")
            with anyio.fail_after(10):
                answer = await client.post("/admin/staff/invitations", data={
                    "email": "pat@example.com", "role": "pm", "csrf_token": token})
            assert answer.status_code == 303
            # The answer is here; the mail server has not accepted anything yet ...
            assert handler.received() == []
            # ... and the invitation was committed before the mail was handed over.
            assert _count(own_db, Invitation, Invitation.email == "pat@example.com") == 1

            page = (await client.get("/admin/staff")).text
            # The page cannot know whether the email will arrive: it says so, and gives the link.
            assert "Invitation emailed" not in page
            assert "Invitation created for pat@example.com" in page
            shown = INVITATION_LINK.search(page)
            assert shown is not None

            handler.release.set()
            assert await _arrives(handler)
            mail = handler.received()
            assert len(mail) == 1 and mail[0]["To"] == "pat@example.com"
            sent = INVITATION_LINK.search(mail[0].get_body(("plain",)).get_content())
            assert sent is not None and sent.group(1) == shown.group(1)
            client.cookies.clear()
            assert (await client.get(sent.group(1))).status_code == 200  # the link in the mail works

    async def test_a_sign_in_link(self, served, inbox, own_db):
        handler, _ = inbox
        async with httpx.AsyncClient(base_url=served) as client:
            token = await csrf_token(client, "/login")
            with anyio.fail_after(10):
                answer = await client.post("/login/email", data={"link_email": "kim@example.com", "next": "",
                                                                  "csrf_token": token})
            assert answer.status_code == 303 and answer.headers["location"] == "/login/email/sent"
            assert handler.received() == []
            assert _count(own_db, MagicLink, MagicLink.email == "kim@example.com") == 1

            handler.release.set()
            assert await _arrives(handler)
            link = MAGIC_LINK.search(handler.received()[0].get_body(("plain",)).get_content())
            assert link is not None
            assert "kim@example.com" in (await client.get(link.group(1))).text


class TestNothingIsSentWhenTheRequestRollsBack:
    """The commit itself fails (PostgreSQL checks a deferred constraint trigger only at COMMIT): the person
    gets an error, nothing is stored, and no email goes out with a link that does not exist."""

    @pytest.fixture
    def failing_commit(self, own_db: Database, own_url: str) -> Iterator[None]:
        if not own_url.startswith("postgresql"):
            pytest.skip("needs a commit that fails after the request's last statement: PostgreSQL's deferred "
                        "constraint triggers (tests/test_db.py checks the same rule on both databases)")
        with own_db.engine.begin() as conn:
            conn.execute(text("CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"))
            for table in ("invitations", "magic_links"):
                conn.execute(text(f"CREATE CONSTRAINT TRIGGER refuse_{table} AFTER INSERT ON {table} "
                                  "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()"))
        try:
            yield
        finally:
            with own_db.engine.begin() as conn:
                for table in ("invitations", "magic_links"):
                    conn.execute(text(f"DROP TRIGGER refuse_{table} ON {table}"))
                conn.execute(text("DROP FUNCTION refuse_at_commit()"))

    async def test_an_invitation(self, in_process, inbox, own_db, admin_token, failing_commit):
        handler, _ = inbox
        handler.release.set()  # a send would go through at once: when the answer is back, it would be here
        in_process.cookies.set(SESSION_COOKIE, admin_token)
        token = await csrf_token(in_process, "/admin/staff")
        answer = await in_process.post("/admin/staff/invitations", data={
            "email": "lee@example.com", "role": "admin", "csrf_token": token})
        assert answer.status_code == 500 and "could not be saved" in answer.text
        assert _count(own_db, Invitation, Invitation.email == "lee@example.com") == 0
        assert handler.received() == [] and not handler.started.is_set()

    async def test_a_sign_in_link(self, in_process, inbox, own_db, failing_commit):
        handler, _ = inbox
        handler.release.set()
        token = await csrf_token(in_process, "/login")
        answer = await in_process.post("/login/email", data={"link_email": "max@example.com", "next": "",
                                                              "csrf_token": token})
        assert answer.status_code == 500
        assert _count(own_db, MagicLink, MagicLink.email == "max@example.com") == 0
        assert handler.received() == [] and not handler.started.is_set()
