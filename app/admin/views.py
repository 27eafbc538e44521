"""The staff area: one router behind one staff dependency.

Overview, products, stages and tags are open to every staff member; staff accounts, branding and the
audit log to admins only (AdminUser: a PM gets the same 404 as for a missing page). Items, the feedback
inbox, merging and moderation have a module each (app/admin/items.py, ...) with a router of its own,
included at the end of this module, behind the same dependencies.
"""

from __future__ import annotations

import functools
import logging
from decimal import Decimal
from math import ceil
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app import mail
from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.accounts.views import safe_next
from app.admin import feedback, items, merge, moderation
from app.audit import service as audit
from app.audit.labels import AUDIT_FIELDS, AUDIT_KINDS, AUDIT_TYPES, AUDIT_VALUES, AUDIT_VERBS
from app.db import after_commit
from app.deps import AdminUser, CurrentViewer, DbSession, StaffUser, require_staff
from app.errors import Conflict, FormInvalid, NotFound
from app.organisations import service as organisations
from app.organisations.models import Organisation, Segment
from app.parsing import ASCII_DIGITS, parse_int
from app.portal import service as portal
from app.roadmap import service as roadmap
from app.roadmap.models import Product, Stage, Tag
from app.security import verify_csrf
from app.web import redirect, render

log = logging.getLogger("ahead.admin")

router = APIRouter(prefix="/admin", include_in_schema=False,
                   dependencies=[Depends(require_staff), Depends(verify_csrf)])

# Generous bounds on what a form may carry; the services give the friendly per-field messages.
Name = Annotated[str, Form(max_length=1000)]
LongText = Annotated[str, Form(max_length=20_000)]
Flag = Annotated[str, Form(max_length=10)]

ROLE_LABELS = {Role.pm: "Product manager", Role.admin: "Admin"}
AUDIT_PER_PAGE = 50


# --- overview -------------------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def dashboard(request: Request, session: DbSession, viewer: CurrentViewer) -> Response:
    events = audit.list_events(session, per_page=8)[0] if viewer.is_admin else []
    return render(request, "admin/dashboard.html", {
        "overview": roadmap.get_overview(session), "events": events, **_audit_labels(),
    })


# --- products -------------------------------------------------------------------------------------------


def _products_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    return render(request, "admin/products.html", {
        "products": roadmap.list_products(session), "counts": roadmap.count_items_per_product(session), **extra,
    }, status_code=status_code)


def _product_page(request: Request, session: Session, product: Product, *, status_code: int = 200,
                  **extra: Any) -> Response:
    extra.setdefault("form", {"name": product.name, "description": product.description})
    return render(request, "admin/product.html", {
        "product": product, "item_count": roadmap.count_items_per_product(session).get(product.id, 0), **extra,
    }, status_code=status_code)


@router.get("/products", response_class=HTMLResponse)
async def products(request: Request, session: DbSession) -> Response:
    return _products_page(request, session)


@router.post("/products", response_class=HTMLResponse)
async def create_product(request: Request, session: DbSession, user: StaffUser, name: Name = "",
                         description: LongText = "") -> Response:
    try:
        product = roadmap.create_product(session, name=name, description=description, actor=user)
    except FormInvalid as exc:
        return _products_page(request, session, status_code=422, errors=exc.errors,
                              form={"name": name, "description": description})
    return redirect(request, "/admin/products", flash=f"Product “{product.name}” created.")


@router.get("/products/{product_id:int}", response_class=HTMLResponse)
async def edit_product(request: Request, session: DbSession, product_id: int) -> Response:
    product = roadmap.get_by_id(session, Product, product_id)
    return _product_page(request, session, product)


@router.post("/products/{product_id:int}", response_class=HTMLResponse)
async def update_product(request: Request, session: DbSession, user: StaffUser, product_id: int,
                         name: Name = "", description: LongText = "") -> Response:
    product = roadmap.get_by_id(session, Product, product_id)
    try:
        roadmap.update_product(session, product=product, name=name, description=description, actor=user)
    except FormInvalid as exc:
        return _product_page(request, session, product, status_code=422, errors=exc.errors,
                             form={"name": name, "description": description})
    return redirect(request, "/admin/products", flash=f"Product “{product.name}” saved.")


