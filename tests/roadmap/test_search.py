"""Search: word prefixes, every word must match, accents folded, matches highlighted, titles first."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.accounts.viewer import ANONYMOUS, Viewer
from app.db import utcnow
from app.roadmap.models import Visibility, item_segments
from app.roadmap.search import search_items
from app.roadmap.timeframes import Timeframe
from tests.factories import make_item, make_pm, make_product
from tests.feedback.helpers import make_customer, make_organisation, make_segment
from tests.roadmap.helpers import released, result_titles

# Counts of the cache's hits and misses: a minute turning between two visits would add a miss.
pytestmark = pytest.mark.usefixtures("still_minute")


async def search(client, q: str) -> str:  # type: ignore[no-untyped-def]
    response = await client.get("/search", params={"q": q})
    assert response.status_code == 200
    return response.text


async def test_a_word_prefix_finds_the_whole_word_and_is_highlighted(client, session):
    make_item(session, title="Integrations marketplace", summary="Connect the tools you use")
    make_item(session, title="Dark mode")

    page = await search(client, "integ")

    assert result_titles(page) == ["Integrations marketplace"]
    assert "<mark>Integ</mark>rations marketplace" in page
    assert "1 result for “integ”" in page


async def test_the_page_says_the_words_back_without_the_spaces_around_them(client, session):
    make_item(session, title="Calendar sync")

    page = await search(client, "  calendar   sync ")

    assert "1 result for “calendar sync”" in page
    assert "<title>Search: calendar sync ·" in page
    assert 'value="  calendar   sync "' in page  # the box keeps what was typed


async def test_every_word_must_match(client, session):
    make_item(session, title="Slack integration")
    make_item(session, title="Teams integration")
    make_item(session, title="Slack notifications")

    page = await search(client, "slack integ")

    assert result_titles(page) == ["Slack integration"]
    assert "<mark>Slack</mark> <mark>integ</mark>ration" in page


async def test_accents_are_folded_both_ways(client, session):
    make_item(session, title="Résumé parsing")
    make_item(session, title="Naive date handling", description="Fix naïve timestamps")

    assert result_titles(await search(client, "resume")) == ["Résumé parsing"]
    assert "<mark>Résumé</mark> parsing" in await search(client, "resume")
    assert result_titles(await search(client, "NAÏVE")) == ["Naive date handling"]


async def test_a_sharp_s_is_found_as_ss_and_ss_as_a_sharp_s(client, session):
    """Case folding, not lower case: a German reader types 'strasse' for 'Straße', and either finds both."""
    make_item(session, title="Straße names in addresses")
    make_item(session, title="Grosse Schichtpläne", description="Für große Teams.")

    page = await search(client, "strasse")
    assert result_titles(page) == ["Straße names in addresses"]
    assert "<mark>Straße</mark> names" in page
    assert result_titles(await search(client, "STRAẞE")) == ["Straße names in addresses"]  # the capital sharp s
    assert result_titles(await search(client, "große")) == ["Grosse Schichtpläne"]
    assert "Für <mark>große</mark> <mark>Teams</mark>." in await search(client, "grosse teams")


async def test_matches_in_the_description_show_a_highlighted_snippet(client, session):
    make_item(session, title="Reporting", summary="",
              description="Long intro. " * 30 + "Then we add **webhooks** for every report event.")

    page = await search(client, "webhook")

    assert result_titles(page) == ["Reporting"]
    assert "<mark>webhook</mark>s for every report event" in page


async def test_each_hit_links_to_its_item_and_says_where_it_stands(client, session):
    """The line under a hit: product and stage, then the day it shipped, or its timeframe while it is ahead."""
    gantt = make_product(session, name="Gantt & Co")
    planned = make_item(session, product=gantt, title="Export planned", timeframe=Timeframe.quarter,
                        target_year=2027, target_quarter=2, updated_at=utcnow() - timedelta(days=1))
    shipped = released(session, "Export shipped", 9, product=gantt, updated_at=utcnow() - timedelta(days=2))
    declined = make_item(session, product=gantt, title="Export declined", stage_slug="declined",
                         updated_at=utcnow() - timedelta(days=3))

    page = await search(client, "export")

    hits = re.findall(r'<li class="search-hit">\s*<h2><a href="([^"]*)">.*?<p class="muted">(.*?)</p>', page,
                      re.DOTALL)
    assert [(path, " ".join(re.sub(r"<[^>]+>", " ", line).split())) for path, line in hits] == [
        (f"/items/{planned.public_id}/export-planned", "Gantt &amp; Co · Planned · 2027 Q2"),
        (f"/items/{shipped.public_id}/export-shipped", "Gantt &amp; Co · Released 9 March 2026"),
        (f"/items/{declined.public_id}/export-declined", "Gantt &amp; Co · Declined"),
    ]
    assert '<time datetime="2026-03-09T12:00:00Z">' in page


async def test_an_item_deleted_while_its_search_runs_is_left_out(client, session, monkeypatch):
    """On PostgreSQL the hits' rows are read by a statement after the ranking's: an item deleted in between is left
    out of the page (it was a 500)."""
    from app.roadmap import search as search_module

    make_item(session, title="Slack integration")
    real = search_module._ranked

    def with_a_deleted_hit(*args, **kwargs):  # type: ignore[no-untyped-def]
        return {2_000_000_000: search_module.Tier.title, **real(*args, **kwargs)}  # its row gone by the next statement

    monkeypatch.setattr(search_module, "_ranked", with_a_deleted_hit)
    assert result_titles(await search(client, "slack")) == ["Slack integration"]


async def test_a_title_match_ranks_above_a_body_match(client, session):
    now = utcnow()
    make_item(session, title="Notification settings", description="Also covers webhooks.", updated_at=now)
    make_item(session, title="Webhooks", description="Outgoing events.", updated_at=now - timedelta(days=60))
    make_item(session, title="Audit export", summary="Send audit events to webhooks", updated_at=now)

    assert result_titles(await search(client, "webhooks")) == ["Webhooks", "Audit export", "Notification settings"]


async def test_within_a_tier_the_closer_match_ranks_above_the_newer(client, session):
    # Both titles hold both words: the one where they stand together scores higher on either database (bm25 favours
    # the shorter title, ts_rank_cd the shorter cover), and goes first although the other changed since.
    now = utcnow()
    make_item(session, title="Calendar sync", updated_at=now - timedelta(days=30))
    make_item(session, title="Calendar export with a nightly sync option for teams", updated_at=now)

    assert result_titles(await search(client, "calendar sync")) == [
        "Calendar sync", "Calendar export with a nightly sync option for teams"]


async def test_markup_in_a_title_is_shown_as_text(client, session):
    make_item(session, title='<script>alert("x")</script> Script runner <img src=x onerror=alert(1)>')

    page = await search(client, "script")

    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;<mark>script</mark>&gt;alert(&#34;x&#34;)&lt;/<mark>script</mark>&gt; <mark>Script</mark> runner" in page


async def test_no_match_and_empty_query(client, session):
    make_item(session, title="Dark mode")

    nothing = await search(client, "zebra")
    assert "No matches" in nothing
    # the advice names no item the portal may not have (it once promised "“sso” finds “SSO login”"), and says what a
    # single letter does (a walk-through: "the start of a word is enough" sent "xe", which found Xero, to "x")
    advice = nothing.split("No matches", 1)[1].split("</div>", 1)[0]
    assert "Two letters or more find every word they begin" in advice and "“" not in advice
    assert "a single letter finds only a word of one letter" in advice
    make_item(session, title="Xero sync")
    assert "<mark>Xe</mark>ro sync" in await search(client, "xe") and "No matches" in await search(client, "x")
    wordless = (await search(client, "!!! —")).split("No matches", 1)[1]
    assert "no word in it to look for" in wordless and "Two letters" not in wordless
    empty = await search(client, "   ")
    assert "result" not in empty and "No matches" not in empty
    assert "<title>Search · " in empty  # not "Search:     ·"


# --- the full-text index behind it (SQLite FTS5 / PostgreSQL tsvector), through the service -------------

def found(session, q: str, *, limit: int = 30) -> list[str]:  # type: ignore[no-untyped-def]
    return [hit.item.title for hit in search_items(session, ANONYMOUS, q, limit=limit)]


def test_a_title_match_outranks_a_newer_description_that_repeats_the_word(session):
    now = utcnow()
    make_item(session, title="Team rotas", summary="", description="Works with every calendar. " * 40,
              updated_at=now)
    make_item(session, title="Calendar sync", summary="", description="Two-way.", updated_at=now - timedelta(days=365))

    assert found(session, "calend") == ["Calendar sync", "Team rotas"]


def test_titles_then_summaries_then_descriptions_newest_first_fill_the_page(session):
    now = utcnow()
    for days in range(4):
        make_item(session, title=f"Body {days}", summary="", description="Mentions rotas in passing.",
                  updated_at=now - timedelta(days=days))
    make_item(session, title="Summary hit", summary="Rotas for every team", updated_at=now - timedelta(days=30))
    make_item(session, title="Rotas", summary="", updated_at=now - timedelta(days=60))
    make_item(session, title="Rota templates", summary="", updated_at=now - timedelta(days=90))

    assert found(session, "rota", limit=5) == ["Rotas", "Rota templates", "Summary hit", "Body 0", "Body 1"]
    assert found(session, "rotas")[2:] == ["Body 0", "Body 1", "Body 2", "Body 3"]


def test_an_item_found_in_a_tier_above_is_not_found_again_below(session):
    """An item whose title, summary and description all hold the word is one hit, in the title's place, and the
    page still fills with the items after it (each tier leaves out what the tiers above found)."""
    now = utcnow()
    make_item(session, title="Rotas", summary="Rotas for every team", description="Rotas, rotas, rotas.",
              updated_at=now)  # the newest: the description tier (newest first) would take it first again
    make_item(session, title="Summary hit", summary="Rotas for the weekend", description="Rotas again.",
              updated_at=now - timedelta(days=1))
    for days in range(3):
        make_item(session, title=f"Body {days}", summary="", description="Mentions rotas in passing.",
                  updated_at=now - timedelta(days=10 + days))

    assert found(session, "rota", limit=4) == ["Rotas", "Summary hit", "Body 0", "Body 1"]
    assert found(session, "rota") == ["Rotas", "Summary hit", "Body 0", "Body 1", "Body 2"]


def test_words_may_match_in_different_fields_and_a_title_word_counts_most(session):
    now = utcnow()
    make_item(session, title="Slack alerts", summary="", description="Built on the integration platform.",
              updated_at=now - timedelta(days=10))
    make_item(session, title="Alerts", summary="", description="Slack and Teams integration.", updated_at=now)
    make_item(session, title="Slack digest", summary="", description="A daily email.")

    assert found(session, "slack integ") == ["Slack alerts", "Alerts"]


def test_an_edited_item_is_found_by_its_new_words_and_no_longer_by_the_old(session):
    from app.roadmap import service as roadmap

    item = make_item(session, title="Shift swaps", summary="Swap a shift", description="Between colleagues.")
    item = roadmap.get_item_for_staff(session, item.public_id)
    data = roadmap.ItemInput(
        title="Open shift marketplace", summary="Pick up open shifts", description="Claimed first come.",
        internal_notes="", release_notes="", product=item.product, stage=item.stage, timeframe=item.timeframe,
        target_year=None, target_quarter=None, confidence=None, visibility=item.visibility, tags=[],
    )
    roadmap.update_item(session, item=item, data=data, actor=make_pm(session))

    assert found(session, "marketpl") == ["Open shift marketplace"]
    assert found(session, "swap") == []
    assert found(session, "colleag") == []


def test_hidden_items_are_never_hits_however_well_they_match(session):
    make_item(session, title="Forecast labour costs", published=False)
    make_item(session, title="Forecast internal", visibility=Visibility.internal)
    make_item(session, title="Budgets", summary="", description="A forecast per location.")

    assert found(session, "forecast") == ["Budgets"]


@pytest.mark.parametrize("q", [
    '"export" OR NOT reports:*', "export* & !reports | (csv)", "{title}: export", "export' reports; --",
    "EXPORT\\ reports", "NEAR(export reports)", "export -reports ^csv",
])
def test_query_syntax_of_either_engine_is_read_as_plain_words(session, q):
    make_item(session, title="Export reports to CSV", description="Or not, title, near and all.")
    make_item(session, title="Import reports")

    assert found(session, q) == ["Export reports to CSV"]


@pytest.mark.parametrize("q", ["'", '"', ":*", "&|!()", "\\", "*", "NOT", "-", "''", "\x00"])
def test_punctuation_alone_finds_nothing_and_breaks_nothing(session, q):
    make_item(session, title="Export reports to CSV")

    assert found(session, q) == []


def test_other_scripts_long_words_and_underscores(session):
    make_item(session, title="東京 オフィス", summary="")
    make_item(session, title="Ελληνικά μενού", summary="")
    make_item(session, title="Supercalifragilisticexpialidocious" * 3, summary="")
    make_item(session, title="Set max_shift_length per team", summary="")

    assert found(session, "東京") == ["東京 オフィス"]
    assert found(session, "ΕΛΛΗΝ") == ["Ελληνικά μενού"]
    assert len(found(session, "supercalifragilistic")) == 1
    assert found(session, "max_shift") == ["Set max_shift_length per team"]
    assert found(session, "max") == ["Set max_shift_length per team"]


async def test_more_hits_than_the_page_shows_are_announced_as_more(client, session):
    for n in range(31):
        make_item(session, title=f"Rota template {n}")

    page = await search(client, "rota")

    assert len(result_titles(page)) == 30
    assert "More than 30 results for “rota”: the 30 best are shown." in page
    assert "30 results for" not in page.replace("More than 30 results for", "")


async def test_exactly_a_page_of_hits_is_counted_as_it_is(client, session):
    for n in range(30):
        make_item(session, title=f"Rota template {n}")

    page = await search(client, "rota")

    assert len(result_titles(page)) == 30
    assert "30 results for “rota”" in page and "More than" not in page


# --- search pages kept like the board (app/pagecache.py), per audience, under the content revision ---------


async def _visitor_search(client, q: str) -> str:  # type: ignore[no-untyped-def]
    client.cookies.clear()
    return await search(client, q)


async def test_a_repeated_search_is_answered_kept_and_an_edit_shows_at_once(app, client, session):
    make_item(session, title="Forecast labour costs")
    draft = make_item(session, title="Forecast overtime", published=False)
    pages = app.state.pages

    # Asked for the first time: rendered, not kept (most queries are asked once); the second time, kept.
    characters, unadmitted = pages.characters, pages.unadmitted
    first = await _visitor_search(client, "forecast")
    assert pages.characters == characters and pages.unadmitted == unadmitted + 1
    second = await _visitor_search(client, "forecast")
    assert pages.characters > characters and pages.unadmitted == unadmitted + 1
    misses, finished = pages.misses, pages.finished_hits
    again = await _visitor_search(client, "forecast")

    assert pages.misses == misses and pages.finished_hits == finished + 1
    assert again == second == first and result_titles(again) == ["Forecast labour costs"]

    draft.published_at = utcnow()
    session.flush()
    assert result_titles(await _visitor_search(client, "forecast")) == ["Forecast overtime", "Forecast labour costs"]


async def test_staff_searches_are_never_kept_nor_served_to_visitors(app, client, session):
    from tests.helpers.http import sign_in

    make_item(session, title="Forecast labour costs")
    make_item(session, title="Forecast overtime", published=False)
    make_item(session, title="Forecast internal", visibility=Visibility.internal)
    pm = make_pm(session)

    sign_in(client, session, pm)
    staff_titles = set(result_titles(await search(client, "forecast")))
    assert staff_titles == {"Forecast labour costs", "Forecast overtime", "Forecast internal"}
    assert result_titles(await _visitor_search(client, "forecast")) == ["Forecast labour costs"]
    assert result_titles(await _visitor_search(client, "forecast")) == ["Forecast labour costs"]  # kept
    sign_in(client, session, pm)
    assert set(result_titles(await search(client, "forecast"))) == staff_titles


async def test_made_up_searches_push_out_each_other_not_the_board(app, client, session):
    from app.roadmap.views import SEARCH_GROUP

    make_item(session, title="Forecast labour costs")
    cache = app.state.pages
    page_size = len(await _visitor_search(client, "forecast"))
    cache.clear()
    client.cookies.clear()
    for _ in range(2):  # kept, then kept finished
        assert (await client.get("/")).status_code == 200
    # Room for the board and ten search pages in all, six of them for searches (a kept search page with its
    # finished answer counts about twice its size): twelve made-up searches would push the board out unbounded.
    cache.max_characters = cache.characters + page_size * 10
    cache.bound(SEARCH_GROUP, page_size * 6)

    for n in range(12):
        for _ in range(2):  # kept from the second time it is asked for
            await _visitor_search(client, f"forecast q{n}")

    assert cache.group_characters(SEARCH_GROUP) <= page_size * 6
    misses = cache.misses
    client.cookies.clear()
    assert (await client.get("/")).status_code == 200  # the board is still kept
    await _visitor_search(client, "forecast q11")  # and so is the latest search
    assert cache.misses == misses
    await _visitor_search(client, "forecast q0")  # the oldest went
    assert cache.misses == misses + 1


def test_a_single_character_is_a_whole_word_not_the_beginning_of_every_word(session):
    make_item(session, title="Plan a rota", summary="", description="Weekly.")
    make_item(session, title="Automation rules", summary="", description="Triggers.")
    make_item(session, title="Vitamin C reminders", summary="", description="Daily.")

    assert found(session, "a") == ["Plan a rota"]
    assert found(session, "c remind") == ["Vitamin C reminders"]
    assert found(session, "au") == ["Automation rules"]


async def test_a_single_character_is_highlighted_only_as_a_whole_word(client, session):
    make_item(session, title="Plan a rota", summary="", description="Weekly.")

    assert "Pl<mark>a</mark>n" not in (page := await search(client, "a rota"))
    assert "Plan <mark>a</mark> <mark>rota</mark>" in page


def test_each_audience_finds_only_its_own_items_one_after_the_other(session):
    """Search statements are built once per audience and kept: asked in turn by a customer of one segment, of
    another, of none, a signed-out visitor and staff, each finds what it may see and nothing another may."""
    enterprise, retail = make_segment(session, "Enterprise"), make_segment(session, "Retail")
    for_enterprise = make_item(session, title="Forecast for enterprise", visibility=Visibility.customers)
    session.execute(item_segments.insert().values(item_id=for_enterprise.id, segment_id=enterprise.id))
    make_item(session, title="Forecast for customers", visibility=Visibility.customers)
    make_item(session, title="Forecast for everyone")
    make_item(session, title="Forecast internal", visibility=Visibility.internal)
    viewers = {
        "enterprise": Viewer(user=make_customer(session, make_organisation(session, "E", segment=enterprise)),
                             segment_id=enterprise.id),
        "retail": Viewer(user=make_customer(session, make_organisation(session, "R", segment=retail)),
                         segment_id=retail.id),
        "no segment": Viewer(user=make_customer(session, make_organisation(session, "N"))),
        "visitor": ANONYMOUS,
        "staff": Viewer(user=make_pm(session)),
    }
    expected = {
        "enterprise": ["Forecast for customers", "Forecast for enterprise", "Forecast for everyone"],
        "retail": ["Forecast for customers", "Forecast for everyone"],
        "no segment": ["Forecast for customers", "Forecast for everyone"],
        "visitor": ["Forecast for everyone"],
        "staff": ["Forecast for customers", "Forecast for enterprise", "Forecast for everyone", "Forecast internal"],
    }
    for _ in range(2):
        for name, viewer in viewers.items():
            assert sorted(hit.item.title for hit in search_items(session, viewer, "forec")) == expected[name], name


async def test_a_search_not_kept_yet_is_answered_as_the_kept_one_is(app, client, session):
    """The first answer to a query (rendered, not kept) and the next ones (kept) are the same to a visitor: the same
    bytes, no cookie, and the same validator, so the first answer's revalidates to a 304 once the page is kept (a
    walk-through: the first answer's tag was a hash of its bytes, another than the kept page's, and a browser holding
    it got 200s; two workers gave the two tags in turn)."""
    make_item(session, title="Forecast labour costs")
    client.cookies.clear()
    answers = []
    for _ in range(3):  # rendered; rendered and kept; answered finished
        client.cookies.clear()
        answers.append(await client.get("/search", params={"q": "forec"}))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].content == answers[1].content == answers[2].content
    assert not any("set-cookie" in a.headers for a in answers)
    assert answers[0].headers["etag"] == answers[1].headers["etag"] == answers[2].headers["etag"]
    client.cookies.clear()
    first = await client.get("/search", params={"q": "forec"}, headers={"if-none-match": answers[0].headers["etag"]})
    assert first.status_code == 304
    # Its first answer's tag, sent to a worker whose cache has emptied since (a restart): the same page, a 304
    client.cookies.clear()
    new = await client.get("/search", params={"q": "labour"})
    app.state.pages.clear()
    client.cookies.clear()
    again = await client.get("/search", params={"q": "labour"}, headers={"if-none-match": new.headers["etag"]})
    assert again.status_code == 304
    client.cookies.clear()
    kept = await client.get("/search", params={"q": "forec"}, headers={"if-none-match": answers[2].headers["etag"]})
    assert kept.status_code == 304


async def test_a_kept_page_is_answered_while_a_search_runs(client, session, monkeypatch):
    """A search runs in a thread (app.db.OffLoopMiddleware): the worker's event loop answers the kept board meanwhile,
    instead of waiting for every search ahead of it."""
    import asyncio
    import threading

    from app.roadmap import search as search_module

    make_item(session, title="Slack integration")
    assert (await client.get("/")).status_code == 200  # the board kept
    searching, release = threading.Event(), threading.Event()
    real = search_module.found

    def slow_search(*args, **kwargs):  # type: ignore[no-untyped-def]
        searching.set()
        release.wait(timeout=3)  # on the event loop, this would hold every other request for 3 s
        return real(*args, **kwargs)

    monkeypatch.setattr(search_module, "found", slow_search)
    search = asyncio.create_task(client.get("/search", params={"q": "slack"}))
    while not searching.is_set():
        await asyncio.sleep(0.01)
    board = await asyncio.wait_for(client.get("/"), timeout=2)
    assert board.status_code == 200 and not release.is_set() and not search.done()
    release.set()
    assert result_titles((await search).text) == ["Slack integration"]


# --- folding for the highlights -------------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.one_of(st.sampled_from("aZ …ﬁéÉèüΣςİßǺñÑ\u0301\u0308\u0344日"), st.characters()), max_size=40)


@given(_TEXT)
@settings(max_examples=3000, deadline=None)
def test_folding_drops_accents_and_case_and_maps_each_piece_back_to_its_character(text):
    """What a highlight cuts the original text by: each folded character's origin is the character it came from."""
    import unicodedata

    from app.roadmap import search

    folded_case = unicodedata.normalize("NFKD", text.casefold())  # Unicode's case folding: 'ß' is 'ss'
    assert search.fold(text) == "".join(ch for ch in folded_case if not unicodedata.combining(ch))
    folded, origin = search._fold_mapped(text)
    each = [search.fold(ch) for ch in text]
    assert folded == "".join(each)
    if origin is None:
        assert text.isascii()
        return
    assert len(origin) == len(folded)
    for index, piece in enumerate(each):
        assert "".join(folded[i] for i in range(len(folded)) if origin[i] == index) == piece


def test_a_match_after_typographic_characters_is_marked_in_the_original_text():
    from app.roadmap.search import highlight

    assert str(highlight("…ﬁnal “Café” export", ["cafe", "export"])) == (
        "…ﬁnal “<mark>Café</mark>” <mark>export</mark>")
    assert str(highlight("Ｅxport naïve", ["export", "naive"])) == "<mark>Ｅxport</mark> <mark>naïve</mark>"


def test_a_highlighted_text_is_escaped_around_and_inside_its_marks():
    from app.roadmap.search import highlight

    assert str(highlight("Tom's <b>export</b> & \"Jerry\"", ["export", "jer"])) == (
        "Tom&#39;s &lt;b&gt;<mark>export</mark>&lt;/b&gt; &amp; &#34;<mark>Jer</mark>ry&#34;")
    assert str(highlight("<export>", ["export"])) == "&lt;<mark>export</mark>&gt;"
    assert str(highlight("Plain export text", ["export"])) == "Plain <mark>export</mark> text"
