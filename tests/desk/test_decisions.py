"""Decisions on record: a stage move's why, kept with the item's desk numbers and the weights of that moment.

The world is the desk's (tests/desk/test_desk.py): the snapshot a move records is compared with the desk
computed independently from the votes, and it stays as it was when the votes move on.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.admin import items as admin_items
from app.audit.models import AuditEvent
from app.db import utcnow
from app.desk.models import Decision
from app.roadmap import service as roadmap
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import Importance
from tests.desk.helpers import RICE, SEGMENTS, TITLES, WEIGHTS, WINDOWS, build, expected_desk, set_up
from tests.factories import make_pm, make_user, stage
from tests.helpers.http import post_form, sign_in

WHY = "Acme and Beta both **need** it before renewals (call with Ann, 2 Dec)."


def words(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    from tests.factories import make_admin

    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


async def move(client, item: Item, stage_id: int, why: str = WHY):  # type: ignore[no-untyped-def]
    return await post_form(client, f"/admin/items/{item.public_id}/stage", {"stage_id": str(stage_id), "why": why},
                           page=f"/admin/items/{item.public_id}")


def item_form(session, item: Item) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """The editor's form as it would be filled for the item."""
    session.expire(item)
    return admin_items._item_form(roadmap.get_item_for_staff(session, item.public_id))


def assert_snapshot_is(numbers: dict, want: dict) -> None:  # type: ignore[type-arg]
    assert numbers["window"] == "all"
    assert numbers["voters"] == want["voters"] and numbers["organisations"] == want["organisations"]
    assert (numbers["importance"]["nice_to_have"], numbers["importance"]["important"],
            numbers["importance"]["critical"]) == want["mix"]
    assert numbers["weighted_demand"] == pytest.approx(want["demand"], abs=0.0001)
    assert int(float(numbers["revenue"])) == want["revenue"]
    assert numbers["reach"] == want["reach"] and numbers["feedback"] == want["feedback"]
    assert numbers["trend"] == want["trend"]
    assert numbers["impact"] == pytest.approx(want["impact"], abs=0.0001)
    assert numbers["rice"] == pytest.approx(want["rice"], abs=0.0001)