@router.post("/products/{product_id:int}/delete", response_class=HTMLResponse)
async def delete_product(request: Request, session: DbSession, user: StaffUser, product_id: int) -> Response:
    product = roadmap.get_by_id(session, Product, product_id)
    try:
        roadmap.delete_product(session, product=product, actor=user)
    except Conflict as exc:
        return _product_page(request, session, product, status_code=409, problem=exc.detail)
    return redirect(request, "/admin/products", flash=f"Product “{product.name}” deleted.")


# --- stages ---------------------------------------------------------------------------------------------


def _stage_form(stage: Stage) -> dict[str, Any]:
    return {"name": stage.name, "is_released": stage.is_released, "is_closed": stage.is_closed,
            "on_board": stage.on_board}


def _stages_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("form", {"on_board": True})
    return render(request, "admin/stages.html", {
        "stages": roadmap.list_stages(session), "counts": roadmap.count_items_per_stage(session), **extra,
    }, status_code=status_code)


def _stage_page(request: Request, session: Session, stage: Stage, *, status_code: int = 200,
                **extra: Any) -> Response:
    extra.setdefault("form", _stage_form(stage))
    return render(request, "admin/stage.html", {
        "stage": stage, "item_count": roadmap.count_items_per_stage(session).get(stage.id, 0), **extra,
    }, status_code=status_code)


@router.get("/stages", response_class=HTMLResponse)
async def stages(request: Request, session: DbSession) -> Response:
    return _stages_page(request, session)


@router.post("/stages", response_class=HTMLResponse)
async def create_stage(request: Request, session: DbSession, user: StaffUser, name: Name = "",
                       is_released: Flag = "", is_closed: Flag = "", on_board: Flag = "") -> Response:
    flags = {"is_released": bool(is_released), "is_closed": bool(is_closed), "on_board": bool(on_board)}
    try:
        stage = roadmap.create_stage(session, name=name, actor=user, **flags)
    except FormInvalid as exc:
        return _stages_page(request, session, status_code=422, errors=exc.errors, form={"name": name, **flags})
    return redirect(request, "/admin/stages", flash=f"Stage “{stage.name}” added at the end.")


@router.get("/stages/{stage_id:int}", response_class=HTMLResponse)
async def edit_stage(request: Request, session: DbSession, stage_id: int) -> Response:
    stage = roadmap.get_by_id(session, Stage, stage_id)
    return _stage_page(request, session, stage)


@router.post("/stages/{stage_id:int}", response_class=HTMLResponse)
async def update_stage(request: Request, session: DbSession, user: StaffUser, stage_id: int, name: Name = "",
                       is_released: Flag = "", is_closed: Flag = "", on_board: Flag = "") -> Response:
    stage = roadmap.get_by_id(session, Stage, stage_id)
    flags = {"is_released": bool(is_released), "is_closed": bool(is_closed), "on_board": bool(on_board)}
    try:
        roadmap.update_stage(session, stage=stage, name=name, actor=user, **flags)
    except FormInvalid as exc:
        return _stage_page(request, session, stage, status_code=422, errors=exc.errors,
                           form={"name": name, **flags})
    return redirect(request, "/admin/stages", flash=f"Stage “{stage.name}” saved.")


@router.post("/stages/{stage_id:int}/move", response_class=HTMLResponse)
async def move_stage(request: Request, session: DbSession, user: StaffUser, stage_id: int,
                     direction: Annotated[str, Form(max_length=10)] = "") -> Response:
    stage = roadmap.get_by_id(session, Stage, stage_id)
    if direction not in ("up", "down"):
        return redirect(request, "/admin/stages", flash="Choose to move the stage up or down.", kind="error")
    roadmap.move_stage_position(session, stage=stage, direction=-1 if direction == "up" else 1, actor=user)
    where = "earlier" if direction == "up" else "later"
    return redirect(request, "/admin/stages", flash=f"“{stage.name}” moved {where}.")


