"""Browser check: on a 390 × 844 phone the roadmap's first card is well above the fold and nothing scrolls
sideways; the header folds into one Menu button and the filters behind one Filters button, both
<details> that work without JavaScript; on a laptop both stay spelled out. axe-core checks both sizes.

Before this layout the header (two rows of links and the search), the view switch and four filters
pushed the first card to about 525-566 px of 844.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.accounts.models import Role
from app.feedback import service as feedback
from tests.factories import make_item, make_tag
from tests.feedback.helpers import make_customer, make_idea, make_organisation
from tests.helpers.browser import STAFF_PASSWORD, Portal, axe_check, screenshot

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}
FOLD_LIMIT = 300  # px from the top of the page at 390 × 844


def _top(page: Any, selector: str) -> float:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not displayed"
    return box["y"]


# Whether a select's chosen option fits its box: a select's scrollWidth never exceeds its clientWidth, so
# the text is measured in the select's own font against the box less its padding (and arrow).
_SELECT_CUT = """el => {
  const style = getComputedStyle(el);
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const room = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const text = el.options[el.selectedIndex].text;
  return ctx.measureText(text).width > room ? `${el.name}: "${text}" needs more than ${room} px` : "";
}"""


def _cut_selects(page: Any) -> list[str]:
    return [cut for cut in page.locator("select:visible").evaluate_all(f"els => els.map({_SELECT_CUT})") if cut]


def _no_sideways_scroll(page: Any, where: str) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{where} is {width} px wide on a {PHONE['width']} px phone"


def test_phone_header_and_filters_fold_and_the_first_card_is_above_the_fold(portal: Portal, open_context: Any) -> None:
    from playwright.sync_api import expect

    product = portal.create_product("Rotawise Web")
    with portal.transaction() as session:
        tag = make_tag(session, "Integrations")
        item = make_item(session, product=product, title="Payroll export to Gusto and ADP", tags=[tag],
                         summary="Send approved hours straight to Gusto or ADP.")
        for n in range(3):
            make_item(session, product=product, title=f"Planned thing {n}", stage_slug="in-progress")
        path = item.path

    phone = open_context(viewport=PHONE).new_page()
    for address in ("/", "/?view=horizon", path, "/changelog", "/search?q=payroll"):
        phone.goto(address)
        _no_sideways_scroll(phone, address)
    for address in ("/", "/?view=horizon"):
        phone.goto(address)
        top = _top(phone, ".card")
        assert top < FOLD_LIMIT, f"the first card of {address} starts at {top:.0f} px"
    brand = phone.locator(".brand > span")
    assert brand.evaluate("el => el.scrollWidth <= el.clientWidth"), "the portal name is cut off"
    screenshot(phone, "phone-01-board")
    axe_check(phone, "the board at 390 px")

    # The Menu button opens the links, the search and the account corner.
    expect(phone.get_by_role("link", name="Changelog", exact=True)).to_be_hidden()
    phone.locator(".site-menu > summary").click()
    menu = phone.locator(".site-menu-panel")
    expect(menu.get_by_role("link", name="Changelog", exact=True)).to_be_visible()
    expect(menu.get_by_role("searchbox", name="Search the roadmap")).to_be_visible()
    expect(menu.get_by_role("link", name="Sign in")).to_be_visible()
    screenshot(phone, "phone-02-menu-open")
    axe_check(phone, "the board at 390 px with the menu open")
    phone.keyboard.press("Escape")  # with JavaScript, Escape (or a click elsewhere) closes it
    expect(menu).to_be_hidden()
    expect(phone.locator(".site-menu > summary")).to_be_focused()
    phone.locator(".site-menu > summary").click()
    menu.get_by_role("link", name="Changelog", exact=True).click()
    expect(phone).to_have_url(re.compile(r"/changelog$"))

    # One Filters button; with JavaScript a choice applies at once and the button counts it.
    phone.goto("/")
    expect(phone.get_by_label("Product")).to_be_hidden()
    phone.get_by_text("Filters", exact=True).click()
    stage = phone.get_by_label("Stage")
    expect(stage).to_be_visible()
    assert stage.evaluate(_SELECT_CUT) == "", "the stage filter's text is cut"
    screenshot(phone, "phone-03-filters-open")
    axe_check(phone, "the board at 390 px with the filters open")
    phone.get_by_label("Tag", exact=True).select_option(label="Integrations")
    expect(phone).to_have_url(re.compile(r"\?tag=[a-z0-9-]+"))
    expect(phone.locator(".filters-box > summary")).to_have_text(re.compile(r"Filters\s*1\s*chosen"))
    phone.emulate_media(color_scheme="dark")
    screenshot(phone, "phone-04-filtered-dark")
    axe_check(phone, "the filtered board at 390 px, dark")

    # Without JavaScript both buttons still open, and Apply applies.
    plain = open_context(viewport=PHONE, java_script_enabled=False).new_page()
    plain.goto("/")
    assert _top(plain, ".card") < FOLD_LIMIT
    plain.locator(".site-menu > summary").click()
    expect(plain.locator(".site-menu-panel").get_by_role("link", name="Suggest an idea")).to_be_visible()
    plain.locator(".site-menu > summary").click()  # the same button closes it
    expect(plain.locator(".site-menu-panel")).to_be_hidden()
    plain.locator(".filters-box > summary").click()
    plain.get_by_label("Product").select_option("rotawise-web")
    plain.get_by_role("button", name="Apply").click()
    expect(plain).to_have_url(re.compile(r"product=rotawise-web"))
    expect(plain.get_by_role("heading", name=re.compile("Payroll export"))).to_be_visible()

    # On a laptop the links, the search and the filter form are shown as they were: no buttons to press.
    laptop = open_context(viewport=LAPTOP).new_page()
    laptop.goto("/")
    expect(laptop.locator(".site-menu")).to_be_hidden()
    expect(laptop.locator(".header-full").get_by_role("link", name="Changelog", exact=True)).to_be_visible()
    expect(laptop.get_by_label("Product")).to_be_visible()
    expect(laptop.locator(".filters-box > summary")).to_be_hidden()
    screenshot(laptop, "phone-05-laptop-board")
    axe_check(laptop, "the board at 1280 px")

    assert not portal.server_errors(), f"the server logged errors:\n{portal.server_errors()}"
    assert open_context.page_errors == [], f"JavaScript errors in the pages: {open_context.page_errors}"


_DOTS = """() => Array.from(document.querySelectorAll('.column')).map(column => {
  const rgb = c => c.match(/[0-9.]+/g).slice(0, 3).map(Number);
  const lum = c => { const [r, g, b] = rgb(c).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                     return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const dot = getComputedStyle(column.querySelector('.column-title'), '::before').backgroundColor;
  const back = getComputedStyle(column).backgroundColor;
  const [hi, lo] = [lum(dot), lum(back)].sort((a, b) => b - a);
  return [column.getAttribute('aria-labelledby'), dot, (hi + 0.05) / (lo + 0.05)];
})"""


def test_now_next_later_have_colours_of_their_own(portal: Portal, open_context: Any) -> None:
    with portal.transaction() as session:
        make_item(session, title="Something planned")
    for scheme in ("light", "dark"):
        page = open_context(viewport=LAPTOP, color_scheme=scheme).new_page()
        page.goto("/")
        stage_dots = {dot for _, dot, _ in page.evaluate(_DOTS)}
        page.goto("/?view=horizon")
        horizons = page.evaluate(_DOTS)
        assert [key for key, _, _ in horizons] == ["col-now", "col-next", "col-later"]
        dots = [dot for _, dot, _ in horizons]
        assert len(set(dots)) == 3 and not set(dots) & stage_dots, f"{scheme}: horizon dots {dots}, stages {stage_dots}"
        for key, dot, ratio in horizons:
            assert ratio >= 4.5, f"{scheme}: {key}'s colour {dot} is {ratio:.2f}:1 against its column"
        screenshot(page, f"horizons-{scheme}")
        axe_check(page, f"Now · Next · Later, {scheme}")


# An element holding an email address: its text, and on how many lines the characters of its "local@" part and
# of its domain sit ([1, 1]: each part on one line, the address broken after its "@" at most).
_ADDRESS_LINES = """el => {
  const lines = [];
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const range = document.createRange();
    for (let i = 0; i < node.length; i++) {
      range.setStart(node, i); range.setEnd(node, i + 1);
      lines.push(Math.round(range.getBoundingClientRect().top));
    }
  }
  const at = el.textContent.indexOf("@") + 1;
  return [el.textContent, [new Set(lines.slice(0, at)).size, new Set(lines.slice(at)).size]];
}"""


def test_admin_filters_fit_and_the_inbox_stacks_on_a_phone(portal: Portal, open_context: Any) -> None:
    """'All organisations' was cut to 'All organisati' on the inbox, people and desk pages; the inbox table
    scrolled sideways inside its own box with no sign that it did."""
    from playwright.sync_api import expect

    portal.create_staff("pm@example.com", role=Role.pm, display_name="Pat Manager")
    with portal.transaction() as session:
        dana = make_customer(session, make_organisation(session, "Harbour Health Clinics"), display_name="Dana Scully",
                             email="dana.scully@harbourhealthclinics.example")
        make_idea(session, dana, title="Export approved hours to Sage Payroll", body="Every Friday by hand.")
        # At 1280 px the inbox cut "sunil.rao@meadowpharmacy.exam / ple" and broke a domain at its hyphen.
        for email, name in (("sunil.rao@meadowpharmacy.example", "Sunil Rao"),
                            ("ade.okoro@brightside-stores.example", "Ade Okoro")):
            make_idea(session, make_customer(session, make_organisation(session, f"{name}'s shop"), email=email,
                                             display_name=name), title=f"Rota printouts for {name}")
        wanted = make_item(session, title="Shift swaps")
        feedback.add_reason(session, item=wanted, author=dana, body="Nurses swap shifts daily")
        wanted_id = wanted.public_id
    for scheme in ("light", "dark"):
        for viewport in (PHONE, LAPTOP):
            pm = open_context(viewport=viewport, color_scheme=scheme).new_page()
            pm.goto("/login")
            pm.get_by_label(re.compile(r"^Email(\s*\*)?$")).last.fill("pm@example.com")
            pm.get_by_label(re.compile(r"^Password(\s*\*)?$")).fill(STAFF_PASSWORD)
            pm.get_by_role("button", name="Sign in", exact=True).click()
            pm.wait_for_url(re.compile(r"/admin"))
            for path in ("/admin/feedback", "/admin/people", "/admin/desk"):
                pm.goto(path)
                where = f"{path} at {viewport['width']} px ({scheme})"
                assert _cut_selects(pm) == [], where
                if viewport is PHONE:
                    _no_sideways_scroll(pm, where)
            pm.goto("/admin/feedback")
            addresses = pm.locator(".inbox-table .address")
            assert addresses.count() >= 3
            for n in range(addresses.count()):
                text, parts = addresses.nth(n).evaluate(_ADDRESS_LINES)
                assert parts == [1, 1], f"{text} breaks mid-word at {viewport['width']} px: {parts} lines for its parts"
            box = pm.locator(".table-scroll")
            assert box.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), "the inbox scrolls inside its box"
            cells = pm.locator(".inbox-table tbody tr").first.locator("td")
            first, source = cells.nth(0).bounding_box(), cells.nth(2).bounding_box()
            assert first is not None and source is not None
            stacked = source["y"] >= first["y"] + first["height"] - 1
            assert stacked == (viewport is PHONE), f"inbox cells stacked: {stacked} at {viewport['width']} px"
            if viewport is PHONE:
                expect(cells.nth(2)).to_contain_text("Portal")
                assert cells.nth(2).evaluate("el => getComputedStyle(el, '::before').content") == '"Source: "'
                screenshot(pm, f"inbox-phone-{scheme}")
            axe_check(pm, f"the inbox at {viewport['width']} px ({scheme})")

            # Record a vote: an address breaks only after its "@", and the notes heading keeps its distance.
            pm.goto(f"/admin/items/{wanted_id}/capture?customer_q=dana")
            email = pm.locator(".person-choice-email").first
            expect(email).to_have_text("dana.scully@harbourhealthclinics.example")
            _, parts = email.evaluate(_ADDRESS_LINES)
            assert parts == [1, 1], f"the address breaks mid-word: {parts} lines for its two parts"
            button = pm.get_by_role("button", name="Record the vote").bounding_box()
            heading = pm.get_by_role("heading", name="Private feedback on this item").bounding_box()
            assert button is not None and heading is not None
            gap = heading["y"] - (button["y"] + button["height"])
            assert gap >= 16, f"the notes heading is {gap:.0f} px below the button"


def test_wide_admin_tables_say_they_scroll_sideways_and_scroll_from_the_keyboard(portal: Portal,
                                                                                 open_context: Any) -> None:
    """The items list and the desk scrolled sideways inside their box on a phone with no sign that they did.
    Over each, "Scroll sideways for more columns" shows while the box scrolls sideways (and only then); the box
    is a named region that takes focus and scrolls with the arrow keys. Without JavaScript the line shows on a
    phone, where the tables always scroll."""
    from playwright.sync_api import expect

    portal.create_staff("pm@example.com", role=Role.pm, display_name="Pat Manager")
    with portal.transaction() as session:
        for n in range(3):
            make_item(session, title=f"Shift swaps between teams, part {n}")

    def signed_in(**options: Any) -> Any:
        pm = open_context(**options).new_page()
        pm.goto("/login")
        pm.get_by_label(re.compile(r"^Email(\s*\*)?$")).last.fill("pm@example.com")
        pm.get_by_label(re.compile(r"^Password(\s*\*)?$")).fill(STAFF_PASSWORD)
        pm.get_by_role("button", name="Sign in", exact=True).click()
        pm.wait_for_url(re.compile(r"/admin"))
        return pm

    for scheme in ("light", "dark"):
        for viewport in (PHONE, LAPTOP):
            pm = signed_in(viewport=viewport, color_scheme=scheme)
            for path, name in (("/admin/items", "Items table"), ("/admin/desk", "Desk table")):
                pm.goto(path)
                where = f"{path} at {viewport['width']} px ({scheme})"
                region = pm.get_by_role("region", name=name)
                overflows = region.evaluate("el => el.scrollWidth > el.clientWidth + 1")
                hint = pm.get_by_text("Scroll sideways for more columns")
                if overflows:
                    expect(hint).to_be_visible()
                    hint_box, region_box = hint.bounding_box(), region.bounding_box()
                    assert hint_box and region_box and hint_box["y"] + hint_box["height"] <= region_box["y"], where
                else:
                    expect(hint).to_be_hidden()
                assert overflows or viewport is LAPTOP, f"{where}: expected the table to be wider than a phone"
                if overflows:
                    region.focus()
                    expect(region).to_be_focused()
                    pm.keyboard.press("ArrowRight")
                    pm.wait_for_function("el => el.scrollLeft > 0", arg=region.element_handle())
                if viewport is PHONE:
                    _no_sideways_scroll(pm, where)
                    screenshot(pm, f"scroll-hint-{path.rsplit('/', 1)[-1]}-{scheme}")
                axe_check(pm, where)
            pm.context.close()

    plain = signed_in(viewport=PHONE, java_script_enabled=False)
    for path in ("/admin/items", "/admin/desk"):
        plain.goto(path)
        expect(plain.get_by_text("Scroll sideways for more columns")).to_be_visible()
