"""A new revenue factor on a generated database: what the weights form does in its request, and the job after.

    .venv/bin/python bench/desk_weights.py /tmp/ahead-bench.db                 # after bench/generate.py
    .venv/bin/python bench/desk_weights.py postgresql://postgres@127.0.0.1:5432/bench_ahead

For each change (linear with another unit, logarithmic, capped, off, back to linear), in transactions of their
own as the app has them: the form's work (`desk.update_weights`, its commit included: on a desk above
REFACTOR_IN_REQUEST_ROWS it stores the weights and queues the job), the desk's first page while the job is
pending (the previous factor, with the notice), and the job (`desk.refactor_job`, as the outbox's worker runs it).
Wall and CPU time of this process (PostgreSQL's own CPU is not in it; SQLite's is) and the load average. The
database is changed: the weights end as they began.
"""

from __future__ import annotations

import argparse
import os
import sys
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target")
    args = parser.parse_args()
    url = database_url(args.target)
    from dataclasses import replace

    from app import outbox
    from app.accounts.models import Role, User
    from app.db import Database
    from app.desk import service as desk
    from app.desk.models import DeskOrgDay

    database = Database(url, pool_size=2)
    with database.transaction() as session:
        admin = session.scalar(select(User).where(User.role == Role.admin).order_by(User.id).limit(1))
        rows = session.scalar(select(func.count()).select_from(DeskOrgDay))
        start = desk.get_weights(session)
    print(f"desk_org_days rows: {rows:,}; in-request limit {desk.REFACTOR_IN_REQUEST_ROWS:,}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    changes = [
        replace(start, revenue_mode=desk.RevenueMode.linear, revenue_unit=Decimal(250_000)),
        replace(start, revenue_mode=desk.RevenueMode.logarithmic, revenue_unit=Decimal(100_000)),
        replace(start, revenue_mode=desk.RevenueMode.capped, revenue_unit=Decimal(100_000), revenue_cap=Decimal(3)),
        replace(start, revenue_mode=desk.RevenueMode.off, revenue_unit=Decimal(100_001)),
    ]
    print(f"{'change':<34} {'form ms (cpu)':>16} {'desk pending ms':>16} {'job ms (cpu)':>18} load")
    for weights in [*changes, start]:

        def form(weights: desk.Weights = weights) -> bool:
            with database.transaction() as session:
                actor = session.get(User, admin.id)
                return desk.update_weights(session, actor=actor, weights=weights)

        def page() -> int:
            with database.transaction() as session:
                result = desk.desk_page(session, query=desk.DeskQuery(), weights=desk.desk_weights(session))
                return len(result.rows) if desk.refactor_pending(session) else -1

        def job() -> None:
            with database.transaction() as session:
                desk.refactor_job(session, outbox.Job(0, desk.REFACTOR_KIND, {}, "bench", 0))

        form_ms, form_cpu, _ = timed(form)
        page_ms, _cpu, shown = timed(page)
        job_ms, job_cpu, _ = timed(job)
        label = f"{weights.revenue_mode.value} U={weights.revenue_unit:,.0f}"
        print(f"{label:<34} {form_ms:9.0f} ({form_cpu:4.0f}) {page_ms:10.0f}{'' if shown >= 0 else ' (none)':>6} "
              f"{job_ms:10.0f} ({job_cpu:5.0f}) {os.getloadavg()[0]:.1f}")
    database.dispose()


if __name__ == "__main__":
    main()