@router.post("/stages/{stage_id:int}/delete", response_class=HTMLResponse)
async def delete_stage(request: Request, session: DbSession, user: StaffUser, stage_id: int) -> Response:
    stage = roadmap.get_by_id(session, Stage, stage_id)
    try:
        roadmap.delete_stage(session, stage=stage, actor=user)
    except Conflict as exc:
        return _stage_page(request, session, stage, status_code=409, problem=exc.detail)
    return redirect(request, "/admin/stages", flash=f"Stage “{stage.name}” deleted.")


# --- tags -----------------------------------------------------------------------------------------------


def _tags_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    return render(request, "admin/tags.html", {
        "tags": roadmap.list_tags(session), "counts": roadmap.count_items_per_tag(session), **extra,
    }, status_code=status_code)


def _tag_page(request: Request, session: Session, tag: Tag, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("form", {"name": tag.name})
    return render(request, "admin/tag.html", {
        "tag": tag, "item_count": roadmap.count_items_per_tag(session).get(tag.id, 0), **extra,
    }, status_code=status_code)


@router.get("/tags", response_class=HTMLResponse)
async def tags(request: Request, session: DbSession) -> Response:
    return _tags_page(request, session)


@router.post("/tags", response_class=HTMLResponse)
async def create_tag(request: Request, session: DbSession, user: StaffUser, name: Name = "") -> Response:
    try:
        tag = roadmap.create_tag(session, name=name, actor=user)
    except FormInvalid as exc:
        return _tags_page(request, session, status_code=422, errors=exc.errors, form={"name": name})
    return redirect(request, "/admin/tags", flash=f"Tag “{tag.name}” created.")


@router.get("/tags/{tag_id:int}", response_class=HTMLResponse)
async def edit_tag(request: Request, session: DbSession, tag_id: int) -> Response:
    return _tag_page(request, session, roadmap.get_by_id(session, Tag, tag_id))


@router.post("/tags/{tag_id:int}", response_class=HTMLResponse)
async def update_tag(request: Request, session: DbSession, user: StaffUser, tag_id: int,
                     name: Name = "") -> Response:
    tag = roadmap.get_by_id(session, Tag, tag_id)
    try:
        roadmap.update_tag(session, tag=tag, name=name, actor=user)
    except FormInvalid as exc:
        return _tag_page(request, session, tag, status_code=422, errors=exc.errors, form={"name": name})
    return redirect(request, "/admin/tags", flash=f"Tag “{tag.name}” saved.")


@router.post("/tags/{tag_id:int}/delete", response_class=HTMLResponse)
async def delete_tag(request: Request, session: DbSession, user: StaffUser, tag_id: int) -> Response:
    tag = roadmap.get_by_id(session, Tag, tag_id)
    count = roadmap.count_items_per_tag(session).get(tag.id, 0)
    roadmap.delete_tag(session, tag=tag, actor=user)
    removed = f" It was removed from {count} item{'' if count == 1 else 's'}." if count else ""
    return redirect(request, "/admin/tags", flash=f"Tag “{tag.name}” deleted.{removed}")


# --- staff accounts (admins) ----------------------------------------------------------------------------


def _staff_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("form", {"role": Role.pm.value})
    return render(request, "admin/staff.html", {
        "staff": accounts.list_staff(session), "invitations": accounts.list_pending_invitations(session),
        "role_labels": ROLE_LABELS, **extra,
    }, status_code=status_code)


def _staff_member(session: Session, user_id: int) -> User:
    user = accounts.get_user(session, user_id)
    if user.role not in ROLE_LABELS:
        raise NotFound()
    return user


@router.get("/staff", response_class=HTMLResponse)
async def staff(request: Request, session: DbSession, admin: AdminUser) -> Response:
    return _staff_page(request, session)


@router.post("/staff/invitations", response_class=HTMLResponse)
async def invite(request: Request, session: DbSession, admin: AdminUser,
                 email: Annotated[str, Form(max_length=320)] = "",
                 role: Annotated[str, Form(max_length=20)] = "") -> Response:
    try:
        chosen = Role(role) if role in ROLE_LABELS else None
        if chosen is None:
            raise FormInvalid({"role": "Choose product manager or admin."})
        invitation, token = accounts.invite_staff(session, email=email, role=chosen, invited_by=admin)
    except FormInvalid as exc:
        return _staff_page(request, session, status_code=422, errors=exc.errors, form={"email": email, "role": role})

    settings = request.app.state.settings
    link = f"{settings.base_url}/invitations/{token}"
    branding = portal.get_branding(session)
    context = {
        "portal_name": branding.portal_name, "inviter_name": admin.name, "link": link,
        "role_label": "an admin" if chosen is Role.admin else "a product manager",
        "days": accounts.INVITATION_DAYS,
    }
    # Sent once the invitation is committed and the admin has their answer: never while the transaction is
    # open, and never for an invitation that was rolled back. So this page cannot know whether the email got
    # through, and says so; a failure is logged (mail.py), and the link below works on its own.
    after_commit(request, functools.partial(_send_invitation, settings, invitation.email, context))
    if not settings.smtp_url:
        return redirect(request, "/admin/staff", kind="info", flash=(
            f"Invitation created for {invitation.email}. Email is not set up on this server (SMTP_URL), so "
            f"send them this link yourself (valid for {accounts.INVITATION_DAYS} days): {link}"))
    return redirect(request, "/admin/staff", flash=(
        f"Invitation created for {invitation.email}; the email is being sent now. If it does not arrive, send "
        f"them this link yourself (valid for {accounts.INVITATION_DAYS} days): {link}"))


async def _send_invitation(settings: Any, to: str, context: dict[str, Any]) -> None:
    try:
        await mail.send_email(settings, to=to, template="invitation", context=context)
    except mail.MailError:
        log.error("the invitation email to %s was not sent; the invitation stands and its link works", to)


@router.post("/staff/invitations/{invitation_id:int}/cancel", response_class=HTMLResponse)
async def cancel_invitation(request: Request, session: DbSession, admin: AdminUser, invitation_id: int) -> Response:
    invitation = accounts.cancel_invitation(session, invitation_id=invitation_id, actor=admin)
    if invitation is None:
        return redirect(request, "/admin/staff", kind="info",
                        flash="That invitation was already accepted or cancelled. Nothing changed.")
    return redirect(request, "/admin/staff", flash=(
        f"Invitation for {invitation.email} cancelled. Its link no longer works."))


@router.post("/staff/{user_id:int}/role", response_class=HTMLResponse)
async def change_role(request: Request, session: DbSession, admin: AdminUser, user_id: int,
                      role: Annotated[str, Form(max_length=20)] = "") -> Response:
    member = _staff_member(session, user_id)
    try:
        if role not in ROLE_LABELS:
            raise FormInvalid({"role": "Choose product manager or admin."})
        accounts.set_user_role(session, user=member, role=Role(role), actor=admin)
    except FormInvalid as exc:
        return _staff_page(request, session, status_code=422, problem=" ".join(exc.errors.values()))
    return redirect(request, "/admin/staff", flash=f"{member.name} is now {ROLE_LABELS[member.role].lower()}.")


@router.post("/staff/{user_id:int}/active", response_class=HTMLResponse)
async def change_active(request: Request, session: DbSession, admin: AdminUser, user_id: int,
                        active: Annotated[str, Form(max_length=5)] = "") -> Response:
    member = _staff_member(session, user_id)
    enable = active == "1"
    try:
        accounts.set_user_active(session, user=member, active=enable, actor=admin)
    except FormInvalid as exc:
        return _staff_page(request, session, status_code=422, problem=" ".join(exc.errors.values()))
    if enable:
        return redirect(request, "/admin/staff", flash=f"{member.name} can sign in again.")
    return redirect(request, "/admin/staff", flash=f"{member.name} is disabled and signed out everywhere.")


# --- branding (admins) ----------------------------------------------------------------------------------


def _settings_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    branding = portal.get_branding(session)
    extra.setdefault("form", {"portal_name": branding.portal_name, "accent_color": branding.accent_color,
                              "product_name": branding.product_name, "product_url": branding.product_url})
    extra.setdefault("votes", portal.get_vote_display(session))
    return render(request, "admin/settings.html", {"current": branding, **extra}, status_code=status_code)


@router.get("/settings", response_class=HTMLResponse)
async def settings_form(request: Request, session: DbSession, admin: AdminUser) -> Response:
    return _settings_page(request, session)


@router.post("/settings", response_class=HTMLResponse)
async def save_settings(
    request: Request,
    session: DbSession,
    admin: AdminUser,
    portal_name: Name = "",
    accent_color: Annotated[str, Form(max_length=100)] = "",
    accent_picker: Annotated[str, Form(max_length=100)] = "",
    product_name: Name = "",
    product_url: Annotated[str, Form(max_length=2000)] = "",
    remove_logo: Flag = "",
    logo: Annotated[UploadFile | None, File()] = None,
) -> Response:
    current = portal.get_branding(session)
    # Without JavaScript the colour picker and the text field cannot follow each other: a text value
    # the admin changed wins, otherwise the picker's.
    colour = accent_color.strip()
    if accent_picker and (not colour or colour.lower() == current.accent_color.lower()):
        colour = accent_picker.strip()
    values = {"portal_name": portal_name, "accent_color": colour, "product_name": product_name,
              "product_url": product_url}
    data: bytes | None = None
    if logo is not None and logo.filename:
        data = await logo.read(portal.LOGO_MAX_BYTES + 1)
        if not data:
            data = None
    try:
        portal.update_branding(session, actor=admin, values=values, logo=data, remove_logo=bool(remove_logo))
    except FormInvalid as exc:
        return _settings_page(request, session, status_code=422, errors=exc.errors, form=values)
    return redirect(request, "/admin/settings", flash="Branding saved. Every page shows it now.")


@router.post("/settings/votes", response_class=HTMLResponse)
async def save_vote_display(request: Request, session: DbSession, admin: AdminUser, hide_counts: Flag = "") -> Response:
    display = portal.update_vote_display(session, actor=admin, hide_counts=bool(hide_counts))
    flash = ("Vote counts are hidden from visitors and customers. Staff still see them." if display.hide_counts
             else "Everyone sees vote counts again.")
    return redirect(request, "/admin/settings#votes", flash=flash)


# --- audit log (admins) ---------------------------------------------------------------------------------


def _audit_labels() -> dict[str, Any]:
    return {"audit_types": AUDIT_TYPES, "audit_kinds": AUDIT_KINDS, "audit_verbs": AUDIT_VERBS,
            "audit_fields": AUDIT_FIELDS, "audit_values": AUDIT_VALUES}


@router.get("/audit", response_class=HTMLResponse)
async def audit_log(request: Request, session: DbSession, admin: AdminUser,
                    type: Annotated[str, Query(max_length=40)] = "",
                    page: Annotated[int, Query(ge=1, le=100_000), ASCII_DIGITS] = 1) -> Response:
    events, total = audit.list_events(session, page=page, per_page=AUDIT_PER_PAGE, entity_type=type)
    types = audit.list_entity_types(session)
    return render(request, "admin/audit.html", {
        "events": events, "total": total, "page": page, "pages": max(1, ceil(total / AUDIT_PER_PAGE)),
        "type": type, "types": types, **_audit_labels(),
    })



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


def _organisation_page(request: Request, session: Session, organisation: Organisation, *, status_code: int = 200,
                       **extra: Any) -> Response:
    extra.setdefault("form", _organisation_form(organisation))
    return render(request, "admin/organisation.html", {
        "organisation": organisation, "segments": organisations.list_segments(session),
        "members": organisations.list_members(session, organisation=organisation),
        "choices": organisations.list_organisation_choices(session), **extra,
    }, status_code=status_code)


OrgField = Annotated[str, Form(max_length=20_000)]


@router.get("/organisations", response_class=HTMLResponse)
async def organisation_list(request: Request, session: DbSession) -> Response:
    return _organisations_page(request, session)


@router.post("/organisations", response_class=HTMLResponse)
async def create_organisation(request: Request, session: DbSession, user: StaffUser, name: Name = "",
                              domains: OrgField = "", segment_id: Annotated[str, Form(max_length=20)] = "",
                              revenue: Annotated[str, Form(max_length=100)] = "") -> Response:
    form = {"name": name, "domains": domains, "segment_id": segment_id, "revenue": revenue}
    try:
        data = organisations.parse_organisation_form(session, name=name, domains=domains, segment_id=segment_id,
                                                     revenue=revenue)
    except FormInvalid as exc:
        return _organisations_page(request, session, status_code=422, errors=exc.errors, form=form)
    organisation = organisations.create_organisation(session, data=data, actor=user)
    joined = (f" People who sign in with a verified address at {', '.join(data.domains)} join it."
              if data.domains else "")
    return redirect(request, f"/admin/organisations/{organisation.id}",
                    flash=f"Organisation “{organisation.name}” created.{joined}")


@router.get("/organisations/{organisation_id:int}", response_class=HTMLResponse)
async def edit_organisation(request: Request, session: DbSession, organisation_id: int) -> Response:
    return _organisation_page(request, session, organisations.get_organisation(session, organisation_id))


@router.post("/organisations/{organisation_id:int}", response_class=HTMLResponse)
async def update_organisation(request: Request, session: DbSession, user: StaffUser, organisation_id: int,
                              name: Name = "", domains: OrgField = "",
                              segment_id: Annotated[str, Form(max_length=20)] = "",
                              revenue: Annotated[str, Form(max_length=100)] = "") -> Response:
    organisation = organisations.get_organisation(session, organisation_id)
    form = {"name": name, "domains": domains, "segment_id": segment_id, "revenue": revenue}
    try:
        data = organisations.parse_organisation_form(session, name=name, domains=domains, segment_id=segment_id,
                                                     revenue=revenue, organisation=organisation)
    except FormInvalid as exc:
        return _organisation_page(request, session, organisation, status_code=422, errors=exc.errors, form=form)
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
        "pages": max(1, ceil(total / organisations.PEOPLE_PER_PAGE)), "q": q, "organisation": organisation,
        "filtered": bool(q.strip() or organisation), "choices": organisations.list_organisation_choices(session),
        "no_organisation": organisations.NO_ORGANISATION,
    })


