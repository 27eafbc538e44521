"""Comments on items and their moderation. All SQL of the discussion domain lives here.

Rules, decided here for pages and API alike:

* Anyone who may see the item reads its comments; signed-in people who may see it write. An item the
  viewer may not see has no comments for them: every lookup starts from `visible_items(viewer)`
  and answers NotFound, exactly like a missing item.
* Replies are one level deep: a reply to a reply attaches to the thread's top comment.
* Authors edit for `EDIT_MINUTES` after posting (the comment then shows "edited") and delete at any time.
  Deleting erases the text; a deleted comment that has replies stays as a "This comment was deleted"
  placeholder so the thread still reads, one without replies disappears.
* Staff comments are official. Staff pin one official top-level comment per item (pinning another
  unpins the first) and hide / restore comments. A hidden comment vanishes, with its replies when it
  starts a thread, for everyone but staff, who see it marked hidden.
* Customers report a comment once; staff see open reports on /admin/moderation, then hide the comment
  (which closes its reports) or dismiss them.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, cast

from sqlalchemy import CursorResult, and_, distinct, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased

from app.accounts.models import STAFF_ROLES, User
from app.accounts.service import DELETED_NAME
from app.accounts.viewer import Viewer
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.db import in_chunks, insert_with_conflicts, utcnow
from app.discussion.models import Comment, CommentReport
from app.errors import Conflict, Forbidden, FormInvalid, NotAuthenticated, NotFound
from app.forms import FormModel, text, validate_form
from app.markup import plain_text
from app.paging import pages_of
from app.roadmap import service as roadmap
from app.roadmap.models import Item, item_path
from app.roadmap.visibility import visible_items
from app.voting import service as voting
from app.webhooks import service as webhooks

MAX_BODY = 5000
MAX_REASON = 500
EDIT_MINUTES = 15
PAGE_SIZE = 50  # threads per page of an item's discussion
_PUBLIC_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


# --- what pages and the API show ----------------------------------------------------------------------


@dataclass(slots=True)
class CommentView:
    """One comment as this viewer sees it, with what the viewer may do to it."""

    public_id: str
    author_name: str
    body: str  # "" once deleted
    created_at: datetime
    edited_at: datetime | None
    is_reply: bool
    is_official: bool = False
    is_pinned: bool = False
    is_deleted: bool = False
    is_hidden: bool = False  # only ever true for staff viewers
    is_mine: bool = False
    can_edit: bool = False
    can_delete: bool = False
    can_reply: bool = False
    can_report: bool = False
    can_moderate: bool = False
    can_pin: bool = False
    reported: bool = False  # the viewer has reported it
    open_reports: int = 0  # staff only
    replies: list[CommentView] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"comment-{self.public_id}"


@dataclass(slots=True)
class Discussion:
    """One page of an item's comments for one viewer: the pinned thread first (on every page), then up to
    `PAGE_SIZE` threads in order, each with all its replies.

    `count` counts the comments over all pages. Pages are numbered for the item page (`page` of `pages`);
    the API pages with `next_cursor` instead. `form` and `errors` carry what a refused comment form held,
    so the page can show it again.
    """

    item: Item
    threads: list[CommentView]
    count: int
    can_comment: bool
    is_staff: bool
    page: int = 1
    pages: int = 1
    next_cursor: str | None = None  # `after` for the next page, when there is one
    form: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    max_body: int = MAX_BODY

    @property
    def pinned(self) -> CommentView | None:
        return self.threads[0] if self.threads and self.threads[0].is_pinned else None

    @property
    def paged(self) -> list[CommentView]:
        """The page's threads without the pinned one."""
        return self.threads[1:] if self.pinned is not None else self.threads


def _author_name(author: User | None) -> str:
    """The name shown publicly: never any part of an email address (User.name falls back to one)."""
    if author is None or author.deleted_at is not None:
        return DELETED_NAME
    if author.display_name.strip():
        return author.display_name
    return "Product team" if author.role in STAFF_ROLES else "Customer"


