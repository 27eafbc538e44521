"""Email magic links against a real SMTP server (aiosmtpd): the link is read from the message that
arrived and followed like a person would."""

from __future__ import annotations

import email
import email.policy
import logging
import re
import socket
import threading
from datetime import timedelta

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update

from app.accounts.models import Identity, IdentityKind, MagicLink, Role, User, UserSession
from app.config import Settings
from app.db import utcnow
from app.organisations.models import Organisation, OrganisationDomain
from app.outbox.models import OutboxJob
from app.portal.models import PortalSetting
from tests.factories import make_user
from tests.helpers.http import csrf_token, post_form
from tests.helpers.outbox import deliver, remember_app

pytestmark = pytest.mark.anyio

LINK = re.compile(r"http://testserver(/login/email/[A-Za-z0-9_-]+)")


class Inbox:
    """aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["X-Envelope-To"] == address]

    def link_for(self, address: str) -> str:
        messages = self.to(address)
        assert messages, f"no email to {address}"
        text = messages[-1].get_body(("plain",)).get_content()
        match = LINK.search(text)
        assert match, text
        return match.group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def smtp():
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.port = port  # type: ignore[attr-defined]
    yield inbox
    controller.stop()


@pytest.fixture
def inbox(smtp):
    with smtp.lock:
        smtp.messages.clear()
    return smtp


@pytest.fixture
def settings(database_url, smtp):
    return Settings(database_url=database_url, secret_key="test-secret-key-" + "x" * 32,
                    base_url="http://testserver", redis_url="", smtp_url=f"smtp://127.0.0.1:{smtp.port}",
                    _env_file=None)  # type: ignore[call-arg]


async def ask_for_link(client, address, next_=""):
    """Ask for a link, then deliver what was queued (the app's outbox worker would within a second)."""
    response = await post_form(client, "/login/email", {"link_email": address, "next": next_}, page="/login")
    await deliver(client)
    return response


def count(session, model, *where):
    return session.scalar(select(func.count()).select_from(model).where(*where))


async def test_login_page_offers_an_email_link(client):
    page = await client.get("/login")
    assert "Email me a sign-in link" in page.text
    assert 'action="/login/email"' in page.text and 'name="link_email"' in page.text


async def test_a_new_customer_signs_in_with_the_link_from_the_email(client, session, inbox):
    acme = Organisation(name="Acme")
    acme.domains = [OrganisationDomain(domain="acme.example")]
    session.add(acme)
    session.flush()

    asked = await ask_for_link(client, "  New.Person@Acme.example ", next_="/changelog")
    assert asked.status_code == 303 and asked.headers["location"] == "/login/email/sent"
    sent = await client.get("/login/email/sent")
    assert "Check your email" in sent.text and "15 minutes" in sent.text
    # Nothing is created before the link is used: asking proves nothing about the mailbox.
    assert count(session, User) == 0

    message = inbox.to("new.person@acme.example")[-1]
    assert message["Subject"] == "Your sign-in link for Ahead"
    path = inbox.link_for("new.person@acme.example")
    assert path in message.get_body(("html",)).get_content()

    confirm = await client.get(path)
    assert confirm.status_code == 200
    assert "new.person@acme.example" in confirm.text and ">Sign in</button>" in confirm.text
    assert count(session, UserSession) == 0  # opening the link (a mail scanner would) signs nobody in

    signed_in = await post_form(client, path, page=path)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/changelog"
    assert "ahead_session=" in signed_in.headers["set-cookie"]
    user = session.scalar(select(User).where(User.email == "new.person@acme.example"))
    assert user is not None and user.organisation_id == acme.id
    identity = session.scalar(select(Identity).where(Identity.user_id == user.id))
    assert (identity.kind, identity.issuer, identity.subject) == (IdentityKind.email, "email", user.email)
    landing = await client.get("/changelog")
    assert "You are signed in as new.person@acme.example" in landing.text


async def test_an_existing_customer_signs_in_to_their_account(client, session, inbox):
    known = make_user(session, email="known@example.com", display_name="Kim Known")
    await ask_for_link(client, "known@example.com")
    path = inbox.link_for("known@example.com")
    await client.get(path)
    response = await post_form(client, path, page=path)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert count(session, UserSession, UserSession.user_id == known.id) == 1
    assert "Kim Known" in (await client.get("/")).text


async def test_the_link_works_once(client, session, inbox):
    await ask_for_link(client, "once@example.com")
    path = inbox.link_for("once@example.com")
    assert (await post_form(client, path, page=path)).status_code == 303

    client.cookies.clear()
    again_page = await client.get(path)
    assert again_page.status_code == 410
    assert "expired or was already used" in again_page.text and "Email me a sign-in link" in again_page.text
    token = await csrf_token(client, "/login")
    again = await client.post(path, data={"csrf_token": token})
    assert again.status_code == 410 and "expired or was already used" in again.text
    assert "ahead_session" not in again.headers.get("set-cookie", "")
    assert count(session, UserSession) == 1


async def test_a_link_older_than_15_minutes_has_expired(client, session, inbox):
    await ask_for_link(client, "late@example.com")
    path = inbox.link_for("late@example.com")
    sixteen_minutes_ago = utcnow() - timedelta(minutes=16)
    session.execute(update(MagicLink).where(MagicLink.email == "late@example.com")
                    .values(created_at=sixteen_minutes_ago, expires_at=sixteen_minutes_ago + timedelta(minutes=15)))

    page = await client.get(path)
    assert page.status_code == 410 and "expired or was already used" in page.text
    response = await post_form(client, path, page="/login")
    assert response.status_code == 410
    assert count(session, User) == 0 and count(session, UserSession) == 0


async def test_an_unknown_or_damaged_link_gets_the_same_page(client, session):
    page = await client.get("/login/email/not-a-real-token")
    assert page.status_code == 410 and "expired or was already used" in page.text
    response = await post_form(client, "/login/email/not-a-real-token", page="/login")
    assert response.status_code == 410 and count(session, UserSession) == 0


async def test_known_and_unknown_addresses_get_the_same_answer(client, session, inbox):
    make_user(session, email="here@example.com")
    known = await ask_for_link(client, "here@example.com")
    unknown = await ask_for_link(client, "nobody-yet@example.com")
    assert known.status_code == unknown.status_code == 303
    assert known.headers["location"] == unknown.headers["location"]
    # (a public portal: both get a link; the unknown one would create the account when used)
    assert inbox.to("here@example.com") and inbox.to("nobody-yet@example.com")


async def test_no_link_is_mailed_to_a_staff_address_and_the_answer_does_not_say_so(client, session, inbox,
                                                                                     caplog):
    make_user(session, email="pm@example.com", role=Role.pm)
    make_user(session, email="customer@example.com")
    caplog.set_level(logging.WARNING, logger="ahead.accounts")
    staff = await ask_for_link(client, "PM@example.com")
    customer = await ask_for_link(client, "customer@example.com")
    assert staff.status_code == customer.status_code == 303
    assert staff.headers["location"] == customer.headers["location"] == "/login/email/sent"
    assert inbox.to("customer@example.com") and not inbox.to("pm@example.com")
    assert count(session, MagicLink, MagicLink.email == "pm@example.com") == 0
    assert any(r.name == "ahead.accounts" and r.levelno == logging.WARNING and "pm@example.com" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("role", [Role.admin, Role.pm])
async def test_a_link_issued_before_the_address_became_staff_does_not_sign_in(client, session, caplog, role):
    from app.accounts import service as accounts

    staff = make_user(session, email="promoted@example.com", role=role)
    token = accounts.create_magic_link(session, email="promoted@example.com")
    caplog.set_level(logging.WARNING, logger="ahead.accounts")
    response = await post_form(client, f"/login/email/{token}", page=f"/login/email/{token}")
    assert response.status_code == 403
    assert "belongs to a staff account" in response.text and "email sign-in link" in response.text
    assert "ahead_session=" not in response.headers.get("set-cookie", "")
    assert count(session, UserSession) == 0 and count(session, Identity) == 0
    session.expire_all()
    assert staff.role is role
    assert any(r.name == "ahead.accounts" and "email link" in r.getMessage() and "promoted@example.com" in r.getMessage()
               for r in caplog.records)


async def test_a_private_portal_sends_nothing_to_strangers_but_answers_the_same(client, session, inbox):
    session.add(PortalSetting(key="access", value={"private_mode": True}))
    session.flush()
    make_user(session, email="member@example.com")
    known = await ask_for_link(client, "member@example.com")
    stranger = await ask_for_link(client, "stranger@elsewhere.example")
    assert known.status_code == stranger.status_code == 303
    assert known.headers["location"] == stranger.headers["location"] == "/login/email/sent"
    assert inbox.to("member@example.com") and not inbox.to("stranger@elsewhere.example")


async def test_next_is_kept_only_when_it_stays_on_the_site(client, session, inbox):
    await ask_for_link(client, "away@example.com", next_="https://evil.example/")
    path = inbox.link_for("away@example.com")
    response = await post_form(client, path, page=path)
    assert response.headers["location"] == "/"


async def test_a_next_too_long_for_any_address_is_dropped_and_the_link_is_sent(client, session, inbox):
    refused = await ask_for_link(client, "not an address", next_="/" + "a" * 2001)
    assert refused.status_code == 422 and 'value="not an address"' in refused.text  # the address's message only
    assert "Enter a valid email address" in refused.text and "a" * 2001 not in refused.text
    asked = await ask_for_link(client, "long@example.com", next_="/" + "a" * 2001)
    assert asked.status_code == 303 and asked.headers["location"] == "/login/email/sent"
    path = inbox.link_for("long@example.com")
    assert (await post_form(client, path, page=path)).headers["location"] == "/"


async def test_an_invalid_address_is_shown_again_with_the_problem(client, inbox):
    response = await ask_for_link(client, "not an address")
    assert response.status_code == 422
    assert "Enter a valid email address" in response.text and 'value="not an address"' in response.text
    assert not inbox.messages


async def test_requests_are_rate_limited_per_address(client, session, inbox):
    statuses = [(await ask_for_link(client, "busy@example.com")).status_code for _ in range(6)]
    assert statuses == [303] * 5 + [429]
    assert len(inbox.to("busy@example.com")) == 5
    blocked = await ask_for_link(client, "busy@example.com")
    assert blocked.status_code == 429 and blocked.headers["retry-after"]
    assert "Too many sign-in links" in blocked.text and "Please wait" in blocked.text
    # another address from the same network is still served
    assert (await ask_for_link(client, "calm@example.com")).status_code == 303


async def test_requests_are_rate_limited_per_network(client, session, inbox):
    statuses = [(await ask_for_link(client, f"person{n}@example.com")).status_code for n in range(31)]
    assert statuses[:30] == [303] * 30 and statuses[30] == 429
    assert len(inbox.messages) == 30


def _limits(app, **limits):  # type: ignore[no-untyped-def]
    app.state.settings = app.state.settings.model_copy(update=limits)  # per day: no window boundary mid-test


def browser_at(app, ip):  # type: ignore[no-untyped-def]
    browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 50123)),
                                base_url="http://testserver")
    remember_app(browser, app)
    return browser