@router.post("/people/{user_id:int}/organisation", response_class=HTMLResponse)
async def move_person(request: Request, session: DbSession, user: StaffUser, user_id: int,
                      organisation_id: Annotated[str, Form(max_length=20)] = "",
                      return_to: Annotated[str, Form(max_length=2000)] = "") -> Response:
    person = organisations.get_customer(session, user_id)
    back = _admin_path(return_to, "/admin/people")
    target = None
    if organisation_id:
        number = parse_int(organisation_id, minimum=1)
        if number is None:
            return redirect(request, back, flash="Choose an organisation to move them to.", kind="error")
        target = organisations.get_organisation(session, number)
    if not organisations.move_person(session, user=person, organisation=target, actor=user):
        return redirect(request, back, flash=f"{person.name} is already there.", kind="info")
    where = f"now belongs to {target.name}" if target is not None else "no longer belongs to an organisation"
    return redirect(request, back, flash=f"{person.name} {where}. What they see on the roadmap follows at once.")


@router.post("/people/{user_id:int}/active", response_class=HTMLResponse)
async def change_person_active(request: Request, session: DbSession, user: StaffUser, user_id: int,
                               active: Annotated[str, Form(max_length=5)] = "",
                               return_to: Annotated[str, Form(max_length=2000)] = "") -> Response:
    person = organisations.get_customer(session, user_id)
    back = _admin_path(return_to, "/admin/people")
    enable = active == "1"
    if person.is_active == enable:
        return redirect(request, back, flash=f"{person.name} is already {'enabled' if enable else 'disabled'}.",
                        kind="info")
    accounts.set_user_active(session, user=person, active=enable, actor=user)
    if enable:
        return redirect(request, back, flash=f"{person.name} can sign in again.")
    return redirect(request, back, flash=f"{person.name} is disabled and signed out everywhere.")