def can_comment(viewer: Viewer) -> bool:
    user = viewer.user
    return viewer.is_authenticated and user is not None and not user.is_placeholder


def _ensure_writer(viewer: Viewer, message: str) -> User:
    """The viewer's account, once it may write comments."""
    if viewer.user is None:
        raise NotAuthenticated(message)
    if not can_comment(viewer):
        raise Forbidden("This account cannot write comments.")
    return viewer.user


def _editable(comment: Comment, now: datetime) -> bool:
    return comment.deleted_at is None and now - comment.created_at <= timedelta(minutes=EDIT_MINUTES)


def _shown(viewer: Viewer, comment: type[Comment] = Comment) -> list[Any]:
    """Hidden comments exist for staff only."""
    return [] if viewer.is_staff else [comment.hidden_at.is_(None)]


class _Aliases(threading.local):
    """The aliases the item page's discussion queries use, made once per thread: making them per request, and their
    columns' proxies as they are first touched, was most of a cold item page's CPU (the statements are cached by
    SQLAlchemy anyway). Not one set for all threads: an alias fills in its adapted columns lazily, and two threads
    doing that at once for the first time could each build its own column where the other's was expected, and the
    page failed (`NoSuchColumnError` for 'author.id' among many first requests at once: tests/voting/
    test_concurrency.py, tests/discussion/test_service.py)."""

    def __init__(self) -> None:
        self.pin = aliased(Comment, name="pin")
        self.reply = aliased(Comment, name="reply")
        self.parent = aliased(Comment, name="parent")
        self.top = aliased(Comment, name="top")
        self.author = aliased(User, name="author")


_ALIASES = _Aliases()


def _pinned_id(item_id: int) -> Any:
    """The id of the item's pinned thread, as a subquery. Only the most recent pin counts, should two ever
    have been stored."""
    pin = _ALIASES.pin
    return select(func.max(pin.id)).where(
        pin.item_id == item_id, pin.parent_id.is_(None), pin.is_pinned.is_(True), pin.deleted_at.is_(None),
        pin.hidden_at.is_(None)).scalar_subquery()


def _paged_threads(viewer: Viewer, item_id: int, pinned_id: int | None, top: type[Comment]) -> list[Any]:
    """What makes `top` a thread that is paged: it starts a thread the viewer sees, is not the pinned one
    (shown on every page), and is not deleted, unless a live reply keeps it as a placeholder."""
    reply = _ALIASES.reply
    kept = exists().where(reply.parent_id == top.id, reply.deleted_at.is_(None), *_shown(viewer, reply))
    return [top.item_id == item_id, top.parent_id.is_(None), *_shown(viewer, top),
            *([top.id != pinned_id] if pinned_id is not None else []), or_(top.deleted_at.is_(None), kept)]


def _after(top: type[Comment], created_at: datetime, comment_id: int) -> Any:
    """`top` comes after the comment (created_at, id) in the discussion's order."""
    return or_(top.created_at > created_at, and_(top.created_at == created_at, top.id > comment_id))


