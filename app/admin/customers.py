"""Customers: organisations (and the email domains that join people to them), people, and segments.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.views import safe_next
from app.deps import DbSession, StaffUser
from app.desk import service as desk
from app.discussion import service as discussion
from app.errors import FormInvalid
from app.feedback import service as feedback
from app.forms import FormModel, Submitted, read_form, return_path, whole_number
from app.organisations import service as organisations
from app.organisations.models import Organisation, Segment
from app.paging import pages_of
from app.parsing import ASCII_DIGITS
from app.roadmap import service as roadmap
from app.voting import service as voting
from app.web import redirect, render

router = APIRouter(include_in_schema=False)


# --- organisations --------------------------------------------------------------------------------------


def _organisation_form(organisation: Organisation) -> dict[str, Any]:
    return {"name": organisation.name, "domains": "\n".join(d.domain for d in organisation.domains),
            "segment_id": str(organisation.segment_id or ""), "revenue": _number_text(organisation.revenue)}


def _number_text(value: Decimal | None) -> str:
    if value is None:
        return ""
    return format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")


def _organisations_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    return render(request, "admin/organisations.html", {
        "rows": organisations.list_organisations(session), "segments": organisations.list_segments(session),
        **extra,
    }, status_code=status_code)


# The organisation page lists what its people asked for, heaviest first; the desk, filtered to it, has the rest.
ASKED_SHOWN = 20


def _organisation_page(request: Request, session: Session, organisation: Organisation, *, status_code: int = 200,
                       **extra: Any) -> Response:
    extra.setdefault("form", _organisation_form(organisation))
    return render(request, "admin/organisation.html", {
        "organisation": organisation, "segments": organisations.list_segments(session),
        "members": organisations.list_members(session, organisation=organisation),
        "choices": organisations.list_organisation_choices(session),
        "asked": desk.desk_page(session, query=desk.DeskQuery(organisation=organisation.id, window="all"),
                                weights=desk.desk_weights(session), per_page=ASKED_SHOWN),
        "desk_number": lambda value: f"{value:.2f}", **extra,
    }, status_code=status_code)


@router.get("/organisations", response_class=HTMLResponse)
async def organisation_list(request: Request, session: DbSession) -> Response:
    return _organisations_page(request, session)


@router.post("/organisations", response_class=HTMLResponse)
async def create_organisation(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = await read_form(request, organisations.OrganisationCreate)
    try:
        data = form.resolve(partial(organisations.resolve_organisation, session))
    except FormInvalid as exc:
        return _organisations_page(request, session, status_code=422, errors=exc.errors, form=form.typed)
    organisation = organisations.create_organisation(session, data=data, actor=user)
    joined = (f" People who sign in with a verified address at {', '.join(data.domains)} join it."
              if data.domains else "")
    return redirect(request, f"/admin/organisations/{organisation.id}",
                    flash=f"Organisation “{organisation.name}” created.{joined}")


@router.get("/organisations/{organisation_id:int}", response_class=HTMLResponse)
async def edit_organisation(request: Request, session: DbSession, organisation_id: int) -> Response:
    return _organisation_page(request, session, organisations.get_organisation(session, organisation_id))


@router.post("/organisations/{organisation_id:int}", response_class=HTMLResponse)
async def update_organisation(request: Request, session: DbSession, user: StaffUser,
                              organisation_id: int) -> Response:
    organisation = organisations.get_organisation(session, organisation_id)
    form = await read_form(request, organisations.OrganisationUpdate)
    try:
        data = form.resolve(partial(organisations.resolve_organisation, session, organisation=organisation))
    except FormInvalid as exc:
        return _organisation_page(request, session, organisation, status_code=422, errors=exc.errors,
                                  form=form.typed)
    if not organisations.update_organisation(session, organisation=organisation, data=data, actor=user):
        return redirect(request, f"/admin/organisations/{organisation.id}", flash="Nothing changed.", kind="info")
    return redirect(request, f"/admin/organisations/{organisation.id}",
                    flash=f"Organisation “{organisation.name}” saved.")


@router.post("/organisations/{organisation_id:int}/delete", response_class=HTMLResponse)
async def delete_organisation(request: Request, session: DbSession, user: StaffUser,
                              organisation_id: int) -> Response:
    organisation = organisations.get_organisation(session, organisation_id)
    name = organisation.name
    members = organisations.delete_organisation(session, organisation=organisation, actor=user)
    kept = (f" Its {members} member{'' if members == 1 else 's'} kept their accounts, without an organisation."
            if members else "")
    return redirect(request, "/admin/organisations", flash=f"Organisation “{name}” deleted.{kept}")


# --- people (customers) ---------------------------------------------------------------------------------


def _admin_path(target: str, default: str) -> str:
    """Where to go back to after a form on several pages: an admin path of this site, or the default."""
    path = safe_next(target, default)
    return path if path.startswith("/admin/") else default


@router.get("/people", response_class=HTMLResponse)
async def people(request: Request, session: DbSession,
                 q: Annotated[str, Query(max_length=200)] = "",
                 organisation: Annotated[str, Query(max_length=20)] = "",
                 page: Annotated[int, Query(ge=1, le=100_000), ASCII_DIGITS] = 1) -> Response:
    users, total = organisations.list_customers(session, q=q, organisation=organisation, page=page,
                                                per_page=organisations.PEOPLE_PER_PAGE)
    return render(request, "admin/people.html", {
        "people": users, "total": total, "page": page,
        "pages": pages_of(total, organisations.PEOPLE_PER_PAGE), "q": q, "organisation": organisation,
        "filtered": bool(q.strip() or organisation), "choices": organisations.list_organisation_choices(session),
        "no_organisation": organisations.NO_ORGANISATION,
    })


@router.get("/people/{user_id:int}", response_class=HTMLResponse)
async def person_page(request: Request, session: DbSession, user_id: int) -> Response:
    customer = organisations.get_customer(session, user_id)
    votes, vote_total = voting.list_votes_of_person(session, user=customer)
    comments, comment_total = discussion.list_comments_of_person(session, user=customer)
    said, said_total = feedback.list_feedback_from(session, author=customer)
    return render(request, "admin/person.html", {
        "person": customer, "votes": votes, "vote_total": vote_total, "comments": comments,
        "comment_total": comment_total, "feedback": said, "feedback_total": said_total,
        "sessions": accounts.list_sessions(session, user=customer),
        "choices": organisations.list_organisation_choices(session),
        "kind_labels": feedback.KIND_LABELS, "state_labels": feedback.STATE_LABELS,
        "source_names": feedback.SOURCE_NAMES,
    })


class PersonMove(FormModel):
    """Moving a person to another organisation (or to none: nothing chosen), from their page or a list."""

    organisation_id: Annotated[int | None, whole_number("Choose an organisation to move them to.",
                                                        required=False)] = None
    return_to: Annotated[str, return_path()] = ""


class PersonActive(accounts.AccountActive):
    """Enabling or disabling a customer's account, from their page or a list."""

    return_to: Annotated[str, return_path()] = ""


