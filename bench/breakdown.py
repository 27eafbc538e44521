"""Where a page's time goes: CPU per request, queries per request, time in SQL and in templates.

    .venv/bin/python bench/breakdown.py /tmp/ahead-bench.db
    .venv/bin/python bench/breakdown.py postgresql://postgres@127.0.0.1:5432/bench_ahead --explain
    .venv/bin/python bench/breakdown.py /tmp/ahead-bench.db --cprofile "board, visitor"

Drives the real app (create_app, all its middleware) and bench/reference_app.py in this process through
a bare ASGI call — no server, no sockets, no wrk — so the figures are this process's CPU time per
request, which a busy shared machine inflates much less than it inflates req/s. The ratio
"reference CPU / page CPU" is what the throughput ratio in bench/board.py tends to when both are
CPU-bound. On SQLite the database engine runs in this process, so "SQL" is CPU spent in it; on
PostgreSQL "SQL" is the wall time of each round trip (the server's own CPU is not in this process).

--explain prints the plan of every distinct query the board and the item page run; --cprofile PAGE
prints the functions that cost most for one page.

"search" cycles through four common prefixes (kept pages after the first of each); "search, distinct" asks a
query no request of the run asked before (bench/board.py's `distinct_queries`), so each is a search rendered anew.

"reference" is bare FastAPI answering the very bytes of the visitor's board, fetched from the app first, and
"raw ASGI, same" a raw ASGI app answering them (bench/reference_app.py); "render reference" is the older one,
the board rendered from memory with the real templates on every request.

"vote/unvote" is the JSON vote of static/app.js: 8 customers (sessions from start_session, CSRF cookie and
token as the app makes them), each voting for each votable item of the board and withdrawing at once, so
every request inserts or deletes a vote row; the vote rate limits are raised for it, and what is left is
withdrawn through the voting service at the end. `--pages vote/unvote` measures only that, and with it "vote
reference", bench/reference_vote.py's bare endpoint doing the same writes for the same people (its CPU per vote
is what the portal's tends to when both are CPU-bound; the database's own time is in neither on PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import secrets
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.board import (
    VOTE_LIMITS,
    VoteFixtures,
    clean_up_votes,
    cpu_ticks,
    distinct_queries,
    prepare,
    prepare_votes,
)
from bench.generate import database_url


@dataclass
class Tally:
    queries: int = 0
    sql: float = 0.0
    template: float = 0.0
    statements: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    params: dict[str, Any] = field(default_factory=dict)

    def reset(self) -> None:
        self.queries, self.sql, self.template = 0, 0.0, 0.0
        self.statements.clear()
        self.params.clear()


TALLY = Tally()


def _timed_sqlite_classes() -> tuple[type, type]:
    """A pysqlite connection whose cursors add the CPU time of execute and every fetch to the tally:
    SQLite does a SELECT's work while its rows are fetched, after SQLAlchemy's execute events."""
    import sqlite3

    class TimedCursor(sqlite3.Cursor):
        def _timed(self, method: Any, *args: Any) -> Any:
            start = time.process_time()
            try:
                return method(self, *args)
            finally:
                TALLY.sql += time.process_time() - start

        def execute(self, *args: Any) -> Any:  # type: ignore[override]
            return self._timed(sqlite3.Cursor.execute, *args)

        def fetchone(self) -> Any:
            return self._timed(sqlite3.Cursor.fetchone)

        def fetchmany(self, *args: Any) -> Any:
            return self._timed(sqlite3.Cursor.fetchmany, *args)

        def fetchall(self) -> Any:
            return self._timed(sqlite3.Cursor.fetchall)

    class TimedConnection(sqlite3.Connection):
        def cursor(self, factory: Any = TimedCursor) -> Any:  # type: ignore[override]
            return super().cursor(factory)

    return TimedConnection, TimedCursor


def instrument(engine: Any, *, in_process: bool) -> None:
    from sqlalchemy import event

    clock = time.process_time if in_process else time.perf_counter
    if in_process:
        connection_class, _ = _timed_sqlite_classes()

        @event.listens_for(engine, "do_connect")
        def _connect(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
            cparams["factory"] = connection_class

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool) -> None:
        conn.info["bench_t0"] = clock()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        elapsed = clock() - conn.info.pop("bench_t0", clock())
        if statement.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            return
        TALLY.queries += 1
        if not in_process:  # on SQLite the cursor itself counts, fetches included
            TALLY.sql += elapsed
        TALLY.statements[statement].append(elapsed)
        TALLY.params.setdefault(statement, params)


def instrument_templates() -> None:
    from jinja2 import Template

    original = Template.render

    def timed(self: Template, *args: Any, **kwargs: Any) -> str:
        start = time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            TALLY.template += time.process_time() - start

    Template.render = timed  # type: ignore[method-assign]


@dataclass(frozen=True)
class Post:
    """A POST the way static/app.js sends a vote: form body, X-CSRF-Token, Accept: application/json."""

    path: str
    body: str
    cookie: str
    token: str
    user: int = 0  # the X-Bench-User header the vote reference reads (the portal ignores it)


async def call(app: Any, path: str | Post, cookie: str | None = None, keep: list[Any] | None = None) -> int:
    """One GET (or a Post) through the ASGI app; returns the status (and adds the headers and the body to
    `keep`, when given)."""
    method, body = "GET", b""
    headers = [(b"host", b"127.0.0.1")]
    if isinstance(path, Post):
        method, body, cookie = "POST", path.body.encode(), path.cookie
        headers += [(b"content-type", b"application/x-www-form-urlencoded"), (b"accept", b"application/json"),
                    (b"x-csrf-token", path.token.encode()), (b"content-length", str(len(body)).encode()),
                    (b"x-bench-user", str(path.user).encode())]
        path = path.path
    raw_path, _, query = path.partition("?")
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "state": {}}
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            if keep is not None:
                keep.append([(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]])
                keep.append(b"")
        elif message["type"] == "http.response.body" and keep is not None:
            keep[-1] += message.get("body", b"")

    await app(scope, receive, send)
    return status


VOTE_SESSIONS = 8
REFERENCES = ("reference", "raw ASGI, same", "render reference")


def vote_posts(votes: VoteFixtures) -> list[Post]:
    """Each customer votes for each item and withdraws at once: every request inserts or deletes a vote row."""
    posts = []
    for i, (_, public_id) in enumerate(votes.items):
        for s, (cookie, token, user) in enumerate(zip(votes.cookies, votes.tokens, votes.user_ids, strict=True)):
            importance = ("nice_to_have", "important", "critical")[(i + s) % 3]
            posts.append(Post(f"/items/{public_id}/vote", f"importance={importance}&widget=card&next=%2F", cookie,
                              token, user))
            posts.append(Post(f"/items/{public_id}/unvote", "widget=card&next=%2F", cookie, token, user))
    return posts


@dataclass
class Page:
    name: str
    app: Any
    paths: list[str] | list[Post]
    cookie: str | None = None


@dataclass
class Figures:
    name: str
    cpu_ms: float
    queries: float
    sql_ms: float
    template_ms: float
    wall_ms: float  # what one request occupies a worker: CPU, and the waits for the database
    database_ms: float = 0.0  # PostgreSQL's processes' CPU (from /proc; 0 on SQLite, whose CPU is this process's)


async def measure(page: Page, requests: int, warmup: int, concurrency: int = 1) -> Figures:
    for i in range(warmup):
        status = await call(page.app, page.paths[i % len(page.paths)], page.cookie)
        if status != 200:
            raise RuntimeError(f"{page.name}: {page.paths[i % len(page.paths)]} answered {status}")
    TALLY.reset()
    # The reads of the revision made before a request's session, on a connection of the reader's own (PostgreSQL's
    # single-flight read): queries too, which the engine's instrumentation does not see.
    reader = getattr(getattr(page.app, "state", None), "revision_reader", None)
    reads = getattr(reader, "reads", 0)
    ticks = cpu_ticks()
    start, wall = time.process_time(), time.perf_counter()
    # After the warm-up's paths (a list that never repeats stays so), `concurrency` requests at a time in one loop.
    for first in range(warmup, warmup + requests, concurrency):
        await asyncio.gather(*(call(page.app, page.paths[i % len(page.paths)], page.cookie)
                               for i in range(first, min(first + concurrency, warmup + requests))))
    cpu, wall = time.process_time() - start, time.perf_counter() - wall
    after = cpu_ticks()
    database = sum(total - ticks.get(key, (name, 0))[1] for key, (name, total) in after.items() if name == "postgres")
    queries = TALLY.queries + getattr(reader, "reads", 0) - reads
    return Figures(page.name, cpu / requests * 1000, queries / requests, TALLY.sql / requests * 1000,
                   TALLY.template / requests * 1000, wall / requests * 1000,
                   database / os.sysconf("SC_CLK_TCK") / requests * 1000)


def explain(statements: dict[str, list[float]], params: dict[str, Any], engine: Any) -> None:
    """The plan of the slowest distinct statements, run again with the parameters they had."""
    print("\nslowest statements of the board (mean time of the execute call; on SQLite a SELECT's work is "
          "mostly in the fetch that follows and is not in this figure) and their plans:")
    ranked = sorted(statements.items(), key=lambda kv: -sum(kv[1]) / len(kv[1]))
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, samples in ranked[:4]:
            mean = sum(samples) / len(samples) * 1000
            print(f"\n{mean:7.2f} ms  x{len(samples)}  {' '.join(statement.split())[:400]}")
            prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS) "
            if not statement.lstrip().upper().startswith("SELECT") and prefix.startswith("EXPLAIN ("):
                prefix = "EXPLAIN "  # ANALYZE would run the write: a counter changed without its vote row
            cursor.execute(prefix + statement, params.get(statement) or ())
            for row in cursor.fetchall():
                print("    " + " | ".join(str(v) for v in row))
        cursor.close()
    finally:
        raw.close()


CATEGORIES = (
    ("database driver", ("sqlite3.", "psycopg", "_sqlite3")),
    ("templates (Jinja, markupsafe)", ("/templates/", "jinja2", "markupsafe")),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("FastAPI / Starlette / pydantic", ("starlette", "fastapi", "pydantic", "anyio")),
    ("app/", (str(ROOT / "app"),)),
)


def categorised(page: Page, requests: int) -> dict[str, float]:
    """Own CPU time (ms per request) by where the code lives, from cProfile with a CPU clock. The profiler
    slows Python code down more than C code, so read the shares, not the sums."""
    profiler = cProfile.Profile(time.process_time)
    asyncio.run(_profiled(profiler, page, requests))
    totals: dict[str, float] = defaultdict(float)
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        where = f"{filename} {name}"
        category = next((label for label, needles in CATEGORIES if any(n in where for n in needles)), "other")
        totals[category] += tottime * 1000 / requests
    return dict(totals)


async def _profiled(profiler: cProfile.Profile, page: Page, requests: int) -> None:
    profiler.enable()
    try:
        for i in range(requests):
            await call(page.app, page.paths[i % len(page.paths)], page.cookie)
    finally:
        profiler.disable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--explain", action="store_true", help="list the slowest statements of the board")
    parser.add_argument("--categories", action="store_true",
                        help="share of CPU per page in the driver, templates, SQLAlchemy, the framework, app/")
    parser.add_argument("--cprofile", metavar="PAGE", help="profile one page by name, e.g. 'board, visitor'")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="N requests at a time in the one event loop (PostgreSQL's revision read is shared by "
                             "the requests that wait together; 1: one after another)")
    parser.add_argument("--pages", metavar="NAMES",
                        help="only these pages (names separated by semicolons, e.g. 'board, visitor;vote/unvote'); the references always")
    args = parser.parse_args()

    url = database_url(args.target)
    fixtures = prepare(url)
    wanted = {name.strip() for name in args.pages.split(";")} if args.pages else None
    secret = secrets.token_urlsafe(48)
    votes = prepare_votes(url, secret, VOTE_SESSIONS) if wanted is None or "vote/unvote" in wanted else None
    # The vote page is one customer after another voting and withdrawing at once: limits out of the way.
    os.environ.update(DATABASE_URL=url, AHEAD_ENV="production", SECRET_KEY=secret, BASE_URL="http://testserver",
                      **VOTE_LIMITS)
    from app.config import Settings
    from app.main import create_app
    from bench import reference_app

    settings = Settings()
    app = create_app(settings)
    instrument(app.state.database.engine, in_process=url.startswith("sqlite"))
    instrument_templates()
    pages = [
        Page("board, visitor", app, ["/"]),
        Page("board, customer", app, ["/"], fixtures.cookie),
        Page("now/next/later", app, ["/?view=horizon"]),
        Page("item page", app, fixtures.item_paths),
        Page("search", app, ["/search?q=rep", "/search?q=sch", "/search?q=exp", "/search?q=time+off"]),
        # Never the same query twice (warm-up included, up to 5,000 requests): every search is one not kept.
        Page("search, distinct", app, [f"/search?q={q.replace(' ', '+')}" for q in distinct_queries(url, 5_000)]),
        Page("stage page", app, ["/?stage=planned", "/?stage=released&page=3"]),
        # Public addresses a visitor's flood could hold a worker with (a walk-through's finding)
        Page("changelog", app, ["/changelog"]),
        Page("changelog feed", app, ["/changelog.atom"]),
        Page("item, API", app, [f"/api/v1/items/{path.split('/')[2]}" for path in fixtures.item_paths]),
        Page("comments, API", app, [f"/api/v1/items/{path.split('/')[2]}/comments" for path in fixtures.item_paths]),
    ]
    # The references serve the very bytes of the visitor's board, fetched from the app first (bench/reference_app.py).
    pages_file = Path(tempfile.mkdtemp(prefix="ahead-breakdown-")) / "pages.json"
    kept: list[Any] = []
    asyncio.run(call(app, "/", None, kept))
    reference_app.save_pages(pages_file, [("/", reference_app.VISITOR, kept[0], kept[1])])
    os.environ[reference_app.PAGES_ENV] = str(pages_file)
    pages[:0] = [Page("reference", reference_app.create_app(), ["/"]),
                 Page("raw ASGI, same", reference_app.create_raw_app(), ["/"]),
                 Page("render reference", reference_app.create_render_app(), ["/"])]
    if votes is not None:
        from bench.reference_vote import create_app as create_vote_reference

        vote_reference = create_vote_reference()
        instrument(vote_reference.state.database.engine, in_process=url.startswith("sqlite"))
        pages.append(Page("vote reference", vote_reference, vote_posts(votes)))
        pages.append(Page("vote/unvote", app, vote_posts(votes)))
    if wanted is not None:
        pages = [page for page in pages if page.name in REFERENCES or page.name in wanted
                 or (page.name == "vote reference" and "vote/unvote" in wanted)]

    async def run() -> None:
        results = []
        for page in list(pages):
            try:
                results.append(await measure(page, args.requests, args.warmup, args.concurrency))
            except Exception as exc:
                print(f"skipped {page.name}: {str(exc).splitlines()[0][:200]}")
                pages.remove(page)
        ref = results[0].cpu_ms
        print(f"\n{'page':<18} {'CPU ms/req':>10} {'queries':>8} {'SQL ms':>7} {'template ms':>11} {'rest ms':>8} "
              f"{'ref/page':>8} {'wall ms':>8}" + ("" if url.startswith("sqlite") else f" {'PG CPU ms':>9}"))
        for r in results:
            sql_cpu = r.sql_ms if url.startswith("sqlite") else 0.0
            print(f"{r.name:<18} {r.cpu_ms:10.2f} {r.queries:8.1f} {r.sql_ms:7.2f} {r.template_ms:11.2f} "
                  f"{r.cpu_ms - sql_cpu - r.template_ms:8.2f} {ref / r.cpu_ms:8.2f} {r.wall_ms:8.2f}"
                  + ("" if url.startswith("sqlite") else f" {r.database_ms:9.2f}"))
        print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; SQL ms is "
              f"{'CPU in SQLite' if url.startswith('sqlite') else 'round-trip wall time, not in CPU ms'}; "
              "rest = middleware, routing, dependencies, SQLAlchemy and the ORM; wall = CPU and the waits for the "
              "database, commits included, per request with " + (
                  f"{args.concurrency} at a time; queries count the revision reader's shared reads too)"
                  if args.concurrency > 1 else
                  "one at a time: a worker that blocks on the database tops out near 1,000 / wall req/s)")
              + ("" if url.startswith("sqlite") else " PG CPU ms = PostgreSQL's processes' CPU per request, from /proc,"
                 " whatever else they did meanwhile"))
        if args.explain:
            TALLY.reset()
            for page in [p for p in pages if p.name.startswith("board")] or pages[1:]:
                await measure(page, 20, 0)
            explain(dict(TALLY.statements), dict(TALLY.params), app.state.database.engine)
        if args.cprofile:
            page = next(p for p in pages if p.name == args.cprofile)
            # PROFILE_CLOCK=cpu: this process's CPU time (a busy machine's waits left out), else wall time
            profiler = cProfile.Profile(time.process_time) if os.environ.get("PROFILE_CLOCK") == "cpu" else (
                cProfile.Profile())
            profiler.enable()
            await measure(page, args.requests, 0)
            profiler.disable()
            if os.environ.get("PROFILE_DUMP"):  # for pstats' callers and callees: PROFILE_DUMP=/tmp/vote.prof
                profiler.dump_stats(os.environ["PROFILE_DUMP"])
            pstats.Stats(profiler).sort_stats(os.environ.get("PROFILE_SORT", "tottime")).print_stats(int(os.environ.get("PROFILE_LINES", "25")))

    try:
        asyncio.run(run())
        if args.categories:
            print("\nown CPU time by where the code lives (cProfile with a CPU clock, ms per request; the "
                  "profiler inflates Python more than C, so compare shares):")
            rows = {page.name: categorised(page, max(20, args.requests // 2)) for page in pages}
            labels = [label for label, _ in CATEGORIES] + ["other"]
            print(f"{'page':<18} " + " ".join(f"{label[:14]:>14}" for label in labels))
            for name, totals in rows.items():
                total = sum(totals.values()) or 1.0
                print(f"{name:<18} " + " ".join(f"{totals.get(label, 0.0) / total:>14.0%}" for label in labels))
    finally:
        app.state.database.dispose()
        if votes is not None:
            clean_up_votes(url, votes)


if __name__ == "__main__":
    main()