def list_comments(session: Session, *, viewer: Viewer, item: Item, page: int = 1, after: str | None = None,
                  per_page: int = PAGE_SIZE) -> Discussion:
    """One page of the item's discussion as `viewer` sees it, oldest thread first.

    `page` counts from 1 (past the last page gives the last page); `after`, the public id of the last thread
    of the previous page (`next_cursor`), pages by position instead, so threads deleted or added meanwhile
    neither repeat nor go missing. A thread comes whole: its replies are not paged. The caller has checked
    that the viewer may see the item. Two queries however long the discussion, the counts then the page
    (and with `after`, the cursor's place).
    """
    parent = _ALIASES.parent
    live = Comment.deleted_at.is_(None)
    is_reply = Comment.parent_id.is_not(None)
    counted = (
        select(func.count().filter(Comment.parent_id.is_(None), live),
               func.count().filter(is_reply, live),
               # deleted thread starts that a live reply keeps on the page
               func.count(distinct(Comment.parent_id)).filter(is_reply, live, parent.deleted_at.is_not(None)),
               _pinned_id(item.id))
        .select_from(Comment).outerjoin(parent, parent.id == Comment.parent_id)
        .where(Comment.item_id == item.id, *_shown(viewer))
    )
    if not viewer.is_staff:  # the replies of a hidden thread go with it
        counted = counted.where(or_(Comment.parent_id.is_(None), parent.hidden_at.is_(None)))
    live_tops, live_replies, kept_tops, pinned_id = session.execute(counted).one()
    paged_total = live_tops - (1 if pinned_id is not None else 0) + kept_tops
    pages = pages_of(paged_total, per_page)
    page = min(max(page, 1), pages)

    top = _ALIASES.top
    page_ids = select(top.id).where(*_paged_threads(viewer, item.id, pinned_id, top)).order_by(top.created_at, top.id)
    if after is not None:
        cursor = session.execute(select(Comment.created_at, Comment.id).where(
            Comment.public_id == after, Comment.item_id == item.id, Comment.parent_id.is_(None))).first()
        if cursor is None:
            raise FormInvalid({"after": "Not a cursor of this item's comments: use `next_cursor` of the "
                                        "previous page."})
        # One thread more than the page tells whether another page follows.
        page_ids = page_ids.where(_after(top, *cursor)).limit(per_page + 1)
    else:
        page_ids = page_ids.offset((page - 1) * per_page).limit(per_page)
    on_page = page_ids.cte("page_threads")
    threads_wanted = [Comment.id.in_(select(on_page.c.id)), Comment.parent_id.in_(select(on_page.c.id))]
    if pinned_id is not None:
        threads_wanted += [Comment.id == pinned_id, Comment.parent_id == pinned_id]
    me = viewer.user.id if viewer.is_authenticated and viewer.user is not None else None
    # What the viewer needs to know of the reports, in the same query: staff the open ones, a customer
    # whether they reported it.
    if viewer.is_staff:
        reports: Any = select(func.count()).where(CommentReport.comment_id == Comment.id,
                                                  CommentReport.resolved_at.is_(None)).scalar_subquery()
    elif me is not None:
        reports = exists().where(CommentReport.comment_id == Comment.id, CommentReport.reporter_id == me)
    else:
        reports = literal(0)
    author = _ALIASES.author
    rows = session.execute(
        select(Comment, author, reports)
        .outerjoin(author, author.id == Comment.author_id)
        .where(Comment.item_id == item.id, *_shown(viewer), or_(*threads_wanted),
               or_(Comment.parent_id.is_(None), live))  # deleted replies disappear
        .order_by(Comment.created_at, Comment.id)
    ).all()
    open_reports = {c.id: int(n) for c, _, n in rows if n and viewer.is_staff}
    reported = {c.id for c, _, n in rows if n and not viewer.is_staff}

    now = utcnow()
    writer = can_comment(viewer)

    def view(comment: Comment, who: User | None) -> CommentView:
        deleted = comment.deleted_at is not None
        mine = me is not None and comment.author_id == me
        return CommentView(
            public_id=comment.public_id,
            author_name="" if deleted else _author_name(who),
            body="" if deleted else comment.body,
            created_at=comment.created_at,
            edited_at=comment.edited_at,
            is_reply=comment.parent_id is not None,
            is_official=comment.is_official and not deleted,
            is_pinned=comment.id == pinned_id,
            is_deleted=deleted,
            is_hidden=comment.hidden_at is not None,
            is_mine=mine and not deleted,
            can_edit=mine and _editable(comment, now),
            can_delete=mine and not deleted,
            can_reply=writer and comment.parent_id is None,
            can_report=writer and not viewer.is_staff and not mine and not deleted,
            can_moderate=viewer.is_staff and not deleted,
            can_pin=viewer.is_staff and comment.is_official and comment.parent_id is None and not deleted
            and comment.hidden_at is None,
            reported=comment.id in reported,
            open_reports=open_reports.get(comment.id, 0),
        )

    tops: dict[int, CommentView] = {}
    order: list[int] = []
    for comment, who, _ in rows:
        if comment.parent_id is None:
            tops[comment.id] = view(comment, who)
            order.append(comment.id)
    for comment, who, _ in rows:
        if comment.parent_id is not None and comment.parent_id in tops:
            tops[comment.parent_id].replies.append(view(comment, who))
    threads = [tops[i] for i in order if not tops[i].is_deleted or tops[i].replies]
    threads.sort(key=lambda t: not t.is_pinned)  # stable: the pinned thread first, the rest in order
    next_cursor = None
    paged = len(threads) - (1 if threads and threads[0].is_pinned else 0)
    if after is not None and paged > per_page:
        threads.pop()  # the one thread more that was asked for
        next_cursor = threads[-1].public_id
    elif after is None and page < pages:
        next_cursor = threads[-1].public_id
    return Discussion(item=item, threads=threads, count=live_tops + live_replies, can_comment=writer,
                      is_staff=viewer.is_staff, page=page, pages=pages, next_cursor=next_cursor)


