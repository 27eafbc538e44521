"""The changelog's pages and feeds and the sitemap, kept per content revision and minute (app/pagecache.py) and made
in a thread; the API's item and its comments read in a thread (app.db.OffLoopMiddleware).

A walk-through found that a flood of any of these addresses, each made on the event loop per request (10-300 ms),
held the kept board of the same worker at a median of half a second and more. What must hold as they are kept:
nobody gets what another audience sees, a release or an entry whose time comes shows at once, and the addresses
anyone can make up are not kept one by one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from app import pagecache
from app.changelog import service as changelog_service
from app.changelog.models import ChangelogEntry
from app.db import utcnow
from app.roadmap import service as roadmap_service
from app.roadmap.models import Visibility
from tests.factories import make_item, make_product
from tests.feedback.helpers import customer_in_segment
from tests.helpers.http import sign_in
from tests.roadmap.helpers import released

pytestmark = pytest.mark.usefixtures("still_minute")


async def _visit(client: httpx.AsyncClient, path: str) -> httpx.Response:
    client.cookies.clear()
    response = await client.get(path)
    assert response.status_code == 200, response.text[:300]
    return response


@pytest.mark.parametrize(("path", "media_type"), [
    ("/changelog.atom", "application/atom+xml; charset=utf-8"),
    ("/changelog.atom?product=mobile", "application/atom+xml; charset=utf-8"),
    ("/sitemap.xml", "application/xml; charset=utf-8"),
])
async def test_a_feed_reader_and_a_crawler_are_answered_the_kept_feed_and_sitemap(app, client, session, path,
                                                                                  media_type):
    mobile = make_product(session, name="Mobile", slug="mobile")
    released(session, "Offline mode", 4, product=mobile)
    first = await _visit(client, path)
    served = app.state.pages.finished_hits
    again = await _visit(client, path)
    assert app.state.pages.finished_hits == served + 1  # before the stack, from the bytes that went out
    assert again.content == first.content
    assert ("offline-mode" if path == "/sitemap.xml" else "Offline mode") in again.text
    assert again.headers["content-type"] == first.headers["content-type"] == media_type
    assert "set-cookie" not in first.headers
    head = await client.head(path)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == media_type
    revalidated = await client.get(path, headers={"if-none-match": again.headers["etag"]})
    assert revalidated.status_code == 304


async def test_a_visitors_changelog_and_entry_pages_hold_no_form_and_are_kept_finished_and_answered_304(
        app, client, session):
    """The Subscribe form is a page of its own: the changelog's pages link to it, set no cookie, are answered before
    the stack after their first visit and 304 to a matching ETag (they minted a CSRF cookie for every visitor)."""
    released(session, "Offline mode", 4)
    entry = ChangelogEntry(public_id="entry9s", slug="spring-release", title="Spring release", notes="Notes.",
                           published_at=utcnow() - timedelta(hours=1))
    session.add(entry)
    session.flush()
    for path in ("/changelog", entry.path):
        first = await _visit(client, path)
        assert "set-cookie" not in first.headers and 'name="csrf_token"' not in first.text
        assert 'href="/changelog/subscribe"' in first.text and 'name="email"' not in first.text
        served = app.state.pages.finished_hits
        again = await _visit(client, path)
        assert app.state.pages.finished_hits == served + 1 and again.content == first.content
        assert again.headers["etag"] == first.headers["etag"]
        revalidated = await client.get(path, headers={"if-none-match": first.headers["etag"]})
        assert revalidated.status_code == 304

    form = await _visit(client, "/changelog/subscribe")
    assert 'action="/changelog/subscribe"' in form.text and 'name="email"' in form.text
    assert 'name="csrf_token"' in form.text and "set-cookie" in form.headers
    assert form.headers["x-robots-tag"] == "noindex"


async def test_what_customers_see_never_reaches_a_visitors_kept_changelog_feed_or_sitemap(app, client, session):
    released(session, "Public export", 3)
    secret = released(session, "Quokka ledger", 4, visibility=Visibility.customers)
    customer, _ = customer_in_segment(session)
    sign_in(client, session, customer)
    # The customer asks first: whatever they were shown must not be what a visitor is then answered
    assert "Quokka ledger" in (await client.get("/changelog")).text
    for path in ("/changelog.atom", "/sitemap.xml"):
        assert "Quokka" not in (await client.get(path)).text  # feeds are the visitors', whoever asks
    for path in ("/changelog", "/changelog.atom", "/sitemap.xml"):
        for _ in range(2):  # rendered, then kept
            text = (await _visit(client, path)).text
            assert "Quokka" not in text and secret.public_id not in text
    assert "Public export" in (await _visit(client, "/changelog")).text
    sign_in(client, session, customer)
    page = (await client.get("/changelog")).text
    assert "Quokka ledger" in page and "Public export" in page


async def test_a_release_shows_in_the_kept_changelog_and_feed_at_the_next_request(client, session):
    released(session, "First thing", 3)
    for path in ("/changelog", "/changelog.atom", "/sitemap.xml"):
        await _visit(client, path)
        await _visit(client, path)
    item = released(session, "Second thing", 9)
    assert "Second thing" in (await _visit(client, "/changelog")).text
    assert "Second thing" in (await _visit(client, "/changelog.atom")).text
    assert item.path in (await _visit(client, "/sitemap.xml")).text


async def test_a_scheduled_entry_appears_within_the_minute_its_time_comes(client, session, monkeypatch):
    """Nothing changes in the database when a scheduled entry's time comes: the kept page is the minute's only."""
    released(session, "Earlier thing", 2)
    now = utcnow()
    entry = ChangelogEntry(public_id="sched1x", title="Summer release", notes="Warm.",
                           published_at=now + timedelta(seconds=90))
    session.add(entry)
    session.flush()
    for path in ("/changelog", "/changelog.atom"):
        for _ in range(2):
            assert "Summer release" not in (await _visit(client, path)).text
    later = pagecache.time.time() + 120
    monkeypatch.setattr(pagecache, "time", SimpleNamespace(time=lambda: later))
    monkeypatch.setattr(changelog_service, "utcnow", lambda: now + timedelta(seconds=120))
    assert "Summer release" in (await _visit(client, "/changelog")).text
    assert "Summer release" in (await _visit(client, "/changelog.atom")).text


async def test_a_scheduled_entry_appears_at_its_time_not_when_the_pages_minute_turns(app, client, session,
                                                                                     monkeypatch):
    """Each address's minute starts at a second of its own: the kept changelog went on showing the page without the
    entry, and answering 304 to its ETag, for up to a minute after the entry's time (a walk-through: 20 s late)."""
    monkeypatch.setattr(pagecache, "_minute", lambda path="": 29_000_000)  # the pages' minute never turns here
    released(session, "Earlier thing", 2)
    now = utcnow()
    session.add(ChangelogEntry(public_id="sched2x", title="Autumn release", notes="Crisp.",
                               published_at=now + timedelta(seconds=30)))
    session.flush()
    tags = {}
    for path in ("/changelog", "/changelog.atom"):
        for _ in range(2):
            page = await _visit(client, path)
            assert "Autumn release" not in page.text
        tags[path] = page.headers["etag"]
    served = app.state.pages.finished_hits
    assert "Autumn release" not in (await _visit(client, "/changelog")).text  # still kept, before its time
    assert app.state.pages.finished_hits == served + 1
    later = pagecache.time.time() + 31
    monkeypatch.setattr(pagecache, "time", SimpleNamespace(time=lambda: later))
    monkeypatch.setattr(changelog_service, "utcnow", lambda: now + timedelta(seconds=31))
    for path in ("/changelog", "/changelog.atom"):
        client.cookies.clear()
        fresh = await client.get(path, headers={"if-none-match": tags[path]})
        assert fresh.status_code == 200 and "Autumn release" in fresh.text, path
        assert fresh.headers["etag"] != tags[path]


