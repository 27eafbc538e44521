"""The content revision: one number that changes whenever a transaction changes what pages show.

Every process keeps caches (rendered pages, portal settings) keyed on it, so a vote, an edit or a
settings change shows at once in every worker, with no time-to-live and no messages between
processes: a request reads the revision (one tiny query), and what is cached under another revision
is simply not used.

How it changes: before a session flushes a change to a content table, or executes an INSERT, UPDATE
or DELETE on one, it sets one row of `content_revisions` to a fresh random 58-bit value, in the same
transaction. The revision is the sum of the rows. Random values rather than a counter, because a
counter comes back to an earlier value when a transaction is rolled back, and a page cached under
that value (by the rolled-back transaction itself, or in a test) would be served again for other
content. Several rows rather than one, so that concurrent writers on PostgreSQL seldom wait for each
other's row lock: a transaction picks one row at its first change and keeps it, and takes that lock
before it changes anything else, so the revision rows cannot take part in a deadlock.

Why this is exact: on SQLite a read transaction sees one snapshot, revision and content alike. On
PostgreSQL (read committed) what a request renders after reading revision R is at least as new as R;
once a later change commits, every request reads a different revision. So a page cached under R is
never served after a change it does not show has committed.

Tables that never reach a page (sign-in sessions, single-use tokens, the audit log) do not change it,
nor do columns a model lists in `__unshown__` (a user's last sign-in time).
"""

from __future__ import annotations

import random
import re
from itertools import chain
from typing import Any

from sqlalchemy import BigInteger, Connection, Engine, SmallInteger, event, inspect
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column
from sqlalchemy.sql.elements import TextClause

from app.db import Base, insert_with_conflicts

SHARDS = 16
VALUE_BITS = 58  # 16 of them sum to less than 2**62: a BIGINT on PostgreSQL, an integer on SQLite
# One more row, moved only by the portal's settings: what caches settings need not reload per vote.
SETTINGS_SHARD = SHARDS
SETTINGS_TABLES = frozenset({"portal_settings", "portal_assets"})

# Written on sign-in and by single-use tokens; nothing a page shows depends on them.
UNSHOWN_TABLES = frozenset({"user_sessions", "used_tokens", "magic_links", "audit_events", "content_revisions"})

_INFO_VALUE = "ahead_revision"
_INFO_SHARD = "ahead_revision_shard"
_CONNECTION_MARK = "ahead_revision_mark"  # [transaction, read since] once a transaction moved the revision
_DML = re.compile(r"\s*(insert|update|delete)\b\s+(?:or\s+\w+\s+)?(?:into\s+|from\s+)?\"?(\w+)", re.IGNORECASE)


class ContentRevision(Base):
    __tablename__ = "content_revisions"

    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


# Plain SQL on the session's connection: read on every request, it skips the ORM's statement
# compilation and caching (about a third of a cached page's CPU when it went through them).
# bandit B608: only integer constants are formatted into this statement
_READ = (f"SELECT coalesce(sum(CASE WHEN shard < {SHARDS} THEN value ELSE 0 END), 0), "  # nosec B608
         f"coalesce(sum(CASE WHEN shard = {SETTINGS_SHARD} THEN value ELSE 0 END), 0) FROM content_revisions")


def _read(session: Session) -> tuple[int, int]:
    memo = session.info.get(_INFO_VALUE)
    if memo is None:
        connection = session.connection()
        content, settings_value = connection.exec_driver_sql(_READ).one()
        memo = session.info[_INFO_VALUE] = (int(content), int(settings_value))
        mark = connection.info.get(_CONNECTION_MARK)
        if mark is not None:
            mark[1] = True
    return memo


def current(session: Session) -> int:
    """The content revision as this session sees it (read once per transaction, until it changes something)."""
    return _read(session)[0]


def settings(session: Session) -> int:
    """The settings revision: moves when portal settings change, and only then."""
    return _read(session)[1]


def bump(session: Session, *, settings_changed: bool = False) -> None:
    """Move the revision in this transaction (normally done by the session events below).

    Once per transaction is enough, unless someone on this connection read the revision since: only
    this connection can see the uncommitted value (in the tests, the app's requests and the test's own
    writes share one connection and one transaction, and read between writes).
    """
    connection = session.connection()
    transaction = connection.get_transaction()
    mark = connection.info.get(_CONNECTION_MARK)
    if not settings_changed and mark is not None and mark[0] is transaction and not mark[1]:
        return
    shard: int | None
    if settings_changed:
        shard = SETTINGS_SHARD
    else:
        shard = session.info.get(_INFO_SHARD)
        if shard is None:
            # bandit B311: spreads writes over shards, not a secret
            shard = session.info[_INFO_SHARD] = random.randrange(SHARDS)  # nosec B311
    # An upsert, so that a row someone deleted (a test emptying every table) comes back.
    statement = insert_with_conflicts(connection.dialect.name, ContentRevision).values(
        # bandit B311: a cache revision only has to change, it is not a secret
        shard=shard, value=random.getrandbits(VALUE_BITS))  # nosec B311
    connection.execute(statement.on_conflict_do_update(index_elements=["shard"],
                                                       set_={"value": statement.excluded.value}))
    if not settings_changed:
        connection.info[_CONNECTION_MARK] = [transaction, False]
    session.info.pop(_INFO_VALUE, None)


def _changes_shown(obj: Any) -> bool:
    """Whether a changed row changed something shown: not if only its `__unshown__` columns changed."""
    unshown = getattr(obj, "__unshown__", ())
    if not unshown:
        return True
    return any(attr.key not in unshown and attr.history.has_changes() for attr in inspect(obj).attrs)


def _touched(session: Session, tables: set[str]) -> None:
    if tables - UNSHOWN_TABLES:
        bump(session)
    if tables & SETTINGS_TABLES:
        bump(session, settings_changed=True)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    tables = {obj.__tablename__ for obj in chain(session.new, session.deleted) if hasattr(obj, "__tablename__")}
    tables.update(obj.__tablename__ for obj in session.dirty
                  if hasattr(obj, "__tablename__") and obj.__tablename__ not in tables and _changes_shown(obj))
    if tables:
        _touched(session, tables)


@event.listens_for(Session, "do_orm_execute")
def _before_statement(state: ORMExecuteState) -> None:
    if state.is_select:
        return
    statement = state.statement
    name: str | None = None
    if state.is_insert or state.is_update or state.is_delete:
        name = getattr(getattr(statement, "table", None), "name", None)
    elif isinstance(statement, TextClause):
        match = _DML.match(statement.text)
        name = match.group(2).lower() if match else None
    if name:
        _touched(state.session, {name})


@event.listens_for(Engine, "commit")
@event.listens_for(Engine, "rollback")
@event.listens_for(Engine, "rollback_savepoint")
def _end_of_mark(connection: Connection, *_args: Any) -> None:
    # After a rolled-back savepoint the revision is what it was before it: the next change moves it again.
    connection.info.pop(_CONNECTION_MARK, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_value(session: Session, _transaction: Any) -> None:
    # Also after a savepoint: one rolled back takes its change of the revision with it.
    session.info.pop(_INFO_VALUE, None)


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_shard(session: Session) -> None:
    session.info.pop(_INFO_SHARD, None)
