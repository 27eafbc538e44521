"""Fill a database with a large, believable roadmap for the benchmarks — fast, with bulk inserts.

    .venv/bin/python bench/generate.py /tmp/ahead-bench.db                       # SQLite file
    .venv/bin/python bench/generate.py postgresql://postgres@127.0.0.1:5432/bench_ahead
    .venv/bin/python bench/generate.py /tmp/small.db --scale 0.1                 # a tenth, for quick runs
    .venv/bin/python bench/generate.py postgresql://postgres@127.0.0.1:5432/bench_ahead --drop   # remove it

At scale 1: 2 products, the default stages, 20 tags, 10,000 items (mostly published and public; a few
hundred drafts, internal and customer-only items, some of these limited to a segment), their stage
history and search index, 3 segments, 2,000 organisations, 100,000 customers and 1,000,000 votes (one per
item and user, skewed so that a few items are very popular, cast over the last year). `items.vote_count`
and `items.trend_count` are then computed in SQL from the vote rows, so they agree with them exactly.

The schema is made by the migrations (`app.migrate.upgrade`), never by hand. Rows are written with
SQLAlchemy Core `insert()` and executemany on SQLite, and with COPY on PostgreSQL; nothing goes through
the ORM one object at a time. A SQLite file that exists is refused unless `--replace`; a PostgreSQL
database is created if missing and only dropped/replaced when its name contains "bench".
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Table, and_, create_engine, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine, make_url

from app.accounts.models import Role, User
from app.config import normalise_database_url
from app.db import make_engine
from app.desk import aggregates
from app.migrate import upgrade
from app.organisations.models import Organisation, OrganisationDomain, Segment
from app.roadmap import search
from app.roadmap.models import (
    Confidence,
    Item,
    Product,
    Stage,
    StageChange,
    Tag,
    Timeframe,
    Visibility,
    item_segments,
    item_tags,
)
from app.roadmap.service import slugify
from app.voting.models import Vote
from app.voting.service import TREND_DAYS

# --- what a believable roadmap of a staff-scheduling SaaS says -----------------------------------------

VERBS = ["Export", "Import", "Schedule", "Sync", "Filter", "Share", "Archive", "Customise", "Automate",
         "Approve", "Track", "Preview", "Bulk edit", "Search", "Group", "Compare", "Restore", "Notify on",
         "Forecast", "Lock", "Duplicate", "Print", "Audit", "Split"]
OBJECTS = ["reports", "dashboards", "invoices", "shifts", "timesheets", "rotas", "projects", "tasks",
           "comments", "attachments", "contacts", "integrations", "permissions", "webhooks", "audit logs",
           "custom fields", "templates", "calendars", "payroll runs", "time off requests", "locations",
           "teams", "roles", "notifications", "charts", "forecasts", "budgets", "tags", "workflows",
           "open shifts", "break rules", "availability", "overtime alerts", "labour costs"]
TARGETS = ["to CSV", "to Excel", "with Slack", "with Microsoft Teams", "in the mobile app", "by email",
           "for admins", "across locations", "per team", "with Google Calendar", "via the API",
           "with Salesforce", "with Jira", "in bulk", "on a schedule", "for managers", "", "", ""]
OPENERS = [
    "Customers asked for a faster way to {verb} {obj} {target}.",
    "Managers want to {verb} {obj} without leaving the dashboard.",
    "Today this takes several manual steps and a spreadsheet, and mistakes slip through on busy weeks.",
    "Large accounts with many locations need this to roll out across teams.",
]
BULLETS = [
    "Works for {obj} and, later, for {obj2}.",
    "Permissions decide who can see and change the {obj}.",
    "The API gets matching endpoints so integrations can {verb} {obj2} too.",
    "Reporting and exports keep working as they do today.",
    "Every change is kept in the audit log with who made it.",
    "Available on every plan; limits apply on Starter.",
    "Keyboard shortcuts for the most common actions.",
    "A preview before anything is sent or changed.",
]
CLOSERS = [
    "Feedback from the beta with {n} customers shaped the first version.",
    "This builds on the integration platform we released last year.",
    "We will start with {obj} and extend it to {obj2} once the first version has settled.",
    "Tell us in your vote why this matters to you: it decides what ships first.",
]
TAG_NAMES = ["Integrations", "Reporting", "Security", "Notifications", "Performance", "Accessibility", "Admin",
             "API", "Time tracking", "Payroll", "Mobile", "Scheduling", "Compliance", "Analytics", "Billing",
             "Onboarding", "Permissions", "Localisation", "Exports", "Automation"]
COMPANY_A = ["North", "Blue", "Oak", "Silver", "Harbour", "Summit", "Maple", "Cedar", "River", "Stone", "Bright",
             "Red", "Green", "Golden", "Iron", "Park", "Lake", "Hill", "Sun", "Fox", "Bay", "Elm", "Coast", "Pine"]
COMPANY_B = ["field", "gate", "wood", "brook", "side", "view", "stone", "ridge", "well", "haven", "worth", "ford",
             "croft", "mere", "moor", "dale", "bridge", "wick", "ley", "ton"]
COMPANY_C = ["Cafés", "Hotels", "Clinics", "Logistics", "Retail", "Care", "Kitchens", "Fitness", "Events",
             "Security", "Hospitality", "Pharmacies", "Restaurants", "Services", "Group", "Health"]
FIRST = ["Alex", "Sam", "Jordan", "Maria", "Chen", "Aisha", "Tom", "Priya", "Lucas", "Emma", "Noah", "Olivia",
         "Mateo", "Sofia", "Yuki", "Omar", "Lena", "Ravi", "Grace", "Ivan", "Zoe", "Kwame", "Elif", "Hugo"]
LAST = ["Smith", "Garcia", "Müller", "Rossi", "Kim", "Okafor", "Dubois", "Novak", "Silva", "Jensen", "Patel",
        "Khan", "Nguyen", "Cohen", "Larsen", "Moreau", "Kowalski", "Ivanova", "Tanaka", "Brown", "Wilson"]
SEGMENTS = [("starter", "Starter", Decimal(1), 0.6), ("business", "Business", Decimal(2), 0.3),
            ("enterprise", "Enterprise", Decimal(4), 0.1)]
PUBLIC_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"

# Stage slug -> share of items, and the path an item took to get there.
STAGE_MIX = {"under-consideration": 0.35, "planned": 0.2, "in-progress": 0.1, "released": 0.3, "declined": 0.05}
PATHS = {
    "under-consideration": ["under-consideration"],
    "planned": ["under-consideration", "planned"],
    "in-progress": ["under-consideration", "planned", "in-progress"],
    "released": ["under-consideration", "planned", "in-progress", "released"],
    "declined": ["under-consideration", "declined"],
}


# --- the target database -------------------------------------------------------------------------------


def database_url(target: str) -> str:
    """A path or URL on the command line -> a normalised SQLAlchemy URL."""
    if "://" not in target:
        return f"sqlite+pysqlite:///{Path(target).resolve()}"
    return normalise_database_url(target)


def prepare(url: str, *, replace: bool) -> None:
    """Make sure the target is empty: a new SQLite file, or an empty (created) PostgreSQL database."""
    if url.startswith("sqlite"):
        path = Path(make_url(url).database or "")
        if path.exists():
            if not replace:
                sys.exit(f"{path} exists; pass --replace to overwrite it")
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    name = make_url(url).database or ""
    with _server(url) as admin:
        exists = admin.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if exists and not replace:
            sys.exit(f"database {name!r} exists; pass --replace to drop and recreate it")
        if exists:
            _require_bench_name(name)
            admin.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.execute(text(f'CREATE DATABASE "{name}"'))


def drop(url: str) -> None:
    if url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            Path((make_url(url).database or "") + suffix).unlink(missing_ok=True)
        return
    name = make_url(url).database or ""
    _require_bench_name(name)
    with _server(url) as admin:
        admin.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _require_bench_name(name: str) -> None:
    if "bench" not in name:
        sys.exit(f"refusing to drop the PostgreSQL database {name!r}: its name must contain 'bench'")


@contextmanager
def _server(url: str) -> Iterator[Connection]:
    engine = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def bulk_engine(url: str) -> Engine:
    """The app's engine, tuned for one big load: no fsync waits, a large page cache, no FK checks
    (the generator writes consistent rows; the schema still has its foreign keys for the app)."""
    engine = make_engine(url, foreign_keys=False)
    if url.startswith("sqlite"):
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _fast(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA cache_size=-1000000")  # 1 GB
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()
    return engine


def write(conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          *, batch: int = 50_000) -> int:
    """Bulk insert: COPY on PostgreSQL, Core insert() + executemany on SQLite. Returns the row count."""
    count = 0
    if conn.dialect.name == "postgresql":
        # COPY's text format needs plain values; psycopg adapts datetimes, Decimals and booleans itself.
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cursor, cursor.copy(  # type: ignore[union-attr]
                f'COPY {table.name} ({", ".join(columns)}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([v.value if isinstance(v, Enum) else v for v in row])
                count += 1
        return count
    # SQLite: the statement is SQLAlchemy's own INSERT for these columns; the values are converted here
    # once, as the column types would (aware UTC datetimes become SQLAlchemy's naive UTC text, enums
    # their values), because running every value through the type machinery costs 3-4 times as much.
    stmt = insert(table).compile(dialect=conn.dialect, column_keys=list(columns))
    sql = str(stmt)
    converters = [_sqlite_converter(table.c[name].type) for name in columns]
    plain = all(c is None for c in converters)
    it = iter(rows)
    while chunk := list(itertools.islice(it, batch)):
        if not plain:
            chunk = [tuple(v if c is None or v is None else c(v) for c, v in zip(converters, row, strict=True)) for row in chunk]
        conn.exec_driver_sql(sql, chunk)
        count += len(chunk)
    return count


def _sqlite_converter(column_type: Any) -> Any:
    from sqlalchemy import Enum as EnumType
    from sqlalchemy import Numeric

    from app.db import UTCDateTime

    if isinstance(column_type, UTCDateTime):
        return _sqlite_datetime
    if isinstance(column_type, EnumType):
        return lambda v: v.value if isinstance(v, Enum) else v
    if isinstance(column_type, Numeric):
        return str
    return None


def _sqlite_datetime(value: datetime) -> str:
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def check_sqlite_format(conn: Connection) -> None:
    from app.db import UTCDateTime

    sample = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    column_type = UTCDateTime()
    stored = column_type.dialect_impl(conn.dialect).bind_processor(conn.dialect)(sample)
    if stored != _sqlite_datetime(sample):
        sys.exit(f"SQLite datetime format changed: SQLAlchemy stores {stored!r}, the generator "
                 f"{_sqlite_datetime(sample)!r}")


def fix_sequences(conn: Connection, tables: Sequence[str]) -> None:
    """Explicit ids went in through COPY: move PostgreSQL's sequences past them."""
    if conn.dialect.name != "postgresql":
        return
    for name in tables:
        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                          f"COALESCE((SELECT max(id) FROM {name}), 0) + 1, false)"))


