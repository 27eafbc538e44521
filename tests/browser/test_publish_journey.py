"""The first journey: a PM publishes an item and saves a draft; a visitor finds the one and never the other."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlparse

import pytest

from app.accounts.models import Role
from app.roadmap.models import Timeframe, item_tags
from tests.factories import make_item, make_tag
from tests.helpers.browser import STAFF_PASSWORD, Portal, axe_check, screenshot

pytestmark = pytest.mark.browser

PUBLISHED_TITLE = "Scheduled exports to S3"
PUBLISHED_SUMMARY = "Send the weekly report to your own bucket."
PUBLISHED_DESCRIPTION = (
    "Exports run **every Monday** at 06:00 UTC.\n\n"
    "## What you can choose\n\n"
    "- the bucket and prefix\n"
    "- CSV or Parquet\n"
)
DRAFT_TITLE = "Quokka onboarding assistant"
DRAFT_WORD = "quokka"
RELEASED_TITLE = "Dark mode for the dashboard"


def _edit_page_id(url: str) -> str | None:
    """The public id in /admin/items/{public_id}, or None on /admin/items/new (or anywhere else)."""
    match = re.fullmatch(r"/admin/items/([^/]+)", urlparse(url).path)
    return match.group(1) if match and match.group(1) != "new" else None


def _field(page: Any, label: str) -> Any:
    """The control labelled exactly `label` (a required field's label also carries an aria-hidden "*")."""
    return page.get_by_label(re.compile(rf"^{re.escape(label)}(\s*\*)?$"))


def _fill_item(page: Any, *, title: str, summary: str, description: str, product: str, stage: str) -> None:
    _field(page, "Title").fill(title)
    _field(page, "Summary").fill(summary)
    _field(page, "Description").fill(description)
    _field(page, "Product").select_option(label=product)
    _field(page, "Stage").select_option(label=stage)


def _submit_item(page: Any, button: str) -> str:
    page.get_by_role("button", name=button, exact=True).click()
    page.wait_for_url(lambda url: _edit_page_id(url) is not None)
    public_id = _edit_page_id(page.url)
    assert public_id
    return public_id


def test_pm_publishes_an_item_and_a_visitor_finds_it_but_never_the_draft(portal: Portal, open_context) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    started = time.perf_counter()
    marks: dict[str, float] = {}

    portal.create_staff("pm@example.com", role=Role.pm, display_name="Pat Manager")
    product = portal.create_product("Reports")
    with portal.transaction() as session:
        # Something already shipped, so the changelog (and its accessibility check) has content.
        released = make_item(session, product=product, stage_slug="released", title=RELEASED_TITLE,
                             summary="Easier on the eyes at night.", release_notes="Follows your **system setting**.",
                             timeframe=Timeframe.now)
        session.execute(item_tags.insert().values(item_id=released.id, tag_id=make_tag(session, "Design").id))

    # --- the product manager --------------------------------------------------------------------
    pm = open_context().new_page()
    pm.goto("/login")
    _field(pm, "Email").fill("pm@example.com")
    _field(pm, "Password").fill(STAFF_PASSWORD)
    pm.get_by_role("button", name="Sign in", exact=True).click()
    expect(pm.get_by_role("button", name="Sign out")).to_be_visible()
    marks["signed in"] = time.perf_counter()

    pm.goto("/admin/items/new")
    _fill_item(pm, title=PUBLISHED_TITLE, summary=PUBLISHED_SUMMARY, description=PUBLISHED_DESCRIPTION,
               product="Reports", stage="Planned")
    screenshot(pm, "01-pm-new-item")
    published_id = _submit_item(pm, "Publish")
    expect(_field(pm, "Title")).to_have_value(PUBLISHED_TITLE)
    screenshot(pm, "02-pm-published-item")

    pm.goto("/admin/items/new")
    _fill_item(pm, title=DRAFT_TITLE, summary="Guides new teams through their first week.",
               description="Not ready to announce.", product="Reports", stage="Under consideration")
    draft_id = _submit_item(pm, "Save draft")
    assert draft_id != published_id
    expect(_field(pm, "Title")).to_have_value(DRAFT_TITLE)
    marks["items saved"] = time.perf_counter()

    # --- a visitor, in a browser context of their own (not signed in) ------------------------------
    visitor = open_context().new_page()
    visitor.goto("/")
    expect(visitor.get_by_role("link", name="Sign in", exact=True)).to_be_visible()
    card = visitor.get_by_role("article", name=PUBLISHED_TITLE)
    expect(card).to_be_visible()
    expect(card).to_contain_text(PUBLISHED_SUMMARY)
    assert DRAFT_TITLE not in visitor.content(), "the draft's title is on the public board"
    screenshot(visitor, "03-visitor-board")
    axe_check(visitor, "the board")

    card.get_by_role("link", name=PUBLISHED_TITLE).click()
    expect(visitor.get_by_role("heading", level=1)).to_have_text(PUBLISHED_TITLE)
    assert f"/items/{published_id}" in visitor.url
    description = visitor.get_by_role("region", name="Description")
    # Markdown rendered, not shown as source.
    expect(description.locator("strong")).to_have_text("every Monday")
    expect(description.get_by_role("heading", name="What you can choose")).to_be_visible()
    expect(description.get_by_role("listitem")).to_have_text(["the bucket and prefix", "CSV or Parquet"])
    expect(description).not_to_contain_text("**")
    screenshot(visitor, "04-visitor-item")
    axe_check(visitor, "the item page")

    visitor.goto("/changelog")
    expect(visitor.get_by_role("heading", name=RELEASED_TITLE)).to_be_visible()
    screenshot(visitor, "05-visitor-changelog")
    axe_check(visitor, "the changelog")

    # Search finds the published item by a word prefix, and nothing of the draft.
    visitor.goto("/search?q=export")
    expect(visitor.get_by_role("link", name=PUBLISHED_TITLE)).to_be_visible()
    visitor.goto(f"/search?q={DRAFT_WORD}")
    expect(visitor.get_by_role("status")).to_contain_text("0 results")
    assert DRAFT_TITLE.lower() not in visitor.content().lower(), "search reveals the draft"

    # The draft's own URL is the same 404 as an address that never existed.
    response = visitor.goto(f"/items/{draft_id}")
    assert response is not None and response.status == 404
    expect(visitor.get_by_role("heading", level=1)).to_have_text("Page not found")
    assert DRAFT_TITLE.lower() not in visitor.content().lower(), "the 404 page reveals the draft"
    draft_404 = visitor.get_by_role("main").inner_text()
    missing = visitor.goto("/items/zz9nothere")
    assert missing is not None and missing.status == 404
    assert visitor.get_by_role("main").inner_text() == draft_404, "a draft's 404 differs from a missing item's"
    screenshot(visitor, "06-visitor-draft-404")
    marks["visitor checked"] = time.perf_counter()

    # The same pages in dark mode: contrast is checked again against the dark palette.
    visitor.emulate_media(color_scheme="dark")
    for path, label in (("/", "board"), (f"/items/{published_id}", "item"), ("/changelog", "changelog")):
        visitor.goto(path)
        screenshot(visitor, f"07-visitor-{label}-dark")
        axe_check(visitor, f"the {label} page (dark)")
    marks["dark checked"] = time.perf_counter()

    assert not portal.server_errors(), f"the server logged errors:\n{portal.server_errors()}"
    assert open_context.page_errors == [], f"JavaScript errors in the pages: {open_context.page_errors}"
    previous = started
    timings = []
    for name, at in marks.items():
        timings.append(f"{name} +{at - previous:.1f}s")
        previous = at
    print(f"journey {time.perf_counter() - started:.1f}s: " + ", ".join(timings))