def page_of(session: Session, *, viewer: Viewer, comment: Comment, per_page: int = PAGE_SIZE) -> int:
    """The page of the item's discussion on which `viewer` finds the comment (a reply: its thread)."""
    thread = comment if comment.parent_id is None else session.get(Comment, comment.parent_id)
    assert thread is not None
    pinned_id = session.scalar(select(_pinned_id(thread.item_id)))
    if thread.id == pinned_id:
        return 1
    top = aliased(Comment)
    before = session.scalar(select(func.count()).select_from(top).where(
        *_paged_threads(viewer, thread.item_id, pinned_id, top),
        or_(top.created_at < thread.created_at, and_(top.created_at == thread.created_at, top.id < thread.id))))
    return (before or 0) // per_page + 1


@dataclass(slots=True)
class Target:
    """A comment the viewer may act on, with its (visible) item."""

    comment: Comment
    item: Item


def get_comment(session: Session, *, viewer: Viewer, public_id: str) -> Target:
    """A live comment on an item the viewer may see; hidden ones only for staff. NotFound otherwise."""
    if not public_id or len(public_id) > 16 or not public_id.isalnum():
        raise NotFound()
    stmt = select(Comment).where(Comment.public_id == public_id, Comment.deleted_at.is_(None))
    if not viewer.is_staff:
        stmt = stmt.where(Comment.hidden_at.is_(None))
    comment = session.scalar(stmt)
    item = None
    if comment is not None:
        item = session.scalar(visible_items(viewer).where(Item.id == comment.item_id))
    if comment is None or item is None:
        raise NotFound()
    return Target(comment=comment, item=item)


# --- writing ----------------------------------------------------------------------------------------------


_BODY_EMPTY = "Write something before posting your comment."
_BODY_TOO_LONG = "A comment can be at most {limit:,} characters; this one has {length:,}. Please shorten it."
_Body = Annotated[str, text(MAX_BODY, required=_BODY_EMPTY, newlines=True, too_long=_BODY_TOO_LONG)]


class CommentCreate(FormModel):
    """A comment, or a reply to the comment `parent` (its public id), on an item's page."""

    body: _Body = ""
    parent: str = ""  # any id that is not a comment of the item is refused by create_comment (NotFound)


class CommentEdit(FormModel):
    """The author's new text for their comment (/comments/<id>/edit)."""

    body: _Body = ""


class CommentReportCreate(FormModel):
    """A customer's report of a comment (/comments/<id>/report), with an optional reason."""

    reason: Annotated[str, text(MAX_REASON, collapse=True,
                                too_long="A reason can be at most {limit} characters; this one has {length}.")] = ""


