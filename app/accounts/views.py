"""Sign-in, sign-out, changing one's password, accepting a staff invitation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.models import User
from app.deps import CurrentUser, CurrentViewer, DbSession
from app.errors import FormInvalid
from app.security import (
    clear_session_cookie,
    rotate_csrf,
    session_cookie_value,
    set_session_cookie,
    verify_csrf,
)
from app.web import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])

LOGIN_FAILED = "That email and password do not match an account. Check both and try again."


def safe_next(target: str | None, default: str = "/") -> str:
    """Same-site paths only: no scheme, no host, no protocol-relative '//', no backslashes."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
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
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    request.app.state.limiter.hit(request.app.state.settings.login_rate_limit,
                                  f"login:ip:{client_ip(request)}", f"login:email:{email.strip().lower()}")
    user = accounts.authenticate(session, email=email, password=password)
    if user is None:
        return render(request, "accounts/login.html",
                      {"next": safe_next(next, ""), "form": {"email": email}, "login_error": LOGIN_FAILED},
                      status_code=400)
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
    try:
        accounts.change_password(session, user=user, current=current_password, new=new_password,
                                 confirm=confirm_password)
    except FormInvalid as exc:
        return render(request, "accounts/password.html", {"errors": exc.errors}, status_code=422)
    return redirect(request, "/admin" if user.is_staff else "/", flash="Your password is changed.")


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
    try:
        user = accounts.accept_invitation(session, token=token, display_name=display_name, password=password,
                                          confirm=confirm_password)
    except FormInvalid as exc:
        invitation = accounts.find_invitation(session, token)
        return render(request, "accounts/invitation.html",
                      {"invitation": invitation, "token": token, "errors": exc.errors,
                       "form": {"display_name": display_name}}, status_code=422)
    return signed_in_response(request, session, user=user, next_url="/admin",
                              flash="Welcome to Ahead. Your account is ready.")
