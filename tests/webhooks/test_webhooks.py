"""Webhooks: real calls to a loopback receiver that verifies the signatures with the `standardwebhooks` package,
retries, the delivery log, test events and redelivery, and the refusal of private addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import event, select, update
from standardwebhooks import Webhook

from app.audit.models import AuditEvent
from app.db import utcnow
from app.outbox.models import JobState, OutboxJob
from app.outbox.registry import THREE_DAYS_SCHEDULE
from app.webhooks import delivery
from app.webhooks import service as webhooks
from app.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.admin.helpers import item_form
from tests.factories import make_admin, make_item, make_pm, make_product, make_user, stage
from tests.helpers.http import post_form, sign_in
from tests.helpers.outbox import deliver
from tests.voting.helpers import vote_json
from tests.webhooks.receiver import receiver

ALL_ITEM_EVENTS = ["item.published", "item.updated", "item.stage_changed", "item.released"]


@pytest.fixture(autouse=True)
def _fresh_subscriptions():  # type: ignore[no-untyped-def]
    webhooks.clear_cache()
    yield
    webhooks.clear_cache()


@pytest.fixture
def hook():  # type: ignore[no-untyped-def]
    with receiver() as r:
        yield r


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com")
    sign_in(client, session, user)
    return user


async def add_endpoint(client, session, url: str, events: list[str], *, allow_private: bool = True) -> WebhookEndpoint:  # type: ignore[no-untyped-def]
    if allow_private:
        response = await post_form(client, "/admin/webhooks/settings", {"allow_private": "1"}, page="/admin/webhooks")
        assert response.status_code == 303
    response = await post_form(client, "/admin/webhooks", {"url": url, "description": "CRM sync", "events": events,
                                                            "is_active": "1"}, page="/admin/webhooks/new")
    assert response.status_code == 303, response.text
    endpoint = session.scalar(select(WebhookEndpoint).where(WebhookEndpoint.url == url))
    assert endpoint is not None
    return endpoint


def verified(endpoint: WebhookEndpoint, call) -> dict:  # type: ignore[no-untyped-def]
    """The payload, once the standardwebhooks library has checked its signature (it raises otherwise)."""
    return Webhook(endpoint.secret).verify(call.body, call.headers)


def jobs(session) -> list[OutboxJob]:  # type: ignore[no-untyped-def]
    return list(session.scalars(select(OutboxJob).where(OutboxJob.kind == "webhook").order_by(OutboxJob.id)))


class TestSigning:
    def test_the_signature_verifies_with_the_standard_library_and_fails_when_anything_changes(self):
        secret = webhooks.new_secret()
        body = json.dumps({"type": "item.released", "data": {"title": "Dark mode — ünïcode"}}).encode()
        now = int(time.time())
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now),
                   "webhook-signature": webhooks.sign(secret, "msg_1", now, body)}

        assert headers["webhook-signature"].startswith("v1,")
        assert Webhook(secret).verify(body, headers)["type"] == "item.released"
        from standardwebhooks.webhooks import WebhookVerificationError

        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body.replace(b"Dark", b"Lite"), headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(webhooks.new_secret()).verify(body, headers)


class TestDelivery:
    async def test_a_release_reaches_the_receiver_signed_with_what_changed(self, client, session, admin, hook):
        endpoint = await add_endpoint(client, session, hook.url, ["item.stage_changed", "item.released"])
        item = make_item(session, title="Dark mode")

        response = await post_form(client, f"/admin/items/{item.public_id}/stage",
                                   {"stage_id": str(stage(session, "released").id), "release_notes": "Shipped."},
                                   page=f"/admin/items/{item.public_id}")
        assert response.status_code == 303
        assert hook.calls == []  # nothing is called while the request runs
        await deliver(client)

        assert [c.path for c in hook.calls] == ["/hooks/ahead?source=roadmap"] * 2
        moved, released = (verified(endpoint, c) for c in hook.calls)
        assert moved["type"] == "item.stage_changed" and moved["version"] == 1
        assert moved["data"]["changes"] == {"stage": {"before": {"slug": "planned", "name": "Planned"},
                                                          "after": {"slug": "released", "name": "Released"}}}
        assert moved["data"]["item"]["id"] == item.public_id and moved["data"]["item"]["title"] == "Dark mode"
        assert moved["data"]["actor"] == {"email": "ada@example.com", "name": admin.display_name}
        assert released["type"] == "item.released" and released["data"]["item"]["stage"]["name"] == "Released"
        assert hook.calls[0].headers["webhook-id"] != hook.calls[1].headers["webhook-id"]
        assert hook.calls[0].headers["host"] == f"127.0.0.1:{hook.port}"

        page = (await client.get(f"/admin/webhooks/{endpoint.id}")).text
        assert "item.released" in page and ">200<" in page and " ms" in page

    async def test_an_item_update_says_before_and_after_and_never_the_internal_notes(self, client, session, admin, hook):
        endpoint = await add_endpoint(client, session, hook.url, ["item.updated"])
        product = make_product(session, name="Reports")
        item = make_item(session, product=product, title="Dark mode", summary="Old summary")

        response = await post_form(client, f"/admin/items/{item.public_id}", item_form(
            product, stage(session, "planned"), title="Dark mode", summary="New summary", internal_notes="Secret plan"),
            page=f"/admin/items/{item.public_id}")
        assert response.status_code == 303
        await deliver(client)

        payload = verified(endpoint, hook.calls[0])
        assert payload["data"]["changes"]["summary"] == {"before": "Old summary", "after": "New summary"}
        assert "internal_notes" not in payload["data"]["changes"] and b"Secret plan" not in hook.calls[0].body

    async def test_a_500_is_retried_later_with_the_same_id_and_both_attempts_are_logged(self, client, session, admin,
                                                                                        hook):
        endpoint = await add_endpoint(client, session, hook.url, ["item.published"])
        hook.answers = [500]
        item = make_item(session, title="Dark mode", published=False)
        await post_form(client, f"/admin/items/{item.public_id}/publish", page=f"/admin/items/{item.public_id}")

        tally = await deliver(client)
        assert tally.retried == 1 and len(hook.calls) == 1
        job = jobs(session)[0]
        session.refresh(job)
        assert job.state is JobState.pending and job.attempts == 1
        assert job.next_attempt_at > utcnow() + timedelta(seconds=THREE_DAYS_SCHEDULE[0] - 5)

        session.execute(update(OutboxJob).where(OutboxJob.id == job.id).values(next_attempt_at=utcnow()))
        await deliver(client)

        assert len(hook.calls) == 2
        assert hook.calls[0].headers["webhook-id"] == hook.calls[1].headers["webhook-id"]
        assert verified(endpoint, hook.calls[1])["type"] == "item.published"
        log = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        assert [(d.attempt, d.status_code) for d in log] == [(1, 500), (2, 200)]
        assert log[0].error == "the receiver answered 500" and log[1].response_body == '{"ok": true}'

    async def test_after_three_days_of_failures_it_is_turned_off_and_admins_are_told(self, client, session, admin,
                                                                                     hook):
        endpoint = await add_endpoint(client, session, hook.url, ["item.published"])
        hook.answers = [503]
        item = make_item(session, published=False)
        await post_form(client, f"/admin/items/{item.public_id}/publish", page=f"/admin/items/{item.public_id}")
        job = jobs(session)[0]
        # The schedule's last attempt (three days after the first).
        session.execute(update(OutboxJob).where(OutboxJob.id == job.id).values(attempts=len(THREE_DAYS_SCHEDULE)))

        await deliver(client)

        session.refresh(endpoint)
        assert not endpoint.is_active and "three days" in endpoint.disabled_reason
        emails = session.scalars(select(OutboxJob).where(OutboxJob.kind == "email")).all()
        assert [e.payload["to"] for e in emails] == ["ada@example.com"]
        assert emails[0].payload["template"] == "webhook_disabled"
        assert session.scalar(select(AuditEvent).where(AuditEvent.action == "webhook.disabled")) is not None
        page = (await client.get(f"/admin/webhooks/{endpoint.id}")).text
        assert "Turned off by Ahead" in page
        # Turned off, it gets no more events.
        other = make_item(session, published=False)
        await post_form(client, f"/admin/items/{other.public_id}/publish", page=f"/admin/items/{other.public_id}")
        assert len(jobs(session)) == 1

    async def test_a_test_event_and_a_redelivery(self, client, session, admin, hook):
        endpoint = await add_endpoint(client, session, hook.url, ["changelog.published"])

        response = await post_form(client, f"/admin/webhooks/{endpoint.id}/test", page=f"/admin/webhooks/{endpoint.id}")
        assert response.status_code == 303
        await deliver(client)
        assert verified(endpoint, hook.calls[0])["type"] == "webhook.test"

        logged = session.scalar(select(WebhookDelivery))
        assert logged is not None
        await post_form(client, f"/admin/webhooks/{endpoint.id}/deliveries/{logged.id}/redeliver",
                        page=f"/admin/webhooks/{endpoint.id}")
        await deliver(client)
        assert len(hook.calls) == 2 and hook.calls[1].body == hook.calls[0].body
        assert hook.calls[1].headers["webhook-id"] == hook.calls[0].headers["webhook-id"]

    async def test_a_hanging_receiver_is_given_up_on_and_no_page_waits_for_it(self, client, session, admin, hook,
                                                                              monkeypatch):
        monkeypatch.setattr(delivery, "TOTAL_TIMEOUT", 2.0)
        endpoint = await add_endpoint(client, session, hook.url, ["item.published"])
        hook.hang_seconds = 4
        item = make_item(session, published=False)

        started = time.monotonic()
        response = await post_form(client, f"/admin/items/{item.public_id}/publish", page=f"/admin/items/{item.public_id}")
        assert response.status_code == 303 and time.monotonic() - started < 1.0

        worker = asyncio.create_task(deliver(client))
        for _ in range(100):  # until the call is under way
            if hook.calls:
                break
            await asyncio.sleep(0.05)
        assert hook.calls
        started = time.monotonic()
        page = await client.get("/changelog")
        took = time.monotonic() - started
        assert page.status_code == 200 and not worker.done()  # served while the receiver still hangs
        assert took < 1.5
        await worker
        logged = session.scalar(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
        assert logged is not None and logged.status_code is None and "no answer within 2 s" in logged.error


class TestPrivateAddresses:
    async def test_a_loopback_target_is_refused_unless_the_setting_allows_it(self, client, session, admin, hook):
        endpoint = await add_endpoint(client, session, hook.url, ["item.published"], allow_private=False)
        item = make_item(session, published=False)
        await post_form(client, f"/admin/items/{item.public_id}/publish", page=f"/admin/items/{item.public_id}")

        tally = await deliver(client)

        assert hook.calls == [] and tally.failed == 1
        logged = session.scalar(select(WebhookDelivery))
        assert logged is not None and logged.status_code is None
        assert "127.0.0.1, a private or reserved address" in logged.error
        assert "127.0.0.1" in (await client.get(f"/admin/webhooks/{endpoint.id}")).text

    async def test_the_admin_pages_say_before_any_call_that_a_private_address_is_refused(self, client, session, admin):
        """A walk-through added webhooks to 127.0.0.1, 127.1, 2130706433, [::1], 169.254.169.254, …: each was saved
        and shown as "On", and the admin learned of the refusal only from a failed call."""
        spellings = {"http://127.1/x": "127.0.0.1", "http://2130706433/x": "127.0.0.1", "http://[::1]:81/x": "::1",
                     "http://169.254.169.254/latest": "169.254.169.254", "http://localhost:9000/x": "localhost",
                     "http://[::ffff:10.0.0.5]/x": "::ffff:10.0.0.5"}
        for url, shown in spellings.items():
            assert webhooks.refused_address(session, url) == shown, url
        assert webhooks.refused_address(session, "https://hooks.example.com/x") is None  # names: when called
        assert webhooks.refused_address(session, "https://93.184.215.14/x") is None

        endpoint = await add_endpoint(client, session, "http://127.1:9/hook", ["vote.created"], allow_private=False)
        page = (await client.get(f"/admin/webhooks/{endpoint.id}")).text
        assert "Calls to this webhook are refused: 127.0.0.1 is a private, loopback or reserved address" in page
        assert "On, but refused: private address" in (await client.get("/admin/webhooks")).text
        await post_form(client, "/admin/webhooks/settings", {"allow_private": "1"}, page="/admin/webhooks")
        assert "Calls to this webhook are refused" not in (await client.get(f"/admin/webhooks/{endpoint.id}")).text
        assert "On, but refused" not in (await client.get("/admin/webhooks")).text

    @pytest.mark.parametrize("address", ["10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254",
                                         "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "fe80::1",
                                         "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "ff02::1"])
    def test_no_private_or_reserved_address_passes(self, address):
        host = f"[{address}]" if ":" in address else address
        with pytest.raises(delivery.Refused):
            delivery.pinned_target(f"https://{host}/hook", allow_private=False, require_https=False)

    def test_a_name_is_refused_when_any_of_its_addresses_is_private(self, monkeypatch):
        monkeypatch.setattr(delivery, "_resolve", lambda host, port: [ipaddress.ip_address("93.184.215.14"),
                                                                       ipaddress.ip_address("10.0.0.7")])
        with pytest.raises(delivery.Refused, match=r"10\.0\.0\.7"):
            delivery.pinned_target("https://hooks.example.com/x", allow_private=False, require_https=True)

    def test_the_checked_address_is_the_one_called_with_the_name_kept_for_host_and_tls(self, monkeypatch):
        monkeypatch.setattr(delivery, "_resolve", lambda host, port: [ipaddress.ip_address("93.184.215.14")])
        target, host, server_name = delivery.pinned_target("https://hooks.example.com:8443/in?x=1",
                                                           allow_private=False, require_https=True)
        assert target == "https://93.184.215.14:8443/in?x=1"
        assert host == "hooks.example.com:8443" and server_name == "hooks.example.com"

    def test_production_calls_only_https(self):
        with pytest.raises(delivery.Refused, match="https"):
            delivery.pinned_target("http://93.184.215.14/x", allow_private=False, require_https=True)

    async def test_the_admin_form_refuses_what_is_not_an_address(self, client, session, admin):
        for url, message in (("ftp://example.com/x", "That is not a web address"),
                             ("https://user:pw@example.com/x", "Leave user names and passwords out"),
                             ("", "Give the address to call.")):
            response = await post_form(client, "/admin/webhooks", {"url": url, "description": "Kept words",
                                                                   "events": ["vote.created"]},
                                       page="/admin/webhooks/new")
            assert response.status_code == 422 and message in response.text
            assert 'value="Kept words"' in response.text
        none = await post_form(client, "/admin/webhooks", {"url": "https://example.com/x"}, page="/admin/webhooks/new")
        assert none.status_code == 422 and "Choose at least one event." in none.text

    async def test_only_admins_reach_the_page_and_changes_are_audited(self, client, session, admin, hook):
        endpoint = await add_endpoint(client, session, hook.url, ["vote.created"])
        actions = set(session.scalars(select(AuditEvent.action)))
        assert {"settings.webhooks", "webhook.created"} <= actions
        assert "Allow private addresses" in (await client.get("/admin/audit")).text
        sign_in(client, session, make_pm(session))
        assert (await client.get("/admin/webhooks")).status_code == 404
        assert (await client.get(f"/admin/webhooks/{endpoint.id}")).status_code == 404


class TestVotes:
    async def test_a_vote_costs_no_job_and_no_endpoint_query_when_nobody_subscribes(self, client, session, app):
        item = make_item(session)
        voter = make_user(session, password=None)
        sign_in(client, session, voter)
        await client.get("/")
        statements: list[str] = []

        def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
            statements.append(statement)

        engine = session.get_bind().engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            for _ in range(2):
                await post_form(client, f"/items/{item.public_id}/vote", {"importance": "important", "next": "/"})
                await post_form(client, f"/items/{item.public_id}/unvote", {"next": "/"})
        finally:
            event.remove(engine, "before_cursor_execute", seen)

        assert jobs(session) == []
        assert sum("webhook_endpoints" in s for s in statements) <= 1  # read once, then kept

    async def test_vote_events_reach_a_subscriber(self, client, session, admin, hook):
        endpoint = await add_endpoint(client, session, hook.url, ["vote.created", "vote.removed"])
        item = make_item(session, title="Dark mode", product=make_product(session, name="Mobile app", slug="mobile"))
        voter = make_user(session, email="maya@harbour.example", password=None)
        sign_in(client, session, voter)
        await post_form(client, f"/items/{item.public_id}/vote", {"importance": "critical", "next": "/"})
        await post_form(client, f"/items/{item.public_id}/unvote", {"next": "/"})

        await deliver(client)

        created, removed = (verified(endpoint, c) for c in hook.calls)
        assert created["type"] == "vote.created" and created["data"]["vote"]["importance"] == "critical"
        assert created["data"]["vote"]["voter"]["email"] == "maya@harbour.example"
        assert removed["type"] == "vote.removed" and removed["data"]["item"]["title"] == "Dark mode"
        for payload in (created, removed):  # the item as every other event gives it
            assert payload["data"]["item"]["product"] == {"slug": "mobile", "name": "Mobile app"}
            assert payload["data"]["item"]["stage"] is not None and payload["data"]["item"]["stage"]["slug"]

    async def test_a_vote_and_a_withdrawal_sent_twice_count_once_and_tell_once(self, client, session, admin, hook):
        """What nginx's retry of a vote does (deploy/nginx/ahead/locations.conf: the vote routes are retried even
        once sent, as idempotent): the same vote twice is one vote, one count, one event; so is a withdrawal."""
        endpoint = await add_endpoint(client, session, hook.url, ["vote.created", "vote.removed"])
        item = make_item(session, title="Retried")
        sign_in(client, session, make_user(session, email="twice@harbour.example", password=None))
        for _ in range(2):
            answer = await vote_json(client, item.public_id, "critical")
            assert answer.status_code == 200 and answer.json()["vote_count"] == 1
        session.refresh(item)
        assert item.vote_count == 1
        for _ in range(2):
            answer = await vote_json(client, item.public_id, unvote=True)
            assert answer.status_code == 200 and answer.json()["vote_count"] == 0
        session.refresh(item)
        assert item.vote_count == 0

        await deliver(client)
        assert [verified(endpoint, c)["type"] for c in hook.calls] == ["vote.created", "vote.removed"]


def test_every_event_is_documented():
    from app.config import ROOT

    doc = (ROOT / "docs" / "webhooks.md").read_text()
    missing = [name for name in webhooks.EVENTS if f"`{name}`" not in doc]
    assert not missing, missing

