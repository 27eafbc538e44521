"""Who is told what, end to end: the staff forms, the worker's fan-out, real email through aiosmtpd, and the
unsubscribe and preferences links followed without a session."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from app.accounts.models import User
from app.admin import items as admin_items
from app.audit.models import AuditEvent
from app.config import Settings
from app.db import utcnow
from app.notify import service as notify
from app.notify.models import Delivery, DigestEntry, EventKind
from app.outbox.models import OutboxJob
from app.roadmap import service as roadmap
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_admin, make_item, make_pm, make_user, stage
from tests.feedback.helpers import make_idea
from tests.helpers.http import client_for, post_form, sign_in
from tests.helpers.outbox import deliver


class Inbox:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def take(self) -> list[EmailMessage]:
        with self.lock:
            got, self.messages = self.messages, []
        return got


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def mail_settings(database_url: str, inbox: tuple[Inbox, int]) -> Settings:
    return Settings(database_url=database_url, secret_key="test-secret-key-" + "x" * 32, base_url="http://testserver",
                    redis_url="", smtp_url=f"smtp://127.0.0.1:{inbox[1]}", _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def web(mail_settings: Settings, database, connection, monkeypatch) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(notify, "job_settings", lambda: mail_settings)
    async with client_for(mail_settings, database, connection) as c:
        yield c


@pytest.fixture
async def stranger(mail_settings: Settings, database, connection) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """A second browser, or a mail provider's server: no cookies of anyone's."""
    async with client_for(mail_settings, database, connection) as c:
        yield c


def _by_recipient(messages: list[EmailMessage]) -> dict[str, EmailMessage]:
    return {str(m["To"]): m for m in messages}


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None, "both a text and an HTML part"
    return text.get_content(), html.get_content()


def _unsubscribe_path(message: EmailMessage) -> str:
    header = str(message["List-Unsubscribe"]).strip()
    match = re.fullmatch(r"<(http://testserver(/unsubscribe/[^>]+))>", header)
    assert match, header
    return match.group(2)


def _followers(session) -> tuple[Item, dict[str, User]]:  # type: ignore[no-untyped-def]
    item = make_item(session, title="Shift swaps", release_notes="Swap shifts **from your phone**.")
    people = {name: make_user(session, email=f"{name}@example.com", display_name=name.title())
              for name in ("voter", "follower", "stopped", "disabled")}
    voting.cast_vote(session, item=item, user=people["voter"], importance=Importance.important)
    voting.follow(session, item=item, user=people["follower"])
    voting.cast_vote(session, item=item, user=people["stopped"], importance=Importance.important)
    voting.unfollow(session, item=item, user=people["stopped"])
    voting.follow(session, item=item, user=people["disabled"])
    people["disabled"].is_active = False
    session.flush()
    return item, people


async def _move(web: httpx.AsyncClient, item: Item, stage_id: int, **extra: str) -> httpx.Response:
    return await post_form(web, f"/admin/items/{item.public_id}/stage", {"stage_id": str(stage_id), **extra},
                           page=f"/admin/items/{item.public_id}")


class TestAStageMove:
    async def test_the_form_says_how_many_and_the_followers_get_a_real_email(self, web, stranger, session, inbox):
        item, people = _followers(session)
        pm = make_pm(session, email="pm@example.com")
        voting.cast_vote(session, item=item, user=pm, importance=Importance.critical)  # the actor votes too
        sign_in(web, session, pm)

        page = await web.get(f"/admin/items/{item.public_id}")
        assert "2 people will be told by email or in their weekly digest." in page.text
        assert 'name="notify" value="yes" checked' in page.text

        response = await _move(web, item, stage(session, "released").id)
        assert response.status_code == 303
        assert (await web.get(response.headers["location"])).text.count("2 people are told by email.") == 1
        # The request enqueued one job (the event), not an email per person.
        assert session.scalar(select(func.count()).select_from(OutboxJob).where(OutboxJob.kind == notify.FAN_OUT)) == 1
        assert session.scalar(select(func.count()).select_from(OutboxJob).where(OutboxJob.kind == "email")) == 0

        await deliver(web)
        received = _by_recipient(inbox[0].take())
        assert set(received) == {"voter@example.com", "follower@example.com"}  # not pm, stopped or disabled
        message = received["voter@example.com"]
        assert str(message["Subject"]) == "“Shift swaps” is released · Ahead"
        text, html = _parts(message)
        assert "Swap shifts **from your phone**." in text and "http://testserver/items/" in text
        assert "<strong>from your phone</strong>" in html and "color-scheme" in html
        assert "<img" not in html and "src=" not in html  # no remote images, no tracking pixels
        assert str(message["List-Unsubscribe-Post"]).strip() == "List-Unsubscribe=One-Click"
        assert message["Message-ID"]

        # One click from the mail provider's server: no session, no CSRF token; the signature is enough.
        path = _unsubscribe_path(message)
        clicked = await stranger.post(path, data={"List-Unsubscribe": "One-Click"})
        assert clicked.status_code == 200
        again = await stranger.post(path, data={"List-Unsubscribe": "One-Click"})
        assert again.status_code == 200  # idempotent
        assert not voting.is_following(session, item=item, user=people["voter"])

        await _move(web, item, stage(session, "in-progress").id)
        await deliver(web)
        assert set(_by_recipient(inbox[0].take())) == {"follower@example.com"}

    async def test_dont_notify_tells_nobody(self, web, session, inbox):
        item, _ = _followers(session)
        sign_in(web, session, make_pm(session))
        response = await _move(web, item, stage(session, "in-progress").id, notify="no")
        assert "Nobody is told by email." in (await web.get(response.headers["location"])).text
        await deliver(web)
        assert inbox[0].take() == []
        assert session.scalar(select(func.count()).select_from(OutboxJob).where(OutboxJob.kind == notify.FAN_OUT)) == 0

    async def test_the_details_forms_stage_field_offers_notify_and_dont_notify_too(self, web, session, inbox):
        item, _ = _followers(session)
        sign_in(web, session, make_pm(session))
        page = (await web.get(f"/admin/items/{item.public_id}")).text
        details = page[page.index('id="details-title"'):]
        assert "If you change the stage, tell the people who follow it?" in details
        assert 'name="notify" value="yes" checked' in details
        assert "2 people will be told by email or in their weekly digest." in details

        def details_form(stage_slug: str, **extra: str) -> dict:  # type: ignore[type-arg]
            session.expire(item)
            loaded = roadmap.get_item_for_staff(session, item.public_id)
            return {**admin_items._item_form(loaded), "stage_id": str(stage(session, stage_slug).id), **extra}

        quiet = await post_form(web, f"/admin/items/{item.public_id}", details_form("under-consideration", notify="no"),
                                page=f"/admin/items/{item.public_id}")
        assert quiet.status_code == 303
        landed = (await web.get(quiet.headers["location"])).text
        assert "Nobody is told by email." in landed, re.findall(r"class=\"flash[^>]*>(.*?)<", landed)
        await deliver(web)
        assert inbox[0].take() == []

        told = await post_form(web, f"/admin/items/{item.public_id}", details_form("in-progress"),
                               page=f"/admin/items/{item.public_id}")
        assert "2 people are told by email." in (await web.get(told.headers["location"])).text
        await deliver(web)
        received = _by_recipient(inbox[0].take())
        assert set(received) == {"voter@example.com", "follower@example.com"}
        assert str(received["voter@example.com"]["Subject"]).startswith("“Shift swaps” moved from Under consideration to In progress")
        text, html = _parts(received["voter@example.com"])
        assert text.count("moved from Under consideration to In progress") == 1  # the headline says it, once
        assert html.split("<body", 1)[1].count("In progress") == 1

    async def test_a_decline_carries_the_reason(self, web, session, inbox):
        item, _ = _followers(session)
        sign_in(web, session, make_pm(session))
        await _move(web, item, stage(session, "declined").id, message="It overlaps with *Open shifts*.")
        await deliver(web)
        message = _by_recipient(inbox[0].take())["follower@example.com"]
        assert str(message["Subject"]).startswith("“Shift swaps” is declined")
        text, html = _parts(message)
        assert "It overlaps with *Open shifts*." in text and "<em>Open shifts</em>" in html

    async def test_a_message_typed_for_a_release_is_refused_as_typed_not_dropped(self, web, session, inbox):
        item, _ = _followers(session)
        sign_in(web, session, make_pm(session))
        refused = await _move(web, item, stage(session, "released").id, message="Thanks for **waiting**!")
        assert refused.status_code == 422
        assert "A release emails its release notes, not this message" in refused.text
        assert "Thanks for **waiting**!</textarea>" in refused.text  # kept as typed
        session.expire(item)
        assert item.stage_id != stage(session, "released").id  # not moved
        await deliver(web)
        assert inbox[0].take() == []

        moved = await _move(web, item, stage(session, "released").id)
        assert moved.status_code == 303

    async def test_many_followers_are_told_in_batches_of_jobs(self, web, session, inbox, monkeypatch):
        monkeypatch.setattr(notify, "BATCH", 2)
        item = make_item(session)
        for n in range(5):
            voting.follow(session, item=item, user=make_user(session, email=f"many{n}@example.com"))
        sign_in(web, session, make_pm(session))
        await _move(web, item, stage(session, "in-progress").id)
        await deliver(web)
        assert sorted(_by_recipient(inbox[0].take())) == [f"many{n}@example.com" for n in range(5)]
        assert session.scalar(select(func.count()).select_from(OutboxJob).where(OutboxJob.kind == notify.FAN_OUT)) == 3


class TestUnsubscribeLinks:
    async def _link(self, session, item: Item, user: User) -> str:  # type: ignore[no-untyped-def]
        return urlsplit(notify.unsubscribe_url(_settings(), user_id=user.id, scope=f"i-{item.public_id}")).path

    async def test_the_page_asks_first_and_the_button_unsubscribes_without_a_session(self, stranger, session):
        item, people = _followers(session)
        path = await self._link(session, item, people["voter"])
        page = await stranger.get(path)
        assert page.status_code == 200 and "Stop emails about “Shift swaps”?" in page.text
        assert voting.is_following(session, item=item, user=people["voter"])  # a link scanner changes nothing
        done = await stranger.post(path)
        assert done.status_code == 200 and "You will get no more emails about “Shift swaps”." in done.text
        assert not voting.is_following(session, item=item, user=people["voter"])

    async def test_a_forged_token_anothers_token_and_another_items_token_do_nothing(self, stranger, session):
        item, people = _followers(session)
        other_item = make_item(session)
        voting.follow(session, item=other_item, user=people["voter"])
        path = await self._link(session, item, people["voter"])
        user_id, scope, mac = path.rsplit("/", 1)[1].split(".")
        forged = [
            f"/unsubscribe/{user_id}.{scope}.{'A' * len(mac)}",
            f"/unsubscribe/{people['follower'].id}.{scope}.{mac}",  # someone else's, with this person's signature
            f"/unsubscribe/{user_id}.i-{other_item.public_id}.{mac}",  # another item
            "/unsubscribe/" + "9" * 300,
        ]
        for bad in forged:
            assert (await stranger.post(bad, data={"List-Unsubscribe": "One-Click"})).status_code == 404, bad
            assert (await stranger.get(bad)).status_code == 404, bad
        assert voting.is_following(session, item=item, user=people["follower"])
        assert voting.is_following(session, item=other_item, user=people["voter"])
        assert voting.is_following(session, item=item, user=people["voter"])


def _settings() -> Settings:
    return Settings(database_url="sqlite://", secret_key="test-secret-key-" + "x" * 32, base_url="http://testserver",
                    redis_url="", _env_file=None)  # type: ignore[call-arg]


class TestPreferences:
    async def test_the_emails_preferences_link_works_without_signing_in(self, stranger, session):
        person = make_user(session, email="prefs@example.com")
        path = urlsplit(notify.preferences_url(_settings(), user_id=person.id)).path
        page = await stranger.get(path)
        assert page.status_code == 200 and "prefs@<wbr>example.com" in page.text
        saved = await stranger.post(path, data={"stage": "weekly", "released": "immediately", "declined": "never",
                                                "answer": "weekly", "reply": "never", "idea": "immediately"})
        assert saved.status_code == 200 and "Your email choices are saved." in saved.text
        prefs = notify.get_preferences(session, user=person)
        assert (prefs[EventKind.stage], prefs[EventKind.declined]) == (Delivery.weekly, Delivery.never)
        refused = await stranger.post(path, data={"stage": "hourly"})
        assert refused.status_code == 422 and "Choose right away, weekly or never." in refused.text
        other = make_user(session)
        _user_id, scope, mac = path.rsplit("/", 1)[1].split(".")
        assert (await stranger.get(f"/email-preferences/{other.id}.{scope}.{mac}")).status_code == 404

    async def test_on_the_account_page(self, web, session):
        person = make_user(session)
        sign_in(web, session, person)
        page = await web.get("/me")
        assert "What you hear about, and how often." in page.text
        response = await post_form(web, "/me/notifications", {k.value: "never" for k in EventKind}, page="/me")
        assert response.status_code == 303
        assert set(notify.get_preferences(session, user=person).values()) == {Delivery.never}

    async def test_weekly_goes_to_one_digest(self, web, session, inbox):
        item, people = _followers(session)
        second = make_item(session, title="Open shifts")
        voting.follow(session, item=second, user=people["follower"])
        notify.set_preferences(session, user=people["follower"], choices={EventKind.stage: Delivery.weekly})
        sign_in(web, session, make_pm(session))
        await _move(web, item, stage(session, "in-progress").id)
        await _move(web, second, stage(session, "in-progress").id)
        await deliver(web)
        assert set(_by_recipient(inbox[0].take())) == {"voter@example.com"}
        assert session.scalar(select(func.count()).select_from(DigestEntry).where(
            DigestEntry.user_id == people["follower"].id, DigestEntry.sent_at.is_(None))) == 2

        # The digest job, due at the schedule's next moment: run it as the worker would then.
        job = session.scalar(select(OutboxJob).where(OutboxJob.kind == notify.DIGEST))
        assert job is not None
        job.next_attempt_at = utcnow() - timedelta(seconds=1)
        session.flush()
        await deliver(web)
        digest = _by_recipient(inbox[0].take())["follower@example.com"]
        assert str(digest["Subject"]).startswith("This week on Ahead: 2 changes")
        text, html = _parts(digest)
        assert "Shift swaps" in text and "Open shifts" in text and "Open shifts" in html
        assert str(digest["List-Unsubscribe-Post"]).strip() == "List-Unsubscribe=One-Click"


class TestComments:
    async def test_an_official_answer_tells_the_followers_and_a_reply_its_comments_author(self, web, session, inbox):
        item, people = _followers(session)
        pm = make_pm(session)
        sign_in(web, session, pm)
        page = await web.get(item.path)
        assert "2 people will be told of your answer" in page.text
        await post_form(web, f"/items/{item.public_id}/comments", {"body": "We are on it."}, page=item.path)
        await deliver(web)
        received = _by_recipient(inbox[0].take())
        assert set(received) == {"voter@example.com", "follower@example.com"}
        assert "We are on it." in _parts(received["voter@example.com"])[0]

        # A customer replies to the answer: its author (the PM) hears of it; the replier does not.
        voter = people["voter"]
        web.cookies.clear()
        sign_in(web, session, voter)
        answer = session.execute(select(notify.Comment.public_id).where(notify.Comment.item_id == item.id)).scalar_one()
        await post_form(web, f"/items/{item.public_id}/comments", {"body": "Thanks!", "parent": answer}, page=item.path)
        await deliver(web)
        received = _by_recipient(inbox[0].take())
        assert set(received) == {pm.email}
        assert str(received[pm.email]["Subject"]).startswith("A reply to your comment on “Shift swaps”")

    async def test_dont_notify_on_a_staff_reply_silences_the_followers_not_the_comments_author(
            self, web, session, inbox):
        item, people = _followers(session)
        sign_in(web, session, people["voter"])
        await post_form(web, f"/items/{item.public_id}/comments", {"body": "Will it work offline?"}, page=item.path)
        question = session.execute(select(notify.Comment.public_id).where(notify.Comment.item_id == item.id)).scalar_one()
        await deliver(web)
        inbox[0].take()
        web.cookies.clear()
        sign_in(web, session, make_pm(session))
        page = (await web.get(item.path)).text
        assert "Either way, the author of the comment you reply to hears of your reply." in page

        answered = await post_form(web, f"/items/{item.public_id}/comments",
                                   {"body": "Yes, it will.", "parent": question, "notify": "no"}, page=item.path)
        assert "the comment’s author hears of your reply" in (await web.get(answered.headers["location"])).text
        await deliver(web)
        received = _by_recipient(inbox[0].take())
        assert set(received) == {"voter@example.com"}  # not the other followers
        assert str(received["voter@example.com"]["Subject"]).startswith("A reply to your comment on “Shift swaps”")


class TestDigestSettings:
    async def test_an_admin_sets_the_day_hour_and_time_zone_and_the_change_is_audited(self, web, session):
        admin = make_admin(session)
        sign_in(web, session, admin)
        page = await web.get("/admin/settings")
        assert "Mondays at 09:00 (UTC)" in page.text
        refused = await post_form(web, "/admin/settings/digest", {"weekday": "2", "hour": "25", "timezone": "Mars/Base"},
                                  page="/admin/settings")
        assert refused.status_code == 422
        assert "Choose an hour from 0 to 23." in refused.text and "Choose a time zone from the list" in refused.text
        saved = await post_form(web, "/admin/settings/digest", {"weekday": "4", "hour": "16", "timezone": "Europe/Berlin"},
                                page="/admin/settings")
        assert saved.status_code == 303
        assert notify.get_digest_schedule(session) == notify.DigestSchedule(4, 16, "Europe/Berlin")
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "settings.digest"))
        assert event is not None and event.changes["timezone"] == ["UTC", "Europe/Berlin"]



class TestIdeas:
    async def test_the_author_hears_what_became_of_their_idea(self, web, session, inbox):
        author = make_user(session, email="author@example.com")
        idea = make_idea(session, author, title="Blockchain rosters")
        other = make_idea(session, author, title="Swap shifts")
        item = make_item(session, title="Shift swaps")
        sign_in(web, session, make_pm(session))
        await post_form(web, f"/admin/feedback/{idea.id}/decline", {"decline_reason": "We keep rosters **simple**."},
                        page=f"/admin/feedback/{idea.id}")
        await post_form(web, f"/admin/feedback/{other.id}/link", {"item": item.public_id},
                        page=f"/admin/feedback/{other.id}")
        await deliver(web)
        subjects = {str(m["Subject"]): m for m in inbox[0].take() if str(m["To"]) == "author@example.com"}
        declined = subjects["Your idea “Blockchain rosters” is declined · Ahead"]
        assert "We keep rosters **simple**." in _parts(declined)[0]
        linked = subjects["Your idea “Swap shifts” is on the roadmap as “Shift swaps” · Ahead"]
        assert f"http://testserver{item.path}" in _parts(linked)[0]
