"""The prioritisation desk's test world: votes of known people made the way the product makes them, and the
desk expected from them, computed here from the same facts with the rules the page states (without the desk's
code). tests/desk/test_desk.py checks the page and the CSV against it, tests/api/test_desk_api.py the API,
tests/desk/test_decisions.py the snapshots decisions keep.
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
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import utcnow
from app.feedback.models import Feedback, FeedbackKind
from app.organisations.models import Organisation, Segment
from app.roadmap import merge as merging
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import CaptureSource, Importance, Vote
from tests.factories import make_item, make_pm, make_product, make_tag, make_user
from tests.helpers.http import post_form

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
        # The 12-week total is labelled inside the trend cell, not a bare number beside the RICE column.
        total = sum(int(n) for n in trend.split(", "))
        assert f"{total} in 12 wk" in cells["trend"] and re.search(fr"{total} votes? in the last 12 weeks", tr)
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


async def set_up(client, session) -> World:  # type: ignore[no-untyped-def]
    world = build(session)
    response = await post_form(client, "/admin/desk/weights", WEIGHTS, page="/admin/desk/weights")
    assert response.status_code == 303, response.text
    response = await post_form(client, f"/admin/desk/items/{world.items['X'].public_id}/rice",
                               {"rice_confidence": "80", "effort": "2"}, page="/admin/desk")
    assert response.status_code == 303, response.text
    return world


RICE = {"X": (80, Decimal(2))}