# --- the data ------------------------------------------------------------------------------------------


class Phase:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.timings: list[tuple[str, float, str]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {}
        start, cpu = time.perf_counter(), time.process_time()
        yield info
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        note = ", ".join(f"{v:,} {k}" if isinstance(v, int) else f"{k} {v}" for k, v in info.items())
        self.timings.append((name, seconds, note))
        print(f"  {name:<30} {seconds:7.1f} s  (cpu {cpu:5.1f} s)   {note}", flush=True)


def believable_text(rng: random.Random) -> tuple[str, str, str]:
    verb, obj, target = rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TARGETS)
    title = " ".join(p for p in (verb, obj, target) if p)
    summary = f"{verb} {obj} {target}".strip().capitalize() + rng.choice(
        [" without the manual steps.", " in a couple of clicks.", ", the way your team already works.",
         " — one of the most requested changes.", "."])
    fill = {"verb": verb.lower(), "obj": obj, "obj2": rng.choice(OBJECTS), "target": target,
            "n": rng.randint(3, 40)}
    parts = [rng.choice(OPENERS).format(**fill), ""]
    parts += ["- " + b.format(**fill) for b in rng.sample(BULLETS, rng.randint(2, 4))]
    parts += ["", rng.choice(CLOSERS).format(**fill)]
    return title[:200], summary[:300], "\n".join(parts)