def _return_to(form: Submitted[Any], default: str) -> str:
    """Where a form on several pages goes back to: its `return_to` when that is an admin path of this site, the
    default otherwise (a `return_to` longer than any page's address was dropped by `return_path()`)."""
    sent = form.data or form.partial
    return _admin_path(sent.return_to if sent is not None else "", default)


@router.post("/people/{user_id:int}/organisation", response_class=HTMLResponse)
async def move_person(request: Request, session: DbSession, user: StaffUser, user_id: int) -> Response:
    person = organisations.get_customer(session, user_id)
    form = await read_form(request, PersonMove)
    back = _return_to(form, f"/admin/people/{person.id}")
    if form.data is None:
        return redirect(request, back, flash=" ".join(form.errors.values()), kind="error")
    target = None
    if form.data.organisation_id is not None:
        target = organisations.get_organisation(session, form.data.organisation_id)
    if not organisations.move_person(session, user=person, organisation=target, actor=user):
        return redirect(request, back, flash=f"{person.name} is already there.", kind="info")
    where = f"now belongs to {target.name}" if target is not None else "no longer belongs to an organisation"
    return redirect(request, back, flash=f"{person.name} {where}. What they see on the roadmap follows at once.")


@router.post("/people/{user_id:int}/active", response_class=HTMLResponse)
async def change_person_active(request: Request, session: DbSession, user: StaffUser, user_id: int) -> Response:
    person = organisations.get_customer(session, user_id)
    form = await read_form(request, PersonActive)
    back = _return_to(form, f"/admin/people/{person.id}")
    if form.data is None:
        return redirect(request, back, flash=" ".join(form.errors.values()), kind="error")
    enable = form.data.active
    if person.is_active == enable:
        return redirect(request, back, flash=f"{person.name} is already {'enabled' if enable else 'disabled'}.",
                        kind="info")
    accounts.set_user_active(session, user=person, active=enable, actor=user)
    if enable:
        return redirect(request, back, flash=f"{person.name} can sign in again.")
    return redirect(request, back, flash=f"{person.name} is disabled and signed out everywhere.")