async def test_an_entry_at_a_made_up_or_missing_slug_leads_to_its_one_address(app, client, session):
    entry = ChangelogEntry(public_id="entry7k", slug="spring-release", title="Spring release", notes="Notes.",
                           published_at=utcnow() - timedelta(hours=1))
    session.add(entry)
    session.flush()
    page = await _visit(client, entry.path)
    assert "Spring release" in page.text
    kept = len(app.state.pages)
    for made_up in ("/changelog/entry7k", "/changelog/entry7k/anything", "/changelog/entry7k/x1", "/changelog/entry7k/x2"):
        client.cookies.clear()
        moved = await client.get(made_up)
        assert moved.status_code == 301 and moved.headers["location"] == entry.path
    assert len(app.state.pages) == kept  # made-up addresses are not pages of their own
    client.cookies.clear()
    assert (await client.get("/changelog/nosuch1/spring-release")).status_code == 404


def _held(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> tuple[threading.Event, threading.Event]:
    """`module.name` made to wait (in its thread) until released; (entered, release)."""
    entered, release = threading.Event(), threading.Event()
    real: Callable[..., Any] = getattr(module, name)

    def waiting(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(timeout=3)  # on the event loop, this would hold every other request for 3 s
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, waiting)
    return entered, release


@pytest.mark.parametrize(("path", "module", "name"), [
    ("/api/v1/items/{id}", roadmap_service, "get_timeline"),
    ("/api/v1/items/{id}/comments", roadmap_service, "get_visible_item"),
    ("/changelog.atom", changelog_service, "list_releases"),
    ("/changelog", changelog_service, "list_releases"),
    ("/sitemap.xml", roadmap_service, "list_public_items"),
])
async def test_the_kept_board_is_answered_while_these_are_made(client, session, monkeypatch, path, module, name):
    item = released(session, "Slow thing", 3)
    make_item(session, title="On the board")
    client.cookies.clear()
    assert (await client.get("/")).status_code == 200  # the board kept
    entered, release = _held(monkeypatch, module, name)
    slow = asyncio.create_task(client.get(path.format(id=item.public_id)))
    while not entered.is_set():
        await asyncio.sleep(0.01)
    client.cookies.clear()
    board = await asyncio.wait_for(client.get("/"), timeout=2)
    assert board.status_code == 200 and "On the board" in board.text
    assert not release.is_set() and not slow.done()
    release.set()
    assert (await slow).status_code == 200


async def test_made_up_spellings_of_an_address_are_kept_as_the_one_address_they_mean(app, client, session):
    """A walk-through's thousands of `?page=N`, `?page=x…` and repeated `product=` each kept a page of their own and
    pushed the board out of the cache: each is now answered as the address that says what it shows."""
    mobile = make_product(session, name="Mobile", slug="mobile")
    released(session, "Offline mode", 4, product=mobile)
    item = make_item(session, title="Discussed")
    for path in ("/changelog", "/changelog?product=mobile", "/changelog.atom?product=mobile", item.path):
        await _visit(client, path)
    kept = len(app.state.pages)
    for path in ("/changelog?page=1", "/changelog?page=01", "/changelog?page=1&page=1",
                 "/changelog?product=ZZZ!!&product=mobile", "/changelog?page=abc&product=mobile&page=1",
                 "/changelog.atom?product=junk1&product=mobile", "/changelog.atom?product=junk2&product=mobile",
                 f"{item.path}?page=x1", f"{item.path}?page=1", f"{item.path}?page=0001"):
        client.cookies.clear()
        answer = await client.get(path)
        assert answer.status_code in (200, 422), (path, answer.status_code)
    assert len(app.state.pages) == kept
    # A page past the end leads to the last (one page here): not a page kept per number
    for path, last in (("/changelog?page=9999", "/changelog"), ("/changelog?product=mobile&page=50",
                                                                  "/changelog?product=mobile"),
                       (f"{item.path}?page=7", item.path)):
        client.cookies.clear()
        moved = await client.get(path)
        assert moved.status_code == 302 and moved.headers["location"] == last, path
    assert len(app.state.pages) == kept
    assert "Offline mode" in (await _visit(client, "/changelog.atom?product=junk3&product=mobile")).text


def test_a_failed_csrf_check_keeps_nothing_and_no_long_value_is_kept():
    """Anyone can send made-up cookies of any size: only tokens the app renders for cookies it makes are kept."""
    from app.security import CsrfTokens

    tokens = CsrfTokens("s" * 40)
    assert not tokens.valid("c" * 43, "x" * 30_000, "forged")
    assert not tokens.valid("d" * 30_000, "", "forged")
    assert tokens._kept == {}
    token = tokens.form_token("c" * 43, "s" * 43)
    assert tokens.valid("c" * 43, "s" * 43, token) and len(tokens._kept) == 1
    tokens.form_token("e" * 101, "s" * 43)
    assert len(tokens._kept) == 1
