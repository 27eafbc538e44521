"""Browser journey: a customer votes from the keyboard without a reload, hears what happened, changes and
withdraws the vote; a visitor is offered to sign in; without JavaScript the plain forms do the same.

Runs in Debian's Chromium against the live server of tests/browser; axe-core checks the item page and the
board with votes shown; screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.models import Role
from app.feedback.models import Feedback, FeedbackKind
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_item
from tests.helpers.browser import Portal, axe_check, screenshot

pytestmark = pytest.mark.browser


def _signed_in(open_context: Any, portal: Portal, email: str, **options: Any) -> Any:
    with portal.transaction() as session:
        user = accounts.create_user(session, email=email, role=Role.customer, display_name="Ann")
        token = accounts.start_session(session, user=user)
    context = open_context(**options)
    context.add_cookies([{"name": "ahead_session", "value": token, "url": portal.url}])
    return context.new_page()


def _tab_to(page: Any, selector: str, limit: int = 80) -> None:
    """Press Tab until the focused element matches `selector`, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
    pytest.fail(f"Tab never reached {selector}")


def _focused(page: Any) -> str:
    return page.evaluate("() => (document.activeElement.getAttribute('data-focus') || '') + ':' + "
                         "document.activeElement.textContent.trim()")


def test_a_customer_votes_from_the_keyboard_without_a_reload(portal: Portal, open_context: Any) -> None:
    from playwright.sync_api import expect

    product = portal.create_product("Scheduling")
    with portal.transaction() as session:
        item = make_item(session, product=product, title="Shift swaps between teams",
                         summary="Let staff swap shifts across teams, with a manager's approval.")
        make_item(session, product=product, title="Payroll export", summary="Send hours to payroll.")
        released = make_item(session, product=product, stage_slug="released", title="Dark mode",
                             summary="Easier on the eyes at night.")
        for n in range(2):
            voter = accounts.create_user(session, email=f"voter{n}@example.com", role=Role.customer)
            voting.cast_vote(session, item=item, user=voter, importance=Importance.important)
        path, public_id, released_path = item.path, item.public_id, released.path

    # A visitor sees the count and is offered to sign in, coming back to the item.
    visitor = open_context().new_page()
    visitor.goto(path)
    widget = visitor.locator(f"#vote-{public_id}")
    expect(widget).to_contain_text("2 votes")
    expect(widget.get_by_role("link", name="Sign in to vote")).to_have_attribute(
        "href", f"/login?next={path}")

    # A customer, keyboard only: Tab to the importance, arrow to Critical, say why, Enter.
    ann = _signed_in(open_context, portal, "ann@customer.example", browser_cache=True)  # Back and Forward below
    ann.goto(path)
    ann.evaluate("() => { window.__sameDocument = true; }")
    _tab_to(ann, f"#vote-{public_id} input[name=importance]")
    assert ann.evaluate("() => document.activeElement.value") == "important"
    ann.keyboard.press("ArrowDown")
    assert ann.evaluate("() => document.activeElement.value") == "critical"
    ann.keyboard.press("Tab")
    ann.keyboard.type("Our night shift swaps by phone today.")
    ann.keyboard.press("Tab")
    assert _focused(ann) == "vote:Vote"
    ann.keyboard.press("Enter")

    widget = ann.locator(f"#vote-{public_id}")
    expect(widget).to_contain_text("3 votes")
    expect(widget).to_contain_text("You voted: Critical")
    expect(ann.locator("#vote-live")).to_have_text(
        "Your vote is counted: Critical. Thank you for telling us why.")
    assert ann.evaluate("() => window.__sameDocument === true"), "the page reloaded"
    assert _focused(ann) == "vote:Update my vote"
    # The outcome stays on screen, and the reason comes back under the vote, in a box to edit.
    expect(widget.locator(".vote-done")).to_be_visible()
    expect(widget.locator(".vote-done")).to_have_text(
        re.compile(r"Your vote is counted: Critical\. Thank you for telling us why\.$"))
    expect(widget.locator(".vote-reason-text")).to_have_text("Our night shift swaps by phone today.")
    expect(widget.get_by_label("Edit your reason (optional)")).to_have_value("Our night shift swaps by phone today.")
    expect(ann.get_by_role("button", name=re.compile(r"^Unfollow"))).to_be_visible()  # voting follows
    screenshot(ann, "vote-item-page-voted")
    axe_check(ann, "item page with a vote")

    # Change the importance with Space on a radio and Enter, then withdraw with Space.
    _tab_to(ann, f"#vote-{public_id} input[name=importance]")
    ann.keyboard.press("ArrowUp")
    ann.keyboard.press("Space")
    _tab_to(ann, f"#vote-{public_id} [data-focus=vote]")
    ann.keyboard.press("Enter")
    expect(widget).to_contain_text("You voted: Important")
    expect(ann.locator("#vote-live")).to_have_text("Your vote is now Important.")
    expect(widget).to_contain_text("3 votes")
    expect(widget.locator(".vote-reason-text")).to_have_text("Our night shift swaps by phone today.")

    # Edit the reason: the one reason changes, in place.
    box = widget.get_by_label("Edit your reason (optional)")
    box.fill("Our night shift swaps by phone, and two teams share one phone.")
    widget.get_by_role("button", name="Update my vote").click()
    expect(widget.locator(".vote-done")).to_have_text(re.compile(r"Your reason is updated\.$"))
    expect(widget.locator(".vote-reason-text")).to_have_text(
        "Our night shift swaps by phone, and two teams share one phone.")
    with portal.transaction() as session:
        reasons = list(session.scalars(select(Feedback.body).where(Feedback.kind == FeedbackKind.reason)))
    assert reasons == ["Our night shift swaps by phone, and two teams share one phone."]
    axe_check(ann, "item page with a saved reason")
    for scheme in ("light", "dark"):
        ann.emulate_media(color_scheme=scheme)
        for width in (1280, 390):
            ann.set_viewport_size({"width": width, "height": 900})
            screenshot(ann, f"vote-item-page-reason-{width}-{scheme}")
            assert ann.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"), "scrolls sideways"
    ann.emulate_media(color_scheme="light")
    ann.set_viewport_size({"width": 1280, "height": 900})
    _tab_to(ann, f"#vote-{public_id} [data-focus=unvote]")
    ann.keyboard.press("Space")
    expect(widget).to_contain_text("2 votes")
    expect(widget).not_to_contain_text("You voted")
    expect(ann.locator("#vote-live")).to_have_text("Your vote is withdrawn.")
    assert _focused(ann) == "vote:Vote"
    assert ann.evaluate("() => window.__sameDocument === true"), "the page reloaded"

    # On the board: the card's own form, in place.
    ann.goto("/")
    ann.evaluate("() => { window.__sameDocument = true; }")
    card = ann.locator(f"#vote-{public_id}")
    expect(card).to_contain_text("2")
    card.get_by_label(re.compile("How much")).select_option("nice_to_have")
    card.get_by_role("button", name=re.compile(r"^Vote")).focus()
    ann.keyboard.press("Enter")
    expect(card).to_contain_text("You voted: Nice to have")
    expect(card.locator(".votes")).to_have_text(re.compile(r"3\s*votes"))
    expect(ann.locator("#vote-live")).to_have_text("Your vote is counted: Nice to have.")
    assert ann.evaluate("() => window.__sameDocument === true"), "the page reloaded"
    screenshot(ann, "vote-board-voted")
    axe_check(ann, "board with votes")

    # Back to the item page, from the browser's history: it shows the vote sent from the board since, not the
    # withdrawal it showed when it was left; Forward, the board keeps it too.
    ann.go_back()
    widget = ann.locator(f"#vote-{public_id}")
    expect(widget).to_contain_text("You voted: Nice to have")
    expect(widget).to_contain_text("3 votes")
    ann.go_forward()
    expect(ann.locator(f"#vote-{public_id}")).to_contain_text("You voted: Nice to have")

    # A released item says why there is nothing to vote on.
    ann.goto(released_path)
    expect(ann.locator(".vote-box")).to_contain_text("Released — voting is closed.")
    expect(ann.locator(".vote-box").get_by_role("button")).to_have_count(0)

    # Signing out empties the browser's cache of the portal: on a shared computer, Back shows the page as a visitor
    # gets it now, not Ann's.
    ann.get_by_role("button", name="Sign out").click()
    expect(ann.get_by_text("You are signed out.")).to_be_visible()
    ann.go_back()
    expect(ann.locator(".vote-box")).to_contain_text("Released — voting is closed.")
    expect(ann.get_by_role("button", name="Sign out")).to_have_count(0)
    assert not portal.server_errors()


