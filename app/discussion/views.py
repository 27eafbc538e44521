"""Comment pages and forms. Plain forms and 303 redirects back to the item at #comment-<id> (on the page of the
discussion that shows it), no JavaScript needed.

The item page itself is composed in app/roadmap/pages.py, which lists the `comments` it shows. A refused comment
(empty, too long: the rules of the service's CommentCreate, CommentEdit and CommentReportCreate, read with
`read_values`) re-renders that same page (`render_item_page(..., comment_form=CommentForm(...))`) with status 422
and what was typed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.accounts.viewer import Viewer
from app.accounts.views import client_ip
from app.db import utcnow
from app.deps import CurrentUser, CurrentViewer, DbSession
from app.discussion import service as discussion
from app.discussion.models import Comment
from app.errors import FormInvalid, NotAuthenticated, RateLimited
from app.forms import read_values
from app.notify import service as notify
from app.roadmap import service as roadmap
from app.roadmap.models import Item
from app.roadmap.pages import CommentForm, render_item_page
from app.security import verify_csrf
from app.web import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])

# Transport bounds only: the values are read into the service's form models, whose rules give the messages.
# FastAPI reads a form's fields before the dependencies run, so the body is in before the request's
# transaction begins (on SQLite a write request holds the write lock from its first statement).
Body = Annotated[str, Form(max_length=100_000)]
Reason = Annotated[str, Form(max_length=10_000)]
ParentId = Annotated[str, Form(max_length=40)]
NotifyChoice = Annotated[str, Form(alias="notify", max_length=10)]

def page_url(item: Item, page: int, anchor: str = "comments") -> str:
    """The item page showing that page of its discussion, at `#anchor`."""
    return f"{item.path}{f'?page={page}' if page > 1 else ''}#{anchor}"


def _comment_url(session: Session, viewer: Viewer, item: Item, comment: Comment) -> str:
    page = discussion.page_of(session, viewer=viewer, comment=comment)
    return page_url(item, page, f"comment-{comment.public_id}")


def _target_url(session: Session, viewer: Viewer, target: discussion.Target) -> str:
    return _comment_url(session, viewer, target.item, target.comment)


def _limit(request: Request, viewer: Viewer) -> None:
    assert viewer.user is not None  # the caller has checked discussion.can_comment
    settings = request.app.state.settings
    limiter = request.app.state.limiter
    limiter.hit(settings.comment_rate_limit, f"comment:user:{viewer.user.id}")
    limiter.hit(settings.comment_ip_rate_limit, f"comment:ip:{client_ip(request)}")


async def _item_page_again(request: Request, session: Session, viewer: Viewer, item: Item,
                           form: dict[str, str], errors: dict[str, str], *,
                           limited: RateLimited | None = None) -> Response:
    """The item page as its own route renders it, with the refused comment form, status 422; over the rate limit,
    429 with the limit's notice in the form's place for messages, what was typed kept."""
    if limited is None:
        return render_item_page(request, session, viewer, item, comment_form=CommentForm(form, errors),
                                status_code=422)
    notice = f"{limited.detail} What you typed is still here."
    return render_item_page(request, session, viewer, item, comment_form=CommentForm(form, {"body": notice}),
                            status_code=429, headers=dict(limited.headers))


@router.post("/items/{public_id}/comments", response_class=HTMLResponse)
async def post_comment(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str,
                       body: Body = "", parent: ParentId = "", notify_choice: NotifyChoice = "yes") -> Response:
    form = read_values(discussion.CommentCreate, {"body": body, "parent": parent})
    item = roadmap.get_visible_item(session, viewer, public_id)
    if not discussion.can_comment(viewer):
        return redirect(request, f"/login?next={quote(item.path + '#comments')}",
                        flash="Please sign in to comment.", kind="info")
    try:
        data = form.valid()
        _limit(request, viewer)  # after the form's own checks: an empty or too long comment spends no budget
        comment = discussion.create_comment(session, viewer=viewer, item=item, body=data.body,
                                            parent_public_id=data.parent or None)
    except FormInvalid as exc:
        return await _item_page_again(request, session, viewer, item, form.typed, exc.errors)
    except RateLimited as exc:
        return await _item_page_again(request, session, viewer, item, form.typed, {}, limited=exc)
    flash = "Your reply is posted." if comment.parent_id else "Your comment is posted."
    flash += _tell(session, viewer, item, comment, parent=data.parent, notify_choice=notify_choice)
    return redirect(request, _comment_url(session, viewer, item, comment), flash=flash)


def _tell(session: Session, viewer: Viewer, item: Item, comment: Comment, *, parent: str, notify_choice: str) -> str:
    """Who hears of the comment: staff answer officially (the followers, unless "Don't notify"); a reply
    reaches the authors of the comment it answers and of its thread's first comment. "Don't notify" only
    silences the broadcast to the followers: the author of a comment staff reply to still hears of the reply
    (as a reply, unless they opted out), since it is addressed to them."""
    assert viewer.user is not None
    if viewer.is_staff and notify_choice != "no":
        count = notify.count_answer_audience(session, item=item, actor=viewer.user)
        notify.announce_answer(session, comment=comment, actor=viewer.user)
        return f" {count} {'person is' if count == 1 else 'people are'} told." if count else ""
    if comment.parent_id is not None:
        replied = [comment.parent_id]
        if parent:
            replied.append(discussion.get_comment(session, viewer=viewer, public_id=parent).comment.id)
        notify.announce_reply(session, comment=comment, replied_to=replied, actor=viewer.user)
        if viewer.is_staff:
            return " The followers are not told; the comment’s author hears of your reply."
    return " Nobody is told by email." if viewer.is_staff else ""


@router.get("/comments/{public_id}", response_class=HTMLResponse)
async def permalink(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str) -> Response:
    """A comment's lasting address: the item page on the page of the discussion that shows it."""
    target = discussion.get_comment(session, viewer=viewer, public_id=public_id)
    return redirect(request, _target_url(session, viewer, target))


