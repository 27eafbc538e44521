"""Merging a duplicate item B into item A, and undoing it: an item operation over several domains.

This module decides what a merge does and keeps its record; each domain moves its own rows, in its own
service, and says what it moved: votes and follows (app.voting.service `move_votes_to_item`,
`move_follows_to_item`, and `..._back`), comments (app.discussion.service) and feedback (app.feedback.service).
The SQL left here is the merge's own: the items' row locks, their audiences, the `merges` rows and the
redirects of merged items' addresses.

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
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.accounts.viewer import Viewer
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.db import utcnow
from app.discussion import service as discussion
from app.errors import Conflict, NotFound
from app.feedback import service as feedback
from app.organisations.models import Segment
from app.roadmap import service as roadmap
from app.roadmap.models import Item, Visibility, item_segments
from app.voting import service as voting
from app.voting.models import Merge

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


def preview_merge(session: Session, *, source: Item, target: Item) -> MergePreview:
    check_merge(source=source, target=target)
    overlap, raised = voting.count_shared_votes(session, source=source, target=target)
    source_audience, target_audience = audience_of(session, source), audience_of(session, target)
    widens = not source_audience.includes(target_audience)
    return MergePreview(
        source=source, target=target, votes=voting.count_votes(session, item=source), overlap=overlap,
        raised=raised, comments=discussion.count_comments(session, item=source),
        feedback=feedback.count_feedback(session, item=source), follows=voting.count_follows(session, item=source),
        target_votes=voting.count_votes(session, item=target), warnings=_visibility_warnings(source, target),
        widens=widens,
        comments_shown_wider=discussion.count_readable_comments(session, item=source) if widens else 0,
        source_audience=source_audience.label, target_audience=target_audience.label,
    )


# --- merge ----------------------------------------------------------------------------------------------


def _lock(session: Session, *items: Item) -> None:
    """Take both item rows in id order: concurrent votes (whose counter update waits for these rows) and
    a second merge of either item queue behind this one. SQLite's write transaction already serialises."""
    ids = sorted(i.id for i in items)
    session.execute(select(Item.id).where(Item.id.in_(ids)).order_by(Item.id).with_for_update())


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
    record.update(voting.move_votes_to_item(session, source=source, target=target))
    if publish_comments or audience_of(session, source).includes(audience_of(session, target)):
        record.update(discussion.move_comments_to_item(session, source=source, target=target))
    else:
        record.update({"moved_comments": [], "pinned_comments": [], "unpinned_comments": [],
                       "kept_comments": discussion.comment_ids_of(session, item=source)})
    record["moved_feedback"] = feedback.move_feedback_to_item(session, source=source, target=target)
    record.update(voting.move_follows_to_item(session, source=source, target=target))

    source.merged_into_id = target.id
    merge = Merge(source_item_id=source.id, target_item_id=target.id, merged_by_id=actor.id, merged_at=now,
                  record=record)
    session.add(merge)
    session.flush()
    voting.recount(session, source, target)

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
    votes_back, votes_kept, importances_kept = voting.move_votes_back(session, record, source=source, target=target)
    discussion.move_comments_back(session, record, source=source, target=target)
    feedback.move_feedback_back(session, record.get("moved_feedback", []), source=source, target=target)
    # Someone who voted or commented on A since the merge follows A for that; they keep it. Asked after the
    # comments went back: a reply on A to one of B's threads went back with its thread.
    moved_followers = record.get("moved_follows", [])
    active = (voting.voters_since(session, item=target, user_ids=moved_followers, since=merge.merged_at)
              | discussion.commenters_since(session, item=target, user_ids=moved_followers, since=merge.merged_at))
    voting.move_follows_back(session, record, source=source, target=target, merged_at=merge.merged_at,
                             active_on_target=active)

    source.merged_into_id = None
    merge.undone_at = utcnow()
    merge.undone_by_id = actor.id
    session.flush()
    voting.recount(session, source, target)
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
    items, _ = roadmap.list_items_for_staff(session, q=q, per_page=limit + 1)
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
