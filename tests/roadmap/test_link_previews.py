"""Links that travel: item pages, the changelog and its entries carry a meta description and Open Graph /
Twitter card tags, so a pasted link unfurls into a preview; customer-only, internal and draft items give
nothing away in them."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from app.changelog.models import ChangelogEntry
from app.db import utcnow
from app.organisations.models import Organisation
from app.portal import service as portal
from app.roadmap.models import Visibility
from tests.admin.helpers import PNG
from tests.factories import make_admin, make_item, make_user
from tests.helpers.http import sign_in

BASE = "http://testserver"


@pytest.fixture
async def visitor(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


def metas(page: str) -> dict[str, str]:
    """The page's <meta name|property=… content=…> tags, as a link unfurler reads them."""
    found = re.findall(r'<meta (?:name|property)="([^"]+)" content="([^"]*)">', page)
    return {key: html.unescape(value) for key, value in found}


async def test_a_public_item_unfurls_into_its_title_summary_and_the_portals_logo(visitor, session):
    portal.update_branding(session, actor=make_admin(session), values={"portal_name": "Rotawise Roadmap"}, logo=PNG)
    item = make_item(session, title='Shift swaps "for everyone" <now>', summary="Swap a shift & keep your hours.")

    tags = metas((await visitor.get(item.path)).text)

    assert tags["og:title"] == tags["twitter:title"] == 'Shift swaps "for everyone" <now>'
    assert tags["description"] == tags["og:description"] == tags["twitter:description"] == \
        "Swap a shift & keep your hours."
    assert tags["og:url"] == BASE + item.path and tags["og:type"] == "article"
    assert tags["og:site_name"] == "Rotawise Roadmap" and tags["twitter:card"] == "summary"
    assert re.fullmatch(rf"{BASE}/branding/logo\?v=\d+", tags["og:image"])
    assert tags["twitter:image"] == tags["og:image"]
    logo = await visitor.get(tags["og:image"].removeprefix(BASE))
    assert logo.status_code == 200 and logo.headers["content-type"] == "image/png"


async def test_without_a_summary_the_description_is_the_text_flattened(visitor, session):
    item = make_item(session, title="Exports", summary="", description="Exports run **every Monday** at [nine](https://example.com).")

    tags = metas((await visitor.get(item.path)).text)

    assert tags["og:description"] == "Exports run every Monday at nine."  # a link as its words
    assert "og:image" not in tags  # no logo uploaded: no image promised


@pytest.mark.parametrize("visibility", [Visibility.customers, Visibility.internal])
async def test_a_hidden_item_gives_nothing_away_to_those_who_may_see_it_either(client, session, visibility):
    org = Organisation(name="Harbour")
    session.add(org)
    session.flush()
    sign_in(client, session, make_user(session, email="maya@harbour.example", password=None, organisation_id=org.id))
    if visibility is Visibility.internal:
        sign_in(client, session, make_admin(session))
    item = make_item(session, title="Quokkavault", summary="Secret summary", visibility=visibility)

    page = await client.get(item.path)

    assert page.status_code == 200 and "Quokkavault" in page.text  # the person sees the item itself
    tags = metas(page.text)
    assert not [v for v in tags.values() if "Quokkavault" in v or "Secret" in v or item.public_id in v]
    assert tags["robots"] == "noindex"


async def test_a_draft_previewed_by_staff_gives_nothing_away(client, session):
    sign_in(client, session, make_admin(session))
    item = make_item(session, title="Quokkavault", summary="Secret summary", published=False)

    tags = metas((await client.get(item.path)).text)

    assert not [v for v in tags.values() if "Quokkavault" in v or "Secret" in v]


async def test_the_changelog_and_an_entry_unfurl(visitor, session):
    public = make_item(session, stage_slug="released", title="Dark mode")
    entry = ChangelogEntry(public_id="spring26", slug="spring-release", title="Spring release",
                           notes="Three things **you asked for**.", published_at=utcnow(), items=[public])
    session.add(entry)
    session.flush()

    listing = metas((await visitor.get("/changelog")).text)
    assert listing["og:title"].startswith("Changelog · ") and listing["og:url"] == f"{BASE}/changelog"
    detail = metas((await visitor.get(entry.path)).text)
    assert detail["og:title"] == "Spring release"
    assert detail["og:description"] == "Three things you asked for."
    assert detail["og:url"] == f"{BASE}/changelog/spring26/spring-release"