def public_ids(rng: random.Random, count: int) -> list[str]:
    seen: set[str] = set()
    while len(seen) < count:
        seen.add("".join(rng.choices(PUBLIC_ID_ALPHABET, k=8)))
    out = list(seen)
    rng.shuffle(out)
    return out


def quarter_of(when: datetime) -> tuple[int, int]:
    return when.year, (when.month - 1) // 3 + 1


def generate(url: str, *, scale: float, seed: int, analyze: bool, votes: int | None = None) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    n_items, n_users = max(50, int(10_000 * scale)), max(100, int(100_000 * scale))
    n_orgs, n_votes = max(10, int(2_000 * scale)), int(1_000_000 * scale) if votes is None else votes
    phase = Phase()
    print(f"target: {make_url(url).render_as_string(hide_password=True)}  (scale {scale}: {n_items:,} items, "
          f"{n_users:,} customers, {n_orgs:,} organisations, {n_votes:,} votes)", flush=True)

    with phase("migrate"):
        upgrade(url)

    engine = bulk_engine(url)
    try:
        with engine.connect() as conn:
            # One transaction for the whole load (BEGIN IMMEDIATE on SQLite).
            conn = conn.execution_options(ahead_write=True)
            with conn.begin():
                # The desk's triggers would run once per vote row: off for the load, the aggregates counted once
                # from the rows afterwards, the triggers back for what the benchmarks then write.
                aggregates.drop_triggers(conn)
                _fill(conn, rng, now, phase, n_items=n_items, n_users=n_users, n_orgs=n_orgs, n_votes=n_votes)
                with phase("desk aggregates") as info:
                    aggregates.rebuild(conn, today=now.date())
                    aggregates.create_triggers(conn)
                    info["rows"] = conn.scalar(text("SELECT count(*) FROM desk_windows"))
        with phase("analyze" if analyze else "checkpoint") as info, engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE" if analyze else "VACUUM")
            else:
                if analyze:
                    conn.exec_driver_sql("ANALYZE")
                    conn.commit()
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            info["statistics"] = "yes" if analyze else "no"
    finally:
        engine.dispose()
    total = time.perf_counter() - phase.started
    print(f"  {'total':<30} {total:7.1f} s  (cpu {time.process_time():5.1f} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)", flush=True)
    if url.startswith("sqlite"):
        size = Path(make_url(url).database or "").stat().st_size
        print(f"  file size {size / 1e6:,.0f} MB")


