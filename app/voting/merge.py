"""Merging a duplicate item B into item A, and undoing it. All SQL of the merge lives here.

A merge is about votes first: B's voters count once on A (someone who voted on both keeps the higher
importance), then B's comments, private feedback and follows move along, and B points at A
(`merged_into_id`), which takes it off the board, search and API lists and turns its URL into a redirect.

Comments are read by whoever may see their item. When A is seen by someone who may not see B (B is internal,
a draft, for customers only, or for fewer segments than A), moving them would publish what was written for
fewer people: they then stay on B, read by no one while it is merged and back with it on undo, unless the
PM, told how many comments that is in the preview, chooses to move them (`publish_comments`).

Everything that moved is written to the merge's `record`, so `undo_merge` can put it back exactly. Undo
moves back only what is still where the merge left it: activity on A since the merge (new votes,
comments and follows, a changed importance, a withdrawn vote) stays as people left it.

The record (JSON):
  moved_votes        ids of B's votes that moved to A
  dropped_votes      B's votes of people who had voted on A too: the full rows, and `absorbed_by`, the A vote
  raised_votes       A votes that took B's higher importance: {id, user_id, from, to, updated_at}
  moved_comments     ids of B's comments (replies included); empty when they stayed on B
  kept_comments      ids of B's comments that stayed on B because A is seen by more people
  pinned_comments    B's pinned comments; unpinned_comments: those unpinned because A had a pin of its own
  moved_feedback     ids of B's feedback rows that moved (a reason of someone who gave one on A too stays on B)
  moved_follows      ids of the people whose follow of B moved to A
  dropped_follows    follows of B by people who followed A too: {user_id, created_at}
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from app.accounts.models import User
from app.accounts.viewer import Viewer
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.db import insert_with_conflicts, utcnow
from app.discussion.models import Comment
from app.errors import Conflict, NotFound
from app.feedback.models import Feedback, FeedbackKind
from app.organisations.models import Segment
from app.roadmap import service as roadmap
from app.roadmap.models import Item, Visibility, item_segments
from app.voting.models import CaptureSource, Follow, Merge, Vote
from app.voting.service import TREND_DAYS

# Bound parameters per IN list: well under SQLite's and PostgreSQL's limits, for items with long histories.
_CHUNK = 2000
# Merges can chain (C into B, then B into A): a redirect follows at most this many steps.
_MAX_CHAIN = 20
_PUBLIC_ID = re.compile(r"[a-z0-9]{4,16}")
# A merge can be undone: browsers must not keep its redirect (a 301 is otherwise cached for good).
REDIRECT_HEADERS = {"Cache-Control": "no-store"}


# --- what a merge would do ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MergePreview:
    """What the confirmation page tells the PM before B (`source`) is merged into A (`target`)."""

    source: Item
    target: Item
    votes: int  # votes on B
    overlap: int  # people who voted on both: they count once
    raised: int  # of those, people whose vote on B matters more: their vote on A takes B's importance
    comments: int
    feedback: int
    follows: int
    target_votes: int  # votes on A now
    warnings: list[str] = field(default_factory=list)
    # A is seen by someone who may not see B: B's comments stay on B unless the PM chooses to move them.
    widens: bool = False
    comments_shown_wider: int = 0  # of B's comments, those A's wider audience would read (not hidden, not deleted)
    source_audience: str = ""
    target_audience: str = ""

    @property
    def result_votes(self) -> int:
        """A's votes after the merge: the distinct voters of A and B."""
        return self.target_votes + self.votes - self.overlap


def check_merge(*, source: Item, target: Item) -> None:
    """Conflict unless B may be merged into A: two different items, neither of them merged already
    (which also rules out cycles: A cannot be merged into B)."""
    if source.id == target.id:
        raise Conflict("An item cannot be merged into itself. Choose another item.")
    if source.merged_into_id is not None:
        raise Conflict(f"“{source.title}” is already merged into another item.")
    if target.merged_into_id is not None:
        raise Conflict(f"“{target.title}” is itself merged into another item; choose the item it was merged into.")


