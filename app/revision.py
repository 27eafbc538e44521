"""The content revision: one number that changes whenever a transaction changes what pages show.

Every process keeps caches (rendered pages, portal settings) keyed on it, so a vote, an edit or a
settings change shows at once in every worker, with no time-to-live and no messages between
processes: a request reads the revision (one tiny query), and what is cached under another revision
is simply not used.

How it changes: before a transaction changes a content table, it sets one row of `content_revisions` to
a fresh random 58-bit value, in the same transaction. The revision is the sum of the rows. Random values
rather than a counter, because a counter comes back to an earlier value when a transaction is rolled
back, and a page cached under that value (by the rolled-back transaction itself, or in a test) would be
served again for other content. Several rows rather than one, so that concurrent writers on PostgreSQL
seldom wait for each other's row lock: a transaction picks one row at its first change and keeps it, and
takes that lock before it changes anything else, so the revision rows cannot take part in a deadlock.

Where it is watched: `track(database)` attaches the listeners to that database's engine and session
factories (the app's and the CLI's), never to SQLAlchemy's global classes, so a session or engine made
elsewhere in the process is left alone. The engine's listener sees every INSERT, UPDATE and DELETE run
on its connections, whatever made it: an ORM flush, `session.execute(insert(table))`, a statement run on
`session.connection()` directly, or plain SQL text. The session factories' listener only adds what the
ORM knows and SQL does not: a flush that changes nothing but a model's `__unshown__` columns (a user's
last sign-in time) leaves the revision alone.

Why this is exact: on SQLite a read transaction sees one snapshot, revision and content alike. On
PostgreSQL (read committed) what a request renders after reading revision R is at least as new as R;
once a later change commits, every request reads a different revision. So a page cached under R is
never served after a change it does not show has committed.

Tables that never reach a page (sign-in sessions, single-use tokens, the audit log) do not change it,
nor do columns a model lists in `__unshown__` (a user's last sign-in time).

**Votes move a revision of their own** (`votes`), on shards of their own: a vote, a withdrawal, a changed
importance and the follow a vote makes write vote rows, follows and the item's counters, and nothing else a
kept page shows but the counts. Kept pages stay under the content revision; the counts are filled into them
per request (app/voting/widget.py), read once per votes revision, and a page whose layout follows the counts
(sorted by votes or trend, the item page's vote box) is kept under both. On PostgreSQL the vote's own statement
writes the votes revision's move, as one more CTE (`votes_move_in_statement`): one round trip less per vote. What counts as a vote's write is
decided per statement and conservatively: an INSERT, UPDATE or DELETE of `votes` or `follows`, and an UPDATE of
`items` that sets the counters and nothing else (its CTEs, if any, writing only those tables); anything else
moves the content revision as before. The same exactness holds for it: a request reads both in one statement.

**Sign-in sessions move a revision of their own too** (`sessions`), on a few shards after the votes', and the
database moves it, not the app: triggers (migrations/versions/2026-12-04-0500_sessions_revision_triggers.py) move
it on every write of `user_sessions` (a sign-in, a sign-out, a revoked session, "sign out everywhere", a changed
expiry), on a change of what a viewer reads of a person (name, email, role, active, organisation) or of an
organisation's segment, and on a deleted person or organisation, whoever writes them: the app, or SQL by hand. It
lets the workers keep who a session cookie stands for (app/deps.py `SignedInViewers`) until the content or the
sessions revision moves; no page is kept under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from itertools import chain
from typing import Any, Generic, TypeVar

import psycopg
from sqlalchemy import (
    BigInteger,
    Connection,
    Delete,
    Insert,
    Select,
    SmallInteger,
    String,
    Update,
    and_,
    bindparam,
    case,
    func,
    inspect,
    literal,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql.elements import TextClause

from app.db import Base, Database, listen_once

SHARDS = 16
VALUE_BITS = 58  # 16 of them sum to less than 2**62: a BIGINT on PostgreSQL, an integer on SQLite
# One more row, moved only by the portal's settings: what caches settings need not reload per vote.
SETTINGS_SHARD = SHARDS
SETTINGS_TABLES = frozenset({"portal_settings", "portal_assets", "webhook_endpoints"})
# Then the votes revision's rows (as many as the content's: concurrent voters seldom wait for one row's lock).
VOTES_SHARDS = range(SHARDS + 1, 2 * SHARDS + 1)
# Then the sessions revision's: fewer, sign-ins are rarer than votes (still seldom a wait for one row's lock). Moved
# by the database's triggers (above), whose migration names these shards.
SESSIONS_SHARDS = range(2 * SHARDS + 1, 2 * SHARDS + 5)
SESSION_TABLES = frozenset({"user_sessions"})
# What a vote writes: vote rows, follows, and the item's counters (no other column of items).
VOTE_TABLES = frozenset({"votes", "follows"})
COUNTER_COLUMNS = frozenset({"vote_count", "trend_count"})

# Written on sign-in and by single-use tokens; nothing a page shows depends on them (sign-in sessions move the
# sessions revision, for the viewers kept per worker: SESSION_TABLES).
# Staff-only records too: API tokens (their last use is written while the API is read) and the decisions on
# record, which no portal page shows. Webhook endpoints move the settings revision only (the subscriptions are
# cached under it), and the delivery log moves nothing.
# Tables no kept page (a visitor's or customer's board or item page) shows. A write to them leaves the pages kept:
# the outbox's jobs (every email sent and webhook call marks its job), the desk's aggregates and notification
# choices (staff pages and /me are never kept), digest entries.
UNSHOWN_TABLES = frozenset({"user_sessions", "used_tokens", "magic_links", "audit_events", "content_revisions",
                            "api_tokens", "decisions", "tracker_hooks", "tracker_deliveries", "webhook_endpoints",
                            "webhook_deliveries", "outbox_jobs", "digest_entries", "notification_preferences",
                            "desk_days", "desk_windows", "desk_item_orgs", "desk_spans", "desk_state"})

_INFO_VALUE = "ahead_revision"
# On the connection: (transaction, shard) of the transaction that moved the revision, until it ends
_SHARD = "ahead_revision_shard"
_VOTES_SHARD = "ahead_revision_votes_shard"
# On the connection: the transaction that moved the revision, while nobody has read it since
_MOVED = "ahead_revision_moved"
_VOTES_MOVED = "ahead_revision_votes_moved"
# On the connection: [valid] shared by every value read on it, made invalid when the revision moves there or
# a transaction or savepoint ends there (a session's remembered value then is read again)
_STAMP = "ahead_revision_stamp"
# On the connection, during a tracked session's flush: the tables it updates with only `__unshown__` changes
_UNSHOWN_UPDATES = "ahead_revision_unshown"
_DML = re.compile(r"\s*(insert|update|delete)\b\s+(?:or\s+\w+\s+)?(?:into\s+|from\s+)?\"?(\w+)", re.IGNORECASE)


class ContentRevision(Base):
    __tablename__ = "content_revisions"

    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


def content_tables() -> list[str]:
    """The tables whose changes move the content revision: every mapped table but the unshown ones (and a
    table the models do not know, e.g. the search index, moves it too)."""
    return sorted(name for name in Base.metadata.tables if name not in UNSHOWN_TABLES)


# Plain SQL on the session's connection: read on every request, it skips the ORM's statement
# compilation and caching (about a third of a cached page's CPU when it went through them).
# Its columns: content, settings, votes, sessions.
# bandit B608: only integer constants are formatted into this statement
_READ = (f"SELECT coalesce(sum(CASE WHEN shard < {SHARDS} THEN value ELSE 0 END), 0), "  # nosec B608
         f"coalesce(sum(CASE WHEN shard = {SETTINGS_SHARD} THEN value ELSE 0 END), 0), "
         f"coalesce(sum(CASE WHEN shard BETWEEN {VOTES_SHARDS[0]} AND {VOTES_SHARDS[-1]} THEN value ELSE 0 END), 0), "
         f"coalesce(sum(CASE WHEN shard >= {SESSIONS_SHARDS[0]} THEN value ELSE 0 END), 0) FROM content_revisions")


# The move, in each driver's parameter style (psycopg: pyformat; sqlite3: named). Its table is an unshown one, so
# the listener that sees it (_before_driver_sql) moves nothing more.
_UPSERT_PG = ("INSERT INTO content_revisions (shard, value) VALUES (%(shard)s, %(value)s) "
              "ON CONFLICT (shard) DO UPDATE SET value = excluded.value")
_UPSERT_SQLITE = ("INSERT INTO content_revisions (shard, value) VALUES (:shard, :value) "
                  "ON CONFLICT (shard) DO UPDATE SET value = excluded.value")


# The revisions this process read last (content, settings, votes, sessions): what `guess` offers a vote.
_last_read: tuple[int, int, int, int] | None = None


def _read(session: Session) -> tuple[int, int, int, int, list[bool]]:
    global _last_read
    memo: tuple[int, int, int, int, list[bool]] | None = session.info.get(_INFO_VALUE)
    if memo is None or not memo[4][0]:
        connection = session.connection()
        content, settings_value, votes_value, sessions_value = connection.exec_driver_sql(_READ).one()
        values = (int(content), int(settings_value), int(votes_value), int(sessions_value))
        if not session.info.get(_GUESSED):  # a guess is not a read: what was read last stays what was read
            _last_read = values
        memo = session.info[_INFO_VALUE] = (*values, _stamp(connection))
    return memo


def has_read(session: Session) -> bool:
    """Whether the session holds revisions it read (or took: `adopt`, `guess`) that still stand."""
    memo = session.info.get(_INFO_VALUE)
    return memo is not None and bool(memo[4][0])


def adopt(session: Session, read: Watched) -> None:
    """The revisions of the worker's shared read (`PostgresWatcher`: a read that started after the request arrived)
    as this session's own, as if it had read them first: a read request then sends no statement for them. Whatever
    the session reads afterwards is as new as they are or newer, as after a read of its own, and a change it makes
    itself makes it read them again (the connection's stamp, as for a read). Nothing when it holds revisions already."""
    global _last_read
    if has_read(session):
        return
    content, votes, sessions = read
    values = (content, read.settings, votes, sessions)
    _last_read = values
    session.info[_INFO_VALUE] = (*values, _stamp(session.connection()))


def _stamp(connection: Connection) -> list[bool]:
    """The connection's stamp, for a value about to be remembered; it counts as read since any move on it."""
    info = connection.info
    stamp = info.get(_STAMP)
    if stamp is None:
        stamp = info[_STAMP] = [True]
    info.pop(_MOVED, None)  # read since it moved: the next change moves it again
    info.pop(_VOTES_MOVED, None)
    return stamp


# --- guessing the revisions: the vote's one statement ------------------------------------------------------

_GUESSED = "ahead_revision_guessed"


def guess(session: Session, *, detached: bool = False) -> tuple[int, int, int] | None:
    """Take the revisions this process read last as this session's, with no statement, for a request that checks
    them in its one statement before anything it did counts (PostgreSQL's vote: `app/voting/service.py`
    `cast_at_once`, `guessed_cte`): returns the (content, settings, sessions) the statement must find, or None
    when nothing was read yet, or this session holds revisions it read or guessed already.

    Until that statement confirms them (`confirmed`), nothing computed from them may be answered, committed or
    kept as true: the request must be rolled back and run again without a guess (`guess_failed`). What caches
    fill meanwhile under the guessed values is still right: a value read under a wrong guess is filed under
    revisions that will not come back (they are random), and one read under a right guess was current then.

    `detached`: the statement runs apart from the session (`app.db.DriverTransaction`), which then takes no
    connection for the guess; once that statement has committed, `forget` drops the guess (as a commit on the
    session's own connection would).
    """
    last = _last_read
    memo = session.info.get(_INFO_VALUE)
    if last is None or (memo is not None and memo[4][0]):
        return None
    session.info[_GUESSED] = True
    session.info[_INFO_VALUE] = (*last, [True] if detached else _stamp(session.connection()))
    return last[0], last[1], last[3]


def confirmed(session: Session) -> None:
    """The statement found the guessed revisions: they are this session's, as if read."""
    session.info.pop(_GUESSED, None)


def forget(session: Session) -> None:
    """What the session read or guessed is read again at its next use (a detached statement committed a move)."""
    session.info.pop(_GUESSED, None)
    session.info.pop(_INFO_VALUE, None)


def guess_failed(session: Session) -> None:
    """The statement did not confirm the guess (or never ran): the caller rolls back; the next read is real."""
    forget(session)


def guessing(session: Session) -> bool:
    return bool(session.info.get(_GUESSED))


def guessed_cte() -> Any:
    """For the statement that confirms a guess: a CTE of one row (`ok`) when the content, settings and sessions
    revisions are `p_rev_content`, `p_rev_settings` and `p_rev_sessions` in the statement's snapshot, else none.

    It also sets the transaction's `lock_timeout` to `p_lock_timeout` (e.g. "5000ms"; None: as it is), read
    before the statement locks anything (the rows it locks are filtered on this CTE): a statement run off the event
    loop waits for its locks in PostgreSQL's queue, in turn, instead of the request's short slices and reruns
    (`DB_LOCK_WAIT_SLICE`), which on a busy item kept some votes waiting until they answered 503."""
    table = ContentRevision.__table__
    shard, value = table.c.shard, table.c.value

    def total(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, value), else_=0)), 0)

    waits = func.set_config("lock_timeout", func.coalesce(bindparam("p_lock_timeout", type_=String()),
                                                          func.current_setting("lock_timeout")), True)
    return select(literal(True).label("ok"), waits.label("lock_timeout")).select_from(table).having(and_(
        total(shard < SHARDS) == bindparam("p_rev_content", type_=BigInteger()),
        total(shard == SETTINGS_SHARD) == bindparam("p_rev_settings", type_=BigInteger()),
        total(shard >= SESSIONS_SHARDS[0]) == bindparam("p_rev_sessions", type_=BigInteger()),
    )).cte("guessed")