# --- segments -------------------------------------------------------------------------------------------


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


Weight = Annotated[str, Form(max_length=40)]


@router.get("/segments", response_class=HTMLResponse)
async def segments(request: Request, session: DbSession) -> Response:
    return _segments_page(request, session)


@router.post("/segments", response_class=HTMLResponse)
async def create_segment(request: Request, session: DbSession, user: StaffUser, name: Name = "",
                         weight: Weight = "") -> Response:
    try:
        segment = organisations.create_segment(session, name=name, weight=weight, actor=user)
    except FormInvalid as exc:
        return _segments_page(request, session, status_code=422, errors=exc.errors,
                              form={"name": name, "weight": weight})
    return redirect(request, "/admin/segments", flash=f"Segment “{segment.name}” created.")


@router.get("/segments/{segment_id:int}", response_class=HTMLResponse)
async def edit_segment(request: Request, session: DbSession, segment_id: int) -> Response:
    return _segment_page(request, session, organisations.get_segment(session, segment_id))


@router.post("/segments/{segment_id:int}", response_class=HTMLResponse)
async def update_segment(request: Request, session: DbSession, user: StaffUser, segment_id: int,
                         name: Name = "", weight: Weight = "") -> Response:
    segment = organisations.get_segment(session, segment_id)
    try:
        changed = organisations.update_segment(session, segment=segment, name=name, weight=weight, actor=user)
    except FormInvalid as exc:
        return _segment_page(request, session, segment, status_code=422, errors=exc.errors,
                             form={"name": name, "weight": weight})
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


