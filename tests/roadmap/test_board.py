"""The board: columns per stage, filters and sort kept in the URL, "more" links, Now / Next / Later."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from app.db import utcnow
from app.roadmap.models import Timeframe
from app.roadmap.service import BOARD_CARDS_PER_COLUMN
from app.roadmap.timeframes import current_quarter
from tests.factories import make_item, make_product, make_tag


def column(page: str, key: str) -> str:
    """The HTML of one column (a stage slug, or now / next / later)."""
    match = re.search(rf'<section class="column" aria-labelledby="col-{key}">(.*?)</section>', page, re.DOTALL)
    assert match, f"no column {key!r}"
    return match.group(1)


def card_titles(fragment: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<h3 class="card-title"[^>]*><a href="[^"]*">(.*?)</a>', fragment)]


def link_params(fragment: str, text: str) -> dict[str, list[str]]:
    """The query parameters of the link whose text contains `text`."""
    for href, label in re.findall(r'<a [^>]*href="([^"]*)"[^>]*>(.*?)</a>', fragment, re.DOTALL):
        if text in label:
            return parse_qs(urlsplit(html.unescape(href)).query)
    raise AssertionError(f"no link {text!r}")


async def board(client, **params) -> str:  # type: ignore[no-untyped-def]
    response = await client.get("/", params=params)
    assert response.status_code == 200
    return response.text


async def test_columns_follow_the_stages_and_declined_is_not_one(client, session):
    make_item(session, title="Dark mode", stage_slug="planned")
    make_item(session, title="SSO login", stage_slug="in-progress")
    make_item(session, title="Fax support", stage_slug="declined")

    page = await board(client)

    assert card_titles(column(page, "planned")) == ["Dark mode"]
    assert card_titles(column(page, "in-progress")) == ["SSO login"]
    assert 'aria-labelledby="col-declined"' not in page and "Fax support" not in page
    assert "Fax support" in await board(client, stage="declined")


async def test_filters_by_product_tag_and_stage(client, session):
    reports, billing = make_product(session, name="Reports", slug="reports"), make_product(session, slug="billing")
    exports = make_tag(session, "Exports")
    make_item(session, product=reports, tags=[exports], title="Scheduled exports")
    make_item(session, product=reports, title="Report builder")
    make_item(session, product=billing, tags=[exports], title="Invoice export")
    make_item(session, product=reports, tags=[exports], stage_slug="in-progress", title="PDF export")

    assert set(card_titles(await board(client, product="reports"))) == {"Scheduled exports", "Report builder",
                                                                      "PDF export"}
    assert set(card_titles(await board(client, tag=exports.slug))) == {"Scheduled exports", "Invoice export",
                                                                     "PDF export"}
    by_all = await board(client, product="reports", tag=exports.slug, stage="planned")
    assert card_titles(by_all) == ["Scheduled exports"]
    assert "1 item" in by_all


async def test_filters_and_sort_stay_in_the_url(client, session):
    reports = make_product(session, name="Reports", slug="reports")
    exports = make_tag(session, "Exports")
    for n in range(BOARD_CARDS_PER_COLUMN + 1):
        make_item(session, product=reports, tags=[exports], title=f"Export {n}")

    page = await board(client, product="reports", tag=exports.slug, sort="updated")

    assert re.search(r'<option value="reports"\s+selected', page)
    assert re.search(rf'<option value="{exports.slug}"\s+selected', page)
    assert re.search(r'<option value="updated"\s+selected', page)
    more = link_params(column(page, "planned"), "more in Planned")
    assert more == {"product": ["reports"], "tag": [exports.slug], "sort": ["updated"], "stage": ["planned"]}
    horizon = link_params(page, "Now · Next · Later")
    assert horizon == {"product": ["reports"], "tag": [exports.slug], "sort": ["updated"], "view": ["horizon"]}


async def test_sort_newest_or_recently_updated(client, session):
    now = utcnow()
    edited = make_item(session, title="Old but edited", updated_at=now)
    edited.published_at = now - timedelta(days=30)
    fresh = make_item(session, title="Just published", updated_at=now - timedelta(days=1))
    fresh.published_at = now - timedelta(days=1)
    session.flush()

    assert card_titles(column(await board(client), "planned")) == ["Just published", "Old but edited"]
    assert card_titles(column(await board(client, sort="updated"), "planned")) == ["Old but edited", "Just published"]


async def test_a_full_column_shows_its_top_cards_and_a_more_link(client, session):
    for n in range(BOARD_CARDS_PER_COLUMN + 3):
        make_item(session, title=f"Planned thing {n}")
    for n in range(BOARD_CARDS_PER_COLUMN):
        make_item(session, title=f"Building {n}", stage_slug="in-progress")

    page = await board(client)

    planned = column(page, "planned")
    assert len(card_titles(planned)) == BOARD_CARDS_PER_COLUMN
    assert "3 more in Planned" in planned
    assert re.search(r'class="count"[^>]*>15\b', planned), "the column count shows all 15"
    assert "more in" not in column(page, "in-progress")
    stage_page = await board(client, **{k: v[0] for k, v in link_params(planned, "more in Planned").items()})
    assert len(card_titles(stage_page)) == BOARD_CARDS_PER_COLUMN + 3 and "15 items" in stage_page


async def test_now_next_later_places_quarters_by_distance(client, session):
    year, quarter = current_quarter()
    make_item(session, title="This quarter", timeframe=Timeframe.quarter, target_year=year, target_quarter=quarter)
    make_item(session, title="Two years out", timeframe=Timeframe.quarter, target_year=year + 2, target_quarter=1)
    next_year, next_quarter = (year, quarter + 1) if quarter < 4 else (year + 1, 1)
    make_item(session, title="Next quarter", timeframe=Timeframe.quarter, target_year=next_year,
              target_quarter=next_quarter)
    make_item(session, title="Marked later", timeframe=Timeframe.later)
    make_item(session, title="Marked now", timeframe=Timeframe.now, stage_slug="in-progress")
    make_item(session, title="Already shipped", timeframe=Timeframe.now, stage_slug="released")

    page = await board(client, view="horizon")

    assert set(card_titles(column(page, "now"))) == {"This quarter", "Marked now"}
    assert card_titles(column(page, "next")) == ["Next quarter"]
    assert set(card_titles(column(page, "later"))) == {"Two years out", "Marked later"}
    assert f"{year + 2} Q1" in column(page, "later")
    assert "Already shipped" not in page


async def test_empty_states_say_what_to_do(client, session):
    empty_board = await board(client)
    assert "The roadmap is being written" in empty_board
    assert "Nothing planned for “Now”" in await board(client, view="horizon")

    make_item(session, title="Dark mode")

    no_match = await board(client, product="no-such-product")
    assert "No items match these filters" in no_match and "Clear the filters" in no_match
    assert "Nothing here yet" in await board(client, stage="in-progress")
    assert "No such stage" in await board(client, stage="no-such-stage")


async def test_a_malformed_filter_gets_a_clear_answer_not_a_crash(client):
    for params in ({"product": "Über"}, {"tag": "<script>"}, {"stage": "a b"}):
        response = await client.get("/", params=params)
        assert response.status_code == 422
        assert "Please check the request" in response.text and "<script>" not in response.text
    assert (await client.get("/changelog", params={"product": "a/b"})).status_code == 422
    # A NUL byte would make PostgreSQL fail the query: query strings lose it before the app reads them.
    assert (await client.get("/", params={"product": "\x00"})).status_code == 200
    assert (await client.get("/changelog", params={"product": "\x00"})).status_code == 200
    assert (await client.get("/", params={"product": "", "tag": "", "stage": "", "sort": "newest"})).status_code == 200