class TestRecordingADecision:
    async def test_a_move_with_why_keeps_the_desk_numbers_and_weights_of_that_moment(self, client, session, admin):
        world = await set_up(client, session)
        x = world.items["X"]
        declined = stage(session, "declined")
        response = await move(client, x, declined.id)
        assert response.status_code == 303

        decision = session.scalars(select(Decision).where(Decision.item_id == x.id)).one()
        assert (decision.from_stage_name, decision.to_stage_name, decision.why) == ("Planned", "Declined", WHY)
        assert decision.decided_by_id == admin.id and decision.decided_by_label == "Ada Admin"
        assert_snapshot_is(decision.numbers, expected_desk("all", rice=RICE)["X"])
        assert {k: decision.weights[k] for k in WEIGHTS} == WEIGHTS
        assert {s["slug"]: s["weight"] for s in decision.weights["segments"]} == {k: str(v) for k, v in SEGMENTS.items()}
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "item.decision_recorded")).one()
        assert event.entity_id == x.public_id and event.changes == {"stage": ["Planned", "Declined"], "why": [None, WHY]}

        # The votes move on; the decision keeps what it rested on, and the editor shows it.
        late = make_user(session, email="late@example.com", organisation_id=world.orgs["acme"].id, password=None)
        x.stage_id = stage(session, "planned").id  # back open to take a vote
        session.flush()
        voting.cast_vote(session, item=x, user=late, importance=Importance.critical)
        session.expire_all()
        again = session.scalars(select(Decision).where(Decision.item_id == x.id)).one()
        assert again.numbers["voters"] == expected_desk("all", rice=RICE)["X"]["voters"]
        page = await client.get(f"/admin/items/{x.public_id}")
        text = words(page.text)
        assert "Decisions" in text and "Planned → Declined" in text and "Ada Admin" in text
        assert "<strong>need</strong>" in page.text  # Markdown, rendered
        want = expected_desk("all", rice=RICE)["X"]
        assert f"Weighted demand {want['demand']:.2f}" in text
        # Every window the desk offers is kept, the 90 days the desk opens on among them: the PM's view is there.
        assert set(decision.numbers["windows"]) == set(WINDOWS)
        for window in WINDOWS:
            kept, expected = again.numbers["windows"][window], expected_desk(window, rice=RICE)["X"]
            assert (kept["voters"], kept["organisations"], int(float(kept["revenue"]))) == (
                expected["voters"], expected["organisations"], expected["revenue"]), window
            assert kept["weighted_demand"] == pytest.approx(expected["demand"], abs=0.0001), window
            row = (f"{ {'30': 'Last 30 days', '90': 'Last 90 days', '365': 'Last 365 days', 'all': 'All time'}[window]} "
                   f"{expected['voters']} {expected['organisations']} {expected['demand']:.2f} {expected['revenue']:,} ")
            assert row in text, row
        assert expected_desk("90")["X"]["voters"] != want["voters"]  # the windows differ, so the test can tell
        export = await client.get("/admin/decisions/export.csv")
        (exported,) = csv.DictReader(io.StringIO(export.content.decode("utf-8-sig"), newline=""))
        ninety = expected_desk("90", rice=RICE)["X"]
        assert (exported["Voters (last 90 days)"], exported["Weighted demand (last 90 days)"]) == (
            str(ninety["voters"]), f"{ninety['demand']:.2f}")
        assert "critical 4" in text and "revenue linear (U 100000)" in text and "Enterprise 2.5" in text

    async def test_the_item_forms_stage_field_records_a_decision_too(self, client, session, admin):
        world = await set_up(client, session)
        y = world.items["Y"]
        planned = stage(session, "planned")
        form = {**item_form(session, y), "stage_id": str(planned.id), "why": "Enough enterprise demand."}
        response = await post_form(client, f"/admin/items/{y.public_id}", form, page=f"/admin/items/{y.public_id}")
        assert response.status_code == 303, response.text
        decision = session.scalars(select(Decision).where(Decision.item_id == y.id)).one()
        assert (decision.from_stage_name, decision.to_stage_name, decision.why) == (
            "Under consideration", "Planned", "Enough enterprise demand.")
        assert_snapshot_is(decision.numbers, expected_desk("all", rice=RICE)["Y"])
        # Saving without a stage change records nothing more.
        form = {**item_form(session, y), "summary": "Changed words", "why": "ignored"}
        await post_form(client, f"/admin/items/{y.public_id}", form, page=f"/admin/items/{y.public_id}")
        assert len(session.scalars(select(Decision).where(Decision.item_id == y.id)).all()) == 1

    async def test_a_move_without_why_is_recorded_and_says_so(self, client, session, admin):
        world = build(session)
        response = await move(client, world.items["W"], stage(session, "in-progress").id, why="  ")
        assert response.status_code == 303
        decision = session.scalars(select(Decision).where(Decision.item_id == world.items["W"].id)).one()
        assert decision.why == "" and decision.numbers["voters"] == 0
        page = await client.get(f"/admin/items/{world.items['W'].public_id}")
        assert "No reason recorded." in page.text

    async def test_rice_entered_on_an_item_nobody_voted_for_reads_as_such(self, client, session, admin):
        """RICE is 0 without voters, and there is no impact to show: the history and the list once answered 500."""
        world = build(session)
        item = world.items["W"]
        session.execute(update(Item).where(Item.id == item.id).values(rice_confidence=80, effort=2))
        session.commit()
        assert (await move(client, item, stage(session, "in-progress").id)).status_code == 303
        for path in ("/admin/decisions", f"/admin/items/{item.public_id}"):
            page = await client.get(path)
            assert page.status_code == 200
            assert "0.00 (nobody voted in this window)" in words(page.text)

    async def test_a_too_long_why_is_refused_keeps_the_text_and_moves_nothing(self, client, session, admin):
        world = build(session)
        w = world.items["W"]
        long_why = "Because " + "x" * 5000
        response = await move(client, w, stage(session, "declined").id, why=long_why)
        assert response.status_code == 422
        assert "At most 5000 characters" in response.text and long_why in response.text
        assert 'id="move-why-error"' in response.text
        session.expire_all()
        assert session.get(Item, w.id).stage_id == stage(session, "planned").id
        assert session.scalar(select(Decision).where(Decision.item_id == w.id)) is None

        form = {**item_form(session, w), "stage_id": str(stage(session, "declined").id), "why": long_why,
                "title": ""}
        response = await post_form(client, f"/admin/items/{w.public_id}", form, page=f"/admin/items/{w.public_id}")
        assert response.status_code == 422
        assert "At most 5000 characters" in response.text and "A title is required." in response.text
        assert long_why in response.text


