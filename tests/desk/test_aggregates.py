"""The desk's aggregates equal a recount from the vote rows after anything that changes a vote's count.

Random sequences of what people and staff do — votes, changed importances, withdrawals, votes captured for a
customer, merges and their undo, people moving organisation or deleting their account, organisations changing
segment or revenue, votes backdated (time passing), a new revenue factor (summed at once, or queued and summed a
batch of items at a time between the other steps, as the outbox's worker does on a large desk), windows moved
forward — and after each step the aggregates are recounted from the raw rows (`ahead desk-check`'s check, which
includes the next factor's sums of the items a running job has filled), and the desk read from them is compared,
window by window, segment by segment and organisation by organisation, with the desk computed from the vote rows
(tests/desk/raw.py) with the weights the desk says it uses (the previous revenue factor while a job runs).
"""

from __future__ import annotations

import contextlib
import random
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.desk import aggregates
from app.desk import service as desk
from app.errors import Conflict
from app.organisations.models import Organisation, Segment
from app.roadmap import merge as merging
from app.voting import service as voting
from app.voting.models import CaptureSource, Importance, Merge, Vote
from tests.desk.helpers import RICE, assert_matches, expected_desk, page_rows, set_up
from tests.desk.raw import raw_desk
from tests.factories import make_admin, make_item, make_pm, make_product, make_user
from tests.helpers.http import sign_in


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


def _same(a: desk.DeskRow, b: desk.DeskRow) -> bool:
    numbers = ("demand", "impact", "rice")
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if name in numbers and x is not None and y is not None:
            if abs(float(x) - float(y)) > 1e-6 * max(1.0, abs(float(y))):
                return False
        elif name == "revenue":
            if Decimal(x) != Decimal(y):
                return False
        elif x != y:
            return False
    return True


