"""The admin Email page: the SMTP settings in force (password masked), a test email reporting the server's exact
answer (real aiosmtpd), and the log of recent deliveries and failures with their reasons."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from app.config import Settings
from app.outbox import service as outbox
from app.outbox.models import JobState, OutboxJob
from tests.factories import make_admin, make_pm
from tests.helpers.http import post_form, sign_in
from tests.helpers.outbox import deliver
from tests.helpers.smtp import Inbox, free_port, smtp_server


@pytest.fixture(scope="module")
def server() -> Iterator[Inbox]:
    with smtp_server() as inbox:
        yield inbox


@pytest.fixture
def inbox(server: Inbox) -> Inbox:
    with server.lock:
        server.messages.clear()
    server.answer = None
    return server


@pytest.fixture
def settings(database_url: str, server: Inbox) -> Settings:
    return Settings(database_url=database_url, secret_key="test-secret-key-" + "x" * 32, base_url="http://testserver",
                    redis_url="", smtp_url=f"smtp://127.0.0.1:{server.port}", mail_from="Roadmap <roadmap@example.com>",
                    _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


def flash_of(page: str) -> str:
    """The page's text as a person reads it: entities decoded, runs of white space as one."""
    return " ".join(html.unescape(page).split())


async def test_the_settings_in_force_are_shown_with_the_password_masked(app, client, session, admin):
    app.state.settings = app.state.settings.model_copy(update={
        "smtp_url": "smtps://mailer%40acme:s3cret-pass%21@smtp.acme.example:465"})
    page = await client.get("/admin/email")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "smtps://mailer%40acme:••••••••@smtp.acme.example:465" in text
    assert "s3cret" not in text and "TLS from the start" in text
    assert "mailer@acme (password not shown)" in text
    assert "Roadmap &lt;roadmap@example.com&gt;" in page.text  # MAIL_FROM, escaped
    assert 'href="/admin/email" aria-current="page"' in page.text  # in the admin menu

    app.state.settings = app.state.settings.model_copy(update={"smtp_url": ""})
    page = await client.get("/admin/email")
    assert "Not set: email is written to the server’s log instead of being sent." in page.text


async def test_a_pm_gets_the_404_of_a_missing_page(client, session):
    sign_in(client, session, make_pm(session))
    assert (await client.get("/admin/email")).status_code == 404
    assert (await post_form(client, "/admin/email/test", {"to": "x@example.com"}, page="/admin")).status_code == 404


async def test_the_test_email_arrives_and_the_page_reports_the_servers_exact_answer(client, session, admin, inbox):
    page = await client.get("/admin/email")
    assert 'value="ada@example.com"' in page.text  # the admin's own address, to start with
    sent = await post_form(client, "/admin/email/test", {"to": "ops@example.com"}, page="/admin/email",
                           follow_redirects=True)
    assert "Test email sent to ops@example.com. The server answered: 250 2.0.0 Queued as test-1" in flash_of(sent.text)
    (message,) = inbox.received()
    assert message["To"] == "ops@example.com" and message["Subject"] == "Test email from Ahead"
    assert "the SMTP settings there work" in message.get_body(("plain",)).get_content()


async def test_a_refusal_is_reported_in_the_servers_words(client, session, admin, inbox):
    inbox.answer = "554 5.7.1 Relay access denied"
    sent = await post_form(client, "/admin/email/test", {"to": "ops@example.com"}, page="/admin/email",
                           follow_redirects=True)
    assert "The test email to ops@example.com was not sent." in flash_of(sent.text)
    assert "554 5.7.1 Relay access denied" in flash_of(sent.text)


async def test_a_server_that_cannot_be_reached_is_reported(app, client, session, admin):
    port = free_port()
    app.state.settings = app.state.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{port}"})
    sent = await post_form(client, "/admin/email/test", {"to": "ops@example.com"}, page="/admin/email",
                           follow_redirects=True)
    assert f"SMTP server 127.0.0.1:{port} could not be reached" in flash_of(sent.text)


async def test_a_bad_address_is_shown_again_with_the_problem(client, session, admin, inbox):
    refused = await post_form(client, "/admin/email/test", {"to": "not an address"}, page="/admin/email")
    assert refused.status_code == 422
    assert 'value="not an address"' in refused.text and "valid email address" in refused.text
    assert inbox.received() == []


async def test_the_log_lists_deliveries_and_failures_with_the_reason_and_failed_ones_can_be_retried(
        client, session, admin, inbox):
    for to in ("pat@example.com", "refused-lee@example.com"):
        outbox.enqueue_email(session, to=to, template="test", context={"base_url": "http://testserver"}, key=to)
    await deliver(client)
    page = flash_of((await client.get("/admin/email")).text)
    assert "0 waiting, 1 failed, 0 given up after every retry, 1 delivered in the last 24 hours." in page
    assert "Email to pat@example.com" in page and "Delivered" in page and "250 2.0.0 Queued as" in page
    assert "Email to refused-lee@example.com" in page and "550 5.1.1 No such user here" in page

    problems = html.unescape((await client.get("/admin/email?show=problems")).text)
    assert "refused-lee@example.com" in problems and "pat@example.com" not in problems.split("Recent deliveries")[1]

    retried = await post_form(client, "/admin/email/retry", page="/admin/email", follow_redirects=True)
    assert "1 delivery queued again" in retried.text
    job = session.scalar(select(OutboxJob).where(OutboxJob.key == "email:refused-lee@example.com"))
    session.refresh(job)
    assert job.state == JobState.pending and job.attempts == 0


async def test_the_page_says_where_links_lead_and_warns_when_it_was_opened_elsewhere(client, session, admin):
    def words(response) -> str:  # type: ignore[no-untyped-def]
        return flash_of(re.sub(r"<[^>]+>", "", response.text))

    page = words(await client.get("/admin/email"))
    assert "Links in emails and webhooks lead to (BASE_URL) http://testserver" in page
    assert "You opened this page at" not in page
    # Reached through another address (a proxy's, a LAN IP) than BASE_URL: every email's links would lead away.
    elsewhere = words(await client.get("/admin/email", headers={"Host": "10.0.0.5:8000"}))
    assert ("You opened this page at http://10.0.0.5:8000, not at http://testserver: the links in every email"
            in elsewhere)
    assert "set BASE_URL=http://10.0.0.5:8000" in elsewhere
