"""Sign-in, sign-out, changing one's password, accepting a staff invitation."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.accounts import passwords
from app.accounts import service as accounts
from app.accounts.models import User
from app.deps import CurrentUser, CurrentViewer, DbSession
from app.forms import ADDRESS_LIMIT, read_values
from app.portal import service as portal
from app.security import (
    clear_session_cookie,
    rotate_csrf,
    session_cookie_value,
    set_session_cookie,
    verify_csrf,
)
from app.web import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])

log = logging.getLogger("ahead.accounts")

LOGIN_FAILED = "That email and password do not match an account. Check both and try again."


def safe_next(target: str | None, default: str = "/") -> str:
    """Same-site paths only: no scheme, no host, no protocol-relative '//', no backslashes, and none longer than
    any page's address (dropped, as the forms' `return_path()` drops it)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if len(target) > ADDRESS_LIMIT:
        return default
    if any(ord(ch) < 32 for ch in target):
        return default
    return target


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def signed_in_response(request: Request, session: Session, *, user: User, next_url: str,
                       flash: str | None = None) -> Response:
    """End any session this browser had, start a new one (new id at every sign-in), redirect."""
    settings = request.app.state.settings
    old = session_cookie_value(request)
    if old:
        accounts.end_session(session, old)
    token = accounts.start_session(session, user=user, user_agent=request.headers.get("user-agent", ""),
                                   days=settings.session_days)
    rotate_csrf(request, session_token=token)
    response = redirect(request, next_url, flash=flash)
    set_session_cookie(request, response, token, max_age=settings.session_days * 86400)
    return response


def staff_account_refused(request: Request, exc: accounts.StaffAccountRefused, *, method: str, how: str) -> Response:
    """The sign-in page, 403, saying why: a customer sign-in method (`how`, as the person knows it) reached a
    staff account. Logged for the operator; the request's transaction is rolled back, so nothing was linked."""
    log.warning("%s sign-in refused for staff account %s from %s: staff sign in with their password or a "
                "provider mapped to staff", method, exc.email, client_ip(request))
    detail = (f"This email address belongs to a staff account, and staff accounts cannot be entered with {how}. "
              "Sign in with your password under “Sign in with a password” below")
    if request.app.state.settings.providers and portal.get_access(request.state.db.session).maps_staff:
        detail += ", or with the sign-in service your admin set up for staff"
    return render(request, "accounts/login.html", {"next": "", "refused": detail + "."}, status_code=403)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, viewer: CurrentViewer, next: str | None = None) -> Response:
    if viewer.is_authenticated:
        return redirect(request, safe_next(next, "/admin" if viewer.is_staff else "/"))
    return render(request, "accounts/login.html", {"next": safe_next(next, "")})


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    session: DbSession,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form()] = "",  # one too long for any address is dropped by the model
) -> Response:
    settings = request.app.state.settings
    data = read_values(accounts.PasswordSignIn, {"email": email, "password": password, "next": next}).valid()
    address, password, next, ip = data.email, data.password, data.next, client_ip(request)
    # Per address *and* network, plus per network: someone guessing a staff member's password from one place
    # cannot lock them out from everywhere else (a per-address limit alone would).
    request.app.state.limiter.hit(settings.login_ip_rate_limit, f"login:ip:{ip}")
    request.app.state.limiter.hit(settings.login_rate_limit, f"login:email-ip:{address}|{ip}")
    user = accounts.find_password_account(session, email=address)
    user_id, password_hash = (user.id, user.password_hash) if user is not None else (None, None)
    request.state.db.end_transaction()  # argon2 below holds no lock; an unknown address costs the same
    if not await passwords.verify_password(password_hash, password) or user_id is None:
        return render(request, "accounts/login.html",
                      {"next": safe_next(next, ""), "form": {"email": email}, "login_error": LOGIN_FAILED},
                      status_code=400)
    assert password_hash is not None
    new_hash = await passwords.hash_password(password) if passwords.needs_rehash(password_hash) else None
    user = accounts.find_password_account(session, email=address)
    if user is None or user.id != user_id or user.password_hash != password_hash:
        # Disabled, deleted or given another password while we were checking this one.
        return render(request, "accounts/login.html",
                      {"next": safe_next(next, ""), "form": {"email": email}, "login_error": LOGIN_FAILED},
                      status_code=400)
    if new_hash is not None:
        user.password_hash = new_hash
    return signed_in_response(request, session, user=user,
                              next_url=safe_next(next, "/admin" if user.is_staff else "/"))