def _check(session: Session, step: str, *, pages: bool = True) -> None:
    session.flush()
    assert desk.check_aggregates(session) == [], step
    if not pages:
        return
    weights = desk.desk_weights(session)
    now = desk.utcnow()
    segments = ["", *list(session.scalars(select(Segment.slug)))]
    # Each segment, each organisation, and the first organisation within a segment (it is in it or lists nothing).
    organisations = list(session.scalars(select(Organisation.id).order_by(Organisation.id)))
    filters = [(segment, None) for segment in segments] + [("", org) for org in organisations] + [
        (segments[1], organisations[0])]
    for window in desk.WINDOWS:
        for segment, organisation in filters:
            query = desk.DeskQuery(window=window, segment=segment, organisation=organisation, sort=desk.Sort.demand)
            plan = desk._plan(session, query=query, weights=weights, now=now)
            kept = plan.rows(session, session.execute(plan.stmt).all())
            raw = raw_desk(session, query, weights, now)
            where = (step, window, segment, organisation)
            assert [r.public_id for r in kept] == [r.public_id for r in raw], where
            for k, r in zip(kept, raw, strict=True):
                assert _same(k, r), (*where, k, r)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_keep_the_aggregates_equal_to_a_recount(session: Session, seed: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    pm = make_pm(session)
    segments = [Segment(slug=f"tier{n}", name=f"Tier {n}", weight=Decimal(n + 1)) for n in range(2)]
    session.add_all(segments)
    session.flush()
    orgs = [Organisation(name=f"Org {n}", segment_id=segments[n % 2].id if n < 3 else None,
                         revenue=Decimal(rng.choice([0, 25_000, 120_000, 480_000]))) for n in range(4)]
    session.add_all(orgs)
    session.flush()
    people = [make_user(session, email=f"p{n}@example.com", password=None,
                        organisation_id=rng.choice([None, *[o.id for o in orgs]])) for n in range(10)]
    product = make_product(session)
    items = [make_item(session, product=product) for _ in range(5)]
    merges: list[Merge] = []
    now = desk.utcnow()

    def open_items() -> list:  # type: ignore[type-arg]
        for item in items:
            session.refresh(item, ["merged_into_id"])
        return [i for i in items if i.merged_into_id is None]

    mid_job = 0  # checks made with a next revenue factor filled for some items and not others

    def random_weights() -> desk.Weights:
        return desk.Weights(revenue_mode=rng.choice(list(desk.RevenueMode)),
                            revenue_unit=Decimal(rng.choice([50_000, 100_000])), revenue_cap=Decimal(2))

    for step in range(60):
        action = rng.choice(["vote", "vote", "vote", "withdraw", "capture", "backdate", "merge", "undo", "move",
                             "organisation", "delete", "weights", "advance", "factor", "factor", "batch", "batch", "batch"])
        live = [p for p in people if p.deleted_at is None]
        if action in ("vote", "withdraw", "capture") and open_items() and live:
            item, person = rng.choice(open_items()), rng.choice(live)
            if action == "vote":
                voting.cast_vote(session, item=item, user=person, importance=rng.choice(list(Importance)))
            elif action == "capture":
                voting.cast_vote(session, item=item, user=person, importance=rng.choice(list(Importance)),
                                 captured_by=pm, source=CaptureSource.call, keep_higher=True)
            else:
                voting.withdraw_vote(session, item=item, user=person)
        elif action == "backdate":
            vote_ids = list(session.scalars(select(Vote.id)))
            if vote_ids:
                when = now - timedelta(days=rng.choice([0, 3, 29, 30, 31, 83, 84, 89, 90, 200, 364, 365, 400]),
                                       hours=rng.randint(0, 23))
                session.execute(update(Vote).where(Vote.id == rng.choice(vote_ids)).values(created_at=when))
        elif action == "merge" and len(open_items()) > 2:
            source, target = rng.sample(open_items(), 2)
            merges.append(merging.merge_items(session, source=source, target=target, actor=pm))
        elif action == "undo" and merges:
            merge = merges.pop(rng.randrange(len(merges)))
            with contextlib.suppress(Conflict):
                merging.undo_merge(session, merge=merge, actor=pm)
        elif action == "move" and live:
            rng.choice(live).organisation_id = rng.choice([None, *[o.id for o in orgs]])
        elif action == "organisation":
            org = rng.choice(orgs)
            org.segment_id = rng.choice([None, *[s.id for s in segments]])
            org.revenue = Decimal(rng.choice([0, 10_000, 75_000, 1_000_000]))
        elif action == "delete" and len(live) > 3:
            person = rng.choice(live)
            accounts.delete_account(session, user=person, confirm_email=person.email)
        elif action == "weights":
            desk.update_weights(session, actor=pm, weights=random_weights())
        elif action == "factor":
            with monkeypatch.context() as large:  # queued for the worker, as on a large desk
                large.setattr(desk, "REFACTOR_IN_REQUEST_ROWS", 0)
                desk.update_weights(session, actor=pm, weights=random_weights())
        elif action == "batch":
            desk.refactor_step(session, items=1)
            st = aggregates.state(session)
            mid_job += st is not None and st.next_through is not None
        elif action == "advance":
            # Time passes: the aggregates as they were counted some days ago (the desk reads them right all the
            # same), then moved forward to today.
            days = rng.choice([1, 2, 40])
            weights = desk.get_weights(session)
            aggregates.rebuild(session, today=now.date() - timedelta(days=days),
                               revenue_mode=weights.revenue_mode.value, revenue_unit=weights.revenue_unit,
                               revenue_cap=weights.revenue_cap)
            assert desk.windows_behind(session)
            _check(session, f"{step}: windows {days} days behind")
            assert desk.advance_windows(session) and not desk.windows_behind(session)
        _check(session, f"{step}: {action}", pages=step % 6 == 5 or action == "batch")
    while not desk.refactor_step(session, items=1):
        _check(session, "the job's last batches")
    assert desk.refactor_pending(session) is None and desk.desk_weights(session) == desk.get_weights(session)
    _check(session, "the end")
    assert mid_job, "no step ran with a factor half summed"


async def test_the_first_desk_of_a_day_moves_the_windows_forward_and_shows_the_same_figures(client, session,
                                                                                           admin) -> None:
    world = await set_up(client, session)
    weights = desk.get_weights(session)
    # The aggregates as the migration left them three days ago: the windows hold days that have left them since.
    aggregates.rebuild(session, today=desk.utcnow().date() - timedelta(days=3), revenue_mode=weights.revenue_mode.value,
                       revenue_unit=weights.revenue_unit, revenue_cap=weights.revenue_cap)
    assert desk.windows_behind(session)
    for window in desk.WINDOWS:
        page = await client.get(f"/admin/desk?window={window}")
        assert page.status_code == 200
        assert_matches(dict(page_rows(page.text)), expected_desk(window, rice=RICE))
    assert not desk.windows_behind(session)
    assert desk.check_aggregates(session) == []
    assert world.items["X"].id
