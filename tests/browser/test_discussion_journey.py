"""Browser journey: a customer discusses an item, staff answer officially, pin, hide and moderate a report.

Runs against the live server of tests/browser in
Debian's Chromium; axe-core checks the item page with comments and the moderation page; screenshots go
to test-artifacts/browser/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.accounts import service as accounts
from app.accounts.models import Role
from tests.factories import make_item
from tests.helpers.browser import Portal, axe_check, screenshot

pytestmark = pytest.mark.browser


def _signed_in(open_context: Any, portal: Portal, email: str, *, role: Role = Role.customer,
               name: str = "", **options: Any) -> Any:
    """A page in a fresh browser context whose session cookie belongs to a (new) user."""
    with portal.transaction() as session:
        user = accounts.create_user(session, email=email, role=role, display_name=name)
        token = accounts.start_session(session, user=user)
    context = open_context(**options)
    context.add_cookies([{"name": "ahead_session", "value": token, "url": portal.url}])
    return context.new_page()


def test_a_discussion_with_official_answer_moderation_and_no_javascript(portal: Portal, open_context: Any) -> None:
    from playwright.sync_api import expect

    product = portal.create_product("Scheduling")
    with portal.transaction() as session:
        item = make_item(session, product=product, title="Shift swaps between teams",
                         summary="Let staff swap shifts across teams, with a manager's approval.")
        path = item.path

    # A visitor reads and is offered to sign in, coming back to the discussion.
    visitor = open_context().new_page()
    visitor.goto(path)
    link = visitor.get_by_role("link", name="Sign in to comment")
    expect(link).to_have_attribute("href", re.compile(r"^/login\?next=/items/.+%23comments$"))

    # A customer comments in Markdown and replies.
    ann = _signed_in(open_context, portal, "ann@customer.example", name="Ann Customer")
    ann.goto(path)
    ann.get_by_label("Add a comment").fill("We **need** this for our night shifts.\n\n- team A\n- team B")
    ann.get_by_role("button", name="Post comment").click()
    expect(ann).to_have_url(re.compile(r"#comment-[a-z0-9]+$"))
    first = ann.locator("article.comment").first
    expect(first.locator("strong")).to_have_text("need")
    expect(first).to_contain_text("Ann Customer")
    expect(ann.get_by_role("status")).to_have_text("Your comment is posted.")

    # Staff answer officially and pin the answer to the top.
    pm = _signed_in(open_context, portal, "pat@vendor.example", role=Role.pm, name="Pat PM")
    pm.goto(path)
    pm.get_by_label("Add a comment").fill("Planned for the spring release. [Details](https://example.com/spring).")
    pm.get_by_role("button", name="Post comment").click()
    official = pm.locator("article.comment-official")
    expect(official).to_contain_text("Official")
    official.get_by_role("button", name=re.compile("^Pin to top")).click()
    expect(pm.locator("article.comment").first).to_contain_text("Pinned")
    expect(pm.locator("article.comment").first.get_by_role("link", name="Details")).to_have_attribute(
        "rel", "nofollow ugc noopener")

    # The customer replies in the first thread (a <details> form, no script needed).
    ann.goto(path)
    thread = ann.locator("li.comment-thread").nth(1)
    thread.locator("summary", has_text="Reply").click()
    thread.get_by_label("Your reply").fill("Thanks! Will it include cross-site swaps?")
    thread.get_by_role("button", name="Post reply").click()
    expect(ann.locator("ol.comment-replies")).to_contain_text("cross-site swaps")

    # Someone else posts spam; Ann reports it.
    spammer = _signed_in(open_context, portal, "spam@spam.example", name="Cheap Watches")
    spammer.goto(path)
    spammer.get_by_label("Add a comment").fill("Buy cheap watches at watches.example")
    spammer.get_by_role("button", name="Post comment").click()
    ann.goto(path)
    ann.get_by_role("link", name="Report the comment by Cheap Watches").click()
    ann.get_by_label(re.compile("What is wrong with it")).fill("Spam")
    screenshot(ann, "discussion-01-report-form")
    axe_check(ann, "the report form")
    ann.get_by_role("button", name="Report comment").click()
    expect(ann.get_by_role("status")).to_contain_text("The team will look at this comment")
    screenshot(ann, "discussion-02-customer-item-page")
    axe_check(ann, "the item page with comments (customer)")

    # Staff see the report on the moderation page and hide the comment.
    pm.goto("/admin/moderation")
    expect(pm.get_by_role("cell", name=re.compile("Buy cheap watches"))).to_be_visible()
    screenshot(pm, "discussion-03-moderation")
    axe_check(pm, "the moderation page")
    pm.get_by_role("button", name="Hide the comment by Cheap Watches").click()
    expect(pm.get_by_role("status")).to_contain_text("Comment hidden")
    pm.goto(path)
    expect(pm.locator("article.comment-hidden")).to_contain_text("Hidden")
    screenshot(pm, "discussion-04-staff-item-page")
    axe_check(pm, "the item page with comments (staff)")
    ann.goto(path)
    expect(ann.locator("#comments")).not_to_contain_text("cheap watches")

    # Dark mode, and a person without JavaScript who comments with the plain form.
    visitor.emulate_media(color_scheme="dark")
    visitor.goto(path)
    expect(visitor.locator("#comments")).not_to_contain_text("cheap watches")
    screenshot(visitor, "discussion-05-visitor-dark")
    axe_check(visitor, "the item page with comments (visitor, dark)")
    plain = _signed_in(open_context, portal, "nojs@customer.example", name="No Script", java_script_enabled=False)
    plain.goto(path)
    plain.get_by_label("Add a comment").fill("Posted without JavaScript.")
    plain.get_by_role("button", name="Post comment").click()
    expect(plain.locator("#comments")).to_contain_text("Posted without JavaScript.")

    assert not portal.server_errors(), f"the server logged errors:\n{portal.server_errors()}"
    assert open_context.page_errors == [], f"JavaScript errors in the pages: {open_context.page_errors}"


def test_a_long_paste_is_counted_not_cut_and_refused_before_posting(portal: Portal, open_context: Any) -> None:
    from playwright.sync_api import expect

    with portal.transaction() as session:
        path = make_item(session, title="Shift notes").path
    ann = _signed_in(open_context, portal, "paste@customer.example", name="Ann Paste")
    ann.goto(path)
    box = ann.get_by_label("Add a comment")
    counter = ann.locator("#comment-body-count")
    expect(counter).to_have_text("5,000 characters left")
    box.fill("x" * 10_000)
    assert box.evaluate("el => el.value.length") == 10_000, "the paste was cut"
    expect(counter).to_have_text("5,000 characters too many")
    expect(counter).to_have_class(re.compile("is-over"))
    # Read out once typing pauses, not on every keystroke.
    expect(ann.locator("#comment-body-count + [aria-live=polite]")).to_have_text("5,000 characters too many")
    ann.get_by_role("button", name="Post comment").click()
    assert box.evaluate("el => el.validationMessage").startswith("Too long by 5,000")
    expect(ann.locator("#comments")).to_contain_text("No comments yet")  # nothing posted
    axe_check(ann, "the item page with an over-long comment")
    ann.set_viewport_size({"width": 390, "height": 844})
    screenshot(ann, "discussion-06-counter-over-390")
    box.fill("x" * 4_990)
    expect(counter).to_have_text("10 characters left")
    ann.get_by_role("button", name="Post comment").click()
    expect(ann.get_by_role("status")).to_have_text("Your comment is posted.")
    assert open_context.page_errors == [], f"JavaScript errors in the pages: {open_context.page_errors}"
