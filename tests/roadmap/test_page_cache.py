"""The rendered-page cache (app/pagecache.py) and the content revision it is keyed on (app/revision.py).

Every test here serves several people from ONE app (one worker's cache), in an order that would show
a leak: the page is first rendered for someone who sees more, or has voted, or is staff.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from app import pagecache, revision
from app.main import create_app
from app.roadmap.models import Item, Visibility
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_admin, make_item, make_pm, make_user
from tests.feedback.helpers import customer_in_segment
from tests.helpers.http import CSRF_META, post_form, sign_in
from tests.voting.helpers import vote_json, widget_text

# Counts of the cache's hits and misses: a minute turning between two visits would add a miss.
pytestmark = pytest.mark.usefixtures("still_minute")


async def _as(client: httpx.AsyncClient, session, user, path: str = "/") -> str:  # type: ignore[no-untyped-def]
    client.cookies.clear()
    if user is not None:
        sign_in(client, session, user)
    response = await client.get(path)
    assert response.status_code == 200
    return response.text


async def test_second_visit_is_served_from_the_cache_and_a_vote_shows_at_once(app, client, session):
    item = make_item(session, title="Shift swaps")
    first = await _as(client, session, None)
    misses = app.state.pages.misses
    again = await _as(client, session, None)
    assert app.state.pages.misses == misses and app.state.pages.hits >= 1
    assert widget_text(again, item.public_id) == widget_text(first, item.public_id) == "▲ 0 Sign in to vote"

    customer, _ = customer_in_segment(session)
    sign_in(client, session, customer)
    assert (await vote_json(client, item.public_id)).status_code == 200
    board = await _as(client, session, None)
    assert widget_text(board, item.public_id) == "▲ 1 Sign in to vote"


async def test_each_customer_sees_their_own_votes_and_their_own_csrf_token(client, session):
    items = [make_item(session, title=f"Card {n}") for n in range(3)]
    alice, _ = customer_in_segment(session)
    bob = make_user(session, password=None, organisation_id=alice.organisation_id)
    voting.cast_vote(session, item=items[1], user=alice, importance=Importance.critical)

    alice_board = await _as(client, session, alice)
    bob_board = await _as(client, session, bob)
    alice_again = await _as(client, session, alice)

    assert "You voted: Critical" in widget_text(alice_board, items[1].public_id)
    assert "You voted" not in widget_text(bob_board, items[1].public_id)
    assert alice_again == alice_board.replace(CSRF_META.search(alice_board).group(1), CSRF_META.search(alice_again).group(1))
    for page in (alice_board, bob_board):
        token = CSRF_META.search(page).group(1)
        assert set(re.findall(r'name="csrf_token" value="([^"]+)"', page)) == {token}
    assert CSRF_META.search(alice_board).group(1) != CSRF_META.search(bob_board).group(1)
    assert alice.display_name in alice_board and alice.display_name not in bob_board
    assert "\x00" not in alice_board + bob_board


async def test_what_one_audience_sees_never_reaches_another(client, session):
    make_item(session, title="Open to all")
    secret = make_item(session, title="Quokkavault", visibility=Visibility.customers)
    enterprise, segment = customer_in_segment(session, "Enterprise")
    starter, _ = customer_in_segment(session, "Starter")
    enterprise_only = make_item(session, title="Zebrafjord", visibility=Visibility.customers, segments=[segment])
    draft = make_item(session, title="Draftish", published=False)

    staff_board = await _as(client, session, make_pm(session))
    assert draft.title in staff_board
    enterprise_board = await _as(client, session, enterprise)
    starter_board = await _as(client, session, starter)
    visitor_board = await _as(client, session, None)
    no_org_board = await _as(client, session, make_user(session, password=None))

    assert secret.title in enterprise_board and enterprise_only.title in enterprise_board
    assert secret.title in starter_board and enterprise_only.title not in starter_board
    for board in (visitor_board, no_org_board):
        assert "Open to all" in board and secret.title not in board and enterprise_only.title not in board
    for board in (enterprise_board, starter_board, visitor_board, no_org_board):
        assert draft.title not in board
    # Made-up values of the board's parameters get the kept board of the plain address: each audience's own
    made_up = ("/?sort=x1", "/?page=9&view=grid", "/?sort=x1&sort=newest&page=02")
    for who, shown, hidden in ((starter, [secret.title], [enterprise_only.title, draft.title]),
                               (enterprise, [secret.title, enterprise_only.title], [draft.title]),
                               (None, ["Open to all"], [secret.title, enterprise_only.title, draft.title])):
        for path in made_up:
            board = await _as(client, session, who, path)
            assert all(title in board for title in shown) and not any(title in board for title in hidden), path


async def test_an_edit_a_setting_and_a_flash_show_at_once(client, session):
    item = make_item(session, title="Before the edit")
    assert "Before the edit" in await _as(client, session, None)
    item.title = "After the edit"
    session.flush()
    assert "After the edit" in await _as(client, session, None)

    sign_in(client, session, make_admin(session))
    response = await post_form(client, "/admin/settings/votes", {"hide_counts": "1"}, page="/admin/settings")
    assert response.status_code == 303
    assert "▲" not in widget_text(await _as(client, session, None), item.public_id)

    customer, _ = customer_in_segment(session)
    sign_in(client, session, customer)
    await client.get("/")
    response = await post_form(client, f"/items/{item.public_id}/vote",
                               {"importance": "important", "next": "/", "widget": "card"})
    assert response.status_code == 303
    board = (await client.get("/")).text
    assert "Your vote is counted" in board
    assert "Your vote is counted" not in (await client.get("/")).text  # shown once


async def test_a_second_worker_sees_a_change_made_through_the_first(app, settings, client, session, connection):
    """Two apps are two workers: each has its own cache and both read the same revision."""
    from sqlalchemy.orm import sessionmaker

    from app.db import Database

    item = make_item(session, title="Shared")
    other_db = Database.__new__(Database)
    other_db.url, other_db.engine = app.state.database.url, app.state.database.engine
    other_db.read_sessions = other_db.write_sessions = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    other = create_app(settings, other_db)
    async with LifespanManager(other) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as second:
            assert widget_text((await second.get("/")).text, item.public_id) == "▲ 0 Sign in to vote"
            customer, _ = customer_in_segment(session)
            sign_in(client, session, customer)
            assert (await vote_json(client, item.public_id)).status_code == 200
            assert widget_text((await second.get("/")).text, item.public_id) == "▲ 1 Sign in to vote"


async def test_item_page_is_cached_for_visitors_only(app, client, session):
    item = make_item(session, title="Rota export")
    customer, _ = customer_in_segment(session)
    voting.cast_vote(session, item=item, user=customer, importance=Importance.important)
    visitor_page = await _as(client, session, None, item.path)
    assert "Sign in to vote" in visitor_page
    customer_page = await _as(client, session, customer, item.path)
    assert "You voted: Important" in widget_text(customer_page, item.public_id)
    assert "Sign in to vote" not in customer_page
    hits = app.state.pages.hits
    client.cookies.clear()
    response = await client.get(item.path)
    # A visitor's item page has no form that needs a token: byte for byte the same, and no CSRF cookie set.
    assert response.text == visitor_page and "csrf" not in response.text.lower()
    assert "set-cookie" not in response.headers
    assert app.state.pages.hits > hits
    assert (await client.get(f"/items/{item.public_id}/wrong-slug")).status_code == 301


def test_revision_changes_with_content_not_with_sign_ins(session):
    before = revision.current(session)
    assert revision.current(session) == before  # read once per transaction
    user = make_user(session, password=None)
    after_user = revision.current(session)
    assert after_user != before
    from app.accounts import service as accounts

    accounts.start_session(session, user=user)
    assert revision.current(session) == after_user

    savepoint = session.begin_nested()
    make_item(session, title="Rolled back")
    inside = revision.current(session)
    assert inside != after_user
    savepoint.rollback()
    assert revision.current(session) == after_user
    assert session.scalar(select(Item).where(Item.title == "Rolled back")) is None
    make_item(session, title="After the rollback")  # the rolled-back change no longer counts as made
    assert revision.current(session) != after_user


def test_a_vote_moves_the_votes_revision_only_and_a_setting_both(session):
    """A vote, a changed importance and a withdrawal leave kept pages kept: only the counts change."""
    from app.portal import service as portal

    item = make_item(session)
    customer, _ = customer_in_segment(session)
    content, settings, votes = revision.current(session), revision.settings(session), revision.votes(session)
    voting.cast_vote(session, item=item, user=customer, importance=Importance.critical)
    assert revision.current(session) == content and revision.settings(session) == settings
    assert revision.votes(session) != votes
    votes = revision.votes(session)
    voting.cast_vote(session, item=item, user=customer, importance=Importance.important)
    assert revision.votes(session) != votes and revision.current(session) == content
    votes = revision.votes(session)
    voting.withdraw_vote(session, item=item, user=customer)
    assert revision.votes(session) != votes and revision.current(session) == content
    item.title = "Edited"  # anything else of the item is content
    session.flush()
    assert revision.current(session) != content
    content = revision.current(session)
    portal.update_vote_display(session, actor=make_admin(session), hide_counts=True)
    assert revision.current(session) != content and revision.settings(session) != settings


def test_the_cache_keeps_to_its_size_and_forgets_other_revisions():
    from app.pagecache import Page, PageCache

    cache = PageCache(max_characters=250)
    for n in range(5):
        cache.put(1, ("page", n), Page(parts=["x" * 100]))
    assert len(cache) == 0  # never asked under revision 1 yet: nothing is kept for a revision not current
    assert cache.get(1, ("page", 0)) is None
    for n in range(5):
        cache.put(1, ("page", n), Page(parts=["x" * 100]))
    assert len(cache) == 2 and cache.get(1, ("page", 4)) is not None and cache.get(1, ("page", 0)) is None
    assert cache.get(2, ("page", 4)) is None and len(cache) == 0


def test_revision_still_moves_after_its_rows_were_deleted(session):
    from sqlalchemy import delete

    from app.revision import ContentRevision

    session.execute(delete(ContentRevision))
    emptied = revision.current(session)
    make_item(session, title="After a wipe")
    assert revision.current(session) != emptied


async def test_parameters_a_page_does_not_read_get_the_page_without_them(app, client, session):
    """A campaign's link (`?utm_source=…`), a click id or a made-up parameter is answered the kept page of the
    address without it, byte for byte, made as for that address (its sign-in link comes back there, never to
    someone's campaign): no page kept per made-up address, no render per request (a walk-through measured such
    links at 37 req/s against 2,400 for the plain board: each was rendered from scratch)."""
    item = make_item(session, title="Kept or not")
    client.cookies.clear()
    plain = await client.get("/?sort=newest")
    pages = app.state.pages
    kept, misses = len(pages), pages.misses
    for n in range(5):
        client.cookies.clear()
        response = await client.get(f"/?utm_source=x{n}&sort=newest&fbclid=y{n}")
        assert response.status_code == 200 and response.content == plain.content
        assert "utm_source" not in response.text and "fbclid" not in response.text
    assert len(pages) == kept and pages.misses == misses
    client.cookies.clear()
    first = await client.get(f"{item.path}?page=1&utm_campaign=launch")  # kept as the item's page 1
    assert "utm_campaign" not in first.text and len(pages) == kept + 1
    client.cookies.clear()
    assert (await client.get(f"{item.path}?page=1")).content == first.content and len(pages) == kept + 1


async def test_made_up_filter_values_are_the_page_of_the_address_that_says_what_is_shown(app, client, session):
    """Values of the board's own parameters that show nothing of their own (a sort that is not one, another view, a
    page where there are none, the parameters repeated or in another order) get the kept page of the address that
    says what is shown, byte for byte; a product, tag or stage no one has is one page for all such names ("no items
    match"). A walk-through's flood of `/?sort=<random>` rendered a page per request on the event loop and held up
    every worker's kept board (median 3 ms -> 0.9 s)."""
    from app.roadmap.models import Tag

    api = Tag(name="API", slug="api")
    session.add(api)
    make_item(session, title="Webhooks", tags=[api])
    pages = app.state.pages

    async def visit(path: str) -> httpx.Response:
        client.cookies.clear()
        response = await client.get(path)
        assert response.status_code == 200
        return response

    for canonical, variants in (
            ("/", ["/?sort=x1", "/?sort=x2", "/?view=grid", "/?page=7", "/?page=01&view=", "/?sort=&product="]),
            ("/?tag=api&sort=top", ["/?sort=top&tag=api", "/?tag=api&sort=top&tag=api", "/?sort=top&tag=api&page=3"]),
            ("/?stage=planned", ["/?page=1&stage=planned", "/?page=001&stage=planned&view="]),
            ("/?tag=-", ["/?tag=nope1", "/?tag=nope2&view=nope"]),
            # Now/Next/Later shows no stage filter (a walk-through: ?stage=declined&view=horizon was three empty
            # columns "with these filters", no filter in sight)
            ("/?view=horizon", ["/?stage=declined&view=horizon", "/?view=horizon&stage=nope&page=4"])):
        plain = await visit(canonical)
        kept, misses = len(pages), pages.misses
        for path in variants:
            assert (await visit(path)).content == plain.content, path
        assert len(pages) == kept and pages.misses == misses
    assert "Webhooks" in (await visit("/?sort=x1")).text
    unknown = (await visit("/?tag=nope3")).text
    assert "No items match these filters" in unknown
    # The filter chosen is shown as such, not as "All tags" beside "1 chosen" (a walk-through)
    assert '<option value="-" selected>No such tag</option>' in unknown and "No such product" not in unknown


async def test_a_page_past_the_end_of_a_list_leads_to_its_last_page(app, client, session):
    """`?stage=planned&page=50` of a list with two pages leads to its second page, kept once, for visitors and for the
    customers who see more items alike (each to their own last page), as the changelog's and the comments' pages do.
    A walk-through found each number a page of its own, rendered on the event loop (a flood of them held up the kept
    board), saying the stage was empty."""
    from app.roadmap import service as roadmap

    enterprise_a, enterprise = customer_in_segment(session, "Enterprise")
    titles = [f"Planned {n:02d}" for n in range(roadmap.PAGE_SIZE + 2)]
    for title in titles:
        make_item(session, title=title)
    for n in range(roadmap.PAGE_SIZE):  # only the segment's customers have a third page
        make_item(session, title=f"Enterprise {n:02d}", visibility=Visibility.customers, segments=[enterprise])
    session.flush()
    pages = app.state.pages

    async def seen(who: Any, number: int) -> str:  # each sign-in its own token: the page but the token
        page = await _as(client, session, who, f"/?stage=planned&page={number}")
        token = CSRF_META.search(page)
        return page.replace(token.group(1), "TOKEN") if token else page

    async def answer(who: Any, path: str) -> Any:
        client.cookies.clear()
        if who is not None:
            sign_in(client, session, who)
        return await client.get(path)

    for who, last in ((None, 2), (enterprise_a, 3)):
        page = await seen(who, last)
        assert "Nothing here yet" not in page and f"Page {last} of {last}" in page, who
        kept, misses = len(pages), pages.misses
        for asked in (f"/?stage=planned&page={last + 1}", "/?page=50&stage=planned&utm_source=x",
                      "/?stage=planned&page=10000"):
            past = await answer(who, asked)
            assert past.status_code == 302 and past.headers["location"] == f"/?stage=planned&page={last}", (who, asked)
        assert len(pages) == kept and pages.misses == misses
    past = await answer(None, "/?stage=planned&page=3")
    assert past.headers["location"] == "/?stage=planned&page=2"
    # A stage no one has is one empty page, whatever number is asked
    assert "Page 5" not in (await answer(None, "/?stage=nope&page=5")).text


async def test_with_counts_hidden_a_vote_ordered_page_never_reaches_those_who_cannot_see_counts(client, session):
    """Staff's page sorted by votes is not cached; a visitor's and a customer's are, each without the vote
    sorts; and once counts are shown again, nobody is served the page from when they were hidden."""
    from app.portal import service as portal

    quiet = make_item(session, title="Quiet but newest")
    loud = make_item(session, title="Loud and older")
    loud.published_at = quiet.published_at.replace(year=quiet.published_at.year - 1)
    for _ in range(3):
        voting.cast_vote(session, item=loud, user=make_user(session, password=None), importance=Importance.critical)
    admin = make_admin(session, password=None)
    portal.update_vote_display(session, actor=admin, hide_counts=True)
    session.flush()
    customer, _ = customer_in_segment(session, "Enterprise")

    path = "/?stage=planned&sort=top"
    staff_page = await _as(client, session, make_pm(session), path)
    assert staff_page.index(loud.title) < staff_page.index(quiet.title)
    for who in (None, customer, None, customer):  # the second round comes from the cache
        page = await _as(client, session, who, path)
        assert page.index(quiet.title) < page.index(loud.title), who
        assert ">Most voted</option>" not in page and ">Trending</option>" not in page

    portal.update_vote_display(session, actor=admin, hide_counts=False)
    session.flush()
    for who in (None, customer):
        page = await _as(client, session, who, path)
        assert page.index(loud.title) < page.index(quiet.title), who
        assert ">Most voted</option>" in page


async def test_the_size_bound_counts_the_widgets_kept_with_a_page_and_drops_the_least_recently_used(
        app, client, session, monkeypatch):
    """Fill past the bound with what a filler keeps: the widget for a vote of one's own is rendered the
    first time someone who voted that way asks, kept with the page, and counted; the page used longest
    ago makes room."""
    monkeypatch.setattr(pagecache, "time", SimpleNamespace(time=lambda: 1_800_000_000.0))  # one minute
    items = [make_item(session, title=f"Card {n}") for n in range(3)]
    alice = make_user(session, password=None)  # signed in, no organisation: one audience with bob
    bob = make_user(session, password=None)
    voting.cast_vote(session, item=items[0], user=alice, importance=Importance.critical)
    cache: pagecache.PageCache = app.state.pages

    await _as(client, session, None, "/")
    await _as(client, session, None, "/?sort=newest")
    await _as(client, session, bob, "/")
    (first, first_page), (second, second_page), (third, third_page) = cache.entries()
    card = pagecache.Slot("vote", str(items[0].id))
    # bob has not voted: only the unvoted widget so far, with the card's count (one vote)
    assert set(third_page.variants[card]) == {":1"}
    assert cache.characters == first_page.size + second_page.size + third_page.size
    for page in (first_page, second_page, third_page):
        assert page.size == page.measure()  # text, captured values and kept widgets, all counted
    before = third_page.size
    cache.max_characters = cache.characters + 10  # room for nothing more

    board = await _as(client, session, alice, "/")
    assert "You voted: Critical" in widget_text(board, items[0].public_id)
    critical = third_page.variants[card]["critical:1"]
    # and what alice's three widgets are, kept with the page under the votes revision, and how her page goes
    # together (pointers: a size per pointer, like the widgets')
    assembly = third_page._assembled[alice.id]
    assert third_page.size == (before + len(critical) + pagecache.FILLED_CHARACTERS + 8 * len(items)
                               + assembly.size())
    assert assembly.size() == pagecache.FILLED_CHARACTERS + 8 * (len(assembly.chunks) + len(assembly.token_at))
    assert third_page.size == third_page.measure()
    assert [key for key, _ in cache.entries()] == [second, third]  # the first page made room
    assert cache.characters == second_page.size + third_page.size <= cache.max_characters
    assert first not in dict(cache.entries())

    misses = cache.misses
    await _as(client, session, None, "/")
    assert cache.misses == misses + 1  # the dropped page is rendered again


async def test_the_vote_widget_is_the_same_from_a_kept_page_and_a_fresh_one(app, client, session):
    """The vote template gets one state type however the page was made: a card rendered fresh (an address
    the cache does not keep) and one filled into a kept page say the same, for each kind of viewer."""
    open_item = make_item(session, title="Open")
    customer, _ = customer_in_segment(session)
    voting.cast_vote(session, item=open_item, user=customer, importance=Importance.nice_to_have)
    for who in (None, customer, make_user(session, password=None)):
        kept = [await _as(client, session, who, "/") for _ in range(2)][-1]
        fresh = await _as(client, session, who, "/?utm_source=fresh")
        assert widget_text(kept, open_item.public_id) == widget_text(fresh, open_item.public_id), who
    assert "You voted: Nice to have" in widget_text(kept := await _as(client, session, customer, "/"),
                                                    open_item.public_id)
    assert "\x00" not in kept


_DIGEST_IN_A_NEW_PROCESS = """
import sys
from app import pagecache
text = sys.argv[1]
parts = ["<form>", str(pagecache.CSRF_MARKER), text, pagecache.Slot("votes", "12"), "</form>"]
piece = pagecache.PageCache().piece(f"<form>{pagecache.CSRF_MARKER}{text}</form>")  # a filled vote form
print(pagecache._NONCE, pagecache.page_digest(parts) + piece[1])
"""


def _digest_in_a_new_process(text: str) -> tuple[str, str]:
    """(the process's marker nonce, the digest of a page with a CSRF marker, `text` and a slot, and of a filled
    piece with the marker) in a fresh interpreter: what another worker or instance would make of the same page."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _DIGEST_IN_A_NEW_PROCESS, text], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], out[1]


def test_every_worker_tags_the_same_page_alike():
    """A browser revalidating the board with the ETag one worker sent gets its 304 from any other worker or
    instance: the page's digest leaves out the random nonce each process marks its slots and CSRF field with
    (it did not, and with two workers half the revalidations were answered in full); so do the digests of the pieces
    filled in per person (a signed-in customer's vote forms: a walk-through found their tags differing by worker)."""
    nonce_a, first = _digest_in_a_new_process("<p>Dark mode</p>")
    nonce_b, second = _digest_in_a_new_process("<p>Dark mode</p>")
    assert nonce_a != nonce_b  # two processes, two markers
    assert first == second
    assert _digest_in_a_new_process("<p>Light mode</p>")[1] != first


async def test_an_item_whose_title_has_no_latin_letters_has_one_address(app, client, session):
    """A title in Cyrillic, Hebrew or Japanese makes no slug: any path after the item's id answered 200 and was kept
    as a page of its own (a walk-through's 40 made-up paths, 40 pages kept). Now each leads to the item's address."""
    item = make_item(session, title="Планировщик смен")
    assert item.slug == "" and item.path == f"/items/{item.public_id}"
    assert "Планировщик смен" in (await client.get(item.path)).text
    kept = len(app.state.pages)
    for made_up in ("anything", "slug1", "slug2"):
        client.cookies.clear()
        moved = await client.get(f"{item.path}/{made_up}?page=2")
        assert moved.status_code == 301 and moved.headers["location"] == f"{item.path}?page=2"
    assert len(app.state.pages) == kept
