"""A new revenue factor on a generated database: what the weights form does in its request, and the job after.

    .venv/bin/python bench/desk_weights.py /tmp/ahead-bench.db                 # after bench/generate.py
    .venv/bin/python bench/desk_weights.py postgresql://postgres@127.0.0.1:5432/bench_ahead

For each change (linear with another unit, logarithmic, capped, off, back to linear), in transactions of their
own as the app has them: the form's work (`desk.update_weights`, its commit included: on a desk above
REFACTOR_IN_REQUEST_ROWS it stores the weights and queues the job), the desk's first page while the job is
pending (the previous factor, with the notice), and the job (`desk.refactor_job`, as the outbox's worker runs it).
Wall and CPU time of this process (PostgreSQL's own CPU is not in it; SQLite's is) and the load average. The
database is changed: the weights end as they began, and the customers' votes cast meanwhile are withdrawn.

Customers vote meanwhile: a thread of its own (its own engine, the app's 5 s lock timeout) casts votes one
transaction each, as the vote route does, for 2 s before each change (the reference: no job running) and for as
long as the job runs. Printed: how many votes, the slowest, and how many ran out of lock wait (a 503 in the app).
The job's longest hold of the desk's lock is its longest transaction: with `--batches`, the job's batches are timed
one by one (`desk.refactor_step`, what `refactor_job` loops over); without, the job is one transaction.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import database_url


def timed(fn: Any) -> tuple[float, float, Any]:
    started, started_cpu = time.perf_counter(), time.process_time()
    result = fn()
    return (time.perf_counter() - started) * 1000, (time.process_time() - started_cpu) * 1000, result


class Voters:
    """Customers voting in a thread of their own: each vote (or withdrawal of one cast here) is a transaction."""

    def __init__(self, url: str, seed: int = 7) -> None:
        from sqlalchemy import select

        from app.accounts.models import Role, User
        from app.db import Database
        from app.roadmap.models import Item

        self.database = Database(url, pool_size=2, lock_timeout=5.0)
        with self.database.transaction() as session:
            self.users = list(session.scalars(select(User.id).where(User.role == Role.customer).order_by(User.id)
                                              .limit(2000)))
            self.items = list(session.scalars(select(Item.id).where(Item.merged_into_id.is_(None)).order_by(Item.id)
                                              .limit(2000)))
        self.rng = random.Random(seed)
        self.cast: set[tuple[int, int]] = set()
        self.latencies: list[float] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _one(self) -> None:
        from app.accounts.models import User
        from app.db import database_busy
        from app.roadmap.models import Item
        from app.voting import service as voting
        from app.voting.models import Importance

        user_id, item_id = self.rng.choice(self.users), self.rng.choice(self.items)
        started = time.perf_counter()
        try:
            with self.database.transaction() as session:
                user, item = session.get_one(User, user_id), session.get_one(Item, item_id)
                if (user_id, item_id) in self.cast:
                    voting.withdraw_vote(session, item=item, user=user)
                else:
                    voting.cast_vote(session, item=item, user=user, importance=self.rng.choice(list(Importance)))
        except Exception as exc:
            if database_busy(exc) is None:
                raise
            self.refused += 1
        else:
            self.cast ^= {(user_id, item_id)}
        self.latencies.append((time.perf_counter() - started) * 1000)

    def start(self) -> None:
        self.latencies, self.refused = [], 0
        self._stop.clear()

        def run() -> None:
            while not self._stop.is_set():
                self._one()
                time.sleep(0.05)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> str:
        self._stop.set()
        if self._thread:
            self._thread.join()
        worst = max(self.latencies, default=0.0)
        return f"{len(self.latencies):4d} votes, max {worst:6.0f} ms, {self.refused} refused"

    def withdraw_all(self) -> None:
        from app.accounts.models import User
        from app.roadmap.models import Item
        from app.voting import service as voting

        with self.database.transaction() as session:
            for user_id, item_id in self.cast:
                voting.withdraw_vote(session, item=session.get_one(Item, item_id), user=session.get_one(User, user_id))
        self.cast.clear()
        self.database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target")
    parser.add_argument("--batches", action="store_true", help="time the job's batches one by one")
    args = parser.parse_args()
    url = database_url(args.target)
    from dataclasses import replace

    from app import outbox
    from app.accounts.models import Role, User
    from app.db import Database
    from app.desk import service as desk
    from app.desk.models import DeskOrgDay

    database = Database(url, pool_size=2)
    voters = Voters(url)
    with database.transaction() as session:
        admin = session.scalar(select(User).where(User.role == Role.admin).order_by(User.id).limit(1))
        rows = session.scalar(select(func.count()).select_from(DeskOrgDay))
        start = desk.get_weights(session)
    print(f"desk_org_days rows: {rows:,}; in-request limit {desk.REFACTOR_IN_REQUEST_ROWS:,}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    changes = [
        replace(start, revenue_mode=desk.RevenueMode.linear, revenue_unit=Decimal(250_000)),
        replace(start, revenue_mode=desk.RevenueMode.logarithmic, revenue_unit=Decimal(100_000)),
        replace(start, revenue_mode=desk.RevenueMode.capped, revenue_unit=Decimal(100_000), revenue_cap=Decimal(3)),
        replace(start, revenue_mode=desk.RevenueMode.off, revenue_unit=Decimal(100_001)),
    ]
    print(f"{'change':<34} {'form ms (cpu)':>16} {'desk pending ms':>16} {'job ms (cpu)':>18} "
          f"{'longest hold':>12}  votes: no job | during the job; load")
    for weights in [*changes, start]:

        def form(weights: desk.Weights = weights) -> bool:
            with database.transaction() as session:
                actor = session.get(User, admin.id)
                return desk.update_weights(session, actor=actor, weights=weights)

        def page() -> int:
            with database.transaction() as session:
                result = desk.desk_page(session, query=desk.DeskQuery(), weights=desk.desk_weights(session))
                return len(result.rows) if desk.refactor_pending(session) else -1

        def job() -> float:
            """The job; its longest transaction in ms."""
            if not args.batches:
                started = time.perf_counter()
                with database.transaction() as session:
                    desk.refactor_job(session, outbox.Job(0, desk.REFACTOR_KIND, {}, "bench", 0))
                return (time.perf_counter() - started) * 1000
            longest, done = 0.0, False
            while not done:  # refactor_job's loop, timed
                started = time.perf_counter()
                with database.transaction() as session:
                    done = desk.refactor_step(session)
                longest = max(longest, (time.perf_counter() - started) * 1000)
                if not done:
                    with database.transaction() as session:
                        desk.pause_between_batches(session)
            return longest

        voters.start()
        time.sleep(2)
        quiet = voters.stop()
        form_ms, form_cpu, _ = timed(form)
        page_ms, _cpu, shown = timed(page)
        voters.start()
        job_ms, job_cpu, hold = timed(job)
        during = voters.stop()
        label = f"{weights.revenue_mode.value} U={weights.revenue_unit:,.0f}"
        print(f"{label:<34} {form_ms:9.0f} ({form_cpu:4.0f}) {page_ms:10.0f}{'' if shown >= 0 else ' (none)':>6} "
              f"{job_ms:10.0f} ({job_cpu:5.0f}) {hold:9.0f} ms  {quiet} | {during}; {os.getloadavg()[0]:.1f}",
              flush=True)
    voters.withdraw_all()
    database.dispose()


if __name__ == "__main__":
    main()
