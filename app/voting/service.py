"""Votes and follows. All SQL of the voting domain lives here.

A vote is one row per (item, user), enforced by the unique key. `items.vote_count` is changed in
the same transaction as the row, by the database (`vote_count = vote_count + 1`), and only when a
row was really inserted or deleted, so concurrent votes, withdrawals and re-votes never drift.
`reconcile()` proves the counters right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.db import utcnow
from app.roadmap.models import Item
from app.voting.models import CaptureSource, Follow, Importance, Vote

TREND_DAYS = 30


def _insert(session: Session, model: type) -> object:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


@dataclass(frozen=True, slots=True)
class VoteResult:
    created: bool
    importance: Importance


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
    """Vote, or change the importance of an existing vote. Idempotent.

    `keep_higher` (votes captured by staff): if the person already voted, the higher importance wins.
    The caller checks that the viewer may see the item and that it takes votes.
    """
    now = utcnow()
    inserted = session.execute(
        _insert(session, Vote)  # type: ignore[attr-defined]
        .values(item_id=item.id, user_id=user.id, importance=int(importance), created_at=now, updated_at=now,
                captured_by_id=captured_by.id if captured_by else None, source=source, source_url=source_url)
        .on_conflict_do_nothing(index_elements=["item_id", "user_id"])
        .returning(Vote.id)
    ).first()
    if inserted is not None:
        session.execute(
            update(Item).where(Item.id == item.id)
            .values(vote_count=Item.vote_count + 1, trend_count=Item.trend_count + 1)
        )
        follow(session, item=item, user=user)
        return VoteResult(created=True, importance=importance)
    new_importance = int(importance)
    if keep_higher:
        current = session.scalar(select(Vote.importance).where(Vote.item_id == item.id, Vote.user_id == user.id))
        new_importance = max(new_importance, current or 0)
    session.execute(
        update(Vote).where(Vote.item_id == item.id, Vote.user_id == user.id)
        .values(importance=new_importance, updated_at=now)
    )
    return VoteResult(created=False, importance=Importance(new_importance))


def withdraw_vote(session: Session, *, item: Item, user: User) -> bool:
    """Remove the user's vote; False when there was none (idempotent)."""
    removed = session.execute(
        delete(Vote).where(Vote.item_id == item.id, Vote.user_id == user.id).returning(Vote.created_at)
    ).first()
    if removed is None:
        return False
    recent = removed[0] is not None and removed[0] >= utcnow() - timedelta(days=TREND_DAYS)
    session.execute(
        update(Item).where(Item.id == item.id)
        .values(vote_count=Item.vote_count - 1,
                trend_count=Item.trend_count - (1 if recent else 0))
    )
    return True


def votes_of(session: Session, *, user: User | None, item_ids: Iterable[int]) -> dict[int, Importance]:
    """The user's importance per item, for a page of cards, in one query."""
    ids = list(item_ids)
    if user is None or not ids:
        return {}
    rows = session.execute(select(Vote.item_id, Vote.importance).where(Vote.user_id == user.id,
                                                                     Vote.item_id.in_(ids)))
    return {item_id: Importance(importance) for item_id, importance in rows}


def follow(session: Session, *, item: Item, user: User) -> None:
    session.execute(
        _insert(session, Follow)  # type: ignore[attr-defined]
        .values(item_id=item.id, user_id=user.id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["item_id", "user_id"])
    )


def unfollow(session: Session, *, item: Item, user: User) -> None:
    session.execute(delete(Follow).where(Follow.item_id == item.id, Follow.user_id == user.id))


def is_following(session: Session, *, item: Item, user: User | None) -> bool:
    if user is None:
        return False
    return session.scalar(select(Follow.item_id).where(Follow.item_id == item.id, Follow.user_id == user.id)) is not None


@dataclass(frozen=True, slots=True)
class Drift:
    item_id: int
    public_id: str
    stored: int
    actual: int


def reconcile(session: Session, *, fix: bool = True) -> list[Drift]:
    """Compare every item's vote_count with its vote rows; fix the counters (and refresh trends)."""
    actual = select(Vote.item_id, func.count().label("n")).group_by(Vote.item_id).subquery()
    rows = session.execute(
        select(Item.id, Item.public_id, Item.vote_count, func.coalesce(actual.c.n, 0))
        .outerjoin(actual, actual.c.item_id == Item.id)
        .where(Item.vote_count != func.coalesce(actual.c.n, 0))
    ).all()
    drifts = [Drift(item_id=r[0], public_id=r[1], stored=r[2], actual=r[3]) for r in rows]
    if fix:
        for drift in drifts:
            session.execute(update(Item).where(Item.id == drift.item_id).values(vote_count=drift.actual))
        refresh_trends(session)
    return drifts


def refresh_trends(session: Session) -> None:
    """Recount the votes of the last 30 days per item (votes age out of the trend)."""
    since = utcnow() - timedelta(days=TREND_DAYS)
    recent = (
        select(func.count()).select_from(Vote)
        .where(Vote.item_id == Item.id, Vote.created_at >= since)
        .scalar_subquery()
    )
    session.execute(update(Item).values(trend_count=recent))