def clean_body(body: str) -> str:
    """The text as stored, or FormInvalid with a message a person can act on (CommentEdit's rules)."""
    return validate_form(CommentEdit, {"body": body}).body


def _new_public_id(session: Session) -> str:
    while True:
        candidate = "".join(secrets.choice(_PUBLIC_ID_ALPHABET) for _ in range(10))
        if session.scalar(select(Comment.id).where(Comment.public_id == candidate)) is None:
            return candidate


def create_comment(session: Session, *, viewer: Viewer, item: Item, body: str,
                   parent_public_id: str | None = None) -> Comment:
    """Post a comment (or a reply) on an item the caller checked the viewer may see; follows the item.

    `parent_public_id` may name any comment of the item: a reply to a reply joins the top comment's thread.
    """
    user = _ensure_writer(viewer, "Please sign in to comment.")
    text = clean_body(body)
    roadmap.lock_for_activity(session, item)  # not left behind on an item a merge is moving away from
    parent_id = None
    if parent_public_id:
        parent = get_comment(session, viewer=viewer, public_id=parent_public_id).comment
        if parent.item_id != item.id:
            raise NotFound()
        parent_id = parent.parent_id or parent.id
    comment = Comment(public_id=_new_public_id(session), item_id=item.id, author_id=user.id, parent_id=parent_id,
                      body=text, is_official=viewer.is_staff, created_at=utcnow())
    session.add(comment)
    session.flush()
    voting.follow(session, item=item, user=user)
    if webhooks.wants(session, "comment.created"):
        webhooks.emit(session, "comment.created", {"item": webhooks.item_data(item), "comment": {
            "id": comment.public_id, "body": text, "official": comment.is_official, "author": webhooks.person(user),
            "reply_to": parent_public_id or None}})
    return comment


def ensure_editable(*, viewer: Viewer, comment: Comment) -> None:
    """Forbidden unless the viewer wrote the comment less than EDIT_MINUTES ago."""
    if viewer.user is None or comment.author_id != viewer.user.id:
        raise Forbidden("Only the author can edit a comment.")
    if not _editable(comment, utcnow()):
        raise Forbidden(f"Comments can be edited for {EDIT_MINUTES} minutes after posting; this one can no "
                        "longer be changed. You can still delete it.")


def edit_comment(session: Session, *, viewer: Viewer, comment: Comment, body: str) -> Comment:
    """The author changes the text within EDIT_MINUTES of posting."""
    ensure_editable(viewer=viewer, comment=comment)
    text = clean_body(body)
    if text != comment.body:
        comment.body = text
        comment.edited_at = utcnow()
        session.flush()
    return comment


def delete_comment(session: Session, *, viewer: Viewer, comment: Comment) -> None:
    """The author deletes their comment: its text is erased, its open reports closed."""
    if viewer.user is None or comment.author_id != viewer.user.id:
        raise Forbidden("Only the author can delete a comment.")
    now = utcnow()
    comment.deleted_at = now
    comment.body = ""
    comment.is_pinned = False
    session.execute(update(CommentReport).where(CommentReport.comment_id == comment.id,
                                                CommentReport.resolved_at.is_(None)).values(resolved_at=now))
    session.flush()


# --- staff ------------------------------------------------------------------------------------------------


def _label(comment: Comment) -> str:
    return plain_text(comment.body, 80)


def pin_comment(session: Session, *, actor: User, comment: Comment) -> None:
    """Pin an official top-level comment to the top of its item; any other pin on the item goes."""
    if not comment.is_official or comment.parent_id is not None or comment.hidden_at is not None:
        raise Conflict("Only a visible official comment that starts a thread can be pinned.")
    # One pin per item even when two staff pin at once: the item row serialises them (SQLite's
    # write transactions already are).
    session.execute(select(Item.id).where(Item.id == comment.item_id).with_for_update())
    session.execute(update(Comment).where(Comment.item_id == comment.item_id, Comment.id != comment.id,
                                          Comment.is_pinned.is_(True)).values(is_pinned=False))
    if not comment.is_pinned:
        comment.is_pinned = True
        audit.record(session, actor=actor, action=AuditAction.comment_pinned, entity=comment, entity_type="comment",
                     label=_label(comment))
    session.flush()


