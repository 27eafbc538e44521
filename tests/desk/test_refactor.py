"""A new revenue factor on a large desk is summed again by the outbox's worker, not in the weights' request.

Until the job has run the desk (page, CSV, API, an item's demand, a decision's snapshot) shows every figure with
the factor they were counted with and says a re-ranking is under way; votes cast meanwhile count exactly, with
that factor and then with the new one. Each mode is checked against the desk computed from the vote rows
(tests/desk/raw.py) and the aggregates against `ahead desk-check`'s recount.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.desk import service as desk
from app.outbox.models import OutboxJob
from app.voting import service as voting
from app.voting.models import Importance
from tests.desk.helpers import WEIGHTS, csv_rows, set_up
from tests.desk.raw import raw_desk
from tests.factories import make_admin, make_user
from tests.helpers.http import post_form, sign_in
from tests.helpers.outbox import deliver
from tests.helpers.tokens import bearer, create_token

NOTICE = "Re-ranking with the new revenue factor"
# Each mode, from the set-up's linear factor with U = 100,000 (linear itself: another unit).
CHANGES = {
    "off": {"revenue_mode": "off"},
    "linear": {"revenue_mode": "linear", "revenue_unit": "40000"},
    "logarithmic": {"revenue_mode": "logarithmic", "revenue_unit": "30000"},
    "capped": {"revenue_mode": "capped", "revenue_unit": "20000", "revenue_cap": "2.5"},
}


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


async def _set_up_large(client, session, monkeypatch):  # type: ignore[no-untyped-def]
    """The shared world (its linear factor summed in the request), then every desk counts as large: a new revenue
    factor goes to the worker."""
    world = await set_up(client, session)
    monkeypatch.setattr(desk, "REFACTOR_IN_REQUEST_ROWS", 1)
    return world


async def api_get(client, path: str, token: str):  # type: ignore[no-untyped-def]
    """An API call carrying only the token (the signed-in page's cookies set aside)."""
    saved = dict(client.cookies)
    client.cookies.clear()
    try:
        return await client.get(path, headers=bearer(token))
    finally:
        for name, value in saved.items():
            client.cookies.set(name, value)


def _demand(rows: list[desk.DeskRow]) -> dict[str, float]:
    return {r.public_id: round(r.demand, 6) for r in rows}


def _assert_desk_is(session: Session, weights: desk.Weights) -> None:
    """The desk as the aggregates give it equals the desk from the vote rows with `weights`, in every window."""
    session.flush()
    assert desk.check_aggregates(session) == []
    now = utcnow()
    for window in desk.WINDOWS:
        query = desk.DeskQuery(window=window, sort=desk.Sort.demand)
        shown = desk.desk_page(session, query=query, weights=desk.desk_weights(session), now=now).rows
        raw = raw_desk(session, query, weights, now)
        assert [r.public_id for r in shown] == [r.public_id for r in raw], window
        assert _demand(shown) == pytest.approx(_demand(raw)), window
        assert [(r.voters, r.organisations, r.revenue) for r in shown] == [
            (r.voters, r.organisations, r.revenue) for r in raw], window


def _vote(session: Session, world, name: str, org: str, item: str, importance: Importance) -> None:  # type: ignore[no-untyped-def]
    person = make_user(session, email=f"{name}@example.com", organisation_id=world.orgs[org].id, password=None)
    voting.cast_vote(session, item=world.items[item], user=person, importance=importance)
    session.flush()


@pytest.mark.parametrize("mode", list(CHANGES))
async def test_a_new_factor_is_summed_by_the_worker_and_the_desk_says_so_meanwhile(client, session, admin, monkeypatch,
                                                                                    mode):
    world = await _set_up_large(client, session, monkeypatch)  # linear, U = 100,000
    before = desk.get_weights(session)
    response = await post_form(client, "/admin/desk/weights", {**WEIGHTS, **CHANGES[mode]}, page="/admin/desk/weights")
    assert response.status_code == 303
    wanted = desk.get_weights(session)
    assert wanted.revenue_mode.value == CHANGES[mode]["revenue_mode"] and wanted != before
    assert session.scalar(select(OutboxJob.kind).where(OutboxJob.kind == desk.REFACTOR_KIND)) == desk.REFACTOR_KIND

    # Pending: every figure uses the previous factor, and the page, the demand tab and the weights page say so.
    assert desk.desk_weights(session) == before
    page = await client.get("/admin/desk?window=all")
    assert NOTICE in page.text and "figures use the previous factor" in page.text
    assert "Linear: 1 + r / U" in page.text  # "How it is computed" names the factor the figures use
    demand = await client.get(f"/admin/desk/items/{world.items['X'].public_id}")
    assert NOTICE in demand.text
    assert NOTICE in (await client.get("/admin/desk/weights")).text
    _assert_desk_is(session, before)

    # Votes between the change and the job count exactly, with the factor in force, then with the new one.
    _vote(session, world, "vic", "acme", "X", Importance.critical)
    _vote(session, world, "val", "beta", "W", Importance.important)
    _assert_desk_is(session, before)
    export = await client.get("/admin/desk/export.csv?window=all")
    shown = desk.desk_page(session, query=desk.DeskQuery(window="all", sort=desk.Sort.demand),
                           weights=desk.desk_weights(session)).rows
    assert {r["Item id"]: float(r["Weighted demand"]) for r in csv_rows(export.content)} == pytest.approx(
        {r.public_id: round(r.demand, 2) for r in shown}, abs=0.006)

    tally = await deliver(client)
    assert tally.done >= 1
    assert desk.refactor_pending(session) is None
    assert desk.desk_weights(session) == wanted
    _assert_desk_is(session, wanted)
    page = await client.get("/admin/desk?window=all")
    assert NOTICE not in page.text


async def test_the_last_of_two_changes_wins_and_the_job_is_idempotent(client, session, admin, monkeypatch):
    world = await _set_up_large(client, session, monkeypatch)
    for change in (CHANGES["logarithmic"], CHANGES["capped"]):
        response = await post_form(client, "/admin/desk/weights", {**WEIGHTS, **change}, page="/admin/desk/weights")
        assert response.status_code == 303
        _vote(session, world, f"v{change['revenue_mode'][:3]}", "acme", "Y", Importance.nice_to_have)
    assert session.scalar(select(OutboxJob.id).where(OutboxJob.kind == desk.REFACTOR_KIND).offset(1)) is not None
    wanted = desk.get_weights(session)
    assert wanted.revenue_mode is desk.RevenueMode.capped

    await deliver(client)
    assert desk.desk_weights(session) == wanted
    _assert_desk_is(session, wanted)
    # Run again (a retry after a crash, say): nothing changes.
    job = session.scalars(select(OutboxJob).where(OutboxJob.kind == desk.REFACTOR_KIND)).first()
    assert job is not None
    desk.refactor_job(session, desk.outbox.Job(job.id, job.kind, {}, job.key, 1))
    _assert_desk_is(session, wanted)


async def test_the_api_and_a_decision_record_the_factor_their_numbers_used(client, session, admin, monkeypatch):
    world = await _set_up_large(client, session, monkeypatch)
    before = desk.get_weights(session)
    token = await create_token(client)
    await post_form(client, "/admin/desk/weights", {**WEIGHTS, **CHANGES["logarithmic"]}, page="/admin/desk/weights")
    body = (await api_get(client, "/api/v1/desk?window=all", token)).json()
    assert body["weights"]["revenue_mode"] == "linear"
    assert body["weights"]["revenue_pending"]["revenue_mode"] == "logarithmic"
    shown = desk.desk_page(session, query=desk.DeskQuery(window="all", sort=desk.Sort.demand),
                           weights=desk.desk_weights(session)).rows
    assert {r["id"]: r["weighted_demand"] for r in body["rows"]} == pytest.approx(
        {r.public_id: r.demand for r in shown}, abs=0.006)
    numbers, record = desk_decisions_snapshot(session, world.items["X"])
    assert record["revenue_mode"] == before.revenue_mode.value
    assert record["revenue_pending"]["revenue_mode"] == "logarithmic"
    await deliver(client)
    numbers, record = desk_decisions_snapshot(session, world.items["X"])
    assert record["revenue_mode"] == "logarithmic" and "revenue_pending" not in record
    body = (await api_get(client, "/api/v1/desk?window=all", token)).json()
    assert body["weights"]["revenue_mode"] == "logarithmic" and body["weights"]["revenue_pending"] is None
    assert numbers["weighted_demand"] > 0


def desk_decisions_snapshot(session: Session, item):  # type: ignore[no-untyped-def]
    from app.desk import decisions

    return decisions.snapshot(session, item=item, now=utcnow() + timedelta(seconds=1))