# --- access: private mode, OIDC providers, staff role mapping (admins) --------------------------------


ACCESS_KINDS = ("emails", "domains", "groups")


def _access_form(access: portal.Access) -> dict[str, Any]:
    form: dict[str, Any] = {"private_mode": access.private_mode, "groups_claim": access.groups_claim}
    for role in ("admin", "pm"):
        rule = getattr(access, role)
        for kind in ACCESS_KINDS:
            form[f"{role}_{kind}"] = "\n".join(getattr(rule, kind))
    return form


def _access_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    settings = request.app.state.settings
    extra.setdefault("form", _access_form(portal.get_access_uncached(session)))
    providers = [{"name": p.name, "label": p.label, "issuer": p.issuer,
                  "callback": f"{settings.base_url}/auth/{p.name}/callback"} for p in settings.providers]
    return render(request, "admin/access.html", {"providers": providers, **extra}, status_code=status_code)


@router.get("/access", response_class=HTMLResponse)
async def access_form(request: Request, session: DbSession, admin: AdminUser) -> Response:
    return _access_page(request, session)


RuleText = Annotated[str, Form(max_length=50_000)]


@router.post("/access", response_class=HTMLResponse)
async def save_access(request: Request, session: DbSession, admin: AdminUser, private_mode: Flag = "",
                      groups_claim: Annotated[str, Form(max_length=300)] = "",
                      admin_emails: RuleText = "", admin_domains: RuleText = "", admin_groups: RuleText = "",
                      pm_emails: RuleText = "", pm_domains: RuleText = "", pm_groups: RuleText = "") -> Response:
    typed = {"admin": {"emails": admin_emails, "domains": admin_domains, "groups": admin_groups},
             "pm": {"emails": pm_emails, "domains": pm_domains, "groups": pm_groups}}
    form: dict[str, Any] = {"private_mode": bool(private_mode), "groups_claim": groups_claim,
                            **{f"{role}_{kind}": typed[role][kind] for role in typed for kind in ACCESS_KINDS}}
    try:
        access = portal.parse_access_form(private_mode=bool(private_mode), groups_claim=groups_claim, rules=typed)
    except FormInvalid as exc:
        return _access_page(request, session, status_code=422, errors=exc.errors, form=form)
    before = portal.get_access_uncached(session)
    portal.update_access(session, actor=admin, access=access)
    if access == before:
        return redirect(request, "/admin/access", flash="Nothing changed.", kind="info")
    mode = ("The portal is private: only signed-in people can see it." if access.private_mode
            else "The portal is open: visitors see the public roadmap.")
    return redirect(request, "/admin/access", flash=f"Access settings saved. {mode}")


# The other areas' routes, after this module's own (the order routes are matched in stays as it was).
for area in (feedback, items, merge, moderation):
    router.include_router(area.router)