def unpin_comment(session: Session, *, actor: User, comment: Comment) -> None:
    if comment.is_pinned:
        comment.is_pinned = False
        audit.record(session, actor=actor, action=AuditAction.comment_unpinned, entity=comment, entity_type="comment",
                     label=_label(comment))
        session.flush()


def hide_comment(session: Session, *, actor: User, comment: Comment) -> None:
    """Hide from everyone but staff; closes the comment's open reports and drops its pin."""
    now = utcnow()
    if comment.hidden_at is None:
        comment.hidden_at = now
        comment.hidden_by_id = actor.id
        comment.is_pinned = False
        audit.record(session, actor=actor, action=AuditAction.comment_hidden, entity=comment, entity_type="comment",
                     label=_label(comment))
    session.execute(update(CommentReport).where(CommentReport.comment_id == comment.id,
                                                CommentReport.resolved_at.is_(None)).values(resolved_at=now))
    session.flush()


def restore_comment(session: Session, *, actor: User, comment: Comment) -> None:
    if comment.hidden_at is not None:
        comment.hidden_at = None
        comment.hidden_by_id = None
        audit.record(session, actor=actor, action=AuditAction.comment_restored, entity=comment, entity_type="comment",
                     label=_label(comment))
        session.flush()


def dismiss_reports(session: Session, *, actor: User, comment: Comment) -> int:
    """Close the comment's open reports without hiding it; returns how many were closed."""
    closed = cast(CursorResult[Any], session.execute(
        update(CommentReport).where(CommentReport.comment_id == comment.id, CommentReport.resolved_at.is_(None))
        .values(resolved_at=utcnow())
    )).rowcount
    if closed:
        audit.record(session, actor=actor, action=AuditAction.comment_reports_dismissed, entity=comment,
                     entity_type="comment", label=_label(comment), changes={"open_reports": [closed, 0]})
    session.flush()
    return closed or 0


# --- reports ------------------------------------------------------------------------------------------


def clean_reason(reason: str) -> str:
    """The reason as stored (every run of spaces one), or FormInvalid (CommentReportCreate's rules)."""
    return validate_form(CommentReportCreate, {"reason": reason}).reason


def ensure_reportable(*, viewer: Viewer, comment: Comment) -> None:
    """Customers report other people's comments; staff hide them instead."""
    user = _ensure_writer(viewer, "Please sign in to report a comment.")
    if viewer.is_staff:
        raise Forbidden("Staff do not report comments: hide it, or leave it, from the item page.")
    if comment.author_id == user.id:
        raise Forbidden("You cannot report your own comment; you can edit or delete it instead.")


def has_reported(session: Session, *, viewer: Viewer, comment: Comment) -> bool:
    if viewer.user is None:
        return False
    return session.scalar(select(CommentReport.id).where(CommentReport.comment_id == comment.id,
                                                         CommentReport.reporter_id == viewer.user.id)) is not None


def report_comment(session: Session, *, viewer: Viewer, comment: Comment, reason: str = "") -> bool:
    """A customer flags a comment for the staff. Once per person: False when they had already reported it."""
    ensure_reportable(viewer=viewer, comment=comment)
    user = viewer.user
    assert user is not None
    text = clean_reason(reason)
    insert = insert_with_conflicts(session.get_bind().dialect.name, CommentReport)
    created = session.execute(
        insert.values(comment_id=comment.id, reporter_id=user.id, reason=text, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["comment_id", "reporter_id"])
        .returning(CommentReport.id)
    ).first()
    return created is not None


@dataclass(slots=True)
class ReportEntry:
    reporter_name: str
    reason: str
    created_at: datetime


