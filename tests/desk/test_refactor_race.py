"""A customer's vote never waits for a PM's new revenue factor, on PostgreSQL (two connections; SQLite has one
writer, whose lock each batch takes and gives back the same way).

The outbox's job sums the new factor a batch of items per transaction, holding the desk's lock only for a batch.
A vote committed while the job is between batches goes through at once, counts with the factor in force, and is
counted with the new one once the job has finished; the aggregates then equal a recount from the vote rows.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app import outbox
from app.accounts.models import User
from app.desk import aggregates
from app.desk import service as desk
from app.organisations.models import Organisation
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_admin, make_item, make_user
from tests.helpers.databases import connected, own_database, server_url

pytestmark = pytest.mark.skipif(server_url() is None, reason="concurrent writers need PostgreSQL")


def test_a_vote_commits_at_once_while_the_factor_job_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with own_database(tmp_path, "desk_factor_race") as url, connected(url) as database:
        with database.transaction() as session:
            orgs = [Organisation(name=f"Org {n}", revenue=Decimal(40_000 * (n + 1))) for n in range(3)]
            session.add_all(orgs)
            session.flush()
            people = [make_user(session, email=f"p{n}@example.com", password=None, organisation_id=orgs[n % 3].id)
                      for n in range(6)]
            items = [make_item(session) for _ in range(8)]
            for n, item in enumerate(items):
                for person in people[: n % 4 + 1]:
                    voting.cast_vote(session, item=item, user=person, importance=Importance.important)
            late = make_user(session, email="late@example.com", password=None, organisation_id=orgs[2].id)
            admin = make_admin(session, email="ada@example.com")
            ids: dict[str, Any] = {"items": [i.id for i in items], "late": late.id, "admin": admin.id}
        with database.transaction() as session:
            monkeypatch.setattr(desk, "REFACTOR_IN_REQUEST_ROWS", 0)  # queued for the worker, as on a large desk
            wanted = desk.Weights(revenue_mode=desk.RevenueMode.logarithmic, revenue_unit=Decimal(50_000))
            assert desk.update_weights(session, actor=session.get_one(User, ids["admin"]), weights=wanted)
        monkeypatch.setattr(desk, "REFACTOR_BATCH_ITEMS", 1)

        # The job, as the worker runs it, in a thread; it waits before its second batch (the first committed, the
        # desk's lock not taken again) until the votes are in.
        between = threading.Event()
        voted = threading.Event()
        real_step = desk.refactor_step
        steps: list[int] = []

        def step(*args: Any, **kwargs: Any) -> bool:
            steps.append(1)
            if len(steps) == 2:
                between.set()
                voted.wait(30)
            return real_step(*args, **kwargs)

        monkeypatch.setattr(desk, "refactor_step", step)
        failures: list[BaseException] = []

        def run_job() -> None:
            session = database.new_session(write=True)
            try:
                desk.refactor_job(session, outbox.Job(0, desk.REFACTOR_KIND, {}, "race", 0))
                session.commit()
            except BaseException as error:  # reported by the test below
                failures.append(error)
                session.rollback()
            finally:
                session.close()

        job = threading.Thread(target=run_job)
        job.start()
        assert between.wait(30)
        try:
            # A vote on the item filled already and one on an item not filled yet, each in its own transaction.
            for item_id in (ids["items"][0], ids["items"][-1]):
                started = time.perf_counter()
                with database.transaction() as session:
                    voting.cast_vote(session, item=session.get_one(Item, item_id),
                                     user=session.get_one(User, ids["late"]), importance=Importance.critical)
                assert time.perf_counter() - started < 1.0
            with database.transaction() as session:
                state = aggregates.state(session)
                assert state is not None and state.next_through is not None  # the job is half way
                assert desk.refactor_pending(session) is not None
                assert desk.desk_weights(session).revenue_mode is desk.RevenueMode.off
                assert aggregates.recount(session) == []
        finally:
            voted.set()
            job.join(60)

        assert not job.is_alive()
        assert failures == []
        assert len(steps) > 2  # one batch per item with votes
        with database.transaction() as session:
            assert desk.refactor_pending(session) is None
            assert desk.desk_weights(session) == desk.get_weights(session)
            assert aggregates.recount(session) == []
            late_votes = session.scalars(select(Item.vote_count).where(Item.id.in_(
                [ids["items"][0], ids["items"][-1]])).order_by(Item.id)).all()
            assert late_votes == [2, 5]
