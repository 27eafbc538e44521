"""Most voted, trending (votes of the last 30 days) and newest: on the board, stage pages, horizons and API."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import update

from app.db import utcnow
from app.organisations.models import Organisation
from app.portal import service as portal
from app.voting import service as voting
from app.voting.models import Importance, Vote
from tests.factories import make_admin, make_item, make_pm, make_product, make_user
from tests.helpers.http import sign_in


def _cards(html: str) -> list[str]:
    return re.findall(r'<h3 class="card-title" id="card-([a-z0-9]+)">', html)


def _three_items(session):  # type: ignore[no-untyped-def]
    """`old`: 3 votes, all older than 30 days; `hot`: 2 recent votes; `new`: 1 recent vote, newest."""
    product = make_product(session)
    now = utcnow()
    old = make_item(session, product=product, title="Old favourite")
    hot = make_item(session, product=product, title="Hot topic")
    new = make_item(session, product=product, title="Brand new")
    for item, days in ((old, 90), (hot, 20), (new, 1)):
        item.published_at = now - timedelta(days=days)
    for item, n in ((old, 3), (hot, 2), (new, 1)):
        for _ in range(n):
            voting.cast_vote(session, item=item, user=make_user(session, password=None), importance=Importance.important)
    session.execute(update(Vote).where(Vote.item_id == old.id).values(created_at=now - timedelta(days=40)))
    voting.refresh_trends(session)
    session.flush()
    return old, hot, new


async def test_sorts_order_the_stage_page_and_stay_in_the_url(client, session):
    old, hot, new = _three_items(session)
    expected = {"top": [old, hot, new], "trending": [hot, new, old], "newest": [new, hot, old]}
    for sort, order in expected.items():
        response = await client.get("/", params={"stage": "planned", "sort": sort})
        assert _cards(response.text) == [i.public_id for i in order], sort
        assert re.search(rf'<option value="{sort}" selected>', response.text)
    page = (await client.get("/", params={"stage": "planned", "sort": "top"})).text
    assert ">Most voted</option>" in page and ">Trending</option>" in page and ">Newest</option>" in page


async def test_sorts_order_the_board_columns_and_the_horizons(client, session):
    old, hot, new = _three_items(session)
    board = await client.get("/", params={"sort": "trending"})
    assert _cards(board.text) == [hot.public_id, new.public_id, old.public_id]
    horizon_link = re.search(r'<a href="([^"]*view=horizon[^"]*)"', board.text).group(1)  # type: ignore[union-attr]
    assert "sort=trending" in horizon_link
    horizons = await client.get("/", params={"sort": "top", "view": "horizon"})
    assert _cards(horizons.text) == [old.public_id, hot.public_id, new.public_id]


async def test_an_unknown_sort_falls_back_to_newest(client, session):
    old, hot, new = _three_items(session)
    response = await client.get("/", params={"stage": "planned", "sort": "loudest"})
    assert response.status_code == 200
    assert _cards(response.text) == [new.public_id, hot.public_id, old.public_id]


async def test_the_api_sorts_the_same_way(client, session):
    old, hot, new = _three_items(session)
    for sort, order in {"top": [old, hot, new], "trending": [hot, new, old]}.items():
        body = (await client.get("/api/v1/items", params={"sort": sort})).json()
        assert [i["id"] for i in body["items"]] == [i.public_id for i in order]


# --- with vote counts hidden ------------------------------------------------------------------------------

VOTE_SORTS = ("top", "trending")


def _hide_counts(session) -> None:  # type: ignore[no-untyped-def]
    portal.update_vote_display(session, actor=make_admin(session, password=None), hide_counts=True)


def _options(html: str) -> list[str]:
    select = re.search(r'<select id="filter-sort" name="sort">(.*?)</select>', html, re.DOTALL)
    assert select, "no sort control"
    return re.findall(r'<option value="([a-z]+)"', select.group(1))


async def _customer(client, session):  # type: ignore[no-untyped-def]
    organisation = Organisation(name="Acme")
    session.add(organisation)
    session.flush()
    sign_in(client, session, make_user(session, password=None, organisation_id=organisation.id))


class TestWithCountsHidden:
    """Most voted and trending would give the hidden counts away as an order: they are not offered, and
    asking for them gives the default order (newest first)."""

    async def test_the_board_neither_offers_nor_applies_them(self, client, session):
        old, hot, new = _three_items(session)
        _hide_counts(session)
        newest = [new.public_id, hot.public_id, old.public_id]
        for who in ("visitor", "customer"):
            client.cookies.clear()
            if who == "customer":
                await _customer(client, session)
            for sort in VOTE_SORTS:
                stage_page = (await client.get("/", params={"stage": "planned", "sort": sort})).text
                assert _cards(stage_page) == newest, (who, sort)
                assert _options(stage_page) == ["newest", "updated"]
                assert '<option value="newest" selected>' in stage_page
                board = (await client.get("/", params={"sort": sort})).text
                assert _cards(board) == newest, (who, sort)
                links = re.findall(r'href="([^"]*)"', board)
                assert not [link for link in links if f"sort={sort}" in link]  # links do not carry it on
                horizons = (await client.get("/", params={"sort": sort, "view": "horizon"})).text
                assert _cards(horizons) == newest, (who, sort)
                assert _options(horizons) == ["newest", "updated"]

    async def test_staff_still_sort_by_votes(self, client, session):
        old, hot, new = _three_items(session)
        _hide_counts(session)
        sign_in(client, session, make_pm(session, password=None))
        page = (await client.get("/", params={"stage": "planned", "sort": "top"})).text
        assert _cards(page) == [old.public_id, hot.public_id, new.public_id]
        assert _options(page) == ["newest", "top", "trending", "updated"]
        body = (await client.get("/api/v1/items", params={"sort": "trending"})).json()
        assert [i["id"] for i in body["items"]] == [hot.public_id, new.public_id, old.public_id]
        assert body["sort"] == "trending"

    async def test_the_api_answers_in_the_default_order_and_says_so(self, client, session):
        old, hot, new = _three_items(session)
        _hide_counts(session)
        for sort in VOTE_SORTS:
            response = await client.get("/api/v1/items", params={"sort": sort})
            assert response.status_code == 200
            body = response.json()
            assert [i["id"] for i in body["items"]] == [new.public_id, hot.public_id, old.public_id]
            assert body["sort"] == "newest"
        shown = (await client.get("/api/v1/items", params={"sort": "updated"})).json()
        assert shown["sort"] == "updated"

    def test_the_api_documents_it(self, app):  # type: ignore[no-untyped-def]
        schema = app.openapi()
        parameter = next(p for p in schema["paths"]["/api/v1/items"]["get"]["parameters"] if p["name"] == "sort")
        assert "hidden" in parameter["description"] and "newest" in parameter["description"]
        assert "sort" in schema["components"]["schemas"]["ItemPage"]["required"]