async def test_one_network_asking_too_often_does_not_stop_the_person_elsewhere(app, client, session, inbox):
    _limits(app, magic_link_rate_limit="2/day", magic_link_address_rate_limit="10/day")
    async with browser_at(app, "203.0.113.7") as other, browser_at(app, "198.51.100.20") as theirs:
        assert [(await ask_for_link(other, "dee@example.com")).status_code for _ in range(3)] == [303, 303, 429]
        assert (await ask_for_link(theirs, "dee@example.com")).status_code == 303
    assert len(inbox.to("dee@example.com")) == 3


async def test_a_mailbox_gets_a_bounded_number_of_links_from_all_networks_together(app, client, session, inbox):
    _limits(app, magic_link_rate_limit="2/day", magic_link_address_rate_limit="3/day")
    async with browser_at(app, "203.0.113.7") as a, browser_at(app, "203.0.113.8") as b, \
            browser_at(app, "203.0.113.9") as c:
        statuses = [(await ask_for_link(browser, "dee@example.com")).status_code for browser in (a, a, b, b, c)]
        assert statuses == [303, 303, 303, 429, 429]
        assert (await ask_for_link(c, "someone-else@example.com")).status_code == 303
    assert len(inbox.to("dee@example.com")) == 3


async def test_when_smtp_is_down_the_page_still_answers_and_no_link_is_lost_silently(client, session, app, caplog,
                                                                                     inbox):
    app.state.settings = app.state.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{_free_port()}"})
    response = await ask_for_link(client, "unlucky@example.com")
    assert response.status_code == 303
    # The log says who did not get what, and why; the link waits in the outbox for its next attempt.
    failures = [r.getMessage() for r in caplog.records if r.name == "ahead.outbox"]
    assert any("unlucky@example.com" in m and "could not be reached" in m for m in failures), failures
    job = session.scalar(select(OutboxJob).where(OutboxJob.kind == "email"))
    assert job.state == "pending" and job.attempts == 1 and "could not be reached" in job.last_error

    # The server is back (the worker tries again when the job is due): the link arrives and works.
    app.state.settings = app.state.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{inbox.port}"})
    session.execute(update(OutboxJob).values(next_attempt_at=OutboxJob.created_at))
    await deliver(client)
    assert "unlucky@example.com" in (await client.get(inbox.link_for("unlucky@example.com"))).text


async def test_the_token_is_stored_only_as_a_hash(client, session, inbox):
    await ask_for_link(client, "hash@example.com")
    token = inbox.link_for("hash@example.com").rsplit("/", 1)[1]
    stored = session.scalar(select(MagicLink.token_hash).where(MagicLink.email == "hash@example.com"))
    assert stored and token not in stored and len(stored) == 64
