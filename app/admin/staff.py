"""Staff accounts and invitations (admins only: a PM gets the same 404 as for a missing page).

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.deps import AdminUser, DbSession
from app.errors import FormInvalid, NotFound
from app.forms import read_form
from app.outbox import service as outbox
from app.portal import service as portal
from app.web import redirect, render

log = logging.getLogger("ahead.admin")

ROLE_LABELS = {Role.pm: "Product manager", Role.admin: "Admin"}

router = APIRouter(include_in_schema=False)


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
async def invite(request: Request, session: DbSession, admin: AdminUser) -> Response:
    form = await read_form(request, accounts.StaffInvite)
    try:
        chosen = form.valid().role
        invitation, token = accounts.invite_staff(session, email=form.valid().email, role=chosen, invited_by=admin)
    except FormInvalid as exc:
        return _staff_page(request, session, status_code=422, errors=exc.errors, form=form.typed)

    settings = request.app.state.settings
    link = f"{settings.base_url}/invitations/{token}"
    branding = portal.get_branding(session)
    context = {
        "portal_name": branding.portal_name, "inviter_name": admin.name, "link": link,
        "role_label": "an admin" if chosen is Role.admin else "a product manager",
        "days": accounts.INVITATION_DAYS,
    }
    # Queued in the invitation's own transaction (app/outbox) and sent by the worker once it is committed: never
    # for an invitation that was rolled back. So this page cannot know whether the email got through, and says
    # so; a failure is logged and listed on the Email page, and the link below works on its own.
    outbox.enqueue_email(session, to=invitation.email, template="invitation", context=context,
                         key=f"invitation:{invitation.id}")
    if not settings.smtp_url:
        return redirect(request, "/admin/staff", kind="info", flash=(
            f"Invitation created for {invitation.email}. Email is not set up on this server (SMTP_URL), so "
            f"send them this link yourself (valid for {accounts.INVITATION_DAYS} days): {link}"))
    return redirect(request, "/admin/staff", flash=(
        f"Invitation created for {invitation.email}; the email is being sent now. If it does not arrive, send "
        f"them this link yourself (valid for {accounts.INVITATION_DAYS} days): {link}"))


@router.post("/staff/invitations/{invitation_id:int}/cancel", response_class=HTMLResponse)
async def cancel_invitation(request: Request, session: DbSession, admin: AdminUser, invitation_id: int) -> Response:
    invitation = accounts.cancel_invitation(session, invitation_id=invitation_id, actor=admin)
    if invitation is None:
        return redirect(request, "/admin/staff", kind="info",
                        flash="That invitation was already accepted or cancelled. Nothing changed.")
    return redirect(request, "/admin/staff", flash=(
        f"Invitation for {invitation.email} cancelled. Its link no longer works."))


@router.post("/staff/{user_id:int}/role", response_class=HTMLResponse)
async def change_role(request: Request, session: DbSession, admin: AdminUser, user_id: int) -> Response:
    member = _staff_member(session, user_id)
    form = await read_form(request, accounts.StaffRoleChange)
    try:
        accounts.set_user_role(session, user=member, role=form.valid().role, actor=admin)
    except FormInvalid as exc:
        return _staff_page(request, session, status_code=422, problem=" ".join(exc.errors.values()))
    return redirect(request, "/admin/staff", flash=f"{member.name} is now {ROLE_LABELS[member.role].lower()}.")


@router.post("/staff/{user_id:int}/active", response_class=HTMLResponse)
async def change_active(request: Request, session: DbSession, admin: AdminUser, user_id: int) -> Response:
    member = _staff_member(session, user_id)
    form = await read_form(request, accounts.AccountActive)
    try:
        enable = form.valid().active
        accounts.set_user_active(session, user=member, active=enable, actor=admin)
    except FormInvalid as exc:
        return _staff_page(request, session, status_code=422, problem=" ".join(exc.errors.values()))
    if enable:
        return redirect(request, "/admin/staff", flash=f"{member.name} can sign in again.")
    return redirect(request, "/admin/staff", flash=f"{member.name} is disabled and signed out everywhere.")