# --- the author ---------------------------------------------------------------------------------------


def _edit_page(request: Request, target: discussion.Target, *, status_code: int = 200,
               form: dict[str, str] | None = None, errors: dict[str, str] | None = None) -> Response:
    left = target.comment.created_at + timedelta(minutes=discussion.EDIT_MINUTES) - utcnow()
    return render(request, "discussion/edit.html", {
        "item": target.item, "comment": target.comment, "minutes_left": max(1, int(left.total_seconds() // 60) + 1),
        "max_body": discussion.MAX_BODY, "form": form or {"body": target.comment.body}, "errors": errors or {},
    }, status_code=status_code)


@router.get("/comments/{public_id}/edit", response_class=HTMLResponse)
async def edit_form(request: Request, session: DbSession, viewer: CurrentViewer, user: CurrentUser,
                    public_id: str) -> Response:
    target = discussion.get_comment(session, viewer=viewer, public_id=public_id)
    discussion.ensure_editable(viewer=viewer, comment=target.comment)
    return _edit_page(request, target)


@router.post("/comments/{public_id}/edit", response_class=HTMLResponse)
async def edit(request: Request, session: DbSession, viewer: CurrentViewer, user: CurrentUser, public_id: str,
               body: Body = "") -> Response:
    form = read_values(discussion.CommentEdit, {"body": body})
    target = discussion.get_comment(session, viewer=viewer, public_id=public_id)
    discussion.ensure_editable(viewer=viewer, comment=target.comment)  # before what was typed is looked at
    try:
        discussion.edit_comment(session, viewer=viewer, comment=target.comment, body=form.valid().body)
    except FormInvalid as exc:
        return _edit_page(request, target, status_code=422, form=form.typed, errors=exc.errors)
    return redirect(request, _target_url(session, viewer, target), flash="Your comment is saved.")


@router.post("/comments/{public_id}/delete", response_class=HTMLResponse)
async def delete(request: Request, session: DbSession, viewer: CurrentViewer, user: CurrentUser,
                 public_id: str) -> Response:
    target = discussion.get_comment(session, viewer=viewer, public_id=public_id)
    page = discussion.page_of(session, viewer=viewer, comment=target.comment)
    discussion.delete_comment(session, viewer=viewer, comment=target.comment)
    return redirect(request, page_url(target.item, page), flash="Your comment is deleted.")


# --- reports ----------------------------------------------------------------------------------------


def _report_page(request: Request, target: discussion.Target, *, status_code: int = 200,
                 form: dict[str, str] | None = None, errors: dict[str, str] | None = None) -> Response:
    return render(request, "discussion/report.html", {
        "item": target.item, "comment": target.comment, "max_reason": discussion.MAX_REASON,
        "form": form or {}, "errors": errors or {},
    }, status_code=status_code)


@router.get("/comments/{public_id}/report", response_class=HTMLResponse)
async def report_form(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str) -> Response:
    if viewer.user is None:
        raise NotAuthenticated("Please sign in to report a comment.")
    target = discussion.get_comment(session, viewer=viewer, public_id=public_id)
    discussion.ensure_reportable(viewer=viewer, comment=target.comment)
    if discussion.has_reported(session, viewer=viewer, comment=target.comment):
        return redirect(request, _target_url(session, viewer, target),
                        flash="You have already reported this comment; the team will look at it.", kind="info")
    return _report_page(request, target)


@router.post("/comments/{public_id}/report", response_class=HTMLResponse)
async def report(request: Request, session: DbSession, viewer: CurrentViewer, user: CurrentUser, public_id: str,
                 reason: Reason = "") -> Response:
    form = read_values(discussion.CommentReportCreate, {"reason": reason})
    target = discussion.get_comment(session, viewer=viewer, public_id=public_id)
    discussion.ensure_reportable(viewer=viewer, comment=target.comment)  # before what was typed is looked at
    try:
        created = discussion.report_comment(session, viewer=viewer, comment=target.comment,
                                            reason=form.valid().reason)
    except FormInvalid as exc:
        return _report_page(request, target, status_code=422, form=form.typed, errors=exc.errors)
    if not created:
        return redirect(request, _target_url(session, viewer, target),
                        flash="You have already reported this comment; the team will look at it.", kind="info")
    return redirect(request, _target_url(session, viewer, target),
                    flash="Thank you. The team will look at this comment.")
