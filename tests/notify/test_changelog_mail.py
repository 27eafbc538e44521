"""The changelog by email, end to end through aiosmtpd: a visitor's double opt-in (a link that works once), a
signed-in person's Subscribe button and preference, the entry's email with its one-click unsubscribe followed
without a session, and what an attacker cannot do (tell addresses apart, subscribe someone, ask without end)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from app.changelog import service as changelog
from app.config import Settings
from app.db import utcnow
from app.notify import changelog as subscriptions
from app.notify import service as notify
from app.notify.models import ChangelogSubscriber, Delivery, DigestEntry, EventKind
from app.outbox.models import OutboxJob
from app.roadmap.models import Visibility
from tests.factories import make_pm, make_user
from tests.helpers.http import client_for, csrf_token, post_form, sign_in
from tests.helpers.outbox import deliver
from tests.helpers.smtp import Inbox, smtp_server
from tests.roadmap.helpers import released

SECRET = "test-secret-key-" + "x" * 32


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def mail_settings(database_url: str, inbox: Inbox) -> Settings:
    return Settings(database_url=database_url, secret_key=SECRET, base_url="http://testserver", redis_url="",
                    smtp_url=f"smtp://127.0.0.1:{inbox.port}", _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def web(mail_settings: Settings, database, connection, monkeypatch) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(notify, "job_settings", lambda: mail_settings)
    async with client_for(mail_settings, database, connection) as c:
        yield c


@pytest.fixture
async def stranger(mail_settings: Settings, database, connection) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """Another browser, or a mail provider's server: no cookies of anyone's."""
    async with client_for(mail_settings, database, connection) as c:
        yield c


def _take(inbox: Inbox) -> dict[str, EmailMessage]:
    got = {str(m["X-Envelope-To"]): m for m in inbox.received()}
    with inbox.lock:
        inbox.messages.clear()
    return got


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def _html(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def _link(message: EmailMessage, prefix: str) -> str:
    found = re.search(r"http://testserver(" + re.escape(prefix) + r"[^\s<>\"]+)", _text(message))
    assert found, _text(message)
    return found.group(1)


async def _subscribe(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await post_form(client, "/changelog/subscribe", {"email": email}, page="/changelog/subscribe")


async def _publish(web: httpx.AsyncClient, session, title: str, items: list[int], **fields: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    pm = make_pm(session)
    web.cookies.clear()
    sign_in(web, session, pm)
    data = {"title": title, "notes": "Read [the roadmap](/) for what is next.", "product_id": "", "when": "now",
            "publish_at": "", "items": [str(i) for i in items], **fields}
    response = await post_form(web, "/admin/changelog", data, page="/admin/changelog/new")
    web.cookies.clear()
    return response


class TestAVisitor:
    async def test_subscribes_only_by_clicking_the_link_and_unsubscribes_in_one_click(self, web, stranger, session,
                                                                                      inbox):
        item = released(session, "Dark mode", 5, summary="Easier on the eyes.")
        asked = await _subscribe(stranger, "Reader@Example.com")
        assert asked.status_code == 303
        assert "we sent a link to reader@example.com" in (await stranger.get(asked.headers["location"])).text
        assert session.scalar(select(func.count()).select_from(ChangelogSubscriber)) == 0  # nothing kept yet

        await deliver(web)
        confirm = _take(inbox)["reader@example.com"]
        assert str(confirm["Subject"]) == "Confirm: changelog emails from Ahead"
        path = _link(confirm, "/changelog-subscription/")
        assert path in _html(confirm)

        # Not confirmed: a published entry is not sent to the address.
        await _publish(web, session, "Before confirming", [])
        await deliver(web)
        assert "reader@example.com" not in _take(inbox)

        page = await stranger.get(path)  # what a link scanner does changes nothing
        assert page.status_code == 200 and "Confirm" in page.text and "reader@example.com" in page.text
        assert not subscriptions.is_subscribed(session, email="reader@example.com")
        token = await csrf_token(stranger, path)
        done = await stranger.post(path, data={"csrf_token": token})
        assert done.status_code == 200 and "You are subscribed" in done.text
        assert subscriptions.is_subscribed(session, email="reader@example.com")
        again = await stranger.post(path, data={"csrf_token": token})
        assert again.status_code == 410  # the link works once

        response = await _publish(web, session, "Spring release", [item.id])
        assert response.status_code == 303
        # The request queued one job for the entry; the emails are the worker's business.
        assert session.scalar(select(func.count()).select_from(OutboxJob).where(
            OutboxJob.kind == changelog.MAIL_JOB, OutboxJob.state == "pending")) == 1
        assert session.scalar(select(func.count()).select_from(OutboxJob).where(
            OutboxJob.kind == "email", OutboxJob.state == "pending")) == 0
        await deliver(web)
        message = _take(inbox)["reader@example.com"]
        assert str(message["Subject"]) == "Spring release · Ahead changelog"
        text, html = _text(message), _html(message)
        assert "Dark mode: Easier on the eyes." in text and f"http://testserver{item.path}" in text
        entry = session.scalar(select(changelog.ChangelogEntry).where(changelog.ChangelogEntry.title == "Spring release"))
        assert entry is not None and f"http://testserver{entry.path}" in text
        assert 'href="http://testserver/"' in html  # the notes' relative link, made absolute
        # No account, so no preferences link: the email says unsubscribing is all there is.
        assert "no account: there is nothing else to set" in text and "no account: there is nothing else to set" in html
        assert "Choose what you hear about" not in text
        assert str(message["List-Unsubscribe-Post"]).strip() == "List-Unsubscribe=One-Click"
        header = re.fullmatch(r"<http://testserver(/unsubscribe/changelog/[^>]+)>", str(message["List-Unsubscribe"]).strip())
        assert header, message["List-Unsubscribe"]

        # The page names the address it stops (someone with several can tell which)
        assert "Stop changelog emails to reader@example.com?" in (await stranger.get(header.group(1))).text
        clicked = await stranger.post(header.group(1), data={"List-Unsubscribe": "One-Click"})  # no session, no CSRF
        assert clicked.status_code == 200
        assert (await stranger.post(header.group(1), data={"List-Unsubscribe": "One-Click"})).status_code == 200
        assert not subscriptions.is_subscribed(session, email="reader@example.com")
        assert (await stranger.post(path, data={"csrf_token": token})).status_code == 410  # still void
        await _publish(web, session, "Summer release", [])
        await deliver(web)
        assert "reader@example.com" not in _take(inbox)

    async def test_the_answer_is_the_same_whatever_the_address(self, web, stranger, session, inbox):
        session.add(ChangelogSubscriber(email="known@example.com", confirmed_at=utcnow()))
        make_user(session, email="account@example.com")
        session.flush()
        answers = []
        for address in ("known@example.com", "account@example.com", "nobody@example.com"):
            response = await _subscribe(stranger, address)
            assert (response.status_code, response.headers["location"]) == (303, "/changelog/subscribe")
            page = (await stranger.get(response.headers["location"])).text
            answers.append(re.findall(r'<div class="flash[^"]*"[^>]*>(.*?)</div>', page.replace(address, "ADDRESS")))
        assert answers[0] == answers[1] == answers[2] and answers[0]
        await deliver(web)
        assert set(_take(inbox)) == {"known@example.com", "account@example.com", "nobody@example.com"}

    async def test_forged_expired_and_anothers_links_subscribe_nobody(self, web, stranger, session):
        now = utcnow()
        good = subscriptions.confirm_token(SECRET, email="victim@example.com", asked_at=now)
        moment, scope, mac = good.split(".")
        other_scope = subscriptions.confirm_token(SECRET, email="attacker@example.com", asked_at=now).split(".")[1]
        old = subscriptions.confirm_token(SECRET, email="victim@example.com",
                                          asked_at=now - timedelta(hours=subscriptions.CONFIRM_HOURS, minutes=1))
        bad = [f"{moment}.{scope}.{'A' * len(mac)}", f"{moment}.{other_scope}.{mac}", f"{int(moment) + 1}.{scope}.{mac}",
               old, subscriptions.confirm_token("another-portal-" + "y" * 32, email="victim@example.com", asked_at=now)]
        for token in bad:
            path = f"/changelog-subscription/{token}"
            assert (await stranger.get(path)).status_code == 410, token
            assert (await stranger.post(path, data={"csrf_token": await csrf_token(stranger, "/changelog/subscribe")})
                    ).status_code == 410, token
        assert session.scalar(select(func.count()).select_from(ChangelogSubscriber)) == 0
        forged = notify.sign(SECRET, purpose=notify.UNSUBSCRIBE, user_id=1, scope="changelog")
        assert (await stranger.post(f"/unsubscribe/changelog/{forged}",
                                    data={"List-Unsubscribe": "One-Click"})).status_code == 404

    async def test_requests_are_rate_limited_per_address_and_checked(self, stranger, session):
        refused = await _subscribe(stranger, "not an address")
        assert refused.status_code == 422 and "valid email address" in refused.text
        assert 'value="not an address"' in refused.text
        assert "<title>Error: " in refused.text and 'id="subscribe-error" role="alert"' in refused.text
        for _ in range(3):
            assert (await _subscribe(stranger, "flood@example.com")).status_code == 303
        # Too many: the form again with what was typed, the refusal said where it is seen (a walk-through's 429 page
        # lost the address)
        flooded = await _subscribe(stranger, "flood@example.com")
        assert flooded.status_code == 429 and int(flooded.headers["retry-after"]) > 0
        assert 'value="flood@example.com"' in flooded.text and "Too many subscription requests" in flooded.text
        assert "<title>Error: " in flooded.text and 'action="/changelog/subscribe"' in flooded.text
        assert 'class="error-summary" role="alert"' in flooded.text
        assert (await _subscribe(stranger, "other@example.com")).status_code == 303


class TestASignedInPerson:
    async def test_subscribes_with_the_button_and_chooses_on_the_account_page(self, web, stranger, session, inbox):
        item = released(session, "Dark mode", 5)
        person = make_user(session, email="customer@example.com", display_name="Casey")
        sign_in(web, session, person)
        page = await web.get("/changelog")
        assert 'action="/changelog/subscription"' in page.text and 'name="email"' not in page.text
        own = (await web.get("/changelog/subscribe")).text  # their button, under the page's one heading
        assert 'action="/changelog/subscription"' in own and 'name="email"' not in own
        assert "changelog-subscribe-title" not in own and own.count("<h1") == 1
        me = await web.get("/me")
        assert "A new entry is published on the changelog" in me.text
        assert notify.get_preferences(session, user=person)[EventKind.changelog] is Delivery.never  # opt-in

        response = await post_form(web, "/changelog/subscription", {"delivery": "immediately"}, page="/changelog")
        assert "Subscribed" in (await web.get(response.headers["location"])).text
        assert notify.get_preferences(session, user=person)[EventKind.changelog] is Delivery.immediately

        await _publish(web, session, "Spring release", [item.id])
        await deliver(web)
        message = _take(inbox)["customer@example.com"]
        assert _text(message).startswith("Hello Casey,")
        path = urlsplit(re.fullmatch(r"<(.+)>", str(message["List-Unsubscribe"]).strip()).group(1)).path  # type: ignore[union-attr]
        assert (await stranger.post(path, data={"List-Unsubscribe": "One-Click"})).status_code == 200
        assert notify.get_preferences(session, user=person)[EventKind.changelog] is Delivery.never

    async def test_weekly_goes_to_the_digest_and_hidden_entries_go_to_nobody(self, web, session, inbox):
        person = make_user(session, email="weekly@example.com")
        notify.set_preferences(session, user=person, choices={EventKind.changelog: Delivery.weekly})
        soon = make_user(session, email="soon@example.com")
        notify.set_preferences(session, user=soon, choices={EventKind.changelog: Delivery.immediately})
        hidden = released(session, "Secret", 6, visibility=Visibility.customers)
        await _publish(web, session, "For customers", [hidden.id])
        await deliver(web)
        assert _take(inbox) == {}  # a visitor sees nothing of it: nobody is emailed

        await _publish(web, session, "Spring release", [released(session, "Dark mode", 5).id])
        await deliver(web)
        assert set(_take(inbox)) == {"soon@example.com"}
        assert session.scalar(select(func.count()).select_from(DigestEntry).where(
            DigestEntry.user_id == person.id, DigestEntry.kind == EventKind.changelog)) == 1