def test_without_javascript_the_plain_forms_vote_and_come_back(portal: Portal, open_context: Any) -> None:
    from playwright.sync_api import expect

    product = portal.create_product("Scheduling")
    with portal.transaction() as session:
        item = make_item(session, product=product, title="Shift swaps between teams")
        public_id = item.public_id

    bob = _signed_in(open_context, portal, "bob@customer.example", java_script_enabled=False)
    bob.goto("/?sort=top")
    card = bob.locator(f"#vote-{public_id}")
    card.get_by_label(re.compile("How much")).select_option("critical")
    card.get_by_role("button", name=re.compile(r"^Vote")).click()
    expect(bob).to_have_url(re.compile(rf"/\?sort=top#vote-{public_id}$"))
    expect(bob.get_by_role("status")).to_have_text("Your vote is counted: Critical.")
    expect(card).to_contain_text("You voted: Critical")
    card.get_by_role("button", name=re.compile(r"^Withdraw")).click()
    expect(bob.get_by_role("status")).to_have_text("Your vote is withdrawn.")
    expect(card).not_to_contain_text("You voted")
    screenshot(bob, "vote-board-no-javascript")
    assert not portal.server_errors()


def test_voting_with_a_reason_keeps_the_confirmation_on_screen(portal: Portal, open_context: Any) -> None:
    """At 1280x800 the widget grows after a vote with a reason (the saved reason, its box): focus goes back to
    the button without scrolling the "✓ Your vote is counted" line above the window. The reason box counts
    characters instead of cutting a long paste, before and after the widget is swapped."""
    from playwright.sync_api import expect

    product = portal.create_product("Scheduling")
    with portal.transaction() as session:
        item = make_item(session, product=product, title="Shift swaps between teams",
                         summary="Let staff swap shifts across teams, with a manager's approval.",
                         description="\n\n".join(["A paragraph about shift swaps and who approves them."] * 6))
        path, public_id = item.path, item.public_id

    ann = _signed_in(open_context, portal, "ann@customer.example", viewport={"width": 1280, "height": 800})
    ann.goto(path)
    widget = ann.locator(f"#vote-{public_id}")
    box = widget.get_by_label("Tell us why (optional)")
    assert box.get_attribute("maxlength") is None
    box.fill("x" * 2001)
    expect(widget.locator(".char-count")).to_have_text("1 character too many")
    box.fill("Our night shift swaps by phone today.")
    expect(widget.locator(".char-count")).to_have_text("1,963 characters left")
    widget.get_by_role("button", name="Vote").click()

    done = widget.locator(".vote-done")
    expect(done).to_have_text(re.compile(r"Your vote is counted: Important\. Thank you for telling us why\.$"))
    top, bottom = ann.evaluate("() => { const r = document.querySelector('[data-vote-done]').getBoundingClientRect();"
                               " return [r.top, r.bottom]; }")
    assert top >= 0 and bottom <= 800, f"the confirmation is at {top}..{bottom}, outside the 800 px window"
    assert _focused(ann) == "vote:Update my vote"
    # The swapped-in widget's box counts too.
    expect(widget.locator(".char-count")).to_have_text("1,963 characters left")
    screenshot(ann, "vote-item-page-reason-confirmation-1280x800")
    assert not portal.server_errors()


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}])
def test_without_javascript_the_thanks_on_the_item_page_is_in_the_window(portal: Portal, open_context: Any,
                                                                          viewport: dict[str, int]) -> None:
    """The item page's vote and follow forms come back to the message ("Your vote is counted: …"), not to the
    widget, which left the message just above the window at 1280x800 (and far above it at 390 px)."""
    from playwright.sync_api import expect

    product = portal.create_product("Scheduling")
    with portal.transaction() as session:
        item = make_item(session, product=product, title="Shift swaps between teams",
                         summary="Let staff swap shifts across teams, with a manager's approval.",
                         description="\n\n".join(["A paragraph about shift swaps and who approves them."] * 6))
        path, public_id = item.path, item.public_id

    ann = _signed_in(open_context, portal, "ann@customer.example", viewport=viewport, java_script_enabled=False)

    def in_window(text: str) -> None:
        message = ann.locator("#flash")
        expect(message).to_have_text(text)
        box, height = message.bounding_box(), ann.evaluate("innerHeight")
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height, (text, box, height)

    for scheme in ("light", "dark"):
        ann.emulate_media(color_scheme=scheme)
        ann.goto(path)
        widget = ann.locator(f"#vote-{public_id}")
        widget.get_by_label("Critical").check()
        widget.get_by_role("button", name=re.compile(r"^(Vote|Update)")).click()
        expect(ann).to_have_url(re.compile(r"#flash$"))
        in_window("Your vote is counted: Critical." if scheme == "light" else "Your vote is now Critical.")
        screenshot(ann, f"vote-item-no-javascript-{viewport['width']}-{scheme}")
        ann.get_by_role("button", name="Unfollow").click()
        in_window("You no longer follow this item.")
        ann.get_by_role("button", name="Follow").click()
        in_window("You follow this item: you hear of its changes as your email choices say.")
    assert not portal.server_errors()  # (axe-core needs JavaScript: the item page's axe check is the first journey's)