@router.post("/logout")
async def logout(request: Request, session: DbSession) -> Response:
    token = session_cookie_value(request)
    if token:
        accounts.end_session(session, token)
    rotate_csrf(request)
    response = redirect(request, "/", flash="You are signed out.")
    clear_session_cookie(request, response)
    # The browser forgets the pages it kept of this person: Back after signing out on a shared computer shows
    # nothing of theirs (pages are `private, no-cache`, which history navigation may still show unasked).
    response.headers["Clear-Site-Data"] = '"cache"'
    return response


@router.get("/account/password", response_class=HTMLResponse)
async def password_form(request: Request, user: CurrentUser) -> Response:
    return render(request, "accounts/password.html", {})


@router.post("/account/password", response_class=HTMLResponse)
async def change_password(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    current_password: Annotated[str, Form(max_length=1024)] = "",
    new_password: Annotated[str, Form(max_length=2048)] = "",
    confirm_password: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    """Change one's own password. Every other session of the person ends; this browser gets a new session id."""
    settings = request.app.state.settings
    # Every attempt counts: a stolen session must not become a way to guess the password it lacks.
    request.app.state.limiter.hit(settings.password_change_rate_limit, f"password:user:{user.id}")
    request.app.state.limiter.hit(settings.login_ip_rate_limit, f"password:ip:{client_ip(request)}")
    form = read_values(accounts.PasswordChange, {"current_password": current_password, "new_password": new_password,
                                                 "confirm_password": confirm_password})
    errors = dict(form.errors)
    user_id, old_hash = user.id, user.password_hash
    request.state.db.end_transaction()  # no transaction (no SQLite write lock) while argon2 runs
    if not await passwords.verify_password(old_hash, current_password):
        errors["current_password"] = "That is not your current password."  # nosec B105 # a form message
    if errors:
        return render(request, "accounts/password.html", {"errors": errors}, status_code=422)
    assert old_hash is not None
    new_hash = await passwords.hash_password(new_password)
    user = accounts.get_user(session, user_id)
    accounts.change_password(session, user=user, old_hash=old_hash, new_hash=new_hash)
    token = accounts.start_session(session, user=user, user_agent=request.headers.get("user-agent", ""),
                                   days=settings.session_days)
    rotate_csrf(request, session_token=token)
    response = redirect(request, "/admin" if user.is_staff else "/",
                        flash="Your password is changed. You are signed out everywhere else.")
    set_session_cookie(request, response, token, max_age=settings.session_days * 86400)
    return response


@router.get("/invitations/{token}", response_class=HTMLResponse)
async def invitation_form(request: Request, session: DbSession, token: str) -> Response:
    invitation = accounts.find_invitation(session, token)
    return render(request, "accounts/invitation.html", {"invitation": invitation, "token": token})


@router.post("/invitations/{token}", response_class=HTMLResponse)
async def accept_invitation(
    request: Request,
    session: DbSession,
    token: str,
    display_name: Annotated[str, Form(max_length=120)] = "",
    password: Annotated[str, Form(max_length=2048)] = "",
    confirm_password: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    invitation = accounts.find_invitation(session, token)
    form = read_values(accounts.InvitationAccept, {"display_name": display_name, "password": password,
                                                   "confirm_password": confirm_password})
    if form.errors:  # shown again without the passwords
        return render(request, "accounts/invitation.html",
                      {"invitation": invitation, "token": token, "errors": form.errors,
                       "form": {"display_name": display_name}}, status_code=422)
    request.state.db.end_transaction()
    password_hash = await passwords.hash_password(password)
    user = accounts.accept_invitation(session, token=token, display_name=display_name, password_hash=password_hash)
    return signed_in_response(request, session, user=user, next_url="/admin",
                              flash="Welcome to Ahead. Your account is ready.")
