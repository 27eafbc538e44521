"""The desk's order and pages: every sort, both directions, page after page, against the desk computed from the
vote rows (tests/desk/raw.py).

The desk puts the items in order with only what the sort reads, then reads every figure for the page's items only
(app/desk/service.py, `desk_page`); a page that disagreed with that order, or an item lost or shown twice where
equal figures meet a page's edge, is what a PM paging through the desk would notice. The votes are chosen so that
many items tie on every column (a handful of people, three importances, weights that are exact in binary), and the
pages hold two items, so ties straddle page boundaries everywhere.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.desk import service as desk
from app.feedback.models import Feedback, FeedbackKind
from app.organisations.models import Organisation, Segment
from app.roadmap.models import Timeframe
from app.voting import service as voting
from app.voting.models import Importance, Vote
from tests.desk.raw import raw_desk
from tests.factories import make_item, make_pm, make_product, make_tag, make_user

PER_PAGE = 2
# Exact in binary (factors 1, 1.5, 3; segment weights 2 and 1.5): equal votes give equal sums in any order of
# addition, so a tie in the desk is a tie in the reference.
WEIGHTS = desk.Weights(nice_to_have=Decimal(1), important=Decimal(2), critical=Decimal(4),
                       revenue_mode=desk.RevenueMode.linear, revenue_unit=Decimal(100_000))


@pytest.fixture
def world(session: Session) -> dict[str, object]:
    rng = random.Random(10)
    pm = make_pm(session)
    desk.update_weights(session, actor=pm, weights=WEIGHTS)
    segments = [Segment(slug="big", name="Big", weight=Decimal(2)), Segment(slug="small", name="Small",
                                                                             weight=Decimal("1.5"))]
    session.add_all(segments)
    session.flush()
    orgs = [Organisation(name="Acme", segment_id=segments[0].id, revenue=Decimal(200_000)),
            Organisation(name="Beta", segment_id=segments[1].id, revenue=Decimal(50_000)),
            Organisation(name="Gamma", segment_id=None, revenue=Decimal(0))]
    session.add_all(orgs)
    session.flush()
    people = [make_user(session, email=f"voter{n}@example.com", password=None,
                        organisation_id=[orgs[0].id, orgs[1].id, orgs[2].id, None][n % 4]) for n in range(8)]
    products = [make_product(session), make_product(session)]
    tag = make_tag(session)
    stages = ["planned", "under-consideration", "in-progress"]
    items = []
    for n in range(13):
        item = make_item(session, product=products[n % 2], stage_slug=stages[n % 3], tags=[tag] if n % 3 else [],
                         title=f"Item {n % 5}", created_at=desk.utcnow() - timedelta(days=[5, 50, 5][n % 3]),
                         timeframe=[Timeframe.now, Timeframe.later, Timeframe.next][n % 3])
        if n % 4 == 1:  # RICE estimates on some items (equal on several): the others show "—" and sort last
            item.rice_confidence, item.effort = 50, Decimal(2)
        items.append(item)
    now = desk.utcnow()
    for item in items[:-2]:  # the last two have no vote at all
        for person in rng.sample(people, rng.choice([1, 1, 2, 3])):
            voting.cast_vote(session, item=item, user=person, importance=rng.choice(list(Importance)))
            session.execute(update(Vote).where(Vote.item_id == item.id, Vote.user_id == person.id)
                            .values(created_at=now - timedelta(days=rng.choice([1, 1, 20, 100, 400]))))
        if rng.random() < 0.4:
            org = rng.choice(orgs)
            session.add(Feedback(kind=FeedbackKind.reason, author_id=people[0].id, organisation_id=org.id,
                                 item_id=item.id, body="Please", created_at=now - timedelta(days=rng.choice([2, 200]))))
    session.flush()
    return {"segment": segments[0].slug, "organisation": orgs[1].id, "product": products[0].slug, "tag": tag.slug,
            "now": now}


def _filters(world: dict[str, object]) -> list[dict[str, object]]:
    return [{}, {"segment": world["segment"]}, {"organisation": world["organisation"]},
            {"product": world["product"], "tag": world["tag"]}, {"stage": "planned"}]


def _same_figures(shown: desk.DeskRow, expected: desk.DeskRow) -> None:
    for name in shown.__dataclass_fields__:
        got, want = getattr(shown, name), getattr(expected, name)
        if name in ("demand", "impact", "rice") and got is not None and want is not None:
            assert got == pytest.approx(want, rel=1e-9), (expected.title, name)
        elif name == "revenue":
            assert Decimal(got) == Decimal(want), (expected.title, name)
        else:
            assert got == want, (expected.title, name)


@pytest.mark.parametrize("window", ["30", "all"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_every_sort_pages_through_the_desk_the_vote_rows_give(session: Session, world: dict[str, object],
                                                              window: str, direction: str) -> None:
    now = world["now"]
    ties = 0  # equal figures either side of a page boundary, in the sort's own column
    for filters in _filters(world):
        for sort in desk.Sort:
            query = desk.DeskQuery(window=window, sort=sort, direction=direction, **filters)  # type: ignore[arg-type]
            expected = raw_desk(session, query, desk.desk_weights(session), now)  # type: ignore[arg-type]
            where = (window, direction, sort.value, filters)
            pages = max(1, math.ceil(len(expected) / PER_PAGE))
            shown: list[desk.DeskRow] = []
            for number in range(1, pages + 1):
                page = desk.desk_page(session, query=replace(query, page=number), weights=WEIGHTS,
                                      now=now, per_page=PER_PAGE)  # type: ignore[arg-type]
                assert (page.total, page.pages) == (len(expected), pages), where
                assert len(page.rows) == min(PER_PAGE, len(expected) - (number - 1) * PER_PAGE), (*where, number)
                shown += page.rows
            assert [r.public_id for r in shown] == [r.public_id for r in expected], where
            for got, want in zip(shown, expected, strict=True):
                _same_figures(got, want)
            ties += sum(getattr(shown[k - 1], column) == getattr(shown[k], column)
                        for k in range(PER_PAGE, len(shown), PER_PAGE) for column in _TIED if column == sort.value)
            beyond = desk.desk_page(session, query=replace(query, page=pages + 1), weights=WEIGHTS, now=now,
                                    per_page=PER_PAGE)  # type: ignore[arg-type]
            assert beyond.rows == [] and beyond.past_the_end and beyond.total == len(expected), where
    assert ties >= 5, "the votes should make equal figures meet at page boundaries"


_TIED = ("voters", "organisations", "demand", "revenue", "rice", "feedback", "title")