class TestDecisionsList:
    async def _three(self, client, session, admin):  # type: ignore[no-untyped-def]
        world = await set_up(client, session)
        pm = make_pm(session, email="pia@example.com", display_name="Pia PM")
        await move(client, world.items["X"], stage(session, "in-progress").id, why="=HYPERLINK(\"http://evil.example\")")
        await move(client, world.items["Y"], stage(session, "declined").id, why="Not for now.")
        sign_in(client, session, pm)
        await move(client, world.items["W"], stage(session, "declined").id, why="Nobody asked.")
        # One of them, a month ago.
        session.execute(update(Decision).where(Decision.item_id == world.items["Y"].id)
                        .values(decided_at=utcnow() - timedelta(days=30)))
        session.flush()
        return world, pm

    async def test_filters_by_product_stage_person_and_dates(self, client, session, admin):
        world, pm = await self._three(client, session, admin)
        titles = lambda html: re.findall(r'<h2 class="decision-title"><a href="/admin/items/[^"]+">([^<]+)</a>', html)  # noqa: E731
        page = await client.get("/admin/decisions")
        assert page.status_code == 200
        assert titles(page.text) == [TITLES["W"], TITLES["X"], TITLES["Y"]]  # newest first
        assert titles((await client.get(f"/admin/decisions?product={world.product_slugs['two']}")).text) == [TITLES["Y"]]
        assert titles((await client.get("/admin/decisions?stage=declined")).text) == [TITLES["W"], TITLES["Y"]]
        assert titles((await client.get(f"/admin/decisions?person={pm.id}")).text) == [TITLES["W"]]
        today = utcnow().date()
        since = (today - timedelta(days=7)).isoformat()
        assert titles((await client.get(f"/admin/decisions?from={since}")).text) == [TITLES["W"], TITLES["X"]]
        until = (today - timedelta(days=20)).isoformat()
        assert titles((await client.get(f"/admin/decisions?to={until}")).text) == [TITLES["Y"]]
        bad = await client.get("/admin/decisions?from=yesterday")
        assert bad.status_code == 200 and 'value="yesterday"' in bad.text
        assert "Not a date: write it as 2026-12-31" in bad.text and len(titles(bad.text)) == 3
        assert "From: “yesterday” is not a date; showing all dates." in bad.text
        both = await client.get(f"/admin/decisions?from=not-a-date&to={until}")
        assert "From: “not-a-date” is not a date; showing all dates up to " + until + "." in both.text
        assert titles(both.text) == [TITLES["Y"]]
        empty = await client.get("/admin/decisions?stage=released")
        assert "No decisions match" in empty.text
        past = await client.get("/admin/decisions?stage=declined&page=3")  # as the desk: not page 1 passed off as 3
        assert past.status_code == 200 and titles(past.text) == [] and "Nothing on page 3" in past.text
        assert "2 decisions matching the filters on 1 page." in words(past.text)
        assert 'href="?stage=declined">Go to the last page (page 1)</a>' in past.text

    async def test_the_csv_has_the_filtered_decisions_with_their_numbers_neutralised(self, client, session, admin):
        world, _pm = await self._three(client, session, admin)
        export = await client.get("/admin/decisions/export.csv?stage=in-progress")
        assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
        assert "attachment" in export.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(export.content.decode("utf-8-sig"), newline="")))
        assert len(rows) == 1
        row = rows[0]
        want = expected_desk("all", rice=RICE)["X"]
        assert row["Item"] == TITLES["X"] and row["Item id"] == world.items["X"].public_id
        assert (row["From stage"], row["To stage"], row["Decided by"]) == ("Planned", "In progress", "Ada Admin")
        assert row["Why"] == "'=HYPERLINK(\"http://evil.example\")"  # neutralised for spreadsheets
        assert int(row["Voters (all time)"]) == want["voters"] and int(row["Reach (all time)"]) == want["reach"]
        assert float(row["Weighted demand (all time)"]) == pytest.approx(want["demand"], abs=0.0001)
        assert float(row["RICE (all time)"]) == pytest.approx(want["rice"], abs=0.0001)
        # Every figure that depends on a window names it, as the per-window columns next to them do.
        windowed = ("Voters", "Organisations", "Nice to have", "Important", "Critical", "Weighted demand",
                    "Revenue represented", "Reach", "Impact", "RICE", "Private feedback")
        assert not [name for name in row if name.split(" (")[0] in windowed and "(" not in name]
        assert '"critical": "4"' in row["Weights in force (JSON)"]
        everything = await client.get("/admin/decisions/export.csv")
        assert len(list(csv.DictReader(io.StringIO(everything.content.decode("utf-8-sig"), newline="")))) == 3


