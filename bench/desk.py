"""Server time of the prioritisation desk on a generated database, measured in process.

    .venv/bin/python bench/desk.py /tmp/ahead-bench.db                 # after bench/generate.py
    .venv/bin/python bench/desk.py postgresql://postgres@127.0.0.1:5432/bench_ahead --requests 10

Drives the real app (create_app, all its middleware) through ASGI in this process with a staff member's
session, so the time is the server's alone: routing, the desk's SQL, the template. Prints, for each view of
the desk, the median and the slowest of `--requests` runs after one warm-up, and the time to stream the
whole desk as CSV. The desk aggregates the vote rows at each request (no maintained aggregates yet), so its
time grows with the number of votes: run it on a --scale 0.1 and a --scale 1 database to see by how much.
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


def prepare(url: str) -> tuple[str, str, int, str]:
    """A staff session cookie, the most voted item's public id, an organisation id and a segment slug."""
    from app.accounts import service as accounts
    from app.accounts.models import STAFF_ROLES, User
    from app.db import Database
    from app.organisations.models import Organisation, Segment
    from app.roadmap.models import Item

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
            return f"ahead_session={token}", top or "", org or 0, segment or ""
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
    cookie, top, org, segment = prepare(url)
    os.environ.update(DATABASE_URL=url, AHEAD_ENV="production", SECRET_KEY=secrets.token_urlsafe(48),
                      BASE_URL="http://testserver")
    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings())
    views = [
        ("desk, default (90 days, by demand)", "/admin/desk", args.requests),
        ("desk, all time, by RICE", "/admin/desk?window=all&sort=rice", args.requests),
        ("desk, 30 days, segment, by trend", f"/admin/desk?window=30&segment={segment}&sort=trend", args.requests),
        ("desk, organisation, by revenue", f"/admin/desk?window=365&organisation={org}&sort=revenue",
         args.requests),
        ("desk, page 100, by title", "/admin/desk?window=all&sort=title&page=100", args.requests),
        ("demand of the top item", f"/admin/desk/items/{top}?window=all", args.requests),
        ("desk CSV, all rows", "/admin/desk/export.csv?window=all", max(1, args.requests // 5)),
    ]

    async def run() -> None:
        print(f"{'view':<38} {'median ms':>10} {'max ms':>8} {'bytes':>10}")
        for name, path, runs in views:
            status, size = await call(app, path, cookie)  # warm-up
            if status != 200:
                print(f"{name:<38} HTTP {status}")
                continue
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                await call(app, path, cookie)
                times.append((time.perf_counter() - started) * 1000)
            print(f"{name:<38} {statistics.median(times):10.1f} {max(times):8.1f} {size:10,}")

    asyncio.run(run())
    app.state.database.dispose()


if __name__ == "__main__":
    main()
