"""What a tester walking the desk found (issue 10): mistyped links, the RICE formula's figures, all-zero weights,
the words about withdrawn votes and about rounding. Each test fails on the desk as it was before the fix."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.accounts.models import User
from app.feedback.models import Feedback, FeedbackKind
from app.voting import service as voting
from tests.desk.helpers import TITLES, WEIGHTS, csv_rows, page_rows, set_up
from tests.factories import make_admin
from tests.helpers.http import page_words as words
from tests.helpers.http import post_form, sign_in


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


class TestAMistypedLinkSaysSo:
    async def test_each_value_not_understood_is_named_with_what_is_shown_instead(self, client, session, admin):
        await set_up(client, session)
        page = await client.get("/admin/desk?window=7&sort=bogus&dir=sideways&organisation=abc")
        assert page.status_code == 200
        text = words(page.text)
        assert "window=7 is not one of 30, 90, 365, all: showing the last 90 days." in text
        assert "sort=bogus is not a column of the desk: sorted by weighted demand." in text
        assert "dir=sideways is not asc or desc: sorted descending." in text
        assert "organisation=abc is not an organisation’s number: showing all organisations." in text
        # What it says it shows is what it shows: the default view's rows.
        default = await client.get("/admin/desk")
        assert page_rows(page.text) == page_rows(default.text) and page_rows(page.text)
        assert "not understood" not in words(default.text)

    async def test_an_organisation_or_segment_that_does_not_exist_is_named_not_an_empty_desk(self, client, session,
                                                                                              admin):
        await set_up(client, session)
        page = await client.get("/admin/desk?organisation=999999&segment=bogus&window=all")
        text = words(page.text)
        assert "No organisation 999999: showing all organisations." in text
        assert "No segment bogus: showing all segments." in text
        assert "No items match" not in text
        assert page_rows(page.text) == page_rows((await client.get("/admin/desk?window=all")).text)
        # The page's own links carry the view shown, not the values it did not understand.
        assert "999999" not in page.text.split("role=\"status\"")[1].split("</div>", 1)[1]

    async def test_an_items_demand_names_them_too(self, client, session, admin):
        world = await set_up(client, session)
        x = world.items["X"].public_id
        text = words((await client.get(f"/admin/desk/items/{x}?window=7&segment=bogus")).text)
        assert "window=7 is not one of 30, 90, 365, all: showing the last 90 days." in text
        assert "No segment bogus: showing all segments." in text

    @pytest.mark.parametrize("query", ["window=7", "sort=bogus", "dir=sideways", "organisation=abc",
                                       "organisation=999999", "segment=bogus", "product=nope"])
    async def test_a_csv_link_not_understood_exports_nothing_and_says_why(self, client, session, admin, query):
        world = await set_up(client, session)
        x = world.items["X"].public_id
        refused = await client.get(f"/admin/desk/export.csv?{query}")
        assert refused.status_code == 400 and not refused.headers["content-type"].startswith("text/csv")
        name, value = query.split("=")
        assert value in words(refused.text) and "Nothing was exported" in words(refused.text)
        if name in ("window", "segment", "organisation"):
            demand = await client.get(f"/admin/desk/items/{x}/export.csv?{query}")
            assert demand.status_code == 400 and "Nothing was exported" in words(demand.text)

    async def test_a_good_csv_link_still_exports(self, client, session, admin):
        world = await set_up(client, session)
        rows = csv_rows((await client.get(f"/admin/desk/export.csv?window=all&segment={world.segments['enterprise'].slug}"
                                          "&sort=voters&dir=asc")).content)
        assert TITLES["X"] in {r["Title"] for r in rows}


class TestWithdrawnVotesNotes:
    async def test_the_page_says_a_withdrawn_votes_note_stays_in_the_feedback(self, client, session, admin):
        world = await set_up(client, session)
        y = world.items["Y"]
        wes = session.scalar(select(User).where(User.email == "wes@example.com"))
        before = dict(page_rows((await client.get("/admin/desk?window=all")).text))[TITLES["Y"]]["feedback"]
        session.add(Feedback(kind=FeedbackKind.reason, author_id=wes.id, item_id=y.id, body="Sent with my vote"))
        session.flush()
        assert voting.own_vote(session, item=y, user=wes) is None  # wes withdrew his vote on Y
        page = await client.get("/admin/desk?window=all")
        assert dict(page_rows(page.text))[TITLES["Y"]]["feedback"] == before + 1  # what the page says is true
        text = words(page.text)
        assert "counts nowhere" not in text
        assert ("a note left with it was sent to the team, so it stays in the feedback inbox and in the "
                "private-feedback count") in text


class TestWeightsThatRankNothing:
    async def test_all_three_importance_weights_at_zero_are_refused_with_what_was_typed_kept(self, client, session,
                                                                                            admin):
        await set_up(client, session)  # critical 4, linear revenue
        desk_before = page_rows((await client.get("/admin/desk?window=all")).text)
        typed = {**WEIGHTS, "nice_to_have": "0", "important": "0.000", "critical": "0", "revenue_unit": "250000"}
        refused = await post_form(client, "/admin/desk/weights", typed, page="/admin/desk/weights")
        assert refused.status_code == 422
        assert "cannot all be 0: every vote would weigh 0" in words(refused.text)
        for name, value in (("nice_to_have", "0"), ("important", "0.000"), ("critical", "0"), ("revenue_unit", "250000")):
            assert re.search(fr'name="{name}"[^>]*value="{re.escape(value)}"', refused.text), name
        assert page_rows((await client.get("/admin/desk?window=all")).text) == desk_before  # nothing was saved
        # One weight above 0 is a choice a PM may make (only critical votes count): it is saved.
        only_critical = {**WEIGHTS, "nice_to_have": "0", "important": "0", "critical": "1"}
        saved = await post_form(client, "/admin/desk/weights", only_critical, page="/admin/desk/weights")
        assert saved.status_code == 303


class TestTheRiceFormulaMultipliesOut:
    async def test_the_figures_written_in_the_formula_give_the_rice_shown(self, client, session, admin):
        from app.desk.service import half_up

        world = await set_up(client, session)  # X has confidence 80% and effort 2 (RICE in tests/desk/helpers.py)
        for window in ("30", "90", "365", "all"):
            text = words((await client.get(f"/admin/desk/items/{world.items['X'].public_id}?window={window}")).text)
            found = re.search(r"RICE (\S+) = (\d+) × \(([\d.]+) ÷ (\d+)\) × (\d+)% ÷ ([\d.]+)", text)
            assert found, (window, text[text.index("RICE"):][:120])
            shown, reach, weights, voters, confidence, effort = found.groups()
            exact = int(reach) * float(weights) / int(voters) * int(confidence) / 100 / float(effort)
            assert str(half_up(exact)) == shown, (window, found.group(0))


class TestRoundedOnceIsSaid:
    async def test_the_page_says_rounded_parts_may_not_add_up_to_the_total(self, client, session, admin):
        world = await set_up(client, session)
        demand = words((await client.get(f"/admin/desk/items/{world.items['X'].public_id}?window=all")).text)
        assert ("added up, the rounded figures here and in the CSV may differ from the total by a few hundredths"
                in demand)
        assert "and only once: no figure is computed from rounded ones" in demand  # its "How it is computed"
        desk = words((await client.get("/admin/desk")).text)
        assert "may add up to a few hundredths more or less than the total shown" in desk