class TestOnlyStaffSeeDecisions:
    async def test_customers_and_visitors_never_meet_a_decision(self, client, session, admin):
        world = await set_up(client, session)
        x = world.items["X"]
        secret = "Quibblefrost renewal argument"
        await move(client, x, stage(session, "in-progress").id, why=secret)
        customer = make_user(session, email="cus@example.com", organisation_id=world.orgs["acme"].id)
        for who in ("customer", "visitor"):
            client.cookies.clear()
            if who == "customer":
                sign_in(client, session, customer)
            for path in ("/admin/decisions", "/admin/decisions/export.csv", f"/admin/items/{x.public_id}"):
                response = await client.get(path)
                assert response.status_code in (303, 401, 404), (who, path)
                assert secret not in response.text
            for path in ("/", x.path, f"/api/v1/items/{x.public_id}", "/changelog", "/changelog.atom",
                         "/search?q=Quibblefrost", "/me"):
                response = await client.get(path)
                assert secret not in response.text and "Weighted demand" not in response.text, (who, path)


class TestOneFigureReadsTheSameEverywhere:
    async def test_demand_revenue_impact_and_rice_read_alike_on_pages_csvs_api_and_history(self, client, session,
                                                                                             admin):
        """One rule per figure: weighted demand, impact and RICE with 2 decimals, revenue in whole currency units
        (thousands separators on pages only), on the desk, the demand page, both CSVs, the API and the history."""
        from tests.desk.helpers import csv_rows
        from tests.helpers.tokens import bearer, create_token

        world = await set_up(client, session)
        x = world.items["X"]
        want = expected_desk("all", rice=RICE)["X"]
        demand, impact, rice = f"{want['demand']:.2f}", f"{want['impact']:.2f}", f"{want['rice']:.2f}"
        revenue = str(want["revenue"])
        assert len(revenue) > 3  # so a thousands separator would show
        await move(client, x, stage(session, "in-progress").id)

        desk_page = await client.get("/admin/desk?window=all")
        cells = dict(re.findall(r'data-col="(\w+)">(.*?)</td>',
                                desk_page.text[desk_page.text.index(TITLES["X"]):], re.S)[:12])
        strip = lambda html: re.sub(r"<[^>]+>", "", html).strip()  # noqa: E731
        assert (strip(cells["demand"]), strip(cells["rice"])) == (demand, rice)
        assert strip(cells["revenue"]) == f"{want['revenue']:,}"
        item_page = words((await client.get(f"/admin/desk/items/{x.public_id}?window=all")).text)
        assert f"Weighted demand {demand}" in item_page and f"Revenue represented {want['revenue']:,}" in item_page
        nice, important, critical = want["mix"]  # the impact as its fraction: weights 1, 2, 4
        fraction = f"{nice + 2 * important + 4 * critical} ÷ {nice + important + critical}"
        assert f"RICE {rice} = {want['reach']} × ({fraction}) × 80% ÷ 2" in item_page
        assert f"impact {fraction} ≈ {impact}" in item_page

        desk_csv = {r["Title"]: r for r in csv_rows((await client.get("/admin/desk/export.csv?window=all")).content)}
        row = desk_csv[TITLES["X"]]
        assert (row["Weighted demand"], row["Revenue represented"], row["Impact"], row["RICE"]) == (
            demand, revenue, impact, rice)

        decisions_csv = csv_rows((await client.get("/admin/decisions/export.csv")).content)
        row = decisions_csv[0]
        assert (row["Weighted demand (all time)"], row["Revenue represented (all time)"], row["Impact (all time)"],
                row["RICE (all time)"]) == (
            demand, revenue, impact, rice)
        history = words((await client.get(f"/admin/items/{x.public_id}")).text)
        assert f"Weighted demand {demand}" in history and f"Revenue represented {want['revenue']:,}" in history
        assert f"RICE {rice} (reach {want['reach']} × impact {impact} × 80% ÷ 2 person-months)" in history

        token = await create_token(client)
        client.cookies.clear()
        body = (await client.get("/api/v1/desk?window=all", headers=bearer(token))).json()
        api = next(r for r in body["rows"] if r["title"] == TITLES["X"])
        assert (f"{api['weighted_demand']:.2f}", str(api["revenue"]), f"{api['impact']:.2f}", f"{api['rice']:.2f}") == (
            demand, revenue, impact, rice)
        assert (api["weighted_demand"], api["impact"], api["rice"]) == (float(demand), float(impact), float(rice))
