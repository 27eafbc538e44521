"""Staff pages of the feedback domain: the inbox of ideas and private feedback, and votes captured on a
customer's behalf.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.deps import CurrentViewer, DbSession, StaffUser
from app.errors import Conflict, FormInvalid, NotFound
from app.feedback import service as feedback
from app.feedback.models import Feedback, FeedbackKind, FeedbackState
from app.forms import FormModel, read_form, text, typed_values
from app.notify import service as notify
from app.organisations import service as organisations
from app.paging import pages_of
from app.parsing import ASCII_DIGITS
from app.roadmap import service as roadmap
from app.roadmap.models import Item
from app.voting.models import CaptureSource, Importance
from app.web import redirect, render

router = APIRouter(include_in_schema=False)

Search = Annotated[str, Query(max_length=200)]
Choice = Annotated[str, Query(max_length=20)]


def _entry(session: Session, raw_id: str) -> feedback.InboxEntry:
    feedback_id = feedback.parse_id(raw_id)
    if feedback_id is None:
        raise NotFound()
    return feedback.get_entry(session, feedback_id)


def _url(entry: feedback.InboxEntry) -> str:
    return f"/admin/feedback/{entry.feedback.id}"


# --- the inbox ------------------------------------------------------------------------------------------


@router.get("/feedback", response_class=HTMLResponse)
async def inbox(request: Request, session: DbSession, state: Choice = "", kind: Choice = "", product: Choice = "",
                organisation: Choice = "", page: Annotated[int, Query(ge=1, le=100_000), ASCII_DIGITS] = 1) -> Response:
    filters = feedback.InboxFilters.parse(state=state, kind=kind, product=product, organisation=organisation)
    entries, total = feedback.list_inbox(session, filters=filters, page=page, per_page=feedback.INBOX_PER_PAGE)
    return render(request, "admin/feedback/inbox.html", {
        "entries": entries, "total": total, "page": page,
        "pages": pages_of(total, feedback.INBOX_PER_PAGE), "filters": filters,
        "products": roadmap.list_products(session), "organisations": organisations.list_organisation_choices(session),
        "state_labels": feedback.STATE_LABELS, "kind_labels": feedback.KIND_LABELS,
    })


def _detail_page(request: Request, session: Session, viewer: Any, entry: feedback.InboxEntry, *,
                 item_q: str = "", status_code: int = 200, **extra: Any) -> Response:
    found: list[Item] = []
    if item_q.strip():
        found = roadmap.list_items_for_staff(session, q=item_q, per_page=10)[0]
    fb = entry.feedback
    extra.setdefault("item_form", feedback.idea_item_form(session, fb))
    return render(request, "admin/feedback/detail.html", {
        "entry": entry, "item_q": item_q, "found": found,
        "products": roadmap.list_products(session),
        "open_stages": [s for s in roadmap.list_stages(session) if not s.is_closed and not s.is_released],
        "state_labels": feedback.STATE_LABELS, "kind_labels": feedback.KIND_LABELS,
        "can_make_item": fb.kind is FeedbackKind.idea and fb.item_id is None,
        "can_decline": fb.kind is FeedbackKind.idea and fb.state is not FeedbackState.declined,
        "max_reason": feedback.MAX_REASON,
        **extra,
    }, status_code=status_code)


@router.get("/feedback/{feedback_id}", response_class=HTMLResponse)
async def detail(request: Request, session: DbSession, viewer: CurrentViewer, feedback_id: str,
                 item_q: Search = "") -> Response:
    return _detail_page(request, session, viewer, _entry(session, feedback_id), item_q=item_q)


class LinkToItem(FormModel):
    """The inbox's "link to this item" button: the item's public id (from the search results)."""

    item: Annotated[str, text(16, required="Choose the item to link this to: search for it first.",
                              too_long="That item no longer exists; search again.")] = ""


@router.post("/feedback/{feedback_id}/link", response_class=HTMLResponse)
async def link(request: Request, session: DbSession, user: StaffUser, feedback_id: str) -> Response:
    entry = _entry(session, feedback_id)
    form = await read_form(request, LinkToItem)
    if form.data is None:
        return redirect(request, _url(entry), flash=" ".join(form.errors.values()), kind="error")
    try:
        target = roadmap.get_item_for_staff(session, form.data.item)
    except NotFound:
        return redirect(request, _url(entry), flash="That item no longer exists; search again.", kind="error")
    feedback.link_to_item(session, feedback=entry.feedback, item=target, actor=user)
    _tell_author(session, entry.feedback, actor=user, outcome="linked", item=target)
    return redirect(request, _url(entry), flash=f"Linked to “{target.title}”.")


def _tell_author(session: Session, idea: Feedback, *, actor: User, outcome: str, item: Item | None = None,
                 reason: str = "") -> None:
    """An idea's author hears what became of it (a reason or a note is not an idea: nobody is told)."""
    if idea.kind is FeedbackKind.idea:
        notify.announce_idea(session, feedback_id=idea.id, author_id=idea.author_id, title=idea.title, actor=actor,
                             outcome=outcome, item=item, reason=reason)


