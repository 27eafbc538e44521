"""Browser journey: a PM opens the prioritisation desk from the staff menu, filters it by segment, opens an
item's demand, enters a RICE estimate, exports the desk as CSV, and records a decision with a stage move: the
why and the desk's numbers of that moment are in the item's history and the decisions list. axe-core on the
desk, the demand page, the item editor with its decision and the decisions list, light and dark."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update

from app.accounts.models import Role
from app.db import utcnow
from app.organisations.models import Organisation, Segment
from app.voting import service as voting
from app.voting.models import Importance, Vote
from tests.factories import make_item, make_user
from tests.helpers.browser import STAFF_PASSWORD, Portal, axe_check, screenshot

pytestmark = pytest.mark.browser

WANTED = "Bulk shift import"
OTHER = "Dark mode"
WHY = "Enterprise customers need it before renewals."


def _world(portal: Portal) -> None:
    portal.create_staff("pm@example.com", role=Role.pm, display_name="Pat Manager")
    product = portal.create_product("Rota")
    with portal.transaction() as session:
        enterprise = Segment(slug="enterprise", name="Enterprise", weight=Decimal(3))
        session.add(enterprise)
        session.flush()
        big = Organisation(name="Harbour Health", segment_id=enterprise.id, revenue=Decimal(240_000))
        small = Organisation(name="Corner Cafe", revenue=Decimal(12_000))
        session.add_all([big, small])
        session.flush()
        wanted = make_item(session, product=product, title=WANTED)
        other = make_item(session, product=product, title=OTHER)
        people = [make_user(session, email=f"nurse{n}@example.com", organisation_id=big.id, password=None)
                  for n in range(3)]
        people += [make_user(session, email=f"barista{n}@example.com", organisation_id=small.id, password=None)
                   for n in range(4)]
        for n, person in enumerate(people[:3]):
            voting.cast_vote(session, item=wanted, user=person, importance=Importance.critical)
            session.execute(update(Vote).where(Vote.user_id == person.id)
                            .values(created_at=utcnow() - timedelta(days=3 + 9 * n)))
        for person in people[3:]:
            voting.cast_vote(session, item=other, user=person, importance=Importance.nice_to_have)


def test_pm_filters_the_desk_by_segment_opens_the_demand_and_exports(portal: Portal, open_context: Any) -> None:
    from playwright.sync_api import expect

    _world(portal)
    for scheme in ("light", "dark"):
        pm = open_context(color_scheme=scheme, accept_downloads=True).new_page()
        pm.goto("/login")
        pm.get_by_label(re.compile(r"^Email(\s*\*)?$")).last.fill("pm@example.com")
        pm.get_by_label(re.compile(r"^Password(\s*\*)?$")).fill(STAFF_PASSWORD)
        pm.get_by_role("button", name="Sign in", exact=True).click()
        expect(pm.get_by_role("button", name="Sign out")).to_be_visible()

        pm.goto("/admin")
        pm.get_by_role("navigation", name="Admin").get_by_role("link", name="Desk").first.click()
        expect(pm.get_by_role("heading", level=1)).to_have_text("Prioritisation desk")
        table = pm.get_by_role("table")
        expect(table.get_by_role("rowheader")).to_have_count(2)
        axe_check(pm, f"the desk ({scheme})")

        pm.get_by_label("Segment").select_option(label="Enterprise")  # the filters submit themselves on change
        pm.wait_for_url(re.compile(r"segment=enterprise"))
        expect(pm.get_by_role("table").get_by_role("rowheader")).to_have_count(1)
        expect(pm.get_by_role("table").get_by_role("rowheader")).to_contain_text(WANTED)
        trend = pm.get_by_role("img", name=re.compile(r"^Votes per week, oldest first: "))
        expect(trend).to_have_count(1)
        screenshot(pm, f"desk-by-segment-{scheme}")

        with pm.expect_download() as download:
            pm.get_by_role("link", name="Export CSV").click()
        content = download.value.path().read_bytes()
        assert content.startswith(b"\xef\xbb\xbf")
        rows = list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline="")))
        assert [r["Title"] for r in rows] == [WANTED]
        assert rows[0]["Voters"] == "3" and rows[0]["Weighted demand"] == "27.00"  # 3 × critical 3 × segment 3, 2 decimals as the page

        pm.get_by_role("link", name=WANTED).click()
        expect(pm.get_by_role("heading", level=1)).to_have_text(f"Demand: {WANTED}")
        expect(pm.get_by_label("Segment")).to_have_value("enterprise")  # the desk's filters came along
        expect(pm.get_by_role("table").nth(1).get_by_role("rowheader")).to_have_count(3)
        expect(pm.get_by_role("link", name="Harbour Health")).to_be_visible()
        axe_check(pm, f"the demand page ({scheme})")
        if scheme == "light":
            pm.get_by_label("Confidence (%)").fill("80")
            pm.get_by_label("Effort (person-months)").fill("2")
            pm.get_by_role("button", name="Save estimate").click()
            expect(pm.get_by_text(f"RICE estimate of “{WANTED}” saved.")).to_be_visible()
            # reach 1 organisation × impact 3 × 80 % ÷ 2 person-months
            expect(pm.locator('[data-col="rice"]')).to_contain_text("1.2")
        screenshot(pm, f"desk-demand-{scheme}")

        # The decision: from the demand to the item's editor, a stage move with why.
        pm.get_by_role("link", name="Edit the item").click()
        expect(pm.get_by_role("heading", level=1)).to_have_text(WANTED)
        if scheme == "light":
            pm.get_by_label("Move to stage").select_option(label="In progress")
            pm.get_by_label("Why (recorded with the desk’s numbers)").first.fill(WHY)
            pm.get_by_role("button", name="Move", exact=True).click()
            expect(pm.get_by_text("Moved from Planned to In progress.")).to_be_visible()
        decisions = pm.get_by_role("region", name="Decisions")
        expect(decisions).to_contain_text("Planned → In progress")
        expect(decisions).to_contain_text("Enterprise customers need it before renewals")
        decisions.get_by_text("Desk numbers then, per window, and the weights in force").click()
        expect(decisions).to_contain_text("Weighted demand")
        expect(decisions.get_by_role("row", name=re.compile("Last 90 days"))).to_be_visible()  # the desk's opening view
        expect(decisions).to_contain_text("27.00")  # 3 × critical 3 × segment 3, as the CSV said
        axe_check(pm, f"the item editor with a decision ({scheme})")
        pm.get_by_role("navigation", name="Admin").get_by_role("link", name="Decisions").first.click()
        expect(pm.get_by_role("heading", level=1)).to_have_text("Decisions")
        expect(pm.get_by_role("heading", level=2, name=re.compile(WANTED))).to_be_visible()
        axe_check(pm, f"the decisions list ({scheme})")
        screenshot(pm, f"decisions-{scheme}")
    assert not portal.server_errors()