@dataclass(slots=True)
class Flagged:
    """A comment on the moderation page, with its open reports (if any)."""

    public_id: str
    body: str
    author_name: str
    created_at: datetime
    item_title: str
    item_path: str
    is_hidden: bool
    hidden_at: datetime | None = None
    hidden_by: str = ""
    reports: list[ReportEntry] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The comment's permalink: it leads to the page of the item's discussion that shows it."""
        return f"/comments/{self.public_id}"


def list_open_reports(session: Session, *, limit: int = 100) -> list[Flagged]:
    """Comments with open reports, the most recently reported first (staff only)."""
    latest = func.max(CommentReport.created_at)
    flagged = (
        select(CommentReport.comment_id, latest.label("latest"))
        .where(CommentReport.resolved_at.is_(None))
        .group_by(CommentReport.comment_id)
        .order_by(latest.desc()).limit(limit)
        .subquery()
    )
    author = aliased(User)
    rows = session.execute(
        select(Comment, Item.title, Item.public_id, Item.slug, author)
        .join(flagged, flagged.c.comment_id == Comment.id)
        .join(Item, Item.id == Comment.item_id)
        .outerjoin(author, author.id == Comment.author_id)
        .order_by(flagged.c.latest.desc(), Comment.id)
    ).all()
    entries = {c.id: _flagged(c, title, pid, slug, who) for c, title, pid, slug, who in rows}
    if entries:
        reporter = aliased(User)
        for comment_id, report, who in session.execute(
            select(CommentReport.comment_id, CommentReport, reporter)
            .outerjoin(reporter, reporter.id == CommentReport.reporter_id)
            .where(CommentReport.comment_id.in_(entries), CommentReport.resolved_at.is_(None))
            .order_by(CommentReport.created_at, CommentReport.id)
        ):
            entries[comment_id].reports.append(
                ReportEntry(reporter_name=_author_name(who), reason=report.reason, created_at=report.created_at))
    return list(entries.values())


def list_hidden_comments(session: Session, *, limit: int = 50) -> list[Flagged]:
    """The most recently hidden comments, for staff to restore."""
    author, moderator = aliased(User), aliased(User)
    rows = session.execute(
        select(Comment, Item.title, Item.public_id, Item.slug, author, moderator)
        .join(Item, Item.id == Comment.item_id)
        .outerjoin(author, author.id == Comment.author_id)
        .outerjoin(moderator, moderator.id == Comment.hidden_by_id)
        .where(Comment.hidden_at.is_not(None), Comment.deleted_at.is_(None))
        .order_by(Comment.hidden_at.desc(), Comment.id.desc()).limit(limit)
    ).all()
    out = []
    for c, title, pid, slug, who, mod in rows:
        entry = _flagged(c, title, pid, slug, who)
        entry.hidden_by = _author_name(mod) if mod is not None else ""
        out.append(entry)
    return out


def list_comments_of_person(session: Session, *, user: User, limit: int = 100) -> tuple[list[tuple[Comment, Item]], int]:
    """For staff: the person's comments (hidden ones too, not deleted ones), newest first, with their items;
    and how many there are in all."""
    mine = (Comment.author_id == user.id) & Comment.deleted_at.is_(None)
    total = session.scalar(select(func.count()).select_from(Comment).where(mine)) or 0
    rows = session.execute(select(Comment, Item).join(Item, Item.id == Comment.item_id).where(mine)
                           .order_by(Comment.created_at.desc(), Comment.id.desc()).limit(limit))
    return [(comment, item) for comment, item in rows], total


def count_open_reports(session: Session) -> int:
    return session.scalar(select(func.count(func.distinct(CommentReport.comment_id)))
                          .where(CommentReport.resolved_at.is_(None))) or 0


def get_comment_for_staff(session: Session, *, public_id: str) -> Comment:
    """Any live comment, whatever its item (staff see every item)."""
    comment = session.scalar(select(Comment).where(Comment.public_id == public_id, Comment.deleted_at.is_(None)))
    if comment is None:
        raise NotFound()
    return comment


def _flagged(comment: Comment, title: str, item_public_id: str, slug: str, who: User | None) -> Flagged:
    return Flagged(public_id=comment.public_id, body=comment.body, author_name=_author_name(who),
                   created_at=comment.created_at, item_title=title, item_path=item_path(item_public_id, slug),
                   is_hidden=comment.hidden_at is not None, hidden_at=comment.hidden_at)


# --- merging: comments move to another item, and back -----------------------------------------------------
# app/roadmap/merge.py decides whether B's comments move to A (who may read them there) and calls these with
# both items' rows locked; the record it keeps lets `move_comments_back` put exactly those back.


def count_comments(session: Session, *, item: Item) -> int:
    """The item's comments that are not deleted (hidden ones included)."""
    return session.scalar(select(func.count()).select_from(Comment)
                          .where(Comment.item_id == item.id, Comment.deleted_at.is_(None))) or 0


