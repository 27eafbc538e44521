"""Server time of the prioritisation desk on a generated database, measured in process.

    .venv/bin/python bench/desk.py /tmp/ahead-bench.db                 # after bench/generate.py
    .venv/bin/python bench/desk.py postgresql://postgres@127.0.0.1:5432/bench_ahead --requests 10

Drives the real app (create_app, all its middleware) through ASGI in this process with a staff member's
session, so the time is the server's alone: routing, the desk's SQL, the template. Prints, for each view of
the desk, the median and the slowest of `--requests` runs after one warm-up (wall time), the median CPU time of
this process (the fair figure on a machine shared with other work: PostgreSQL's own CPU is not in it, SQLite's
is), and the time to stream the whole desk as CSV; and the load average before and after. The desk reads the
aggregates the triggers keep (app/desk/aggregates.py): run it on a --scale 0.1 and a --scale 1 database to see
that its time does not grow with the number of votes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import database_url


def prepare(url: str) -> tuple[str, str, int, str, str, str]:
    """A staff session cookie, the most voted item's public id, an organisation id, a segment slug, a product
    slug and a tag slug."""
    from app.accounts import service as accounts
    from app.accounts.models import STAFF_ROLES, User
    from app.db import Database
    from app.organisations.models import Organisation, Segment
    from app.roadmap.models import Item, Product, Tag

    database = Database(url, pool_size=1)
    try:
        with database.transaction() as session:
            staff = session.scalar(select(User).where(User.role.in_(STAFF_ROLES), User.is_active.is_(True))
                                   .order_by(User.id).limit(1))
            if staff is None:
                sys.exit("no staff member in this database: run bench/generate.py first")
            token = accounts.start_session(session, user=staff, user_agent="bench/desk.py")
            top = session.scalar(select(Item.public_id).order_by(Item.vote_count.desc()).limit(1))
            org = session.scalar(select(Organisation.id).join(User, User.organisation_id == Organisation.id)
                                 .group_by(Organisation.id).order_by(func.count().desc()).limit(1))
            segment = session.scalar(select(Segment.slug).order_by(Segment.weight.desc()).limit(1))
            product = session.scalar(select(Product.slug).order_by(Product.id).limit(1))
            tag = session.scalar(select(Tag.slug).order_by(Tag.id).limit(1))
            return f"ahead_session={token}", top or "", org or 0, segment or "", product or "", tag or ""
    finally:
        database.dispose()


async def call(app: Any, path: str, cookie: str) -> tuple[int, int]:
    """One GET through the ASGI app; the status and the body's size."""
    raw_path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"testserver"), (b"cookie", cookie.encode())],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {}}
    status, size = 0, 0

    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:  # a streamed answer listens for a disconnect: the client stays until the end
            await asyncio.Event().wait()
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    return status, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target")
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()
    url = database_url(args.target)
    cookie, top, org, segment, product, tag = prepare(url)
    os.environ.update(DATABASE_URL=url, AHEAD_ENV="production", SECRET_KEY=secrets.token_urlsafe(48),
                      BASE_URL="http://testserver")
    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings())
    views = [
        ("desk, default (90 days, by demand)", "/admin/desk", args.requests),
        ("desk, all time, by RICE", "/admin/desk?window=all&sort=rice", args.requests),
        ("desk, 30 days, segment, by trend", f"/admin/desk?window=30&segment={segment}&sort=trend", args.requests),
        ("desk, 365 days, by organisations", "/admin/desk?window=365&sort=organisations", args.requests),
        ("desk, 90 days, segment, by revenue", f"/admin/desk?segment={segment}&sort=revenue", args.requests),
        ("desk, 30 days, by importance, asc", "/admin/desk?window=30&sort=importance&dir=asc", args.requests),
        ("desk, product + stage, by voters", f"/admin/desk?product={product}&stage=planned&sort=voters",
         args.requests),
        ("desk, tag, all time, by feedback", f"/admin/desk?tag={tag}&window=all&sort=feedback", args.requests),
        ("desk, organisation, by revenue", f"/admin/desk?window=365&organisation={org}&sort=revenue",
         args.requests),
        ("desk, page 100, by title", "/admin/desk?window=all&sort=title&page=100", args.requests),
        ("demand of the top item", f"/admin/desk/items/{top}?window=all", args.requests),
        ("desk CSV, all rows", "/admin/desk/export.csv?window=all", max(1, args.requests // 5)),
    ]

    async def run() -> None:
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'view':<38} {'median ms':>10} {'max ms':>8} {'cpu ms':>8} {'bytes':>10}")
        for name, path, runs in views:
            status, size = await call(app, path, cookie)  # warm-up
            if status != 200:
                print(f"{name:<38} HTTP {status}")
                continue
            times, cpu = [], []
            for _ in range(runs):
                started, started_cpu = time.perf_counter(), time.process_time()
                await call(app, path, cookie)
                times.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - started_cpu) * 1000)
            print(f"{name:<38} {statistics.median(times):10.1f} {max(times):8.1f} {statistics.median(cpu):8.1f}"
                  f" {size:10,}")
        print(f"load average {os.getloadavg()[0]:.1f} after")

    asyncio.run(run())
    app.state.database.dispose()


if __name__ == "__main__":
    main()
