"""Comment moderation: open reports (hide the comment or dismiss the reports) and recently hidden comments.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import DbSession, StaffUser
from app.discussion import service as discussion
from app.web import redirect, render

router = APIRouter(include_in_schema=False)


@router.get("/moderation", response_class=HTMLResponse)
async def moderation(request: Request, session: DbSession, staff: StaffUser) -> Response:
    return render(request, "admin/moderation.html", {
        "reported": discussion.list_open_reports(session),
        "hidden": discussion.list_hidden_comments(session),
    })


@router.post("/moderation/{public_id}/hide", response_class=HTMLResponse)
async def hide(request: Request, session: DbSession, staff: StaffUser, public_id: str) -> Response:
    comment = discussion.get_comment_for_staff(session, public_id=public_id)
    discussion.hide_comment(session, actor=staff, comment=comment)
    return redirect(request, "/admin/moderation", flash="Comment hidden and its reports closed.")


@router.post("/moderation/{public_id}/restore", response_class=HTMLResponse)
async def restore(request: Request, session: DbSession, staff: StaffUser, public_id: str) -> Response:
    comment = discussion.get_comment_for_staff(session, public_id=public_id)
    discussion.restore_comment(session, actor=staff, comment=comment)
    return redirect(request, "/admin/moderation", flash="Comment restored. Everyone who may see the item sees it again.")


@router.post("/moderation/{public_id}/dismiss", response_class=HTMLResponse)
async def dismiss(request: Request, session: DbSession, staff: StaffUser, public_id: str) -> Response:
    comment = discussion.get_comment_for_staff(session, public_id=public_id)
    closed = discussion.dismiss_reports(session, actor=staff, comment=comment)
    message = "Reports dismissed; the comment stays." if closed else "There were no open reports left."
    return redirect(request, "/admin/moderation", flash=message, kind="success" if closed else "info")