def count_readable_comments(session: Session, *, item: Item) -> int:
    """Comments someone other than staff could read if they could see the item."""
    return session.scalar(select(func.count()).select_from(Comment).where(
        Comment.item_id == item.id, Comment.deleted_at.is_(None), Comment.hidden_at.is_(None))) or 0


def comment_ids_of(session: Session, *, item: Item) -> list[int]:
    """Every comment row of the item (replies and deleted ones included), by id."""
    return sorted(session.scalars(select(Comment.id).where(Comment.item_id == item.id)))


def move_comments_to_item(session: Session, *, source: Item, target: Item) -> dict[str, Any]:
    """All of source's comments (replies included) move to target; a pinned one is unpinned when target has
    a pin of its own (one pin per item: target's stays on top). Returns `moved_comments`, `pinned_comments`
    and `unpinned_comments` (ids)."""
    pinned = sorted(session.scalars(select(Comment.id).where(Comment.item_id == source.id,
                                                             Comment.is_pinned.is_(True))))
    target_has_pin = session.scalar(select(Comment.id).where(Comment.item_id == target.id,
                                                             Comment.is_pinned.is_(True)).limit(1)) is not None
    unpinned: list[int] = []
    if pinned and target_has_pin:
        session.execute(update(Comment).where(Comment.id.in_(pinned)).values(is_pinned=False)
                        .execution_options(synchronize_session=False))
        unpinned = pinned
    moved = list(session.scalars(
        update(Comment).where(Comment.item_id == source.id).values(item_id=target.id)
        .returning(Comment.id).execution_options(synchronize_session=False)
    ))
    return {"moved_comments": sorted(moved), "pinned_comments": pinned, "unpinned_comments": unpinned}


def move_comments_back(session: Session, record: dict[str, Any], *, source: Item, target: Item) -> None:
    """Undo `move_comments_to_item`: the moved comments still on target go back, with the replies written
    on target since to their threads; source's pin comes back unless that comment was hidden or deleted."""
    for ids in in_chunks(record.get("moved_comments", [])):
        session.execute(update(Comment)
                        .where(Comment.item_id == target.id, or_(Comment.id.in_(ids), Comment.parent_id.in_(ids)))
                        .values(item_id=source.id).execution_options(synchronize_session=False))
    pinned = record.get("pinned_comments", [])
    if pinned:
        session.execute(update(Comment)
                        .where(Comment.id.in_(pinned), Comment.item_id == source.id, Comment.hidden_at.is_(None),
                               Comment.deleted_at.is_(None))
                        .values(is_pinned=True).execution_options(synchronize_session=False))


def commenters_since(session: Session, *, item: Item, user_ids: list[int], since: datetime) -> set[int]:
    """Of these people, those who commented on the item after `since`."""
    found: set[int] = set()
    for users in in_chunks(user_ids):
        found.update(session.scalars(select(Comment.author_id).where(
            Comment.item_id == item.id, Comment.author_id.in_(users), Comment.created_at > since)))
    return {user for user in found if user is not None}
