"""Engine, declarative base and the one-transaction-per-request session.

One *sync* SQLAlchemy session type serves SQLite and PostgreSQL. Endpoints are ``async def`` and call
the services directly, without a thread-pool hop: see the README's architecture section for the
measurements behind that choice.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import DateTime, MetaData, Table, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from app.errors import DatabaseBusy

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


def make_engine(url: str, *, pool_size: int = 5, foreign_keys: bool = True, lock_timeout: float | None = None,
                statement_timeout: float | None = None) -> Engine:
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
    engine = create_engine(url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True)
    _prepare_postgresql(engine, lock_timeout=lock_timeout, statement_timeout=statement_timeout)
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
    orig = getattr(exc, "orig", None)
    if orig is None:
        return None
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
    """The engine and the two session factories: reads, and writes (BEGIN IMMEDIATE on SQLite)."""

    def __init__(self, url: str, *, pool_size: int = 5, lock_timeout: float | None = None,
                 statement_timeout: float | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, lock_timeout=lock_timeout,
                                  statement_timeout=statement_timeout)
        self.read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.write_sessions = sessionmaker(
            self.engine.execution_options(ahead_write=True), expire_on_commit=False
        )

    def new_session(self, *, write: bool) -> Session:
        return (self.write_sessions if write else self.read_sessions)()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction outside a request (CLI, seeding, workers)."""
        session = self.new_session(write=True)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


AfterCommit = Callable[[], Awaitable[None]]


class RequestSession:
    """The lazily opened session of one request; the middleware below ends it."""

    __slots__ = ("_after_commit", "_database", "_session", "_write", "committed")

    def __init__(self, database: Database, *, write: bool) -> None:
        self._database = database
        self._write = write
        self._session: Session | None = None
        self._after_commit: list[AfterCommit] = []
        self.committed = False

    @property
    def is_write(self) -> bool:
        return self._write

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
        self._session.commit()
        self._session.close()

    def finish(self, *, success: bool) -> None:
        if self._session is None:
            self.committed = self.committed or success
            return
        try:
            if success:
                self._session.commit()
                self.committed = True
            else:
                self._session.rollback()
        finally:
            self._session.close()
            self._session = None

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


class DbSessionMiddleware:
    """One transaction per request: commit before a success (< 400) is sent, roll back otherwise.

    Committing when the response *starts* means a commit that fails turns into a 500 instead of a
    success page for a change that was never stored. What a request left for after its commit
    (`after_commit`) runs once the answer is sent, and only if the commit succeeded.
    """

    def __init__(self, app: Any, database_getter: Any, write_get_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.database_getter = database_getter
        # GET routes that write (sign-in callbacks): they too take SQLite's write lock up front.
        self.write_get_prefixes = write_get_prefixes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        write = scope["method"] not in ("GET", "HEAD", "OPTIONS") or scope["path"].startswith(self.write_get_prefixes)
        holder = RequestSession(self.database_getter(), write=write)
        scope.setdefault("state", {})["db"] = holder
        replaced = False

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
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
            elif replaced:
                return
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            holder.finish(success=False)
            # After the whole answer was sent (the app's call returns after its last body message): the
            # client does not wait for this, and it runs only if the commit above succeeded.
            await holder.run_after_commit()


def insert_with_conflicts(dialect_name: str, table: Any) -> Any:
    """An INSERT that can say ON CONFLICT DO NOTHING / DO UPDATE, in the dialect of this kind of database."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(table)


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
