"""Staff accounts: invitations by real email, roles, disabling, and who may open the admin-only pages."""

from __future__ import annotations

import email
import email.policy
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.models import Invitation
from app.config import Settings
from app.deps import SESSION_COOKIE
from tests.factories import PASSWORD, make_admin, make_pm
from tests.helpers.http import post_form, sign_in
from tests.helpers.outbox import deliver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.recipients.append(list(envelope.rcpt_tos))
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, inbox: tuple[Inbox, int]) -> Settings:
    """The app sends through the real SMTP server above."""
    return Settings(
        database_url=database_url, secret_key="test-secret-key-" + "x" * 32, base_url="http://testserver",
        redis_url="", smtp_url=f"smtp://127.0.0.1:{inbox[1]}", _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


LINK = re.compile(r"http://testserver/invitations/[A-Za-z0-9_\-]+")


async def test_invited_pm_gets_an_email_sets_a_password_and_reaches_the_staff_area(client, session, admin, inbox):
    handler, _ = inbox
    response = await post_form(client, "/admin/staff/invitations", {"email": "Pat@Example.com", "role": "pm"},
                               page="/admin/staff")
    assert response.status_code == 303
    assert handler.recipients == []  # queued with the invitation, sent by the outbox worker
    await deliver(client)

    staff_page = await client.get(response.headers["location"])
    # Sent after the commit: the page cannot know it arrived, and says so.
    assert "Invitation created for pat@example.com; the email is being sent now." in staff_page.text
    assert "pat@example.com" in staff_page.text.split("Pending invitations")[1]

    assert handler.recipients == [["pat@example.com"]]
    message = handler.messages[0]
    assert "Ada Admin invited you to" in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    link = LINK.search(text).group(0)
    assert f'href="{link}"' in html
    assert "a product manager" in text

    client.cookies.clear()  # the PM opens the link in their own browser
    path = link.removeprefix("http://testserver")
    form = await client.get(path)
    assert form.status_code == 200 and "pat@example.com" in form.text
    accepted = await post_form(client, path, {"display_name": "Pat", "password": "a long password 1",
                                              "confirm_password": "a long password 1"}, page=path)
    assert accepted.status_code == 303 and accepted.headers["location"] == "/admin"
    overview = await client.get("/admin")
    assert overview.status_code == 200
    assert "<h1>Overview</h1>" in overview.text and "Pat" in overview.text

    # The link worked once.
    assert (await client.get(path)).status_code == 404


async def test_pm_gets_the_same_404_as_a_missing_page_for_admin_pages(client, session):
    sign_in(client, session, make_pm(session))
    missing = await client.get("/admin/no-such-page")
    assert missing.status_code == 404
    for path in ("/admin/staff", "/admin/settings", "/admin/audit"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "There is nothing at this address." in response.text
    overview = await client.get("/admin")
    assert 'href="/admin/staff"' not in overview.text
    attempt = await post_form(client, "/admin/staff/invitations", {"email": "x@example.com", "role": "admin"},
                              page="/admin")
    assert attempt.status_code == 404
    assert session.scalar(select(Invitation).where(Invitation.email == "x@example.com")) is None


async def test_when_the_email_cannot_be_sent_the_invitation_and_its_link_are_kept(app, client, session, admin,
                                                                                   caplog):
    app.state.settings = app.state.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{free_port()}"})
    with caplog.at_level(logging.WARNING):
        response = await post_form(client, "/admin/staff/invitations",
                                   {"email": "lee@example.com", "role": "admin"}, page="/admin/staff")
        assert response.status_code == 303
        await deliver(client)
    # Not lost silently: the log says who did not get it and why, and the page always gives the link.
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "ahead.outbox"]
    assert any("lee@example.com" in m and "could not be reached" in m for m in failures), failures
    page = await client.get("/admin/staff")
    assert "If it does not arrive, send them this link yourself" in page.text
    link = LINK.search(page.text).group(0)
    assert "lee@example.com" in page.text.split("Pending invitations")[1]

    client.cookies.clear()
    form = await client.get(link.removeprefix("http://testserver"))
    assert form.status_code == 200 and "as an admin" in form.text


async def test_without_smtp_the_email_goes_to_the_log_and_the_page_shows_the_link(app, client, session, admin,
                                                                                   caplog):
    app.state.settings = app.state.settings.model_copy(update={"smtp_url": ""})
    with caplog.at_level(logging.INFO, logger="ahead.mail"):
        await post_form(client, "/admin/staff/invitations", {"email": "sam@example.com", "role": "pm"},
                        page="/admin/staff")
        await deliver(client)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "ahead.mail")
    link = LINK.search(logged).group(0)
    assert "sam@example.com" in logged
    page = await client.get("/admin/staff")
    assert "Email is not set up" in page.text and link in page.text


async def test_invalid_invitation_keeps_what_was_typed(client, session, admin, inbox):
    response = await post_form(client, "/admin/staff/invitations", {"email": "not an address", "role": "pm"},
                               page="/admin/staff")
    assert response.status_code == 422
    assert "Enter a valid email address" in response.text
    assert 'value="not an address"' in response.text
    assert inbox[0].messages == []


