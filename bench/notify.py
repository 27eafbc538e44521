"""Telling the followers of one item: what the request pays, what the worker pays.

    .venv/bin/python bench/notify.py [TARGET] [--followers 10000]

TARGET: a SQLite file (default: a fresh one in a temporary directory) or a PostgreSQL URL whose database
name contains "bench" (see bench/outbox.py). Makes one item with N followers (a third vote, a third follow,
a third both; 2 % opted out, 1 % disabled), then prints:

* the count the Move form shows ("N people will be told": the fan-out's query, counted), per kind;
* the request's share: announcing the move (one outbox job) in its transaction;
* the worker's share: running every notify.fan_out batch (500 people a job) to queue one email each,
  in total and per 1,000 recipients.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select

from app.accounts.models import Role, User
from app.config import Settings
from app.db import Database, utcnow
from app.migrate import upgrade
from app.notify import service as notify
from app.outbox.models import JobState, OutboxJob
from app.roadmap.models import Item, Product, Stage, Visibility
from app.voting.models import Follow, Vote
from bench.outbox import database_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?")
    parser.add_argument("--followers", type=int, default=10_000)
    args = parser.parse_args()
    url = database_for(args.target)
    upgrade(url)
    settings = Settings(database_url=url, secret_key="bench-secret-" + "x" * 40, base_url="https://roadmap.example",
                        _env_file=None)  # type: ignore[call-arg]
    database = Database(url)
    n = args.followers
    with database.write_sessions() as session, session.begin():
        stamp = int(time.time())
        session.execute(insert(User), [{"email": f"f{stamp}-{i}@example.com", "display_name": f"F {i}",
                                        "role": Role.customer, "is_active": i % 100 != 0, "created_at": utcnow()}
                                       for i in range(n)])
        pm = User(email=f"pm{stamp}@example.com", display_name="PM", role=Role.pm, created_at=utcnow())
        product = Product(slug=f"p{stamp}", name="Bench")
        session.add_all([pm, product])
        session.flush()
        stages = {s.slug: s for s in session.scalars(select(Stage))}
        item = Item(public_id=f"b{stamp}"[:16], slug="bench", product_id=product.id,
                    stage_id=stages["planned"].id, title="Bench item", visibility=Visibility.public,
                    published_at=utcnow())
        session.add(item)
        session.flush()
        ids = list(session.scalars(select(User.id).where(User.email.like(f"f{stamp}-%")).order_by(User.id)))
        now = utcnow()
        session.execute(insert(Vote), [{"item_id": item.id, "user_id": u, "importance": 2, "created_at": now,
                                        "updated_at": now} for k, u in enumerate(ids) if k % 3 != 1])
        session.execute(insert(Follow), [{"item_id": item.id, "user_id": u, "created_at": now,
                                          "stopped_at": now if k % 50 == 0 else None}
                                         for k, u in enumerate(ids) if k % 3 != 0 or k % 50 == 0])
        item_id, pm_id = item.id, pm.id

    with database.write_sessions() as session, session.begin():
        item = session.get(Item, item_id)
        pm = session.get(User, pm_id)
        assert item is not None and pm is not None
        started = time.perf_counter()
        audience = notify.audience_of(session, item=item, actor=pm)
        counted = time.perf_counter() - started
        print(f"Move form count ({n:,} candidates): { {k.value: v for k, v in audience.per_kind.items()} } "
              f"in {counted * 1000:.0f} ms (4 counts)")
        started = time.perf_counter()
        notify.announce_move(session, item=item, old=stages["planned"], new=stages["in-progress"], actor=pm,
                             change_id=f"bench-{stamp}")
        session.flush()
        print(f"Request: announcing the move (one job) {(time.perf_counter() - started) * 1000:.1f} ms")

    notify.job_settings = lambda: settings
    emails = batches = 0
    started = time.perf_counter()
    while True:
        with database.write_sessions() as session, session.begin():
            job = session.scalar(select(OutboxJob).where(OutboxJob.kind == notify.FAN_OUT,
                                                         OutboxJob.state == JobState.pending).limit(1))
            if job is None:
                break
            emails += notify.fan_out(session, dict(job.payload), settings=settings)
            job.state = JobState.done
            batches += 1
    spent = time.perf_counter() - started
    with database.read_sessions() as session:
        queued = session.scalar(select(func.count()).select_from(OutboxJob).where(
            OutboxJob.kind == "email", OutboxJob.key.like(f"email:notify:move:{item_id}:%"))) or 0
    print(f"Worker: {batches} fan-out jobs, {queued:,} emails queued in {spent:.2f} s "
          f"({spent / max(1, queued) * 1000 * 1000:.0f} ms per 1,000 recipients)")
    database.dispose()


if __name__ == "__main__":
    main()