def _visibility_warnings(source: Item, target: Item) -> list[str]:
    """People who may see B but not A lose B's address (it answers “not found” for them)."""
    rank = {Visibility.public: 0, Visibility.customers: 1, Visibility.internal: 2}
    if source.published_at is not None and target.published_at is None:
        return [(f"“{target.title}” is a draft: until it is published, people who are not staff will find "
                 f"“{source.title}”’s address answering “not found”.")]
    if rank[target.visibility] > rank[source.visibility]:
        return [(f"“{target.title}” is seen by fewer people than “{source.title}”: anyone who may not see it "
                 f"will find “{source.title}”’s address answering “not found”.")]
    return []


@dataclass(frozen=True, slots=True)
class Audience:
    """Who besides staff may see an item, as `roadmap.visible_items` decides it: nobody (internal or draft),
    everyone (public), or signed-in customers — of every segment (`segments` empty) or of these segments."""

    kind: str  # "staff" | "everyone" | "customers"
    segments: frozenset[int] = frozenset()
    label: str = ""

    def includes(self, other: Audience) -> bool:
        """Whether everyone `other` lets in is let in here too."""
        if other.kind == "staff" or self.kind == "everyone":
            return True
        if self.kind == "staff" or other.kind == "everyone":
            return False
        if not self.segments:  # every customer
            return True
        return bool(other.segments) and other.segments <= self.segments


def audience_of(session: Session, item: Item) -> Audience:
    if item.published_at is None or item.visibility is Visibility.internal:
        return Audience("staff", label="staff only")
    if item.visibility is Visibility.public:
        return Audience("everyone", label="everyone")
    segments = session.execute(select(Segment.id, Segment.name).join(item_segments, item_segments.c.segment_id
                                                                      == Segment.id)
                               .where(item_segments.c.item_id == item.id).order_by(Segment.name)).all()
    if not segments:
        return Audience("customers", label="every customer")
    return Audience("customers", frozenset(s.id for s in segments),
                    label="customers in " + ", ".join(s.name for s in segments))


def _readable_comments(session: Session, item_id: int) -> int:
    """Comments someone other than staff could read if they could see the item."""
    return session.scalar(select(func.count()).select_from(Comment).where(
        Comment.item_id == item_id, Comment.deleted_at.is_(None), Comment.hidden_at.is_(None))) or 0


def _count(session: Session, model: Any, item_id: int) -> int:
    return session.scalar(select(func.count()).select_from(model).where(model.item_id == item_id)) or 0


def preview_merge(session: Session, *, source: Item, target: Item) -> MergePreview:
    check_merge(source=source, target=target)
    on_a = aliased(Vote)
    overlap, raised = session.execute(
        select(func.count(), func.coalesce(func.sum(case((Vote.importance > on_a.importance, 1), else_=0)), 0))
        .select_from(Vote)
        .join(on_a, and_(on_a.user_id == Vote.user_id, on_a.item_id == target.id))
        .where(Vote.item_id == source.id)
    ).one()
    comments = session.scalar(select(func.count()).select_from(Comment)
                              .where(Comment.item_id == source.id, Comment.deleted_at.is_(None))) or 0
    source_audience, target_audience = audience_of(session, source), audience_of(session, target)
    widens = not source_audience.includes(target_audience)
    return MergePreview(
        source=source, target=target, votes=_count(session, Vote, source.id), overlap=overlap,
        raised=int(raised), comments=comments, feedback=_count(session, Feedback, source.id),
        follows=_count(session, Follow, source.id), target_votes=_count(session, Vote, target.id),
        warnings=_visibility_warnings(source, target), widens=widens,
        comments_shown_wider=_readable_comments(session, source.id) if widens else 0,
        source_audience=source_audience.label, target_audience=target_audience.label,
    )


# --- merge ----------------------------------------------------------------------------------------------


def _insert(session: Session, model: Any) -> Any:
    return insert_with_conflicts(session.get_bind().dialect.name, model)


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start:start + _CHUNK])


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _lock(session: Session, *items: Item) -> None:
    """Take both item rows in id order: concurrent votes (whose counter update waits for these rows) and
    a second merge of either item queue behind this one. SQLite's write transaction already serialises."""
    ids = sorted(i.id for i in items)
    session.execute(select(Item.id).where(Item.id.in_(ids)).order_by(Item.id).with_for_update())


def _recount(session: Session, *items: Item) -> None:
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