async def test_disabling_a_user_signs_them_out_at_once(app, client, session, admin):
    pm = make_pm(session, display_name="Robin")
    pm_token = accounts.start_session(session, user=pm)

    response = await post_form(client, f"/admin/staff/{pm.id}/active", {"active": "0"}, page="/admin/staff")
    assert response.status_code == 303
    page = await client.get("/admin/staff")
    assert "Robin is disabled and signed out everywhere." in page.text
    assert "Disabled" in page.text

    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, pm_token)
    next_request = await client.get("/admin")
    assert next_request.status_code == 303
    assert next_request.headers["location"].startswith("/login")
    # And they cannot sign back in while disabled.
    login = await post_form(client, "/login", {"email": pm.email, "password": PASSWORD}, page="/login")
    assert login.status_code == 400


async def test_admin_cannot_disable_themselves(client, session, admin):
    response = await post_form(client, f"/admin/staff/{admin.id}/active", {"active": "0"}, page="/admin/staff")
    assert response.status_code == 422
    assert "You cannot disable your own account." in response.text
    assert (await client.get("/admin/staff")).status_code == 200


async def test_promoting_a_pm_gives_them_the_admin_pages(client, session, admin):
    pm = make_pm(session, display_name="Kim")
    response = await post_form(client, f"/admin/staff/{pm.id}/role", {"role": "admin"}, page="/admin/staff")
    assert response.status_code == 303
    assert "Kim is now admin." in (await client.get("/admin/staff")).text

    sign_in(client, session, pm)
    assert (await client.get("/admin/staff")).status_code == 200


async def test_staff_list_shows_roles_and_state(client, session, admin):
    make_pm(session, display_name="Quinn", email="quinn@example.com", is_active=False)
    page = await client.get("/admin/staff")
    before, after = page.text.split("quinn@example.com")
    row = before.rsplit("<tr>", 1)[1] + after.split("</tr>")[0]
    assert "Quinn" in row and "Disabled" in row and "Enable" in row
    assert "Ada Admin" in page.text and "(you)" in page.text


class TestCancelInvitation:
    async def _invite(self, client, session, email: str = "noor@example.com") -> tuple[Invitation, str]:  # type: ignore[no-untyped-def]
        response = await post_form(client, "/admin/staff/invitations", {"email": email, "role": "pm"},
                                   page="/admin/staff")
        assert response.status_code == 303
        link = LINK.search((await client.get("/admin/staff")).text).group(0)  # the flash repeats the link
        invitation = session.scalar(select(Invitation).where(Invitation.email == email))
        return invitation, link.removeprefix("http://testserver")

    async def test_cancelling_kills_the_link_and_is_audited(self, client, session, admin, inbox):
        invitation, path = await self._invite(client, session)
        page = (await client.get("/admin/staff")).text
        assert f'action="/admin/staff/invitations/{invitation.id}/cancel"' in page

        response = await post_form(client, f"/admin/staff/invitations/{invitation.id}/cancel", page="/admin/staff")
        assert response.status_code == 303
        staff_page = (await client.get(response.headers["location"])).text
        assert "Invitation for noor@example.com cancelled. Its link no longer works." in staff_page
        assert "noor@example.com" not in staff_page.split("Pending invitations")[1]
        assert "No invitations are waiting." in staff_page

        log = (await client.get("/admin/audit?type=invitation")).text
        assert "Cancelled" in log and "noor@example.com" in log

        client.cookies.clear()  # the invitee opens the link afterwards
        dead = await client.get(path)
        assert dead.status_code == 404
        assert "This invitation is no longer valid" in dead.text
        assert "Choose your name and a password" not in dead.text
        accepted = await post_form(client, path, {"display_name": "Noor", "password": "a long password 1",
                                                  "confirm_password": "a long password 1"}, page="/login")
        assert accepted.status_code == 404
        assert accounts.get_user_by_email(session, "noor@example.com") is None

    async def test_cancelling_twice_says_nothing_changed(self, client, session, admin, inbox):
        invitation, _ = await self._invite(client, session)
        path = f"/admin/staff/invitations/{invitation.id}/cancel"
        await post_form(client, path, page="/admin/staff")
        again = await post_form(client, path, page="/admin/staff")
        assert again.status_code == 303
        assert "already accepted or cancelled" in (await client.get("/admin/staff")).text

    async def test_a_pm_gets_404_and_the_invitation_stays(self, client, session, admin, inbox):
        invitation, path = await self._invite(client, session)
        sign_in(client, session, make_pm(session))
        attempt = await post_form(client, f"/admin/staff/invitations/{invitation.id}/cancel", page="/admin")
        assert attempt.status_code == 404
        assert "There is nothing at this address." in attempt.text
        client.cookies.clear()
        assert (await client.get(path)).status_code == 200  # the link still works

    async def test_without_the_csrf_token_nothing_is_cancelled(self, client, session, admin, inbox):
        invitation, path = await self._invite(client, session)
        response = await client.post(f"/admin/staff/invitations/{invitation.id}/cancel",
                                     data={"csrf_token": "forged"})
        assert response.status_code == 403
        assert "noor@example.com" in (await client.get("/admin/staff")).text.split("Pending invitations")[1]
        client.cookies.clear()
        assert (await client.get(path)).status_code == 200