def read_all(session: Session) -> tuple[int, int, int, int]:
    """(content, settings, votes, sessions) as this session sees them: the one read every value above shares."""
    memo = _read(session)
    return memo[0], memo[1], memo[2], memo[3]


def current(session: Session) -> int:
    """The content revision as this session sees it (read once per transaction, until it changes something)."""
    return _read(session)[0]


def votes(session: Session) -> int:
    """The votes revision: moves with every vote, withdrawal or follow, and only with those (see above)."""
    return _read(session)[2]


def sessions(session: Session) -> int:
    """The sessions revision: moved by the database's triggers on what a signed-in viewer is made of (see above)."""
    return _read(session)[3]


def both(session: Session) -> tuple[int, int]:
    """(content, votes) revisions, read together."""
    memo = _read(session)
    return memo[0], memo[2]


def peek(database: Database) -> tuple[int, int]:
    """(content, votes) revisions as a new transaction sees them, in a short read session of its own (for answers
    given before a request's own session is opened: app.pagecache.KeptPagesMiddleware)."""
    session = database.new_session(write=False)
    try:
        return both(session)
    finally:
        session.close()


class SqliteWatcher:
    """(content, votes) revisions on SQLite without a transaction per request: `PRAGMA data_version`.

    A connection of its own, which never writes, asks SQLite whether anything was committed since it last
    looked: the pragma's value "is unchanged for commits made on the same database connection" and changes with
    every commit of any other connection, in this process or another, so on a connection that never writes it
    changes with every commit. Only then are the revisions read again (on that same connection). The pragma runs
    outside any transaction (autocommit), so it starts a read of its own and sees every commit that completed
    before it: what it returns is never older than a change committed before the request came in, and a
    commit racing with the read below only makes the next call read again. About 3 µs instead of a pooled
    session's begin, query and commit (≈ 100 µs).
    """

    def __init__(self, path: str, busy_seconds: float = 15.0) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_seconds)
        self._lock = threading.Lock()
        self._version: int | None = None
        self._known: tuple[int, int] | None = None
        self.reads = 0  # times the revisions were read again (for the tests and the bench)

    def __call__(self, _database: Any = None) -> tuple[int, int]:
        with self._lock:
            version = self._connection.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version or self._known is None:
                content, _settings, votes_value, _sessions = self._connection.execute(_READ).fetchone()
                self._known = (int(content), int(votes_value))
                self._version = version
                self.reads += 1
            return self._known

    @property
    def version(self) -> int | None:
        """The data_version the last call saw: it moves with every commit (of another connection) after it."""
        return self._version

    def close(self) -> None:
        with self._lock:
            self._connection.close()