def merge_items(session: Session, *, source: Item, target: Item, actor: User,
                publish_comments: bool = False) -> Merge:
    """Merge B (`source`) into A (`target`); returns the Merge, whose record lets `undo_merge` reverse it.

    B's comments move to A when everyone who may see A could already read them on B; otherwise they stay on
    B unless `publish_comments` (the PM chose, in the preview, to show them to A's wider audience).
    """
    check_merge(source=source, target=target)
    _lock(session, source, target)
    # Checked again on the locked rows: a merge of either item may have committed while we waited. The
    # audiences are read after the lock too: an edit of either item's visibility waits for the merge.
    session.refresh(source, ["merged_into_id", "visibility", "published_at"])
    session.refresh(target, ["merged_into_id", "visibility", "published_at"])
    check_merge(source=source, target=target)
    now = utcnow()
    record: dict[str, Any] = {}
    record.update(_merge_votes(session, source=source, target=target))
    if publish_comments or audience_of(session, source).includes(audience_of(session, target)):
        record.update(_merge_comments(session, source=source, target=target))
    else:
        record.update({"moved_comments": [], "pinned_comments": [], "unpinned_comments": [],
                       "kept_comments": sorted(session.scalars(select(Comment.id)
                                                               .where(Comment.item_id == source.id)))})
    # One reason per person and item: a reason on B whose author gave one on A too stays on B (with B, back on
    # undo); A keeps the reason that goes with the vote A keeps.
    on_a = aliased(Feedback)
    reason_on_a = (select(on_a.id).where(on_a.item_id == target.id, on_a.kind == FeedbackKind.reason,
                                          on_a.author_id == Feedback.author_id).exists())
    record["moved_feedback"] = list(session.scalars(
        update(Feedback).where(Feedback.item_id == source.id,
                               ~and_(Feedback.kind == FeedbackKind.reason, reason_on_a))
        .values(item_id=target.id).returning(Feedback.id).execution_options(synchronize_session=False)
    ))
    record.update(_merge_follows(session, source=source, target=target))

    source.merged_into_id = target.id
    merge = Merge(source_item_id=source.id, target_item_id=target.id, merged_by_id=actor.id, merged_at=now,
                  record=record)
    session.add(merge)
    session.flush()
    _recount(session, source, target)

    summary = {
        "votes_moved": len(record["moved_votes"]), "votes_counted_once": len(record["dropped_votes"]),
        "comments_moved": len(record["moved_comments"]), "comments_kept": len(record.get("kept_comments", [])),
        "feedback_moved": len(record["moved_feedback"]),
        "follows_moved": len(record["moved_follows"]),
    }
    audit.record(session, actor=actor, action=AuditAction.item_merged, entity=source,
                 changes={"merged_into": [None, target.title], **{k: [None, v] for k, v in summary.items()}})
    audit.record(session, actor=actor, action=AuditAction.item_merged_in, entity=target,
                 changes={"merged_from": [None, source.title], **{k: [None, v] for k, v in summary.items()}})
    return merge


def _merge_votes(session: Session, *, source: Item, target: Item) -> dict[str, Any]:
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
    for ids in _chunks([d["id"] for d in dropped]):
        session.execute(delete(Vote).where(Vote.id.in_(ids)).execution_options(synchronize_session=False))
    moved = list(session.scalars(
        update(Vote).where(Vote.item_id == source.id).values(item_id=target.id)
        .returning(Vote.id).execution_options(synchronize_session=False)
    ))
    return {"moved_votes": sorted(moved), "dropped_votes": dropped, "raised_votes": raised}


def _merge_comments(session: Session, *, source: Item, target: Item) -> dict[str, Any]:
    pinned = sorted(session.scalars(select(Comment.id).where(Comment.item_id == source.id,
                                                             Comment.is_pinned.is_(True))))
    target_has_pin = session.scalar(select(Comment.id).where(Comment.item_id == target.id,
                                                             Comment.is_pinned.is_(True)).limit(1)) is not None
    unpinned: list[int] = []
    if pinned and target_has_pin:
        # One pin per item: A's own pinned answer stays on top.
        session.execute(update(Comment).where(Comment.id.in_(pinned)).values(is_pinned=False)
                        .execution_options(synchronize_session=False))
        unpinned = pinned
    moved = list(session.scalars(
        update(Comment).where(Comment.item_id == source.id).values(item_id=target.id)
        .returning(Comment.id).execution_options(synchronize_session=False)
    ))
    return {"moved_comments": sorted(moved), "pinned_comments": pinned, "unpinned_comments": unpinned}


