"""Staff API tokens (every staff member their own; admins everyone's): create, show once, list, revoke.

The new token is rendered straight into the answer to the POST that made it (never a redirect with a flash
message: those travel in a cookie) with `Cache-Control: no-store`; afterwards only its first characters exist.
app/admin/router.py includes this router behind the staff dependency and the CSRF check.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.accounts import tokens
from app.accounts.models import User
from app.db import utcnow
from app.deps import DbSession, StaffUser
from app.errors import FormInvalid
from app.forms import read_form
from app.web import redirect, render

router = APIRouter(include_in_schema=False)

SCOPE_LABELS = {"read": "Read: the desk, demand, items as staff see them, and the technology roadmap",
                "write": "Read and write: also set RICE estimates, and change initiatives and backlog links"}


def _page(request: Request, session: Session, user: User, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("form", {"name": "", "scope": "read", "expires_in_days": "90"})
    return render(request, "admin/tokens.html", {
        "tokens": tokens.list_tokens(session, viewer=user), "now": utcnow(), "errors": {},
        "scope_labels": SCOPE_LABELS, "me": user, **extra,
    }, status_code=status_code, headers={"Cache-Control": "no-store"})


@router.get("/tokens", response_class=HTMLResponse)
async def token_list(request: Request, session: DbSession, user: StaffUser) -> Response:
    return _page(request, session, user)


@router.post("/tokens", response_class=HTMLResponse)
async def create_token(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = await read_form(request, tokens.TokenCreate)
    try:
        data = form.valid()
    except FormInvalid as exc:
        return _page(request, session, user, status_code=422, errors=exc.errors, form=form.typed)
    token, secret = tokens.create_token(session, owner=user, data=data)
    return _page(request, session, user, created=token, secret=secret)


@router.post("/tokens/{token_id:int}/revoke", response_class=HTMLResponse)
async def revoke_token(request: Request, session: DbSession, user: StaffUser, token_id: int) -> Response:
    token = tokens.revoke_token(session, token_id=token_id, actor=user)
    return redirect(request, "/admin/tokens",
                    flash=f"Token “{token.name}” ({token.prefix}…) revoked: it no longer opens the API.")
