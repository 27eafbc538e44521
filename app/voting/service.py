"""Votes and follows. All SQL of the voting domain lives here.

A vote is one row per (item, user), enforced by the unique key. `items.vote_count` is changed in
the same transaction as the row, by the database (`vote_count = vote_count + 1`), and only when a
row was really inserted or deleted, so concurrent votes, withdrawals and re-votes never drift.
`reconcile()` proves the counters right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from app.accounts.models import User
from app.accounts.viewer import Viewer
from app.db import utcnow
from app.errors import Conflict, FormInvalid, NotAuthenticated
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


# --- what people do: vote through the rules, see their votes and follows -------------------------------

IMPORTANCE_MESSAGE = "Choose how much it matters to you: nice to have, important or critical."


def parse_importance(raw: object) -> Importance:
    """An importance from a form or JSON value: `nice_to_have`, `important` or `critical`."""
    text = str(raw if raw is not None else "").strip().lower()
    for importance in Importance:
        if text == importance.key:
            return importance
    raise FormInvalid({"importance": IMPORTANCE_MESSAGE})


def counts_shown(session: Session, viewer: Viewer) -> bool:
    """Whether this viewer sees vote counts: staff always; others unless an admin hid them."""
    from app.portal import service as portal

    return viewer.is_staff or not portal.get_vote_display(session).hide_counts


def _voter(viewer: Viewer) -> User:
    if viewer.user is None:
        raise NotAuthenticated("Please sign in to vote.")
    return viewer.user


def _ensure_open(item: Item) -> None:
    reason = item.voting_closed_reason()
    if reason is not None:
        raise Conflict(reason + ".")


def vote(session: Session, *, viewer: Viewer, item: Item, importance: Importance, reason: str = "") -> VoteResult:
    """A signed-in person's vote (or new importance), with an optional private "tell us why" note.

    The caller has loaded `item` through `visible_items(viewer)` (a hidden item is a 404 before this).
    Closed and merged items refuse with Conflict; a too-long note with FormInvalid({"reason": ...}).
    """
    user = _voter(viewer)
    _ensure_open(item)
    if reason and reason.strip():
        from app.feedback import service as feedback

        feedback.add_reason(session, item=item, author=user, body=reason)
    return cast_vote(session, item=item, user=user, importance=importance)


def unvote(session: Session, *, viewer: Viewer, item: Item) -> bool:
    """Withdraw the person's vote; False when there was none. Closed items keep their votes as they were."""
    user = _voter(viewer)
    _ensure_open(item)
    return withdraw_vote(session, item=item, user=user)


def current_count(session: Session, *, item: Item) -> int:
    """The item's counter as the database has it now (the vote changed it in SQL, not on the object)."""
    return session.scalar(select(Item.vote_count).where(Item.id == item.id)) or 0


@dataclass(frozen=True, slots=True)
class VoteState:
    """What the vote widget shows one viewer for one item."""

    count: int | None  # None: counts are hidden from this viewer
    mine: Importance | None
    closed_reason: str | None
    signed_in: bool

    @property
    def can_vote(self) -> bool:
        return self.signed_in and self.closed_reason is None


def vote_state(session: Session, *, viewer: Viewer, item: Item, count: int | None = None) -> VoteState:
    """The widget's state for one item (its stage loaded): one query for the viewer's own vote."""
    mine = votes_of(session, user=viewer.user, item_ids=[item.id]).get(item.id)
    shown = counts_shown(session, viewer)
    return VoteState(count=(item.vote_count if count is None else count) if shown else None, mine=mine,
                     closed_reason=item.voting_closed_reason(), signed_in=viewer.user is not None)


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
    from app.roadmap import service as roadmap

    stmt = (
        roadmap.visible_items(viewer)
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


def list_followed(session: Session, *, viewer: Viewer) -> list[Item]:
    """Items the viewer follows and may still see, most recently followed first."""
    if viewer.user is None:
        return []
    from app.roadmap import service as roadmap

    return list(session.scalars(
        roadmap.visible_items(viewer)
        .join(Follow, Follow.item_id == Item.id)
        .where(Follow.user_id == viewer.user.id)
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