def _merge_follows(session: Session, *, source: Item, target: Item) -> dict[str, Any]:
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


# --- undo -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UndoResult:
    merge: Merge
    votes_back: int  # votes that went back to B (moved back and re-created)
    votes_kept: int  # moved votes no longer on A (withdrawn since): they stay withdrawn
    importances_kept: int  # raised importances the person changed since: the current one stays


def undo_merge(session: Session, *, merge: Merge, actor: User) -> UndoResult:
    """Put B back as it was before `merge`, leaving A's activity since the merge on A. Once per merge."""
    source = session.get(Item, merge.source_item_id)
    target = session.get(Item, merge.target_item_id)
    if source is None or target is None:
        raise Conflict("This merge can no longer be undone: one of its items was deleted.")
    _check_undo(merge, source=source, target=target)
    _lock(session, source, target)
    # Checked again on the locked rows: another undo or merge may have committed while we waited.
    session.refresh(merge, ["undone_at"])
    session.refresh(source, ["merged_into_id"])
    session.refresh(target, ["merged_into_id"])
    _check_undo(merge, source=source, target=target)
    record = merge.record or {}
    votes_back, votes_kept, importances_kept = _undo_votes(session, record, source=source, target=target)
    _undo_comments(session, record, source=source, target=target)
    for ids in _chunks(record.get("moved_feedback", [])):
        session.execute(update(Feedback).where(Feedback.id.in_(ids), Feedback.item_id == target.id)
                        .values(item_id=source.id).execution_options(synchronize_session=False))
    _undo_follows(session, record, source=source, target=target, merged_at=merge.merged_at)

    source.merged_into_id = None
    merge.undone_at = utcnow()
    merge.undone_by_id = actor.id
    session.flush()
    _recount(session, source, target)
    changes: dict[str, list[Any]] = {"merged_into": [target.title, None], "votes_back": [None, votes_back]}
    audit.record(session, actor=actor, action=AuditAction.item_unmerged, entity=source, changes=changes)
    audit.record(session, actor=actor, action=AuditAction.item_merge_undone, entity=target,
                 changes={"merged_from": [source.title, None], "votes_back": [None, votes_back]})
    return UndoResult(merge=merge, votes_back=votes_back, votes_kept=votes_kept, importances_kept=importances_kept)


def _check_undo(merge: Merge, *, source: Item, target: Item) -> None:
    if merge.undone_at is not None:
        raise Conflict("This merge has already been undone.")
    if source.merged_into_id != target.id:
        raise Conflict("This merge can no longer be undone: the items have changed since.")
    if target.merged_into_id is not None:
        raise Conflict(f"“{target.title}” has since been merged into another item. Undo that merge first.")


def _undo_votes(session: Session, record: dict[str, Any], *, source: Item, target: Item) -> tuple[int, int, int]:
    moved = record.get("moved_votes", [])
    back = 0
    for ids in _chunks(moved):
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
    for ids in _chunks([d["absorbed_by"] for d in dropped]):
        still_on_a.update(session.scalars(select(Vote.id).where(Vote.id.in_(ids), Vote.item_id == target.id)))
    taken: set[int] = set()
    for ids in _chunks([d["id"] for d in dropped]):
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


def _undo_comments(session: Session, record: dict[str, Any], *, source: Item, target: Item) -> None:
    moved = record.get("moved_comments", [])
    for ids in _chunks(moved):
        # Replies written on A since the merge to one of B's threads go back with their thread.
        session.execute(update(Comment)
                        .where(Comment.item_id == target.id, or_(Comment.id.in_(ids), Comment.parent_id.in_(ids)))
                        .values(item_id=source.id).execution_options(synchronize_session=False))
    pinned = record.get("pinned_comments", [])
    if pinned:
        session.execute(update(Comment)
                        .where(Comment.id.in_(pinned), Comment.item_id == source.id, Comment.hidden_at.is_(None),
                               Comment.deleted_at.is_(None))
                        .values(is_pinned=True).execution_options(synchronize_session=False))


