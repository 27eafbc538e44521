"""Engine, declarative base and the one-transaction-per-request session.

One *sync* SQLAlchemy session type serves SQLite and PostgreSQL. Endpoints are ``async def`` and call
the services directly, without a thread-pool hop: see the README's architecture section for the
measurements behind that choice.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import sqlite3
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import DateTime, MetaData, Table, create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from app.errors import DatabaseBusy
from app.ratelimit import counting_once

_T = TypeVar("_T")

log = logging.getLogger("ahead.db")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    if TYPE_CHECKING:
        # Every model maps a plain Table (none maps a join or a select), which is what Core's insert,
        # update and delete take; DeclarativeBase only promises a FromClause.
        __table__: ClassVar[Table]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC datetime is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite's busy timeout when the caller names none (migrations): as long as it has always been.
DEFAULT_SQLITE_BUSY_SECONDS = 15.0


# A pooled PostgreSQL connection idle longer than this is pinged before it is handed out (see
# `_check_pooled_connections`): a busy worker's connections come back within milliseconds and are not pinged;
# the outbox worker's and a quiet hour's are, as `pool_pre_ping` did.
PING_AFTER_IDLE_SECONDS = 1.0


def make_engine(url: str, *, pool_size: int = 5, foreign_keys: bool = True, lock_timeout: float | None = None,
                statement_timeout: float | None = None, ping_after_idle: float = PING_AFTER_IDLE_SECONDS) -> Engine:
    """The engine; `lock_timeout` and `statement_timeout` in seconds (None: the database's own default, none).

    PostgreSQL: `lock_timeout` and `statement_timeout` on every connection. SQLite locks the whole database
    for a writer: `lock_timeout` is its busy timeout (how long a writer waits for the write lock); it has no
    statement timeout.
    """
    if url.startswith("sqlite"):
        busy = lock_timeout if lock_timeout is not None else DEFAULT_SQLITE_BUSY_SECONDS
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy})
        _prepare_sqlite(engine, foreign_keys=foreign_keys, busy_ms=_ms(busy))
        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=0)
    _prepare_postgresql(engine, lock_timeout=lock_timeout, statement_timeout=statement_timeout)
    _check_pooled_connections(engine, ping_after_idle=ping_after_idle)
    return engine


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _prepare_postgresql(engine: Engine, *, lock_timeout: float | None, statement_timeout: float | None) -> None:
    """Set the timeouts once per connection, when the pool opens it (no round trip per request).

    A request's endpoint calls the database synchronously, so a statement waiting on a row lock stalls its
    whole worker: `lock_timeout` bounds that wait and `statement_timeout` any statement, and the error they
    raise becomes a 503 (see `database_busy`).
    """
    values = {name: f"{_ms(seconds)}ms" for name, seconds in
              (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)) if seconds}
    if not values:
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Outside a transaction, so that it lasts for the connection and not just the first transaction.
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            for name, value in values.items():
                cursor.execute("SELECT set_config(%s, %s, false)", (name, value))
        dbapi_connection.autocommit = autocommit


def _check_pooled_connections(engine: Engine, *, ping_after_idle: float) -> None:
    """Find a dead pooled connection before a transaction does, at no round trip on a busy worker.

    `pool_pre_ping` pinged on every checkout: a `SELECT 1` round trip (and its Python) before every request's
    first statement, about a tenth of a vote's CPU. A connection the server or a firewall dropped is almost
    always one that sat in the pool for a while, so only one idle longer than `ping_after_idle` is pinged;
    a failed ping makes the pool replace it (SQLAlchemy's checkout retry, as with pre-ping). One used a moment
    ago and dead anyway (the server restarted just now) fails on its first statement instead: that is marked
    (`lost_before_any_statement`), and DbSessionMiddleware runs the request again on a fresh connection —
    safe because nothing of its transaction reached the database. Every statement is counted on the
    connection for that (one attribute set per statement).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["ahead_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        record.info["ahead_ran"] = False
        idle_since = record.info.get("ahead_idle_since")
        if idle_since is None or time.monotonic() - idle_since <= ping_after_idle:
            return  # just opened, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool throws this connection away and hands out a new one (SQLAlchemy retries the checkout).
            raise DisconnectionError(f"pooled connection idle for {time.monotonic() - idle_since:.0f} s is dead") from exc

    @event.listens_for(engine, "after_cursor_execute")
    def _ran(conn: Any, *_args: Any) -> None:
        conn.info["ahead_ran"] = True

    @event.listens_for(engine, "handle_error")
    def _mark_lost(context: Any) -> None:
        connection = context.connection
        if context.is_disconnect and connection is not None and not connection.info.get("ahead_ran", True):
            context.sqlalchemy_exception.ahead_lost_before_any_statement = True


def lost_before_any_statement(exc: BaseException) -> bool:
    """The error of a connection found dead at its first statement since it left the pool (PostgreSQL).

    Nothing the transaction meant to do reached the database: running the whole request again on another
    connection does it exactly once. A connection lost later in a transaction is not marked (the server
    rolled that transaction back too, but the request may have acted on what it read), nor a failed COMMIT,
    which is the one place a write may or may not have happened.
    """
    return bool(getattr(exc, "ahead_lost_before_any_statement", False))


def _prepare_sqlite(engine: Engine, *, foreign_keys: bool = True, busy_ms: int = 15000) -> None:
    """WAL, foreign keys, busy timeout, and transactions that SQLAlchemy controls.

    pysqlite opens transactions lazily and commits behind our back on DDL; switching its own
    handling off and emitting BEGIN ourselves (the workaround from SQLAlchemy's SQLite dialect docs)
    makes SAVEPOINT rollbacks work and lets write requests take the lock up front with BEGIN
    IMMEDIATE, so concurrent writers wait for each other instead of failing with "database is locked".
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Off only for migrations: SQLite's batch ALTER recreates tables, and dropping a parent
        # table with foreign keys on would cascade-delete the rows that refer to it.
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("ahead_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# SQLSTATEs of PostgreSQL's two "waited too long" errors (psycopg: LockNotAvailable, QueryCanceled).
_LOCK_NOT_AVAILABLE = "55P03"
_QUERY_CANCELED = "57014"


def database_busy(exc: BaseException) -> DatabaseBusy | None:
    """The 503 for an error the database raised because it would not wait any longer; None for any other.

    A lock held longer than the lock timeout (PostgreSQL `lock_timeout`, SQLite's busy timeout: "database is
    locked"), or a statement over `statement_timeout`. The transaction is then unusable and is rolled back.
    """
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy's error wraps the driver's; `DriverTransaction` raises it as is
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg 3
    if sqlstate == _LOCK_NOT_AVAILABLE:
        return DatabaseBusy(DatabaseBusy.LOCKED)
    if sqlstate == _QUERY_CANCELED:
        return DatabaseBusy(DatabaseBusy.TOO_SLOW)
    if isinstance(orig, sqlite3.OperationalError) and (
            getattr(orig, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            or "is locked" in str(orig)):
        return DatabaseBusy(DatabaseBusy.LOCKED)
    return None


class Database:
    """The engine and the two session factories: reads, and writes (BEGIN IMMEDIATE on SQLite).

    `lock_wait_slice` (PostgreSQL, with a `lock_timeout`): the connections' lock_timeout is this slice instead,
    and a request that runs out of it is run again by DbSessionMiddleware until `lock_timeout` has passed in
    all (see there). SQLite ignores it: its write lock is the whole database's, taken at BEGIN.
    """

    def __init__(self, url: str, *, pool_size: int = 5, lock_timeout: float | None = None,
                 statement_timeout: float | None = None, lock_wait_slice: float | None = None) -> None:
        self.url = url
        self.lock_timeout = lock_timeout
        sliced = bool(lock_wait_slice and lock_timeout and lock_wait_slice < lock_timeout
                      and not url.startswith("sqlite"))
        self.lock_wait_slice = lock_wait_slice if sliced else None
        self.engine = make_engine(url, pool_size=pool_size, lock_timeout=self.lock_wait_slice or lock_timeout,
                                  statement_timeout=statement_timeout)
        self.read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.write_sessions = sessionmaker(
            self.engine.execution_options(ahead_write=True), expire_on_commit=False
        )

    # The off-loop slots, made at the first use (a class default: tests make bound copies by hand)
    _slots: PerLoopSemaphore | None = None

    def off_loop_slots(self) -> asyncio.Semaphore:
        """How many requests of the running event loop may hold a connection of this pool while they wait for a
        thread (the vote at once, a search): one fewer than the pool holds. A loop that asks the pool for a
        connection when none is free stops until one comes back, and a connection held by a request waiting off the
        loop only comes back through the loop: one is always left for it."""
        if self._slots is None:
            self._slots = PerLoopSemaphore(lambda: self.off_loop_slot_count)
        return self._slots.get()

    @property
    def off_loop_slot_count(self) -> int:
        return max(1, getattr(self.engine.pool, "size", lambda: 2)() - 1)

    def new_session(self, *, write: bool) -> Session:
        return (self.write_sessions if write else self.read_sessions)()

    def read_rows(self, sql: str) -> list[Any]:
        """The rows of one read-only statement, run on a pooled connection outside any transaction: on PostgreSQL in
        autocommit, one round trip (no BEGIN, no ROLLBACK), and no session or result objects. For the small reads made
        on the event loop before the stack (a kept page's vote counts, `app.pagecache.Filling.read_rows`); the
        engine's statement events do not see it. A connection that fails is dropped from the pool."""
        raw = self.engine.raw_connection()
        try:
            driver: Any = raw.driver_connection  # psycopg's Connection here
            if self.engine.dialect.name == "postgresql":
                driver.autocommit = True
                try:
                    return list(driver.execute(sql).fetchall())
                finally:
                    driver.autocommit = False
            cursor = raw.cursor()
            try:
                cursor.execute(sql)
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except BaseException:
            raw.invalidate()
            raise
        finally:
            raw.close()

    @property
    def drives_writes(self) -> bool:
        """Whether `driver_transaction` may be used: PostgreSQL, with the write sessions on this engine's pool (not
        the tests' connection, whose outer transaction a driver's commit would end)."""
        bind = self.write_sessions.kw.get("bind")
        return self.engine.dialect.name == "postgresql" and isinstance(bind, Engine) and bind.pool is self.engine.pool

    def driver_transaction(self) -> DriverTransaction:
        """One statement, its own transaction, on a pooled connection through psycopg alone (`DriverTransaction`; see
        `drives_writes`)."""
        return DriverTransaction(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction outside a request (CLI, seeding, workers)."""
        session = self.new_session(write=True)
        try:
            if self.lock_wait_slice:
                # Nobody runs this transaction again: it waits the whole lock timeout, as the CLI's engine does.
                session.execute(text("SELECT set_config('lock_timeout', :value, true)"),
                                {"value": f"{_ms(self.lock_timeout or 0)}ms"})
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


class LostBeforeAnyStatement(Exception):
    """The pooled connection a `DriverTransaction` took was found dead at its first statement: nothing reached the
    database, and the caller may do the same work another way (its session, on another connection)."""


@dataclass(frozen=True, slots=True)
class DriverSql:
    """A statement compiled once for one database and run as its SQL straight to the driver (`DriverTransaction.run`,
    `Connection.exec_driver_sql`): for hot statements whose execution through SQLAlchemy cost more than the statement
    (the vote at once; a search's tier statements, bench/README.md). Its text; its constants (the values written into
    the statement, such as an audience's visibility rule) as the driver takes them; what SQLAlchemy's execution would
    do to each value (its types' bind processors), done here once for the constants and per call for the parameters
    a call gives; and for a positional driver (SQLite's `?`) the order of the parameters. Rows come back as the
    driver gives them: no result processing (no dates parsed from SQLite's text, no enums), so for plain columns."""

    sql: str
    constants: dict[str, Any]
    processors: dict[str, Callable[[Any], Any]]
    order: tuple[str, ...] | None  # positional: the parameters' names in order; None for a named style

    @classmethod
    def compiled(cls, statement: Any, dialect: Any, *, given_prefix: str) -> DriverSql:
        """`statement` for `dialect`; the parameters named `given_prefix…` come with each call, the rest are its own."""
        compiled = statement.compile(dialect=dialect)
        processors = {name: processor for name, processor in compiled._bind_processors.items()
                      if processor is not None}
        constants = {name: (processors[name](value) if name in processors else value)
                     for name, value in compiled.params.items() if not name.startswith(given_prefix)}
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        return cls(compiled.string, constants, processors, order)

    def bound(self, given: dict[str, Any]) -> tuple[str, Any]:
        """The SQL and its parameters as the driver takes them (a dict, or a tuple for a positional driver)."""
        params = dict(self.constants)
        for name, value in given.items():
            processor = self.processors.get(name)
            params[name] = value if processor is None else processor(value)
        return self.sql, (params if self.order is None else tuple(params[name] for name in self.order))


class DriverTransaction:
    """One statement that is its own transaction (psycopg's autocommit) on a connection of the engine's pool, through
    psycopg alone: no Session, no SQLAlchemy Connection, no result objects. For PostgreSQL's vote at once (app/voting),
    whose one statement cost less than the ORM's steps around it: a checkout through the session, the execution's
    bookkeeping, the ORM's commit (together about 0.4 ms of a vote's 1.6-1.9 ms of CPU, bench/README.md); and in
    autocommit it is one round trip instead of three (BEGIN, the statement, COMMIT: about 0.1 ms of the client's CPU
    and 0.07 ms of PostgreSQL's more).

    The statement comes compiled with its parameters in psycopg's style (`run`) and is written once `run` returns; the
    engine's statement events do not see it, so it must do its own revision bookkeeping (the vote's moves its votes
    revision itself). The pool's checkout and checkin events run as for any connection (the idle ping, the timeouts set
    at connect). `close` always gives the connection back, out of autocommit, or drops it: a session given an
    autocommitting connection would write statement by statement. Errors: a lock or statement timeout is
    `DatabaseBusy` (the 503 every request answers); a connection dead at the statement is `LostBeforeAnyStatement`
    (the connection is dropped from the pool; had the server run the statement before the connection died, a caller
    running its write again must find it done: the vote and the withdrawal are idempotent); anything else is the
    driver's error."""

    __slots__ = ("_pooled",)

    def __init__(self, engine: Engine) -> None:
        self._pooled: Any = engine.raw_connection()
        driver: Any = self._pooled.driver_connection
        try:
            driver.autocommit = True  # idle, as the pool gives it: nothing to end first
        except psycopg.Error as exc:
            self._pooled.invalidate()
            self._pooled.close()
            raise LostBeforeAnyStatement from exc

    def run(self, sql: str, params: dict[str, Any]) -> Any:
        """The first row of `sql` (a named tuple), or None. Call it once."""
        driver: Any = self._pooled.driver_connection
        try:
            with driver.cursor(row_factory=namedtuple_row) as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone()
        except psycopg.Error as exc:
            if driver.closed or driver.broken:
                self._pooled.invalidate()
                raise LostBeforeAnyStatement from exc
            busy = database_busy(exc)
            if busy is not None:
                raise busy from exc
            raise

    def close(self) -> None:
        """Back to the pool, out of autocommit (or dropped)."""
        driver = self._pooled.driver_connection  # None once invalidated
        if driver is not None:
            try:
                driver.autocommit = False
            except psycopg.Error:
                self._pooled.invalidate()  # closed or broken: dropped, not given to a session as it is
        self._pooled.close()


AfterCommit = Callable[[], Awaitable[None]]


def _has_work(session: Session) -> bool:
    """Whether committing the session would do anything: a transaction begun, or objects added, changed or deleted
    that a flush would write."""
    return session.in_transaction() or bool(session.new or session.deleted or session.dirty)


class RequestSession:
    """The lazily opened session of one request; the middleware below ends it."""

    __slots__ = ("_after_commit", "_database", "_session", "_write", "committed", "connection_lost", "lock_refused",
                 "replayable")

    def __init__(self, database: Database, *, write: bool) -> None:
        self._database = database
        self._write = write
        self._session: Session | None = None
        self._after_commit: list[AfterCommit] = []
        self.committed = False
        # Set with the 503 of a statement that ran out of lock wait (app.main): the middleware may run the
        # request again instead of sending it, unless part of it was already committed (`end_transaction`).
        self.lock_refused = False
        # Set by app.main's handler when the request's connection was found dead at its first statement
        # (`lost_before_any_statement`): the middleware runs the request again once, on a fresh connection.
        self.connection_lost = False
        self.replayable = True

    @property
    def is_write(self) -> bool:
        return self._write

    @property
    def database(self) -> Database:
        return self._database

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = self._database.new_session(write=self._write)
        return self._session

    def after_commit(self, task: AfterCommit) -> None:
        """Run `task` once the request's transaction has committed and its answer has been sent; never if the
        transaction rolled back. For what must not happen inside the transaction, like talking to SMTP."""
        self._after_commit.append(task)

    def end_transaction(self) -> None:
        """Commit what the request did so far and end its transaction; the session stays usable and its next
        statement begins a new one. Its objects are detached: load again what the rest of the request changes.

        For slow work in the middle of a request that must not hold the database, like password hashing: on
        SQLite a write request's transaction holds the database's only write lock from its first statement.
        """
        if self._session is None:
            return
        self.replayable = False  # what is committed now would be done twice by a second run
        self._session.commit()
        self._session.close()

    def finish(self, *, success: bool) -> None:
        if self._session is None:
            self.committed = self.committed or success
            return
        try:
            if success:
                if _has_work(self._session):  # not after `end_transaction` with nothing since: an empty commit
                    self._session.commit()
                self.committed = True
            else:
                self._session.rollback()
        finally:
            self._session.close()
            self._session = None

    def drop_after_commit(self) -> None:
        self._after_commit = []

    async def run_after_commit(self) -> None:
        tasks, self._after_commit = self._after_commit, []
        if not self.committed:
            if tasks:
                log.info("request rolled back: %d after-commit task(s) dropped", len(tasks))
            return
        for task in tasks:
            try:
                await task()
            except Exception:
                # The change is stored and the person has their answer: the failure can only be logged.
                log.exception("after-commit task %r failed", task)


def after_commit(request: Any, task: AfterCommit) -> None:
    """`RequestSession.after_commit` for the current request (a Starlette/FastAPI Request)."""
    request.state.db.after_commit(task)


_FAILED_BODY = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Something went wrong</title>"
    b"<h1>Something went wrong</h1><p>Your change could not be saved. Nothing was changed; please try again.</p>"
)


# The longest pause between two runs of a request waiting for a lock: short enough that a released lock is
# noticed soon, long enough that waiting requests leave most of the worker's time to everyone else.
MAX_LOCK_PAUSE = 0.25


class PerLoopSemaphore:
    """A semaphore of `size()` for the running event loop: one belongs to one loop, and a database or an app may
    outlive one (the tests)."""

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self._kept: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def get(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._kept is None or self._kept[0] is not loop:
            self._kept = (loop, asyncio.Semaphore(self._size()))
        return self._kept[1]


OFF_LOOP = "ahead.off_loop"  # in the request's state: it holds one of the database's off-loop slots


class OffLoopMiddleware:
    """Requests for `paths` or paths under `prefixes` (GET, HEAD: the searches, the API's items, the changelog's
    pages and feeds, the sitemap) wait for one of the database's off-loop slots
    (`Database.off_loop_slots`) before anything of theirs runs, and then do their slow part in a thread
    (`run_off_loop`): the search's statements, loading and marking its hits, and the page's render. Waiting, they
    hold no connection. Run on the event loop, a search held it for the whole search, round trips included, and a
    kept page, answered in a fraction of a millisecond, waited behind every search ahead of it: under a flood of
    searches that no one asked before, the kept board's median went from under a millisecond to 0.1 s (SQLite) and
    1 s (PostgreSQL). Half of the slots at most go to these requests (the rest stay for the votes), and a worker
    runs that many at once: more threads made each search dearer (the interpreter's lock, passed between them) and
    left the loop less of it (bench/README.md, "a search flood")."""

    def __init__(self, app: Any, *, database_getter: Callable[[], Database], paths: frozenset[str],
                 prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.database_getter = database_getter
        self.paths = paths
        self.prefixes = prefixes
        # This middleware's share of the slots: half of them, at least one
        self._share = PerLoopSemaphore(lambda: max(1, database_getter().off_loop_slot_count // 2))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["method"] not in ("GET", "HEAD")
                or (scope["path"] not in self.paths and not scope["path"].startswith(self.prefixes))):
            await self.app(scope, receive, send)
            return
        database = self.database_getter()
        async with self._share.get(), database.off_loop_slots():
            scope.setdefault("state", {})[OFF_LOOP] = True
            await self.app(scope, receive, send)


async def run_off_loop(request: Any, work: Callable[[], _T]) -> _T:
    """`work()` in a thread when the request holds an off-loop slot (`OffLoopMiddleware`), else here. The work may
    use the request's session: its connection, taken on the loop, stays the request's."""
    if request.scope.get("state", {}).get(OFF_LOOP):
        return await asyncio.to_thread(work)
    return work()


class DbSessionMiddleware:
    """One transaction per request: commit before a success (< 400) is sent, roll back otherwise.

    Committing when the response *starts* means a commit that fails turns into a 500 instead of a
    success page for a change that was never stored. What a request left for after its commit
    (`after_commit`) runs once the answer is sent, and only if the commit succeeded.

    Waiting for a lock (PostgreSQL, `Database.lock_wait_slice`): a statement waits for a row lock at most one
    slice, blocking the worker's event loop that long, and then fails; its 503 is not sent. The transaction is
    rolled back (releasing what the request itself held), the request sleeps a moment with jitter (backing
    off, and paced so that this worker's waiting requests take at most about half of its time), so that the
    worker serves other requests and the lock's holder, perhaps on this very worker, can finish, and the
    app runs it again: a fresh RequestSession, the scope's state and session as they were when the request
    came in, and the body it has read so far replayed (the body cap around the app bounds what is kept).
    This repeats until the database's whole `lock_timeout` has passed; then the 503 goes out. Only the run
    that answers counts: after-commit work of the runs given up is dropped. What a run does outside the
    database does repeat: a rate-limit hit counted before the locked statement is counted again.
    """

    def __init__(self, app: Any, database_getter: Any, write_get_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.database_getter = database_getter
        # GET routes that write (sign-in callbacks): they too take SQLite's write lock up front.
        self.write_get_prefixes = write_get_prefixes
        self._waiting = 0  # requests of this worker between two runs after a lock wait

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with counting_once():  # a rate limit counts a request once, however often it runs (app/ratelimit.py)
            await self._serve(scope, receive, send)

    async def _serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        write = scope["method"] not in ("GET", "HEAD", "OPTIONS") or scope["path"].startswith(self.write_get_prefixes)
        if write and _is_form(scope):
            receive = await _body_first(receive)
        database = self.database_getter()
        started = time.monotonic()
        pause = getattr(database, "lock_wait_slice", None)
        if not pause and str(getattr(database, "url", "")).startswith("sqlite"):
            # A file has no connection to lose, and no lock wait in slices: one run.
            await self._run(scope, receive, send, RequestSession(database, write=write), started=started,
                            retry_until=None, reconnect=False)
            return
        deadline = started + (database.lock_timeout or 0) if pause else None
        replay = _Replay(scope, receive)
        backoff = pause or 0.0
        waiting = False
        reconnected = False
        try:
            while True:
                holder = RequestSession(database, write=write)
                run_started = time.monotonic()
                again = await self._run(scope, replay.receive(), send, holder, started=started, retry_until=deadline,
                                        reconnect=not reconnected)
                if not again:
                    return
                if holder.connection_lost:
                    # Once, at once: the pool has dropped the dead connection (and those opened before it).
                    log.warning("%s %s: its connection was found dead; running it again", scope["method"],
                                scope["path"])
                    reconnected = True
                    replay.restore()
                    continue
                assert deadline is not None  # nosec B101 # only a lock wait runs a request again, with a deadline
                if not waiting:
                    waiting = True
                    self._waiting += 1
                # A run blocks the loop for its slice of lock wait and its own work: paced by what the last one
                # took, this worker's waiting requests take about half of its time at most, however many.
                pause = max(backoff, 2 * (time.monotonic() - run_started) * self._waiting)
                # The last run starts at the deadline: its 503 comes one slice after DB_LOCK_TIMEOUT at most.
                await asyncio.sleep(min(pause * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))  # nosec B311 # jitter, not a secret
                backoff = min(backoff * 2, MAX_LOCK_PAUSE)
                replay.restore()
        finally:
            if waiting:
                self._waiting -= 1

    async def _run(self, scope: dict[str, Any], receive: Any, send: Any, holder: RequestSession, *,
                   started: float, retry_until: float | None, reconnect: bool) -> bool:
        """One run of the app; True when it should run again, nothing sent: it ran out of lock wait, or (when
        `reconnect`) its connection was found dead before any statement ran."""
        scope.setdefault("state", {})["db"] = holder
        replaced = False
        again = False

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal replaced, again
            if message["type"] == "http.response.start":
                if holder.connection_lost and reconnect and holder.replayable:
                    again = True
                    holder.finish(success=False)
                    return
                if holder.lock_refused:
                    if holder.replayable and retry_until is not None and time.monotonic() < retry_until:
                        again = True
                        holder.finish(success=False)
                        return
                    log.warning("%s on %s %s: a lock held elsewhere for %.1f s", message["status"], scope["method"],
                                scope["path"], time.monotonic() - started)
                try:
                    holder.finish(success=message["status"] < 400)
                except Exception:
                    log.exception("commit failed; answering 500")
                    replaced = True
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 500,
                            "headers": [(b"content-type", b"text/html; charset=utf-8")],
                        }
                    )
                    await send({"type": "http.response.body", "body": _FAILED_BODY})
                    return
            elif replaced or again:
                return
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            holder.finish(success=False)
            if again:
                holder.drop_after_commit()
            else:
                # After the whole answer was sent (the app's call returns after its last body message): the
                # client does not wait for this, and it runs only if the commit above succeeded.
                await holder.run_after_commit()
        return again


_FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")


def _is_form(scope: dict[str, Any]) -> bool:
    content_type = next((v for k, v in scope.get("headers") or () if k == b"content-type"), b"")
    return content_type.split(b";", 1)[0].strip().lower() in _FORM_TYPES


async def _body_first(receive: Any) -> Any:
    """A form's whole body, read before the request's first statement; a `receive` that hands it back.

    On SQLite a write request's first statement (looking up who is signed in) takes the database's only write
    lock. A route that awaited the rest of its form after that would hold the lock while the client sends,
    and every other writer of this worker's event loop would block on it. The body is bounded by the body cap
    around the app (`BodyLimitMiddleware`), and an error reading it (the cap's 413, say) is raised where the
    app reads the body, so the app's handlers answer it as before."""
    messages: list[dict[str, Any]] = []
    failure: BaseException | None = None
    try:
        while True:
            message: dict[str, Any] = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
    except Exception as exc:  # handed to the app where it reads the body
        failure = exc

    async def replay() -> dict[str, Any]:
        nonlocal failure
        if messages:
            return messages.pop(0)
        if failure is not None:
            raised, failure = failure, None
            raise raised
        message: dict[str, Any] = await receive()
        return message

    return replay


class _Replay:
    """What a request's next run starts from: its scope as it came in, and the body messages read so far."""

    def __init__(self, scope: dict[str, Any], receive: Any) -> None:
        self._scope = scope
        self._initial = dict(scope)
        self._state = dict(scope.get("state") or {})
        # Starlette's SessionMiddleware (OIDC sign-in) reads scope["session"] back when the answer starts.
        self._session = copy.deepcopy(scope.get("session"))
        self._receive = receive
        self._messages: list[dict[str, Any]] = []

    def restore(self) -> None:
        """The scope as it came in, in place: the middleware around this one read it when the answer starts."""
        self._scope.clear()
        self._scope.update(self._initial)
        self._scope["state"] = dict(self._state)
        if "session" in self._initial:
            self._scope["session"] = copy.deepcopy(self._session)

    def receive(self) -> Any:
        """A `receive` for one run: the body messages earlier runs read, then the client's."""
        position = 0

        async def receive() -> dict[str, Any]:
            nonlocal position
            if position < len(self._messages):
                position += 1
                return self._messages[position - 1]
            message: dict[str, Any] = await self._receive()
            if message["type"] == "http.request":
                self._messages.append(message)
                position += 1
            return message

        return receive


# What `listen_once` has attached, by target. Not `event.contains`: SQLAlchemy keys its registry by the target's
# id(), and a sessionmaker's listeners live on the class it made, which the registry outlives; a new factory at a
# dead one's address would look attached and never be (seen as a wake-up lost in a test run, 2026-12-04).
_attached: weakref.WeakKeyDictionary[Any, set[tuple[str, Any]]] = weakref.WeakKeyDictionary()


def listen_once(target: Any, name: str, fn: Callable[..., Any]) -> None:
    """`event.listen`, once per target, name and function however often it is called."""
    done = _attached.setdefault(target, set())
    if (name, fn) not in done:
        event.listen(target, name, fn)
        done.add((name, fn))


def insert_with_conflicts(dialect_name: str, table: Any) -> Any:
    """An INSERT that can say ON CONFLICT DO NOTHING / DO UPDATE, in the dialect of this kind of database."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(table)


# Bound parameters per IN list: well under SQLite's and PostgreSQL's limits, for lists of any length.
IN_CHUNK = 2000


def in_chunks(ids: Sequence[Any], size: int = IN_CHUNK) -> Iterator[list[Any]]:
    """`ids` a slice at a time, for `column.in_(...)` on lists that may be long (an item's whole history)."""
    for start in range(0, len(ids), size):
        yield list(ids[start:start + size])


def str_enum(enum_cls: type, length: int = 20) -> Any:
    """A StrEnum stored as its value in a VARCHAR (no native ENUM type on PostgreSQL)."""
    from sqlalchemy import Enum

    return Enum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        values_callable=lambda members: [m.value for m in members],
        length=length,
        validate_strings=True,
    )
