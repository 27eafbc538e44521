"""Customer-only items are absent for everyone not allowed to see them, on every surface.

Two secret items (each in a planned and a released variant), every surface, four viewers:

* "Quokkavault": `customers` visibility, open to every customer;
* "Zebrafjord": `customers` visibility, limited to the Enterprise segment.

| viewer                               | Quokkavault | Zebrafjord |
|--------------------------------------|-------------|------------|
| signed-out visitor                   | absent      | absent     |
| signed in, no organisation           | absent      | absent     |
| customer of another segment (Starter)| visible     | absent     |
| customer of the segment (Enterprise) | visible     | visible    |

The Atom feed and the sitemap are anonymous: they never carry either, whoever asks. "Absent" means
no title, no id, no count that moved, and the same 404 page as an item that never existed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest

from app.organisations.models import Organisation, Segment
from app.roadmap.models import Item, Visibility
from tests.factories import make_item, make_product, make_tag, make_user
from tests.helpers.csrf import unmasked_tokens
from tests.helpers.http import sign_in
from tests.roadmap.helpers import result_titles

# still_minute: counts of the cache's hits and misses; a minute turning between two visits would add a miss.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("still_minute")]

ALL = "Quokkavault"  # customers, every customer
SEG = "Zebrafjord"  # customers, Enterprise segment only
# Every item's title has this word, so a search finds them all without echoing a secret word.
COMMON = "rostering"

VIEWERS = ["visitor", "no_organisation", "other_segment", "right_segment"]
SEES = {
    "visitor": set(),
    "no_organisation": set(),
    "other_segment": {ALL},
    "right_segment": {ALL, SEG},
}


@dataclass
class World:
    tag_slug: str
    public_planned: Item
    secret: dict[tuple[str, str], Item]  # (word, "planned" | "released") -> item
    customers: dict[str, Any]


@pytest.fixture
def world(session) -> World:  # type: ignore[no-untyped-def]
    enterprise = Segment(slug="enterprise-vis", name="Enterprise")
    starter = Segment(slug="starter-vis", name="Starter")
    session.add_all([enterprise, starter])
    session.flush()
    big = Organisation(name="Big Logistics", segment_id=enterprise.id)
    small = Organisation(name="Small Bakery", segment_id=starter.id)
    session.add_all([big, small])
    session.flush()

    product = make_product(session, name="Scheduling", slug="scheduling-vis")
    tag = make_tag(session, "Shifts")
    public_planned = make_item(session, product=product, tags=[tag], title=f"Public {COMMON} planned")
    make_item(session, product=product, tags=[tag], stage_slug="released", title=f"Public {COMMON} released",
              release_notes="Shipped for everyone.")
    secret = {}
    for word, segments in ((ALL, []), (SEG, [enterprise])):
        for stage_slug in ("planned", "released"):
            secret[(word, stage_slug)] = make_item(
                session, product=product, tags=[tag], stage_slug=stage_slug, visibility=Visibility.customers,
                title=f"{word} {COMMON} {stage_slug}", summary=f"{word} summary",
                description=f"The {word} plan.", release_notes=f"{word} shipped.", segments=list(segments),
            )
    # No passwords: customers sign in through a provider or an email link (and hashing is slow).
    customers = {
        "no_organisation": make_user(session, email="solo@freemail.example", password=None),
        "other_segment": make_user(session, email="sam@smallbakery.example", password=None,
                                   organisation_id=small.id),
        "right_segment": make_user(session, email="erin@biglogistics.example", password=None,
                                   organisation_id=big.id),
    }
    return World(tag_slug=tag.slug, public_planned=public_planned, secret=secret, customers=customers)


async def become(client, session, world: World, who: str) -> None:  # type: ignore[no-untyped-def]
    if who != "visitor":
        sign_in(client, session, world.customers[who])
    await client.get("/")  # the first response sets the CSRF cookie, so later pages are comparable


def traces(world: World, word: str, stage_slug: str | None = None) -> list[str]:
    """Everything that would give an item away: its words and its public ids."""
    items = [i for (w, s), i in world.secret.items() if w == word and stage_slug in (None, s)]
    return [word, *(i.public_id for i in items)]


def assert_absent(text: str, world: World, word: str, where: str) -> None:
    found = [t for t in traces(world, word) if t.lower() in text.lower()]
    assert not found, f"{where}: {found} leaked"


def _title(html: str) -> str:
    match = re.search(r"<title>(.*?)</title>", html, re.DOTALL)
    assert match, "the page has no <title>"
    return match.group(1).strip()


def _column_count(html: str, slug: str) -> int:
    match = re.search(rf'id="col-{slug}">[^<]*<span class="count">(\d+)', html)
    assert match, f"no column {slug}"
    return int(match.group(1))


# Which variants each page lists when the viewer may see them.
PAGES = {
    "/": ("planned", "released"),
    "/?stage=planned": ("planned",),
    "/?stage=released": ("released",),
    "/?tag={tag}": ("planned", "released"),
    "/?tag={tag}&stage=planned": ("planned",),
    "/?view=horizon": ("planned",),
    f"/search?q={COMMON}": ("planned", "released"),
    "/changelog": ("released",),
}


@pytest.mark.parametrize("who", VIEWERS)
async def test_pages_list_an_item_only_for_those_allowed(client, session, world, who):
    await become(client, session, world, who)

    for template, variants in PAGES.items():
        url = template.format(tag=world.tag_slug)
        page = await client.get(url)
        assert page.status_code == 200, url
        assert world.public_planned.public_id in page.text or "released" in variants, url
        for word in (ALL, SEG):
            if word in SEES[who]:
                for variant in variants:
                    item = world.secret[(word, variant)]
                    assert f'href="{item.path}"' in page.text, f"{who} should see {item.title} on {url}"
            else:
                assert_absent(page.text, world, word, f"{who} on {url}")


@pytest.mark.parametrize("who", VIEWERS)
async def test_counts_move_only_for_what_the_viewer_may_see(client, session, world, who):
    await become(client, session, world, who)
    seen = len(SEES[who])  # one planned and one released item per secret word the viewer may see

    board = (await client.get("/")).text
    assert _column_count(board, "planned") == 1 + seen
    assert _column_count(board, "released") == 1 + seen
    horizon = (await client.get("/?view=horizon")).text
    assert _column_count(horizon, "next") == 1 + seen
    stage = (await client.get("/?stage=planned")).text
    assert f'<p class="result-count">{1 + seen} item' in stage
    tagged = (await client.get(f"/?tag={world.tag_slug}")).text
    assert _column_count(tagged, "planned") == 1 + seen

    listing = (await client.get("/api/v1/items")).json()
    assert listing["total"] == 2 + 2 * seen == len(listing["items"])
    planned = (await client.get(f"/api/v1/items?stage=planned&tag={world.tag_slug}")).json()
    assert planned["total"] == 1 + seen


@pytest.mark.parametrize("who", VIEWERS)
async def test_the_api_lists_and_serves_an_item_only_for_those_allowed(client, session, world, who):
    await become(client, session, world, who)

    listing = await client.get("/api/v1/items?per_page=100")
    ids = {i["id"] for i in listing.json()["items"]}
    for (word, _), item in world.secret.items():
        single = await client.get(f"/api/v1/items/{item.public_id}")
        if word in SEES[who]:
            assert item.public_id in ids
            assert single.status_code == 200 and single.json()["title"] == item.title
        else:
            assert item.public_id not in ids
            assert_absent(listing.text, world, word, f"{who} on /api/v1/items")
            missing = await client.get(f"/api/v1/items/zz{item.public_id[2:]}")
            assert single.status_code == missing.status_code == 404
            assert single.json() == missing.json()


@pytest.mark.parametrize("who", VIEWERS)
async def test_an_item_page_is_the_same_404_as_a_missing_item_for_those_not_allowed(client, session, world, who):
    await become(client, session, world, who)

    for (word, _variant), item in world.secret.items():
        missing_id = "zz" + item.public_id[2:]
        for suffix in ("", f"/{item.slug}"):
            page = await client.get(f"/items/{item.public_id}{suffix}")
            if word in SEES[who]:
                expected = 200 if suffix else 301  # the short URL redirects to the one with the slug
                assert page.status_code == expected, f"{who}: {item.title}"
                if suffix:
                    assert _title(page.text).startswith(item.title)
                continue
            missing = await client.get(f"/items/{missing_id}{suffix}")
            assert page.status_code == missing.status_code == 404, f"{who}: {item.title}{suffix}"
            assert "location" not in page.headers  # no redirect to the slug, which would spell out the title
            assert _title(page.text) == _title(missing.text)
            assert word not in page.text
            assert unmasked_tokens(page.text).replace(item.public_id, "ID") == unmasked_tokens(missing.text).replace(missing_id, "ID")


@pytest.mark.parametrize("who", VIEWERS)
async def test_the_feed_and_the_sitemap_never_carry_customer_items(client, session, world, who):
    await become(client, session, world, who)

    for url in ("/changelog.atom", "/sitemap.xml"):
        response = await client.get(url)
        assert response.status_code == 200
        assert world.public_planned.public_id in response.text or url.endswith(".atom")
        for word in (ALL, SEG):
            assert_absent(response.text, world, word, f"{who} on {url}")
    assert "Public rostering released" in (await client.get("/changelog.atom")).text


async def test_a_signed_out_link_to_a_customer_item_offers_sign_in_and_comes_back(client, session, world):
    item = world.secret[(SEG, "planned")]
    await client.get("/")

    page = await client.get(item.path)

    assert page.status_code == 404
    assert SEG not in page.text.replace(item.path, "")  # nothing but the address that was followed
    link = re.search(r'href="(/login\?next=[^"]+)"[^>]*>sign in<', page.text)
    assert link, "the 404 page offers to sign in"
    assert unquote(link.group(1).split("next=", 1)[1]) == item.path

    login = await client.get(link.group(1))
    assert login.status_code == 200
    assert f'name="next" value="{item.path}"' in login.text

    sign_in(client, session, world.customers["right_segment"])
    after = await client.get(item.path)
    assert after.status_code == 200
    assert _title(after.text).startswith(item.title)
    assert "sign in</a> and you will come back" not in after.text


async def test_a_signed_in_customer_who_may_not_see_it_gets_no_sign_in_hint(client, session, world):
    sign_in(client, session, world.customers["other_segment"])
    page = await client.get(world.secret[(SEG, "planned")].path)
    assert page.status_code == 404
    assert "/login?next=" not in page.text


async def test_a_kept_search_page_lists_only_what_each_audience_may_see(app, client, session, world):
    """Search pages are kept per audience in one worker's cache: each viewer asks three times (kept from the
    second time an audience asks, the third answered from it), in an order where the page was last kept for someone
    who sees more, and gets only their own hits."""
    url = f"/search?q={COMMON}"
    public = {f"Public {COMMON} planned", f"Public {COMMON} released"}
    for who in ["right_segment", "other_segment", "right_segment", "no_organisation", "visitor", "other_segment"]:
        client.cookies.clear()
        if who != "visitor":
            sign_in(client, session, world.customers[who])
        first = await client.get(url)
        second = await client.get(url)
        misses = app.state.pages.misses
        again = await client.get(url)
        assert app.state.pages.misses == misses, f"{who}: the third search was rendered again"
        expected = public | {f"{word} {COMMON} {stage}" for word in SEES[who] for stage in ("planned", "released")}
        for page in (first, second, again):
            assert set(result_titles(page.text)) == expected, who
            for word in {ALL, SEG} - SEES[who]:
                assert_absent(page.text, world, word, f"{who}: search")
