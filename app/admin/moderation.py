"""Staff actions on comments, and the moderation page: open reports (hide the comment or dismiss the reports)
and recently hidden comments.

The one set of staff actions on a comment: pin, unpin, hide, restore, dismiss reports. The moderation page and
the item page's staff controls both post here; a form says where to go back to in `return_to` (the item page,
at the comment), a path of this site only, or the moderation page.
app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.accounts.views import safe_next
from app.deps import DbSession, StaffUser
from app.discussion import service as discussion
from app.forms import FormModel, read_form, return_path
from app.web import redirect, render

router = APIRouter(include_in_schema=False)

MODERATION = "/admin/moderation"

class ReturnTo(FormModel):
    """Every staff action on a comment is one button: where its form goes back to is all it sends."""

    return_to: Annotated[str, return_path()] = ""


async def _back(request: Request) -> str:
    """Where the form came from, when that is a path of this site (and not longer than any page's address);
    the moderation page otherwise."""
    form = await read_form(request, ReturnTo)
    return safe_next(form.data.return_to if form.data else "", MODERATION)


@router.get("/moderation", response_class=HTMLResponse)
async def moderation(request: Request, session: DbSession, staff: StaffUser) -> Response:
    return render(request, "admin/moderation.html", {
        "reported": discussion.list_open_reports(session),
        "hidden": discussion.list_hidden_comments(session),
    })


@router.post("/moderation/{public_id}/pin", response_class=HTMLResponse)
async def pin(request: Request, session: DbSession, staff: StaffUser, public_id: str) -> Response:
    comment = discussion.get_comment_for_staff(session, public_id=public_id)
    discussion.pin_comment(session, actor=staff, comment=comment)
    return redirect(request, await _back(request), flash="Pinned to the top of the discussion.")


@router.post("/moderation/{public_id}/unpin", response_class=HTMLResponse)
async def unpin(request: Request, session: DbSession, staff: StaffUser, public_id: str) -> Response:
    comment = discussion.get_comment_for_staff(session, public_id=public_id)
    discussion.unpin_comment(session, actor=staff, comment=comment)
    return redirect(request, await _back(request), flash="Unpinned.")


@router.post("/moderation/{public_id}/hide", response_class=HTMLResponse)
async def hide(request: Request, session: DbSession, staff: StaffUser, public_id: str) -> Response:
    comment = discussion.get_comment_for_staff(session, public_id=public_id)
    discussion.hide_comment(session, actor=staff, comment=comment)
    return redirect(request, await _back(request), flash="Comment hidden and its reports closed. Only staff see it now.")


@router.post("/moderation/{public_id}/restore", response_class=HTMLResponse)
async def restore(request: Request, session: DbSession, staff: StaffUser, public_id: str) -> Response:
    comment = discussion.get_comment_for_staff(session, public_id=public_id)
    discussion.restore_comment(session, actor=staff, comment=comment)
    return redirect(request, await _back(request),
                    flash="Comment restored. Everyone who may see the item sees it again.")


@router.post("/moderation/{public_id}/dismiss", response_class=HTMLResponse)
async def dismiss(request: Request, session: DbSession, staff: StaffUser, public_id: str) -> Response:
    comment = discussion.get_comment_for_staff(session, public_id=public_id)
    closed = discussion.dismiss_reports(session, actor=staff, comment=comment)
    message = "Reports dismissed; the comment stays." if closed else "There were no open reports left."
    return redirect(request, await _back(request), flash=message, kind="success" if closed else "info")
