"""Browser journey: a customer suggests an idea (similar items appear while typing, only those they may
see), and the PM finds it in the inbox. Screenshots of the idea form and the inbox; axe-core on both."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.accounts import service as accounts
from app.accounts.models import Role
from app.deps import SESSION_COOKIE
from app.roadmap.models import Visibility
from tests.factories import make_item
from tests.helpers.browser import STAFF_PASSWORD, Portal, axe_check, screenshot

pytestmark = pytest.mark.browser


def _customer_context(portal: Portal, open_context: Any, email: str, name: str) -> Any:
    """A browser context signed in as a customer (the sign-in flows have journeys of their own)."""
    with portal.transaction() as session:
        user = accounts.create_user(session, email=email, role=Role.customer, display_name=name)
        token = accounts.start_session(session, user=user)
    context = open_context()
    context.add_cookies([{"name": SESSION_COOKIE, "value": token, "url": portal.url}])
    return context


def test_customer_suggests_an_idea_and_the_pm_reads_it_in_the_inbox(portal: Portal, open_context: Any) -> None:
    from playwright.sync_api import expect

    product = portal.create_product("Scheduling")
    with portal.transaction() as session:
        public = make_item(session, product=product, title="Shift swap approvals",
                           summary="Managers approve swaps in one click.")
        make_item(session, product=product, title="Shift swap for enterprise customers",
                  visibility=Visibility.customers)
    portal.create_staff("pm@example.com", role=Role.pm, display_name="Pat Manager")

    # --- the customer (signed in, no organisation: sees public items only) -----------------------
    page = _customer_context(portal, open_context, "dana@example.com", "Dana Scully").new_page()
    page.goto("/")
    page.get_by_role("link", name="Suggest an idea").click()
    expect(page.get_by_role("heading", name="Suggest an idea", level=1)).to_be_visible()
    axe_check(page, "the idea form")

    title = page.get_by_label(re.compile(r"^Title"))
    title.press_sequentially("shift swap", delay=30)
    suggestions = page.locator("#idea-similar")
    expect(suggestions.get_by_role("link", name="Shift swap approvals")).to_be_visible()
    expect(suggestions).not_to_contain_text("enterprise")
    assert suggestions.get_by_role("link").get_attribute("href") == public.path
    title.press_sequentially(" by text message", delay=10)
    page.get_by_label("Description").fill("Our nurses swap **shifts** by SMS today.")
    page.get_by_label("Product").select_option(label="Scheduling")
    axe_check(page, "the idea form with suggestions")
    screenshot(page, "feedback-idea-form")

    # An empty title: the form comes back with the message and what was typed.
    title.fill("")
    page.get_by_role("button", name="Send to the product team").click()
    expect(page.get_by_role("alert").filter(has_text="Give your idea a short title.")).to_be_visible()
    expect(page.get_by_label("Description")).to_have_value("Our nurses swap **shifts** by SMS today.")
    axe_check(page, "the idea form with an error")

    page.get_by_label(re.compile(r"^Title")).fill("Shift swap by text message")
    page.get_by_role("button", name="Send to the product team").click()
    page.wait_for_url(re.compile(r"/me#your-feedback$"))
    expect(page.get_by_text("Your idea has reached the product team")).to_be_visible()
    entry = page.locator(".feedback-entry", has_text="Shift swap by text message")
    expect(entry).to_contain_text("Received")

    # Never on the public board.
    page.goto("/")
    expect(page.get_by_text("Shift swap by text message")).to_have_count(0)

    # --- the product manager -------------------------------------------------------------------------
    pm = open_context().new_page()
    pm.goto("/login")
    pm.get_by_label(re.compile(r"^Email(\s*\*)?$")).fill("pm@example.com")
    pm.get_by_label(re.compile(r"^Password(\s*\*)?$")).fill(STAFF_PASSWORD)
    pm.get_by_role("button", name="Sign in", exact=True).click()
    expect(pm.get_by_role("button", name="Sign out")).to_be_visible()
    pm.goto("/admin")
    pm.get_by_role("navigation", name="Admin").get_by_role("link", name="Inbox").click()
    row = pm.get_by_role("row", name=re.compile("Shift swap by text message"))
    expect(row).to_contain_text("Dana Scully")
    expect(row).to_contain_text("Portal")
    expect(row).to_contain_text("New")
    axe_check(pm, "the inbox")
    screenshot(pm, "feedback-inbox")

    pm.get_by_label("State").select_option(label="Declined")  # the filter form submits on change
    expect(pm.get_by_text("Nothing matches")).to_be_visible()
    pm.goto("/admin/feedback")
    pm.get_by_role("link", name="Shift swap by text message").click()
    axe_check(pm, "an inbox entry")
    pm.get_by_label("Find an item", exact=True).fill("approvals")
    pm.get_by_role("button", name="Search").click()
    pm.get_by_role("button", name="Link to Shift swap approvals").click()
    expect(pm.get_by_text("Linked to “Shift swap approvals”.")).to_be_visible()

    page.goto("/me")
    entry = page.locator(".feedback-entry", has_text="Shift swap by text message")
    expect(entry).to_contain_text("Linked to an item")
    expect(entry.get_by_role("link", name="Shift swap approvals")).to_be_visible()
    assert not portal.server_errors()
