"""Browser check: the item page reads well on a laptop and on a phone with a customer's tall vote box.

On a laptop the vote box and the follow button sit in a column beside the title and the description, so
the description starts right under the title instead of below the vote form; on a phone they come after
the item's facts and before the description, and nothing is wider than the screen. axe-core checks both.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.accounts import service as accounts
from app.accounts.models import Role
from tests.factories import make_item
from tests.helpers.browser import Portal, axe_check, screenshot

pytestmark = pytest.mark.browser

DESCRIPTION = "Staff get a push notification for everything today.\n\n* One setting per type\n* Quiet hours\n"


def _box(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not displayed"
    return box


def test_the_vote_box_sits_beside_the_description_on_a_laptop_and_before_it_on_a_phone(
        portal: Portal, open_context: Any) -> None:
    from playwright.sync_api import expect

    product = portal.create_product("Scheduling")
    with portal.transaction() as session:
        item = make_item(session, product=product, title="Choose which notifications you get",
                         summary="Pick which push notifications you get.", description=DESCRIPTION)
        user = accounts.create_user(session, email="ann@customer.example", role=Role.customer,
                                    display_name="Ann")
        token = accounts.start_session(session, user=user)
        path = item.path

    for name, viewport in (("laptop", {"width": 1280, "height": 800}), ("phone", {"width": 390, "height": 844})):
        context = open_context(viewport=viewport)
        context.add_cookies([{"name": "ahead_session", "value": token, "url": portal.url}])
        page = context.new_page()
        page.goto(path)
        expect(page.get_by_role("button", name="Vote", exact=True)).to_be_visible()
        title, facts = _box(page, "h1"), _box(page, ".facts")
        head, vote, follow = _box(page, ".item-head"), _box(page, ".vote-box"), _box(page, "#follow")
        description = _box(page, "[aria-label=Description]")
        screenshot(page, f"item-layout-{name}")

        if name == "laptop":
            assert vote["height"] > facts["y"] + facts["height"] - title["y"], "the check needs a tall vote box"
            assert vote["x"] >= description["x"] + description["width"], "the vote box is not beside the text"
            assert description["y"] - (facts["y"] + facts["height"]) < 120, "a blank band above the description"
            assert description["y"] < vote["y"] + vote["height"], "the description starts below the vote box"
            assert abs(follow["x"] - vote["x"]) < 40 and follow["y"] > vote["y"], "follow is not under the vote box"
        else:
            assert head["y"] + head["height"] <= vote["y"] < follow["y"] < description["y"]
            assert page.evaluate("() => document.documentElement.scrollWidth") <= viewport["width"]
        axe_check(page, f"item page for a customer ({name})")
    assert not portal.server_errors()


def test_the_timeline_follows_a_short_vote_box_and_the_profile_reads_as_one_card(
        portal: Portal, open_context: Any) -> None:
    """A visitor's vote box is short: the timeline used to start below the (taller) head, ~140-180 px
    under it. And /me's profile tiles, each as wide as its text, wrapped raggedly at 1280 px."""
    from playwright.sync_api import expect

    product = portal.create_product("Scheduling")
    with portal.transaction() as session:
        item = make_item(session, product=product, title="Choose which notifications you get, per type and "
                         "per channel, with quiet hours", summary="Pick which push notifications you get.",
                         description=DESCRIPTION * 4)
        user = accounts.create_user(session, email="maya.chen@harbourhealth.example", role=Role.customer,
                                    display_name="Maya Chen")
        token = accounts.start_session(session, user=user)
        path = item.path

    for scheme in ("light", "dark"):
        page = open_context(viewport={"width": 1280, "height": 800}, color_scheme=scheme).new_page()
        page.goto(path)
        side, head = _box(page, ".item-side .vote-box"), _box(page, ".item-head")
        timeline = _box(page, ".item-side .timeline")
        assert side["y"] + side["height"] < head["y"] + head["height"], "the check needs a vote box shorter than the head"
        above = _box(page, ".item-side > .timeline-side ~ *, .item-side > :has(+ .timeline-side)")
        gap = timeline["y"] - (above["y"] + above["height"])
        assert 0 <= gap < 40, f"{gap:.0f} px between the vote box and the timeline"
        expect(page.get_by_role("heading", name="Timeline")).to_have_count(1)  # one rendering shown
        screenshot(page, f"item-layout-visitor-{scheme}")
        axe_check(page, f"item page for a visitor at 1280 px ({scheme})")

    phone = open_context(viewport={"width": 390, "height": 844}).new_page()
    phone.goto(path)
    expect(phone.get_by_role("heading", name="Timeline")).to_have_count(1)
    assert _box(phone, ".item-page > .timeline")["y"] > _box(phone, ".discussion")["y"], "the timeline ends the page"

    for viewport in ({"width": 1280, "height": 800}, {"width": 390, "height": 844}):
        context = open_context(viewport=viewport)
        context.add_cookies([{"name": "ahead_session", "value": token, "url": portal.url}])
        me = context.new_page()
        me.goto("/me")
        rows = [me.locator(".facts > div").nth(n).bounding_box() for n in range(me.locator(".facts > div").count())]
        assert len(rows) >= 3 and len({(round(r["x"]), round(r["width"])) for r in rows if r}) == 1, \
            f"the profile rows are not one aligned column: {rows}"
        values = [me.locator(".facts dd").nth(n).bounding_box() for n in range(len(rows))]
        assert len({round(v["x"]) for v in values if v}) == 1, "the values do not line up"
        assert me.evaluate("() => document.documentElement.scrollWidth") <= viewport["width"]
        screenshot(me, f"me-profile-{viewport['width']}")
        axe_check(me, f"/me at {viewport['width']} px")
    assert not portal.server_errors()
