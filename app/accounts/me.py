"""/me: the signed-in person's own page, their data export and account deletion.

What deleting an account does (decided here, done in `accounts.delete_account`):

* Who the person was is erased: the email becomes a unique `deleted-…@deleted.invalid` placeholder,
  the name "Deleted user", the password hash, every identity (OIDC, email, host-app SSO), every
  session, pending sign-in links and staff invitations are removed, the organisation link is cut.
  The audit log keeps what happened but shows the placeholder instead of their email and name.
* The user row stays (`deleted_at` set, `is_active` false, no role): votes stay attached to it, so the
  product team's demand numbers computed before the deletion can still be reproduced from raw votes,
  without saying who voted.
* Public comments stay, shown as written by "Deleted user". A comment is part of an item's public
  discussion: replies quote and answer it, and the product team's official answers refer to it, so
  removing it would leave threads that no longer make sense. Because the author is only a link to the
  anonymised row, the name disappears everywhere at once with nothing else to rewrite. Someone who
  wants a comment's text gone deletes that comment before deleting the account (or asks the team to).
  Private feedback stays with the product team the same way, attributed to "Deleted user".

The last active admin cannot delete their own account: the portal would be left without anyone who
can manage it.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.accounts import service as accounts
from app.accounts.models import IdentityKind, User
from app.accounts.viewer import ANONYMOUS
from app.db import utcnow
from app.deps import CurrentUser, DbSession
from app.errors import Conflict, FormInvalid
from app.feedback import service as feedback
from app.forms import read_form
from app.notify import service as notify
from app.security import clear_session_cookie, rotate_csrf, verify_csrf
from app.voting import service as voting
from app.web import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])

_NO_STORE = {"Cache-Control": "no-store"}


def _identity_labels(request: Request) -> dict[str, str]:
    """How each identity is named on the page: OIDC providers by their label, the others by kind."""
    return {p.issuer.rstrip("/"): p.label for p in request.app.state.settings.providers}


def _page(request: Request, session: DbSession, user: User, *, status_code: int = 200, **context: object) -> Response:
    return render(request, "accounts/me.html", {
        "profile": accounts.get_profile(session, user=user),
        "provider_labels": _identity_labels(request),
        "kinds": IdentityKind,
        "max_name": accounts.MAX_DISPLAY_NAME,
        "my_feedback": feedback.my_feedback(session, viewer=request.state.viewer),
        "my_votes": voting.list_my_votes(session, viewer=request.state.viewer, include_captured=False),
        "followed": voting.list_followed(session, viewer=request.state.viewer),
        **notify.preferences_context(session, user=user),
        **context,
    }, status_code=status_code, headers=_NO_STORE)


@router.get("/me", response_class=HTMLResponse)
async def me(request: Request, session: DbSession, user: CurrentUser) -> Response:
    return _page(request, session, user)


@router.post("/me", response_class=HTMLResponse)
async def update_me(request: Request, session: DbSession, user: CurrentUser) -> Response:
    form = await read_form(request, accounts.ProfileUpdate)
    if form.data is None:
        return _page(request, session, user, status_code=422, errors=form.errors, form=form.typed)
    accounts.update_display_name(session, user=user, data=form.data)
    return redirect(request, "/me", flash="Your name is saved.")


@router.get("/me/export")
async def export(request: Request, session: DbSession, user: CurrentUser) -> Response:
    data = accounts.export_personal_data(session, user=user)
    filename = f"my-data-{utcnow():%Y-%m-%d}.json"
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **_NO_STORE},
    )


@router.get("/me/delete")
async def delete_form(request: Request) -> Response:
    """Where "sign in" leads from the page that confirms a deletion: the form itself is on /me."""
    return RedirectResponse("/me", status_code=303)


@router.post("/me/delete", response_class=HTMLResponse)
async def delete_me(request: Request, session: DbSession, user: CurrentUser) -> Response:
    form = await read_form(request, accounts.AccountDelete)
    try:
        accounts.delete_account(session, user=user, confirm_email=form.valid().confirm_email)
    except FormInvalid as exc:
        return _page(request, session, user, status_code=422, errors=exc.errors, form=form.typed)
    except Conflict as exc:
        return _page(request, session, user, status_code=409, delete_refused=exc.detail)
    # Answered here rather than by a redirect: the next page must work for someone who is signed out,
    # private-portal mode included.
    request.state.viewer = ANONYMOUS
    rotate_csrf(request)
    response = render(request, "accounts/me_deleted.html", {"viewer": ANONYMOUS}, headers=_NO_STORE)
    clear_session_cookie(request, response)
    return response
