"""The prioritisation desk: every figure reproduced from known votes, through the page and the CSV.

The votes are made the way the product makes them (cast, captured for a customer, merged in, withdrawn), then
backdated; the expected desk is computed here from the same facts with the rules the page states, without the
desk's code, and compared column by column.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from app.accounts.models import User
from app.admin import desk as admin_desk
from app.audit.models import AuditEvent
from app.db import utcnow
from app.feedback.models import Feedback
from app.roadmap.models import Item
from app.voting.models import Vote
from tests.desk.helpers import (
    CRIT,
    MID,
    NICE,
    ORGS,
    PEOPLE,
    RICE,
    SEGMENTS,
    TITLES,
    WEIGHTS,
    WINDOWS,
    assert_matches,
    build,
    csv_rows,
    expected_desk,
    final_votes,
    page_rows,
    revenue_factor,
    set_up,
)
from tests.factories import make_admin, make_item, make_pm, make_product, make_user, stage
from tests.helpers.http import post_form, sign_in


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


class TestEveryFigure:
    @pytest.mark.parametrize("window", list(WINDOWS))
    async def test_the_page_and_the_csv_show_the_figures_the_votes_give(self, client, session, admin, window):
        world = await set_up(client, session)
        expected = expected_desk(window, rice=RICE)

        page = await client.get(f"/admin/desk?window={window}")
        assert page.status_code == 200
        shown = dict(page_rows(page.text))
        assert_matches(shown, expected)
        assert TITLES["Z"] not in shown  # merged: its votes are on X
        assert shown[TITLES["X"]]["stage"] == "Planned" and shown[TITLES["X"]]["age"] == "10 d"
        assert shown[TITLES["W"]]["rice"] is None  # no estimate: "—", not zero

        export = await client.get(f"/admin/desk/export.csv?window={window}")
        assert export.status_code == 200
        assert export.headers["content-type"].startswith("text/csv")
        assert "attachment" in export.headers["content-disposition"]
        rows = csv_rows(export.content)
        by_title = {}
        for row in rows:
            by_title[row["Title"]] = {
                "voters": int(row["Voters"]), "organisations": int(row["Organisations"]),
                "mix": (int(row["Nice to have"]), int(row["Important"]), int(row["Critical"])),
                "demand": float(row["Weighted demand"]), "revenue": int(Decimal(row["Revenue represented"])),
                "rice": float(row["RICE"]) if row["RICE"] else None, "feedback": int(row["Private feedback"]),
                "trend": [int(n) for n in row["Votes per week (12 weeks, oldest first)"].split()],
            }
            want = expected[next(k for k, t in TITLES.items() if t == row["Title"])]
            assert int(row["Reach"]) == want["reach"]
            if want["impact"] is None:
                assert row["Impact"] == ""
            else:
                assert float(row["Impact"]) == pytest.approx(want["impact"], abs=0.006)
        assert_matches(by_title, expected)
        # Same order as the page: heaviest demand first.
        assert [r["Title"] for r in rows] == [t for t, _ in page_rows(page.text)]
        x = next(r for r in rows if r["Title"] == TITLES["X"])
        assert (x["Confidence (%)"], x["Effort (person-months)"], x["Item id"]) == (
            "80", "2.00", world.items["X"].public_id)

    @pytest.mark.parametrize("mode", ["off", "logarithmic", "capped"])
    async def test_each_revenue_mode_weighs_demand_as_the_page_says(self, client, session, admin, mode):
        await set_up(client, session)
        response = await post_form(client, "/admin/desk/weights", {**WEIGHTS, "revenue_mode": mode},
                                   page="/admin/desk/weights")
        assert response.status_code == 303
        page = await client.get("/admin/desk?window=all")
        assert_matches(dict(page_rows(page.text)), expected_desk("all", mode=mode, rice=RICE))
        assert {"off": "Off: revenue does not weigh votes", "logarithmic": "1 + ln(1 + r / U)",
                "capped": "min(1 + r / U, C)"}[mode] in page.text

    async def test_segment_and_organisation_filters_count_only_their_people(self, client, session, admin):
        world = await set_up(client, session)
        for params, expected in [
            ("window=all&segment=enterprise", expected_desk("all", segment="enterprise", rice=RICE)),
            ("window=all&segment=smb", expected_desk("all", segment="smb", rice=RICE)),
            (f"window=90&organisation={world.orgs['beta'].id}", expected_desk("90", org="beta", rice=RICE)),
            (f"window=all&organisation={world.orgs['acme'].id}", expected_desk("all", org="acme", rice=RICE)),
        ]:
            page = await client.get(f"/admin/desk?{params}")
            assert_matches(dict(page_rows(page.text)), expected)
            export = await client.get(f"/admin/desk/export.csv?{params}")
            assert {r["Title"] for r in csv_rows(export.content)} == {TITLES[k] for k in expected}

    async def test_product_stage_and_tag_filters_and_sorting_live_in_the_url(self, client, session, admin):
        world = await set_up(client, session)
        titles = lambda html: [t for t, _ in page_rows(html)]  # noqa: E731
        assert titles((await client.get(f"/admin/desk?product={world.product_slugs['two']}")).text) == [TITLES["Y"]]
        assert titles((await client.get(f"/admin/desk?tag={world.tag_slug}")).text) == [TITLES["X"]]
        assert set(titles((await client.get("/admin/desk?stage=planned")).text)) == {TITLES["X"], TITLES["W"]}

        page = await client.get("/admin/desk?window=all&sort=voters&dir=asc")
        assert titles(page.text) == [TITLES["W"], TITLES["Y"], TITLES["X"]]
        assert re.search(r'<th scope="col" aria-sort="ascending"[^>]*>\s*<a href="[^"]*sort=voters&amp;dir=desc"',
                         page.text)
        page = await client.get("/admin/desk?window=all&sort=title")
        assert titles(page.text) == sorted(titles(page.text))
        page = await client.get("/admin/desk?window=all&sort=rice")
        assert titles(page.text)[0] == TITLES["X"]  # the only item with an estimate; "—" sorts last
        page = await client.get("/admin/desk?window=all&sort=nonsense&dir=sideways&page=zero")
        assert page.status_code == 200 and titles(page.text)[0] == TITLES["X"]  # back to weighted demand

    async def test_changing_a_weight_re_ranks_at_once_and_is_audited(self, client, session, admin):
        await set_up(client, session)
        # Y's only 30-day voter said "nice to have": with critical weighing 0, X (all critical or important
        # in 30 days) still leads; with important at 0 too and nice at 100, Y leads.
        page = await client.get("/admin/desk?window=30")
        assert next(t for t, _ in page_rows(page.text)) == TITLES["X"]
        await post_form(client, "/admin/desk/weights", {**WEIGHTS, "nice_to_have": "100", "important": "0",
                                                         "critical": "0"}, page="/admin/desk/weights")
        page = await client.get("/admin/desk?window=30")
        assert next(t for t, _ in page_rows(page.text)) == TITLES["Y"]
        assert "Nice to have <strong>100</strong>" in page.text
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "settings.desk")
                                .order_by(AuditEvent.id.desc())).first()
        assert event is not None and event.changes["nice_to_have"] == ["1", "100"]

    async def test_bad_weights_are_refused_and_keep_what_was_typed(self, client, session, admin):
        response = await post_form(client, "/admin/desk/weights", {**WEIGHTS, "critical": "lots"},
                                   page="/admin/desk/weights")
        assert response.status_code == 422
        assert 'value="lots"' in response.text and "A number from 0 to 1000" in response.text

    async def test_desk_pages_hold_fifty_items(self, client, session, admin):
        product = make_product(session)
        for n in range(51):
            make_item(session, product=product, title=f"Item {n:02d}")
        first = await client.get("/admin/desk?sort=title&dir=asc")
        assert len(page_rows(first.text)) == 50 and "Page 1 of 2" in first.text
        second = await client.get("/admin/desk?sort=title&dir=asc&page=2")
        assert [t for t, _ in page_rows(second.text)] == ["Item 50"]
        # Past the last page: nothing on it (not page 1 or the last page passed off as page 99), and a way back.
        beyond = await client.get("/admin/desk?sort=title&dir=asc&page=99")
        assert beyond.status_code == 200 and "<tbody>" not in beyond.text
        assert "Nothing on page 99" in beyond.text and "51 items on 2 pages" in beyond.text
        assert ('href="/admin/desk?window=90&amp;sort=title&amp;dir=asc&amp;page=2">Go to the last page (page 2)</a>'
                in beyond.text)
        # The page links carry what the desk understood, not a value it refused (its notice would follow every page)
        refused = await client.get("/admin/desk?window=90d&sort=bogus&x=1")
        assert "window=90d is not one of 30, 90, 365, all" in refused.text
        assert re.findall(r'href="([^"]*)" rel="next"', refused.text) == ["/admin/desk?window=90&amp;sort=demand&amp;"
                                                                           "dir=desc&amp;page=2"]

    async def test_sorting_by_age_ascending_lists_the_youngest_first_on_the_page_and_the_csv(
            self, client, session, admin):
        product = make_product(session)
        for title, days in (("Middle", 50), ("Young", 5), ("Old", 300)):
            make_item(session, product=product, title=title, created_at=utcnow() - timedelta(days=days))
        ascending = await client.get("/admin/desk?sort=age&dir=asc")
        assert "sorted by age, ascending" in ascending.text
        assert [(t, r["age"]) for t, r in page_rows(ascending.text)] == [
            ("Young", "5 d"), ("Middle", "50 d"), ("Old", "300 d")]
        descending = await client.get("/admin/desk?sort=age&dir=desc")
        assert [t for t, _ in page_rows(descending.text)] == ["Old", "Middle", "Young"]
        # The header's first click sorts the oldest first (descending), as the other columns start biggest first.
        assert 'sort=age&amp;dir=desc"' in (await client.get("/admin/desk")).text
        export = await client.get("/admin/desk/export.csv?sort=age&dir=asc")
        assert [(r["Title"], r["Age (days)"]) for r in csv_rows(export.content)] == [
            ("Young", "5"), ("Middle", "50"), ("Old", "300")]


class TestDemandOfOneItem:
    async def test_every_person_who_asked_with_how_their_vote_came(self, client, session, admin):
        world = await set_up(client, session)
        x = world.items["X"].public_id
        page = await client.get(f"/admin/desk/items/{x}?window=all")
        assert page.status_code == 200
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text))
        assert "Captured by Petra PM (call)" in text
        assert f"merged from {TITLES['Z']}" in text
        assert "Note from ann" in text
        for person in final_votes()["X"]:
            assert f"{person}@example.com" in page.text
        assert "wes@example.com" not in page.text  # withdrew (and on another item)

        export = await client.get(f"/admin/desk/items/{x}/export.csv?window=all")
        rows = {r["Email"]: r for r in csv_rows(export.content)}
        assert set(rows) == {f"{p}@example.com" for p in final_votes()["X"]}
        weight = {NICE: 1.0, MID: 2.0, CRIT: 4.0}
        for person, (importance, _days) in final_votes()["X"].items():
            row = rows[f"{person}@example.com"]
            org = PEOPLE[person][1]
            seg = ORGS[org][0] if org else None
            want = weight[importance] * float(SEGMENTS[seg] if seg else 1) * revenue_factor(
                "linear", ORGS[org][1] if org else 0)
            assert float(row["Weighted demand"]) == pytest.approx(want, abs=0.006), person
            assert row["Importance"] == importance.label
            assert row["Organisation"] == (org.capitalize() if org else "")
        assert rows["moe@example.com"]["Organisation"] == "Acme"  # moved: counts for where they are now
        assert rows["pat@example.com"]["Channel"] == "captured" and rows["pat@example.com"]["Captured by"] == "Petra PM"
        assert rows["gus@example.com"]["Merged from"] == TITLES["Z"]
        assert rows["ann@example.com"]["Importance"] == "Critical"  # the merge kept the higher importance
        assert rows["ann@example.com"]["Note"] == "Note from ann"

    async def test_rice_inputs_are_checked_audited_and_shown(self, client, session, admin):
        world = await set_up(client, session)
        x = world.items["X"]
        bad = await post_form(client, f"/admin/desk/items/{x.public_id}/rice",
                              {"rice_confidence": "180", "effort": "-1"}, page="/admin/desk")
        assert bad.status_code == 422
        assert 'value="180"' in bad.text and "from 1 to 100" in bad.text and "from 0.01 to 9999" in bad.text
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "item.estimated")).one()
        assert event.changes == {"rice_confidence": [None, 80], "effort": [None, "2"]}
        page = await client.get(f"/admin/desk/items/{x.public_id}?window=all")
        assert "4.80 " in re.sub(r"<[^>]+>", " ", page.text)  # 4 × 3.00 × 80% ÷ 2, to 2 decimals as everywhere
        cleared = await post_form(client, f"/admin/desk/items/{x.public_id}/rice",
                                  {"rice_confidence": "", "effort": ""}, page="/admin/desk")
        assert cleared.status_code == 303
        row = dict(page_rows((await client.get("/admin/desk?window=all")).text))[TITLES["X"]]
        assert row["rice"] is None

    async def test_the_desk_links_to_the_item_demand_and_the_editor_links_to_it(self, client, session, admin):
        world = await set_up(client, session)
        x = world.items["X"].public_id
        assert f'href="/admin/desk/items/{x}' in (await client.get("/admin/desk")).text
        assert f'href="/admin/desk/items/{x}"' in (await client.get(f"/admin/items/{x}")).text
        nav = (await client.get("/admin")).text
        assert nav.index('href="/admin/desk"') < nav.index('href="/admin/items"')


DESK_GETS = ["/admin/desk", "/admin/desk?window=all", "/admin/desk/export.csv", "/admin/desk/items/{x}",
             "/admin/desk/items/{x}/export.csv", "/admin/desk/weights"]
DESK_POSTS = ["/admin/desk/weights", "/admin/desk/items/{x}/rice"]


class TestOnlyStaff:
    async def test_customers_get_not_found_at_every_desk_address(self, client, session):
        world = build(session)
        customer = make_user(session, email="cus@example.com", organisation_id=world.orgs["acme"].id)
        sign_in(client, session, customer)
        x = world.items["X"].public_id
        for path in DESK_GETS:
            response = await client.get(path.format(x=x))
            assert response.status_code == 404, path
            assert "Weighted demand" not in response.text and "200,000" not in response.text
        for path in DESK_POSTS:
            response = await post_form(client, path.format(x=x), {**WEIGHTS, "rice_confidence": "1", "effort": "1"})
            assert response.status_code == 404, path
        assert session.scalar(select(Item.rice_confidence).where(Item.public_id == x)) is None

    async def test_visitors_are_sent_to_sign_in_and_see_nothing_of_the_desk(self, client, session):
        world = build(session)
        x = world.items["X"].public_id
        for path in DESK_GETS:
            response = await client.get(path.format(x=x))
            assert response.status_code in (303, 401), path
            assert "Weighted demand" not in response.text and TITLES["X"] not in response.text

    async def test_only_admins_change_the_weights(self, client, session):
        pm = make_pm(session)
        sign_in(client, session, pm)
        assert (await client.get("/admin/desk")).status_code == 200
        assert (await client.get("/admin/desk/weights")).status_code == 404
        response = await post_form(client, "/admin/desk/weights", WEIGHTS, page="/admin/desk")
        assert response.status_code == 404

    async def test_a_segments_weight_is_a_desk_weight_only_admins_change(self, client, session):
        world = build(session)
        smb = world.segments["smb"]
        pm = make_pm(session, email="pia@example.com")
        sign_in(client, session, pm)
        assert "Admins change the weights, segment weights included" in (await client.get("/admin/desk")).text
        page = await client.get(f"/admin/segments/{smb.id}")
        assert 'id="f-weight"' not in page.text and "only an admin changes it" in page.text
        refused = await post_form(client, f"/admin/segments/{smb.id}", {"name": "Small business", "weight": "9"},
                                  page=f"/admin/segments/{smb.id}")
        assert refused.status_code == 403 and "Only an admin changes a segment’s weight" in refused.text
        session.refresh(smb)
        assert (smb.name, smb.weight) == ("Smb", SEGMENTS["smb"])
        created = await post_form(client, "/admin/segments", {"name": "Heavy", "weight": "5"}, page="/admin/segments")
        assert created.status_code == 403
        # The PM's own form (the weight carried unchanged) renames the segment.
        renamed = await post_form(client, f"/admin/segments/{smb.id}", {"name": "Small business", "weight": "1.5"},
                                  page=f"/admin/segments/{smb.id}")
        assert renamed.status_code == 303
        session.refresh(smb)
        assert (smb.name, smb.weight) == ("Small business", SEGMENTS["smb"])

        admin = make_admin(session, email="ada@example.com")
        client.cookies.clear()
        sign_in(client, session, admin)
        assert 'id="f-weight"' in (await client.get(f"/admin/segments/{smb.id}")).text
        changed = await post_form(client, f"/admin/segments/{smb.id}", {"name": "Small business", "weight": "3"},
                                  page=f"/admin/segments/{smb.id}")
        assert changed.status_code == 303
        session.refresh(smb)
        assert smb.weight == Decimal(3)


INJECTIONS = ["=HYPERLINK(\"http://evil.example\")", "+1+1", "-2+3", "@SUM(A1)", "\tTabbed", "\rReturn"]


class TestCsvFiles:
    async def test_every_text_column_is_neutralised_and_round_trips(self, client, session, admin):
        world = build(session)
        pm = session.scalar(select(User).where(User.email == "pm@example.com"))
        x = world.items["X"]
        product = make_product(session, name=INJECTIONS[1])
        the_stage = stage(session, "planned")
        the_stage.name = INJECTIONS[2]
        x.title = INJECTIONS[0] + ', "quoted"\nline'
        x.product_id = product.id
        world.orgs["acme"].name = INJECTIONS[3]
        world.segments["enterprise"].name = INJECTIONS[4]
        pm.display_name = INJECTIONS[5]
        items_z = world.items["Z"]
        items_z.title = "=Merged " + INJECTIONS[0]
        session.execute(update(Vote).where(Vote.captured_by_id.is_not(None)).values(source_url="=cmd|' /CRIT calc'!A0"))
        for f in session.scalars(select(Feedback)):
            f.body = "@note, with \"quotes\"\r\nand lines"
        session.flush()

        desk_csv = await client.get("/admin/desk/export.csv?window=all")
        demand_csv = await client.get(f"/admin/desk/items/{x.public_id}/export.csv?window=all")
        for content in (desk_csv.content, demand_csv.content):
            rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")))
            assert all(len(r) == len(rows[0]) for r in rows)
            for row in rows[1:]:
                for cell in row:
                    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
        desk_rows = {r["Title"]: r for r in csv_rows(desk_csv.content)}
        row = desk_rows["'" + INJECTIONS[0] + ', "quoted"\nline']  # round-trips, prefixed
        assert row["Product"] == "'" + INJECTIONS[1] and row["Stage"] == "'" + INJECTIONS[2]
        people = {r["Email"]: r for r in csv_rows(demand_csv.content)}
        assert people["ann@example.com"]["Organisation"] == "'" + INJECTIONS[3]
        assert people["ann@example.com"]["Segment"] == "'" + INJECTIONS[4]
        assert people["ann@example.com"]["Note"] == "'@note, with \"quotes\"\r\nand lines"
        assert people["pat@example.com"]["Captured by"] == "'" + INJECTIONS[5]
        assert people["pat@example.com"]["Source link"] == "'=cmd|' /CRIT calc'!A0"
        assert people["gus@example.com"]["Merged from"] == "'=Merged " + INJECTIONS[0]
        assert b"\r\n" in desk_csv.content and desk_csv.content.count(b"\xef\xbb\xbf") == 1


class TestWeightsInTheSettings:
    async def test_the_settings_page_shows_the_weights_in_force_and_links_to_change_them(self, client, session, admin):
        await post_form(client, "/admin/desk/weights", {**WEIGHTS, "critical": "5", "revenue_mode": "capped"},
                        page="/admin/desk/weights")
        page = await client.get("/admin/settings")
        assert "critical 5." in page.text and "Capped: min(1 + r / U, C)" in page.text
        assert 'href="/admin/desk/weights"' in page.text


class TestOrganisationPage:
    async def test_an_organisation_page_lists_what_its_people_asked_for(self, client, session, admin):
        world = await set_up(client, session)
        acme = world.orgs["acme"]
        page = await client.get(f"/admin/organisations/{acme.id}")
        assert page.status_code == 200
        section = page.text[page.text.index('id="asked-title"'):]
        expected = expected_desk("all", org="acme")
        for key, row in expected.items():
            assert TITLES[key] in section
            assert f'<td class="num">{row["demand"]:.2f}</td>' in section
        assert TITLES["W"] not in section  # nobody at Acme asked for it
        assert f"/admin/desk?window=all&amp;organisation={acme.id}" in section
        gamma_page = await client.get(f"/admin/organisations/{world.orgs['gamma'].id}")
        assert TITLES["X"] in gamma_page.text[gamma_page.text.index('id="asked-title"'):]  # gus's vote came with the merge


class TestItemsList:
    async def test_the_items_list_shows_votes_and_demand_and_sorts_by_votes(self, client, session, admin):
        await set_up(client, session)
        expected = expected_desk("all")
        page = await client.get("/admin/items?sort=votes")
        assert page.status_code == 200
        rows = re.findall(r'<th scope="row"><a href="/admin/items/[^"]+">([^<]+)</a></th>(.*?)</tr>', page.text, re.S)
        titles = [t for t, _ in rows]
        assert titles.index(TITLES["X"]) < titles.index(TITLES["Y"]) < titles.index(TITLES["W"])
        cells = dict(rows)
        for key in ("X", "Y", "W"):
            numbers = re.findall(r'<td class="num">(?:<a [^>]+>)?([0-9.]+)', cells[TITLES[key]])
            assert int(numbers[0]) == expected[key]["voters"]
            assert float(numbers[1]) == pytest.approx(expected[key]["demand"], abs=0.006)
        assert re.search(r'aria-sort="descending"><a href="\?sort=votes&amp;dir=asc">Votes', page.text)


class TestLongDemand:
    async def test_a_long_demand_page_shows_the_heaviest_and_the_csv_has_everyone(self, client, session, admin,
                                                                                   monkeypatch):
        world = await set_up(client, session)
        monkeypatch.setattr(admin_desk, "PEOPLE_SHOWN", 3)
        x = world.items["X"].public_id
        page = await client.get(f"/admin/desk/items/{x}?window=all")
        people = page.text[page.text.index('id="demand-people"'):page.text.index('id="rice-inputs"')]
        assert people.count('<th scope="row">') == 3
        assert "The 3 heaviest of 7 people are shown" in people
        assert len(csv_rows((await client.get(f"/admin/desk/items/{x}/export.csv?window=all")).content)) == 7
