"""Unsubscribing and choosing what one hears about: from an email's links (no sign-in) and on /me.

* `GET /unsubscribe/<token>` shows what the link stops and a button: link scanners and previews that open
  every link in a message unsubscribe nobody.
* `POST /unsubscribe/<token>` stops it. A mail client's one-click unsubscribe (RFC 8058) posts
  `List-Unsubscribe=One-Click` from its own server, without cookies: the signed token is the authentication, so
  neither a session nor a CSRF token is asked for. Doing it again changes nothing.
* `/unsubscribe/changelog/<token>`: the same for a visitor subscribed to the changelog by email (no account;
  app/notify/changelog.py).
* `/email-preferences/<token>`: the preferences form, reachable from every email without signing in (the token
  is signed for that person and that purpose only). `/me` has the same form for the signed-in person.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from app.accounts.models import User
from app.deps import CurrentUser, DbSession
from app.errors import NotFound
from app.forms import read_form
from app.notify import changelog as changelog_mail
from app.notify import service as notify
from app.notify.models import ChangelogSubscriber
from app.security import LINK_PAGE_HEADERS, verify_csrf
from app.web import redirect, render

router = APIRouter(include_in_schema=False)
me_router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])

_PRIVATE = LINK_PAGE_HEADERS
Token = Annotated[str, Form(max_length=200)]


def _target(request: Request, session: DbSession, token: str) -> notify.Unsubscribe:
    if len(token) > 200:
        raise NotFound("This unsubscribe link is not valid. Use the newest email's link, or sign in and choose on "
                       "your account page.")
    target = notify.resolve_unsubscribe(session, secret=request.app.state.settings.secret_key, token=token)
    if target is None:
        raise NotFound("This unsubscribe link is not valid. Use the newest email's link, or sign in and choose on "
                       "your account page.")
    return target


def _what(target: notify.Unsubscribe) -> str:
    if target.item is not None:
        return f"emails about “{target.item.title}”"
    if target.digest:
        return "the weekly digest"
    assert target.kind is not None
    return f"emails when {notify.KIND_LABELS[target.kind][0].lower()}{notify.KIND_LABELS[target.kind][1:]}"


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_page(request: Request, session: DbSession, token: str) -> Response:
    target = _target(request, session, token)
    return render(request, "notify/unsubscribe.html", {"token": token, "what": _what(target), "done": False,
                                                       "preferences_url": notify.preferences_url(
                                                           request.app.state.settings, user_id=target.user.id)},
                  headers=_PRIVATE)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe(request: Request, session: DbSession, token: str) -> Response:
    target = _target(request, session, token)
    notify.apply_unsubscribe(session, target)
    form = await request.form()
    if form.get("List-Unsubscribe") == "One-Click":
        return PlainTextResponse("Unsubscribed.", headers=_PRIVATE)
    return render(request, "notify/unsubscribe.html", {"token": token, "what": _what(target), "done": True,
                                                       "preferences_url": notify.preferences_url(
                                                           request.app.state.settings, user_id=target.user.id)},
                  headers=_PRIVATE)


def _changelog_subscriber(request: Request, session: DbSession, token: str) -> ChangelogSubscriber:
    subscriber = changelog_mail.subscriber_of(session, secret=request.app.state.settings.secret_key, token=token)
    if subscriber is None:
        raise NotFound("This unsubscribe link is not valid. Use the newest email's link.")
    return subscriber


@router.get("/unsubscribe/changelog/{token}", response_class=HTMLResponse)
async def changelog_unsubscribe_page(request: Request, session: DbSession, token: str) -> Response:
    return _changelog_unsubscribe_page(request, token, _changelog_subscriber(request, session, token), done=False)


@router.post("/unsubscribe/changelog/{token}", response_class=HTMLResponse)
async def changelog_unsubscribe(request: Request, session: DbSession, token: str) -> Response:
    """Signed for this subscriber: the token is the authentication (RFC 8058 one-click), as for the others."""
    subscriber = _changelog_subscriber(request, session, token)
    changelog_mail.unsubscribe(session, subscriber)
    form = await request.form()
    if form.get("List-Unsubscribe") == "One-Click":
        return PlainTextResponse("Unsubscribed.", headers=_PRIVATE)
    return _changelog_unsubscribe_page(request, token, subscriber, done=True)


def _changelog_unsubscribe_page(request: Request, token: str, subscriber: ChangelogSubscriber, *, done: bool
                                ) -> Response:
    """The page of a visitor's changelog unsubscribe link, before or after; it names the address, as the confirmation
    page does: someone with several can tell which one stops."""
    return render(request, "notify/unsubscribe.html", {"token": token, "what": f"changelog emails to {subscriber.email}",
                                                       "done": done, "action": f"/unsubscribe/changelog/{token}"},
                  headers=_PRIVATE)


def _preferences_user(request: Request, session: DbSession, token: str) -> User:
    if len(token) > 200:
        raise NotFound("This link is not valid. Sign in and choose on your account page.")
    user = notify.resolve_preferences_token(session, secret=request.app.state.settings.secret_key, token=token)
    if user is None:
        raise NotFound("This link is not valid. Sign in and choose on your account page.")
    return user


@router.get("/email-preferences/{token}", response_class=HTMLResponse)
async def preferences_page(request: Request, session: DbSession, token: str) -> Response:
    user = _preferences_user(request, session, token)
    return render(request, "notify/preferences.html", {"token": token, "person": user,
                                                       **notify.preferences_context(session, user=user)}, headers=_PRIVATE)


@router.post("/email-preferences/{token}", response_class=HTMLResponse)
async def save_preferences(request: Request, session: DbSession, token: str) -> Response:
    """Signed for this person and this purpose: the token authenticates the form, as it does the page."""
    user = _preferences_user(request, session, token)
    form = await read_form(request, notify.PreferencesUpdate)
    if form.data is None:
        return render(request, "notify/preferences.html", {"token": token, "person": user, "errors": form.errors,
                                                           **notify.preferences_context(session, user=user)},
                      status_code=422, headers=_PRIVATE)
    notify.set_preferences(session, user=user, choices=form.data.choices())
    return render(request, "notify/preferences.html", {"token": token, "person": user, "saved": True,
                                                       **notify.preferences_context(session, user=user)}, headers=_PRIVATE)


@me_router.post("/me/notifications", response_class=HTMLResponse)
async def save_my_preferences(request: Request, session: DbSession, user: CurrentUser) -> Response:
    form = await read_form(request, notify.PreferencesUpdate)
    if form.data is None:
        return redirect(request, "/me#notifications-title", flash="Choose right away, weekly or never for each.",
                        kind="error")
    notify.set_preferences(session, user=user, choices=form.data.choices())
    return redirect(request, "/me#notifications-title", flash="Your email choices are saved.")


