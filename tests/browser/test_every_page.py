"""Every page a person reaches from the navigation, at 1280 and 390 px, on the demo company: axe-core finds no
WCAG 2.1 A/AA violation and nothing scrolls sideways.

Staff walk every section of the admin navigation (and the pages a PM opens from them: a person, an inbox
entry, an item's editor, recording a vote, merging, its demand); a visitor and a signed-in customer walk every
link of the public header, an item page and a search. One browser, one context per person and width, failures gathered so that one run
lists them all. On a phone the admin menu opens without JavaScript and shows every section, and the
moderation queue's buttons are on screen.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app import seed
from app.accounts import service as accounts
from app.feedback.models import Feedback, FeedbackKind
from app.roadmap.models import Item
from tests.helpers.browser import Portal, axe_violations, screenshot

pytestmark = pytest.mark.browser

WIDTHS = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


def _links(page: Any, selector: str) -> list[str]:
    """This site's addresses among the links the selector finds, in order, once each."""
    found: list[str] = []
    for href in page.eval_on_selector_all(selector, "links => links.map(a => a.getAttribute('href'))"):
        if href and href.startswith("/") and not href.startswith("//") and href not in found:
            found.append(href)
    return found


def _walk(page: Any, paths: list[str], who: str, width: str, problems: list[str]) -> int:
    for path in paths:
        response = page.goto(path)
        where = f"{who}, {width}, {path}"
        if response is None or response.status >= 400:
            problems.append(f"{where}: answered {response.status if response else 'nothing'}")
            continue
        scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        if scroll > inner:
            problems.append(f"{where}: scrolls sideways ({scroll} px wide in a {inner} px window)")
        problems += [f"{where}: {line}" for line in axe_violations(page)]
    return len(paths)


def test_every_page_in_the_navigation_is_accessible_and_fits_a_phone(portal: Portal, open_context: Any) -> None:
    from playwright.sync_api import expect

    with portal.transaction() as session:
        seed.seed_demo(session)
        people = {email: accounts.get_user_by_email(session, email)
                  for email in (seed.ADMIN_EMAIL, seed.DEMO_CUSTOMER_EMAIL)}
        tokens = {email: accounts.start_session(session, user=user) for email, user in people.items()
                  if user is not None}
        customer = people[seed.DEMO_CUSTOMER_EMAIL]
        assert customer is not None
        item = session.scalar(select(Item).where(Item.title == "Open shifts that qualified staff can claim"))
        reason = session.scalar(select(Feedback.id).where(Feedback.kind == FeedbackKind.reason).limit(1))
        assert item is not None and reason is not None
        opened_from_admin = [
            f"/admin/people/{customer.id}", f"/admin/feedback/{reason}", f"/admin/items/{item.public_id}",
            f"/admin/items/{item.public_id}/capture?customer_q=a", f"/admin/items/{item.public_id}/merge?q=shift",
            f"/admin/desk/items/{item.public_id}",
        ]
        # Reached from the board and the search box rather than from a header link.
        opened_from_public = [item.path, "/search?q=shift"]

    problems: list[str] = []
    walked = 0
    for width, viewport in WIDTHS.items():
        for who, email in (("staff", seed.ADMIN_EMAIL), ("visitor", None), ("customer", seed.DEMO_CUSTOMER_EMAIL)):
            context = open_context(viewport=viewport)
            if email:
                context.add_cookies([{"name": "ahead_session", "value": tokens[email], "url": portal.url}])
            page = context.new_page()
            if who == "staff":
                page.goto("/admin")
                sections = _links(page, "nav[aria-label=Admin] a")
                assert len(sections) >= 15, sections
                walked += _walk(page, sections + opened_from_admin, who, width, problems)
            else:
                page.goto("/")
                walked += _walk(page, _links(page, "header a") + opened_from_public, who, width, problems)
            if width == "phone" and who == "staff":
                screenshot(page, "every-page-admin-phone")

    assert walked >= 60, walked
    assert not problems, f"{len(problems)} problem(s) on {walked} pages:\n" + "\n".join(problems)

    # The phone's admin menu is a <details>: it opens without JavaScript and lists every section.
    context = open_context(viewport=WIDTHS["phone"], java_script_enabled=False)
    context.add_cookies([{"name": "ahead_session", "value": tokens[seed.ADMIN_EMAIL], "url": portal.url}])
    page = context.new_page()
    page.goto("/admin/feedback")
    menu = page.locator(".admin-nav-compact")
    expect(menu.locator("summary")).to_contain_text("Inbox")
    expect(page.locator(".admin-nav")).to_be_hidden()
    menu.locator("summary").click()
    for link in menu.locator("a").all():
        expect(link).to_be_visible()
    assert menu.locator("a").count() >= 15

    # Moderation on a phone: each reported comment's buttons are on screen, not off to the right of a table.
    page.goto("/admin/moderation")
    hide = page.get_by_role("button", name="Hide").first
    box = hide.bounding_box()
    assert box is not None and box["x"] + box["width"] <= WIDTHS["phone"]["width"], box
    assert not portal.server_errors()
