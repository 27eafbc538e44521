"""The staff area's navigation: a sidebar on a laptop; on a phone one disclosure button (a <details>,
so it opens without JavaScript) naming the section you are in and how many there are."""

from __future__ import annotations

import re

from tests.factories import make_admin, make_pm
from tests.helpers.http import sign_in


def _compact(html: str) -> str:
    found = re.search(r'<nav class="admin-nav-compact" aria-label="Admin">(.*?)</nav>', html, re.S)
    assert found, "no compact admin navigation"
    return found.group(1)


async def test_the_phone_menu_names_the_current_section_and_lists_every_one(client, session):
    sign_in(client, session, make_admin(session))
    compact = _compact((await client.get("/admin/feedback")).text)
    summary = " ".join(re.sub(r"<[^>]+>", " ", compact.split("</summary>")[0]).split())
    assert summary == "Admin Inbox · 21 sections"
    assert compact.count('<a href="/admin') == 21
    assert '<a href="/admin/feedback" aria-current="page">Inbox</a>' in compact
    assert '<a href="/admin" aria-current' not in compact  # the overview is current only on /admin itself


async def test_a_product_manager_sees_only_their_sections(client, session):
    sign_in(client, session, make_pm(session))
    page = (await client.get("/admin")).text
    compact = _compact(page)
    assert compact.count('<a href="/admin') == 15 and "15 sections" in compact
    assert '<a href="/admin" aria-current="page">Overview</a>' in compact
    assert "/admin/audit" not in page and "/admin/staff" not in page
