"""The changelog: entries a PM writes over released items, scheduled or published now, lone released items
by default, per product and overall, with an Atom feed each, and release notes asked for at the release."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import feedparser
import httpx
import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.changelog.models import ChangelogEntry
from app.db import utcnow
from app.organisations.models import Organisation
from app.roadmap.models import Visibility
from tests.factories import make_admin, make_item, make_pm, make_product, make_user, stage
from tests.helpers.http import post_form, sign_in
from tests.roadmap.helpers import released

BASE = "http://testserver"


@pytest.fixture
async def visitor(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, display_name="Pat Manager")
    sign_in(client, session, user)
    return user


async def write_entry(client, **fields) -> httpx.Response:  # type: ignore[no-untyped-def]
    data = {"title": "Spring release", "notes": "Three things **you asked for**.", "product_id": "",
            "when": "now", "publish_at": "", **fields}
    return await post_form(client, "/admin/changelog", data, page="/admin/changelog/new")


def entry_titled(session, title: str) -> ChangelogEntry:  # type: ignore[no-untyped-def]
    entry = session.scalar(select(ChangelogEntry).where(ChangelogEntry.title == title))
    assert entry is not None
    return entry


def headings(html: str) -> list[str]:
    return re.findall(r'<h2 id="rel-[a-z0-9]+"><a href="[^"]*">(.*?)</a></h2>', html)


class TestEntries:
    async def test_a_published_entry_groups_its_items_under_its_own_title_and_notes(self, client, visitor,
                                                                                     session, pm):
        exports = released(session, "Scheduled exports", 3, release_notes="Every Monday.")
        dark = released(session, "Dark mode", 5)
        released(session, "Audit trail", 10, release_notes="Who did what.")

        response = await write_entry(client, items=[str(exports.id), str(dark.id)])
        assert response.status_code == 303
        assert "is on the changelog" in (await client.get(response.headers["location"])).text

        page = (await visitor.get("/changelog")).text
        # The entry (published now) first, then the item no entry holds; the grouped items are not listed twice.
        assert headings(page) == ["Spring release", "Audit trail"]
        assert "Three things <strong>you asked for</strong>." in page
        assert f'<a href="{exports.path}">Scheduled exports</a>' in page and dark.path in page
        entry = entry_titled(session, "Spring release")
        detail = await visitor.get(entry.path)
        assert detail.status_code == 200
        assert "Every Monday." in detail.text and "Dark mode" in detail.text

    async def test_an_entry_is_audited_and_listed_for_staff(self, client, session, pm):
        item = released(session, "Dark mode", 5)
        await write_entry(client, items=[str(item.id)], when="draft")

        entry = entry_titled(session, "Spring release")
        event = session.scalar(select(AuditEvent).where(AuditEvent.entity_type == "changelog"))
        assert event is not None and event.action == "changelog.created" and event.actor_id == pm.id
        assert event.changes["items"] == [None, ["Dark mode"]]
        listing = (await client.get("/admin/changelog")).text
        assert entry.public_id in listing and "Draft" in listing
        sign_in(client, session, make_admin(session))
        audit_log = (await client.get("/admin/audit")).text
        assert "Written" in audit_log and f'href="/admin/changelog/{entry.public_id}"' in audit_log

    async def test_a_draft_stays_off_the_changelog_and_its_items_stand_alone(self, client, visitor, session, pm):
        item = released(session, "Dark mode", 5)
        await write_entry(client, items=[str(item.id)], when="draft")
        entry = entry_titled(session, "Spring release")

        page = (await visitor.get("/changelog")).text
        assert headings(page) == ["Dark mode"]
        assert (await visitor.get(entry.path)).status_code == 404
        feed = feedparser.parse((await visitor.get("/changelog.atom")).content)
        assert [e.title for e in feed.entries] == ["Dark mode"]

    async def test_the_feeds_links_from_notes_are_absolute_as_in_the_emails(self, client, visitor, session, pm):
        item = released(session, "Dark mode", 5, release_notes="See [the changelog](/changelog).")
        await write_entry(client, items=[str(item.id)], notes="More on [the roadmap](/roadmap).")
        released(session, "Audit trail", 3, release_notes="Read [the guide](/docs/audit).")

        feed = feedparser.parse((await visitor.get("/changelog.atom")).content, sanitize_html=False,
                                resolve_relative_uris=False)
        hrefs = re.findall(r'href="([^"]+)"', " ".join(e.content[0].value for e in feed.entries))
        assert {"http://testserver/roadmap", "http://testserver/docs/audit"} <= set(hrefs)
        assert all(h.startswith("http://testserver/") for h in hrefs), hrefs

    async def test_a_scheduled_entry_appears_at_its_time(self, client, visitor, session, pm):
        item = released(session, "Dark mode", 5)
        at = (utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
        response = await write_entry(client, items=[str(item.id)], when="schedule", publish_at=at)
        assert response.status_code == 303
        assert "appears on the changelog on" in (await client.get(response.headers["location"])).text
        entry = entry_titled(session, "Spring release")
        assert entry.published_at is not None and entry.published_at > utcnow()

        assert headings((await visitor.get("/changelog")).text) == ["Dark mode"]
        assert (await visitor.get(entry.path)).status_code == 404

        entry.published_at = utcnow() - timedelta(minutes=1)  # the time has come
        session.flush()
        assert headings((await visitor.get("/changelog")).text) == ["Spring release"]
        assert (await visitor.get(entry.path)).status_code == 200

    async def test_scheduling_needs_a_time_to_come_and_keeps_what_was_typed(self, client, session, pm):
        released(session, "Dark mode", 5)
        past = (utcnow() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")

        for publish_at, message in (("", "Give the date and the time to publish it at."),
                                    (past, "Choose a time in the future, or publish it now."),
                                    ("next tuesday", "Give the date and time as YYYY-MM-DD HH:MM (UTC).")):
            response = await write_entry(client, when="schedule", publish_at=publish_at, notes="Kept *notes*")
            assert response.status_code == 422
            assert message in response.text
            assert 'value="Spring release"' in response.text and "Kept *notes*" in response.text
        missing = await write_entry(client, title="  ")
        assert missing.status_code == 422 and "A title is required." in missing.text
        assert session.scalar(select(ChangelogEntry)) is None

    async def test_an_item_is_announced_by_one_entry_only(self, client, session, pm):
        item = released(session, "Dark mode", 5)
        await write_entry(client, items=[str(item.id)])
        second = await write_entry(client, title="Again", items=[str(item.id)])

        assert second.status_code == 422
        assert "another entry took it" in second.text

    async def test_an_unreleased_item_cannot_be_announced(self, client, session, pm):
        planned = make_item(session, title="Not yet")

        response = await write_entry(client, items=[str(planned.id)])

        assert response.status_code == 422 and "no longer released" in response.text

    async def test_deleting_an_entry_puts_its_items_back_on_their_own(self, client, visitor, session, pm):
        item = released(session, "Dark mode", 5)
        await write_entry(client, items=[str(item.id)])
        entry = entry_titled(session, "Spring release")

        response = await post_form(client, f"/admin/changelog/{entry.public_id}/delete", page=entry.path)

        assert response.status_code == 303
        assert headings((await visitor.get("/changelog")).text) == ["Dark mode"]

    async def test_editing_an_entry_keeps_its_publication_date(self, client, session, pm):
        item = released(session, "Dark mode", 5)
        await write_entry(client, items=[str(item.id)])
        entry = entry_titled(session, "Spring release")
        entry.published_at = datetime(2026, 3, 6, 9, 0, tzinfo=UTC)
        session.flush()

        response = await post_form(client, f"/admin/changelog/{entry.public_id}", {
            "title": "Spring release, part one", "notes": "", "product_id": "", "items": [str(item.id)],
            "when": "now", "publish_at": ""}, page=f"/admin/changelog/{entry.public_id}")

        assert response.status_code == 303
        session.refresh(entry)
        assert entry.title == "Spring release, part one"
        assert entry.published_at == datetime(2026, 3, 6, 9, 0, tzinfo=UTC)


class TestWhoSeesWhat:
    async def test_an_entry_of_customer_only_items_is_absent_for_visitors(self, client, visitor, session, pm):
        secret = make_item(session, stage_slug="released", title="Quokkavault", visibility=Visibility.customers)
        public = released(session, "Dark mode", 5)
        await write_entry(client, title="Secret release", items=[str(secret.id)])
        await write_entry(client, title="Mixed release", items=[str(public.id)])
        entry = entry_titled(session, "Secret release")

        page = (await visitor.get("/changelog")).text
        assert "Secret release" not in page and "Quokkavault" not in page
        assert (await visitor.get(entry.path)).status_code == 404
        feed = (await visitor.get("/changelog.atom")).text
        assert "Secret release" not in feed and "Quokkavault" not in feed

        org = Organisation(name="Harbour")
        session.add(org)
        session.flush()
        customer = make_user(session, email="maya@harbour.example", password=None, organisation_id=org.id)
        sign_in(visitor, session, customer)
        page = (await visitor.get("/changelog")).text
        assert "Secret release" in page and "Quokkavault" in page
        # The feed is built for a signed-out visitor, whoever asks.
        assert "Quokkavault" not in (await visitor.get("/changelog.atom")).text

    async def test_an_entry_lists_only_the_items_the_viewer_may_see(self, client, visitor, session, pm):
        secret = make_item(session, stage_slug="released", title="Quokkavault", visibility=Visibility.internal)
        public = released(session, "Dark mode", 5)
        await write_entry(client, items=[str(secret.id), str(public.id)])
        entry = entry_titled(session, "Spring release")

        detail = (await visitor.get(entry.path)).text
        assert "Dark mode" in detail and "Quokkavault" not in detail and secret.public_id not in detail


class TestPerProductAndPages:
    async def test_each_product_has_its_changelog_and_feed(self, client, visitor, session, pm):
        reports = make_product(session, name="Reports", slug="reports")
        mobile = make_product(session, name="Mobile", slug="mobile")
        released(session, "Scheduled exports", 3, product=reports)
        app_item = released(session, "Offline mode", 4, product=mobile)
        await write_entry(client, title="Mobile spring", items=[str(app_item.id)])
        await write_entry(client, title="Reports news", product_id=str(reports.id))

        page = (await visitor.get("/changelog?product=reports")).text
        assert headings(page) == ["Reports news", "Scheduled exports"]
        assert 'href="/changelog.atom?product=reports">Subscribe to the Reports feed</a>' in page
        assert headings((await visitor.get("/changelog?product=mobile")).text) == ["Mobile spring"]
        assert headings((await visitor.get("/changelog")).text) == ["Reports news", "Mobile spring",
                                                                     "Scheduled exports"]

        response = await visitor.get("/changelog.atom?product=mobile")
        feed = feedparser.parse(response.content)
        assert not feed.bozo
        assert feed.feed.title.endswith("Mobile changelog")
        assert feed.feed.id == f"{BASE}/changelog?product=mobile"
        entry = entry_titled(session, "Mobile spring")
        assert [e.id for e in feed.entries] == [f"{BASE}/changelog/{entry.public_id}"]
        assert "Offline mode" in feed.entries[0].content[0].value
        assert (await visitor.get("/changelog.atom?product=nope")).status_code == 404
        assert (await visitor.get("/changelog?product=nope")).status_code == 404

    async def test_the_changelog_is_paginated(self, visitor, session):
        product = make_product(session, name="Reports")
        for day in range(1, 26):
            released(session, f"Release number {day:02d}", day, product=product)

        first = await visitor.get("/changelog")
        second = await visitor.get("/changelog?page=2")

        assert headings(first.text)[0] == "Release number 25" and len(headings(first.text)) == 20
        assert headings(second.text) == [f"Release number {d:02d}" for d in range(5, 0, -1)]
        assert 'href="?page=2" rel="next">Older →</a>' in first.text and "Page 2 of 2" in second.text


class TestReleaseNotesAtRelease:
    async def test_moving_to_released_asks_for_notes_that_go_on_the_changelog(self, client, visitor, session, pm):
        item = make_item(session, title="Dark mode")
        page = (await client.get(f"/admin/items/{item.public_id}")).text
        assert 'id="move-release-notes"' in page and "they go on the changelog with it" in page

        response = await post_form(client, f"/admin/items/{item.public_id}/stage", {
            "stage_id": str(stage(session, "released").id), "release_notes": "Follows your **system**."},
            page=f"/admin/items/{item.public_id}")

        assert response.status_code == 303
        assert "Follows your <strong>system</strong>." in (await visitor.get("/changelog")).text
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "item.moved")).one()
        assert event.changes["release_notes"] == ["", "Follows your **system**."]

    async def test_notes_too_long_keep_the_item_where_it_was_and_what_was_typed(self, client, session, pm):
        item = make_item(session, title="Dark mode")
        typed = "x" * 20001

        response = await post_form(client, f"/admin/items/{item.public_id}/stage", {
            "stage_id": str(stage(session, "released").id), "release_notes": typed},
            page=f"/admin/items/{item.public_id}")

        assert response.status_code == 422
        assert "Keep it to 20000 characters" in response.text or "20000" in response.text
        assert typed in response.text
        session.refresh(item)
        assert item.released_at is None
