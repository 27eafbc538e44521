"""The changelog page, its Atom feed, the sitemap and robots.txt."""

from __future__ import annotations

import calendar
import dataclasses
import xml.etree.ElementTree as ET

import feedparser

from app.portal import service as portal
from app.roadmap.models import Visibility
from tests.factories import make_item, make_pm, make_product
from tests.roadmap.helpers import released

BASE = "http://testserver"


def _position(text: str, needle: str) -> int:
    index = text.find(needle)
    assert index >= 0, f"{needle!r} is missing"
    return index


async def test_changelog_lists_releases_newest_first_with_rendered_notes(client, session):
    product = make_product(session, name="Reports")
    released(session, "Scheduled exports", 3, product=product, release_notes="Exports run **every Monday**.")
    released(session, "Dark mode", 20, product=product, release_notes="Follows your system setting.")
    released(session, "SSO login", 11, product=product, release_notes="See [the guide](https://example.com/sso).")
    make_item(session, title="Audit log", release_notes="Not released yet")

    page = (await client.get("/changelog")).text

    assert _position(page, "Dark mode") < _position(page, "SSO login") < _position(page, "Scheduled exports")
    assert "Exports run <strong>every Monday</strong>." in page
    assert '<a href="https://example.com/sso" rel="nofollow ugc noopener">the guide</a>' in page
    assert "20 March 2026" in page and "Reports" in page
    assert "Audit log" not in page and "Not released yet" not in page


async def test_release_notes_cannot_inject_markup(client, session):
    released(session, "Safe notes", 5, release_notes="<script>alert(1)</script> [x](javascript:alert(1))")

    page = (await client.get("/changelog")).text

    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert 'href="javascript' not in page


async def test_empty_changelog_says_so(client):
    page = (await client.get("/changelog")).text

    assert "Nothing released yet" in page


async def test_atom_feed_parses_cleanly_with_ids_titles_dates_and_links(client, session):
    older = released(session, "Scheduled exports", 3, release_notes="Exports run **every Monday**.")
    newer = released(session, "Reports & <dashboards>", 20, summary="Faster & nicer")
    make_item(session, stage_slug="released", title="Internal release", visibility=Visibility.internal)

    response = await client.get("/changelog.atom")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(response.content)
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.id == f"{BASE}/changelog"
    assert feed.feed.title.endswith("changelog")
    assert calendar.timegm(feed.feed.updated_parsed) == newer.released_at.timestamp()
    assert [e.title for e in feed.entries] == ["Reports & <dashboards>", "Scheduled exports"]
    assert [e.id for e in feed.entries] == [f"{BASE}/items/{newer.public_id}", f"{BASE}/items/{older.public_id}"]
    assert [e.link for e in feed.entries] == [BASE + newer.path, BASE + older.path]
    assert [calendar.timegm(e.updated_parsed) for e in feed.entries] == [
        newer.released_at.timestamp(), older.released_at.timestamp()]
    assert all(e.published_parsed for e in feed.entries)
    assert "<strong>every Monday</strong>" in feed.entries[1].content[0].value
    assert feed.entries[0].summary == "Faster & nicer"


async def test_an_empty_atom_feed_is_still_valid(client):
    feed = feedparser.parse((await client.get("/changelog.atom")).content)

    assert not feed.bozo and feed.entries == [] and feed.feed.id and feed.feed.updated_parsed


async def test_sitemap_lists_public_items_only(client, session):
    public = make_item(session, title="Scheduled exports")
    shipped = make_item(session, stage_slug="released", title="Dark mode")
    make_item(session, title="Draft idea", published=False)
    make_item(session, title="Internal migration", visibility=Visibility.internal)
    make_item(session, title="Enterprise only", visibility=Visibility.customers)

    response = await client.get("/sitemap.xml")

    assert response.headers["content-type"].startswith("application/xml")
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locs = {loc.text for loc in ET.fromstring(response.content).findall("s:url/s:loc", ns)}
    assert locs == {f"{BASE}/", f"{BASE}/changelog", BASE + public.path, BASE + shipped.path}


async def test_robots_points_crawlers_at_the_sitemap_and_away_from_staff_pages(client):
    response = await client.get("/robots.txt")

    lines = response.text.splitlines()
    assert response.headers["content-type"].startswith("text/plain")
    assert f"Sitemap: {BASE}/sitemap.xml" in lines
    assert "Disallow: /admin" in lines and "User-agent: *" in lines


async def test_a_private_portal_asks_crawlers_to_keep_out(client, session):
    access = portal.get_access(session)
    portal.update_access(session, actor=make_pm(session), access=dataclasses.replace(access, private_mode=True))
    session.flush()
    response = await client.get("/robots.txt")
    assert response.status_code == 200 and response.text.splitlines() == ["User-agent: *", "Disallow: /"]
