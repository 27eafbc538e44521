"""Votes and follows. All SQL of the voting domain lives here.

A vote is one row per (item, user), enforced by the unique key. `items.vote_count` is changed in
the same transaction as the row, by the database (`vote_count = vote_count + 1`), and only when a
row was really inserted or deleted, so concurrent votes, withdrawals and re-votes never drift.
`reconcile()` proves the counters right.

Casting and withdrawing run on every vote request, so they are Core statements on the tables, built
once (no ORM bookkeeping, no statement building per request), and on PostgreSQL one statement each: the
vote row, the counter and the follow change together through data-modifying CTEs, one round trip instead
of two or three. SQLite (in process, no round trips) runs the same steps one by one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, bindparam, case, delete, func, literal, select, true, update
from sqlalchemy.orm import Session, aliased, joinedload, load_only, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from app import revision
from app.accounts.models import User
from app.accounts.viewer import Viewer
from app.db import DriverSql, DriverTransaction, in_chunks, insert_with_conflicts, utcnow
from app.errors import Conflict, FormInvalid, NotAuthenticated, NotFound
from app.portal.service import counts_shown  # the vote display setting, applied to a viewer
from app.roadmap import service as roadmap
from app.roadmap.models import MERGED_REASON, Item, Stage
from app.roadmap.visibility import audience, visible_items
from app.voting.models import CaptureSource, Follow, Importance, Vote
from app.webhooks import service as webhooks

TREND_DAYS = 30

ITEMS = Item.__table__
VOTES = Vote.__table__
FOLLOWS = Follow.__table__
REVISIONS = revision.ContentRevision.__table__
STAGES = Stage.__table__


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert(session: Session, model: Any) -> Any:
    return insert_with_conflicts(_dialect(session), model)


@functools.cache
def _writes(dialect: str) -> dict[str, Any]:
    """The statements of a vote and of a withdrawal, built once per kind of database with bound parameters
    (`p_…`: SQLAlchemy keeps the column names for itself): they run on every vote request, and building and
    cache-keying them afresh cost several times more CPU than running them.

    PostgreSQL: `cast` inserts the vote (or nothing, when the person had voted), counts it and follows the
    item in one statement, returning the counters, or no row when nothing was inserted; `withdraw` deletes
    the vote and uncounts it the same way. SQLite runs the same steps one by one.
    """
    def insert(table: Any) -> Any:
        return insert_with_conflicts(dialect, table)

    p = bindparam
    new_vote = insert(VOTES).values(
        item_id=p("p_item"), user_id=p("p_user"), importance=p("p_importance"), created_at=p("p_now"),
        updated_at=p("p_now"), captured_by_id=p("p_captured_by"), source=p("p_source"), source_url=p("p_source_url"),
    ).on_conflict_do_nothing(index_elements=["item_id", "user_id"])
    remove = delete(VOTES).where(VOTES.c.item_id == p("p_item"), VOTES.c.user_id == p("p_user"))
    counters = (ITEMS.c.vote_count, ITEMS.c.trend_count)
    plus_one = {"vote_count": ITEMS.c.vote_count + 1, "trend_count": ITEMS.c.trend_count + 1}
    if dialect == "postgresql":
        inserted = new_vote.returning(VOTES.c.item_id, VOTES.c.user_id).cte("new_vote")
        followed = insert(FOLLOWS).from_select(
            ["item_id", "user_id", "created_at"],
            select(inserted.c.item_id, inserted.c.user_id, p("p_now", type_=FOLLOWS.c.created_at.type)),
        ).on_conflict_do_update(index_elements=["item_id", "user_id"], set_={"stopped_at": None}).cte("new_follow")
        removed = remove.returning(VOTES.c.item_id, VOTES.c.created_at).cte("removed")
        recent = select(case((removed.c.created_at >= p("p_since", type_=VOTES.c.created_at.type), 1), else_=0))
        cast = (update(ITEMS).add_cte(inserted).add_cte(followed).where(ITEMS.c.id.in_(select(inserted.c.item_id)))
                .values(plus_one).returning(*counters))
        withdraw = (update(ITEMS).add_cte(removed).where(ITEMS.c.id.in_(select(removed.c.item_id)))
                    .values(vote_count=ITEMS.c.vote_count - 1, trend_count=ITEMS.c.trend_count - recent.scalar_subquery())
                    .returning(*counters))
        # The same, moving the votes revision too (revision.votes_move_in_statement): its upsert as one more CTE, run
        # whatever the vote changes (a move with nothing changed costs a kept page's refill, never a stale one).
        move = insert(REVISIONS).values(shard=p("p_rev_shard"), value=p("p_rev_value"))
        moved = move.on_conflict_do_update(index_elements=["shard"], set_={"value": move.excluded.value}).cte("moved")
        return {"cast": cast, "withdraw": withdraw,
                "cast, moving": cast.add_cte(moved), "withdraw, moving": withdraw.add_cte(moved)}
    this_item = ITEMS.c.id == p("p_item")
    return {
        "new_vote": new_vote.returning(VOTES.c.id),
        "count": update(ITEMS).where(this_item).values(plus_one).returning(*counters),
        "follow": insert(FOLLOWS).values(item_id=p("p_item"), user_id=p("p_user"), created_at=p("p_now"))
        .on_conflict_do_update(index_elements=["item_id", "user_id"], set_={"stopped_at": None}),
        "remove": remove.returning(VOTES.c.created_at),
        "uncount": update(ITEMS).where(this_item).returning(*counters)
        .values(vote_count=ITEMS.c.vote_count - 1, trend_count=ITEMS.c.trend_count - p("p_recent", type_=Integer)),
    }


# --- PostgreSQL's vote at once: one statement with the item's lookup, its rules and the revisions' check -------

_AT_ONCE: dict[tuple[str, object], Any] = {}


def _at_once(kind: str, viewer: Viewer) -> Any:
    """The vote (`kind` "cast") or the withdrawal ("withdraw") as **one statement** (PostgreSQL), built once per
    audience (the visibility rule is part of it): the item looked up through `visible_items` and locked, as
    `get_item_to_vote` does, but only while the revisions are what the request guessed (`revision.guessed_cte`);
    then, for an item that takes votes, what `_writes` does (the vote or its removal, the counter, the follow, the
    votes revision's move) and, for a vote that was there, its new importance. Its one row says what happened:
    `guess_ok`, the item's columns (none: missing or hidden), `is_closed`, and `created` / `changed` / `removed`
    with the counter after it. Statement by statement the same as the vote's three, in one round trip."""
    key = (kind, audience(viewer))
    statement = _AT_ONCE.get(key)
    if statement is not None:
        return statement
    p = bindparam
    visible = visible_items(viewer).whereclause
    assert visible is not None  # nosec B101 # the rule always has a condition (not merged, at least)
    guessed = revision.guessed_cte()
    target = (select(ITEMS.c.id, ITEMS.c.public_id, ITEMS.c.slug, ITEMS.c.title, ITEMS.c.vote_count,
                     ITEMS.c.merged_into_id, STAGES.c.is_closed, STAGES.c.name.label("stage_name"))
              .select_from(ITEMS.join(STAGES, STAGES.c.id == ITEMS.c.stage_id))
              .where(visible, ITEMS.c.public_id == p("p_public_id"), select(guessed.c.ok).exists())
              .with_for_update(of=ITEMS, key_share=True).cte("target"))
    open_item = (select(target.c.id).where(target.c.is_closed.is_(False), target.c.merged_into_id.is_(None))
                 .cte("open_item"))
    move = insert_with_conflicts("postgresql", REVISIONS).from_select(["shard", "value"], select(
        p("p_rev_shard", type_=REVISIONS.c.shard.type), p("p_rev_value", type_=REVISIONS.c.value.type))
        .where(select(open_item.c.id).exists()))
    moved = move.on_conflict_do_update(index_elements=["shard"], set_={"value": move.excluded.value}).cte("moved")
    if kind == "cast":
        new_vote = insert_with_conflicts("postgresql", VOTES).from_select(
            ["item_id", "user_id", "importance", "created_at", "updated_at", "source_url"],
            select(open_item.c.id, p("p_user", type_=Integer), p("p_importance", type_=VOTES.c.importance.type),
                   p("p_now", type_=VOTES.c.created_at.type), p("p_now", type_=VOTES.c.updated_at.type), literal("")),
        ).on_conflict_do_nothing(index_elements=["item_id", "user_id"]).returning(VOTES.c.item_id, VOTES.c.user_id)
        inserted = new_vote.cte("new_vote")
        followed = insert_with_conflicts("postgresql", FOLLOWS).from_select(
            ["item_id", "user_id", "created_at"],
            select(inserted.c.item_id, inserted.c.user_id, p("p_now", type_=FOLLOWS.c.created_at.type)),
        ).on_conflict_do_update(index_elements=["item_id", "user_id"], set_={"stopped_at": None}).cte("new_follow")
        counted = (update(ITEMS).where(ITEMS.c.id.in_(select(inserted.c.item_id)))
                   .values(vote_count=ITEMS.c.vote_count + 1, trend_count=ITEMS.c.trend_count + 1)
                   .returning(ITEMS.c.vote_count).cte("counted"))
        # A vote that was there takes the new importance (the statement's snapshot has no row the insert above made)
        changed = (update(VOTES).where(VOTES.c.item_id.in_(select(open_item.c.id)), VOTES.c.user_id == p("p_user"))
                   .values(importance=p("p_importance"), updated_at=p("p_now")).returning(VOTES.c.item_id)
                   .cte("changed"))
        done = [select(counted.c.vote_count).scalar_subquery().label("counted"),
                select(inserted.c.item_id).exists().label("created"),
                select(changed.c.item_id).exists().label("changed")]
        ctes: tuple[Any, ...] = (inserted, followed, counted, changed, moved)
    else:
        removed = (delete(VOTES).where(VOTES.c.item_id.in_(select(open_item.c.id)), VOTES.c.user_id == p("p_user"))
                   .returning(VOTES.c.item_id, VOTES.c.created_at).cte("removed"))
        recent = select(case((removed.c.created_at >= p("p_since", type_=VOTES.c.created_at.type), 1), else_=0))
        counted = (update(ITEMS).where(ITEMS.c.id.in_(select(removed.c.item_id)))
                   .values(vote_count=ITEMS.c.vote_count - 1,
                           trend_count=ITEMS.c.trend_count - recent.scalar_subquery())
                   .returning(ITEMS.c.vote_count).cte("counted"))
        done = [select(counted.c.vote_count).scalar_subquery().label("counted"),
                select(removed.c.item_id).exists().label("removed")]
        ctes = (removed, counted, moved)
    statement = (select(select(guessed.c.ok).exists().label("guess_ok"), target.c.id, target.c.public_id, target.c.slug,
                        target.c.title, target.c.vote_count, target.c.merged_into_id, target.c.is_closed,
                        target.c.stage_name, *done)
                 .select_from(select(literal(1).label("one")).subquery("one").outerjoin(target, true())))
    for cte in ctes:
        statement = statement.add_cte(cte)
    _AT_ONCE[key] = statement
    return statement


@dataclass(frozen=True, slots=True)
class AtOnce:
    """What PostgreSQL's vote at once did: the item (as the widget needs it), and what changed."""

    item: Item  # transient: the columns the widget and the answer read (id, public_id, slug, title)
    created: bool  # a new vote (the vote) / a vote removed (the withdrawal)
    count: int  # the item's vote_count after it


def at_once_possible(viewer: Viewer) -> bool:
    """Whether this viewer's vote and withdrawal can run as one statement (the caller is on PostgreSQL, with the
    revisions guessed): a signed-in customer (staff see everything, their audience is not kept)."""
    return viewer.user is not None and not viewer.is_staff


def cast_at_once(session: Session, *, viewer: Viewer, user: User, public_id: str, importance: Importance,
                 guessed: tuple[int, int, int], lock_timeout: float | None = None,
                 driver: DriverTransaction | None = None) -> AtOnce | None:
    """The vote in one statement (`_at_once`), for a session whose revisions were guessed: None when it did nothing
    the vote could answer (the guess was wrong, the item is missing, hidden or closed, or a vote of the same person
    came in between): the caller rolls back and runs the vote the usual way, which says why. Webhooks that want
    the vote are the usual way's too (the caller asks `webhooks.wants` first). `lock_timeout` (seconds; None: the
    connection's own): how long the statement waits for its locks, in turn (`revision.guessed_cte`); for a caller
    off the event loop, the database's whole lock timeout. `driver`: the statement runs there, in its transaction,
    rather than on the session's connection (`app.db.DriverTransaction`: the statement commits by itself)."""
    if webhooks.wants(session, "vote.created"):
        return None
    params = _at_once_params(session, user, public_id, guessed, lock_timeout, detached=driver is not None)
    params.update(p_importance=int(importance), p_now=utcnow())
    row = _at_once_row(session, "cast", viewer, params, driver)
    if not _took_votes(row):
        return None
    if row.created:
        return AtOnce(item=_transient_item(row), created=True, count=row.counted)
    if row.changed:
        return AtOnce(item=_transient_item(row), created=False, count=row.vote_count)
    return None


def withdraw_at_once(session: Session, *, viewer: Viewer, user: User, public_id: str,
                     guessed: tuple[int, int, int], lock_timeout: float | None = None,
                     driver: DriverTransaction | None = None) -> AtOnce | None:
    """The withdrawal in one statement, as `cast_at_once`; `created` says whether a vote was removed."""
    if webhooks.wants(session, "vote.removed"):
        return None
    params = _at_once_params(session, user, public_id, guessed, lock_timeout, detached=driver is not None)
    params["p_since"] = utcnow() - timedelta(days=TREND_DAYS)
    row = _at_once_row(session, "withdraw", viewer, params, driver)
    if not _took_votes(row):
        return None
    return AtOnce(item=_transient_item(row), created=bool(row.removed),
                  count=row.counted if row.removed else row.vote_count)


def _at_once_params(session: Session, user: User, public_id: str, guessed: tuple[int, int, int],
                    lock_timeout: float | None, *, detached: bool = False) -> dict[str, Any]:
    """The statement's parameters; `detached`: it runs apart from the session (its own transaction moves the votes
    revision, which the session's connection knows nothing of)."""
    move = revision.votes_move_detached() if detached else revision.votes_move_in_statement(session)
    assert move is not None  # nosec B101 # the transaction's first write: nothing moved it yet
    content, settings_value, sessions_value = guessed
    return {"p_public_id": public_id, "p_user": user.id, "p_rev_content": content, "p_rev_settings": settings_value,
            "p_rev_sessions": sessions_value, "p_rev_shard": move[0], "p_rev_value": move[1],
            "p_lock_timeout": f"{max(1, round(lock_timeout * 1000))}ms" if lock_timeout else None}


def _at_once_row(session: Session, kind: str, viewer: Viewer, params: dict[str, Any],
                 driver: DriverTransaction | None) -> Any:
    """The statement's one row, on the session's connection (Core: no ORM step) or through the driver alone."""
    if driver is None:
        return session.connection().execute(_at_once(kind, viewer), params).one()
    return driver.run(*_driver_at_once(kind, viewer, session.get_bind().dialect).bound(params))


_AT_ONCE_DRIVER: dict[tuple[str, object], DriverSql] = {}


def _driver_at_once(kind: str, viewer: Viewer, dialect: Any) -> DriverSql:
    """`_at_once(kind, viewer)` compiled for the driver, once per audience (as `_at_once` is built); the caller's
    parameters are the `p_` ones."""
    key = (kind, audience(viewer))
    made = _AT_ONCE_DRIVER.get(key)
    if made is None:
        made = _AT_ONCE_DRIVER[key] = DriverSql.compiled(_at_once(kind, viewer), dialect, given_prefix="p_")
    return made


def _took_votes(row: Any) -> bool:
    """Whether the statement found its guess right and the item there and taking votes."""
    return bool(row.guess_ok) and row.id is not None and not row.is_closed and row.merged_into_id is None


def _transient_item(row: Any) -> Item:
    """The item as the answer needs it, from the statement's row: not in the session, no stage (its rules were
    checked by the statement), no counter (the answer's count is `AtOnce.count`), nothing else loads."""
    return Item(id=row.id, public_id=row.public_id, slug=row.slug, title=row.title, merged_into_id=None)


def _moving(session: Session, write: str, params: dict[str, Any]) -> str:
    """PostgreSQL's vote or withdrawal as the statement that moves the votes revision itself, when it must move
    (its shard and value put in `params`), or as it is."""
    move = revision.votes_move_in_statement(session)
    if move is None:
        return write
    params["p_rev_shard"], params["p_rev_value"] = move
    return f"{write}, moving"


def _counted(item: Item, row: Any) -> int:
    """The counters the statement returned, also on the loaded item (Core statements leave it as it was)."""
    set_committed_value(item, "vote_count", row.vote_count)
    set_committed_value(item, "trend_count", row.trend_count)
    count: int = row.vote_count
    return count


@dataclass(frozen=True, slots=True)
class VoteResult:
    created: bool
    importance: Importance
    # The item's vote_count as this transaction left it (None: the write did not return it).
    count: int | None = None


_COUNT_OF_VOTED_ITEM = (select(ITEMS.c.vote_count).where(ITEMS.c.id == VOTES.c.item_id).correlate(VOTES)
                        .scalar_subquery())


def cast_vote(
    session: Session,
    *,
    item: Item,
    user: User,
    importance: Importance,
    captured_by: User | None = None,
    source: CaptureSource | None = None,
    source_url: str = "",
    keep_higher: bool = False,
) -> VoteResult:
    """Vote, or change the importance of an existing vote. Idempotent. A new vote follows the item.

    `keep_higher` (votes captured by staff): if the person already voted, the higher importance wins.
    The caller checks that the viewer may see the item and that it takes votes.
    """
    roadmap.lock_for_activity(session, item, refused=MERGED_REASON)
    # Asked before the write, while the revision this request read is still current: no statement of its own.
    notify = webhooks.wants(session, "vote.created")
    now = utcnow()
    session.flush()  # Core statements do not autoflush: a new item or contact must be stored first
    params = {"p_item": item.id, "p_user": user.id, "p_importance": int(importance), "p_now": now,
              "p_captured_by": captured_by.id if captured_by else None, "p_source": source,
              "p_source_url": source_url}
    writes = _writes(_dialect(session))
    if "cast" in writes:
        counted = session.execute(writes[_moving(session, "cast", params)], params).first()
    else:
        counted = None
        if session.execute(writes["new_vote"], params).first() is not None:
            counted = session.execute(writes["count"], params).one()
            session.execute(writes["follow"], params)
    if counted is not None:
        if notify:
            webhooks.emit_vote(session, "vote.created", item=item, user=user, importance=importance,
                               captured_by=captured_by)
        return VoteResult(created=True, importance=importance, count=_counted(item, counted))
    mine = (VOTES.c.item_id == item.id) & (VOTES.c.user_id == user.id)
    new_importance = int(importance)
    if keep_higher:
        current = session.scalar(select(VOTES.c.importance).where(mine))
        new_importance = max(new_importance, current or 0)
    # The item's counter comes back with the change (its row is locked: no vote can move it meanwhile), so
    # the widget's count needs no read of its own.
    count = session.scalar(update(VOTES).where(mine).values(importance=new_importance, updated_at=now)
                           .returning(_COUNT_OF_VOTED_ITEM))
    return VoteResult(created=False, importance=Importance(new_importance), count=count)


def withdraw_vote(session: Session, *, item: Item, user: User) -> bool:
    """Remove the user's vote; False when there was none (idempotent)."""
    return _withdraw(session, item=item, user=user) is not None


def _withdraw(session: Session, *, item: Item, user: User) -> int | None:
    """Remove the user's vote and return the item's vote_count after it; None when there was no vote."""
    roadmap.lock_for_activity(session, item, refused=MERGED_REASON)
    notify = webhooks.wants(session, "vote.removed")  # before the write: see cast_vote
    session.flush()
    since = utcnow() - timedelta(days=TREND_DAYS)
    params = {"p_item": item.id, "p_user": user.id, "p_since": since}
    writes = _writes(_dialect(session))
    if "withdraw" in writes:
        counted = session.execute(writes[_moving(session, "withdraw", params)], params).first()
    else:
        removed = session.execute(writes["remove"], params).first()
        if removed is None:
            return None
        params["p_recent"] = 1 if removed.created_at is not None and removed.created_at >= since else 0
        counted = session.execute(writes["uncount"], params).one()
    if counted is None:
        return None
    if notify:
        webhooks.emit_vote(session, "vote.removed", item=item, user=user)
    return _counted(item, counted)


def own_vote(session: Session, *, item: Item, user: User) -> Importance | None:
    """The importance of the vote the user cast themselves on the item (not one staff captured for them)."""
    importance = session.scalar(select(VOTES.c.importance).where(
        VOTES.c.item_id == item.id, VOTES.c.user_id == user.id, VOTES.c.captured_by_id.is_(None)))
    return None if importance is None else Importance(importance)


# A plain read outside any transaction (`app.db.Database.read_rows`): the kept pages' fillers before the stack
ReadRows = Callable[[str], list[Any]]


def votes_of(session: Session | None, *, user: User | None, item_ids: Iterable[int],
             read_rows: ReadRows | None = None) -> dict[int, Importance]:
    """The user's importance per item, for a page of cards, in one query: in the session, or with `read_rows`
    outside any (a kept page filled before the stack)."""
    ids = [int(i) for i in item_ids]
    if user is None or not ids:
        return {}
    # Asked on every page of cards a customer loads, from the page cache too: plain SQL with the ids
    # written in (integers, converted above, so nothing else can get into the statement) skips the
    # statement building and the expansion of fifty bound parameters, most of this call's CPU.
    rows = _plain_rows(session, read_rows,
                       # bandit B608: user.id and the ids pass through int(): nothing else gets in
                       f"SELECT item_id, importance FROM votes WHERE user_id = {int(user.id)} "  # nosec B608
                       f"AND item_id IN ({','.join(map(str, ids))})")
    return {item_id: Importance(importance) for item_id, importance in rows}


def counts_of(session: Session | None, item_ids: Iterable[int], *, read_rows: ReadRows | None = None
              ) -> dict[int, int]:
    """The vote count per item, for the cards of a kept page, in one query (plain SQL, in the session or outside
    any: see votes_of)."""
    ids = [int(i) for i in item_ids]
    if not ids:
        return {}
    return {item_id: int(count) for item_id, count in _plain_rows(session, read_rows, counts_sql(ids))}


def counts_sql(item_ids: Iterable[int]) -> str:
    """`counts_of`'s statement for these items (at least one): (id, vote_count) rows, its ids written in. PostgreSQL's
    revision read runs it too, for the kept pages' items after a vote (`app.revision.PostgresWatcher.follow_counts`)."""
    # bandit B608: the ids pass through int(): nothing else gets in
    return f"SELECT id, vote_count FROM items WHERE id IN ({','.join(str(int(i)) for i in item_ids)})"  # nosec B608


def _plain_rows(session: Session | None, read_rows: ReadRows | None, sql: str) -> list[Any]:
    if read_rows is not None:
        return read_rows(sql)
    assert session is not None  # nosec B101 # one or the other
    return list(session.connection().exec_driver_sql(sql).all())


def follow(session: Session, *, item: Item, user: User) -> None:
    """Follow the item; an earlier opt-out of this person (Unfollow, unsubscribe) ends."""
    roadmap.lock_for_activity(session, item)
    session.execute(
        _insert(session, Follow)
        .values(item_id=item.id, user_id=user.id, created_at=utcnow())
        .on_conflict_do_update(index_elements=["item_id", "user_id"], set_={"stopped_at": None})
    )


def stop_following(session: Session, *, item_id: int, user_id: int) -> None:
    """Opt out of the item (idempotent): the person hears nothing more about it, although they voted or
    commented. A new vote, a new comment or Follow later undoes it; changing the importance of a vote does not."""
    now = utcnow()
    session.execute(
        _insert(session, Follow)
        .values(item_id=item_id, user_id=user_id, created_at=now, stopped_at=now)
        .on_conflict_do_update(index_elements=["item_id", "user_id"],
                               set_={"stopped_at": func.coalesce(Follow.stopped_at, now)})
    )


def unfollow(session: Session, *, item: Item, user: User) -> None:
    stop_following(session, item_id=item.id, user_id=user.id)


def is_following(session: Session, *, item: Item, user: User | None) -> bool:
    """Whether the person hears about the item: a follow row that is not an opt-out, or a vote without any
    row (voting and commenting write one; older votes may have none). The rule of notify's recipients."""
    if user is None:
        return False
    row = session.execute(select(Follow.stopped_at).where(Follow.item_id == item.id, Follow.user_id == user.id)).first()
    if row is not None:
        return row.stopped_at is None
    return session.scalar(select(Vote.id).where(Vote.item_id == item.id, Vote.user_id == user.id)) is not None


@dataclass(frozen=True, slots=True)
class Drift:
    item_id: int
    public_id: str
    stored: int
    actual: int


# Items per batch of `ahead reconcile`: each batch is one short transaction on the rows of its items.
RECONCILE_BATCH = 500


@dataclass(frozen=True, slots=True)
class Checked:
    """One batch of reconcile: the vote counts that drifted, and the items not checked because someone else
    was changing them at that moment (id → public id)."""

    drifts: list[Drift]
    busy: dict[int, str]


def item_ids(session: Session, *, after_id: int = 0, limit: int = RECONCILE_BATCH) -> list[int]:
    """The next `limit` item ids after `after_id`, in id order: how reconcile walks the items in batches."""
    return list(session.scalars(select(Item.id).where(Item.id > after_id).order_by(Item.id).limit(limit)))


def reconcile_items(session: Session, *, ids: Sequence[int], fix: bool = True, skip_locked: bool = False) -> Checked:
    """Compare these items' vote_count with their vote rows, and with `fix` set both counters from the rows
    (trend_count: the votes of the last 30 days, which age out of the trend).

    With `fix` the items' rows are locked before counting (FOR NO KEY UPDATE on PostgreSQL, as a vote locks
    its item), so no vote lands between the count and the write. `skip_locked`: an item someone else holds
    right now (a vote being written, a merge) is left out and returned in `busy`, instead of being waited for
    while this transaction holds the other items of the batch.
    """
    wanted = sorted(set(ids))
    busy: dict[int, str] = {}
    if fix and wanted and _dialect(session) != "sqlite":  # SQLite: the write transaction already excludes writers
        locked = set(session.scalars(select(Item.id).where(Item.id.in_(wanted)).order_by(Item.id)
                                     .with_for_update(key_share=True, skip_locked=skip_locked)))
        if len(locked) < len(wanted):
            others = [i for i in wanted if i not in locked]
            busy = {row.id: row.public_id for row in session.execute(
                select(Item.id, Item.public_id).where(Item.id.in_(others)))}
        wanted = [i for i in wanted if i in locked]
    if not wanted:
        return Checked(drifts=[], busy=busy)
    since = utcnow() - timedelta(days=TREND_DAYS)
    counted = {item_id: (total, recent) for item_id, total, recent in session.execute(
        select(Vote.item_id, func.count(), func.coalesce(func.sum(case((Vote.created_at >= since, 1), else_=0)), 0))
        .where(Vote.item_id.in_(wanted)).group_by(Vote.item_id))}
    drifts, changes = [], []
    for item_id, public_id, stored, trend in session.execute(
            select(Item.id, Item.public_id, Item.vote_count, Item.trend_count).where(Item.id.in_(wanted))
            .order_by(Item.id)):
        total, recent = counted.get(item_id, (0, 0))
        if stored != total:
            drifts.append(Drift(item_id=item_id, public_id=public_id, stored=stored, actual=total))
        if stored != total or trend != recent:
            changes.append({"id": item_id, "vote_count": total, "trend_count": recent})
    if fix and changes:
        # Only the rows that differ are written (and the content revision moves only then).
        session.execute(update(Item).execution_options(synchronize_session=False), changes)
    return Checked(drifts=drifts, busy=busy)


def reconcile(session: Session, *, fix: bool = True, batch_size: int = RECONCILE_BATCH) -> list[Drift]:
    """Compare every item's vote_count with its vote rows; fix the counters (and refresh trends).

    All in this session's one transaction, which holds each item it fixed until it ends: for tests and the
    benchmark, which check a quiet database. `ahead reconcile` commits batch by batch (`reconcile_items`).
    """
    drifts: list[Drift] = []
    after = 0
    while ids := item_ids(session, after_id=after, limit=batch_size):
        drifts += reconcile_items(session, ids=ids, fix=fix).drifts
        after = ids[-1]
    return drifts


def refresh_trends(session: Session) -> None:
    """Recount the votes of the last 30 days per item (votes age out of the trend); a drifted vote count is
    set right on the way."""
    reconcile(session, fix=True)


# --- what people do: vote through the rules, see their votes and follows -------------------------------

IMPORTANCE_MESSAGE = "Choose how much it matters to you: nice to have, important or critical."


def parse_importance(raw: object) -> Importance:
    """An importance from a form or JSON value: `nice_to_have`, `important` or `critical`."""
    text = str(raw if raw is not None else "").strip().lower()
    for importance in Importance:
        if text == importance.key:
            return importance
    raise FormInvalid({"importance": IMPORTANCE_MESSAGE})


# What a vote request needs of its item: the vote widget (title, path, count) and the rules (stage,
# merge). The rest (descriptions, notes) loads on first use, e.g. when a refused form shows the item page.
_VOTE_LOAD = (load_only(Item.id, Item.public_id, Item.slug, Item.title, Item.product_id, Item.stage_id,
                        Item.merged_into_id, Item.vote_count),
              joinedload(Item.stage, innerjoin=True))
_PUBLIC_ID = re.compile(r"[a-z0-9]{4,16}")  # as roadmap.get_visible_item: anything else cannot exist


# One statement per audience (signed out, signed in without an organisation, each segment: a handful),
# built once: building the visibility rule and its cache key anew cost more than running the query.
_ITEM_TO_VOTE: dict[object, Any] = {}


def get_item_to_vote(session: Session, viewer: Viewer, public_id: str) -> Item:
    """The item a vote, withdrawal or follow names, or NotFound — the same for a missing and a hidden item.

    Through roadmap.visible_items (the one visibility rule), in one query with the item's stage, without the
    tags and product the pages load: this is the hot path of voting. The statement is kept per
    visibility.audience, which is what visible_items depends on (staff, who see everything, are not kept).
    """
    if not _PUBLIC_ID.fullmatch(public_id or ""):
        raise NotFound()
    key = audience(viewer)
    statement = _ITEM_TO_VOTE.get(key) if key is not None else None
    if statement is None:
        # The item's row is locked first, as a merge locks it first: a vote waits for a merge of its item
        # to commit and then finds the item merged (no row: 404), instead of landing on it unseen by the
        # merge, or deadlocking with it over the vote's unique key. (FOR NO KEY UPDATE OF items on
        # PostgreSQL; SQLite's write lock already puts writers in a row.)
        statement = (visible_items(viewer).where(Item.public_id == bindparam("p_public_id"))
                     .options(*_VOTE_LOAD).with_for_update(of=Item, key_share=True))
        if key is not None:
            _ITEM_TO_VOTE[key] = statement
    item = session.scalar(statement, {"p_public_id": public_id})
    if item is None:
        raise NotFound()
    roadmap.mark_locked(session, item)
    return item


def lock_item_again(session: Session, item: Item) -> Item:
    """`item` read again with its row locked (as get_item_to_vote locks it) and its stage and merge as they are
    now: for a caller that looked the item up before (staff recording a vote for a customer), so that a stage
    move or a merge committed meanwhile is seen before the rules are checked. NotFound when it is gone."""
    locked = session.scalar(select(Item).where(Item.id == item.id).options(*_VOTE_LOAD)
                            .with_for_update(of=Item, key_share=True).execution_options(populate_existing=True))
    if locked is None:
        raise NotFound()
    roadmap.mark_locked(session, locked)
    return locked


def require_voter(viewer: Viewer) -> User:
    if viewer.user is None:
        raise NotAuthenticated("Please sign in to vote.")
    return viewer.user


def ensure_open(item: Item) -> None:
    reason = item.voting_closed_reason()
    if reason is not None:
        raise Conflict(reason + ".")


@dataclass(frozen=True, slots=True)
class Withdrawal:
    removed: bool  # False: there was no vote to withdraw
    count: int | None = None  # the item's vote_count as this transaction left it, when it changed


def unvote(session: Session, *, viewer: Viewer, item: Item) -> Withdrawal:
    """Withdraw the person's vote (idempotent). Closed items keep their votes as they were."""
    user = require_voter(viewer)
    ensure_open(item)
    count = _withdraw(session, item=item, user=user)
    return Withdrawal(removed=count is not None, count=count)


def current_count(session: Session, *, item: Item) -> int:
    """The item's counter as the database has it now (the vote changed it in SQL, not on the object)."""
    return session.scalar(select(Item.vote_count).where(Item.id == item.id)) or 0


@dataclass(frozen=True, slots=True)
class VoteState:
    """What the vote widget shows one viewer for one item: all that templates/voting/_vote.html reads, on a
    card, on the item page, in a fetch reply, freshly rendered or filled into a kept page alike."""

    item_id: int
    public_id: str
    title: str
    path: str
    count: int | None  # None: counts are hidden from this viewer
    mine: Importance | None
    closed_reason: str | None
    signed_in: bool
    # The viewer's own "tell us why" reason ("" none), where the widget shows it (the item page); None: not
    # asked for (cards, the API).
    reason: str | None = None

    @classmethod
    def of(cls, item: Item, *, count: int | None, mine: Importance | None, signed_in: bool) -> VoteState:
        """The state for `item` (its stage loaded: it says whether voting is closed)."""
        return cls(item_id=item.id, public_id=item.public_id, title=item.title, path=item.path, count=count,
                   mine=mine, closed_reason=item.voting_closed_reason(), signed_in=signed_in)

    @property
    def can_vote(self) -> bool:
        return self.signed_in and self.closed_reason is None


def vote_state(session: Session, *, viewer: Viewer, item: Item, count: int | None = None) -> VoteState:
    """The widget's state for one item (its stage loaded): one query for the viewer's own vote."""
    mine = votes_of(session, user=viewer.user, item_ids=[item.id]).get(item.id)
    shown = counts_shown(session, viewer)
    return VoteState.of(item, count=(item.vote_count if count is None else count) if shown else None, mine=mine,
                        signed_in=viewer.user is not None)


def card_states(session: Session, *, viewer: Viewer, items: Iterable[Item]) -> dict[int, VoteState]:
    """The widget's state for each card of a page (item id → state): one query for the viewer's own votes."""
    cards = list(items)
    mine = votes_of(session, user=viewer.user, item_ids=[i.id for i in cards])
    shown = counts_shown(session, viewer)
    signed_in = viewer.user is not None
    return {item.id: VoteState.of(item, count=item.vote_count if shown else None, mine=mine.get(item.id),
                                  signed_in=signed_in) for item in cards}


def state_after(session: Session, *, viewer: Viewer, item: Item, mine: Importance | None, count: int | None,
                shown: bool) -> VoteState:
    """The widget's state right after the viewer's own vote or withdrawal in this transaction: their vote is
    what they just did, the count what the counter update returned (read again when nothing changed it).

    `shown` is counts_shown(), asked before the vote: a write changes the content revision, under which
    the portal settings are cached, so asking afterwards reads the revision and the setting again."""
    if shown and count is None:
        count = current_count(session, item=item)
    return VoteState.of(item, count=count if shown else None, mine=mine, signed_in=viewer.user is not None)


def state_at_once(done: AtOnce, *, mine: Importance | None, shown: bool) -> VoteState:
    """The widget's state after a vote or withdrawal at once: the item took votes (the statement checked)."""
    item = done.item
    return VoteState(item_id=item.id, public_id=item.public_id, title=item.title, path=item.path,
                     count=done.count if shown else None, mine=mine, closed_reason=None, signed_in=True)


@dataclass(frozen=True, slots=True)
class MyVote:
    item: Item
    importance: Importance
    voted_at: datetime
    captured: bool


def list_my_votes(session: Session, *, viewer: Viewer, include_captured: bool = True) -> list[MyVote]:
    """The viewer's votes on items they may still see, most recent first."""
    if viewer.user is None:
        return []
    stmt = (
        visible_items(viewer)
        .join(Vote, Vote.item_id == Item.id)
        .where(Vote.user_id == viewer.user.id)
        .add_columns(Vote.importance, Vote.updated_at, Vote.captured_by_id)
        .options(selectinload(Item.stage), selectinload(Item.product), selectinload(Item.tags))
        .order_by(Vote.updated_at.desc(), Vote.id.desc())
    )
    if not include_captured:
        stmt = stmt.where(Vote.captured_by_id.is_(None))
    return [MyVote(item=item, importance=Importance(importance), voted_at=at, captured=captured_by is not None)
            for item, importance, at, captured_by in session.execute(stmt)]


@dataclass(frozen=True, slots=True)
class PersonVote:
    item: Item
    importance: Importance
    voted_at: datetime
    captured_by: User | None
    source: CaptureSource | None


def list_votes_of_person(session: Session, *, user: User, limit: int = 100) -> tuple[list[PersonVote], int]:
    """For staff: the person's votes on any item (drafts and internal ones too), most recent first, with who
    recorded a vote on their behalf; and how many votes they have in all."""
    total = session.scalar(select(func.count()).select_from(Vote).where(Vote.user_id == user.id)) or 0
    captured_by = aliased(User, name="captured_by")
    rows = session.execute(
        select(Item, Vote.importance, Vote.updated_at, captured_by, Vote.source)
        .join(Vote, Vote.item_id == Item.id)
        .outerjoin(captured_by, captured_by.id == Vote.captured_by_id)
        .where(Vote.user_id == user.id)
        .options(selectinload(Item.stage), selectinload(Item.product))
        .order_by(Vote.updated_at.desc(), Vote.id.desc())
        .limit(limit)
    )
    return [PersonVote(item=item, importance=Importance(importance), voted_at=at, captured_by=by, source=source)
            for item, importance, at, by, source in rows], total


def list_followed(session: Session, *, viewer: Viewer) -> list[Item]:
    """Items the viewer follows and may still see, most recently followed first."""
    if viewer.user is None:
        return []
    return list(session.scalars(
        visible_items(viewer)
        .join(Follow, Follow.item_id == Item.id)
        .where(Follow.user_id == viewer.user.id, Follow.stopped_at.is_(None))
        .options(selectinload(Item.stage))
        .order_by(Follow.created_at.desc(), Item.id.desc())
    ))


def set_following(session: Session, *, viewer: Viewer, item: Item, following: bool) -> None:
    if viewer.user is None:
        raise NotAuthenticated("Please sign in to follow items.")
    if following:
        follow(session, item=item, user=viewer.user)
    else:
        unfollow(session, item=item, user=viewer.user)


# --- merging: votes and follows move to another item, and back ------------------------------------------
# app/roadmap/merge.py merges item B (`source`) into A (`target`) and undoes it; these move this domain's rows
# and say what they moved, so that the merge's record can put exactly that back. The caller holds both items'
# row locks.


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def count_votes(session: Session, *, item: Item) -> int:
    return session.scalar(select(func.count()).select_from(Vote).where(Vote.item_id == item.id)) or 0


def count_follows(session: Session, *, item: Item) -> int:
    return session.scalar(select(func.count()).select_from(Follow).where(Follow.item_id == item.id,
                                                                        Follow.stopped_at.is_(None))) or 0


def count_shared_votes(session: Session, *, source: Item, target: Item) -> tuple[int, int]:
    """People who voted on both items, and how many of them gave `source` the higher importance."""
    on_target = aliased(Vote)
    overlap, raised = session.execute(
        select(func.count(), func.coalesce(func.sum(case((Vote.importance > on_target.importance, 1), else_=0)), 0))
        .select_from(Vote)
        .join(on_target, and_(on_target.user_id == Vote.user_id, on_target.item_id == target.id))
        .where(Vote.item_id == source.id)
    ).one()
    return overlap, int(raised)


def move_votes_to_item(session: Session, *, source: Item, target: Item) -> dict[str, Any]:
    """Source's voters count once on target: someone who voted on both keeps the higher importance (their
    target vote takes it) and their source vote goes; the other votes move. Returns what changed:
    `moved_votes` (ids), `dropped_votes` (the full rows, with `absorbed_by`, the target vote) and
    `raised_votes` ({id, user_id, from, to, updated_at})."""
    on_a = aliased(Vote)
    overlapping = session.execute(
        select(Vote.id, Vote.user_id, Vote.importance, Vote.created_at, Vote.updated_at, Vote.captured_by_id,
               Vote.source, Vote.source_url, on_a.id, on_a.importance, on_a.updated_at)
        .join(on_a, and_(on_a.user_id == Vote.user_id, on_a.item_id == target.id))
        .where(Vote.item_id == source.id)
        .order_by(Vote.id)
    ).all()
    dropped: list[dict[str, Any]] = []
    raised: list[dict[str, Any]] = []
    for (b_id, user_id, importance, created_at, updated_at, captured_by_id, capture_source, source_url,
         a_id, a_importance, a_updated_at) in overlapping:
        dropped.append({
            "id": b_id, "user_id": user_id, "importance": importance, "created_at": _iso(created_at),
            "updated_at": _iso(updated_at), "captured_by_id": captured_by_id,
            "source": capture_source.value if capture_source is not None else None, "source_url": source_url,
            "absorbed_by": a_id,
        })
        if importance > a_importance:
            # The higher importance wins; updated_at stays A's, so undo can tell whether the person changed it since.
            session.execute(update(Vote).where(Vote.id == a_id).values(importance=importance)
                            .execution_options(synchronize_session=False))
            raised.append({"id": a_id, "user_id": user_id, "from": a_importance, "to": importance,
                           "updated_at": _iso(a_updated_at)})
    for ids in in_chunks([d["id"] for d in dropped]):
        session.execute(delete(Vote).where(Vote.id.in_(ids)).execution_options(synchronize_session=False))
    moved = list(session.scalars(
        update(Vote).where(Vote.item_id == source.id).values(item_id=target.id)
        .returning(Vote.id).execution_options(synchronize_session=False)
    ))
    return {"moved_votes": sorted(moved), "dropped_votes": dropped, "raised_votes": raised}


def move_votes_back(session: Session, record: dict[str, Any], *, source: Item, target: Item) -> tuple[int, int, int]:
    """Undo `move_votes_to_item` as far as the votes are still where it left them. Returns (votes back on
    source, moved votes no longer on target: withdrawn since, raised importances the person changed since)."""
    moved = record.get("moved_votes", [])
    back = 0
    for ids in in_chunks(moved):
        back += len(list(session.scalars(
            update(Vote).where(Vote.id.in_(ids), Vote.item_id == target.id).values(item_id=source.id)
            .returning(Vote.id).execution_options(synchronize_session=False)
        )))
    kept = len(moved) - back

    importances_kept = 0
    for raised in record.get("raised_votes", []):
        current = session.execute(select(Vote.importance, Vote.updated_at)
                                  .where(Vote.id == raised["id"], Vote.item_id == target.id)).first()
        if current is None:
            continue  # withdrawn since: nothing to lower
        if current.importance == raised["to"] and current.updated_at == _when(raised["updated_at"]):
            session.execute(update(Vote).where(Vote.id == raised["id"]).values(importance=raised["from"])
                            .execution_options(synchronize_session=False))
        else:
            importances_kept += 1

    # A dropped vote comes back while the vote on A that absorbed it is still there; someone who withdrew
    # that vote since withdrew both, like a moved vote that is gone from A.
    dropped = record.get("dropped_votes", [])
    still_on_a: set[int] = set()
    for ids in in_chunks([d["absorbed_by"] for d in dropped]):
        still_on_a.update(session.scalars(select(Vote.id).where(Vote.id.in_(ids), Vote.item_id == target.id)))
    taken: set[int] = set()
    for ids in in_chunks([d["id"] for d in dropped]):
        taken.update(session.scalars(select(Vote.id).where(Vote.id.in_(ids))))
    for row in dropped:
        if row["absorbed_by"] not in still_on_a:
            kept += 1
            continue
        values: dict[str, Any] = {
            "item_id": source.id, "user_id": row["user_id"], "importance": row["importance"],
            "created_at": _when(row["created_at"]), "updated_at": _when(row["updated_at"]),
            "captured_by_id": row["captured_by_id"],
            "source": CaptureSource(row["source"]) if row["source"] else None, "source_url": row["source_url"],
        }
        # The original id, unless SQLite handed it out again since (PostgreSQL's sequence is already past it).
        if row["id"] not in taken:
            values["id"] = row["id"]
        inserted = session.execute(_insert(session, Vote).values(**values)
                                   .on_conflict_do_nothing(index_elements=["item_id", "user_id"])
                                   .returning(Vote.id)).first()
        back += inserted is not None
    return back, kept, importances_kept


def voters_since(session: Session, *, item: Item, user_ids: Sequence[int], since: datetime) -> set[int]:
    """Of these people, those who voted on the item after `since`."""
    found: set[int] = set()
    for users in in_chunks(user_ids):
        found.update(session.scalars(select(Vote.user_id).where(Vote.item_id == item.id, Vote.user_id.in_(users),
                                                                Vote.created_at > since)))
    return found


def recount(session: Session, *items: Item) -> None:
    """Set vote_count and trend_count from the vote rows, the way `reconcile()` and `refresh_trends()` count."""
    since = utcnow() - timedelta(days=TREND_DAYS)
    total = select(func.count()).select_from(Vote).where(Vote.item_id == Item.id).scalar_subquery()
    recent = (select(func.count()).select_from(Vote).where(Vote.item_id == Item.id, Vote.created_at >= since)
              .scalar_subquery())
    session.execute(update(Item).where(Item.id.in_([i.id for i in items]))
                    .values(vote_count=total, trend_count=recent)
                    .execution_options(synchronize_session=False))
    for item in items:
        session.expire(item, ["vote_count", "trend_count"])


def move_follows_to_item(session: Session, *, source: Item, target: Item) -> dict[str, Any]:
    """Source's followers follow target (once: a follow of both keeps target's). Returns `moved_follows`
    (the people) and `dropped_follows` ({user_id, created_at})."""
    following_a = select(Follow.user_id).where(Follow.item_id == target.id)
    both = session.execute(
        select(Follow.user_id, Follow.created_at).where(Follow.item_id == source.id, Follow.user_id.in_(following_a))
        .order_by(Follow.user_id)
    ).all()
    session.execute(delete(Follow).where(Follow.item_id == source.id, Follow.user_id.in_(following_a))
                    .execution_options(synchronize_session=False))
    moved = list(session.scalars(
        update(Follow).where(Follow.item_id == source.id).values(item_id=target.id)
        .returning(Follow.user_id).execution_options(synchronize_session=False)
    ))
    return {"moved_follows": sorted(moved),
            "dropped_follows": [{"user_id": u, "created_at": _iso(at)} for u, at in both]}


def move_follows_back(session: Session, record: dict[str, Any], *, source: Item, target: Item,
                      merged_at: datetime, active_on_target: set[int]) -> None:
    """Undo `move_follows_to_item`. People in `active_on_target` (who voted or commented on target since the
    merge, and follow it for that) keep following target and follow source again as well."""
    moved = record.get("moved_follows", [])
    for users in in_chunks(moved):
        rows = session.execute(select(Follow.user_id, Follow.created_at)
                               .where(Follow.item_id == target.id, Follow.user_id.in_(users),
                                      Follow.created_at <= merged_at)).all()
        for user_id, created_at in rows:
            if user_id in active_on_target:
                session.execute(_insert(session, Follow).values(item_id=source.id, user_id=user_id,
                                                                created_at=created_at)
                                .on_conflict_do_nothing(index_elements=["item_id", "user_id"]))
            else:
                session.execute(update(Follow).where(Follow.item_id == target.id, Follow.user_id == user_id)
                                .values(item_id=source.id).execution_options(synchronize_session=False))
    dropped = record.get("dropped_follows", [])
    for entries in in_chunks(dropped):
        # Like a dropped vote: back while the person still follows A.
        still = set(session.scalars(select(Follow.user_id).where(
            Follow.item_id == target.id, Follow.user_id.in_([e["user_id"] for e in entries]))))
        for entry in entries:
            if entry["user_id"] in still:
                session.execute(_insert(session, Follow).values(item_id=source.id, user_id=entry["user_id"],
                                                                created_at=_when(entry["created_at"]))
                                .on_conflict_do_nothing(index_elements=["item_id", "user_id"]))
