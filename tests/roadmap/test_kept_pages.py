"""Finished pages answered before the stack (app.pagecache.KeptPagesMiddleware), for every audience.

A visitor's board or item page, once rendered, is answered by the middleware from the exact bytes that went out
(cookies the app never reads do not count); everyone else (signed in, staff, a visitor with a flash message) goes
through the app. Each test first warms the finished page as a visitor, then checks that nobody else is served it,
and that a change shows at the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from starlette.requests import Request

from app import pagecache, revision, web
from app.accounts.models import User
from app.config import Settings
from app.db import Database
from app.main import create_app
from app.roadmap.models import Item, Visibility
from app.roadmap.pages import TEMPLATE as ITEM_TEMPLATE
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_admin, make_item, make_pm
from tests.feedback.helpers import customer_in_segment
from tests.helpers.databases import connected, own_database
from tests.helpers.http import client_for, post_form, sign_in
from tests.helpers.sso import NO_STAFF_RULES
from tests.voting.helpers import vote_json, widget_text

# Counts of the cache's hits and misses: a minute turning between two visits would add a miss.
pytestmark = pytest.mark.usefixtures("still_minute")


async def _visit(client: httpx.AsyncClient, path: str = "/") -> httpx.Response:
    client.cookies.clear()
    response = await client.get(path)
    assert response.status_code == 200
    return response


async def _warm(app, client: httpx.AsyncClient, path: str = "/") -> httpx.Response:  # type: ignore[no-untyped-def]
    """Render and keep the page, then check the next visitor is answered by the middleware, byte for byte."""
    first = await _visit(client, path)
    before = app.state.pages.finished_hits
    again = await _visit(client, path)
    assert app.state.pages.finished_hits == before + 1
    assert again.content == first.content
    assert again.headers.get("content-security-policy") == first.headers.get("content-security-policy")
    assert again.headers["content-type"] == first.headers["content-type"] == "text/html; charset=utf-8"
    assert "set-cookie" not in again.headers and "set-cookie" not in first.headers  # no CSRF cookie for nothing
    return again


async def test_a_visitors_board_and_item_page_are_answered_finished(app, client, session):
    item = make_item(session, title="Shift swaps")
    board = await _warm(app, client)
    assert widget_text(board.text, item.public_id) == "▲ 0 Sign in to vote"
    assert 'name="csrf-token"' not in board.text and "csrf_token" not in board.text
    page = await _warm(app, client, item.path)
    assert "Shift swaps" in page.text
    await _warm(app, client, "/?view=horizon")


async def test_signed_in_people_and_staff_never_get_the_visitors_finished_page(app, client, session):
    public = make_item(session, title="Open to all")
    secret = make_item(session, title="Quokkavault", visibility=Visibility.customers)
    draft = make_item(session, title="Draftish", published=False)
    customer, _ = customer_in_segment(session, "Enterprise")
    voting.cast_vote(session, item=public, user=customer, importance=Importance.critical)
    visitor = await _warm(app, client)
    assert secret.title not in visitor.text and draft.title not in visitor.text
    await _warm(app, client, public.path)

    served = app.state.pages.finished_hits
    sign_in(client, session, customer)
    board = (await client.get("/")).text
    assert secret.title in board and "You voted: Critical" in widget_text(board, public.public_id)
    assert "Sign out" in board and 'name="csrf-token"' in board
    item_page = (await client.get(public.path)).text
    assert "Sign in to vote" not in item_page

    client.cookies.clear()
    sign_in(client, session, make_pm(session))
    staff_board = (await client.get("/")).text
    assert draft.title in staff_board and secret.title in staff_board
    assert app.state.pages.finished_hits == served


async def test_cookies_the_app_never_reads_still_get_the_finished_page(app, client, session):
    """A consent banner's or an analytics script's cookie, or the CSRF cookie a form left, changes nothing of a
    visitor's answer: they are answered the finished page, byte for byte and public, as a visitor without cookies."""
    make_item(session, title="Crumbs")
    kept = await _warm(app, client)
    for jar in ({"_ga": "GA1.1.123.456", "cookieconsent_status": "dismiss"}, {"ahead_csrf": "x" * 43},
                {"ahead_csrf": "x" * 43, "sessionid": "a-sibling-apps", "csrftoken": "theirs"}):
        client.cookies.clear()
        served = app.state.pages.finished_hits
        response = await client.get("/", headers={"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())})
        assert app.state.pages.finished_hits == served + 1, jar
        assert response.content == kept.content
        assert response.headers.get("cache-control") == kept.headers.get("cache-control")
        assert "set-cookie" not in response.headers


async def test_a_flash_message_goes_through_the_app_and_a_session_naming_nobody_gets_the_page_marked_private(
        app, client, session):
    """A flash message is shown once and cleared: never the visitors' finished page, however the cookie is spelled
    or whatever comes with it. A session cookie that names nobody (ended, made up) is a visitor's: the finished page,
    marked private as the app marks any answer to a request naming a session (a live one: test_kept_customer_pages)."""
    make_item(session, title="Flashy")
    public = await _warm(app, client)
    served = app.state.pages.finished_hits
    for header in ("ahead_flash=something", "_ga=1; ahead_flash=x", "ahead_session=x; ahead_flash=y"):
        client.cookies.clear()
        response = await client.get("/", headers={"cookie": header})
        assert response.status_code == 200, header
        assert app.state.pages.finished_hits == served, header
    for header in ("ahead_session=ended-long-ago", "ahead_session =ended-long-ago; _ga=1", "_ga=1;ahead_session\t=x"):
        client.cookies.clear()
        response = await client.get("/", headers={"cookie": header})
        served += 1
        assert app.state.pages.finished_hits == served, header
        assert response.content == public.content and public.headers["cache-control"] == "no-cache"
        assert response.headers["cache-control"] == "private, no-cache", header

    request = Request({"type": "http", "app": app, "method": "GET", "path": "/", "headers": [], "query_string": b""})
    flash = web.redirect(request, "/", flash="Saved, and shown once.").headers["set-cookie"].split(";")[0]
    client.cookies.clear()
    shown = await client.get("/", headers={"cookie": f"_ga=GA1.1.2.3; {flash}"})
    assert "Saved, and shown once." in shown.text
    assert 'ahead_flash=""' in shown.headers["set-cookie"]  # cleared
    assert app.state.pages.finished_hits == served

    # One that does not verify (forged, or signed with an older key) is not shown, and is cleared as well: kept, it
    # sent every later page of that browser past the finished pages
    for path in ("/", "/?view=horizon", "/changelog"):
        client.cookies.clear()
        forged = await client.get(path, headers={"cookie": "_ga=1; ahead_flash=INJECTEDTEXT"})
        assert forged.status_code == 200 and "INJECTEDTEXT" not in forged.text
        assert 'ahead_flash=""' in forged.headers["set-cookie"], path


async def test_a_link_with_parameters_no_page_reads_is_answered_finished_and_made_up_ones_keep_nothing_more(
        app, client, session):
    """A launch site's `?ref=` link is answered from the kept board after its first visit, byte for byte; made-up
    parameters, each answered the same page by the app, are not each kept as an address of it (a worker's memory
    grew with every one until the next change), and the board's own address stays answered finished."""
    make_item(session, title="Launch day")
    kept = await _warm(app, client)
    pages = app.state.pages
    await _visit(client, "/?ref=producthunt")
    served = pages.finished_hits
    assert (await _visit(client, "/?ref=producthunt")).content == kept.content
    assert pages.finished_hits == served + 1
    for n in range(3 * pagecache.MAX_OTHER_ADDRESSES):
        assert (await _visit(client, f"/?x={n}")).content == kept.content
    assert len(pages._finished) <= 1 + pagecache.MAX_OTHER_ADDRESSES
    served = pages.finished_hits
    assert (await _visit(client)).content == kept.content
    assert pages.finished_hits == served + 1


async def test_a_vote_and_an_edit_show_at_the_next_request(app, client, session):
    item = make_item(session, title="Before the edit")
    await _warm(app, client)
    await _warm(app, client, item.path)

    customer, _ = customer_in_segment(session)
    sign_in(client, session, customer)
    assert (await vote_json(client, item.public_id)).status_code == 200
    assert widget_text((await _visit(client)).text, item.public_id) == "▲ 1 Sign in to vote"
    assert "1</strong> vote" in (await _visit(client, item.path)).text

    item.title = "After the edit"
    session.flush()
    assert "After the edit" in (await _visit(client)).text
    assert "After the edit" in (await _visit(client, item.path)).text


async def test_a_vote_keeps_the_page_and_fills_the_new_count(app, client, session):
    """A vote moves the votes revision only: the kept board is not rendered again, its count is filled in."""
    item = make_item(session, title="Counted")
    other = make_item(session, title="Uncounted")
    customer, _ = customer_in_segment(session)
    sign_in(client, session, customer)  # (a sign-in itself moves the content revision: the user's row)
    cookie = client.cookies.get("ahead_session")
    await client.get("/")  # the customer's own kept board
    await _warm(app, client)
    client.cookies.set("ahead_session", cookie)
    misses, kept = app.state.pages.misses, len(app.state.pages)
    assert (await vote_json(client, item.public_id)).status_code == 200

    board = (await _visit(client)).text
    assert widget_text(board, item.public_id) == "▲ 1 Sign in to vote"
    assert widget_text(board, other.public_id) == "▲ 0 Sign in to vote"
    client.cookies.set("ahead_session", cookie)
    mine = (await client.get("/")).text
    assert "You voted: Important" in widget_text(mine, item.public_id) and "▲ 1" in widget_text(mine, item.public_id)
    assert app.state.pages.misses == misses and len(app.state.pages) == kept  # kept, not rendered again

    served = app.state.pages.finished_hits
    assert widget_text((await _visit(client)).text, item.public_id) == "▲ 1 Sign in to vote"
    assert app.state.pages.finished_hits == served + 1  # finished again under the new count

    client.cookies.set("ahead_session", cookie)
    assert (await vote_json(client, item.public_id, unvote=True)).status_code == 200
    assert widget_text((await _visit(client)).text, item.public_id) == "▲ 0 Sign in to vote"


async def test_after_a_vote_the_visitors_answer_is_filled_again_before_the_stack_as_the_app_fills_it(
        app, client, session):
    """A vote moves only the votes revision: the next visitor's board is made from the kept page with the new
    counts by the middleware (no route, no render), byte for byte what the app answers for it."""
    item = make_item(session, title="Refilled")
    other = make_item(session, title="Untouched")
    customer, _ = customer_in_segment(session)
    sign_in(client, session, customer)  # (a sign-in moves the content revision: the user's row)
    cookie = client.cookies.get("ahead_session")
    await _warm(app, client)
    client.cookies.set("ahead_session", cookie)
    assert (await vote_json(client, item.public_id)).status_code == 200

    pages = app.state.pages
    refills, misses, served = pages.refills, pages.misses, pages.finished_hits
    refilled = await _visit(client)
    assert pages.refills == refills + 1 and pages.misses == misses  # not through the app's route
    assert widget_text(refilled.text, item.public_id) == "▲ 1 Sign in to vote"
    assert widget_text(refilled.text, other.public_id) == "▲ 0 Sign in to vote"
    assert "set-cookie" not in refilled.headers and 'name="csrf-token"' not in refilled.text
    again = await _visit(client)  # kept under the new votes revision: finished as before
    assert pages.finished_hits == served + 1 and pages.refills == refills + 1 and again.content == refilled.content

    pages.clear()  # the app renders it afresh: the same bytes, the same validator
    rendered = await _visit(client)
    assert rendered.content == refilled.content
    assert rendered.headers["etag"] == refilled.headers["etag"]
    assert rendered.headers["content-length"] == refilled.headers["content-length"]
    assert rendered.headers.get("content-security-policy") == refilled.headers.get("content-security-policy")


async def test_pages_whose_layout_follows_the_counts_are_never_filled_again_before_the_stack(app, client, session):
    """Sorted by votes, or an item page with its vote box: the page itself is kept under the votes revision, so
    a vote sends its next visitor through the app, which renders it again."""
    item = make_item(session, title="Boxed")
    customer, _ = customer_in_segment(session)
    sign_in(client, session, customer)
    cookie = client.cookies.get("ahead_session")
    await _warm(app, client, "/?sort=top")
    await _warm(app, client, item.path)
    client.cookies.set("ahead_session", cookie)
    assert (await vote_json(client, item.public_id)).status_code == 200
    refills = app.state.pages.refills
    assert "1</strong> vote" in (await _visit(client, item.path)).text
    await _visit(client, "/?sort=top")
    assert app.state.pages.refills == refills


async def test_an_ordering_by_votes_follows_a_vote(app, client, session):
    """Sorted by votes, the order is the counts: that page is kept under the votes revision too."""
    first = make_item(session, title="Alpha first")
    second = make_item(session, title="Beta second")
    customer, _ = customer_in_segment(session)
    voting.cast_vote(session, item=first, user=customer, importance=Importance.important)
    page = (await _visit(client, "/?sort=top")).text
    assert page.index("Alpha first") < page.index("Beta second")
    others = [customer_in_segment(session)[0] for _ in range(2)]
    for person in others:
        sign_in(client, session, person)
        assert (await vote_json(client, second.public_id)).status_code == 200
    page = (await _visit(client, "/?sort=top")).text
    assert page.index("Beta second") < page.index("Alpha first")


async def test_a_page_kept_in_another_minute_is_rendered_again(app, client, session, monkeypatch):
    """Cards say "updated 3 minutes ago": the minute is part of what a finished page is kept for."""
    make_item(session, title="Timely")
    await _warm(app, client)
    served = app.state.pages.finished_hits
    later = pagecache._minute("/") + 1
    monkeypatch.setattr(pagecache, "_minute", lambda _path="": later)
    await _visit(client)
    assert app.state.pages.finished_hits == served
    await _visit(client)
    assert app.state.pages.finished_hits == served + 1


@contextlib.asynccontextmanager
async def _app_of_its_own(tmp_path: Path, label: str, title: str
                          ) -> AsyncIterator[tuple[Any, httpx.AsyncClient, str]]:
    """The app on a database of its own holding one item (its page's path): requests run side by side, each in its
    own transaction, as in a server (the test transaction's savepoints would interleave)."""
    with own_database(tmp_path, label) as url, connected(url) as database:
        with database.transaction() as session:
            path = make_item(session, title=title).path
        settings = Settings(database_url=url, secret_key="minute-" + "x" * 40, base_url="http://testserver",
                            redis_url="", _env_file=None)  # type: ignore[call-arg]
        app = create_app(settings, database)
        async with LifespanManager(app) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
            yield app, client, path


def _minutes_later_counted(monkeypatch: pytest.MonkeyPatch, minutes: int = 1) -> list[str]:
    """The kept pages' clock `minutes` on, and `_capture` (a page's render) counted: the templates rendered."""
    later = time.time() + 60 * minutes
    monkeypatch.setattr(pagecache, "time", SimpleNamespace(time=lambda: later))
    renders: list[str] = []
    capture = pagecache._capture

    def counted(cache, request, viewer, template, *args, **kwargs):  # type: ignore[no-untyped-def]
        renders.append(template)
        return capture(cache, request, viewer, template, *args, **kwargs)

    monkeypatch.setattr(pagecache, "_capture", counted)
    return renders


def _minutes_later_held(monkeypatch: pytest.MonkeyPatch, minutes: int = 1
                        ) -> tuple[list[str], threading.Event, threading.Event]:
    """`_minutes_later_counted`, each render held until the test releases it once one started: (templates rendered,
    started, release)."""
    started, release = threading.Event(), threading.Event()
    capture = pagecache._capture

    def held(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.set()
        assert release.wait(10)
        return capture(*args, **kwargs)

    monkeypatch.setattr(pagecache, "_capture", held)
    return _minutes_later_counted(monkeypatch, minutes), started, release  # counted as they start, before the hold


async def _busy(client: httpx.AsyncClient, started: threading.Event) -> asyncio.Task[httpx.Response]:
    """A visitor's request making the changelog's page for its new minute, its render held (`_minutes_later_held`):
    the worker is making pages, as in the first moments after a quiet spell."""
    making = asyncio.create_task(client.get("/changelog"))
    assert await asyncio.to_thread(started.wait, 10)
    return making


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not reached in 10 s")


async def test_a_lone_visitor_after_a_quiet_spell_gets_this_minutes_page(tmp_path, monkeypatch):
    """On a quiet portal every visitor comes after a quiet spell: the page whose minute turned is made for them, their
    relative times this minute's, never the page kept at the last visit (a walk-through's finding)."""
    async with _app_of_its_own(tmp_path, "quiet-lone", "Lone visit") as (app, client, _):
        first = await _warm(app, client, "/")
        assert "Updated <time" in first.text and "just now" in first.text
        cache: pagecache.PageCache = app.state.pages
        renders = _minutes_later_counted(monkeypatch, 3)
        page = await _visit(client, "/")
        assert "just now" not in page.text and "minutes ago" in page.text
        assert len(renders) == 1 and not cache.refreshing and cache.refreshes == 0


async def test_a_page_long_unasked_is_rendered_once_however_many_visitors_ask_at_once(tmp_path, monkeypatch):
    """An item page is made in a thread (app.db.OffLoopMiddleware): when no page of its last minutes is kept (asked for
    last longer ago than `STALE_MINUTES`), the first visitor makes it and those asking meanwhile wait for that one
    render rather than each making it again."""
    async with _app_of_its_own(tmp_path, "minute", "Timely too") as (app, client, path):
        await _warm(app, client, path)
        cache: pagecache.PageCache = app.state.pages
        renders = _minutes_later_counted(monkeypatch, pagecache.STALE_MINUTES + 1)
        together = await asyncio.gather(*(client.get(path) for _ in range(10)))
        assert [r.status_code for r in together] == [200] * 10
        assert len({r.content for r in together}) == 1 and b"Timely too" in together[0].content
        assert len(renders) == 1  # rendered by the first, kept for the other nine
        assert not cache.in_flight and not cache.refreshing and cache.refreshes == 0


# At most STALE_MINUTES - 1 on: a real minute may turn between keeping the page and moving the clock
@pytest.mark.parametrize("minutes", [1, pagecache.STALE_MINUTES - 1])
@pytest.mark.parametrize("page", ["board", "item page"])
async def test_in_a_burst_after_a_quiet_spell_visitors_get_the_kept_page_at_once_while_it_is_made_again(
        tmp_path, monkeypatch, page, minutes):
    """After a quiet spell every kept page's minute has turned; in the burst that follows, the first visitors each
    waited for the renders of all of them (the item pages' p99 0.2-0.8 s, bench/README.md). While the worker is making
    pages, a visitor is answered the page kept in one of the last minutes (the same content and counts) at once, by the
    app and then before the stack, and the page is made once apart from them and kept for the new minute: the board
    (made on the event loop otherwise) and the item page (in a thread) alike."""
    async with _app_of_its_own(tmp_path, f"quiet-{minutes}", "Timely three") as (app, client, item_path):
        path = "/" if page == "board" else item_path
        first = await _warm(app, client, path)
        await _warm(app, client, "/changelog")
        cache: pagecache.PageCache = app.state.pages
        renders, started, release = _minutes_later_held(monkeypatch, minutes)
        served = cache.finished_hits
        try:
            making = await _busy(client, started)
            at_once = [await asyncio.wait_for(_visit(client, path), 5) for _ in range(3)]
            assert [r.content for r in at_once] == [first.content] * 3
            assert cache.finished_hits == served + 2  # the first through the app, which queued the page's making
            await _until(lambda: len(renders) == 2)
            assert cache.refreshing
        finally:
            release.set()
        assert (await making).status_code == 200
        await cache.drain()
        assert len(renders) == 2 and not cache.in_flight and cache.refreshes == 1
        made = await _visit(client, path)  # the new minute's page, kept: not rendered again
        assert "Timely three" in made.text and len(renders) == 2
        served = cache.finished_hits
        assert (await _visit(client, path)).content == made.content and cache.finished_hits == served + 1


async def test_pages_made_again_in_a_burst_are_made_one_at_a_time(tmp_path, monkeypatch):
    """A worker has dozens of pages to make again after a quiet minute: made side by side in threads they took the
    interpreter's lock from the event loop, and the visitors answered meanwhile waited (p99 0.3 s); one at a time, the
    loop keeps half of it (bench/README.md)."""
    async with _app_of_its_own(tmp_path, "quiet-queue", "One at a time") as (app, client, item_path):
        paths = ("/", item_path, "/?view=horizon")
        for path in (*paths, "/changelog"):
            await _warm(app, client, path)
        cache: pagecache.PageCache = app.state.pages
        renders, started, release = _minutes_later_held(monkeypatch)
        try:
            making = await _busy(client, started)
            for path in paths:
                assert (await asyncio.wait_for(_visit(client, path), 5)).status_code == 200
            await _until(lambda: len(renders) == 2)
            await asyncio.sleep(0.2)  # time enough for a third render to start, were it let
            assert len(renders) == 2 and len(cache.in_flight) == 4
        finally:
            release.set()
        await making
        await cache.drain()
        assert len(renders) == 4 and cache.refreshes == 3 and not cache.in_flight


async def test_a_page_made_again_while_the_content_changes_is_not_kept_over_the_change(tmp_path, monkeypatch):
    """An edit committed while a page is made again apart from its visitors: the page made from what was there before
    may be kept under the revision it was made under, never answered after the edit."""
    async with _app_of_its_own(tmp_path, "quiet-edit", "Before the edit") as (app, client, path):
        await _warm(app, client, path)
        await _warm(app, client, "/changelog")
        cache: pagecache.PageCache = app.state.pages
        renders, started, release = _minutes_later_held(monkeypatch)
        try:
            making = await _busy(client, started)
            assert "Before the edit" in (await asyncio.wait_for(_visit(client, path), 5)).text
            await _until(lambda: len(renders) == 2)  # the item page's, under way
            database: Database = app.state.database
            with database.transaction() as session:
                session.query(Item).one().title = "After the edit"
        finally:
            release.set()
        await making
        await cache.drain()
        response = await client.get(path, follow_redirects=True)
        assert "After the edit" in response.text and "Before the edit" not in response.text
        assert renders.count(ITEM_TEMPLATE) == 2  # the one made before the edit, then the edit's visitor's


def _refreshes(metrics_text: str) -> dict[str, float]:
    """`ahead_page_refreshes_total` by outcome, as /metrics says it."""
    counts = {"made": 0.0, "dropped": 0.0, "failed": 0.0}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "ahead_page_refreshes_total":
                counts[sample.labels["outcome"]] = sample.value
    return counts


async def test_a_page_whose_remaking_fails_is_made_by_the_next_visitor(tmp_path, monkeypatch, caplog):
    """A page made again apart from its visitors that fails (the database gone for a moment) is logged and counted, not
    kept; the visitor was answered the page kept before, and a later one gets it made."""
    async with _app_of_its_own(tmp_path, "quiet-fail", "Made again") as (app, client, path):
        first = await _warm(app, client, path)
        await _warm(app, client, "/changelog")
        cache: pagecache.PageCache = app.state.pages
        renders, started, release = _minutes_later_held(monkeypatch)
        held = pagecache._capture
        failures = [RuntimeError("the database went away")]

        def failing_once(*args, **kwargs):  # type: ignore[no-untyped-def]
            if failures and args[3] == ITEM_TEMPLATE:
                raise failures.pop()
            return held(*args, **kwargs)

        monkeypatch.setattr(pagecache, "_capture", failing_once)
        before = _refreshes((await client.get("/metrics")).text)
        try:
            making = await _busy(client, started)
            assert (await _visit(client, path)).content == first.content
            await _until(lambda: not failures and not cache.refreshing)
        finally:
            release.set()
        await making
        assert cache.refreshes == 0 and not cache.in_flight
        assert "could not be made again" in caplog.text and "ahead.pagecache" in caplog.text
        after = _refreshes((await client.get("/metrics")).text)  # what the operator's dashboard sees
        assert after["failed"] == before["failed"] + 1 and after["made"] == before["made"]
        again = await _visit(client, path)  # nothing is being made now: made for this visitor
        assert b"Made again" in again.content and cache.refreshes == 0 and renders.count(ITEM_TEMPLATE) == 1


async def test_a_signed_in_persons_page_is_made_by_their_own_request_when_its_minute_turned(tmp_path, monkeypatch):
    """Only a visitor's page is made apart from the request: a signed-in customer's board is made for them as before
    (their request's viewer), and the page they get is this minute's."""
    async with _app_of_its_own(tmp_path, "quiet-customer", "For customers") as (app, client, _):
        database: Database = app.state.database
        with database.transaction() as session:
            customer, _org = customer_in_segment(session)
            sign_in(client, session, customer)
        assert (await client.get("/")).status_code == 200
        cache: pagecache.PageCache = app.state.pages
        renders = _minutes_later_counted(monkeypatch)
        response = await client.get("/")
        assert response.status_code == 200 and "For customers" in response.text
        assert len(renders) == 1 and not cache.refreshing and cache.refreshes == 0


def test_the_pages_of_a_board_are_rendered_again_each_minute_but_not_all_in_the_same_second(monkeypatch):
    """48 item pages rendered again in the same second held a worker for the sum of their renders (p99 in
    bench/README.md); each path's minute starts at a second of its own, and still turns once every 60 s."""
    paths = [f"/items/it{n:06d}/card-number-{n}" for n in range(48)]
    start = 1_800_000_000  # the first second of a minute
    turned_at = set()
    for path in paths:
        minutes = []
        for second in range(61):
            monkeypatch.setattr(pagecache, "time", SimpleNamespace(time=lambda s=second: start + s + 0.5))
            minutes.append(pagecache._minute(path))
        turns = [second for second in range(1, 61) if minutes[second] != minutes[second - 1]]
        assert len(turns) == 1, path  # relative times at most a minute old, rendered at most once a minute
        turned_at.add(turns[0])
    assert len(turned_at) >= 20  # spread over the minute, not one burst


async def test_private_mode_turned_on_is_not_bypassed(app, client, session):
    make_item(session, title="Was public")
    await _warm(app, client)
    sign_in(client, session, make_admin(session))
    response = await post_form(client, "/admin/access", {**NO_STAFF_RULES, "private_mode": "1"}, page="/admin/access")
    assert response.status_code == 303, response.text
    client.cookies.clear()
    response = await client.get("/")
    assert response.status_code in (302, 303) and "/login" in response.headers["location"]


async def test_made_up_parameters_and_other_methods_are_not_answered_finished(app, client, session):
    make_item(session, title="Plain")
    await _warm(app, client)
    served = app.state.pages.finished_hits
    client.cookies.clear()
    assert (await client.get("/?made_up=x")).status_code == 200
    assert (await client.get("/", headers={"authorization": "Bearer nothing"})).status_code == 200
    assert app.state.pages.finished_hits == served
    # If-None-Match is answered outside (app/responses.py), from the kept finished answer's ETag.
    assert (await client.get("/", headers={"if-none-match": '"x"'})).status_code == 200
    assert app.state.pages.finished_hits == served + 1


async def test_a_campaign_link_is_answered_the_finished_page_of_its_plain_address(app, client, session):
    """`?utm_source=…`, an ad's click id: parameters no page reads, answered before the stack from the plain
    address's finished page, byte for byte what the app answers for it; other parameters are kept as sent."""
    make_item(session, title="Plain")
    board = await _warm(app, client)
    sorted_board = await _warm(app, client, "/?sort=newest")
    served = app.state.pages.finished_hits
    for path, expected in (("/?utm_source=newsletter&utm_medium=email", board),
                           ("/?fbclid=abc&sort=newest&gclid=x", sorted_board)):
        assert (await _visit(client, path)).content == expected.content, path
    assert app.state.pages.finished_hits == served + 2


def test_a_kept_finished_answer_counts_against_the_bound_and_goes_with_its_page():
    cache = pagecache.PageCache(max_characters=1_000)
    key = ("t", "/", "", ("public", False), None, pagecache._minute("/"))
    cache.get(1, key)
    cache.put(1, key, pagecache.Page(parts=["x" * 100]))
    cache.keep_finished(1, 7, key, "/", b"", 200, [], b"y" * 300)
    assert cache.characters == 400 and cache.finished(1, 7, "/", b"") == (200, [], b"y" * 300)
    assert cache.finished(2, 7, "/", b"") is None  # another content revision
    assert cache.finished(1, 8, "/", b"") is None  # another votes revision: its counts are not these
    cache.keep_finished(1, 8, key, "/", b"", 200, [], b"z" * 250)  # replaces the one of the older counts
    assert cache.characters == 350 and cache.finished(1, 8, "/", b"") == (200, [], b"z" * 250)
    other = ("t", "/other", "", ("public", False), None, pagecache._minute("/other"))
    cache.put(1, other, pagecache.Page(parts=["o" * 700]))  # beyond the bound: the least recently used goes
    assert cache.finished(1, 8, "/", b"") is None and not cache.might_have("/", b"")


# --- the revision without a transaction per request: SQLite's data_version -------------------------------


def test_sqlite_data_version_sees_every_commit_of_any_other_connection(tmp_path):
    """The watcher reads the revisions again only when something was committed, and after every commit: the
    app's own pool, a raw connection as another process would write, a vote (the votes revision)."""
    with own_database(tmp_path, "watched") as url:
        if not url.startswith("sqlite"):
            pytest.skip("SQLite's data_version; PostgreSQL's reader is tested below")
        with connected(url) as database:
            watcher = revision.reader_for(database)
            assert isinstance(watcher, revision.SqliteWatcher)
            try:
                first = watcher(database)
                reads = watcher.reads
                assert watcher(database) == first and watcher.reads == reads  # nothing committed: no read

                with database.transaction() as session:
                    item = make_item(session, title="Committed")
                    item_id = item.id
                    customer, _ = customer_in_segment(session)
                    customer_id = customer.id
                after_edit = watcher(database)
                assert after_edit[0] != first[0] and watcher.reads == reads + 1

                raw = sqlite3.connect(database.engine.url.database)
                raw.execute("UPDATE content_revisions SET value = value + 1 WHERE shard = 0")
                raw.commit()
                raw.close()
                assert watcher(database)[0] == after_edit[0] + 1

                with database.transaction() as session:
                    voting.cast_vote(session, item=session.get(Item, item_id), user=session.get(User, customer_id),
                                     importance=Importance.important)
                content, votes = watcher(database)
                assert content == after_edit[0] + 1 and votes != after_edit[1]
                with database.new_session(write=False) as session:
                    assert (content, votes) == revision.both(session)  # what a request's own read says
            finally:
                watcher.close()


async def _an_edit_and_a_vote_show_at_once(client: httpx.AsyncClient, database: Database, item_id: int,
                                           customer_id: int, title: str) -> None:
    """Commits outside the app (an edit, then a vote) each show at the next visitor's request."""
    with database.transaction() as session:
        item = session.get(Item, item_id)
        item.title, public_id = title, item.public_id
    assert title in (await _visit(client)).text

    with database.transaction() as session:
        voting.cast_vote(session, item=session.get(Item, item_id), user=session.get(User, customer_id),
                         importance=Importance.critical)
    assert widget_text((await _visit(client)).text, public_id) == "▲ 1 Sign in to vote"


@contextlib.contextmanager
def _served(tmp_path: Path, name: str, kind: str, skip: str) -> Iterator[tuple[Settings, Database]]:
    """A database of its own of the run's kind (the test is skipped on the other, with `skip` as the reason), its
    settings for a whole app without a test transaction, and a connection to it."""
    with own_database(tmp_path, name) as url:
        if not url.startswith(kind):
            pytest.skip(skip)
        settings = Settings(database_url=url, secret_key=f"{name}-" + "x" * 40, base_url="http://testserver",
                            redis_url="", _env_file=None)  # type: ignore[call-arg]
        with connected(url) as database:
            yield settings, database


async def test_on_a_sqlite_file_a_commit_shows_at_the_next_finished_answer(tmp_path):
    """The whole app on a database file of its own (no test transaction): visitors are answered finished after
    data_version alone, and every commit (an edit, a vote) shows at the next request."""
    with _served(tmp_path, "served", "sqlite", "SQLite's data_version") as (settings, database):
        with database.transaction() as session:
            item_id = make_item(session, title="On file").id
            customer_id = customer_in_segment(session)[0].id
        app = create_app(settings, database)
        assert isinstance(app.state.revision_reader, revision.SqliteWatcher)
        async with LifespanManager(app) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
            await _warm(app, client)
            watcher = app.state.revision_reader
            reads = watcher.reads
            await _warm(app, client)  # nothing committed: answered without reading the revisions again
            assert watcher.reads == reads

            await _an_edit_and_a_vote_show_at_once(client, database, item_id, customer_id, "Edited on file")


# --- PostgreSQL: a single-flight read per worker on a connection of its own -----------------------------------


async def test_on_postgresql_a_commit_shows_at_the_next_finished_answer(tmp_path):
    """The whole app on a PostgreSQL database of its own (no test transaction): visitors are answered finished
    after the worker's shared read, concurrent visitors share reads, and every commit (an edit, a vote) shows at
    the next request. The rule itself, with reads held in flight on purpose: test_revision_single_flight.py."""
    skip = "PostgreSQL's reader; SQLite's data_version is tested above"
    with _served(tmp_path, "served", "postgresql", skip) as (settings, database):
        with database.transaction() as session:
            item_id = make_item(session, title="On the server").id
            customer_id = customer_in_segment(session)[0].id
        app = create_app(settings, database)
        watcher = app.state.revision_reader
        assert isinstance(watcher, revision.PostgresWatcher)
        async with LifespanManager(app) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
            board = await _warm(app, client)
            reads, hits = watcher.reads, app.state.pages.finished_hits
            together = await asyncio.gather(*(client.get("/") for _ in range(20)))
            assert [r.content for r in together] == [board.content] * 20
            assert app.state.pages.finished_hits == hits + 20
            assert watcher.reads - reads <= 3  # one read in flight, the rest queued behind it: not 20

            await _an_edit_and_a_vote_show_at_once(client, database, item_id, customer_id, "Edited on the server")
        assert watcher._connection is None  # closed with the app


async def test_on_postgresql_a_page_the_app_makes_takes_its_revisions_from_the_workers_shared_read(tmp_path):
    """A request the app answers itself (a search, a customer's page) reads no revisions of its own: its first
    dependency did, on the event loop, holding the worker's other requests for two round trips. They come from the
    worker's shared read instead, one that started after the request arrived: an edit committed just before is on
    the answer, made or kept."""
    skip = "PostgreSQL's shared revision read"
    with _served(tmp_path, "adopted", "postgresql", skip) as (settings, database):
        with database.transaction() as session:
            item_id = make_item(session, title="Brass lantern").id
            customer_id = customer_in_segment(session)[0].id
        app = create_app(settings, database)
        watcher = app.state.revision_reader
        assert isinstance(watcher, revision.PostgresWatcher)
        statements: list[str] = []

        def noted(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        def own_reads() -> list[str]:
            return [s for s in statements if s.lstrip().upper().startswith("SELECT") and "content_revisions" in s]

        event.listen(database.engine, "before_cursor_execute", noted)
        try:
            async with LifespanManager(app) as manager, httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
                for title in ("Brass lantern", "Brass kettle", "Brass lamp"):
                    with database.transaction() as session:
                        session.get(Item, item_id).title = title
                    statements.clear()
                    reads = watcher.reads
                    for _ in range(2):  # made, then kept (a search is kept from its second ask)
                        found = await _visit(client, "/search?q=brass")
                        assert f"<mark>Brass</mark> {title.split()[1]}" in found.text  # the query's word marked
                    assert watcher.reads > reads and own_reads() == []

                with database.transaction() as session:
                    sign_in(client, session, session.get(User, customer_id))
                statements.clear()
                board = await client.get("/")
                assert board.status_code == 200 and "Brass lamp" in board.text
                assert own_reads() == []
        finally:
            event.remove(database.engine, "before_cursor_execute", noted)


async def test_on_postgresql_visitors_asking_at_once_after_a_vote_share_one_refill(tmp_path):
    """After a vote, the visitors who ask for the board at once (one worker, its shared revision read) all get the
    new count from one refill before the stack: no route, the same bytes for all."""
    skip = "PostgreSQL's shared revision read; SQLite's refill is tested above"
    with _served(tmp_path, "refilled", "postgresql", skip) as (settings, database):
        with database.transaction() as session:
            item_id, public_id = (item := make_item(session, title="Counted")).id, item.public_id
            other = make_item(session, title="Not voted").public_id
            customer_id = customer_in_segment(session)[0].id
        app = create_app(settings, database)
        async with LifespanManager(app) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
            await _warm(app, client)
            with database.transaction() as session:
                voting.cast_vote(session, item=session.get(Item, item_id), user=session.get(User, customer_id),
                                 importance=Importance.critical)
            pages = app.state.pages
            refills, misses = pages.refills, pages.misses
            # The new counts come with the worker's revision read: the refill reads nothing on the event loop
            own_reads: list[str] = []
            read_rows = database.read_rows
            database.read_rows = lambda sql: own_reads.append(sql) or read_rows(sql)  # type: ignore[method-assign]
            together = await asyncio.gather(*(client.get("/") for _ in range(20)))
            assert {widget_text(r.text, public_id) for r in together} == {"▲ 1 Sign in to vote"}
            assert {widget_text(r.text, other) for r in together} == {"▲ 0 Sign in to vote"}
            assert len({r.content for r in together}) == 1
            assert pages.refills == refills + 1 and pages.misses == misses  # one refill, not the app's route
            assert own_reads == []


async def test_on_postgresql_the_revision_read_brings_the_followed_counts_only_after_a_vote(tmp_path):
    """`PostgresWatcher.follow_counts`: a read that finds the votes revision moved from the one the follower knows
    hands it the followed items' counts as they are after that revision; a read that finds it unchanged does not
    read them (one statement, as before)."""
    skip = "PostgreSQL's shared revision read"
    with _served(tmp_path, "followed", "postgresql", skip) as (_settings, database):
        with database.transaction() as session:
            voted, quiet = make_item(session, title="Voted"), make_item(session, title="Quiet")
            ids = [voted.id, quiet.id]
            customer_id = customer_in_segment(session)[0].id
        watcher = revision.reader_for(database)
        assert isinstance(watcher, revision.PostgresWatcher)
        known: list[int | None] = [None]
        seen: list[tuple[int, dict[int, int]]] = []

        def keep(votes: int, counts: dict[int, int]) -> None:
            seen.append((votes, counts))
            known[0] = votes

        watcher.follow_counts(lambda: (known[0], ids), keep, voting.counts_sql)
        try:
            first = await watcher()
            assert seen == [(first[1], {ids[0]: 0, ids[1]: 0})]
            assert await watcher() == first and len(seen) == 1  # nothing moved: no counts read

            with database.transaction() as session:
                voting.cast_vote(session, item=session.get(Item, ids[0]), user=session.get(User, customer_id),
                                 importance=Importance.critical)
            after = await watcher()
            assert after[1] != first[1]
            assert seen[-1] == (after[1], {ids[0]: 1, ids[1]: 0})
        finally:
            await watcher.close()


async def test_every_worker_rendering_a_page_in_its_minute_sends_the_same_bytes_and_etag(
        client, session, settings, database, connection, monkeypatch):
    """A client revalidating with one worker's ETag gets its 304 from another only if both rendered the same
    bytes: "Updated 4 minutes ago" is said from the start of the page's minute, not the second of the render."""
    began = (int(time.time()) // 60) * 60 - pagecache._offset("/")  # a minute of the board's
    item = make_item(session, title="Said the same everywhere")
    item.updated_at = datetime.fromtimestamp(began - 270, UTC)  # 4.5 minutes before the minute began
    session.flush()

    def at(second: float) -> None:
        monkeypatch.setattr(pagecache, "time", SimpleNamespace(time=lambda: second))
        monkeypatch.setattr(web, "_now", lambda: datetime.fromtimestamp(second, UTC))

    at(began + 1)  # this worker renders the board at the minute's first second: 4 min 31 s after the update
    first = await client.get("/")
    async with client_for(settings, database, connection) as other:  # another worker, a cache of its own
        at(began + 59)  # and that one at its last: 5 min 29 s after
        second = await other.get("/")
        assert "4 minutes ago" in first.text and "4 minutes ago" in second.text
        assert second.headers["etag"] == first.headers["etag"]
        again = await other.get("/", headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304


def test_the_counts_a_revision_read_brings_are_bounded_to_the_items_asked_for_latest():
    """What a vote costs each worker's revision read is bounded: the items the kept pages asked for last, at most
    `MAX_FOLLOWED`, an item asked for again counting as new."""
    from app.voting.widget import VoteWidgets

    widgets = VoteWidgets()
    widgets._want(range(1, 151))
    widgets._want([3])
    known, followed = widgets.followed()
    assert known is None
    assert len(followed) == VoteWidgets.MAX_FOLLOWED and followed[-1] == 3
    assert followed[:-1] == list(range(152 - VoteWidgets.MAX_FOLLOWED, 151))
