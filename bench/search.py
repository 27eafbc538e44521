"""How fast is search at 10,000 items? Builds a database, indexes it, times `search_items`.

    .venv/bin/python bench/search.py                                   # SQLite file under /tmp
    .venv/bin/python bench/search.py --database-url postgresql://postgres@127.0.0.1:5432/ahead_bench

The SQLite file is replaced on every run. A PostgreSQL database is dropped and created again, so its
name must contain "bench" (the script refuses anything else). Titles, summaries and descriptions are
drawn from a small product vocabulary, so that short prefixes hit thousands of items, as they do on
a real roadmap; a few rare words are sprinkled in for the needle-in-a-haystack case.

Timed: the full-text index build (`search.index_item` for every item, in one transaction, as the
staff forms do one at a time; `--bulk` times `search.index_texts`, what bench/generate.py uses), then
each query `--repeat` times through `search.search_items` for a signed-out visitor with the page's
limit, so the figures include loading the hits, their snippets and highlights. Printed: median and p95
per query type, wall clock and this process's CPU; on PostgreSQL also the server backend's mean CPU per
query (read from /proc, so only for a server on this machine).

The engine is SQLite FTS5 or PostgreSQL tsvector + GIN (see app/roadmap/search.py). To compare with the
portable word index it replaced, run this script as it was before that change, from a copy of that
revision (give it another SQLite file or "bench" database, so the two runs do not replace each other's):

    old="$(git log -1 --format=%H -- migrations/versions/2026-11-25-1931_full_text_search.py)^"
    git archive "$old" | tar -x -C /tmp/ahead-old
    cd /tmp/ahead-old && /path/to/.venv/bin/python bench/search.py --database-url sqlite:////tmp/old.db
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from app.accounts.viewer import ANONYMOUS
from app.config import normalise_database_url
from app.db import Database, utcnow
from app.migrate import upgrade
from app.roadmap import search
from app.roadmap.models import Item, Product, Stage, Tag, Timeframe, Visibility, item_tags

DEFAULT_SQLITE = "/tmp/ahead-bench-search.db"

VERBS = ["Export", "Import", "Schedule", "Sync", "Filter", "Share", "Archive", "Customise", "Automate",
         "Approve", "Track", "Preview", "Bulk edit", "Search", "Group", "Compare", "Restore", "Notify on"]
OBJECTS = ["reports", "dashboards", "invoices", "shifts", "timesheets", "rotas", "projects", "tasks",
           "comments", "attachments", "contacts", "integrations", "permissions", "webhooks", "audit logs",
           "custom fields", "templates", "calendars", "payroll runs", "time off requests", "locations",
           "teams", "roles", "notifications", "charts", "forecasts", "budgets", "tags", "workflows"]
TARGETS = ["to CSV", "to Excel", "with Slack", "with Microsoft Teams", "in the mobile app", "by email",
           "for admins", "across locations", "per team", "with Google Calendar", "via the API",
           "with Salesforce", "with Jira", "in bulk", "on a schedule", "for managers", ""]
SENTENCES = [
    "Customers asked for a faster way to {verb} {obj} {target}.",
    "Today this takes several manual steps and a spreadsheet.",
    "Managers want to {verb} {obj} without leaving the dashboard.",
    "This builds on the integration platform we released last year.",
    "Large accounts with many locations need this to roll out across teams.",
    "We will start with {obj} and extend it to {obj2} later.",
    "The API gets matching endpoints so integrations can {verb} {obj2} too.",
    "Permissions decide who can see and change the {obj}.",
    "Reporting and exports keep working as they do today.",
    "Feedback from the beta with {n} customers shaped the first version.",
]
RARE_WORDS = ["zeppelin", "quokka", "saffron", "obsidian", "marzipan", "tundra", "kaleidoscope", "nimbus"]

QUERIES = {
    "1-word prefix": ["rep", "int", "sch", "exp", "dash", "sy", "tim", "cal"],
    "2-word": ["export csv", "slack integ", "schedule reports", "time off", "mobile shifts",
               "audit log", "teams sync", "payroll ex"],
    "rare word": RARE_WORDS,
    "common word": ["reports", "customers", "managers", "integration", "dashboard", "teams", "api",
                    "locations"],
}


def believable_item(rng: random.Random, n: int) -> dict[str, str]:
    verb, obj, target = rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TARGETS)
    title = " ".join(part for part in (verb, obj, target) if part)
    summary = f"{verb} {obj} {target}".strip().capitalize() + " without the manual steps."
    fill = {"verb": verb.lower(), "obj": obj, "obj2": rng.choice(OBJECTS), "target": target, "n": rng.randint(3, 40)}
    sentences = [s.format(**fill) for s in rng.sample(SENTENCES, rng.randint(3, 6))]
    if n % 997 == 0:  # about ten items carry a rare word each
        sentences.append(f"Internally this is project {RARE_WORDS[(n // 997) % len(RARE_WORDS)]}.")
    return {"title": title[:200], "summary": summary[:300], "description": " ".join(sentences)}


def fresh_database(url: str | None) -> str:
    if not url:
        path = Path(DEFAULT_SQLITE)
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return f"sqlite+pysqlite:///{path}"
    url = normalise_database_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(database + suffix).unlink(missing_ok=True)
        return url
    name = make_url(url).database or ""
    if "bench" not in name:
        sys.exit(f"refusing to drop the PostgreSQL database {name!r}: its name must contain 'bench'")
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url


def fill(db: Database, count: int, seed: int) -> None:
    rng = random.Random(seed)
    now = utcnow()
    with db.transaction() as session:
        products = [Product(slug="web", name="Web app"), Product(slug="mobile", name="Mobile app")]
        tags = [Tag(slug=f"tag-{i}", name=name) for i, name in
                enumerate(["Integrations", "Reporting", "Security", "Performance", "API", "Admin"])]
        session.add_all(products + tags)
        session.flush()
        stages = list(session.scalars(select(Stage).order_by(Stage.position)))
        rows, links = [], []
        for n in range(count):
            when = now - timedelta(minutes=n * 7)
            stage = rng.choices(stages, weights=[30, 25, 15, 25, 5])[0]
            rows.append({
                "id": n + 1, "public_id": f"b{n:07d}", "slug": f"item-{n}", **believable_item(rng, n),
                "product_id": rng.choice(products).id, "stage_id": stage.id,
                "timeframe": rng.choice(list(Timeframe)[:3]), "vote_count": int(rng.paretovariate(1.2)),
                "visibility": rng.choices(list(Visibility), weights=[90, 5, 5])[0],
                "published_at": None if rng.random() < 0.05 else when,
                "released_at": when if stage.is_released else None,
                "created_at": when, "updated_at": when,
            })
            links.extend({"item_id": n + 1, "tag_id": t.id} for t in rng.sample(tags, rng.randint(0, 2)))
        session.execute(insert(Item), rows)
        session.execute(insert(item_tags), links)


def build_index(db: Database, *, bulk: bool) -> tuple[float, int]:
    started = time.perf_counter()
    with db.transaction() as session:
        if bulk:
            rows = session.execute(select(Item.id, Item.title, Item.summary, Item.description).order_by(Item.id))
            search.index_texts(session.connection(), (tuple(row) for row in rows.all()))
        else:
            for item in session.scalars(select(Item).order_by(Item.id)):
                search.index_item(session, item)
    elapsed = time.perf_counter() - started
    print(f"(load average while building: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    with db.transaction() as session:
        entries = session.scalar(text("SELECT count(*) FROM item_search")) or 0
    return elapsed, entries


def analyse(db: Database) -> None:
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def time_queries(db: Database, repeat: int, limit: int) -> None:
    """Wall-clock time per search; `cpu` is this process's CPU time, which on a busy machine shows what
    the work costs (on SQLite it includes the database, which runs in-process; not on PostgreSQL, where
    `server cpu` is the backend's CPU per query: a mean, as the kernel counts it in 10 ms ticks)."""
    postgres = not db.url.startswith("sqlite")
    print(f"\n{'query type':<15} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'cpu med':>8} {'cpu p95':>8}"
          + (f" {'server cpu':>11}" if postgres else "") + "   hits per query")
    for kind, queries in QUERIES.items():
        samples, cpu, hits, server_ticks = [], [], [], 0
        for q in queries:
            for attempt in range(repeat + 1):
                with db.transaction() as session:
                    backend = _backend_ticks(session) if postgres else None
                    started, started_cpu = time.perf_counter(), time.process_time()
                    found = search.search_items(session, ANONYMOUS, q, limit=limit)
                    elapsed = (time.perf_counter() - started) * 1000
                    elapsed_cpu = (time.process_time() - started_cpu) * 1000
                    if backend is not None and attempt:
                        server_ticks += _backend_ticks(session, backend[0])[1] - backend[1]  # type: ignore[index]
                if attempt:  # the first run of each query warms caches and is not counted
                    samples.append(elapsed)
                    cpu.append(elapsed_cpu)
            hits.append(f"{q}={len(found)}")
        server = f" {server_ticks * 1000 / _TICKS / len(samples):>11.2f}" if postgres else ""
        print(f"{kind:<15} {statistics.median(samples):>10.2f} {_p95(samples):>8.2f} {max(samples):>8.2f} "
              f"{statistics.median(cpu):>8.2f} {_p95(cpu):>8.2f}{server}   {' '.join(hits)}")


_TICKS = os.sysconf("SC_CLK_TCK")


def _backend_ticks(session, pid: int | None = None) -> tuple[int, int] | None:  # type: ignore[no-untyped-def]
    """(pid, user + system CPU ticks) of the PostgreSQL backend serving this session, when it runs here."""
    pid = pid or session.scalar(text("SELECT pg_backend_pid()"))
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return pid, int(fields[11]) + int(fields[12])


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def matching_items(db: Database) -> None:
    """How many items each 1-word prefix matches in the index (what the query has to rank)."""
    with db.transaction() as session:
        parts = []
        for q in QUERIES["1-word prefix"]:
            if db.url.startswith("sqlite"):
                n = session.scalar(text("SELECT count(*) FROM item_search WHERE item_search MATCH :q"),
                                   {"q": search.fts5_query([q])})
            else:
                n = session.scalar(text("SELECT count(*) FROM item_search WHERE document @@ CAST(:q AS tsquery)"),
                                   {"q": search.tsquery([q])})
            parts.append(f"{q}={n}")
    print("items matching each 1-word prefix:", " ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="", help=f"default: SQLite file {DEFAULT_SQLITE}")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each query")
    parser.add_argument("--limit", type=int, default=30, help="hits per search (the page shows 30)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--analyze", choices=["auto", "yes", "no"], default="auto",
                        help="run ANALYZE after loading; auto: on PostgreSQL (autovacuum would), not on SQLite "
                             "(nothing in Ahead runs it there, and its statistics change SQLite's plan)")
    parser.add_argument("--bulk", action="store_true",
                        help="build the index with search.index_texts (executemany) instead of index_item per item")
    parser.add_argument("--queries-only", action="store_true",
                        help="time the queries on the database the last run built (nothing is rebuilt)")
    args = parser.parse_args()

    if args.queries_only:
        url = normalise_database_url(args.database_url or f"sqlite:///{DEFAULT_SQLITE}")
    else:
        url = fresh_database(args.database_url or None)
        upgrade(url)
    print(f"database: {make_url(url).render_as_string(hide_password=True)}")
    db = Database(url)
    try:
        if not args.queries_only:
            started = time.perf_counter()
            fill(db, args.items, args.seed)
            print(f"{args.items:,} items written in {time.perf_counter() - started:.1f} s")
            seconds, entries = build_index(db, bulk=args.bulk)
            print(f"full-text index built in {seconds:.1f} s ({entries:,} entries, "
                  f"{seconds / args.items * 1000:.2f} ms per item)")
            if args.analyze == "yes" or (args.analyze == "auto" and not url.startswith("sqlite")):
                analyse(db)
                print("ANALYZE run: the planner has statistics")
        matching_items(db)
        time_queries(db, args.repeat, args.limit)
    finally:
        db.dispose()


if __name__ == "__main__":
    main()
