"""Changelog entries: list, write, schedule or publish, edit, delete (any staff member).

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.changelog import service as changelog
from app.changelog.models import ChangelogEntry
from app.db import utcnow
from app.deps import DbSession, StaffUser
from app.errors import FormInvalid
from app.forms import read_form
from app.paging import pages_of
from app.parsing import ASCII_DIGITS
from app.roadmap import service as roadmap
from app.web import redirect, render

router = APIRouter(include_in_schema=False)

WHEN_LABELS = {changelog.When.draft: "Keep as a draft", changelog.When.now: "Publish now",
               changelog.When.schedule: "Publish at a set time (UTC)"}


@router.get("/changelog", response_class=HTMLResponse)
async def entry_list(request: Request, session: DbSession,
                     page: Annotated[int, Query(ge=1, le=10_000), ASCII_DIGITS] = 1) -> Response:
    entries, total = changelog.list_entries_for_staff(session, page=page)
    return render(request, "admin/changelog/list.html", {
        "entries": entries, "total": total, "page": page, "pages": pages_of(total, 50), "now": utcnow(),
    })


@router.get("/changelog/new", response_class=HTMLResponse)
async def new_entry(request: Request, session: DbSession) -> Response:
    # Items ticked on the list of releasable items arrive as ?items=…: a shortcut, checked again on save.
    chosen = [v for v in request.query_params.getlist("items") if v.isascii() and v.isdigit()][:200]
    return _render_form(request, session, entry=None, form={"when": "draft", "items": chosen})


@router.post("/changelog", response_class=HTMLResponse)
async def create_entry(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = await read_form(request, changelog.EntryCreate)
    try:
        data = form.resolve(partial(changelog.resolve_entry, session))
    except FormInvalid as exc:
        return _render_form(request, session, entry=None, form=form.typed, errors=exc.errors, status_code=422)
    entry = changelog.create_entry(session, data=data, actor=user)
    return redirect(request, _edit_url(entry), flash=_saved_message(entry))


@router.get("/changelog/{public_id}", response_class=HTMLResponse)
async def edit_entry(request: Request, session: DbSession, public_id: str) -> Response:
    entry = changelog.get_entry_for_staff(session, public_id)
    return _render_form(request, session, entry=entry, form=_entry_form(entry))


@router.post("/changelog/{public_id}", response_class=HTMLResponse)
async def update_entry(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    entry = changelog.get_entry_for_staff(session, public_id)
    form = await read_form(request, changelog.EntryUpdate)
    try:
        data = form.resolve(partial(changelog.resolve_entry, session, entry=entry))
    except FormInvalid as exc:
        return _render_form(request, session, entry=entry, form=form.typed, errors=exc.errors, status_code=422)
    if not changelog.update_entry(session, entry=entry, data=data, actor=user):
        return redirect(request, _edit_url(entry), flash="Nothing changed.", kind="info")
    return redirect(request, _edit_url(entry), flash=_saved_message(entry))


@router.post("/changelog/{public_id}/delete", response_class=HTMLResponse)
async def delete_entry(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    entry = changelog.get_entry_for_staff(session, public_id)
    title = entry.title
    changelog.delete_entry(session, entry=entry, actor=user)
    return redirect(request, "/admin/changelog",
                    flash=f"Deleted “{title}”. Its items stand on the changelog by themselves again.")


def _edit_url(entry: ChangelogEntry) -> str:
    return f"/admin/changelog/{entry.public_id}"


def _saved_message(entry: ChangelogEntry) -> str:
    state = entry.state(utcnow())
    if state == "draft":
        return f"Draft saved. “{entry.title}” stays off the changelog until you publish it."
    if state == "scheduled":
        assert entry.published_at is not None
        return (f"Scheduled. “{entry.title}” appears on the changelog on "
                f"{entry.published_at:%-d %B %Y at %H:%M} UTC.")
    return f"Published. “{entry.title}” is on the changelog."


def _entry_form(entry: ChangelogEntry) -> dict[str, Any]:
    state = entry.state(utcnow())
    return {
        "title": entry.title, "notes": entry.notes, "product_id": str(entry.product_id or ""),
        "items": [str(i.id) for i in entry.items],
        "when": {"draft": "draft", "scheduled": "schedule", "published": "now"}[state],
        "publish_at": entry.published_at.strftime("%Y-%m-%dT%H:%M") if state == "scheduled" and entry.published_at else "",
    }


def _render_form(request: Request, session: Session, *, entry: ChangelogEntry | None, form: dict[str, Any],
                 errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    products = roadmap.list_products(session)
    return render(request, "admin/changelog/edit.html", {
        "entry": entry, "form": form, "errors": errors or {}, "now": utcnow(),
        "releasable": changelog.list_releasable(session, entry=entry),
        "product_options": [("", "All products")] + [(str(p.id), p.name) for p in products],
        "when_labels": WHEN_LABELS, "earliest": changelog.schedule_choices(),
    }, status_code=status_code)
