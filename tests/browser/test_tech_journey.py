"""Browser journey: a PM creates an initiative, links two items and two tracker issues by pasting their
addresses, makes a GitHub webhook (its secret shown once) and sets an item's mapping; a signed GitHub delivery
closes one issue; the initiative shows 50% delivered and the item has moved to In progress, recorded as made by
the integration. axe-core on each page, light and dark, 1280 and 390 px wide."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.accounts.models import Role
from tests.factories import make_item
from tests.helpers.browser import STAFF_PASSWORD, Portal, axe_check, screenshot

pytestmark = pytest.mark.browser

PAYLOAD = Path(__file__).parent.parent / "tech" / "payloads" / "github_issue_closed.json"
FIRST, SECOND = "Faster exports", "Export to S3"


def _sign_in(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/login")
    page.get_by_label(re.compile(r"^Email(\s*\*)?$")).last.fill("pm@example.com")
    page.get_by_label(re.compile(r"^Password(\s*\*)?$")).fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    # Signed in, staff land on the admin's overview (on a phone "Sign out" sits inside the closed Menu).
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def test_pm_links_work_and_a_signed_webhook_moves_the_item(portal: Portal, open_context: Any) -> None:
    from playwright.sync_api import expect

    portal.create_staff("pm@example.com", role=Role.pm, display_name="Pat Manager")
    product = portal.create_product("Reports")
    with portal.transaction() as session:
        first = make_item(session, product=product, title=FIRST, stage_slug="planned")
        make_item(session, product=product, title=SECOND, stage_slug="planned")
        first_path, first_public = first.path, first.public_id

    pm = open_context(color_scheme="light", viewport={"width": 1280, "height": 900}).new_page()
    _sign_in(pm)
    pm.goto("/admin")
    pm.get_by_role("navigation", name="Admin").get_by_role("link", name="Technology").first.click()
    expect(pm.get_by_role("heading", level=1)).to_have_text("Technology roadmap")
    axe_check(pm, "the empty technology roadmap")
    pm.get_by_role("link", name="New initiative").click()
    pm.get_by_label(re.compile(r"^Title")).fill("Export pipeline rewrite")
    pm.get_by_label("Status").select_option(label="Active")
    pm.get_by_role("button", name="Create initiative").click()
    expect(pm.get_by_text("Initiative “Export pipeline rewrite” created.")).to_be_visible()

    for title in (FIRST, SECOND):
        pm.get_by_label("Item", exact=True).select_option(label=title)
        pm.get_by_role("button", name="Link item").click()
        expect(pm.get_by_text(f"Linked “{title}”")).to_be_visible()
    for url in ("https://github.com/acme/app/issues/88", "https://acme.atlassian.net/browse/PAY-142"):
        pm.get_by_label("Issue address").fill(url)
        pm.get_by_role("button", name="Add link").click()
        expect(pm.get_by_role("status").or_(pm.locator(".flash")).first).to_be_visible()
    expect(pm.get_by_role("link", name="acme/app#88")).to_be_visible()
    expect(pm.get_by_role("link", name="PAY-142")).to_be_visible()
    expect(pm.get_by_text("0% delivered")).to_be_visible()
    initiative_url = pm.url.split("#")[0]
    axe_check(pm, "the initiative")

    # The mapping: when the first link starts, the first item moves to In progress.
    pm.goto(f"/admin/items/{first_public}")
    pm.get_by_label("When the first link starts, move the item to").select_option(label="In progress")
    pm.get_by_label(re.compile(r"^Show customers a progress bar")).check()
    pm.get_by_role("button", name="Save delivery settings").click()
    expect(pm.get_by_text("Delivery settings saved.")).to_be_visible()
    axe_check(pm, "the item's delivery section")

    pm.goto("/admin/tech/hooks")
    pm.get_by_label(re.compile(r"^Name")).fill("GitHub acme/app")
    pm.get_by_label("Sent by").select_option(label="GitHub")
    pm.get_by_role("button", name="Create webhook").click()
    expect(pm.get_by_text("Copy these now: the secret is not shown again.")).to_be_visible()
    address = pm.locator("dd code").nth(0).inner_text()
    secret = pm.locator("dd code").nth(1).inner_text()
    axe_check(pm, "the webhooks page")
    pm.reload()
    expect(pm.get_by_text(secret)).to_have_count(0)  # shown once

    body = PAYLOAD.read_bytes()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    answer = httpx.post(address, content=body, headers={
        "content-type": "application/json", "x-github-event": "issues", "x-github-delivery": "journey-1",
        "x-hub-signature-256": signature})
    assert answer.status_code == 200, answer.text
    assert "Moved “Faster exports” from Planned to In progress." in answer.json()["detail"]

    for scheme, width in (("light", 1280), ("dark", 390)):
        page = open_context(color_scheme=scheme, viewport={"width": width, "height": 900}).new_page()
        _sign_in(page)
        page.goto(initiative_url)
        expect(page.get_by_text("50% delivered").first).to_be_visible()
        axe_check(page, f"the initiative after the delivery ({scheme}, {width} px)")
        screenshot(page, f"tech-initiative-{scheme}-{width}")
        page.goto(f"/admin/items/{first_public}")
        expect(page.get_by_text("Currently in")).to_contain_text("In progress")
        expect(page.get_by_text("integration: GitHub acme/app (github)").first).to_be_visible()
        page.goto("/admin/tech?view=timeline")
        axe_check(page, f"the timeline ({scheme}, {width} px)")
        page.goto("/admin/tech/hooks")
        expect(page.get_by_role("cell", name="issues.closed")).to_be_visible()
        axe_check(page, f"the webhooks page ({scheme}, {width} px)")

    pm.goto("/admin/tech/import")
    pm.get_by_label("CSV").fill("key,title,status,initiative\nPAY-7,Ledger,Done,Payments v2\n")
    pm.get_by_role("button", name="Preview").click()
    expect(pm.get_by_text("1 new link; 1 new initiative: Payments v2.")).to_be_visible()
    axe_check(pm, "the import preview")
    pm.get_by_role("button", name="Import 1 link").click()
    expect(pm.get_by_text("Imported 1 backlog link and 1 new initiative.")).to_be_visible()

    visitor = open_context(color_scheme="light").new_page()
    visitor.goto(first_path)
    expect(visitor.get_by_text("About 50% delivered")).to_be_visible()
    expect(visitor.get_by_text("acme/app#88")).to_have_count(0)
    expect(visitor.get_by_text("Export pipeline rewrite")).to_have_count(0)
    axe_check(visitor, "the public item page with its delivery bar")
    assert not portal.server_errors()