# --- segments -------------------------------------------------------------------------------------------

# A segment's weight is one of the desk's weights: admins change it, as they change the others (/admin/desk/weights).
# Staff create, rename and delete segments; a PM's form carries the weight unchanged, and any other is refused.
ADMINS_SET_WEIGHTS = "Only an admin changes a segment’s weight: it weighs its customers’ votes on the desk."


def _segments_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("form", {"weight": "1"})
    return render(request, "admin/segments.html", {
        "segments": organisations.list_segments(session),
        "organisation_counts": organisations.count_organisations_per_segment(session),
        "item_counts": roadmap.count_items_per_segment(session), **extra,
    }, status_code=status_code)


def _segment_page(request: Request, session: Session, segment: Segment, *, status_code: int = 200,
                  **extra: Any) -> Response:
    extra.setdefault("form", {"name": segment.name, "weight": _number_text(segment.weight)})
    return render(request, "admin/segment.html", {
        "segment": segment,
        "organisation_count": organisations.count_organisations_per_segment(session).get(segment.id, 0),
        "item_count": roadmap.count_items_per_segment(session).get(segment.id, 0),
        "opened": roadmap.list_items_limited_only_to(session, segment=segment), **extra,
    }, status_code=status_code)


@router.get("/segments", response_class=HTMLResponse)
async def segments(request: Request, session: DbSession) -> Response:
    return _segments_page(request, session)


@router.post("/segments", response_class=HTMLResponse)
async def create_segment(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = await read_form(request, organisations.SegmentCreate)
    try:
        data = form.resolve(partial(organisations.resolve_segment, session))
    except FormInvalid as exc:
        return _segments_page(request, session, status_code=422, errors=exc.errors, form=form.typed)
    if not user.is_admin and data.weight != Decimal(1):
        return _segments_page(request, session, status_code=403, errors={"weight": ADMINS_SET_WEIGHTS},
                              form=form.typed)
    segment = organisations.create_segment(session, data=data, actor=user)
    return redirect(request, "/admin/segments", flash=f"Segment “{segment.name}” created.")


@router.get("/segments/{segment_id:int}", response_class=HTMLResponse)
async def edit_segment(request: Request, session: DbSession, segment_id: int) -> Response:
    return _segment_page(request, session, organisations.get_segment(session, segment_id))


@router.post("/segments/{segment_id:int}", response_class=HTMLResponse)
async def update_segment(request: Request, session: DbSession, user: StaffUser, segment_id: int) -> Response:
    segment = organisations.get_segment(session, segment_id)
    form = await read_form(request, organisations.SegmentUpdate)
    try:
        data = form.resolve(partial(organisations.resolve_segment, session, segment=segment))
    except FormInvalid as exc:
        return _segment_page(request, session, segment, status_code=422, errors=exc.errors, form=form.typed)
    if not user.is_admin and data.weight != segment.weight:
        return _segment_page(request, session, segment, status_code=403, errors={"weight": ADMINS_SET_WEIGHTS},
                             form=form.typed)
    changed = organisations.update_segment(session, segment=segment, data=data, actor=user)
    if not changed:
        return redirect(request, "/admin/segments", flash="Nothing changed.", kind="info")
    return redirect(request, "/admin/segments", flash=f"Segment “{segment.name}” saved.")


@router.post("/segments/{segment_id:int}/delete", response_class=HTMLResponse)
async def delete_segment(request: Request, session: DbSession, user: StaffUser, segment_id: int) -> Response:
    segment = organisations.get_segment(session, segment_id)
    name = segment.name
    result = organisations.delete_segment(session, segment=segment, actor=user)
    text = f"Segment “{name}” deleted."
    if result.organisations:
        n = result.organisations
        text += f" {n} organisation{'' if n == 1 else 's'} now {'has' if n == 1 else 'have'} no segment."
    if result.items:
        n = result.items
        text += f" {n} item{'' if n == 1 else 's'} {'is' if n == 1 else 'are'} no longer limited to it"
        if result.opened:
            text += (f"; {len(result.opened)} of them {'is' if len(result.opened) == 1 else 'are'} now open to "
                     f"every signed-in customer: " + ", ".join(f"“{t}”" for t in result.opened[:5]))
            if len(result.opened) > 5:
                text += f" and {len(result.opened) - 5} more"
        text += "."
    return redirect(request, "/admin/segments", flash=text)
