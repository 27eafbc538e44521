"""Hidden stays hidden: a draft, an unpublished, an internal and a customers-only item are absent for a
signed-out visitor on every surface — pages, counts, search, feeds, sitemap and API — while staff
still see them.

Each surface is fetched before the hidden items exist and again after: for a visitor nothing may
change, not a card, not a column count, not a total. That catches leaks in places no one thought to
name, on top of the explicit "the secret word is nowhere" checks.
"""

from __future__ import annotations

import re

import pytest

from app.roadmap import service as roadmap
from app.roadmap.models import Timeframe, Visibility
from app.roadmap.timeframes import current_quarter
from tests.factories import make_item, make_pm, make_product, make_tag
from tests.helpers.http import sign_in

# Marked here, not only by conftest's late hook, so that anyio keeps the `kind` parametrisation.
pytestmark = pytest.mark.anyio

SECRET = "Zanzibarquux"  # a word that appears nowhere else
KINDS = ["draft", "unpublished", "internal", "customers"]


@pytest.fixture
def roadmap_world(session):  # type: ignore[no-untyped-def]
    """A product and a tag with one public item in an open stage and one released."""
    product = make_product(session, name="Reports", slug="reports")
    tag = make_tag(session, "Exports")
    year, quarter = current_quarter()
    make_item(session, product=product, tags=[tag], title="Scheduled exports", timeframe=Timeframe.quarter,
              target_year=year, target_quarter=quarter)
    make_item(session, product=product, tags=[tag], stage_slug="released", title="CSV export",
              release_notes="Download any report as CSV.")
    return product, tag


def make_hidden(session, kind: str, product, tag) -> list:  # type: ignore[no-untyped-def]
    """Two hidden items of one kind sharing the tag: one planned for now, one released."""
    items = []
    for stage_slug in ("planned", "released"):
        options: dict = {"published": kind not in ("draft", "unpublished")}
        if kind in ("internal", "customers"):
            options["visibility"] = Visibility(kind)
        year, quarter = current_quarter()
        item = make_item(
            session, product=product, tags=[tag], stage_slug=stage_slug, title=f"{SECRET} pricing {stage_slug}",
            summary=f"{SECRET} summary", description=f"The {SECRET} plan.", release_notes=f"{SECRET} shipped.",
            timeframe=Timeframe.quarter, target_year=year, target_quarter=quarter, **options,
        )
        items.append(item)
    if kind == "unpublished":
        pm = make_pm(session)
        for item in items:
            roadmap.set_published(session, item=item, published=True, actor=pm)
            roadmap.set_published(session, item=item, published=False, actor=pm)
    session.flush()
    return items


def surfaces(tag_slug: str) -> list[str]:
    return [
        "/",
        "/?stage=planned",
        "/?stage=released",
        f"/?tag={tag_slug}",
        "/?view=horizon",
        f"/search?q={SECRET.lower()}",
        f"/search?q={SECRET[:5].lower()}",
        "/search?q=pricing",
        "/changelog",
        "/changelog.atom",
        "/sitemap.xml",
        "/api/v1/items",
        f"/api/v1/items?tag={tag_slug}&stage=released",
    ]


def _column_count(html: str, stage_slug: str) -> int:
    match = re.search(rf'id="col-{stage_slug}">[^<]*<span class="count"[^>]*>(\d+)', html)
    assert match, f"no count on the {stage_slug} column"
    return int(match.group(1))


def _title(html: str) -> str:
    match = re.search(r"<title>(.*?)</title>", html, re.DOTALL)
    assert match, "the page has no <title>"
    return match.group(1).strip()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_visitor_sees_no_trace_of_a_hidden_item(client, session, roadmap_world, kind):
    product, tag = roadmap_world
    await client.get("/")  # the first response sets the CSRF cookie (and so the token in each page)
    before = {url: (await client.get(url)).text for url in surfaces(tag.slug)}

    hidden = make_hidden(session, kind, product, tag)

    # The search page echoes the query itself, so look for the item's texts and ids, not the bare word.
    traces = [f"{SECRET} pricing", f"{SECRET} summary", f"The {SECRET} plan", f"{SECRET} shipped",
              *(item.public_id for item in hidden)]
    for url, earlier in before.items():
        response = await client.get(url)
        assert response.status_code == 200, url
        assert not [t for t in traces if t.lower() in response.text.lower()], url
        assert response.text == earlier, f"{url} changed for a visitor when a hidden item was added"
    listing = (await client.get("/api/v1/items")).json()
    assert listing["total"] == 2 and len(listing["items"]) == 2
    board = (await client.get("/")).text
    assert _column_count(board, "planned") == _column_count(board, "released") == 1
    assert "1 item" in (await client.get("/?stage=released")).text


@pytest.mark.parametrize("kind", KINDS)
async def test_a_hidden_item_url_is_the_same_404_as_a_missing_one(client, session, roadmap_world, kind):
    product, tag = roadmap_world
    item = make_hidden(session, kind, product, tag)[0]
    missing_id = "zz" + item.public_id[2:]

    for suffix in ("", f"/{item.slug}"):
        hidden_page = await client.get(f"/items/{item.public_id}{suffix}")
        missing_page = await client.get(f"/items/{missing_id}{suffix}")
        assert hidden_page.status_code == missing_page.status_code == 404
        assert SECRET not in hidden_page.text
        assert _title(hidden_page.text) == _title(missing_page.text)
        assert "not found" in _title(hidden_page.text).lower()
        assert hidden_page.text.replace(item.public_id, "ID") == missing_page.text.replace(missing_id, "ID")

    hidden_api = await client.get(f"/api/v1/items/{item.public_id}")
    missing_api = await client.get(f"/api/v1/items/{missing_id}")
    assert hidden_api.status_code == missing_api.status_code == 404
    assert hidden_api.json() == missing_api.json()


@pytest.mark.parametrize("kind", KINDS)
async def test_staff_preview_hidden_items_on_the_board_and_item_page(client, session, roadmap_world, kind):
    product, tag = roadmap_world
    planned, _released = make_hidden(session, kind, product, tag)
    sign_in(client, session, make_pm(session))

    board = await client.get("/")
    page = await client.get(planned.path)

    assert f"{SECRET} pricing planned" in board.text and f"{SECRET} pricing released" in board.text
    assert page.status_code == 200
    assert _title(page.text).startswith(f"{SECRET} pricing planned")
    assert "Staff preview" in page.text
    # The machine surfaces are built for a visitor whoever asks: a feed reader must not get staff's view.
    for url in ("/changelog.atom", "/sitemap.xml"):
        assert SECRET not in (await client.get(url)).text, url
