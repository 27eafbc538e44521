"""Staff pages for merging a duplicate item into another one, and undoing it.

From an item's edit page: "Merge into another item…" → find the item to keep (search by title) → a
confirmation that says what will move → merge. The merged item's edit page offers "Undo merge".
app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import CurrentViewer, DbSession, StaffUser
from app.errors import Conflict, NotFound
from app.forms import FormModel, checkbox, read_form, text
from app.roadmap import merge as merging
from app.roadmap import service as roadmap
from app.roadmap.models import Item
from app.web import redirect, render

router = APIRouter(include_in_schema=False)

Search = Annotated[str, Query(max_length=200)]
PublicId = Annotated[str, Query(max_length=64)]


def _url(item: Item) -> str:
    return f"/admin/items/{item.public_id}"


def _target(session: DbSession, public_id: str) -> Item | None:
    try:
        return roadmap.get_item_for_staff(session, public_id) if public_id else None
    except NotFound:
        return None


def _page(request: Request, session: DbSession, viewer: Any, item: Item, *, q: str = "", into: str = "",
          status_code: int = 200, refused: str | None = None) -> Response:
    context: dict[str, Any] = {"item": item, "q": q, "refused": refused, "preview": None, "candidates": [],
                               "merged": merging.current_merge(session, item=item)}
    if context["merged"] is None and not refused:
        target = _target(session, into)
        if into and target is None:
            context["refused"] = "That item no longer exists. Search for another one."
            status_code = 404
        elif target is not None:
            try:
                context["preview"] = merging.preview_merge(session, source=item, target=target)
            except Conflict as exc:
                context["refused"] = exc.detail
                status_code = 409
    if context["merged"] is None and context["preview"] is None:
        context["candidates"] = merging.merge_candidates(session, viewer, source=item, q=q)
    return render(request, "admin/items/merge.html", context, status_code=status_code)


@router.get("/items/{public_id}/merge", response_class=HTMLResponse)
async def merge_form(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str,
                     q: Search = "", into: PublicId = "") -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    return _page(request, session, viewer, item, q=q, into=into)


class MergeInto(FormModel):
    """The merge confirmation: the item to keep (its public id, from the preview) and whether the comments
    written for fewer people than see it are published with it."""

    into: Annotated[str, text(64, required="Choose the item to merge into: search for it below.",
                              too_long="Choose the item to merge into: that one no longer exists.")] = ""
    publish_comments: Annotated[bool, checkbox()] = False


@router.post("/items/{public_id}/merge", response_class=HTMLResponse)
async def merge(request: Request, session: DbSession, viewer: CurrentViewer, user: StaffUser,
                public_id: str) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    form = await read_form(request, MergeInto)
    if form.data is None:
        return _page(request, session, viewer, item, status_code=422, refused=" ".join(form.errors.values()))
    into, publish_comments = form.data.into, form.data.publish_comments
    target = _target(session, into)
    if target is None:
        return _page(request, session, viewer, item, status_code=404,
                     refused="Choose the item to merge into: that one no longer exists.")
    try:
        preview = merging.preview_merge(session, source=item, target=target)
        done = merging.merge_items(session, source=item, target=target, actor=user,
                                   publish_comments=publish_comments)
    except Conflict as exc:
        return _page(request, session, viewer, item, status_code=409, refused=exc.detail)
    text = f"Merged “{item.title}” into “{target.title}”, which now counts {preview.result_votes:,} vote" \
           f"{'' if preview.result_votes == 1 else 's'}"
    if preview.overlap:
        text += f" ({preview.overlap:,} {'person' if preview.overlap == 1 else 'people'} had voted on both and " \
                f"count once)"
    text += f". “{item.title}” now leads here; you can undo the merge from its page."
    kept = len(done.record.get("kept_comments", []))
    if kept:
        text += (f" {kept:,} comment{' stays' if kept == 1 else 's stay'} with “{item.title}”, out of sight while "
                 f"it is merged: {'it was' if kept == 1 else 'they were'} written for fewer people than see "
                 f"“{target.title}”. Undoing the merge brings {'it' if kept == 1 else 'them'} back.")
    return redirect(request, _url(target), flash=text)


@router.post("/items/{public_id}/merge/undo", response_class=HTMLResponse)
async def undo(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    info = merging.current_merge(session, item=item)
    if info is None:
        return redirect(request, _url(item), flash=f"“{item.title}” is not merged into another item.", kind="info")
    try:
        result = merging.undo_merge(session, merge=info.merge, actor=user)
    except Conflict as exc:
        return redirect(request, _url(item), flash=exc.detail, kind="error")
    text = f"Merge undone: “{item.title}” is back with its votes, comments, feedback and followers."
    if result.votes_kept:
        text += (f" {result.votes_kept:,} vote{' was' if result.votes_kept == 1 else 's were'} withdrawn on "
                 f"“{info.target.title}” since the merge and stay{'s' if result.votes_kept == 1 else ''} withdrawn.")
    return redirect(request, _url(item), flash=text)