def _fill(conn: Connection, rng: random.Random, now: datetime, phase: Phase, *, n_items: int, n_users: int,
          n_orgs: int, n_votes: int) -> None:
    if conn.dialect.name == "sqlite":
        check_sqlite_format(conn)
    else:
        # No foreign-key trigger per row during the load (the rows are consistent by construction, and
        # the counters are checked against the vote rows at the end); this transaction only.
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
    stages = {row.slug: row for row in conn.execute(select(Stage.__table__))}
    if set(STAGE_MIX) - set(stages):
        sys.exit("the default stages are missing: generate into a new database")

    # --- products, tags, segments, organisations, staff, customers ---
    with phase("products, tags, organisations") as info:
        write(conn, Product.__table__, ["id", "slug", "name", "description", "position", "created_at"], [
            (1, "web", "Web app", "The scheduling workspace for managers.", 0, now - timedelta(days=900)),
            (2, "mobile", "Mobile app", "The iOS and Android app for staff.", 1, now - timedelta(days=900)),
        ])
        write(conn, Tag.__table__, ["id", "slug", "name"],
              [(i + 1, slugify(name), name) for i, name in enumerate(TAG_NAMES)])
        write(conn, Segment.__table__, ["id", "slug", "name", "weight", "created_at"],
              [(i + 1, slug, name, weight, now - timedelta(days=800)) for i, (slug, name, weight, _) in
               enumerate(SEGMENTS)])
        seg_weights = [share for *_, share in SEGMENTS]
        orgs, domains, org_segment = [], [], {}
        for o in range(1, n_orgs + 1):
            segment = rng.choices(range(1, len(SEGMENTS) + 1), weights=seg_weights)[0]
            org_segment[o] = segment
            name = f"{rng.choice(COMPANY_A)}{rng.choice(COMPANY_B)} {rng.choice(COMPANY_C)}"
            revenue = Decimal(rng.randint(1, 40) * 1200 * {1: 1, 2: 5, 3: 40}[segment])
            orgs.append((o, name, segment, revenue, f"org-{o}", now - timedelta(days=rng.randint(30, 800))))
            domains.append((o, o, f"org{o}.example"))
        write(conn, Organisation.__table__, ["id", "name", "segment_id", "revenue", "external_id", "created_at"], orgs)
        write(conn, OrganisationDomain.__table__, ["id", "organisation_id", "domain"], domains)
        info.update(organisations=len(orgs), tags=len(TAG_NAMES))

    with phase("users") as info:
        # Company sizes are skewed too: a few big accounts, a long tail of small ones.
        org_sizes = [rng.paretovariate(1.2) for _ in range(n_orgs)]
        cumulative = list(itertools.accumulate(org_sizes))
        user_cols = ["id", "email", "display_name", "role", "password_hash", "is_active", "organisation_id",
                     "created_at", "last_login_at", "is_placeholder", "deleted_at"]
        staff = [(1, "admin@ahead.example", "Ada Admin", Role.admin.value), (2, "pm@ahead.example", "Pat PM", Role.pm.value),
                 (3, "pm2@ahead.example", "Quinn PM", Role.pm.value)]

        def users() -> Iterator[tuple[Any, ...]]:
            for uid, email, name, role in staff:
                yield (uid, email, name, role, None, True, None, now - timedelta(days=900), None, False, None)
            for n in range(n_users):
                uid = n + 1 + len(staff)
                name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
                if rng.random() < 0.05:  # people signing in with a personal address belong to no organisation
                    org, email = None, f"user{uid}@mail.example"
                else:
                    org = bisect.bisect(cumulative, rng.random() * cumulative[-1]) + 1
                    email = f"user{uid}@org{org}.example"
                created = now - timedelta(days=rng.uniform(0, 720))
                yield (uid, email, name, Role.customer.value, None, True, org, created,
                       created + timedelta(days=rng.uniform(0, 30)), False, None)

        info["users"] = write(conn, User.__table__, user_cols, users())
        customer_ids = range(len(staff) + 1, len(staff) + 1 + n_users)

    # --- items, tags, segments, stage history ---
    with phase("items") as info:
        item_cols = ["id", "public_id", "slug", "product_id", "stage_id", "title", "summary", "description",
                     "internal_notes", "release_notes", "timeframe", "target_year", "target_quarter", "confidence",
                     "visibility", "published_at", "released_at", "merged_into_id", "vote_count", "trend_count",
                     "created_by_id", "created_at", "updated_at"]
        ids = public_ids(rng, n_items)
        items, links, limited, changes, texts = [], [], [], [], []
        votable: list[int] = []
        published_at_of: dict[int, datetime] = {}
        stage_slugs, stage_shares = list(STAGE_MIX), list(STAGE_MIX.values())
        for n in range(n_items):
            iid = n + 1
            slug = rng.choices(stage_slugs, weights=stage_shares)[0]
            title, summary, description = believable_text(rng)
            texts.append((iid, title, summary, description))
            created = now - timedelta(days=rng.uniform(1, 730) ** 1.0)
            path = PATHS[slug]
            # Each later stage is reached some time after the previous one, never in the future.
            moments = [created]
            for _ in path[1:]:
                moments.append(min(now - timedelta(hours=1), moments[-1] + timedelta(days=rng.uniform(2, 90))))
            draft = rng.random() < 0.02
            visibility = rng.choices([Visibility.public, Visibility.customers, Visibility.internal],
                                     weights=[95, 3.5, 1.5])[0]
            published = None if draft else created + timedelta(hours=rng.uniform(1, 72))
            if published is not None and published > now:
                published = now
            released = moments[-1] if slug == "released" else None
            if slug == "released":
                year, quarter = quarter_of(released)
                timeframe, confidence = Timeframe.quarter, None
            else:
                timeframe = rng.choices([Timeframe.now, Timeframe.next, Timeframe.later, Timeframe.quarter],
                                        weights=[20, 25, 40, 15])[0]
                year = quarter = None
                if timeframe is Timeframe.quarter:
                    year, quarter = quarter_of(now + timedelta(days=rng.choice([90, 180, 270, 365])))
                confidence = rng.choice([None, Confidence.low, Confidence.medium, Confidence.high])
            updated = max(moments[-1], published or created)
            release_notes = (f"{title} is live for everyone.\n\n- Find it under *Settings*.\n- Tell us what "
                             "you think: reply to this item." if slug == "released" else "")
            items.append((iid, ids[n], slugify(title), rng.choice((1, 1, 2)), stages[slug].id, title, summary,
                          description, "Internal: estimate 3 sprints." if rng.random() < 0.3 else "", release_notes,
                          timeframe, year, quarter, confidence, visibility, published, released, None, 0, 0,
                          rng.choice((2, 3)), created, updated))
            for tag in rng.sample(range(1, len(TAG_NAMES) + 1), rng.choices([0, 1, 2, 3], weights=[10, 45, 35, 10])[0]):
                links.append((iid, tag))
            if visibility is Visibility.customers and rng.random() < 0.5:
                limited.extend((iid, s) for s in rng.sample(range(2, len(SEGMENTS) + 1), rng.randint(1, 2)))
            previous = None
            for stage_slug, moment in zip(path, moments, strict=True):
                changes.append((iid, previous, stages[stage_slug].id, rng.choice((2, 3)), moment))
                previous = stages[stage_slug].id
            if published is not None and visibility is not Visibility.internal:
                votable.append(iid)
                published_at_of[iid] = published
        write(conn, Item.__table__, item_cols, items)
        write(conn, item_tags, ["item_id", "tag_id"], links)
        write(conn, item_segments, ["item_id", "segment_id"], limited)
        write(conn, StageChange.__table__, ["item_id", "from_stage_id", "to_stage_id", "changed_by_id", "changed_at"],
              changes)
        info.update(items=len(items), **{"tag links": len(links), "stage changes": len(changes)})
        del items

    with phase("search index") as info:
        info["rows"] = write_search_index(conn, texts)

    # --- votes ---
    with phase("votes") as info:
        # Popularity is heavy-tailed: a handful of items collect thousands of votes, most a few dozen.
        weights = [rng.paretovariate(1.1) for _ in votable]
        total_weight = sum(weights)
        cap = max(1, n_users // 5)
        counts = [min(cap, int(w / total_weight * n_votes)) for w in weights]
        short = n_votes - sum(counts)
        while short > 0:
            i = rng.randrange(len(counts))
            if counts[i] < cap:
                add = min(short, cap - counts[i], 1 + short // 1000)
                counts[i] += add
                short -= add
        year_ago = now - timedelta(days=365)
        importance = (1, 2, 3)
        first_customer = customer_ids.start

        def votes() -> Iterator[tuple[Any, ...]]:
            for iid, k in zip(votable, counts, strict=True):
                start = max(published_at_of[iid], year_ago)
                span = (now - start).total_seconds()
                picks = rng.choices(importance, weights=(50, 35, 15), k=k)
                for user, imp in zip(sorted(rng.sample(range(n_users), k)), picks, strict=True):
                    # More recent than uniform: interest builds up while an item is open.
                    when = start + timedelta(seconds=span * (rng.random() ** 0.7))
                    yield iid, first_customer + user, imp, when, when, ""

        info["votes"] = write(conn, Vote.__table__,
                              ["item_id", "user_id", "importance", "created_at", "updated_at", "source_url"], votes())
        info["popular"] = f"(top item {max(counts):,} votes, median {sorted(counts)[len(counts) // 2]})"

    with phase("counters from vote rows") as info:
        votes_t, items_t = Vote.__table__, Item.__table__
        cutoff = now - timedelta(days=TREND_DAYS)
        conn.execute(update(items_t).values(
            vote_count=select(func.count()).where(votes_t.c.item_id == items_t.c.id).scalar_subquery(),
            trend_count=select(func.count()).where(and_(votes_t.c.item_id == items_t.c.id,
                                                        votes_t.c.created_at >= cutoff)).scalar_subquery(),
        ))
        fix_sequences(conn, ["products", "tags", "segments", "organisations", "organisation_domains", "users",
                             "items"])
        info["recent votes"] = conn.scalar(select(func.sum(items_t.c.trend_count))) or 0
        mismatched = conn.scalar(select(func.count()).select_from(items_t).where(
            items_t.c.vote_count != select(func.count()).where(votes_t.c.item_id == items_t.c.id).scalar_subquery()))
        if mismatched:
            sys.exit(f"{mismatched} items have a vote_count that disagrees with their vote rows")
        info["checked"] = "vote_count = count(votes) on every item"


def write_search_index(conn: Connection, texts: list[tuple[int, str, str, str]]) -> int:
    """The search index through the search module's own batch writer (FTS5 / tsvector), or, with the
    older word index (`search_terms`, one row per item, word and field), its rows in bulk."""
    if hasattr(search, "index_texts"):
        return search.index_texts(conn, texts)
    from app.roadmap.models import SearchTerm  # type: ignore[attr-defined]

    def terms() -> Iterator[tuple[int, str, int]]:
        for iid, title, summary, description in texts:
            seen: dict[tuple[str, int], None] = {}
            for field, value in ((search.FIELD_TITLE, title), (search.FIELD_SUMMARY, summary),  # type: ignore[attr-defined]
                                 (search.FIELD_BODY, description)):  # type: ignore[attr-defined]
                for word in search.words(value):
                    seen[(word, field)] = None
            for word, field in seen:
                yield iid, word, field

    return write(conn, SearchTerm.__table__, ["item_id", "term", "field"], terms())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="a SQLite file path, or a postgresql:// URL (database name with 'bench')")
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 10,000 items, 100,000 customers, 1M votes")
    parser.add_argument("--votes", type=int, default=None,
                        help="this many votes whatever the scale (e.g. 100000 at scale 1: the same 10,000 items "
                             "with a tenth of the votes); at most one per item and customer")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--replace", action="store_true", help="overwrite an existing file / bench database")
    parser.add_argument("--drop", action="store_true", help="only remove the file / drop the bench database")
    parser.add_argument("--analyze", choices=["auto", "yes", "no"], default="auto",
                        help="gather planner statistics after loading; auto: on PostgreSQL (autovacuum would "
                             "soon), not on SQLite (nothing in Ahead runs ANALYZE there)")
    args = parser.parse_args()
    url = database_url(args.target)
    if args.drop:
        drop(url)
        print(f"dropped {make_url(url).render_as_string(hide_password=True)}")
        return
    prepare(url, replace=args.replace)
    analyze = args.analyze == "yes" or (args.analyze == "auto" and not url.startswith("sqlite"))
    generate(url, scale=args.scale, seed=args.seed, analyze=analyze, votes=args.votes)


if __name__ == "__main__":
    main()