Revisions = tuple[int, int]


class Watched(tuple[int, int, int]):
    """PostgreSQL's read: (content, votes, sessions), one statement (the sessions revision for the kept viewers), and
    the settings revision read with them (`settings`): a read request takes all four as its own (`adopt`)."""

    settings: int

    def __new__(cls, content: int, votes: int, sessions: int, settings: int) -> Watched:
        read = super().__new__(cls, (content, votes, sessions))
        read.settings = settings
        return read


_Read = TypeVar("_Read")
# How long a request waits for the read it joined before it goes through the app, which reads the revision in its
# own session (a database that answers slowly then slows those requests, not every kept page of the worker).
READ_TIMEOUT_SECONDS = 0.5


class SingleFlight(Generic[_Read]):
    """A read of the revisions shared by the requests of one worker (one event loop), never older than any of them.

    A request may only be answered from a read that *started* after it arrived: a write whose commit returned
    before the request came in is then seen. So a request that arrives while a read is in flight does not take
    that read's answer; it waits for the next read, which starts as soon as the one in flight ends and serves
    every request that arrived in between. At most one read is in flight and one queued per worker, however many
    requests wait, and under load each read answers many of them: the round trip is paid per batch, not per
    request, and the event loop serves other requests meanwhile instead of blocking on a pooled session.

    `fetch` makes one read; a read that fails or takes longer than `timeout` fails every request that waited
    for it (they go through the app), and `reset` runs before the next read (the PostgreSQL reader drops its
    connection then, so a broken or hung one is replaced).
    """

    def __init__(self, fetch: Callable[[], Awaitable[_Read]], *, timeout: float = READ_TIMEOUT_SECONDS,
                 reset: Callable[[], Awaitable[None]] | None = None) -> None:
        self._fetch = fetch
        self._reset = reset
        self._timeout = timeout
        self._running: asyncio.Future[_Read] | None = None  # the read in flight
        self._queued: asyncio.Future[_Read] | None = None  # the read that starts when it ends
        self._tasks: set[asyncio.Task[None]] = set()
        self.reads = 0  # reads started (for the tests and the bench)

    def __call__(self, _database: Any = None) -> Awaitable[_Read]:
        """The revisions from a read that starts after this call: the one about to start, or the queued one."""
        loop = asyncio.get_running_loop()
        if self._running is None:
            future = self._running = loop.create_future()
            self._start(future)
        else:
            if self._queued is None:
                self._queued = loop.create_future()
            future = self._queued
        # A request given up (its client went away) must not cancel the read the others wait for.
        return asyncio.shield(future)

    def _start(self, future: asyncio.Future[_Read]) -> None:
        self.reads += 1
        task = asyncio.get_running_loop().create_task(self._read(future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, future: asyncio.Future[_Read]) -> None:
        try:
            value = await asyncio.wait_for(self._fetch(), self._timeout)
        except Exception as error:  # each waiting request goes through the app, which answers for itself
            if self._reset is not None:
                with contextlib.suppress(Exception):
                    await self._reset()
            future.set_exception(error)
            future.exception()  # retrieved here: nobody may be waiting any more
        else:
            future.set_result(value)
        finally:
            if not future.done():  # this task was cancelled (the loop is closing): its waiters are too
                future.cancel()
            queued, self._queued = self._queued, None
            self._running = queued
            if queued is not None:
                self._start(queued)

    async def drain(self) -> None:
        """Wait for the reads in flight (at shutdown, before the connection goes)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class PostgresWatcher(SingleFlight[Watched]):
    """(content, votes, sessions) revisions on PostgreSQL, single-flight per worker on a connection of its own (the
    visitors' pages use the first two; the signed-in people's the sessions revision too, app/deps.py).

    The connection is outside the pool, in autocommit: each read is one statement, its own transaction, whose
    snapshot is taken when the server receives it, so after every commit that returned before the read was sent
    (and `SingleFlight` sends it only after the requests it answers arrived). No session state, no prepared
    statement (`prepare_threshold=None`) and no LISTEN: it works through PgBouncer in transaction mode too. It is
    opened at the first read, and opened again after a read failed.
    """

    def __init__(self, conninfo: str, *, timeout: float = READ_TIMEOUT_SECONDS) -> None:
        super().__init__(self._query, timeout=timeout, reset=self.close)
        self._conninfo = conninfo
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._following: tuple[Callable[[], tuple[int | None, Sequence[int]]], Callable[[int, dict[int, int]], None],
                               Callable[[Sequence[int]], str]] | None = None  # (`follow_counts`)

    def follow_counts(self, followed: Callable[[], tuple[int | None, Sequence[int]]],
                      seen: Callable[[int, dict[int, int]], None], statement: Callable[[Sequence[int]], str]) -> None:
        """After a read that finds the votes revision moved from the one `followed()` gives — (votes revision known,
        item ids) —, the vote counts of those items, read at once on the same connection with `statement(ids)` (the
        voting domain's, (id, count) rows) and handed to `seen(votes revision, counts)` before the requests waiting
        for the read go on: they refill the kept pages that show
        counts (app/voting/widget.py) without a read of their own on the event loop, where it held every request of
        the worker for a round trip after each vote. The counts are read after the revision, so they are at least
        as new as it (a vote committed in between shows too, as it may). A quiet read stays one statement: a single
        statement for both, its subquery planned on every read, cost PostgreSQL more than the votes' reads saved."""
        self._following = followed, seen, statement

    async def _query(self) -> Watched:
        connection = self._connection
        if connection is None or connection.closed:
            connection = self._connection = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, prepare_threshold=None, application_name="ahead revision")
        cursor = await connection.execute(_READ)
        row = await cursor.fetchone()
        if row is None:  # an aggregate always answers one row
            raise RuntimeError("the revision read returned no row")
        votes = int(row[2])
        if self._following is not None:
            followed, seen, statement = self._following
            known, ids = followed()
            if ids and votes != known:
                counted = await connection.execute(statement(ids))
                seen(votes, {int(item_id): int(count) for item_id, count in await counted.fetchall()})
        return Watched(int(row[0]), votes, int(row[3]), int(row[1]))

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


def reader_for(database: Database) -> Callable[[Database], Revisions | Awaitable[Watched]]:
    """The cheapest exact way to read (content, votes) before a request's own session: SQLite's data_version
    for a database in a file whose sessions are the engine's own; on PostgreSQL a single-flight read per worker
    on a connection of its own (`PostgresWatcher`); else a short read session (`peek`).

    PostgreSQL does not use LISTEN/NOTIFY: a listener hears of a commit only some time after the writer's commit
    returned, so a page could be answered in between for a change already committed (and a connection that
    listens cannot go through PgBouncer in transaction mode). Sessions bound to another connection (the tests'
    rolled-back transaction) keep `peek`: a connection of its own would not see their uncommitted rows.
    """
    engine = database.engine
    path = engine.url.database
    bound = database.read_sessions.kw.get("bind")
    if bound is not engine:
        return peek
    if engine.dialect.name == "sqlite" and path not in (None, "", ":memory:") and not str(path).startswith("file:"):
        return SqliteWatcher(str(path))
    if engine.dialect.name == "postgresql":
        return PostgresWatcher(engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    return peek


def settings(session: Session) -> int:
    """The settings revision: moves when portal settings change, and only then."""
    return _read(session)[1]


def bump(session: Session, *, settings_changed: bool = False) -> None:
    """Move the revision in this session's transaction (normally done by the listeners below)."""
    _move(session.connection(), settings_changed=settings_changed)


def _upsert(connection: Connection, shard: int) -> None:
    """A new random value for one row of the revision. An upsert, so that a row someone deleted (a test emptying
    every table) comes back. Plain SQL, as the read: it runs in every write transaction, and building and
    cache-keying it as a Core statement cost more CPU than the round trip."""
    value = random.getrandbits(VALUE_BITS)  # nosec B311 # a cache revision only has to change, it is not a secret
    upsert = _UPSERT_PG if connection.dialect.name == "postgresql" else _UPSERT_SQLITE
    connection.exec_driver_sql(upsert, {"shard": shard, "value": value})


def votes_move_in_statement(session: Session) -> tuple[int, int] | None:
    """The votes revision's move as (shard, value) for a statement to write itself (PostgreSQL's vote: the upsert of
    `content_revisions` as one more CTE of the vote's statement, one round trip less), or None when this transaction
    moved it already and nobody read it since. Once this returns, the move counts as made: the caller must run the
    statement that writes it in this transaction (a failure there fails the transaction, and its move with it)."""
    connection = session.connection()
    shard = _claim(connection)
    if shard is None:
        return None
    return shard, random.getrandbits(VALUE_BITS)  # nosec B311 # a cache revision only has to change


def votes_move_detached() -> tuple[int, int]:
    """The votes revision's move as (shard, value) for a statement that runs apart from any session and writes it
    itself (PostgreSQL's vote at once through the driver): any shard, a fresh value."""
    return random.choice(VOTES_SHARDS), random.getrandbits(VALUE_BITS)  # nosec B311 # a cache revision only has to change


def _move_votes(connection: Connection) -> None:
    """Move the votes revision in the connection's transaction: once, unless someone on it read it since."""
    shard = _claim(connection)
    if shard is not None:
        _upsert(connection, shard)


def _claim(connection: Connection) -> int | None:
    """The shard this transaction moves the votes revision on (picked at its first move and kept), the move
    counted as made from now on; None when it moved already and nobody on the connection read it since."""
    transaction = connection.get_transaction()
    info = connection.info
    if info.get(_VOTES_MOVED) is transaction:
        return None
    kept = info.get(_VOTES_SHARD)
    if kept is not None and kept[0] is transaction:
        shard: int = kept[1]
    else:
        shard = random.choice(VOTES_SHARDS)  # nosec B311 # spreads writes over shards, not a secret
        info[_VOTES_SHARD] = (transaction, shard)
    info[_VOTES_MOVED] = transaction
    _forget_values(connection)
    return shard


def _move(connection: Connection, *, settings_changed: bool = False) -> None:
    """Move the revision in the connection's transaction.

    Once per transaction is enough, unless someone on this connection read the revision since: only this
    connection can see the uncommitted value (in the tests, the app's requests and the test's own writes
    share one connection and one transaction, and read between writes).
    """
    transaction = connection.get_transaction()
    info = connection.info
    if not settings_changed and info.get(_MOVED) is transaction:
        return
    if settings_changed:
        shard = SETTINGS_SHARD
    else:
        kept = info.get(_SHARD)
        if kept is not None and kept[0] is transaction:
            shard = kept[1]
        else:
            # bandit B311: spreads writes over shards, not a secret
            shard = random.randrange(SHARDS)  # nosec B311
            info[_SHARD] = (transaction, shard)
    _upsert(connection, shard)
    if not settings_changed:
        info[_MOVED] = transaction
    _forget_values(connection)


def _touched(connection: Connection, tables: set[str]) -> None:
    if tables - UNSHOWN_TABLES:
        _move(connection)
    if tables & SESSION_TABLES:
        # The database's trigger moves the sessions revision: what this connection read of it is read again.
        _forget_values(connection)
    if tables & SETTINGS_TABLES:
        _move(connection, settings_changed=True)


def _a_votes_write(statement: Insert | Update | Delete, name: str) -> bool:
    """Whether this statement writes only what a vote writes: vote rows, follows, or the items' counters alone
    (and its CTEs likewise). Anything it cannot tell is not."""
    if name in VOTE_TABLES:
        pass
    elif name == "items" and isinstance(statement, Update):
        values: dict[Any, Any] = dict(statement._values or {})  # the SET clause of a Core update (columns or names)
        if not values or {getattr(column, "key", column) for column in values} - COUNTER_COLUMNS:
            return False
    else:
        return False
    return _ctes_write_votes(statement)


def _ctes_write_votes(statement: Any, *, reads_allowed: bool = False) -> bool:
    """Whether the statement's CTEs write only what a vote writes (`_a_votes_write`; the votes revision's own move
    too). `reads_allowed`: a SELECT's CTEs may read as well (PostgreSQL's vote at once)."""
    for cte in getattr(statement, "_independent_ctes", ()):
        element = getattr(cte, "element", None)
        if not isinstance(element, (Insert, Update, Delete)):
            if reads_allowed and isinstance(element, Select):
                continue
            return False
        name = getattr(element.table, "name", "")
        # The votes revision's own move, written by the statement (`votes_move_in_statement`)
        if not (name == ContentRevision.__tablename__ and isinstance(element, Insert)) and not _a_votes_write(
                element, name):
            return False
    return True


def _written_by_ctes(statement: Select[Any]) -> set[str]:
    """The tables a SELECT's data-modifying CTEs write (named by `add_cte`; "" for one of no single table)."""
    return {getattr(cte.element.table, "name", "") for cte in getattr(statement, "_independent_ctes", ())
            if isinstance(getattr(cte, "element", None), (Insert, Update, Delete))}


# --- the listeners ---------------------------------------------------------------------------------------


def track(database: Database) -> None:
    """Keep the content revision for this database: its engine sees every write, its session factories
    what the ORM knows of a flush. Once per engine and factory, however often it is called (each app of a
    process calls it, on its own database or one it shares)."""
    engine = database.engine
    listen_once(engine, "before_execute", _before_execute)
    listen_once(engine, "before_cursor_execute", _before_driver_sql)
    listen_once(engine, "commit", _end_of_transaction)
    listen_once(engine, "rollback", _end_of_transaction)
    listen_once(engine, "rollback_savepoint", _end_of_savepoint)
    listen_once(engine, "release_savepoint", _forget_values_event)
    for factory in {id(f): f for f in (database.read_sessions, database.write_sessions)}.values():
        track_sessions(factory)


def track_sessions(target: sessionmaker[Session] | Session) -> None:
    """The ORM's part for the sessions of one factory (or one session): a flush of `__unshown__` changes only."""
    listen_once(target, "before_flush", _before_flush)
    listen_once(target, "after_flush_postexec", _after_flush)


def _before_execute(connection: Connection, statement: Any, *_args: Any) -> None:
    """Every INSERT, UPDATE and DELETE on the engine's connections, the ORM's, Core's and `text()`."""
    if isinstance(statement, (Insert, Update, Delete)):
        # An alias or a join has no one name: moved anyway ("" is no unshown table).
        name = getattr(statement.table, "name", "")
        if isinstance(statement, Update):
            unshown = connection.info.get(_UNSHOWN_UPDATES)
            if unshown is not None and name in unshown:
                return
        if _a_votes_write(statement, name):
            _move_votes(connection)
            return
    elif isinstance(statement, Select):
        # A SELECT that writes through its CTEs (PostgreSQL's vote at once): as the statements they are.
        written = _written_by_ctes(statement)
        if not written:
            return
        if _ctes_write_votes(statement, reads_allowed=True):
            _move_votes(connection)
            return
        _touched(connection, written)
        return
    elif isinstance(statement, TextClause):
        match = _DML.match(statement.text)
        if match is None:
            return
        name = match.group(2).lower()
    else:
        return
    _touched(connection, {name})


def _before_driver_sql(connection: Connection, _cursor: Any, statement: str, _parameters: Any, context: Any,
                       _executemany: bool) -> None:
    """SQL given to `exec_driver_sql` as it is, which skips `before_execute`; what was compiled came by there."""
    if context is None or context.compiled is not None or statement is _READ:
        return
    match = _DML.match(statement)
    if match is not None:
        _touched(connection, {match.group(2).lower()})


def _changes_shown(obj: Any) -> bool:
    """Whether a changed row changed something shown: not if only its `__unshown__` columns changed."""
    unshown = getattr(obj, "__unshown__", ())
    if not unshown:
        return True
    return any(attr.key not in unshown and attr.history.has_changes() for attr in inspect(obj).attrs)


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    """Tell the engine's listener which of this flush's UPDATEs change only `__unshown__` columns."""
    shown = {obj.__tablename__ for obj in chain(session.new, session.deleted) if hasattr(obj, "__tablename__")}
    unshown: set[str] = set()
    for obj in session.dirty:
        name = getattr(obj, "__tablename__", None)
        if name is not None and name not in shown:
            (shown if _changes_shown(obj) else unshown).add(name)
    if unshown - shown:
        connection = session.connection()
        connection.info[_UNSHOWN_UPDATES] = frozenset(unshown - shown)
        session.info[_UNSHOWN_UPDATES] = connection


def _after_flush(session: Session, _context: Any) -> None:
    connection = session.info.pop(_UNSHOWN_UPDATES, None)
    if connection is not None:
        connection.info.pop(_UNSHOWN_UPDATES, None)


def _forget_values(connection: Connection) -> None:
    stamp = connection.info.pop(_STAMP, None)
    if stamp is not None:
        stamp[0] = False


def _end_of_transaction(connection: Connection) -> None:
    """A commit or a rollback: the next transaction moves the revision afresh, on a shard it picks."""
    if connection.invalidated:
        # The rollback of a connection found dead: the pool cleared what it noted with the DBAPI connection,
        # and reading `info` now would raise instead of letting the rollback finish.
        return
    connection.info.pop(_SHARD, None)
    connection.info.pop(_VOTES_SHARD, None)
    _end_of_savepoint(connection)


def _end_of_savepoint(connection: Connection, *_args: Any) -> None:
    # After a rolled-back savepoint the revision is what it was before it: the next change moves it again,
    # on the transaction's shard, and what a session remembers of the revision is read again.
    info = connection.info
    info.pop(_MOVED, None)
    info.pop(_VOTES_MOVED, None)
    info.pop(_UNSHOWN_UPDATES, None)
    _forget_values(connection)


def _forget_values_event(connection: Connection, *_args: Any) -> None:
    _forget_values(connection)