@router.post("/feedback/{feedback_id}/item", response_class=HTMLResponse)
async def make_item(request: Request, session: DbSession, viewer: CurrentViewer, user: StaffUser,
                    feedback_id: str) -> Response:
    entry = _entry(session, feedback_id)
    form = typed_values(roadmap.ItemCreate, await request.form())
    try:
        item = feedback.create_item_from_idea(session, feedback=entry.feedback, form=form, actor=user)
    except FormInvalid as exc:
        return _detail_page(request, session, viewer, entry, status_code=422, errors=exc.errors, item_form=form)
    except Conflict as exc:
        return redirect(request, _url(entry), flash=exc.detail, kind="error")
    _tell_author(session, entry.feedback, actor=user, outcome="linked", item=item)
    who = entry.author.name if entry.author is not None and entry.author.deleted_at is None else None
    vote = f" {who}’s vote came along." if who else ""
    return redirect(request, f"/admin/items/{item.public_id}",
                    flash=f"Draft item created from the idea; the idea is linked to it.{vote} "
                          f"Only staff see the draft until you publish it.")


@router.post("/feedback/{feedback_id}/decline", response_class=HTMLResponse)
async def decline(request: Request, session: DbSession, viewer: CurrentViewer, user: StaffUser,
                  feedback_id: str) -> Response:
    entry = _entry(session, feedback_id)
    form = await read_form(request, feedback.FeedbackDecline)
    if form.data is None:
        return _detail_page(request, session, viewer, entry, status_code=422, errors=form.errors, form=form.typed)
    feedback.decline(session, feedback=entry.feedback, reason=form.data.decline_reason, actor=user)
    _tell_author(session, entry.feedback, actor=user, outcome="declined", reason=form.data.decline_reason)
    return redirect(request, _url(entry), flash="Declined. The author sees your reason on their account page, and by "
                                                 "email unless they turned such emails off.")


@router.post("/feedback/{feedback_id}/archive", response_class=HTMLResponse)
async def archive(request: Request, session: DbSession, user: StaffUser, feedback_id: str) -> Response:
    entry = _entry(session, feedback_id)
    feedback.archive(session, feedback=entry.feedback, actor=user)
    return redirect(request, "/admin/feedback", flash="Archived.")


@router.post("/feedback/{feedback_id}/reopen", response_class=HTMLResponse)
async def reopen(request: Request, session: DbSession, user: StaffUser, feedback_id: str) -> Response:
    entry = _entry(session, feedback_id)
    feedback.reopen(session, feedback=entry.feedback, actor=user)
    return redirect(request, _url(entry), flash=f"Back in the inbox as “{feedback.STATE_LABELS[entry.feedback.state]}”.")


# --- votes captured on a customer's behalf --------------------------------------------------------------


def _capture_page(request: Request, session: Session, item: Item, *, customer_q: str, form: dict[str, str],
                  status_code: int = 200, **extra: Any) -> Response:
    customers, matches = feedback.find_customers(session, q=customer_q)
    if len(customers) == 1 and not form.get("customer"):
        form = {**form, "customer": str(customers[0].id)}
    return render(request, "admin/feedback/capture.html", {
        "item": item, "customer_q": customer_q, "customers": customers, "matches": matches, "form": form,
        "takes_votes": feedback.takes_votes(item),
        "organisations": organisations.list_organisation_choices(session),
        "importances": list(Importance), "sources": feedback.SOURCE_NAMES, "new_contact": feedback.NEW_CONTACT,
        "notes": feedback.list_feedback_for_item(session, item=item, limit=10),
        "max_body": feedback.MAX_BODY, "max_url": feedback.MAX_URL,
        **extra,
    }, status_code=status_code)


@router.get("/items/{public_id}/capture", response_class=HTMLResponse)
async def capture_form(request: Request, session: DbSession, public_id: str, customer_q: Search = "") -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    return _capture_page(request, session, item, customer_q=customer_q,
                         form={"importance": str(int(Importance.important)), "source": CaptureSource.call.value})


class CaptureSearch(FormModel):
    """The customer search the capture form carries along (a hidden copy of the search box), to show the same
    matches again when the form is refused; a search longer than the box takes is dropped."""

    customer_q: Annotated[str, text(200)] = ""


@router.post("/items/{public_id}/capture", response_class=HTMLResponse)
async def capture(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    search = await read_form(request, CaptureSearch)
    customer_q = (search.data or CaptureSearch()).customer_q
    form = await read_form(request, feedback.VoteCapture)
    try:
        data = form.resolve(partial(feedback.resolve_capture, session))
        result = feedback.capture_vote(session, item=item, data=data, actor=user)
    except FormInvalid as exc:
        return _capture_page(request, session, item, customer_q=customer_q, form=form.typed, errors=exc.errors,
                             status_code=422)
    except Conflict as exc:
        return _capture_page(request, session, item, customer_q=customer_q, form=form.typed, refused=exc.detail,
                             status_code=409)
    who = result.customer.name
    if result.placeholder_created:
        text = (f"Vote recorded for {who}, a new contact: it counts now, and becomes theirs when they sign in "
                f"with {result.customer.email}.")
    elif result.vote_created:
        text = f"Vote recorded for {who} ({result.importance.label})."
    else:
        text = f"{who} had already voted; their vote now counts as {result.importance.label}."
    if result.note is not None:
        text += " The note is in the inbox."
    return redirect(request, f"/admin/items/{item.public_id}", flash=text)