def _undo_follows(session: Session, record: dict[str, Any], *, source: Item, target: Item,
                  merged_at: datetime) -> None:
    moved = record.get("moved_follows", [])
    for users in _chunks(moved):
        # Someone who voted or commented on A since the merge follows A for that; they keep it.
        active_on_a = set(session.scalars(
            select(Vote.user_id).where(Vote.item_id == target.id, Vote.user_id.in_(users),
                                       Vote.created_at > merged_at)
        )) | set(session.scalars(
            select(Comment.author_id).where(Comment.item_id == target.id, Comment.author_id.in_(users),
                                            Comment.created_at > merged_at)
        ))
        rows = session.execute(select(Follow.user_id, Follow.created_at)
                               .where(Follow.item_id == target.id, Follow.user_id.in_(users),
                                      Follow.created_at <= merged_at)).all()
        for user_id, created_at in rows:
            if user_id in active_on_a:
                session.execute(_insert(session, Follow).values(item_id=source.id, user_id=user_id,
                                                                created_at=created_at)
                                .on_conflict_do_nothing(index_elements=["item_id", "user_id"]))
            else:
                session.execute(update(Follow).where(Follow.item_id == target.id, Follow.user_id == user_id)
                                .values(item_id=source.id).execution_options(synchronize_session=False))
    dropped = record.get("dropped_follows", [])
    for chunk in _chunks(list(range(len(dropped)))):
        entries = [dropped[i] for i in chunk]
        # Like a dropped vote: back while the person still follows A.
        still = set(session.scalars(select(Follow.user_id).where(
            Follow.item_id == target.id, Follow.user_id.in_([e["user_id"] for e in entries]))))
        for entry in entries:
            if entry["user_id"] in still:
                session.execute(_insert(session, Follow).values(item_id=source.id, user_id=entry["user_id"],
                                                                created_at=_when(entry["created_at"]))
                                .on_conflict_do_nothing(index_elements=["item_id", "user_id"]))


# --- reading merges -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MergeInfo:
    """The merge that took an item off the roadmap, for its edit page."""

    merge: Merge
    target: Item
    merged_by: User | None


def current_merge(session: Session, *, item: Item) -> MergeInfo | None:
    """The standing (not undone) merge of `item` into another item, or None."""
    if item.merged_into_id is None:
        return None
    row = session.execute(
        select(Merge, Item, User)
        .join(Item, Item.id == Merge.target_item_id)
        .outerjoin(User, User.id == Merge.merged_by_id)
        .where(Merge.source_item_id == item.id, Merge.undone_at.is_(None))
        .order_by(Merge.merged_at.desc(), Merge.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return MergeInfo(merge=row[0], target=row[1], merged_by=row[2])


def merge_candidates(session: Session, viewer: Viewer, *, source: Item, q: str, limit: int = 20) -> list[Item]:
    """Items B could be merged into, found by title through the staff item search."""
    if not q.strip():
        return []
    items, _ = roadmap.list_items_for_staff(session, viewer, q=q, per_page=limit + 1)
    return [i for i in items if i.id != source.id and i.merged_into_id is None][:limit]


def find_merge_target(session: Session, viewer: Viewer, public_id: str) -> Item:
    """Where a merged item's address leads for this viewer: the item it was merged into (following merges
    of merges), when the viewer may see it. NotFound otherwise, exactly like a missing item."""
    if not _PUBLIC_ID.fullmatch(public_id or ""):
        raise NotFound()
    row = session.execute(select(Item.id, Item.merged_into_id, Item.public_id)
                          .where(Item.public_id == public_id)).first()
    if row is None or row.merged_into_id is None:
        raise NotFound()
    seen = {row.id}
    for _ in range(_MAX_CHAIN):
        row = session.execute(select(Item.id, Item.merged_into_id, Item.public_id)
                              .where(Item.id == row.merged_into_id)).first()
        if row is None or row.id in seen:
            raise NotFound()
        if row.merged_into_id is None:
            return roadmap.get_visible_item(session, viewer, row.public_id)
        seen.add(row.id)
    raise NotFound()
