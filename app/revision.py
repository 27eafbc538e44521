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

from sqlalchemy import BigInteger, SmallInteger, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column
from sqlalchemy.sql.elements import TextClause

from app.db import Base

SHARDS = 16
VALUE_BITS = 58  # 16 of them sum to less than 2**62: a BIGINT on PostgreSQL, an integer on SQLite

# Written on sign-in and by single-use tokens; nothing a page shows depends on them.
UNSHOWN_TABLES = frozenset({"user_sessions", "used_tokens", "magic_links", "audit_events", "content_revisions"})

_INFO_VALUE = "ahead_revision"
_INFO_SHARD = "ahead_revision_shard"
_DML = re.compile(r"\s*(insert|update|delete)\b\s+(?:or\s+\w+\s+)?(?:into\s+|from\s+)?\"?(\w+)", re.IGNORECASE)


class ContentRevision(Base):
    __tablename__ = "content_revisions"

    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, default=0)




_READ = "SELECT coalesce(sum(value), 0) FROM content_revisions"


def current(session: Session) -> int:
    """The revision as this session sees it (read once per transaction, until it changes something)."""
    value = session.info.get(_INFO_VALUE)
    if value is None:
        # Plain SQL on the session's connection: read on every request, it skips the ORM's statement
        # compilation and caching (about a third of a cached page's CPU when it went through them).
        value = int(session.connection().exec_driver_sql(_READ).scalar_one())
        session.info[_INFO_VALUE] = value
    return value


def bump(session: Session) -> None:
    """Mark this transaction as changing content (normally done by the session events below)."""
    shard = session.info.get(_INFO_SHARD)
    if shard is None:
        shard = session.info[_INFO_SHARD] = random.randrange(SHARDS)
    connection = session.connection()
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    # An upsert, so that a row someone deleted (a test emptying every table) comes back.
    statement = insert(ContentRevision).values(shard=shard, value=random.getrandbits(VALUE_BITS))
    connection.execute(statement.on_conflict_do_update(index_elements=["shard"],
                                                       set_={"value": statement.excluded.value}))
    session.info.pop(_INFO_VALUE, None)


def _shows(table_name: str | None) -> bool:
    return table_name is not None and table_name not in UNSHOWN_TABLES


def _changes_shown(obj: Any) -> bool:
    """Whether a changed row changed something shown: not if only its `__unshown__` columns changed."""
    unshown = getattr(obj, "__unshown__", ())
    if not unshown:
        return True
    return any(attr.key not in unshown and attr.history.has_changes() for attr in inspect(obj).attrs)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    for obj in chain(session.new, session.deleted):
        if _shows(getattr(obj, "__tablename__", None)):
            bump(session)
            return
    for obj in session.dirty:
        if _shows(getattr(obj, "__tablename__", None)) and _changes_shown(obj):
            bump(session)
            return


@event.listens_for(Session, "do_orm_execute")
def _before_statement(state: ORMExecuteState) -> None:
    if state.is_select:
        return
    statement = state.statement
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(statement, "table", None)
        if _shows(getattr(table, "name", None)):
            bump(state.session)
    elif isinstance(statement, TextClause):
        match = _DML.match(statement.text)
        if match and _shows(match.group(2).lower()):
            bump(state.session)


@event.listens_for(Session, "after_transaction_end")
def _forget_value(session: Session, _transaction: Any) -> None:
    # Also after a savepoint: one rolled back takes its change of the revision with it.
    session.info.pop(_INFO_VALUE, None)


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_shard(session: Session) -> None:
    session.info.pop(_INFO_SHARD, None)
