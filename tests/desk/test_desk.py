"""The prioritisation desk: every figure reproduced from known votes, through the page and the CSV.

The votes are made the way the product makes them (cast, captured for a customer, merged in, withdrawn), then
backdated; the expected desk is computed here from the same facts with the rules the page states, without the
desk's code, and compared column by column.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.admin import desk as admin_desk
from app.audit.models import AuditEvent
from app.db import utcnow
from app.feedback.models import Feedback, FeedbackKind
from app.organisations.models import Organisation, Segment
from app.roadmap import merge as merging
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import CaptureSource, Importance, Vote
from tests.factories import make_admin, make_item, make_pm, make_product, make_tag, make_user, stage
from tests.helpers.http import post_form, sign_in

NICE, MID, CRIT = Importance.nice_to_have, Importance.important, Importance.critical
WEIGHTS = {"nice_to_have": "1", "important": "2", "critical": "4", "revenue_mode": "linear",
           "revenue_unit": "100000", "revenue_cap": "3"}
WINDOWS = {"30": 30, "90": 90, "365": 365, "all": None}

# (person, organisation when voting, organisation now)
PEOPLE = {
    "ann": ("acme", "acme"), "alf": ("acme", "acme"), "bob": ("beta", "beta"), "gus": ("gamma", "gamma"),
    "nia": (None, None), "moe": ("beta", "acme"), "pat": ("beta", "beta"), "wes": ("beta", "beta"),
}
# organisation: (segment, revenue); segment: weight
ORGS = {"acme": ("enterprise", 200_000), "beta": ("smb", 50_000), "gamma": (None, 0)}
SEGMENTS = {"enterprise": Decimal("2.5"), "smb": Decimal("1.5")}
# (item, person, importance, days ago); pat's vote is captured by the PM; Z is merged into X; wes withdraws.
VOTES = [
    ("X", "ann", MID, 5), ("X", "alf", CRIT, 40), ("X", "bob", NICE, 100), ("X", "nia", MID, 200), ("X", "moe", CRIT, 20),
    ("X", "pat", MID, 10),
    ("Y", "ann", NICE, 2), ("Y", "gus", CRIT, 60), ("Y", "bob", MID, 400), ("Y", "wes", CRIT, 3),
    ("Z", "gus", CRIT, 10), ("Z", "ann", CRIT, 30),
]
WITHDRAWN = {("Y", "wes")}
CAPTURED = {("X", "pat")}
# (item, author, organisation, days ago)
FEEDBACK = [("X", "ann", "acme", 3), ("X", "pat", "beta", 150), ("Z", "gus", "gamma", 10)]
TITLES = {"X": "Bulk shift import", "Y": "Dark mode", "Z": "CSV shift import", "W": "Nobody asked"}


@dataclass
class World:
    items: dict[str, Item]
    orgs: dict[str, Organisation]
    segments: dict[str, Segment]
    product_slugs: dict[str, str]
    tag_slug: str


# --- the expected desk, from the facts above ------------------------------------------------------------------


def final_votes() -> dict[str, dict[str, tuple[Importance, int]]]:
    """Per item, per person: (importance, days ago) after the withdrawal and the merge of Z into X."""
    out: dict[str, dict[str, tuple[Importance, int]]] = {}
    for item, person, importance, days in VOTES:
        if (item, person) not in WITHDRAWN:
            out.setdefault(item, {})[person] = (importance, days)
    for person, (importance, days) in out.pop("Z").items():
        if person in out["X"]:  # voted on both: one vote, the higher importance, the date of the vote on X
            kept, kept_days = out["X"][person]
            out["X"][person] = (max(kept, importance), kept_days)
        else:
            out["X"][person] = (importance, days)
    return out


def revenue_factor(mode: str, revenue: float, unit: float = 100_000, cap: float = 3) -> float:
    r = revenue / unit
    return {"off": 1.0, "linear": 1 + r, "logarithmic": 1 + math.log(1 + r), "capped": min(1 + r, cap)}[mode]


def expected_desk(window: str, *, mode: str = "linear", segment: str | None = None, org: str | None = None,
                  rice: dict[str, tuple[int, Decimal]] | None = None) -> dict[str, dict[str, object]]:
    weight = {NICE: 1.0, MID: 2.0, CRIT: 4.0}
    days_limit = WINDOWS[window]
    rows: dict[str, dict[str, object]] = {}
    votes = final_votes()
    for item in ("X", "Y", "W"):
        voters = []
        for person, (importance, days) in votes.get(item, {}).items():
            now_org = PEOPLE[person][1]
            if segment and (now_org is None or ORGS[now_org][0] != segment):
                continue
            if org and now_org != org:
                continue
            voters.append((person, importance, days, now_org))
        in_window = [v for v in voters if days_limit is None or v[2] < days_limit]
        orgs = {v[3] for v in in_window if v[3] is not None}
        lone = sum(1 for v in in_window if v[3] is None)
        demand = 0.0
        for _person, importance, _days, now_org in in_window:
            seg = ORGS[now_org][0] if now_org else None
            revenue = ORGS[now_org][1] if now_org else 0
            demand += weight[importance] * float(SEGMENTS[seg] if seg else 1) * revenue_factor(mode, revenue)
        trend = [0] * 12
        for _person, _importance, days, _org in voters:
            if days < 84:
                trend[11 - days // 7] += 1
        feedback = 0
        for f_item, _author, f_org, days in FEEDBACK:
            target = "X" if f_item == "Z" else f_item
            if target != item or (days_limit is not None and days >= days_limit):
                continue
            if org and f_org != org:
                continue
            if segment and ORGS[f_org][0] != segment:
                continue
            feedback += 1
        impact = sum(weight[v[1]] for v in in_window) / len(in_window) if in_window else None
        reach = len(orgs) + lone
        estimate = (rice or {}).get(item)
        rice_value = None
        if estimate is not None:
            rice_value = 0.0 if not in_window else reach * impact * estimate[0] / 100 / float(estimate[1])
        if (segment or org) and not in_window:  # only items their people voted for in the window
            continue
        rows[item] = {
            "voters": len(in_window), "organisations": len(orgs),
            "mix": (sum(v[1] == NICE for v in in_window), sum(v[1] == MID for v in in_window),
                    sum(v[1] == CRIT for v in in_window)),
            "demand": demand, "revenue": sum(ORGS[o][1] for o in orgs), "reach": reach, "impact": impact,
            "rice": rice_value, "feedback": feedback, "trend": trend,
        }
    return rows


# --- building the world the way the product does ------------------------------------------------------------


def build(session: Session) -> World:
    pm = make_pm(session, email="pm@example.com", display_name="Petra PM")
    segments = {}
    for slug, weight in SEGMENTS.items():
        segments[slug] = Segment(slug=slug, name=slug.capitalize(), weight=weight)
        session.add(segments[slug])
    session.flush()
    orgs = {}
    for name, (seg, revenue) in ORGS.items():
        orgs[name] = Organisation(name=name.capitalize(), segment_id=segments[seg].id if seg else None,
                                  revenue=Decimal(revenue))
        session.add(orgs[name])
    session.flush()
    people = {}
    for person, (then, _now) in PEOPLE.items():
        people[person] = make_user(session, email=f"{person}@example.com", display_name=person.capitalize(),
                                   organisation_id=orgs[then].id if then else None, password=None,
                                   is_placeholder=person == "pat")
    one, two = make_product(session, name="Web"), make_product(session, name="Mobile")
    tag = make_tag(session, "Imports")
    items = {
        "X": make_item(session, product=one, title=TITLES["X"], tags=[tag], created_at=utcnow() - timedelta(days=10)),
        "Y": make_item(session, product=two, title=TITLES["Y"], stage_slug="under-consideration", published=False),
        "Z": make_item(session, product=one, title=TITLES["Z"]),
        "W": make_item(session, product=one, title=TITLES["W"]),
    }
    now = utcnow()
    for item, person, importance, days in VOTES:
        captured = (item, person) in CAPTURED
        voting.cast_vote(session, item=items[item], user=people[person], importance=importance,
                         captured_by=pm if captured else None, source=CaptureSource.call if captured else None)
        session.execute(update(Vote).where(Vote.item_id == items[item].id, Vote.user_id == people[person].id)
                        .values(created_at=now - timedelta(days=days), updated_at=now - timedelta(days=days)))
    for item, author, org, days in FEEDBACK:
        session.add(Feedback(kind=FeedbackKind.reason, author_id=people[author].id, organisation_id=orgs[org].id,
                             item_id=items[item].id, body=f"Note from {author}", created_at=now - timedelta(days=days)))
    session.flush()
    for item, person in WITHDRAWN:
        assert voting.withdraw_vote(session, item=items[item], user=people[person])
    merging.merge_items(session, source=items["Z"], target=items["X"], actor=pm)
    for person, (_then, now_org) in PEOPLE.items():  # moe moves from Beta to Acme after voting
        people[person].organisation_id = orgs[now_org].id if now_org else None
    session.flush()
    return World(items=items, orgs=orgs, segments=segments, product_slugs={"one": one.slug, "two": two.slug},
                 tag_slug=tag.slug)


# --- reading the page and the CSV ------------------------------------------------------------------------------


def page_rows(html: str) -> list[tuple[str, dict[str, object]]]:
    body = html[html.index("<tbody>"):html.index("</tbody>")]
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        title = re.sub(r"\s+", " ", re.search(r'<a href="/admin/desk/items/[^"]+">([^<]+)</a>', tr).group(1))
        cells = {name: re.sub(r"<[^>]+>", "", value).strip()
                 for name, value in re.findall(r'data-col="(\w+)">(.*?)</td>', tr, re.S)}
        trend = re.search(r'aria-label="Votes per week, oldest first: ([0-9, ]+)"', tr).group(1)
        rows.append((title, {
            "voters": int(cells["voters"]), "organisations": int(cells["organisations"]),
            "mix": tuple(int(n) for n in re.findall(r"\d+", cells["mix"])),
            "demand": float(cells["demand"]), "revenue": int(cells["revenue"].replace(",", "")),
            "rice": None if cells["rice"] == "—" else float(cells["rice"]), "feedback": int(cells["feedback"]),
            "trend": [int(n) for n in trend.split(", ")], "stage": cells["stage"], "age": cells["age"],
        }))
    return rows


def csv_rows(content: bytes) -> list[dict[str, str]]:
    assert content.startswith(b"\xef\xbb\xbf"), "UTF-8 with a byte order mark"
    return list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline="")))


def assert_matches(title_rows: dict[str, dict[str, object]], expected: dict[str, dict[str, object]]) -> None:
    assert set(title_rows) == {TITLES[k] for k in expected}
    for key, want in expected.items():
        got = title_rows[TITLES[key]]
        for column in ("voters", "organisations", "mix", "feedback", "trend", "revenue"):
            assert got[column] == want[column], (key, column, got[column], want[column])
        assert got["demand"] == pytest.approx(want["demand"], abs=0.006), (key, "demand")
        if want["rice"] is None:
            assert got["rice"] is None, (key, "rice")
        else:
            assert got["rice"] == pytest.approx(want["rice"], abs=0.06), (key, "rice")


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


async def _set_up(client, session) -> World:  # type: ignore[no-untyped-def]
    world = build(session)
    response = await post_form(client, "/admin/desk/weights", WEIGHTS, page="/admin/desk/weights")
    assert response.status_code == 303, response.text
    response = await post_form(client, f"/admin/desk/items/{world.items['X'].public_id}/rice",
                               {"rice_confidence": "80", "effort": "2"}, page="/admin/desk")
    assert response.status_code == 303, response.text
    return world


RICE = {"X": (80, Decimal(2))}


class TestEveryFigure:
    @pytest.mark.parametrize("window", list(WINDOWS))
    async def test_the_page_and_the_csv_show_the_figures_the_votes_give(self, client, session, admin, window):
        world = await _set_up(client, session)
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
        await _set_up(client, session)
        response = await post_form(client, "/admin/desk/weights", {**WEIGHTS, "revenue_mode": mode},
                                   page="/admin/desk/weights")
        assert response.status_code == 303
        page = await client.get("/admin/desk?window=all")
        assert_matches(dict(page_rows(page.text)), expected_desk("all", mode=mode, rice=RICE))
        assert {"off": "Off: revenue does not weigh votes", "logarithmic": "1 + ln(1 + r / U)",
                "capped": "min(1 + r / U, C)"}[mode] in page.text

    async def test_segment_and_organisation_filters_count_only_their_people(self, client, session, admin):
        world = await _set_up(client, session)
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
        world = await _set_up(client, session)
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
        await _set_up(client, session)
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
        beyond = await client.get("/admin/desk?sort=title&dir=asc&page=99")
        assert [t for t, _ in page_rows(beyond.text)] == ["Item 50"] and "Page 2 of 2" in beyond.text


class TestDemandOfOneItem:
    async def test_every_person_who_asked_with_how_their_vote_came(self, client, session, admin):
        world = await _set_up(client, session)
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
        world = await _set_up(client, session)
        x = world.items["X"]
        bad = await post_form(client, f"/admin/desk/items/{x.public_id}/rice",
                              {"rice_confidence": "180", "effort": "-1"}, page="/admin/desk")
        assert bad.status_code == 422
        assert 'value="180"' in bad.text and "from 1 to 100" in bad.text and "from 0.01 to 9999" in bad.text
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "item.estimated")).one()
        assert event.changes == {"rice_confidence": [None, 80], "effort": [None, "2"]}
        page = await client.get(f"/admin/desk/items/{x.public_id}?window=all")
        assert "4.8 " in re.sub(r"<[^>]+>", " ", page.text)  # 4 × 3.00 × 80% ÷ 2
        cleared = await post_form(client, f"/admin/desk/items/{x.public_id}/rice",
                                  {"rice_confidence": "", "effort": ""}, page="/admin/desk")
        assert cleared.status_code == 303
        row = dict(page_rows((await client.get("/admin/desk?window=all")).text))[TITLES["X"]]
        assert row["rice"] is None

    async def test_the_desk_links_to_the_item_demand_and_the_editor_links_to_it(self, client, session, admin):
        world = await _set_up(client, session)
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
        world = await _set_up(client, session)
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
        await _set_up(client, session)
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
        assert re.search(r'aria-sort="descending"><a href="\?sort=votes">Votes', page.text)


class TestLongDemand:
    async def test_a_long_demand_page_shows_the_heaviest_and_the_csv_has_everyone(self, client, session, admin,
                                                                                   monkeypatch):
        world = await _set_up(client, session)
        monkeypatch.setattr(admin_desk, "PEOPLE_SHOWN", 3)
        x = world.items["X"].public_id
        page = await client.get(f"/admin/desk/items/{x}?window=all")
        people = page.text[page.text.index('id="demand-people"'):page.text.index('id="rice-inputs"')]
        assert people.count('<th scope="row">') == 3
        assert "The 3 heaviest of 7 people are shown" in people
        assert len(csv_rows((await client.get(f"/admin/desk/items/{x}/export.csv?window=all")).content)) == 7
